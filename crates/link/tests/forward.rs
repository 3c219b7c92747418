//! The sender forwards journal records as they are stored (protocol 4 and
//! up, envelope version 4) and falls back to decoding and re-encoding for
//! records of an older envelope version. A journal of format 3
//! (`crates/journal/tests/fixtures/v3`, envelope version 3 records,
//! including a transaction split in two parts) continued by records of the
//! current version is sent in small batches that mix both kinds: the
//! receiver gets every transaction exactly as `Journal::read` decodes it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use dcsync_core::connector::AppliedMark;
use dcsync_core::topology::LinkSettings;
use dcsync_core::{Change, Hlc, Payload, RedisCommand, Transaction};
use dcsync_journal::Journal;
use dcsync_link::{Applier, ApplyError, BoxFuture};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

mod common;

fn tx(n: u64, more: bool, part: u32) -> Transaction {
    Transaction {
        origin: "bj".into(),
        store: "orders".into(),
        seq: 0,
        hlc: Hlc::new(1_900_000_000_000 + n, 0),
        position: format!("mysql-bin.000003:{n}"),
        commit_ts_ms: 1_900_000_000_000 + n,
        changes: vec![Change {
            unit: Some(n as u32 % 3),
            payload: Payload::Redis(RedisCommand {
                db: 0,
                args: vec![b"SET".to_vec(), n.to_string().into_bytes()],
            }),
        }],
        part,
        more,
        epoch: 0,
    }
}

/// Records every transaction it is given; the stream's marker is seq 1
/// (what sh acknowledged in the fixture).
#[derive(Default)]
struct Recorder {
    got: Mutex<Vec<Transaction>>,
}

impl Applier for Recorder {
    fn applied<'a>(
        &'a self,
        _o: &'a str,
        store: &'a str,
    ) -> BoxFuture<'a, Result<AppliedMark, ApplyError>> {
        Box::pin(async move {
            Ok(AppliedMark {
                seq: u64::from(store == "orders"),
                ..AppliedMark::default()
            })
        })
    }
    fn apply<'a>(
        &'a self,
        _o: &'a str,
        _store: &'a str,
        txs: Vec<Transaction>,
    ) -> BoxFuture<'a, Result<u64, ApplyError>> {
        Box::pin(async move {
            let mut got = self.got.lock().unwrap();
            let mut last = 0;
            for t in txs {
                if t.more {
                    // A split transaction commits with its last part.
                    got.push(t);
                    continue;
                }
                last = t.seq;
                got.push(t);
            }
            Ok(last)
        })
    }
}

#[tokio::test]
async fn stored_records_of_old_and_current_versions_arrive_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../journal/tests/fixtures/v3/journal.redb");
    std::fs::copy(src, dir.path().join("journal.redb")).unwrap();
    let journal = Arc::new(Journal::open(dir.path(), "bj", &["sh".into(), "gz".into()]).unwrap());
    journal.settle("orders", &[0]).unwrap();
    // seqs 6-12 in the current envelope version, 9-10 one split transaction.
    let mut more: Vec<Transaction> = (6..=12)
        .map(|n| match n {
            9 => tx(n, true, 0),
            10 => tx(n, false, 1),
            _ => tx(n, false, 0),
        })
        .collect();
    assert_eq!(
        journal.append("orders", &mut more, None).unwrap(),
        Some((6, 12))
    );
    // What sh has not acknowledged (through 1), decoded by the journal.
    let want = journal.read("bj", "orders", 1, 100, usize::MAX).unwrap();
    assert_eq!(
        want.iter().map(|t| t.seq).collect::<Vec<_>>(),
        (2..=12).collect::<Vec<_>>()
    );

    let settings = LinkSettings {
        // Batches 2-4 and 5-7 hold version-3 records (decoded and
        // re-encoded), 8-10 and 11-12 only current ones (forwarded), and
        // 5-7 and 8-10 both start or end inside a split transaction.
        batch_max_txns: 3,
        ..common::settings()
    };
    let applier = Arc::new(Recorder::default());
    let (stop, stop_rx) = watch::channel(false);
    let addr = common::receiver(
        applier.clone(),
        &["orders"],
        settings.clone(),
        stop_rx.clone(),
    )
    .await;
    let (stats, task) = common::sender(journal.clone(), addr, &["orders"], settings, stop_rx);
    let deadline = Instant::now() + Duration::from_secs(20);
    while journal.cursor("sh", "bj", "orders").unwrap() < 12 {
        assert!(
            Instant::now() < deadline,
            "not delivered; link: {:?}",
            stats.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = applier.got.lock().unwrap().clone();
    assert_eq!(got, want);
    assert_eq!(stats.lock().unwrap().connects, 1);
    let _ = stop.send(true);
    let _ = task.await;
}
