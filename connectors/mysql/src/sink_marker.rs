//! The apply marker table `dcsync.apply_marker`: its creation (and the
//! columns an older release's table gains), the upsert each group's
//! partitions write, and reading it back (see the sink's module docs and
//! docs/mysql.md, "Apply marker table").

use super::{quote_ident, MysqlSink, MARKER_SLOTS};
use crate::error::classify;
use crate::sqltext::push_literal;
use crate::{MARKER_SCHEMA, MARKER_TABLE};
use dcsync_core::connector::ConnectorError;
use dcsync_core::{Transaction, Value};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

/// Creates `dcsync.apply_marker` if it does not exist. Checks
/// `information_schema` first so that an existing table causes no DDL in
/// the binlog.
///
/// Columns: `origin VARCHAR(64)` (DC id), `store VARCHAR(64)` (logical
/// store), `slot SMALLINT UNSIGNED` (`partition * 16 + seq % 16`), `seq BIGINT UNSIGNED`,
/// `hlc BIGINT UNSIGNED` (the group's last HLC), `applied_at TIMESTAMP(6)`,
/// `epoch BIGINT UNSIGNED` (the origin journal's epoch of `seq`),
/// `position VARCHAR(512)` (the origin's source position after `seq`,
/// human-readable); primary key `(origin, store, slot)`. A table of an
/// older release gains the last two columns (`ALTER TABLE`, once).
pub async fn ensure_marker_table(conn: &mut Conn) -> Result<(), ConnectorError> {
    let n: Option<u64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema=? AND table_name=?",
            (MARKER_SCHEMA, MARKER_TABLE),
        )
        .await
        .map_err(|e| classify("checking the apply marker table", e))?;
    if n.unwrap_or(0) > 0 {
        let cols: Option<u64> = conn
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.columns \
                 WHERE table_schema=? AND table_name=? AND column_name IN ('epoch','position')",
                (MARKER_SCHEMA, MARKER_TABLE),
            )
            .await
            .map_err(|e| classify("checking the apply marker table's columns", e))?;
        if cols.unwrap_or(0) < 2 {
            conn.query_drop(format!(
                "ALTER TABLE {}.{} ADD COLUMN IF NOT EXISTS epoch BIGINT UNSIGNED NOT NULL DEFAULT 0, \
                 ADD COLUMN IF NOT EXISTS position VARCHAR(512) NOT NULL DEFAULT ''",
                quote_ident(MARKER_SCHEMA),
                quote_ident(MARKER_TABLE)
            ))
            .await
            .map_err(|e| classify("adding epoch and position to dcsync.apply_marker", e))?;
        }
        return Ok(());
    }
    let sql = format!(
        "CREATE DATABASE IF NOT EXISTS {s}; \
         CREATE TABLE IF NOT EXISTS {s}.{t} ( \
           origin VARCHAR(64) NOT NULL, \
           store VARCHAR(64) NOT NULL, \
           slot SMALLINT UNSIGNED NOT NULL, \
           seq BIGINT UNSIGNED NOT NULL, \
           hlc BIGINT UNSIGNED NOT NULL, \
           applied_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), \
           epoch BIGINT UNSIGNED NOT NULL DEFAULT 0, \
           position VARCHAR(512) NOT NULL DEFAULT '', \
           PRIMARY KEY (origin, store, slot) \
         ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        s = quote_ident(MARKER_SCHEMA),
        t = quote_ident(MARKER_TABLE)
    );
    conn.query_drop(sql)
        .await
        .map_err(|e| classify("creating the apply marker table dcsync.apply_marker", e))
}

/// Appends `INSERT INTO dcsync.apply_marker .. ON DUPLICATE KEY UPDATE ..;`
/// setting marker `slot` of `(origin, store)` to `tx`'s seq and HLC.
pub(super) fn push_marker_upsert(
    buf: &mut Vec<u8>,
    origin: &str,
    store: &str,
    slot: u64,
    tx: &Transaction,
) {
    buf.extend_from_slice(b"INSERT INTO ");
    buf.extend_from_slice(marker_table().as_bytes());
    buf.extend_from_slice(
        b" (origin, store, slot, seq, hlc, epoch, position, applied_at) VALUES (",
    );
    for v in [
        Value::Bytes(origin.as_bytes().to_vec()),
        Value::Bytes(store.as_bytes().to_vec()),
        Value::UInt(slot),
        Value::UInt(tx.seq),
        Value::UInt(tx.hlc.0),
        Value::UInt(tx.epoch),
        marker_position(tx),
    ] {
        push_literal(buf, &v, false);
        buf.push(b',');
    }
    buf.extend_from_slice(
        b"NOW(6)) ON DUPLICATE KEY UPDATE seq=VALUES(seq), hlc=VALUES(hlc), \
          epoch=VALUES(epoch), position=VALUES(position), applied_at=VALUES(applied_at);\n",
    );
}

/// Most bytes of the `position` column of the apply marker.
const MARKER_POSITION_BYTES: usize = 512;

/// `tx`'s source position as the marker stores it: the human-readable form,
/// empty when longer than the column (a replacement agent then cannot
/// resume from this marker, and says so).
pub(super) fn marker_position(tx: &Transaction) -> Value {
    let p = if tx.position.len() <= MARKER_POSITION_BYTES {
        tx.position.as_bytes().to_vec()
    } else {
        Vec::new()
    };
    Value::Bytes(p)
}

pub(super) fn marker_table() -> String {
    format!(
        "{}.{}",
        quote_ident(MARKER_SCHEMA),
        quote_ident(MARKER_TABLE)
    )
}

impl MysqlSink {
    /// Reads the per-partition applied seqs of `origin`, rewriting the
    /// marker rows first if they do not match the partition count (see the
    /// module docs).
    pub(super) async fn read_applied(&mut self, origin: &str) -> Result<Vec<u64>, ConnectorError> {
        let n = self.conns.len();
        let store = self.store.clone();
        let table = marker_table();
        let conn = self.conn(0).await?;
        let r = async {
            let rows: Vec<(u64, u64, u64, Vec<u8>)> = conn
                .exec(
                    format!(
                        "SELECT slot, seq, epoch, position FROM {table} WHERE origin=? AND store=?"
                    ),
                    (origin, store.as_str()),
                )
                .await
                .map_err(|e| classify("reading the apply marker", e))?;
            let mut by_part: std::collections::BTreeMap<u64, u64> = Default::default();
            let low_row = rows
                .iter()
                .min_by_key(|r| r.1)
                .map(|r| (r.2, r.3.clone()))
                .unwrap_or_default();
            for (slot, seq, _, _) in rows {
                let m = by_part.entry(slot / MARKER_SLOTS).or_insert(0);
                *m = (*m).max(seq);
            }
            if by_part.keys().copied().eq(0..n as u64) {
                return Ok(by_part.into_values().collect());
            }
            let low = by_part.values().copied().min().unwrap_or(0);
            tracing::info!(
                store = %store, origin, partitions = n, old = ?by_part, from_seq = low,
                "mysql sink: marker rows rewritten for the partition count"
            );
            conn.query_drop("BEGIN")
                .await
                .map_err(|e| classify("BEGIN", e))?;
            conn.exec_drop(
                format!("DELETE FROM {table} WHERE origin=? AND store=?"),
                (origin, store.as_str()),
            )
            .await
            .map_err(|e| classify("rewriting the apply marker", e))?;
            for p in 0..n as u64 {
                conn.exec_drop(
                    format!(
                        "INSERT INTO {table} (origin, store, slot, seq, hlc, epoch, position, \
                         applied_at) VALUES (?,?,?,?,0,?,?,NOW(6))"
                    ),
                    (
                        origin,
                        store.as_str(),
                        p * MARKER_SLOTS + low % MARKER_SLOTS,
                        low,
                        low_row.0,
                        low_row.1.clone(),
                    ),
                )
                .await
                .map_err(|e| classify("rewriting the apply marker", e))?;
            }
            conn.query_drop("COMMIT")
                .await
                .map_err(|e| classify("COMMIT", e))?;
            Ok(vec![low; n])
        }
        .await;
        if r.is_err() {
            self.conns[0] = None;
        }
        r
    }
}
