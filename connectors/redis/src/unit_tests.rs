//! Unit tests of the parent module.

use super::*;
use dcsync_core::unit::unit_of;

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

const COUNT: u32 = 64;

fn rules(o: &RedisOptions) -> UnitRules {
    UnitRules::new(o, COUNT)
}

fn with_rules(
    unit_key: Option<&str>,
    by_prefix: &[(&str, u32)],
    values: &[(&str, u32)],
) -> RedisOptions {
    RedisOptions {
        unit_key: unit_key.map(|p| UnitKeyPattern::compile(p).unwrap()),
        units_by_prefix: by_prefix.iter().map(|(p, u)| (p.to_string(), *u)).collect(),
        unit_values: values.iter().map(|(v, u)| (v.to_string(), *u)).collect(),
        ..RedisOptions::default()
    }
}

#[test]
fn hash_of_the_unit_part_by_default() {
    let r = rules(&RedisOptions::default());
    assert_eq!(r.unit_of(b"user:{42}:cart"), Some(unit_of(b"42", COUNT)));
    assert_eq!(r.unit_of(b"plain"), Some(unit_of(b"plain", COUNT)));
    let r = rules(&with_rules(Some(r"^user:(\d+):"), &[], &[]));
    assert_eq!(r.unit_of(b"user:42:cart"), Some(unit_of(b"42", COUNT)));
    assert_eq!(r.unit_of(b"session:1"), None);
}

#[test]
fn longest_prefix_wins_then_values_then_hash() {
    let r = rules(&with_rules(
        Some(r"^region:(\w+):"),
        &[
            ("inventory:", 7),
            ("inventory:eu:", 8),
            ("region:north:", 9),
        ],
        &[("north", 3), ("south", 40)],
    ));
    assert_eq!(
        r.choose(b"inventory:1"),
        Some((7, Rule::Prefix("inventory:")))
    );
    assert_eq!(
        r.choose(b"inventory:eu:1"),
        Some((8, Rule::Prefix("inventory:eu:")))
    );
    // A prefix rule wins over unit_values.
    assert_eq!(r.unit_of(b"region:north:1"), Some(9));
    assert_eq!(r.choose(b"region:south:1"), Some((40, Rule::Value)));
    assert_eq!(
        r.choose(b"region:west:1"),
        Some((
            unit_of(b"west", COUNT),
            Rule::Hash {
                listed_values: true
            }
        ))
    );
    // Neither a prefix nor the pattern: no unit.
    assert_eq!(r.unit_of(b"other"), None);
}

#[test]
fn route_names_the_rule_and_refuses_what_has_no_unit() {
    let o = RedisOptions {
        key_prefixes: vec!["user:".into(), "inventory:".into()],
        ..with_rules(None, &[("inventory:", 7)], &[("north", 3)])
    };
    let r = rules(&o);
    let route = |key: &str| r.route("cache", &o, None, key.as_bytes());
    let tag = route("user:{42}:cart").unwrap();
    assert_eq!(
        (tag.unit, tag.rule.as_str()),
        (
            unit_of(b"42", COUNT),
            "hash of the hash tag \"42\": it is not in unit_values"
        )
    );
    assert_eq!(
        route("user:{north}").unwrap().rule,
        "unit_values of the hash tag \"north\""
    );
    assert_eq!(
        route("user:9").unwrap().rule,
        "hash of the whole key: it is not in unit_values"
    );
    assert_eq!(
        route("inventory:1").unwrap().rule,
        "units_by_prefix \"inventory:\""
    );
    let err = |table: Option<&str>, key: &str| {
        r.route("cache", &o, table, key.as_bytes())
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(None, "session:1"),
        "store \"cache\": key \"session:1\" is not replicated by this store (key_prefixes = [\"user:\", \"inventory:\"])"
    );
    assert!(err(None, "dcsync:marker:bj").contains("not replicated"));
    assert_eq!(
        err(Some("shop.t"), "user:1"),
        "store \"cache\": a redis store has no tables: give the key alone, without --table shop.t"
    );
    let p = with_rules(Some(r"^user:(\d+):"), &[], &[]);
    let e = rules(&p)
        .route("cache", &p, None, b"session:1")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "store \"cache\": key \"session:1\" has no unit: it does not match unit_key \"^user:(\\\\d+):\""
    );
    assert_eq!(
        rules(&p)
            .route("cache", &p, None, b"user:5:x")
            .unwrap()
            .rule,
        "hash of the unit_key capture \"5\""
    );
}
