//! Resume points of protocol 2: a store whose apply marker the receiver
//! cannot read at connect time is left out of the Welcome; the sender
//! resumes that stream from its own cursor (not from seq 1, which its
//! journal no longer holds), and the other stream is not held back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use dcsync_core::connector::AppliedMark;
use dcsync_core::{Change, Hlc, Payload, RedisCommand, Transaction};
use dcsync_journal::Journal;
use dcsync_link::{Applier, ApplyError, BoxFuture};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

mod common;

fn tx(store: &str, n: u64) -> Transaction {
    Transaction {
        origin: "bj".into(),
        store: store.into(),
        seq: 0,
        hlc: Hlc::new(1_000 + n, 0),
        position: String::new(),
        commit_ts_ms: 0,
        changes: vec![Change {
            unit: None,
            payload: Payload::Redis(RedisCommand {
                db: 0,
                args: vec![b"SET".to_vec(), n.to_string().into_bytes()],
            }),
        }],
        part: 0,
        more: false,
        epoch: 0,
    }
}

/// A receiving side whose `orders` marker cannot be read the first time
/// (its store is not ready), that has applied `orders` through 3, and that
/// records every transaction it applies.
#[derive(Default)]
struct NotReadyOnce {
    orders_reads: AtomicU32,
    /// What the `orders` marker says once readable (3 unless set).
    orders_marker: Option<u64>,
    applied: Mutex<Vec<(String, u64)>>,
}

impl Applier for NotReadyOnce {
    fn applied<'a>(
        &'a self,
        _o: &'a str,
        store: &'a str,
    ) -> BoxFuture<'a, Result<AppliedMark, ApplyError>> {
        Box::pin(async move {
            if store != "orders" {
                return Ok(AppliedMark::default());
            }
            if self.orders_reads.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(ApplyError::Transient(
                    "store orders: connection refused".into(),
                ));
            }
            Ok(AppliedMark {
                seq: self.orders_marker.unwrap_or(3),
                ..AppliedMark::default()
            })
        })
    }
    fn apply<'a>(
        &'a self,
        _o: &'a str,
        store: &'a str,
        txs: Vec<Transaction>,
    ) -> BoxFuture<'a, Result<u64, ApplyError>> {
        Box::pin(async move {
            let mut v = self.applied.lock().unwrap();
            for t in &txs {
                if store == "orders" && t.seq <= 3 {
                    continue; // the marker skips it
                }
                v.push((store.to_string(), t.seq));
            }
            Ok(txs.last().map(|t| t.seq).unwrap_or(0))
        })
    }
}

struct Rig {
    journal: Arc<Journal>,
    applier: Arc<NotReadyOnce>,
    stats: dcsync_link::SharedStats,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// bj's journal holds orders and cache 1-5, sh acknowledged orders 1-3
/// (removed from the journal); a receiver with `applier` and a sender run.
async fn rig(applier: NotReadyOnce) -> Rig {
    let settings = common::settings();
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(Journal::open(dir.path(), "bj", &["sh".into()]).unwrap());
    // Settled as after a first start (the peers' markers name no journal).
    for store in ["orders", "cache", "shop"] {
        journal.settle(store, &[0]).unwrap();
    }
    journal
        .append(
            "orders",
            &mut (1..=5).map(|n| tx("orders", n)).collect::<Vec<_>>(),
            None,
        )
        .unwrap();
    journal
        .append(
            "cache",
            &mut (1..=5).map(|n| tx("cache", n)).collect::<Vec<_>>(),
            None,
        )
        .unwrap();
    journal.ack("sh", "bj", "orders", 3).unwrap();
    assert_eq!(
        journal.read("bj", "orders", 0, 10, usize::MAX).unwrap()[0].seq,
        4
    );
    let applier = Arc::new(applier);
    let (stop, stop_rx) = watch::channel(false);
    let stores = ["orders", "cache"];
    let addr = common::receiver(applier.clone(), &stores, settings.clone(), stop_rx.clone()).await;
    let (stats, task) = common::sender(journal.clone(), addr, &stores, settings, stop_rx);
    Rig {
        journal,
        applier,
        stats,
        stop,
        task,
        _dir: dir,
    }
}

#[tokio::test]
async fn a_stream_missing_from_the_welcome_resumes_from_the_cursor() {
    let r = rig(NotReadyOnce::default()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while r.journal.cursor("sh", "bj", "orders").unwrap() < 5
        || r.journal.cursor("sh", "bj", "cache").unwrap() < 5
    {
        assert!(
            Instant::now() < deadline,
            "not delivered; link: {:?}",
            r.stats.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut got = r.applier.applied.lock().unwrap().clone();
    got.sort();
    let want: Vec<(String, u64)> = (1..=5)
        .map(|n| ("cache".to_string(), n))
        .chain((4..=5).map(|n| ("orders".to_string(), n)))
        .collect();
    assert_eq!(got, want);
    // One session did it: the missing stream did not fail the link.
    assert_eq!(r.stats.lock().unwrap().connects, 1);
    let _ = r.stop.send(true);
    let _ = r.task.await;
}

/// The store's marker went back (reset, restored backup): applying bj's
/// seq 4 after a marker of 1 would skip 2 and 3. The stream pauses with a
/// reason naming it, nothing is applied out of order, and the other store
/// still flows.
#[tokio::test]
async fn a_marker_behind_the_senders_cursor_pauses_the_stream_loudly() {
    let r = rig(NotReadyOnce {
        orders_marker: Some(1),
        ..Default::default()
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let failing = r.stats.lock().unwrap().failing.clone();
        let cache_done = r.journal.cursor("sh", "bj", "cache").unwrap() == 5;
        if cache_done
            && failing.iter().any(|f| {
                f.store == "orders" && f.definite && f.reason.contains("marker") && f.attempts >= 2
            })
        {
            break;
        }
        assert!(Instant::now() < deadline, "no loud pause: {failing:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(r
        .applier
        .applied
        .lock()
        .unwrap()
        .iter()
        .all(|(s, _)| s == "cache"));
    assert_eq!(r.journal.cursor("sh", "bj", "orders").unwrap(), 3);
    let _ = r.stop.send(true);
    let _ = r.task.await;
}
