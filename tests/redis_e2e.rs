//! Two DCs, two-way Redis sync through real `dcsync` agents (next to MariaDB
//! in the same agents and topology).
//!
//! - every data type with TTLs, written concurrently in both DCs on disjoint
//!   keys, one `MULTI`/`EXEC` per round, converges, and nothing echoes (each
//!   DC's source journaled exactly the transactions written in that DC);
//! - `INCR` counters stay exact while the agents are killed with SIGKILL and
//!   restarted, and the restarts resume with `+CONTINUE` (no full resync);
//! - when the server's backlog no longer holds the restart offset, the agent
//!   takes a full resync, says so, and the data still converges.
//! - an agent killed right after its first start resumes both of its
//!   streams (no second full sync, no rows skipped).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{options, Cluster, ClusterOptions, MYSQL_STORE, REDIS_STORE};
use dcsync_testkit::redis::Redis;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn opts() -> ClusterOptions {
    ClusterOptions {
        redis: true,
        ..options()
    }
}

fn redis_of(c: &Cluster, i: usize) -> &Redis {
    c.dcs[i].redis.as_ref().unwrap()
}

/// The logical value of `key`, independent of encoding and of hash-table
/// iteration order (DUMP of a hashtable-encoded set differs between servers
/// holding the same members). `None` if the key vanished.
async fn canonical(c: &mut redis::aio::MultiplexedConnection, key: &[u8]) -> Option<Vec<u8>> {
    let t: String = redis::cmd("TYPE").arg(key).query_async(c).await.unwrap();
    let mut parts: Vec<Vec<u8>> = match t.as_str() {
        "none" => return None,
        "string" => vec![redis::cmd("GET").arg(key).query_async(c).await.unwrap()],
        "list" => redis::cmd("LRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query_async(c)
            .await
            .unwrap(),
        "zset" => redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(c)
            .await
            .unwrap(),
        "set" => {
            let mut m: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
                .arg(key)
                .query_async(c)
                .await
                .unwrap();
            m.sort();
            m
        }
        "hash" => {
            let flat: Vec<Vec<u8>> = redis::cmd("HGETALL").arg(key).query_async(c).await.unwrap();
            let mut pairs: Vec<Vec<u8>> = flat.chunks(2).map(|p| p.concat()).collect();
            pairs.sort();
            pairs
        }
        "stream" => {
            let v: redis::Value = redis::cmd("XRANGE")
                .arg(key)
                .arg("-")
                .arg("+")
                .query_async(c)
                .await
                .unwrap();
            vec![format!("{v:?}").into_bytes()]
        }
        other => vec![other.as_bytes().to_vec()],
    };
    parts.insert(0, t.into_bytes());
    Some(parts.join(&b'\x1f'))
}

/// Every key outside dcsync's own markers: key -> (logical value, PTTL ms).
async fn snapshot(r: &Redis) -> BTreeMap<Vec<u8>, (Vec<u8>, i64)> {
    let mut c = r.conn().await;
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut c)
            .await
            .unwrap();
        keys.extend(batch.into_iter().filter(|k| !k.starts_with(b"dcsync:")));
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut out = BTreeMap::new();
    for k in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&k)
            .query_async(&mut c)
            .await
            .unwrap();
        if let Some(v) = canonical(&mut c, &k).await {
            out.insert(k, (v, ttl));
        }
    }
    out
}

/// Waits until both Redis servers hold the same keys, values and TTLs (TTLs
/// within 5 s of each other: they tick while we compare).
async fn wait_redis_converged(c: &mut Cluster, secs: u64) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        c.agents.assert_alive();
        let a = snapshot(redis_of(c, 0)).await;
        let b = snapshot(redis_of(c, 1)).await;
        let same = a.len() == b.len()
            && a.iter()
                .zip(b.iter())
                .all(|((ka, (da, ta)), (kb, (db, tb)))| {
                    ka == kb
                        && da == db
                        && ((*ta < 0 && *tb < 0)
                            || (*ta >= 0 && *tb >= 0 && (ta - tb).abs() < 5000))
                });
        if same {
            return a.len();
        }
        if std::time::Instant::now() > deadline {
            let only_a: Vec<_> = a
                .keys()
                .filter(|k| !b.contains_key(*k))
                .take(5)
                .map(|k| String::from_utf8_lossy(k).to_string())
                .collect();
            let only_b: Vec<_> = b
                .keys()
                .filter(|k| !a.contains_key(*k))
                .take(5)
                .map(|k| String::from_utf8_lossy(k).to_string())
                .collect();
            let differ: Vec<_> = a
                .iter()
                .filter(|(k, v)| {
                    b.get(*k)
                        .is_some_and(|w| w.0 != v.0 || (w.1 < 0) != (v.1 < 0))
                })
                .take(5)
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(k).to_string(),
                        v.1,
                        b.get(k).map(|w| w.1),
                    )
                })
                .collect();
            eprintln!("keys whose value differs (key, ttl bj, ttl sh): {differ:?}");
            c.agents.dump();
            panic!("redis did not converge in {secs} s: {} vs {} keys; only in bj {only_a:?}; only in sh {only_b:?}", a.len(), b.len());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Writes `n` rounds of every data type in DC `dc`, each round one
/// `MULTI`/`EXEC` (so one transaction on the replication stream, which the
/// no-echo check counts), then one more application transaction. Returns
/// the number of transactions written.
async fn write_all_types(r: String, dc: &'static str, n: usize) -> u64 {
    let client = redis::Client::open(r).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    for i in 0..n {
        let mut p = redis::pipe();
        p.atomic();
        p.cmd("SET")
            .arg(format!("{dc}:s:{i}"))
            .arg(format!("value {i} ✓"))
            .cmd("SET")
            .arg(format!("{dc}:ttl:{i}"))
            .arg(i)
            .arg("PX")
            .arg(600_000)
            .cmd("HSET")
            .arg(format!("{dc}:h:{}", i % 50))
            .arg(format!("f{i}"))
            .arg(i)
            .cmd("RPUSH")
            .arg(format!("{dc}:l:{}", i % 20))
            .arg(i)
            .cmd("SADD")
            .arg(format!("{dc}:set:{}", i % 20))
            .arg(i)
            .cmd("SADD")
            .arg(format!("{dc}:strset:{}", i % 20))
            .arg(format!("m{i}"))
            .cmd("ZADD")
            .arg(format!("{dc}:z:{}", i % 20))
            .arg(i as f64 * 1.5)
            .arg(format!("m{i}"))
            .cmd("XADD")
            .arg(format!("{dc}:x"))
            .arg("*")
            .arg("i")
            .arg(i)
            .cmd("INCR")
            .arg(format!("{dc}:ctr"));
        if i % 7 == 0 {
            p.cmd("DEL").arg(format!("{dc}:s:{}", i / 2));
            p.cmd("PEXPIRE")
                .arg(format!("{dc}:h:{}", i % 50))
                .arg(900_000);
        }
        let _: () = p.query_async(&mut c).await.unwrap();
    }
    // An application transaction.
    let _: () = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(format!("{dc}:tx:a"))
        .arg(1)
        .cmd("SET")
        .arg(format!("{dc}:tx:b"))
        .arg(2)
        .cmd("LPUSH")
        .arg(format!("{dc}:tx:l"))
        .arg("x")
        .query_async(&mut c)
        .await
        .unwrap();
    n as u64 + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_all_types_converge_without_echo() {
    let mut c = Cluster::start(opts()).await;
    let a = tokio::spawn(write_all_types(redis_of(&c, 0).url(), "bj", 400));
    let b = tokio::spawn(write_all_types(redis_of(&c, 1).url(), "sh", 400));
    let written = [a.await.unwrap(), b.await.unwrap()];
    let keys = wait_redis_converged(&mut c, 120).await;
    assert!(keys > 500, "too few keys to mean anything: {keys}");
    // No echo: each DC journaled exactly the transactions written there.
    c.assert_no_echo(REDIS_STORE, &written).await;
    c.assert_no_echo(MYSQL_STORE, &[0, 0]).await;
    // The application MULTI/EXEC arrived whole.
    let mut sh = redis_of(&c, 1).conn().await;
    let v: (Option<i64>, Option<i64>, Vec<String>) = redis::pipe()
        .cmd("GET")
        .arg("bj:tx:a")
        .cmd("GET")
        .arg("bj:tx:b")
        .cmd("LRANGE")
        .arg("bj:tx:l")
        .arg(0)
        .arg(-1)
        .query_async(&mut sh)
        .await
        .unwrap();
    assert_eq!(v, (Some(1), Some(2), vec!["x".to_string()]));
    c.agents.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_incr_exactly_once_across_kill9_with_continue() {
    let mut c = Cluster::start(opts()).await;
    let counts: Arc<[AtomicU64; 2]> = Arc::new(Default::default());
    let mut writers = Vec::new();
    for (k, dc) in ["bj", "sh"].into_iter().enumerate() {
        let url = redis_of(&c, k).url();
        let counts = counts.clone();
        writers.push(tokio::spawn(async move {
            let client = redis::Client::open(url).unwrap();
            let mut con = client.get_multiplexed_async_connection().await.unwrap();
            for i in 0..3000u64 {
                let _: i64 = redis::cmd("INCR")
                    .arg(format!("{dc}:ctr:{}", i % 3))
                    .query_async(&mut con)
                    .await
                    .unwrap();
                counts[k].fetch_add(1, Ordering::SeqCst);
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    let mut rng = rand::rngs::StdRng::from_os_rng();
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..900))).await;
        c.agents.kill_agent(round % 2);
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..500))).await;
        c.agents.start_agent(round % 2);
    }
    for w in writers {
        w.await.unwrap();
    }
    wait_redis_converged(&mut c, 120).await;
    for (k, dc) in ["bj", "sh"].into_iter().enumerate() {
        for i in 0..2 {
            let mut con = redis_of(&c, i).conn().await;
            let mut total = 0i64;
            for r in 0..3 {
                let v: Option<i64> = redis::cmd("GET")
                    .arg(format!("{dc}:ctr:{r}"))
                    .query_async(&mut con)
                    .await
                    .unwrap();
                total += v.unwrap_or(0);
            }
            assert_eq!(
                total as u64,
                counts[k].load(Ordering::SeqCst),
                "{dc} counters in {}",
                c.dcs[i].id
            );
        }
    }
    for i in 0..2 {
        let log = c.agents.log(i);
        assert!(
            log.contains("+CONTINUE"),
            "agent {} never resumed with +CONTINUE:\n{}",
            c.dcs[i].id,
            common::tail(&log, 30)
        );
        assert!(
            !log.contains("full resync"),
            "agent {} fell back to a full resync",
            c.dcs[i].id
        );
    }
    c.agents.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_full_resync_when_backlog_exceeded_still_converges() {
    let mut c = Cluster::start(opts()).await;
    {
        let mut bj = redis_of(&c, 0).conn().await;
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("repl-backlog-size")
            .arg("16384")
            .query_async(&mut bj)
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg("bj:before")
            .arg(1)
            .query_async(&mut bj)
            .await
            .unwrap();
    }
    wait_redis_converged(&mut c, 60).await;
    c.agents.kill_agent(0);
    {
        let mut bj = redis_of(&c, 0).conn().await;
        let big = "x".repeat(200);
        for i in 0..1000 {
            let _: () = redis::cmd("SET")
                .arg(format!("bj:while-down:{i}"))
                .arg(&big)
                .query_async(&mut bj)
                .await
                .unwrap();
        }
    }
    c.agents.start_agent(0);
    let n = wait_redis_converged(&mut c, 120).await;
    assert!(n >= 1001, "{n} keys");
    c.agents.assert_alive();
    let log = c.agents.log(0);
    assert!(
        log.contains("full resync"),
        "the full resync was not reported:\n{}",
        common::tail(&log, 30)
    );
}

/// An agent killed (SIGKILL) right after its first start, before anything
/// was written and before it reached its peer (the lines are cut from the
/// start, so no journal commit after the sources' first positions makes
/// them durable by the way), resumes both streams where its first run
/// began: the Redis source continues with `PSYNC` (no second full sync,
/// which would stamp the keys written meanwhile as a snapshot copy) and the
/// MariaDB source at its journaled position (not at the binlog end again,
/// which would skip the rows written meanwhile for good). The first
/// position of a source run is journaled durably (docs/journal.md,
/// "Position-only moves").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_killed_right_after_its_first_start_resumes_both_streams() {
    let mut c = Cluster::start(ClusterOptions {
        schema_sql: "CREATE DATABASE IF NOT EXISTS shop;\
                     CREATE TABLE shop.t (id INT PRIMARY KEY, v INT) ENGINE=InnoDB;"
            .into(),
        wait_ready: false,
        ..opts()
    })
    .await;
    for d in &c.agents.dcs {
        d.proxy.cut();
    }
    dcsync_testkit::wait_for(
        "bj's sources tailing their stores",
        Duration::from_secs(60),
        || async {
            let st = c.agents.status(0)?;
            [MYSQL_STORE, REDIS_STORE]
                .iter()
                .all(|s| {
                    st.source(s).is_some_and(|s| {
                        s.state == "running" && !s.copying && !s.position.is_empty()
                    })
                })
                .then_some(())
        },
    )
    .await;
    c.agents.kill_agent(0);
    c.dcs[0]
        .db
        .exec("INSERT INTO shop.t VALUES (1, 10), (2, 20)")
        .await;
    {
        let mut bj = redis_of(&c, 0).conn().await;
        for i in 0..50 {
            let _: () = redis::cmd("SET")
                .arg(format!("bj:while-down:{i}"))
                .arg(i)
                .query_async(&mut bj)
                .await
                .unwrap();
        }
    }
    c.agents.start_agent(0);
    for d in &c.agents.dcs {
        d.proxy.restore();
    }
    c.wait_converged(&["shop.t"], 60).await;
    assert_eq!(
        c.dcs[1].db.query_i64("SELECT COUNT(*) FROM shop.t").await,
        2
    );
    assert_eq!(wait_redis_converged(&mut c, 60).await, 50);
    let log = c.agents.log(0);
    assert_eq!(
        log.matches("redis initial full sync").count(),
        1,
        "the restart took a second full sync:\n{}",
        common::tail(&log, 40)
    );
    assert!(log.contains("+CONTINUE"), "{}", common::tail(&log, 40));
    assert_eq!(
        log.matches("binlog end (first start)").count(),
        1,
        "the restart began at the binlog end again:\n{}",
        common::tail(&log, 40)
    );
}
