//! A DC's MySQL primary switches to its promoted GTID replica behind the
//! DC's VIP, while both DCs write (docs/operations.md, "MySQL primary
//! switch"; docs/mysql.md, "Resumption and primary switches").
//!
//! bj's store URL names a proxy (the VIP) in front of bj's primary, which
//! has a GTID replica. Each DC runs a counter workload on rows it owns
//! (increments by known amounts, inserts with unique ids). In bj: the
//! writes pause, the VIP is taken down (nothing, dcsync's sink included,
//! writes to the old primary any more), the replica catches up, is
//! promoted, the VIP moves to it and the writes resume through it. The
//! agents are never restarted: bj's source resumes on the new primary by
//! GTID, bj's sink reconnects to it.
//!
//! At the end every counter equals the increments issued in every DC and
//! on the promoted server, every insert is there once, the DCs' tables are
//! identical, each source journaled exactly the transactions written in
//! its DC (nothing read twice across the switch), and bj's log and status
//! show the resumption by GTID on the new server.
//!
//! - `a_primary_switch_behind_the_vip_loses_and_repeats_nothing`: a
//!   planned switch; sh keeps writing throughout.
//! - `a_killed_primary_replaced_by_its_replica_loses_and_repeats_nothing`:
//!   the primary is killed with SIGKILL (after the replica had everything)
//!   while the agent is connected to it; sh writes while bj has no
//!   primary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{options, Cluster, ClusterOptions, MYSQL_STORE};
use dcsync_testkit::mariadb::{MariaDb, MariaDbOptions};
use dcsync_testkit::wait_for;
use mysql_async::prelude::Queryable;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Counter rows per DC: DC `k` owns rows `k * 10 + 1 ..= k * 10 + ROWS`.
const ROWS: usize = 4;

const SCHEMA: &str = "
CREATE DATABASE IF NOT EXISTS shop;
CREATE TABLE shop.counters (id INT PRIMARY KEY, user_id BIGINT NOT NULL, n BIGINT NOT NULL) ENGINE=InnoDB;
INSERT INTO shop.counters VALUES (1,1,0),(2,2,0),(3,3,0),(4,4,0),(11,11,0),(12,12,0),(13,13,0),(14,14,0);
CREATE TABLE shop.items (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, dc INT NOT NULL, v BIGINT NOT NULL) ENGINE=InnoDB;
";

const TABLES: &[&str] = &["shop.counters", "shop.items"];

/// What one DC's workload committed.
#[derive(Default)]
struct Tally {
    /// Sum of the increments per counter row.
    incs: [AtomicI64; ROWS],
    /// Rows inserted into `shop.items`.
    inserts: AtomicU64,
    /// Transactions committed (every operation changes a row).
    txns: AtomicU64,
}

/// Operations `from..from + ops` of DC `k` through `url`, one transaction
/// each: even ones add `i % 7 + 1` to a counter row, odd ones insert item
/// `k * 1_000_000 + i`. Stops early when `stop` is set; waits `pace`
/// between operations.
async fn workload(
    url: String,
    k: i64,
    from: i64,
    ops: i64,
    pace: Duration,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    for i in from..from + ops {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        if i % 2 == 0 {
            let row = (i / 2) as usize % ROWS;
            let by = i % 7 + 1;
            c.exec_drop(
                "UPDATE shop.counters SET n = n + ? WHERE id = ?",
                (by, k * 10 + 1 + row as i64),
            )
            .await
            .unwrap();
            tally.incs[row].fetch_add(by, Ordering::SeqCst);
        } else {
            let id = k * 1_000_000 + i;
            c.exec_drop(
                "INSERT INTO shop.items VALUES (?, ?, ?, ?)",
                (id, id % 97, k, i),
            )
            .await
            .unwrap();
            tally.inserts.fetch_add(1, Ordering::SeqCst);
        }
        tally.txns.fetch_add(1, Ordering::SeqCst);
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
    let _ = c.disconnect().await;
}

/// Operations of bj before and after the switch.
const BJ_OPS: i64 = 300;

/// Every DC (bj being the promoted server now) holds exactly what the
/// workloads committed: each counter row, the counter sums, the items.
async fn assert_exact(c: &Cluster, tallies: &[Arc<Tally>]) {
    let mut want_sum = 0;
    let mut want_items = 0;
    for (k, t) in tallies.iter().enumerate() {
        want_items += t.inserts.load(Ordering::SeqCst) as i64;
        for (r, n) in t.incs.iter().enumerate() {
            let n = n.load(Ordering::SeqCst);
            want_sum += n;
            let id = k * 10 + 1 + r;
            for d in &c.dcs {
                let v =
                    d.db.query_i64(&format!("SELECT n FROM shop.counters WHERE id = {id}"))
                        .await;
                assert_eq!(v, n, "counter {id} in {}", d.id);
            }
        }
    }
    for d in &c.dcs {
        let sum = d.db.query_i64("SELECT SUM(n) FROM shop.counters").await;
        assert_eq!(sum, want_sum, "sum of the counters in {}", d.id);
        let items = d.db.query_i64("SELECT COUNT(*) FROM shop.items").await;
        assert_eq!(items, want_items, "items in {}", d.id);
    }
    assert!(
        tallies[0].txns.load(Ordering::SeqCst) as i64 == 2 * BJ_OPS,
        "bj's workload did not run in full"
    );
}

/// bj's source resumed by GTID and its position now is the promoted
/// server's: its file and offset, and a GTID state naming its server id.
async fn assert_resumed_by_gtid(c: &Cluster, promoted_server_id: u32) {
    let log = c.agents.log(0);
    assert!(
        log.contains("mysql source: resuming by GTID"),
        "bj's log does not show a resumption by GTID:\n{}",
        c.agents.log_tail(0, 80)
    );
    let (file, pos) = c.dcs[0].db.binlog_pos().await;
    let shown = wait_for(
        "bj's source at the promoted server's binlog end",
        Duration::from_secs(30),
        || async {
            let p = c.agents.status(0)?.source(MYSQL_STORE)?.position;
            let bp = dcsync_mysql::BinlogPosition::parse_display(&p).ok()?;
            (bp.file == file && bp.pos == pos).then_some((p, bp))
        },
    )
    .await;
    let (p, bp) = shown;
    assert_eq!(
        bp.gtid_state.to_string(),
        c.dcs[0].db.gtid_binlog_pos().await,
        "{p}"
    );
    assert!(
        bp.gtid_state.iter().any(|g| g.server == promoted_server_id),
        "bj's position {p} names no transaction of the promoted server {promoted_server_id}"
    );
}

/// Starts the two-DC cluster with bj's VIP and a GTID replica of bj's
/// primary that has caught up.
async fn cluster_with_replica() -> (Cluster, MariaDb) {
    let c = Cluster::start(ClusterOptions {
        schema_sql: SCHEMA.into(),
        mysql_vip: true,
        ..options()
    })
    .await;
    let replica = MariaDb::start_with(MariaDbOptions {
        gtid_replication: true,
        ..MariaDbOptions::default()
    })
    .await;
    replica.replicate_from(&c.dcs[0].db).await;
    replica
        .wait_caught_up(&c.dcs[0].db, Duration::from_secs(60))
        .await;
    (c, replica)
}

/// Starts DC `k`'s workload in a task.
fn spawn(
    c: &Cluster,
    k: usize,
    from: i64,
    ops: i64,
    pace: Duration,
    stop: &Arc<AtomicBool>,
    tally: &Arc<Tally>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(workload(
        c.dcs[k].mysql_url(),
        k as i64,
        from,
        ops,
        pace,
        stop.clone(),
        tally.clone(),
    ))
}

/// Moves bj's VIP to the promoted `replica`, which becomes bj's `db`
/// (the old primary is returned), and waits until bj's source has
/// resumed on it by GTID.
async fn repoint(c: &mut Cluster, replica: MariaDb) -> MariaDb {
    let port = replica.port;
    let old = std::mem::replace(&mut c.dcs[0].db, replica);
    let vip = c.dcs[0].vip.as_ref().expect("bj has a VIP");
    vip.set_target(format!("127.0.0.1:{port}"));
    vip.restore();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !c.agents.log(0).contains("mysql source: resumed by GTID") {
        if std::time::Instant::now() > deadline {
            c.agents.dump();
            panic!(
                "bj's source did not resume by GTID on the new primary within 60 s:\n{}",
                c.agents.log(0)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    old
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_switch_behind_the_vip_loses_and_repeats_nothing() {
    let (mut c, replica) = cluster_with_replica().await;
    let promoted_id = replica.server_id;
    let tallies: Vec<Arc<Tally>> = (0..2).map(|_| Arc::default()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let never = Arc::new(AtomicBool::new(false));
    // sh writes throughout, paced so that it spans the switch.
    let sh = spawn(
        &c,
        1,
        0,
        i64::MAX / 2,
        Duration::from_millis(5),
        &stop,
        &tallies[1],
    );
    spawn(&c, 0, 0, BJ_OPS, Duration::ZERO, &never, &tallies[0])
        .await
        .unwrap();

    // The switch: bj's writes are paused; the VIP goes down, so nothing
    // (dcsync's sink applying sh's writes included) writes to the old
    // primary any more; the replica catches up and is promoted; the VIP
    // moves to it.
    c.dcs[0].vip.as_ref().expect("vip").cut();
    replica
        .wait_caught_up(&c.dcs[0].db, Duration::from_secs(60))
        .await;
    replica.promote().await;
    let old = repoint(&mut c, replica).await;

    spawn(&c, 0, BJ_OPS, BJ_OPS, Duration::ZERO, &never, &tallies[0])
        .await
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    sh.await.unwrap();

    c.wait_converged(TABLES, 180).await;
    assert_exact(&c, &tallies).await;
    let txns: Vec<u64> = tallies
        .iter()
        .map(|t| t.txns.load(Ordering::SeqCst))
        .collect();
    c.assert_no_echo(MYSQL_STORE, &txns).await;
    assert_resumed_by_gtid(&c, promoted_id).await;
    // The old primary stopped at the switch: it has none of bj's later
    // writes.
    let later = old
        .query_i64(&format!(
            "SELECT COUNT(*) FROM shop.items WHERE id BETWEEN {BJ_OPS} AND 999999"
        ))
        .await;
    assert_eq!(later, 0, "writes after the switch reached the old primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_primary_replaced_by_its_replica_loses_and_repeats_nothing() {
    let (mut c, replica) = cluster_with_replica().await;
    let promoted_id = replica.server_id;
    let tallies: Vec<Arc<Tally>> = (0..2).map(|_| Arc::default()).collect();
    let never = Arc::new(AtomicBool::new(false));
    let bj = spawn(&c, 0, 0, BJ_OPS, Duration::ZERO, &never, &tallies[0]);
    let sh = spawn(&c, 1, 0, BJ_OPS, Duration::ZERO, &never, &tallies[1]);
    bj.await.unwrap();
    sh.await.unwrap();
    // Writes paused everywhere and applied everywhere: the replica then
    // has everything the primary has.
    c.wait_converged(TABLES, 120).await;
    replica
        .wait_caught_up(&c.dcs[0].db, Duration::from_secs(60))
        .await;

    // kill -9 while bj's agent is connected to it through the VIP.
    c.dcs[0].db.kill();
    // sh writes while bj has no primary: bj's sink retries them.
    let sh = spawn(
        &c,
        1,
        BJ_OPS,
        BJ_OPS,
        Duration::from_millis(2),
        &never,
        &tallies[1],
    );
    replica.promote().await;
    repoint(&mut c, replica).await;
    spawn(&c, 0, BJ_OPS, BJ_OPS, Duration::ZERO, &never, &tallies[0])
        .await
        .unwrap();
    sh.await.unwrap();

    c.wait_converged(TABLES, 180).await;
    assert_exact(&c, &tallies).await;
    let txns: Vec<u64> = tallies
        .iter()
        .map(|t| t.txns.load(Ordering::SeqCst))
        .collect();
    c.assert_no_echo(MYSQL_STORE, &txns).await;
    assert_resumed_by_gtid(&c, promoted_id).await;
}
