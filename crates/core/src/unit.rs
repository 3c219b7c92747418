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
mod tests {
    use super::*;

    #[test]
    fn fnv_reference_vectors() {
        // Reference values from the FNV specification's test suite.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn unit_is_in_range_and_stable() {
        for k in 0..1000u32 {
            let u = unit_of(k.to_string().as_bytes(), 64);
            assert!(u < 64);
            assert_eq!(u, unit_of(k.to_string().as_bytes(), 64));
        }
    }

    #[test]
    fn redis_unit_key_pattern() {
        let re = compile_redis_unit_key(r"^user:(\d+):").unwrap();
        assert_eq!(redis_unit_key(b"user:42:cart", Some(&re)), Some(&b"42"[..]));
        assert_eq!(redis_unit_key(b"session:9", Some(&re)), None);
        assert_eq!(redis_unit_key(b"a{7}b", None), Some(&b"7"[..]));
        assert!(compile_redis_unit_key("user:")
            .unwrap_err()
            .contains("no capture group"));
        assert!(compile_redis_unit_key("(")
            .unwrap_err()
            .contains("not a regular expression"));
    }

    #[test]
    fn hash_tag() {
        assert_eq!(redis_hash_tag(b"user:{42}:cart"), b"42");
        assert_eq!(redis_hash_tag(b"plain"), b"plain");
        assert_eq!(redis_hash_tag(b"a{}b"), b"a{}b");
    }
}
