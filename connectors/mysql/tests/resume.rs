//! Resumption (scenario 5): restart from the last position loses and
//! duplicates nothing, across binlog file rotation; a purged resume file is a
//! Definite error. DDL in the stream is skipped (scenario 6).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use dcsync_core::connector::{ConnectorError, Position};
use dcsync_core::{Change, Payload, Value};
use mysql_async::prelude::Queryable;

/// The `id` of the first row of each transaction.
fn ids(locals: &[(Vec<Change>, Position)]) -> Vec<i64> {
    locals
        .iter()
        .map(|(c, _)| match &c[0].payload {
            Payload::Row(r) => match r.after.as_ref().or(r.before.as_ref()).unwrap()[0] {
                Value::Int(i) => i,
                ref v => panic!("{v:?}"),
            },
            p => panic!("{p:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_last_position_loses_and_duplicates_nothing() {
    let db = start_db(Default::default()).await;
    db.exec("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, v INT)")
        .await;
    let (store, units) = store(&["shop.*"], None);
    let mut src = start_source(db.url(), store.clone(), units.clone(), None);
    wait_ready(&db, &mut src).await;
    for i in 1..=5 {
        db.exec(&format!("INSERT INTO shop.t VALUES ({i}, 0)"))
            .await;
    }
    let first = src.locals(5).await;
    assert_eq!(ids(&first), vec![1, 2, 3, 4, 5]);
    // Positions are at transaction ends and increase.
    let last = first[4].1.clone();
    assert!(
        last.display.starts_with("mysql-bin.000001:"),
        "{}",
        last.display
    );
    assert!(last.display.contains(" gtid=0-"), "{}", last.display);
    src.stop().await;

    // Written while the source is down, across a binlog rotation.
    for i in 6..=8 {
        db.exec(&format!("INSERT INTO shop.t VALUES ({i}, 0)"))
            .await;
    }
    db.exec("FLUSH BINARY LOGS").await;
    db.exec(
        "BEGIN; INSERT INTO shop.t VALUES (9, 0); UPDATE shop.t SET v = 1 WHERE id = 1; COMMIT",
    )
    .await;
    db.exec("DELETE FROM shop.t WHERE id = 10").await; // no row: empty transaction
    db.exec("INSERT INTO shop.t VALUES (10, 0)").await;

    let mut src = start_source(db.url(), store.clone(), units.clone(), Some(last));
    let second = src.locals(5).await;
    assert_eq!(ids(&second), vec![6, 7, 8, 9, 10]);
    assert_eq!(second[3].0.len(), 2, "both rows of the transaction");
    assert!(second[3].1.display.starts_with("mysql-bin.000002:"));
    let resume_again = second[4].1.clone();
    src.stop().await;

    // Resuming from the very end: nothing is replayed, new rows arrive.
    let mut src = start_source(db.url(), store, units, Some(resume_again));
    db.exec("INSERT INTO shop.t VALUES (11, 0)").await;
    let third = src.locals(1).await;
    assert_eq!(ids(&third), vec![11]);
    src.stop().await;
}

/// Purges every binlog file before the current one (retrying: PURGE skips
/// a file a dump thread still reads).
async fn purge_to_current(db: &dcsync_testkit::mariadb::MariaDb) {
    db.exec("FLUSH BINARY LOGS; FLUSH BINARY LOGS").await;
    let (current, _) = db.binlog_pos().await;
    dcsync_testkit::wait_for("binlogs purged", DEADLINE, || async {
        db.exec(&format!("PURGE BINARY LOGS TO '{current}'")).await;
        let mut c = db.conn().await;
        let files: Vec<mysql_async::Row> = c.query("SHOW BINARY LOGS").await.unwrap();
        let first: String = files[0].get(0).unwrap();
        (first == current).then_some(())
    })
    .await;
}

/// A position stored without a GTID state (older releases) resumes by
/// file + offset: a purged file is a definite error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_from_a_purged_binlog_is_a_definite_error() {
    let db = start_db(Default::default()).await;
    db.exec("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY)")
        .await;
    let (store, units) = store(&["shop.*"], None);
    let mut src = start_source(db.url(), store.clone(), units.clone(), None);
    wait_ready(&db, &mut src).await;
    db.exec("INSERT INTO shop.t VALUES (1)").await;
    let pos = src.locals(1).await.remove(0).1;
    src.stop().await;
    let mut bp = dcsync_mysql::BinlogPosition::from_position(&pos).unwrap();
    bp.gtid_state = Default::default();
    purge_to_current(&db).await;
    let src = start_source(db.url(), store, units, Some(bp.to_position()));
    match src.error().await {
        ConnectorError::Definite(m) => {
            assert!(m.contains("mysql-bin.000001"), "{m}");
            assert!(m.contains("purged"), "{m}");
            assert!(m.contains("re-bootstrap"), "{m}");
        }
        e => panic!("expected a definite error, got {e:?}"),
    }
}

/// Resumed by GTID, a purged file is no problem as long as no transaction
/// after the position was in it (the next file's GTID list starts at the
/// state); once one was, the server cannot start at the state: a definite
/// error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_by_gtid_past_purged_transactions_is_a_definite_error() {
    let db = start_db(Default::default()).await;
    db.exec("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY)")
        .await;
    let (store, units) = store(&["shop.*"], None);
    let mut src = start_source(db.url(), store.clone(), units.clone(), None);
    wait_ready(&db, &mut src).await;
    db.exec("INSERT INTO shop.t VALUES (1)").await;
    let pos = src.locals(1).await.remove(0).1;
    src.stop().await;
    let state = dcsync_mysql::BinlogPosition::from_position(&pos)
        .unwrap()
        .gtid_state
        .to_string();
    assert!(!state.is_empty(), "{}", pos.display);

    // Nothing after the position purged: resumes, next rows arrive.
    purge_to_current(&db).await;
    let mut src = start_source(db.url(), store.clone(), units.clone(), Some(pos.clone()));
    db.exec("INSERT INTO shop.t VALUES (2)").await;
    assert_eq!(ids(&src.locals(1).await), vec![2]);
    src.stop().await;

    // Row 2 was after the position and its file is purged now.
    purge_to_current(&db).await;
    let src = start_source(db.url(), store, units, Some(pos));
    match src.error().await {
        ConnectorError::Definite(m) => {
            assert!(m.contains(&format!("GTID state {state}")), "{m}");
            assert!(m.contains("purged"), "{m}");
            assert!(m.contains("re-bootstrap"), "{m}");
        }
        e => panic!("expected a definite error, got {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_is_skipped_and_later_rows_arrive() {
    let db = start_db(Default::default()).await;
    db.exec("CREATE DATABASE shop").await;
    let (store, units) = store(&["shop.*"], None);
    let mut src = start_source(db.url(), store, units, None);
    wait_ready(&db, &mut src).await;
    db.exec(
        "CREATE TABLE shop.later (id INT PRIMARY KEY, a VARCHAR(10));
         INSERT INTO shop.later VALUES (1, 'x');
         ALTER TABLE shop.later ADD COLUMN b INT DEFAULT 7;
         INSERT INTO shop.later VALUES (2, 'y', 8);
         CREATE USER 'app'@'%' IDENTIFIED BY 'not-logged';
         CREATE TABLE shop.nokey_but_unused (a INT);
         DROP TABLE shop.nokey_but_unused;
         INSERT INTO shop.later VALUES (3, 'z', 9);
         CREATE TABLE shop.plain (id INT PRIMARY KEY) ENGINE=MyISAM;
         INSERT INTO shop.plain VALUES (4);",
    )
    .await;
    // The MyISAM insert ends with a COMMIT query event instead of an XID.
    let got = src.locals(4).await;
    assert_eq!(ids(&got), vec![1, 2, 3, 4]);
    match &got[1].0[0].payload {
        Payload::Row(r) => {
            let names: Vec<&str> = r.table.columns.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(names, vec!["id", "a", "b"]);
            assert_eq!(r.after.as_ref().unwrap()[2], Value::Int(8));
        }
        p => panic!("{p:?}"),
    }
    src.stop().await;
}
