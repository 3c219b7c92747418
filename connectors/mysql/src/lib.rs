//! MySQL 8 / MariaDB 10.5+ connector for dcsync: a binlog tailing source
//! ([`MysqlSource`]) and a transactional sink ([`MysqlSink`]), built by the
//! factory [`CONNECTOR`] (kind `"mysql"`, alias `"mariadb"`) from a store's
//! options ([`MysqlOptions`], the keys of [`config`]).
//!
//! # Progress tracking
//! The source groups ROWS events into the source transaction they committed
//! in and reports it only at its commit (XID event, or a `COMMIT` QUERY
//! event for non-transactional engines), with the position *after* the
//! commit event: binlog file + byte offset and, on MariaDB, the server's
//! GTID state after the transaction (the last `domain-server-seq` of every
//! replication domain; MySQL: the transaction's GTID, for operators). A
//! position therefore always lies on a transaction boundary. Transactions
//! with nothing to replicate (filtered tables, DDL) advance the position with
//! throttled `Progress` events.
//!
//! # Resumption
//! On first start the source begins at the server's current position
//! (`SHOW MASTER STATUS`, with the GTID state there on MariaDB; existing
//! rows are not copied). On restart the agent hands back the last durable
//! position. On MariaDB, a position with a GTID state resumes by GTID
//! (`@slave_connect_state`), which works on any server of the DC's
//! replication topology: after a primary switch (a VIP moved to a promoted
//! replica) the source continues on the new primary right after the last
//! transaction it journaled, and reports the new server's file + offset.
//! Otherwise (MySQL 8, positions stored before GTID resumption) the source
//! checks the file is still listed by `SHOW BINARY LOGS` and resumes at
//! that file + offset, which is valid only on the same server. A purged
//! file, or a GTID state the server does not hold (error 1236), is a
//! [`ConnectorError::Definite`] error naming it: there is no silent
//! re-snapshot and no start elsewhere. See `source_start.rs`.
//!
//! # Echo and idempotency
//! The sink writes the apply marker row `dcsync.apply_marker(origin, store,
//! slot, seq, hlc)` inside the same transaction as the data. The source
//! attributes a whole transaction that contains a marker row to that origin
//! (`SourceEvent::Echo`), and the sink skips transactions at or below the
//! marker's seq.
//!
//! # Error handling
//! Errors are split by what to do about them: I/O, lost connections,
//! deadlocks (1213) and lock wait timeouts (1205) are
//! [`ConnectorError::Transient`] (the agent retries / restarts from the last
//! durable position); wrong server settings, purged binlogs, tables without
//! a primary key and schema errors are [`ConnectorError::Definite`] with a
//! message naming the setting or table. Nothing from the network is
//! `unwrap`ped. URLs are logged only through
//! [`dcsync_core::topology::redact_url`].
//!
//! # Verify
//! [`MysqlVerify`] compares tables across DCs in chunks of primary keys
//! for `dcsync verify` (see [`verify`]).
//!
//! See `docs/mysql.md` for server settings, the type mapping and limits.
//!
//! [`ConnectorError::Definite`]: dcsync_core::connector::ConnectorError::Definite
//! [`ConnectorError::Transient`]: dcsync_core::connector::ConnectorError::Transient

pub mod bootstrap;
pub mod config;
pub mod error;
pub mod gtid;
pub mod lease;
pub mod plan;
pub mod position;
mod server;
pub mod sink;
pub mod source;
pub mod sqltext;
mod statement;
pub mod units;
pub mod value;
pub mod verify;

pub use config::{MysqlOptions, SkipSet, DEFAULT_APPLY_PARALLEL, MAX_APPLY_PARALLEL};
pub use gtid::{Gtid, GtidState};
pub use position::BinlogPosition;
pub use server::{binlog_retention, inspect, MAX_ALLOWED_PACKET};
pub use sink::{ensure_marker_table, quote_ident, MysqlSink, MARKER_SLOTS};
pub use source::{MysqlSource, PROGRESS_INTERVAL};
pub use units::UnitRules;
pub use verify::MysqlVerify;

/// Schema of the apply marker table.
pub const MARKER_SCHEMA: &str = "dcsync";
/// Name of the apply marker table (`dcsync.apply_marker`).
pub const MARKER_TABLE: &str = "apply_marker";

use dcsync_core::connector::{
    ApplyGroup, BoxFuture, Connector, ConnectorError, DynSink, Inspection, Position, RouteQuery,
    Source, SourceContext,
};
use dcsync_core::topology::{StoreConfig, StoreKeys, StoreOptions};
use std::time::Duration;

/// The MySQL/MariaDB connector factory, listed in the agent's registry.
pub static CONNECTOR: MysqlConnector = MysqlConnector;

/// Builds MySQL/MariaDB sources and sinks (see [`CONNECTOR`]).
#[derive(Debug)]
pub struct MysqlConnector;

impl Connector for MysqlConnector {
    fn bootstrap(
        &self,
        from_url: String,
        to_url: String,
        store: StoreConfig,
        from: dcsync_core::connector::BootstrapFrom,
    ) -> Option<BoxFuture<'static, Result<dcsync_core::connector::Bootstrapped, ConnectorError>>>
    {
        Some(Box::pin(async move {
            bootstrap::bootstrap(&from_url, &to_url, &store, &from).await
        }))
    }

    fn lease(
        &self,
        url: String,
        req: dcsync_core::connector::LeaseRequest,
    ) -> Option<BoxFuture<'static, Result<dcsync_core::connector::Lease, ConnectorError>>> {
        Some(Box::pin(async move { lease::lease(&url, &req).await }))
    }

    fn parse_position(&self, display: &str) -> Result<Position, ConnectorError> {
        Ok(position::BinlogPosition::parse_display(display)?.to_position())
    }

    /// `backup`: `file:offset`, a MariaDB GTID list, both, or mariabackup's
    /// `xtrabackup_binlog_info` line ([`BinlogPosition::parse_backup`]).
    fn position_at_or_before(&self, at: &str, backup: &str) -> Result<bool, ConnectorError> {
        BinlogPosition::parse_display(at)?.held_by(&BinlogPosition::parse_backup(backup)?)
    }

    fn kind(&self) -> &'static str {
        "mysql"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["mariadb"]
    }

    fn url_schemes(&self) -> &'static [&'static str] {
        &["mysql"]
    }

    /// `owner` (the default: `lww` for rows without a unit), `lww` or
    /// `none` (docs/conflicts.md).
    fn conflict_policies(&self) -> &'static [dcsync_core::conflict::ConflictPolicy] {
        &[
            dcsync_core::conflict::ConflictPolicy::Owner,
            dcsync_core::conflict::ConflictPolicy::Lww,
            dcsync_core::conflict::ConflictPolicy::None,
        ]
    }

    fn default_apply_group(&self) -> ApplyGroup {
        // A MySQL group is one commit per partition: larger is cheaper.
        // (A Redis group, by contrast, blocks its server while it runs.)
        ApplyGroup {
            txns: 2048,
            bytes: 16 << 20,
        }
    }

    fn parse_options(&self, keys: &mut StoreKeys<'_>) -> StoreOptions {
        config::parse(keys)
    }

    fn run_source(
        &self,
        url: String,
        cx: SourceContext,
    ) -> BoxFuture<'static, Result<(), ConnectorError>> {
        Box::pin(MysqlSource::new(url).run(cx))
    }

    fn connect_sink(
        &self,
        url: String,
        store: StoreConfig,
    ) -> BoxFuture<'static, Result<Box<dyn DynSink>, ConnectorError>> {
        Box::pin(async move {
            let sink: Box<dyn DynSink> = Box::new(MysqlSink::connect(&url, &store).await?);
            Ok(sink)
        })
    }

    fn source_retention(
        &self,
        url: String,
    ) -> Option<BoxFuture<'static, Result<Option<Duration>, ConnectorError>>> {
        Some(Box::pin(async move { binlog_retention(&url).await }))
    }

    fn inspect(
        &self,
        url: String,
        store: StoreConfig,
    ) -> Option<BoxFuture<'static, Result<Inspection, ConnectorError>>> {
        Some(Box::pin(inspect(url, store)))
    }

    fn verify(
        &self,
        url: String,
        store: StoreConfig,
        opts: dcsync_core::verify::VerifyOptions,
    ) -> Option<BoxFuture<'static, Result<Box<dyn dcsync_core::verify::VerifyScan>, ConnectorError>>>
    {
        Some(Box::pin(async move {
            let scan: Box<dyn dcsync_core::verify::VerifyScan> =
                Box::new(MysqlVerify::connect(&url, &store, opts).await?);
            Ok(scan)
        }))
    }

    fn route(
        &self,
        q: RouteQuery<'_>,
    ) -> Option<Result<dcsync_core::unit::Routed, ConnectorError>> {
        Some(MysqlOptions::of(q.store).and_then(|o| {
            UnitRules::new(o, q.units_count).route(&q.store.name, o, q.table, q.value)
        }))
    }
}
