//! Who ships which origin streams to whom: mesh and star as one rule.
//!
//! A *relay* is a DC that applies other DCs' changes and forwards them,
//! unchanged (origin DC and origin seq kept), to further DCs. In a mesh no
//! DC relays: each DC is its own relay-free hub and ships only its own
//! changes, to every other DC. In a star the hub relays: a spoke ships its
//! own changes to the hub only; the hub ships its own and every other
//! spoke's changes to each spoke, never a spoke's own back to it
//! (docs/architecture.md, "Relay and applied vectors").
//!
//! The senders and the receiver read the current [`Routing`] through a
//! `watch` channel: when an operator switches mesh ↔ star or promotes
//! another hub (a topology reload), links whose streams change redial.

use std::sync::Arc;

/// The routing of one agent: its DC, every DC of the topology and the hub
/// (`None` in a mesh).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    me: String,
    dcs: Vec<String>,
    hub: Option<String>,
}

/// Shared, reloadable routing (see the module docs).
pub type RoutingWatch = tokio::sync::watch::Receiver<Arc<Routing>>;

/// Waits until the routing changes; never returns if it no longer can
/// (its sender is gone: the routing is fixed).
pub async fn changed(w: &mut RoutingWatch) {
    if w.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A routing that never changes (tests, tools).
pub fn fixed(r: Routing) -> RoutingWatch {
    tokio::sync::watch::channel(Arc::new(r)).1
}

impl Routing {
    /// Mesh routing of `me` among `dcs` (every DC of the topology,
    /// including `me`).
    pub fn mesh(me: &str, dcs: &[String]) -> Routing {
        Routing {
            me: me.to_string(),
            dcs: dcs.to_vec(),
            hub: None,
        }
    }

    /// Star routing of `me` among `dcs` with `hub` as the hub.
    pub fn star(me: &str, dcs: &[String], hub: &str) -> Routing {
        Routing {
            me: me.to_string(),
            dcs: dcs.to_vec(),
            hub: Some(hub.to_string()),
        }
    }

    /// The hub, in a star.
    pub fn hub(&self) -> Option<&str> {
        self.hub.as_deref()
    }

    /// Whether this DC relays other DCs' changes (it is a star's hub).
    pub fn relays(&self) -> bool {
        self.hub.as_deref() == Some(self.me.as_str())
    }

    /// The origins whose streams this DC ships to `peer`, in topology
    /// order; empty when this DC has no line to `peer` (two spokes).
    pub fn origins_to(&self, peer: &str) -> Vec<String> {
        if peer == self.me {
            return Vec::new();
        }
        match self.hub.as_deref() {
            None => vec![self.me.clone()],
            Some(h) if h == self.me => self
                .dcs
                .iter()
                .filter(|d| d.as_str() != peer)
                .cloned()
                .collect(),
            Some(h) if h == peer => vec![self.me.clone()],
            Some(_) => Vec::new(),
        }
    }

    /// The DCs this DC ships its own changes to: where a new journal
    /// learns what was applied of them (see the agent's recovery).
    pub fn own_receivers(&self) -> Vec<String> {
        self.dcs
            .iter()
            .filter(|d| self.origins_to(d).contains(&self.me))
            .cloned()
            .collect()
    }

    /// Whether this DC relays the stream of `origin`: it is the hub and the
    /// origin is another DC.
    pub fn relays_origin(&self, origin: &str) -> bool {
        self.relays() && origin != self.me
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dcs() -> Vec<String> {
        ["bj", "sh", "gz", "tk"].map(String::from).to_vec()
    }

    #[test]
    fn mesh_ships_only_its_own_changes_to_everyone() {
        let r = Routing::mesh("sh", &dcs());
        assert_eq!(r.origins_to("bj"), vec!["sh"]);
        assert_eq!(r.origins_to("tk"), vec!["sh"]);
        assert!(r.origins_to("sh").is_empty());
        assert_eq!(r.own_receivers(), vec!["bj", "gz", "tk"]);
        assert!(!r.relays() && !r.relays_origin("bj"));
    }

    #[test]
    fn a_hub_relays_everything_but_the_peers_own_changes() {
        let r = Routing::star("bj", &dcs(), "bj");
        assert_eq!(r.origins_to("sh"), vec!["bj", "gz", "tk"]);
        assert_eq!(r.origins_to("tk"), vec!["bj", "sh", "gz"]);
        assert!(r.relays() && r.relays_origin("sh") && !r.relays_origin("bj"));
        assert_eq!(r.own_receivers(), vec!["sh", "gz", "tk"]);
    }

    #[test]
    fn a_spoke_links_only_to_the_hub() {
        let r = Routing::star("gz", &dcs(), "bj");
        assert_eq!(r.origins_to("bj"), vec!["gz"]);
        assert!(r.origins_to("sh").is_empty());
        assert!(r.origins_to("tk").is_empty());
        assert_eq!(r.own_receivers(), vec!["bj"]);
        assert!(!r.relays());
    }
}
