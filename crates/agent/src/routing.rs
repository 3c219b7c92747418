//! The agent's routing (mesh or star, and which DC is the hub) and its
//! reload on `SIGHUP` (docs/topology.md, "Star topology and the hub").
//!
//! On `SIGHUP` the agent reads its topology file again. A change of `mode`
//! or `hub` takes effect at once: the links whose streams change redial
//! (`dcsync_link::routing`), and an agent that stops being the hub drops
//! its relay journal (every origin keeps its own changes until each DC
//! applied them, so a new hub fetches them again). Any other change needs
//! a restart; the agent says so and keeps running as it was.

use dcsync_core::Topology;
use dcsync_journal::Journal;
use dcsync_link::routing::Routing;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// The routing of `me` under `topo`.
pub fn routing_of(topo: &Topology, me: &str) -> Routing {
    match topo.hub() {
        None => Routing::mesh(me, &topo.dc_ids()),
        Some(hub) => Routing::star(me, &topo.dc_ids(), hub),
    }
}

/// Removes the relay journal of an agent that does not relay (it was the
/// hub before a promotion or a switch to mesh).
pub fn drop_relay_journal(journal: &Journal, routing: &Routing) {
    if routing.relays() {
        return;
    }
    match journal.drop_relayed() {
        Ok(v) if v.is_empty() => {}
        Ok(v) => {
            tracing::info!(streams = ?v, "not the hub: dropped the relay journal (the origins keep their changes until every DC applied them)")
        }
        Err(e) => tracing::warn!(error = %e, "cannot drop the relay journal"),
    }
}

/// Reloads the routing from `path` on every `SIGHUP` until `shutdown`.
pub async fn reload_on_hangup(
    path: PathBuf,
    me: String,
    running: Topology,
    tx: watch::Sender<Arc<Routing>>,
    journal: Arc<Journal>,
    mut shutdown: watch::Receiver<bool>,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: topology reloads need a restart");
                return;
            }
        };
        loop {
            tokio::select! {
                r = hup.recv() => if r.is_none() { return },
                _ = shutdown.changed() => return,
            }
            match reload(&path, &me, &running) {
                Ok(next) => {
                    let prev = tx.borrow().clone();
                    if *prev == next {
                        tracing::info!(path = %path.display(), "SIGHUP: topology reread; the routing is unchanged");
                        continue;
                    }
                    tracing::warn!(path = %path.display(), from = ?prev.hub(), to = ?next.hub(),
                        "SIGHUP: routing changed (mesh = no hub); links redial with the new streams");
                    let relays = next.relays();
                    let _ = tx.send(Arc::new(next.clone()));
                    if !relays {
                        // Inbound links close on the change; give a batch
                        // in the middle of its apply time to finish.
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        let j = journal.clone();
                        let _ = tokio::task::spawn_blocking(move || drop_relay_journal(&j, &next))
                            .await;
                    }
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), "SIGHUP: topology not reloaded: {e}")
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (path, me, running, tx, journal);
        let _ = shutdown.changed().await;
    }
}

/// The routing of the topology at `path`, if it differs from `running` in
/// nothing but `mode`, `hub` and `hub_candidates`.
fn reload(path: &std::path::Path, me: &str, running: &Topology) -> anyhow::Result<Routing> {
    let t = Topology::load(path, &crate::registry::REGISTRY)?;
    let same = t.cluster == running.cluster
        && t.dcs == running.dcs
        && t.units == running.units
        && format!("{:?}", t.stores) == format!("{:?}", running.stores)
        && format!("{:?}", t.link) == format!("{:?}", running.link);
    if !same {
        anyhow::bail!(
            "only mode, hub and hub_candidates change on SIGHUP; this file also changes dcs, \
             units, stores or [link]: restart the agent to apply it"
        );
    }
    Ok(routing_of(&t, me))
}

/// `dcsync promote`: makes `dc` the hub in the topology file at `path`
/// (`mode = "star"`, `hub = dc`), keeping its comments and layout, after
/// checking that the result is a valid topology (`dc` declared, among
/// `hub_candidates` if given, with a url for every store). Returns the
/// previous hub (`None`: the file was a mesh).
pub fn promote(path: &std::path::Path, dc: &str) -> anyhow::Result<Option<String>> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let before = Topology::parse_named(
        &text,
        &path.display().to_string(),
        &crate::registry::REGISTRY,
    )?;
    if before.dc(dc).is_none() {
        anyhow::bail!(
            "dc {dc:?} is not declared in {} (declared: {})",
            path.display(),
            before.dc_ids().join(", ")
        );
    }
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("parsing {}", path.display()))?;
    doc["mode"] = toml_edit::value("star");
    doc["hub"] = toml_edit::value(dc);
    let out = doc.to_string();
    // The same checks as at load: hub_candidates, every store's url.
    Topology::parse_named(
        &out,
        &path.display().to_string(),
        &crate::registry::REGISTRY,
    )
    .with_context(|| format!("{dc} cannot be the hub"))?;
    let tmp = path.with_extension("toml.promote");
    std::fs::write(&tmp, out).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(before.hub().map(str::to_string))
}
