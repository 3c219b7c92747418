//! `dcsync route`: which unit, and so which owner DC, one row or key of a
//! store belongs to — what an application's routing layer asks before it
//! sends a write (see `docs/topology.md`, "Units").
//!
//! The unit comes from the store's connector
//! ([`Connector::route`](dcsync_core::connector::Connector::route)), with
//! the same rules its source applies to captured writes, so the answer is
//! the unit the attribution guard will check the write against.

use crate::registry::REGISTRY;
use anyhow::{anyhow, bail};
use dcsync_core::connector::RouteQuery;
use dcsync_core::Topology;
use std::path::Path;

/// Prints `unit 17 owner bj (store orders, rule: hash of user_id)` for the
/// row of `table` (row stores) whose unit key value is `value`, or for the
/// key `value` (key-value stores); a note about the answer goes to stderr.
///
/// Errors: the topology cannot be loaded, `store` is not in it, its kind
/// cannot route, or the connector refuses the question (a table the store
/// does not replicate, `--table` for a key-value store, a row or key with
/// no unit), each with a message naming it.
pub fn run(topology: &Path, store: &str, table: Option<&str>, value: &str) -> anyhow::Result<()> {
    let topo = Topology::load(topology, &REGISTRY)?;
    let Some(s) = topo.store(store) else {
        bail!(
            "store {store:?} is not in {} (its stores: {})",
            topology.display(),
            topo.stores
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let connector = REGISTRY.connector_for(s)?;
    let routed = connector
        .route(RouteQuery {
            store: s,
            units_count: topo.units.count,
            table,
            value: value.as_bytes(),
        })
        .ok_or_else(|| {
            anyhow!(
                "store {store:?} is a {:?} store, which has no units to route",
                s.kind
            )
        })??;
    let owner = topo
        .units
        .owner_of(routed.unit)
        .ok_or_else(|| anyhow!("unit {} has no owner dc", routed.unit))?;
    println!(
        "unit {} owner {owner} (store {store}, rule: {})",
        routed.unit, routed.rule
    );
    if let Some(note) = routed.note {
        eprintln!("note: {note}");
    }
    Ok(())
}
