//! The applying half: transactional, idempotent apply with an apply marker.
//!
//! Per group of consecutive source transactions (bounded by
//! `apply_group_txns` and `apply_group_bytes`): `BEGIN`; upsert the marker
//! row `(origin, store, slot = seq % 16)` with the group's last seq; apply
//! every row change; `COMMIT`. The marker and the data commit atomically, so
//! the marker is both the idempotency checkpoint (transactions at or below
//! `MAX(seq)` are skipped) and the echo filter (the source half sees the
//! marker row inside the transaction).
//!
//! Rows are applied convergently from full row images. A group is planned
//! first ([`crate::plan`]): every primary key's changes collapse into their
//! net effect, applied per table as one `DELETE .. WHERE pk IN (..)` run and
//! one multi-row `REPLACE` run. Runs are cut into statements of
//! [`BATCH_SHAPES`] rows, prepared once per table and shape (the driver's
//! statement cache) and bound with parameters.

use crate::error::classify;
use crate::plan::{GroupPlan, Run, RunKind};
use crate::value::to_driver;
use crate::{MARKER_SCHEMA, MARKER_TABLE};
use dcsync_core::connector::{ConnectorError, Sink};
use dcsync_core::topology::{redact_url, StoreConfig};
use dcsync_core::{Payload, RowChange, Transaction};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Params};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Number of marker rows per (origin, store); a group's marker goes to slot
/// `seq % MARKER_SLOTS`.
pub const MARKER_SLOTS: u64 = 16;

/// Session settings of the sink connection: utf8mb4; UTC (TIMESTAMP values
/// travel as UTC); a non-strict SQL mode that accepts every value the origin
/// server accepted (zero and invalid dates, generated columns computed out
/// of range under the origin's non-strict mode, explicit 0 in AUTO_INCREMENT
/// columns), as MySQL's own row-based replica applier does; no foreign key
/// checks (rows arrive in origin commit order, and a group can cut across
/// the origin's statement boundaries).
const SESSION_SETUP: &str = "SET NAMES utf8mb4; SET time_zone='+00:00'; \
    SET SESSION sql_mode='NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION,ALLOW_INVALID_DATES'; \
    SET SESSION foreign_key_checks=0";

/// Quotes an identifier with backticks, doubling embedded backticks.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Creates `dcsync.apply_marker` if it does not exist. Checks
/// `information_schema` first so that an existing table causes no DDL in
/// the binlog.
///
/// Columns: `origin VARCHAR(64)` (DC id), `store VARCHAR(64)` (logical
/// store), `slot SMALLINT UNSIGNED` (`seq % 16`), `seq BIGINT UNSIGNED`,
/// `hlc BIGINT UNSIGNED` (the group's last HLC), `applied_at TIMESTAMP(6)`;
/// primary key `(origin, store, slot)`.
pub async fn ensure_marker_table(conn: &mut Conn) -> Result<(), ConnectorError> {
    let n: Option<u64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema=? AND table_name=?",
            (MARKER_SCHEMA, MARKER_TABLE),
        )
        .await
        .map_err(|e| classify("checking the apply marker table", e))?;
    if n.unwrap_or(0) > 0 {
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
           PRIMARY KEY (origin, store, slot) \
         ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        s = quote_ident(MARKER_SCHEMA),
        t = quote_ident(MARKER_TABLE)
    );
    conn.query_drop(sql)
        .await
        .map_err(|e| classify("creating the apply marker table dcsync.apply_marker", e))
}

/// Rows per multi-row statement. A planned run is split greedily into
/// statements of these sizes, so that few statement shapes are prepared
/// per table (at most 5 per kind).
pub const BATCH_SHAPES: [usize; 5] = [256, 64, 16, 4, 1];

/// How long a `ROLLBACK` after a failed group may take before the
/// connection is given up (and with it the open transaction).
const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Placeholders allowed in one prepared statement (protocol limit).
const MAX_PLACEHOLDERS: usize = 65_535;

/// Cached SQL for one table shape.
struct TableSql {
    columns: Vec<String>,
    pk: Vec<usize>,
    /// Indexes of the columns written by REPLACE (generated columns are
    /// computed by the target and left out).
    written: Vec<usize>,
    /// `` `schema`.`table` ``.
    table: String,
    /// Quoted names of the written columns.
    names: Vec<String>,
    /// Placeholder per written column (`?` or `CAST(? AS BINARY)`).
    marks: Vec<&'static str>,
    /// Quoted names of the key columns.
    pk_names: Vec<String>,
    /// Replace / delete SQL by row count.
    replaces: HashMap<usize, String>,
    deletes: HashMap<usize, String>,
}

/// Whether a column of this binlog type code holds a byte string that is
/// bound as `CAST(? AS BINARY)`, so that the bytes land unchanged in a
/// column of any character set (the session charset is utf8mb4; a latin1
/// value is not valid utf8mb4).
fn is_string_type(type_code: u8) -> bool {
    // VARCHAR, VAR_STRING, STRING, TINY/MEDIUM/LONG BLOB, BLOB.
    matches!(type_code, 15 | 253 | 254 | 249 | 250 | 251 | 252)
}

impl TableSql {
    fn needs_rebuild(&self, r: &RowChange) -> bool {
        self.columns.len() != r.columns.len()
            || self
                .columns
                .iter()
                .zip(&r.columns)
                .any(|(a, b)| a != &b.name)
            || self.pk != r.primary_key()
    }

    fn build(r: &RowChange, pk: Vec<usize>, generated: &HashSet<String>) -> TableSql {
        let table = format!("{}.{}", quote_ident(&r.schema), quote_ident(&r.table));
        let cols: Vec<String> = r.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let written: Vec<usize> = (0..r.columns.len())
            .filter(|i| !generated.contains(&r.columns[*i].name))
            .collect();
        let names = written.iter().map(|i| cols[*i].clone()).collect();
        let marks = written
            .iter()
            .map(|i| {
                if is_string_type(r.columns[*i].type_code) {
                    "CAST(? AS BINARY)"
                } else {
                    "?"
                }
            })
            .collect();
        let pk_names = pk.iter().map(|i| cols[*i].clone()).collect();
        TableSql {
            columns: r.columns.iter().map(|c| c.name.clone()).collect(),
            pk,
            written,
            table,
            names,
            marks,
            pk_names,
            replaces: HashMap::new(),
            deletes: HashMap::new(),
        }
    }

    /// Most rows per statement for `per_row` placeholders per row.
    fn max_rows(per_row: usize) -> usize {
        (MAX_PLACEHOLDERS / per_row.max(1)).clamp(1, BATCH_SHAPES[0])
    }

    /// `REPLACE INTO .. VALUES (..),(..)` for `rows` rows.
    fn replace_sql(&mut self, rows: usize) -> String {
        let (table, names, marks) = (&self.table, &self.names, &self.marks);
        self.replaces
            .entry(rows)
            .or_insert_with(|| {
                let one = format!("({})", marks.join(","));
                format!(
                    "REPLACE INTO {table} ({}) VALUES {}",
                    names.join(","),
                    vec![one; rows].join(",")
                )
            })
            .clone()
    }

    /// `DELETE .. WHERE pk = ?` (one row) or `WHERE (pk..) IN ((..),(..))`.
    fn delete_sql(&mut self, rows: usize) -> String {
        let (table, pk_names) = (&self.table, &self.pk_names);
        self.deletes
            .entry(rows)
            .or_insert_with(|| {
                if rows == 1 {
                    let cond: Vec<String> = pk_names.iter().map(|c| format!("{c}=?")).collect();
                    format!("DELETE FROM {table} WHERE {}", cond.join(" AND "))
                } else if pk_names.len() == 1 {
                    format!(
                        "DELETE FROM {table} WHERE {} IN ({})",
                        pk_names[0],
                        vec!["?"; rows].join(",")
                    )
                } else {
                    let one = format!("({})", vec!["?"; pk_names.len()].join(","));
                    format!(
                        "DELETE FROM {table} WHERE ({}) IN ({})",
                        pk_names.join(","),
                        vec![one; rows].join(",")
                    )
                }
            })
            .clone()
    }
}

/// Transactional MySQL/MariaDB sink (see the module docs).
pub struct MysqlSink {
    url: String,
    store: String,
    group_txns: usize,
    group_bytes: usize,
    conn: Option<Conn>,
    /// Highest applied seq per origin, as last read from / written to the DB.
    applied: HashMap<String, u64>,
    sql: HashMap<(String, String), TableSql>,
}

impl std::fmt::Debug for MysqlSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlSink")
            .field("url", &redact_url(&self.url))
            .field("store", &self.store)
            .field("applied", &self.applied)
            .finish()
    }
}

async fn open(url: &str) -> Result<Conn, ConnectorError> {
    let opts = Opts::from_url(url)
        .map_err(|e| ConnectorError::Definite(format!("bad store URL {}: {e}", redact_url(url))))?;
    let opts = OptsBuilder::from_opts(opts)
        .stmt_cache_size(512)
        .tcp_keepalive(Some(Duration::from_secs(10)));
    let mut conn = Conn::new(opts)
        .await
        .map_err(|e| classify(&format!("connecting to {}", redact_url(url)), e))?;
    conn.query_drop(SESSION_SETUP)
        .await
        .map_err(|e| classify("setting up the sink session", e))?;
    Ok(conn)
}

impl MysqlSink {
    /// Connects to the store at `url`, sets up the session and creates the
    /// apply marker table if needed. Group bounds come from `store`
    /// (`apply_group_txns`, `apply_group_bytes`).
    pub async fn connect(url: &str, store: &StoreConfig) -> Result<MysqlSink, ConnectorError> {
        let mut conn = open(url).await?;
        ensure_marker_table(&mut conn).await?;
        Ok(MysqlSink {
            url: url.to_string(),
            store: store.name.clone(),
            group_txns: store.apply_group_txns.max(1),
            group_bytes: store.apply_group_bytes.max(1),
            conn: Some(conn),
            applied: HashMap::new(),
            sql: HashMap::new(),
        })
    }

    async fn conn(&mut self) -> Result<&mut Conn, ConnectorError> {
        if self.conn.is_none() {
            self.conn = Some(open(&self.url).await?);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| ConnectorError::Transient("no connection".into()))
    }

    async fn read_applied(&mut self, origin: &str) -> Result<u64, ConnectorError> {
        let store = self.store.clone();
        let sql = format!(
            "SELECT COALESCE(MAX(seq), 0) FROM {}.{} WHERE origin=? AND store=?",
            quote_ident(MARKER_SCHEMA),
            quote_ident(MARKER_TABLE)
        );
        let conn = self.conn().await?;
        let r: Result<Option<u64>, _> = conn.exec_first(sql, (origin, store)).await;
        match r {
            Ok(v) => Ok(v.unwrap_or(0)),
            Err(e) => {
                self.conn = None;
                Err(classify("reading the apply marker", e))
            }
        }
    }

    /// Applies one group in one target transaction.
    async fn apply_group(
        &mut self,
        origin: &str,
        group: &[&Transaction],
    ) -> Result<(), ConnectorError> {
        let Some(last) = group.last() else {
            return Ok(());
        };
        let marker_sql = format!(
            "INSERT INTO {}.{} (origin, store, slot, seq, hlc, applied_at) \
             VALUES (?,?,?,?,?,NOW(6)) ON DUPLICATE KEY UPDATE \
             seq=VALUES(seq), hlc=VALUES(hlc), applied_at=VALUES(applied_at)",
            quote_ident(MARKER_SCHEMA),
            quote_ident(MARKER_TABLE)
        );
        let marker_params = Params::Positional(vec![
            mysql_async::Value::from(origin),
            mysql_async::Value::from(self.store.as_str()),
            mysql_async::Value::UInt(last.seq % MARKER_SLOTS),
            mysql_async::Value::UInt(last.seq),
            mysql_async::Value::UInt(last.hlc.0),
        ]);
        // Look up the target tables not seen yet (or changed), then build
        // the statements (borrowing self.sql), then execute.
        for tx in group {
            for change in &tx.changes {
                if let Payload::Row(r) = &change.payload {
                    let key = (r.schema.clone(), r.table.clone());
                    if self.sql.get(&key).is_none_or(|t| t.needs_rebuild(r)) {
                        self.prepare_table(r).await?;
                    }
                }
            }
        }
        let mut plan = GroupPlan::new();
        for tx in group {
            for change in &tx.changes {
                match &change.payload {
                    Payload::Row(r) => {
                        let key = (r.schema.clone(), r.table.clone());
                        let Some(t) = self.sql.get(&key).filter(|t| !t.needs_rebuild(r)) else {
                            return Err(ConnectorError::Definite(format!(
                                "no SQL prepared for {}.{}",
                                r.schema, r.table
                            )));
                        };
                        plan.add(r, &t.pk)
                            .map_err(|e| ConnectorError::Definite(e.to_string()))?;
                    }
                    Payload::Redis(_) => {
                        return Err(ConnectorError::Definite(format!(
                            "store {}: a Redis command cannot be applied to MySQL (origin {origin} seq {})",
                            self.store, tx.seq
                        )))
                    }
                }
            }
        }
        let stmts = self.statements(plan)?;
        let conn = self.conn().await?;
        conn.query_drop("BEGIN")
            .await
            .map_err(|e| classify("BEGIN", e))?;
        conn.exec_drop(marker_sql, marker_params)
            .await
            .map_err(|e| classify("writing the apply marker dcsync.apply_marker", e))?;
        for (sql, params, table) in stmts {
            conn.exec_drop(sql, params)
                .await
                .map_err(|e| classify(&format!("applying to {table}"), e))?;
        }
        conn.query_drop("COMMIT")
            .await
            .map_err(|e| classify("COMMIT", e))
    }

    /// Reads the target table's columns from `information_schema` and
    /// caches the SQL for `r`'s shape. Errors name the table: it does not
    /// exist, lacks a column of the change, or the change has no key.
    async fn prepare_table(&mut self, r: &RowChange) -> Result<(), ConnectorError> {
        let name = format!("{}.{}", r.schema, r.table);
        let pk = r.primary_key();
        if pk.is_empty() {
            return Err(ConnectorError::Definite(format!(
                "table {name} has no PRIMARY KEY in the change; dcsync needs one to apply \
                 updates and deletes idempotently"
            )));
        }
        let conn = self.conn().await?;
        let rows: Vec<(String, String)> = conn
            .exec(
                "SELECT column_name, extra FROM information_schema.columns \
                 WHERE table_schema=? AND table_name=?",
                (r.schema.as_str(), r.table.as_str()),
            )
            .await
            .map_err(|e| classify(&format!("reading the columns of {name}"), e))?;
        if rows.is_empty() {
            return Err(ConnectorError::Definite(format!(
                "table {name} does not exist on the target store; create it with the same \
                 schema as in the origin DC"
            )));
        }
        let existing: HashSet<&str> = rows.iter().map(|c| c.0.as_str()).collect();
        if let Some(missing) = r
            .columns
            .iter()
            .find(|c| !existing.contains(c.name.as_str()))
        {
            return Err(ConnectorError::Definite(format!(
                "table {name} on the target store has no column {}; the schemas differ between DCs",
                missing.name
            )));
        }
        let generated: HashSet<String> = rows
            .into_iter()
            .filter(|c| {
                let e = c.1.to_ascii_uppercase();
                e.contains("VIRTUAL") || e.contains("STORED") || e.contains("PERSISTENT")
            })
            .map(|c| c.0)
            .collect();
        self.sql.insert(
            (r.schema.clone(), r.table.clone()),
            TableSql::build(r, pk, &generated),
        );
        Ok(())
    }

    /// Turns the planned runs into statements of [`BATCH_SHAPES`] rows
    /// each: `(sql, params, table name for errors)`.
    fn statements(
        &mut self,
        plan: GroupPlan<'_>,
    ) -> Result<Vec<(String, Params, String)>, ConnectorError> {
        let mut out = Vec::new();
        for ((schema, table), runs) in plan.into_runs() {
            let name = format!("{schema}.{table}");
            let Some(t) = self.sql.get_mut(&(schema.to_string(), table.to_string())) else {
                return Err(ConnectorError::Definite(format!(
                    "no SQL prepared for {name}"
                )));
            };
            for Run { kind, rows } in runs {
                let cols = if kind == RunKind::Delete {
                    t.pk.clone()
                } else {
                    t.written.clone()
                };
                let max = TableSql::max_rows(cols.len());
                let mut rest = rows.as_slice();
                while !rest.is_empty() {
                    let n = BATCH_SHAPES
                        .iter()
                        .copied()
                        .find(|s| *s <= rest.len() && *s <= max)
                        .unwrap_or(1);
                    let (chunk, tail) = rest.split_at(n);
                    rest = tail;
                    let sql = match kind {
                        RunKind::Replace => t.replace_sql(n),
                        RunKind::Delete => t.delete_sql(n),
                    };
                    let params = chunk
                        .iter()
                        .flat_map(|img| cols.iter().map(|i| to_driver(&img[*i])))
                        .collect();
                    out.push((sql, Params::Positional(params), name.clone()));
                }
            }
        }
        Ok(out)
    }
}

impl Sink for MysqlSink {
    async fn applied_seq(&mut self, origin: &str) -> Result<u64, ConnectorError> {
        if let Some(s) = self.applied.get(origin) {
            return Ok(*s);
        }
        let s = self.read_applied(origin).await?;
        self.applied.insert(origin.to_string(), s);
        Ok(s)
    }

    async fn apply(&mut self, origin: &str, txs: &[Transaction]) -> Result<u64, ConnectorError> {
        let mut applied = self.applied_seq(origin).await?;
        let pending: Vec<&Transaction> = txs.iter().filter(|t| t.seq > applied).collect();
        let mut i = 0;
        while i < pending.len() {
            let mut end = i;
            let mut bytes = 0usize;
            while end < pending.len() && end - i < self.group_txns {
                let b = pending[end].approx_bytes();
                if end > i && bytes + b > self.group_bytes {
                    break;
                }
                bytes += b;
                end += 1;
            }
            let group = &pending[i..end];
            match self.apply_group(origin, group).await {
                Ok(()) => {
                    if let Some(last) = group.last() {
                        applied = applied.max(last.seq);
                        self.applied.insert(origin.to_string(), applied);
                    }
                }
                Err(e) => {
                    // Unknown outcome: forget the cached marker, roll back
                    // what may be open, drop a broken connection.
                    self.applied.remove(origin);
                    let rolled_back = match self.conn.as_mut() {
                        Some(c) => matches!(
                            tokio::time::timeout(ROLLBACK_TIMEOUT, c.query_drop("ROLLBACK")).await,
                            Ok(Ok(()))
                        ),
                        None => false,
                    };
                    if !rolled_back || e.is_transient() {
                        self.conn = None;
                    }
                    tracing::warn!(store = %self.store, origin, error = %e, "mysql sink: group failed");
                    return Err(e);
                }
            }
            i = end;
        }
        Ok(applied)
    }
}
