//! Apply throughput figure (printed) for the sink, with a correctness check.
//! Run with `--nocapture` to see the numbers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use dcsync_core::connector::Sink;
use dcsync_core::{Change, ColumnMeta, Hlc, Payload, RowChange, RowKind, Transaction, Value};
use dcsync_mysql::MysqlSink;
use mysql_async::prelude::Queryable;
use std::time::Instant;

fn col(name: &str, type_code: u8, pk: bool) -> ColumnMeta {
    ColumnMeta {
        name: name.into(),
        type_code,
        unsigned: false,
        primary_key: pk,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_throughput() {
    const TXNS: u64 = 4000;
    const ROWS_PER_TX: u64 = 2;
    let db = start_db(Default::default()).await;
    db.exec("CREATE DATABASE shop; CREATE TABLE shop.t (id BIGINT PRIMARY KEY, user_id BIGINT, name VARCHAR(64), amount DECIMAL(12,2))")
        .await;
    let (store, _) = store(&["shop.*"], None);
    let table = std::sync::Arc::new(dcsync_core::TableMeta {
        schema: "shop".into(),
        name: "t".into(),
        columns: vec![
            col("id", 8, true),
            col("user_id", 8, false),
            col("name", 15, false),
            col("amount", 246, false),
        ],
    });
    let txs: Vec<Transaction> = (1..=TXNS)
        .map(|seq| Transaction {
            origin: "bj".into(),
            store: "orders".into(),
            seq,
            hlc: Hlc::new(seq, 0),
            position: String::new(),
            commit_ts_ms: 0,
            epoch: 0,
            changes: (0..ROWS_PER_TX)
                .map(|r| Change {
                    unit: None,
                    payload: Payload::Row(RowChange {
                        table: table.clone(),
                        kind: RowKind::Insert,
                        before: None,
                        after: Some(vec![
                            Value::Int((seq * ROWS_PER_TX + r) as i64),
                            Value::Int(seq as i64 % 97),
                            Value::Bytes(format!("user name {seq}").into_bytes()),
                            Value::Bytes(b"1234.56".to_vec()),
                        ]),
                    }),
                })
                .collect(),
            part: 0,
            more: false,
        })
        .collect();
    let mut sink = MysqlSink::connect(&db.url(), &store).await.unwrap();
    let start = Instant::now();
    for batch in txs.chunks(512) {
        sink.apply("bj", batch).await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "apply throughput: {TXNS} txns x {ROWS_PER_TX} rows in {secs:.2} s = {:.0} txns/s, {:.0} rows/s (group {} txns)",
        TXNS as f64 / secs,
        (TXNS * ROWS_PER_TX) as f64 / secs,
        store.apply_group_txns
    );
    let mut c = db.conn().await;
    let n: i64 = c
        .query_first("SELECT COUNT(*) FROM shop.t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n as u64, TXNS * ROWS_PER_TX);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_throughput() {
    const TXNS: usize = 2000;
    const ROWS_PER_TX: usize = 5;
    let db = start_db(Default::default()).await;
    db.exec("CREATE DATABASE shop; CREATE TABLE shop.t (id BIGINT PRIMARY KEY, user_id BIGINT, name VARCHAR(64), amount DECIMAL(12,2), at DATETIME(6))")
        .await;
    let (store, units) = store(&["shop.*"], Some("user_id"));
    // Write the binlog first, then read it from the start position.
    let (file, pos) = db.binlog_pos().await;
    let mut c = db.conn().await;
    for t in 0..TXNS {
        let rows: Vec<String> = (0..ROWS_PER_TX)
            .map(|r| {
                let id = t * ROWS_PER_TX + r;
                format!("({id}, {}, 'user name {id}', 1234.56, NOW(6))", id % 97)
            })
            .collect();
        c.query_drop(format!("INSERT INTO shop.t VALUES {}", rows.join(",")))
            .await
            .unwrap();
    }
    let resume = dcsync_mysql::BinlogPosition::new(file, pos).to_position();
    let start = Instant::now();
    let mut src = start_source(db.url(), store, units, Some(resume));
    let got = src.locals(TXNS).await;
    let secs = start.elapsed().as_secs_f64();
    src.stop().await;
    assert_eq!(
        got.iter().map(|(c, _)| c.len()).sum::<usize>(),
        TXNS * ROWS_PER_TX
    );
    eprintln!(
        "source throughput: {TXNS} txns x {ROWS_PER_TX} rows in {secs:.2} s = {:.0} txns/s, {:.0} rows/s",
        TXNS as f64 / secs,
        (TXNS * ROWS_PER_TX) as f64 / secs
    );
}
