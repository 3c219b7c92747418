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
