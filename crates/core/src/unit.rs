//! Units: shards of the business key space.
//!
//! The unit of a change is `fnv1a64(key bytes) mod count`, where the key bytes
//! are the canonical form of the unit key value ([`crate::Value::unit_key_bytes`]
//! for a row, the hash-tag part of a Redis key). FNV-1a is fixed here (not
//! Rust's randomised hasher) so that every DC, every version and every
//! language computes the same unit for the same key.

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

/// The part of a Redis key that selects its unit: the content of the first
/// non-empty `{...}` hash tag (as Redis Cluster does), otherwise the whole key.
/// `user:{42}:cart` gives `42`.
pub fn redis_hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|b| *b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|b| *b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The part of a Redis key that selects its unit, given the store's
/// `unit_key` pattern: with a pattern, its first capture group (`None` when
/// the key does not match: the change has no unit); without one, the hash
/// tag ([`redis_hash_tag`]).
///
/// `user:(\d+):` applied to `user:42:cart` gives `42`.
pub fn redis_unit_key<'a>(
    key: &'a [u8],
    pattern: Option<&regex::bytes::Regex>,
) -> Option<&'a [u8]> {
    match pattern {
        None => Some(redis_hash_tag(key)),
        Some(re) => re
            .captures(key)
            .and_then(|c| c.get(1))
            .map(|m| m.as_bytes()),
    }
}

/// Compiles a Redis `unit_key` pattern (a regular expression with at least
/// one capture group). Errors name the problem.
pub fn compile_redis_unit_key(pattern: &str) -> Result<regex::bytes::Regex, String> {
    let re = regex::bytes::Regex::new(pattern)
        .map_err(|e| format!("unit_key {pattern:?} is not a regular expression: {e}"))?;
    if re.captures_len() < 2 {
        return Err(format!(
            "unit_key {pattern:?} has no capture group: put the unit part in parentheses, e.g. \"^user:(\\d+):\""
        ));
    }
    Ok(re)
}

#[cfg(test)]
#[path = "unit_tests.rs"]
mod tests;
