//! Unit tests of the parent module: the MySQL keys of a topology file.

use super::*;
use crate::CONNECTOR;
use dcsync_core::connector::Registry;
use dcsync_core::topology::{Topology, TopologyError, TopologyIssue};

static REGISTRY: Registry = Registry::new(&[&CONNECTOR]);

const GOOD: &str = r#"
cluster = "shop"
mode = "mesh"
[[dc]]
id = "bj"
link = "127.0.0.1:7701"
[[dc]]
id = "sh"
link = "127.0.0.1:7702"
[units]
count = 64
owners = { bj = "0-31", sh = "32-63" }
[[store]]
name = "orders"
kind = "mysql"
tables = ["shop.*"]
unit_key = "user_id"
url = { bj = "mysql://root:secret@127.0.0.1:13306", sh = "mysql://root@127.0.0.1:13307" }
"#;

fn parse(text: &str) -> Result<Topology, TopologyError> {
    Topology::parse(text, &REGISTRY)
}

fn options(text: &str) -> MysqlOptions {
    let t = parse(text).unwrap();
    MysqlOptions::of(t.store("orders").unwrap())
        .unwrap()
        .clone()
}

fn issues(text: &str) -> Vec<TopologyIssue> {
    match parse(text) {
        Err(TopologyError::Invalid { issues, .. }) => issues,
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn good_file_parses() {
    let t = parse(GOOD).unwrap();
    let s = t.store("orders").unwrap();
    assert_eq!(s.kind, "mysql");
    let o = MysqlOptions::of(s).unwrap();
    assert_eq!(o.tables, ["shop.*"]);
    assert_eq!(o.unit_key.as_deref(), Some("user_id"));
    assert!(o.matches_table("shop", "users"));
    assert!(!o.matches_table("other", "users"));
    assert!(
        !format!("{t:?}").contains("secret"),
        "password leaked in Debug"
    );
    // Today's defaults: 2048 transactions / 16 MiB per commit group.
    assert_eq!((s.apply_group_txns, s.apply_group_bytes), (2048, 16 << 20));
}

#[test]
fn mariadb_is_an_alias() {
    let t = parse(&GOOD.replace("kind = \"mysql\"", "kind = \"mariadb\"")).unwrap();
    assert_eq!(t.store("orders").unwrap().kind, "mysql");
}

#[test]
fn system_schemas_never_match() {
    let all = MysqlOptions::default();
    assert!(all.matches_table("shop", "orders"));
    for schema in [
        "mysql",
        "sys",
        "information_schema",
        "performance_schema",
        "dcsync",
    ] {
        assert!(!all.matches_table(schema, "t"), "{schema}");
    }
}

#[test]
fn globs() {
    assert!(glob_match("shop.*", "shop.orders"));
    assert!(glob_match("*.orders", "x.orders"));
    assert!(glob_match("shop.ord*s", "shop.orders"));
    assert!(!glob_match("shop.ord*x", "shop.orders"));
}

#[test]
fn apply_parallel_defaults_to_4_and_is_range_checked() {
    assert_eq!(options(GOOD).apply_parallel, 4);
    let one = GOOD.replace(
        "unit_key = \"user_id\"",
        "unit_key = \"user_id\"\napply_parallel = 1",
    );
    assert_eq!(options(&one).apply_parallel, 1);
    let bad = GOOD.replace(
        "unit_key = \"user_id\"",
        "unit_key = \"user_id\"\napply_parallel = 0",
    );
    let i = issues(&bad);
    assert!(
        i.iter().any(|i| i.message
            == "store \"orders\": apply_parallel = 0: must be between 1 and 64"
            && i.line == 18),
        "{i:?}"
    );
}

#[test]
fn table_patterns_must_name_a_schema() {
    let i = issues(&GOOD.replace("[\"shop.*\"]", "[\"shop.*\", \"orders\"]"));
    assert_eq!(i.len(), 1, "{i:?}");
    assert_eq!(
        (i[0].line, i[0].col, i[0].message.as_str()),
        (
            16,
            21,
            "store \"orders\": table pattern \"orders\" must be schema.table (e.g. \"shop.*\")"
        )
    );
}

#[test]
fn keys_of_other_kinds_and_wrong_schemes_are_refused() {
    let i = issues(&GOOD.replace(
        "unit_key = \"user_id\"",
        "unit_key = \"user_id\"\nkey_prefixes = [\"a:\"]",
    ));
    assert_eq!(i.len(), 1, "{i:?}");
    assert_eq!((i[0].line, i[0].col), (18, 1));
    assert!(
        i[0].message.starts_with(
            "store \"orders\": unknown key \"key_prefixes\"; a \"mysql\" store takes name, kind, \
             url, apply_group_txns, apply_group_bytes, conflict, verify_every_s, verify_from, version_retention_s, tables, \
             unit_key, units_by_table, unit_values, apply_parallel, skip"
        ),
        "{i:?}"
    );
    let i = issues(&GOOD.replace("sh = \"mysql://", "sh = \"redis://"));
    assert!(
        i.iter()
            .any(|i| i.message == "store \"orders\": url for dc \"sh\" must start with mysql://"),
        "{i:?}"
    );
}

#[test]
fn options_of_another_kind_are_a_definite_error() {
    let mut s = parse(GOOD).unwrap().store("orders").unwrap().clone();
    s.set_options(());
    let e = MysqlOptions::of(&s).unwrap_err();
    assert!(!e.is_transient());
    assert!(e.to_string().contains("has no mysql options"), "{e}");
}

#[test]
fn skip_defaults_to_nothing_and_names_unknown_values() {
    assert_eq!(options(GOOD).skip, SkipSet::default());
    let both = GOOD.replace(
        "unit_key = \"user_id\"",
        "unit_key = \"user_id\"\nskip = [\"statement_dml\", \"no_primary_key\"]",
    );
    assert_eq!(
        options(&both).skip,
        SkipSet {
            statement_dml: true,
            no_primary_key: true
        }
    );
    let bad = GOOD.replace(
        "unit_key = \"user_id\"",
        "unit_key = \"user_id\"\nskip = [\"statement_dml\", \"ddl\"]",
    );
    let i = issues(&bad);
    assert_eq!(i.len(), 1, "{i:?}");
    assert_eq!(
        (i[0].line, i[0].col, i[0].message.as_str()),
        (
            18,
            26,
            "store \"orders\": skip \"ddl\": a mysql store can skip \"statement_dml\" or \"no_primary_key\""
        )
    );
}

#[test]
fn unit_rules_parse() {
    let o = options(&GOOD.replace(
        "unit_key = \"user_id\"",
        "unit_key = \"user_id\"\nunits_by_table = { \"shop.inventory\" = 7, \"shop.audit_*\" = 3 }\nunit_values = { \"north\" = 3, \"south\" = 40 }",
    ));
    assert_eq!(
        o.units_by_table,
        [
            ("shop.audit_*".to_string(), 3),
            ("shop.inventory".to_string(), 7)
        ]
    );
    assert_eq!(
        o.unit_values.into_iter().collect::<Vec<_>>(),
        [("north".to_string(), 3), ("south".to_string(), 40)]
    );
    assert_eq!(options(GOOD).units_by_table, []);
}

#[test]
fn unit_rule_problems_are_all_located_at_their_values() {
    let bad = GOOD.replace(
        "unit_key = \"user_id\"",
        "units_by_table = { \"shop.inventory\" = 70, \"audit\" = 1, \"other.t\" = 2, \"*.t\" = 3 }\nunit_values = { \"north\" = 3 }",
    );
    let i: Vec<(usize, usize, String)> = issues(&bad)
        .into_iter()
        .map(|i| (i.line, i.col, i.message))
        .collect();
    let at = |line, col, m: &str| (line, col, format!("store \"orders\": {m}"));
    assert_eq!(
        i,
        [
            at(17, 39, "units_by_table.\"shop.inventory\" = 70: unit out of range 0-63 (units.count = 64)"),
            at(17, 43, "units_by_table pattern \"audit\" must be schema.table (e.g. \"shop.audit_*\")"),
            at(17, 56, "units_by_table \"other.t\": the store does not replicate this table (tables = [\"shop.*\"])"),
            at(18, 17, "unit_values needs unit_key: the column whose value is looked up in it"),
        ]
    );
}
