//! Upkeep of the version index (docs/conflicts.md, "Version index size"):
//! folds the version log into the index's B-tree in the background (the
//! journal's `versions` module), and prunes versions that no change still
//! to come can be older than.
//!
//! # The pruning horizon
//! Every origin stream is applied here in seq order, and an origin stamps
//! its transactions with a rising HLC. Once this DC applied a transaction
//! of HLC `h` from origin O, every later change of O is stamped above `h`
//! (up to the few ticks by which a re-ship and a source transaction of O
//! can be journaled out of stamp order). So with `applied(O)` the HLC of
//! the last transaction of O applied here, a version below
//! `min over the other DCs O of applied(O)` can never again decide a
//! `lww` comparison here: every change still to come is greater. The
//! agent prunes below that minimum minus `version_retention_s`, which
//! covers the out-of-order ticks and keeps, for that long, the owner's
//! veto (`owner`: a non-owner's change over the owner's own value loses
//! even when its HLC is greater) against a change that was concurrent
//! with the owner's write but arrives late. An origin of which nothing was
//! applied since this agent started holds the horizon back: nothing is
//! pruned until every other DC applied something here.

use dcsync_core::topology::{StoreConfig, Topology};
use dcsync_core::Hlc;
use dcsync_journal::Journal;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Most versions folded per write transaction: each holds the journal's
/// writer lock, which a source append or a sink's record then waits for
/// (about 10-15 ms for 8,192 versions on the benchmark machine). Folding
/// 190,000 random-key versions took 0.75 CPU-s in chunks of 2,048 and
/// 0.45 CPU-s in chunks of 8,192 inserted in key order (fewer commits,
/// each leaf written once per commit); 16,384 gained nothing more.
const FOLD_CHUNK: usize = 8192;

/// How often the log is folded when it holds something.
const FOLD_EVERY: Duration = Duration::from_millis(100);

/// Keys scanned per pruning transaction.
const PRUNE_CHUNK: usize = 4096;

/// Longest time between two pruning passes (shorter when the retention is
/// short: a quarter of it, at least a second).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The HLC of the last transaction applied here, per (origin, store).
#[derive(Debug, Default)]
pub struct AppliedHlcs(Mutex<HashMap<(String, String), Hlc>>);

impl AppliedHlcs {
    /// Notes that transactions of `origin` up to HLC `hlc` were applied to
    /// `store`.
    pub fn note(&self, origin: &str, store: &str, hlc: Hlc) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let e = m
            .entry((origin.to_string(), store.to_string()))
            .or_insert(hlc);
        *e = (*e).max(hlc);
    }

    fn get(&self, origin: &str, store: &str) -> Option<Hlc> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&(origin.to_string(), store.to_string())).copied()
    }
}

/// The pruning horizon of `store` at DC `me` (see the module docs):
/// `None` while some other DC with the store has nothing applied here.
pub fn horizon(
    applied: &AppliedHlcs,
    topo: &Topology,
    me: &str,
    store: &StoreConfig,
) -> Option<Hlc> {
    let mut min: Option<Hlc> = None;
    for dc in topo.dcs.iter().filter(|d| d.id != me) {
        if store.url_for(&dc.id).is_none() {
            continue;
        }
        let h = applied.get(&dc.id, &store.name)?;
        min = Some(min.map_or(h, |m| m.min(h)));
    }
    let retention_ms = store.version_retention_s.saturating_mul(1000);
    min.map(|m| Hlc::new(m.physical_ms().saturating_sub(retention_ms), 0))
}

/// Starts the fold loop and, for each store with a conflict policy, the
/// pruning loop. Both stop on `shutdown`; the fold loop folds what is left
/// before it ends, so a cleanly stopped agent leaves an empty log.
pub fn spawn(
    journal: Arc<Journal>,
    topo: &Topology,
    me: &str,
    applied: Arc<AppliedHlcs>,
    shutdown: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let j = journal.clone();
    let mut sd = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            let stop = tokio::select! {
                _ = tokio::time::sleep(FOLD_EVERY) => false,
                _ = sd.changed() => true,
            };
            if j.unfolded_versions() > 0 || stop {
                let jj = j.clone();
                match tokio::task::spawn_blocking(move || jj.compact_versions(FOLD_CHUNK)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot fold the version log (retried; the versions stay readable in memory and in the log)"),
                    Err(e) => tracing::warn!(error = %e, "version log fold task failed"),
                }
                dcsync_core::events::VersionUpkeep {
                    store: "",
                    pruned: 0,
                    unfolded: j.unfolded_versions() as u64,
                }
                .emit();
            }
            if stop || *sd.borrow() {
                return;
            }
        }
    }));
    let topo = Arc::new(topo.clone());
    for store in topo
        .stores
        .iter()
        .filter(|s| s.conflict != dcsync_core::conflict::ConflictPolicy::None)
    {
        if store.url_for(me).is_none() {
            continue;
        }
        let every = PRUNE_EVERY.min(
            Duration::from_millis(store.version_retention_s.saturating_mul(250))
                .max(Duration::from_secs(1)),
        );
        let (journal, topo, applied, me) = (
            journal.clone(),
            topo.clone(),
            applied.clone(),
            me.to_string(),
        );
        let store = store.clone();
        let mut sd = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = sd.changed() => return,
                }
                let Some(below) = horizon(&applied, &topo, &me, &store) else {
                    continue;
                };
                match prune_store(&journal, &store.name, below, &sd).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(store = %store.name, pruned = n, %below, "version index: pruned versions every other DC's applied changes passed");
                        dcsync_core::events::VersionUpkeep {
                            store: &store.name,
                            pruned: n,
                            unfolded: journal.unfolded_versions() as u64,
                        }
                        .emit();
                    }
                    Err(e) => {
                        tracing::warn!(store = %store.name, error = %e, "cannot prune the version index (retried at the next pass)")
                    }
                }
            }
        }));
    }
    tasks
}

/// One pruning pass over `store`'s index, chunk by chunk; returns how many
/// versions were removed.
async fn prune_store(
    journal: &Arc<Journal>,
    store: &str,
    below: Hlc,
    shutdown: &watch::Receiver<bool>,
) -> Result<u64, String> {
    let mut after: Option<Vec<u8>> = None;
    let mut removed = 0u64;
    loop {
        if *shutdown.borrow() {
            return Ok(removed);
        }
        let (j, s, a) = (journal.clone(), store.to_string(), after.take());
        let (n, next) = tokio::task::spawn_blocking(move || {
            j.prune_versions(&s, below, a.as_deref(), PRUNE_CHUNK)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        removed += n as u64;
        match next {
            Some(k) => after = Some(k),
            None => return Ok(removed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_horizon_waits_for_every_other_dc_and_keeps_the_retention() {
        let topo = dcsync_core::Topology::parse(
            r#"
cluster = "c"
[[dc]]
id = "bj"
link = "127.0.0.1:1"
[[dc]]
id = "sh"
link = "127.0.0.1:2"
[[dc]]
id = "tk"
link = "127.0.0.1:3"
[units]
count = 3
owners = { bj = "0", sh = "1", tk = "2" }
[[store]]
name = "kv"
kind = "redis"
version_retention_s = 10
url = { bj = "redis://127.0.0.1:1", sh = "redis://127.0.0.1:2", tk = "redis://127.0.0.1:3" }
"#,
            &crate::registry::REGISTRY,
        );
        let Ok(topo) = topo else {
            panic!("topology: {topo:?}");
        };
        let store = &topo.stores[0];
        let a = AppliedHlcs::default();
        assert_eq!(horizon(&a, &topo, "bj", store), None);
        a.note("sh", "kv", Hlc::new(100_000, 3));
        assert_eq!(
            horizon(&a, &topo, "bj", store),
            None,
            "tk applied nothing yet"
        );
        a.note("tk", "kv", Hlc::new(50_000, 0));
        a.note("tk", "kv", Hlc::new(40_000, 0));
        // The slowest origin, minus 10 s of retention.
        assert_eq!(horizon(&a, &topo, "bj", store), Some(Hlc::new(40_000, 0)));
        a.note("tk", "kv", Hlc::new(200_000, 0));
        assert_eq!(horizon(&a, &topo, "bj", store), Some(Hlc::new(90_000, 0)));
    }
}
