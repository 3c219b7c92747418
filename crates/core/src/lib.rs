//! dcsync core: the change model shared by every connector, the link and the
//! agent. Nothing here does I/O.
//!
//! - [`change`]: the change envelope ([`Transaction`], [`Change`], [`Value`]).
//! - [`conflict`]: versions of rows and keys, the `lww` rule, conflict records.
//! - [`envelope`]: the versioned encoding of the envelope (journal, link).
//! - [`events`]: internal events (metrics and logs from one place).
//! - [`hlc`]: hybrid logical clock timestamps.
//! - [`topology`]: the topology file (TOML) and its validation.
//! - [`unit`]: unit (shard) computation and owner-DC routing.
//! - [`connector`]: what a store connector implements (the [`connector::Connector`]
//!   factory, source and sink) and the [`connector::Registry`] of connectors.
//! - [`verify`]: what a connector tells `dcsync verify` to compare DCs.

pub mod change;
pub mod conflict;
pub mod connector;
pub mod envelope;
pub mod events;
pub mod hlc;
pub mod topology;
pub mod unit;
pub mod verify;

pub use change::{
    Change, ColumnMeta, Payload, RedisCommand, RowChange, RowKind, TableMeta, Transaction, Value,
};
pub use hlc::{now_ms, Hlc, HlcClock};
pub use topology::{Topology, TopologyError};

/// Name of the environment variable [`crash_point`] reads.
pub const CRASH_AT_ENV: &str = "DCSYNC_CRASH_AT";

/// A test hook for crash windows: aborts the process (no cleanup, no
/// flush, as `kill -9` would) when the environment variable
/// [`CRASH_AT_ENV`] (`DCSYNC_CRASH_AT`) names `point`. Tests use it to stop
/// an agent between two steps no signal can hit reliably (the crash
/// windows in docs/architecture.md). The variable is read once per
/// process; unset, a call costs one atomic load.
pub fn crash_point(point: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var(CRASH_AT_ENV).ok());
    if at.as_deref() == Some(point) {
        tracing::error!(
            point,
            "{CRASH_AT_ENV}={point}: aborting here (a test's injected crash)"
        );
        std::process::abort();
    }
}
