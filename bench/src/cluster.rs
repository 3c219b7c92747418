//! The benchmark's agents over servers the caller owns: two (DC `a` and DC
//! `b`, a mesh) for most cases, any DC ids and routing for the star case;
//! the shared harness [`dcsync_testkit::cluster::Agents`] with the
//! benchmark's link settings and TLS choice.

use dcsync_testkit::cluster::{Agents, AgentsOptions, LINK_BASE};
use std::path::Path;

/// DC ids, in topology order.
pub const DCS: [&str; 2] = ["a", "b"];

/// Whether links use mutual TLS (the default; `--plaintext` turns it off).
static TLS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Chooses TLS (true, certificates from `dcsync certs`) or `[tls]
/// plaintext = true` for every cluster started afterwards.
pub fn set_tls(on: bool) {
    let _ = TLS.set(on);
}

/// Writes a mesh topology of [`DCS`] with `stores_toml` (one or more
/// `[[store]]` tables whose `url` maps `a` and `b`) and starts both agents
/// (see [`start_dcs`]).
pub async fn start(dcsync: &Path, stores_toml: &str) -> Agents {
    start_dcs(dcsync, &DCS, stores_toml, "").await
}

/// Writes a topology of the DCs `dcs` (in that order) with `stores_toml`
/// (`[[store]]` tables whose `url` maps every id in `dcs`) and the routing
/// keys `mode_toml` (`mode = "star"\nhub = "bj"\n`; empty: a mesh), and
/// starts one agent per DC. Links redial fast after a cut (so the replay
/// timer measures the replay, not a 5 s backoff);
/// `DCSYNC_BENCH_LINK_EXTRA` adds `[link]` keys to try settings (e.g.
/// `batch_max_txns = 512`).
pub async fn start_dcs(dcsync: &Path, dcs: &[&str], stores_toml: &str, mode_toml: &str) -> Agents {
    let mut link_toml = format!("{LINK_BASE}backoff_max_ms = 500\n");
    if let Ok(extra) = std::env::var("DCSYNC_BENCH_LINK_EXTRA") {
        link_toml += &extra;
        link_toml.push('\n');
    }
    Agents::start(AgentsOptions {
        dcsync: dcsync.to_path_buf(),
        cluster: "bench".into(),
        dcs: dcs.iter().map(|d| d.to_string()).collect(),
        stores_toml: stores_toml.to_string(),
        link_toml,
        tls: *TLS.get_or_init(|| true),
        log_filter: "info".into(),
        dir_prefix: "dcsync-bench-".into(),
        mode_toml: mode_toml.to_string(),
    })
    .await
}
