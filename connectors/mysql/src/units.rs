//! The unit of a row: the store's unit rules, evaluated in this one place
//! for the source (every captured row) and for `dcsync route`.
//!
//! In order (see `docs/topology.md`, "Units"):
//!
//! 1. `units_by_table`: a row of a table matching a pattern has that
//!    pattern's unit, whatever its values. When several patterns match, the
//!    most specific wins: an exact name over any pattern, then the pattern
//!    with the most characters other than `*`, then the first in name
//!    order (so `"shop.audit_*"` beats `"shop.*"`).
//! 2. `unit_values`: the unit listed for the row's `unit_key` value (its
//!    canonical bytes, [`dcsync_core::Value::unit_key_bytes`]).
//! 3. Hash: `fnv1a64(value) mod units.count`, also for a value
//!    `unit_values` does not list — so a region added to the application
//!    before the map still gets a unit, the same in every DC, and a write
//!    to it from a DC that is not that unit's owner is reported by the
//!    attribution guard instead of going unnoticed.
//!
//! A row of a table no pattern matches, without a `unit_key` column or
//! with a NULL in it, has no unit.

use crate::config::{glob_match, MysqlOptions};
use dcsync_core::connector::ConnectorError;
use dcsync_core::unit::{unit_of, Routed};
use dcsync_core::{ColumnMeta, Value};
use std::collections::HashMap;

/// A store's unit rules with `units.count`, ready to evaluate.
#[derive(Debug, Clone)]
pub struct UnitRules {
    count: u32,
    unit_key: Option<String>,
    /// `(pattern, unit)`, most specific first.
    by_table: Vec<(String, u32)>,
    /// Unit by `unit_key` value bytes.
    values: HashMap<Vec<u8>, u32>,
}

/// Which rule gave a row its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule<'a> {
    /// `units_by_table`, with the pattern that matched.
    Table(&'a str),
    /// The `unit_values` entry of the value.
    Value,
    /// The hash of the value; `listed_values` when the store has a
    /// `unit_values` map that does not list it.
    Hash {
        /// The store has `unit_values` (the value is not in it).
        listed_values: bool,
    },
}

/// How specific a `units_by_table` pattern is: exact names first, then
/// more literal characters (sorts ascending = most specific first).
fn specificity(pattern: &str) -> (bool, std::cmp::Reverse<usize>) {
    (
        pattern.contains('*'),
        std::cmp::Reverse(pattern.chars().filter(|c| *c != '*').count()),
    )
}

impl UnitRules {
    /// The rules of a store with `options` in a topology of `count` units.
    pub fn new(options: &MysqlOptions, count: u32) -> UnitRules {
        let mut by_table = options.units_by_table.clone();
        // Stable: equally specific patterns keep their name order.
        by_table.sort_by_key(|(p, _)| specificity(p));
        UnitRules {
            count,
            unit_key: options.unit_key.clone(),
            by_table,
            values: options
                .unit_values
                .iter()
                .map(|(v, u)| (v.as_bytes().to_vec(), *u))
                .collect(),
        }
    }

    /// The unit of a row of `table` (`schema.table`) whose `unit_key`
    /// column holds `value` (canonical bytes; `None` if the table has no
    /// such column or it is NULL); `None` if the row has no unit.
    pub fn unit_of(&self, table: &str, value: Option<&[u8]>) -> Option<u32> {
        self.choose(Some(table), value).map(|(unit, _)| unit)
    }

    /// [`UnitRules::unit_of`] for a row image of `table` with `columns`
    /// (the image the source reads the unit from: the new row, or the old
    /// one of a DELETE). The value is read only when no table rule applies.
    pub fn unit_of_row(
        &self,
        table: &str,
        columns: &[ColumnMeta],
        image: Option<&[Value]>,
    ) -> Option<u32> {
        if let Some((_, unit)) = self.table_rule(table) {
            return Some(unit);
        }
        let key = self.unit_key.as_deref()?;
        let idx = columns.iter().position(|c| c.name == key)?;
        let bytes = image?.get(idx)?.unit_key_bytes()?;
        self.value_rule(&bytes).map(|(unit, _)| unit)
    }

    /// The unit and the rule that chose it (see the module docs); without
    /// a `table`, only the `unit_key` rules apply.
    pub fn choose(&self, table: Option<&str>, value: Option<&[u8]>) -> Option<(u32, Rule<'_>)> {
        if let Some((pattern, unit)) = table.and_then(|t| self.table_rule(t)) {
            return Some((unit, Rule::Table(pattern)));
        }
        self.value_rule(value?)
    }

    /// The unit of a `unit_key` value: its `unit_values` entry, else its
    /// hash; `None` if the store has no `unit_key`.
    fn value_rule(&self, value: &[u8]) -> Option<(u32, Rule<'_>)> {
        self.unit_key.as_ref()?;
        Some(match self.values.get(value) {
            Some(unit) => (*unit, Rule::Value),
            None => (
                unit_of(value, self.count),
                Rule::Hash {
                    listed_values: !self.values.is_empty(),
                },
            ),
        })
    }

    /// The most specific `units_by_table` pattern matching `table`.
    fn table_rule(&self, table: &str) -> Option<(&str, u32)> {
        self.by_table
            .iter()
            .find(|(p, _)| glob_match(p, table))
            .map(|(p, u)| (p.as_str(), *u))
    }

    /// What `dcsync route` answers for a row of `table` (`schema.table`;
    /// `None`: only the `unit_key` rules are applied, with a note if the
    /// store has table rules) whose `unit_key` value has the text `value`.
    ///
    /// Errors: [`ConnectorError::Definite`] for a table that is not
    /// `schema.table` or that the store does not replicate, and for a row
    /// that has no unit (no table rule and no `unit_key`).
    pub fn route(
        &self,
        store: &str,
        options: &MysqlOptions,
        table: Option<&str>,
        value: &[u8],
    ) -> Result<Routed, ConnectorError> {
        let definite = |m: String| ConnectorError::Definite(format!("store {store:?}: {m}"));
        let mut note = None;
        match table {
            Some(t) => {
                let Some((schema, name)) = t.split_once('.') else {
                    return Err(definite(format!(
                        "--table {t:?} must be schema.table (e.g. shop.orders)"
                    )));
                };
                if !options.matches_table(schema, name) {
                    return Err(definite(format!(
                        "table {t} is not replicated by this store (tables = {:?})",
                        options.tables
                    )));
                }
            }
            None if !self.by_table.is_empty() => {
                note = Some(format!(
                    "store {store:?} gives some tables a fixed unit (units_by_table); pass --table \
                     schema.table to apply them"
                ));
            }
            None => {}
        }
        let Some((unit, rule)) = self.choose(table, Some(value)) else {
            return Err(definite(match table {
                Some(t) => format!(
                    "rows of {t} have no unit: the store has no unit_key and no units_by_table \
                     pattern matches {t}"
                ),
                None => "rows have no unit: the store has no unit_key".to_string(),
            }));
        };
        let key = self.unit_key.as_deref().unwrap_or_default();
        let rule = match rule {
            Rule::Table(p) => format!("units_by_table {p:?}"),
            Rule::Value => format!("unit_values of {key}"),
            Rule::Hash {
                listed_values: false,
            } => format!("hash of {key}"),
            Rule::Hash {
                listed_values: true,
            } => format!("hash of {key}: the value is not in unit_values"),
        };
        Ok(Routed { unit, rule, note })
    }
}

#[cfg(test)]
#[path = "units_tests.rs"]
mod tests;
