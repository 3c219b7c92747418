//! Units: shards of the business key space.
//!
//! The unit of a change is chosen by its store's *unit rules*, evaluated in
//! one place per connector (`UnitRules` in each connector crate; see
//! `docs/topology.md`, "Units"), in this order:
//!
//! 1. **Fixed by table or key prefix** (business-type unitization): every
//!    row of a table matching a store's `units_by_table` pattern, every key
//!    with a `units_by_prefix` prefix, has that unit.
//! 2. **Value map** (a region column): the store's `unit_values` entry for
//!    the unit key value.
//! 3. **Hash**: `fnv1a64(key bytes) mod count` ([`unit_of`]), also for a
//!    value the map does not list.
//!
//! The key bytes are the canonical form of the unit key value, as the
//! store's connector extracts it (for a row, [`crate::Value::unit_key_bytes`]
//! of the unit column; for a key-value store, the unit part of the key).
//! FNV-1a is fixed here (not Rust's randomised hasher) so that every DC,
//! every version and every language computes the same unit for the same key.

/// 64-bit FNV-1a hash (<http://www.isthe.com/chongo/tech/comp/fnv/>).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Unit of a key: `fnv1a64(key) mod count`. `count` must be > 0 (the topology
/// validation guarantees it); a zero count yields unit 0.
pub fn unit_of(key: &[u8], count: u32) -> u32 {
    if count == 0 {
        return 0;
    }
    (fnv1a64(key) % u64::from(count)) as u32
}

/// The unit of one row or key and the rule that chose it: what
/// [`Connector::route`](crate::connector::Connector::route) answers for
/// `dcsync route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The unit, in `0..units.count`.
    pub unit: u32,
    /// The rule, for people: `hash of user_id`, `units_by_table
    /// "shop.audit_*"`, `unit_values of region`.
    pub rule: String,
    /// Something the caller should know about the answer (a rule that
    /// could not be applied with the arguments given), or `None`.
    pub note: Option<String>,
}

#[cfg(test)]
#[path = "unit_tests.rs"]
mod tests;
