//! Merged commit groups against real servers: a workload on A that moves
//! unique values between rows, moves primary keys, deletes and re-inserts
//! keys and changes keys only in case or trailing spaces under `_ci` and
//! PAD SPACE collations is captured from A's binlog and applied to B as
//! one group per call (every key's changes merged into one REPLACE or
//! DELETE). B must end byte-identical to A.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use dcsync_core::connector::Sink;
use dcsync_mysql::MysqlSink;
use mysql_async::prelude::Queryable;

const DDL: &str = "CREATE DATABASE shop;
CREATE TABLE shop.u (id INT PRIMARY KEY, email VARCHAR(32) NOT NULL, v INT, UNIQUE KEY (email));
CREATE TABLE shop.ci (k VARCHAR(8) COLLATE utf8mb4_general_ci PRIMARY KEY, v INT);
CREATE TABLE shop.ck (a INT, b VARBINARY(4), v INT, PRIMARY KEY (a, b));
INSERT INTO shop.u VALUES (1,'a',0),(2,'b',0),(3,'c',0),(4,'d',0);
INSERT INTO shop.ci VALUES ('x', 0), ('y', 0);
INSERT INTO shop.ck VALUES (1, 'p', 0), (2, 'q', 0);";

/// One transaction per line (autocommit), 20 in all.
const WORKLOAD: &[&str] = &[
    // Swap the unique emails of 1 and 2 through a temporary value.
    "UPDATE shop.u SET email = 'tmp' WHERE id = 1",
    "UPDATE shop.u SET email = 'a' WHERE id = 2",
    "UPDATE shop.u SET email = 'b', v = 1 WHERE id = 1",
    // Move primary key 3 -> 30, then give 3 back to a new row.
    "UPDATE shop.u SET id = 30 WHERE id = 3",
    "INSERT INTO shop.u VALUES (3, 'c3', 3)",
    // Delete and re-insert the same key; delete another for good.
    "DELETE FROM shop.u WHERE id = 4",
    "INSERT INTO shop.u VALUES (4, 'd', 44)",
    "DELETE FROM shop.u WHERE id = 30",
    "INSERT INTO shop.u VALUES (5, 'c', 5)",
    // Case-insensitive key: 'x' becomes 'X', then 'x ' (same key), then 'X'.
    "UPDATE shop.ci SET k = 'X', v = 1 WHERE k = 'x'",
    "DELETE FROM shop.ci WHERE k = 'x'",
    "INSERT INTO shop.ci VALUES ('x ', 2)",
    "UPDATE shop.ci SET v = 3 WHERE k = 'x'",
    "DELETE FROM shop.ci WHERE k = 'y'",
    "INSERT INTO shop.ci VALUES ('Y', 4)",
    // Composite key with a binary part.
    "UPDATE shop.ck SET b = 'P' WHERE a = 1",
    "UPDATE shop.ck SET a = 1, b = 'p', v = 9 WHERE a = 2",
    "INSERT INTO shop.ck VALUES (2, 'q', 7)",
    "DELETE FROM shop.ck WHERE a = 1 AND b = 'P'",
    "UPDATE shop.u SET v = v + 100",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_groups_reach_the_source_end_state_byte_for_byte() {
    let a = start_db(Default::default()).await;
    let b = start_db(Default::default()).await;
    a.exec(DDL).await;
    b.exec(DDL).await;
    let (store, units) = store(&["shop.*"], None);
    let mut src = start_source(a.url(), store.clone(), units, None);
    wait_ready(&a, &mut src).await;
    for sql in WORKLOAD {
        a.exec(sql).await;
    }
    let locals = src.locals(WORKLOAD.len()).await;
    src.stop().await;
    let txs = as_transactions(&locals, 1);

    // All 20 transactions in one group, then replayed from the start in
    // groups of 7 on a fresh copy, over 4, 1 and 3 parallel connections:
    // each reaches A's state.
    for (group, parallel) in [(256usize, 4usize), (7, 1), (7, 3)] {
        let mut store = store.clone();
        store.apply_group_txns = group;
        set_apply_parallel(&mut store, parallel);
        b.exec("DROP DATABASE shop").await;
        b.exec(DDL).await;
        b.exec("DROP DATABASE IF EXISTS dcsync").await;
        let mut sink = MysqlSink::connect(&b.url(), &store).await.unwrap();
        assert_eq!(sink.apply("bj", &txs).await.unwrap(), txs.len() as u64);
        for (t, order) in [("shop.u", "id"), ("shop.ci", "k"), ("shop.ck", "a, b")] {
            let on_a = dump(&a, t, order).await;
            assert_eq!(
                on_a,
                dump(&b, t, order).await,
                "{t}, groups of {group}, {parallel} connections"
            );
            assert_eq!(a.checksum(t).await, b.checksum(t).await, "{t}");
        }
    }
    // A's end state, spelled out, so that the test cannot pass on two
    // equally wrong servers.
    let mut c = a.conn().await;
    let u: Vec<(i32, String, i32)> = c
        .query("SELECT id, email, v FROM shop.u ORDER BY id")
        .await
        .unwrap();
    let want = [
        (1, "b", 101),
        (2, "a", 100),
        (3, "c3", 103),
        (4, "d", 144),
        (5, "c", 105),
    ];
    assert_eq!(u, want.map(|(i, e, v)| (i, e.to_string(), v)));
    let ci: Vec<(String, i32)> = c
        .query("SELECT k, v FROM shop.ci ORDER BY k")
        .await
        .unwrap();
    assert_eq!(ci, [("x ".to_string(), 3), ("Y".to_string(), 4)]);
    let ck: Vec<(i32, Vec<u8>, i32)> = c
        .query("SELECT a, b, v FROM shop.ck ORDER BY a, b")
        .await
        .unwrap();
    assert_eq!(ck, [(1, b"p".to_vec(), 9), (2, b"q".to_vec(), 7)]);
}
