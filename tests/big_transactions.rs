//! Transactions of any size (docs/architecture.md, "Transactions of any
//! size"): a source transaction far above the link's frame limit and the
//! agents' memory budget is journaled, shipped and applied in parts, as one
//! target transaction, and every DC ends with the same tables.
//!
//! Memory is asserted as a bound on the agents' peak resident set (VmHWM),
//! generously above the budget stated in the docs; the real figures are
//! measured by `./scripts/bench.sh` (case `big-transaction`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{options, Cluster, ClusterOptions};
use std::time::Duration;

/// Peak RSS an agent may reach in these tests, KiB. The documented budget
/// is under 200 MiB; the bound leaves room for the debug build and the TLS
/// and redb caches.
const PEAK_RSS_BOUND_KIB: u64 = 300 * 1024;

/// Origin seq of `origin` applied at `db` (the marker).
async fn marker_seq(db: &dcsync_testkit::mariadb::MariaDb, origin: &str) -> i64 {
    db.query_i64(&format!(
        "SELECT CAST(COALESCE(MAX(seq),0) AS SIGNED) FROM dcsync.apply_marker WHERE origin = '{origin}'"
    ))
    .await
}

/// Waits until `sql` (one integer) returns `want` at DC `i`.
async fn wait_value(c: &mut Cluster, i: usize, sql: &str, want: i64, secs: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        c.agents.assert_alive();
        let got = c.dcs[i].db.query_i64(sql).await;
        if got == want {
            return;
        }
        if std::time::Instant::now() > deadline {
            c.agents.dump();
            panic!("{sql} at {} is {got}, want {want}", c.dcs[i].id);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn big(schema_sql: &str) -> ClusterOptions {
    ClusterOptions {
        schema_sql: schema_sql.into(),
        // Rows of 10 MB and 60 MB: the servers must accept them (the
        // source's rows are as large as the application wrote them).
        db_args: vec![
            "--max-allowed-packet=512M".into(),
            "--innodb-log-file-size=256M".into(),
        ],
        ..options()
    }
}

/// Checks that both agents stayed within [`PEAK_RSS_BOUND_KIB`] and
/// returns their peaks (KiB).
fn assert_peak_rss(c: &Cluster) -> Vec<u64> {
    let peaks: Vec<u64> = (0..c.dcs.len())
        .map(|i| c.agents.peak_rss_kib(i).expect("agent running"))
        .collect();
    for (i, p) in peaks.iter().enumerate() {
        assert!(
            *p < PEAK_RSS_BOUND_KIB,
            "agent {} peaked at {} MiB (bound {} MiB)",
            c.dcs[i].id,
            p / 1024,
            PEAK_RSS_BOUND_KIB / 1024
        );
    }
    peaks
}

/// Waits until the peer's marker of `origin` passes `from + 1`: the
/// transaction was applied, in more than one part.
async fn assert_applied_in_parts(c: &Cluster, origin: usize, target: usize, from: i64) {
    let id = c.dcs[origin].id.clone();
    let to = marker_seq(&c.dcs[target].db, &id).await;
    assert!(
        to > from + 1,
        "{id}'s transaction was applied as seq {from}..{to}: not split in parts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_300k_row_update_replicates_in_bounded_memory() {
    // Ten columns, 300,000 rows, the same in both DCs before the agents
    // start (the Sequence engine generates them).
    let schema = "
CREATE DATABASE IF NOT EXISTS shop;
CREATE TABLE shop.wide (
  id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, a INT, b INT, c BIGINT,
  d VARCHAR(32), e VARCHAR(32), f DECIMAL(12,2), g DATETIME(6), n INT NOT NULL
) ENGINE=InnoDB;
INSERT INTO shop.wide SELECT seq, seq % 97, seq, seq * 2, seq * 3,
  CONCAT('name-', seq), CONCAT('city-', seq % 1000), seq / 7, '2026-01-02 03:04:05.000006', 0
  FROM shop.seq_1_to_300000;
";
    let mut c = Cluster::start(big(schema)).await;
    let before = marker_seq(&c.dcs[1].db, "bj").await;
    c.dcs[0]
        .db
        .exec("UPDATE shop.wide SET n = n + 1, e = CONCAT(e, '-x')")
        .await;
    wait_value(
        &mut c,
        1,
        "SELECT CAST(SUM(n) AS SIGNED) FROM shop.wide",
        300_000,
        600,
    )
    .await;
    c.wait_converged(&["shop.wide"], 60).await;
    assert_applied_in_parts(&c, 0, 1, before).await;
    let peaks = assert_peak_rss(&c);
    eprintln!("peak RSS (KiB) per agent: {peaks:?}");
    c.agents.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_1gb_transaction_replicates_in_bounded_memory() {
    let schema = "
CREATE DATABASE IF NOT EXISTS shop;
CREATE TABLE shop.blobs (id INT PRIMARY KEY, user_id BIGINT NOT NULL, body LONGBLOB) ENGINE=InnoDB;
";
    let mut c = Cluster::start(big(schema)).await;
    let before = marker_seq(&c.dcs[1].db, "bj").await;
    // 100 rows of 10 MiB in one transaction: 1 GiB of row images.
    c.dcs[0]
        .db
        .exec(
            "INSERT INTO shop.blobs SELECT seq, seq, \
             REPEAT(CONCAT(CHAR(65 + seq % 26), SHA2(seq, 256)), 10 * 1024 * 1024 DIV 65) \
             FROM shop.seq_1_to_100",
        )
        .await;
    let bytes = c.dcs[0]
        .db
        .query_i64("SELECT CAST(SUM(LENGTH(body)) AS SIGNED) FROM shop.blobs")
        .await;
    assert!(bytes > 1_000_000_000, "only {bytes} bytes written");
    wait_value(&mut c, 1, "SELECT COUNT(*) FROM shop.blobs", 100, 900).await;
    c.wait_converged(&["shop.blobs"], 60).await;
    assert_applied_in_parts(&c, 0, 1, before).await;
    let peaks = assert_peak_rss(&c);
    eprintln!("peak RSS (KiB) per agent: {peaks:?}");
    c.agents.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn updating_one_column_of_a_row_with_a_60mb_blob_replicates() {
    let schema = "
CREATE DATABASE IF NOT EXISTS shop;
CREATE TABLE shop.docs (id INT PRIMARY KEY, user_id BIGINT NOT NULL, title VARCHAR(64), body LONGBLOB) ENGINE=InnoDB;
INSERT INTO shop.docs VALUES (1, 1, 'v1', REPEAT(SHA2('doc', 512), 60 * 1024 * 1024 DIV 128));
";
    let mut c = Cluster::start(big(schema)).await;
    c.dcs[0]
        .db
        .exec("UPDATE shop.docs SET title = 'v2' WHERE id = 1")
        .await;
    wait_value(
        &mut c,
        1,
        "SELECT COUNT(*) FROM shop.docs WHERE title = 'v2' AND LENGTH(body) = 62914560",
        1,
        300,
    )
    .await;
    c.wait_converged(&["shop.docs"], 60).await;
    // And back: an update in sh reaches bj.
    c.dcs[1]
        .db
        .exec("UPDATE shop.docs SET title = 'v3' WHERE id = 1")
        .await;
    wait_value(
        &mut c,
        0,
        "SELECT COUNT(*) FROM shop.docs WHERE title = 'v3'",
        1,
        300,
    )
    .await;
    c.wait_converged(&["shop.docs"], 60).await;
    c.agents.assert_alive();
}
