//! Source + sink end to end without the agent: RedisSource on A -> RedisSink
//! on B, echo suppression, resume (+CONTINUE and full resync), idempotency.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{pump, start_source, store, RunningSource};
use dcsync_core::connector::{Sink, SourceEvent};
use dcsync_core::{Change, Payload, RedisCommand};
use dcsync_redis::{RedisSink, SyncKind};
use dcsync_testkit::redis::Redis;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(120);

async fn dbsize(r: &Redis, db: u32) -> u64 {
    let c = redis::Client::open(format!("{}/{db}", r.url())).unwrap();
    let mut c = c.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("DBSIZE").query_async(&mut c).await.unwrap()
}

async fn get(r: &Redis, key: &str) -> Option<String> {
    let mut c = r.conn().await;
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap()
}

/// Pumps until `cond` holds (polled between event drains), or panics.
macro_rules! pump_until {
    ($what:expr, $src:expr, $sink:expr, $seq:expr, $seen:expr, $cond:expr) => {{
        let start = Instant::now();
        loop {
            if let Ok(Some(ev)) =
                tokio::time::timeout(Duration::from_millis(50), $src.events.recv()).await
            {
                // Put it back in front by handling it the same way as pump().
                handle_one(&mut $src, &mut $sink, "bj", &mut $seq, &mut $seen, ev).await;
            }
            pump(&mut $src, &mut $sink, "bj", &mut $seq, &mut $seen).await;
            if $cond {
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {}",
                $what
            );
        }
    }};
}

async fn handle_one(
    src: &mut RunningSource,
    sink: &mut RedisSink,
    origin: &str,
    seq: &mut u64,
    seen: &mut Vec<SourceEvent>,
    ev: SourceEvent,
) {
    match &ev {
        SourceEvent::Local {
            changes, position, ..
        } => {
            *seq += 1;
            let tx = common::to_tx(origin, *seq, changes.clone(), position);
            sink.apply(origin, &[tx]).await.expect("apply");
            let _ = src.durable.send(Some(position.clone()));
        }
        SourceEvent::Echo { position, .. } | SourceEvent::Progress { position } => {
            let _ = src.durable.send(Some(position.clone()));
        }
        SourceEvent::Fragment { .. } => panic!("the Redis source never splits a transaction"),
        SourceEvent::Skipped { .. } | SourceEvent::Resync { .. } | SourceEvent::Copying { .. } => {}
    }
    seen.push(ev);
}

async fn load_dataset(r: &Redis, n: usize) {
    let mut c = r.conn().await;
    let exp = common::now_ms() + 3_600_000;
    for chunk in (0..n).collect::<Vec<_>>().chunks(2000) {
        let mut p = redis::pipe();
        for &i in chunk {
            let k = format!("k:{i}");
            match i % 6 {
                0 => p.cmd("SET").arg(&k).arg(format!("v{i}")).ignore(),
                1 => p.cmd("RPUSH").arg(&k).arg("a").arg(i).arg("c").ignore(),
                2 => p.cmd("SADD").arg(&k).arg(i).arg(i + 1).arg("s").ignore(),
                3 => p
                    .cmd("ZADD")
                    .arg(&k)
                    .arg(1.5)
                    .arg("a")
                    .arg(i)
                    .arg("b")
                    .ignore(),
                4 => p
                    .cmd("HSET")
                    .arg(&k)
                    .arg("f")
                    .arg(i)
                    .arg("g")
                    .arg("h")
                    .ignore(),
                _ => p.cmd("SET").arg(&k).arg(i).ignore(),
            };
            if i % 10 == 0 {
                p.cmd("PEXPIREAT").arg(&k).arg(exp + i as u64).ignore();
            }
        }
        let _: () = p.query_async(&mut c).await.unwrap();
    }
    let mut p = redis::pipe();
    for s in 0..20 {
        let k = format!("x:{s}");
        for e in 0..5 {
            p.cmd("XADD").arg(&k).arg("*").arg("e").arg(e).ignore();
        }
        p.cmd("XGROUP")
            .arg("CREATE")
            .arg(&k)
            .arg("grp")
            .arg("0")
            .ignore();
    }
    p.cmd("SELECT").arg(1).ignore();
    for i in 0..1000 {
        p.cmd("SET").arg(format!("db1:{i}")).arg(i).ignore();
    }
    p.cmd("SELECT").arg(0).ignore();
    let _: () = p.query_async(&mut c).await.unwrap();
}

async fn live_writes(r: &Redis, tag: &str) {
    let mut c = r.conn().await;
    let exp = common::now_ms() + 600_000;
    let mut p = redis::pipe();
    p.cmd("SET")
        .arg(format!("{tag}:s"))
        .arg("v")
        .arg("EX")
        .arg(1000)
        .ignore();
    p.cmd("SETEX")
        .arg(format!("{tag}:sx"))
        .arg(500)
        .arg("v")
        .ignore();
    p.cmd("RPUSH")
        .arg(format!("{tag}:l"))
        .arg("a")
        .arg("b")
        .ignore();
    p.cmd("LPOP").arg(format!("{tag}:l")).ignore();
    p.cmd("SADD")
        .arg(format!("{tag}:set"))
        .arg("m1")
        .arg("m2")
        .ignore();
    p.cmd("ZADD")
        .arg(format!("{tag}:z"))
        .arg(3)
        .arg("x")
        .ignore();
    p.cmd("ZINCRBY")
        .arg(format!("{tag}:z"))
        .arg(2)
        .arg("x")
        .ignore();
    p.cmd("HSET")
        .arg(format!("{tag}:h"))
        .arg("f")
        .arg("v")
        .ignore();
    p.cmd("HINCRBY")
        .arg(format!("{tag}:h"))
        .arg("n")
        .arg(5)
        .ignore();
    p.cmd("XADD")
        .arg(format!("{tag}:x"))
        .arg("*")
        .arg("f")
        .arg("v")
        .ignore();
    p.cmd("PEXPIREAT").arg(format!("{tag}:h")).arg(exp).ignore();
    p.cmd("INCR").arg("counter").ignore();
    p.cmd("DEL").arg("k:0").arg("k:1").ignore();
    p.cmd("MSET")
        .arg(format!("{tag}:m1"))
        .arg(1)
        .arg(format!("{tag}:m2"))
        .arg(2)
        .ignore();
    p.cmd("SELECT").arg(1).ignore();
    p.cmd("SET").arg(format!("{tag}:db1")).arg("x").ignore();
    p.cmd("SELECT").arg(0).ignore();
    let _: () = p.query_async(&mut c).await.unwrap();
}

async fn compare(a: &Redis, b: &Redis) -> Vec<String> {
    let mut out = Vec::new();
    for db in [0, 1] {
        let ca = common::canon_server(&a.url(), db).await;
        let cb = common::canon_server(&b.url(), db).await;
        out.extend(common::diff(&ca, &cb, 3000));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_then_live_writes_converge() {
    common::init_tracing();
    let a = Redis::start().await;
    let b = Redis::start().await;
    load_dataset(&a, 100_000).await;
    let mut sink = RedisSink::connect(&b.url(), &store()).await.unwrap();
    let mut src = start_source(&a.url(), store(), None);
    let (mut seq, mut seen) = (0u64, Vec::new());
    let want0 = dbsize(&a, 0).await;
    pump_until!("full sync", src, sink, seq, seen, {
        dbsize(&b, 0).await == want0 + 1 && dbsize(&b, 1).await == 1000
    });
    assert_eq!(src.stats.last_sync_kind(), SyncKind::Initial);
    let rdb_txs = seq;
    assert!(rdb_txs >= 100, "RDB split into transactions: {rdb_txs}");
    let d = compare(&a, &b).await;
    assert!(
        d.is_empty(),
        "after full sync: {} diffs, {:?}",
        d.len(),
        &d[..d.len().min(5)]
    );

    live_writes(&a, "live").await;
    // An application transaction arrives as one transaction.
    let mut c = a.conn().await;
    let _: () = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("tx:a")
        .arg(1)
        .ignore()
        .cmd("INCR")
        .arg("tx:b")
        .ignore()
        .cmd("RPUSH")
        .arg("tx:c")
        .arg("x")
        .ignore()
        .query_async(&mut c)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("sentinel")
        .arg(1)
        .query_async(&mut c)
        .await
        .unwrap();
    pump_until!(
        "live writes",
        src,
        sink,
        seq,
        seen,
        get(&b, "sentinel").await.is_some()
    );
    let d = compare(&a, &b).await;
    assert!(
        d.is_empty(),
        "after live writes: {} diffs, {:?}",
        d.len(),
        &d[..d.len().min(5)]
    );
    let keys_of = |changes: &[Change]| -> Vec<Vec<u8>> {
        changes
            .iter()
            .filter_map(|c| match &c.payload {
                Payload::Redis(r) => r.args.get(1).cloned(),
                _ => None,
            })
            .collect()
    };
    let tx_event = seen.iter().find(|e| match e {
        SourceEvent::Local { changes, .. } => keys_of(changes).contains(&b"tx:a".to_vec()),
        _ => false,
    });
    match tx_event {
        Some(SourceEvent::Local { changes, .. }) => assert_eq!(
            keys_of(changes),
            vec![b"tx:a".to_vec(), b"tx:b".to_vec(), b"tx:c".to_vec()],
            "the MULTI/EXEC block is exactly one transaction"
        ),
        other => panic!("no transaction with tx:a: {other:?}"),
    }
    src.stop().await;
}

fn tx(seq: u64, cmds: &[&[&str]]) -> dcsync_core::Transaction {
    let changes = cmds
        .iter()
        .map(|c| Change {
            unit: None,
            payload: Payload::Redis(RedisCommand {
                db: 0,
                args: c.iter().map(|a| a.as_bytes().to_vec()).collect(),
            }),
        })
        .collect();
    common::to_tx(
        "sh",
        seq,
        changes,
        &dcsync_core::connector::Position {
            bytes: vec![],
            display: String::new(),
        },
    )
}

#[tokio::test]
async fn sink_blocks_come_back_as_echo() {
    common::init_tracing();
    let b = Redis::start().await;
    let mut src = start_source(&b.url(), store(), None);
    let mut sink = RedisSink::connect(&b.url(), &store()).await.unwrap();
    // Wait for the (empty) initial sync to finish.
    let start = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(1), src.events.recv()).await {
            Ok(Some(SourceEvent::Progress { .. })) => break,
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            _ => assert!(start.elapsed() < DEADLINE, "initial sync"),
        }
    }
    let batch = vec![
        tx(1, &[&["SET", "a", "1"], &["RPUSH", "l", "x"]]),
        tx(2, &[&["SET", "a", "2"]]),
        tx(3, &[]),
        tx(4, &[&["SADD", "s", "m"]]),
    ];
    assert_eq!(sink.apply("sh", &batch).await.unwrap(), 4);
    let mut c = b.conn().await;
    let _: () = redis::cmd("SET")
        .arg("app")
        .arg("1")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut echoes = Vec::new();
    loop {
        let ev = tokio::time::timeout(DEADLINE, src.events.recv())
            .await
            .expect("event")
            .expect("open");
        match ev {
            SourceEvent::Echo { origin, seq, .. } => echoes.push((origin, seq)),
            SourceEvent::Fragment { .. } => panic!("the Redis source never splits a transaction"),
            SourceEvent::Local { changes, .. } => {
                let keys: Vec<_> = changes
                    .iter()
                    .map(|c| match &c.payload {
                        Payload::Redis(r) => r.args[1].clone(),
                        _ => vec![],
                    })
                    .collect();
                assert_eq!(keys, vec![b"app".to_vec()], "only the app write is Local");
                break;
            }
            SourceEvent::Progress { .. }
            | SourceEvent::Skipped { .. }
            | SourceEvent::Resync { .. }
            | SourceEvent::Copying { .. } => {}
        }
    }
    let want: Vec<(String, u64)> = (1..=4).map(|s| ("sh".to_string(), s)).collect();
    assert_eq!(echoes, want);
    assert_eq!(sink.applied_seq("sh").await.unwrap(), 4);
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_continues_or_full_resyncs() {
    common::init_tracing();
    let a = Redis::start().await;
    let b = Redis::start().await;
    load_dataset(&a, 2000).await;
    let mut sink = RedisSink::connect(&b.url(), &store()).await.unwrap();
    let mut src = start_source(&a.url(), store(), None);
    let (mut seq, mut seen) = (0u64, Vec::new());
    let mut c = a.conn().await;
    for _ in 0..50 {
        let _: () = redis::cmd("INCR")
            .arg("counter")
            .query_async(&mut c)
            .await
            .unwrap();
    }
    pump_until!(
        "first sync",
        src,
        sink,
        seq,
        seen,
        get(&b, "counter").await.as_deref() == Some("50")
    );
    // Stop; write while stopped; resume from the durable position.
    let durable = src.durable.borrow().clone();
    src.stop().await;
    for _ in 0..50 {
        let _: () = redis::cmd("INCR")
            .arg("counter")
            .query_async(&mut c)
            .await
            .unwrap();
    }
    live_writes(&a, "while-stopped").await;
    let mut src = start_source(&a.url(), store(), durable);
    pump_until!(
        "partial resync",
        src,
        sink,
        seq,
        seen,
        get(&b, "counter").await.as_deref() == Some("101")
    );
    assert_eq!(src.stats.last_sync_kind(), SyncKind::Partial);
    assert_eq!(
        src.stats
            .full_resyncs
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    let d = compare(&a, &b).await;
    assert!(
        d.is_empty(),
        "after +CONTINUE: {} diffs, {:?}",
        d.len(),
        &d[..d.len().min(5)]
    );

    // A tiny backlog overflows while stopped: full resync, counted, converges.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("repl-backlog-size")
        .arg("16kb")
        .query_async(&mut c)
        .await
        .unwrap();
    let durable = src.durable.borrow().clone();
    src.stop().await;
    let big = "z".repeat(200);
    let mut p = redis::pipe();
    for i in 0..2000 {
        p.cmd("SET").arg(format!("late:{i}")).arg(&big).ignore();
        p.cmd("INCR").arg("counter").ignore();
    }
    let _: () = p.query_async(&mut c).await.unwrap();
    let before = dcsync_redis::FULL_RESYNCS.load(std::sync::atomic::Ordering::SeqCst);
    let mut src = start_source(&a.url(), store(), durable);
    pump_until!(
        "full resync",
        src,
        sink,
        seq,
        seen,
        get(&b, "counter").await.as_deref() == Some("2101")
    );
    assert_eq!(src.stats.last_sync_kind(), SyncKind::FullResync);
    assert_eq!(
        src.stats
            .full_resyncs
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert!(dcsync_redis::FULL_RESYNCS.load(std::sync::atomic::Ordering::SeqCst) > before);
    pump_until!(
        "full resync done",
        src,
        sink,
        seq,
        seen,
        compare(&a, &b).await.is_empty()
    );
    src.stop().await;
}

#[tokio::test]
async fn applying_twice_changes_once_and_rejections_are_reported() {
    let b = Redis::start().await;
    let mut sink = RedisSink::connect(&b.url(), &store()).await.unwrap();
    let batch = vec![tx(1, &[&["INCR", "n"]]), tx(2, &[&["INCR", "n"]])];
    assert_eq!(sink.apply("sh", &batch).await.unwrap(), 2);
    assert_eq!(sink.apply("sh", &batch).await.unwrap(), 2);
    let mut fresh = RedisSink::connect(&b.url(), &store()).await.unwrap();
    assert_eq!(fresh.applied_seq("sh").await.unwrap(), 2);
    assert_eq!(fresh.apply("sh", &batch).await.unwrap(), 2);
    assert_eq!(get(&b, "n").await.as_deref(), Some("2"));
    // A command the target rejects is an error naming the key.
    let bad = vec![tx(3, &[&["SET", "str", "x"], &["LPUSH", "str", "y"]])];
    let e = fresh.apply("sh", &bad).await.unwrap_err();
    assert!(
        e.to_string().contains("str") && e.to_string().contains("WRONGTYPE"),
        "{e}"
    );
    // A command the target does not know is named (origin, seq, command,
    // key) before anything of its group is sent.
    let bad = vec![
        tx(4, &[&["SET", "before", "1"]]),
        tx(
            5,
            &[&["SET", "same-block", "1"], &["NOSUCHCOMMAND", "k", "v"]],
        ),
    ];
    let e = fresh.apply("sh", &bad).await.unwrap_err();
    assert!(!e.is_transient(), "{e:?}");
    let m = e.to_string();
    for part in [
        "origin sh seq 5: NOSUCHCOMMAND key \"k\": unknown command",
        "does not know this command",
        "store \"cache\"",
        "skip = [\"unsupported_command\"]",
    ] {
        assert!(m.contains(part), "{part:?} missing from: {m}");
    }
    assert_eq!(fresh.applied_seq("sh").await.unwrap(), 3);
    assert_eq!(get(&b, "before").await, None);
    assert_eq!(get(&b, "same-block").await, None);
    // With skip = ["unsupported_command"] the command is left out and the
    // rest of its transaction applies.
    let mut o = dcsync_redis::RedisOptions::of(&store()).unwrap().clone();
    o.skip_unsupported_command = true;
    let mut skipping_store = store();
    skipping_store.set_options(o);
    let mut skipping = RedisSink::connect(&b.url(), &skipping_store).await.unwrap();
    assert_eq!(skipping.apply("sh", &bad).await.unwrap(), 5);
    assert_eq!(get(&b, "before").await.as_deref(), Some("1"));
    assert_eq!(get(&b, "same-block").await.as_deref(), Some("1"));
    assert_eq!(get(&b, "k").await, None);
}

#[tokio::test]
async fn redis_cluster_is_refused() {
    // The cluster bus binds its own port (default: port + 10000, which can
    // fall in the ephemeral range a client connection holds): name a free
    // one, or the server may fail to start.
    let r = Redis::start_with(vec![
        "--cluster-enabled".into(),
        "yes".into(),
        "--cluster-port".into(),
        dcsync_testkit::free_port().to_string(),
    ])
    .await;
    let src = start_source(&r.url(), store(), None);
    let res = tokio::time::timeout(DEADLINE, src.task)
        .await
        .expect("source ends")
        .expect("join");
    match res {
        Err(e) => {
            assert!(!e.is_transient());
            assert!(
                e.to_string().contains("Redis Cluster is not supported yet"),
                "{e}"
            );
        }
        Ok(()) => panic!("cluster accepted"),
    }
}

/// A `FLUSHALL` the store's `flush = "refuse"` keeps from shipping is
/// reported as skipped (counted in the status), not dropped silently.
#[tokio::test]
async fn refused_flush_is_reported_as_skipped() {
    let b = Redis::start().await;
    let mut src = start_source(&b.url(), store(), None);
    let start = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(1), src.events.recv()).await {
            Ok(Some(SourceEvent::Progress { .. })) => break,
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            _ => assert!(start.elapsed() < DEADLINE, "initial sync"),
        }
    }
    let mut c = b.conn().await;
    let _: () = redis::cmd("SET")
        .arg("a")
        .arg("1")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut skipped = Vec::new();
    let mut keys = Vec::new();
    let mut flushed = false;
    while keys.len() < 2 {
        // FLUSHALL only once the stream carries commands: during the
        // initial sync's RDB transfer it would kill the transfer.
        if !flushed && !keys.is_empty() {
            let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
            let _: () = redis::cmd("SET")
                .arg("b")
                .arg("2")
                .query_async(&mut c)
                .await
                .unwrap();
            flushed = true;
        }
        match tokio::time::timeout(DEADLINE, src.events.recv()).await {
            Ok(Some(SourceEvent::Skipped {
                what,
                count,
                detail,
                position,
            })) => {
                assert!(position.starts_with("redis "), "{position}");
                skipped.push((what, count, detail));
            }
            Ok(Some(SourceEvent::Local { changes, .. })) => {
                keys.extend(changes.iter().filter_map(|c| match &c.payload {
                    Payload::Redis(r) => r.args.get(1).cloned(),
                    _ => None,
                }))
            }
            Ok(Some(_)) => {}
            other => panic!("no event: {other:?}: {:?}", (&mut src.task).await),
        }
    }
    assert_eq!(keys, [b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(
        skipped,
        [(
            "flush",
            1,
            "FLUSHALL in db 0 (flush = \"refuse\")".to_string()
        )]
    );
    src.stop().await;
}
