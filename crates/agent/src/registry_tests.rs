//! Unit tests of the parent module: the registry, and every topology file
//! the repository ships parsed with it (they must keep their meaning).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use dcsync_core::topology::StoreConfig;
use dcsync_core::Topology;
use dcsync_mysql::MysqlOptions;
use dcsync_redis::{FlushPolicy, RedisOptions};
use std::collections::BTreeSet;

#[test]
fn kind_names_and_aliases_are_unique() {
    let mut seen = BTreeSet::new();
    for c in REGISTRY.connectors() {
        for name in std::iter::once(&c.kind()).chain(c.aliases()) {
            assert!(seen.insert(*name), "{name:?} registered twice");
        }
    }
    assert_eq!(kinds(), "mysql (mariadb), redis");
}

fn parse(text: &str) -> Topology {
    Topology::parse(text, &REGISTRY).unwrap_or_else(|e| panic!("{e}"))
}

/// The `orders` store every example declares.
fn assert_orders(s: &StoreConfig) {
    assert_eq!(s.kind, "mysql");
    let o = MysqlOptions::of(s).unwrap();
    assert_eq!(
        o,
        &MysqlOptions {
            tables: vec!["shop.*".into()],
            unit_key: Some("user_id".into()),
            apply_parallel: 4,
            // The demo seeds both DCs alike and says initial = "none".
            initial: o.initial,
            ..Default::default()
        }
    );
    assert_eq!((s.apply_group_txns, s.apply_group_bytes), (2048, 16 << 20));
}

/// A Redis store with every default but `key_prefixes`.
fn assert_redis(s: &StoreConfig, key_prefixes: &[&str]) {
    assert_eq!(s.kind, "redis");
    let o = RedisOptions::of(s).unwrap();
    assert_eq!(o.key_prefixes, key_prefixes);
    assert!(o.databases.is_empty() && o.unit_key.is_none());
    assert_eq!(o.flush, FlushPolicy::Refuse);
    assert_eq!((s.apply_group_txns, s.apply_group_bytes), (256, 4 << 20));
}

#[test]
fn the_documented_example_file() {
    let t = parse(include_str!("../../../docs/examples/two-dc.toml"));
    assert_eq!(t.stores.len(), 1);
    assert_orders(&t.stores[0]);
    assert_eq!(
        t.stores[0].url_for("sh").unwrap().expose(),
        "mysql://root@127.0.0.1:13307"
    );
    assert!(t.dcs.iter().all(|d| d.admin.is_none()));
}

#[test]
fn the_docker_compose_topology() {
    let t = parse(include_str!("../../../deploy/docker-two-dc.toml"));
    assert_eq!(t.stores.len(), 1);
    assert_orders(&t.stores[0]);
    assert_eq!(t.dc("bj").unwrap().listen, "0.0.0.0:7701");
}

#[test]
fn the_example_in_docs_topology_md() {
    let doc = include_str!("../../../docs/topology.md");
    let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let len = doc[start..].find("```").expect("its end");
    let t = parse(&doc[start..start + len]);
    assert_eq!(t.stores.len(), 2);
    assert_orders(t.store("orders").unwrap());
    assert_redis(t.store("session-cache").unwrap(), &["session:", "cart:"]);
}

#[test]
fn the_demo_script_topology() {
    let script = include_str!("../../../scripts/demo.sh");
    let start = script.find("<<TOML\n").expect("a heredoc") + "<<TOML\n".len();
    let len = script[start..].find("\nTOML\n").expect("its end");
    let t = parse(&script[start..start + len]);
    assert_orders(t.store("orders").unwrap());
    assert_redis(t.store("cache").unwrap(), &[]);
}

/// The "Units" section of docs/topology.md: its example stores parse with
/// the rules it describes, and every `dcsync route` answer it shows is what
/// the connectors answer.
#[test]
fn the_units_example_in_docs_topology_md() {
    let doc = include_str!("../../../docs/topology.md");
    let section = &doc[doc.find("\n## Units\n").expect("a Units section")..];
    let block = |fence: &str| {
        let start = section.find(fence).expect("a block") + fence.len();
        let len = section[start..].find("```").expect("its end");
        &section[start..start + len]
    };
    let head = "cluster = \"shop\"\n[[dc]]\nid = \"bj\"\nlink = \"127.0.0.1:7701\"\n\
                [[dc]]\nid = \"sh\"\nlink = \"127.0.0.1:7702\"\n";
    let t = parse(&format!("{head}{}", block("```toml\n")));
    let orders = MysqlOptions::of(t.store("orders").unwrap()).unwrap();
    assert_eq!(orders.units_by_table.len(), 2);
    let geo = MysqlOptions::of(t.store("geo").unwrap()).unwrap();
    assert_eq!(geo.unit_values.get("south"), Some(&40));
    let cache = RedisOptions::of(t.store("session-cache").unwrap()).unwrap();
    assert_eq!(cache.units_by_prefix, [("inventory:".to_string(), 7)]);
    let mut answered = 0;
    let mut lines = block("```text\n").lines().peekable();
    while let Some(cmd) = lines.next() {
        let Some(args) = cmd.strip_prefix("$ dcsync route --topology topology.toml ") else {
            continue;
        };
        let want = lines.next().expect("an answer");
        let args: Vec<&str> = args.split(' ').collect();
        let (store, table, value) = match args.as_slice() {
            ["--store", s, "--table", t, v] => (*s, Some(*t), *v),
            ["--store", s, v] => (*s, None, *v),
            other => panic!("unexpected arguments {other:?}"),
        };
        let s = t.store(store).unwrap();
        let got = REGISTRY
            .connector_for(s)
            .unwrap()
            .route(dcsync_core::connector::RouteQuery {
                store: s,
                units_count: t.units.count,
                table,
                value: value.as_bytes(),
            })
            .expect("a connector that routes");
        let got = match got {
            Ok(r) => format!(
                "unit {} owner {} (store {store}, rule: {})",
                r.unit,
                t.units.owner_of(r.unit).unwrap(),
                r.rule
            ),
            Err(e) => format!("dcsync: {e}"),
        };
        assert_eq!(got, want, "{cmd}");
        answered += 1;
    }
    assert_eq!(answered, 5);
}
