//! The contract between the agent and a store connector.
//!
//! A connector has two halves (see docs/architecture.md):
//!
//! - a **source** ([`Source`]) tails the local store and sends
//!   [`SourceEvent`]s to the agent. The agent journals each local transaction
//!   together with the position after it in one durable commit, and publishes
//!   the durable position back on [`SourceContext::durable`]; a source that
//!   acknowledges to its server (Redis `REPLCONF ACK`) acknowledges only that.
//!   On restart the agent passes the last durable position as
//!   [`SourceContext::resume`], so nothing is lost and nothing is read twice.
//! - a **sink** ([`Sink`]) applies one origin's transactions in origin-seq
//!   order, writing the apply marker (origin, store, seq) in the same atomic
//!   unit as the data. The marker is the echo filter for the source half and
//!   the idempotency checkpoint: transactions at or below it are skipped.
//!
//! Errors are split by what to do about them ([`ConnectorError`]): transient
//! ones are retried with backoff, definite ones are surfaced to the operator.
//!
//! # Registration
//! Each store kind is one [`Connector`]: a factory that names the kind,
//! validates the kind's own keys of a `[[store]]` table (pure, no I/O) and
//! builds running sources and sinks. The agent lists its connectors in one
//! [`Registry`]; the topology loader and the agent look a store's kind up
//! there and never match on a kind themselves (see `docs/architecture.md`,
//! "Adding a connector").

use crate::change::{Change, Transaction};
use crate::topology::{StoreConfig, StoreKeys, StoreOptions, Units};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// A boxed future that can move between threads: what the object-safe
/// connector methods ([`Connector`], [`DynSink`]) return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An opaque, connector-defined source position (binlog file+offset and GTID,
/// Redis replication id and offset), plus a human-readable form for logs and
/// status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// Connector-defined encoding; only the connector that wrote it reads it.
    pub bytes: Vec<u8>,
    /// Human-readable form (`mysql-bin.000003:4711 gtid=0-1-42`).
    pub display: String,
}

/// What a source reports to the agent, in source order.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceEvent {
    /// A transaction committed locally by an application: journal it.
    Local {
        /// Its changes, in source order; never empty.
        changes: Vec<Change>,
        /// Source commit time, ms since the Unix epoch (0 if unknown).
        commit_ts_ms: u64,
        /// Position just after this transaction.
        position: Position,
    },
    /// A part of a local transaction that is still being read: a large
    /// transaction is journaled in parts so that no agent holds it whole
    /// (docs/architecture.md, "Transactions of any size"). Its changes come
    /// before those of the next `Fragment` or the closing
    /// [`SourceEvent::Local`], which carries the last changes, the commit
    /// time and the position. The position does not move with a fragment:
    /// after a restart the source reads the whole transaction again (the
    /// agent discards the parts of a transaction that was never closed).
    /// A source sends at most [`MAX_FRAGMENTS_IN_FLIGHT`] fragments beyond
    /// [`SourceContext::fragments_journaled`].
    Fragment {
        /// The next changes of the transaction, in source order; never
        /// empty.
        changes: Vec<Change>,
        /// Source time of these changes (ms since the Unix epoch, 0 if
        /// unknown); the HLC of the part derives from it.
        commit_ts_ms: u64,
    },
    /// A transaction written by dcsync's own sink (it carried an apply
    /// marker): not shipped again (no echo); only the position advances.
    Echo {
        /// Origin DC named by the marker.
        origin: String,
        /// Origin seq named by the marker.
        seq: u64,
        /// HLC the marker carries (the greatest of the applied group;
        /// `Hlc(0)` if the marker does not tell): the agent's stamps of
        /// later local transactions of this store are above it, so a local
        /// write is always versioned after every value applied before it
        /// (docs/architecture.md, "Conflicts").
        hlc: crate::Hlc,
        /// Position just after this transaction.
        position: Position,
    },
    /// The position advanced past something that is not a replicated change
    /// (DDL, a filtered table, a heartbeat).
    Progress {
        /// The new position.
        position: Position,
    },
    /// Something the store holds was deliberately not shipped (DDL, a
    /// statement-format write or a table without a primary key the topology
    /// allows skipping, a refused `FLUSHALL`). Informational only: it does
    /// not move the position (a `Progress` or the enclosing transaction's
    /// event does), so a source restarted before that position reads, and
    /// reports, it again. The agent counts it per store and `what`
    /// (`dcsync_source_skipped_total`) and shows the last one in the status.
    Skipped {
        /// What kind of thing, a short stable snake_case name used as a
        /// metric label (bounded): `ddl`, `statement_dml`, `no_primary_key`,
        /// `flush`.
        what: &'static str,
        /// How many of them (statements, rows, commands); at least 1.
        count: u64,
        /// What it was, for the operator: a statement truncated to a few
        /// hundred characters (credentials left out), a table name.
        detail: String,
        /// Where, in the source's human-readable position form
        /// (`mysql-bin.000003:4711 gtid=0-1-42`).
        position: String,
    },
    /// The source (re)connected with a resume position and told the store
    /// where to continue (a Redis `PSYNC <replid> <offset+1>`). Informational
    /// only: it moves no position. The agent counts it in the status
    /// (`resyncs_continued` / `resyncs_full`, and the last one) and counts
    /// full ones in `dcsync_source_full_resyncs_total`. A first start (no
    /// resume position) is not a resync and sends none.
    Resync {
        /// `true`: the store could not continue from the position and the
        /// source re-reads the whole dataset (a full resync: Redis
        /// `+FULLRESYNC`); `false`: it continued from the position (Redis
        /// `+CONTINUE`).
        full: bool,
        /// For the operator, one line: which server, how, and why when full
        /// (`continued with PSYNC on the promoted primary (replid2) at
        /// 127.0.0.1:6380, new replid 8f1c…`). No credentials.
        detail: String,
    },
    /// Progress of an initial copy (the MySQL initial snapshot), shown in
    /// the status; informational: it does not move the position.
    Copying {
        /// The table (collection) being copied.
        table: String,
        /// Tables finished.
        tables_done: u64,
        /// Tables to copy in all.
        tables: u64,
        /// Rows (items) shipped so far.
        rows: u64,
        /// The store's estimate of all rows to copy (0: unknown).
        rows_estimate: u64,
        /// The copy is complete.
        done: bool,
    },
}

/// The commit time (ms since the Unix epoch) of a [`SourceEvent::Local`]
/// holding rows an initial snapshot copied rather than a write: older than
/// any write, so a snapshot copy is stamped before every live change and
/// the conflict rules (`lww`) let every write made anywhere win over it,
/// while two DCs' copies of the same row are still ordered (HLC, then DC).
/// Not a commit time for lag figures.
pub const SNAPSHOT_COMMIT_MS: u64 = 1;

/// Most [`SourceEvent::Fragment`]s a source sends ahead of
/// [`SourceContext::fragments_journaled`].
pub const MAX_FRAGMENTS_IN_FLIGHT: u64 = 1;

/// Everything a running source needs from the agent.
#[derive(Debug)]
pub struct SourceContext {
    /// This agent's DC id.
    pub dc: String,
    /// The store's configuration.
    pub store: StoreConfig,
    /// The unit routing table (for the unit count).
    pub units: Units,
    /// Where to resume: the last durably journaled position, `None` on the very
    /// first start.
    pub resume: Option<Position>,
    /// Where to send events; bounded: a full channel means wait, never drop.
    pub events: mpsc::Sender<SourceEvent>,
    /// The latest position that is durable in the journal.
    pub durable: watch::Receiver<Option<Position>>,
    /// How many [`SourceEvent::Fragment`]s of this run the agent has
    /// journaled; a source waits for it to come within
    /// [`MAX_FRAGMENTS_IN_FLIGHT`] of what it sent, which bounds the memory a
    /// large transaction takes to that many fragments.
    pub fragments_journaled: watch::Receiver<u64>,
    /// Becomes `true` when the agent shuts down.
    pub shutdown: watch::Receiver<bool>,
}

/// Errors of a connector, split by what the agent does about them.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// I/O, connection reset, server restarting, lock wait: retried with
    /// capped exponential backoff.
    #[error("transient: {0}")]
    Transient(String),
    /// Wrong server settings, purged resume position, unsupported schema or
    /// command: needs an operator; never retried blindly.
    #[error("{0}")]
    Definite(String),
}

impl ConnectorError {
    /// Whether a retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ConnectorError::Transient(_))
    }
}

/// The tailing half of a connector.
pub trait Source: Send + 'static {
    /// Tails the store until `cx.shutdown` becomes true or an error occurs.
    /// Returns `Ok(())` on shutdown. The agent restarts a source that failed
    /// with a transient error from the last durable position.
    fn run(self, cx: SourceContext) -> impl Future<Output = Result<(), ConnectorError>> + Send;
}

/// The applying half of a connector.
pub trait Sink: Send + 'static {
    /// Highest origin seq of `origin` already applied to this store (read from
    /// the apply marker); 0 if none.
    fn applied_seq(
        &mut self,
        origin: &str,
    ) -> impl Future<Output = Result<u64, ConnectorError>> + Send;

    /// Applies `txs`, all from `origin`, in ascending seq order. Transactions
    /// at or below the apply marker are skipped (idempotent apply). Consecutive
    /// transactions may be grouped into one target commit; each group is
    /// all-or-nothing and carries the marker of its last transaction.
    /// Returns the highest seq now applied.
    fn apply(
        &mut self,
        origin: &str,
        txs: &[Transaction],
    ) -> impl Future<Output = Result<u64, ConnectorError>> + Send;

    /// What the apply marker of `origin` says: the applied seq (as
    /// [`Sink::applied_seq`]), and the origin journal's epoch and the
    /// origin's source position recorded with it. The default knows only
    /// the seq (epoch 0, no position).
    fn applied_mark(
        &mut self,
        origin: &str,
    ) -> impl Future<Output = Result<AppliedMark, ConnectorError>> + Send {
        async move {
            Ok(AppliedMark {
                seq: self.applied_seq(origin).await?,
                ..AppliedMark::default()
            })
        }
    }

    /// Gives the sink the store's version index and conflict log, which a
    /// store with a conflict policy other than `none` needs before its
    /// first [`Sink::apply`] (the agent calls it right after connecting).
    /// Ignored by default.
    fn set_versions(&mut self, versions: std::sync::Arc<dyn crate::conflict::Versions>) {
        let _ = versions;
    }
}

/// [`Sink`] in object-safe form, so the agent can hold the sinks of every
/// store kind as `Box<dyn DynSink>`. Every [`Sink`] is a `DynSink`.
pub trait DynSink: Send + 'static {
    /// See [`Sink::applied_seq`].
    fn applied_seq<'a>(&'a mut self, origin: &'a str)
        -> BoxFuture<'a, Result<u64, ConnectorError>>;

    /// See [`Sink::apply`].
    fn apply<'a>(
        &'a mut self,
        origin: &'a str,
        txs: &'a [Transaction],
    ) -> BoxFuture<'a, Result<u64, ConnectorError>>;

    /// See [`Sink::applied_mark`].
    fn applied_mark<'a>(
        &'a mut self,
        origin: &'a str,
    ) -> BoxFuture<'a, Result<AppliedMark, ConnectorError>>;

    /// See [`Sink::set_versions`].
    fn set_versions(&mut self, versions: std::sync::Arc<dyn crate::conflict::Versions>);
}

impl<S: Sink> DynSink for S {
    fn applied_seq<'a>(
        &'a mut self,
        origin: &'a str,
    ) -> BoxFuture<'a, Result<u64, ConnectorError>> {
        Box::pin(Sink::applied_seq(self, origin))
    }

    fn apply<'a>(
        &'a mut self,
        origin: &'a str,
        txs: &'a [Transaction],
    ) -> BoxFuture<'a, Result<u64, ConnectorError>> {
        Box::pin(Sink::apply(self, origin, txs))
    }

    fn set_versions(&mut self, versions: std::sync::Arc<dyn crate::conflict::Versions>) {
        Sink::set_versions(self, versions)
    }

    fn applied_mark<'a>(
        &'a mut self,
        origin: &'a str,
    ) -> BoxFuture<'a, Result<AppliedMark, ConnectorError>> {
        Box::pin(Sink::applied_mark(self, origin))
    }
}

/// The DC a bootstrap copies from ([`Connector::bootstrap`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapFrom {
    /// Its DC id.
    pub dc: String,
    /// A seq of its own stream its journal had reached before the copy
    /// started (its agent's status).
    pub seq: u64,
    /// Its journal's epoch.
    pub epoch: u64,
    /// The source position after `seq` in its journal, recorded with the
    /// new DC's marker of it (empty when not known).
    pub position: String,
    /// DC ids whose apply markers are not copied (the new DC itself).
    pub skip_origins: Vec<String>,
    /// The new DC's store was already restored from a backup of this DC's
    /// store (`dcsync bootstrap --backup-position`), `seq` being the last
    /// of its transactions the backup holds: nothing is copied; only this
    /// DC's marker is written, and the other origins' markers are those
    /// the restore brought (the backup's `dcsync` schema).
    pub restored: bool,
}

/// What a bootstrap did ([`Connector::bootstrap`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrapped {
    /// Tables (collections) copied.
    pub tables: u64,
    /// Rows (items) copied.
    pub rows: u64,
    /// Apply markers written: `(origin, applied seq)`.
    pub markers: Vec<(String, u64)>,
    /// The new DC's source position after the copy.
    pub position: Position,
}

/// What [`Connector::lease`] asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    /// The DC whose active agent the lease names.
    pub dc: String,
    /// Who asks: unique per agent process (`host:pid:random`).
    pub holder: String,
    /// How long the lease lasts from now if granted, ms.
    pub ttl_ms: u64,
}

/// The lease after a [`Connector::lease`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Who holds it.
    pub holder: String,
    /// For how much longer, ms (0 if expired).
    pub remaining_ms: u64,
}

/// An apply marker of one origin stream as a sink reads it
/// ([`Sink::applied_mark`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppliedMark {
    /// Highest origin seq applied (0: none).
    pub seq: u64,
    /// Epoch of the origin journal that assigned `seq`
    /// ([`Transaction::epoch`]); 0 when the marker does not tell.
    pub epoch: u64,
    /// The origin's source position after `seq`, in its human-readable form
    /// ([`Transaction::position`]); empty when the marker does not tell.
    pub position: String,
}

/// Default bounds of one sink commit group of a store kind
/// (`apply_group_txns` / `apply_group_bytes` when the topology omits them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyGroup {
    /// Most source transactions per target commit (at least 1).
    pub txns: usize,
    /// Most payload bytes per target commit (at least 1).
    pub bytes: usize,
}

/// How serious a [`Finding`] of [`Connector::inspect`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Works, but an operator should look (a pattern matching no table yet,
    /// a Redis backlog that makes restarts under load full resyncs).
    Warning,
    /// dcsync cannot replicate this store correctly as it is (a wrong binlog
    /// setting, a table without a primary key, a pattern matching nothing).
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One problem a connector found on a live store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong and how to fix it, naming the setting, table or pattern
    /// (the caller adds the store, DC and redacted URL).
    pub message: String,
}

impl Finding {
    /// An [`Severity::Error`] finding.
    pub fn error(message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Error,
            message: message.into(),
        }
    }

    /// A [`Severity::Warning`] finding.
    pub fn warning(message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Warning,
            message: message.into(),
        }
    }
}

/// A size limit of a live store that every DC of the same logical store
/// should share: a change accepted by one DC's store must fit into every
/// other DC's (MySQL `max_allowed_packet`). The caller compares limits of
/// the same name across the DCs of one store: a DC whose value is below
/// another DC's is an error naming both values and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// The value, in bytes.
    pub bytes: u64,
    /// How to raise it on this store, with `{value}` standing for the value
    /// to set (`"SET GLOBAL max_allowed_packet={value}"`).
    pub fix: String,
}

/// What [`Connector::inspect`] found on one DC's store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspection {
    /// Every problem found, errors and warnings (never only the first).
    pub findings: Vec<Finding>,
    /// Limits to compare across DCs, by a name the connector chooses
    /// (`"max_allowed_packet"`); see [`Limit`].
    pub limits: BTreeMap<String, Limit>,
}

/// Compares the [`Limit`]s of one store across its DCs (`by_dc`: DC id →
/// that DC's limits): for every limit name, each DC whose value is below the
/// largest value another DC has gets an [`Severity::Error`] finding naming
/// the limit, both values, the DC with the larger one and the fix (every DC
/// is a source for the others, so a change that DC accepts may not fit
/// here). Returns `(dc, finding)` pairs in DC then limit-name order.
pub fn compare_limits(by_dc: &BTreeMap<String, BTreeMap<String, Limit>>) -> Vec<(String, Finding)> {
    let mut out = Vec::new();
    for (dc, limits) in by_dc {
        for (name, limit) in limits {
            let largest = by_dc
                .iter()
                .filter(|(other, _)| *other != dc)
                .filter_map(|(other, l)| l.get(name).map(|l| (other, l.bytes)))
                .max_by_key(|(_, bytes)| *bytes);
            if let Some((other, bytes)) = largest {
                if bytes > limit.bytes {
                    out.push((
                        dc.clone(),
                        Finding::error(format!(
                            "{name} is {} bytes here but {bytes} in dc {other}: a change dc \
                             {other} accepts may not fit when applied here; fix: {}",
                            limit.bytes,
                            limit.fix.replace("{value}", &bytes.to_string())
                        )),
                    ));
                }
            }
        }
    }
    out
}

/// The factory of one store kind: implemented once per connector crate and
/// exposed as a `static`, listed in the agent's [`Registry`].
///
/// Object-safe: the registry holds `&'static dyn Connector`. Futures are
/// `'static` (they own their arguments) so the agent can spawn them.
pub trait Connector: Send + Sync + 'static {
    /// The kind name written in `kind = "..."` (`"mysql"`); also the name
    /// stores of this kind carry in [`StoreConfig::kind`].
    fn kind(&self) -> &'static str;

    /// Other names accepted for the kind (`"mariadb"`); none by default.
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }

    /// URL schemes accepted in a store's `url` table, without `://`
    /// (`["mysql"]`); a URL with another scheme is a topology error.
    fn url_schemes(&self) -> &'static [&'static str];

    /// Checks one DC's store `url` (its scheme is one of
    /// [`Connector::url_schemes`]) without I/O: `Err(message)` names what is
    /// wrong (`sentinel url has no master name after the hosts`), and the
    /// topology loader reports it at that DC's `url` entry. Never put the
    /// URL's credentials in the message. By default every URL passes.
    fn check_url(&self, url: &str) -> Result<(), String> {
        let _ = url;
        Ok(())
    }

    /// The conflict policies the kind's sink implements
    /// (`conflict = "..."`), the default first. By default only
    /// [`ConflictPolicy::None`](crate::conflict::ConflictPolicy::None).
    fn conflict_policies(&self) -> &'static [crate::conflict::ConflictPolicy] {
        &[crate::conflict::ConflictPolicy::None]
    }

    /// Group bounds used when a store omits `apply_group_txns` /
    /// `apply_group_bytes`.
    fn default_apply_group(&self) -> ApplyGroup;

    /// Parses and validates this kind's own keys of one `[[store]]` table:
    /// pure, no I/O. Every problem goes to [`StoreKeys::error`] with the
    /// location of the value at fault, and parsing continues so that all
    /// problems are reported in one pass (the returned options are then
    /// discarded). Keys the connector does not [`StoreKeys::take`] are
    /// reported as unknown by the caller.
    fn parse_options(&self, keys: &mut StoreKeys<'_>) -> StoreOptions;

    /// The tailing half for the store at `url` (credentials included; never
    /// log it unredacted). The future runs until `cx.shutdown` or an error,
    /// as [`Source::run`].
    fn run_source(
        &self,
        url: String,
        cx: SourceContext,
    ) -> BoxFuture<'static, Result<(), ConnectorError>>;

    /// Connects the applying half for `store` at `url`.
    ///
    /// Errors: [`ConnectorError::Definite`] for a bad URL or options that
    /// were not parsed by this connector, [`ConnectorError::Transient`] when
    /// the server cannot be reached.
    fn connect_sink(
        &self,
        url: String,
        store: StoreConfig,
    ) -> BoxFuture<'static, Result<Box<dyn DynSink>, ConnectorError>>;

    /// Optional capability: how long the source server at `url` keeps the
    /// log the source tails before discarding it (MySQL binlog expiry),
    /// `Ok(None)` if forever. A journaled backlog older than this cannot be
    /// re-read from the source, so the agent warns as it approaches.
    /// `None` (the default) when the kind has no such limit to report.
    fn source_retention(
        &self,
        url: String,
    ) -> Option<BoxFuture<'static, Result<Option<Duration>, ConnectorError>>> {
        let _ = url;
        None
    }

    /// Optional capability: connects to the store at `url` (one DC's store
    /// of `store`) and reports every problem that would make it replicate
    /// wrongly or nothing at all (server settings, configured patterns that
    /// match nothing, what the kind cannot replicate), plus the limits the
    /// caller compares across DCs. Used by `dcsync check --connect`. Reports
    /// all problems it can find in one pass, never only the first.
    ///
    /// Errors: [`ConnectorError`] only when the store cannot be inspected at
    /// all (unreachable, refused login, bad URL); everything else is a
    /// [`Finding`]. `None` (the default): the kind has nothing to inspect.
    fn inspect(
        &self,
        url: String,
        store: StoreConfig,
    ) -> Option<BoxFuture<'static, Result<Inspection, ConnectorError>>> {
        let _ = (url, store);
        None
    }

    /// Optional capability: a read-only connection to the store at `url`
    /// (one DC's store of `store`) that digests its data by collections,
    /// units and items, so that `dcsync verify` can compare DCs without
    /// reading the data whole (see [`crate::verify`]). `opts` are the run's
    /// settings.
    ///
    /// Errors: [`ConnectorError::Definite`] for a bad URL or refused login,
    /// [`ConnectorError::Transient`] when the server cannot be reached.
    /// `None` (the default): the kind cannot be verified.
    fn verify(
        &self,
        url: String,
        store: StoreConfig,
        opts: crate::verify::VerifyOptions,
    ) -> Option<BoxFuture<'static, Result<Box<dyn crate::verify::VerifyScan>, ConnectorError>>>
    {
        let _ = (url, store, opts);
        None
    }

    /// Optional capability: the unit the source gives one row or key of a
    /// store, and the rule that chose it, computed with the same rules
    /// (what an application's routing layer asks, `dcsync route`). Pure,
    /// no I/O.
    ///
    /// Errors: [`ConnectorError::Definite`] naming the problem: an argument
    /// the kind does not take (`--table` for a key-value store), a table or
    /// key the store does not replicate, a row or key that has no unit.
    /// `None` (the default): the kind has no units to tell.
    fn route(&self, query: RouteQuery<'_>) -> Option<Result<crate::unit::Routed, ConnectorError>> {
        let _ = query;
        None
    }

    /// Optional capability: acquires or renews, in the DC's own store at
    /// `url`, the lease that lets one agent of DC `req.dc` be active
    /// (docs/operations.md, "Standby agent"). Atomic in the store: the lease
    /// goes to `req.holder` for `req.ttl_ms` if it is free, expired or
    /// already `req.holder`'s; otherwise it stays with its holder. Returns
    /// who holds it now and for how much longer (ms, by the store's clock).
    /// `None` (the default): the kind keeps no lease.
    fn lease(
        &self,
        url: String,
        req: LeaseRequest,
    ) -> Option<BoxFuture<'static, Result<Lease, ConnectorError>>> {
        let _ = (url, req);
        None
    }

    /// Optional capability (`dcsync bootstrap`): fills the empty store at
    /// `to_url` (a new DC's) with what the store at `from_url` (an existing
    /// DC's) holds, read in one consistent snapshot, and writes the new
    /// DC's apply markers so that every peer resumes its stream from what
    /// that snapshot already holds: `from` DC's own changes up to
    /// `from.seq` (any seq its journal had reached before the snapshot:
    /// later ones are applied again, idempotently), every other origin's as
    /// the snapshot's own markers say. Returns the new DC's source position
    /// after the copy, where its agent starts tailing. With
    /// [`BootstrapFrom::restored`] the store at `to_url` already holds a
    /// backup of `from`'s: nothing is copied, `from`'s marker is set at
    /// `from.seq` and the other origins' markers are the backup's. `None`
    /// (the default): the kind cannot bootstrap.
    fn bootstrap(
        &self,
        from_url: String,
        to_url: String,
        store: StoreConfig,
        from: BootstrapFrom,
    ) -> Option<BoxFuture<'static, Result<Bootstrapped, ConnectorError>>> {
        let _ = (from_url, to_url, store, from);
        None
    }

    /// The version-index keys a local change writes (docs/conflicts.md):
    /// its row's primary key by default ([`crate::conflict::row_version_keys`]);
    /// a kind whose changes are not rows overrides it (Redis: the keys of
    /// the command). Empty: the change is not versioned.
    fn version_keys(&self, change: &crate::Change) -> Vec<Vec<u8>> {
        match &change.payload {
            crate::Payload::Row(r) => crate::conflict::row_version_keys(r),
            _ => Vec::new(),
        }
    }

    /// The source position whose human-readable form is `display` (what
    /// [`Position::display`] printed, as carried in
    /// [`Transaction::position`] and recorded in the peers' apply markers):
    /// where a replacement agent with an empty journal resumes this DC's
    /// source (docs/architecture.md, "Journal identity").
    ///
    /// Errors: [`ConnectorError::Definite`] naming the text when it is not
    /// such a position; the default (a kind whose display cannot be read
    /// back) always fails.
    fn parse_position(&self, display: &str) -> Result<Position, ConnectorError> {
        Err(ConnectorError::Definite(format!(
            "kind {} cannot resume its source from a peer's apply marker ({display:?})",
            self.kind()
        )))
    }

    /// Optional capability (`dcsync bootstrap --backup-position`): whether
    /// a transaction whose source position is `at` (the display form a
    /// journaled [`Transaction::position`] carries) is held by a backup of
    /// the store taken at `backup`, i.e. `at` is at or before `backup`.
    /// `backup` is what an operator copied from the backup tool, in the
    /// forms the kind documents (MySQL: `file:offset`, a MariaDB GTID
    /// list, or both).
    ///
    /// Errors: [`ConnectorError::Definite`] naming the text that is not
    /// such a position, or why the two cannot be compared; the default (a
    /// kind that cannot place a backup in its stream) always fails.
    fn position_at_or_before(&self, at: &str, backup: &str) -> Result<bool, ConnectorError> {
        let _ = at;
        Err(ConnectorError::Definite(format!(
            "kind {} cannot place a backup position ({backup:?}) in its journal: bootstrap the \
             store without --backup-position",
            self.kind()
        )))
    }
}

/// What [`Connector::route`] is asked: which unit one row or key of a store
/// has.
#[derive(Debug, Clone, Copy)]
pub struct RouteQuery<'a> {
    /// The store (its options are the connector's).
    pub store: &'a StoreConfig,
    /// `units.count` of the topology (units are `0..count`).
    pub units_count: u32,
    /// `schema.table` for a row store (`--table`), `None` if not given.
    pub table: Option<&'a str>,
    /// The unit key value in its canonical text form (row stores: the
    /// unit column's value, integers in decimal) or the key (key-value
    /// stores).
    pub value: &'a [u8],
}

/// The connectors an agent is built with, looked up by kind name or alias.
///
/// A plain static table: `static R: Registry = Registry::new(&[&A, &B]);`.
#[derive(Clone, Copy)]
pub struct Registry {
    connectors: &'static [&'static dyn Connector],
}

impl Registry {
    /// A registry of `connectors`. Kind names and aliases should be unique;
    /// the first match wins.
    pub const fn new(connectors: &'static [&'static dyn Connector]) -> Registry {
        Registry { connectors }
    }

    /// The connector whose kind name or alias is `kind` (exact match).
    pub fn get(&self, kind: &str) -> Option<&'static dyn Connector> {
        self.connectors
            .iter()
            .copied()
            .find(|c| c.kind() == kind || c.aliases().contains(&kind))
    }

    /// The connector of `store`.
    ///
    /// Errors: [`ConnectorError::Definite`] if its kind is not registered
    /// (the topology was parsed with another registry).
    pub fn connector_for(
        &self,
        store: &StoreConfig,
    ) -> Result<&'static dyn Connector, ConnectorError> {
        self.get(&store.kind).ok_or_else(|| {
            ConnectorError::Definite(format!(
                "store {:?}: kind {:?} is not built into this agent (known: {})",
                store.name,
                store.kind,
                self.expected_kinds()
            ))
        })
    }

    /// Every registered connector, in registration order.
    pub fn connectors(&self) -> &'static [&'static dyn Connector] {
        self.connectors
    }

    /// The kind names, quoted, for messages: `"mysql" or "redis"`.
    pub fn expected_kinds(&self) -> String {
        let names: Vec<String> = self
            .connectors
            .iter()
            .map(|c| format!("{:?}", c.kind()))
            .collect();
        match names.split_last() {
            None => "no store kind (none is registered)".to_string(),
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        }
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.connectors.iter().map(|c| c.kind()))
            .finish()
    }
}

#[cfg(test)]
#[path = "connector_tests.rs"]
mod tests;
