//! One active agent per DC: a second agent of the same DC (another host,
//! its own data directory) waits as a standby while the DC's lease is held,
//! and takes over when the active agent dies; its new journal recovers from
//! the peers (docs/operations.md, "Standby agent").
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{options, Cluster, ClusterOptions};
use std::time::Duration;

const SCHEMA: &str = "
CREATE DATABASE IF NOT EXISTS shop;
CREATE TABLE shop.items (id BIGINT PRIMARY KEY, dc VARCHAR(8) NOT NULL) ENGINE=InnoDB;
CREATE TABLE shop.counters (id INT PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB;
INSERT INTO shop.counters VALUES (0,0),(1,0);
";

/// Rows `from..to` of DC number `k`, one transaction each, and an increment
/// of its counter with every fourth; returns the increments.
async fn write(c: &Cluster, k: usize, from: i64, to: i64) -> i64 {
    let mut incs = 0;
    for i in from..to {
        let id = k as i64 * 1_000_000 + i;
        c.dcs[k]
            .db
            .exec(&format!(
                "INSERT INTO shop.items VALUES ({id}, '{}')",
                c.dcs[k].id
            ))
            .await;
        if i % 4 == 0 {
            c.dcs[k]
                .db
                .exec(&format!(
                    "UPDATE shop.counters SET n = n + 1 WHERE id = {k}"
                ))
                .await;
            incs += 1;
        }
    }
    incs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_takes_over_when_the_active_agent_dies() {
    let mut c = Cluster::start(ClusterOptions {
        schema_sql: SCHEMA.into(),
        ..options()
    })
    .await;
    let (bj, sh) = (0, 1);
    let mut incs = [0i64; 2];
    incs[bj] += write(&c, bj, 0, 100).await;
    incs[sh] += write(&c, sh, 0, 100).await;

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("standby.log");
    let mut standby = c.agents.spawn_standby(bj, &dir.path().join("data"), &log);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    dcsync_testkit::wait_for(
        "the second agent to wait as a standby",
        Duration::from_secs(30),
        || async {
            read_log()
                .contains("standby: another agent of this DC is active")
                .then_some(())
        },
    )
    .await;
    assert!(
        !read_log().contains("this agent is active"),
        "two active agents for one DC:\n{}",
        read_log()
    );
    incs[bj] += write(&c, bj, 100, 200).await;

    c.agents.kill_agent(bj);
    incs[bj] += write(&c, bj, 200, 300).await;
    incs[sh] += write(&c, sh, 100, 200).await;
    dcsync_testkit::wait_for(
        "the standby to take over",
        Duration::from_secs(40),
        || async { read_log().contains("this agent is active").then_some(()) },
    )
    .await;
    incs[bj] += write(&c, bj, 300, 400).await;

    c.wait_converged(&["shop.items", "shop.counters"], 180)
        .await;
    for d in &c.dcs {
        for k in [bj, sh] {
            let n =
                d.db.query_i64(&format!("SELECT n FROM shop.counters WHERE id = {k}"))
                    .await;
            assert_eq!(n, incs[k], "counter of {} in {}", c.dcs[k].id, d.id);
            let rows =
                d.db.query_i64(&format!(
                    "SELECT COUNT(*) FROM shop.items WHERE dc = '{}'",
                    c.dcs[k].id
                ))
                .await;
            let want = if k == bj { 400 } else { 200 };
            assert_eq!(rows, want, "rows of {} in {}", c.dcs[k].id, d.id);
        }
    }
    assert!(
        read_log().contains("recovered from the peers' apply markers"),
        "{}",
        common::tail(&read_log(), 40)
    );
    let _ = standby.kill();
    let _ = standby.wait();
}
