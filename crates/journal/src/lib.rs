//! The journal: the agent's durable outbound log (the backlog), source
//! checkpoints and per-peer cursors, in one embedded ACID store (redb).
//!
//! # Progress tracking
//! A source's transactions are appended *together with the source position
//! they were read up to* in one redb write transaction committed with
//! `Durability::Immediate` (fsync). After `kill -9` either both the changes
//! and the position are there, or neither is; the source resumes from the
//! stored position, so nothing is lost and nothing is read twice
//! (docs/architecture.md, invariant 3). Each appended transaction gets the next origin
//! sequence number for its store: seqs are dense (1, 2, 3, ...) per store.
//!
//! # Cursors and removal
//! For every peer and store the journal records the highest seq the peer
//! acknowledged (applied). Entries at or below the minimum cursor over all
//! peers are removed in the same write transaction that advances the cursor.
//! A cursor write does not need an fsync: losing it only causes a resend,
//! which the peer's apply marker turns into a no-op.
//!
//! # Why redb
//! See `docs/journal.md`: redb 4 commits are atomic and durable on
//! `commit()`, and our kill -9 test (`tests/kill9.rs`) found no lost,
//! duplicated or torn entries; sled 0.34 (2021) has open reports of corruption
//! after unclean shutdown and sled 1.0 is an alpha.
//!
//! # Layout (redb tables)
//! - `txs`: `(store, seq) -> cum_bytes: u64 LE | bincode(Transaction)`, where
//!   `cum_bytes` is the total encoded size of the store's entries up to and
//!   including this one (backlog bytes are a subtraction, not a scan)
//! - `last_seq`: `store -> seq`
//! - `positions`: `store -> bincode(Position)`
//! - `cursors`: `(peer, store) -> seq`
//! - `meta`: `"hlc" -> u64` (highest HLC issued, the clock floor after restart)
//! - `cum`: `store -> u64` total bytes ever appended; `removed_cum`: `store ->
//!   u64` `cum_bytes` of the last removed entry

use dcsync_core::connector::Position;
use dcsync_core::{Hlc, Transaction};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};

const TXS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("txs");
const LAST_SEQ: TableDefinition<&str, u64> = TableDefinition::new("last_seq");
const POSITIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("positions");
const CURSORS: TableDefinition<(&str, &str), u64> = TableDefinition::new("cursors");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const CUM: TableDefinition<&str, u64> = TableDefinition::new("cum");
const REMOVED_CUM: TableDefinition<&str, u64> = TableDefinition::new("removed_cum");

/// Journal errors. All are fatal for the operation; none leaves a partial
/// write behind (redb transactions are atomic).
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The journal file could not be created or opened (permissions, disk,
    /// another agent holding it).
    #[error("cannot open journal {path}: {source}")]
    Open {
        /// Journal file path.
        path: PathBuf,
        /// redb error.
        source: Box<redb::DatabaseError>,
    },
    /// A redb read or write failed (I/O error, disk full).
    #[error("journal storage error: {0}")]
    Storage(String),
    /// A stored entry does not decode: the file is damaged.
    #[error("journal entry {store}#{seq} is corrupt: {reason}")]
    Corrupt {
        /// Store name.
        store: String,
        /// Origin seq.
        seq: u64,
        /// Decoder message.
        reason: String,
    },
}

fn cum_prefix(v: &[u8]) -> u64 {
    v.get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

fn storage<E: std::fmt::Display>(e: E) -> JournalError {
    JournalError::Storage(e.to_string())
}

/// Backlog of one peer for one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Highest seq the peer acknowledged.
    pub acked: u64,
    /// Highest seq journaled.
    pub last: u64,
    /// Transactions waiting for the peer (`last - acked`).
    pub txns: u64,
    /// Encoded bytes of those transactions.
    pub bytes: u64,
    /// HLC of the oldest unacknowledged transaction, if any.
    pub oldest: Option<Hlc>,
}

/// The journal of one agent. Cheap to share behind an `Arc`; every method is
/// a short redb transaction and may block on disk I/O (call from
/// `spawn_blocking` in async code when latency matters).
pub struct Journal {
    db: Database,
    peers: Vec<String>,
}

/// redb's page cache, bytes. Its default (1 GiB) would let the agent's
/// resident memory grow with the backlog; the backlog is read sequentially,
/// so a small cache costs little.
pub const CACHE_BYTES: usize = 64 << 20;

const BINCODE: bincode::config::Configuration = bincode::config::standard();

/// Encodes a transaction as stored in the journal and sent on the link.
pub fn encode_tx(tx: &Transaction) -> Result<Vec<u8>, JournalError> {
    bincode::serde::encode_to_vec(tx, BINCODE).map_err(storage)
}

impl Journal {
    /// Opens (or creates) the journal file `dir/journal.redb`. `peers` are the
    /// DC ids whose cursors decide when an entry can be removed.
    ///
    /// Errors: [`JournalError::Open`] if the directory or file cannot be
    /// created or is locked by another process.
    pub fn open(dir: &Path, peers: &[String]) -> Result<Journal, JournalError> {
        let path = dir.join("journal.redb");
        std::fs::create_dir_all(dir).map_err(|e| JournalError::Open {
            path: path.clone(),
            source: Box::new(redb::DatabaseError::Storage(redb::StorageError::Io(e))),
        })?;
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| JournalError::Open {
                path: path.clone(),
                source: Box::new(e),
            })?;
        let w = db.begin_write().map_err(storage)?;
        {
            w.open_table(TXS).map_err(storage)?;
            w.open_table(LAST_SEQ).map_err(storage)?;
            w.open_table(POSITIONS).map_err(storage)?;
            w.open_table(CURSORS).map_err(storage)?;
            w.open_table(META).map_err(storage)?;
            w.open_table(CUM).map_err(storage)?;
            w.open_table(REMOVED_CUM).map_err(storage)?;
        }
        w.commit().map_err(storage)?;
        Ok(Journal {
            db,
            peers: peers.to_vec(),
        })
    }

    /// Appends `txs` for `store`, assigning each the next seq (written into
    /// `tx.seq`), and records `position` as the store's source checkpoint, all
    /// in one durable commit. With no transactions and a position, only the
    /// checkpoint moves; that commit is not fsynced (losing it re-reads an
    /// echo or skipped event, which is filtered again).
    ///
    /// Returns the `(first, last)` seq assigned, `None` if `txs` was empty.
    pub fn append(
        &self,
        store: &str,
        txs: &mut [Transaction],
        position: Option<&Position>,
    ) -> Result<Option<(u64, u64)>, JournalError> {
        let mut w = self.db.begin_write().map_err(storage)?;
        if txs.is_empty() {
            w.set_durability(Durability::None).map_err(storage)?;
        }
        let mut range = None;
        {
            let mut last_t = w.open_table(LAST_SEQ).map_err(storage)?;
            let mut last = last_t
                .get(store)
                .map_err(storage)?
                .map(|g| g.value())
                .unwrap_or(0);
            let mut t = w.open_table(TXS).map_err(storage)?;
            let mut cum_t = w.open_table(CUM).map_err(storage)?;
            let mut cum = cum_t
                .get(store)
                .map_err(storage)?
                .map(|g| g.value())
                .unwrap_or(0);
            let mut max_hlc = 0u64;
            let mut buf = Vec::new();
            for tx in txs.iter_mut() {
                last += 1;
                tx.seq = last;
                max_hlc = max_hlc.max(tx.hlc.0);
                let bytes = encode_tx(tx)?;
                cum += bytes.len() as u64;
                buf.clear();
                buf.extend_from_slice(&cum.to_le_bytes());
                buf.extend_from_slice(&bytes);
                t.insert((store, last), buf.as_slice()).map_err(storage)?;
                range = Some((range.map(|(f, _)| f).unwrap_or(last), last));
            }
            if !txs.is_empty() {
                cum_t.insert(store, cum).map_err(storage)?;
                last_t.insert(store, last).map_err(storage)?;
                let mut m = w.open_table(META).map_err(storage)?;
                let prev = m
                    .get("hlc")
                    .map_err(storage)?
                    .map(|g| g.value())
                    .unwrap_or(0);
                if max_hlc > prev {
                    m.insert("hlc", max_hlc).map_err(storage)?;
                }
            }
            if let Some(p) = position {
                let bytes = bincode::serde::encode_to_vec(p, BINCODE).map_err(storage)?;
                w.open_table(POSITIONS)
                    .map_err(storage)?
                    .insert(store, bytes.as_slice())
                    .map_err(storage)?;
            }
        }
        w.commit().map_err(storage)?;
        Ok(range)
    }

    /// The source checkpoint of `store`: where its source resumes.
    pub fn position(&self, store: &str) -> Result<Option<Position>, JournalError> {
        let r = self.db.begin_read().map_err(storage)?;
        let t = r.open_table(POSITIONS).map_err(storage)?;
        match t.get(store).map_err(storage)? {
            None => Ok(None),
            Some(g) => bincode::serde::decode_from_slice::<Position, _>(g.value(), BINCODE)
                .map(|(p, _)| Some(p))
                .map_err(|e| JournalError::Corrupt {
                    store: store.to_string(),
                    seq: 0,
                    reason: format!("source position: {e}"),
                }),
        }
    }

    /// Highest seq journaled for `store` (0 if none).
    pub fn last_seq(&self, store: &str) -> Result<u64, JournalError> {
        let r = self.db.begin_read().map_err(storage)?;
        let t = r.open_table(LAST_SEQ).map_err(storage)?;
        Ok(t.get(store)
            .map_err(storage)?
            .map(|g| g.value())
            .unwrap_or(0))
    }

    /// Highest HLC ever journaled: the clock floor after a restart.
    pub fn hlc_floor(&self) -> Result<Hlc, JournalError> {
        let r = self.db.begin_read().map_err(storage)?;
        let t = r.open_table(META).map_err(storage)?;
        Ok(Hlc(t
            .get("hlc")
            .map_err(storage)?
            .map(|g| g.value())
            .unwrap_or(0)))
    }

    /// Reads transactions of `store` with seq > `after`, in seq order, at most
    /// `max_txns` of them and stopping once `max_bytes` encoded bytes are
    /// reached (at least one is returned if any exists).
    pub fn read(
        &self,
        store: &str,
        after: u64,
        max_txns: usize,
        max_bytes: usize,
    ) -> Result<Vec<Transaction>, JournalError> {
        let r = self.db.begin_read().map_err(storage)?;
        let t = r.open_table(TXS).map_err(storage)?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let start = after.saturating_add(1);
        for item in t
            .range((store, start)..=(store, u64::MAX))
            .map_err(storage)?
        {
            let (k, v) = item.map_err(storage)?;
            let (_, seq) = k.value();
            let raw = v.value().get(8..).unwrap_or_default();
            let (tx, _): (Transaction, usize) = bincode::serde::decode_from_slice(raw, BINCODE)
                .map_err(|e| JournalError::Corrupt {
                    store: store.to_string(),
                    seq,
                    reason: e.to_string(),
                })?;
            bytes += raw.len();
            out.push(tx);
            if out.len() >= max_txns || bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// Records that `peer` applied `store` up to `seq` (cursors only move
    /// forward) and removes entries every peer has acknowledged.
    pub fn ack(&self, peer: &str, store: &str, seq: u64) -> Result<(), JournalError> {
        let mut w = self.db.begin_write().map_err(storage)?;
        w.set_durability(Durability::None).map_err(storage)?;
        {
            let mut c = w.open_table(CURSORS).map_err(storage)?;
            let prev = c
                .get((peer, store))
                .map_err(storage)?
                .map(|g| g.value())
                .unwrap_or(0);
            if seq <= prev {
                return Ok(());
            }
            c.insert((peer, store), seq).map_err(storage)?;
            let mut min = u64::MAX;
            for p in &self.peers {
                let v = if p == peer {
                    seq
                } else {
                    c.get((p.as_str(), store))
                        .map_err(storage)?
                        .map(|g| g.value())
                        .unwrap_or(0)
                };
                min = min.min(v);
            }
            if min > 0 && min != u64::MAX {
                let mut t = w.open_table(TXS).map_err(storage)?;
                let at_min = t
                    .get((store, min))
                    .map_err(storage)?
                    .map(|g| cum_prefix(g.value()));
                if let Some(cum) = at_min {
                    w.open_table(REMOVED_CUM)
                        .map_err(storage)?
                        .insert(store, cum)
                        .map_err(storage)?;
                }
                t.retain_in((store, 0u64)..=(store, min), |_, _| false)
                    .map_err(storage)?;
            }
        }
        w.commit().map_err(storage)?;
        Ok(())
    }

    /// Highest seq `peer` acknowledged for `store` (0 if none).
    pub fn cursor(&self, peer: &str, store: &str) -> Result<u64, JournalError> {
        let r = self.db.begin_read().map_err(storage)?;
        let c = r.open_table(CURSORS).map_err(storage)?;
        Ok(c.get((peer, store))
            .map_err(storage)?
            .map(|g| g.value())
            .unwrap_or(0))
    }

    /// Backlog of `peer` for `store`.
    pub fn backlog(&self, peer: &str, store: &str) -> Result<Backlog, JournalError> {
        let acked = self.cursor(peer, store)?;
        let last = self.last_seq(store)?;
        let oldest = if last > acked {
            self.read(store, acked, 1, 1)?.first().map(|t| t.hlc)
        } else {
            None
        };
        let bytes = if last > acked {
            let r = self.db.begin_read().map_err(storage)?;
            let total = r
                .open_table(CUM)
                .map_err(storage)?
                .get(store)
                .map_err(storage)?
                .map(|g| g.value())
                .unwrap_or(0);
            let at_cursor = match r
                .open_table(TXS)
                .map_err(storage)?
                .get((store, acked))
                .map_err(storage)?
            {
                Some(g) => cum_prefix(g.value()),
                None if acked == 0 => 0,
                None => r
                    .open_table(REMOVED_CUM)
                    .map_err(storage)?
                    .get(store)
                    .map_err(storage)?
                    .map(|g| g.value())
                    .unwrap_or(0),
            };
            total.saturating_sub(at_cursor)
        } else {
            0
        };
        Ok(Backlog {
            acked,
            last,
            bytes,
            txns: last.saturating_sub(acked),
            oldest,
        })
    }
}

#[cfg(test)]
mod tests;
