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
//!
//! # Partitions
//! A group can be split over `n` apply connections (`apply_parallel`): each
//! row operation goes to the partition its primary key hashes to, so all
//! changes of one key stay in one connection, in order. The argument above
//! needs a whole collation class in one partition, so the hash uses a key
//! normalised the way the column compares: byte-exact for integer,
//! DECIMAL, temporal, ENUM/SET, BIT and binary columns and `_nopad_bin`
//! text, with trailing spaces dropped for PAD SPACE `_bin` text of an
//! ASCII-compatible character set. A table with any other key column
//! (`_ci`/`_ai` collations, FLOAT/DOUBLE) goes whole to the partition its
//! name hashes to.

use dcsync_core::unit::fnv1a64;
use dcsync_core::{RowChange, RowKind, Value};
use std::collections::HashMap;

/// The hasher of the per-row maps (foldhash, seeded per process): SipHash
/// cost a measurable share of the apply.
type FastHash = foldhash::fast::RandomState;

/// How one primary key column's value is normalised for the partition hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyNorm {
    /// Byte-exact comparison.
    Exact,
    /// PAD SPACE binary collation: trailing spaces (0x20) do not count.
    TrimSpaces,
}

/// How the rows of one table spread over partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spread {
    /// By primary key hash; one normalisation per key column, in primary
    /// key order.
    ByKey(Vec<KeyNorm>),
    /// The whole table to one partition (keys compare loosely).
    Whole,
}

impl Spread {
    /// The spread of a table whose primary key columns have these
    /// `(data_type, character_set_name, collation_name)` triples from
    /// `information_schema.columns` (`None` for non-text columns).
    pub fn for_key(cols: &[(String, Option<String>, Option<String>)]) -> Spread {
        let mut norms = Vec::with_capacity(cols.len());
        for (data_type, charset, collation) in cols {
            let norm = match data_type.to_ascii_lowercase().as_str() {
                "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "decimal"
                | "numeric" | "date" | "datetime" | "timestamp" | "time" | "year" | "bit"
                | "enum" | "set" | "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob"
                | "longblob" => KeyNorm::Exact,
                "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => {
                    let cs = charset.as_deref().unwrap_or("").to_ascii_lowercase();
                    let co = collation.as_deref().unwrap_or("").to_ascii_lowercase();
                    let ascii_compatible = matches!(
                        cs.as_str(),
                        "utf8mb4" | "utf8mb3" | "utf8" | "latin1" | "ascii"
                    );
                    if cs == "binary" {
                        KeyNorm::Exact
                    } else if !ascii_compatible || !co.ends_with("_bin") {
                        return Spread::Whole;
                    } else if co.contains("nopad") {
                        KeyNorm::Exact
                    } else {
                        KeyNorm::TrimSpaces
                    }
                }
                _ => return Spread::Whole,
            };
            norms.push(norm);
        }
        Spread::ByKey(norms)
    }
}

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
    index: HashMap<Vec<u8>, usize, FastHash>,
    /// Net effect per key in order of first appearance: `true` = delete
    /// (before image), `false` = replace (after image).
    net: Vec<(bool, &'a [Value])>,
}

/// The planned statements of one partition: per table (in order of first
/// appearance), a delete run then a replace run.
pub type PartitionRuns<'a> = Vec<((&'a str, &'a str), Vec<Run<'a>>)>;

/// One partition's accumulation.
#[derive(Default)]
struct Part<'a> {
    order: Vec<(&'a str, &'a str)>,
    tables: HashMap<(&'a str, &'a str), Acc<'a>, FastHash>,
}

/// The plan of one group over `floors.len()` partitions: per partition,
/// the statement runs that take its keys to the group's end state.
pub struct GroupPlan<'a> {
    parts: Vec<Part<'a>>,
    /// Per partition: changes of transactions at or below this seq are
    /// already applied there and are left out.
    floors: Vec<u64>,
}

impl<'a> GroupPlan<'a> {
    /// An empty plan over `floors.len()` partitions (at least one); a
    /// change of transaction `seq` is planned into partition `p` only if
    /// `seq > floors[p]`.
    pub fn new(mut floors: Vec<u64>) -> Self {
        if floors.is_empty() {
            floors.push(0);
        }
        GroupPlan {
            parts: floors.iter().map(|_| Part::default()).collect(),
            floors,
        }
    }

    /// Adds one row change of source transaction `seq` (in source order).
    /// `pk` are the indexes of the primary key columns; `spread` says how
    /// the table's rows go to partitions.
    ///
    /// Errors: [`PlanError::MissingImage`] when an image the kind needs is
    /// absent or shorter than the column list.
    pub fn add(
        &mut self,
        r: &'a RowChange,
        pk: &[usize],
        spread: &Spread,
        seq: u64,
    ) -> Result<(), PlanError> {
        let image = |img: &'a Option<Vec<Value>>, what: &'static str| match img {
            Some(v) if v.len() == r.table.columns.len() => Ok(v.as_slice()),
            _ => Err(PlanError::MissingImage {
                table: format!("{}.{}", r.table.schema, r.table.name),
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
        let n = self.parts.len() as u64;
        let key = (r.table.schema.as_str(), r.table.name.as_str());
        for (delete, img) in ops.into_iter().flatten() {
            let p = match spread {
                _ if n == 1 => 0,
                Spread::ByKey(norms) if norms.len() == pk.len() => {
                    fnv1a64(&key_bytes(pk, img, Some(norms))) % n
                }
                _ => {
                    (fnv1a64(r.table.schema.as_bytes())
                        ^ fnv1a64(r.table.name.as_bytes()).rotate_left(1))
                        % n
                }
            } as usize;
            if seq <= self.floors[p] {
                continue;
            }
            let part = &mut self.parts[p];
            let acc = part.tables.entry(key).or_insert_with(|| {
                part.order.push(key);
                Acc::default()
            });
            let k = key_bytes(pk, img, None);
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

    /// The planned runs per partition (index = partition): `((schema,
    /// table), runs)` per table in order of first appearance; each table
    /// has at most a delete run, then a replace run.
    pub fn into_runs(self) -> Vec<PartitionRuns<'a>> {
        self.parts
            .into_iter()
            .map(|mut part| {
                let mut out = Vec::with_capacity(part.order.len());
                for key in part.order {
                    let Some(acc) = part.tables.remove(&key) else {
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
            })
            .collect()
    }
}

/// The key bytes of `img`: its primary key values, tagged and
/// length-prefixed so that different tuples never encode alike. With
/// `norms`, byte strings are normalised per column (the partition hash);
/// without, they are exact (the merge key).
fn key_bytes(pk: &[usize], img: &[Value], norms: Option<&[KeyNorm]>) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 * pk.len());
    for (n, i) in pk.iter().enumerate() {
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
                let b = match norms.and_then(|x| x.get(n)) {
                    Some(KeyNorm::TrimSpaces) => {
                        let end = b.iter().rposition(|c| *c != b' ').map_or(0, |p| p + 1);
                        &b[..end]
                    }
                    _ => b.as_slice(),
                };
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
