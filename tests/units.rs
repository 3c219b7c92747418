//! Units and the attribution guard, end to end with real agents, MariaDB and
//! Redis: bj takes writes whose unit sh owns (by the hash of `user_id`, by a
//! `units_by_table` rule, by the hash of a Redis key) and writes of its own
//! units. Only the former are counted as misrouted — in bj's status (per
//! unit, and the last one with its table, key, unit and owner), in
//! `dcsync_misrouted_writes_total{store}` and in one rate-limited warning
//! per store — and every write is still replicated: both DCs end with the
//! same rows and keys, each write journaled once as local.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{options, Cluster, ClusterOptions, MYSQL_STORE, REDIS_STORE};
use dcsync_core::unit::unit_of;
use dcsync_testkit::prometheus::sample;
use mysql_async::prelude::Queryable;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SCHEMA: &str = "CREATE DATABASE IF NOT EXISTS shop; \
     CREATE TABLE shop.t (id INT PRIMARY KEY, user_id INT, n INT) ENGINE=InnoDB; \
     CREATE TABLE shop.audit (id INT PRIMARY KEY, user_id INT, note VARCHAR(20)) ENGINE=InnoDB; \
     CREATE TABLE shop.stock (id INT PRIMARY KEY, user_id INT, qty INT) ENGINE=InnoDB;";

/// Every row of shop.audit is unit 40 (sh's), every row of shop.stock unit
/// 7 (bj's), whatever their user_id. The harness splits 64 units: bj owns
/// 0-31, sh 32-63.
const RULES: &str = "units_by_table = { \"shop.audit\" = 40, \"shop.stock\" = 7 }\n";
const UNITS: u32 = 64;

fn unit(key: &str) -> u32 {
    unit_of(key.as_bytes(), UNITS)
}

fn sh_owns(u: u32) -> bool {
    u >= UNITS / 2
}

/// The first `n` user ids from 1 on whose unit `want` accepts, each in a
/// different unit, none in unit 40 (the audit table's).
fn users(n: usize, want: impl Fn(u32) -> bool) -> Vec<u32> {
    let mut seen = Vec::new();
    (1..)
        .filter(|u: &u32| {
            let x = unit(&u.to_string());
            let ok = want(x) && x != 40 && !seen.contains(&x);
            if ok {
                seen.push(x);
            }
            ok
        })
        .take(n)
        .collect()
}

/// The first key `prefix<i>` whose unit `want` accepts.
fn key(prefix: &str, want: impl Fn(u32) -> bool) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| want(unit(k)))
        .unwrap()
}

fn json(c: &Cluster, i: usize) -> serde_json::Value {
    serde_json::from_str(&c.agents.status_text(i, true)).unwrap_or(serde_json::Value::Null)
}

/// DC `i`'s `misrouted` status of `store`'s source.
fn misrouted(c: &Cluster, i: usize, store: &str) -> serde_json::Value {
    json(c, i)["sources"]
        .as_array()
        .and_then(|v| v.iter().find(|s| s["store"] == store).cloned())
        .map(|s| s["misrouted"].clone())
        .unwrap_or(serde_json::Value::Null)
}

/// Every row of every test table in DC `i`, in key order.
async fn rows(c: &Cluster, i: usize) -> Vec<(String, i64, Option<i64>, Option<String>)> {
    let mut conn = c.dcs[i].db.conn().await;
    let mut out = Vec::new();
    for (table, other) in [
        ("shop.t", "CAST(n AS CHAR)"),
        ("shop.audit", "note"),
        ("shop.stock", "CAST(qty AS CHAR)"),
    ] {
        let r: Vec<(i64, Option<i64>, Option<String>)> = conn
            .query(format!(
                "SELECT id, user_id, {other} FROM {table} ORDER BY id"
            ))
            .await
            .unwrap();
        out.extend(r.into_iter().map(|(a, b, o)| (table.to_string(), a, b, o)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn misrouted_writes_are_reported_and_still_replicated() {
    let mut c = Cluster::start(ClusterOptions {
        schema_sql: SCHEMA.into(),
        mysql_store_toml: RULES.into(),
        redis: true,
        ..options()
    })
    .await;
    let own = users(2, |u| !sh_owns(u));
    let theirs = users(3, sh_owns);
    let (u_sh0, u_sh1) = (unit(&theirs[0].to_string()), unit(&theirs[1].to_string()));

    // bj: four misrouted rows (by user hash, by table rule, and an UPDATE),
    // and four writes to its own units, one of them with sh's user in a
    // table whose rule gives bj's unit 7. Each statement is a transaction.
    let started = Instant::now();
    let bj_sql = [
        format!("INSERT INTO shop.t VALUES (1, {}, 0)", own[0]),
        format!("INSERT INTO shop.t VALUES (2, {}, 0)", own[1]),
        format!("INSERT INTO shop.t VALUES (3, {}, 0)", theirs[0]),
        format!("INSERT INTO shop.t VALUES (4, {}, 0)", theirs[1]),
        format!("INSERT INTO shop.stock VALUES (1, {}, 5)", theirs[0]),
        format!("INSERT INTO shop.audit VALUES (1, {}, 'x')", own[0]),
        "UPDATE shop.t SET n = 1 WHERE id = 3".to_string(),
        "UPDATE shop.t SET n = 1 WHERE id = 1".to_string(),
    ];
    for sql in &bj_sql {
        c.dcs[0].db.exec(sql).await;
    }
    // sh writes to a unit it owns: not misrouted there.
    c.dcs[1]
        .db
        .exec(&format!("INSERT INTO shop.t VALUES (10, {}, 0)", theirs[2]))
        .await;
    // Redis: one key sh owns and one bj owns, written in bj.
    let (k_sh, k_bj) = (key("misrouted:", sh_owns), key("own:", |u| !sh_owns(u)));
    {
        let mut r = c.dcs[0].redis.as_ref().unwrap().conn().await;
        for k in [&k_sh, &k_bj] {
            let _: () = redis::cmd("SET")
                .arg(k)
                .arg("v")
                .query_async(&mut r)
                .await
                .unwrap();
        }
    }
    let burst = started.elapsed();

    // Still replicated: every row and key in both DCs, each write
    // journaled once as local (none dropped, none echoed).
    c.wait_converged(&["shop.t", "shop.audit", "shop.stock"], 60)
        .await;
    let (bj_rows, sh_rows) = (rows(&c, 0).await, rows(&c, 1).await);
    assert_eq!(bj_rows, sh_rows);
    assert_eq!(bj_rows.len(), 7, "{bj_rows:?}");
    c.assert_no_echo(MYSQL_STORE, &[bj_sql.len() as u64, 1])
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = c.dcs[0]
            .redis
            .as_ref()
            .unwrap()
            .string_values()
            .await
            .unwrap();
        let b = c.dcs[1]
            .redis
            .as_ref()
            .unwrap()
            .string_values()
            .await
            .unwrap();
        if a == b && a.contains_key(&k_sh) && a.contains_key(&k_bj) {
            break;
        }
        if Instant::now() > deadline {
            c.agents.dump();
            panic!("redis did not converge: {a:?} vs {b:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.settled_sources(REDIS_STORE, 60).await;

    // bj's status: the count per unit and the last misrouted write.
    let m = misrouted(&c, 0, MYSQL_STORE);
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for u in [u_sh0, u_sh1, 40, u_sh0] {
        *want.entry(u.to_string()).or_insert(0) += 1;
    }
    assert_eq!(m["total"], 4, "{m}");
    assert_eq!(
        serde_json::from_value::<BTreeMap<String, u64>>(m["by_unit"].clone()).unwrap(),
        want,
        "{m}"
    );
    assert_eq!(m["other_units"], 0, "{m}");
    let last = &m["last"];
    assert_eq!(last["table"], "shop.t", "{m}");
    assert_eq!(last["key"], "id=3", "{m}");
    assert_eq!(last["unit"], u_sh0, "{m}");
    assert_eq!(last["owner"], "sh", "{m}");
    assert!(
        last["position"]
            .as_str()
            .is_some_and(|p| p.starts_with("mysql-bin.")),
        "{m}"
    );
    let m = misrouted(&c, 0, REDIS_STORE);
    assert_eq!(m["total"], 1, "{m}");
    assert_eq!(m["last"]["table"], serde_json::Value::Null, "{m}");
    assert_eq!(m["last"]["key"], k_sh.as_str(), "{m}");
    assert_eq!(m["last"]["unit"], unit(&k_sh), "{m}");
    // sh wrote only to its own units.
    for store in [MYSQL_STORE, REDIS_STORE] {
        assert_eq!(misrouted(&c, 1, store)["total"], 0, "{store}");
    }
    let text = c.agents.status_text(0, false);
    assert!(
        text.contains("MISROUTED: 4 local write(s) to units other DCs own (still replicated)")
            && text.contains(&format!(
                "last misrouted: shop.t id=3 unit {u_sh0} owned by sh"
            ))
            && text.contains(&format!(
                "last misrouted: key {k_sh} unit {} owned by sh",
                unit(&k_sh)
            )),
        "{text}"
    );

    // The metric, labelled by store only.
    let bj = c.agents.admin_get(0, "/metrics").unwrap();
    let misrouted_total = |text: &str, store: &str| {
        sample(text, "dcsync_misrouted_writes_total", &[("store", store)]).unwrap_or(0.0)
    };
    assert_eq!(misrouted_total(&bj, MYSQL_STORE), 4.0, "{bj}");
    assert_eq!(misrouted_total(&bj, REDIS_STORE), 1.0, "{bj}");
    assert!(
        !bj.lines()
            .any(|l| l.starts_with("dcsync_misrouted_writes_total{") && l.contains("unit")),
        "{bj}"
    );
    let sh = c.agents.admin_get(1, "/metrics").unwrap();
    assert_eq!(misrouted_total(&sh, MYSQL_STORE), 0.0, "{sh}");

    // One warning per store for a burst of writes (at most one per 10 s),
    // naming the table, key, unit and owner.
    let log = c.agents.log(0);
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("misrouted write"))
        .collect();
    let orders: Vec<&&str> = warnings
        .iter()
        .filter(|l| l.contains("store=orders"))
        .collect();
    assert!(!orders.is_empty(), "{log}");
    for l in &orders {
        assert!(
            l.contains("table=shop.") && l.contains("owner=sh") && l.contains("suppressed="),
            "{l}"
        );
    }
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("store=cache") && l.contains(&format!("key={k_sh:?}"))),
        "{log}"
    );
    if burst < Duration::from_secs(9) {
        assert_eq!(orders.len(), 1, "{warnings:#?}");
    }
}
