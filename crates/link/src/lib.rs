//! The WAN link between agents.
//!
//! Each agent listens on its `link` address ([`receiver::serve`]) and dials
//! every peer it ships changes to ([`sender::run`]): one TCP connection per
//! direction and pair, so the data of each direction flows one way and
//! acknowledgements flow back.
//!
//! Mesh and star are one code path ([`routing`]): which origin streams a
//! sender ships to its peer is [`routing::Routing::origins_to`] (mesh: its
//! own; a star's spoke: its own, to the hub only; the hub: every origin but
//! the peer's own). A relaying receiver journals another origin's batch
//! before applying it ([`receiver::Relay`]), and every agent keeps
//! [`vectors::AppliedVectors`] so that an origin keeps its changes until
//! every DC applied them (docs/architecture.md, "Relay and applied
//! vectors").
//!
//! # Protocol (see [`frame`])
//! 1. dialer → `Hello{cluster, dc, version}`; listener checks the cluster
//!    name, that the DC is declared in the topology and is not itself, and the
//!    protocol version, then answers `Welcome{applied}` (per origin stream,
//!    the highest seq already applied, read from the apply markers; a relay
//!    also names the streams to resend from below it) or
//!    `Refused{reason}`.
//! 2. the sender streams `Batch` frames from the journal starting after
//!    `applied`, keeping at most `window` batches unacknowledged.
//! 3. the receiver applies each batch through its [`Applier`] and only then
//!    answers `Ack{store, seq}`; the sender advances its journal cursor on
//!    the ack, which lets the journal drop the entries.
//! 4. both sides send `Heartbeat` when idle and declare the connection dead
//!    when nothing arrived for `dead_after_ms` (a stalled line, not only a
//!    closed one, is noticed).
//!
//! # Resumption
//! After any failure the sender reconnects with capped exponential backoff
//! and full jitter and resumes from the receiver's `applied`, so a batch that
//! was applied but whose ack was lost is not applied twice (the apply marker
//! would skip it anyway).

pub mod frame;
mod packing;
pub mod receiver;
pub mod routing;
pub mod sender;
pub mod tls;
pub mod vectors;

use dcsync_core::Transaction;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A boxed future, for the object-safe [`Applier`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why applying failed, as the receiver reports it.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The store is unknown to this agent.
    #[error("unknown store {0:?}")]
    UnknownStore(String),
    /// Worth retrying (store unreachable, deadlock): the connection is closed
    /// and the sender retries.
    #[error("transient apply failure: {0}")]
    Transient(String),
    /// Needs an operator (schema mismatch, unsupported command); the sender is
    /// refused with this reason and retries at the slowest backoff.
    #[error("apply failed: {0}")]
    Definite(String),
}

/// What the receiving agent does with incoming changes: its sinks.
pub trait Applier: Send + Sync + 'static {
    /// Highest seq of `origin`'s changes to `store` already applied
    /// (committed), with the origin journal's epoch and source position the
    /// apply marker recorded. Called when a connection starts: parts of a
    /// split transaction held uncommitted from an earlier connection are
    /// rolled back, since the sender resends from this seq.
    fn applied<'a>(
        &'a self,
        origin: &'a str,
        store: &'a str,
    ) -> BoxFuture<'a, Result<dcsync_core::connector::AppliedMark, ApplyError>>;
    /// Applies `txs` (ascending seqs, one origin, one store); returns the
    /// highest applied (committed) seq. Idempotent: already applied seqs are
    /// skipped. When `txs` ends inside a transaction split in parts
    /// ([`Transaction::more`]), its parts are applied but held uncommitted
    /// until the batch holding its last part: the returned seq is then below
    /// the batch's last.
    fn apply<'a>(
        &'a self,
        origin: &'a str,
        store: &'a str,
        txs: Vec<Transaction>,
    ) -> BoxFuture<'a, Result<u64, ApplyError>>;
}

/// What the peers' apply markers say about this DC's own origin streams,
/// as the senders learn it at each handshake: what a new journal waits for
/// before it ships (see `dcsync_journal::identity`). Keyed by `(peer,
/// store)`; [`PeerMarks::watch`] changes on every report.
#[derive(Debug)]
pub struct PeerMarks {
    marks: Mutex<std::collections::BTreeMap<(String, String), dcsync_core::connector::AppliedMark>>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for PeerMarks {
    fn default() -> Self {
        PeerMarks {
            marks: Mutex::new(Default::default()),
            changed: tokio::sync::watch::channel(0).0,
        }
    }
}

impl PeerMarks {
    /// Records what `peer` reported of this DC's `store`.
    pub fn report(&self, peer: &str, store: &str, mark: dcsync_core::connector::AppliedMark) {
        if let Ok(mut m) = self.marks.lock() {
            m.insert((peer.to_string(), store.to_string()), mark);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// The last report of `peer` about `store`, if any.
    pub fn get(&self, peer: &str, store: &str) -> Option<dcsync_core::connector::AppliedMark> {
        self.marks
            .lock()
            .ok()
            .and_then(|m| m.get(&(peer.to_string(), store.to_string())).cloned())
    }

    /// Changes on every [`PeerMarks::report`].
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// State of one outbound link, for `dcsync status` and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LinkState {
    /// Not yet attempted.
    #[default]
    Idle,
    /// Handshake done, streaming; since when (ms since epoch).
    Connected {
        /// ms since the Unix epoch.
        since_ms: u64,
    },
    /// Connection failed; retrying since when, and why.
    Retrying {
        /// ms since the Unix epoch of the first failure of this outage.
        since_ms: u64,
        /// Last error.
        error: String,
    },
}

/// Counters and state of one outbound link, shared with the status reporter.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LinkStats {
    /// Peer DC id.
    pub peer: String,
    /// Connection state.
    pub state: LinkState,
    /// Negotiated protocol version of the current (or last) session; 0
    /// before the first handshake.
    #[serde(default)]
    pub version: u32,
    /// Transactions sent since start (may include resends).
    pub sent_txns: u64,
    /// Transactions acknowledged since start.
    pub acked_txns: u64,
    /// Bytes written to the socket since start.
    pub sent_bytes: u64,
    /// Successful connections since start.
    pub connects: u64,
    /// Origin streams the peer reported it cannot apply (paused, retried on
    /// a schedule), with the reason; the other streams keep flowing.
    #[serde(default)]
    pub failing: Vec<StreamFailure>,
}

/// A paused origin stream: the receiving DC could not apply it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamFailure {
    /// Origin DC of the stream.
    pub origin: String,
    /// Store.
    pub store: String,
    /// Operator needed (true) or a transient failure (false).
    pub definite: bool,
    /// What failed, as the applying DC reported it.
    pub reason: String,
    /// First failure of this outage, ms since the Unix epoch.
    pub since_ms: u64,
    /// Next retry, ms since the Unix epoch.
    pub retry_at_ms: u64,
    /// Failed attempts in this outage.
    pub attempts: u32,
}

/// What the receiving side knows of one origin stream it applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InboundStream {
    /// Origin DC.
    pub origin: String,
    /// Store.
    pub store: String,
    /// Highest origin seq applied (from the markers at connect, then from
    /// each apply).
    pub applied_seq: u64,
    /// Transactions applied since start (counted per batch: the number of
    /// transactions in batches that applied, including ones the marker
    /// skipped as already applied).
    pub applied_txns: u64,
    /// HLC of the last applied transaction (`(ms << 16) | logical`), 0 if
    /// none since start.
    pub last_hlc: u64,
    /// When the last batch applied, ms since the Unix epoch.
    pub applied_at_ms: u64,
    /// The current failure, if the stream is paused: the reason, whether
    /// it is definite, and since when (ms since the Unix epoch).
    pub failing: Option<(String, bool, u64)>,
}

/// Inbound origin streams by `(origin, store)`, shared between the
/// receiver (which updates it) and status/metrics (which read it).
pub type InboundBoard = Arc<Mutex<std::collections::BTreeMap<(String, String), InboundStream>>>;

/// Shared handle on [`LinkStats`].
pub type SharedStats = Arc<Mutex<LinkStats>>;

pub use dcsync_core::now_ms;

/// Aborts a spawned task when dropped (a connection's reader or writer
/// task must not outlive its session).
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Capped exponential backoff with full jitter (AWS architecture blog,
/// "Exponential Backoff And Jitter", 2015): the n-th delay is uniform in
/// `[min, min(max, min * 2^n)]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff between `min` and `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }
    /// Next delay; grows until the cap.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.min.saturating_mul(1u32 << self.attempt.min(20));
        let cap = exp.min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let lo = self.min.as_millis() as u64;
        let hi = (cap.as_millis() as u64).max(lo);
        Duration::from_millis(rand::random_range(lo..=hi))
    }
    /// Back to the first delay (after a successful connection).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(200));
        for _ in 0..30 {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(10) && d <= Duration::from_millis(200),
                "{d:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(10));
    }
}
