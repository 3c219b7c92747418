//! Settling the local streams of a new journal: a first start, or an agent
//! whose journal was lost (a new host, a deleted data directory), which
//! recovers from what its peers applied (docs/architecture.md, "Journal
//! identity"; docs/operations.md, "Replacing an agent's host").
//!
//! A stream `(this DC, store)` of a new journal ships nothing until every
//! peer that applies the store has told, at a link handshake, what its
//! apply marker holds of it ([`PeerMarks`]). Its source runs meanwhile, so
//! nothing written after the agent started is missed. Then:
//!
//! - no peer applied anything of it: a first start; the stream settles as
//!   it is and ships.
//! - some did: this DC's journal was lost. The stream restarts at the
//!   *least* advanced peer's marker: its seq becomes the journal's head and
//!   the source re-reads from the source position recorded with it, so the
//!   seqs assigned again are the ones the lost journal gave (the source
//!   reads the same transactions in the same order); peers further ahead
//!   skip what they applied (idempotent apply) and the others receive what
//!   they lack. The markers' epochs become the stream's ancestors. A
//!   position the source no longer holds (binlog purged) fails the source
//!   with a definite error that names it.

use dcsync_core::connector::{AppliedMark, ConnectorError, Position};
use dcsync_journal::Journal;
use dcsync_link::PeerMarks;
use std::sync::Arc;

/// What settling a stream decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// No peer applied any of the stream: ship it as it is.
    Fresh,
    /// Restart the stream at `seq` and the source at `position` (the least
    /// advanced peer's marker, `from`), continuing `ancestors`.
    Recover {
        /// The peer whose marker it is.
        from: String,
        /// Its applied seq: the journal's new head.
        seq: u64,
        /// The source position after `seq`.
        position: Position,
        /// Epochs named by the peers' markers.
        ancestors: Vec<u64>,
        /// What each peer had applied, for the log.
        marks: Vec<(String, u64)>,
    },
}

/// Waits until every peer in `peers` reported its marker of this DC's
/// `store`, then decides. `parse` turns a marker's position text into the
/// source's position (the store kind's `Connector::parse_position`).
///
/// Errors: [`ConnectorError::Definite`] when the least advanced peer's
/// marker has no readable position (written by a release before journal
/// epochs, or a position longer than the marker keeps).
pub async fn decide(
    store: &str,
    peers: &[String],
    marks: &Arc<PeerMarks>,
    parse: impl Fn(&str) -> Result<Position, ConnectorError>,
) -> Result<Settle, ConnectorError> {
    let mut changed = marks.watch();
    let got: Vec<(String, AppliedMark)> = loop {
        let got: Vec<(String, AppliedMark)> = peers
            .iter()
            .filter_map(|p| marks.get(p, store).map(|m| (p.clone(), m)))
            .collect();
        if got.len() == peers.len() {
            break got;
        }
        let missing: Vec<&String> = peers
            .iter()
            .filter(|p| !got.iter().any(|(g, _)| g == *p))
            .collect();
        tracing::info!(%store, waiting_for = ?missing, "new journal: waiting for every peer to tell what it applied of this DC's changes before shipping them");
        if changed.changed().await.is_err() {
            return Err(ConnectorError::Transient("peer marks board closed".into()));
        }
    };
    let ancestors: Vec<u64> = {
        let mut a: Vec<u64> = got
            .iter()
            .filter(|(_, m)| m.seq > 0)
            .map(|(_, m)| m.epoch)
            .collect();
        a.sort_unstable();
        a.dedup();
        a
    };
    let Some((from, low)) = got
        .iter()
        .filter(|(_, m)| m.seq > 0)
        .min_by_key(|(_, m)| m.seq)
        .cloned()
    else {
        return Ok(Settle::Fresh);
    };
    for (p, m) in &got {
        if m.seq == 0 {
            tracing::error!(%store, peer = %p, "peer {p} applied none of this DC's changes of {store} while others did: this journal restarts at seq {} and cannot give {p} seqs 1..={}; {p} needs its store filled from another DC", low.seq, low.seq);
        }
    }
    if low.position.is_empty() {
        return Err(ConnectorError::Definite(format!(
            "new journal of {store}: peer {from} applied this DC's changes up to seq {} but its apply marker \
             holds no source position (written by a release before journal epochs): restore the old \
             journal directory, or upgrade every agent and let {from} apply a change of this DC first",
            low.seq
        )));
    }
    let position = parse(&low.position).map_err(|e| {
        ConnectorError::Definite(format!(
            "new journal of {store}: cannot resume from peer {from}'s marker (seq {}): {e}",
            low.seq
        ))
    })?;
    Ok(Settle::Recover {
        from,
        seq: low.seq,
        position,
        ancestors,
        marks: got.iter().map(|(p, m)| (p.clone(), m.seq)).collect(),
    })
}

/// Applies a [`Settle::Recover`] decision to the journal (the store's source
/// must be stopped). See [`Journal::recover`].
pub fn apply(journal: &Journal, store: &str, s: &Settle) -> Result<(), ConnectorError> {
    let journal_err =
        |e: dcsync_journal::JournalError| ConnectorError::Definite(format!("journal: {e}"));
    match s {
        Settle::Fresh => journal.settle(store, &[]).map_err(journal_err),
        Settle::Recover {
            from,
            seq,
            position,
            ancestors,
            marks,
        } => {
            journal
                .recover(store, *seq, dcsync_core::Hlc(0), position, ancestors)
                .map_err(journal_err)?;
            tracing::warn!(%store, from = %from, seq, position = %position.display, applied = ?marks,
                "this DC's journal was lost or replaced: recovered from the peers' apply markers; the source re-reads from the least advanced peer's position and the peers skip what they applied");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(seq: u64, epoch: u64, position: &str) -> AppliedMark {
        AppliedMark {
            seq,
            epoch,
            position: position.into(),
        }
    }

    fn parse(d: &str) -> Result<Position, ConnectorError> {
        Ok(Position {
            bytes: d.as_bytes().to_vec(),
            display: d.into(),
        })
    }

    fn peers() -> Vec<String> {
        vec!["sh".into(), "tk".into()]
    }

    #[tokio::test]
    async fn no_peer_applied_anything_is_a_first_start() {
        let marks = Arc::new(PeerMarks::default());
        marks.report("sh", "shop", mark(0, 0, ""));
        marks.report("tk", "shop", mark(0, 0, ""));
        let d = decide("shop", &peers(), &marks, parse).await.unwrap();
        assert_eq!(d, Settle::Fresh);
    }

    #[tokio::test]
    async fn a_lost_journal_restarts_at_the_least_advanced_peer() {
        let marks = Arc::new(PeerMarks::default());
        marks.report("sh", "shop", mark(700, 0xa, "bin.1:700"));
        let waiting = {
            let marks = marks.clone();
            tokio::spawn(async move { decide("shop", &peers(), &marks, parse).await })
        };
        // tk has not answered yet: nothing is decided.
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        marks.report("tk", "shop", mark(500, 0xb, "bin.1:500"));
        let d = waiting.await.unwrap().unwrap();
        let Settle::Recover {
            from,
            seq,
            position,
            ancestors,
            ..
        } = d
        else {
            panic!("{d:?}")
        };
        assert_eq!((from.as_str(), seq), ("tk", 500));
        assert_eq!(position.display, "bin.1:500");
        assert_eq!(ancestors, vec![0xa, 0xb]);
    }

    #[tokio::test]
    async fn a_marker_without_a_position_cannot_be_resumed_from() {
        let marks = Arc::new(PeerMarks::default());
        marks.report("sh", "shop", mark(9, 0, ""));
        marks.report("tk", "shop", mark(12, 0, "bin.1:12"));
        let e = decide("shop", &peers(), &marks, parse).await.unwrap_err();
        assert!(!e.is_transient());
        assert!(e.to_string().contains("holds no source position"), "{e}");
    }
}
