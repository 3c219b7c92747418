//! A new DC filled from an existing one while the others keep writing
//! (`dcsync bootstrap`), or restored from a `mariadb-dump` of it taken
//! meanwhile (`--backup-position`), then streaming with no gap: it
//! converges, every counter is exact, and `dcsync verify` finds the three
//! DCs equal (docs/operations.md, "Adding a DC").
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{options, Cluster, ClusterOptions, MYSQL_STORE};
use mysql_async::prelude::Queryable;
use std::process::{Command, Stdio};
use std::time::Duration;

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

/// bj, sh and tk with a history written in bj and sh; then tk made a DC
/// just added to the topology: its agent and data directory gone, its
/// tables emptied, and no DC holding a marker of it (bj and sh restarted,
/// as after a topology change), all without a trace in any binlog.
/// Returns the cluster and the counter increments written.
async fn start_with_new_tk() -> (Cluster, [i64; 3]) {
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
    (c, incs)
}

/// Runs `dcsync bootstrap --dc tk --from bj` with `extra` arguments;
/// returns its stdout.
async fn bootstrap_tk(c: &Cluster, extra: &[String]) -> String {
    let (topology, data_dir) = (c.agents.topology.clone(), c.agents.dcs[2].data_dir.clone());
    let extra = extra.to_vec();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_dcsync"))
            .args(["bootstrap", "--topology"])
            .arg(&topology)
            .args(["--dc", "tk", "--from", "bj", "--data-dir"])
            .arg(&data_dir)
            .args(&extra)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("bootstrap of tk done"), "{stdout}");
    stdout
}

/// Once tk's agent runs and bj and sh are done writing: tk writes, and
/// every DC ends with every row and exact counters; verify finds them
/// equal.
async fn assert_converged(c: &mut Cluster, mut incs: [i64; 3]) {
    let tk = 2;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_dc_is_bootstrapped_while_the_others_write() {
    let (mut c, mut incs) = start_with_new_tk().await;
    let (bj, sh, tk) = (0, 1, 2);
    // bj and sh keep writing during the bootstrap.
    let writers: Vec<_> = [bj, sh]
        .into_iter()
        .map(|k| {
            let (url, dc) = (c.dcs[k].db.url(), c.dcs[k].id.clone());
            tokio::spawn(async move { (k, write(url, k, dc, 300, 900).await) })
        })
        .collect();
    bootstrap_tk(&c, &[]).await;
    c.agents.start_agent(tk);
    for w in writers {
        let (k, n) = w.await.unwrap();
        incs[k] += n;
    }
    assert_converged(&mut c, incs).await;
}

/// tk's server restored from a `mariadb-dump` of bj (its `dcsync` schema
/// included) taken while bj and sh write, at the GTID position the dump
/// names: `dcsync bootstrap --backup-position` copies nothing, bj's agent
/// places the position in its journal, and every change after the dump
/// reaches tk from bj and sh with none lost and the counters exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_dc_restored_from_a_backup_resumes_at_its_position() {
    let (mut c, mut incs) = start_with_new_tk().await;
    let (bj, sh, tk) = (0, 1, 2);
    // tk's server as a new one: nothing replicated in it.
    c.dcs[tk]
        .db
        .exec("SET SESSION sql_log_bin=0; DROP DATABASE shop; DROP DATABASE dcsync")
        .await;
    let writers = |from: i64, to: i64| -> Vec<_> {
        [bj, sh]
            .into_iter()
            .map(|k| {
                let (url, dc) = (c.dcs[k].db.url(), c.dcs[k].id.clone());
                tokio::spawn(async move { (k, write(url, k, dc, from, to).await) })
            })
            .collect()
    };
    let mut running = writers(300, 700);
    // The dump is taken while both write (rows 700 and up are written
    // after it in any case).
    dcsync_testkit::wait_for("bj's writes under way", Duration::from_secs(60), || async {
        let n = c.dcs[bj]
            .db
            .query_i64("SELECT COUNT(*) FROM shop.items")
            .await;
        (n >= 600 + 200).then_some(())
    })
    .await;
    let (bj_port, tk_port) = (c.dcs[bj].db.port, c.dcs[tk].db.port);
    let dump = tokio::task::spawn_blocking(move || {
        Command::new("mariadb-dump")
            .args(["--host=127.0.0.1", "--user=root"])
            .arg(format!("--port={bj_port}"))
            .args(["--single-transaction", "--master-data=2", "--gtid"])
            .args(["--databases", "shop", "dcsync"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let text = String::from_utf8_lossy(&dump.stdout).to_string();
    let gtid = text
        .lines()
        .find_map(|l| l.split("gtid_slave_pos='").nth(1))
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("no gtid_slave_pos in the dump"))
        .to_string();
    eprintln!("dump of bj at GTID {gtid}: {} bytes", text.len());
    let restore = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("mariadb")
            .args(["--host=127.0.0.1", "--user=root"])
            .arg(format!("--port={tk_port}"))
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        restore.status.success(),
        "{}",
        String::from_utf8_lossy(&restore.stderr)
    );
    running.extend(writers(700, 900));
    let held = c.dcs[tk]
        .db
        .query_i64("SELECT COUNT(*) FROM shop.items")
        .await;
    assert!((800..1400).contains(&held), "the backup holds {held} rows");

    let out = bootstrap_tk(&c, &["--backup-position".to_string(), gtid.clone()]).await;
    assert!(
        out.contains(&format!("restored from a backup of bj at {gtid:?}")),
        "{out}"
    );
    assert_eq!(
        c.dcs[tk]
            .db
            .query_i64("SELECT COUNT(*) FROM shop.items")
            .await,
        held,
        "nothing copied"
    );
    c.agents.start_agent(tk);
    for w in running {
        let (k, n) = w.await.unwrap();
        incs[k] += n;
    }
    assert_converged(&mut c, incs).await;
}
