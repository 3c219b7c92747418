//! The unit of a Redis key: the store's unit rules, evaluated in one place
//! ([`UnitRules`]) for the source (every captured command) and for
//! `dcsync route`.
//!
//! In order (see `docs/topology.md`, "Units"):
//!
//! 1. `units_by_prefix`: a key with one of these prefixes has that
//!    prefix's unit; the longest matching prefix wins.
//! 2. `unit_values`: the unit listed for the key's *unit part*: with the
//!    store's `unit_key` pattern, its first capture group, and without one
//!    the key's `{hash tag}` (as Redis Cluster uses it) or else the whole
//!    key ([`unit_key_part`]).
//! 3. Hash: `dcsync_core::unit::unit_of(part, units.count)`, also for a
//!    part `unit_values` does not list (as for MySQL: every key keeps a
//!    unit, the same in every DC, and the attribution guard sees writes to
//!    it).
//!
//! A key that no prefix rule covers and that does not match the `unit_key`
//! pattern has no unit.

use crate::commands::KeyFilter;
use crate::config::RedisOptions;
use dcsync_core::connector::ConnectorError;
use dcsync_core::unit::{unit_of, Routed};
use std::collections::HashMap;
use std::fmt;

/// The content of the first non-empty `{...}` hash tag of `key` (as Redis
/// Cluster does), otherwise the whole key. `user:{42}:cart` gives `42`.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|b| *b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|b| *b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// A store's `unit_key` pattern: a regular expression with at least one
/// capture group. Compares by its source text.
#[derive(Clone)]
pub struct UnitKeyPattern(regex::bytes::Regex);

impl UnitKeyPattern {
    /// Compiles `pattern`.
    ///
    /// Errors: a message naming the pattern and the problem (not a regular
    /// expression; no capture group).
    pub fn compile(pattern: &str) -> Result<UnitKeyPattern, String> {
        let re = regex::bytes::Regex::new(pattern)
            .map_err(|e| format!("unit_key {pattern:?} is not a regular expression: {e}"))?;
        if re.captures_len() < 2 {
            return Err(format!(
                "unit_key {pattern:?} has no capture group: put the unit part in parentheses, e.g. \"^user:(\\d+):\""
            ));
        }
        Ok(UnitKeyPattern(re))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for UnitKeyPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.as_str())
    }
}

impl PartialEq for UnitKeyPattern {
    fn eq(&self, other: &UnitKeyPattern) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for UnitKeyPattern {}

/// The part of `key` that selects its unit: with a pattern, its first
/// capture group (`None` when the key does not match: the change has no
/// unit); without one, the hash tag ([`hash_tag`]).
///
/// `user:(\d+):` applied to `user:42:cart` gives `42`.
pub fn unit_key_part<'a>(key: &'a [u8], pattern: Option<&UnitKeyPattern>) -> Option<&'a [u8]> {
    match pattern {
        None => Some(hash_tag(key)),
        Some(p) => {
            p.0.captures(key)
                .and_then(|c| c.get(1))
                .map(|m| m.as_bytes())
        }
    }
}

/// A store's unit rules with `units.count`, ready to evaluate.
#[derive(Debug, Clone)]
pub struct UnitRules {
    count: u32,
    unit_key: Option<UnitKeyPattern>,
    /// `(prefix, unit)`, longest prefix first.
    by_prefix: Vec<(String, u32)>,
    /// Unit by unit part.
    values: HashMap<Vec<u8>, u32>,
}

/// Which rule gave a key its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule<'a> {
    /// `units_by_prefix`, with the prefix that matched.
    Prefix(&'a str),
    /// The `unit_values` entry of the unit part.
    Value,
    /// The hash of the unit part; `listed_values` when the store has a
    /// `unit_values` map that does not list it.
    Hash {
        /// The store has `unit_values` (the part is not in it).
        listed_values: bool,
    },
}

impl UnitRules {
    /// The rules of a store with `options` in a topology of `count` units.
    pub fn new(options: &RedisOptions, count: u32) -> UnitRules {
        let mut by_prefix = options.units_by_prefix.clone();
        by_prefix.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        UnitRules {
            count,
            unit_key: options.unit_key.clone(),
            by_prefix,
            values: options
                .unit_values
                .iter()
                .map(|(v, u)| (v.as_bytes().to_vec(), *u))
                .collect(),
        }
    }

    /// The unit of `key`; `None` if it has none.
    pub fn unit_of(&self, key: &[u8]) -> Option<u32> {
        self.choose(key).map(|(unit, _)| unit)
    }

    /// The unit of `key` and the rule that chose it (see the module docs).
    pub fn choose(&self, key: &[u8]) -> Option<(u32, Rule<'_>)> {
        if let Some((prefix, unit)) = self
            .by_prefix
            .iter()
            .find(|(p, _)| key.starts_with(p.as_bytes()))
        {
            return Some((*unit, Rule::Prefix(prefix)));
        }
        let part = unit_key_part(key, self.unit_key.as_ref())?;
        Some(match self.values.get(part) {
            Some(unit) => (*unit, Rule::Value),
            None => (
                unit_of(part, self.count),
                Rule::Hash {
                    listed_values: !self.values.is_empty(),
                },
            ),
        })
    }

    /// What `dcsync route` answers for `key` (`table` must be `None`: a
    /// Redis store has no tables).
    ///
    /// Errors: [`ConnectorError::Definite`] for a `table`, a key the store
    /// does not replicate (`key_prefixes`, dcsync's marker keys) and a key
    /// that has no unit.
    pub fn route(
        &self,
        store: &str,
        options: &RedisOptions,
        table: Option<&str>,
        key: &[u8],
    ) -> Result<Routed, ConnectorError> {
        let definite = |m: String| ConnectorError::Definite(format!("store {store:?}: {m}"));
        let shown = String::from_utf8_lossy(key);
        if let Some(t) = table {
            return Err(definite(format!(
                "a redis store has no tables: give the key alone, without --table {t}"
            )));
        }
        if !KeyFilter::new(options).key_passes(key) {
            return Err(definite(format!(
                "key {shown:?} is not replicated by this store (key_prefixes = {:?})",
                options.key_prefixes
            )));
        }
        let Some((unit, rule)) = self.choose(key) else {
            return Err(definite(format!(
                "key {shown:?} has no unit: it does not match unit_key {:?}",
                self.unit_key
                    .as_ref()
                    .map(UnitKeyPattern::as_str)
                    .unwrap_or_default()
            )));
        };
        let part = || {
            let p = unit_key_part(key, self.unit_key.as_ref()).unwrap_or(key);
            let text = String::from_utf8_lossy(p);
            match &self.unit_key {
                Some(_) => format!("the unit_key capture {text:?}"),
                None if p.len() < key.len() => format!("the hash tag {text:?}"),
                None => "the whole key".to_string(),
            }
        };
        let rule = match rule {
            Rule::Prefix(p) => format!("units_by_prefix {p:?}"),
            Rule::Value => format!("unit_values of {}", part()),
            Rule::Hash {
                listed_values: false,
            } => format!("hash of {}", part()),
            Rule::Hash {
                listed_values: true,
            } => format!("hash of {}: it is not in unit_values", part()),
        };
        Ok(Routed {
            unit,
            rule,
            note: None,
        })
    }
}

#[cfg(test)]
#[path = "unit_tests.rs"]
mod tests;
