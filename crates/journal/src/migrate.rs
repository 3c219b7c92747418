//! Migration of a format-1 journal (entries keyed by `(store, seq)`,
//! untagged records, cursors by `(peer, store)`) to the origin-keyed
//! layout (see the crate docs, "Format version and migration").

use crate::{
    cum_prefix, storage, JournalError, HEADS, LOG, PEER_CURSORS, STREAM_CUM, STREAM_REMOVED_CUM,
};
use dcsync_core::envelope::{decode_tx_v1, encode_tx};
use redb::{ReadableTable, WriteTransaction};

/// Format-1 tables, read only by the migration.
pub(crate) mod v1 {
    use redb::TableDefinition;
    pub const TXS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("txs");
    pub const LAST_SEQ: TableDefinition<&str, u64> = TableDefinition::new("last_seq");
    pub const CURSORS: TableDefinition<(&str, &str), u64> = TableDefinition::new("cursors");
    pub const CUM: TableDefinition<&str, u64> = TableDefinition::new("cum");
    pub const REMOVED_CUM: TableDefinition<&str, u64> = TableDefinition::new("removed_cum");
}

/// Rewrites a format-1 journal as format 2 inside `w` (the caller commits).
/// A format-1 journal only held local changes (its sender refused to ship
/// any other origin), so every entry, head, cursor and byte total moves
/// under origin `me`; an entry naming another origin means the data
/// directory belongs to another DC and is refused.
pub(crate) fn migrate_v1(w: &WriteTransaction, me: &str) -> Result<(), JournalError> {
    {
        let old = w.open_table(v1::TXS).map_err(storage)?;
        let mut log = w.open_table(LOG).map_err(storage)?;
        let mut heads = w.open_table(HEADS).map_err(storage)?;
        let mut buf = Vec::new();
        for item in old.iter().map_err(storage)? {
            let (k, v) = item.map_err(storage)?;
            let (store, seq) = k.value();
            let raw = v.value();
            let corrupt = |reason: String| JournalError::Corrupt {
                origin: me.to_string(),
                store: store.to_string(),
                seq,
                reason,
            };
            let tx = decode_tx_v1(raw.get(8..).unwrap_or_default())
                .map_err(|e| corrupt(format!("format-1 entry: {e}")))?;
            if tx.origin != me {
                return Err(corrupt(format!(
                    "format-1 entry of origin {:?} in the journal of dc {me:?}: is this data directory another DC's?",
                    tx.origin
                )));
            }
            let record = encode_tx(&tx).map_err(|e| corrupt(e.to_string()))?;
            buf.clear();
            // The cumulative byte count stays the format-1 one: backlog
            // bytes are differences of it, and the tag byte is noise.
            buf.extend_from_slice(&cum_prefix(raw).to_le_bytes());
            buf.extend_from_slice(&record);
            log.insert((me, store, seq), buf.as_slice())
                .map_err(storage)?;
            heads
                .insert((me, store), (seq, tx.hlc.0))
                .map_err(storage)?;
        }
    }
    {
        let last = w.open_table(v1::LAST_SEQ).map_err(storage)?;
        let mut heads = w.open_table(HEADS).map_err(storage)?;
        for item in last.iter().map_err(storage)? {
            let (k, s) = item.map_err(storage)?;
            let store = k.value();
            let hlc = heads
                .get((me, store))
                .map_err(storage)?
                .map(|g| g.value().1)
                .unwrap_or(0);
            heads
                .insert((me, store), (s.value(), hlc))
                .map_err(storage)?;
        }
        let old_c = w.open_table(v1::CURSORS).map_err(storage)?;
        let mut cur = w.open_table(PEER_CURSORS).map_err(storage)?;
        for item in old_c.iter().map_err(storage)? {
            let (k, s) = item.map_err(storage)?;
            let (peer, store) = k.value();
            cur.insert((peer, me, store), s.value()).map_err(storage)?;
        }
        for (old, new) in [(v1::CUM, STREAM_CUM), (v1::REMOVED_CUM, STREAM_REMOVED_CUM)] {
            let o_t = w.open_table(old).map_err(storage)?;
            let mut n_t = w.open_table(new).map_err(storage)?;
            for item in o_t.iter().map_err(storage)? {
                let (k, v) = item.map_err(storage)?;
                n_t.insert((me, k.value()), v.value()).map_err(storage)?;
            }
        }
    }
    w.delete_table(v1::TXS).map_err(storage)?;
    w.delete_table(v1::LAST_SEQ).map_err(storage)?;
    w.delete_table(v1::CURSORS).map_err(storage)?;
    w.delete_table(v1::CUM).map_err(storage)?;
    w.delete_table(v1::REMOVED_CUM).map_err(storage)?;
    Ok(())
}
