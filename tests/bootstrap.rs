//! A new DC filled from an existing one while the others keep writing
//! (`dcsync bootstrap`), then streaming with no gap: it converges, every
//! counter is exact, and `dcsync verify` finds the three DCs equal
//! (docs/operations.md, "Adding a DC").
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{options, Cluster, ClusterOptions, MYSQL_STORE};
use mysql_async::prelude::Queryable;
use std::process::Command;

const SCHEMA: &str = "
CREATE DATABASE IF NOT EXISTS shop;
CREATE TABLE shop.items (id BIGINT PRIMARY KEY, dc VARCHAR(8) NOT NULL, note VARCHAR(64) CHARACTER SET utf8mb4, d DATETIME(6)) ENGINE=InnoDB;
CREATE TABLE shop.counters (id INT PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB;
INSERT INTO shop.counters VALUES (0,0),(1,0),(2,0);
";

const TABLES: &[&str] = &["shop.items", "shop.counters"];

/// Inserts rows `from..to` of DC number `k` and increments its counter
/// with every third; returns the increments.
async fn write(url: String, k: usize, dc: String, from: i64, to: i64) -> i64 {
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    let mut incs = 0;
    for i in from..to {
        c.query_drop(format!(
            "INSERT INTO shop.items VALUES ({}, '{dc}', 'row {i} ✓', NOW(6))",
            k as i64 * 1_000_000 + i
        ))
        .await
        .unwrap();
        if i % 3 == 0 {
            c.query_drop(format!("UPDATE shop.counters SET n = n + 1 WHERE id = {k}"))
                .await
                .unwrap();
            incs += 1;
        }
    }
    incs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_dc_is_bootstrapped_while_the_others_write() {
    let mut c = Cluster::start(ClusterOptions {
        dcs: vec!["bj", "sh", "tk"],
        schema_sql: SCHEMA.into(),
        ..options()
    })
    .await;
    let (bj, sh, tk) = (0, 1, 2);
    let mut incs = [0i64; 3];
    // History before tk exists as a DC of its own.
    incs[bj] += write(c.dcs[bj].db.url(), bj, "bj".into(), 0, 300).await;
    incs[sh] += write(c.dcs[sh].db.url(), sh, "sh".into(), 0, 300).await;
    c.wait_converged(TABLES, 60).await;
    // tk becomes a DC just added to the topology: its agent and data
    // directory gone, its tables emptied, and no DC holding a marker of it
    // (bj and sh restarted, as after a topology change), all without a
    // trace in any binlog.
    c.agents.kill_agent(tk);
    std::fs::remove_dir_all(&c.agents.dcs[tk].data_dir).unwrap();
    c.dcs[tk]
        .db
        .exec(
            "SET SESSION sql_log_bin=0; DELETE FROM shop.items; UPDATE shop.counters SET n = 0; \
             DELETE FROM dcsync.apply_marker",
        )
        .await;
    for k in [bj, sh] {
        c.agents.kill_agent(k);
        c.dcs[k]
            .db
            .exec("SET SESSION sql_log_bin=0; DELETE FROM dcsync.apply_marker WHERE origin = 'tk'")
            .await;
        c.agents.start_agent(k);
    }

    // bj and sh keep writing during the bootstrap.
    let writers: Vec<_> = [bj, sh]
        .into_iter()
        .map(|k| {
            let (url, dc) = (c.dcs[k].db.url(), c.dcs[k].id.clone());
            tokio::spawn(async move { (k, write(url, k, dc, 300, 900).await) })
        })
        .collect();
    let (topology, data_dir) = (c.agents.topology.clone(), c.agents.dcs[tk].data_dir.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_dcsync"))
            .args(["bootstrap", "--topology"])
            .arg(&topology)
            .args(["--dc", "tk", "--from", "bj", "--data-dir"])
            .arg(&data_dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("bootstrap of tk done"), "{stdout}");
    c.agents.start_agent(tk);
    for w in writers {
        let (k, n) = w.await.unwrap();
        incs[k] += n;
    }
    incs[tk] += write(c.dcs[tk].db.url(), tk, "tk".into(), 0, 100).await;

    c.wait_converged(TABLES, 180).await;
    for d in &c.dcs {
        for (k, inc) in incs.iter().enumerate() {
            let n =
                d.db.query_i64(&format!("SELECT n FROM shop.counters WHERE id = {k}"))
                    .await;
            assert_eq!(n, *inc, "counter of {} in {}", c.dcs[k].id, d.id);
        }
        let rows = d.db.query_i64("SELECT COUNT(*) FROM shop.items").await;
        assert_eq!(rows, 900 + 900 + 100, "rows in {}", d.id);
    }
    let verify = Command::new(env!("CARGO_BIN_EXE_dcsync"))
        .args(["verify", "--topology"])
        .arg(&c.agents.topology)
        .args(["--store", MYSQL_STORE, "--recheck-ms", "500"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(0), "{report}");
    assert!(report.contains("in bj, sh, tk: equal"), "{report}");
}
