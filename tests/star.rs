//! Star topology: every spoke links only to the hub, which applies each
//! spoke's changes and relays them to the other spokes, origin and origin
//! seq unchanged (docs/topology.md, "Star topology and the hub";
//! docs/operations.md, "Star topology: hub failover").
//!
//! Four DCs (`bj` the hub, `sh`, `gz`, `tk`) write at once; every scenario
//! ends with every table's checksum and every Redis key's digest equal in
//! all DCs, and each DC's counters exact (nothing lost, nothing applied
//! twice).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{options, Cluster, ClusterOptions, MYSQL_STORE, REDIS_STORE};
use std::time::Duration;

const SCHEMA: &str = "
CREATE DATABASE IF NOT EXISTS shop;
CREATE TABLE shop.items (id BIGINT PRIMARY KEY, dc VARCHAR(8) NOT NULL, note VARCHAR(64)) ENGINE=InnoDB;
CREATE TABLE shop.counters (id INT PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB;
INSERT INTO shop.counters VALUES (0,0),(1,0),(2,0),(3,0);
";

const TABLES: &[&str] = &["shop.items", "shop.counters"];
const DCS: [&str; 4] = ["bj", "sh", "gz", "tk"];

/// Writes rows `from..to` of DC number `k` (one transaction each) and,
/// with every fourth row, one increment of its counter. Returns
/// (increments, transactions).
async fn write(c: &Cluster, k: usize, from: i64, to: i64) -> (i64, u64) {
    let db = &c.dcs[k].db;
    let (mut incs, mut txns) = (0, 0);
    for i in from..to {
        let id = k as i64 * 1_000_000 + i;
        db.exec(&format!(
            "INSERT INTO shop.items VALUES ({id}, '{}', 'row {i}')",
            c.dcs[k].id
        ))
        .await;
        txns += 1;
        if i % 4 == 0 {
            db.exec(&format!(
                "UPDATE shop.counters SET n = n + 1 WHERE id = {k}"
            ))
            .await;
            incs += 1;
            txns += 1;
        }
    }
    (incs, txns)
}

/// Every DC in `dcs` writes rows `from..to` at once; adds to the totals.
async fn write_all(
    c: &Cluster,
    dcs: &[usize],
    from: i64,
    to: i64,
    incs: &mut [i64],
    txns: &mut [u64],
) {
    let w = |k: usize| async move { (k, write(c, k, from, to).await) };
    let mut all = Vec::new();
    for &k in dcs {
        all.push(w(k));
    }
    for (k, (i, t)) in join_all(all).await {
        incs[k] += i;
        txns[k] += t;
    }
}

/// Runs the futures concurrently, results in order.
async fn join_all<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = fs.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if done[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => done[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    for d in done {
        out.push(d.expect("every future completed"));
    }
    out
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

/// Checksums equal everywhere, then every counter exact in every DC.
async fn assert_converged(c: &mut Cluster, incs: &[i64]) {
    c.wait_converged(TABLES, 180).await;
    for at in 0..c.dcs.len() {
        for (k, want) in incs.iter().enumerate() {
            let n = c.dcs[at]
                .db
                .query_i64(&format!("SELECT n FROM shop.counters WHERE id = {k}"))
                .await;
            assert_eq!(n, *want, "counter of {} in {}", c.dcs[k].id, c.dcs[at].id);
        }
    }
}

/// `INCRBY` of DC `k`'s counters and `SET`s of its keys (`from..to`);
/// returns (sum added, commands).
async fn redis_write(c: &Cluster, k: usize, from: u64, to: u64) -> (i64, u64) {
    let mut con = c.dcs[k].redis.as_ref().unwrap().conn().await;
    let id = &c.dcs[k].id;
    let mut sum = 0;
    for i in from..to {
        let by = (i % 7 + 1) as i64;
        let _: i64 = redis::cmd("INCRBY")
            .arg(format!("{id}:ctr:{}", i % 3))
            .arg(by)
            .query_async(&mut con)
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg(format!("{id}:key:{i}"))
            .arg(format!("v{i}"))
            .query_async(&mut con)
            .await
            .unwrap();
        sum += by;
    }
    (sum, 2 * (to - from))
}

async fn redis_converged(c: &Cluster, sums: &[i64]) {
    dcsync_testkit::wait_for(
        "every DC's Redis equal (per-key digests)",
        Duration::from_secs(120),
        || async {
            let first = c.dcs[0].redis.as_ref().unwrap().digests().await.unwrap();
            for d in &c.dcs[1..] {
                if d.redis.as_ref().unwrap().digests().await.unwrap() != first {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    for d in &c.dcs {
        let mut con = d.redis.as_ref().unwrap().conn().await;
        for (k, want) in sums.iter().enumerate() {
            let mut total = 0i64;
            for r in 0..3 {
                let v: Option<i64> = redis::cmd("GET")
                    .arg(format!("{}:ctr:{r}", c.dcs[k].id))
                    .query_async(&mut con)
                    .await
                    .unwrap();
                total += v.unwrap_or(0);
            }
            assert_eq!(total, *want, "{}'s counters in {}", c.dcs[k].id, d.id);
        }
    }
}

fn star(hub: &'static str) -> ClusterOptions {
    ClusterOptions {
        dcs: DCS.to_vec(),
        schema_sql: SCHEMA.into(),
        hub: Some(hub),
        ..options()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_dcs_in_a_star_converge_and_a_cut_off_spoke_catches_up() {
    let mut c = Cluster::start(ClusterOptions {
        redis: true,
        ..star("bj")
    })
    .await;
    let (bj, tk) = (0, 3);
    let all = [0, 1, 2, 3];
    let (mut incs, mut txns) = ([0i64; 4], [0u64; 4]);
    let (mut sums, mut cmds) = ([0i64; 4], [0u64; 4]);
    write_all(&c, &all, 0, 150, &mut incs, &mut txns).await;
    for k in all {
        let (s, n) = redis_write(&c, k, 0, 100).await;
        sums[k] += s;
        cmds[k] += n;
    }
    assert_converged(&mut c, &incs).await;
    redis_converged(&c, &sums).await;

    // Spokes never link to each other: sh's status shows its line to the
    // hub only, and the hub relays.
    let st = c.agents.status_text(1, false);
    assert!(st.contains("star, hub bj"), "{st}");
    let hub = c.agents.status_text(bj, false);
    assert!(hub.contains("THIS DC IS THE HUB"), "{hub}");

    // tk is cut off from the hub in both directions (the lines into tk
    // and into the hub) while every DC writes.
    c.agents.dcs[tk].proxy.cut();
    c.agents.dcs[bj].proxy.cut();
    write_all(&c, &all, 150, 300, &mut incs, &mut txns).await;
    for k in all {
        let (s, n) = redis_write(&c, k, 100, 160).await;
        sums[k] += s;
        cmds[k] += n;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rows_of(&c, tk, 1).await,
        150,
        "sh's rows reached tk over a cut line"
    );
    assert_eq!(
        rows_of(&c, 2, tk).await,
        150,
        "tk's rows reached gz over a cut line"
    );
    c.agents.dcs[bj].proxy.restore();
    c.agents.dcs[tk].proxy.restore();

    assert_converged(&mut c, &incs).await;
    redis_converged(&c, &sums).await;
    for at in all {
        for k in all {
            assert_eq!(rows_of(&c, at, k).await, 300);
        }
    }
    // Nothing echoed, and every source read its store to the end (the
    // binlogs and replication offsets are quiet).
    c.assert_no_echo(MYSQL_STORE, &txns).await;
    // The Redis source journals commands read together as one transaction,
    // so the count of local transactions is at most the commands written;
    // applied commands read back as local would exceed it.
    let redis = c.settled_sources(REDIS_STORE, 120).await;
    for k in all {
        assert!(
            redis[k].local_txns <= cmds[k] && redis[k].local_txns > 0,
            "{}: the Redis source journaled {} local transactions for {} commands written",
            c.dcs[k].id,
            redis[k].local_txns,
            cmds[k]
        );
    }
    // The hub's status shows every origin's applied vector.
    let status = c.agents.status(bj).expect("hub status");
    let vectors = status.0["vectors"].as_array().cloned().unwrap_or_default();
    for origin in ["sh", "gz", "tk"] {
        let row = vectors
            .iter()
            .find(|v| v["store"] == MYSQL_STORE && v["origin"] == origin)
            .unwrap_or_else(|| panic!("no vector of {origin} in {vectors:?}"));
        let applied = row["applied"].as_array().unwrap();
        // Every DC but the origin applies its stream.
        assert_eq!(
            applied.len(),
            3,
            "every DC's applied seq of {origin}: {row}"
        );
        assert!(applied.iter().all(|a| a[0] != origin), "{row}");
        assert!(
            applied.iter().all(|a| a[2] == 0),
            "a DC behind {origin}: {row}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_hub_restarts_or_is_replaced_by_a_promoted_spoke() {
    let mut c = Cluster::start(star("bj")).await;
    let (bj, sh) = (0, 1);
    let all = [0, 1, 2, 3];
    let (mut incs, mut txns) = ([0i64; 4], [0u64; 4]);
    write_all(&c, &all, 0, 100, &mut incs, &mut txns).await;

    // The hub's agent is killed (-9) while it relays, and restarted: the
    // spokes retry and everything converges.
    let writing = write_all(&c, &all, 100, 250, &mut incs, &mut txns);
    let kill = async {
        dcsync_testkit::wait_for("the hub relaying", Duration::from_secs(60), || async {
            (rows_of(&c, 3, 1).await > 120).then_some(())
        })
        .await;
        c.agents.signal(bj, "KILL");
    };
    tokio::join!(writing, kill);
    c.agents.kill_agent(bj);
    write_all(&c, &all, 250, 300, &mut incs, &mut txns).await;
    c.agents.start_agent(bj);
    assert_converged(&mut c, &incs).await;

    // Killed again in the middle of relaying, and this time sh is
    // promoted: the spokes move to sh, which pulls from each origin what
    // its relay journal lacks.
    let kill_at = rows_of(&c, 3, 2).await + 40;
    let writing = write_all(&c, &all, 300, 450, &mut incs, &mut txns);
    let kill = async {
        dcsync_testkit::wait_for(
            "the hub relaying gz's rows",
            Duration::from_secs(60),
            || async { (rows_of(&c, 3, 2).await > kill_at).then_some(()) },
        )
        .await;
        c.agents.signal(bj, "KILL");
    };
    tokio::join!(writing, kill);
    c.agents.kill_agent(bj);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dcsync"))
        .args(["promote", "--topology"])
        .arg(&c.agents.topology)
        .args(["--dc", "sh"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hub is now sh (was bj)"));
    for i in [1, 2, 3] {
        c.agents.signal(i, "HUP");
    }
    // The DCs keep writing, bj's store too (its agent is down).
    write_all(&c, &all, 450, 550, &mut incs, &mut txns).await;
    // Without bj, the three others converge on their own rows.
    for at in [1, 2, 3] {
        for k in [1, 2, 3] {
            dcsync_testkit::wait_for(
                &format!(
                    "{}'s rows in {} through the new hub",
                    c.dcs[k].id, c.dcs[at].id
                ),
                Duration::from_secs(120),
                || async { (rows_of(&c, at, k).await == 550).then_some(()) },
            )
            .await;
        }
    }
    // Its status says so (rewritten every second).
    dcsync_testkit::wait_for(
        "sh's status naming it the hub",
        Duration::from_secs(10),
        || async {
            c.agents
                .status_text(sh, false)
                .contains("THIS DC IS THE HUB")
                .then_some(())
        },
    )
    .await;

    // The old hub comes back as a spoke of sh and catches up both ways.
    c.agents.start_agent(bj);
    write_all(&c, &all, 550, 600, &mut incs, &mut txns).await;
    assert_converged(&mut c, &incs).await;
    for at in all {
        for k in all {
            assert_eq!(
                rows_of(&c, at, k).await,
                600,
                "{}'s rows in {}",
                c.dcs[k].id,
                c.dcs[at].id
            );
        }
    }
    let st = c.agents.status_text(bj, false);
    assert!(st.contains("star, hub sh"), "{st}");
    // The new hub asked the origins again for what its relay journal
    // lacked, and they resumed at their oldest kept change.
    let log = c.agents.log(sh);
    assert!(
        log.contains("relay journal behind the apply markers"),
        "{}",
        common::tail(&log, 40)
    );
    let floors = [0, 2, 3]
        .iter()
        .filter(|&&i| {
            c.agents
                .log(i)
                .contains("every DC applied the seqs before this journal's oldest entry")
        })
        .count();
    assert!(
        floors > 0,
        "no origin resumed a new hub at its oldest kept change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_cluster_switches_from_mesh_to_star_and_back() {
    let mut c = Cluster::start(ClusterOptions {
        dcs: vec!["bj", "sh", "gz"],
        schema_sql: SCHEMA.into(),
        ..options()
    })
    .await;
    let all = [0, 1, 2];
    let (mut incs, mut txns) = ([0i64; 3], [0u64; 3]);
    write_all(&c, &all, 0, 100, &mut incs, &mut txns).await;

    // To a star with gz as the hub while writes go on.
    c.agents.set_routing("mode = \"star\"\nhub = \"gz\"\n");
    let writing = write_all(&c, &all, 100, 250, &mut incs, &mut txns);
    let hup = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for i in all {
            c.agents.signal(i, "HUP");
        }
    };
    tokio::join!(writing, hup);
    assert_converged(&mut c, &incs).await;
    let st = c.agents.status_text(0, false);
    assert!(st.contains("star, hub gz"), "{st}");
    let log = c.agents.log(0);
    assert!(
        log.contains("routing changed"),
        "{}",
        common::tail(&log, 30)
    );

    // And back to a mesh.
    c.agents.set_routing("mode = \"mesh\"\n");
    let writing = write_all(&c, &all, 250, 400, &mut incs, &mut txns);
    let hup = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for i in all {
            c.agents.signal(i, "HUP");
        }
    };
    tokio::join!(writing, hup);
    assert_converged(&mut c, &incs).await;
    let st = c.agents.status_text(2, false);
    assert!(st.contains("routing: mesh"), "{st}");
    c.assert_no_echo(MYSQL_STORE, &txns).await;
}
