//! Unit tests of the parent module.

use super::*;

#[test]
fn unit_key_pattern() {
    let re = UnitKeyPattern::compile(r"^user:(\d+):").unwrap();
    assert_eq!(unit_key_part(b"user:42:cart", Some(&re)), Some(&b"42"[..]));
    assert_eq!(unit_key_part(b"session:9", Some(&re)), None);
    assert_eq!(unit_key_part(b"a{7}b", None), Some(&b"7"[..]));
    assert!(UnitKeyPattern::compile("user:")
        .unwrap_err()
        .contains("no capture group"));
    assert!(UnitKeyPattern::compile("(")
        .unwrap_err()
        .contains("not a regular expression"));
}

#[test]
fn hash_tags() {
    assert_eq!(hash_tag(b"user:{42}:cart"), b"42");
    assert_eq!(hash_tag(b"plain"), b"plain");
    assert_eq!(hash_tag(b"a{}b"), b"a{}b");
}

#[test]
fn patterns_compare_by_text() {
    let a = UnitKeyPattern::compile("^u:(\\d+)").unwrap();
    assert_eq!(a, UnitKeyPattern::compile("^u:(\\d+)").unwrap());
    assert_ne!(a, UnitKeyPattern::compile("^v:(\\d+)").unwrap());
    assert_eq!(format!("{a:?}"), "\"^u:(\\\\d+)\"");
}
