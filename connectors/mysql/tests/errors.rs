//! Definite errors: a replicated table without a primary key, and a server
//! whose binlog is not in ROW format (scenario 2).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use dcsync_core::connector::ConnectorError;
use dcsync_testkit::mariadb::MariaDbOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_without_primary_key_is_refused_by_name() {
    let db = start_db(Default::default()).await;
    db.exec("CREATE DATABASE shop; CREATE TABLE shop.nopk (a INT, b INT)")
        .await;
    db.exec("CREATE DATABASE other; CREATE TABLE other.x (a INT)")
        .await;
    let (store, units) = store(&["shop.*"], None);
    let mut src = start_source(db.url(), store, units, None);
    // A table without a key outside the replicated tables is fine.
    wait_ready(&db, &mut src).await;
    db.exec("INSERT INTO other.x VALUES (1)").await;
    db.exec("INSERT INTO shop.nopk VALUES (1, 2)").await;
    match src.error().await {
        ConnectorError::Definite(m) => {
            assert!(
                m.contains("table shop.nopk has no PRIMARY KEY"),
                "message does not name the table: {m}"
            );
        }
        e => panic!("expected a definite error, got {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_binlog_format_is_refused_by_name() {
    let db = start_db(MariaDbOptions {
        binlog_format: "STATEMENT".into(),
        ..MariaDbOptions::default()
    })
    .await;
    let (store, units) = store(&[], None);
    let src = start_source(db.url(), store, units, None);
    match src.error().await {
        ConnectorError::Definite(m) => {
            assert!(m.contains("binlog_format=STATEMENT"), "{m}");
            assert!(m.contains("binlog_format=ROW"), "{m}");
        }
        e => panic!("expected a definite error, got {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_transient() {
    let port = dcsync_testkit::free_port();
    let (store, units) = store(&[], None);
    let src = start_source(
        format!("mysql://root:secret@127.0.0.1:{port}"),
        store,
        units,
        None,
    );
    let e = src.error().await;
    assert!(e.is_transient(), "{e:?}");
    assert!(!e.to_string().contains("secret"), "password leaked: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_row_image_and_metadata_are_refused_by_name() {
    for (arg, name) in [
        ("--binlog-row-image=MINIMAL", "binlog_row_image=MINIMAL"),
        (
            "--binlog-row-metadata=MINIMAL",
            "binlog_row_metadata=MINIMAL",
        ),
    ] {
        let db = start_db(MariaDbOptions {
            extra_args: vec![arg.into()],
            ..MariaDbOptions::default()
        })
        .await;
        let (store, units) = store(&[], None);
        let src = start_source(db.url(), store, units, None);
        match src.error().await {
            ConnectorError::Definite(m) => assert!(m.contains(name), "{m}"),
            e => panic!("expected a definite error, got {e:?}"),
        }
    }
}

/// A `tables` pattern with a typo in its schema would make a store that
/// looks healthy and replicates nothing: the source refuses to start and
/// names the pattern (a pattern over an existing but empty schema is fine:
/// `resume.rs` creates its tables after the source started).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_pattern_matching_nothing_is_refused_by_name() {
    let db = start_db(Default::default()).await;
    db.exec("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY)")
        .await;
    let (store, units) = store(&["shop.*", "shpo.*"], None);
    let src = start_source(db.url(), store, units, None);
    match src.error().await {
        ConnectorError::Definite(m) => {
            assert!(
                m.contains("\"shpo.*\"") && m.contains("match no schema") && m.contains("shop"),
                "message does not name the pattern and the schemas: {m}"
            );
            assert!(!m.contains("\"shop.*\""), "shop.* matches: {m}");
        }
        e => panic!("expected a definite error, got {e:?}"),
    }
}
