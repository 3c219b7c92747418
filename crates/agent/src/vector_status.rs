//! The status of routing and applied vectors: per store and origin DC, how
//! far each DC has applied the origin's stream (docs/operations.md,
//! "Star topology: hub failover").

use dcsync_journal::Journal;
use dcsync_link::routing::RoutingWatch;
use dcsync_link::vectors::AppliedVectors;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Routing of the agent as the status shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RoutingStatus {
    /// `"mesh"` or `"star"`.
    pub mode: String,
    /// The hub's DC id in a star.
    pub hub: Option<String>,
    /// Whether this agent relays (it is the hub).
    pub relays: bool,
}

/// One origin stream's applied vector.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VectorStatus {
    /// Store name.
    pub store: String,
    /// Origin DC.
    pub origin: String,
    /// Highest seq of the origin known here: the journal head for this
    /// DC's own stream, else the most any DC is known to have applied or
    /// the relay journal holds.
    pub head: u64,
    /// Per DC: `(DC, applied seq, seqs behind head)`; DCs this agent has
    /// not heard of are absent.
    pub applied: Vec<(String, u64, u64)>,
}

/// Where the status reads routing and vectors.
#[derive(Clone)]
pub struct VectorSource {
    /// This DC.
    pub me: String,
    /// Current routing.
    pub routing: RoutingWatch,
    /// Applied vectors.
    pub vectors: Arc<AppliedVectors>,
}

impl VectorSource {
    /// The routing and the vectors of `stores` now.
    pub fn read(&self, journal: &Journal, stores: &[String]) -> (RoutingStatus, Vec<VectorStatus>) {
        let r = self.routing.borrow().clone();
        let routing = RoutingStatus {
            mode: if r.hub().is_some() { "star" } else { "mesh" }.into(),
            hub: r.hub().map(str::to_string),
            relays: r.relays(),
        };
        let mut rows: Vec<VectorStatus> = Vec::new();
        let mut known = self.vectors.snapshot();
        // This DC's own streams appear even before any peer reported.
        for store in stores {
            if !known
                .iter()
                .any(|k| k.origin == self.me && k.store == *store)
            {
                known.push(dcsync_link::vectors::VectorRow {
                    store: store.clone(),
                    origin: self.me.clone(),
                    applied: Vec::new(),
                });
            }
        }
        for row in known.into_iter().filter(|k| stores.contains(&k.store)) {
            let journaled = journal.last_seq(&row.origin, &row.store).unwrap_or(0);
            let mut applied = row.applied;
            let head = if row.origin == self.me {
                applied.retain(|(dc, _)| *dc != self.me);
                applied.insert(0, (self.me.clone(), journaled));
                journaled
            } else {
                applied
                    .iter()
                    .map(|(_, s)| *s)
                    .max()
                    .unwrap_or(0)
                    .max(journaled)
            };
            rows.push(VectorStatus {
                store: row.store,
                origin: row.origin,
                head,
                applied: applied
                    .into_iter()
                    .map(|(dc, s)| (dc, s, head.saturating_sub(s)))
                    .collect(),
            });
        }
        rows.sort_by(|a, b| (&a.store, &a.origin).cmp(&(&b.store, &b.origin)));
        for r in &rows {
            for (dc, _, behind) in &r.applied {
                dcsync_core::events::VectorObserved {
                    store: &r.store,
                    origin: &r.origin,
                    applier: dc,
                    behind: *behind,
                }
                .emit();
            }
        }
        (routing, rows)
    }
}

/// Prints the routing line and the applied-vector table of `dcsync status`.
pub fn print(routing: &RoutingStatus, rows: &[VectorStatus]) {
    match &routing.hub {
        None => println!("routing: mesh (every DC ships its own changes to every other)"),
        Some(_) if routing.relays => {
            println!(
                "routing: star, THIS DC IS THE HUB: it relays every spoke's changes to the others"
            )
        }
        Some(h) => {
            println!("routing: star, hub {h}: this spoke ships to and receives from {h} only")
        }
    }
    if rows.is_empty() {
        return;
    }
    println!(
        "{:<10} {:<8} {:>10}  APPLIED BY DC (seq, behind)",
        "STORE", "ORIGIN", "HEAD"
    );
    for r in rows {
        let cells: Vec<String> = r
            .applied
            .iter()
            .map(|(dc, s, behind)| {
                if *behind == 0 {
                    format!("{dc} {s}")
                } else {
                    format!("{dc} {s} (-{behind})")
                }
            })
            .collect();
        println!(
            "{:<10} {:<8} {:>10}  {}",
            r.store,
            r.origin,
            r.head,
            cells.join(", ")
        );
    }
}
