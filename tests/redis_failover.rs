//! Failover inside a DC: bj's Redis primary has a replica; a failover
//! promotes the replica while both DCs write, and dcsync follows it.
//!
//! - `redis_source_follows_a_promoted_replica_behind_a_vip`: bj's store
//!   URL is a TCP proxy (the VIP) in front of the primary. bj pauses its
//!   writes, the replica catches up, the primary dies, the replica is
//!   promoted (`REPLICAOF NO ONE`) and the VIP moves to it. The source
//!   continues with `PSYNC <old replid> <offset+1>` (`+CONTINUE <new
//!   replid>`: the promoted replica kept the old id as replid2), no full
//!   resync, and the DCs end identical with exact counters.
//! - `redis_source_follows_a_sentinel_failover`: the same with a
//!   `sentinel://` store URL: the primary dies and a real Sentinel is
//!   forced to fail over (`SENTINEL FAILOVER`); the source and the sink
//!   ask the sentinel again and follow. Skipped, saying why, if Sentinel
//!   cannot run here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use dcsync_testkit::cluster::{Agents, AgentsOptions, LINK_BASE};
use dcsync_testkit::proxy::Proxy;
use dcsync_testkit::redis::Redis;
use dcsync_testkit::sentinel::Sentinel;
use dcsync_testkit::wait_for;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const STORE: &str = "cache";

/// Every server of these tests: `DEBUG DIGEST-VALUE` allowed (the
/// comparison), a backlog that holds the whole test.
async fn server() -> Redis {
    Redis::start_with(args()).await
}

fn args() -> Vec<String> {
    [
        "--enable-debug-command",
        "local",
        "--repl-backlog-size",
        "16mb",
    ]
    .map(String::from)
    .to_vec()
}

/// Agents for bj and sh with one Redis store; `bj_url` is bj's store URL.
async fn agents(bj_url: &str, sh: &Redis) -> Agents {
    Agents::start(AgentsOptions {
        dcsync: common::options().dcsync,
        cluster: "failover".into(),
        dcs: vec!["bj".into(), "sh".into()],
        stores_toml: format!(
            "[[store]]\nname = \"{STORE}\"\nkind = \"redis\"\nurl = {{ bj = \"{bj_url}\", sh = \"{}\" }}\n",
            sh.url()
        ),
        link_toml: format!("{LINK_BASE}backoff_max_ms = 1000\n"),
        tls: false,
        log_filter: "info".into(),
        dir_prefix: "dcsync-failover-".into(),
        mode_toml: String::new(),
    })
    .await
}

/// Waits until a key written in each DC arrived in the other.
async fn wait_ready(agents: &mut Agents, bj: &str, sh: &Redis) {
    let bj = redis::Client::open(bj).unwrap();
    let mut bj = bj.get_multiplexed_async_connection().await.unwrap();
    let mut shc = sh.conn().await;
    let _: () = redis::cmd("SET")
        .arg("ready:bj")
        .arg(1)
        .query_async(&mut bj)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("ready:sh")
        .arg(1)
        .query_async(&mut shc)
        .await
        .unwrap();
    wait_for("both DCs to replicate", Duration::from_secs(60), || {
        agents.assert_alive();
        let (mut bj, mut shc) = (bj.clone(), shc.clone());
        async move {
            let a: Option<i64> = redis::cmd("GET")
                .arg("ready:sh")
                .query_async(&mut bj)
                .await
                .ok()?;
            let b: Option<i64> = redis::cmd("GET")
                .arg("ready:bj")
                .query_async(&mut shc)
                .await
                .ok()?;
            (a.is_some() && b.is_some()).then_some(())
        }
    })
    .await;
}

/// Writes `n` rounds in DC `dc` at `url` (or until `stop`): `INCRBY` on
/// four counters, a `SET` of a distinct key, an `HSET`, every fifth round
/// in one `MULTI`/`EXEC`. Adds what it added to each counter to `totals`.
async fn write(
    url: String,
    dc: &'static str,
    rounds: std::ops::Range<u64>,
    stop: Arc<AtomicBool>,
    totals: Arc<std::sync::Mutex<BTreeMap<String, i64>>>,
) -> u64 {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let mut done = 0;
    for i in rounds {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let ctr = format!("{dc}:ctr:{}", i % 4);
        let by = (i % 7 + 1) as i64;
        let mut p = redis::pipe();
        if i % 5 == 0 {
            p.atomic();
        }
        p.cmd("INCRBY").arg(&ctr).arg(by).ignore();
        p.cmd("SET")
            .arg(format!("{dc}:k:{i}"))
            .arg(format!("v{i}"))
            .ignore();
        p.cmd("HSET")
            .arg(format!("{dc}:h:{}", i % 10))
            .arg(format!("f{i}"))
            .arg(i)
            .ignore();
        let _: () = p.query_async(&mut c).await.unwrap();
        *totals.lock().unwrap().entry(ctr).or_insert(0) += by;
        done += 1;
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    done
}

/// Waits until bj and sh hold the same keys with the same value digests
/// and TTL presence, then checks every counter against `totals`.
async fn assert_converged(
    agents: &mut Agents,
    bj: &Redis,
    sh: &Redis,
    totals: &BTreeMap<String, i64>,
) {
    let mut last = (0, 0, Vec::new());
    let converged = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            agents.assert_alive();
            let a = bj.digests().await.unwrap();
            let b = sh.digests().await.unwrap();
            if a == b {
                return a.len();
            }
            let differ: Vec<String> = a
                .keys()
                .chain(b.keys())
                .filter(|k| a.get(*k) != b.get(*k))
                .take(5)
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            last = (a.len(), b.len(), differ);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let keys = match converged {
        Ok(n) => n,
        Err(_) => {
            agents.dump();
            panic!(
                "bj and sh did not converge in 120 s: {} vs {} keys, e.g. {:?}",
                last.0, last.1, last.2
            );
        }
    };
    assert!(keys > 500, "too few keys to mean anything: {keys}");
    for (i, r) in [bj, sh].into_iter().enumerate() {
        let mut c = r.conn().await;
        for (ctr, total) in totals {
            let v: Option<i64> = redis::cmd("GET")
                .arg(ctr)
                .query_async(&mut c)
                .await
                .unwrap();
            assert_eq!(v, Some(*total), "{ctr} in {}", ["bj", "sh"][i]);
        }
    }
}

/// bj's source status: (resyncs continued, resyncs full, last resync
/// detail, position).
fn resyncs(agents: &Agents) -> Option<(u64, u64, String, String)> {
    let st = agents.status(0)?;
    let s = st.0["sources"]
        .as_array()?
        .iter()
        .find(|s| s["store"].as_str() == Some(STORE))?
        .clone();
    Some((
        s["resyncs_continued"].as_u64()?,
        s["resyncs_full"].as_u64()?,
        s["last_resync"]["detail"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        s["position"].as_str().unwrap_or_default().to_string(),
    ))
}

/// After the failover: bj's agent says, in its log, status and metrics,
/// that it continued on the promoted primary (no full resync), and its
/// position carries the promoted server's replication id.
async fn assert_continued(agents: &Agents, promoted: &Redis) {
    let new_id = promoted
        .info_field("replication", "master_replid")
        .await
        .unwrap();
    let (continued, full, detail, position) = wait_for(
        "bj's status to show the resync and the new replid",
        Duration::from_secs(30),
        || async { resyncs(agents).filter(|r| r.0 >= 1 && r.3.contains(&new_id)) },
    )
    .await;
    let log = agents.log(0);
    assert!(
        log.contains("continued with PSYNC on the promoted primary (replid2)"),
        "no +CONTINUE on the promoted primary in bj's log:\n{}",
        common::tail(&log, 40)
    );
    assert!(
        !log.contains("full resync"),
        "bj took a full resync:\n{}",
        common::tail(&log, 40)
    );
    assert_eq!(full, 0, "status counts a full resync: {detail}");
    assert!(detail.contains("promoted primary"), "{detail}");
    assert!(continued >= 1);
    assert!(
        position.starts_with(&format!("redis {new_id} offset ")),
        "{position}"
    );
    let status = agents.status_text(0, false);
    assert!(
        status.contains("resyncs: ") && status.contains(" 0 full"),
        "{status}"
    );
    let metrics = agents.admin_get(0, "/metrics").unwrap_or_default();
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("dcsync_source_full_resyncs_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_source_follows_a_promoted_replica_behind_a_vip() {
    let mut primary = server().await;
    let replica = Redis::start_replica_of(&primary, args()).await;
    let sh = server().await;
    let vip = Proxy::start(format!("127.0.0.1:{}", primary.port)).await;
    let bj_url = format!("redis://{}", vip.addr());
    let mut agents = agents(&bj_url, &sh).await;
    wait_ready(&mut agents, &bj_url, &sh).await;

    let totals = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let never = Arc::new(AtomicBool::new(false));
    let stop_sh = Arc::new(AtomicBool::new(false));
    let sh_writer = tokio::spawn(write(
        sh.url(),
        "sh",
        0..1_000_000,
        stop_sh.clone(),
        totals.clone(),
    ));
    let n = write(bj_url.clone(), "bj", 0..1500, never.clone(), totals.clone()).await;
    assert_eq!(n, 1500);

    // The failover, while sh keeps writing (and bj's agent applying).
    primary.pause_writes(30_000).await;
    primary
        .wait_replica_caught_up(&replica, Duration::from_secs(20))
        .await;
    primary.kill();
    replica.promote().await;
    vip.set_target(format!("127.0.0.1:{}", replica.port));

    let n = write(bj_url.clone(), "bj", 1500..3000, never, totals.clone()).await;
    assert_eq!(n, 1500);
    stop_sh.store(true, Ordering::SeqCst);
    assert!(sh_writer.await.unwrap() > 0);
    let totals = totals.lock().unwrap().clone();
    assert_converged(&mut agents, &replica, &sh, &totals).await;
    assert_continued(&agents, &replica).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_source_follows_a_sentinel_failover() {
    let mut primary = server().await;
    let replica = Redis::start_replica_of(&primary, args()).await;
    let sentinel = match Sentinel::start("bjcache", &primary, 1).await {
        Ok(s) => s,
        Err(why) => {
            eprintln!("SKIPPED redis_source_follows_a_sentinel_failover: Redis Sentinel cannot run here: {why}");
            return;
        }
    };
    let replica_addr = format!("127.0.0.1:{}", replica.port);
    wait_for(
        "the sentinel to see the replica",
        Duration::from_secs(30),
        || async {
            sentinel
                .good_replicas()
                .await
                .contains(&replica_addr)
                .then_some(())
        },
    )
    .await;
    let sh = server().await;
    let bj_url = format!("sentinel://{}/bjcache", sentinel.addr());
    let mut agents = agents(&bj_url, &sh).await;
    wait_ready(&mut agents, &primary.url(), &sh).await;

    let totals = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let never = Arc::new(AtomicBool::new(false));
    let stop_sh = Arc::new(AtomicBool::new(false));
    let sh_writer = tokio::spawn(write(
        sh.url(),
        "sh",
        0..1_000_000,
        stop_sh.clone(),
        totals.clone(),
    ));
    let n = write(primary.url(), "bj", 0..1500, never.clone(), totals.clone()).await;
    assert_eq!(n, 1500);

    // The primary fails once the replica has everything (paused first:
    // no write, sink apply, ping or Sentinel hello reaches the source that
    // the replica misses), and the sentinel is told to fail over.
    primary.pause_writes(30_000).await;
    primary
        .wait_replica_caught_up(&replica, Duration::from_secs(20))
        .await;
    primary.kill();
    wait_for(
        "SENTINEL FAILOVER to be accepted",
        Duration::from_secs(20),
        || async { sentinel.failover().await.ok() },
    )
    .await;
    wait_for(
        "the sentinel to name the promoted replica",
        Duration::from_secs(30),
        || async {
            (sentinel.master_addr().await.as_deref() == Some(replica_addr.as_str())).then_some(())
        },
    )
    .await;

    let n = write(replica.url(), "bj", 1500..3000, never, totals.clone()).await;
    assert_eq!(n, 1500);
    stop_sh.store(true, Ordering::SeqCst);
    assert!(sh_writer.await.unwrap() > 0);
    let totals = totals.lock().unwrap().clone();
    assert_converged(&mut agents, &replica, &sh, &totals).await;
    assert_continued(&agents, &replica).await;
    drop(sentinel);
}
