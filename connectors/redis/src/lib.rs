//! dcsync connector for Redis 7: a replica-protocol source and a MULTI/EXEC
//! sink.
//!
//! # Design
//! - **Source** ([`RedisSource`]): connects to the local primary as a replica
//!   (`PSYNC`), turns the RDB of a full sync into commands that recreate each
//!   key ([`rdb`] parses it, [`commands::recreate`] chooses the commands), and
//!   then turns the propagated command stream into transactions (`MULTI` ..
//!   `EXEC` is one). Its position is `(replid, offset)` ([`ReplPosition`]);
//!   `REPLCONF ACK` reports only the offset the agent made durable, so a
//!   restart continues with `PSYNC <replid> <offset+1>` (`+CONTINUE`) and
//!   neither loses nor repeats a command. A full resync on reconnect is logged
//!   and counted ([`FULL_RESYNCS`], [`SyncStats`]).
//! - **Sink** ([`RedisSink`]): applies each transaction as `MULTI`,
//!   `SET <MARKER_PREFIX><origin> <seq>`, the commands, `EXEC`, several
//!   blocks per round trip. The marker is the idempotency checkpoint and the
//!   echo filter: the source reports a block starting with a marker write as
//!   [`dcsync_core::connector::SourceEvent::Echo`].
//! - **Errors**: I/O is `Transient` (the agent restarts from the last durable
//!   position), protocol, parse and server-setting problems are `Definite`.
//!
//! See `docs/redis.md` for the protocol details, the RDB encodings covered and
//! the limitations.

pub mod commands;
pub mod encodings;
pub mod position;
pub mod rdb;
mod rdb_stream;
pub mod resp;
pub mod sink;
pub mod source;
mod stream;

pub use position::ReplPosition;
pub use sink::RedisSink;
pub use source::{RedisSource, SyncKind, SyncStats, FULL_RESYNCS, PARTIAL_RESYNCS};

/// Prefix of the apply-marker keys the sink writes in database 0:
/// `dcsync:marker:<origin dc>` holds the last applied origin seq (decimal).
/// Keys with this prefix are never shipped by the source.
pub const MARKER_PREFIX: &str = "dcsync:marker:";
