//! The tailing half: a binlog replica client.
//!
//! [`MysqlSource`] registers as a replica (`COM_REGISTER_SLAVE`,
//! `COM_BINLOG_DUMP` by file + offset, or on MariaDB by GTID state: see
//! `source_start.rs`) through `mysql_async`'s binlog stream
//! and turns the event stream
//! (<https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_replication_binlog_event.html>,
//! <https://mariadb.com/kb/en/replication-protocol/>) into
//! [`SourceEvent`]s:
//!
//! - A transaction runs from its start (MariaDB GTID event 162, MySQL GTID
//!   event 33, or a `BEGIN` QUERY event) to its XID event (or a `COMMIT`
//!   QUERY event for non-transactional engines). Rows are collected and at
//!   the commit one [`SourceEvent::Local`] is sent, with the position
//!   *after* the commit event (its header `log_pos`). Once the rows
//!   collected reach [`FRAGMENT_BYTES`], they are sent ahead as a
//!   [`SourceEvent::Fragment`] (at most
//!   [`dcsync_core::connector::MAX_FRAGMENTS_IN_FLIGHT`] beyond what the
//!   agent journaled), so a transaction of any size is read in bounded
//!   memory.
//! - A transaction containing a row of `dcsync.apply_marker` was written by
//!   the dcsync sink: [`SourceEvent::Echo`] with the marker's origin and seq.
//! - A transaction with no replicated rows (filtered tables, DDL, ROTATE to a
//!   new file) advances the position with a throttled
//!   [`SourceEvent::Progress`] (at most one per [`PROGRESS_INTERVAL`] while
//!   events keep coming, the last one flushed once the stream is quiet for
//!   [`PROGRESS_IDLE`]).
//! - DDL is logged with `tracing::warn!`, reported as
//!   [`SourceEvent::Skipped`] (counted in the status) and skipped. A data
//!   change on a replicated table logged as a statement (a session with
//!   `binlog_format=STATEMENT`, or MIXED choosing a statement) and the rows
//!   of a replicated table without a primary key stop the store with a
//!   definite error naming the event, unless the store's `skip` option
//!   allows skipping them (then they are reported as `Skipped` too).
//!
//! MariaDB specifics (verified against MariaDB 10.11 by the tests):
//! `SET @mariadb_slave_capability=4` makes the server send GTID events
//! instead of rewriting them as `BEGIN` QUERY events; `mysql_common` does not
//! know the MariaDB event types (ANNOTATE_ROWS 160, BINLOG_CHECKPOINT 161,
//! GTID 162, GTID_LIST 163, START_ENCRYPTION 164), so they arrive as raw
//! events, GTID is decoded here and the others are skipped; the artificial
//! ROTATE event sent before the FORMAT_DESCRIPTION event carries the 4 CRC32
//! bytes after the file name, which are stripped.

use crate::config::MysqlOptions;
use crate::gtid::GtidState;
use crate::position::BinlogPosition;
use crate::statement::{classify_statement, loggable_statement, Statement};
use crate::units::UnitRules;
use crate::value::{from_binlog, table_info, TableInfo};
use crate::{MARKER_SCHEMA, MARKER_TABLE};
use dcsync_core::connector::{
    ConnectorError, Source, SourceContext, SourceEvent, MAX_FRAGMENTS_IN_FLIGHT,
};
use dcsync_core::topology::redact_url;
use dcsync_core::{Change, Payload, RowChange, RowKind, Value};
use futures_util::StreamExt;
use mysql_async::binlog::events::{BinlogEventHeader, Event, EventData, RowsEventData};
use mysql_async::binlog::EventType;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::time::Instant as TokioInstant;

/// Row bytes ([`dcsync_core::Change::approx_bytes`]) collected of one
/// transaction before they are sent ahead as a [`SourceEvent::Fragment`]:
/// the unit of memory a large transaction takes in the agent (see
/// docs/architecture.md, "Transactions of any size").
pub const FRAGMENT_BYTES: usize = 4 << 20;

/// How long the binlog stream must be quiet before a throttled
/// [`SourceEvent::Progress`] is sent early.
pub const PROGRESS_IDLE: Duration = Duration::from_millis(2);

/// Minimum interval between two [`SourceEvent::Progress`] events while
/// events keep arriving.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Heartbeat period asked of the server (`@master_heartbeat_period`, ns):
/// an idle server sends a HEARTBEAT event this often.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(1);

/// Once the server has shown it sends heartbeats, no event at all for this
/// long means the connection is dead (a silent network cut): Transient error.
/// The server sends no heartbeat while it streams one event, and a single
/// row event of a few hundred MB (a large BLOB before and after an update)
/// can take seconds to arrive, hence the margin.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// MariaDB binlog event type codes not known to `mysql_common`.
const MARIADB_ANNOTATE_ROWS: u8 = 160;
const MARIADB_GTID: u8 = 162;
/// MySQL 8.0.26+ HEARTBEAT_LOG_EVENT_V2, not known to `mysql_common`.
const MYSQL_HEARTBEAT_V2: u8 = 0x29;

/// Binlog tailing source for MySQL 8 and MariaDB 10.5+ (see the module docs).
pub struct MysqlSource {
    url: String,
    server_id: Option<u32>,
    idle_timeout: Duration,
}

impl std::fmt::Debug for MysqlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlSource")
            .field("url", &redact_url(&self.url))
            .field("server_id", &self.server_id)
            .finish()
    }
}

impl MysqlSource {
    /// A source reading the binlog of the server at `url`
    /// (`mysql://user:password@host:port`; the user needs `REPLICATION
    /// SLAVE`, `REPLICATION CLIENT` / `BINLOG MONITOR` and `SELECT`).
    pub fn new(url: String) -> Self {
        MysqlSource {
            url,
            server_id: None,
            idle_timeout: IDLE_TIMEOUT,
        }
    }

    /// Replica `server_id` to register with; it must differ from every other
    /// replica of the server. Default: derived from the DC id and store name,
    /// in `1_000_000_000..2_000_000_000`.
    pub fn with_server_id(mut self, server_id: u32) -> Self {
        self.server_id = Some(server_id);
        self
    }
}

impl MysqlSource {
    /// How long the stream may be silent (no event, no heartbeat) before the
    /// connection is presumed dead (default [`IDLE_TIMEOUT`]; enforced only
    /// once the server has sent a heartbeat). Values below twice
    /// [`HEARTBEAT_PERIOD`] are raised to that.
    pub fn with_idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = idle_timeout.max(HEARTBEAT_PERIOD * 2);
        self
    }
}

impl Source for MysqlSource {
    async fn run(self, cx: SourceContext) -> Result<(), ConnectorError> {
        let server_id = self.server_id.unwrap_or_else(|| {
            let h = dcsync_core::unit::fnv1a64(format!("{}/{}", cx.dc, cx.store.name).as_bytes());
            1_000_000_000 + (h % 1_000_000_000) as u32
        });
        let options = MysqlOptions::of(&cx.store)?.clone();
        let mut tailer = Tailer::new(cx, options, self.idle_timeout);
        tailer.run(&self.url, server_id).await
    }
}

/// The transaction being collected.
#[derive(Default)]
struct Tx {
    open: bool,
    changes: Vec<Change>,
    /// Approximate bytes of `changes`.
    bytes: usize,
    /// Fragments of this transaction sent ahead.
    fragments: u64,
    /// (origin, seq, hlc) of an apply-marker row seen in this transaction.
    marker: Option<(String, u64, dcsync_core::Hlc)>,
}

/// State of one run of the source.
struct Tailer {
    cx: SourceContext,
    file: String,
    /// File the dump was requested from (names the artificial ROTATE).
    start_file: String,
    /// Last non-zero header `log_pos` seen.
    last_log_pos: u32,
    /// MySQL: GTID of the last transaction read (for operators).
    gtid: Option<String>,
    /// MariaDB: the last GTID of every domain read so far.
    gtid_state: GtidState,
    /// The state the dump was requested from, if resumed by GTID.
    by_gtid: Option<GtidState>,
    tables: HashMap<u64, TableInfo>,
    tx: Tx,
    pending_progress: Option<BinlogPosition>,
    last_progress: Instant,
    /// The store's MySQL options (tables, unit key).
    options: MysqlOptions,
    /// The store's unit rules (the unit of every captured row).
    units: UnitRules,
    idle_timeout: Duration,
    /// Fragments sent in this run (compared with
    /// `cx.fragments_journaled`).
    fragments_sent: u64,
    /// Replicated tables without a primary key whose rows are skipped
    /// (`skip = ["no_primary_key"]`), by table id: `schema.table`.
    no_pk_tables: HashMap<u64, String>,
}

enum Flow {
    Continue,
    Shutdown,
}

impl Tailer {
    fn new(cx: SourceContext, options: MysqlOptions, idle_timeout: Duration) -> Self {
        let units = UnitRules::new(&options, cx.units.count);
        Tailer {
            cx,
            units,
            file: String::new(),
            start_file: String::new(),
            last_log_pos: 0,
            gtid: None,
            gtid_state: GtidState::default(),
            by_gtid: None,
            tables: HashMap::new(),
            tx: Tx::default(),
            pending_progress: None,
            last_progress: Instant::now(),
            options,
            idle_timeout,
            fragments_sent: 0,
            no_pk_tables: HashMap::new(),
        }
    }

    fn shutting_down(&self) -> bool {
        *self.cx.shutdown.borrow()
    }

    async fn run(&mut self, url: &str, server_id: u32) -> Result<(), ConnectorError> {
        if self.shutting_down() {
            return Ok(());
        }
        if let Flow::Shutdown = self.snapshot(url).await? {
            return Ok(());
        }
        let start::Opened {
            mut stream,
            start,
            by_gtid,
        } = start::open(url, server_id, &self.cx, &self.options).await?;
        // Resumed by GTID, the stored file and offset may be another
        // server's: this server's come with the ROTATE it sends first.
        (self.file, self.last_log_pos) = match by_gtid {
            Some(_) => (String::new(), 4),
            None => (
                start.file.clone(),
                u32::try_from(start.pos).unwrap_or(u32::MAX),
            ),
        };
        self.start_file = self.file.clone();
        self.gtid = start.gtid.clone();
        self.gtid_state = start.gtid_state.clone();
        self.by_gtid = by_gtid;
        if self.cx.resume.is_none() {
            // A first start begins at the binlog's end: journal it at once,
            // so the agent knows how far this DC's log is read even before
            // the first event (a sink deciding a conflict waits for it;
            // a restart resumes from it).
            self.last_progress = Instant::now();
            if let Flow::Shutdown = self
                .send(SourceEvent::Progress {
                    position: start.to_position(),
                })
                .await
            {
                return Ok(());
            }
        }
        let mut shutdown = self.cx.shutdown.clone();
        let mut heartbeats_seen = false;
        let mut last_event = Instant::now();
        let result = loop {
            let idle_deadline =
                heartbeats_seen.then(|| TokioInstant::from_std(last_event + self.idle_timeout));
            // A pending position goes out PROGRESS_INTERVAL after the last
            // one, or as soon as the stream pauses (a sink deciding a
            // conflict may be waiting for exactly this position: dcsync's
            // own lease write at the binlog's end, say).
            let flush_at = self.pending_progress.as_ref().map(|_| {
                TokioInstant::from_std(
                    (self.last_progress + PROGRESS_INTERVAL).min(last_event + PROGRESS_IDLE),
                )
            });
            tokio::select! {
                biased;
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        break Ok(());
                    }
                }
                _ = async {
                    match flush_at {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Some(p) = self.pending_progress.take() {
                        self.last_progress = Instant::now();
                        if let Flow::Shutdown = self.send(SourceEvent::Progress { position: p.to_position() }).await {
                            break Ok(());
                        }
                    }
                }
                _ = async {
                    match idle_deadline {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {
                    break Err(ConnectorError::Transient(format!(
                        "no binlog event or heartbeat for {:?}; the connection is presumed dead",
                        self.idle_timeout
                    )));
                }
                ev = stream.next() => {
                    last_event = Instant::now();
                    let ev = match ev {
                        Some(Ok(ev)) => ev,
                        Some(Err(e)) => break Err(start::stream_error(e, self.by_gtid.as_ref())),
                        None => break Err(ConnectorError::Transient("the server closed the binlog stream".into())),
                    };
                    let t = ev.header().event_type_raw();
                    if t == EventType::HEARTBEAT_EVENT as u8 || t == MYSQL_HEARTBEAT_V2 {
                        tracing::trace!("mysql source: heartbeat");
                        heartbeats_seen = true;
                        // Idle at the binlog's end: the position reaches it
                        // even past events without a transaction (after a
                        // rotation); a sink deciding a conflict waits for it.
                        let pos = ev.header().log_pos();
                        if pos > self.last_log_pos && !self.tx.open {
                            self.last_log_pos = pos;
                            match self.progress(self.position_at(pos)).await {
                                Flow::Continue => {}
                                Flow::Shutdown => break Ok(()),
                            }
                        }
                        continue;
                    }
                    let handled = self.handle(&stream, ev).await;
                    // Time blocked on a full event channel is not silence.
                    last_event = Instant::now();
                    match handled {
                        Ok(Flow::Continue) => {}
                        Ok(Flow::Shutdown) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                }
            }
        };
        // Closing is best effort; the connection is dropped either way.
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.close()).await;
        result
    }

    /// Sends `ev`, waiting while the channel is full; `Shutdown` if the
    /// agent shut down (or dropped the receiver) meanwhile.
    async fn send(&mut self, ev: SourceEvent) -> Flow {
        let mut shutdown = self.cx.shutdown.clone();
        tokio::select! {
            biased;
            r = self.cx.events.send(ev) => if r.is_err() { Flow::Shutdown } else { Flow::Continue },
            _ = shutdown.wait_for(|v| *v) => Flow::Shutdown,
        }
    }

    /// The position `log_pos` in the current file. Events inside a MySQL
    /// compressed TRANSACTION_PAYLOAD carry `log_pos` 0; their transaction
    /// ends where the payload event ends (the last non-zero `log_pos`).
    fn position_at(&self, log_pos: u32) -> BinlogPosition {
        let log_pos = if log_pos == 0 {
            self.last_log_pos
        } else {
            log_pos
        };
        BinlogPosition {
            file: self.file.clone(),
            pos: u64::from(log_pos),
            gtid: self.gtid.clone(),
            gtid_state: self.gtid_state.clone(),
        }
    }

    /// Records a position reached without a replicated change; sent when
    /// [`PROGRESS_INTERVAL`] has passed since the last one.
    async fn progress(&mut self, p: BinlogPosition) -> Flow {
        if self.last_progress.elapsed() >= PROGRESS_INTERVAL {
            self.pending_progress = None;
            self.last_progress = Instant::now();
            self.send(SourceEvent::Progress {
                position: p.to_position(),
            })
            .await
        } else {
            self.pending_progress = Some(p);
            Flow::Continue
        }
    }

    async fn handle(
        &mut self,
        stream: &mysql_async::BinlogStream,
        ev: Event,
    ) -> Result<Flow, ConnectorError> {
        let header = ev.header();
        let raw_type = header.event_type_raw();
        if header.log_pos() != 0 {
            self.last_log_pos = header.log_pos();
        }
        if header.event_type().is_err() {
            // MariaDB-specific or future event types.
            if raw_type == MARIADB_GTID {
                self.begin_mariadb_gtid(ev.data(), header.server_id());
            } else if raw_type != MARIADB_ANNOTATE_ROWS {
                tracing::trace!(event_type = raw_type, "mysql source: skipping event");
            }
            return Ok(Flow::Continue);
        }
        let data = ev.read_data().map_err(|e| {
            ConnectorError::Definite(format!(
                "undecodable binlog event at {}:{} (type {raw_type}): {e}",
                self.file,
                header.log_pos()
            ))
        })?;
        let Some(data) = data else {
            return Ok(Flow::Continue);
        };
        match data {
            EventData::RotateEvent(r) => {
                let raw = r.name_raw();
                let name = if header.log_pos() == 0
                    && raw.len() == self.start_file.len() + 4
                    && raw.starts_with(self.start_file.as_bytes())
                {
                    &raw[..self.start_file.len()]
                } else {
                    strip_checksum(raw)
                };
                if name.len() != raw.len() {
                    tracing::debug!(raw = ?String::from_utf8_lossy(raw), "mysql source: stripped checksum bytes from ROTATE file name");
                }
                self.file = String::from_utf8_lossy(name).into_owned();
                if let (0, Some(state)) = (header.log_pos(), &self.by_gtid) {
                    tracing::info!(gtid = %state, file = %self.file, "mysql source: resumed by GTID; the server sends from this binlog file");
                }
                if header.log_pos() != 0 {
                    // Table ids are per file.
                    self.tables.clear();
                }
                if header.log_pos() != 0 && !self.tx.open {
                    // A real rotate: the next file starts at r.position().
                    let p = BinlogPosition {
                        pos: r.position(),
                        ..self.position_at(0)
                    };
                    return Ok(self.progress(p).await);
                }
            }
            EventData::GtidEvent(g) => {
                self.gtid = Some(format!("{}:{}", format_uuid(&g.sid()), g.gno()));
                self.tx = Tx {
                    open: true,
                    ..Tx::default()
                };
            }
            EventData::QueryEvent(q) => {
                let sql = q.query();
                let trimmed = sql.trim();
                let head: String = trimmed
                    .chars()
                    .take(20)
                    .collect::<String>()
                    .to_ascii_uppercase();
                if head == "BEGIN" || head.starts_with("BEGIN ") || head.starts_with("XA START") {
                    self.tx.open = true;
                } else if head == "COMMIT" || head.starts_with("XA END") {
                    return self.commit(header.log_pos(), header.timestamp()).await;
                } else if head == "ROLLBACK" {
                    if self.tx.fragments > 0 {
                        // Rows logged before a ROLLBACK are of
                        // non-transactional tables and stay; parts of them
                        // were sent ahead: close the transaction.
                        return self.commit(header.log_pos(), header.timestamp()).await;
                    }
                    self.tx = Tx::default();
                    return Ok(self.progress(self.position_at(header.log_pos())).await);
                } else if head.starts_with("SAVEPOINT") || head.starts_with("ROLLBACK TO") {
                    // Inside a transaction; rolled-back rows are not logged.
                } else if head.starts_with("XA COMMIT") || head.starts_with("XA ROLLBACK") {
                    // The XA transaction's rows were reported at XA END.
                    self.tx = Tx::default();
                    return Ok(self.progress(self.position_at(header.log_pos())).await);
                } else {
                    return self
                        .statement_event("QUERY", &q.schema(), trimmed, &header)
                        .await;
                }
            }
            EventData::ExecuteLoadQueryEvent(q) => {
                // LOAD DATA logged as a statement (the file travels in
                // BEGIN_LOAD_QUERY / APPEND_BLOCK events).
                return self
                    .statement_event("EXECUTE_LOAD_QUERY", &q.schema(), q.query().trim(), &header)
                    .await;
            }
            EventData::IncidentEvent(i) => {
                return Err(ConnectorError::Definite(format!(
                    "INCIDENT event at {} ({}): the server wrote an incident into its binlog \
                     (events may be missing from here on, e.g. a binlog write failed); dcsync stops \
                     store {:?} as a replica would. Compare the DCs' tables and repair them, then \
                     restart the agent with a journal position past this event (re-bootstrap)",
                    self.event_at(&header),
                    loggable_statement(&i.message()),
                    self.cx.store.name
                )));
            }
            EventData::XidEvent(_) => {
                return self.commit(header.log_pos(), header.timestamp()).await;
            }
            EventData::TableMapEvent(tme) => {
                let info = table_info(&tme).map_err(ConnectorError::Definite)?;
                let replicated = self.options.matches_table(&info.schema, &info.table);
                if replicated && !info.columns.iter().any(|c| c.primary_key) {
                    if !self.options.skip.no_primary_key {
                        self.flush_progress().await;
                        return Err(ConnectorError::Definite(format!(
                            "table {}.{} has no PRIMARY KEY; dcsync needs one to apply updates and \
                             deletes idempotently (rows event at {}; nothing after it is shipped). \
                             Fix: add a primary key in every DC, or exclude the table from store \
                             {:?}'s tables, or add skip = [\"no_primary_key\"] to the store to \
                             skip (and count) such rows; then restart the agent",
                            info.schema,
                            info.table,
                            self.event_at(&header),
                            self.cx.store.name
                        )));
                    }
                    self.no_pk_tables
                        .insert(tme.table_id(), format!("{}.{}", info.schema, info.table));
                } else {
                    self.no_pk_tables.remove(&tme.table_id());
                }
                self.tables.insert(tme.table_id(), info);
            }
            EventData::RowsEvent(rows) if self.no_pk_tables.contains_key(&rows.table_id()) => {
                return Ok(self.skip_no_pk_rows(stream, &rows, &header).await);
            }
            EventData::RowsEvent(rows) => {
                self.rows(stream, &rows, header.log_pos())?;
                if self.tx.bytes >= FRAGMENT_BYTES {
                    return self.send_fragment(header.timestamp()).await;
                }
            }
            _ => {}
        }
        Ok(Flow::Continue)
    }

    /// Sends the rows collected so far as a [`SourceEvent::Fragment`],
    /// first waiting until the agent has journaled all but
    /// [`MAX_FRAGMENTS_IN_FLIGHT`] of the fragments sent before.
    async fn send_fragment(&mut self, timestamp: u32) -> Result<Flow, ConnectorError> {
        let floor = self.fragments_sent.saturating_sub(MAX_FRAGMENTS_IN_FLIGHT);
        let mut journaled = self.cx.fragments_journaled.clone();
        let mut shutdown = self.cx.shutdown.clone();
        tokio::select! {
            biased;
            r = journaled.wait_for(|n| *n >= floor) => {
                if r.is_err() {
                    return Ok(Flow::Shutdown);
                }
            }
            _ = shutdown.wait_for(|v| *v) => return Ok(Flow::Shutdown),
        }
        let changes = std::mem::take(&mut self.tx.changes);
        self.tx.bytes = 0;
        self.tx.fragments += 1;
        self.fragments_sent += 1;
        tracing::debug!(
            fragment = self.tx.fragments,
            changes = changes.len(),
            "mysql source: sending part of a large transaction ahead"
        );
        Ok(self
            .send(SourceEvent::Fragment {
                changes,
                commit_ts_ms: u64::from(timestamp) * 1000,
            })
            .await)
    }

    /// Where the event of `header` is, for messages: `file:start gtid=...`
    /// of the event itself (the position reported after a transaction is
    /// the end of its commit event instead).
    fn event_at(&self, header: &BinlogEventHeader) -> String {
        let mut p = self.position_at(header.log_pos());
        if header.log_pos() != 0 {
            p.pos = p.pos.saturating_sub(u64::from(header.event_size()));
        }
        p.to_string()
    }

    /// Sends a throttled `Progress` still pending, so that the position the
    /// agent journals is as close as it can be to an event the source is
    /// about to stop at.
    async fn flush_progress(&mut self) -> Flow {
        match self.pending_progress.take() {
            Some(p) => {
                self.last_progress = Instant::now();
                self.send(SourceEvent::Progress {
                    position: p.to_position(),
                })
                .await
            }
            None => Flow::Continue,
        }
    }

    /// Reports something deliberately not shipped (see
    /// [`SourceEvent::Skipped`]).
    async fn skipped(
        &mut self,
        what: &'static str,
        count: u64,
        detail: String,
        at: String,
    ) -> Flow {
        self.send(SourceEvent::Skipped {
            what,
            count,
            detail,
            position: at,
        })
        .await
    }

    /// A QUERY (or EXECUTE_LOAD_QUERY) event other than transaction control:
    /// DDL is logged, counted and skipped; a data change on a replicated
    /// table logged as a statement stops the store with a definite error
    /// unless the store's `skip` has `"statement_dml"`; one on a table the
    /// store does not replicate is skipped quietly.
    async fn statement_event(
        &mut self,
        event: &str,
        schema: &str,
        sql: &str,
        header: &BinlogEventHeader,
    ) -> Result<Flow, ConnectorError> {
        let shown = loggable_statement(sql);
        let at = self.event_at(header);
        if schema == MARKER_SCHEMA || shown.contains("`dcsync`.`apply_marker`") {
            tracing::debug!(statement = %shown, "mysql source: skipping dcsync's own DDL");
        } else {
            match classify_statement(sql, schema) {
                Statement::Dml { verb, table } => {
                    let replicated = table
                        .as_ref()
                        .is_none_or(|(s, t)| self.options.matches_table(s, t));
                    let name = table
                        .as_ref()
                        .map(|(s, t)| format!("{s}.{t}"))
                        .unwrap_or_else(|| "(table not recognised)".into());
                    if replicated && !self.options.skip.statement_dml {
                        self.flush_progress().await;
                        return Err(ConnectorError::Definite(format!(
                            "{verb} on replicated table {name} was logged as a statement, not as rows \
                             ({event} event at {at}: `{shown}`): a session or the server uses \
                             binlog_format=STATEMENT or MIXED, so dcsync cannot ship its effect and \
                             stops store {store:?} here (nothing after it is shipped). Fix: set \
                             binlog_format=ROW (SET GLOBAL binlog_format='ROW', in the server config, \
                             and in the sessions that changed it); then add skip = [\"statement_dml\"] \
                             to store {store:?}, restart the agent (this statement is skipped and \
                             counted in `dcsync status`), and redo the same write in every other DC \
                             so that every DC holds its effect",
                            store = self.cx.store.name
                        )));
                    }
                    if replicated {
                        tracing::warn!(
                            statement = %shown,
                            table = %name,
                            position = %at,
                            "mysql source: skipping a statement-format write on a replicated table \
                             (skip = [\"statement_dml\"]): redo it in every other DC"
                        );
                        if let Flow::Shutdown = self
                            .skipped("statement_dml", 1, format!("{name}: {shown}"), at)
                            .await
                        {
                            return Ok(Flow::Shutdown);
                        }
                    } else {
                        tracing::debug!(statement = %shown, table = %name, "mysql source: statement-format write on a table this store does not replicate");
                    }
                }
                Statement::Other => {
                    tracing::warn!(
                        schema = %schema,
                        statement = %shown,
                        position = %at,
                        "mysql source: skipping DDL (not replicated; apply it in every DC yourself)"
                    );
                    if let Flow::Shutdown = self.skipped("ddl", 1, shown, at).await {
                        return Ok(Flow::Shutdown);
                    }
                }
            }
        }
        if self.tx.changes.is_empty() && self.tx.marker.is_none() {
            self.tx = Tx::default();
            return Ok(self.progress(self.position_at(header.log_pos())).await);
        }
        Ok(Flow::Continue)
    }

    /// Skips the rows of a replicated table without a primary key
    /// (`skip = ["no_primary_key"]`): counted, logged, not shipped.
    async fn skip_no_pk_rows(
        &mut self,
        stream: &mysql_async::BinlogStream,
        rows: &RowsEventData<'_>,
        header: &BinlogEventHeader,
    ) -> Flow {
        let table_id = rows.table_id();
        let name = self
            .no_pk_tables
            .get(&table_id)
            .cloned()
            .unwrap_or_default();
        let n = stream
            .get_tme(table_id)
            .map(|tme| rows.rows(tme).count() as u64)
            .unwrap_or(1)
            .max(1);
        let at = self.event_at(header);
        tracing::warn!(table = %name, rows = n, position = %at, "mysql source: skipping rows of a table without a PRIMARY KEY (skip = [\"no_primary_key\"])");
        self.skipped("no_primary_key", n, name, at).await
    }

    /// Starts a transaction at a MariaDB GTID event (recorded in the
    /// GTID state; see [`crate::gtid::decode_gtid_event`]).
    fn begin_mariadb_gtid(&mut self, data: &[u8], server_id: u32) {
        if let Some(g) = crate::gtid::decode_gtid_event(data, server_id) {
            self.gtid_state.record(g);
        }
        self.tx = Tx {
            open: true,
            ..Tx::default()
        };
    }

    fn rows(
        &mut self,
        stream: &mysql_async::BinlogStream,
        rows: &RowsEventData<'_>,
        log_pos: u32,
    ) -> Result<(), ConnectorError> {
        let table_id = rows.table_id();
        let Some(info) = self.tables.get(&table_id) else {
            return Err(ConnectorError::Definite(format!(
                "rows event without a TABLE_MAP for table id {table_id} at {}:{log_pos}",
                self.file
            )));
        };
        let is_marker = info.schema == MARKER_SCHEMA && info.table == MARKER_TABLE;
        if !is_marker && !self.options.matches_table(&info.schema, &info.table) {
            return Ok(());
        }
        // A transaction that wrote a marker row is an echo and none of its
        // rows are kept (see `commit`); the sink writes the marker first,
        // so its data rows need no decoding.
        if !is_marker && self.tx.marker.is_some() {
            return Ok(());
        }
        let Some(tme) = stream.get_tme(table_id) else {
            return Err(ConnectorError::Definite(format!(
                "rows event without a TABLE_MAP for table id {table_id} at {}:{log_pos}",
                self.file
            )));
        };
        let kind = match rows {
            RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => {
                RowKind::Insert
            }
            RowsEventData::UpdateRowsEvent(_)
            | RowsEventData::UpdateRowsEventV1(_)
            | RowsEventData::PartialUpdateRowsEvent(_) => RowKind::Update,
            RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => {
                RowKind::Delete
            }
        };
        let table_name = format!("{}.{}", info.schema, info.table);
        for row in rows.rows(tme) {
            let (before, after) = row.map_err(|e| {
                ConnectorError::Definite(format!(
                    "undecodable row of {table_name} at {}:{log_pos}: {e}",
                    self.file
                ))
            })?;
            let conv = |r: Option<mysql_async::binlog::row::BinlogRow>| -> Result<Option<Vec<Value>>, ConnectorError> {
                let Some(mut r) = r else { return Ok(None) };
                if r.len() != info.columns.len() {
                    return Err(ConnectorError::Definite(format!(
                        "row image of {table_name} has {} of {} columns; set binlog_row_image=FULL",
                        r.len(),
                        info.columns.len()
                    )));
                }
                let mut out = Vec::with_capacity(r.len());
                for (i, col) in info.columns.iter().enumerate() {
                    let v = r.take(i).ok_or_else(|| ConnectorError::Definite(format!("{table_name}: missing column {}", col.name)))?;
                    out.push(from_binlog(info.types[i], col, v).map_err(|e| ConnectorError::Definite(format!("{table_name}: {e}")))?);
                }
                Ok(Some(out))
            };
            let before = conv(before)?;
            let after = conv(after)?;
            if is_marker {
                if self.tx.fragments > 0 {
                    return Err(ConnectorError::Definite(format!(
                        "a transaction at {}:{log_pos} writes dcsync.apply_marker after {} parts of \
                         application rows: only dcsync's sink may write that table",
                        self.file, self.tx.fragments
                    )));
                }
                if let Some(m) = marker_of(&info.columns, after.as_ref().or(before.as_ref())) {
                    self.tx.marker = Some(m);
                }
                continue;
            }
            let image = if kind == RowKind::Delete {
                before.as_deref()
            } else {
                after.as_deref()
            };
            let unit = self.units.unit_of_row(&table_name, &info.columns, image);
            let change = Change {
                unit,
                payload: Payload::Row(RowChange {
                    table: info.meta.clone(),
                    kind,
                    before,
                    after,
                }),
            };
            self.tx.bytes += change.approx_bytes();
            self.tx.changes.push(change);
        }
        Ok(())
    }

    async fn commit(&mut self, log_pos: u32, timestamp: u32) -> Result<Flow, ConnectorError> {
        let tx = std::mem::take(&mut self.tx);
        let position = self.position_at(log_pos);
        if let Some((origin, seq, hlc)) = tx.marker {
            self.pending_progress = None;
            return Ok(self
                .send(SourceEvent::Echo {
                    origin,
                    seq,
                    hlc,
                    position: position.to_position(),
                })
                .await);
        }
        if tx.changes.is_empty() && tx.fragments == 0 {
            return Ok(self.progress(position).await);
        }
        self.pending_progress = None;
        Ok(self
            .send(SourceEvent::Local {
                changes: tx.changes,
                commit_ts_ms: u64::from(timestamp) * 1000,
                position: position.to_position(),
            })
            .await)
    }
}

#[path = "source_binlog.rs"]
mod binlog;
#[path = "source_snapshot.rs"]
pub mod snapshot;
#[path = "source_start.rs"]
mod start;
use binlog::{format_uuid, marker_of, strip_checksum};
