//! The initial snapshot (`initial = "snapshot"`, the default): on a store's
//! first start, the rows its replicated tables already hold are shipped as
//! ordinary local changes before the binlog is tailed, from exactly the
//! snapshot's position, so nothing that existed or was written while the
//! agent started is missed.
//!
//! - **Consistent point.** One connection runs `START TRANSACTION WITH
//!   CONSISTENT SNAPSHOT` (REPEATABLE READ) and reads MariaDB's
//!   `binlog_snapshot_file` / `binlog_snapshot_position` status, the binlog
//!   position of exactly that snapshot (MariaDB documents it for this use:
//!   "Enhancements for START TRANSACTION WITH CONSISTENT SNAPSHOT"). MySQL
//!   has no such status: a MySQL store needs `initial = "none"`.
//! - **Chunks.** Each table (base tables the store replicates, in name
//!   order) is read in primary-key order by keyset pagination (`WHERE pk >
//!   last ORDER BY pk LIMIT n`, [`CHUNK_ROWS`] rows), and each chunk is one
//!   `SourceEvent::Local` of `INSERT` row changes (applied as `REPLACE`:
//!   idempotent). Text protocol with `character_set_results = binary` and
//!   `time_zone = '+00:00'`, so values are the stored bytes, as the binlog
//!   has them; numbers and dates are typed like the binlog decoder's
//!   ([`typed`]). Memory: two chunks (the next chunk is read while the
//!   agent journals the last one; the snapshot waits for that before it
//!   sends again).
//! - **Resumable.** Each chunk's position is the snapshot's binlog position
//!   plus a cursor (table, last primary key), journaled with the chunk. A
//!   source restarted mid-snapshot opens a new consistent snapshot and goes
//!   on after the cursor, and still tails from the *first* snapshot's
//!   position: binlog events between the two are applied again over rows
//!   read later, which is safe (full row images, applied as `REPLACE` /
//!   `DELETE` by primary key; each row ends with its last event). When every
//!   table is read, a `Progress` to the plain binlog position ends the
//!   snapshot.
//! - **HLC.** Chunks carry [`SNAPSHOT_COMMIT_MS`] as commit time: a
//!   snapshot copy of a row is stamped older than any live write, so under
//!   `conflict = "lww"` every write made in any DC wins over another DC's
//!   copy, and two DCs' copies of one row (both held it before) are ordered
//!   by stamp, then DC id.
//! - **Rate.** `snapshot_rows_per_sec` (0: no limit) paces the reads.

use super::{Flow, Tailer};
use crate::error::classify;
use crate::position::BinlogPosition;
use crate::sink::quote_ident;
use dcsync_core::connector::{ConnectorError, Position, SourceEvent, SNAPSHOT_COMMIT_MS};
use dcsync_core::topology::redact_url;
use dcsync_core::{Change, ColumnMeta, Payload, RowChange, RowKind, TableMeta, Value};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Row};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rows per chunk (one journaled transaction).
pub const CHUNK_ROWS: usize = 1000;
/// Bytes per chunk, approximate: a chunk of large rows ends earlier.
const CHUNK_BYTES: usize = 4 << 20;

/// Where a snapshot stands: which table, and the primary key of the last
/// row shipped (`None`: the table's first chunk).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// `schema.table`.
    pub table: String,
    /// Primary key values (in primary-key order) of the last row shipped.
    pub after: Option<Vec<Value>>,
}

/// A position inside the snapshot: the snapshot's binlog position (what
/// [`BinlogPosition::from_position`] reads from it) plus the cursor.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotPosition {
    #[serde(flatten)]
    binlog: BinlogPosition,
    snapshot: Cursor,
}

fn to_position(binlog: &BinlogPosition, cursor: &Cursor) -> Position {
    let p = SnapshotPosition {
        binlog: binlog.clone(),
        snapshot: cursor.clone(),
    };
    Position {
        bytes: serde_json::to_vec(&p).unwrap_or_default(),
        display: format!("{binlog} snapshot={}", cursor.table),
    }
}

/// The cursor of a position taken inside a snapshot, `None` for a plain
/// binlog position.
pub fn cursor_of(p: &Position) -> Option<Cursor> {
    serde_json::from_slice::<SnapshotPosition>(&p.bytes)
        .ok()
        .map(|s| s.snapshot)
}

/// One table to read.
pub(crate) struct Table {
    pub(crate) meta: Arc<TableMeta>,
    /// Column indexes of the primary key, in the key's order.
    pub(crate) pk: Vec<usize>,
    /// Lower-cased `DATA_TYPE` of each column.
    types: Vec<String>,
}

impl Tailer {
    /// Runs (or resumes) the initial snapshot when it applies: a first
    /// start (no resume position) or a resume position inside a snapshot.
    /// Afterwards `cx.resume` is the snapshot's binlog position, from which
    /// the dump starts. `Ok(Flow::Shutdown)` if the agent stopped meanwhile.
    ///
    /// Errors: Definite on MySQL (no consistent snapshot position) and for
    /// a replicated table without a primary key (unless skipped);
    /// Transient for connection problems.
    pub(super) async fn snapshot(&mut self, url: &str) -> Result<Flow, ConnectorError> {
        let resumed = match &self.cx.resume {
            None if self.options.initial == crate::config::Initial::Snapshot => None,
            None => return Ok(Flow::Continue),
            Some(p) => match cursor_of(p) {
                Some(c) => Some((BinlogPosition::from_position(p)?, c)),
                None => return Ok(Flow::Continue),
            },
        };
        let opts = Opts::from_url(url).map_err(|e| {
            ConnectorError::Definite(format!("bad store URL {}: {e}", redact_url(url)))
        })?;
        let mut conn = Conn::new(opts)
            .await
            .map_err(|e| classify(&format!("connecting to {}", redact_url(url)), e))?;
        conn.query_drop(
            "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ; \
             SET time_zone = '+00:00'; SET character_set_results = binary",
        )
        .await
        .map_err(|e| classify("setting up the snapshot session", e))?;
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            .await
            .map_err(|e| classify("START TRANSACTION WITH CONSISTENT SNAPSHOT", e))?;
        let at = snapshot_position(&mut conn).await?;
        let (binlog, mut cursor) = match resumed {
            Some((b, c)) => (b, Some(c)),
            None => {
                let mut b = at.clone();
                b.gtid_state = crate::server::gtid_at(&mut conn, &b).await?;
                (b, None)
            }
        };
        tracing::info!(
            store = %self.cx.store.name,
            binlog = %binlog,
            snapshot_at = %at,
            resumed = ?cursor.as_ref().map(|c| c.table.clone()),
            "mysql source: initial snapshot of the replicated tables; the binlog is tailed from its position afterwards"
        );
        let tables = replicated_tables(&mut conn, &self.options).await?;
        // InnoDB's row estimates, for the progress in the status only.
        let mut rows_estimate = 0u64;
        for t in &tables {
            let e: Option<Option<u64>> = conn
                .exec_first(
                    "SELECT TABLE_ROWS FROM information_schema.TABLES \
                     WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                    (&t.meta.schema, &t.meta.name),
                )
                .await
                .map_err(|e| classify("reading the tables' row estimates", e))?;
            rows_estimate += e.flatten().unwrap_or(0);
        }
        let pace = self.options.snapshot_rows_per_sec;
        let began = Instant::now();
        let mut rows_total: u64 = 0;
        // The chunk sent and not yet known journaled: at most one, so the
        // snapshot holds two chunks at a time (the one being read and the
        // one being journaled), whatever the table's size.
        let mut in_flight: Option<Position> = None;
        for (done_tables, t) in tables.iter().enumerate() {
            let name = t.meta.qualified();
            let after = match &cursor {
                Some(c) if c.table > name => continue,
                Some(c) if c.table == name => c.after.clone(),
                _ => None,
            };
            cursor = None;
            let mut after = after;
            loop {
                let (changes, last) = read_chunk(&mut conn, t, after.as_deref()).await?;
                if let Some(p) = in_flight.take() {
                    if let Flow::Shutdown = self.journaled(&p).await {
                        return Ok(Flow::Shutdown);
                    }
                }
                let Some(last) = last else { break };
                let n = changes.len();
                let changes: Vec<Change> = changes
                    .into_iter()
                    .map(|image| Change {
                        unit: self.units.unit_of_row(&name, &t.meta.columns, Some(&image)),
                        payload: Payload::Row(RowChange {
                            table: t.meta.clone(),
                            kind: RowKind::Insert,
                            before: None,
                            after: Some(image),
                        }),
                    })
                    .collect();
                let position = to_position(
                    &binlog,
                    &Cursor {
                        table: name.clone(),
                        after: Some(last.clone()),
                    },
                );
                if let Flow::Shutdown = self
                    .send(SourceEvent::Local {
                        changes,
                        commit_ts_ms: SNAPSHOT_COMMIT_MS,
                        position: position.clone(),
                    })
                    .await
                {
                    return Ok(Flow::Shutdown);
                }
                in_flight = Some(position);
                rows_total += n as u64;
                let progress = SourceEvent::Copying {
                    table: name.clone(),
                    tables_done: done_tables as u64,
                    tables: tables.len() as u64,
                    rows: rows_total,
                    rows_estimate,
                    done: false,
                };
                if let Flow::Shutdown = self.send(progress).await {
                    return Ok(Flow::Shutdown);
                }
                after = Some(last);
                if pace > 0 {
                    let due = Duration::from_secs_f64(rows_total as f64 / pace as f64);
                    if let Some(wait) = due.checked_sub(began.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
        let _ = conn.query_drop("COMMIT").await;
        let _ = conn.disconnect().await;
        tracing::info!(
            store = %self.cx.store.name,
            rows = rows_total,
            tables = tables.len(),
            secs = began.elapsed().as_secs_f64(),
            "mysql source: initial snapshot done; tailing the binlog from its position"
        );
        let finished = SourceEvent::Copying {
            table: tables
                .last()
                .map(|t| t.meta.qualified())
                .unwrap_or_default(),
            tables_done: tables.len() as u64,
            tables: tables.len() as u64,
            rows: rows_total,
            rows_estimate,
            done: true,
        };
        if let Flow::Shutdown = self.send(finished).await {
            return Ok(Flow::Shutdown);
        }
        let done = binlog.to_position();
        if let Flow::Shutdown = self
            .send(SourceEvent::Progress {
                position: done.clone(),
            })
            .await
        {
            return Ok(Flow::Shutdown);
        }
        self.cx.resume = Some(done);
        Ok(Flow::Continue)
    }

    /// Waits until the agent journaled up to `p` (a chunk this snapshot
    /// sent): the bound on what the snapshot holds in memory.
    async fn journaled(&mut self, p: &Position) -> Flow {
        let mut durable = self.cx.durable.clone();
        let mut shutdown = self.cx.shutdown.clone();
        tokio::select! {
            r = durable.wait_for(|d| d.as_ref() == Some(p)) => {
                if r.is_err() { Flow::Shutdown } else { Flow::Continue }
            }
            _ = shutdown.wait_for(|v| *v) => Flow::Shutdown,
        }
    }
}

/// The store's replicated base tables (by `options`), in name order, with
/// their columns and primary keys.
pub(crate) async fn replicated_tables(
    conn: &mut Conn,
    options: &crate::config::MysqlOptions,
) -> Result<Vec<Table>, ConnectorError> {
    let names: Vec<(String, String)> = conn
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN \
             ('mysql', 'sys', 'information_schema', 'performance_schema', 'dcsync') \
             ORDER BY TABLE_SCHEMA, TABLE_NAME",
        )
        .await
        .map_err(|e| classify("listing the tables to snapshot", e))?;
    let mut out = Vec::new();
    for (schema, name) in names {
        if !options.matches_table(&schema, &name) {
            continue;
        }
        let cols: Vec<(String, String, String)> = conn
            .exec(
                "SELECT COLUMN_NAME, LOWER(DATA_TYPE), LOWER(COLUMN_TYPE) \
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
                 ORDER BY ORDINAL_POSITION",
                (&schema, &name),
            )
            .await
            .map_err(|e| classify(&format!("reading the columns of {schema}.{name}"), e))?;
        let pk_names: Vec<String> = conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
                 ORDER BY ORDINAL_POSITION",
                (&schema, &name),
            )
            .await
            .map_err(|e| classify(&format!("reading the primary key of {schema}.{name}"), e))?;
        if pk_names.is_empty() {
            if options.skip.no_primary_key {
                tracing::warn!(table = %format!("{schema}.{name}"), "initial snapshot: table without a primary key skipped (skip = [\"no_primary_key\"])");
                continue;
            }
            return Err(ConnectorError::Definite(format!(
                "initial snapshot: table {schema}.{name} has no PRIMARY KEY; dcsync needs one \
                 (add it, exclude the table with `tables`, or allow skipping it with \
                 skip = [\"no_primary_key\"])"
            )));
        }
        let columns: Vec<ColumnMeta> = cols
            .iter()
            .map(|(c, data_type, column_type)| ColumnMeta {
                name: c.clone(),
                type_code: type_code(data_type),
                unsigned: column_type.contains("unsigned"),
                primary_key: pk_names.contains(c),
            })
            .collect();
        let pk = pk_names
            .iter()
            .filter_map(|p| columns.iter().position(|c| &c.name == p))
            .collect();
        out.push(Table {
            meta: Arc::new(TableMeta {
                schema,
                name,
                columns,
            }),
            pk,
            types: cols.into_iter().map(|(_, t, _)| t).collect(),
        });
    }
    Ok(out)
}

/// MariaDB's binlog position of the open consistent snapshot.
pub(crate) async fn snapshot_position(conn: &mut Conn) -> Result<BinlogPosition, ConnectorError> {
    let rows: Vec<(String, Vec<u8>)> = conn
        .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .await
        .map_err(|e| classify("SHOW STATUS LIKE 'binlog_snapshot_%'", e))?;
    let get = |k: &str| {
        rows.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    match (get("binlog_snapshot_file"), get("binlog_snapshot_position")) {
        (Some(file), Some(pos)) if !file.is_empty() => Ok(BinlogPosition::new(
            file,
            pos.parse().map_err(|_| {
                ConnectorError::Definite(format!(
                    "binlog_snapshot_position {pos:?} is not a number"
                ))
            })?,
        )),
        _ => Err(ConnectorError::Definite(
            "initial snapshot: the server reports no binlog_snapshot_file/position (MariaDB has \
             them; MySQL does not): set initial = \"none\" for this store and copy the existing \
             rows another way"
                .into(),
        )),
    }
}

/// Reads the chunk of `t` after primary key `after`: the row images and the
/// last row's primary key (`None`: no row left).
async fn read_chunk(
    conn: &mut Conn,
    t: &Table,
    after: Option<&[Value]>,
) -> Result<(Vec<Vec<Value>>, Option<Vec<Value>>), ConnectorError> {
    let cols: Vec<String> = t
        .meta
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect();
    let pk_cols: Vec<&String> = t.pk.iter().filter_map(|i| cols.get(*i)).collect();
    let mut sql = format!(
        "SELECT {} FROM {}.{}",
        cols.join(", "),
        quote_ident(&t.meta.schema),
        quote_ident(&t.meta.name)
    );
    if let Some(after) = after {
        sql.push_str(" WHERE ");
        sql.push_str(&after_clause(&pk_cols, after));
    }
    sql.push_str(&format!(
        " ORDER BY {} LIMIT {CHUNK_ROWS}",
        pk_cols
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let rows: Vec<Row> = conn.query(sql).await.map_err(|e| {
        classify(
            &format!("reading {} for the snapshot", t.meta.qualified()),
            e,
        )
    })?;
    let mut out = Vec::with_capacity(rows.len());
    let mut bytes = 0usize;
    for row in rows {
        let image: Vec<Value> = (0..t.meta.columns.len())
            .map(|i| {
                let raw: Option<mysql_async::Value> = row.as_ref(i).cloned();
                let ty = t.types.get(i).map(String::as_str).unwrap_or("");
                typed(raw, ty, t.meta.columns[i].unsigned)
            })
            .collect();
        bytes += image.iter().map(Value::approx_bytes).sum::<usize>();
        out.push(image);
        if bytes >= CHUNK_BYTES {
            break;
        }
    }
    let last = out
        .last()
        .map(|img| t.pk.iter().filter_map(|i| img.get(*i).cloned()).collect());
    Ok((out, last))
}

/// `(a, b) > (x, y)` spelled out so an index range serves it:
/// `a > x OR (a = x AND b > y)`.
fn after_clause(pk_cols: &[&String], after: &[Value]) -> String {
    keyset_after(pk_cols, after, literal)
}

/// The keyset condition "primary key after `after`" (`a > x OR (a = x AND
/// b > y)`), each value written by `render` (a literal, or `?` for a
/// parameter: the parameters are then, for each disjunct in order, the
/// values `after[..=n]`).
pub(crate) fn keyset_after<T>(
    pk_cols: &[&String],
    after: &[T],
    render: impl Fn(&T) -> String,
) -> String {
    let mut ors = Vec::new();
    for n in 0..pk_cols.len().min(after.len()) {
        let mut ands = Vec::new();
        for (c, v) in pk_cols.iter().zip(after).take(n) {
            ands.push(format!("{c} = {}", render(v)));
        }
        ands.push(format!("{} > {}", pk_cols[n], render(&after[n])));
        ors.push(format!("({})", ands.join(" AND ")));
    }
    ors.join(" OR ")
}

fn literal(v: &Value) -> String {
    let mut b = Vec::new();
    crate::sqltext::push_literal(&mut b, v, true);
    String::from_utf8_lossy(&b).into_owned()
}

/// A text-protocol value as the binlog decoder would give it: integers,
/// floats, dates and times typed; everything else (strings, DECIMAL, JSON,
/// ENUM and SET labels, BIT and binary bytes) as bytes.
pub fn typed(raw: Option<mysql_async::Value>, data_type: &str, unsigned: bool) -> Value {
    let b = match raw {
        None | Some(mysql_async::Value::NULL) => return Value::Null,
        Some(mysql_async::Value::Bytes(b)) => b,
        Some(mysql_async::Value::Int(i)) => return Value::Int(i),
        Some(mysql_async::Value::UInt(u)) => return Value::UInt(u),
        Some(other) => other.as_sql(true).into_bytes(),
    };
    let text = std::str::from_utf8(&b).unwrap_or("");
    let parsed = match data_type {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year" => {
            if unsigned {
                text.parse().ok().map(Value::UInt)
            } else {
                text.parse().ok().map(Value::Int)
            }
        }
        "float" => text.parse().ok().map(Value::Float),
        "double" | "real" => text.parse().ok().map(Value::Double),
        "date" | "datetime" | "timestamp" => parse_date(text),
        "time" => parse_time(text),
        _ => None,
    };
    parsed.unwrap_or(Value::Bytes(b))
}

/// `YYYY-MM-DD[ HH:MM:SS[.ffffff]]` as [`Value::Date`].
fn parse_date(s: &str) -> Option<Value> {
    let (date, time) = s.split_once(' ').unwrap_or((s, "00:00:00"));
    let mut d = date.split('-').map(|x| x.parse::<u32>().ok());
    let (y, m, dd) = (d.next()??, d.next()??, d.next()??);
    let (h, mi, sec, us) = hms(time)?;
    Some(Value::Date(
        u16::try_from(y).ok()?,
        u8::try_from(m).ok()?,
        u8::try_from(dd).ok()?,
        u8::try_from(h).ok()?,
        mi,
        sec,
        us,
    ))
}

/// `[-]HHH:MM:SS[.ffffff]` as [`Value::Time`] (days split off the hours).
fn parse_time(s: &str) -> Option<Value> {
    let (neg, t) = match s.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, s),
    };
    let (h, mi, sec, us) = hms(t)?;
    Some(Value::Time(
        neg,
        h / 24,
        u8::try_from(h % 24).ok()?,
        mi,
        sec,
        us,
    ))
}

/// `H:MM:SS[.f]` as (hours, minutes, seconds, microseconds).
fn hms(t: &str) -> Option<(u32, u8, u8, u32)> {
    let (main, frac) = t.split_once('.').unwrap_or((t, ""));
    let mut p = main.split(':').map(|x| x.parse::<u32>().ok());
    let (h, mi, sec) = (p.next()??, p.next()??, p.next()??);
    let us = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
        digits.parse().ok()?
    };
    Some((h, u8::try_from(mi).ok()?, u8::try_from(sec).ok()?, us))
}

/// The binlog column type code (`MYSQL_TYPE_*`) of an information_schema
/// `DATA_TYPE`, as a TABLE_MAP event would give it.
fn type_code(data_type: &str) -> u8 {
    match data_type {
        "tinyint" => 1,
        "smallint" => 2,
        "int" | "integer" => 3,
        "float" => 4,
        "double" | "real" => 5,
        "bigint" => 8,
        "mediumint" => 9,
        "date" => 10,
        "year" => 13,
        "varchar" | "varbinary" => 15,
        "bit" => 16,
        "timestamp" => 17,
        "datetime" => 18,
        "time" => 19,
        "json" => 245,
        "decimal" | "numeric" => 246,
        "tinyblob" | "blob" | "mediumblob" | "longblob" | "tinytext" | "text" | "mediumtext"
        | "longtext" => 252,
        "char" | "binary" | "enum" | "set" => 254,
        _ => 255,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_values_are_typed_like_the_binlog_decoder() {
        let b = |s: &str| Some(mysql_async::Value::Bytes(s.as_bytes().to_vec()));
        assert_eq!(typed(b("-7"), "int", false), Value::Int(-7));
        assert_eq!(
            typed(b("18446744073709551615"), "bigint", true),
            Value::UInt(u64::MAX)
        );
        assert_eq!(
            typed(b("2024-01-02 03:04:05.000006"), "datetime", false),
            Value::Date(2024, 1, 2, 3, 4, 5, 6)
        );
        assert_eq!(
            typed(b("2024-01-02"), "date", false),
            Value::Date(2024, 1, 2, 0, 0, 0, 0)
        );
        assert_eq!(
            typed(b("-26:01:02.5"), "time", false),
            Value::Time(true, 1, 2, 1, 2, 500_000)
        );
        assert_eq!(
            typed(b("12.50"), "decimal", false),
            Value::Bytes(b"12.50".to_vec())
        );
        assert_eq!(typed(None, "int", false), Value::Null);
        assert_eq!(typed(b("x"), "enum", false), Value::Bytes(b"x".to_vec()));
    }

    #[test]
    fn the_keyset_condition_spells_out_the_tuple_comparison() {
        let (a, b) = ("`a`".to_string(), "`b`".to_string());
        assert_eq!(after_clause(&[&a], &[Value::Int(5)]), "(`a` > 5)");
        assert_eq!(
            after_clause(&[&a, &b], &[Value::Int(5), Value::Int(7)]),
            "(`a` > 5) OR (`a` = 5 AND `b` > 7)"
        );
    }

    #[test]
    fn a_snapshot_position_reads_as_its_binlog_position_and_cursor() {
        let b = BinlogPosition::new("bin.000002", 400);
        let c = Cursor {
            table: "shop.items".into(),
            after: Some(vec![Value::Int(9)]),
        };
        let p = to_position(&b, &c);
        assert_eq!(BinlogPosition::from_position(&p).ok(), Some(b.clone()));
        assert_eq!(cursor_of(&p), Some(c));
        assert_eq!(cursor_of(&b.to_position()), None);
    }
}
