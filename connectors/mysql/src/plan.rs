//! Planning one commit group: the row changes of many source transactions
//! become few multi-row statements.
//!
//! The sink applies a group of consecutive source transactions in one
//! target transaction, so only the group's end state has to be reached,
//! not each intermediate row state. Like Otter's "merge" step, every change
//! of one primary key value collapses into its net effect (the last after
//! image, or a delete), and each table gets one `DELETE .. WHERE pk IN (..)`
//! run followed by one multi-row `REPLACE` run.
//!
//! Why this reaches the source's end state, even where the key collation
//! makes different byte strings equal (`'a'`/`'A'` under a `_ci`
//! collation, `'a'`/`'a '` under PAD SPACE, `0.0`/`-0.0`): row images hold
//! the values as stored, and the source enforces uniqueness, so among the
//! byte strings of one collation class at most one ends the group as a
//! row, and it is the class's last change in source order; all others end
//! as deletes. Running every delete before every replace therefore leaves
//! exactly that row. `REPLACE` (not `INSERT .. ON DUPLICATE KEY UPDATE`)
//! makes the planned order safe for secondary unique keys too: a target row
//! whose old value still holds a unique value that another row now owns
//! changes in this group, so `REPLACE` removing it is undone by its own net
//! image (or matches its net delete). Without foreign key checks and with
//! full row images, `REPLACE` of a row whose primary key exists is an
//! update in place.

use dcsync_core::{RowChange, RowKind, Value};
use std::collections::HashMap;

/// Kind of a planned statement run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// `DELETE` by primary key (rows are before images).
    Delete,
    /// `REPLACE` of full after images.
    Replace,
}

/// A run of row images of one table to be applied by statements of one kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Run<'a> {
    pub kind: RunKind,
    /// Full row images (before images for deletes).
    pub rows: Vec<&'a [Value]>,
}

/// Why a change cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// An insert/update without a full after image, or an update/delete
    /// without a full before image (the source must log full row images).
    #[error("{table}: {kind:?} change without a full {image} image")]
    MissingImage {
        table: String,
        kind: RowKind,
        image: &'static str,
    },
}

/// Per-table accumulation of one group.
#[derive(Default)]
struct Acc<'a> {
    /// Merge key -> index into `net`.
    index: HashMap<Vec<u8>, usize>,
    /// Net effect per key in order of first appearance: `true` = delete
    /// (before image), `false` = replace (after image).
    net: Vec<(bool, &'a [Value])>,
}

/// The plan of one group: per table (in order of first appearance), the
/// statement runs that take the target to the group's end state.
pub struct GroupPlan<'a> {
    order: Vec<(&'a str, &'a str)>,
    tables: HashMap<(&'a str, &'a str), Acc<'a>>,
}

impl Default for GroupPlan<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> GroupPlan<'a> {
    /// An empty plan.
    pub fn new() -> Self {
        GroupPlan {
            order: Vec::new(),
            tables: HashMap::new(),
        }
    }

    /// Adds one row change (in source order). `pk` are the indexes of the
    /// primary key columns.
    ///
    /// Errors: [`PlanError::MissingImage`] when an image the kind needs is
    /// absent or shorter than the column list.
    pub fn add(&mut self, r: &'a RowChange, pk: &[usize]) -> Result<(), PlanError> {
        let image = |img: &'a Option<Vec<Value>>, what: &'static str| match img {
            Some(v) if v.len() == r.columns.len() => Ok(v.as_slice()),
            _ => Err(PlanError::MissingImage {
                table: format!("{}.{}", r.schema, r.table),
                kind: r.kind,
                image: what,
            }),
        };
        // Every change becomes at most two row operations: (delete, image).
        let ops: [Option<(bool, &'a [Value])>; 2] = match r.kind {
            RowKind::Insert => [Some((false, image(&r.after, "after")?)), None],
            RowKind::Delete => [Some((true, image(&r.before, "before")?)), None],
            RowKind::Update => {
                let before = image(&r.before, "before")?;
                let after = image(&r.after, "after")?;
                if pk.iter().any(|i| before[*i] != after[*i]) {
                    [Some((true, before)), Some((false, after))]
                } else {
                    [Some((false, after)), None]
                }
            }
        };
        let key = (r.schema.as_str(), r.table.as_str());
        let acc = self.tables.entry(key).or_insert_with(|| {
            self.order.push(key);
            Acc::default()
        });
        for (delete, img) in ops.into_iter().flatten() {
            let k = merge_key(pk, img);
            match acc.index.get(&k) {
                Some(i) => acc.net[*i] = (delete, img),
                None => {
                    acc.index.insert(k, acc.net.len());
                    acc.net.push((delete, img));
                }
            }
        }
        Ok(())
    }

    /// The planned runs: `((schema, table), runs)` per table in order of
    /// first appearance; each table has at most a delete run, then a
    /// replace run.
    pub fn into_runs(mut self) -> Vec<((&'a str, &'a str), Vec<Run<'a>>)> {
        let mut out = Vec::with_capacity(self.order.len());
        for key in self.order {
            let Some(acc) = self.tables.remove(&key) else {
                continue;
            };
            let (del, rep): (Vec<_>, Vec<_>) = acc.net.into_iter().partition(|(d, _)| *d);
            let mut runs = Vec::with_capacity(2);
            for (kind, rows) in [(RunKind::Delete, del), (RunKind::Replace, rep)] {
                if !rows.is_empty() {
                    runs.push(Run {
                        kind,
                        rows: rows.into_iter().map(|(_, r)| r).collect(),
                    });
                }
            }
            out.push((key, runs));
        }
        out
    }
}

/// The merge key of `img`: its primary key values, tagged and
/// length-prefixed so that different tuples never encode alike.
fn merge_key(pk: &[usize], img: &[Value]) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 * pk.len());
    for i in pk {
        match &img[*i] {
            Value::Null => k.push(0),
            Value::Int(v) => {
                k.push(1);
                k.extend_from_slice(&v.to_le_bytes());
            }
            Value::UInt(v) => {
                k.push(2);
                k.extend_from_slice(&v.to_le_bytes());
            }
            Value::Float(v) => {
                k.push(3);
                k.extend_from_slice(&v.to_bits().to_le_bytes());
            }
            Value::Double(v) => {
                k.push(4);
                k.extend_from_slice(&v.to_bits().to_le_bytes());
            }
            Value::Bytes(b) => {
                k.push(5);
                k.extend_from_slice(&(b.len() as u64).to_le_bytes());
                k.extend_from_slice(b);
            }
            Value::Date(y, mo, d, h, mi, s, us) => {
                k.push(6);
                k.extend_from_slice(&y.to_le_bytes());
                k.extend_from_slice(&[*mo, *d, *h, *mi, *s]);
                k.extend_from_slice(&us.to_le_bytes());
            }
            Value::Time(neg, d, h, mi, s, us) => {
                k.push(7);
                k.push(u8::from(*neg));
                k.extend_from_slice(&d.to_le_bytes());
                k.extend_from_slice(&[*h, *mi, *s]);
                k.extend_from_slice(&us.to_le_bytes());
            }
        }
    }
    k
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
