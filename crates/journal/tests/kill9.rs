//! Crash test of the journal itself: a child process appends batches (each
//! with the source position it was "read up to") and acknowledges as fast as
//! it can; the parent kills it with SIGKILL at random moments, reopens the
//! journal and checks that nothing was lost, duplicated or torn:
//! - the stored position always equals the last seq (changes and position
//!   commit together),
//! - seqs are dense above the acknowledged cursor, and every entry decodes to
//!   the transaction written for that seq.
//!
//! This is the evidence for choosing redb (docs/journal.md).
//!
//! The child is this test binary again, running the same single test with
//! `DCSYNC_JOURNAL_KILL9_DIR` set: in that mode the test is the writer and
//! never returns. There is no separate "child" test that would report
//! success without asserting anything.
#![allow(clippy::unwrap_used)]

use dcsync_core::connector::Position;
use dcsync_core::{Change, Hlc, Payload, RedisCommand, Transaction};
use dcsync_journal::Journal;
use rand::Rng;
use std::process::{Command, Stdio};
use std::time::Duration;

const CHILD_ENV: &str = "DCSYNC_JOURNAL_KILL9_DIR";

fn tx(n: u64) -> Transaction {
    Transaction {
        origin: "bj".into(),
        store: "s".into(),
        seq: 0,
        hlc: Hlc(n),
        position: format!("p{n}"),
        commit_ts_ms: n,
        changes: vec![Change {
            unit: None,
            payload: Payload::Redis(RedisCommand {
                db: 0,
                args: vec![vec![b'x'; (n % 700) as usize]],
            }),
        }],
        part: 0,
        more: false,
        epoch: 0,
    }
}

/// The child process: appends and acknowledges until it is killed. It runs
/// inside this same test binary, in the one test below, when the parent set
/// [`CHILD_ENV`]; it never returns, so it can never report a result.
fn child_writer(dir: &str) -> ! {
    let j = Journal::open(std::path::Path::new(dir), "bj", &["sh".into()]).unwrap();
    let mut rng = rand::rng();
    loop {
        let last = j.last_seq("bj", "s").unwrap();
        let n = rng.random_range(1..20u64);
        let mut v: Vec<_> = (last + 1..=last + n).map(tx).collect();
        let pos = Position {
            bytes: (last + n).to_le_bytes().to_vec(),
            display: String::new(),
        };
        j.append("s", &mut v, Some(&pos)).unwrap();
        if rng.random_bool(0.3) {
            let acked = j.cursor("sh", "bj", "s").unwrap();
            j.ack(
                "sh",
                "bj",
                "s",
                acked + rng.random_range(0..=(last + n - acked)),
            )
            .unwrap();
        }
    }
}

#[test]
fn kill9_never_loses_or_duplicates() {
    // In the child process (started below), this test is the writer.
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child_writer(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    let mut last_seen = 0;
    for round in 0..12 {
        let mut child = Command::new(&exe)
            .args(["--exact", "kill9_never_loses_or_duplicates", "--nocapture"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(150..600)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let j = Journal::open(dir.path(), "bj", &["sh".into()]).unwrap();
        let last = j.last_seq("bj", "s").unwrap();
        let pos = j.position("s").unwrap();
        let pos_n = pos
            .map(|p| u64::from_le_bytes(p.bytes.try_into().unwrap()))
            .unwrap_or(0);
        assert_eq!(pos_n, last, "round {round}: position and changes diverged");
        assert!(last >= last_seen, "round {round}: journal went backwards");
        let acked = j.cursor("sh", "bj", "s").unwrap();
        let all = j.read("bj", "s", 0, usize::MAX, usize::MAX).unwrap();
        let seqs: Vec<u64> = all.iter().map(|t| t.seq).collect();
        assert_eq!(
            seqs,
            (acked + 1..=last).collect::<Vec<_>>(),
            "round {round}: seqs not dense"
        );
        for t in &all {
            assert_eq!(
                t,
                &Transaction {
                    seq: t.seq,
                    epoch: j.epoch(),
                    ..tx(t.seq)
                },
                "round {round}: torn entry"
            );
        }
        last_seen = last;
    }
    assert!(last_seen > 0, "the child never wrote anything");
}
