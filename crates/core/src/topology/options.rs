//! What a connector sees of its `[[store]]` table, and what it gives back.
//!
//! Core reads the keys every store has (`name`, `kind`, `url`,
//! `apply_group_txns`, `apply_group_bytes`). Every other key of the table is
//! handed to the kind's connector as a [`StoreKeys`]: the connector takes
//! its keys as typed values with their location
//! ([`Connector::parse_options`](crate::connector::Connector::parse_options)),
//! reports each problem at the value at fault, and returns its parsed
//! options as an opaque [`StoreOptions`], which
//! [`StoreConfig::options`](super::StoreConfig::options) hands back typed.
//! Keys left untaken are reported by core as unknown, at their own
//! line:col, so a connector cannot forget to refuse them.

use serde::de::DeserializeOwned;
use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use toml::de::{DeValue, ValueDeserializer};
use toml::Spanned;

/// Object-safe view of a connector's options type.
trait DynOptions: Any + fmt::Debug + Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn dyn_eq(&self, other: &dyn DynOptions) -> bool;
}

impl<T: Any + fmt::Debug + PartialEq + Send + Sync> DynOptions for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn dyn_eq(&self, other: &dyn DynOptions) -> bool {
        other.as_any().downcast_ref::<T>() == Some(self)
    }
}

/// A connector's parsed options of one store, opaque to core: cheap to
/// clone (shared), printed by `Debug`, compared by value. Get them back with
/// [`StoreOptions::get`] (or [`StoreConfig::options`](super::StoreConfig::options)).
///
/// Options types must not hold credentials: they are printed by `Debug`.
#[derive(Clone)]
pub struct StoreOptions(Arc<dyn DynOptions>);

impl StoreOptions {
    /// Wraps a connector's options value.
    pub fn new<T: Any + fmt::Debug + PartialEq + Send + Sync>(options: T) -> StoreOptions {
        StoreOptions(Arc::new(options))
    }

    /// No options (`()`): a kind without keys of its own.
    pub fn none() -> StoreOptions {
        StoreOptions::new(())
    }

    /// The options as `T`; `None` if they are of another type (they were
    /// made by another connector).
    pub fn get<T: Any>(&self) -> Option<&T> {
        (*self.0).as_any().downcast_ref::<T>()
    }
}

impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl PartialEq for StoreOptions {
    fn eq(&self, other: &StoreOptions) -> bool {
        self.0.dyn_eq(&*other.0)
    }
}

impl Eq for StoreOptions {}

/// The keys of one `[[store]]` table not yet taken, each with its location,
/// and the problems found so far.
///
/// Spans are byte ranges into the topology text; pass them back to
/// [`StoreKeys::error`] to locate a problem (line:col is computed from them).
pub struct StoreKeys<'i> {
    /// `store "orders"` (or `[[store]] #2` before the name is known).
    label: String,
    /// Span of the whole table, for missing keys.
    span: Range<usize>,
    /// Key -> (span of the key, value with its span).
    entries: BTreeMap<String, (Range<usize>, Spanned<DeValue<'i>>)>,
    /// Keys asked for, present or not, in the order asked.
    asked: Vec<String>,
    issues: Vec<SpannedMessage>,
    /// `units.count` of the file, when it is valid (units are `0..count`).
    units_count: Option<u32>,
}

/// A problem found: where (byte range) and what.
type SpannedMessage = (Range<usize>, String);

impl<'i> StoreKeys<'i> {
    pub(super) fn new(
        label: String,
        span: Range<usize>,
        entries: BTreeMap<String, (Range<usize>, Spanned<DeValue<'i>>)>,
        units_count: Option<u32>,
    ) -> StoreKeys<'i> {
        StoreKeys {
            label,
            span,
            entries,
            asked: Vec::new(),
            issues: Vec::new(),
            units_count,
        }
    }

    /// No keys at all: what a connector is asked to parse when core lists
    /// the keys it takes.
    pub(super) fn empty() -> StoreKeys<'static> {
        StoreKeys::new(String::new(), 0..0, BTreeMap::new(), None)
    }

    pub(super) fn set_label(&mut self, label: String) {
        self.label = label;
    }

    /// Takes `key` as a `T` (any serde type; nested `Spanned<_>` fields get
    /// their own locations). `None` when the key is absent, or when its
    /// value is not a `T`: that is reported as
    /// `store "<name>": <key>: <what is wrong>` at the offending value.
    pub fn take<T: DeserializeOwned>(&mut self, key: &str) -> Option<Spanned<T>> {
        self.asked.push(key.to_string());
        let (_, value) = self.entries.remove(key)?;
        let span = value.span();
        match T::deserialize(ValueDeserializer::from(value)) {
            Ok(v) => Some(Spanned::new(span, v)),
            Err(e) => {
                let at = e.span().unwrap_or(span);
                self.error(at, format!("{key}: {}", e.message().trim()));
                None
            }
        }
    }

    /// As [`StoreKeys::take`], and reports a missing key as
    /// `store "<name>": missing key "<key>" (<hint>)` at the table.
    pub fn require<T: DeserializeOwned>(&mut self, key: &str, hint: &str) -> Option<Spanned<T>> {
        let present = self.entries.contains_key(key);
        let v = self.take(key);
        if !present {
            let hint = if hint.is_empty() {
                String::new()
            } else {
                format!(" ({hint})")
            };
            self.error(self.span.clone(), format!("missing key {key:?}{hint}"));
        }
        v
    }

    /// Takes `key` as a table of names to units (`units_by_table = {
    /// "shop.inventory" = 7 }`), in name order. A unit outside `0..count`
    /// of the file's `[units]` is reported at its value as
    /// `store "<name>": <key>."<name>" = 70: unit out of range 0-63
    /// (units.count = 64)` and left out; so is a negative one when the
    /// count is not known (the `[units]` section is itself invalid, and
    /// reported). A value that is not an integer is reported as
    /// [`StoreKeys::take`] does, and the whole key is left out. Absent: empty.
    pub fn take_units(&mut self, key: &str) -> Vec<(Spanned<String>, u32)> {
        let Some(table) = self.take::<BTreeMap<Spanned<String>, Spanned<i64>>>(key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, unit) in table.into_inner() {
            let n = *unit.get_ref();
            let fits = match self.units_count {
                Some(count) => (0..i64::from(count)).contains(&n),
                None => u32::try_from(n).is_ok(),
            };
            if fits {
                out.push((name, n as u32));
                continue;
            }
            let range = match self.units_count {
                Some(count) => format!(
                    "unit out of range 0-{} (units.count = {count})",
                    count.saturating_sub(1)
                ),
                None => "a unit is a number from 0 to units.count - 1".to_string(),
            };
            self.error(
                unit.span(),
                format!("{key}.{:?} = {n}: {range}", name.get_ref()),
            );
        }
        out
    }

    /// `units.count` of the file (units are `0..count`), `None` when the
    /// `[units]` section is missing or its count invalid (that is reported
    /// on its own).
    pub fn units_count(&self) -> Option<u32> {
        self.units_count
    }

    /// Reports a problem at `span` (from a [`Spanned`] value taken here), as
    /// `store "<name>": <message>`.
    pub fn error(&mut self, span: Range<usize>, message: impl fmt::Display) {
        self.issues
            .push((span, format!("{}: {message}", self.label)));
    }

    /// The label messages start with (`store "orders"`).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Keys asked for so far (present or not), in the order asked.
    pub(super) fn asked(&self) -> &[String] {
        &self.asked
    }

    /// Drops every key not taken yet (their table is not validated further).
    pub(super) fn discard_rest(&mut self) {
        self.entries.clear();
    }

    /// The keys not taken, with the span of each key, and the problems.
    pub(super) fn finish(self) -> (Vec<(String, Range<usize>)>, Vec<SpannedMessage>) {
        let rest = self
            .entries
            .into_iter()
            .map(|(k, (span, _))| (k, span))
            .collect();
        (rest, self.issues)
    }
}
