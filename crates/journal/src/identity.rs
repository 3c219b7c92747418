//! Journal identity: the epoch of this journal, the epochs each local
//! stream continues, and recovery of a stream from what the peers applied
//! (docs/architecture.md, "Journal identity").
//!
//! # Epoch
//! A journal draws a random non-zero `epoch` when it is created
//! (`identity["epoch"]`, 16 hex digits). Every local entry carries it
//! ([`dcsync_core::Transaction::epoch`]) and the peers' apply markers
//! record it with the seq, so a peer's marker names the journal whose seq it
//! counts: a new journal's seq N is never taken for an old journal's seq N.
//!
//! # Settled streams and ancestors
//! A local stream `(this DC, store)` of a new journal is *unsettled* until
//! the agent has heard from every peer what it applied of it: shipping
//! waits, the source already journals. Then either no peer applied anything
//! (a first start: [`Journal::settle`]) or some did (this DC's journal was
//! lost: [`Journal::recover`] restarts the stream at the least advanced
//! peer's marker, whose seq and source position the agent takes, and the
//! source re-reads from there, assigning the same seqs again). Either way
//! the epochs the peers' markers named become the stream's *ancestors*
//! (`ancestors` table: `store -> epochs`, 8 bytes LE each): a marker of an
//! ancestor epoch or of this journal's own is a resume point; any other is
//! refused loudly by the sender ([`Journal::continues`]), never skipped
//! over. A journal upgraded from a format without epochs continues epoch
//! 0 (markers written before the upgrade) for every store (key `*`).

use crate::{discard_open_in, storage, Journal, JournalError, BINCODE, HEADS, IDENTITY, LOG};
use crate::{OPEN_PARTS, PEER_CURSORS, POSITIONS, STREAM_CUM, STREAM_REMOVED_CUM};
use dcsync_core::connector::Position;
use dcsync_core::Hlc;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

/// `store -> epochs` (8 bytes LE each) the local stream of `store`
/// continues; key `*` applies to every store.
pub(crate) const ANCESTORS: TableDefinition<&str, &[u8]> = TableDefinition::new("ancestors");

/// Key of [`ANCESTORS`] that applies to every store.
const ALL_STORES: &str = "*";

/// Reads or creates the journal's epoch inside `w`. `existed` says whether
/// the journal held data of a format without epochs: it then continues
/// epoch 0 for every store.
pub(crate) fn open_epoch(w: &WriteTransaction, existed: bool) -> Result<u64, JournalError> {
    let mut id = w.open_table(IDENTITY).map_err(storage)?;
    let found = id
        .get("epoch")
        .map_err(storage)?
        .map(|g| u64::from_str_radix(g.value(), 16));
    match found {
        Some(Ok(e)) if e != 0 => Ok(e),
        Some(_) => Err(JournalError::Storage(
            "journal identity: the epoch is not a non-zero hex number".into(),
        )),
        None => {
            let epoch = loop {
                let e: u64 = rand::random();
                if e != 0 {
                    break e;
                }
            };
            id.insert("epoch", format!("{epoch:016x}").as_str())
                .map_err(storage)?;
            let mut a = w.open_table(ANCESTORS).map_err(storage)?;
            if existed {
                a.insert(ALL_STORES, 0u64.to_le_bytes().as_slice())
                    .map_err(storage)?;
            }
            Ok(epoch)
        }
    }
}

fn decode_epochs(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8)
        .filter_map(|c| <[u8; 8]>::try_from(c).ok())
        .map(u64::from_le_bytes)
        .collect()
}

fn encode_epochs(e: &[u64]) -> Vec<u8> {
    e.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl Journal {
    /// This journal's epoch (non-zero; see the module docs).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The ancestor epochs of the local stream of `store`, `None` while the
    /// stream is unsettled (see the module docs).
    pub fn ancestors(&self, store: &str) -> Result<Option<Vec<u64>>, JournalError> {
        let r = self.db.begin_read().map_err(storage)?;
        let t = match r.open_table(ANCESTORS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(storage(e)),
        };
        let mut out: Option<Vec<u64>> = None;
        for key in [store, ALL_STORES] {
            if let Some(g) = t.get(key).map_err(storage)? {
                out.get_or_insert_with(Vec::new)
                    .extend(decode_epochs(g.value()));
            }
        }
        Ok(out)
    }

    /// Whether the local stream of `store` is settled: the agent knows what
    /// every peer applied of it, and may ship it.
    pub fn settled(&self, store: &str) -> Result<bool, JournalError> {
        Ok(self.ancestors(store)?.is_some())
    }

    /// Whether a peer's apply marker of this DC's `store` naming `epoch` is
    /// a resume point of this journal: its own epoch or an ancestor. Epoch
    /// 0 (a marker written before epochs existed) only for a journal that
    /// continues it.
    pub fn continues(&self, store: &str, epoch: u64) -> Result<bool, JournalError> {
        if epoch == self.epoch && epoch != 0 {
            return Ok(true);
        }
        Ok(self.ancestors(store)?.is_some_and(|a| a.contains(&epoch)))
    }

    /// Settles the local stream of `store` as it is (no peer applied any of
    /// it, or what they applied is continued): records `ancestors` (the
    /// epochs the peers' markers named).
    pub fn settle(&self, store: &str, ancestors: &[u64]) -> Result<(), JournalError> {
        let w = self.db.begin_write().map_err(storage)?;
        {
            let mut t = w.open_table(ANCESTORS).map_err(storage)?;
            let mut all = t
                .get(store)
                .map_err(storage)?
                .map(|g| decode_epochs(g.value()))
                .unwrap_or_default();
            for e in ancestors {
                if !all.contains(e) {
                    all.push(*e);
                }
            }
            t.insert(store, encode_epochs(&all).as_slice())
                .map_err(storage)?;
        }
        w.commit().map_err(storage)?;
        Ok(())
    }

    /// Restarts the local stream of `store` at a peer's apply marker: every
    /// entry of it is discarded (the source reads them again), its head
    /// becomes `seq` (the next local append gets `seq + 1`), its source
    /// checkpoint `position` (the source position after that seq), the
    /// peers' cursors `seq`, and the stream settles with `ancestors`. One
    /// durable commit.
    pub fn recover(
        &self,
        store: &str,
        seq: u64,
        hlc: Hlc,
        position: &Position,
        ancestors: &[u64],
    ) -> Result<(), JournalError> {
        let me = self.me.as_str();
        let w = self.db.begin_write().map_err(storage)?;
        discard_open_in(&w, me, store)?;
        {
            let mut log = w.open_table(LOG).map_err(storage)?;
            let keys: Vec<u64> = log
                .range((me, store, 0)..=(me, store, u64::MAX))
                .map_err(storage)?
                .map(|i| i.map(|(k, _)| k.value().2).map_err(storage))
                .collect::<Result<_, _>>()?;
            for s in keys {
                log.remove((me, store, s)).map_err(storage)?;
            }
            w.open_table(HEADS)
                .map_err(storage)?
                .insert((me, store), (seq, hlc.0))
                .map_err(storage)?;
            w.open_table(OPEN_PARTS)
                .map_err(storage)?
                .remove((me, store))
                .map_err(storage)?;
            for t in [STREAM_CUM, STREAM_REMOVED_CUM] {
                w.open_table(t)
                    .map_err(storage)?
                    .insert((me, store), 0u64)
                    .map_err(storage)?;
            }
            let mut cur = w.open_table(PEER_CURSORS).map_err(storage)?;
            for p in &self.peers {
                cur.insert((p.as_str(), me, store), seq).map_err(storage)?;
            }
            let bytes = bincode::serde::encode_to_vec(position, BINCODE).map_err(storage)?;
            w.open_table(POSITIONS)
                .map_err(storage)?
                .insert(store, bytes.as_slice())
                .map_err(storage)?;
            w.open_table(ANCESTORS)
                .map_err(storage)?
                .insert(store, encode_epochs(ancestors).as_slice())
                .map_err(storage)?;
        }
        w.commit().map_err(storage)?;
        Ok(())
    }
}
