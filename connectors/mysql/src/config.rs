//! The MySQL keys of a `[[store]]` table (`kind = "mysql"`), parsed and
//! validated without I/O; see `docs/topology.md`.
//!
//! | key | meaning |
//! |---|---|
//! | `tables` | `schema.table` patterns to replicate (`*` globs); empty = all |
//! | `unit_key` | column whose value selects the unit |
//! | `units_by_table` | `{ "schema.table" pattern = unit }`: every row of a matching table has that unit |
//! | `unit_values` | `{ "value" = unit }`: the unit of a `unit_key` value (others hash) |
//! | `apply_parallel` | sink connections per group, 1..=[`MAX_APPLY_PARALLEL`] |
//! | `skip` | what the source may skip instead of stopping: `"statement_dml"`, `"no_primary_key"` |
//! | `initial` | first start: `"snapshot"` (default: ship the rows the tables already hold, then tail from the snapshot's position) or `"none"` (tail from the binlog's end) |
//! | `snapshot_rows_per_sec` | rate limit of the initial snapshot, rows/s (0 = none, the default) |

use dcsync_core::connector::ConnectorError;
use dcsync_core::topology::{Spanned, StoreConfig, StoreKeys, StoreOptions};
use std::collections::BTreeMap;

/// Default of [`MysqlOptions::apply_parallel`].
pub const DEFAULT_APPLY_PARALLEL: usize = 4;
/// Largest accepted [`MysqlOptions::apply_parallel`].
pub const MAX_APPLY_PARALLEL: usize = 64;

/// Schemas that never replicate: the server's own and dcsync's marker
/// schema.
const SYSTEM_SCHEMAS: [&str; 5] = [
    "mysql",
    "sys",
    "information_schema",
    "performance_schema",
    crate::MARKER_SCHEMA,
];

/// The MySQL options of one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlOptions {
    /// `schema.table` patterns to replicate; `*` matches any run of
    /// characters. Empty means every table outside the system schemas.
    pub tables: Vec<String>,
    /// Column whose value selects the unit; `None` = no unit (unless
    /// `units_by_table` gives the table one).
    pub unit_key: Option<String>,
    /// `schema.table` patterns (`*` globs, as in `tables`) whose rows all
    /// have a fixed unit, whatever their `unit_key` value; in name order
    /// (the most specific matching pattern wins: see
    /// [`crate::units::UnitRules`]). Units are in `0..units.count`.
    pub units_by_table: Vec<(String, u32)>,
    /// The unit of a `unit_key` value, by its text form (canonical bytes
    /// as UTF-8: integers in decimal); a value not listed falls back to
    /// the hash rule. Empty unless `unit_key` is set.
    pub unit_values: BTreeMap<String, u32>,
    /// Sink: connections that apply one group in parallel, each taking the
    /// rows whose primary key hashes to it (1..=[`MAX_APPLY_PARALLEL`],
    /// default [`DEFAULT_APPLY_PARALLEL`]; 1 applies every group as one
    /// atomic target transaction).
    pub apply_parallel: usize,
    /// What the source may skip (logged and counted) instead of stopping the
    /// store with a definite error. Empty by default: nothing is skipped.
    pub skip: SkipSet,
    /// What the source does on its first start (no resume position).
    pub initial: Initial,
    /// Most rows per second the initial snapshot reads (0: no limit).
    pub snapshot_rows_per_sec: u64,
}

/// What a MySQL store's source does on its first start (the `initial` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Initial {
    /// Read the replicated tables in a consistent snapshot, ship their rows
    /// as ordinary local changes, then tail the binlog from the snapshot's
    /// position: rows that existed before, and rows written while the agent
    /// was starting, are not missed (see `crate::source` snapshot module).
    #[default]
    Snapshot,
    /// Tail from the binlog's end: only what is written afterwards ships.
    None,
}

/// What a MySQL store's source may skip instead of stopping (the `skip` key).
/// Both default to `false`: the source stops with a definite error naming the
/// event, and nothing after it is journaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SkipSet {
    /// `"statement_dml"`: an INSERT/UPDATE/DELETE/REPLACE/LOAD DATA on a
    /// replicated table logged in STATEMENT format (a session with
    /// `binlog_format=STATEMENT`, or MIXED choosing a statement).
    pub statement_dml: bool,
    /// `"no_primary_key"`: the row events of a replicated table without a
    /// primary key (the rows are counted).
    pub no_primary_key: bool,
}

impl SkipSet {
    /// The accepted names, for messages and docs.
    pub const NAMES: [&'static str; 2] = ["statement_dml", "no_primary_key"];
}

impl Default for MysqlOptions {
    fn default() -> Self {
        MysqlOptions {
            tables: Vec::new(),
            unit_key: None,
            units_by_table: Vec::new(),
            unit_values: BTreeMap::new(),
            apply_parallel: DEFAULT_APPLY_PARALLEL,
            skip: SkipSet::default(),
            initial: Initial::default(),
            snapshot_rows_per_sec: 0,
        }
    }
}

impl MysqlOptions {
    /// The MySQL options of `store`.
    ///
    /// Errors: [`ConnectorError::Definite`] if `store` was not parsed by
    /// this connector (another kind's store).
    pub fn of(store: &StoreConfig) -> Result<&MysqlOptions, ConnectorError> {
        store.options::<MysqlOptions>().ok_or_else(|| {
            ConnectorError::Definite(format!(
                "store {:?} (kind {:?}) has no mysql options",
                store.name, store.kind
            ))
        })
    }

    /// Whether `schema.table` is replicated by this store. System schemas
    /// (`mysql`, `sys`, `information_schema`, `performance_schema`, `dcsync`)
    /// never are.
    pub fn matches_table(&self, schema: &str, table: &str) -> bool {
        replicates(&self.tables, schema, table)
    }
}

/// Parses the MySQL keys of a `[[store]]` table; every problem goes to
/// `keys` at the value at fault.
pub(crate) fn parse(keys: &mut StoreKeys<'_>) -> StoreOptions {
    let mut tables = Vec::new();
    for t in keys
        .take::<Vec<Spanned<String>>>("tables")
        .map(Spanned::into_inner)
        .unwrap_or_default()
    {
        if !t.get_ref().contains('.') {
            keys.error(
                t.span(),
                format!(
                    "table pattern {:?} must be schema.table (e.g. \"shop.*\")",
                    t.get_ref()
                ),
            );
        }
        tables.push(t.into_inner());
    }
    let unit_key = keys.take::<String>("unit_key").map(Spanned::into_inner);
    let mut units_by_table = Vec::new();
    for (pattern, unit) in keys.take_units("units_by_table") {
        let p = pattern.get_ref();
        let Some((schema, table)) = p.split_once('.') else {
            keys.error(
                pattern.span(),
                format!(
                    "units_by_table pattern {p:?} must be schema.table (e.g. \"shop.audit_*\")"
                ),
            );
            continue;
        };
        if !p.contains('*') && !replicates(&tables, schema, table) {
            keys.error(
                pattern.span(),
                format!(
                    "units_by_table {p:?}: the store does not replicate this table (tables = {tables:?})"
                ),
            );
        }
        units_by_table.push((pattern.into_inner(), unit));
    }
    let values = keys.take_units("unit_values");
    if let (None, Some((first, _))) = (&unit_key, values.first()) {
        keys.error(
            first.span(),
            "unit_values needs unit_key: the column whose value is looked up in it",
        );
    }
    let unit_values = values
        .into_iter()
        .map(|(value, unit)| (value.into_inner(), unit))
        .collect();
    let apply_parallel = match keys.take::<i64>("apply_parallel") {
        None => DEFAULT_APPLY_PARALLEL,
        Some(n) if (1..=MAX_APPLY_PARALLEL as i64).contains(n.get_ref()) => *n.get_ref() as usize,
        Some(n) => {
            keys.error(
                n.span(),
                format!(
                    "apply_parallel = {}: must be between 1 and {MAX_APPLY_PARALLEL}",
                    n.get_ref()
                ),
            );
            DEFAULT_APPLY_PARALLEL
        }
    };
    let mut skip = SkipSet::default();
    for v in keys
        .take::<Vec<Spanned<String>>>("skip")
        .map(Spanned::into_inner)
        .unwrap_or_default()
    {
        match v.get_ref().as_str() {
            "statement_dml" => skip.statement_dml = true,
            "no_primary_key" => skip.no_primary_key = true,
            other => keys.error(
                v.span(),
                format!(
                    "skip {other:?}: a mysql store can skip {}",
                    SkipSet::NAMES
                        .iter()
                        .map(|n| format!("{n:?}"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            ),
        }
    }
    let initial = match keys.take::<String>("initial") {
        None => Initial::default(),
        Some(v) => match v.get_ref().as_str() {
            "snapshot" => Initial::Snapshot,
            "none" => Initial::None,
            other => {
                keys.error(
                    v.span(),
                    format!("initial = {other:?}: must be \"snapshot\" or \"none\""),
                );
                Initial::default()
            }
        },
    };
    let snapshot_rows_per_sec = match keys.take::<i64>("snapshot_rows_per_sec") {
        None => 0,
        Some(n) if *n.get_ref() >= 0 => *n.get_ref() as u64,
        Some(n) => {
            keys.error(
                n.span(),
                format!(
                    "snapshot_rows_per_sec = {}: must be 0 (no limit) or more",
                    n.get_ref()
                ),
            );
            0
        }
    };
    StoreOptions::new(MysqlOptions {
        tables,
        unit_key,
        units_by_table,
        unit_values,
        apply_parallel,
        skip,
        initial,
        snapshot_rows_per_sec,
    })
}

/// Whether a store with `tables` patterns replicates `schema.table`
/// ([`MysqlOptions::matches_table`]).
fn replicates(tables: &[String], schema: &str, table: &str) -> bool {
    if SYSTEM_SCHEMAS.contains(&schema) {
        return false;
    }
    if tables.is_empty() {
        return true;
    }
    let full = format!("{schema}.{table}");
    tables.iter().any(|p| glob_match(p, &full))
}

/// `*`-only glob match (`shop.*`, `*.orders`, `shop.order_*`).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
