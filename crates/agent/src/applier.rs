//! The agent's [`Applier`]: one sink per (origin DC, store), connected lazily
//! and reconnected after a failure. Apply calls for the same origin and store
//! are serialised by a mutex, so per-origin commit order holds even while an
//! old connection of that origin is still draining.

use crate::registry::REGISTRY;
use dcsync_core::conflict::Versions;
use dcsync_core::connector::{AppliedMark, ConnectorError, DynSink};
use dcsync_core::topology::StoreConfig;
use dcsync_core::{HlcClock, Topology, Transaction};
use dcsync_link::{Applier, ApplyError, BoxFuture};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Mutex;

struct Slot {
    store: StoreConfig,
    url: String,
    sink: Mutex<Option<Box<dyn DynSink>>>,
}

/// Sinks of this agent, by (origin, store).
pub struct AgentApplier {
    slots: BTreeMap<(String, String), Slot>,
    clock: Arc<HlcClock>,
    /// Version index and conflict log per store with a conflict policy.
    versions: BTreeMap<String, Arc<dyn Versions>>,
    /// The HLC of the last transaction applied per (origin, store): the
    /// version index's pruning horizon.
    applied_hlcs: Arc<crate::version_upkeep::AppliedHlcs>,
}

impl AgentApplier {
    /// One (lazily connected) sink per peer DC and store of `topo`.
    pub fn new(
        topo: &Topology,
        me: &str,
        clock: Arc<HlcClock>,
        versions: BTreeMap<String, Arc<dyn Versions>>,
        applied_hlcs: Arc<crate::version_upkeep::AppliedHlcs>,
    ) -> Self {
        let mut slots = BTreeMap::new();
        for peer in topo.peers_of(me) {
            for store in &topo.stores {
                if let Some(url) = store.url_for(me) {
                    slots.insert(
                        (peer.id.clone(), store.name.clone()),
                        Slot {
                            store: store.clone(),
                            url: url.expose().to_string(),
                            sink: Mutex::new(None),
                        },
                    );
                }
            }
        }
        AgentApplier {
            slots,
            clock,
            versions,
            applied_hlcs,
        }
    }

    fn slot(&self, origin: &str, store: &str) -> Result<&Slot, ApplyError> {
        self.slots
            .get(&(origin.to_string(), store.to_string()))
            .ok_or_else(|| ApplyError::UnknownStore(store.to_string()))
    }
}

fn to_apply_error(store: &str, e: ConnectorError) -> ApplyError {
    match e {
        ConnectorError::Transient(m) => ApplyError::Transient(format!("store {store}: {m}")),
        ConnectorError::Definite(m) => ApplyError::Definite(format!("store {store}: {m}")),
    }
}

/// The connected sink of `slot` (connecting it first if needed), or the
/// connect error.
async fn connected<'g>(
    slot: &Slot,
    guard: &'g mut Option<Box<dyn DynSink>>,
    store: &str,
    versions: Option<&Arc<dyn Versions>>,
) -> Result<&'g mut Box<dyn DynSink>, ApplyError> {
    if guard.is_none() {
        let connector = REGISTRY
            .connector_for(&slot.store)
            .map_err(|e| to_apply_error(store, e))?;
        let mut sink = connector
            .connect_sink(slot.url.clone(), slot.store.clone())
            .await
            .map_err(|e| to_apply_error(store, e))?;
        if let Some(v) = versions {
            sink.set_versions(v.clone());
        }
        *guard = Some(sink);
    }
    guard
        .as_mut()
        .ok_or_else(|| ApplyError::Transient(format!("store {store}: sink unavailable")))
}

impl Applier for AgentApplier {
    fn applied<'a>(
        &'a self,
        origin: &'a str,
        store: &'a str,
    ) -> BoxFuture<'a, Result<AppliedMark, ApplyError>> {
        Box::pin(async move {
            let slot = self.slot(origin, store)?;
            let mut guard = slot.sink.lock().await;
            let result = connected(slot, &mut guard, store, self.versions.get(store))
                .await?
                .applied_mark(origin)
                .await;
            result.map_err(|e| {
                *guard = None;
                to_apply_error(store, e)
            })
        })
    }

    fn apply<'a>(
        &'a self,
        origin: &'a str,
        store: &'a str,
        txs: Vec<Transaction>,
    ) -> BoxFuture<'a, Result<u64, ApplyError>> {
        Box::pin(async move {
            let slot = self.slot(origin, store)?;
            let max = txs.iter().map(|t| t.hlc).max();
            if let Some(max) = max {
                self.clock.observe(max);
            }
            let mut guard = slot.sink.lock().await;
            let result = connected(slot, &mut guard, store, self.versions.get(store))
                .await?
                .apply(origin, &txs)
                .await;
            if let (Ok(_), Some(max)) = (&result, max) {
                self.applied_hlcs.note(origin, store, max);
            }
            result.map_err(|e| {
                tracing::debug!(%origin, %store, error = %e, "apply failed; the sink reconnects (the receiver reports the failure and the sender retries the stream)");
                *guard = None;
                to_apply_error(store, e)
            })
        })
    }
}
