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

use crate::change::{Change, Transaction};
use crate::topology::{StoreConfig, Units};
use std::future::Future;
use tokio::sync::{mpsc, watch};

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
    /// A transaction written by dcsync's own sink (it carried an apply
    /// marker): not shipped again (no echo); only the position advances.
    Echo {
        /// Origin DC named by the marker.
        origin: String,
        /// Origin seq named by the marker.
        seq: u64,
        /// Position just after this transaction.
        position: Position,
    },
    /// The position advanced past something that is not a replicated change
    /// (DDL, a filtered table, a heartbeat).
    Progress {
        /// The new position.
        position: Position,
    },
}

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
}
