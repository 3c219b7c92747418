//! A journal written by the format-1 release (`fixtures/v1/journal.redb`,
//! see `fixtures/README.md`) opens with the current agent: it is migrated to
//! the origin-keyed format and nothing is lost or renumbered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use dcsync_core::{Payload, RowKind, Value};
use dcsync_journal::{Journal, FORMAT_VERSION};

fn copy_fixture() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let src =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1/journal.redb");
    std::fs::copy(src, d.path().join("journal.redb")).unwrap();
    d
}

#[test]
fn format_one_journal_is_migrated_without_loss() {
    let d = copy_fixture();
    let peers = vec!["sh".to_string(), "gz".to_string()];
    assert_eq!(FORMAT_VERSION, 4);
    for reopen in 0..2 {
        let j = Journal::open(d.path(), "bj", &peers).unwrap();
        // orders: seqs 1-3 journaled; sh acked 1, gz acked 2 → entry 1 removed.
        assert_eq!(j.last_seq("bj", "orders").unwrap(), 3, "reopen {reopen}");
        let rows = j.read("bj", "orders", 0, 100, usize::MAX).unwrap();
        assert_eq!(rows.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![2, 3]);
        let t3 = &rows[1];
        assert_eq!(t3.origin, "bj");
        assert_eq!(t3.epoch, 0, "entries before epochs name none");
        assert!(
            j.settled("orders").unwrap() && j.continues("orders", 0).unwrap(),
            "a migrated journal continues the markers written before epochs"
        );
        assert_eq!(t3.position, "mysql-bin.000001:1003");
        assert_eq!(t3.commit_ts_ms, 1_700_000_000_003);
        assert_eq!(t3.hlc, dcsync_core::Hlc::new(1_700_000_000_003, 3));
        let Payload::Row(r) = &t3.changes[0].payload else {
            panic!("row expected")
        };
        assert_eq!(
            (r.table.schema.as_str(), r.table.name.as_str(), r.kind),
            ("shop", "items", RowKind::Insert)
        );
        assert_eq!(
            r.after.as_ref().unwrap()[1],
            Value::Bytes(b"note-3".to_vec())
        );
        assert_eq!(
            r.after.as_ref().unwrap()[2],
            Value::Date(2024, 1, 2, 3, 4, 5, 6)
        );
        assert!(r.table.columns[0].primary_key);
        assert_eq!(rows[0].changes[0].unit, Some(2));
        // cache: both entries acked by sh, gz never acked → kept for gz.
        let cache = j.read("bj", "cache", 0, 100, usize::MAX).unwrap();
        assert_eq!(cache.len(), 2);
        let Payload::Redis(c) = &cache[1].changes[0].payload else {
            panic!("redis expected")
        };
        assert_eq!(c.args, vec![b"SET".to_vec(), b"k2".to_vec(), b"v".to_vec()]);
        // Cursors, positions, HLC floor and backlog bytes survive.
        assert_eq!(j.cursor("sh", "bj", "orders").unwrap(), 1);
        assert_eq!(j.cursor("gz", "bj", "orders").unwrap(), 2);
        assert_eq!(j.cursor("sh", "bj", "cache").unwrap(), 2);
        assert_eq!(
            j.position("orders").unwrap().unwrap().display,
            "mysql-bin.000001:1003"
        );
        assert_eq!(
            j.position("cache").unwrap().unwrap().bytes,
            b"redis-pos-v1".to_vec()
        );
        assert_eq!(
            j.hlc_floor().unwrap(),
            dcsync_core::Hlc::new(1_700_000_001_002, 0)
        );
        let b = j.backlog("sh", "bj", "orders").unwrap();
        assert_eq!((b.acked, b.last, b.txns), (1, 3, 2));
        assert!(b.bytes > 0);
        // New local appends continue the old numbering.
        if reopen == 1 {
            let mut more = vec![rows[0].clone()];
            assert_eq!(j.append("orders", &mut more, None).unwrap(), Some((4, 4)));
        }
    }
}

#[test]
fn format_one_journal_opened_as_another_dc_is_refused() {
    let d = copy_fixture();
    let e = Journal::open(d.path(), "sh", &["bj".to_string()])
        .err()
        .expect("must refuse");
    assert!(e.to_string().contains("another DC"), "{e}");
}

/// Format 2, as the release before transactions in parts wrote it
/// (`crates/link/examples/capture_fixtures.rs`): a local stream and a
/// relayed one, envelope version 2 records. It opens as format 3 and new
/// appends continue it.
#[test]
fn format_two_journal_reads_back() {
    let d = tempfile::tempdir().unwrap();
    let src =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2/journal.redb");
    std::fs::copy(src, d.path().join("journal.redb")).unwrap();
    let j = Journal::open(d.path(), "bj", &["sh".to_string(), "gz".to_string()]).unwrap();
    assert_eq!(
        j.streams().unwrap(),
        vec![
            ("bj".to_string(), "orders".to_string()),
            ("gz".to_string(), "orders".to_string())
        ]
    );
    // bj/orders 1-3, acked by sh through 1 and gz through 2: 2 and 3 kept.
    let local = j.read("bj", "orders", 0, 10, usize::MAX).unwrap();
    assert_eq!(local.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(local[1].hlc, dcsync_core::Hlc::new(1_800_000_000_003, 3));
    let Payload::Row(r) = &local[1].changes[0].payload else {
        panic!("row expected")
    };
    assert_eq!(r.after.as_ref().unwrap()[1], Value::Bytes(b"3.50".to_vec()));
    // gz/orders 1-2 relayed with their origin seqs; only sh receives them
    // (acked through 1).
    let relayed = j.read("gz", "orders", 0, 10, usize::MAX).unwrap();
    assert_eq!(
        relayed
            .iter()
            .map(|t| (t.origin.as_str(), t.seq))
            .collect::<Vec<_>>(),
        vec![("gz", 2)]
    );
    assert_eq!(j.cursor("sh", "gz", "orders").unwrap(), 1);
    assert_eq!(
        j.position("orders").unwrap().unwrap().display,
        "mysql-bin.000002:2003"
    );
    assert_eq!(j.last_seq("gz", "orders").unwrap(), 2);
    let mut next = vec![local[0].clone()];
    assert_eq!(j.append("orders", &mut next, None).unwrap(), Some((4, 4)));
    let back = j.read("bj", "orders", 3, 10, usize::MAX).unwrap();
    assert_eq!(back[0].changes, local[0].changes);
}

/// Format 3, as this release wrote it (`crates/link/examples/capture_fixtures.rs`):
/// a local stream ending with a transaction split in two parts (seqs 4-5)
/// and a relayed stream. A later format must keep this test passing.
#[test]
fn format_three_journal_reads_back() {
    let d = tempfile::tempdir().unwrap();
    let src =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v3/journal.redb");
    std::fs::copy(src, d.path().join("journal.redb")).unwrap();
    let j = Journal::open(d.path(), "bj", &["sh".to_string(), "gz".to_string()]).unwrap();
    assert_eq!(j.last_seq("bj", "orders").unwrap(), 5);
    let local = j.read("bj", "orders", 0, 10, usize::MAX).unwrap();
    assert_eq!(
        local
            .iter()
            .map(|t| (t.seq, t.part, t.more))
            .collect::<Vec<_>>(),
        vec![(2, 0, false), (3, 0, false), (4, 0, true), (5, 1, false)]
    );
    let Payload::Row(r) = &local[3].changes[0].payload else {
        panic!("row expected")
    };
    assert_eq!(r.table.name, "items");
    assert_eq!(r.after.as_ref().unwrap()[1], Value::Bytes(b"5.50".to_vec()));
    assert_eq!(
        j.position("orders").unwrap().unwrap().display,
        "mysql-bin.000002:2005"
    );
    assert_eq!(j.last_seq("gz", "orders").unwrap(), 2);
}
