//! Envelope version 1, frozen: the types exactly as the version-1 releases
//! serialized them (field order and enum variant order are the format).
//! Never edit these; convert to and from the current types instead.
//!
//! Envelope version 2 has the same layout behind a tag byte `2`.

use serde::{Deserialize, Serialize};

/// Version-1 [`crate::Transaction`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    /// Origin DC id.
    pub origin: String,
    /// Store name.
    pub store: String,
    /// Origin seq.
    pub seq: u64,
    /// HLC stamp, `(physical_ms << 16) | logical`.
    pub hlc: u64,
    /// Human-readable source position.
    pub position: String,
    /// Source commit time, ms since the Unix epoch (0 if unknown).
    pub commit_ts_ms: u64,
    /// The changes.
    pub changes: Vec<Change>,
}

/// Version-1 [`crate::Change`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Unit.
    pub unit: Option<u32>,
    /// Payload.
    pub payload: Payload,
}

/// Version-1 [`crate::Payload`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Payload {
    /// Row change.
    Row(RowChange),
    /// Redis command.
    Redis(RedisCommand),
}

/// Version-1 [`crate::RowKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RowKind {
    /// Insert.
    Insert,
    /// Update.
    Update,
    /// Delete.
    Delete,
}

/// Version-1 [`crate::ColumnMeta`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnMeta {
    /// Name.
    pub name: String,
    /// `MYSQL_TYPE_*` code.
    pub type_code: u8,
    /// Unsigned.
    pub unsigned: bool,
    /// Primary key part.
    pub primary_key: bool,
}

/// Version-1 [`crate::RowChange`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowChange {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// Kind.
    pub kind: RowKind,
    /// Columns.
    pub columns: Vec<ColumnMeta>,
    /// Before image.
    pub before: Option<Vec<Value>>,
    /// After image.
    pub after: Option<Vec<Value>>,
}

/// Version-1 [`crate::Value`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// NULL.
    Null,
    /// Signed integer.
    Int(i64),
    /// Unsigned integer.
    UInt(u64),
    /// FLOAT.
    Float(f32),
    /// DOUBLE.
    Double(f64),
    /// Bytes.
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Date and time.
    Date(u16, u8, u8, u8, u8, u8, u32),
    /// TIME.
    Time(bool, u32, u8, u8, u8, u32),
}

/// Version-1 [`crate::RedisCommand`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisCommand {
    /// Database index.
    pub db: u32,
    /// Command and arguments.
    pub args: Vec<Vec<u8>>,
}

impl From<Transaction> for crate::Transaction {
    fn from(t: Transaction) -> Self {
        // Rows of one table share one `TableMeta` (version 1 repeated it
        // in every row).
        let mut tables: Vec<std::sync::Arc<crate::TableMeta>> = Vec::new();
        let changes = t
            .changes
            .into_iter()
            .map(|c| crate::Change {
                unit: c.unit,
                payload: match c.payload {
                    Payload::Row(r) => {
                        let meta = crate::TableMeta {
                            schema: r.schema,
                            name: r.table,
                            columns: r
                                .columns
                                .into_iter()
                                .map(|m| crate::ColumnMeta {
                                    name: m.name,
                                    type_code: m.type_code,
                                    unsigned: m.unsigned,
                                    primary_key: m.primary_key,
                                })
                                .collect(),
                        };
                        let table = match tables.iter().find(|t| ***t == meta) {
                            Some(t) => t.clone(),
                            None => {
                                let t = std::sync::Arc::new(meta);
                                tables.push(t.clone());
                                t
                            }
                        };
                        crate::Payload::Row(crate::RowChange {
                            table,
                            kind: match r.kind {
                                RowKind::Insert => crate::RowKind::Insert,
                                RowKind::Update => crate::RowKind::Update,
                                RowKind::Delete => crate::RowKind::Delete,
                            },
                            before: r.before.map(values_from_v1),
                            after: r.after.map(values_from_v1),
                        })
                    }
                    Payload::Redis(r) => crate::Payload::Redis(crate::RedisCommand {
                        db: r.db,
                        args: r.args,
                    }),
                },
            })
            .collect();
        crate::Transaction {
            origin: t.origin,
            store: t.store,
            seq: t.seq,
            hlc: crate::Hlc(t.hlc),
            position: t.position,
            commit_ts_ms: t.commit_ts_ms,
            changes,
            part: 0,
            more: false,
            epoch: 0,
        }
    }
}

fn values_from_v1(v: Vec<Value>) -> Vec<crate::Value> {
    v.into_iter()
        .map(|v| match v {
            Value::Null => crate::Value::Null,
            Value::Int(i) => crate::Value::Int(i),
            Value::UInt(u) => crate::Value::UInt(u),
            Value::Float(f) => crate::Value::Float(f),
            Value::Double(f) => crate::Value::Double(f),
            Value::Bytes(b) => crate::Value::Bytes(b),
            Value::Date(a, b, c, d, e, f, g) => crate::Value::Date(a, b, c, d, e, f, g),
            Value::Time(a, b, c, d, e, f) => crate::Value::Time(a, b, c, d, e, f),
        })
        .collect()
}

fn values_to_v1(v: Vec<crate::Value>) -> Vec<Value> {
    v.into_iter()
        .map(|v| match v {
            crate::Value::Null => Value::Null,
            crate::Value::Int(i) => Value::Int(i),
            crate::Value::UInt(u) => Value::UInt(u),
            crate::Value::Float(f) => Value::Float(f),
            crate::Value::Double(f) => Value::Double(f),
            crate::Value::Bytes(b) => Value::Bytes(b),
            crate::Value::Date(a, b, c, d, e, f, g) => Value::Date(a, b, c, d, e, f, g),
            crate::Value::Time(a, b, c, d, e, f) => Value::Time(a, b, c, d, e, f),
        })
        .collect()
}

impl TryFrom<crate::Transaction> for Transaction {
    type Error = super::EnvelopeError;

    /// Errors: [`super::EnvelopeError::NotRepresentable`] for a part of a
    /// split transaction (versions 1 and 2 have no parts).
    fn try_from(t: crate::Transaction) -> Result<Self, Self::Error> {
        if !t.is_whole() {
            return Err(super::EnvelopeError::NotRepresentable(format!(
                "{}/{} seq {} is part {} of a transaction split in parts, which envelope \
                 versions 1 and 2 cannot carry",
                t.origin, t.store, t.seq, t.part
            )));
        }
        Ok(Transaction {
            origin: t.origin,
            store: t.store,
            seq: t.seq,
            hlc: t.hlc.0,
            position: t.position,
            commit_ts_ms: t.commit_ts_ms,
            changes: t
                .changes
                .into_iter()
                .map(|c| Change {
                    unit: c.unit,
                    payload: match c.payload {
                        crate::Payload::Row(r) => Payload::Row(RowChange {
                            schema: r.table.schema.clone(),
                            table: r.table.name.clone(),
                            kind: match r.kind {
                                crate::RowKind::Insert => RowKind::Insert,
                                crate::RowKind::Update => RowKind::Update,
                                crate::RowKind::Delete => RowKind::Delete,
                            },
                            columns: r
                                .table
                                .columns
                                .iter()
                                .map(|m| ColumnMeta {
                                    name: m.name.clone(),
                                    type_code: m.type_code,
                                    unsigned: m.unsigned,
                                    primary_key: m.primary_key,
                                })
                                .collect(),
                            before: r.before.map(values_to_v1),
                            after: r.after.map(values_to_v1),
                        }),
                        crate::Payload::Redis(r) => Payload::Redis(RedisCommand {
                            db: r.db,
                            args: r.args,
                        }),
                    },
                })
                .collect(),
        })
    }
}
