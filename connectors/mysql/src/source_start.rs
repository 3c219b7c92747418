//! Starting the binlog dump: connect, check the server, choose where to
//! start and how, and request the stream.
//!
//! - **First start** (no resume position): at `SHOW MASTER STATUS`; on
//!   MariaDB with the GTID state there (`BINLOG_GTID_POS(file, offset)`),
//!   so even the first position the agent journals can be resumed by GTID.
//! - **Resume by GTID** (MariaDB, the position has a GTID state):
//!   `@slave_connect_state` = the state, `@slave_gtid_strict_mode=1`, and
//!   `COM_BINLOG_DUMP` with an empty file name, which MariaDB ignores in
//!   favour of the state. The server sends a ROTATE to the file that holds
//!   the transaction after the state, so the file + offset the source
//!   reports from then on are this server's, even if the position was taken
//!   on another one (the DC's previous primary). A state the server's
//!   binlogs do not hold (purged, or never written there) is answered with
//!   error 1236 on the first read: a Definite error naming the state
//!   ([`stream_error`]); the source never starts elsewhere.
//! - **Resume by file + offset** (MySQL, or a position without a GTID
//!   state, as stored by releases before GTID resumption): the file must
//!   still be listed by `SHOW BINARY LOGS`; on MariaDB the GTID state at
//!   that offset is read so that the positions reported from then on carry
//!   it.

use super::HEARTBEAT_PERIOD;
use crate::config::MysqlOptions;
use crate::error::classify;
use crate::gtid::GtidState;
use crate::position::BinlogPosition;
use crate::server::{
    check_retained, check_settings, check_tables, current_position, gtid_at, gtid_binlog_pos,
};
use dcsync_core::connector::{ConnectorError, SourceContext};
use dcsync_core::topology::redact_url;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn, Opts};

/// MariaDB's ER_MASTER_FATAL_ERROR_READING_BINLOG, which it also answers a
/// GTID state it cannot start from with.
const ER_MASTER_FATAL_ERROR_READING_BINLOG: u16 = 1236;

/// A dump that was requested.
pub(super) struct Opened {
    pub(super) stream: BinlogStream,
    /// Where the dump starts. Resumed by GTID: the stored position (whose
    /// file and offset may be another server's; the source takes this
    /// server's from the ROTATE it is sent first).
    pub(super) start: BinlogPosition,
    /// The GTID state the dump was requested from, when resumed by GTID.
    pub(super) by_gtid: Option<GtidState>,
}

/// Connects to `url`, checks the settings and the store's tables, and
/// requests the binlog dump from where `cx.resume` says (see the module
/// docs), registering as replica `server_id`.
///
/// Errors: Definite for a bad URL, wrong settings, a purged resume file or
/// an unparsable GTID state; Transient when the server cannot be reached.
pub(super) async fn open(
    url: &str,
    server_id: u32,
    cx: &SourceContext,
    options: &MysqlOptions,
) -> Result<Opened, ConnectorError> {
    let opts = Opts::from_url(url)
        .map_err(|e| ConnectorError::Definite(format!("bad store URL {}: {e}", redact_url(url))))?;
    let mut conn = Conn::new(opts)
        .await
        .map_err(|e| classify(&format!("connecting to {}", redact_url(url)), e))?;
    let info = check_settings(&mut conn).await?;
    check_tables(&mut conn, &cx.store.name, options).await?;
    let (start, by_gtid) = match &cx.resume {
        Some(p) => {
            let bp = BinlogPosition::from_position(p)?;
            if info.mariadb && !bp.gtid_state.is_empty() {
                check_gtid_held(&mut conn, &bp.gtid_state).await?;
                let state = bp.gtid_state.clone();
                (bp, Some(state))
            } else {
                check_retained(&mut conn, &bp).await?;
                let bp = seed_gtid_state(&mut conn, info.mariadb, bp).await?;
                (bp, None)
            }
        }
        None => {
            let bp = current_position(&mut conn).await?;
            (seed_gtid_state(&mut conn, info.mariadb, bp).await?, None)
        }
    };
    let how = match (&by_gtid, &cx.resume) {
        (Some(_), _) => "gtid",
        (None, Some(_)) => "file+offset",
        (None, None) => "binlog end (first start)",
    };
    tracing::info!(
        server = %redact_url(url),
        start = %start,
        resume = how,
        mariadb = info.mariadb,
        server_id,
        "mysql source: starting binlog dump"
    );
    if info.mariadb {
        // 4 = MARIA_SLAVE_CAPABILITY_GTID: send GTID events as such.
        conn.query_drop("SET @mariadb_slave_capability=4")
            .await
            .map_err(|e| classify("SET @mariadb_slave_capability", e))?;
    }
    if let Some(state) = &by_gtid {
        // The state is digits, dashes and commas (parsed); strict mode
        // makes the server refuse a state it does not hold instead of
        // guessing a start.
        conn.query_drop(format!(
            "SET @slave_connect_state='{state}', @slave_gtid_strict_mode=1, \
             @slave_gtid_ignore_duplicates=0"
        ))
        .await
        .map_err(|e| classify("SET @slave_connect_state", e))?;
        tracing::info!(
            server = %redact_url(url),
            gtid = %state,
            stored_file_offset = %format!("{}:{}", start.file, start.pos),
            "mysql source: resuming by GTID (file and offset are taken from the server)"
        );
    }
    let period_ns = HEARTBEAT_PERIOD.as_nanos();
    conn.query_drop(format!(
        "SET @master_heartbeat_period={period_ns}, @source_heartbeat_period={period_ns}"
    ))
    .await
    .map_err(|e| classify("SET @master_heartbeat_period", e))?;
    let req = match by_gtid {
        // An empty file name: MariaDB starts from @slave_connect_state.
        Some(_) => BinlogStreamRequest::new(server_id),
        None => BinlogStreamRequest::new(server_id)
            .with_filename(start.file.as_bytes())
            .with_pos(start.pos),
    };
    let stream = conn
        .get_binlog_stream(req)
        .await
        .map_err(|e| classify("starting the binlog dump", e))?;
    Ok(Opened {
        stream,
        start,
        by_gtid,
    })
}

/// What to do when the server cannot start at a GTID state.
const GTID_FIX: &str = "dcsync does not start anywhere else. Fix: point the store's URL at a \
     server that has every transaction up to that state (compare its @@gtid_binlog_pos); if none \
     has them, the transactions after it are lost to dcsync and this store needs a re-bootstrap";

/// Fails with a Definite error if the server's binlog ends before `state`
/// in some domain (or lacks the domain): it never had those transactions.
/// (MariaDB itself would start such a dump without the missing domain.)
/// A state within the server's range that its binlogs do not hold is
/// refused by the server itself ([`stream_error`]).
async fn check_gtid_held(conn: &mut Conn, state: &GtidState) -> Result<(), ConnectorError> {
    let end = gtid_binlog_pos(conn).await?;
    let missing: Vec<String> = state
        .iter()
        .filter(|g| end.get(g.domain).is_none_or(|e| e.seq < g.seq))
        .map(|g| g.to_string())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(ConnectorError::Definite(format!(
        "cannot resume the binlog dump at GTID state {state}: the server's binlog ends at \
         GTID state {end}, before {}: this server never had those transactions (a new \
         primary that had not caught up with the old one, or a server of another replication \
         topology). {GTID_FIX}",
        missing.join(", ")
    )))
}

/// `bp` with the MariaDB GTID state at its file and offset, if the server
/// has one there; unchanged on MySQL.
async fn seed_gtid_state(
    conn: &mut Conn,
    mariadb: bool,
    mut bp: BinlogPosition,
) -> Result<BinlogPosition, ConnectorError> {
    if mariadb {
        bp.gtid_state = gtid_at(conn, &bp).await?;
        // MariaDB positions carry the state, not the last GTID.
        bp.gtid = None;
    }
    Ok(bp)
}

/// An error read from the binlog stream. Resumed by GTID, the server's
/// 1236 means it cannot start at the state: a Definite error naming it.
pub(super) fn stream_error(e: mysql_async::Error, by_gtid: Option<&GtidState>) -> ConnectorError {
    match (e, by_gtid) {
        (mysql_async::Error::Server(s), Some(state))
            if s.code == ER_MASTER_FATAL_ERROR_READING_BINLOG =>
        {
            ConnectorError::Definite(format!(
                "cannot resume the binlog dump at GTID state {state}: the server answered \
                 {} ({}): its binlogs do not hold that state (purged, or this server's history \
                 differs from the old primary's: a GTID of that state is not in it). {GTID_FIX}",
                s.code, s.message
            ))
        }
        (e, _) => classify("reading the binlog stream", e),
    }
}
