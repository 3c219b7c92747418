//! The Redis keys of a `[[store]]` table (`kind = "redis"`), parsed and
//! validated without I/O; see `docs/topology.md`.
//!
//! | key | meaning |
//! |---|---|
//! | `unit_key` | regular expression whose first capture group is the unit part of a key |
//! | `units_by_prefix` | `{ "prefix" = unit }`: every key with the prefix has that unit (longest prefix wins) |
//! | `unit_values` | `{ "unit part" = unit }`: the unit of a key's unit part (others hash) |
//! | `key_prefixes` | only keys with one of these prefixes replicate; empty = all |
//! | `databases` | only these database indexes replicate; empty = all |
//! | `flush` | `"refuse"` (default) or `"replicate"` `FLUSHDB`/`FLUSHALL` |
//! | `skip` | what the sink may skip instead of stopping: `"unsupported_command"` |

use crate::unit::UnitKeyPattern;
use dcsync_core::connector::ConnectorError;
use dcsync_core::topology::{Spanned, StoreConfig, StoreKeys, StoreOptions};
use std::collections::BTreeMap;

/// What to do with `FLUSHDB`/`FLUSHALL` seen on the replication stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// Ship it to the other DCs like any command.
    Replicate,
    /// Do not ship it; log an error naming the command (default).
    #[default]
    Refuse,
}

/// The Redis options of one store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RedisOptions {
    /// The part of a key that selects its unit; `None` = the key's
    /// `{hash tag}` if it has one, else the whole key
    /// (see [`crate::unit::unit_key_part`]).
    pub unit_key: Option<UnitKeyPattern>,
    /// Key prefixes whose keys all have a fixed unit, whatever their unit
    /// part; the longest matching prefix wins (see
    /// [`crate::unit::UnitRules`]). In prefix order; units are in
    /// `0..units.count`.
    pub units_by_prefix: Vec<(String, u32)>,
    /// The unit of a key's unit part (as UTF-8 text); a part not listed
    /// falls back to the hash rule.
    pub unit_values: BTreeMap<String, u32>,
    /// Key prefixes to replicate; empty means all keys.
    pub key_prefixes: Vec<String>,
    /// Database indexes to replicate; empty means all.
    pub databases: Vec<u32>,
    /// `FLUSHDB`/`FLUSHALL` handling.
    pub flush: FlushPolicy,
    /// `skip = ["unsupported_command"]`: the sink leaves out (logs and
    /// counts) a command the target Redis does not know instead of stopping
    /// the stream with a definite error. Default `false`.
    pub skip_unsupported_command: bool,
}

impl RedisOptions {
    /// The Redis options of `store`.
    ///
    /// Errors: [`ConnectorError::Definite`] if `store` was not parsed by
    /// this connector (another kind's store).
    pub fn of(store: &StoreConfig) -> Result<&RedisOptions, ConnectorError> {
        store.options::<RedisOptions>().ok_or_else(|| {
            ConnectorError::Definite(format!(
                "store {:?} (kind {:?}) has no redis options",
                store.name, store.kind
            ))
        })
    }
}

/// Parses the Redis keys of a `[[store]]` table; every problem goes to
/// `keys` at the value at fault.
pub(crate) fn parse(keys: &mut StoreKeys<'_>) -> StoreOptions {
    let unit_key = keys.take::<String>("unit_key").and_then(|p| {
        UnitKeyPattern::compile(p.get_ref())
            .map_err(|e| keys.error(p.span(), e))
            .ok()
    });
    let units_by_prefix = keys.take_units("units_by_prefix");
    let unit_values = keys
        .take_units("unit_values")
        .into_iter()
        .map(|(part, unit)| (part.into_inner(), unit))
        .collect();
    let key_prefixes: Vec<String> = keys
        .take::<Vec<String>>("key_prefixes")
        .map(Spanned::into_inner)
        .unwrap_or_default();
    // A fixed-unit prefix that no replicated key can have is a mistake
    // (a typo, or a prefix left out of key_prefixes).
    for (prefix, _) in &units_by_prefix {
        let p = prefix.get_ref();
        if !key_prefixes.is_empty()
            && !key_prefixes
                .iter()
                .any(|k| p.starts_with(k.as_str()) || k.starts_with(p.as_str()))
        {
            keys.error(
                prefix.span(),
                format!(
                    "units_by_prefix {p:?}: no key with this prefix replicates (key_prefixes = {key_prefixes:?})"
                ),
            );
        }
    }
    let units_by_prefix = units_by_prefix
        .into_iter()
        .map(|(prefix, unit)| (prefix.into_inner(), unit))
        .collect();
    let databases = keys
        .take::<Vec<u32>>("databases")
        .map(Spanned::into_inner)
        .unwrap_or_default();
    let flush = match keys.take::<String>("flush") {
        None => FlushPolicy::Refuse,
        Some(f) => match f.get_ref().as_str() {
            "refuse" => FlushPolicy::Refuse,
            "replicate" => FlushPolicy::Replicate,
            other => {
                keys.error(
                    f.span(),
                    format!("flush {other:?}: expected \"replicate\" or \"refuse\""),
                );
                FlushPolicy::Refuse
            }
        },
    };
    let mut skip_unsupported_command = false;
    for v in keys
        .take::<Vec<Spanned<String>>>("skip")
        .map(Spanned::into_inner)
        .unwrap_or_default()
    {
        match v.get_ref().as_str() {
            "unsupported_command" => skip_unsupported_command = true,
            other => keys.error(
                v.span(),
                format!("skip {other:?}: a redis store can skip \"unsupported_command\""),
            ),
        }
    }
    StoreOptions::new(RedisOptions {
        unit_key,
        units_by_prefix,
        unit_values,
        key_prefixes,
        databases,
        flush,
        skip_unsupported_command,
    })
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
