//! Named resumption scenarios: a silently stalled line and a cut line to
//! the server, and a server restart during replication. Each ends the source
//! with a Transient error; restarting it from the last position loses and
//! duplicates nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use dcsync_core::connector::Position;
use dcsync_core::{Change, Payload, Value};
use dcsync_mysql::MysqlSource;
use dcsync_testkit::proxy::Proxy;
use std::time::{Duration, Instant};

fn ids(locals: &[(Vec<Change>, Position)]) -> Vec<i64> {
    locals
        .iter()
        .map(|(c, _)| match &c[0].payload {
            Payload::Row(r) => match r.after.as_ref().unwrap()[0] {
                Value::Int(i) => i,
                ref v => panic!("{v:?}"),
            },
            p => panic!("{p:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_cut_lines_and_server_restart_are_transient_and_resumable() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("dcsync_mysql=info")
        .with_test_writer()
        .try_init();
    let mut db = start_db(Default::default()).await;
    db.exec("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY)")
        .await;
    let proxy = Proxy::start(format!("127.0.0.1:{}", db.port)).await;
    // prefer_socket=false: mysql_async would otherwise switch to the
    // server's Unix socket and bypass the proxy.
    let url = format!("mysql://root@{}?prefer_socket=false", proxy.addr());
    let (store, units) = store(&["shop.*"], None);
    let source = || MysqlSource::new(url.clone()).with_idle_timeout(Duration::from_secs(3));

    // 1. Stalled line: detected by the missing heartbeats.
    let mut src = start_source_with(source(), store.clone(), units.clone(), None);
    wait_ready(&db, &mut src).await;
    db.exec("INSERT INTO shop.t VALUES (1)").await;
    let mut last = src.locals(1).await.remove(0).1;
    // The idle check is armed by the first heartbeat (the source does not
    // assume a server sends them): let one heartbeat period pass.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    eprintln!("step 1: stall");
    proxy.stall();
    db.exec("INSERT INTO shop.t VALUES (2)").await;
    let t0 = Instant::now();
    let e = src.error().await;
    assert!(e.is_transient(), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    proxy.restore();

    // 2. Resume; then a cut line.
    let mut src = start_source_with(source(), store.clone(), units.clone(), Some(last));
    let got = src.locals(1).await;
    assert_eq!(ids(&got), vec![2]);
    last = got[0].1.clone();
    eprintln!("step 2: cut");
    proxy.cut();
    let e = src.error().await;
    assert!(e.is_transient(), "{e:?}");
    proxy.restore();
    db.exec("INSERT INTO shop.t VALUES (3)").await;

    // 3. Resume; then a server restart.
    let mut src = start_source_with(source(), store.clone(), units.clone(), Some(last));
    let got = src.locals(1).await;
    assert_eq!(ids(&got), vec![3]);
    last = got[0].1.clone();
    eprintln!("step 3: restart");
    db.restart().await;
    let e = src.error().await;
    assert!(e.is_transient(), "{e:?}");
    db.exec("INSERT INTO shop.t VALUES (4)").await;
    let mut src = start_source_with(source(), store, units, Some(last));
    let got = src.locals(1).await;
    assert_eq!(ids(&got), vec![4]);
    src.stop().await;
}
