//! One active agent per DC: the lease held in the DC's own store
//! (docs/operations.md, "Standby agent").
//!
//! Before it opens its journal, binds its ports or reads a source, `dcsync
//! run` takes the DC's lease in the first store of the DC whose kind keeps
//! one (`Connector::lease`; MySQL: `dcsync.agent_lease`). The holder is
//! `host:data-dir`, so an agent restarted with its own data directory takes
//! its lease back at once, while a second agent (another host, another
//! directory) waits as a standby and takes over once the lease expires. The
//! active agent renews it every third of its lifetime; when a renewal finds
//! another holder the agent exits at once: stopping abruptly is safe
//! (exactly-once across `kill -9`), running on beside a new active agent is
//! not. A renewal that cannot reach the store is logged and retried (the
//! other stores of the DC keep syncing); the window this leaves, two
//! agents active while the store is unreachable from one and not the
//! other, is bounded by the next renewal that reaches the store.

use crate::registry::REGISTRY;
use dcsync_core::connector::{BoxFuture, ConnectorError, Lease, LeaseRequest};
use dcsync_core::Topology;
use std::path::Path;
use std::time::{Duration, Instant};

/// Exit code of an agent that lost its lease.
pub const LOST_LEASE_EXIT: i32 = 3;

/// One lease call of a store (`Connector::lease` with its arguments bound).
type LeaseCall =
    Box<dyn Fn() -> Option<BoxFuture<'static, Result<Lease, ConnectorError>>> + Send + Sync>;

/// The lease of one DC in one store.
pub struct DcLease {
    store: String,
    call: LeaseCall,
    req: LeaseRequest,
}

impl DcLease {
    /// The lease of DC `me` for this agent (holder `host:data_dir`), in the
    /// first store of `me` whose kind keeps leases; `None` if none does
    /// (then nothing prevents a second agent: documented).
    pub fn new(topo: &Topology, me: &str, data_dir: &Path, ttl_ms: u64) -> Option<DcLease> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        let req = LeaseRequest {
            dc: me.to_string(),
            holder: format!("{host}:{}", dir.display()),
            ttl_ms,
        };
        for store in &topo.stores {
            let (Ok(connector), Some(url)) = (REGISTRY.connector_for(store), store.url_for(me))
            else {
                continue;
            };
            let url = url.expose().to_string();
            if connector.lease(url.clone(), req.clone()).is_none() {
                continue;
            }
            let r = req.clone();
            return Some(DcLease {
                store: store.name.clone(),
                call: Box::new(move || connector.lease(url.clone(), r.clone())),
                req,
            });
        }
        None
    }

    async fn ask(&self) -> Result<Lease, ConnectorError> {
        match (self.call)() {
            Some(f) => f.await,
            None => Err(ConnectorError::Definite("the store keeps no lease".into())),
        }
    }

    /// Waits until this agent holds the lease (a standby logs who holds it
    /// meanwhile).
    pub async fn acquire(&self) {
        let ttl = self.req.ttl_ms;
        let mut said = String::new();
        loop {
            match self.ask().await {
                Ok(l) if l.holder == self.req.holder => {
                    tracing::info!(dc = %self.req.dc, store = %self.store, holder = %l.holder, ttl_ms = ttl, "holding the DC's agent lease: this agent is active");
                    return;
                }
                Ok(l) => {
                    if said != l.holder {
                        tracing::warn!(dc = %self.req.dc, store = %self.store, holder = %l.holder, remaining_ms = l.remaining_ms, "standby: another agent of this DC is active; waiting for its lease to expire");
                        said = l.holder.clone();
                    }
                }
                Err(e) => {
                    tracing::warn!(dc = %self.req.dc, store = %self.store, error = %e, "cannot reach the store holding the agent lease; retrying");
                }
            }
            tokio::time::sleep(Duration::from_millis((ttl / 3).max(100))).await;
        }
    }

    /// Renews the lease every third of its lifetime, forever; exits the
    /// process (code [`LOST_LEASE_EXIT`]) when another agent holds it.
    pub async fn keep(self) {
        let ttl = self.req.ttl_ms;
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis((ttl / 3).max(100))).await;
            match self.ask().await {
                Ok(l) if l.holder == self.req.holder => last_ok = Instant::now(),
                Ok(l) => {
                    tracing::error!(dc = %self.req.dc, holder = %l.holder, "the agent lease was taken by another agent of this DC: stopping at once");
                    std::process::exit(LOST_LEASE_EXIT);
                }
                Err(e) => {
                    // The store is down for this agent, and most likely
                    // for a standby too: stopping would also stop every
                    // other store of the DC. Keep going; if a standby did
                    // take the lease, the next renewal that reaches the
                    // store sees it and stops this agent.
                    tracing::warn!(dc = %self.req.dc, error = %e, unrenewed_ms = last_ok.elapsed().as_millis() as u64, "cannot renew the agent lease; running on");
                }
            }
        }
    }
}
