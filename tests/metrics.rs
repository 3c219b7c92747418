//! The admin endpoint during a real two-way sync: `/metrics` is valid
//! Prometheus exposition (`promtool check metrics`), its counters move by
//! exactly what the test wrote and what was applied, the gauges settle
//! (links up, backlogs empty), and `/status` serves the status document.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{options, Cluster, ClusterOptions};
use dcsync_testkit::prometheus::{promtool_check, sample};
use std::time::{Duration, Instant};

const SCHEMA: &str = "CREATE TABLE shop.t (id INT PRIMARY KEY, user_id INT, n INT) ENGINE=InnoDB;";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_move_with_a_sync_and_pass_promtool() {
    let mut c = Cluster::start(ClusterOptions {
        schema_sql: format!("CREATE DATABASE IF NOT EXISTS shop; {SCHEMA}"),
        redis: true,
        ..options()
    })
    .await;
    let before: Vec<String> = (0..2)
        .map(|i| c.agents.admin_get(i, "/metrics").unwrap())
        .collect();
    for text in &before {
        promtool_check(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }
    let (n_bj, n_sh, n_redis) = (40u32, 25u32, 30u32);
    for i in 0..n_bj {
        c.dcs[0]
            .db
            .exec(&format!("INSERT INTO shop.t VALUES ({i}, {i}, 1)"))
            .await;
    }
    for i in 0..n_sh {
        c.dcs[1]
            .db
            .exec(&format!("INSERT INTO shop.t VALUES ({}, {i}, 2)", 1000 + i))
            .await;
    }
    {
        let mut r = c.dcs[0].redis.as_ref().unwrap().conn().await;
        for i in 0..n_redis {
            let _: () = redis::cmd("SET")
                .arg(format!("m{i}"))
                .arg(i)
                .query_async(&mut r)
                .await
                .unwrap();
        }
    }
    c.wait_converged(&["shop.t"], 60).await;

    // Wait until both agents report every backlog acknowledged and the
    // Redis keys arrived; then the counters have stopped moving.
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        c.agents.assert_alive();
        let texts: Vec<String> = (0..2)
            .map(|i| c.agents.admin_get(i, "/metrics").unwrap())
            .collect();
        let backlog: f64 = texts
            .iter()
            .map(|t| sample(t, "dcsync_backlog_transactions", &[]).unwrap_or(1.0))
            .sum();
        let captured_bj = sample(&texts[0], "dcsync_source_transactions_total", &[]).unwrap_or(0.0);
        let acked_bj = sample(
            &texts[0],
            "dcsync_link_acked_transactions_total",
            &[("peer", "sh")],
        )
        .unwrap_or(-1.0);
        let captured_before =
            sample(&before[0], "dcsync_source_transactions_total", &[]).unwrap_or(0.0);
        let acked_before = sample(
            &before[0],
            "dcsync_link_acked_transactions_total",
            &[("peer", "sh")],
        )
        .unwrap_or(0.0);
        let redis_same = c.dcs[0]
            .redis
            .as_ref()
            .unwrap()
            .string_values()
            .await
            .unwrap()
            == c.dcs[1]
                .redis
                .as_ref()
                .unwrap()
                .string_values()
                .await
                .unwrap();
        if backlog == 0.0 && redis_same && acked_bj - acked_before == captured_bj - captured_before
        {
            break texts;
        }
        assert!(
            Instant::now() < deadline,
            "metrics did not settle: backlog {backlog}, redis equal {redis_same}\n{}",
            texts[0]
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for text in &after {
        promtool_check(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }
    let delta = |i: usize, name: &str, labels: &[(&str, &str)]| {
        sample(&after[i], name, labels).unwrap_or(0.0)
            - sample(&before[i], name, labels).unwrap_or(0.0)
    };
    // Captured: exactly what the test wrote in each DC — an echo would
    // be captured as local and show here.
    assert_eq!(
        delta(
            0,
            "dcsync_source_transactions_total",
            &[("store", "orders")]
        ),
        f64::from(n_bj)
    );
    assert_eq!(
        delta(
            1,
            "dcsync_source_transactions_total",
            &[("store", "orders")]
        ),
        f64::from(n_sh)
    );
    assert_eq!(
        delta(1, "dcsync_source_transactions_total", &[("store", "cache")]),
        0.0
    );
    assert!(delta(0, "dcsync_source_transactions_total", &[("store", "cache")]) >= 1.0);
    assert_eq!(
        delta(0, "dcsync_source_changes_total", &[("store", "orders")]),
        f64::from(n_bj)
    );
    // Applied: every origin transaction once.
    assert_eq!(
        delta(
            1,
            "dcsync_applied_transactions_total",
            &[("origin", "bj"), ("store", "orders")]
        ),
        f64::from(n_bj)
    );
    assert_eq!(
        delta(
            0,
            "dcsync_applied_transactions_total",
            &[("origin", "sh"), ("store", "orders")]
        ),
        f64::from(n_sh)
    );
    assert_eq!(
        delta(
            1,
            "dcsync_applied_transactions_total",
            &[("origin", "bj"), ("store", "cache")]
        ),
        delta(0, "dcsync_source_transactions_total", &[("store", "cache")])
    );
    // What was applied came back to the sources as echoes and was dropped.
    assert!(
        delta(
            1,
            "dcsync_echo_dropped_transactions_total",
            &[("store", "orders")]
        ) >= 1.0
    );
    assert!(
        delta(
            0,
            "dcsync_echo_dropped_transactions_total",
            &[("store", "orders")]
        ) >= 1.0
    );
    // Links: up, the current protocol, bytes both ways, what was acked = what was sent once.
    for (i, peer, me) in [(0, "sh", "bj"), (1, "bj", "sh")] {
        assert_eq!(
            sample(&after[i], "dcsync_link_up", &[("peer", peer)]),
            Some(1.0),
            "{}",
            after[i]
        );
        assert_eq!(
            sample(&after[i], "dcsync_link_protocol_version", &[("peer", peer)]),
            Some(f64::from(dcsync_link::frame::PROTOCOL_VERSION))
        );
        assert!(
            sample(&after[i], "dcsync_link_connects_total", &[("peer", peer)]).unwrap_or(0.0)
                >= 1.0
        );
        assert!(delta(i, "dcsync_link_sent_bytes_total", &[("peer", peer)]) > 0.0);
        assert!(delta(1 - i, "dcsync_link_received_bytes_total", &[("peer", me)]) > 0.0);
        assert_eq!(
            sample(&after[i], "dcsync_backlog_transactions", &[("peer", peer)]),
            Some(0.0)
        );
        assert_eq!(
            sample(&after[i], "dcsync_apply_errors_total", &[]),
            None,
            "no apply errors"
        );
    }
    assert!(sample(
        &after[1],
        "dcsync_apply_lag_seconds",
        &[("origin", "bj"), ("store", "orders")]
    )
    .is_some());
    assert!(sample(
        &after[0],
        "dcsync_source_lag_seconds",
        &[("store", "orders")]
    )
    .is_some());
    // Every series carries its DC.
    assert!(after[0]
        .lines()
        .filter(|l| l.starts_with("dcsync_"))
        .all(|l| l.contains("dc=\"bj\"")));

    // /status is the status document (rewritten every second: wait for
    // the snapshot that includes the applies above).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status: serde_json::Value =
            serde_json::from_str(&c.agents.admin_get(1, "/status").unwrap()).unwrap();
        assert_eq!(status["dc"], "sh");
        let applied = status["inbound"].as_array().and_then(|v| {
            v.iter()
                .find(|s| s["origin"] == "bj" && s["store"] == "orders")
                .and_then(|s| s["applied_txns"].as_u64())
        });
        if applied.unwrap_or(0) >= u64::from(n_bj) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/status never showed the applies: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        c.dcs[0]
            .redis
            .as_ref()
            .unwrap()
            .string_values()
            .await
            .unwrap(),
        c.dcs[1]
            .redis
            .as_ref()
            .unwrap()
            .string_values()
            .await
            .unwrap()
    );
}
