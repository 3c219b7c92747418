//! Resumption by MariaDB GTID (docs/mysql.md, "Resumption and primary
//! switches"): a position taken on one server resumes on its promoted
//! replica right after the last transaction read, with that server's file
//! and offset; a GTID state the server does not hold is a definite error
//! naming it; a position stored without a GTID state (older releases)
//! resumes by file + offset and carries the state from then on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use dcsync_core::connector::{ConnectorError, Position};
use dcsync_core::{Change, Payload, Value};
use dcsync_mysql::BinlogPosition;
use dcsync_testkit::mariadb::MariaDbOptions;

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

fn replication() -> MariaDbOptions {
    MariaDbOptions {
        gtid_replication: true,
        ..MariaDbOptions::default()
    }
}

fn parse(p: &Position) -> BinlogPosition {
    BinlogPosition::parse_display(&p.display).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_by_gtid_on_a_promoted_replica() {
    let primary = start_db(replication()).await;
    let replica = start_db(replication()).await;
    replica.replicate_from(&primary).await;
    primary
        .exec("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, v INT)")
        .await;
    let (store, units) = store(&["shop.*"], None);
    let mut src = start_source(primary.url(), store.clone(), units.clone(), None);
    wait_ready(&primary, &mut src).await;
    for i in 1..=3 {
        primary
            .exec(&format!("INSERT INTO shop.t VALUES ({i}, 0)"))
            .await;
    }
    let got = src.locals(3).await;
    assert_eq!(ids(&got), vec![1, 2, 3]);
    let resume = got[2].1.clone();
    let at = parse(&resume);
    assert_eq!(
        at.gtid_state.to_string(),
        primary.gtid_binlog_pos().await,
        "the position carries the server's GTID state"
    );
    src.stop().await;

    // Written on the old primary after the position, then the switch.
    for i in 4..=5 {
        primary
            .exec(&format!("INSERT INTO shop.t VALUES ({i}, 0)"))
            .await;
    }
    // Many transactions only on the replica's binlog: its file and offsets
    // differ from the primary's.
    primary.exec("FLUSH BINARY LOGS").await;
    replica
        .wait_caught_up(&primary, std::time::Duration::from_secs(30))
        .await;
    replica.promote().await;
    replica.exec("FLUSH BINARY LOGS").await;
    replica.exec("INSERT INTO shop.t VALUES (6, 0)").await;

    let mut src = start_source(replica.url(), store, units, Some(resume));
    let got = src.locals(3).await;
    assert_eq!(ids(&got), vec![4, 5, 6], "nothing lost, nothing twice");
    let last = parse(&got[2].1);
    let (file, pos) = replica.binlog_pos().await;
    assert_eq!(
        (last.file.as_str(), last.pos),
        (file.as_str(), pos),
        "the position is the new server's file and offset"
    );
    assert_eq!(last.gtid_state.to_string(), replica.gtid_binlog_pos().await);
    assert!(
        last.gtid_state
            .to_string()
            .contains(&format!("-{}-", replica.server_id)),
        "{last}"
    );
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gtid_state_the_server_never_had_is_a_definite_error() {
    let db = start_db(Default::default()).await;
    db.exec("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY)")
        .await;
    let (file, pos) = db.binlog_pos().await;
    let ahead = format!("0-{}-999999", db.server_id);
    // (state, what the message says): a GTID within the server's range
    // that it does not hold is refused by the server (1236); a state
    // beyond its binlog's end, or in a domain it never logged, by dcsync.
    for (state, why) in [
        ("0-4000000-1", "1236"),
        ("77-1-5", "never had those transactions"),
        (ahead.as_str(), "never had those transactions"),
    ] {
        let resume = BinlogPosition {
            gtid_state: state.parse().unwrap(),
            ..BinlogPosition::new(file.clone(), pos)
        };
        let (store, units) = store(&["shop.*"], None);
        let src = start_source(db.url(), store, units, Some(resume.to_position()));
        match src.error().await {
            ConnectorError::Definite(m) => {
                assert!(m.contains(&format!("GTID state {state}")), "{m}");
                assert!(m.contains(why), "{m}");
                assert!(m.contains("does not start anywhere else"), "{m}");
            }
            e => panic!("{state}: expected a definite error, got {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_without_gtid_state_resumes_by_file_and_offset() {
    let db = start_db(Default::default()).await;
    db.exec("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY)")
        .await;
    let (store, units) = store(&["shop.*"], None);
    let mut src = start_source(db.url(), store.clone(), units.clone(), None);
    wait_ready(&db, &mut src).await;
    db.exec("INSERT INTO shop.t VALUES (1)").await;
    let got = src.locals(1).await;
    src.stop().await;
    // The JSON an older release stored: file, offset and the last GTID.
    let bp = parse(&got[0].1);
    let last = bp.gtid_state.iter().next().unwrap().to_string();
    let old = Position {
        bytes: format!(
            r#"{{"file":"{}","pos":{},"gtid":"{last}"}}"#,
            bp.file, bp.pos
        )
        .into_bytes(),
        display: format!("{}:{} gtid={last}", bp.file, bp.pos),
    };
    db.exec("INSERT INTO shop.t VALUES (2); INSERT INTO shop.t VALUES (3)")
        .await;
    let mut src = start_source(db.url(), store, units, Some(old));
    let got = src.locals(2).await;
    assert_eq!(ids(&got), vec![2, 3]);
    // From there on positions carry the GTID state (seeded at the start).
    assert_eq!(
        parse(&got[1].1).gtid_state.to_string(),
        db.gtid_binlog_pos().await
    );
    src.stop().await;
}
