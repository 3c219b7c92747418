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
