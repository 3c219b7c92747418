//! The connectors this agent is built with: one line per store kind.
//!
//! Adding a store kind is a connector crate, its dependency line in this
//! crate's `Cargo.toml`, and one line in [`REGISTRY`] (see
//! `docs/architecture.md`, "Adding a connector"). Nothing else in the agent
//! names a kind: topology files are parsed with this registry, and sources,
//! sinks and the retention check are built through it.

use dcsync_core::connector::Registry;

/// Every connector of this build, looked up by kind name or alias.
pub static REGISTRY: Registry = Registry::new(&[
    &dcsync_mysql::CONNECTOR, // "mysql" (alias "mariadb"): binlog source, transactional sink
    &dcsync_redis::CONNECTOR, // "redis": PSYNC replica source, MULTI/EXEC sink
]);

/// One line for `--help`: the kinds this build syncs, aliases in
/// parentheses (`mysql (mariadb), redis`).
pub fn kinds() -> String {
    REGISTRY
        .connectors()
        .iter()
        .map(|c| match c.aliases() {
            [] => c.kind().to_string(),
            aliases => format!("{} ({})", c.kind(), aliases.join(", ")),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
