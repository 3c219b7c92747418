//! Unit tests of the parent module: the unit rules of a MySQL store.

use super::*;
use std::collections::BTreeMap;

const COUNT: u32 = 64;

fn options(by_table: &[(&str, u32)], values: &[(&str, u32)]) -> MysqlOptions {
    MysqlOptions {
        tables: vec!["shop.*".into()],
        unit_key: Some("user_id".into()),
        units_by_table: by_table.iter().map(|(p, u)| (p.to_string(), *u)).collect(),
        unit_values: values
            .iter()
            .map(|(v, u)| (v.to_string(), *u))
            .collect::<BTreeMap<_, _>>(),
        ..MysqlOptions::default()
    }
}

fn rules(by_table: &[(&str, u32)], values: &[(&str, u32)]) -> UnitRules {
    UnitRules::new(&options(by_table, values), COUNT)
}

#[test]
fn hash_of_the_unit_key_value_by_default() {
    let r = rules(&[], &[]);
    let want = unit_of(b"42", COUNT);
    assert_eq!(r.unit_of("shop.orders", Some(b"42")), Some(want));
    assert_eq!(
        r.choose(Some("shop.orders"), Some(b"42")),
        Some((
            want,
            Rule::Hash {
                listed_values: false
            }
        ))
    );
    // NULL or no unit_key column: no unit.
    assert_eq!(r.unit_of("shop.orders", None), None);
    let no_key = UnitRules::new(&MysqlOptions::default(), COUNT);
    assert_eq!(no_key.unit_of("shop.orders", Some(b"42")), None);
}

#[test]
fn value_map_with_hash_fallback() {
    let r = rules(&[], &[("north", 3), ("south", 40)]);
    assert_eq!(
        r.choose(Some("shop.orders"), Some(b"north")),
        Some((3, Rule::Value))
    );
    assert_eq!(r.unit_of("shop.orders", Some(b"south")), Some(40));
    // A value the map does not list falls back to the hash, and says so.
    assert_eq!(
        r.choose(Some("shop.orders"), Some(b"west")),
        Some((
            unit_of(b"west", COUNT),
            Rule::Hash {
                listed_values: true
            }
        ))
    );
}

#[test]
fn table_rule_wins_and_the_most_specific_pattern_wins() {
    let r = rules(
        &[
            ("shop.*", 1),
            ("shop.audit_*", 2),
            ("shop.audit_log", 3),
            ("*.inventory", 4),
        ],
        &[("north", 9)],
    );
    // Over unit_key and unit_values.
    assert_eq!(
        r.choose(Some("shop.audit_log"), Some(b"north")),
        Some((3, Rule::Table("shop.audit_log")))
    );
    assert_eq!(r.unit_of("shop.audit_2024", Some(b"north")), Some(2));
    assert_eq!(r.unit_of("shop.orders", None), Some(1));
    // Of two patterns, the one with more literal characters wins:
    // "*.inventory" (10) over "shop.*" (5).
    assert_eq!(r.unit_of("shop.inventory", None), Some(4));
    // No pattern matches: the unit_key rules.
    assert_eq!(r.unit_of("other.orders", Some(b"north")), Some(9));
    // Without a table, only the unit_key rules.
    assert_eq!(r.choose(None, Some(b"north")), Some((9, Rule::Value)));
}

#[test]
fn unit_of_row_reads_the_unit_key_column_only_when_needed() {
    let col = |name: &str| ColumnMeta {
        name: name.into(),
        type_code: 3,
        unsigned: false,
        primary_key: name == "id",
    };
    let columns = [col("id"), col("user_id")];
    let r = rules(&[("shop.inventory", 7)], &[]);
    let row = [Value::Int(1), Value::Int(42)];
    assert_eq!(
        r.unit_of_row("shop.orders", &columns, Some(&row)),
        Some(unit_of(b"42", COUNT))
    );
    assert_eq!(
        r.unit_of_row("shop.orders", &columns, Some(&[Value::Int(1), Value::Null])),
        None
    );
    assert_eq!(r.unit_of_row("shop.orders", &[col("id")], Some(&row)), None);
    // A fixed table needs no image at all.
    assert_eq!(r.unit_of_row("shop.inventory", &columns, None), Some(7));
}

#[test]
fn route_names_the_rule() {
    let o = options(&[("shop.inventory", 7)], &[("north", 3)]);
    let r = UnitRules::new(&o, COUNT);
    let route = |table: Option<&str>, value: &str| r.route("orders", &o, table, value.as_bytes());
    let hashed = route(Some("shop.orders"), "42").unwrap();
    assert_eq!(
        hashed,
        Routed {
            unit: unit_of(b"42", COUNT),
            rule: "hash of user_id: the value is not in unit_values".into(),
            note: None
        }
    );
    let fixed = route(Some("shop.inventory"), "42").unwrap();
    assert_eq!(
        (fixed.unit, fixed.rule.as_str()),
        (7, "units_by_table \"shop.inventory\"")
    );
    let mapped = route(None, "north").unwrap();
    assert_eq!(
        (mapped.unit, mapped.rule.as_str()),
        (3, "unit_values of user_id")
    );
    assert!(
        mapped
            .note
            .as_deref()
            .is_some_and(|n| n.contains("pass --table")),
        "{mapped:?}"
    );
    let plain = options(&[], &[]);
    let r2 = UnitRules::new(&plain, COUNT);
    assert_eq!(
        r2.route("orders", &plain, None, b"42").unwrap().rule,
        "hash of user_id"
    );
}

#[test]
fn route_refuses_what_the_store_does_not_replicate_or_unit() {
    let o = options(&[], &[]);
    let r = UnitRules::new(&o, COUNT);
    let err = |table: Option<&str>| r.route("orders", &o, table, b"1").unwrap_err().to_string();
    assert_eq!(
        err(Some("orders")),
        "store \"orders\": --table \"orders\" must be schema.table (e.g. shop.orders)"
    );
    assert_eq!(
        err(Some("other.orders")),
        "store \"orders\": table other.orders is not replicated by this store (tables = [\"shop.*\"])"
    );
    assert!(err(Some("mysql.user")).contains("not replicated"));
    let none = MysqlOptions {
        tables: vec!["shop.*".into()],
        ..MysqlOptions::default()
    };
    let r = UnitRules::new(&none, COUNT);
    let e = r.route("orders", &none, Some("shop.t"), b"1").unwrap_err();
    assert_eq!(
        e.to_string(),
        "store \"orders\": rows of shop.t have no unit: the store has no unit_key and no \
         units_by_table pattern matches shop.t"
    );
    assert!(!e.is_transient());
}
