//! The journal: the agent's durable outbound log (the backlog), source
//! checkpoints and per-peer cursors, in one embedded ACID store (redb).
//!
//! # Streams: origin everywhere
//! Every entry belongs to an *origin stream* `(origin DC, store)` and is
//! keyed by `(origin, store, origin seq)`. Only local appends
//! ([`Journal::append`]) assign seqs (dense: 1, 2, 3, ... per store, origin =
//! this DC); changes of other DCs that this agent forwards
//! ([`Journal::append_relayed`]) keep their origin seq unchanged, so apply
//! markers, idempotent apply and echo filtering work per origin wherever a
//! change travels. Cursors and acknowledgements are keyed by
//! `(peer, origin, store)`.
//!
//! # Progress tracking
//! A source's transactions are appended *together with the source position
//! they were read up to* in one redb write transaction committed with
//! `Durability::Immediate` (fsync). After `kill -9` either both the changes
//! and the position are there, or neither is; the source resumes from the
//! stored position, so nothing is lost and nothing is read twice
//! (docs/architecture.md, invariant 3).
//!
//! # Transactions in parts
//! A large source transaction arrives as several entries (parts) with
//! consecutive seqs, all but the last flagged `more`
//! ([`dcsync_core::Transaction::more`]). The parts are written as they come
//! (the agent never holds the whole transaction), but a stream's head, and
//! with it everything readers see ([`Journal::read`], [`Journal::last_seq`],
//! backlogs), moves only when the last part is written: a peer is never
//! shipped the start of a transaction that may be discarded. The seq of the
//! last part written so far is kept in `open_parts`; the parts of a
//! transaction that was never closed (the agent stopped while reading it)
//! are discarded when the journal is opened and when the store's source
//! starts again ([`Journal::discard_open`]), since the source reads the whole
//! transaction again from the checkpoint before it.
//!
//! # Cursors and removal
//! For every peer and origin stream the journal records the highest seq the
//! peer acknowledged (applied). An entry is removed once every peer that
//! receives its origin (every peer except the origin itself) acknowledged
//! it, in the same write transaction that advances the last such cursor. A
//! cursor write does not need an fsync: losing it only causes a resend,
//! which the peer's apply marker turns into a no-op.
//!
//! # Format version and migration
//! `meta["format"]` holds [`FORMAT_VERSION`]. Format 4 differs from format
//! 3 in that records may be envelope version 4 and the journal has an epoch
//! and the `ancestors` table (see [`identity`]); format 3 differs from
//! format 2 only in that records may be envelope version 3 and `open_parts`
//! exists. An older journal is upgraded by rewriting the number (an agent
//! of the older format then refuses it instead of failing on a record). A journal
//! written by a
//! format-1 agent (entries keyed by `(store, seq)`, untagged bincode,
//! cursors by `(peer, store)`) is migrated in one atomic write transaction
//! when it is opened: every entry is decoded with the frozen version-1
//! types and rewritten as a tagged record under its origin. A journal whose
//! format is newer than this agent's is refused with
//! [`JournalError::NewerFormat`] (downgrades need the journal drained first;
//! see docs/operations.md, "Rolling upgrade").
//!
//! # Why redb
//! See `docs/journal.md`: redb 4 commits are atomic and durable on
//! `commit()`, and our kill -9 test (`tests/kill9.rs`) found no lost,
//! duplicated or torn entries; sled 0.34 (2021) has open reports of corruption
//! after unclean shutdown and sled 1.0 is an alpha.
//!
//! # Layout (format 4, redb tables)
//! - `log`: `(origin, store, seq) -> cum_bytes: u64 LE | record`, where
//!   `record` is a tagged envelope ([`dcsync_core::envelope::encode_tx`]) and
//!   `cum_bytes` the total record bytes of the stream up to and including
//!   this one (backlog bytes are a subtraction, not a scan)
//! - `heads`: `(origin, store) -> (last seq, HLC of that entry)`, the last
//!   entry that ends a source transaction
//! - `open_parts`: `(origin, store) -> seq` of the last part written of a
//!   transaction whose last part is not written yet
//! - `stream_cum`: `(origin, store) -> u64` total bytes ever appended;
//!   `stream_removed_cum`: `(origin, store) -> u64` `cum_bytes` of the last
//!   removed entry
//! - `positions`: `store -> bincode(Position)` (local source checkpoints)
//! - `peer_cursors`: `(peer, origin, store) -> seq`
//! - `identity`: `"dc" -> the DC id` (a journal opened as another DC is
//!   refused), `"epoch" -> 16 hex digits` (see [`identity`])
//! - `ancestors`: `store -> epochs` the local stream continues (see
//!   [`identity`])
//! - `meta`: `"format" -> 4`, `"hlc" -> u64` (highest HLC journaled, the
//!   clock floor after restart)
//! - `versions`: `(store, row key) -> (HLC, DC)`, the version index of
//!   stores with a conflict policy ([`Journal::append_versioned`],
//!   [`Journal::record_versions`]; an entry keeps the greater version).
//!   Added in format 3 without a format change (unknown tables are unread).
//! - `stamp_floors`: `store -> HLC`, the floor of the store's next local
//!   stamps, written with the source position ([`Journal::stamp_floor`]).
//! - `version_log`: `id -> bincode(store, [(row key, HLC, DC)])`, version
//!   records not yet folded into `versions` (the `versions` module). Added
//!   in format 4 without a format change: the agent folds the log when it
//!   opens the journal and when it stops, so an older agent started on a
//!   cleanly stopped agent's journal finds every version in `versions`.

use crate::migrate::{migrate_v1, v1};
pub use crate::versions::Folded;
use dcsync_core::connector::Position;
use dcsync_core::envelope::{decode_tx, encode_tx_into};
use dcsync_core::{Hlc, Transaction};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableHandle,
    WriteTransaction,
};
use std::path::{Path, PathBuf};

/// The journal format this agent writes.
pub const FORMAT_VERSION: u64 = 4;

const LOG: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("log");
const HEADS: TableDefinition<(&str, &str), (u64, u64)> = TableDefinition::new("heads");
const STREAM_CUM: TableDefinition<(&str, &str), u64> = TableDefinition::new("stream_cum");
const STREAM_REMOVED_CUM: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("stream_removed_cum");
const POSITIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("positions");
const PEER_CURSORS: TableDefinition<(&str, &str, &str), u64> = TableDefinition::new("peer_cursors");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const OPEN_PARTS: TableDefinition<(&str, &str), u64> = TableDefinition::new("open_parts");
const IDENTITY: TableDefinition<&str, &str> = TableDefinition::new("identity");
/// `(store, row/key) -> (HLC, DC)`: the version index (see [`Journal::versions`]).
const VERSIONS: TableDefinition<(&str, &[u8]), (u64, &str)> = TableDefinition::new("versions");
/// `id -> bincode(store, [(row/key, HLC, DC)])`: version records not yet
/// folded into `versions` (see the `versions` module).
const VERSION_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("version_log");
/// `store -> HLC`: see [`Journal::stamp_floor`].
const STAMP_FLOORS: TableDefinition<&str, u64> = TableDefinition::new("stamp_floors");
/// `(store, origin) -> sink's encoding`: see [`Journal::pending_reship`].
const PENDING_RESHIPS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("pending_reships");

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
    #[error("journal entry {origin}/{store}#{seq} is corrupt: {reason}")]
    Corrupt {
        /// Origin DC.
        origin: String,
        /// Store name.
        store: String,
        /// Origin seq (0 for a source position).
        seq: u64,
        /// Decoder message.
        reason: String,
    },
    /// The journal was written by a newer agent.
    #[error("journal {path} has format {found}, newer than this agent's format {FORMAT_VERSION}: run the newer agent, or drain the backlog with it and move the journal aside before downgrading")]
    NewerFormat {
        /// Journal file path.
        path: PathBuf,
        /// Format found.
        found: u64,
    },
    /// The journal belongs to another DC (wrong `--dc` or data directory).
    #[error("journal {path} belongs to dc {owner:?}, not {me:?}: check --dc and --data-dir")]
    OtherDc {
        /// Journal file path.
        path: PathBuf,
        /// DC recorded in the journal.
        owner: String,
        /// DC this agent runs as.
        me: String,
    },
    /// A relayed transaction does not continue its origin stream.
    #[error("relayed {origin}/{store}#{seq} does not follow the journaled seq {head}: a gap would be skipped")]
    Gap {
        /// Origin DC.
        origin: String,
        /// Store.
        store: String,
        /// Seq offered.
        seq: u64,
        /// Highest seq journaled for the stream.
        head: u64,
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

/// Backlog of one peer for one origin stream.
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
    me: String,
    peers: Vec<String>,
    /// See [`Journal::epoch`].
    epoch: u64,
    /// Logged versions not yet folded into the B-tree (`versions` module).
    overlay: std::sync::Mutex<versions::Overlay>,
    /// Next `version_log` id.
    version_ids: std::sync::atomic::AtomicU64,
    /// See [`Journal::version_generation`].
    version_generation: std::sync::atomic::AtomicU64,
}

/// redb's page cache, bytes. Its default (1 GiB) would let the agent's
/// resident memory grow with the backlog; the backlog is read sequentially,
/// so a small cache costs little.
pub const CACHE_BYTES: usize = 32 << 20;

const BINCODE: bincode::config::Configuration = bincode::config::standard();

impl Journal {
    /// Opens (or creates) the journal file `dir/journal.redb` of DC `me`.
    /// `peers` are the DC ids this journal ships to: their cursors decide
    /// when an entry can be removed. A format-1 journal is migrated (see the
    /// module docs).
    ///
    /// Errors: [`JournalError::Open`] if the directory or file cannot be
    /// created or is locked by another process; [`JournalError::NewerFormat`]
    /// for a journal of a newer agent; [`JournalError::Corrupt`] if a
    /// format-1 entry does not decode during the migration.
    pub fn open(dir: &Path, me: &str, peers: &[String]) -> Result<Journal, JournalError> {
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
        let existing: Vec<String> = w
            .list_tables()
            .map_err(storage)?
            .map(|t| t.name().to_string())
            .collect();
        let format = {
            let m = w.open_table(META).map_err(storage)?;
            let f = m.get("format").map_err(storage)?.map(|g| g.value());
            f
        };
        let existed = format.is_some() || existing.iter().any(|t| t == v1::TXS.name());
        match format {
            Some(f) if f > FORMAT_VERSION => {
                return Err(JournalError::NewerFormat { path, found: f });
            }
            Some(f) if f < FORMAT_VERSION => {
                // Format 2 -> 3: records may now be envelope version 3 and
                // the `open_parts` table exists; 3 -> 4: records may be
                // envelope version 4 and the journal has an epoch (written
                // below; the old markers' epoch 0 is continued). Older
                // records stay readable as they are.
                w.open_table(META)
                    .map_err(storage)?
                    .insert("format", FORMAT_VERSION)
                    .map_err(storage)?;
                tracing::info!(path = %path.display(), from = f, "journal format upgraded to {FORMAT_VERSION}");
            }
            Some(_) => {}
            None => {
                if existing.iter().any(|t| t == v1::TXS.name()) {
                    migrate_v1(&w, me)?;
                    tracing::info!(path = %path.display(), "journal migrated from format 1 to format {FORMAT_VERSION}");
                }
                w.open_table(META)
                    .map_err(storage)?
                    .insert("format", FORMAT_VERSION)
                    .map_err(storage)?;
            }
        }
        {
            let mut id = w.open_table(IDENTITY).map_err(storage)?;
            let owner = id
                .get("dc")
                .map_err(storage)?
                .map(|g| g.value().to_string());
            match owner {
                Some(o) if o != me => {
                    return Err(JournalError::OtherDc {
                        path,
                        owner: o,
                        me: me.to_string(),
                    })
                }
                Some(_) => {}
                None => {
                    id.insert("dc", me).map_err(storage)?;
                }
            }
        }
        let epoch = identity::open_epoch(&w, existed)?;
        {
            w.open_table(LOG).map_err(storage)?;
            w.open_table(HEADS).map_err(storage)?;
            w.open_table(STREAM_CUM).map_err(storage)?;
            w.open_table(STREAM_REMOVED_CUM).map_err(storage)?;
            w.open_table(POSITIONS).map_err(storage)?;
            w.open_table(PEER_CURSORS).map_err(storage)?;
        }
        let open: Vec<(String, String)> = {
            let t = w.open_table(OPEN_PARTS).map_err(storage)?;
            let mut v = Vec::new();
            for item in t.iter().map_err(storage)? {
                let (k, _) = item.map_err(storage)?;
                let (o, s) = k.value();
                v.push((o.to_string(), s.to_string()));
            }
            v
        };
        for (o, st) in &open {
            let n = discard_open_in(&w, o, st)?;
            tracing::info!(origin = %o, store = %st, parts = n, "journal: discarded the parts of a transaction that was not read to its end");
        }
        // Versions a stopped agent logged but did not fold.
        let (folded, _) = versions::fold_in(&w, usize::MAX)?;
        if folded.records > 0 {
            tracing::info!(
                records = folded.records,
                versions = folded.versions,
                "journal: folded the version log into the version index"
            );
        }
        let high_water = versions::scan_high_water(&w)?;
        w.commit().map_err(storage)?;
        Ok(Journal {
            db,
            me: me.to_string(),
            peers: peers.to_vec(),
            epoch,
            overlay: std::sync::Mutex::new(versions::Overlay::with_high_water(high_water)),
            version_ids: std::sync::atomic::AtomicU64::new(1),
            version_generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// This journal's DC: the origin of its local appends.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Appends local transactions of `store` (origin = this DC), assigning
    /// each the next seq (written into `tx.seq`, and `tx.origin` is set to
    /// this DC), and records `position` as the store's source checkpoint,
    /// all in one durable commit. With no transactions and a position, only
    /// the checkpoint moves; that commit is not fsynced (losing it re-reads
    /// an echo or skipped event, which is filtered again).
    ///
    /// Parts of a split transaction ([`Transaction::more`]) are written as
    /// they come; the stream's head moves only to the last entry that ends a
    /// transaction (see the module docs). `position` must be the source
    /// position after the last *whole* transaction of `txs`.
    ///
    /// Returns the `(first, last)` seq assigned, `None` if `txs` was empty.
    pub fn append(
        &self,
        store: &str,
        txs: &mut [Transaction],
        position: Option<&Position>,
    ) -> Result<Option<(u64, u64)>, JournalError> {
        self.append_versioned(store, txs, position, &[], Hlc(0), false)
    }

    /// [`Journal::append`], also recording in the same commit the versions
    /// `(row or key, HLC)` of the local writes of `txs` (DC = this DC) in
    /// the version index, each keeping the greater version, and raising
    /// the store's stamp floor to `floor` ([`Journal::stamp_floor`]; `Hlc(0)`:
    /// unchanged).
    ///
    /// A commit with transactions is durable (fsync). A position-only
    /// commit (`txs` empty) is not, unless `sync_position`: losing it to a
    /// crash only makes the source read a stretch of its stream again
    /// (filtered as already journaled), so the caller asks for a durable
    /// one where a lost position costs more — the first position of a
    /// source run (without it a restart would begin a new stream instead of
    /// resuming) and the end of a snapshot copy (without it a restart copies
    /// the whole store again).
    pub fn append_versioned(
        &self,
        store: &str,
        txs: &mut [Transaction],
        position: Option<&Position>,
        versions: &[(Vec<u8>, Hlc)],
        floor: Hlc,
        sync_position: bool,
    ) -> Result<Option<(u64, u64)>, JournalError> {
        let mut w = self.db.begin_write().map_err(storage)?;
        if floor > Hlc(0) {
            let mut t = w.open_table(STAMP_FLOORS).map_err(storage)?;
            let prev = t.get(store).map_err(storage)?.map(|g| g.value());
            if prev.is_none_or(|p| p < floor.0) {
                t.insert(store, floor.0).map_err(storage)?;
            }
        }
        if txs.is_empty() && !(sync_position && position.is_some()) {
            w.set_durability(Durability::None).map_err(storage)?;
        }
        let mut range = None;
        if !txs.is_empty() {
            let mut last = tail_in(&w, &self.me, store)?;
            let first = last + 1;
            for tx in txs.iter_mut() {
                last += 1;
                tx.seq = last;
                tx.epoch = self.epoch;
                tx.origin.clone_from(&self.me);
            }
            put_entries(&w, &self.me, store, txs)?;
            range = Some((first, last));
        }
        let logged = self.log_local_versions(&w, store, versions)?;
        if let Some(p) = position {
            let bytes = bincode::serde::encode_to_vec(p, BINCODE).map_err(storage)?;
            w.open_table(POSITIONS)
                .map_err(storage)?
                .insert(store, bytes.as_slice())
                .map_err(storage)?;
        }
        self.commit_holding(w, logged)?;
        Ok(range)
    }

    /// Journals transactions of another origin, unchanged (origin, seq and
    /// HLC kept), for forwarding to other peers. `txs` are of one origin
    /// stream, ascending; entries at or below the stream's head are skipped
    /// (a retransmission), the rest must continue it densely. One durable
    /// commit. Returns the stream's head after the append.
    ///
    /// Errors: [`JournalError::Gap`] if the first new seq does not follow the
    /// head (nothing is written).
    pub fn append_relayed(&self, txs: &[Transaction]) -> Result<u64, JournalError> {
        let Some(first) = txs.first() else {
            return Ok(0);
        };
        let (origin, store) = (first.origin.clone(), first.store.clone());
        let w = self.db.begin_write().map_err(storage)?;
        let (head, _) = head_in(&w, &origin, &store)?;
        if tail_in(&w, &origin, &store)? > head && txs.iter().any(|t| t.seq == head + 1) {
            // The origin sends the open transaction again from its start.
            discard_open_in(&w, &origin, &store)?;
        }
        let head = tail_in(&w, &origin, &store)?;
        let fresh: Vec<Transaction> = txs.iter().filter(|t| t.seq > head).cloned().collect();
        let mut expect = head + 1;
        for t in &fresh {
            if t.seq != expect || t.origin != origin || t.store != store {
                return Err(JournalError::Gap {
                    origin: t.origin.clone(),
                    store: t.store.clone(),
                    seq: t.seq,
                    head: expect - 1,
                });
            }
            expect += 1;
        }
        let new_head = if fresh.is_empty() {
            head
        } else {
            put_entries(&w, &origin, &store, &fresh)?;
            expect - 1
        };
        w.commit().map_err(storage)?;
        Ok(new_head)
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
                    origin: self.me.clone(),
                    store: store.to_string(),
                    seq: 0,
                    reason: format!("source position: {e}"),
                }),
        }
    }

    /// Highest seq journaled for the stream `(origin, store)` (0 if none).
    pub fn last_seq(&self, origin: &str, store: &str) -> Result<u64, JournalError> {
        Ok(self.head(origin, store)?.0)
    }

    /// Highest seq journaled for `(origin, store)` and the HLC of that
    /// entry (`(0, Hlc(0))` if none).
    pub fn head(&self, origin: &str, store: &str) -> Result<(u64, Hlc), JournalError> {
        let r = self.db.begin_read().map_err(storage)?;
        let t = r.open_table(HEADS).map_err(storage)?;
        Ok(t.get((origin, store))
            .map_err(storage)?
            .map(|g| {
                let (s, h) = g.value();
                (s, Hlc(h))
            })
            .unwrap_or((0, Hlc(0))))
    }

    /// Every origin stream `(origin, store)` this journal has held, in order.
    pub fn streams(&self) -> Result<Vec<(String, String)>, JournalError> {
        let r = self.db.begin_read().map_err(storage)?;
        let t = r.open_table(HEADS).map_err(storage)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(storage)? {
            let (k, _) = item.map_err(storage)?;
            let (o, s) = k.value();
            out.push((o.to_string(), s.to_string()));
        }
        Ok(out)
    }

    /// The floor of the HLC stamps of `store`'s next local transactions as
    /// last journaled with a source position: at least the HLC of every
    /// change of another DC the source had read (as an echo) up to that
    /// position. A source resuming past those echoes does not read them
    /// again, so it starts its stamps above this (docs/architecture.md,
    /// "Conflicts": a local write is stamped above every value it
    /// overwrites).
    pub fn stamp_floor(&self, store: &str) -> Result<Hlc, JournalError> {
        let r = self.db.begin_read().map_err(storage)?;
        let t = match r.open_table(STAMP_FLOORS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Hlc(0)),
            Err(e) => return Err(storage(e)),
        };
        Ok(Hlc(t.get(store).map_err(storage)?.map_or(0, |g| g.value())))
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

    /// Discards the parts written of a local transaction of `store` whose
    /// last part was not written (the source stopped while reading it and
    /// reads it again from its checkpoint). Returns how many were removed.
    pub fn discard_open(&self, store: &str) -> Result<u64, JournalError> {
        let w = self.db.begin_write().map_err(storage)?;
        let n = discard_open_in(&w, &self.me, store)?;
        w.commit().map_err(storage)?;
        Ok(n)
    }

    /// Reads transactions of `(origin, store)` with seq > `after` up to the
    /// stream's head (parts of a transaction not yet written to its end are
    /// not returned), in seq order, at most `max_txns` of them and stopping
    /// once `max_bytes` encoded bytes are reached (at least one is returned
    /// if any exists).
    pub fn read(
        &self,
        origin: &str,
        store: &str,
        after: u64,
        max_txns: usize,
        max_bytes: usize,
    ) -> Result<Vec<Transaction>, JournalError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        self.read_raw(origin, store, after, |seq, raw| {
            let tx = decode_tx(raw).map_err(|e| JournalError::Corrupt {
                origin: origin.to_string(),
                store: store.to_string(),
                seq,
                reason: e.to_string(),
            })?;
            bytes += raw.len();
            out.push(tx);
            Ok(out.len() < max_txns && bytes < max_bytes)
        })?;
        Ok(out)
    }

    /// Visits the stored records of `(origin, store)` with seq > `after` up
    /// to the stream's head, in seq order, as they are on disk (tagged
    /// envelope records, [`dcsync_core::envelope::encode_tx`]), without
    /// decoding them: `visit(seq, record)` returns whether to go on. What a
    /// sender forwards as it is ([`dcsync_core::envelope::RawBatch`]);
    /// [`Journal::read`] is the decoded form. Returns how many records were
    /// visited.
    ///
    /// Errors: [`JournalError::Storage`]; whatever `visit` returns.
    pub fn read_raw<F>(
        &self,
        origin: &str,
        store: &str,
        after: u64,
        mut visit: F,
    ) -> Result<u64, JournalError>
    where
        F: FnMut(u64, &[u8]) -> Result<bool, JournalError>,
    {
        let r = self.db.begin_read().map_err(storage)?;
        let head = r
            .open_table(HEADS)
            .map_err(storage)?
            .get((origin, store))
            .map_err(storage)?
            .map(|g| g.value().0)
            .unwrap_or(0);
        let start = after.saturating_add(1);
        if start > head {
            return Ok(0);
        }
        let t = r.open_table(LOG).map_err(storage)?;
        let mut n = 0;
        for item in t
            .range((origin, store, start)..=(origin, store, head))
            .map_err(storage)?
        {
            let (k, v) = item.map_err(storage)?;
            let (_, _, seq) = k.value();
            n += 1;
            if !visit(seq, v.value().get(8..).unwrap_or_default())? {
                break;
            }
        }
        Ok(n)
    }

    /// Records that `peer` applied `(origin, store)` up to `seq` (cursors
    /// only move forward) and removes entries every receiving peer has
    /// acknowledged.
    pub fn ack(&self, peer: &str, origin: &str, store: &str, seq: u64) -> Result<(), JournalError> {
        let mut w = self.db.begin_write().map_err(storage)?;
        w.set_durability(Durability::None).map_err(storage)?;
        {
            let mut c = w.open_table(PEER_CURSORS).map_err(storage)?;
            let prev = c
                .get((peer, origin, store))
                .map_err(storage)?
                .map(|g| g.value())
                .unwrap_or(0);
            if seq <= prev {
                return Ok(());
            }
            c.insert((peer, origin, store), seq).map_err(storage)?;
            let mut min = u64::MAX;
            for p in self.peers.iter().filter(|p| p.as_str() != origin) {
                let v = if p == peer {
                    seq
                } else {
                    c.get((p.as_str(), origin, store))
                        .map_err(storage)?
                        .map(|g| g.value())
                        .unwrap_or(0)
                };
                min = min.min(v);
            }
            if min > 0 && min != u64::MAX {
                let mut t = w.open_table(LOG).map_err(storage)?;
                let at_min = t
                    .get((origin, store, min))
                    .map_err(storage)?
                    .map(|g| cum_prefix(g.value()));
                if let Some(cum) = at_min {
                    w.open_table(STREAM_REMOVED_CUM)
                        .map_err(storage)?
                        .insert((origin, store), cum)
                        .map_err(storage)?;
                }
                t.retain_in((origin, store, 0u64)..=(origin, store, min), |_, _| false)
                    .map_err(storage)?;
            }
        }
        w.commit().map_err(storage)?;
        Ok(())
    }

    /// Highest seq `peer` acknowledged for `(origin, store)` (0 if none).
    pub fn cursor(&self, peer: &str, origin: &str, store: &str) -> Result<u64, JournalError> {
        let r = self.db.begin_read().map_err(storage)?;
        let c = r.open_table(PEER_CURSORS).map_err(storage)?;
        Ok(c.get((peer, origin, store))
            .map_err(storage)?
            .map(|g| g.value())
            .unwrap_or(0))
    }

    /// Backlog of `peer` for the stream `(origin, store)`.
    pub fn backlog(&self, peer: &str, origin: &str, store: &str) -> Result<Backlog, JournalError> {
        let acked = self.cursor(peer, origin, store)?;
        let last = self.last_seq(origin, store)?;
        let oldest = if last > acked {
            self.read(origin, store, acked, 1, 1)?
                .first()
                .map(|t| t.hlc)
        } else {
            None
        };
        let bytes = if last > acked {
            let r = self.db.begin_read().map_err(storage)?;
            let total = r
                .open_table(STREAM_CUM)
                .map_err(storage)?
                .get((origin, store))
                .map_err(storage)?
                .map(|g| g.value())
                .unwrap_or(0);
            let at_cursor = match r
                .open_table(LOG)
                .map_err(storage)?
                .get((origin, store, acked))
                .map_err(storage)?
            {
                Some(g) => cum_prefix(g.value()),
                None if acked == 0 => 0,
                None => r
                    .open_table(STREAM_REMOVED_CUM)
                    .map_err(storage)?
                    .get((origin, store))
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

/// The head `(seq, hlc)` of a stream inside a write transaction.
fn head_in(w: &WriteTransaction, origin: &str, store: &str) -> Result<(u64, u64), JournalError> {
    let t = w.open_table(HEADS).map_err(storage)?;
    let v = t
        .get((origin, store))
        .map_err(storage)?
        .map(|g| g.value())
        .unwrap_or((0, 0));
    Ok(v)
}

/// The seq of the last entry written of a stream, parts of an open
/// transaction included.
fn tail_in(w: &WriteTransaction, origin: &str, store: &str) -> Result<u64, JournalError> {
    let open = w
        .open_table(OPEN_PARTS)
        .map_err(storage)?
        .get((origin, store))
        .map_err(storage)?
        .map(|g| g.value());
    match open {
        Some(t) => Ok(t),
        None => Ok(head_in(w, origin, store)?.0),
    }
}

/// Removes the entries after the head of `(origin, store)` (the parts of a
/// transaction whose last part was never written) and restores the byte
/// total to the head's. Returns how many were removed.
fn discard_open_in(w: &WriteTransaction, origin: &str, store: &str) -> Result<u64, JournalError> {
    let tail = w
        .open_table(OPEN_PARTS)
        .map_err(storage)?
        .remove((origin, store))
        .map_err(storage)?
        .map(|g| g.value());
    let Some(tail) = tail else {
        return Ok(0);
    };
    let (head, _) = head_in(w, origin, store)?;
    let mut t = w.open_table(LOG).map_err(storage)?;
    let at_head = if head == 0 {
        Some(0)
    } else {
        t.get((origin, store, head))
            .map_err(storage)?
            .map(|g| cum_prefix(g.value()))
    };
    let cum = match at_head {
        Some(c) => c,
        None => w
            .open_table(STREAM_REMOVED_CUM)
            .map_err(storage)?
            .get((origin, store))
            .map_err(storage)?
            .map(|g| g.value())
            .unwrap_or(0),
    };
    let mut n = 0u64;
    t.retain_in((origin, store, head + 1)..=(origin, store, tail), |_, _| {
        n += 1;
        false
    })
    .map_err(storage)?;
    w.open_table(STREAM_CUM)
        .map_err(storage)?
        .insert((origin, store), cum)
        .map_err(storage)?;
    Ok(n)
}

/// Writes `txs` (seqs already set, ascending, continuing the stream) and
/// moves the stream's head (to the last entry that ends a transaction),
/// open-part tail, byte total and the HLC floor.
fn put_entries(
    w: &WriteTransaction,
    origin: &str,
    store: &str,
    txs: &[Transaction],
) -> Result<(), JournalError> {
    let mut t = w.open_table(LOG).map_err(storage)?;
    let mut cum_t = w.open_table(STREAM_CUM).map_err(storage)?;
    let mut cum = cum_t
        .get((origin, store))
        .map_err(storage)?
        .map(|g| g.value())
        .unwrap_or(0);
    let mut max_hlc = 0u64;
    let mut buf = Vec::new();
    let mut last = None;
    for tx in txs {
        buf.clear();
        buf.extend_from_slice(&[0u8; 8]);
        let n = encode_tx_into(tx, &mut buf).map_err(|e| JournalError::Corrupt {
            origin: origin.to_string(),
            store: store.to_string(),
            seq: tx.seq,
            reason: e.to_string(),
        })?;
        cum += n as u64;
        max_hlc = max_hlc.max(tx.hlc.0);
        buf[..8].copy_from_slice(&cum.to_le_bytes());
        t.insert((origin, store, tx.seq), buf.as_slice())
            .map_err(storage)?;
        if !tx.more {
            last = Some((tx.seq, tx.hlc.0));
        }
    }
    cum_t.insert((origin, store), cum).map_err(storage)?;
    if let Some(last) = last {
        w.open_table(HEADS)
            .map_err(storage)?
            .insert((origin, store), last)
            .map_err(storage)?;
    }
    let mut open = w.open_table(OPEN_PARTS).map_err(storage)?;
    match txs.last() {
        Some(tx) if tx.more => {
            open.insert((origin, store), tx.seq).map_err(storage)?;
        }
        _ => {
            open.remove((origin, store)).map_err(storage)?;
        }
    }
    let mut m = w.open_table(META).map_err(storage)?;
    let prev = m
        .get("hlc")
        .map_err(storage)?
        .map(|g| g.value())
        .unwrap_or(0);
    if max_hlc > prev {
        m.insert("hlc", max_hlc).map_err(storage)?;
    }
    Ok(())
}

pub mod identity;
mod migrate;
mod pending;
mod relay;
mod versions;

#[cfg(test)]
mod tests;
