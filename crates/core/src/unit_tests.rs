//! Unit tests of the parent module.

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
