//! `dcsync bootstrap` for MySQL/MariaDB stores (see
//! [`dcsync_core::connector::Connector::bootstrap`] and docs/operations.md,
//! "Adding a DC").
//!
//! 1. The existing DC's server: `START TRANSACTION WITH CONSISTENT SNAPSHOT`
//!    (REPEATABLE READ, `SET NAMES binary` so bytes are copied as stored).
//! 2. Its `dcsync.apply_marker` rows of every other origin, read in that
//!    snapshot: what of those origins the copy holds.
//! 3. Every replicated table, in primary-key chunks of [`CHUNK_ROWS`], read
//!    with the binary protocol and written to the new DC's server with one
//!    multi-row `REPLACE` per chunk (also `SET NAMES binary`).
//! 4. The new DC's marker rows: the copied ones, and one for the existing
//!    DC's own origin at the seq its journal had reached before step 1.
//! 5. The new DC's binlog position after all that, where its source starts
//!    (the copy itself is not shipped back).
//!
//! With [`BootstrapFrom::restored`] (`--backup-position`) the new DC's server
//! already holds a backup of the existing DC's, restored with its `dcsync`
//! schema: steps 1 to 3 are skipped, the restored marker rows of the other
//! origins are kept, and step 4 writes the existing DC's own marker only.

use crate::config::MysqlOptions;
use crate::error::classify;
use crate::position::BinlogPosition;
use crate::server::{current_position, gtid_at};
use crate::sink::{ensure_marker_table, quote_ident};
use crate::source::snapshot::{keyset_after, replicated_tables, snapshot_position};
use crate::{MARKER_SCHEMA, MARKER_TABLE};
use dcsync_core::connector::{BootstrapFrom, Bootstrapped, ConnectorError};
use dcsync_core::topology::{redact_url, StoreConfig};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Params, Row, Value};

/// Rows per chunk (one read, one `REPLACE`).
pub const CHUNK_ROWS: usize = 1000;

async fn connect(url: &str) -> Result<Conn, ConnectorError> {
    let opts = Opts::from_url(url)
        .map_err(|e| ConnectorError::Definite(format!("bad store URL {}: {e}", redact_url(url))))?;
    let mut c = Conn::new(opts)
        .await
        .map_err(|e| classify(&format!("connecting to {}", redact_url(url)), e))?;
    c.query_drop("SET NAMES binary; SET time_zone = '+00:00'")
        .await
        .map_err(|e| classify("setting up the session", e))?;
    Ok(c)
}

/// `dcsync.apply_marker`, quoted.
fn marker_table() -> String {
    format!(
        "{}.{}",
        quote_ident(MARKER_SCHEMA),
        quote_ident(MARKER_TABLE)
    )
}

/// A marker row: origin, slot, seq, hlc, epoch, position.
type MarkerRow = (String, u64, u64, u64, u64, Vec<u8>);

/// The marker rows of `store` on `conn` (none without a marker table: that
/// server never applied anything).
async fn marker_rows(conn: &mut Conn, store: &str) -> Result<Vec<MarkerRow>, ConnectorError> {
    match conn
        .exec(
            format!(
                "SELECT origin, slot, seq, hlc, epoch, position FROM {} WHERE store = ?",
                marker_table()
            ),
            (store,),
        )
        .await
    {
        Ok(rows) => Ok(rows),
        Err(mysql_async::Error::Server(e)) if e.code == 1146 => Ok(Vec::new()),
        Err(e) => Err(classify("reading the apply markers", e)),
    }
}

/// Refuses markers showing that `from` applied changes of the DC being
/// bootstrapped: that DC is not new.
fn refuse_applied_new_dc(rows: &[MarkerRow], from: &BootstrapFrom) -> Result<(), ConnectorError> {
    match rows
        .iter()
        .find(|m| from.skip_origins.contains(&m.0) && m.2 > 0)
    {
        Some((_, _, seq, ..)) => Err(ConnectorError::Definite(format!(
            "{} has applied changes of the DC being bootstrapped (up to seq {seq}): it is not a \
             new DC. A DC whose agent lost its data directory recovers by itself (docs/operations.md, \
             \"Replacing an agent's host\"); refilling a DC that lost its store is not supported",
            from.dc
        ))),
        None => Ok(()),
    }
}

/// Applied seq per origin of marker rows, as the sink reads it: the lowest
/// of the partitions' highest slots.
fn applied_per_origin(rows: &[MarkerRow]) -> Vec<(String, u64)> {
    let mut per_part: std::collections::BTreeMap<(String, u64), u64> = Default::default();
    for (origin, slot, seq, ..) in rows {
        let top = per_part
            .entry((origin.clone(), slot / crate::sink::MARKER_SLOTS))
            .or_insert(0);
        *top = (*top).max(*seq);
    }
    let mut applied: std::collections::BTreeMap<String, u64> = Default::default();
    for ((origin, _), top) in per_part {
        let a = applied.entry(origin).or_insert(u64::MAX);
        *a = (*a).min(top);
    }
    applied.into_iter().collect()
}

/// Writes the new DC's marker of `from`'s own origin at `from.seq`.
async fn write_from_marker(
    dst: &mut Conn,
    store: &StoreConfig,
    from: &BootstrapFrom,
) -> Result<(), ConnectorError> {
    dst.exec_drop(
        format!(
            "INSERT INTO {} (origin, store, slot, seq, hlc, epoch, position) \
             VALUES (?, ?, 0, ?, 0, ?, ?)",
            marker_table()
        ),
        (&from.dc, &store.name, from.seq, from.epoch, &from.position),
    )
    .await
    .map_err(|e| classify("writing the new DC's apply marker", e))
}

/// The new DC's binlog end with its GTID state: where its source starts.
async fn end_position(dst: &mut Conn) -> Result<BinlogPosition, ConnectorError> {
    let mut end: BinlogPosition = current_position(dst).await?;
    end.gtid_state = gtid_at(dst, &end).await?;
    Ok(end)
}

/// [`BootstrapFrom::restored`]: the store at `to_url` holds a backup of
/// `from`'s; only `from`'s marker is written (see the module docs).
async fn restored(
    to_url: &str,
    store: &StoreConfig,
    from: &BootstrapFrom,
) -> Result<Bootstrapped, ConnectorError> {
    let mut dst = connect(to_url).await?;
    let rows = marker_rows(&mut dst, &store.name).await?;
    refuse_applied_new_dc(&rows, from)?;
    let others: Vec<MarkerRow> = rows
        .into_iter()
        .filter(|m| m.0 != from.dc && !from.skip_origins.contains(&m.0))
        .collect();
    if others.is_empty() {
        tracing::warn!(store = %store.name, from = %from.dc, "the restored store holds no apply marker of another DC: right if {} had applied nothing of the others when the backup was taken; otherwise the backup left out the `dcsync` schema, and the other DCs would resend everything", from.dc);
    }
    ensure_marker_table(&mut dst).await?;
    let mut clear = vec![from.dc.clone()];
    clear.extend(from.skip_origins.iter().cloned());
    for origin in &clear {
        dst.exec_drop(
            format!(
                "DELETE FROM {} WHERE store = ? AND origin = ?",
                marker_table()
            ),
            (&store.name, origin),
        )
        .await
        .map_err(|e| classify("clearing the new DC's apply markers", e))?;
    }
    write_from_marker(&mut dst, store, from).await?;
    let mut markers = vec![(from.dc.clone(), from.seq)];
    markers.extend(applied_per_origin(&others));
    let end = end_position(&mut dst).await?;
    tracing::info!(store = %store.name, from = %from.dc, seq = from.seq, new_dc_position = %end, "bootstrap from a restored backup");
    Ok(Bootstrapped {
        tables: 0,
        rows: 0,
        markers,
        position: end.to_position(),
    })
}

/// See the module docs.
///
/// Errors: Definite for a bad URL, a server without a snapshot position
/// (MySQL), a table missing on the new DC; Transient for connections.
pub async fn bootstrap(
    from_url: &str,
    to_url: &str,
    store: &StoreConfig,
    from: &BootstrapFrom,
) -> Result<Bootstrapped, ConnectorError> {
    if from.restored {
        return restored(to_url, store, from).await;
    }
    let options = MysqlOptions::of(store)?.clone();
    let mut src = connect(from_url).await?;
    let mut dst = connect(to_url).await?;
    src.query_drop(
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ; \
         START TRANSACTION WITH CONSISTENT SNAPSHOT",
    )
    .await
    .map_err(|e| classify("START TRANSACTION WITH CONSISTENT SNAPSHOT", e))?;
    let at = snapshot_position(&mut src).await?;
    let marker = marker_table();
    let copied = marker_rows(&mut src, &store.name).await?;
    refuse_applied_new_dc(&copied, from)?;
    let tables = replicated_tables(&mut src, &options).await?;
    let mut rows_total = 0u64;
    let started = std::time::Instant::now();
    for (n, t) in tables.iter().enumerate() {
        // InnoDB's estimate, for the progress line only.
        let estimate: Option<u64> = src
            .exec_first(
                "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&t.meta.schema, &t.meta.name),
            )
            .await
            .ok()
            .flatten();
        let table_started = std::time::Instant::now();
        let mut table_rows = 0u64;
        let cols: Vec<String> = t
            .meta
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect();
        let pk: Vec<&String> = t.pk.iter().filter_map(|i| cols.get(*i)).collect();
        let name = format!(
            "{}.{}",
            quote_ident(&t.meta.schema),
            quote_ident(&t.meta.name)
        );
        let order = pk.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ");
        let mut after: Option<Vec<Value>> = None;
        loop {
            let (cond, params) = match &after {
                None => ("TRUE".to_string(), Vec::new()),
                Some(last) => (
                    keyset_after(&pk, last, |_| "?".to_string()),
                    (0..pk.len().min(last.len()))
                        .flat_map(|n| last[..=n].iter().cloned())
                        .collect(),
                ),
            };
            let rows: Vec<Row> = src
                .exec(
                    format!(
                        "SELECT {} FROM {name} WHERE {cond} ORDER BY {order} LIMIT {CHUNK_ROWS}",
                        cols.join(", ")
                    ),
                    Params::Positional(params),
                )
                .await
                .map_err(|e| {
                    classify(
                        &format!("reading {} for the bootstrap", t.meta.qualified()),
                        e,
                    )
                })?;
            let Some(last) = rows.last() else { break };
            after = Some(
                t.pk.iter()
                    .map(|i| last.as_ref(*i).cloned().unwrap_or(Value::NULL))
                    .collect(),
            );
            let one = format!("({})", vec!["?"; cols.len()].join(", "));
            let values: Vec<Value> = rows
                .iter()
                .flat_map(|r| {
                    (0..cols.len()).map(move |i| r.as_ref(i).cloned().unwrap_or(Value::NULL))
                })
                .collect();
            dst.exec_drop(
                format!(
                    "REPLACE INTO {name} ({}) VALUES {}",
                    cols.join(", "),
                    vec![one; rows.len()].join(", ")
                ),
                Params::Positional(values),
            )
            .await
            .map_err(|e| classify(&format!("writing {} on the new DC", t.meta.qualified()), e))?;
            rows_total += rows.len() as u64;
            table_rows += rows.len() as u64;
            if table_rows.is_multiple_of(50 * CHUNK_ROWS as u64) {
                let rate = table_rows as f64 / table_started.elapsed().as_secs_f64().max(0.001);
                let eta = estimate
                    .map(|e| {
                        format!(
                            "{:.0} s",
                            e.saturating_sub(table_rows) as f64 / rate.max(1.0)
                        )
                    })
                    .unwrap_or_else(|| "unknown".into());
                tracing::info!(table = %t.meta.qualified(), rows = table_rows, estimate = ?estimate, rows_per_s = rate as u64, eta = %eta, "bootstrap: copying");
            }
        }
        tracing::info!(table = %t.meta.qualified(), rows = table_rows, tables_done = n + 1, tables = tables.len(), rows_total, secs = started.elapsed().as_secs_f64(), "bootstrap: table copied");
    }
    let _ = src.query_drop("COMMIT").await;
    ensure_marker_table(&mut dst).await?;
    dst.exec_drop(
        format!("DELETE FROM {marker} WHERE store = ?"),
        (&store.name,),
    )
    .await
    .map_err(|e| classify("clearing the new DC's apply markers", e))?;
    write_from_marker(&mut dst, store, from).await?;
    let copied: Vec<MarkerRow> = copied
        .into_iter()
        .filter(|m| m.0 != from.dc && !from.skip_origins.contains(&m.0))
        .collect();
    for (origin, slot, seq, hlc, epoch, position) in &copied {
        dst.exec_drop(
            format!(
                "INSERT INTO {marker} (origin, store, slot, seq, hlc, epoch, position) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)"
            ),
            (origin, &store.name, slot, seq, hlc, epoch, position),
        )
        .await
        .map_err(|e| classify("copying an apply marker", e))?;
    }
    let mut markers = vec![(from.dc.clone(), from.seq)];
    markers.extend(applied_per_origin(&copied));
    let end = end_position(&mut dst).await?;
    tracing::info!(store = %store.name, from = %from.dc, snapshot_at = %at, rows = rows_total, tables = tables.len(), new_dc_position = %end, "bootstrap copied");
    Ok(Bootstrapped {
        tables: tables.len() as u64,
        rows: rows_total,
        markers,
        position: end.to_position(),
    })
}
