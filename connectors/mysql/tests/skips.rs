//! What the source does not ship is never skipped silently: a write logged
//! as a statement on a replicated table stops the store with a definite
//! error naming it (unless the store's `skip` allows it), DDL is reported
//! as skipped, and the rows of a table without a primary key are skipped
//! and counted when `skip = ["no_primary_key"]` says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use dcsync_core::connector::{ConnectorError, SourceEvent};
use dcsync_core::Payload;
use dcsync_mysql::SkipSet;

/// Events until `n` Local ones arrived: (skipped (what, count, detail), ids
/// of the Local rows' first column).
async fn collect(src: &mut Running, n: usize) -> (Vec<(String, u64, String)>, Vec<i64>) {
    let mut skipped = Vec::new();
    let mut ids = Vec::new();
    let mut locals = 0;
    while locals < n {
        match src.next().await {
            SourceEvent::Skipped {
                what,
                count,
                detail,
                position,
            } => {
                assert!(position.starts_with("mysql-bin."), "{position}");
                skipped.push((what.to_string(), count, detail));
            }
            e @ SourceEvent::Fragment { .. } => panic!("a small transaction was split: {e:?}"),
            SourceEvent::Local { changes, .. } => {
                locals += 1;
                for c in changes {
                    if let Payload::Row(r) = c.payload {
                        match r.after.or(r.before).unwrap()[0] {
                            dcsync_core::Value::Int(i) => ids.push(i),
                            ref v => panic!("{v:?}"),
                        }
                    }
                }
            }
            SourceEvent::Progress { .. }
            | SourceEvent::Resync { .. }
            | SourceEvent::Copying { .. } => {}
            e @ SourceEvent::Echo { .. } => panic!("unexpected {e:?}"),
        }
    }
    (skipped, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_format_write_on_a_replicated_table_stops_the_store_by_name() {
    let db = start_db(Default::default()).await;
    db.exec(
        "CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, n INT);
         CREATE DATABASE other; CREATE TABLE other.x (id INT PRIMARY KEY)",
    )
    .await;
    let (store, units) = store(&["shop.*"], None);
    let mut src = start_source(db.url(), store, units, None);
    wait_ready(&db, &mut src).await;
    // A statement-format write on a table the store does not replicate is
    // fine; on a replicated one it stops the store.
    db.exec("SET SESSION binlog_format=STATEMENT; INSERT INTO other.x VALUES (1)")
        .await;
    db.exec("INSERT INTO shop.t VALUES (1, 1)").await;
    let (_, ids) = collect(&mut src, 1).await;
    assert_eq!(ids, [1]);
    db.exec("SET SESSION binlog_format=STATEMENT; UPDATE shop.t SET n = n + 1 WHERE id = 1")
        .await;
    db.exec("INSERT INTO shop.t VALUES (2, 2)").await;
    match src.error().await {
        ConnectorError::Definite(m) => {
            for part in [
                "UPDATE on replicated table shop.t",
                "logged as a statement",
                "QUERY event at mysql-bin.000001:",
                " gtid=0-",
                "`UPDATE shop.t SET n = n + 1 WHERE id = 1`",
                "store \"orders\"",
                "binlog_format=ROW",
                "skip = [\"statement_dml\"]",
                "redo the same write in every other DC",
            ] {
                assert!(m.contains(part), "{part:?} missing from: {m}");
            }
        }
        e => panic!("expected a definite error, got {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_skips_and_ddl_are_reported_and_the_rest_flows() {
    let db = start_db(Default::default()).await;
    db.exec(
        "CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, n INT);
         CREATE TABLE shop.nopk (id INT, n INT)",
    )
    .await;
    let (mut store, units) = store(&["shop.*"], None);
    set_skip(
        &mut store,
        SkipSet {
            statement_dml: true,
            no_primary_key: true,
        },
    );
    let mut src = start_source(db.url(), store, units, None);
    wait_ready(&db, &mut src).await;
    db.exec("SET SESSION binlog_format=STATEMENT; INSERT INTO shop.t VALUES (1, 1)")
        .await;
    db.exec("INSERT INTO shop.nopk VALUES (7, 1), (8, 1)").await;
    db.exec("ALTER TABLE shop.t ADD COLUMN c INT").await;
    db.exec("INSERT INTO shop.t VALUES (2, 2, 2)").await;
    let (skipped, ids) = collect(&mut src, 1).await;
    assert_eq!(ids, [2], "only the ROW-format write is shipped");
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    assert_eq!(
        (skipped[0].0.as_str(), skipped[0].1),
        ("statement_dml", 1),
        "{skipped:?}"
    );
    assert!(
        skipped[0]
            .2
            .starts_with("shop.t: INSERT INTO shop.t VALUES (1, 1)"),
        "{skipped:?}"
    );
    assert_eq!(
        (skipped[1].0.as_str(), skipped[1].1, skipped[1].2.as_str()),
        ("no_primary_key", 2, "shop.nopk")
    );
    assert_eq!(
        (skipped[2].0.as_str(), skipped[2].1, skipped[2].2.as_str()),
        ("ddl", 1, "ALTER TABLE shop.t ADD COLUMN c INT")
    );
    src.stop().await;
}
