//! Two DCs, two-way MariaDB sync through real `dcsync` agents.
//!
//! Scenarios (docs/architecture.md, invariants 1-5):
//! - concurrent inserts/updates/deletes on disjoint rows converge, and
//!   nothing echoes (each DC's source journaled exactly the transactions
//!   written in that DC);
//! - exactly-once across `kill -9` of either agent at random moments, with
//!   `UPDATE counters SET n = n + 1`, which diverges on any loss or double apply;
//! - a cut line: both DCs keep writing, the backlog shows in `dcsync status`,
//!   and replays when the line is restored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{options, Cluster, ClusterOptions, MYSQL_STORE};
use mysql_async::prelude::Queryable;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SCHEMA: &str = "
CREATE DATABASE IF NOT EXISTS shop;
CREATE TABLE shop.users (
  id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL,
  name VARCHAR(64) CHARACTER SET utf8mb4, balance DECIMAL(12,2), updated DATETIME(6)
) ENGINE=InnoDB;
CREATE TABLE shop.order_items (
  order_id BIGINT, line INT, user_id BIGINT NOT NULL, sku VARBINARY(32), qty INT UNSIGNED,
  PRIMARY KEY (order_id, line)
) ENGINE=InnoDB;
CREATE TABLE shop.counters (id INT PRIMARY KEY, user_id BIGINT NOT NULL, n BIGINT NOT NULL) ENGINE=InnoDB;
INSERT INTO shop.counters VALUES (1,1,0),(2,2,0),(3,3,0),(11,11,0),(12,12,0),(13,13,0);
";

const TABLES: &[&str] = &["shop.users", "shop.order_items", "shop.counters"];

/// A mixed workload for DC number `k` on rows only it writes. Counts the
/// successful increments per counter row in `incs`, and in `txns` the
/// transactions that changed a row (an UPDATE or DELETE of a row deleted
/// before changes nothing and leaves no transaction in the binlog).
async fn workload(
    db_url: String,
    k: i64,
    ops: usize,
    stop: Arc<AtomicBool>,
    incs: Arc<[AtomicU64; 3]>,
    txns: Arc<AtomicU64>,
) {
    let mut c = mysql_async::Conn::from_url(db_url).await.unwrap();
    c.query_drop("SET NAMES utf8mb4").await.unwrap();
    let base = k * 1_000_000;
    let mut rng = rand::rngs::StdRng::from_os_rng();
    for i in 0..ops as i64 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let id = base + i;
        let r = match i % 6 {
            0 | 1 => c
                .exec_drop(
                    "INSERT INTO shop.users VALUES (?, ?, ?, ?, NOW(6))",
                    (id, id % 97, format!("user-{id}-✓😀"), (i as f64) * 1.25),
                )
                .await,
            2 => c
                .exec_drop(
                    "UPDATE shop.users SET balance = balance + 1, name = CONCAT(name, 'x') WHERE id = ?",
                    (base + rng.random_range(0..=i),),
                )
                .await,
            3 => c
                .exec_drop(
                    "INSERT INTO shop.order_items VALUES (?, 1, ?, ?, ?), (?, 2, ?, ?, ?)",
                    (id, id % 97, vec![0xffu8, 0, 1], 3u32, id, id % 97, b"sku".to_vec(), 4u32),
                )
                .await,
            4 => {
                let row = (rng.random_range(0..3usize), k);
                let r = c
                    .exec_drop("UPDATE shop.counters SET n = n + 1 WHERE id = ?", (k * 10 + 1 + row.0 as i64,))
                    .await;
                if r.is_ok() {
                    incs[row.0].fetch_add(1, Ordering::SeqCst);
                }
                r
            }
            _ => c.exec_drop("DELETE FROM shop.users WHERE id = ?", (base + rng.random_range(0..=i),)).await,
        };
        r.unwrap();
        if c.affected_rows() > 0 {
            txns.fetch_add(1, Ordering::SeqCst);
        }
    }
    let _ = c.disconnect().await;
}

/// The workloads of all DCs.
struct Workloads {
    /// Per DC, successful increments per counter row.
    incs: Vec<Arc<[AtomicU64; 3]>>,
    /// Per DC, transactions that changed something.
    txns: Vec<Arc<AtomicU64>>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Workloads {
    /// Waits for the end of every workload; returns the transactions each
    /// DC wrote.
    async fn finish(&mut self) -> Vec<u64> {
        for h in self.handles.drain(..) {
            h.await.unwrap();
        }
        self.txns.iter().map(|t| t.load(Ordering::SeqCst)).collect()
    }
}

/// Starts [`workload`] in every DC with `ops` operations each.
fn spawn_workloads(c: &Cluster, ops: usize) -> Workloads {
    let stop = Arc::new(AtomicBool::new(false));
    let incs: Vec<Arc<[AtomicU64; 3]>> = (0..c.dcs.len())
        .map(|_| Arc::new(Default::default()))
        .collect();
    let txns: Vec<Arc<AtomicU64>> = (0..c.dcs.len()).map(|_| Arc::default()).collect();
    let handles = c
        .dcs
        .iter()
        .enumerate()
        .map(|(k, d)| {
            tokio::spawn(workload(
                d.db.url(),
                k as i64,
                ops,
                stop.clone(),
                incs[k].clone(),
                txns[k].clone(),
            ))
        })
        .collect();
    Workloads {
        incs,
        txns,
        handles,
    }
}

/// Every counter row equals the increments its DC issued, in every DC.
async fn assert_counters(c: &Cluster, incs: &[Arc<[AtomicU64; 3]>]) {
    for (k, inc) in incs.iter().enumerate() {
        for (r, n) in inc.iter().enumerate() {
            let id = k * 10 + 1 + r;
            for d in &c.dcs {
                let v =
                    d.db.query_i64(&format!("SELECT n FROM shop.counters WHERE id = {id}"))
                        .await;
                assert_eq!(
                    v as u64,
                    n.load(Ordering::SeqCst),
                    "counter {id} in {}",
                    d.id
                );
            }
        }
    }
}

fn schema() -> ClusterOptions {
    ClusterOptions {
        schema_sql: SCHEMA.into(),
        ..options()
    }
}

/// Max origin seq applied at `db` for `origin`.
async fn marker_seq(db: &dcsync_testkit::mariadb::MariaDb, origin: &str) -> i64 {
    db.query_i64(&format!(
        "SELECT CAST(COALESCE(MAX(seq),0) AS SIGNED) FROM dcsync.apply_marker WHERE origin = '{origin}'"
    ))
    .await
}

/// Highest seq the agent of DC `i` journaled (from its `status.json`).
fn journaled_seq(c: &Cluster, i: usize) -> Option<i64> {
    let seq = c.agents.status(i)?.last_seq(MYSQL_STORE)?;
    i64::try_from(seq).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_converge_without_echo() {
    let mut c = Cluster::start(schema()).await;
    let mut w = spawn_workloads(&c, 600);
    let txns = w.finish().await;
    c.wait_converged(TABLES, 120).await;
    // No echo: each DC journaled exactly what was written there.
    c.assert_no_echo(MYSQL_STORE, &txns).await;

    // Every change applied exactly once: counters equal the increments issued,
    // and each peer's apply marker reached exactly the origin's last seq.
    assert_counters(&c, &w.incs).await;
    // Wait for the status files to catch up (rewritten every second).
    for (i, j) in [(0usize, 1usize), (1, 0)] {
        let origin = c.dcs[i].id.clone();
        let applied = marker_seq(&c.dcs[j].db, &origin).await;
        assert!(
            applied > 100,
            "too few transactions applied from {origin}: {applied}"
        );
        let journaled =
            dcsync_testkit::wait_for("status.json", Duration::from_secs(10), || async {
                journaled_seq(&c, i).filter(|s| *s == applied)
            })
            .await;
        assert_eq!(journaled, applied);
    }
    let bj_users = c.dcs[0]
        .db
        .query_i64("SELECT COUNT(*) FROM shop.users")
        .await;
    assert!(
        bj_users > 100,
        "workload wrote too little: {bj_users} users"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_across_agent_kill9() {
    let mut c = Cluster::start(schema()).await;
    let mut w = spawn_workloads(&c, 4000);
    let mut rng = rand::rngs::StdRng::from_os_rng();
    for round in 0..6 {
        let i = round % 2;
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        c.agents.kill_agent(i);
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..800))).await;
        c.agents.start_agent(i);
    }
    w.finish().await;
    c.wait_converged(TABLES, 180).await;
    assert_counters(&c, &w.incs).await;
    let total: u64 = w
        .incs
        .iter()
        .flat_map(|a| a.iter())
        .map(|n| n.load(Ordering::SeqCst))
        .sum();
    assert!(total > 50, "too few increments to mean anything: {total}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn link_outage_backlog_replays() {
    let mut c = Cluster::start(schema()).await;
    // Make sure both links are up before cutting them.
    c.dcs[0]
        .db
        .exec("INSERT INTO shop.users VALUES (-1, 1, 'warmup', 0, NOW(6))")
        .await;
    c.wait_converged(TABLES, 60).await;
    for a in &c.agents.dcs {
        a.proxy.cut();
    }
    let mut w = spawn_workloads(&c, 1500);
    let txns = w.finish().await;
    // While cut, the peer has none of the other's rows and the backlog shows.
    let sh_has_bj = c.dcs[1]
        .db
        .query_i64("SELECT COUNT(*) FROM shop.users WHERE id BETWEEN 0 AND 999999")
        .await;
    assert_eq!(sh_has_bj, 0, "rows crossed a cut line");
    let status = dcsync_testkit::wait_for(
        "backlog in dcsync status",
        Duration::from_secs(20),
        || async {
            let s = c.agents.status_text(0, false);
            (s.contains("retrying since") && journaled_seq(&c, 0).unwrap_or(0) > 500).then_some(s)
        },
    )
    .await;
    println!("{status}");
    for a in &c.agents.dcs {
        a.proxy.restore();
    }
    c.wait_converged(TABLES, 180).await;
    assert_counters(&c, &w.incs).await;
    // The warm-up row in bj, then the workloads; nothing echoed on replay.
    c.assert_no_echo(MYSQL_STORE, &[1 + txns[0], txns[1]]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_line_is_detected_and_replaced() {
    let mut c = Cluster::start(schema()).await;
    c.dcs[0]
        .db
        .exec("INSERT INTO shop.users VALUES (-1, 1, 'warmup', 0, NOW(6))")
        .await;
    c.wait_converged(TABLES, 60).await;
    let before = c.agents.dcs[1].proxy.accepted();
    // Blackhole the line into sh without closing it: bj must notice through
    // missing heartbeats (dead_after_ms = 3000) and dial again.
    c.agents.dcs[1].proxy.stall();
    c.dcs[0]
        .db
        .exec("INSERT INTO shop.users VALUES (-2, 1, 'during stall', 0, NOW(6))")
        .await;
    dcsync_testkit::wait_for(
        "a stalled link to be noticed",
        Duration::from_secs(30),
        || async { c.agents.log(0).contains("connection stalled").then_some(()) },
    )
    .await;
    c.agents.dcs[1].proxy.restore();
    c.wait_converged(TABLES, 60).await;
    assert!(
        c.agents.dcs[1].proxy.accepted() > before,
        "bj never reconnected to sh"
    );
    let mut conn = c.dcs[1].db.conn().await;
    let name: Option<String> = conn
        .query_first("SELECT name FROM shop.users WHERE id = -2")
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("during stall"));
    c.assert_no_echo(MYSQL_STORE, &[2, 0]).await;
}

/// A change's HLC is its source commit time, not the time the agent read
/// it: rows written while the origin's agent is down reach the other DC
/// with an apply lag that includes the downtime (docs/architecture.md,
/// "HLC from the source"). Stamped at read time, the lag would be the
/// few hundred ms of the apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hlc_is_the_source_commit_time_for_changes_read_late() {
    let mut c = Cluster::start(ClusterOptions {
        schema_sql: SCHEMA.into(),
        ..options()
    })
    .await;
    c.agents.kill_agent(0);
    c.dcs[0]
        .db
        .exec("INSERT INTO shop.counters VALUES (100, 100, 7)")
        .await;
    // The downtime the lag must show (not a wait for a condition: the
    // point is that time passes between the commit and the read).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    c.agents.start_agent(0);
    c.wait_converged(TABLES, 60).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let lag = loop {
        let lag = c.agents.status(1).and_then(|s| {
            s.0["inbound"].as_array().and_then(|v| {
                v.iter()
                    .find(|i| i["origin"] == "bj" && i["store"] == MYSQL_STORE)
                    .and_then(|i| i["lag_ms"].as_u64())
            })
        });
        if let Some(l) = lag.filter(|l| *l >= 2000) {
            break l;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "apply lag of bj's late-read row is {lag:?} ms: it was not stamped with its commit time\n{}",
            c.agents.status_text(1, false)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(lag < 60_000, "lag {lag} ms");
}
