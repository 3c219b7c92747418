//! Type round-trip A -> source -> sink -> B, compared byte-exactly; and the
//! echo filter on B (scenarios 1 and 3 of the connector brief).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use dcsync_core::connector::{Sink, SourceEvent};
use dcsync_core::{Payload, Value};
use dcsync_mysql::MysqlSink;

const TYPES_DDL: &str = "CREATE DATABASE IF NOT EXISTS shop;
CREATE TABLE shop.types (
  id INT NOT NULL PRIMARY KEY,
  ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
  mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED,
  bi BIGINT, biu BIGINT UNSIGNED,
  y YEAR, dc DECIMAL(30,10), f FLOAT, d DOUBLE,
  c CHAR(10), vc VARCHAR(100), tx TEXT,
  bn BINARY(4), vb VARBINARY(20), bl BLOB,
  dt DATE, tm TIME(6), dtm DATETIME(6), ts TIMESTAMP(6) NULL DEFAULT NULL,
  e ENUM('a','b','c'), st SET('x','y','z'),
  b1 BIT(1), b17 BIT(17), j JSON,
  u2 INT UNSIGNED, t0 TIME, dtm0 DATETIME, ts0 TIMESTAMP NULL DEFAULT NULL,
  l1 VARCHAR(20) CHARACTER SET latin1, lt TEXT CHARACTER SET latin1,
  g INT AS (i + 1) VIRTUAL, gs VARCHAR(120) AS (CONCAT(vc, 'x')) STORED
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE shop.cpk (
  b VARCHAR(10) NOT NULL, a INT NOT NULL, v INT,
  PRIMARY KEY (a, b)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;";

const WORKLOAD: &str = "SET SESSION sql_mode='';
SET time_zone='+00:00';
INSERT INTO shop.types VALUES (1,
  -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0,
  1901, '-99999999999999999999.9999999999', -1.5e38, -1.7976931348623157e308,
  'a', '', '', 0x00000000, '', '',
  '1000-01-01', '-838:59:59.000000', '1000-01-01 00:00:00.000000', '1970-01-01 00:00:01.000000',
  'a', '', b'0', b'0', '[]', 0, '-838:59:59', '1000-01-01 00:00:00', '1970-01-01 00:00:01',
  '', '', DEFAULT, DEFAULT);
INSERT INTO shop.types VALUES (2,
  127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295,
  9223372036854775807, 18446744073709551615,
  2155, '99999999999999999999.9999999999', 3.4e38, 1.7976931348623157e308,
  'h\u{e9}llo\u{1F600}', 'emoji \u{1F600}\u{1F389} \u{fc}', REPEAT('t\u{1F600}', 1000),
  0xff00fe01, 0xff0080, 0xdeadbeef00ff,
  '9999-12-31', '838:59:59.000000', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999999',
  'c', 'x,y,z', b'1', b'10000000000000001', '{\"a\": [1, 2.5, \"x\"], \"b\": null}',
  4294967295, '838:59:59', '9999-12-31 23:59:59', '2038-01-19 03:14:07',
  'caf\u{e9}', '\u{e0}\u{e9}\u{ee}\u{f5}\u{fc}', DEFAULT, DEFAULT);
INSERT INTO shop.types (id) VALUES (3);
BEGIN;
INSERT INTO shop.types VALUES (4,
  -1, 1, -1, 1, -1, 1, -1, 1, -1, 1,
  0, '-0.0000000001', 0.1, 0.1,
  'x ', 'trailing  ', 'multi\nline', 0x41, 0x00ff, 0xc3,
  '0000-00-00', '-00:00:01.500000', '2024-02-29 12:00:00.500000', '2024-06-01 10:20:30.123456',
  'b', 'y', b'1', b'1', '\"str\"', 1, '12:34:56', '0000-00-00 00:00:00', '0000-00-00 00:00:00',
  'x', NULL, DEFAULT, DEFAULT);
INSERT INTO shop.cpk VALUES ('x', 1, 10), ('y', 1, 11), ('x', 2, 12);
COMMIT;
UPDATE shop.types SET vc = 'changed', dc = 12.5, tm = '-12:00:00.000001', st = 'x,z', b17 = b'111' WHERE id = 4;
UPDATE shop.types SET id = 5 WHERE id = 4;
DELETE FROM shop.types WHERE id = 3;
UPDATE shop.cpk SET a = 3 WHERE a = 1 AND b = 'y';
UPDATE shop.cpk SET v = v + 1;
DELETE FROM shop.cpk WHERE a = 2;";

/// Number of committed transactions in WORKLOAD.
const WORKLOAD_TXNS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_byte_exactly_and_echoes_are_attributed() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("dcsync_mysql=debug")
        .with_test_writer()
        .try_init();
    let a = start_db(Default::default()).await;
    let b = start_db(Default::default()).await;
    a.exec(TYPES_DDL).await;
    b.exec(TYPES_DDL).await;
    let (store, units) = store(&["shop.*"], Some("id"));

    let mut src_a = start_source(a.url(), store.clone(), units.clone(), None);
    // The source starts at the current position: wait until it is running
    // (its first start-up query) by writing a marker transaction after it.
    wait_ready(&a, &mut src_a).await;
    a.exec(WORKLOAD).await;
    let locals = src_a.locals(WORKLOAD_TXNS).await;
    src_a.stop().await;

    // Shape checks on the decoded values.
    let first = match &locals[0].0[0].payload {
        Payload::Row(r) => r.clone(),
        other => panic!("{other:?}"),
    };
    let col = |name: &str| {
        first
            .table
            .columns
            .iter()
            .position(|c| c.name == name)
            .unwrap()
    };
    let after = first.after.as_ref().unwrap();
    assert_eq!(after[col("ti")], Value::Int(-128));
    assert_eq!(after[col("bi")], Value::Int(i64::MIN));
    assert_eq!(after[col("y")], Value::Int(1901));
    assert_eq!(after[col("e")], Value::UInt(1));
    assert_eq!(after[col("ts")], Value::Date(1970, 1, 1, 0, 0, 1, 0));
    assert!(
        first.table.columns[col("u2")].unsigned,
        "{:?}",
        first.table.columns
    );
    assert!(first.table.columns[col("biu")].unsigned);
    assert!(!first.table.columns[col("bi")].unsigned);
    assert!(first.table.columns[col("id")].primary_key);
    assert!(locals[0].0[0].unit.is_some());
    let second = match &locals[1].0[0].payload {
        Payload::Row(r) => r.after.clone().unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(second[col("biu")], Value::UInt(u64::MAX));
    assert_eq!(second[col("miu")], Value::UInt(16_777_215));
    assert_eq!(second[col("st")], Value::UInt(7));
    assert_eq!(second[col("b17")], Value::Bytes(vec![1, 0, 1]));
    assert_eq!(
        second[col("ts")],
        Value::Date(2038, 1, 19, 3, 14, 7, 999_999)
    );
    // The composite key (a, b) is declared out of column order.
    let cpk = locals
        .iter()
        .flat_map(|(c, _)| c.iter())
        .find_map(|c| match &c.payload {
            Payload::Row(r) if r.table.name == "cpk" => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(cpk.primary_key(), vec![0, 1], "{:?}", cpk.table.columns);

    // Tail B before applying, to see the echoes.
    let mut src_b = start_source(b.url(), store.clone(), units.clone(), None);
    wait_ready(&b, &mut src_b).await;

    let txs = as_transactions(&locals, 1);
    let mut sink = MysqlSink::connect(&b.url(), &store).await.unwrap();
    assert_eq!(sink.applied_seq("bj").await.unwrap(), 0);
    let applied = sink.apply("bj", &txs).await.unwrap();
    assert_eq!(applied, WORKLOAD_TXNS as u64);

    for (t, rows) in [("shop.types", 3), ("shop.cpk", 2)] {
        let order = if t == "shop.types" { "id" } else { "a, b" };
        let on_a = dump(&a, t, order).await;
        eprintln!("{t} on A: {on_a:#?}");
        assert_eq!(on_a.len(), rows, "{t}");
        assert_eq!(on_a, dump(&b, t, order).await, "{t}");
        assert_eq!(a.checksum(t).await, b.checksum(t).await, "{t}");
    }

    // Echo: the sink's transactions come out of B's binlog as Echo, with the
    // origin and the seq of each group's last transaction (once per apply
    // partition, and seq 0 for the marker set-up).
    let mut last_echo = 0;
    while last_echo < WORKLOAD_TXNS as u64 {
        match src_b.next().await {
            SourceEvent::Echo { origin, seq, .. } => {
                assert_eq!(origin, "bj");
                assert!(seq >= last_echo, "{seq} after {last_echo}");
                last_echo = seq;
            }
            SourceEvent::Progress { .. }
            | SourceEvent::Skipped { .. }
            | SourceEvent::Resync { .. }
            | SourceEvent::Copying { .. } => {}
            e @ (SourceEvent::Local { .. } | SourceEvent::Fragment { .. }) => {
                panic!("sink write came out as local: {e:?}")
            }
        }
    }
    src_b.stop().await;
}

/// Large transactions: runs of inserts, key-changing updates and deletes on
/// a composite-key table exercise the multi-row statements of the sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transactions_with_runs_round_trip() {
    let a = start_db(Default::default()).await;
    let b = start_db(Default::default()).await;
    let ddl = "CREATE DATABASE shop;
        CREATE TABLE shop.big (k VARCHAR(20) NOT NULL, n INT NOT NULL, v BLOB, PRIMARY KEY (n, k));
        CREATE TABLE shop.one (id BIGINT UNSIGNED PRIMARY KEY, v INT)";
    a.exec(ddl).await;
    b.exec(ddl).await;
    let (mut store, units) = store(&["shop.*"], None);
    store.apply_group_txns = 3;
    let mut src = start_source(a.url(), store.clone(), units, None);
    wait_ready(&a, &mut src).await;
    let values: Vec<String> = (0..150)
        .map(|i| format!("('k{}', {i}, REPEAT(0xff00, {i}))", i % 7))
        .collect();
    let ones: Vec<String> = (0..90)
        .map(|i| format!("({}, {i})", u64::MAX - i))
        .collect();
    a.exec(&format!(
        "INSERT INTO shop.big VALUES {}; INSERT INTO shop.one VALUES {};
         BEGIN; UPDATE shop.big SET n = n + 1000 WHERE n % 3 = 0; UPDATE shop.one SET v = v + 1; COMMIT;
         DELETE FROM shop.big WHERE n % 2 = 1; DELETE FROM shop.one WHERE v > 30;
         INSERT INTO shop.big VALUES ('again', 1, NULL);",
        values.join(","),
        ones.join(",")
    ))
    .await;
    let locals = src.locals(6).await;
    src.stop().await;
    let txs = as_transactions(&locals, 1);
    let mut sink = MysqlSink::connect(&b.url(), &store).await.unwrap();
    assert_eq!(sink.apply("bj", &txs).await.unwrap(), 6);
    for (t, order) in [("shop.big", "n, k"), ("shop.one", "id")] {
        let on_a = dump(&a, t, order).await;
        assert!(on_a.len() > 10, "{t}: {}", on_a.len());
        assert_eq!(on_a, dump(&b, t, order).await, "{t}");
        assert_eq!(a.checksum(t).await, b.checksum(t).await, "{t}");
    }
}
