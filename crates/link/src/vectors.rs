//! Applied vectors: per store and origin DC, the highest origin seq each DC
//! has applied, as this agent knows it.
//!
//! Sources of knowledge (each only moves a value forward):
//! - this DC's own apply markers and applies (the receiver);
//! - a peer's handshake, which lists its markers of every origin
//!   ([`crate::frame::Frame::WelcomeMarks`]), and its acks (the senders);
//! - [`crate::frame::Frame::Progress`] from a relay: what the DCs behind it
//!   applied of this DC's own changes.
//!
//! An origin keeps its changes in its journal until every DC applied them
//! (the senders turn what they learn into journal cursors), so that a
//! replacement hub can fetch from the origin what the old one never
//! relayed. The values are lower bounds: a DC may have applied more.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// `(store, origin, dc) -> highest applied origin seq`, shared by the
/// links of one agent; [`AppliedVectors::watch`] changes on every advance.
#[derive(Debug)]
pub struct AppliedVectors {
    map: Mutex<BTreeMap<(String, String, String), u64>>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for AppliedVectors {
    fn default() -> Self {
        AppliedVectors {
            map: Mutex::new(BTreeMap::new()),
            changed: tokio::sync::watch::channel(0).0,
        }
    }
}

/// One row of [`AppliedVectors::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VectorRow {
    /// Store name.
    pub store: String,
    /// Origin DC of the stream.
    pub origin: String,
    /// `(DC, highest origin seq it applied)`, in DC order.
    pub applied: Vec<(String, u64)>,
}

impl AppliedVectors {
    /// Records that `dc` applied `(origin, store)` up to `seq` (kept if it
    /// is an advance).
    pub fn report(&self, dc: &str, origin: &str, store: &str, seq: u64) {
        let advanced = match self.map.lock() {
            Ok(mut m) => {
                let e = m
                    .entry((store.to_string(), origin.to_string(), dc.to_string()))
                    .or_insert(0);
                if seq > *e {
                    *e = seq;
                    true
                } else {
                    false
                }
            }
            Err(_) => false,
        };
        if advanced {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// What `dc` applied of `(origin, store)`, if known.
    pub fn get(&self, dc: &str, origin: &str, store: &str) -> Option<u64> {
        self.map.lock().ok().and_then(|m| {
            m.get(&(store.to_string(), origin.to_string(), dc.to_string()))
                .copied()
        })
    }

    /// Every DC's known applied seq of `(origin, store)`.
    pub fn of(&self, origin: &str, store: &str) -> Vec<(String, u64)> {
        let Ok(m) = self.map.lock() else {
            return Vec::new();
        };
        m.iter()
            .filter(|((s, o, _), _)| s == store && o == origin)
            .map(|((_, _, d), v)| (d.clone(), *v))
            .collect()
    }

    /// The whole table, one row per `(store, origin)`.
    pub fn snapshot(&self) -> Vec<VectorRow> {
        let Ok(m) = self.map.lock() else {
            return Vec::new();
        };
        let mut rows: Vec<VectorRow> = Vec::new();
        for ((store, origin, dc), seq) in m.iter() {
            match rows.last_mut() {
                Some(r) if r.store == *store && r.origin == *origin => {
                    r.applied.push((dc.clone(), *seq))
                }
                _ => rows.push(VectorRow {
                    store: store.clone(),
                    origin: origin.clone(),
                    applied: vec![(dc.clone(), *seq)],
                }),
            }
        }
        rows
    }

    /// Changes on every advance.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_only_advance_and_group_by_stream() {
        let v = AppliedVectors::default();
        let w = v.watch();
        v.report("sh", "bj", "orders", 5);
        v.report("sh", "bj", "orders", 3);
        v.report("gz", "bj", "orders", 7);
        v.report("gz", "sh", "orders", 1);
        assert_eq!(v.get("sh", "bj", "orders"), Some(5));
        assert_eq!(v.get("tk", "bj", "orders"), None);
        assert_eq!(
            v.of("bj", "orders"),
            vec![("gz".to_string(), 7), ("sh".to_string(), 5)]
        );
        assert_eq!(v.snapshot().len(), 2);
        assert!(w.has_changed().unwrap_or(false));
    }
}
