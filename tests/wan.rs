//! The link over a bad WAN line (issue: "a WAN link that survives a real
//! dedicated line"): the test proxy adds 30 ms RTT with jitter and drops
//! connections, or cuts the line long enough for a 100,000-change backlog,
//! while both DCs keep writing. Counters (`n = n + 1`) diverge on any lost or
//! doubled apply, so equality with the increments issued proves exactly-once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{options, Cluster, ClusterOptions, MYSQL_STORE};
use mysql_async::prelude::Queryable;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SCHEMA: &str = "
CREATE TABLE shop.counters (id INT PRIMARY KEY, user_id BIGINT NOT NULL, n BIGINT NOT NULL) ENGINE=InnoDB;
INSERT INTO shop.counters VALUES (1,1,0),(2,2,0);
CREATE TABLE shop.events (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, payload VARCHAR(200)) ENGINE=InnoDB;
";
const TABLES: &[&str] = &["shop.counters", "shop.events"];

fn opts() -> ClusterOptions {
    ClusterOptions {
        schema_sql: format!("CREATE DATABASE IF NOT EXISTS shop; {SCHEMA}"),
        ..options()
    }
}

/// DC `k` increments counter `k + 1` and inserts `rows_per_txn` event rows per
/// transaction until `stop`; returns nothing, counts increments in `incs`.
async fn writer(
    url: String,
    k: i64,
    rows_per_txn: usize,
    stop: Arc<AtomicBool>,
    incs: Arc<AtomicU64>,
    rows: Arc<AtomicU64>,
) {
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    let mut next_id = k * 1_000_000_000;
    while !stop.load(Ordering::Relaxed) {
        let mut tx = c
            .start_transaction(mysql_async::TxOpts::default())
            .await
            .unwrap();
        tx.exec_drop("UPDATE shop.counters SET n = n + 1 WHERE id = ?", (k + 1,))
            .await
            .unwrap();
        let values: Vec<String> = (0..rows_per_txn)
            .map(|i| {
                format!(
                    "({}, {}, 'payload {} from dc {k}')",
                    next_id + i as i64,
                    (next_id + i as i64) % 64,
                    i
                )
            })
            .collect();
        tx.query_drop(format!(
            "INSERT INTO shop.events VALUES {}",
            values.join(",")
        ))
        .await
        .unwrap();
        tx.commit().await.unwrap();
        next_id += rows_per_txn as i64;
        incs.fetch_add(1, Ordering::SeqCst);
        rows.fetch_add(rows_per_txn as u64 + 1, Ordering::SeqCst);
    }
    let _ = c.disconnect().await;
}

struct Load {
    stop: Arc<AtomicBool>,
    incs: Vec<Arc<AtomicU64>>,
    rows: Vec<Arc<AtomicU64>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn start_load(c: &Cluster, rows_per_txn: usize) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let incs: Vec<_> = (0..2).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let rows: Vec<_> = (0..2).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let tasks = (0..2)
        .map(|k| {
            tokio::spawn(writer(
                c.dcs[k].db.url(),
                k as i64,
                rows_per_txn,
                stop.clone(),
                incs[k].clone(),
                rows[k].clone(),
            ))
        })
        .collect();
    Load {
        stop,
        incs,
        rows,
        tasks,
    }
}

impl Load {
    async fn stop(self) -> (Vec<u64>, Vec<u64>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        (
            self.incs.iter().map(|a| a.load(Ordering::SeqCst)).collect(),
            self.rows.iter().map(|a| a.load(Ordering::SeqCst)).collect(),
        )
    }
}

async fn assert_counters(c: &Cluster, incs: &[u64]) {
    for (k, n) in incs.iter().enumerate() {
        for d in &c.dcs {
            let v =
                d.db.query_i64(&format!("SELECT n FROM shop.counters WHERE id = {}", k + 1))
                    .await;
            assert_eq!(v as u64, *n, "counter of dc {k} in {}", d.id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delayed_jittery_flapping_line_converges_exactly_once() {
    let mut c = Cluster::start(opts()).await;
    for a in &c.agents.dcs {
        a.proxy
            .set_latency(Duration::from_millis(15), Duration::from_millis(10));
    }
    let load = start_load(&c, 3);
    // Drop the connections a few times while the load runs.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        c.agents.dcs[0].proxy.drop_connections();
        tokio::time::sleep(Duration::from_millis(400)).await;
        c.agents.dcs[1].proxy.drop_connections();
    }
    let (incs, _) = load.stop().await;
    c.wait_converged(TABLES, 180).await;
    assert_counters(&c, &incs).await;
    assert!(incs.iter().all(|n| *n > 20), "too little load: {incs:?}");
    // Both directions reconnected after the drops.
    for i in 0..2 {
        assert!(
            c.agents.dcs[i].proxy.accepted() >= 3,
            "dc {i} line never redialed: {}",
            c.agents.dcs[i].proxy.accepted()
        );
    }
    // One transaction per increment; resends after the drops did not echo.
    c.assert_no_echo(MYSQL_STORE, &incs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_cut_replays_a_100k_backlog_with_bounded_memory_and_survives_kill9() {
    let mut c = Cluster::start(opts()).await;
    for a in &c.agents.dcs {
        a.proxy
            .set_latency(Duration::from_millis(15), Duration::from_millis(5));
        a.proxy.cut();
    }
    let load = start_load(&c, 50);
    // Keep writing until bj holds a backlog of at least 100,000 row changes.
    let rows = load.rows[0].clone();
    dcsync_testkit::wait_for(
        "100,000 changes in bj's backlog",
        Duration::from_secs(600),
        || {
            let n = rows.load(Ordering::SeqCst);
            async move { (n >= 100_000).then_some(()) }
        },
    )
    .await;
    let (incs, rows) = load.stop().await;
    let backlog_status = c.agents.status_text(0, false);
    println!("during the cut:\n{backlog_status}");
    assert!(
        backlog_status.contains("retrying since"),
        "{backlog_status}"
    );
    let rss_before = c.agents.rss_kib(0).unwrap_or(0);

    // Restore, sample memory while replaying, and kill -9 bj once mid-replay.
    for a in &c.agents.dcs {
        a.proxy.restore();
    }
    let mut max_rss = rss_before;
    let mut killed = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    loop {
        max_rss = max_rss
            .max(c.agents.rss_kib(0).unwrap_or(0))
            .max(c.agents.rss_kib(1).unwrap_or(0));
        let sh_rows = c.dcs[1]
            .db
            .query_i64("SELECT COUNT(*) FROM shop.events WHERE id < 1000000000")
            .await;
        if !killed && sh_rows > 5_000 {
            c.agents.kill_agent(0);
            c.agents.start_agent(0);
            killed = true;
        }
        if killed && sh_rows as u64 >= rows[0] / 51 * 50 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replay did not finish: {sh_rows} rows at sh"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.wait_converged(TABLES, 300).await;
    assert_counters(&c, &incs).await;
    println!(
        "backlog: bj {} + sh {} row changes; agent RSS before replay {} KiB, max during replay {} KiB",
        rows[0], rows[1], rss_before, max_rss
    );
    // Memory must not grow with the backlog (about 30 MB of changes here): the
    // replay reads the journal in bounded batches.
    assert!(
        max_rss < 256 * 1024,
        "agent RSS {max_rss} KiB during replay"
    );
    let mut conn = c.dcs[0].db.conn().await;
    let dup: Option<i64> = conn
        .query_first("SELECT COUNT(*) - COUNT(DISTINCT id) FROM shop.events")
        .await
        .unwrap();
    assert_eq!(dup, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_warns_when_backlog_age_nears_binlog_retention() {
    // A 10 s binlog retention: the warning is due once the oldest
    // unacknowledged change is 8 s old.
    let mut o = opts();
    o.schema_sql = format!(
        "SET GLOBAL binlog_expire_logs_seconds = 10; {}",
        o.schema_sql
    );
    let mut c = Cluster::start(o).await;
    for a in &c.agents.dcs {
        a.proxy.cut();
    }
    c.dcs[0]
        .db
        .exec("INSERT INTO shop.events VALUES (1, 1, 'while cut')")
        .await;
    let status =
        dcsync_testkit::wait_for("the retention warning", Duration::from_secs(60), || async {
            let s = c.agents.status_text(0, false);
            s.contains("WARNING").then_some(s)
        })
        .await;
    assert!(status.contains("keeps its binlog for 10 s"), "{status}");
    dcsync_testkit::wait_for(
        "the warning in the agent log",
        Duration::from_secs(10),
        || async {
            c.agents
                .log(0)
                .contains("keeps its binlog for 10 s")
                .then_some(())
        },
    )
    .await;
    for a in &c.agents.dcs {
        a.proxy.restore();
    }
    c.wait_converged(TABLES, 60).await;
    c.assert_no_echo(MYSQL_STORE, &[1, 0]).await;
}
