//! Conflicts: two DCs writing the same row or key (docs/conflicts.md).
//!
//! Every row or key has a *version* at each DC: the [`Version`] (HLC, DC)
//! of the write that put its current value there. A local write takes the
//! version of its transaction (the journal's HLC stamp, which is above every
//! version applied to the store before it: the source observes the HLC of
//! each echo it reads, see docs/architecture.md, "Conflicts"). Under the
//! `lww` policy a change from another DC is applied to a row or key only if
//! its version is at least the current one ([`wins`]); otherwise it lost a
//! conflict and is recorded as a [`Conflict`], not applied. Versions are
//! totally ordered (HLC, then DC id), so every DC keeps, for every row and
//! key, the value of the greatest version any DC wrote: all DCs converge,
//! whatever order the changes arrive in (the property test below checks it
//! for random interleavings of three DCs).
//!
//! The versions live in the agent's journal ([`Versions`] is how a sink
//! reaches them), keyed by [`row_version_key`]: the store's own data is
//! never given extra columns.

use crate::change::{RowChange, RowKind, Value};
use crate::connector::{BoxFuture, ConnectorError, Position};
use crate::Hlc;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a store does when two DCs write the same row or key
/// (`conflict = "..."` of a `[[store]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConflictPolicy {
    /// Apply every change as it arrives (the last change to *arrive* wins
    /// in each DC, so DCs writing the same row concurrently can diverge).
    /// For stores whose units guarantee a single writer per row.
    #[default]
    None,
    /// Last writer wins by HLC version (ties broken by DC id): every DC
    /// ends with the value of the greatest version; losers are recorded.
    Lww,
    /// The unit's owner DC wins: `lww`, and in addition the owner DC does
    /// not apply another DC's change to a row whose current value the
    /// owner wrote ([`owner_vetoes`]); it re-ships its value with a greater
    /// version instead, so every DC ends with it. Rows without a unit are
    /// decided by `lww`.
    Owner,
}

impl ConflictPolicy {
    /// The topology spelling (`"none"`, `"lww"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictPolicy::None => "none",
            ConflictPolicy::Lww => "lww",
            ConflictPolicy::Owner => "owner",
        }
    }

    /// Parses the topology spelling; `None` for anything else.
    pub fn parse(s: &str) -> Option<ConflictPolicy> {
        match s {
            "none" => Some(ConflictPolicy::None),
            "lww" => Some(ConflictPolicy::Lww),
            "owner" => Some(ConflictPolicy::Owner),
            _ => None,
        }
    }
}

/// The version of a row's or key's value: the HLC stamp of the transaction
/// that wrote it and the DC it was written in. Ordered by HLC, then DC id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// HLC stamp of the writing transaction.
    pub hlc: Hlc,
    /// DC id where it was written (its origin).
    pub dc: String,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.dc, self.hlc)
    }
}

/// The `lww` rule: a change of version `incoming` is applied over a value of
/// version `current` (`None`: no write known) iff `incoming >= current`.
/// Equal versions are the same write delivered again, which idempotent
/// apply must accept.
pub fn wins(incoming: &Version, current: Option<&Version>) -> bool {
    current.is_none_or(|c| incoming >= c)
}

/// The `owner` rule's veto, at DC `me`: a change of version `incoming`
/// that [`wins`] over the row's `current` version is still not applied if
/// `me` owns the row's unit (`owner`), the change comes from another DC,
/// and the current value was written by `me` (the owner's own write, or
/// its re-shipped value). The owner then re-ships its current value with
/// a version above `incoming`, which every DC applies by [`wins`]: a
/// vetoed change is never the greatest version, so all DCs converge on
/// the owner's value.
pub fn owner_vetoes(
    me: &str,
    owner: Option<&str>,
    incoming: &Version,
    current: Option<&Version>,
) -> bool {
    owner == Some(me) && incoming.dc != me && current.is_some_and(|c| c.dc == me)
}

/// The key of `r`'s row in the version index: `schema \0 table \0` then each
/// primary-key value as a 4-byte big-endian length and its canonical bytes
/// ([`Value::unit_key_bytes`]; NULL as length `0xffff_ffff`). `image` is the
/// before or after image of `r`. `None` when the table has no primary key.
pub fn row_version_key(r: &RowChange, image: &[Value]) -> Option<Vec<u8>> {
    // The primary-key columns in column order, as `primary_key()` lists
    // them, without collecting them first (this runs for every row a
    // group writes).
    let mut key = key_prefix(&r.table.schema, &r.table.name);
    let mut any = false;
    for (i, c) in r.table.columns.iter().enumerate() {
        if c.primary_key {
            any = true;
            push_key_part(&mut key, image.get(i));
        }
    }
    any.then_some(key)
}

fn key_prefix(schema: &str, table: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(schema.len() + table.len() + 24);
    key.extend_from_slice(schema.as_bytes());
    key.push(0);
    key.extend_from_slice(table.as_bytes());
    key.push(0);
    key
}

/// One primary-key value of a version key: its length (u32 big-endian)
/// and [`Value::unit_key_bytes`], or `u32::MAX` for NULL or a missing
/// column.
fn push_key_part(key: &mut Vec<u8>, v: Option<&Value>) {
    let at = key.len();
    key.extend_from_slice(&[0; 4]);
    if v.is_some_and(|v| v.write_unit_key(key)) {
        let n = (key.len() - at - 4) as u32;
        key[at..at + 4].copy_from_slice(&n.to_be_bytes());
    } else {
        key.truncate(at);
        key.extend_from_slice(&u32::MAX.to_be_bytes());
    }
}

/// [`row_version_key`] from its parts: the table, the indexes of its
/// primary-key columns and a row image.
pub fn version_key(schema: &str, table: &str, pk: &[usize], image: &[Value]) -> Vec<u8> {
    let mut key = key_prefix(schema, table);
    for i in pk {
        push_key_part(&mut key, image.get(*i));
    }
    key
}

/// The version-index keys a row change writes: its after image's key, and
/// its before image's key when that differs (an UPDATE that changes the
/// primary key, a DELETE). Empty for a table without a primary key.
pub fn row_version_keys(r: &RowChange) -> Vec<Vec<u8>> {
    let mut keys = Vec::with_capacity(1);
    if let Some(a) = r.after.as_deref().and_then(|a| row_version_key(r, a)) {
        keys.push(a);
    }
    if r.kind != RowKind::Insert {
        if let Some(b) = r.before.as_deref().and_then(|b| row_version_key(r, b)) {
            if !keys.contains(&b) {
                keys.push(b);
            }
        }
    }
    keys
}

/// A readable form of a version-index key (`shop.items id=7` style, the
/// primary-key values only): for logs and the conflict log.
pub fn describe_row_key(r: &RowChange, image: &[Value]) -> String {
    let pk: Vec<String> = r
        .primary_key()
        .into_iter()
        .map(|i| {
            let name = r.table.columns.get(i).map_or("?", |c| c.name.as_str());
            format!("{name}={}", image.get(i).map_or("?".into(), short_value))
        })
        .collect();
    format!("{}.{} {}", r.table.schema, r.table.name, pk.join(" "))
}

/// Most characters of one value in a conflict record.
const VALUE_CHARS: usize = 64;
/// Most characters of one row image in a conflict record.
pub const IMAGE_CHARS: usize = 1024;

/// A value in short readable form (strings lossily as UTF-8, cut at 64
/// characters with `…`).
pub fn short_value(v: &Value) -> String {
    let s = match v {
        Value::Null => "NULL".to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Double(f) => f.to_string(),
        Value::Bytes(b) => format!("'{}'", String::from_utf8_lossy(b)),
        other => format!("{other:?}"),
    };
    truncate(&s, VALUE_CHARS)
}

/// A row image in short readable form: `{col=value, ...}`, cut at
/// [`IMAGE_CHARS`].
pub fn describe_image(r: &RowChange, image: Option<&[Value]>) -> String {
    let Some(image) = image else {
        return "(no row)".into();
    };
    let cols: Vec<String> = image
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let name = r.table.columns.get(i).map_or("?", |c| c.name.as_str());
            format!("{name}={}", short_value(v))
        })
        .collect();
    truncate(&format!("{{{}}}", cols.join(", ")), IMAGE_CHARS)
}

/// `s` cut to at most `chars` characters, with `…` when cut.
pub fn truncate(s: &str, chars: usize) -> String {
    match s.char_indices().nth(chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// One detected conflict: a change that lost against the value a DC held
/// (or, where a rule overruled the current value, the value that lost).
/// One line of the conflict log (`conflicts.jsonl` in the agent's data
/// dir; `dcsync conflicts` prints them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// When it was detected, ms since the Unix epoch.
    pub at_ms: u64,
    /// DC that detected it (where the losing change arrived).
    pub dc: String,
    /// Store name.
    pub store: String,
    /// The row or key (`shop.items id=7`, `db0 user:42`).
    pub key: String,
    /// Unit of the row or key, if it has one.
    pub unit: Option<u32>,
    /// The policy that decided (`lww`).
    pub policy: String,
    /// Version of the value kept.
    pub winner: Version,
    /// The value kept, in short readable form (row image or value).
    pub winner_value: String,
    /// Version of the change not applied.
    pub loser: Version,
    /// The change not applied, in short readable form.
    pub loser_value: String,
    /// Origin seq of the losing change.
    pub loser_seq: u64,
    /// What was done, in words (`kept sh@… (greater HLC); the change of bj
    /// was not applied`).
    pub decision: String,
}

/// The version index and conflict log of one store, as a sink sees them
/// (the agent implements it over its journal). All methods are
/// cancellation-safe.
pub trait Versions: Send + Sync + 'static {
    /// Current versions of `keys` (see [`row_version_key`]), in order;
    /// `None` for a key no write is known of. Errors: the journal cannot be
    /// read (transient).
    fn current(
        &self,
        keys: Vec<Vec<u8>>,
    ) -> BoxFuture<'_, Result<Vec<Option<Version>>, ConnectorError>>;

    /// Records `entries` (key, version) durably, keeping for each key the
    /// greater of the recorded and the given version. Called before the
    /// target commit of the changes they describe.
    fn record(&self, entries: Vec<(Vec<u8>, Version)>)
        -> BoxFuture<'_, Result<(), ConnectorError>>;

    /// A counter raised after every version record becomes readable
    /// (local writes' and sinks'): taken before [`Versions::current`] and
    /// found unchanged later, no version was recorded in between, so a
    /// re-read would return the same.
    fn generation(&self) -> u64;

    /// The greatest HLC of any version of the store in the index (`None`:
    /// none yet): every version [`Versions::current`] can return is at or
    /// below it. Taken after [`Versions::generation`], it covers every
    /// record that generation counts. A change stamped above it wins over
    /// every row it writes, so a sink may skip the read (the rules' fast
    /// path, docs/conflicts.md).
    fn high_water(&self) -> Option<crate::Hlc>;

    /// Records `entries` as [`Versions::record`] does and, in the same
    /// durable commit, `intent` as the pending re-ship of `origin`'s
    /// changes (the sink's own encoding of what it still has to do after
    /// its target commit; it replaces an earlier one of `origin`). A sink
    /// that finds it after a restart ([`Versions::pending`]) finishes it.
    /// Errors: the journal cannot be written (transient).
    fn record_pending(
        &self,
        entries: Vec<(Vec<u8>, Version)>,
        origin: String,
        intent: Vec<u8>,
    ) -> BoxFuture<'_, Result<(), ConnectorError>>;

    /// The pending re-ship of `origin`'s changes recorded by
    /// [`Versions::record_pending`] and not yet cleared, if any. Errors:
    /// the journal cannot be read (transient).
    fn pending(&self, origin: String) -> BoxFuture<'_, Result<Option<Vec<u8>>, ConnectorError>>;

    /// Removes the pending re-ship of `origin`'s changes once it is done.
    /// Errors: the journal cannot be written (transient).
    fn clear_pending(&self, origin: String) -> BoxFuture<'_, Result<(), ConnectorError>>;

    /// Waits until this store's local source has journaled (and so indexed
    /// the versions of) everything up to a position for which `reached`
    /// returns true. Errors: Transient after `timeout` (the source is
    /// behind or stopped), naming the position it is at.
    fn wait_source<'a>(
        &'a self,
        reached: Box<dyn Fn(&Position) -> bool + Send + Sync + 'a>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), ConnectorError>>;

    /// Records a conflict in the conflict log, the metrics and the status.
    fn conflict(&self, c: Conflict);

    /// This DC's id.
    fn me(&self) -> &str;

    /// The owner DC of `unit` (`None`: out of range).
    fn owner_of(&self, unit: u32) -> Option<String>;

    /// The `owner` policy's re-ship: journals `changes` (the owner's
    /// current rows, read under lock) as a local transaction of this DC
    /// with an HLC above `above` and above every stamp issued so far (later
    /// local transactions of the store are stamped above it too), indexes
    /// their versions, and wakes the senders. Errors: the journal cannot be
    /// written (transient).
    fn reassert(
        &self,
        changes: Vec<crate::Change>,
        above: crate::Hlc,
    ) -> BoxFuture<'_, Result<(), ConnectorError>>;
}

#[cfg(test)]
#[path = "conflict_tests.rs"]
mod tests;
