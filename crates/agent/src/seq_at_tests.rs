//! `/journal/seq-at` against a real journal in a temporary directory, with
//! the MySQL connector's position comparison.

use super::*;
use dcsync_core::connector::Position;
use dcsync_core::{Hlc, Transaction};

const TOPOLOGY: &str = r#"
cluster = "t"
[[dc]]
id = "bj"
link = "127.0.0.1:7701"
[[dc]]
id = "tk"
link = "127.0.0.1:7702"
[units]
count = 2
owners = { bj = "0", tk = "1" }
[[store]]
name = "orders"
kind = "mysql"
url = { bj = "mysql://root@127.0.0.1:1", tk = "mysql://root@127.0.0.1:2" }
[tls]
plaintext = true
"#;

fn store() -> StoreConfig {
    match Topology::parse(TOPOLOGY, &REGISTRY) {
        Ok(t) => t.stores[0].clone(),
        Err(e) => panic!("{e}"),
    }
}

/// A local transaction ending at MariaDB GTID `0-1-<n>`.
fn tx(n: u64, more: bool) -> Transaction {
    Transaction {
        origin: String::new(),
        store: "orders".into(),
        seq: 0,
        hlc: Hlc(n << 16),
        position: if more {
            String::new()
        } else {
            format!("mysql-bin.000001:{} gtid=0-1-{n}", 100 * n)
        },
        commit_ts_ms: 0,
        changes: Vec::new(),
        part: 0,
        more,
        epoch: 0,
    }
}

fn position(n: u64) -> Position {
    Position {
        bytes: Vec::new(),
        display: format!("mysql-bin.000001:{} gtid=0-1-{n}", 100 * n),
    }
}

fn journal(dir: &tempfile::TempDir) -> Journal {
    Journal::open(dir.path(), "bj", &["tk".to_string()]).unwrap_or_else(|e| panic!("{e}"))
}

fn append(j: &Journal, txs: Vec<Transaction>, at: u64) {
    let mut txs = txs;
    j.append("orders", &mut txs, Some(&position(at)))
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_highest_seq_at_or_before_the_backup() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let j = journal(&dir);
    let s = store();
    // Seqs 1-3 end at GTIDs 10-12; seqs 4-5 are the two parts of the
    // transaction ending at GTID 13.
    append(&j, vec![tx(10, false), tx(11, false), tx(12, false)], 12);
    append(&j, vec![tx(13, true), tx(13, false)], 13);
    let at = |p: &str| seq_at(&j, "bj", &s, p);
    let a = at("0-1-11").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (a.origin.as_str(), a.seq, a.epoch, a.position.as_str()),
        ("bj", 2, j.epoch(), "mysql-bin.000001:1100 gtid=0-1-11")
    );
    assert_eq!(at("0-1-12").map(|a| a.seq), Ok(3));
    // Never a part inside a transaction.
    assert_eq!(at("0-1-99").map(|a| a.seq), Ok(5));
    assert_eq!(at("mysql-bin.000001:1250").map(|a| a.seq), Ok(3));
    match at("0-1-9") {
        Err(SeqAtError::TooOld(m)) => {
            assert!(
                m.contains("the oldest is seq 1 at \"mysql-bin.000001:1000 gtid=0-1-10\""),
                "{m}"
            )
        }
        r => panic!("{r:?}"),
    }
    match at("0-1") {
        Err(e @ SeqAtError::BadRequest(_)) => assert_eq!(e.status(), StatusCode::BAD_REQUEST),
        r => panic!("{r:?}"),
    }
}

#[test]
fn without_entries_the_checkpoint_decides() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let j = journal(&dir);
    let s = store();
    match seq_at(&j, "bj", &s, "0-1-5") {
        Err(e @ SeqAtError::TooOld(_)) => {
            assert!(e.to_string().contains("has not read its store yet"), "{e}");
            assert_eq!(e.status(), StatusCode::GONE);
        }
        r => panic!("{r:?}"),
    }
    append(&j, vec![tx(10, false), tx(11, false)], 11);
    // Every peer acknowledged them: removed.
    j.ack("tk", "bj", "orders", 2)
        .unwrap_or_else(|e| panic!("{e}"));
    append(&j, Vec::new(), 15);
    let a = seq_at(&j, "bj", &s, "0-1-20").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (a.seq, a.position.as_str()),
        (2, "mysql-bin.000001:1500 gtid=0-1-15")
    );
    match seq_at(&j, "bj", &s, "0-1-11") {
        Err(SeqAtError::TooOld(m)) => assert!(m.contains("no older entry held"), "{m}"),
        r => panic!("{r:?}"),
    }
}

#[tokio::test]
async fn the_query_string_is_form_urlencoded() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let j = Arc::new(journal(&dir));
    append(&j, vec![tx(10, false)], 10);
    let topo = Topology::parse(TOPOLOGY, &REGISTRY).unwrap_or_else(|e| panic!("{e}"));
    let q = JournalQuery::new(&j, "bj", &topo);
    let a = q
        .answer("store=orders&position=mysql-bin.000001%3A1000+gtid%3D0-1-10")
        .await;
    assert_eq!(a.map(|a| a.seq), Ok(1));
    assert_eq!(
        q.answer("store=cache&position=0-1-1").await,
        Err(SeqAtError::UnknownStore("cache".into()))
    );
    assert!(matches!(
        q.answer("store=orders").await,
        Err(SeqAtError::BadRequest(_))
    ));
}
