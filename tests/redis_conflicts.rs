//! Redis conflicts through real agents and servers (docs/conflicts.md,
//! "Redis"). Both DCs write the same keys while the line between them is
//! down, round after round; afterwards every key's digest is equal in both
//! DCs, the winner is the one the policy names, and the conflicts are in
//! the conflict log. Under `lww` the HLC decides, not a DC's wall clock (one
//! agent's clock runs five minutes ahead); under `owner` the key's unit
//! owner wins.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{options, Cluster, ClusterOptions, REDIS_STORE};
use std::path::Path;
use std::time::Duration;

/// Keys per kind each round writes.
const KEYS: usize = 30;

/// The conflict log of an agent, one JSON value per line.
fn conflicts(data_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(data_dir.join("conflicts.jsonl"))
        .map(|t| {
            t.lines()
                .map(|l| serde_json::from_str(l).expect("a conflict record is JSON"))
                .collect()
        })
        .unwrap_or_default()
}

fn cut(c: &Cluster) {
    for a in &c.agents.dcs {
        a.proxy.cut();
    }
}

fn restore(c: &Cluster) {
    for a in &c.agents.dcs {
        a.proxy.restore();
    }
}

/// DC `i` writes round `r`: `SET k:<n> <dc>-<r>`, `HSET h:<n> <dc> <r>`,
/// `INCRBY c:<n> <by>` for every key.
async fn write_round(c: &Cluster, i: usize, r: u32, by: i64) {
    let mut con = c.dcs[i].redis.as_ref().unwrap().conn().await;
    let dc = &c.dcs[i].id;
    for n in 0..KEYS {
        let _: () = redis::pipe()
            .cmd("SET")
            .arg(format!("k:{n}"))
            .arg(format!("{dc}-{r}"))
            .ignore()
            .cmd("HSET")
            .arg(format!("h:{n}"))
            .arg(dc)
            .arg(r)
            .ignore()
            .cmd("INCRBY")
            .arg(format!("c:{n}"))
            .arg(by)
            .ignore()
            .query_async(&mut con)
            .await
            .unwrap();
    }
}

async fn get(c: &Cluster, i: usize, key: &str) -> Option<String> {
    let mut con = c.dcs[i].redis.as_ref().unwrap().conn().await;
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut con)
        .await
        .unwrap()
}

async fn hash(c: &Cluster, i: usize, key: &str) -> Vec<(String, String)> {
    let mut con = c.dcs[i].redis.as_ref().unwrap().conn().await;
    let mut v: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(key)
        .query_async(&mut con)
        .await
        .unwrap();
    v.sort();
    v
}

/// Waits until every key's digest is equal in both DCs.
async fn converged(c: &Cluster) {
    dcsync_testkit::wait_for(
        "both DCs' Redis equal (per-key digests)",
        Duration::from_secs(120),
        || async {
            let a = c.dcs[0].redis.as_ref().unwrap().digests().await.unwrap();
            let b = c.dcs[1].redis.as_ref().unwrap().digests().await.unwrap();
            (a == b && a.len() >= 3 * KEYS).then_some(())
        },
    )
    .await;
}

/// Rounds of both DCs writing every key with the line down.
async fn race(c: &Cluster, rounds: std::ops::RangeInclusive<u32>) {
    for r in rounds {
        cut(c);
        tokio::join!(write_round(c, 0, r, 1), write_round(c, 1, r, 10));
        tokio::time::sleep(Duration::from_millis(200)).await;
        restore(c);
        converged(c).await;
    }
}

/// Two DCs with Redis store settings `store_toml`; sh's agent clock runs
/// five minutes ahead (`DCSYNC_CLOCK_SKEW_MS`).
async fn start_with_sh_ahead(store_toml: &str) -> Cluster {
    let mut c = Cluster::start(ClusterOptions {
        redis: true,
        redis_store_toml: store_toml.into(),
        ..options()
    })
    .await;
    c.agents.kill_agent(1);
    c.agents.dcs[1]
        .env
        .push(("DCSYNC_CLOCK_SKEW_MS".into(), "300000".into()));
    c.agents.start_agent(1);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_lww_redis_keys_converge_and_the_hlc_not_the_wall_clock_decides() {
    // sh's agent clock runs five minutes ahead: its concurrent writes are
    // stamped later, so they win in both DCs.
    let mut c = start_with_sh_ahead("conflict = \"lww\"\n").await;
    race(&c, 1..=3).await;
    for i in [0, 1] {
        for n in 0..KEYS {
            assert_eq!(get(&c, i, &format!("k:{n}")).await.as_deref(), Some("sh-3"));
            // sh's increments won every round; bj's were not applied (the
            // whole value of the winner was re-shipped).
            assert_eq!(get(&c, i, &format!("c:{n}")).await.as_deref(), Some("30"));
            // A hash is one value: sh's, without the field bj set.
            assert_eq!(
                hash(&c, i, &format!("h:{n}")).await,
                vec![("sh".to_string(), "3".to_string())]
            );
        }
    }
    // The conflicts were detected in sh, where bj's earlier-stamped writes
    // arrived after sh's own.
    let sh = conflicts(&c.agents.dcs[1].data_dir);
    assert!(sh.len() >= KEYS, "{} conflicts in sh", sh.len());
    for r in &sh {
        assert_eq!(r["winner"]["dc"], "sh", "{r}");
        assert_eq!(r["loser"]["dc"], "bj", "{r}");
        assert_eq!(r["policy"], "lww", "{r}");
        assert!(r["key"].as_str().unwrap().starts_with("db0 "), "{r}");
    }
    assert!(sh
        .iter()
        .any(|r| r["loser_value"].as_str().unwrap().starts_with("SET k:")));

    // bj writes after it has seen sh's value: by the wall clock five
    // minutes older, but causally later, and the HLC says so.
    let mut con = c.dcs[0].redis.as_ref().unwrap().conn().await;
    let _: () = redis::cmd("SET")
        .arg("k:0")
        .arg("bj-after")
        .query_async(&mut con)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while get(&c, 1, "k:0").await.as_deref() != Some("bj-after") {
        if std::time::Instant::now() > deadline {
            c.agents.dump();
            panic!(
                "bj's later write never reached sh: bj holds {:?}, sh {:?}",
                get(&c, 0, "k:0").await,
                get(&c, 1, "k:0").await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    converged(&c).await;
    assert_eq!(get(&c, 0, "k:0").await.as_deref(), Some("bj-after"));
    // The sources read everything and nothing keeps flowing.
    c.settled_sources(REDIS_STORE, 60).await;
    let st = c.agents.status_text(1, false);
    assert!(st.contains("conflicts:"), "{st}");
}

/// The DC `dcsync route` names as the owner of Redis key `key`.
fn owner_of(c: &Cluster, key: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dcsync"))
        .args(["route", "--topology"])
        .arg(&c.agents.topology)
        .args(["--store", REDIS_STORE, key])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let owner = text
        .split_whitespace()
        .skip_while(|w| *w != "owner")
        .nth(1)
        .unwrap_or_else(|| panic!("no owner in {text:?}"));
    owner.to_string()
}

/// Asserts that every `k:<n>` holds its owner DC's round-`r` value in both
/// DCs; returns how many keys each DC owns.
async fn owners_won(c: &Cluster, r: u32) -> std::collections::BTreeMap<String, usize> {
    let mut owners = std::collections::BTreeMap::new();
    for n in 0..KEYS {
        let key = format!("k:{n}");
        let owner = owner_of(c, &key);
        for i in [0, 1] {
            assert_eq!(
                get(c, i, &key).await,
                Some(format!("{owner}-{r}")),
                "{key} (owner {owner}) in {}",
                c.dcs[i].id
            );
        }
        *owners.entry(owner).or_insert(0) += 1;
    }
    owners
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_owner_each_redis_keys_owner_wins() {
    let c = Cluster::start(ClusterOptions {
        redis: true,
        redis_store_toml: "conflict = \"owner\"\n".into(),
        ..options()
    })
    .await;
    race(&c, 1..=3).await;
    let owners = owners_won(&c, 3).await;
    assert_eq!(
        owners.len(),
        2,
        "the keys' units are owned by both DCs: {owners:?}"
    );
    // Each DC vetoed the other's writes to the keys it owns.
    for (i, d) in c.agents.dcs.iter().enumerate() {
        let log = conflicts(&d.data_dir);
        assert!(!log.is_empty(), "no conflict in {}", c.dcs[i].id);
        for r in &log {
            assert_eq!(r["policy"], "owner", "{r}");
            assert_eq!(r["winner"]["dc"], c.dcs[i].id, "{r}");
        }
        assert!(log
            .iter()
            .any(|r| r["decision"].as_str().unwrap().contains("owns unit")));
    }
}

/// The versions an agent pruned from its version index (its metrics).
fn pruned(c: &Cluster, i: usize) -> f64 {
    let text = c.agents.admin_get(i, "/metrics").unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("dcsync_version_index_pruned_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// With `version_retention_s = 0` each agent prunes a version as soon as
/// the other DC's applied changes passed it; races decided afterwards still
/// end on the policy's winner in both DCs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn races_after_the_version_index_was_pruned_still_converge_on_the_winner() {
    let mut c = start_with_sh_ahead("conflict = \"lww\"\nversion_retention_s = 0\n").await;
    race(&c, 1..=2).await;
    // One more change each way moves both horizons past the races: sh's
    // first, and bj's once bj holds it (so bj applied everything sh wrote
    // or re-shipped before, and bj's change is stamped above all of it).
    for i in [1, 0] {
        let mut con = c.dcs[i].redis.as_ref().unwrap().conn().await;
        let _: () = redis::cmd("SET")
            .arg(format!("tick:{i}"))
            .arg(1)
            .query_async(&mut con)
            .await
            .unwrap();
        let other = 1 - i;
        dcsync_testkit::wait_for(
            "the tick reached the other DC",
            Duration::from_secs(60),
            || async { get(&c, other, &format!("tick:{i}")).await.map(|_| ()) },
        )
        .await;
    }
    converged(&c).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while pruned(&c, 0) == 0.0 || pruned(&c, 1) == 0.0 {
        if std::time::Instant::now() > deadline {
            c.agents.dump();
            panic!(
                "no versions pruned: bj {}, sh {}",
                pruned(&c, 0),
                pruned(&c, 1)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    race(&c, 3..=3).await;
    for i in [0, 1] {
        for n in 0..KEYS {
            assert_eq!(get(&c, i, &format!("k:{n}")).await.as_deref(), Some("sh-3"));
            assert_eq!(
                hash(&c, i, &format!("h:{n}")).await,
                vec![("sh".to_string(), "3".to_string())]
            );
        }
    }
    let sh = conflicts(&c.agents.dcs[1].data_dir);
    assert!(
        sh.iter().any(|r| r["loser_value"] == "SET k:0 bj-3"),
        "bj's round-3 write lost in sh after the pruning"
    );
    c.settled_sources(REDIS_STORE, 60).await;
}

/// An owner whose agent dies between a group's `EXEC` and the journaling
/// of its re-ship (`DCSYNC_CRASH_AT`, a crash no signal hits reliably)
/// finishes the re-ship when it starts again: the group's apply marker had
/// moved, so the group itself is never decided again, and without the
/// re-ship the other DC would keep its losing values for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_owner_killed_between_exec_and_its_reship_finishes_the_reship_on_restart() {
    let mut c = Cluster::start(ClusterOptions {
        redis: true,
        redis_store_toml: "conflict = \"owner\"\n".into(),
        ..options()
    })
    .await;
    race(&c, 1..=1).await;
    c.agents.kill_agent(0);
    c.agents.dcs[0].env.push((
        dcsync_core::CRASH_AT_ENV.into(),
        "redis-sink-after-exec".into(),
    ));
    c.agents.start_agent(0);
    cut(&c);
    tokio::join!(write_round(&c, 0, 2, 1), write_round(&c, 1, 2, 10));
    restore(&c);
    // sh's round-2 writes to keys bj owns lose in bj: bj's sink executes
    // the rest of the group and aborts before journaling the re-ship.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !c.agents.exited(0) {
        if std::time::Instant::now() > deadline {
            c.agents.dump();
            panic!("bj's agent did not reach the crash point");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        c.agents.log(0).contains("aborting here"),
        "bj's agent exited, but not at the crash point:\n{}",
        c.agents.log_tail(0, 40)
    );
    c.agents.kill_agent(0);
    c.agents.dcs[0]
        .env
        .retain(|(k, _)| k != dcsync_core::CRASH_AT_ENV);
    c.agents.start_agent(0);
    converged(&c).await;
    assert!(
        c.agents
            .log(0)
            .contains("finished the re-ship of a group applied just before the agent stopped"),
        "bj did not finish the pending re-ship:\n{}",
        c.agents.log_tail(0, 40)
    );
    owners_won(&c, 2).await;
    // The losers of the interrupted group are in bj's conflict log.
    let bj = conflicts(&c.agents.dcs[0].data_dir);
    assert!(
        bj.iter().any(|r| r["loser_value"]
            .as_str()
            .is_some_and(|v| v.ends_with(" sh-2"))
            && r["winner"]["dc"] == "bj"),
        "no round-2 loss of sh in bj's conflict log: {bj:?}"
    );
    c.settled_sources(REDIS_STORE, 60).await;
}
