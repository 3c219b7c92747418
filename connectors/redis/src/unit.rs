//! Which part of a Redis key selects its unit.
//!
//! The unit of a key is `dcsync_core::unit::unit_of(part, units.count)`,
//! where `part` is, with the store's `unit_key` pattern, its first capture
//! group, and without one the key's `{hash tag}` (as Redis Cluster uses it)
//! or else the whole key.

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

#[cfg(test)]
#[path = "unit_tests.rs"]
mod tests;
