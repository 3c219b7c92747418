//! Internal events: every observable thing an agent does (changes captured,
//! echoes dropped, a batch applied or refused, a link connected or down, a
//! stream paused, a backlog measured, a full resync) is a small struct
//! whose one `emit()` updates the metrics (through the [`metrics`] facade;
//! the agent installs the Prometheus recorder) and, where an operator
//! should see it, logs — so logs, metrics and status never disagree.
//!
//! Metric names follow the Prometheus conventions
//! `dcsync_<noun>_<unit>[_total]`; labels are bounded: `peer`, `origin`
//! (DC ids from the topology), `store` (store names), `kind`
//! (`transient`/`definite`, or what was skipped: a fixed set of names). The agent adds a constant `dc` label to every
//! series. Counters are emitted per batch, not per change. [`describe`]
//! registers the help text of every metric (the `# HELP` lines).

use metrics::{counter, describe_counter, describe_gauge, gauge, Unit};

/// Metric names, in one place (also used by the dashboard under
/// `deploy/grafana/`).
pub mod names {
    /// Counter: local transactions captured by a source and journaled.
    pub const SOURCE_TRANSACTIONS: &str = "dcsync_source_transactions_total";
    /// Counter: row/key changes in them.
    pub const SOURCE_CHANGES: &str = "dcsync_source_changes_total";
    /// Counter: transactions the source saw carrying an apply marker
    /// (written by dcsync) and dropped instead of shipping them back.
    pub const ECHO_DROPPED: &str = "dcsync_echo_dropped_transactions_total";
    /// Gauge: seconds between the source commit and the journaling of the
    /// last captured transaction (how far the source reader is behind).
    pub const SOURCE_LAG: &str = "dcsync_source_lag_seconds";
    /// Counter: full resynchronisations a source had to take (Redis full
    /// sync after the replication backlog no longer held its offset).
    pub const FULL_RESYNCS: &str = "dcsync_source_full_resyncs_total";
    /// Counter: things a source deliberately did not ship, by `kind`
    /// (`ddl`, `statement_dml`, `no_primary_key`, `flush`).
    pub const SOURCE_SKIPPED: &str = "dcsync_source_skipped_total";
    /// Counter: local writes (rows, Redis commands) to a unit another DC
    /// owns: the attribution guard's misrouted writes (still replicated).
    /// Labelled by `store` only; the per-unit counts are in the status.
    pub const MISROUTED_WRITES: &str = "dcsync_misrouted_writes_total";
    /// Counter: commands a sink deliberately did not apply because the
    /// topology allows skipping them, by `kind` (`unsupported_command`).
    pub const APPLY_SKIPPED: &str = "dcsync_apply_skipped_total";
    /// Counter: conflicts detected and resolved by a sink (a change of
    /// another DC that lost against the value held here), by `policy`.
    pub const CONFLICTS: &str = "dcsync_conflicts_total";
    /// Gauge: versions logged and held in memory, not yet folded into the
    /// version index's B-tree (all stores).
    pub const VERSIONS_UNFOLDED: &str = "dcsync_version_index_unfolded";
    /// Counter: versions pruned from the version index, by `store`.
    pub const VERSIONS_PRUNED: &str = "dcsync_version_index_pruned_total";
    /// Counter: transactions of other DCs applied to the local store.
    pub const APPLIED: &str = "dcsync_applied_transactions_total";
    /// Gauge: apply lag, seconds: when the last transaction of an origin
    /// stream was applied here minus its HLC (source commit time).
    pub const APPLY_LAG: &str = "dcsync_apply_lag_seconds";
    /// Counter: batches that failed to apply, by `kind`.
    pub const APPLY_ERRORS: &str = "dcsync_apply_errors_total";
    /// Gauge: 1 while an origin stream is paused because this DC cannot
    /// apply it (inbound) or the peer cannot (outbound).
    pub const STREAM_PAUSED: &str = "dcsync_stream_paused";
    /// Gauge: transactions journaled and not yet acknowledged by a peer.
    pub const BACKLOG_TRANSACTIONS: &str = "dcsync_backlog_transactions";
    /// Gauge: bytes of those transactions.
    pub const BACKLOG_BYTES: &str = "dcsync_backlog_bytes";
    /// Gauge: age of the oldest unacknowledged transaction, seconds.
    pub const BACKLOG_OLDEST_AGE: &str = "dcsync_backlog_oldest_age_seconds";
    /// Gauge: how many seqs of an origin stream a DC has not applied yet,
    /// as this agent knows it (the applied vector; a star's hub knows every
    /// DC's), by `store`, `origin`, `applier`.
    pub const APPLIED_BEHIND: &str = "dcsync_applied_behind_transactions";
    /// Gauge: 1 while the outbound link to a peer is connected.
    pub const LINK_UP: &str = "dcsync_link_up";
    /// Gauge: negotiated protocol version of the link to a peer.
    pub const LINK_PROTOCOL: &str = "dcsync_link_protocol_version";
    /// Counter: successful link handshakes.
    pub const LINK_CONNECTS: &str = "dcsync_link_connects_total";
    /// Counter: link sessions that ended in an error (reconnects).
    pub const LINK_FAILURES: &str = "dcsync_link_failures_total";
    /// Counter: bytes written to a peer's link.
    pub const LINK_SENT_BYTES: &str = "dcsync_link_sent_bytes_total";
    /// Counter: bytes of batch frames received from a peer.
    pub const LINK_RECEIVED_BYTES: &str = "dcsync_link_received_bytes_total";
    /// Counter: transactions sent to a peer (resends included).
    pub const LINK_SENT_TRANSACTIONS: &str = "dcsync_link_sent_transactions_total";
    /// Counter: transactions a peer acknowledged.
    pub const LINK_ACKED_TRANSACTIONS: &str = "dcsync_link_acked_transactions_total";
    /// Gauge: when the store's last periodic consistency check ended,
    /// seconds since the Unix epoch (only on the DC that runs it).
    pub const VERIFY_LAST_TIMESTAMP: &str = "dcsync_verify_last_timestamp_seconds";
    /// Gauge: rows or keys that differed between DCs in the last periodic
    /// check (after its re-checks), plus collections missing or defined
    /// differently.
    pub const VERIFY_DIFFERENCES: &str = "dcsync_verify_differences";
    /// Counter: periodic checks that could not compare (a store
    /// unreachable).
    pub const VERIFY_ERRORS: &str = "dcsync_verify_errors_total";

    /// Every metric name above.
    pub const ALL: &[&str] = &[
        SOURCE_TRANSACTIONS,
        SOURCE_CHANGES,
        ECHO_DROPPED,
        SOURCE_LAG,
        FULL_RESYNCS,
        SOURCE_SKIPPED,
        MISROUTED_WRITES,
        APPLY_SKIPPED,
        CONFLICTS,
        APPLIED,
        APPLY_LAG,
        APPLY_ERRORS,
        STREAM_PAUSED,
        BACKLOG_TRANSACTIONS,
        BACKLOG_BYTES,
        BACKLOG_OLDEST_AGE,
        APPLIED_BEHIND,
        LINK_UP,
        LINK_PROTOCOL,
        LINK_CONNECTS,
        LINK_FAILURES,
        LINK_SENT_BYTES,
        LINK_RECEIVED_BYTES,
        LINK_SENT_TRANSACTIONS,
        LINK_ACKED_TRANSACTIONS,
        VERIFY_LAST_TIMESTAMP,
        VERIFY_DIFFERENCES,
        VERIFY_ERRORS,
        VERSIONS_UNFOLDED,
        VERSIONS_PRUNED,
    ];
}

use names::*;

/// Registers the help text and unit of every metric.
pub fn describe() {
    describe_gauge!(
        VERSIONS_UNFOLDED,
        Unit::Count,
        "Versions logged and held in memory, not yet folded into the version index."
    );
    describe_counter!(
        VERSIONS_PRUNED,
        Unit::Count,
        "Versions pruned from the version index (older than every other DC's applied changes minus version_retention_s)."
    );
    describe_counter!(
        SOURCE_TRANSACTIONS,
        Unit::Count,
        "Local transactions captured by the store's source and journaled."
    );
    describe_counter!(
        SOURCE_CHANGES,
        Unit::Count,
        "Row or key changes in the captured local transactions."
    );
    describe_counter!(ECHO_DROPPED, Unit::Count, "Transactions applied by dcsync that the source recognised by their apply marker and did not ship again.");
    describe_gauge!(
        SOURCE_LAG,
        Unit::Seconds,
        "Seconds between the source commit and the journaling of the last captured transaction."
    );
    describe_counter!(
        FULL_RESYNCS,
        Unit::Count,
        "Full resynchronisations taken by the source."
    );
    describe_counter!(
        SOURCE_SKIPPED,
        Unit::Count,
        "Things the source deliberately did not ship, by kind (ddl, statement_dml, no_primary_key, flush)."
    );
    describe_counter!(
        MISROUTED_WRITES,
        Unit::Count,
        "Local writes to a unit another DC owns (misrouted; still replicated)."
    );
    describe_counter!(
        APPLY_SKIPPED,
        Unit::Count,
        "Commands the sink did not apply because the topology allows skipping them, by kind."
    );
    describe_counter!(
        CONFLICTS,
        Unit::Count,
        "Conflicts detected and resolved by the sink (a change of another DC that lost against the value held here), by policy; details in conflicts.jsonl."
    );
    describe_counter!(
        APPLIED,
        Unit::Count,
        "Transactions of another DC applied to the local store."
    );
    describe_gauge!(APPLY_LAG, Unit::Seconds, "Apply time minus source commit time (HLC) of the last applied transaction of an origin stream.");
    describe_counter!(
        APPLY_ERRORS,
        Unit::Count,
        "Batches that failed to apply, by kind (transient or definite)."
    );
    describe_gauge!(
        STREAM_PAUSED,
        Unit::Count,
        "1 while an origin stream is paused because its store cannot apply it."
    );
    describe_gauge!(
        BACKLOG_TRANSACTIONS,
        Unit::Count,
        "Transactions journaled and not yet acknowledged by the peer."
    );
    describe_gauge!(
        BACKLOG_BYTES,
        Unit::Bytes,
        "Encoded bytes of the unacknowledged transactions."
    );
    describe_gauge!(
        BACKLOG_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest unacknowledged transaction."
    );
    describe_gauge!(
        APPLIED_BEHIND,
        Unit::Count,
        "Seqs of an origin stream the applier DC has not applied yet, as this agent knows it (applied vectors)."
    );
    describe_gauge!(
        LINK_UP,
        Unit::Count,
        "1 while the outbound link to the peer is connected."
    );
    describe_gauge!(
        LINK_PROTOCOL,
        Unit::Count,
        "Negotiated link protocol version."
    );
    describe_counter!(LINK_CONNECTS, Unit::Count, "Successful link handshakes.");
    describe_counter!(
        LINK_FAILURES,
        Unit::Count,
        "Link sessions that ended in an error (each one is followed by a reconnect)."
    );
    describe_counter!(
        LINK_SENT_BYTES,
        Unit::Bytes,
        "Bytes written to the peer's link."
    );
    describe_counter!(
        LINK_RECEIVED_BYTES,
        Unit::Bytes,
        "Bytes of batch frames received from the peer."
    );
    describe_counter!(
        LINK_SENT_TRANSACTIONS,
        Unit::Count,
        "Transactions sent to the peer, resends included."
    );
    describe_counter!(
        LINK_ACKED_TRANSACTIONS,
        Unit::Count,
        "Transactions the peer acknowledged as applied."
    );
    describe_gauge!(
        VERIFY_LAST_TIMESTAMP,
        Unit::Seconds,
        "When the store's last periodic consistency check across DCs ended (Unix time)."
    );
    describe_gauge!(
        VERIFY_DIFFERENCES,
        Unit::Count,
        "Rows or keys (and collections) that differed between DCs in the last periodic check."
    );
    describe_counter!(
        VERIFY_ERRORS,
        Unit::Count,
        "Periodic consistency checks that could not compare the store."
    );
}

/// A source journaled `txns` local transactions of `store`.
pub struct SourceCaptured<'a> {
    /// Store.
    pub store: &'a str,
    /// Transactions journaled.
    pub txns: u64,
    /// Changes in them.
    pub changes: u64,
    /// Journal time minus source commit time of the last one, ms (`None`
    /// when the source does not tell its commit time).
    pub lag_ms: Option<u64>,
}

impl SourceCaptured<'_> {
    /// Updates the metrics.
    pub fn emit(&self) {
        let store = self.store.to_string();
        counter!(SOURCE_TRANSACTIONS, "store" => store.clone()).increment(self.txns);
        counter!(SOURCE_CHANGES, "store" => store.clone()).increment(self.changes);
        if let Some(lag) = self.lag_ms {
            gauge!(SOURCE_LAG, "store" => store).set(lag as f64 / 1000.0);
        }
    }
}

/// A source dropped `txns` echo transactions of `store`.
pub struct EchoDropped<'a> {
    /// Store.
    pub store: &'a str,
    /// Transactions dropped.
    pub txns: u64,
}

impl EchoDropped<'_> {
    /// Updates the metrics.
    pub fn emit(&self) {
        counter!(ECHO_DROPPED, "store" => self.store.to_string()).increment(self.txns);
    }
}

/// A source of `store` had to take a full resynchronisation.
pub struct FullResync<'a> {
    /// Store.
    pub store: &'a str,
}

impl FullResync<'_> {
    /// Counts it (the source logs the details it knows).
    pub fn emit(&self) {
        counter!(FULL_RESYNCS, "store" => self.store.to_string()).increment(1);
    }
}

/// A source of `store` deliberately did not ship `count` things of kind
/// `what` (DDL, a statement-format write the topology allows skipping, ...).
pub struct SourceSkipped<'a> {
    /// Store.
    pub store: &'a str,
    /// Kind, a bounded label (`ddl`, `statement_dml`, `no_primary_key`,
    /// `flush`).
    pub what: &'a str,
    /// How many (statements, rows, commands).
    pub count: u64,
}

impl SourceSkipped<'_> {
    /// Counts it (the source logs the details, the agent shows the last
    /// one in the status).
    pub fn emit(&self) {
        counter!(SOURCE_SKIPPED, "store" => self.store.to_string(), "kind" => self.what.to_string())
            .increment(self.count);
    }
}

/// A sink of `store` detected a conflict and resolved it by `policy`
/// (the details go to the conflict log).
pub struct ConflictResolved<'a> {
    /// Store.
    pub store: &'a str,
    /// Policy that decided (`lww`), a bounded label.
    pub policy: &'a str,
}

impl ConflictResolved<'_> {
    /// Counts it.
    pub fn emit(&self) {
        counter!(CONFLICTS, "store" => self.store.to_string(), "policy" => self.policy.to_string())
            .increment(1);
    }
}

/// The version index's upkeep: `unfolded` versions wait in memory to be
/// folded; `pruned` versions of `store` were removed.
pub struct VersionUpkeep<'a> {
    /// Store of `pruned` (empty: none pruned).
    pub store: &'a str,
    /// Versions pruned by this pass.
    pub pruned: u64,
    /// Versions not yet folded (all stores).
    pub unfolded: u64,
}

impl VersionUpkeep<'_> {
    /// Sets the gauge and counts the pruned versions.
    pub fn emit(&self) {
        gauge!(VERSIONS_UNFOLDED).set(self.unfolded as f64);
        if self.pruned > 0 {
            counter!(VERSIONS_PRUNED, "store" => self.store.to_string()).increment(self.pruned);
        }
    }
}

/// The attribution guard found `count` local writes of `store` (rows or
/// Redis commands) whose unit another DC owns. They are replicated all the
/// same.
pub struct MisroutedWrites<'a> {
    /// Store.
    pub store: &'a str,
    /// Misrouted writes (changes).
    pub count: u64,
}

impl MisroutedWrites<'_> {
    /// Counts them (the agent's guard logs, rate-limited, and keeps the
    /// per-unit counts and the last one in the status).
    pub fn emit(&self) {
        counter!(MISROUTED_WRITES, "store" => self.store.to_string()).increment(self.count);
    }
}

/// A sink of `store` did not apply `count` commands of `origin` of kind
/// `what` because the store's `skip` option allows it.
pub struct ApplySkipped<'a> {
    /// Origin DC.
    pub origin: &'a str,
    /// Store.
    pub store: &'a str,
    /// Kind, a bounded label (`unsupported_command`).
    pub what: &'a str,
    /// Commands skipped.
    pub count: u64,
}

impl ApplySkipped<'_> {
    /// Counts it (the sink logs each command).
    pub fn emit(&self) {
        counter!(APPLY_SKIPPED, "origin" => self.origin.to_string(), "store" => self.store.to_string(), "kind" => self.what.to_string())
            .increment(self.count);
    }
}

/// A batch of `(origin, store)` received from `peer` applied.
pub struct BatchApplied<'a> {
    /// The DC the batch came from.
    pub peer: &'a str,
    /// Origin DC of its transactions.
    pub origin: &'a str,
    /// Store.
    pub store: &'a str,
    /// Transactions in it.
    pub txns: u64,
    /// Frame bytes received.
    pub bytes: u64,
    /// Apply time minus the HLC of its last transaction, ms.
    pub lag_ms: u64,
}

impl BatchApplied<'_> {
    /// Updates the metrics.
    pub fn emit(&self) {
        let (origin, store) = (self.origin.to_string(), self.store.to_string());
        counter!(APPLIED, "origin" => origin.clone(), "store" => store.clone())
            .increment(self.txns);
        gauge!(APPLY_LAG, "origin" => origin.clone(), "store" => store.clone())
            .set(self.lag_ms as f64 / 1000.0);
        gauge!(STREAM_PAUSED, "direction" => "inbound", "peer" => self.peer.to_string(), "origin" => origin, "store" => store).set(0.0);
        counter!(LINK_RECEIVED_BYTES, "peer" => self.peer.to_string()).increment(self.bytes);
    }
}

/// A batch of `(origin, store)` failed to apply here; the stream pauses.
pub struct ApplyFailed<'a> {
    /// The DC the batch came from.
    pub peer: &'a str,
    /// Origin DC.
    pub origin: &'a str,
    /// Store.
    pub store: &'a str,
    /// Operator needed.
    pub definite: bool,
    /// Frame bytes received.
    pub bytes: u64,
}

impl ApplyFailed<'_> {
    /// Updates the metrics (the receiver logs, rate-limited).
    pub fn emit(&self) {
        let kind = if self.definite {
            "definite"
        } else {
            "transient"
        };
        let (origin, store) = (self.origin.to_string(), self.store.to_string());
        counter!(APPLY_ERRORS, "origin" => origin.clone(), "store" => store.clone(), "kind" => kind).increment(1);
        gauge!(STREAM_PAUSED, "direction" => "inbound", "peer" => self.peer.to_string(), "origin" => origin, "store" => store).set(1.0);
        counter!(LINK_RECEIVED_BYTES, "peer" => self.peer.to_string()).increment(self.bytes);
    }
}

/// A batch was written to `peer`.
pub struct BatchSent<'a> {
    /// Peer DC.
    pub peer: &'a str,
    /// Transactions in it.
    pub txns: u64,
    /// Frame bytes written.
    pub bytes: u64,
}

impl BatchSent<'_> {
    /// Updates the metrics.
    pub fn emit(&self) {
        let peer = self.peer.to_string();
        counter!(LINK_SENT_TRANSACTIONS, "peer" => peer.clone()).increment(self.txns);
        counter!(LINK_SENT_BYTES, "peer" => peer).increment(self.bytes);
    }
}

/// `peer` acknowledged `txns` transactions.
pub struct BatchAcked<'a> {
    /// Peer DC.
    pub peer: &'a str,
    /// Transactions acknowledged.
    pub txns: u64,
}

impl BatchAcked<'_> {
    /// Updates the metrics.
    pub fn emit(&self) {
        counter!(LINK_ACKED_TRANSACTIONS, "peer" => self.peer.to_string()).increment(self.txns);
    }
}

/// The outbound link to `peer` connected (handshake done).
pub struct LinkConnected<'a> {
    /// Peer DC.
    pub peer: &'a str,
    /// Negotiated protocol version.
    pub version: u32,
}

impl LinkConnected<'_> {
    /// Updates the metrics.
    pub fn emit(&self) {
        let peer = self.peer.to_string();
        counter!(LINK_CONNECTS, "peer" => peer.clone()).increment(1);
        gauge!(LINK_UP, "peer" => peer.clone()).set(1.0);
        gauge!(LINK_PROTOCOL, "peer" => peer).set(f64::from(self.version));
    }
}

/// The outbound link to `peer` failed; it is retried.
pub struct LinkFailed<'a> {
    /// Peer DC.
    pub peer: &'a str,
}

impl LinkFailed<'_> {
    /// Updates the metrics (the sender logs the error).
    pub fn emit(&self) {
        let peer = self.peer.to_string();
        counter!(LINK_FAILURES, "peer" => peer.clone()).increment(1);
        gauge!(LINK_UP, "peer" => peer).set(0.0);
    }
}

/// An outbound origin stream to `peer` paused (`paused = true`) or resumed.
pub struct StreamPauseChanged<'a> {
    /// Peer DC.
    pub peer: &'a str,
    /// Origin DC.
    pub origin: &'a str,
    /// Store.
    pub store: &'a str,
    /// Paused now.
    pub paused: bool,
}

impl StreamPauseChanged<'_> {
    /// Updates the metrics (the sender logs).
    pub fn emit(&self) {
        gauge!(STREAM_PAUSED, "direction" => "outbound", "peer" => self.peer.to_string(), "origin" => self.origin.to_string(), "store" => self.store.to_string())
            .set(if self.paused { 1.0 } else { 0.0 });
    }
}

/// The backlog of one origin stream for one peer, measured.
pub struct BacklogObserved<'a> {
    /// Peer DC.
    pub peer: &'a str,
    /// Origin DC.
    pub origin: &'a str,
    /// Store.
    pub store: &'a str,
    /// Transactions not yet acknowledged.
    pub txns: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Age of the oldest, ms (0 when empty).
    pub oldest_age_ms: u64,
}

impl BacklogObserved<'_> {
    /// Updates the gauges.
    pub fn emit(&self) {
        let (p, o, s) = (
            self.peer.to_string(),
            self.origin.to_string(),
            self.store.to_string(),
        );
        gauge!(BACKLOG_TRANSACTIONS, "peer" => p.clone(), "origin" => o.clone(), "store" => s.clone()).set(self.txns as f64);
        gauge!(BACKLOG_BYTES, "peer" => p.clone(), "origin" => o.clone(), "store" => s.clone())
            .set(self.bytes as f64);
        gauge!(BACKLOG_OLDEST_AGE, "peer" => p, "origin" => o, "store" => s)
            .set(self.oldest_age_ms as f64 / 1000.0);
    }
}

/// What a DC has applied of an origin stream, from the applied vectors.
#[derive(Debug, Clone, Copy)]
pub struct VectorObserved<'a> {
    /// Store.
    pub store: &'a str,
    /// Origin DC of the stream.
    pub origin: &'a str,
    /// The DC that applies it.
    pub applier: &'a str,
    /// Seqs of the origin's head it has not applied.
    pub behind: u64,
}

impl VectorObserved<'_> {
    /// Updates the gauge.
    pub fn emit(&self) {
        gauge!(APPLIED_BEHIND, "store" => self.store.to_string(), "origin" => self.origin.to_string(), "applier" => self.applier.to_string())
            .set(self.behind as f64);
    }
}

/// A periodic consistency check of `store` across the DCs ended.
pub struct VerifyChecked<'a> {
    /// Store.
    pub store: &'a str,
    /// When it ended, ms since the Unix epoch.
    pub at_ms: u64,
    /// Differences found (after the re-checks).
    pub differences: u64,
}

impl VerifyChecked<'_> {
    /// Updates the gauges (the agent logs differences and keeps the
    /// details in the status).
    pub fn emit(&self) {
        let store = self.store.to_string();
        gauge!(VERIFY_LAST_TIMESTAMP, "store" => store.clone()).set(self.at_ms as f64 / 1000.0);
        gauge!(VERIFY_DIFFERENCES, "store" => store).set(self.differences as f64);
    }
}

/// A periodic consistency check of `store` could not compare.
pub struct VerifyFailed<'a> {
    /// Store.
    pub store: &'a str,
}

impl VerifyFailed<'_> {
    /// Counts it (the agent logs the error and keeps it in the status).
    pub fn emit(&self) {
        counter!(VERIFY_ERRORS, "store" => self.store.to_string()).increment(1);
    }
}
