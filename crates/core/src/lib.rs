//! dcsync core: the change model shared by every connector, the link and the
//! agent. Nothing here does I/O.
//!
//! - [`change`]: the change envelope ([`Transaction`], [`Change`], [`Value`]).
//! - [`hlc`]: hybrid logical clock timestamps.
//! - [`topology`]: the topology file (TOML) and its validation.
//! - [`unit`]: unit (shard) computation and owner-DC routing.
//! - [`connector`]: what a store connector implements (the [`connector::Connector`]
//!   factory, source and sink) and the [`connector::Registry`] of connectors.

pub mod change;
pub mod connector;
pub mod hlc;
pub mod topology;
pub mod unit;

pub use change::{
    Change, ColumnMeta, Payload, RedisCommand, RowChange, RowKind, Transaction, Value,
};
pub use hlc::{Hlc, HlcClock};
pub use topology::{Topology, TopologyError};
