//! `GET /journal/seq-at?store=S&position=P` on the admin endpoint: which
//! seq of this DC's own stream of store `S` a backup of its store taken at
//! source position `P` holds (`dcsync bootstrap --backup-position`;
//! docs/operations.md, "Adding a DC", "From a backup").
//!
//! The answer is the highest seq whose transaction ended at or before `P`
//! (positions compared by the store kind's connector,
//! [`Connector::position_at_or_before`]), with the journal epoch and the
//! position after that seq: a new DC restored from that backup sets its
//! apply marker of this DC there, and every later change reaches it from
//! this agent. The journal keeps every entry a peer has not acknowledged,
//! so it holds the entries after any backup taken since the new DC joined
//! the topology; a backup older than the oldest entry still held cannot be
//! placed (some of the changes after it may be gone), and the answer is
//! then a definite error naming that oldest position.
//!
//! Positions rise along the stream, so the scan reads the stream from its
//! oldest entry only up to the first entry after `P`, a batch at a time.
//!
//! [`Connector::position_at_or_before`]: dcsync_core::connector::Connector::position_at_or_before

use crate::registry::REGISTRY;
use axum::http::StatusCode;
use dcsync_core::topology::StoreConfig;
use dcsync_core::Topology;
use dcsync_journal::Journal;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Entries read per journal batch while scanning.
const SCAN_TXNS: usize = 256;
/// Encoded bytes read per journal batch while scanning.
const SCAN_BYTES: usize = 4 << 20;

/// The answer of `/journal/seq-at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqAt {
    /// This DC: the origin of the stream.
    pub origin: String,
    /// The store.
    pub store: String,
    /// The highest seq at or before the position (0: none journaled).
    pub seq: u64,
    /// The epoch of the journal that assigned it.
    pub epoch: u64,
    /// The source position after `seq` (the journal's checkpoint when no
    /// entry is held).
    pub position: String,
}

/// Why `/journal/seq-at` has no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeqAtError {
    /// The store is not one of the topology's.
    UnknownStore(String),
    /// A missing parameter, a position that does not parse or that cannot
    /// be compared with the journaled ones.
    BadRequest(String),
    /// The journal no longer holds entries that old (or the source has not
    /// read its store yet).
    TooOld(String),
    /// The journal could not be read.
    Journal(String),
}

impl std::fmt::Display for SeqAtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SeqAtError::UnknownStore(s) => {
                write!(f, "store {s:?} is not declared in the agent's topology")
            }
            SeqAtError::BadRequest(m) | SeqAtError::TooOld(m) => f.write_str(m),
            SeqAtError::Journal(m) => write!(f, "journal: {m}"),
        }
    }
}

impl SeqAtError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            SeqAtError::UnknownStore(_) => StatusCode::NOT_FOUND,
            SeqAtError::BadRequest(_) => StatusCode::BAD_REQUEST,
            SeqAtError::TooOld(_) => StatusCode::GONE,
            SeqAtError::Journal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

fn journal_err(e: dcsync_journal::JournalError) -> SeqAtError {
    SeqAtError::Journal(e.to_string())
}

/// What the admin endpoint needs to answer `/journal/seq-at`.
#[derive(Clone)]
pub struct JournalQuery {
    journal: Arc<Journal>,
    me: String,
    stores: Vec<StoreConfig>,
}

impl JournalQuery {
    /// Answers for DC `me`'s own streams of `topo`'s stores in `journal`.
    pub fn new(journal: &Arc<Journal>, me: &str, topo: &Topology) -> JournalQuery {
        JournalQuery {
            journal: journal.clone(),
            me: me.to_string(),
            stores: topo.stores.clone(),
        }
    }

    /// Answers the query string `store=S&position=P` (form-urlencoded).
    pub async fn answer(&self, query: &str) -> Result<SeqAt, SeqAtError> {
        let (mut store, mut position) = (None, None);
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "store" => store = Some(v.into_owned()),
                "position" => position = Some(v.into_owned()),
                _ => {}
            }
        }
        let (Some(store), Some(position)) = (store, position) else {
            return Err(SeqAtError::BadRequest(
                "give store=<name>&position=<source position>".into(),
            ));
        };
        let Some(config) = self.stores.iter().find(|s| s.name == store).cloned() else {
            return Err(SeqAtError::UnknownStore(store));
        };
        let (journal, me) = (self.journal.clone(), self.me.clone());
        tokio::task::spawn_blocking(move || seq_at(&journal, &me, &config, &position))
            .await
            .map_err(|e| SeqAtError::Journal(e.to_string()))?
    }
}

/// The highest seq of `me`'s stream of `store` in `journal` whose
/// transaction ended at or before `position` (see the module docs).
///
/// Errors: [`SeqAtError::BadRequest`] when `position` cannot be compared
/// (its kind cannot, it does not parse, or it lacks what the journaled
/// positions have), [`SeqAtError::TooOld`] when the oldest entry held is
/// already after it.
pub fn seq_at(
    journal: &Journal,
    me: &str,
    store: &StoreConfig,
    position: &str,
) -> Result<SeqAt, SeqAtError> {
    let connector = REGISTRY
        .connector_for(store)
        .map_err(|e| SeqAtError::BadRequest(e.to_string()))?;
    let at_or_before = |at: &str| {
        connector
            .position_at_or_before(at, position)
            .map_err(|e| SeqAtError::BadRequest(e.to_string()))
    };
    let answer = |seq: u64, epoch: u64, position: String| SeqAt {
        origin: me.to_string(),
        store: store.name.clone(),
        seq,
        epoch: if epoch == 0 { journal.epoch() } else { epoch },
        position,
    };
    let mut best: Option<SeqAt> = None;
    let mut after = 0;
    loop {
        let batch = journal
            .read(me, &store.name, after, SCAN_TXNS, SCAN_BYTES)
            .map_err(journal_err)?;
        if batch.is_empty() {
            break;
        }
        for tx in batch {
            after = tx.seq;
            // A marker names the last part of a transaction, never one
            // inside it.
            if tx.more {
                continue;
            }
            if !at_or_before(&tx.position)? {
                return best.ok_or_else(|| {
                    SeqAtError::TooOld(format!(
                        "the backup at {position:?} is older than every change of store {} \
                         that dc {me}'s journal still holds (the oldest is seq {} at {:?}): \
                         changes between them may be gone. Take a new backup (with the new \
                         DC in the topology every agent runs with, the journal keeps every \
                         change after it)",
                        store.name, tx.seq, tx.position
                    ))
                });
            }
            best = Some(answer(tx.seq, tx.epoch, tx.position));
        }
    }
    if let Some(best) = best {
        return Ok(best);
    }
    // No entry held: everything journaled (if anything) was acknowledged by
    // every peer and removed. The checkpoint is at or after the last seq.
    let head = journal.last_seq(me, &store.name).map_err(journal_err)?;
    let Some(checkpoint) = journal.position(&store.name).map_err(journal_err)? else {
        return Err(SeqAtError::TooOld(format!(
            "dc {me}'s source of store {} has not read its store yet: start its agent and ask again",
            store.name
        )));
    };
    if at_or_before(&checkpoint.display)? {
        return Ok(answer(head, 0, checkpoint.display));
    }
    Err(SeqAtError::TooOld(format!(
        "the backup at {position:?} is older than where dc {me}'s journal of store {} stands \
         ({:?}, seq {head}, no older entry held): changes between them may be gone. Take a new \
         backup",
        store.name, checkpoint.display
    )))
}

#[cfg(test)]
#[path = "seq_at_tests.rs"]
mod tests;
