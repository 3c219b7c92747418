//! Checks against the server: binlog settings, the current position and
//! MariaDB GTID state, whether a resume position is still retained, and the
//! inspection behind
//! `dcsync check --connect` ([`inspect`]), which reports every problem
//! instead of stopping at the first as the source's start-up checks do.

use crate::error::classify;
use crate::gtid::GtidState;
use crate::position::BinlogPosition;
use dcsync_core::connector::{ConnectorError, Finding, Inspection, Limit};
use dcsync_core::topology::StoreConfig;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

/// Server facts read at start-up.
pub(crate) struct ServerInfo {
    /// The server is MariaDB (else MySQL).
    pub mariadb: bool,
}

/// The server's global settings that dcsync depends on, read in one query
/// (`SHOW GLOBAL VARIABLES`, so a setting absent from this server version
/// is simply missing rather than failing the query).
struct Settings {
    vars: std::collections::BTreeMap<String, String>,
}

/// Global variables read by [`read_settings`].
const SETTINGS: [&str; 7] = [
    "version",
    "log_bin",
    "binlog_format",
    "binlog_row_image",
    "binlog_row_metadata",
    "binlog_row_value_options",
    "max_allowed_packet",
];

async fn read_settings(conn: &mut Conn) -> Result<Settings, ConnectorError> {
    let names: Vec<String> = SETTINGS.iter().map(|n| format!("'{n}'")).collect();
    let rows: Vec<(String, Option<String>)> = conn
        .query(format!(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ({})",
            names.join(", ")
        ))
        .await
        .map_err(|e| classify("reading server settings", e))?;
    Ok(Settings {
        vars: rows
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.unwrap_or_default()))
            .collect(),
    })
}

impl Settings {
    fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    fn mariadb(&self) -> bool {
        self.get("version")
            .is_some_and(|v| v.to_ascii_lowercase().contains("mariadb"))
    }

    /// `max_allowed_packet` in bytes, if the server reported it.
    fn max_allowed_packet(&self) -> Option<u64> {
        self.get("max_allowed_packet").and_then(|v| v.parse().ok())
    }

    /// Every binlog setting that is not what dcsync needs, as errors naming
    /// the setting and the fix (the same on MySQL 8 and MariaDB).
    fn findings(&self) -> Vec<Finding> {
        let mut out = Vec::new();
        let log_bin = self.get("log_bin").unwrap_or("OFF");
        if !(log_bin == "1" || log_bin.eq_ignore_ascii_case("ON")) {
            out.push(Finding::error(
                "the server's binary log is off (log_bin=OFF); start it with --log-bin and \
                 binlog_format=ROW, binlog_row_image=FULL, binlog_row_metadata=FULL",
            ));
        }
        for (name, want) in [
            ("binlog_format", "ROW"),
            ("binlog_row_image", "FULL"),
            ("binlog_row_metadata", "FULL"),
        ] {
            match self.get(name) {
                None => out.push(Finding::error(format!(
                    "the server has no {name} setting; dcsync needs MySQL 8.0.1+ or \
                     MariaDB 10.5+ with {name}={want}"
                ))),
                Some(have) if !have.eq_ignore_ascii_case(want) => {
                    out.push(Finding::error(format!(
                        "the server has {name}={have}; dcsync needs {name}={want} \
                         (SET GLOBAL {name}='{want}' and in the server config)"
                    )))
                }
                Some(_) => {}
            }
        }
        if !self.mariadb() {
            if let Some(o) = self.get("binlog_row_value_options") {
                if o.to_ascii_uppercase().contains("PARTIAL_JSON") {
                    out.push(Finding::error(format!(
                        "the server has binlog_row_value_options={o}; dcsync needs full JSON \
                         images: SET GLOBAL binlog_row_value_options=''"
                    )));
                }
            }
        }
        out
    }
}

/// Checks the binlog settings dcsync needs; the first wrong one is a
/// Definite error naming the setting and the fix (`dcsync check --connect`
/// lists them all, see [`inspect`]).
pub(crate) async fn check_settings(conn: &mut Conn) -> Result<ServerInfo, ConnectorError> {
    let settings = read_settings(conn).await?;
    if let Some(f) = settings.findings().into_iter().next() {
        return Err(ConnectorError::Definite(f.message));
    }
    Ok(ServerInfo {
        mariadb: settings.mariadb(),
    })
}

/// `SHOW MASTER STATUS` (or MySQL 8.2+'s `SHOW BINARY LOG STATUS`).
pub(crate) async fn current_position(conn: &mut Conn) -> Result<BinlogPosition, ConnectorError> {
    let row: Option<Row> = match conn.query_first("SHOW MASTER STATUS").await {
        Ok(r) => r,
        Err(mysql_async::Error::Server(_)) => conn
            .query_first("SHOW BINARY LOG STATUS")
            .await
            .map_err(|e| classify("SHOW BINARY LOG STATUS", e))?,
        Err(e) => return Err(classify("SHOW MASTER STATUS", e)),
    };
    let row = row.ok_or_else(|| {
        ConnectorError::Definite("SHOW MASTER STATUS returned nothing: is log_bin on?".into())
    })?;
    let file: Option<String> = row.get(0);
    let pos: Option<u64> = row.get(1);
    match (file, pos) {
        (Some(file), Some(pos)) => Ok(BinlogPosition::new(file, pos)),
        _ => Err(ConnectorError::Transient(
            "unexpected SHOW MASTER STATUS row".into(),
        )),
    }
}

/// MariaDB: the GTID state at `at` (file and offset of this server's
/// binlog, on a transaction boundary), by `BINLOG_GTID_POS(file, offset)`.
/// Empty when the server has none there (no transaction logged yet, or an
/// offset it cannot map: logged as a warning; positions then carry the
/// domains seen from there on).
///
/// Errors: Transient if the query fails for a connection reason; Definite
/// if the server answers something that is not a GTID state.
pub(crate) async fn gtid_at(
    conn: &mut Conn,
    at: &BinlogPosition,
) -> Result<GtidState, ConnectorError> {
    let v: Option<Option<String>> = conn
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (&at.file, at.pos))
        .await
        .map_err(|e| classify("SELECT BINLOG_GTID_POS", e))?;
    match v.flatten() {
        Some(s) => GtidState::parse(&s)
            .map_err(|e| ConnectorError::Definite(format!("BINLOG_GTID_POS({at}) returned {e}"))),
        None => {
            tracing::warn!(position = %at, "mysql source: the server has no GTID state at the start position (BINLOG_GTID_POS is NULL); positions carry GTIDs from the next transaction on");
            Ok(GtidState::default())
        }
    }
}

/// MariaDB's `@@gtid_binlog_pos` (the GTID state at the binlog's end);
/// empty on a server without it (MySQL answers "unknown system variable").
///
/// Errors: Transient/Definite as [`classify`] for other failures; Definite
/// if the value is not a GTID state.
pub(crate) async fn gtid_binlog_pos(conn: &mut Conn) -> Result<GtidState, ConnectorError> {
    const ER_UNKNOWN_SYSTEM_VARIABLE: u16 = 1193;
    match conn
        .query_first::<Option<String>, _>("SELECT @@gtid_binlog_pos")
        .await
    {
        Ok(v) => GtidState::parse(&v.flatten().unwrap_or_default()).map_err(|e| {
            ConnectorError::Definite(format!("@@gtid_binlog_pos is not a GTID state: {e}"))
        }),
        Err(mysql_async::Error::Server(s)) if s.code == ER_UNKNOWN_SYSTEM_VARIABLE => {
            Ok(GtidState::default())
        }
        Err(e) => Err(classify("SELECT @@gtid_binlog_pos", e)),
    }
}

/// Fails with a Definite error if `file` is no longer on the server.
pub(crate) async fn check_retained(
    conn: &mut Conn,
    at: &BinlogPosition,
) -> Result<(), ConnectorError> {
    let rows: Vec<Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(|e| classify("SHOW BINARY LOGS", e))?;
    let present = rows
        .iter()
        .any(|r| r.get::<String, usize>(0).as_deref() == Some(at.file.as_str()));
    if present {
        Ok(())
    } else {
        Err(ConnectorError::Definite(format!(
            "the binlog file {} needed to resume at {at} was purged from the server; \
             changes after that position are lost to dcsync and this store needs a \
             re-bootstrap (copy the data, then start the source without a resume position)",
            at.file
        )))
    }
}

/// How long the server at `url` keeps binlog files before purging them
/// (`binlog_expire_logs_seconds`, which both MySQL 8 and MariaDB 10.6+ have);
/// `None` when it keeps them forever (0). A journaled backlog older than this
/// cannot be re-read from the source, so the agent warns as it approaches.
///
/// Errors: transient if the server cannot be reached.
pub async fn binlog_retention(url: &str) -> Result<Option<std::time::Duration>, ConnectorError> {
    let opts = mysql_async::Opts::from_url(url)
        .map_err(|e| ConnectorError::Definite(format!("bad mysql url: {e}")))?;
    let mut conn = Conn::new(opts).await.map_err(|e| classify("connect", e))?;
    let secs: Option<u64> = conn
        .query_first("SELECT @@binlog_expire_logs_seconds")
        .await
        .map_err(|e| classify("read binlog_expire_logs_seconds", e))?;
    let _ = conn.disconnect().await;
    Ok(secs.filter(|s| *s > 0).map(std::time::Duration::from_secs))
}

/// Schemas that are never replicated, left out of "its schemas" lists.
const SYSTEM: [&str; 5] = [
    "mysql",
    "sys",
    "information_schema",
    "performance_schema",
    crate::MARKER_SCHEMA,
];

/// How the store's `tables` patterns match the server's tables.
struct PatternMatch {
    /// The server's schemas, system schemas left out, sorted.
    schemas: Vec<String>,
    /// Patterns whose schema part matches no schema (quoted).
    no_schema: Vec<String>,
    /// Patterns over an existing schema that match no table yet (quoted).
    no_table: Vec<String>,
}

async fn match_patterns(
    conn: &mut Conn,
    options: &crate::config::MysqlOptions,
) -> Result<PatternMatch, ConnectorError> {
    let schemas: Vec<String> = conn
        .query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME")
        .await
        .map_err(|e| classify("listing schemas", e))?;
    let schemas: Vec<String> = schemas
        .into_iter()
        .filter(|s| !SYSTEM.contains(&s.as_str()))
        .collect();
    let tables: Vec<(String, String)> = conn
        .query(
            // System schemas are left out in the query, not after it: the
            // server need not open their tables and views at all (a
            // MariaDB 10.11 server crashed once in this scan, see
            // docs/mysql.md).
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN \
             ('mysql', 'sys', 'information_schema', 'performance_schema', 'dcsync')",
        )
        .await
        .map_err(|e| classify("listing tables", e))?;
    let mut m = PatternMatch {
        schemas,
        no_schema: Vec::new(),
        no_table: Vec::new(),
    };
    for p in &options.tables {
        let schema_part = p.split_once('.').map(|(s, _)| s).unwrap_or(p);
        if !m
            .schemas
            .iter()
            .any(|s| crate::config::glob_match(schema_part, s))
        {
            m.no_schema.push(format!("{p:?}"));
        } else if !tables.iter().any(|(sch, t)| {
            options.matches_table(sch, t) && crate::config::glob_match(p, &format!("{sch}.{t}"))
        }) {
            m.no_table.push(format!("{p:?}"));
        }
    }
    Ok(m)
}

impl PatternMatch {
    fn schema_list(&self) -> String {
        if self.schemas.is_empty() {
            "none".to_string()
        } else {
            self.schemas.join(", ")
        }
    }

    /// One error per pattern matching no schema, one warning per pattern
    /// matching no table yet.
    fn findings(&self) -> Vec<Finding> {
        let mut out: Vec<Finding> = self
            .no_schema
            .iter()
            .map(|p| {
                Finding::error(format!(
                    "tables pattern {p} matches no schema on this server (its schemas: {}); \
                     fix the pattern in the topology or create the schema",
                    self.schema_list()
                ))
            })
            .collect();
        out.extend(self.no_table.iter().map(|p| {
            Finding::warning(format!(
                "tables pattern {p} matches no table yet: rows of tables created later are \
                 replicated from their first write; create the table (with a primary key) in \
                 every DC before writing to it, or fix the pattern"
            ))
        }));
        out
    }
}

/// Checks the store's `tables` patterns against the server, so that a typo
/// such as `shpo.*` does not make a store that looks healthy and replicates
/// nothing. A pattern whose schema part matches no schema on the server is
/// an error; one whose schema exists but that matches no table yet is
/// logged (tables may be created after the agent starts: their rows are
/// replicated from their first write). An empty list (every table) passes.
///
/// Errors: a Definite error naming each pattern that matches no schema and
/// the schemas the server has.
pub(crate) async fn check_tables(
    conn: &mut Conn,
    store: &str,
    options: &crate::config::MysqlOptions,
) -> Result<(), ConnectorError> {
    if options.tables.is_empty() {
        return Ok(());
    }
    let m = match_patterns(conn, options).await?;
    for p in &m.no_table {
        tracing::warn!(%store, pattern = %p, "tables pattern matches no table yet: rows of tables created later are replicated from their first write");
    }
    if m.no_schema.is_empty() {
        return Ok(());
    }
    Err(ConnectorError::Definite(format!(
        "store {store}: tables pattern(s) {} match no schema on this server (its schemas: {}); \
         fix the pattern in the topology or create the schema",
        m.no_schema.join(", "),
        m.schema_list()
    )))
}

/// One error per replicated table (matched by the store's `tables`) that
/// has no PRIMARY KEY: the source stops at its first row change (updates
/// and deletes cannot be applied idempotently without one).
async fn primary_key_findings(
    conn: &mut Conn,
    options: &crate::config::MysqlOptions,
) -> Result<Vec<Finding>, ConnectorError> {
    let tables: Vec<(String, String)> = conn
        .query(
            "SELECT t.TABLE_SCHEMA, t.TABLE_NAME FROM information_schema.TABLES t \
             WHERE t.TABLE_TYPE = 'BASE TABLE' AND t.TABLE_SCHEMA NOT IN \
             ('mysql', 'sys', 'information_schema', 'performance_schema', 'dcsync') \
             AND NOT EXISTS ( \
               SELECT 1 FROM information_schema.TABLE_CONSTRAINTS c \
               WHERE c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME \
               AND c.CONSTRAINT_TYPE = 'PRIMARY KEY') \
             ORDER BY t.TABLE_SCHEMA, t.TABLE_NAME",
        )
        .await
        .map_err(|e| classify("listing tables without a primary key", e))?;
    Ok(tables
        .into_iter()
        .filter(|(schema, table)| options.matches_table(schema, table))
        .map(|(schema, table)| {
            Finding::error(format!(
                "table {schema}.{table} has no PRIMARY KEY; dcsync needs one to apply updates \
                 and deletes idempotently (the source stops at its first change): \
                 ALTER TABLE {}.{} ADD PRIMARY KEY (...) in every DC, or exclude the table \
                 from the store's tables patterns",
                crate::quote_ident(&schema),
                crate::quote_ident(&table)
            ))
        })
        .collect())
}

/// How long [`inspect`] waits for the server to accept a connection.
const INSPECT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Name of the [`Limit`] MySQL reports: the largest packet (statement, row
/// event) the server accepts, in bytes.
pub const MAX_ALLOWED_PACKET: &str = "max_allowed_packet";

/// Inspects the server at `url` for `store` (`dcsync check --connect`):
/// every wrong binlog setting (`log_bin`, `binlog_format`,
/// `binlog_row_image`, `binlog_row_metadata`, MySQL's
/// `binlog_row_value_options`), every `tables` pattern that matches no
/// schema (error) or no table yet (warning), every replicated table without
/// a primary key (error); and `max_allowed_packet` as a [`Limit`] for the
/// cross-DC comparison.
///
/// Errors: [`ConnectorError::Definite`] for a bad URL or refused login,
/// [`ConnectorError::Transient`] when the server cannot be reached in 10 s;
/// every problem of a reachable server is a finding instead.
pub async fn inspect(url: String, store: StoreConfig) -> Result<Inspection, ConnectorError> {
    let options = crate::config::MysqlOptions::of(&store)?.clone();
    let opts = mysql_async::Opts::from_url(&url)
        .map_err(|e| ConnectorError::Definite(format!("bad mysql url: {e}")))?;
    let mut conn = tokio::time::timeout(INSPECT_CONNECT_TIMEOUT, Conn::new(opts))
        .await
        .map_err(|_| {
            ConnectorError::Transient(format!(
                "connect: no answer in {} s",
                INSPECT_CONNECT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| classify("connect", e))?;
    let mut out = Inspection::default();
    let settings = read_settings(&mut conn).await?;
    out.findings.extend(settings.findings());
    if !options.tables.is_empty() {
        out.findings
            .extend(match_patterns(&mut conn, &options).await?.findings());
    }
    out.findings
        .extend(primary_key_findings(&mut conn, &options).await?);
    if let Some(bytes) = settings.max_allowed_packet() {
        out.limits.insert(
            MAX_ALLOWED_PACKET.to_string(),
            Limit {
                bytes,
                fix: "SET GLOBAL max_allowed_packet={value} on this server, and \
                      max_allowed_packet={value} in its config file"
                    .to_string(),
            },
        );
    }
    let _ = conn.disconnect().await;
    Ok(out)
}
