//! The change envelope.
//!
//! A [`Transaction`] is the atomic group one source commit produced: a MySQL
//! transaction (BEGIN .. XID), a Redis `MULTI`/`EXEC` block or single command.
//! It carries the envelope fields of docs/architecture.md ("The change
//! envelope"): origin DC, origin sequence number (dense per origin and store,
//! assigned by the journal), HLC timestamp, store, source position, and the
//! [`Change`]s with their unit.
//!
//! A source transaction too large for one journal entry or link frame is
//! split into *parts*: consecutive entries of the same origin stream, each
//! with its own seq, where every part but the last has [`Transaction::more`]
//! set. A sink applies all parts in one target transaction and writes the
//! apply marker with the last part's seq, so a marker never points inside a
//! source transaction (docs/architecture.md, "Transactions of any size").
//!
//! The journal and the link encode these types through
//! [`crate::envelope`]; row changes share their table's [`TableMeta`]
//! through an [`Arc`], in memory and on the wire (a table dictionary per
//! record), instead of repeating column names in every row.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One committed source transaction (or one part of it) with its envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    /// Origin DC id (`bj`): the DC whose store committed it first.
    pub origin: String,
    /// Logical store name from the topology file (`orders`).
    pub store: String,
    /// Origin sequence number: dense (1, 2, 3, ...) per (origin, store).
    pub seq: u64,
    /// Hybrid logical clock stamp taken when the origin agent journaled it.
    pub hlc: crate::Hlc,
    /// Human-readable source position *after* this transaction
    /// (`mysql-bin.000003:4711`, `gtid 0-1-42`, `redis offset 1234`); for logs.
    pub position: String,
    /// Source commit time in ms since the Unix epoch, when the source tells it
    /// (binlog event timestamp is in seconds and is scaled); 0 if unknown.
    pub commit_ts_ms: u64,
    /// The changes, in source order.
    pub changes: Vec<Change>,
    /// Index of this part within its source transaction: 0 for the first
    /// (or only) part.
    pub part: u32,
    /// More parts of the same source transaction follow (with seq + 1);
    /// `false` on the last (or only) part.
    pub more: bool,
    /// Identity (epoch) of the origin's journal that assigned `seq`: a
    /// random non-zero number chosen when that journal was created, kept by
    /// a journal recovered from peers for the seqs it continues; 0 when
    /// unknown (a record of envelope version 3 or older). Apply markers
    /// record it with the seq, so that a new journal's seq N is never taken
    /// for an old journal's seq N (docs/architecture.md, "Journal
    /// identity").
    pub epoch: u64,
}

impl Transaction {
    /// Whether this entry is a whole source transaction (not split).
    pub fn is_whole(&self) -> bool {
        self.part == 0 && !self.more
    }

    /// Approximate encoded size in bytes, used to bound batches and commit
    /// groups. Counts payload bytes, not serde overhead.
    pub fn approx_bytes(&self) -> usize {
        64 + self.changes.iter().map(Change::approx_bytes).sum::<usize>()
    }
}

/// One row/key/document mutation.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Unit (shard) of the business key space this change belongs to, computed
    /// from the store's unit key; `None` when the change has no such key.
    pub unit: Option<u32>,
    /// The store-specific mutation.
    pub payload: Payload,
}

impl Change {
    /// Approximate size in bytes (see [`Transaction::approx_bytes`]).
    pub fn approx_bytes(&self) -> usize {
        match &self.payload {
            Payload::Row(r) => r.approx_bytes(),
            Payload::Redis(c) => c.approx_bytes(),
        }
    }
}

/// Store-specific mutation.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A row change from a MySQL/MariaDB binlog ROW event.
    Row(RowChange),
    /// A Redis command as propagated on the replication stream.
    Redis(RedisCommand),
}

/// Kind of row change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RowKind {
    /// `WRITE_ROWS` event: `after` is set, `before` is `None`.
    Insert,
    /// `UPDATE_ROWS` event: both images are set.
    Update,
    /// `DELETE_ROWS` event: `before` is set, `after` is `None`.
    Delete,
}

/// Column metadata from the binlog TABLE_MAP event (with
/// `binlog_row_metadata=FULL`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnMeta {
    /// Column name.
    pub name: String,
    /// MySQL protocol column type code (`MYSQL_TYPE_*`, e.g. 3 = LONG,
    /// 246 = NEWDECIMAL, 15 = VARCHAR, 252 = BLOB).
    pub type_code: u8,
    /// `UNSIGNED` integer column.
    pub unsigned: bool,
    /// Part of the primary key.
    pub primary_key: bool,
}

/// A table's identity and columns, shared by every row change of it
/// ([`RowChange::table`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableMeta {
    /// Database (schema) name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Columns, in table order; row images are aligned with it.
    pub columns: Vec<ColumnMeta>,
}

impl TableMeta {
    /// Indexes of the primary key columns, in table order.
    pub fn primary_key(&self) -> Vec<usize> {
        self.columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.primary_key)
            .map(|(i, _)| i)
            .collect()
    }

    /// `schema.name`, for messages.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// One row change with full before/after images.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    /// The table, its schema and columns (shared between rows).
    pub table: Arc<TableMeta>,
    /// Insert, update or delete.
    pub kind: RowKind,
    /// Row image before the change (update, delete).
    pub before: Option<Vec<Value>>,
    /// Row image after the change (insert, update).
    pub after: Option<Vec<Value>>,
}

impl RowChange {
    /// Approximate size in bytes.
    pub fn approx_bytes(&self) -> usize {
        let img = |i: &Option<Vec<Value>>| {
            i.as_ref()
                .map(|v| v.iter().map(Value::approx_bytes).sum::<usize>())
                .unwrap_or(0)
        };
        32 + img(&self.before) + img(&self.after)
    }

    /// Indexes of the primary key columns, in table order.
    pub fn primary_key(&self) -> Vec<usize> {
        self.table.primary_key()
    }
}

/// A column value, lossless for every MySQL/MariaDB column type.
///
/// Strings, BLOBs, DECIMAL (as its decimal text), BIT (big-endian bytes) and
/// JSON (as text) are [`Value::Bytes`]; ENUM is its 1-based index and SET its
/// bitmask as [`Value::UInt`]; TIMESTAMP is converted to UTC
/// [`Value::Date`]; YEAR is [`Value::Int`] (e.g. 2024).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// Signed integer (TINYINT..BIGINT, YEAR).
    Int(i64),
    /// Unsigned integer (UNSIGNED columns, ENUM index, SET bitmask).
    UInt(u64),
    /// FLOAT.
    Float(f32),
    /// DOUBLE.
    Double(f64),
    /// Byte string: CHAR/VARCHAR/TEXT (in the column's charset), BINARY,
    /// VARBINARY, BLOB, DECIMAL text, BIT bytes, JSON text. Serialized as
    /// one byte string rather than a sequence of `u8`: the same bincode
    /// bytes, copied at once instead of byte by byte.
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    /// DATE, DATETIME, TIMESTAMP (UTC): year, month, day, hour, minute,
    /// second, microsecond.
    Date(u16, u8, u8, u8, u8, u8, u32),
    /// TIME: negative, days, hours, minutes, seconds, microseconds.
    Time(bool, u32, u8, u8, u8, u32),
}

impl Value {
    /// Approximate size in bytes.
    pub fn approx_bytes(&self) -> usize {
        match self {
            Value::Bytes(b) => 8 + b.len(),
            _ => 12,
        }
    }

    /// Canonical bytes used for unit hashing: integers in decimal text,
    /// byte strings as-is. `None` for NULL.
    pub fn unit_key_bytes(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        self.write_unit_key(&mut out).then_some(out)
    }

    /// Appends [`Value::unit_key_bytes`] to `out` without allocating;
    /// false (nothing appended) for NULL.
    pub fn write_unit_key(&self, out: &mut Vec<u8>) -> bool {
        use std::io::Write;
        // Writing to a Vec cannot fail.
        let _ = match self {
            Value::Null => return false,
            Value::Int(i) => write!(out, "{i}"),
            Value::UInt(u) => write!(out, "{u}"),
            Value::Float(f) => write!(out, "{f}"),
            Value::Double(f) => write!(out, "{f}"),
            Value::Bytes(b) => {
                out.extend_from_slice(b);
                Ok(())
            }
            other => write!(out, "{other:?}"),
        };
        true
    }
}

/// One Redis command as it appears on the replication stream, e.g.
/// `["SET", "k", "v"]`, with the database it runs in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisCommand {
    /// Database index (`SELECT n`).
    pub db: u32,
    /// Command name and arguments, raw bytes.
    pub args: Vec<Vec<u8>>,
}

impl RedisCommand {
    /// Approximate size in bytes.
    pub fn approx_bytes(&self) -> usize {
        16 + self.args.iter().map(|a| a.len() + 4).sum::<usize>()
    }
}
