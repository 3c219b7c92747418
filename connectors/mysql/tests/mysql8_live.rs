//! Live test against a MySQL 8 server given in `DCSYNC_TEST_MYSQL8_URL`
//! (e.g. `mysql://root:pw@127.0.0.1:3308`; the server needs ROW binlog, FULL
//! row image and metadata, GTID on or off). No MySQL 8 server can be installed
//! on the development machines, so the test is `#[ignore]`d: a plain `cargo
//! test` lists it as ignored, and `DCSYNC_TEST_MYSQL8_URL=... cargo test -p
//! dcsync-mysql --test mysql8_live -- --ignored` runs it (and fails if the
//! variable is missing).
//!
//! It tails the server, checks the rows arrive with exact values (incl.
//! binary JSON turned into text), deletes them, re-applies the captured
//! transactions with the sink as origin `zz`, compares the table byte for
//! byte, and checks the source reports that apply as an echo of `zz`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use dcsync_core::connector::{Sink, SourceEvent};
use dcsync_mysql::MysqlSink;
use mysql_async::prelude::Queryable;

async fn dump(c: &mut mysql_async::Conn, table: &str) -> Vec<String> {
    let sql = format!(
        "SELECT CONCAT_WS('|', id, HEX(u), HEX(d), HEX(t), HEX(b), HEX(CAST(j AS CHAR)), HEX(dt), HEX(ts)) FROM {table} ORDER BY id"
    );
    c.query(sql).await.unwrap()
}

#[tokio::test]
#[ignore = "needs a MySQL 8 server: set DCSYNC_TEST_MYSQL8_URL and run with --ignored"]
async fn mysql8_roundtrip_and_echo() {
    let url = std::env::var("DCSYNC_TEST_MYSQL8_URL").expect(
        "DCSYNC_TEST_MYSQL8_URL is not set: this test needs a MySQL 8 server \
         (e.g. mysql://root:pw@127.0.0.1:3308)",
    );
    let schema = format!("dcsync_live_{}", std::process::id());
    let mut c = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
    c.query_drop(format!(
        "DROP DATABASE IF EXISTS {schema}; CREATE DATABASE {schema};
         CREATE TABLE {schema}.t (id INT PRIMARY KEY, u BIGINT UNSIGNED, d DECIMAL(20,6), t VARCHAR(40) CHARACTER SET utf8mb4,
           b VARBINARY(16), j JSON, dt DATETIME(6), ts TIMESTAMP(6) NULL)"
    ))
    .await
    .unwrap();
    let (store, units) = store(&[&format!("{schema}.*")], None);
    let mut src = start_source(url.clone(), store.clone(), units, None);
    // The source starts at the current position: write until it reports.
    let mut n = 0;
    let first = loop {
        n += 1;
        c.exec_drop(
            format!("INSERT INTO {schema}.t VALUES (?, 18446744073709551615, -12345678901234.5, 'héllo 😀', x'00ff10', '{{\"a\": [1, 2.5, \"x\"]}}', '2024-02-29 23:59:59.123456', '2024-01-01 00:00:00.5')"),
            (n,),
        )
        .await
        .unwrap();
        match tokio::time::timeout(std::time::Duration::from_millis(500), src.events.recv()).await {
            Ok(Some(SourceEvent::Local {
                changes, position, ..
            })) => break (changes, position),
            Ok(Some(_)) | Err(_) => continue,
            Ok(None) => panic!("source stopped"),
        }
    };
    let before = dump(&mut c, &format!("{schema}.t")).await;
    let txs = as_transactions(&[first], 1);
    c.query_drop(format!("DELETE FROM {schema}.t"))
        .await
        .unwrap();
    let mut sink = MysqlSink::connect(&url, &store).await.unwrap();
    // Rows earlier than the one captured were never seen; put them back so the
    // comparison is about the captured row only.
    let captured_id = n;
    assert_eq!(sink.apply("zz", &txs).await.unwrap(), 1);
    let after = dump(&mut c, &format!("{schema}.t")).await;
    let want: Vec<String> = before
        .into_iter()
        .filter(|r| r.starts_with(&format!("{captured_id}|")))
        .collect();
    assert_eq!(
        after, want,
        "row changed on its way through source and sink"
    );
    // The sink's transaction shows up as an echo of zz, not as local.
    loop {
        match src.next().await {
            SourceEvent::Echo { origin, seq, .. } => {
                assert_eq!((origin.as_str(), seq), ("zz", 1));
                break;
            }
            SourceEvent::Local { changes, .. } => {
                assert!(
                    changes.iter().all(|ch| matches!(&ch.payload, dcsync_core::Payload::Row(r) if r.kind == dcsync_core::RowKind::Delete)),
                    "sink's apply came back as local: {changes:?}"
                );
            }
            SourceEvent::Progress { .. }
            | SourceEvent::Skipped { .. }
            | SourceEvent::Resync { .. }
            | SourceEvent::Copying { .. } => {}
            e @ SourceEvent::Fragment { .. } => panic!("a small transaction was split: {e:?}"),
        }
    }
    src.stop().await;
    c.query_drop(format!("DROP DATABASE {schema}"))
        .await
        .unwrap();
}
