//! Unit tests of the parent module: the Redis keys of a topology file.

use super::*;
use crate::CONNECTOR;
use dcsync_core::connector::Registry;
use dcsync_core::topology::{Topology, TopologyError, TopologyIssue};

static REGISTRY: Registry = Registry::new(&[&CONNECTOR]);

const HEAD: &str = r#"
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
"#;

/// A topology with one redis store `cache` whose own lines are `lines`
/// (they start at line 16).
fn with(lines: &str) -> String {
    format!(
        "{HEAD}[[store]]\nname = \"cache\"\nkind = \"redis\"\n{lines}url = {{ bj = \"redis://a:1\", sh = \"redis://b:1\" }}\n"
    )
}

fn options(text: &str) -> RedisOptions {
    let t = Topology::parse(text, &REGISTRY).unwrap();
    RedisOptions::of(t.store("cache").unwrap()).unwrap().clone()
}

fn issues(text: &str) -> Vec<TopologyIssue> {
    match Topology::parse(text, &REGISTRY) {
        Err(TopologyError::Invalid { issues, .. }) => issues,
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn defaults() {
    let t = Topology::parse(&with(""), &REGISTRY).unwrap();
    let s = t.store("cache").unwrap();
    assert_eq!(s.kind, "redis");
    // Today's defaults: 256 transactions / 4 MiB per MULTI/EXEC group.
    assert_eq!((s.apply_group_txns, s.apply_group_bytes), (256, 4 << 20));
    assert_eq!(options(&with("")), RedisOptions::default());
    assert_eq!(RedisOptions::default().flush, FlushPolicy::Refuse);
}

#[test]
fn every_key() {
    let o = options(&with(
        "unit_key = '^user:(\\d+):'\nkey_prefixes = [\"session:\", \"cart:\"]\ndatabases = [0, 3]\nflush = \"replicate\"\n",
    ));
    assert_eq!(
        o.unit_key.as_ref().map(|p| p.as_str()),
        Some(r"^user:(\d+):")
    );
    assert_eq!(o.key_prefixes, ["session:", "cart:"]);
    assert_eq!(o.databases, [0, 3]);
    assert_eq!(o.flush, FlushPolicy::Replicate);
}

#[test]
fn redis_unit_key_pattern_is_checked() {
    assert!(Topology::parse(&with("unit_key = '^user:(\\d+):'\n"), &REGISTRY).is_ok());
    let i = issues(&with("unit_key = 'user:'\n"));
    assert_eq!(i.len(), 1, "{i:?}");
    assert_eq!((i[0].line, i[0].col), (16, 12), "{i:?}");
    assert!(
        i[0].message
            .starts_with("store \"cache\": unit_key \"user:\" has no capture group"),
        "{i:?}"
    );
}

#[test]
fn bad_values_are_located() {
    let i = issues(&with("flush = \"sometimes\"\ndatabases = [-1]\n"));
    assert_eq!(i.len(), 2, "{i:?}");
    assert_eq!(
        (i[0].line, i[0].col, i[0].message.as_str()),
        (
            16,
            9,
            "store \"cache\": flush \"sometimes\": expected \"replicate\" or \"refuse\""
        )
    );
    assert_eq!((i[1].line, i[1].col), (17, 14), "{i:?}");
    assert!(
        i[1].message.starts_with("store \"cache\": databases: "),
        "{i:?}"
    );
}

#[test]
fn mysql_keys_are_refused() {
    let i = issues(&with("tables = [\"shop.*\"]\n"));
    assert_eq!(i.len(), 1, "{i:?}");
    assert_eq!((i[0].line, i[0].col), (16, 1));
    assert!(
        i[0].message.starts_with(
            "store \"cache\": unknown key \"tables\"; a \"redis\" store takes name, kind, url, \
             apply_group_txns, apply_group_bytes, conflict, verify_every_s, verify_from, version_retention_s, unit_key, \
             units_by_prefix, unit_values, key_prefixes, databases, flush, skip"
        ),
        "{i:?}"
    );
}

#[test]
fn skip_takes_unsupported_command_only() {
    assert!(!options(&with("")).skip_unsupported_command);
    assert!(options(&with("skip = [\"unsupported_command\"]\n")).skip_unsupported_command);
    let i = issues(&with("skip = [\"unsupported_command\", \"flush\"]\n"));
    assert_eq!(i.len(), 1, "{i:?}");
    assert_eq!(
        (i[0].line, i[0].col, i[0].message.as_str()),
        (
            16,
            32,
            "store \"cache\": skip \"flush\": a redis store can skip \"unsupported_command\""
        )
    );
}

#[test]
fn unit_rules_parse() {
    let o = options(&with(
        "units_by_prefix = { \"inventory:\" = 7, \"inventory:eu:\" = 8 }\nunit_values = { \"north\" = 3 }\n",
    ));
    assert_eq!(
        o.units_by_prefix,
        [
            ("inventory:".to_string(), 7),
            ("inventory:eu:".to_string(), 8)
        ]
    );
    assert_eq!(o.unit_values.get("north"), Some(&3));
}

#[test]
fn unit_rule_problems_are_located() {
    let i = issues(&with(
        "key_prefixes = [\"session:\"]\nunits_by_prefix = { \"inventory:\" = 7, \"session:eu:\" = 64, \"sess\" = 1 }\nunit_values = { \"north\" = -3 }\n",
    ));
    let i: Vec<(usize, usize, String)> =
        i.into_iter().map(|i| (i.line, i.col, i.message)).collect();
    let at = |line, col, m: &str| (line, col, format!("store \"cache\": {m}"));
    assert_eq!(
        i,
        [
            at(17, 21, "units_by_prefix \"inventory:\": no key with this prefix replicates (key_prefixes = [\"session:\"])"),
            at(17, 55, "units_by_prefix.\"session:eu:\" = 64: unit out of range 0-63 (units.count = 64)"),
            at(18, 27, "unit_values.\"north\" = -3: unit out of range 0-63 (units.count = 64)"),
        ]
    );
}

/// The store `cache` with the given `url` table body.
fn with_urls(urls: &str) -> String {
    format!("{HEAD}[[store]]\nname = \"cache\"\nkind = \"redis\"\nurl = {{ {urls} }}\n")
}

#[test]
fn sentinel_urls_are_accepted_and_checked() {
    let ok = with_urls(
        "bj = \"redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379/bj-cache/0\", sh = \"sentinel://10.1.0.1/sh-cache\"",
    );
    let t = Topology::parse(&ok, &REGISTRY).unwrap();
    assert!(t.store("cache").is_some());
    let i = issues(&with_urls(
        "bj = \"sentinel://:s3cret@10.0.0.1:26379\", sh = \"sentinel://h:0/m\"",
    ));
    assert_eq!(i.len(), 2, "{i:?}");
    assert_eq!(i[0].line, 16, "{i:?}");
    assert!(
        i[0].message
            .contains("url for dc \"bj\": sentinel url: no master name"),
        "{i:?}"
    );
    assert!(!i[0].message.contains("s3cret"), "{i:?}");
    assert!(
        i[1].message
            .contains("url for dc \"sh\": sentinel url: \"h:0\" is not host:port"),
        "{i:?}"
    );
    let i = issues(&with_urls("bj = \"rediss://a:1\", sh = \"redis://b:1\""));
    assert!(
        i[0].message
            .contains("must start with redis:// or redis+sentinel:// or sentinel://"),
        "{i:?}"
    );
}
