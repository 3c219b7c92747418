//! Start-up checks against the server: binlog settings, the current
//! position, and whether a resume position is still retained.

use crate::error::classify;
use crate::position::BinlogPosition;
use dcsync_core::connector::ConnectorError;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

/// Server facts read at start-up.
pub(crate) struct ServerInfo {
    /// The server is MariaDB (else MySQL).
    pub mariadb: bool,
}

/// Checks the binlog settings dcsync needs; each failure is a Definite error
/// naming the setting and the fix.
pub(crate) async fn check_settings(conn: &mut Conn) -> Result<ServerInfo, ConnectorError> {
    let row: Option<Row> = conn
        .query_first(
            "SELECT @@version, @@log_bin, @@binlog_format, @@binlog_row_image, \
             @@binlog_row_metadata",
        )
        .await
        .map_err(|e| match e {
            mysql_async::Error::Server(ref s) if s.code == 1193 => {
                ConnectorError::Definite(format!(
                    "the server has no binlog_row_metadata setting ({}); dcsync needs MySQL \
                     8.0.1+ or MariaDB 10.5+ with binlog_row_metadata=FULL",
                    s.message
                ))
            }
            e => classify("reading server settings", e),
        })?;
    let row = row.ok_or_else(|| ConnectorError::Transient("no row for SELECT @@version".into()))?;
    let get = |i: usize| -> String {
        match row.as_ref(i) {
            Some(mysql_async::Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(mysql_async::Value::Int(v)) => v.to_string(),
            Some(mysql_async::Value::UInt(v)) => v.to_string(),
            _ => String::new(),
        }
    };
    let version = get(0);
    let log_bin = get(1);
    if !(log_bin == "1" || log_bin.eq_ignore_ascii_case("ON")) {
        return Err(ConnectorError::Definite(
            "the server's binary log is off (log_bin=OFF); start it with --log-bin and \
             binlog_format=ROW, binlog_row_image=FULL, binlog_row_metadata=FULL"
                .into(),
        ));
    }
    for (i, name, want) in [
        (2, "binlog_format", "ROW"),
        (3, "binlog_row_image", "FULL"),
        (4, "binlog_row_metadata", "FULL"),
    ] {
        let have = get(i);
        if !have.eq_ignore_ascii_case(want) {
            return Err(ConnectorError::Definite(format!(
                "the server has {name}={have}; dcsync needs {name}={want} \
                 (SET GLOBAL {name}='{want}' and in the server config)"
            )));
        }
    }
    let mariadb = version.to_ascii_lowercase().contains("mariadb");
    if !mariadb {
        let opts: Option<Option<String>> = conn
            .query_first("SELECT @@binlog_row_value_options")
            .await
            .map_err(|e| classify("reading binlog_row_value_options", e))?;
        if let Some(Some(o)) = opts {
            if o.to_ascii_uppercase().contains("PARTIAL_JSON") {
                return Err(ConnectorError::Definite(format!(
                    "the server has binlog_row_value_options={o}; dcsync needs full JSON \
                     images: SET GLOBAL binlog_row_value_options=''"
                )));
            }
        }
    }
    Ok(ServerInfo { mariadb })
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
        (Some(file), Some(pos)) => Ok(BinlogPosition {
            file,
            pos,
            gtid: None,
        }),
        _ => Err(ConnectorError::Transient(
            "unexpected SHOW MASTER STATUS row".into(),
        )),
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
    const SYSTEM: [&str; 5] = [
        "mysql",
        "sys",
        "information_schema",
        "performance_schema",
        "dcsync",
    ];
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
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_TYPE = 'BASE TABLE'",
        )
        .await
        .map_err(|e| classify("listing tables", e))?;
    let mut no_schema = Vec::new();
    for p in &options.tables {
        let schema_part = p.split_once('.').map(|(s, _)| s).unwrap_or(p);
        if !schemas
            .iter()
            .any(|s| crate::config::glob_match(schema_part, s))
        {
            no_schema.push(format!("{p:?}"));
        } else if !tables.iter().any(|(sch, t)| {
            options.matches_table(sch, t) && crate::config::glob_match(p, &format!("{sch}.{t}"))
        }) {
            tracing::warn!(%store, pattern = %p, "tables pattern matches no table yet: rows of tables created later are replicated from their first write");
        }
    }
    if no_schema.is_empty() {
        return Ok(());
    }
    Err(ConnectorError::Definite(format!(
        "store {store}: tables pattern(s) {} match no schema on this server (its schemas: {}); \
         fix the pattern in the topology or create the schema",
        no_schema.join(", "),
        if schemas.is_empty() {
            "none".to_string()
        } else {
            schemas.join(", ")
        }
    )))
}
