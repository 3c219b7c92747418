use super::*;
use dcsync_core::conflict::Version;
use dcsync_core::envelope::encode_tx;
use dcsync_core::{Change, Payload, RedisCommand};

fn tx(n: u64) -> Transaction {
    Transaction {
        origin: "bj".into(),
        store: "s".into(),
        seq: 0,
        hlc: Hlc(n),
        position: format!("p{n}"),
        commit_ts_ms: 0,
        changes: vec![Change {
            unit: Some(1),
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

fn pos(n: u64) -> Position {
    Position {
        bytes: n.to_le_bytes().to_vec(),
        display: n.to_string(),
    }
}

/// A version `(HLC h, DC dc)`.
fn v(h: u64, dc: &str) -> Version {
    Version {
        hlc: Hlc(h),
        dc: dc.into(),
    }
}

#[test]
fn append_assigns_dense_seqs_and_position() {
    let d = tempfile::tempdir().unwrap();
    let j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap();
    let mut a = vec![tx(1), tx(2)];
    assert_eq!(j.append("s", &mut a, Some(&pos(2))).unwrap(), Some((1, 2)));
    let mut b = vec![tx(3)];
    assert_eq!(j.append("s", &mut b, Some(&pos(3))).unwrap(), Some((3, 3)));
    assert_eq!(j.append("other", &mut [tx(9)], None).unwrap(), Some((1, 1)));
    assert_eq!(j.last_seq("bj", "s").unwrap(), 3);
    assert_eq!(j.position("s").unwrap(), Some(pos(3)));
    let got = j.read("bj", "s", 0, 100, usize::MAX).unwrap();
    assert_eq!(got.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(got[2].position, "p3");
    assert_eq!(j.hlc_floor().unwrap(), Hlc(9));
}

#[test]
fn progress_only_moves_position() {
    let d = tempfile::tempdir().unwrap();
    let j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap();
    assert_eq!(j.append("s", &mut [], Some(&pos(7))).unwrap(), None);
    assert_eq!(j.position("s").unwrap(), Some(pos(7)));
    assert_eq!(j.last_seq("bj", "s").unwrap(), 0);
}

#[test]
fn read_respects_limits() {
    let d = tempfile::tempdir().unwrap();
    let j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap();
    let mut v: Vec<_> = (1..=10).map(tx).collect();
    j.append("s", &mut v, None).unwrap();
    assert_eq!(j.read("bj", "s", 3, 4, usize::MAX).unwrap().len(), 4);
    assert_eq!(j.read("bj", "s", 3, 100, 1).unwrap().len(), 1);
    assert_eq!(j.read("bj", "s", 10, 100, usize::MAX).unwrap().len(), 0);
}

#[test]
fn entries_removed_only_when_every_peer_acked() {
    let d = tempfile::tempdir().unwrap();
    let j = Journal::open(d.path(), "bj", &["sh".into(), "gz".into()]).unwrap();
    let mut v: Vec<_> = (1..=10).map(tx).collect();
    j.append("s", &mut v, None).unwrap();
    j.ack("sh", "bj", "s", 8).unwrap();
    assert_eq!(
        j.read("bj", "s", 0, 100, usize::MAX).unwrap().len(),
        10,
        "gz has not acked"
    );
    j.ack("gz", "bj", "s", 5).unwrap();
    let left = j.read("bj", "s", 0, 100, usize::MAX).unwrap();
    assert_eq!(left.first().map(|t| t.seq), Some(6));
    assert_eq!(j.backlog("gz", "bj", "s").unwrap().txns, 5);
    assert_eq!(j.backlog("gz", "bj", "s").unwrap().oldest, Some(Hlc(6)));
    assert_eq!(j.backlog("sh", "bj", "s").unwrap().txns, 2);
    let per_tx = encode_tx(&Transaction {
        seq: 1,
        epoch: j.epoch(),
        ..tx(1)
    })
    .unwrap()
    .len() as u64;
    let gz = j.backlog("gz", "bj", "s").unwrap();
    assert!(
        gz.bytes >= 5 * per_tx - 5 && gz.bytes <= 5 * per_tx + 5,
        "{gz:?} vs {per_tx}"
    );
    let sh = j.backlog("sh", "bj", "s").unwrap();
    assert!(
        sh.bytes >= 2 * per_tx - 2 && sh.bytes <= 2 * per_tx + 2,
        "{sh:?}"
    );
    j.ack("gz", "bj", "s", 10).unwrap();
    j.ack("sh", "bj", "s", 10).unwrap();
    assert_eq!(j.backlog("gz", "bj", "s").unwrap().bytes, 0);
    // cursors never move back
    j.ack("sh", "bj", "s", 2).unwrap();
    assert_eq!(j.cursor("sh", "bj", "s").unwrap(), 10);
}

#[test]
fn reopen_keeps_everything() {
    let d = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap();
        j.append("s", &mut [tx(1), tx(2)], Some(&pos(2))).unwrap();
        j.ack("sh", "bj", "s", 1).unwrap();
    }
    let j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap();
    assert_eq!(j.last_seq("bj", "s").unwrap(), 2);
    assert_eq!(j.position("s").unwrap(), Some(pos(2)));
    assert_eq!(j.read("bj", "s", 0, 10, usize::MAX).unwrap().len(), 1);
}

proptest::proptest! {
    /// Model test: any interleaving of appends and acks keeps seqs dense and
    /// keeps exactly the entries above the minimum cursor.
    #[test]
    fn model(ops in proptest::collection::vec((0u8..3, 1usize..5), 1..40)) {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(d.path(), "bj", &["a".into(), "b".into()]).unwrap();
        let (mut last, mut ca, mut cb) = (0u64, 0u64, 0u64);
        for (op, n) in ops {
            match op {
                0 => {
                    let mut v: Vec<_> = (0..n as u64).map(tx).collect();
                    j.append("s", &mut v, None).unwrap();
                    last += n as u64;
                }
                1 => { ca = (ca + n as u64).min(last); j.ack("a", "bj", "s", ca).unwrap(); }
                _ => { cb = (cb + n as u64).min(last); j.ack("b", "bj", "s", cb).unwrap(); }
            }
            let kept: Vec<u64> = j.read("bj", "s", 0, usize::MAX, usize::MAX).unwrap().iter().map(|t| t.seq).collect();
            let expect: Vec<u64> = (ca.min(cb) + 1..=last).collect();
            proptest::prop_assert_eq!(kept, expect);
        }
    }
}

fn remote(origin: &str, seq: u64) -> Transaction {
    Transaction {
        origin: origin.into(),
        seq,
        ..tx(seq)
    }
}

#[test]
fn relayed_changes_keep_their_origin_seq_and_are_idempotent() {
    let d = tempfile::tempdir().unwrap();
    let j = Journal::open(d.path(), "hub", &["bj".into(), "sh".into(), "gz".into()]).unwrap();
    // A local append next to it numbers only the local stream.
    assert_eq!(j.append("s", &mut [tx(1)], None).unwrap(), Some((1, 1)));
    assert_eq!(
        j.append_relayed(&[remote("bj", 1), remote("bj", 2)])
            .unwrap(),
        2
    );
    // A retransmission overlapping the head is skipped, the rest appended.
    assert_eq!(
        j.append_relayed(&[remote("bj", 2), remote("bj", 3)])
            .unwrap(),
        3
    );
    let got = j.read("bj", "s", 0, 10, usize::MAX).unwrap();
    assert_eq!(
        got.iter()
            .map(|t| (t.origin.as_str(), t.seq))
            .collect::<Vec<_>>(),
        vec![("bj", 1), ("bj", 2), ("bj", 3)]
    );
    assert_eq!(j.last_seq("hub", "s").unwrap(), 1);
    // A gap is refused and writes nothing.
    assert!(matches!(
        j.append_relayed(&[remote("bj", 5)]),
        Err(JournalError::Gap { head: 3, .. })
    ));
    assert_eq!(j.last_seq("bj", "s").unwrap(), 3);
    assert_eq!(
        j.streams().unwrap(),
        vec![
            ("bj".to_string(), "s".to_string()),
            ("hub".to_string(), "s".to_string())
        ]
    );
    // bj's own changes are never sent back to bj: sh and gz decide removal.
    j.ack("sh", "bj", "s", 3).unwrap();
    assert_eq!(j.read("bj", "s", 0, 10, usize::MAX).unwrap().len(), 3);
    j.ack("gz", "bj", "s", 2).unwrap();
    assert_eq!(j.read("bj", "s", 0, 10, usize::MAX).unwrap().len(), 1);
    // Cursors are per origin: the local stream is untouched.
    assert_eq!(j.cursor("sh", "hub", "s").unwrap(), 0);
    assert_eq!(j.read("hub", "s", 0, 10, usize::MAX).unwrap().len(), 1);
}

#[test]
fn local_append_stamps_this_dc_as_origin() {
    let d = tempfile::tempdir().unwrap();
    let j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap();
    let mut v = vec![Transaction {
        origin: String::new(),
        ..tx(4)
    }];
    j.append("s", &mut v, None).unwrap();
    assert_eq!(v[0].origin, "bj");
    assert_eq!(j.head("bj", "s").unwrap(), (1, Hlc(4)));
}

#[test]
fn a_journal_of_another_dc_is_refused() {
    let d = tempfile::tempdir().unwrap();
    drop(Journal::open(d.path(), "bj", &["sh".into()]).unwrap());
    let e = Journal::open(d.path(), "sh", &["bj".into()]).err().unwrap();
    assert!(matches!(e, JournalError::OtherDc { .. }), "{e}");
    assert!(e.to_string().contains("belongs to dc \"bj\""), "{e}");
}

#[test]
fn a_journal_of_a_newer_format_is_refused_untouched() {
    let d = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap();
        let w = j.db.begin_write().unwrap();
        w.open_table(META)
            .unwrap()
            .insert("format", FORMAT_VERSION + 1)
            .unwrap();
        w.commit().unwrap();
    }
    let e = Journal::open(d.path(), "bj", &["sh".into()]).err().unwrap();
    assert!(
        matches!(e, JournalError::NewerFormat { found: 5, .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains("newer than this agent's format 4"),
        "{e}"
    );
}

/// Part `part` of a split transaction (`more` unless it is the last).
fn part(n: u64, part: u32, more: bool) -> Transaction {
    Transaction {
        part,
        more,
        ..tx(n)
    }
}

#[test]
fn parts_are_visible_only_once_their_transaction_is_complete() {
    let d = tempfile::tempdir().unwrap();
    let j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap();
    j.append("s", &mut [tx(1)], Some(&pos(1))).unwrap();
    let before = j.backlog("sh", "bj", "s").unwrap().bytes;
    // Two parts written, in two commits, the position unchanged.
    assert_eq!(
        j.append("s", &mut [part(2, 0, true)], None).unwrap(),
        Some((2, 2))
    );
    assert_eq!(
        j.append("s", &mut [part(3, 1, true)], None).unwrap(),
        Some((3, 3))
    );
    assert_eq!(j.last_seq("bj", "s").unwrap(), 1);
    assert_eq!(j.read("bj", "s", 1, 10, usize::MAX).unwrap(), vec![]);
    assert_eq!(j.backlog("sh", "bj", "s").unwrap().txns, 1);
    // The last part and a whole transaction after it, in one commit.
    assert_eq!(
        j.append("s", &mut [part(4, 2, false), tx(5)], Some(&pos(5)))
            .unwrap(),
        Some((4, 5))
    );
    assert_eq!(j.last_seq("bj", "s").unwrap(), 5);
    let got = j.read("bj", "s", 1, 10, usize::MAX).unwrap();
    assert_eq!(
        got.iter()
            .map(|t| (t.seq, t.part, t.more))
            .collect::<Vec<_>>(),
        vec![(2, 0, true), (3, 1, true), (4, 2, false), (5, 0, false)]
    );
    assert!(j.backlog("sh", "bj", "s").unwrap().bytes > before);
}

#[test]
fn parts_of_a_transaction_never_closed_are_discarded() {
    let d = tempfile::tempdir().unwrap();
    let peers = ["sh".to_string()];
    {
        let j = Journal::open(d.path(), "bj", &peers).unwrap();
        j.append("s", &mut [tx(1)], Some(&pos(1))).unwrap();
        let bytes = j.backlog("sh", "bj", "s").unwrap().bytes;
        j.append("s", &mut [part(2, 0, true), part(3, 1, true)], None)
            .unwrap();
        // The source restarts: the parts go, the byte total is the head's.
        assert_eq!(j.discard_open("s").unwrap(), 2);
        assert_eq!(j.discard_open("s").unwrap(), 0);
        assert_eq!(j.backlog("sh", "bj", "s").unwrap().bytes, bytes);
        // Read again: the same seqs are assigned to the new parts.
        assert_eq!(
            j.append("s", &mut [part(2, 0, true)], None).unwrap(),
            Some((2, 2))
        );
    }
    // kill -9 with a part written: opening the journal discards it.
    let j = Journal::open(d.path(), "bj", &peers).unwrap();
    assert_eq!(j.discard_open("s").unwrap(), 0);
    assert_eq!(
        j.append(
            "s",
            &mut [part(2, 0, true), part(3, 1, false)],
            Some(&pos(3))
        )
        .unwrap(),
        Some((2, 3))
    );
    assert_eq!(j.read("bj", "s", 0, 10, usize::MAX).unwrap().len(), 3);
    assert_eq!(j.position("s").unwrap(), Some(pos(3)));
}

#[test]
fn the_version_index_keeps_the_greater_version_across_reopen() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (b"k1".to_vec(), b"k2".to_vec());
    {
        let j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap();
        assert_eq!(
            j.versions("s", std::slice::from_ref(&a)).unwrap(),
            vec![None]
        );
        // Local writes are recorded with the append, as this DC's.
        j.append_versioned(
            "s",
            &mut [tx(1)],
            Some(&pos(1)),
            &[(a.clone(), Hlc(10))],
            Hlc(0),
            false,
        )
        .unwrap();
        // A smaller version does not overwrite; a greater or equal one does.
        j.record_versions("s", &[(a.clone(), v(9, "sh")), (b.clone(), v(3, "sh"))])
            .unwrap();
        assert_eq!(
            j.versions("s", &[a.clone(), b.clone()]).unwrap(),
            vec![Some(v(10, "bj")), Some(v(3, "sh"))]
        );
        j.record_versions("s", &[(a.clone(), v(10, "sh"))]).unwrap();
        // Stores have separate indexes.
        assert_eq!(
            j.versions("other", std::slice::from_ref(&a)).unwrap(),
            vec![None]
        );
    }
    let j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap();
    assert_eq!(
        j.versions("s", &[a, b]).unwrap(),
        vec![Some(v(10, "sh")), Some(v(3, "sh"))]
    );
}

#[test]
fn a_new_journal_has_an_epoch_and_its_streams_wait_to_be_settled() {
    let d = tempfile::tempdir().unwrap();
    let j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap();
    let epoch = j.epoch();
    assert_ne!(epoch, 0);
    assert!(
        !j.settled("s").unwrap(),
        "a new journal's stream is unsettled"
    );
    assert!(!j.continues("s", 0).unwrap());
    assert!(!j.continues("s", 7).unwrap());
    assert!(j.continues("s", epoch).unwrap());
    let mut v: Vec<_> = (1..=3).map(tx).collect();
    j.append("s", &mut v, None).unwrap();
    assert!(
        v.iter().all(|t| t.epoch == epoch),
        "entries carry the epoch"
    );
    let read = j.read("bj", "s", 0, 10, usize::MAX).unwrap();
    assert!(read.iter().all(|t| t.epoch == epoch), "and keep it on disk");
    j.settle("s", &[]).unwrap();
    assert!(j.settled("s").unwrap());
    assert!(!j.continues("s", 7).unwrap(), "no ancestor was named");
    drop(j);
    let j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap();
    assert_eq!(j.epoch(), epoch, "the epoch survives a reopen");
    assert!(j.settled("s").unwrap());
}

#[test]
fn recover_restarts_the_local_stream_at_a_peer_marker() {
    let d = tempfile::tempdir().unwrap();
    let j = Journal::open(d.path(), "bj", &["sh".into(), "gz".into()]).unwrap();
    // Journaled by the source before the peers answered: discarded, the
    // source reads it again from the recovered position.
    let mut v: Vec<_> = (1..=4).map(tx).collect();
    j.append("s", &mut v, Some(&pos(99))).unwrap();
    j.recover("s", 500, Hlc(0), &pos(500), &[0xabc, 0xdef])
        .unwrap();
    assert_eq!(j.last_seq("bj", "s").unwrap(), 500);
    assert!(j.read("bj", "s", 0, 10, usize::MAX).unwrap().is_empty());
    assert_eq!(j.position("s").unwrap(), Some(pos(500)));
    assert!(j.settled("s").unwrap());
    assert!(j.continues("s", 0xabc).unwrap() && j.continues("s", 0xdef).unwrap());
    assert!(!j.continues("s", 0x123).unwrap());
    assert_eq!(j.cursor("sh", "bj", "s").unwrap(), 500);
    let mut more: Vec<_> = (1..=2).map(tx).collect();
    assert_eq!(j.append("s", &mut more, None).unwrap(), Some((501, 502)));
    assert_eq!(j.backlog("gz", "bj", "s").unwrap().txns, 2);
}

#[test]
fn a_journal_of_the_format_before_epochs_continues_epoch_zero() {
    let d = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap();
        let w = j.db.begin_write().unwrap();
        w.open_table(META).unwrap().insert("format", 3).unwrap();
        w.delete_table(identity::ANCESTORS).unwrap();
        w.open_table(IDENTITY).unwrap().remove("epoch").unwrap();
        w.commit().unwrap();
    }
    let j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap();
    assert!(
        j.settled("any").unwrap(),
        "an upgraded journal's streams are settled"
    );
    assert!(
        j.continues("any", 0).unwrap(),
        "markers without an epoch are its own"
    );
    assert!(!j.continues("any", 9).unwrap());
}

#[test]
fn a_relay_journal_rebases_on_a_floor_and_is_dropped_whole() {
    let d = tempfile::tempdir().unwrap();
    let j = Journal::open(d.path(), "hub", &["bj".into(), "sh".into(), "gz".into()]).unwrap();
    j.append("s", &mut [tx(1)], None).unwrap();
    // A new hub: bj starts at its oldest kept change, 41, every DC
    // having applied 1..=40.
    assert!(matches!(
        j.append_relayed(&[remote("bj", 41)]),
        Err(JournalError::Gap { head: 0, .. })
    ));
    assert!(j.rebase_relayed("bj", "s", 40).unwrap());
    assert!(
        !j.rebase_relayed("bj", "s", 30).unwrap(),
        "never moves back"
    );
    assert_eq!(j.last_seq("bj", "s").unwrap(), 40);
    assert_eq!(j.backlog("sh", "bj", "s").unwrap().txns, 0);
    assert_eq!(
        j.append_relayed(&[remote("bj", 41), remote("bj", 42)])
            .unwrap(),
        42
    );
    assert_eq!(j.backlog("sh", "bj", "s").unwrap().txns, 2);
    let got = j.read("bj", "s", 40, 10, usize::MAX).unwrap();
    assert_eq!(got.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![41, 42]);
    // Its own stream is never rebased.
    assert!(j.rebase_relayed("hub", "s", 9).is_err());
    // No longer the hub: the relayed streams go, the own one stays.
    assert_eq!(
        j.drop_relayed().unwrap(),
        vec![("bj".to_string(), "s".to_string())]
    );
    assert_eq!(j.last_seq("bj", "s").unwrap(), 0);
    assert!(j.read("bj", "s", 0, 10, usize::MAX).unwrap().is_empty());
    assert_eq!(j.cursor("sh", "bj", "s").unwrap(), 0);
    assert_eq!(j.last_seq("hub", "s").unwrap(), 1);
    assert_eq!(
        j.streams().unwrap(),
        vec![("hub".to_string(), "s".to_string())]
    );
}

#[test]
fn logged_versions_are_read_before_and_after_they_are_folded() {
    let d = tempfile::tempdir().unwrap();
    let keys: Vec<Vec<u8>> = (0..50u32).map(|i| i.to_be_bytes().to_vec()).collect();
    {
        let j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap();
        let first: Vec<(Vec<u8>, Version)> = keys.iter().map(|k| (k.clone(), v(5, "sh"))).collect();
        j.record_versions("s", &first).unwrap();
        assert_eq!(j.unfolded_versions(), 50);
        // Fold part of the log: the rest stays readable from the overlay.
        let later: Vec<(Vec<u8>, Version)> =
            keys[..10].iter().map(|k| (k.clone(), v(7, "tk"))).collect();
        j.record_versions("s", &later).unwrap();
        let older: Vec<(Vec<u8>, Version)> =
            keys[..20].iter().map(|k| (k.clone(), v(3, "tk"))).collect();
        j.record_versions("s", &older).unwrap();
        let f = j.compact_versions(1).unwrap();
        assert_eq!(f.records, 3);
        assert_eq!(f.versions, 80);
        assert_eq!(j.unfolded_versions(), 0);
        let got = j.versions("s", &keys).unwrap();
        assert!(got[..10].iter().all(|g| g == &Some(v(7, "tk"))));
        assert!(got[10..].iter().all(|g| g == &Some(v(5, "sh"))));
        // Left in the log: folded when the journal is opened again.
        j.record_versions("s", &[(keys[49].clone(), v(9, "sh"))])
            .unwrap();
    }
    let j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap();
    assert_eq!(j.unfolded_versions(), 0);
    assert_eq!(
        j.versions("s", &[keys[0].clone(), keys[49].clone()])
            .unwrap(),
        vec![Some(v(7, "tk")), Some(v(9, "sh"))]
    );
}

#[test]
fn pruning_removes_only_versions_below_the_horizon_in_chunks() {
    let d = tempfile::tempdir().unwrap();
    let j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap();
    let entries: Vec<(Vec<u8>, Version)> = (0..100u32)
        .map(|i| {
            (
                i.to_be_bytes().to_vec(),
                Version {
                    hlc: Hlc(u64::from(i)),
                    dc: "sh".into(),
                },
            )
        })
        .collect();
    j.record_versions("s", &entries).unwrap();
    j.record_versions("t", &entries).unwrap();
    j.compact_versions(1000).unwrap();
    let mut after = None;
    let mut removed = 0;
    let mut passes = 0;
    loop {
        let (n, next) = j.prune_versions("s", Hlc(60), after.as_deref(), 7).unwrap();
        removed += n;
        passes += 1;
        match next {
            Some(k) => after = Some(k),
            None => break,
        }
    }
    assert_eq!(removed, 60);
    assert!(passes >= 100 / 7);
    let keys: Vec<Vec<u8>> = entries.iter().map(|(k, _)| k.clone()).collect();
    let s = j.versions("s", &keys).unwrap();
    assert!(s[..60].iter().all(Option::is_none));
    assert!(s[60..].iter().all(Option::is_some));
    // Another store's index is untouched.
    assert!(j.versions("t", &keys).unwrap().iter().all(Option::is_some));
}

#[test]
fn the_stamp_floor_is_journaled_with_the_position_and_only_rises() {
    let d = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap();
        assert_eq!(j.stamp_floor("s").unwrap(), Hlc(0));
        // An echo-only batch: no transaction, a position and a floor.
        j.append_versioned("s", &mut [], Some(&pos(1)), &[], Hlc(50), false)
            .unwrap();
        j.append_versioned("s", &mut [], Some(&pos(2)), &[], Hlc(40), false)
            .unwrap();
        assert_eq!(j.stamp_floor("s").unwrap(), Hlc(50));
        assert_eq!(j.stamp_floor("other").unwrap(), Hlc(0));
        // A durable commit after it (a local transaction) keeps it.
        j.append("s", &mut [tx(1)], Some(&pos(3))).unwrap();
    }
    let j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap();
    assert_eq!(j.stamp_floor("s").unwrap(), Hlc(50));
}

#[test]
fn a_pending_reship_is_kept_with_its_versions_across_a_reopen_until_cleared() {
    use dcsync_core::conflict::Version;
    let d = tempfile::tempdir().unwrap();
    let v = |h| Version {
        hlc: Hlc(h),
        dc: "sh".into(),
    };
    {
        let j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap();
        assert_eq!(j.pending_reship("r", "sh").unwrap(), None);
        j.record_versions_pending("r", &[(b"k".to_vec(), v(7))], "sh", b"first")
            .unwrap();
        // A later group of the same origin replaces it; other stores and
        // origins are apart.
        j.record_versions_pending("r", &[], "sh", b"second")
            .unwrap();
        j.record_versions_pending("other", &[], "sh", b"x").unwrap();
        assert_eq!(j.versions("r", &[b"k".to_vec()]).unwrap(), vec![Some(v(7))]);
    }
    let j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap();
    assert_eq!(
        j.pending_reship("r", "sh").unwrap(),
        Some(b"second".to_vec())
    );
    assert_eq!(j.pending_reship("r", "gz").unwrap(), None);
    assert_eq!(j.versions("r", &[b"k".to_vec()]).unwrap(), vec![Some(v(7))]);
    j.clear_pending_reship("r", "sh").unwrap();
    assert_eq!(j.pending_reship("r", "sh").unwrap(), None);
    assert_eq!(
        j.pending_reship("other", "sh").unwrap(),
        Some(b"x".to_vec())
    );
}

/// Set in the child process of [`a_synced_position_survives_an_abort`]:
/// `<dir>:<sync>`.
const ABORT_CHILD: &str = "DCSYNC_JOURNAL_ABORT_CHILD";

/// A position-only commit asked to be durable survives the process dying
/// right after it (`abort`, as `kill -9`: nothing is flushed on the way
/// out); without the flag it is lost, which is what the flag is for.
#[test]
fn a_synced_position_survives_an_abort() {
    if let Ok(arg) = std::env::var(ABORT_CHILD) {
        let (dir, sync) = arg.rsplit_once(':').unwrap();
        let j = Journal::open(std::path::Path::new(dir), "bj", &["sh".into()]).unwrap();
        j.append_versioned("s", &mut [], Some(&pos(7)), &[], Hlc(0), sync == "1")
            .unwrap();
        std::process::abort();
    }
    for (sync, kept) in [("1", Some(pos(7))), ("0", None)] {
        let d = tempfile::tempdir().unwrap();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "tests::a_synced_position_survives_an_abort"])
            .env(ABORT_CHILD, format!("{}:{sync}", d.path().display()))
            .status()
            .unwrap();
        assert!(!status.success(), "the child aborts");
        let j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap();
        assert_eq!(j.position("s").unwrap(), kept, "sync_position = {sync}");
    }
}

#[test]
fn the_version_high_water_mark_bounds_every_version_across_folds_and_reopen() {
    let d = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap();
        assert_eq!(j.version_high_water("s"), None);
        j.record_versions(
            "s",
            &[(b"a".to_vec(), v(9, "sh")), (b"b".to_vec(), v(4, "sh"))],
        )
        .unwrap();
        assert_eq!(j.version_high_water("s"), Some(Hlc(9)));
        // A lower record does not lower it; local writes raise it too.
        j.record_versions("s", &[(b"c".to_vec(), v(2, "tk"))])
            .unwrap();
        assert_eq!(j.version_high_water("s"), Some(Hlc(9)));
        j.append_versioned(
            "s",
            &mut [tx(1)],
            Some(&pos(1)),
            &[(b"d".to_vec(), Hlc(12))],
            Hlc(0),
            false,
        )
        .unwrap();
        assert_eq!(j.version_high_water("s"), Some(Hlc(12)));
        // Stores are separate.
        j.record_versions("t", &[(b"a".to_vec(), v(30, "sh"))])
            .unwrap();
        assert_eq!(j.version_high_water("s"), Some(Hlc(12)));
        assert_eq!(j.version_high_water("t"), Some(Hlc(30)));
        // Folding keeps it.
        j.compact_versions(1).unwrap();
        assert_eq!(j.version_high_water("s"), Some(Hlc(12)));
        // Left in the log: folded, then scanned, when the journal opens.
        j.record_versions("s", &[(b"e".to_vec(), v(15, "sh"))])
            .unwrap();
    }
    let j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap();
    assert_eq!(j.version_high_water("s"), Some(Hlc(15)));
    assert_eq!(j.version_high_water("t"), Some(Hlc(30)));
    assert_eq!(j.version_high_water("u"), None);
}

proptest::proptest! {
    /// Whatever is recorded, folded (record by record or all at once) and
    /// reopened, the index returns the greater version recorded per key,
    /// none above the high-water mark (what the sinks' fast path relies
    /// on), and the mark is the greatest recorded HLC.
    #[test]
    fn no_readable_version_is_above_the_high_water_mark(
        ops in proptest::collection::vec((0u8..4, 0u8..6, 1u64..100), 1..30)
    ) {
        let d = tempfile::tempdir().unwrap();
        let mut j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap();
        let keys: Vec<Vec<u8>> = (0..6u8).map(|k| vec![k]).collect();
        let mut top: Option<Hlc> = None;
        // The model: per key, the greater version recorded.
        let mut model: Vec<Option<Version>> = vec![None; keys.len()];
        for (op, k, h) in ops {
            let dc = match op {
                0 => "sh",
                // Folds of one record per transaction, or of the whole
                // log in one (sorted by key, the greater per key kept).
                1 => { j.compact_versions(if h % 2 == 0 { 1 } else { usize::MAX }).unwrap(); "" }
                2 => { drop(j); j = Journal::open(d.path(), "bj", &["sh".into()]).unwrap(); "" }
                _ => "tk",
            };
            if !dc.is_empty() {
                let v = Version { hlc: Hlc(h), dc: dc.into() };
                j.record_versions("s", &[(keys[k as usize].clone(), v.clone())]).unwrap();
                let m = &mut model[k as usize];
                if m.as_ref().is_none_or(|c| v >= *c) {
                    *m = Some(v);
                }
                top = Some(top.map_or(Hlc(h), |t| t.max(Hlc(h))));
            }
            let hw = j.version_high_water("s");
            proptest::prop_assert_eq!(hw, top);
            let got = j.versions("s", &keys).unwrap();
            proptest::prop_assert_eq!(&got, &model);
            for got in got.into_iter().flatten() {
                proptest::prop_assert!(Some(got.hlc) <= hw);
            }
        }
        proptest::prop_assert_eq!(j.version_high_water("s"), top);
    }
}
