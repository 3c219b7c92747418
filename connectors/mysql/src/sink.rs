//! The applying half: transactional, idempotent apply with an apply marker.
//!
//! Per group of consecutive source transactions (bounded by
//! `apply_group_txns` and `apply_group_bytes`) and per partition `p` of
//! `apply_parallel` connections: `BEGIN`; upsert the marker row `(origin,
//! store, slot = p * 16 + seq % 16)` with the group's last seq; apply the
//! partition's rows (those whose primary key hashes to `p`, see
//! [`crate::plan`]); `COMMIT`. The partitions run concurrently. Each
//! partition's marker and data commit atomically, so the markers are both
//! the idempotency checkpoint (partition `p` skips transactions at or below
//! its `MAX(seq)`; the sink's applied seq is the minimum over partitions)
//! and the echo filter (the source half sees a marker row inside every
//! transaction the sink writes). Every partition writes its marker in every
//! group, even with no rows, so that all partitions advance together.
//!
//! When the marker rows of an origin do not match the configured partition
//! count (first use, or `apply_parallel` changed), they are rewritten in one
//! transaction to the lowest applied seq over the old partitions: keys may
//! move between partitions, and re-applying full row images from there is
//! convergent.
//!
//! Rows are applied convergently from full row images. A group is planned
//! first ([`crate::plan`]): every primary key's changes collapse into their
//! net effect, applied per table as one `DELETE .. WHERE pk IN (..)` run and
//! one multi-row `REPLACE` run. A partition's transaction goes to the server
//! as SQL text ([`crate::sqltext`]): `BEGIN`, the marker, the statements and
//! `COMMIT` in one multi-statement query (more only past a quarter of
//! `max_allowed_packet`), so a group costs one round trip per partition.
//!
//! # Transactions split in parts
//! A source transaction that arrives in parts ([`Transaction::more`]) is
//! applied as one target transaction on the first connection, whatever
//! `apply_parallel` is: `BEGIN`, the marker rows of every partition (with
//! the first part's seq, so that the source half sees the marker first and
//! skips the rest as an echo), each part's planned statements as the parts
//! arrive (possibly over several [`Sink::apply`] calls, holding the target
//! transaction open in between), and with the last part an `UPDATE` of the
//! marker rows to the last part's seq and `COMMIT`. A marker therefore never
//! names a seq inside a source transaction. If the batches stop coming (the
//! link drops), the next [`Sink::applied_seq`] rolls the held transaction
//! back and the sender resends from the first part.

use crate::config::MysqlOptions;
use crate::error::classify;
use crate::plan::{GroupPlan, PartitionRuns, Run, RunKind, Spread};
use crate::sqltext::{Chunks, TableText};
use dcsync_core::conflict::Versions;
use dcsync_core::connector::{AppliedMark, ConnectorError, Sink};
use dcsync_core::topology::{redact_url, StoreConfig};
use dcsync_core::{Payload, RowChange, Transaction};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Marker rows per (origin, store, apply partition): partition `p` writes a
/// group's marker to slot `p * MARKER_SLOTS + seq % MARKER_SLOTS`.
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

/// How long a `ROLLBACK` after a failed group may take before the
/// connection is given up (and with it the open transaction).
const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Most bytes of one statement's text (rows are added while below).
const STMT_BYTES: usize = 1 << 20;
/// Most bytes of one query (a new query of the same transaction starts
/// beyond), capped further to a quarter of the server's
/// `max_allowed_packet`.
const CHUNK_BYTES: usize = 4 << 20;

/// Cached text for one table shape.
struct TableSql {
    columns: Vec<String>,
    pk: Vec<usize>,
    text: TableText,
    /// How the table's rows spread over apply partitions.
    spread: Spread,
    /// Column indexes of each secondary UNIQUE index of the target table
    /// (under `lww`, the table's rows are written with `DELETE` + `INSERT`
    /// instead of `REPLACE`, so that a row holding the same unique value
    /// is never deleted unseen; see `sink_lww.rs`).
    pub(crate) uniques: Vec<Vec<usize>>,
}

/// Whether a column of this binlog type code holds a byte string that is
/// written as `_binary'..'`, so that the bytes land unchanged in a column
/// of any character set (the session charset is utf8mb4; a latin1 value is
/// not valid utf8mb4).
fn is_string_type(type_code: u8) -> bool {
    // VARCHAR, VAR_STRING, STRING, TINY/MEDIUM/LONG BLOB, BLOB.
    matches!(type_code, 15 | 253 | 254 | 249 | 250 | 251 | 252)
}

impl TableSql {
    fn needs_rebuild(&self, r: &RowChange) -> bool {
        self.columns.len() != r.table.columns.len()
            || self
                .columns
                .iter()
                .zip(&r.table.columns)
                .any(|(a, b)| a != &b.name)
            || !self.pk.iter().copied().eq(r
                .table
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.primary_key)
                .map(|(i, _)| i))
    }

    fn build(
        r: &RowChange,
        pk: Vec<usize>,
        generated: &HashSet<String>,
        spread: Spread,
    ) -> TableSql {
        let table = format!(
            "{}.{}",
            quote_ident(&r.table.schema),
            quote_ident(&r.table.name)
        );
        let cols: Vec<String> = r
            .table
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect();
        let written: Vec<usize> = (0..r.table.columns.len())
            .filter(|i| !generated.contains(&r.table.columns[*i].name))
            .collect();
        let names: Vec<&str> = written.iter().map(|i| cols[*i].as_str()).collect();
        let binary = written
            .iter()
            .map(|i| is_string_type(r.table.columns[*i].type_code))
            .collect();
        let pk_names: Vec<&str> = pk.iter().map(|i| cols[*i].as_str()).collect();
        let pk_names = if pk_names.len() == 1 {
            pk_names[0].to_string()
        } else {
            format!("({})", pk_names.join(","))
        };
        TableSql {
            columns: r.table.columns.iter().map(|c| c.name.clone()).collect(),
            text: TableText {
                table,
                names: format!("({})", names.join(",")),
                written,
                binary,
                pk: pk.clone(),
                pk_names,
            },
            pk,
            spread,
            uniques: Vec::new(),
        }
    }
}

/// Transactional MySQL/MariaDB sink (see the module docs).
pub struct MysqlSink {
    url: String,
    store: String,
    group_txns: usize,
    group_bytes: usize,
    /// Statement / query size bounds (bytes), from `max_allowed_packet`.
    stmt_bytes: usize,
    chunk_bytes: usize,
    /// One connection per apply partition (`apply_parallel`), opened
    /// lazily; the first also reads markers and table metadata.
    conns: Vec<Option<Conn>>,
    /// Per origin: highest applied seq per partition, as last read from /
    /// written to the DB.
    applied: HashMap<String, Vec<u64>>,
    sql: HashMap<(String, String), TableSql, lww::FastHash>,
    /// A split transaction being applied on connection 0, uncommitted.
    held: Option<parts::Held>,
    /// The version index and conflict log, for `conflict = "lww"` (set by
    /// the agent with [`Sink::set_versions`]; without it every change is
    /// applied as it arrives).
    versions: Option<std::sync::Arc<dyn Versions>>,
    /// The store's conflict policy (`lww` or `owner` use `versions`).
    policy: dcsync_core::conflict::ConflictPolicy,
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

pub(crate) async fn open(url: &str) -> Result<Conn, ConnectorError> {
    let opts = Opts::from_url(url)
        .map_err(|e| ConnectorError::Definite(format!("bad store URL {}: {e}", redact_url(url))))?;
    let opts = OptsBuilder::from_opts(opts).tcp_keepalive(Some(Duration::from_secs(10)));
    let mut conn = Conn::new(opts)
        .await
        .map_err(|e| classify(&format!("connecting to {}", redact_url(url)), e))?;
    conn.query_drop(SESSION_SETUP)
        .await
        .map_err(|e| classify("setting up the sink session", e))?;
    // MariaDB writes each statement's text into the binlog as an annotate
    // event by default; the sink's statements are large multi-row texts
    // that no reader of the binlog needs (the row events carry the data).
    // MySQL has no such variable (1193, unknown variable): nothing to do.
    match conn
        .query_drop("SET SESSION binlog_annotate_row_events=OFF")
        .await
    {
        Ok(()) => {}
        Err(mysql_async::Error::Server(e)) if e.code == 1193 => {}
        Err(e) => return Err(classify("setting up the sink session", e)),
    }
    Ok(conn)
}

#[path = "sink_marker.rs"]
mod marker;
pub use marker::ensure_marker_table;
use marker::{marker_position, marker_table, push_marker_upsert};

#[path = "sink_run.rs"]
mod run;
use run::{run_or_roll_back, PartitionFuture, Planned};

#[path = "sink_parts.rs"]
mod parts;

#[path = "sink_lww.rs"]
mod lww;

#[path = "sink_unique.rs"]
mod unique;

/// Retries of a group whose partitions deadlocked each other; every retry
/// runs only the partitions that did not commit, so one partition alone
/// is left at worst.
const DEADLOCK_RETRIES: usize = 8;

impl MysqlSink {
    /// Connects to the store at `url`, sets up the session and creates the
    /// apply marker table if needed. Group bounds and the partition count
    /// come from `store` (`apply_group_txns`, `apply_group_bytes`, and
    /// [`MysqlOptions::apply_parallel`]); further connections open at the
    /// first apply.
    ///
    /// Errors: Definite if `store` has no [`MysqlOptions`] or the URL is
    /// bad; Transient if the server cannot be reached.
    pub async fn connect(url: &str, store: &StoreConfig) -> Result<MysqlSink, ConnectorError> {
        let parallel = MysqlOptions::of(store)?.apply_parallel;
        let mut conn = open(url).await?;
        ensure_marker_table(&mut conn).await?;
        let max_packet: Option<u64> = conn
            .query_first("SELECT @@max_allowed_packet")
            .await
            .map_err(|e| classify("reading max_allowed_packet", e))?;
        let quarter = (max_packet.unwrap_or(4 << 20) / 4).max(16 << 10) as usize;
        let mut conns: Vec<Option<Conn>> = (0..parallel.max(1)).map(|_| None).collect();
        conns[0] = Some(conn);
        Ok(MysqlSink {
            url: url.to_string(),
            store: store.name.clone(),
            group_txns: store.apply_group_txns.max(1),
            group_bytes: store.apply_group_bytes.max(1),
            stmt_bytes: STMT_BYTES.min(quarter),
            chunk_bytes: CHUNK_BYTES.min(quarter),
            conns,
            applied: HashMap::new(),
            sql: HashMap::default(),
            held: None,
            versions: None,
            policy: store.conflict,
        })
    }

    /// Connection `i`, opened if needed.
    async fn conn(&mut self, i: usize) -> Result<&mut Conn, ConnectorError> {
        let Some(slot) = self.conns.get_mut(i) else {
            return Err(ConnectorError::Definite(format!("no apply connection {i}")));
        };
        if slot.is_none() {
            *slot = Some(open(&self.url).await?);
        }
        slot.as_mut()
            .ok_or_else(|| ConnectorError::Transient("no connection".into()))
    }

    /// The per-partition applied seqs of `origin` (cached).
    async fn floors(&mut self, origin: &str) -> Result<Vec<u64>, ConnectorError> {
        if let Some(f) = self.applied.get(origin) {
            return Ok(f.clone());
        }
        let f = self.read_applied(origin).await?;
        self.applied.insert(origin.to_string(), f.clone());
        Ok(f)
    }

    /// Applies one group: per partition that has not applied it yet, one
    /// target transaction, all partitions concurrently. On error, some
    /// partitions may have committed (their markers say so); the flag says
    /// whether every failure was a deadlock between partitions.
    async fn apply_group(
        &mut self,
        origin: &str,
        group: &[&Transaction],
        floors: &[u64],
    ) -> Result<(), (ConnectorError, bool)> {
        let planned = self
            .apply_group_inner(origin, group, floors)
            .await
            .map_err(|e| (e, false))?;
        planned.await_all(self).await
    }

    /// Prepares and plans one group and builds its partitions' transactions
    /// (ending with `COMMIT`, or open under `lww`), with the lww decision.
    async fn apply_group_inner(
        &mut self,
        origin: &str,
        group: &[&Transaction],
        floors: &[u64],
    ) -> Result<Planned, ConnectorError> {
        let Some(last) = group.last() else {
            return Ok(Planned(Vec::new()));
        };
        // Look up the target tables not seen yet (or changed), then plan
        // (borrowing self.sql), then execute.
        let t_prepare = std::time::Instant::now();
        self.prepare_tables(group).await?;
        tracing::trace!(
            prepare_us = t_prepare.elapsed().as_micros() as u64,
            "mysql sink: tables prepared"
        );
        let t_decide = std::time::Instant::now();
        let mut decision = self.decide(origin, group).await?;
        tracing::trace!(
            txns = group.len(),
            decide_us = t_decide.elapsed().as_micros() as u64,
            "mysql sink: group decided"
        );
        let skip = std::mem::take(&mut decision.skip);
        let deletes = std::mem::take(&mut decision.deletes);
        let lost = std::sync::Arc::new(std::sync::Mutex::new(std::mem::take(&mut decision.lost)));
        let reassert = std::sync::Arc::new(std::sync::Mutex::new((
            std::mem::take(&mut decision.reassert),
            decision.reassert_above,
        )));
        let group_record = std::sync::Arc::new(lww::GroupRecord::start(
            self.versions.as_ref(),
            std::mem::take(&mut decision.decided),
            decision.generation,
        ));
        // Each written row's decided version, by version key.
        let decided: HashMap<&[u8], &dcsync_core::conflict::Version, lww::FastHash> = group_record
            .all()
            .iter()
            .map(|(k, v)| (k.as_slice(), v))
            .collect();
        let mut plan = GroupPlan::new(floors.to_vec());
        // Rows that lose their unique value to a winning change, deleted
        // first (their tables' rows all go to one partition).
        for r in &deletes {
            let key = (r.table.schema.clone(), r.table.name.clone());
            if let Some(t) = self.sql.get(&key) {
                plan.add(r, &t.pk, &t.spread, last.seq)
                    .map_err(|e| ConnectorError::Definite(e.to_string()))?;
            }
        }
        // One key buffer for every lookup (this runs for every row).
        let mut key = (String::new(), String::new());
        for (ti, tx) in group.iter().enumerate() {
            for (ci, change) in tx.changes.iter().enumerate() {
                if skip.contains(&(ti, ci)) {
                    continue;
                }
                match &change.payload {
                    Payload::Row(r) => {
                        set_table_key(&mut key, r);
                        let Some(t) = self.sql.get(&key).filter(|t| !t.needs_rebuild(r)) else {
                            return Err(ConnectorError::Definite(format!(
                                "no SQL prepared for {}.{}",
                                r.table.schema, r.table.name
                            )));
                        };
                        plan.add(r, &t.pk, &t.spread, tx.seq)
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
        let mut work = Vec::new();
        for (p, runs) in plan.into_runs().into_iter().enumerate() {
            if floors.get(p).is_some_and(|f| *f >= last.seq) {
                continue;
            }
            let mut first = Vec::with_capacity(256);
            first.extend_from_slice(b"BEGIN;\n");
            push_marker_upsert(
                &mut first,
                origin,
                &self.store,
                p as u64 * MARKER_SLOTS + last.seq % MARKER_SLOTS,
                last,
            );
            // Under lww, this partition's rows with their versions.
            let check = self.versions.clone().map(|v| {
                let mut mine = Vec::new();
                for ((schema, table), runs) in &runs {
                    let Some(t) = self.sql.get(&(schema.to_string(), table.to_string())) else {
                        continue;
                    };
                    for run in runs {
                        for img in &run.rows {
                            let k = dcsync_core::conflict::version_key(schema, table, &t.pk, img);
                            if let Some(ver) = decided.get(k.as_slice()) {
                                mine.push((k, (*ver).clone()));
                            }
                        }
                    }
                }
                std::sync::Arc::new(lww::Check::new(
                    v,
                    &self.store,
                    mine,
                    lost.clone(),
                    group_record.clone(),
                    reassert.clone(),
                    &self.url,
                ))
            });
            let end: &[u8] = if check.is_some() { b"" } else { b"COMMIT" };
            let (chunks, tables) = self.statements(first, runs, end)?;
            self.conn(p).await?;
            let Some(conn) = self.conns[p].take() else {
                return Err(ConnectorError::Transient(format!(
                    "apply connection {p} lost"
                )));
            };
            let fut: PartitionFuture = Box::pin(run_or_roll_back(conn, chunks, tables, check));
            work.push((p, fut));
        }
        tracing::trace!(
            plan_us = t_decide.elapsed().as_micros() as u64,
            "mysql sink: group decided and planned"
        );
        Ok(Planned(work))
    }

    /// Prepares the SQL of every table of `txs` not seen yet (or whose
    /// shape changed).
    async fn prepare_tables(&mut self, txs: &[&Transaction]) -> Result<(), ConnectorError> {
        // One key buffer for every lookup (this runs for every row).
        let mut key = (String::new(), String::new());
        for tx in txs {
            for change in &tx.changes {
                if let Payload::Row(r) = &change.payload {
                    set_table_key(&mut key, r);
                    if self.sql.get(&key).is_none_or(|t| t.needs_rebuild(r)) {
                        self.prepare_table(r).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads the target table's columns from `information_schema` and
    /// caches the SQL for `r`'s shape. Errors name the table: it does not
    /// exist, lacks a column of the change, or the change has no key.
    async fn prepare_table(&mut self, r: &RowChange) -> Result<(), ConnectorError> {
        let name = format!("{}.{}", r.table.schema, r.table.name);
        let pk = r.primary_key();
        if pk.is_empty() {
            return Err(ConnectorError::Definite(format!(
                "table {name} has no PRIMARY KEY in the change; dcsync needs one to apply \
                 updates and deletes idempotently"
            )));
        }
        let conn = self.conn(0).await?;
        type ColumnRow = (String, String, String, Option<String>, Option<String>);
        let rows: Vec<ColumnRow> = conn
            .exec(
                "SELECT column_name, extra, data_type, character_set_name, collation_name \
                 FROM information_schema.columns WHERE table_schema=? AND table_name=?",
                (r.table.schema.as_str(), r.table.name.as_str()),
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
            .table
            .columns
            .iter()
            .find(|c| !existing.contains(c.name.as_str()))
        {
            return Err(ConnectorError::Definite(format!(
                "table {name} on the target store has no column {}; the schemas differ between DCs",
                missing.name
            )));
        }
        let key_types: Vec<(String, Option<String>, Option<String>)> = pk
            .iter()
            .filter_map(|i| rows.iter().find(|c| c.0 == r.table.columns[*i].name))
            .map(|c| (c.2.clone(), c.3.clone(), c.4.clone()))
            .collect();
        let spread = if key_types.len() == pk.len() {
            Spread::for_key(&key_types)
        } else {
            Spread::Whole
        };
        let generated: HashSet<String> = rows
            .into_iter()
            .filter(|c| {
                let e = c.1.to_ascii_uppercase();
                e.contains("VIRTUAL") || e.contains("STORED") || e.contains("PERSISTENT")
            })
            .map(|c| c.0)
            .collect();
        let uniques = if self.versions.is_some() {
            let conn = self.conn(0).await?;
            let rows: Vec<(String, String)> = conn
                .exec(
                    "SELECT index_name, column_name FROM information_schema.statistics \
                     WHERE table_schema=? AND table_name=? AND non_unique=0 \
                     AND index_name<>'PRIMARY' ORDER BY index_name, seq_in_index",
                    (r.table.schema.as_str(), r.table.name.as_str()),
                )
                .await
                .map_err(|e| classify(&format!("reading the unique keys of {name}"), e))?;
            let mut by_index: std::collections::BTreeMap<String, Vec<Option<usize>>> =
                Default::default();
            for (index, column) in rows {
                by_index
                    .entry(index)
                    .or_default()
                    .push(r.table.columns.iter().position(|c| c.name == column));
            }
            // An index on a column the change does not carry cannot be
            // checked; the INSERT then fails loudly instead.
            by_index
                .into_values()
                .filter_map(|cols| cols.into_iter().collect::<Option<Vec<usize>>>())
                .collect()
        } else {
            Vec::new()
        };
        // Rows of a table with secondary unique keys go to one partition:
        // its DELETE + INSERT must see every row that moves a unique value.
        let spread = if uniques.is_empty() {
            spread
        } else {
            Spread::Whole
        };
        let mut sql = TableSql::build(r, pk, &generated, spread);
        sql.uniques = uniques;
        self.sql
            .insert((r.table.schema.clone(), r.table.name.clone()), sql);
        Ok(())
    }

    /// Turns one partition's planned runs into query chunks after `first`,
    /// ending with `last` (`COMMIT`, or nothing while a split transaction
    /// is held open); also returns the table names (for errors). Empty
    /// chunks are left out.
    fn statements(
        &self,
        first: Vec<u8>,
        runs: PartitionRuns<'_>,
        last: &[u8],
    ) -> Result<(Vec<Vec<u8>>, String), ConnectorError> {
        let mut chunks = Chunks::new(&first, self.stmt_bytes, self.chunk_bytes);
        let mut names = Vec::new();
        for ((schema, table), runs) in runs {
            let name = format!("{schema}.{table}");
            let Some(t) = self.sql.get(&(schema.to_string(), table.to_string())) else {
                return Err(ConnectorError::Definite(format!(
                    "no SQL prepared for {name}"
                )));
            };
            for Run { kind, rows } in runs {
                match kind {
                    RunKind::Replace if !t.uniques.is_empty() => {
                        // Not REPLACE: it would delete another row holding
                        // the same unique value without a word. A collision
                        // the decision did not see fails the INSERT (1062)
                        // and the group is decided again.
                        chunks.delete(&t.text, &rows);
                        chunks.insert(&t.text, &rows);
                    }
                    RunKind::Replace => chunks.replace(&t.text, &rows),
                    RunKind::Delete => chunks.delete(&t.text, &rows),
                }
            }
            names.push(name);
        }
        let tables = if names.is_empty() {
            "dcsync.apply_marker".to_string()
        } else {
            names.join(", ")
        };
        let mut chunks = chunks.finish(last);
        chunks.retain(|c| !c.iter().all(u8::is_ascii_whitespace));
        Ok((chunks, tables))
    }
}

impl Sink for MysqlSink {
    fn set_versions(&mut self, versions: std::sync::Arc<dyn Versions>) {
        self.versions = Some(versions);
    }

    async fn applied_seq(&mut self, origin: &str) -> Result<u64, ConnectorError> {
        // A new connection of the sender resends from what is committed.
        self.release_held().await;
        Ok(self.floors(origin).await?.into_iter().min().unwrap_or(0))
    }

    async fn applied_mark(&mut self, origin: &str) -> Result<AppliedMark, ConnectorError> {
        let seq = Sink::applied_seq(self, origin).await?;
        if seq == 0 {
            return Ok(AppliedMark::default());
        }
        let (table, store) = (marker_table(), self.store.clone());
        let conn = self.conn(0).await?;
        let row: Option<(u64, Vec<u8>)> = conn
            .exec_first(
                format!(
                    "SELECT epoch, position FROM {table} WHERE origin=? AND store=? AND seq=? LIMIT 1"
                ),
                (origin, store.as_str(), seq),
            )
            .await
            .map_err(|e| classify("reading the apply marker", e))?;
        let (epoch, position) = row.unwrap_or_default();
        Ok(AppliedMark {
            seq,
            epoch,
            position: String::from_utf8_lossy(&position).into_owned(),
        })
    }

    async fn apply(&mut self, origin: &str, txs: &[Transaction]) -> Result<u64, ConnectorError> {
        let continues = self
            .held
            .as_ref()
            .is_some_and(|h| h.origin == origin && txs.first().is_some_and(|t| t.seq == h.next));
        if !continues {
            self.release_held().await;
        }
        let mut floors = self.floors(origin).await?;
        let low = floors.iter().copied().min().unwrap_or(0);
        let from = self.held.as_ref().map_or(low + 1, |h| h.next);
        let pending: Vec<&Transaction> = txs.iter().filter(|t| t.seq >= from).collect();
        if let Some(t) = pending
            .first()
            .filter(|t| t.part > 0 && self.held.is_none())
        {
            return Err(ConnectorError::Transient(format!(
                "store {}: seq {} of {origin} is part {} of a split transaction whose first part \
                 is not being applied; the sender resends from seq {}",
                self.store,
                t.seq,
                t.part,
                low + 1
            )));
        }
        let mut i = 0;
        while i < pending.len() {
            if self.held.is_some() || pending[i].more {
                // Parts of one split transaction, up to its last part,
                // bounded by the group bytes.
                let mut end = i;
                let mut bytes = 0usize;
                loop {
                    let t = pending[end];
                    bytes += t.approx_bytes();
                    end += 1;
                    if !t.more || end == pending.len() || bytes >= self.group_bytes {
                        break;
                    }
                }
                match self.apply_parts(origin, &pending[i..end]).await {
                    Ok(Some(last)) => {
                        for f in &mut floors {
                            *f = (*f).max(last);
                        }
                        self.applied.insert(origin.to_string(), floors.clone());
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.applied.remove(origin);
                        tracing::warn!(store = %self.store, origin, error = %e, "mysql sink: split transaction failed");
                        return Err(e);
                    }
                }
                i = end;
                continue;
            }
            // After a partial failure some partitions are ahead: first a
            // catch-up group ending where they are, applied only by the
            // partitions behind, so none runs further ahead while another
            // keeps failing (docs/mysql.md, "Partial failures").
            let ahead = catch_up_to(&floors);
            let mut end = i;
            let mut bytes = 0usize;
            while end < pending.len()
                && end - i < self.group_txns
                && !pending[end].more
                && ahead.is_none_or(|a| end == i || pending[end].seq <= a)
            {
                let b = pending[end].approx_bytes();
                if end > i && bytes + b > self.group_bytes {
                    break;
                }
                bytes += b;
                end += 1;
            }
            let group = &pending[i..end];
            let mut result = self.apply_group(origin, group, &floors).await;
            let mut retries = 0;
            while let Err((e, true)) = &result {
                if retries == DEADLOCK_RETRIES {
                    break;
                }
                retries += 1;
                tracing::debug!(store = %self.store, origin, error = %e, retries, "mysql sink: partitions deadlocked; retrying the rest of the group");
                self.applied.remove(origin);
                floors = match self.floors(origin).await {
                    Ok(f) => f,
                    Err(e) => {
                        result = Err((e, false));
                        break;
                    }
                };
                result = self.apply_group(origin, group, &floors).await;
            }
            match result.map_err(|(e, _)| e) {
                Ok(()) => {
                    if let Some(last) = group.last() {
                        for f in &mut floors {
                            *f = (*f).max(last.seq);
                        }
                        self.applied.insert(origin.to_string(), floors.clone());
                    }
                }
                Err(e) => {
                    // Unknown outcome per partition: forget the cached
                    // markers (the next call reads them back).
                    self.applied.remove(origin);
                    tracing::warn!(store = %self.store, origin, error = %e, "mysql sink: group failed");
                    return Err(e);
                }
            }
            i = end;
        }
        Ok(floors.into_iter().min().unwrap_or(0))
    }
}

/// Sets `key` to `r`'s `(schema, table)`, reusing its buffers.
fn set_table_key(key: &mut (String, String), r: &RowChange) {
    key.0.clear();
    key.0.push_str(&r.table.schema);
    key.1.clear();
    key.1.push_str(&r.table.name);
}

/// The seq a catch-up group must end at: the highest partition floor when
/// the partitions' floors differ (some committed a group others failed),
/// `None` when they agree.
fn catch_up_to(floors: &[u64]) -> Option<u64> {
    let lo = floors.iter().copied().min()?;
    let hi = floors.iter().copied().max()?;
    (hi > lo).then_some(hi)
}

#[cfg(test)]
mod catch_up_tests {
    use super::catch_up_to;

    #[test]
    fn only_unequal_floors_need_a_catch_up() {
        assert_eq!(catch_up_to(&[]), None);
        assert_eq!(catch_up_to(&[5, 5, 5]), None);
        assert_eq!(catch_up_to(&[5, 9, 5, 9]), Some(9));
    }
}
