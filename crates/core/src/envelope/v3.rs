//! Envelope version 3, the current wire layout (see the module docs of
//! [`super`]). Field order and enum variant order are the format: when the
//! current types change, freeze these types as they are (as [`super::v1`]
//! is) and write a new version.
//!
//! [`TxOut`] borrows a [`Transaction`] for encoding; [`TxIn`] is what
//! decoding produces, turned into a [`Transaction`] by [`TxIn::into_tx`].
//! Both serialize identically (borrowed and owned forms of the same
//! layout).

use super::EnvelopeError;
use crate::{
    Change, Hlc, Payload, RedisCommand, RowChange, RowKind, TableMeta, Transaction, Value,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A record to encode, borrowing the transaction.
#[derive(Serialize)]
pub struct TxOut<'a> {
    origin: &'a str,
    store: &'a str,
    seq: u64,
    hlc: u64,
    position: &'a str,
    commit_ts_ms: u64,
    part: u32,
    more: bool,
    /// The tables the rows refer to, each once.
    tables: Vec<&'a TableMeta>,
    changes: Vec<ChangeOut<'a>>,
}

#[derive(Serialize)]
struct ChangeOut<'a> {
    unit: Option<u32>,
    payload: PayloadOut<'a>,
}

#[derive(Serialize)]
enum PayloadOut<'a> {
    Row(RowOut<'a>),
    Redis(&'a RedisCommand),
}

#[derive(Serialize)]
struct RowOut<'a> {
    /// Index into the record's `tables`.
    table: u32,
    kind: RowKind,
    before: BeforeOut<'a>,
    after: Option<&'a [Value]>,
}

/// The before image: absent, whole, or (UPDATE) only the columns whose
/// value differs from the after image, as `(column index, value)`.
#[derive(Serialize)]
enum BeforeOut<'a> {
    None,
    Full(&'a [Value]),
    Changed(Vec<(u32, &'a Value)>),
}

impl<'a> TxOut<'a> {
    /// The wire form of `tx`: tables deduplicated by identity (rows of one
    /// table share one `Arc<TableMeta>`; equal tables behind different
    /// `Arc`s are deduplicated by value too).
    pub fn from_tx(tx: &'a Transaction) -> TxOut<'a> {
        let mut tables: Vec<&'a TableMeta> = Vec::new();
        let mut ptrs: Vec<*const TableMeta> = Vec::new();
        let changes = tx
            .changes
            .iter()
            .map(|c| ChangeOut {
                unit: c.unit,
                payload: match &c.payload {
                    Payload::Redis(r) => PayloadOut::Redis(r),
                    Payload::Row(r) => {
                        let ptr = Arc::as_ptr(&r.table);
                        let idx = match ptrs.iter().position(|p| *p == ptr) {
                            Some(i) => i,
                            None => match tables.iter().position(|t| **t == *r.table) {
                                Some(i) => i,
                                None => {
                                    tables.push(&r.table);
                                    ptrs.push(ptr);
                                    tables.len() - 1
                                }
                            },
                        };
                        PayloadOut::Row(RowOut {
                            table: idx as u32,
                            kind: r.kind,
                            before: before_out(r),
                            after: r.after.as_deref(),
                        })
                    }
                },
            })
            .collect();
        TxOut {
            origin: &tx.origin,
            store: &tx.store,
            seq: tx.seq,
            hlc: tx.hlc.0,
            position: &tx.position,
            commit_ts_ms: tx.commit_ts_ms,
            part: tx.part,
            more: tx.more,
            tables,
            changes,
        }
    }
}

fn before_out(r: &RowChange) -> BeforeOut<'_> {
    match (&r.before, &r.after) {
        (None, _) => BeforeOut::None,
        (Some(b), Some(a)) if r.kind == RowKind::Update && a.len() == b.len() => {
            BeforeOut::Changed(
                b.iter()
                    .zip(a)
                    .enumerate()
                    .filter(|(_, (x, y))| x != y)
                    .map(|(i, (x, _))| (i as u32, x))
                    .collect(),
            )
        }
        (Some(b), _) => BeforeOut::Full(b),
    }
}

/// A decoded record (owned form of [`TxOut`]).
#[derive(Deserialize)]
pub struct TxIn {
    origin: String,
    store: String,
    seq: u64,
    hlc: u64,
    position: String,
    commit_ts_ms: u64,
    part: u32,
    more: bool,
    tables: Vec<TableMeta>,
    changes: Vec<ChangeIn>,
}

#[derive(Deserialize)]
struct ChangeIn {
    unit: Option<u32>,
    payload: PayloadIn,
}

#[derive(Deserialize)]
enum PayloadIn {
    Row(RowIn),
    Redis(RedisCommand),
}

#[derive(Deserialize)]
struct RowIn {
    table: u32,
    kind: RowKind,
    before: BeforeIn,
    after: Option<Vec<Value>>,
}

#[derive(Deserialize)]
enum BeforeIn {
    None,
    Full(Vec<Value>),
    Changed(Vec<(u32, Value)>),
}

impl TxIn {
    /// The transaction this record holds.
    ///
    /// Errors: [`EnvelopeError::Malformed`] when a row names a table index
    /// outside the dictionary, or a partial before image has no after image
    /// or a column index outside it.
    pub fn into_tx(self) -> Result<Transaction, EnvelopeError> {
        let malformed = |reason: String| EnvelopeError::Malformed { version: 3, reason };
        let tables: Vec<Arc<TableMeta>> = self.tables.into_iter().map(Arc::new).collect();
        let mut changes = Vec::with_capacity(self.changes.len());
        for c in self.changes {
            let payload = match c.payload {
                PayloadIn::Redis(r) => Payload::Redis(r),
                PayloadIn::Row(r) => {
                    let table = tables.get(r.table as usize).cloned().ok_or_else(|| {
                        malformed(format!(
                            "row refers to table {} of {}",
                            r.table,
                            tables.len()
                        ))
                    })?;
                    let before = match r.before {
                        BeforeIn::None => None,
                        BeforeIn::Full(v) => Some(v),
                        BeforeIn::Changed(diff) => {
                            let Some(after) = &r.after else {
                                return Err(malformed(
                                    "partial before image without an after image".into(),
                                ));
                            };
                            let mut b = after.clone();
                            for (i, v) in diff {
                                let slot = b.get_mut(i as usize).ok_or_else(|| {
                                    malformed(format!("before image column {i} of {}", after.len()))
                                })?;
                                *slot = v;
                            }
                            Some(b)
                        }
                    };
                    Payload::Row(RowChange {
                        table,
                        kind: r.kind,
                        before,
                        after: r.after,
                    })
                }
            };
            changes.push(Change {
                unit: c.unit,
                payload,
            });
        }
        Ok(Transaction {
            origin: self.origin,
            store: self.store,
            seq: self.seq,
            hlc: Hlc(self.hlc),
            position: self.position,
            commit_ts_ms: self.commit_ts_ms,
            changes,
            part: self.part,
            more: self.more,
            epoch: 0,
        })
    }
}
