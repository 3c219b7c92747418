//! The periodic consistency check of a store (`verify_every_s`; see
//! docs/operations.md, "Checking consistency").
//!
//! One DC's agent per store runs it: the store's `verify_from` (default the
//! first `[[dc]]` of the topology), so the stores are read once per period
//! and not once per agent. Every `verify_every_s` seconds, counted from the
//! end of the previous check, it compares the store across every DC with
//! the code of `dcsync verify` ([`crate::verify::compare`]: the same
//! re-checks, read-only, never a repair), reaching the other DCs' stores
//! through the topology's urls as the command does, and publishes the
//! result in the status document (`verify[]`, [`VerifyStatus`]) and in the
//! `dcsync_verify_*` metrics. Differences are logged as a warning.

use crate::status::{ago, StatusBoard};
use crate::verify::{checked_text, difference_text, Args};
use dcsync_core::Topology;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::watch;

/// Differences named in the status (the rest are counted).
pub const NAMED_DIFFERENCES: usize = 5;
/// Delay before each re-check of a differing unit, as `dcsync verify`'s
/// default `--recheck-ms`.
const RECHECK: Duration = Duration::from_millis(2000);
/// Re-checks a difference must survive, as `dcsync verify`'s default.
const RECHECKS: u32 = 3;
/// Rows (keys) per chunk (bucket), as `dcsync verify`'s default.
const CHUNK_ROWS: u64 = 10_000;

/// The periodic check of one store, in the status document of the agent
/// that runs it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VerifyStatus {
    /// Store name.
    pub store: String,
    /// Seconds between checks (`verify_every_s`).
    pub every_s: u64,
    /// Checks completed since the agent started.
    pub runs: u64,
    /// When the running check started, ms since the Unix epoch; `None`
    /// between checks.
    pub running_since_ms: Option<u64>,
    /// When the last completed check ended, ms since the Unix epoch;
    /// `None` before the first. The fields below are that check's.
    pub last_ms: Option<u64>,
    /// Its duration, ms.
    pub elapsed_ms: u64,
    /// The DCs it compared.
    pub dcs: Vec<String>,
    /// What it checked: `3 table(s), 1202 row(s) in 21 chunk(s)`.
    pub checked: String,
    /// Rows or keys (of the first DC) in the compared units.
    pub items: u64,
    /// Rows or keys that differed in every round, plus collections missing
    /// or defined differently.
    pub differences: u64,
    /// Rows or keys still changing in every round (not concluded).
    pub unsettled: u64,
    /// Collections that could not be compared (a table without a primary
    /// key).
    pub not_compared: u64,
    /// The first [`NAMED_DIFFERENCES`] differences, as `dcsync verify`
    /// prints them (`table shop.items row id=17: values differ (bj: …,
    /// sh: …)`).
    pub named: Vec<String>,
    /// Why the last check could not compare (a store unreachable); cleared
    /// by the next check that completes.
    pub error: Option<String>,
    /// When that check failed, ms since the Unix epoch.
    pub error_ms: Option<u64>,
}

/// Starts the periodic checks this agent (`me`) runs: one task per store
/// with `verify_every_s > 0` whose `verify_from` is `me`.
pub fn spawn(
    topo: &Topology,
    me: &str,
    board: &StatusBoard,
    shutdown: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for store in &topo.stores {
        if store.verify_every_s == 0 || store.verify_from != me {
            continue;
        }
        board.set_verify(VerifyStatus {
            store: store.name.clone(),
            every_s: store.verify_every_s,
            ..Default::default()
        });
        tracing::info!(store = %store.name, every_s = store.verify_every_s, "periodic consistency check of the store across DCs from this DC");
        tasks.push(tokio::spawn(run(
            topo.clone(),
            store.name.clone(),
            Duration::from_secs(store.verify_every_s),
            board.clone(),
            shutdown.clone(),
        )));
    }
    tasks
}

/// Checks `store` every `every` (after each check ends) until shutdown.
async fn run(
    topo: Topology,
    store: String,
    every: Duration,
    board: StatusBoard,
    mut shutdown: watch::Receiver<bool>,
) {
    let args = Args {
        store: store.clone(),
        dcs: Vec::new(),
        json: false,
        recheck: RECHECK,
        rechecks: RECHECKS,
        chunk_rows: CHUNK_ROWS,
        repair_from: None,
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        let started = dcsync_core::now_ms();
        board.update_verify(&store, |v| v.running_since_ms = Some(started));
        let result = tokio::select! {
            r = crate::verify::compare(&topo, "the topology", &args) => r,
            _ = shutdown.changed() => return,
        };
        let now = dcsync_core::now_ms();
        match result {
            Ok(r) => {
                let differences = r.differences.len() as u64;
                let named: Vec<String> = r
                    .differences
                    .iter()
                    .take(NAMED_DIFFERENCES)
                    .map(|d| difference_text(&r.terms, d))
                    .collect();
                if differences > 0 {
                    tracing::warn!(%store, differences, dcs = %r.dcs.join(", "), first = %named.join("; "), "periodic consistency check: the DCs differ (`dcsync status` names the first ones; `dcsync verify --repair` makes them equal)");
                } else {
                    tracing::info!(%store, checked = %checked_text(&r), unsettled = r.unsettled.len(), not_compared = r.not_compared.len(), "periodic consistency check: no difference");
                }
                dcsync_core::events::VerifyChecked {
                    store: &store,
                    at_ms: now,
                    differences,
                }
                .emit();
                board.update_verify(&store, |v| {
                    v.runs += 1;
                    v.running_since_ms = None;
                    v.last_ms = Some(now);
                    v.elapsed_ms = r.elapsed_ms;
                    v.dcs = r.dcs.clone();
                    v.checked = checked_text(&r);
                    v.items = r.items;
                    v.differences = differences;
                    v.unsettled = r.unsettled.len() as u64;
                    v.not_compared = r.not_compared.len() as u64;
                    v.named = named;
                    v.error = None;
                    v.error_ms = None;
                });
            }
            Err(e) => {
                let error = format!("{e:#}");
                tracing::warn!(%store, %error, "periodic consistency check could not compare the store");
                dcsync_core::events::VerifyFailed { store: &store }.emit();
                board.update_verify(&store, |v| {
                    v.running_since_ms = None;
                    v.error = Some(error);
                    v.error_ms = Some(now);
                });
            }
        }
    }
}

/// Prints the periodic checks of a status document (`dcsync status`).
pub fn print(checks: &[VerifyStatus], now: u64) {
    if checks.is_empty() {
        return;
    }
    println!(
        "{:<10} {:>7} {:<10} {:>11}  CHECKED",
        "VERIFY", "EVERY", "LAST", "DIFFERENCES"
    );
    for v in checks {
        let last = v.last_ms.map_or("never".to_string(), |t| ago(t, now));
        let differences = if v.last_ms.is_some() {
            v.differences.to_string()
        } else {
            "-".to_string()
        };
        let mut checked = v.checked.clone();
        if v.last_ms.is_some() {
            checked += &format!(" in {}", v.dcs.join(", "));
            if v.unsettled > 0 {
                checked += &format!(", {} still changing", v.unsettled);
            }
            if v.not_compared > 0 {
                checked += &format!(", {} not compared", v.not_compared);
            }
        }
        println!(
            "{:<10} {:>6}s {:<10} {:>11}  {checked}",
            v.store, v.every_s, last, differences
        );
        for d in &v.named {
            println!("           difference: {d}");
        }
        if v.differences > v.named.len() as u64 {
            println!(
                "           ... and {} more (`dcsync verify --store {}` names them all)",
                v.differences - v.named.len() as u64,
                v.store
            );
        }
        if let Some(since) = v.running_since_ms {
            println!("           checking now (since {})", ago(since, now));
        }
        if let (Some(e), Some(at)) = (&v.error, v.error_ms) {
            println!(
                "           ERROR ({}): could not compare: {e}",
                ago(at, now)
            );
        }
    }
}
