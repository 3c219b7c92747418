//! Idempotent apply: the same batch twice and overlapping batches change the
//! data once (scenario 4); schema errors name the table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use dcsync_core::connector::{ConnectorError, Sink};
use dcsync_core::{
    Change, ColumnMeta, Hlc, Payload, RowChange, RowKind, TableMeta, Transaction, Value,
};
use dcsync_mysql::MysqlSink;
use dcsync_testkit::mariadb::MariaDb;
use mysql_async::prelude::Queryable;

fn cols() -> Vec<ColumnMeta> {
    vec![
        ColumnMeta {
            name: "id".into(),
            type_code: 3,
            unsigned: false,
            primary_key: true,
        },
        ColumnMeta {
            name: "v".into(),
            type_code: 3,
            unsigned: false,
            primary_key: false,
        },
    ]
}

/// Transaction `seq` of origin bj: rows `keys` of `shop.<table>` get
/// v = seq (inserted by seq 1, updated after).
fn set_tx(table: &str, keys: std::ops::Range<i64>, seq: u64) -> Transaction {
    let changes = keys
        .map(|k| Change {
            unit: None,
            payload: Payload::Row(RowChange {
                table: std::sync::Arc::new(TableMeta {
                    schema: "shop".into(),
                    name: table.into(),
                    columns: cols(),
                }),
                kind: if seq == 1 {
                    RowKind::Insert
                } else {
                    RowKind::Update
                },
                before: (seq > 1).then(|| vec![Value::Int(k), Value::Int(seq as i64 - 1)]),
                after: Some(vec![Value::Int(k), Value::Int(seq as i64)]),
            }),
        })
        .collect();
    Transaction {
        origin: "bj".into(),
        store: "orders".into(),
        seq,
        hlc: Hlc::new(1_700_000_000_000 + seq, 0),
        position: format!("test:{seq}"),
        commit_ts_ms: 0,
        changes,
        part: 0,
        more: false,
        epoch: 0,
    }
}

/// Transaction `seq`: sets item 1 to v = seq (insert for seq 1).
fn tx(seq: u64) -> Transaction {
    set_tx("items", 1..2, seq)
}

/// `shop.items` with triggers that count every row write in
/// `shop.counters` (id 1).
const COUNTED_ITEMS: &str = "CREATE DATABASE shop;
CREATE TABLE shop.items (id INT PRIMARY KEY, v INT);
CREATE TABLE shop.counters (id INT PRIMARY KEY, n INT);
INSERT INTO shop.counters VALUES (1, 0);
CREATE TRIGGER shop.items_ins AFTER INSERT ON shop.items FOR EACH ROW UPDATE shop.counters SET n = n + 1 WHERE id = 1;
CREATE TRIGGER shop.items_upd AFTER UPDATE ON shop.items FOR EACH ROW UPDATE shop.counters SET n = n + 1 WHERE id = 1;";

async fn state(db: &MariaDb) -> (i64, i64) {
    let mut c = db.conn().await;
    let v: i64 = c
        .query_first("SELECT v FROM shop.items WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    let n: i64 = c
        .query_first("SELECT n FROM shop.counters WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    (v, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_applied_twice_or_overlapping_change_data_once() {
    let db = start_db(Default::default()).await;
    // The trigger counts every row write the sink makes: a re-applied
    // transaction would bump the counter again.
    db.exec(COUNTED_ITEMS).await;
    let (mut store, _) = store(&["shop.*"], None);
    // One transaction per group: a group writes a key once (changes merge
    // per key), so the trigger counts applied transactions.
    store.apply_group_txns = 1;
    let mut sink = MysqlSink::connect(&db.url(), &store).await.unwrap();
    let batch: Vec<Transaction> = (1..=3).map(tx).collect();
    assert_eq!(sink.apply("bj", &batch).await.unwrap(), 3);
    assert_eq!(state(&db).await, (3, 3));
    // Same batch again: nothing changes (v would go back to 1..3 otherwise).
    assert_eq!(sink.apply("bj", &batch).await.unwrap(), 3);
    assert_eq!(state(&db).await, (3, 3));
    // A fresh sink (restart) reads the marker from the database.
    let mut sink = MysqlSink::connect(&db.url(), &store).await.unwrap();
    assert_eq!(sink.applied_seq("bj").await.unwrap(), 3);
    let overlap: Vec<Transaction> = (2..=5).map(tx).collect();
    assert_eq!(sink.apply("bj", &overlap).await.unwrap(), 5);
    assert_eq!(state(&db).await, (5, 5));
    assert_eq!(sink.apply("bj", &overlap[..1]).await.unwrap(), 5);
    assert_eq!(state(&db).await, (5, 5));
    // Another origin has its own marker.
    assert_eq!(sink.applied_seq("sh").await.unwrap(), 0);
    // The marker rows are spread over slots.
    let mut c = db.conn().await;
    let slots: Vec<(u16, u64)> = c
        .query("SELECT slot, seq FROM dcsync.apply_marker WHERE origin = 'bj' ORDER BY slot")
        .await
        .unwrap();
    assert!(slots.len() > 1, "{slots:?}");
    assert!(slots
        .iter()
        .all(|(slot, seq)| u64::from(*slot) % 16 == seq % 16));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_table_is_a_definite_error_naming_it_and_nothing_is_half_applied() {
    let db = start_db(Default::default()).await;
    db.exec("CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY, v INT)")
        .await;
    let (store, _) = store(&["shop.*"], None);
    let mut sink = MysqlSink::connect(&db.url(), &store).await.unwrap();
    let mut bad = tx(2);
    bad.changes.insert(0, tx(1).changes.remove(0));
    if let Payload::Row(r) = &mut bad.changes[1].payload {
        let mut meta = (*r.table).clone();
        meta.name = "missing".into();
        r.table = std::sync::Arc::new(meta);
    }
    match sink.apply("bj", &[bad]).await {
        Err(ConnectorError::Definite(m)) => assert!(m.contains("shop.missing"), "{m}"),
        other => panic!("expected a definite error, got {other:?}"),
    }
    // The group rolled back: neither the row nor the marker is there.
    assert_eq!(sink.applied_seq("bj").await.unwrap(), 0);
    let mut c = db.conn().await;
    let n: i64 = c
        .query_first("SELECT COUNT(*) FROM shop.items")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_wait_timeout_is_transient_and_the_retry_applies_once() {
    let db = start_db(Default::default()).await;
    db.exec("SET GLOBAL innodb_lock_wait_timeout = 1").await;
    db.exec(COUNTED_ITEMS).await;
    let (mut store, _) = store(&["shop.*"], None);
    store.apply_group_txns = 1;
    let mut sink = MysqlSink::connect(&db.url(), &store).await.unwrap();
    assert_eq!(sink.apply("bj", &[tx(1)]).await.unwrap(), 1);
    // Another session holds the row lock: the sink's group times out.
    let mut holder = db.conn().await;
    holder.query_drop("BEGIN").await.unwrap();
    holder
        .query_drop("SELECT * FROM shop.items WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    let batch: Vec<Transaction> = (1..=3).map(tx).collect();
    match sink.apply("bj", &batch).await {
        Err(e) => assert!(e.is_transient(), "{e:?}"),
        Ok(s) => panic!("applied {s} through a held lock"),
    }
    holder.query_drop("ROLLBACK").await.unwrap();
    // The retry re-reads the marker and applies 2 and 3 once.
    assert_eq!(sink.apply("bj", &batch).await.unwrap(), 3);
    assert_eq!(state(&db).await, (3, 3));
}

/// Transaction `seq`: keys 0..16 of `shop.kv` get v = seq.
fn kv_tx(seq: u64) -> Transaction {
    set_tx("kv", 0..16, seq)
}

/// Per key: (v, number of row writes the triggers counted).
async fn kv_state(db: &MariaDb) -> Vec<(i32, i32, i32)> {
    let mut c = db.conn().await;
    c.query("SELECT kv.id, kv.v, w.n FROM shop.kv JOIN shop.writes w USING (id) ORDER BY id")
        .await
        .unwrap()
}

async fn partitions(db: &MariaDb) -> Vec<(u16, u64)> {
    let mut c = db.conn().await;
    c.query("SELECT slot DIV 16, MAX(seq) FROM dcsync.apply_marker WHERE origin = 'bj' GROUP BY slot DIV 16 ORDER BY 1")
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_that_missed_a_group_finish_it_alone_and_markers_follow_apply_parallel() {
    let db = start_db(Default::default()).await;
    db.exec(
        "SET GLOBAL innodb_lock_wait_timeout = 1;
         CREATE DATABASE shop;
         CREATE TABLE shop.kv (id INT PRIMARY KEY, v INT);
         CREATE TABLE shop.writes (id INT PRIMARY KEY, n INT);
         CREATE TRIGGER shop.kv_ins AFTER INSERT ON shop.kv FOR EACH ROW INSERT INTO shop.writes VALUES (NEW.id, 1) ON DUPLICATE KEY UPDATE n = n + 1;
         CREATE TRIGGER shop.kv_upd AFTER UPDATE ON shop.kv FOR EACH ROW INSERT INTO shop.writes VALUES (NEW.id, 1) ON DUPLICATE KEY UPDATE n = n + 1;",
    )
    .await;
    let (mut store, _) = store(&["shop.*"], None);
    set_apply_parallel(&mut store, 4);
    let mut sink = MysqlSink::connect(&db.url(), &store).await.unwrap();
    assert_eq!(sink.apply("bj", &[kv_tx(1), kv_tx(2)]).await.unwrap(), 2);
    assert_eq!(partitions(&db).await, vec![(0, 2), (1, 2), (2, 2), (3, 2)]);

    // Key 5 is locked by another session: its partition times out on group
    // 3, the other three commit it.
    let mut holder = db.conn().await;
    holder.query_drop("BEGIN").await.unwrap();
    holder
        .query_drop("SELECT * FROM shop.kv WHERE id = 5 FOR UPDATE")
        .await
        .unwrap();
    match sink.apply("bj", &[kv_tx(3)]).await {
        Err(e) => assert!(e.is_transient(), "{e:?}"),
        Ok(s) => panic!("applied {s} through a held lock"),
    }
    holder.query_drop("ROLLBACK").await.unwrap();
    let parts = partitions(&db).await;
    assert_eq!(
        parts.iter().filter(|(_, s)| *s == 3).count(),
        3,
        "{parts:?}"
    );
    assert_eq!(sink.applied_seq("bj").await.unwrap(), 2);
    // The retry applies group 3 only where it is missing: every key was
    // written once by group {1, 2} (merged per key) and once by group 3.
    assert_eq!(sink.apply("bj", &[kv_tx(3)]).await.unwrap(), 3);
    let want = |v: i32, n: i32| (0..16).map(|k| (k, v, n)).collect::<Vec<_>>();
    assert_eq!(kv_state(&db).await, want(3, 2));

    // Fewer connections: the markers are rewritten to two partitions.
    set_apply_parallel(&mut store, 2);
    let mut sink = MysqlSink::connect(&db.url(), &store).await.unwrap();
    assert_eq!(sink.applied_seq("bj").await.unwrap(), 3);
    assert_eq!(partitions(&db).await, vec![(0, 3), (1, 3)]);
    assert_eq!(sink.apply("bj", &[kv_tx(3), kv_tx(4)]).await.unwrap(), 4);
    assert_eq!(kv_state(&db).await, want(4, 3));

    // One connection: an overlapping batch applies only what is new.
    set_apply_parallel(&mut store, 1);
    let mut sink = MysqlSink::connect(&db.url(), &store).await.unwrap();
    let batch: Vec<Transaction> = (3..=5).map(kv_tx).collect();
    assert_eq!(sink.apply("bj", &batch).await.unwrap(), 5);
    assert_eq!(partitions(&db).await, vec![(0, 5)]);
    assert_eq!(kv_state(&db).await, want(5, 4));
}
