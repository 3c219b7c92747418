//! The attribution guard: a write committed in this DC whose change has a
//! unit another DC owns is a *misrouted write* (docs/architecture.md,
//! invariant 6: each unit's writes belong to its owner DC).
//!
//! It is reported, never dropped: the change is journaled and replicated
//! like any other. For each store the guard counts misrouted writes (one
//! per row or Redis command) in total and per unit, keeps the last one
//! (table, primary key or Redis key, unit, owner DC, time, position) for
//! the status, counts them in `dcsync_misrouted_writes_total{store}` and
//! logs at most one warning per store every [`LOG_INTERVAL`], saying how
//! many it left out since the previous one.
//!
//! The supervisor scans the local transactions of a batch before it
//! journals them ([`Guard::scan`]) and records what was found once the
//! journal committed them ([`Guard::record`]). Counts are since the agent
//! started; a source restarted inside a large transaction reads its parts
//! again, and their misrouted writes are counted again.

use crate::status::SourceStatus;
use dcsync_core::topology::Units;
use dcsync_core::{Change, Payload, RowKind, Transaction, Value};
use serde::{Deserialize, Serialize};
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one misrouted-write warning per store this often.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Most units [`MisroutedStatus::by_unit`] lists; writes to further units
/// are counted in [`MisroutedStatus::other_units`].
pub const MAX_UNITS_SHOWN: usize = 64;
/// Longest value shown in a key (characters); longer ones are cut.
const MAX_VALUE_CHARS: usize = 64;

/// Misrouted writes of one store's source since the agent started (the
/// `misrouted` object of a source in `status.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MisroutedStatus {
    /// Misrouted writes (rows or Redis commands).
    pub total: u64,
    /// Misrouted writes per unit, for the first [`MAX_UNITS_SHOWN`] units
    /// that had one.
    pub by_unit: BTreeMap<u32, u64>,
    /// Misrouted writes to units that did not fit in `by_unit`.
    pub other_units: u64,
    /// The last misrouted write.
    pub last: Option<MisroutedWrite>,
}

/// One misrouted write, for the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MisroutedWrite {
    /// `schema.table` of a row; `None` for a Redis command.
    pub table: Option<String>,
    /// The row's primary key (`id=7`, `a=1,b="x"`), or the Redis
    /// command's key (its first argument).
    pub key: String,
    /// The change's unit.
    pub unit: u32,
    /// The DC that owns the unit.
    pub owner: String,
    /// When this agent read it, ms since the Unix epoch.
    pub at_ms: u64,
    /// Source position after its transaction (empty for a part of a large
    /// transaction).
    pub position: String,
}

/// What [`Guard::scan`] found in one batch: what [`Guard::record`] adds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// Misrouted writes per unit.
    per_unit: BTreeMap<u32, u64>,
    /// Their sum.
    total: u64,
    /// The last of them.
    last: Option<MisroutedWrite>,
}

/// The guard of one store's source.
#[derive(Debug)]
pub struct Guard {
    me: String,
    store: String,
    log: RateLimit,
}

impl Guard {
    /// The guard of store `store` of DC `me`.
    pub fn new(me: &str, store: &str) -> Guard {
        Guard {
            me: me.to_string(),
            store: store.to_string(),
            log: RateLimit::new(LOG_INTERVAL),
        }
    }

    /// The misrouted writes among the changes of `txs` (local transactions
    /// of this store, about to be journaled): changes whose unit `units`
    /// gives to another DC. Changes without a unit are never misrouted.
    pub fn scan(&self, units: &Units, txs: &[Transaction]) -> Found {
        let mut found = Found::default();
        let mut last = None;
        for tx in txs {
            for change in &tx.changes {
                let Some(unit) = change.unit else { continue };
                let Some(owner) = units.owner_of(unit) else {
                    continue;
                };
                if owner == self.me {
                    continue;
                }
                *found.per_unit.entry(unit).or_insert(0) += 1;
                found.total += 1;
                last = Some((tx, change, unit, owner));
            }
        }
        found.last = last.map(|(tx, change, unit, owner)| {
            let (table, key) = describe(change);
            MisroutedWrite {
                table,
                key,
                unit,
                owner: owner.to_string(),
                at_ms: dcsync_core::now_ms(),
                position: tx.position.clone(),
            }
        });
        found
    }

    /// Adds what [`Guard::scan`] found (once it is journaled) to the
    /// metric and `status`, and logs it unless a warning for this store
    /// was logged less than [`LOG_INTERVAL`] ago.
    pub fn record(&mut self, found: Found, status: &Mutex<SourceStatus>) {
        let Some(last) = found.last else { return };
        dcsync_core::events::MisroutedWrites {
            store: &self.store,
            count: found.total,
        }
        .emit();
        if let Some(suppressed) = self.log.admit(Instant::now(), found.total) {
            tracing::warn!(
                store = %self.store,
                table = %last.table.as_deref().unwrap_or("-"),
                key = ?last.key,
                unit = last.unit,
                owner = %last.owner,
                suppressed,
                "misrouted write: written here to a unit another DC owns (still replicated; send \
                 the unit's writes to its owner, see `dcsync route`); suppressed: not logged since \
                 the previous warning"
            );
        }
        if let Ok(mut st) = status.lock() {
            let m = &mut st.misrouted;
            m.total += found.total;
            for (unit, n) in found.per_unit {
                let room = m.by_unit.len() < MAX_UNITS_SHOWN;
                match m.by_unit.entry(unit) {
                    Entry::Occupied(mut count) => *count.get_mut() += n,
                    Entry::Vacant(slot) if room => {
                        slot.insert(n);
                    }
                    Entry::Vacant(_) => m.other_units += n,
                }
            }
            m.last = Some(last);
        }
    }
}

/// Admits one log line per `interval`, counting what it holds back.
#[derive(Debug)]
struct RateLimit {
    interval: Duration,
    last: Option<Instant>,
    /// Events held back since the last admitted line.
    held: u64,
}

impl RateLimit {
    fn new(interval: Duration) -> RateLimit {
        RateLimit {
            interval,
            last: None,
            held: 0,
        }
    }

    /// `n` (≥ 1) events at `now`, of which a line would describe one:
    /// `Some(events not logged since the previous line, the other n - 1
    /// included)` if a line may be logged, `None` if not (they are held
    /// back and counted).
    fn admit(&mut self, now: Instant, n: u64) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.interval => {
                self.held += n;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held) + n.saturating_sub(1))
            }
        }
    }
}

/// Most units `dcsync status` lists in its misrouted line (the JSON has
/// them all).
const UNITS_PRINTED: usize = 8;

/// Prints a source's misrouted writes under it in `dcsync status`
/// (nothing if there were none).
pub fn print(m: &MisroutedStatus, now: u64) {
    if m.total == 0 {
        return;
    }
    let mut units: Vec<(&u32, &u64)> = m.by_unit.iter().collect();
    units.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut shown: Vec<String> = units
        .iter()
        .take(UNITS_PRINTED)
        .map(|(u, n)| format!("unit {u}: {n}"))
        .collect();
    let more = units.len().saturating_sub(UNITS_PRINTED) as u64 + u64::from(m.other_units > 0);
    if more > 0 {
        shown.push("more units: see --json".to_string());
    }
    println!(
        "           MISROUTED: {} local write(s) to units other DCs own (still replicated): {}",
        m.total,
        shown.join(", ")
    );
    if let Some(l) = &m.last {
        println!(
            "           last misrouted: {} unit {} owned by {} ({}{})",
            match &l.table {
                Some(t) => format!("{t} {}", l.key),
                None => format!("key {}", l.key),
            },
            l.unit,
            l.owner,
            crate::status::ago(l.at_ms, now),
            if l.position.is_empty() {
                String::new()
            } else {
                format!(", at {}", l.position)
            }
        );
    }
}

/// `(table, key)` of a change for the operator: `schema.table` and the
/// primary key of a row (from the new image, the old one of a DELETE), or
/// no table and the first argument of a Redis command.
fn describe(change: &Change) -> (Option<String>, String) {
    match &change.payload {
        Payload::Row(row) => {
            let image = match row.kind {
                RowKind::Delete => row.before.as_ref(),
                _ => row.after.as_ref().or(row.before.as_ref()),
            };
            let pk = row.primary_key();
            let key = match image {
                Some(img) if !pk.is_empty() => pk
                    .iter()
                    .map(|i| {
                        let name = row.table.columns.get(*i).map_or("?", |c| c.name.as_str());
                        let value = img.get(*i).map_or_else(|| "?".to_string(), show);
                        format!("{name}={value}")
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                _ => "(no primary key)".to_string(),
            };
            (Some(row.table.qualified()), key)
        }
        Payload::Redis(cmd) => (
            None,
            cmd.args
                .get(1)
                .map(|k| cut(&String::from_utf8_lossy(k)))
                .unwrap_or_default(),
        ),
    }
}

/// A key column's value: numbers as they are, byte strings quoted (cut
/// to [`MAX_VALUE_CHARS`]).
fn show(v: &Value) -> String {
    match v {
        Value::Null => "NULL".to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Bytes(b) => format!("{:?}", cut(&String::from_utf8_lossy(b))),
        other => cut(&format!("{other:?}")),
    }
}

/// `s` cut to [`MAX_VALUE_CHARS`] characters (`…` marks the cut).
fn cut(s: &str) -> String {
    match s.char_indices().nth(MAX_VALUE_CHARS) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

#[cfg(test)]
#[path = "attribution_tests.rs"]
mod tests;
