//! An agent whose data directory is lost (a replaced host) recovers from
//! what its peers applied: nothing is skipped, nothing is applied twice
//! (docs/architecture.md, "Journal identity"; docs/operations.md,
//! "Replacing an agent's host").
//!
//! Three DCs: bj's rows reach sh further than tk (tk's line is cut), then
//! bj's agent is killed and its data directory deleted while every DC keeps
//! writing; the new agent starts while tk is still cut off, so it must wait
//! for tk before shipping, and restarts bj's stream at tk's marker (the
//! least advanced): sh skips what it already applied, tk receives the rest.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{options, Cluster, ClusterOptions, MYSQL_STORE};
use std::time::Duration;

const SCHEMA: &str = "
CREATE DATABASE IF NOT EXISTS shop;
CREATE TABLE shop.items (id BIGINT PRIMARY KEY, dc VARCHAR(8) NOT NULL, note VARCHAR(64)) ENGINE=InnoDB;
CREATE TABLE shop.counters (id INT PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB;
INSERT INTO shop.counters VALUES (0,0),(1,0),(2,0);
";

const TABLES: &[&str] = &["shop.items", "shop.counters"];

/// Writes rows `from..to` of DC number `k` (one transaction each) and, with
/// every fifth row, one increment of its counter row. Returns the
/// increments made.
async fn write(c: &Cluster, k: usize, from: i64, to: i64) -> i64 {
    let db = &c.dcs[k].db;
    let mut incs = 0;
    for i in from..to {
        let id = k as i64 * 1_000_000 + i;
        db.exec(&format!(
            "INSERT INTO shop.items VALUES ({id}, '{}', 'row {i}')",
            c.dcs[k].id
        ))
        .await;
        if i % 5 == 0 {
            db.exec(&format!(
                "UPDATE shop.counters SET n = n + 1 WHERE id = {k}"
            ))
            .await;
            incs += 1;
        }
    }
    incs
}

/// Rows of DC number `k` that DC number `at` holds.
async fn rows_of(c: &Cluster, at: usize, k: usize) -> i64 {
    c.dcs[at]
        .db
        .query_i64(&format!(
            "SELECT COUNT(*) FROM shop.items WHERE dc = '{}'",
            c.dcs[k].id
        ))
        .await
}

async fn wait_rows(c: &Cluster, at: usize, k: usize, n: i64) {
    dcsync_testkit::wait_for(
        &format!("{} rows of {} in {}", n, c.dcs[k].id, c.dcs[at].id),
        Duration::from_secs(60),
        || async { (rows_of(c, at, k).await == n).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replaced_agent_recovers_from_its_peers_and_skips_nothing() {
    let mut c = Cluster::start(ClusterOptions {
        dcs: vec!["bj", "sh", "tk"],
        schema_sql: SCHEMA.into(),
        ..options()
    })
    .await;
    let (bj, sh, tk) = (0, 1, 2);
    let mut incs = [0i64; 3];
    incs[bj] += write(&c, bj, 0, 300).await;
    for at in [sh, tk] {
        wait_rows(&c, at, bj, 300).await;
    }
    // tk falls behind on bj's stream; sh does not.
    c.agents.dcs[tk].proxy.cut();
    incs[bj] += write(&c, bj, 300, 450).await;
    wait_rows(&c, sh, bj, 450).await;
    assert_eq!(rows_of(&c, tk, bj).await, 300, "rows crossed a cut line");

    // bj's host is replaced: agent killed, data directory gone. Every DC
    // keeps writing meanwhile.
    c.agents.kill_agent(bj);
    std::fs::remove_dir_all(&c.agents.dcs[bj].data_dir).unwrap();
    incs[bj] += write(&c, bj, 450, 650).await;
    incs[sh] += write(&c, sh, 0, 100).await;
    incs[tk] += write(&c, tk, 0, 100).await;

    // The new agent starts while tk is still cut off: it must not ship
    // bj's stream before tk told what it applied.
    let before = c.agents.log(bj).len();
    c.agents.start_agent(bj);
    incs[bj] += write(&c, bj, 650, 800).await;
    dcsync_testkit::wait_for(
        "the new agent holding bj's stream back",
        Duration::from_secs(30),
        || async {
            let log = c.agents.log(bj);
            log.get(before..)
                .is_some_and(|l| l.contains("holding back streams of a new journal"))
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        rows_of(&c, sh, bj).await,
        450,
        "the new journal shipped before every peer told what it applied"
    );
    c.agents.dcs[tk].proxy.restore();

    c.wait_converged(TABLES, 180).await;
    for at in [bj, sh, tk] {
        assert_eq!(
            rows_of(&c, at, bj).await,
            800,
            "bj's rows in {}",
            c.dcs[at].id
        );
        for k in [bj, sh, tk] {
            let n = c.dcs[at]
                .db
                .query_i64(&format!("SELECT n FROM shop.counters WHERE id = {k}"))
                .await;
            assert_eq!(n, incs[k], "counter of {} in {}", c.dcs[k].id, c.dcs[at].id);
        }
    }
    let log = c.agents.log(bj);
    let recovered = log
        .lines()
        .find(|l| l.contains("recovered from the peers' apply markers"))
        .unwrap_or_else(|| panic!("no recovery logged:\n{}", common::tail(&log, 40)));
    // It restarted at tk's marker (the least advanced), not sh's.
    assert!(recovered.contains("from=tk"), "{recovered}");
    // bj's new journal continues the lost one's seqs: every transaction of
    // bj (800 inserts, the increments, the harness's warm-up write) has one
    // seq, wherever it was applied, and the new journal's head is the same.
    let least = 800 + incs[bj];
    let mut seqs = Vec::new();
    for at in [sh, tk] {
        seqs.push(
            c.dcs[at]
                .db
                .query_i64(&format!(
                    "SELECT CAST(COALESCE(MAX(seq),0) AS SIGNED) FROM dcsync.apply_marker \
                     WHERE origin = 'bj' AND store = '{MYSQL_STORE}'"
                ))
                .await,
        );
    }
    assert!(
        seqs[0] == seqs[1] && (least..=least + 2).contains(&seqs[0]),
        "{seqs:?} vs {least}"
    );
    dcsync_testkit::wait_for(
        "bj's journal head in its status",
        Duration::from_secs(10),
        || async { (c.agents.status(bj)?.last_seq(MYSQL_STORE)? == seqs[0] as u64).then_some(()) },
    )
    .await;
}

/// `INCRBY` of bj's counters and `SET`s of distinct keys in bj's Redis
/// (`from..to`); returns the sum added.
async fn redis_write(c: &Cluster, from: u64, to: u64) -> i64 {
    let mut con = c.dcs[0].redis.as_ref().unwrap().conn().await;
    let mut sum = 0;
    for i in from..to {
        let by = (i % 7 + 1) as i64;
        let _: i64 = redis::cmd("INCRBY")
            .arg(format!("bj:ctr:{}", i % 3))
            .arg(by)
            .query_async(&mut con)
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg(format!("bj:key:{i}"))
            .arg(format!("v{i}"))
            .query_async(&mut con)
            .await
            .unwrap();
        sum += by;
    }
    sum
}

/// bj's `bj:key:*` keys in DC number `at`'s Redis.
async fn keys_in(c: &Cluster, at: usize) -> usize {
    let d = c.dcs[at].redis.as_ref().unwrap().digests().await.unwrap();
    d.keys().filter(|k| k.starts_with(b"bj:key:")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replaced_agent_resumes_redis_with_psync_from_a_peer_marker() {
    let mut c = Cluster::start(ClusterOptions {
        redis: true,
        schema_sql: SCHEMA.into(),
        ..options()
    })
    .await;
    let (bj, sh) = (0, 1);
    let mut sum = redis_write(&c, 0, 300).await;
    dcsync_testkit::wait_for("bj's keys in sh", Duration::from_secs(60), || async {
        (keys_in(&c, sh).await == 300).then_some(())
    })
    .await;
    c.agents.kill_agent(bj);
    std::fs::remove_dir_all(&c.agents.dcs[bj].data_dir).unwrap();
    sum += redis_write(&c, 300, 500).await;
    c.agents.start_agent(bj);
    sum += redis_write(&c, 500, 600).await;

    dcsync_testkit::wait_for(
        "bj's Redis and sh's Redis equal",
        Duration::from_secs(120),
        || async {
            let a = c.dcs[bj].redis.as_ref().unwrap().digests().await.unwrap();
            let b = c.dcs[sh].redis.as_ref().unwrap().digests().await.unwrap();
            (a == b).then_some(())
        },
    )
    .await;
    c.wait_converged(TABLES, 60).await;
    for d in &c.dcs {
        let mut con = d.redis.as_ref().unwrap().conn().await;
        let mut total = 0i64;
        for r in 0..3 {
            let v: Option<i64> = redis::cmd("GET")
                .arg(format!("bj:ctr:{r}"))
                .query_async(&mut con)
                .await
                .unwrap();
            total += v.unwrap_or(0);
        }
        assert_eq!(total, sum, "bj's counters in {}", d.id);
    }
    assert_eq!(keys_in(&c, sh).await, 600);
    let log = c.agents.log(bj);
    let recovered = log
        .lines()
        .find(|l| {
            l.contains("recovered from the peers' apply markers") && l.contains("store=cache")
        })
        .unwrap_or_else(|| panic!("no recovery of cache logged:\n{}", common::tail(&log, 40)));
    assert!(recovered.contains("from=sh"), "{recovered}");
    // The recovered stream continued the old replication stream (the marker's
    // offset was still in bj's backlog): no full resync re-shipped every key.
    assert!(log.contains("+CONTINUE"), "{}", common::tail(&log, 40));
}
