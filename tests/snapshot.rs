//! The initial snapshot (`initial = "snapshot"`): rows the DCs held before
//! dcsync first started are copied, writes made while it starts are
//! neither missed nor doubled, and a snapshot cut by `kill -9` resumes
//! exactly (docs/operations.md, "Starting on existing data").
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{options, Cluster, ClusterOptions};
use std::time::Duration;

const SCHEMA: &str = "
CREATE DATABASE IF NOT EXISTS shop;
CREATE TABLE shop.items (
  id BIGINT PRIMARY KEY, dc VARCHAR(8) NOT NULL, note VARCHAR(64) CHARACTER SET utf8mb4,
  d DATETIME(6), t TIME(3), f DOUBLE, amount DECIMAL(10,2), b VARBINARY(16), u INT UNSIGNED,
  e ENUM('red','green')
) ENGINE=InnoDB;
CREATE TABLE shop.pairs (a INT, b VARCHAR(8), n INT, PRIMARY KEY (a, b)) ENGINE=InnoDB;
CREATE TABLE shop.counters (id INT PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB;
INSERT INTO shop.counters VALUES (0,0),(1,0);
";

const TABLES: &[&str] = &["shop.items", "shop.pairs", "shop.counters"];

/// `n` rows of DC `dc` with ids `from..from+n`, every column type filled.
fn rows(dc: &str, from: i64, n: i64) -> String {
    format!(
        "INSERT INTO shop.items SELECT seq, '{dc}', CONCAT('{dc} row ', seq, ' ✓'), \
         '2024-01-02 03:04:05.123456' + INTERVAL seq SECOND, SEC_TO_TIME(CAST(seq % 90000 AS SIGNED) - 45000), \
         seq / 7, seq / 100, UNHEX(HEX(seq)), seq, IF(seq % 2, 'red', 'green') \
         FROM shop.seq_{from}_to_{};",
        from + n - 1
    )
}

fn snapshot_options(seed: [String; 2], extra: &str) -> ClusterOptions {
    ClusterOptions {
        schema_sql: SCHEMA.into(),
        seed_sql: seed.to_vec(),
        mysql_store_toml: format!("initial = \"snapshot\"\nconflict = \"lww\"\n{extra}"),
        ..options()
    }
}

async fn count(c: &Cluster, i: usize, sql: &str) -> i64 {
    c.dcs[i].db.query_i64(sql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_both_dcs_held_before_the_first_start_end_as_their_union() {
    let overlap = |dc: &str| {
        format!(
            "INSERT INTO shop.items (id, dc, note) SELECT seq, '{dc}', 'both' FROM shop.seq_9000_to_9009; \
             INSERT INTO shop.pairs VALUES (1, 'x', 1), (1, 'y', 2), (2, '{dc}', 3);"
        )
    };
    let mut c = Cluster::start(snapshot_options(
        [
            format!("{} {}", rows("bj", 1, 500), overlap("bj")),
            format!("{} {}", rows("sh", 100_001, 300), overlap("sh")),
        ],
        "",
    ))
    .await;
    c.wait_converged(TABLES, 120).await;
    for i in 0..2 {
        assert_eq!(count(&c, i, "SELECT COUNT(*) FROM shop.items").await, 810);
        assert_eq!(
            count(
                &c,
                i,
                "SELECT COUNT(*) FROM shop.items WHERE dc = 'bj' AND note <> 'both'"
            )
            .await,
            500
        );
        assert_eq!(count(&c, i, "SELECT COUNT(*) FROM shop.pairs").await, 4);
    }
    // The rows both held: one DC's copy everywhere (the conflict rule
    // decides), not each DC the other's.
    let winners = count(
        &c,
        0,
        "SELECT COUNT(DISTINCT dc) FROM shop.items WHERE id BETWEEN 9000 AND 9009",
    )
    .await;
    assert_eq!(
        winners, 1,
        "the overlapping rows did not resolve to one DC's copy"
    );
    let log = c.agents.log(0);
    assert!(
        log.contains("initial snapshot done"),
        "{}",
        common::tail(&log, 30)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_during_the_snapshot_are_neither_missed_nor_doubled() {
    let mut c = Cluster::start(ClusterOptions {
        wait_ready: false,
        ..snapshot_options(
            [rows("bj", 1, 20_000), String::new()],
            "snapshot_rows_per_sec = 10000\n",
        )
    })
    .await;
    // Writes in both DCs while bj's snapshot (about 2 s) runs.
    let mut incs = [0i64; 2];
    for i in 0..200i64 {
        c.dcs[0]
            .db
            .exec(&format!(
                "INSERT INTO shop.items (id, dc, note) VALUES ({}, 'bj', 'live')",
                50_000 + i
            ))
            .await;
        c.dcs[0]
            .db
            .exec("UPDATE shop.items SET u = u + 1 WHERE id = 7")
            .await;
        for (k, inc) in incs.iter_mut().enumerate() {
            c.dcs[k]
                .db
                .exec(&format!(
                    "UPDATE shop.counters SET n = n + 1 WHERE id = {k}"
                ))
                .await;
            *inc += 1;
        }
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    c.wait_converged(TABLES, 180).await;
    for i in 0..2 {
        assert_eq!(
            count(&c, i, "SELECT COUNT(*) FROM shop.items").await,
            20_200
        );
        assert_eq!(
            count(&c, i, "SELECT u FROM shop.items WHERE id = 7").await,
            7 + 200,
            "every live update of row 7 applied once, after its snapshot copy"
        );
        for (k, inc) in incs.iter().enumerate() {
            let n = count(
                &c,
                i,
                &format!("SELECT n FROM shop.counters WHERE id = {k}"),
            )
            .await;
            assert_eq!(n, *inc, "counter {k} in {}", c.dcs[i].id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_cut_by_kill9_resumes_and_is_exact() {
    let mut c = Cluster::start(ClusterOptions {
        wait_ready: false,
        ..snapshot_options(
            [rows("bj", 1, 200_000), String::new()],
            "snapshot_rows_per_sec = 40000\n",
        )
    })
    .await;
    // Cut it in the middle: some rows arrived in sh, not all.
    dcsync_testkit::wait_for(
        "the snapshot half-way in sh",
        Duration::from_secs(120),
        || async { (count(&c, 1, "SELECT COUNT(*) FROM shop.items").await > 40_000).then_some(()) },
    )
    .await;
    // Meanwhile the status shows the copy running, with an estimate.
    dcsync_testkit::wait_for(
        "the copy in bj's status",
        Duration::from_secs(5),
        || async {
            c.agents
                .status_text(0, false)
                .contains("INITIAL COPY: table shop.items")
                .then_some(())
        },
    )
    .await;
    c.agents.kill_agent(0);
    let at_kill = count(&c, 1, "SELECT COUNT(*) FROM shop.items").await;
    assert!(
        at_kill < 200_000,
        "the snapshot ended before the kill: {at_kill}"
    );
    let mut incs = 0i64;
    for _ in 0..50 {
        c.dcs[0]
            .db
            .exec("UPDATE shop.counters SET n = n + 1 WHERE id = 0")
            .await;
        c.dcs[0]
            .db
            .exec("UPDATE shop.items SET u = u + 1 WHERE id = 199999")
            .await;
        incs += 1;
    }
    c.agents.start_agent(0);
    c.wait_converged(TABLES, 300).await;
    for i in 0..2 {
        assert_eq!(
            count(&c, i, "SELECT COUNT(*) FROM shop.items").await,
            200_000
        );
        assert_eq!(
            count(&c, i, "SELECT n FROM shop.counters WHERE id = 0").await,
            incs
        );
        assert_eq!(
            count(&c, i, "SELECT u FROM shop.items WHERE id = 199999").await,
            199_999 + incs
        );
    }
    let log = c.agents.log(0);
    assert!(
        log.contains("resumed: Some(\"shop.items\")")
            || log.contains("resumed=Some(\"shop.items\")"),
        "the restarted agent did not resume the snapshot:\n{}",
        common::tail(&log, 30)
    );
}
