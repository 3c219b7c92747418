//! Test harness for dcsync: starts real `mariadbd` and `redis-server`
//! processes on free loopback ports with temporary data directories, and
//! stops and removes them on drop. Test-only: panics on setup failure.
//!
//! The servers are a prerequisite, not an option: `scripts/setup.sh`
//! installs them, and a test that cannot start one fails with the reason
//! (it is never skipped or reported as passed). Tests that need a server
//! which cannot be installed here (MySQL 8) are `#[ignore]`d with a reason
//! and fail when run with `--ignored` but without their server address.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod cluster;
pub mod mariadb;
pub mod prometheus;
pub mod proxy;
pub mod redis;
pub mod sentinel;
pub mod status;

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 for a server or agent that binds it later;
/// the same as [`listen_port`].
pub fn free_port() -> u16 {
    listen_port()
}

/// Ports this process has handed out: tests of one binary run in parallel
/// threads, and a port chosen by one must not be chosen again by another
/// before its server binds it.
static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// A free TCP port on 127.0.0.1 below the kernel's ephemeral range (32768+
/// on Linux), for a listener that binds later: the many client connections
/// of a test or benchmark take their ports from the ephemeral range, so they
/// cannot take this one between choosing it and binding it, and no port is
/// handed out twice in one process (two parallel tests of one binary once
/// chose the same port, and the second agent could not bind it).
pub fn listen_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for i in 0..10_000u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u32(std::process::id());
        let port = 20_000 + (h.finish() % 12_000) as u16;
        if handed.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.push(port);
            return port;
        }
    }
    panic!("no free port in 20000-31999")
}

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what`
/// after `deadline`. Tests wait on conditions, never on fixed sleeps.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The panic message for a server binary that could not be started.
fn missing(binary: &str, e: &std::io::Error) -> String {
    format!(
        "cannot run {binary} ({e}): the tests need MariaDB and Redis server binaries; \
         install them with scripts/setup.sh (apt-get install mariadb-server redis-server)"
    )
}

/// FNV-1a of `bytes`, for cache keys.
pub fn short_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// With `DCSYNC_TEST_KEEP` set, copies the agents' logs `(dc, path)` to
/// `<temp dir>/dcsync-kept-<pid>-<n>` (and says where) before a cluster's
/// temporary directory is removed: for chasing a failure or timing a
/// benchmark's steps.
pub fn keep_logs(logs: &[(String, std::path::PathBuf)]) {
    if std::env::var_os("DCSYNC_TEST_KEEP").is_none() {
        return;
    }
    static KEPT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = KEPT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let to = std::env::temp_dir().join(format!("dcsync-kept-{}-{n}", std::process::id()));
    if std::fs::create_dir_all(&to).is_err() {
        return;
    }
    for (dc, path) in logs {
        let _ = std::fs::copy(path, to.join(format!("agent-{dc}.log")));
    }
    eprintln!("agent logs kept in {}", to.display());
}
