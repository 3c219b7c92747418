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
    let marker = format!(
        "{}.{}",
        quote_ident(MARKER_SCHEMA),
        quote_ident(MARKER_TABLE)
    );
    type MarkerRow = (String, u64, u64, u64, u64, Vec<u8>);
    let copied: Vec<MarkerRow> = match src
        .exec(
            format!("SELECT origin, slot, seq, hlc, epoch, position FROM {marker} WHERE store = ?"),
            (&store.name,),
        )
        .await
    {
        Ok(rows) => rows,
        // No marker table: that DC never applied anything.
        Err(mysql_async::Error::Server(e)) if e.code == 1146 => Vec::new(),
        Err(e) => return Err(classify("reading the apply markers", e)),
    };
    if let Some((_, _, seq, ..)) = copied
        .iter()
        .find(|m| from.skip_origins.contains(&m.0) && m.2 > 0)
    {
        return Err(ConnectorError::Definite(format!(
            "{} has applied changes of the DC being bootstrapped (up to seq {seq}): it is not a \
             new DC. A DC whose agent lost its data directory recovers by itself (docs/operations.md, \
             \"Replacing an agent's host\"); refilling a DC that lost its store is not supported",
            from.dc
        )));
    }
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
    let mut markers = vec![(from.dc.clone(), from.seq)];
    // Applied seq per origin, as the sink reads it: the lowest of the
    // partitions' highest slots.
    let mut per_part: std::collections::BTreeMap<(String, u64), u64> = Default::default();
    dst.exec_drop(
        format!(
            "INSERT INTO {marker} (origin, store, slot, seq, hlc, epoch, position) \
             VALUES (?, ?, 0, ?, 0, ?, '')"
        ),
        (&from.dc, &store.name, from.seq, from.epoch),
    )
    .await
    .map_err(|e| classify("writing the new DC's apply marker", e))?;
    for (origin, slot, seq, hlc, epoch, position) in copied {
        if origin == from.dc || from.skip_origins.contains(&origin) {
            continue;
        }
        dst.exec_drop(
            format!(
                "INSERT INTO {marker} (origin, store, slot, seq, hlc, epoch, position) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)"
            ),
            (&origin, &store.name, slot, seq, hlc, epoch, position),
        )
        .await
        .map_err(|e| classify("copying an apply marker", e))?;
        let top = per_part
            .entry((origin, slot / crate::sink::MARKER_SLOTS))
            .or_insert(0);
        *top = (*top).max(seq);
    }
    let mut applied: std::collections::BTreeMap<String, u64> = Default::default();
    for ((origin, _), top) in per_part {
        let a = applied.entry(origin).or_insert(u64::MAX);
        *a = (*a).min(top);
    }
    markers.extend(applied);
    let mut end: BinlogPosition = current_position(&mut dst).await?;
    end.gtid_state = gtid_at(&mut dst, &end).await?;
    tracing::info!(store = %store.name, from = %from.dc, snapshot_at = %at, rows = rows_total, tables = tables.len(), new_dc_position = %end, "bootstrap copied");
    Ok(Bootstrapped {
        tables: tables.len() as u64,
        rows: rows_total,
        markers,
        position: end.to_position(),
    })
}
