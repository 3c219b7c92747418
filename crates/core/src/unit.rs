//! Units: shards of the business key space.
//!
//! The unit of a change is `fnv1a64(key bytes) mod count`, where the key bytes
//! are the canonical form of the unit key value, as the store's connector
//! extracts it (for a row, [`crate::Value::unit_key_bytes`] of the unit
//! column; for a key-value store, the unit part of the key). FNV-1a is fixed
//! here (not Rust's randomised hasher) so that every DC, every version and
//! every language computes the same unit for the same key.

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

#[cfg(test)]
#[path = "unit_tests.rs"]
mod tests;
