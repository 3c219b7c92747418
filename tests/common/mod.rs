//! The multi-DC harness of `dcsync-testkit` ([`dcsync_testkit::cluster`]),
//! with this package's `dcsync` binary.

// Each test binary uses a different part of it.
#![allow(dead_code, unused_imports)]

pub use dcsync_testkit::cluster::{tail, Cluster, ClusterOptions, MYSQL_STORE, REDIS_STORE};

/// Default cluster options: two DCs (`bj`, `sh`), MariaDB only, mutual TLS,
/// agents from the `dcsync` binary built for these tests.
pub fn options() -> ClusterOptions {
    ClusterOptions::new(env!("CARGO_BIN_EXE_dcsync"))
}
