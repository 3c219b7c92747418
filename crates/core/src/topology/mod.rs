//! The topology file: one TOML file, the same in every DC.
//!
//! It names the cluster, the DCs and their link addresses, the unit routing
//! table, and the replicated stores with their per-DC URLs. Every key is
//! documented in `docs/topology.md`. Parsing is strict (unknown keys are
//! errors) and validation collects *every* problem, each with its line and
//! column, so an operator fixes a file in one pass.
//!
//! Core knows the keys every store has; the keys of one store kind belong
//! to its connector, looked up in the [`Registry`] passed in (see
//! [`StoreKeys`] and `docs/architecture.md`, "Adding a connector").
//!
//! ```
//! use dcsync_core::connector::Registry;
//! let t = dcsync_core::Topology::parse(r#"
//! cluster = "shop"
//! mode = "mesh"
//! [[dc]]
//! id = "bj"
//! link = "127.0.0.1:7701"
//! [[dc]]
//! id = "sh"
//! link = "127.0.0.1:7702"
//! [units]
//! count = 4
//! owners = { bj = "0-1", sh = "2-3" }
//! "#, &Registry::new(&[])).unwrap();
//! assert_eq!(t.units.owner_of(3), Some("sh"));
//! ```

use crate::connector::Registry;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

/// One problem found in a topology file, with its location (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyIssue {
    /// Line, 1-based (0 when the problem has no single location).
    pub line: usize,
    /// Column, 1-based.
    pub col: usize,
    /// What is wrong, naming the key or value.
    pub message: String,
}

/// Errors from loading a topology file.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The file could not be read.
    #[error("cannot read topology file {path}: {source}")]
    Read {
        /// File path.
        path: String,
        /// I/O error.
        source: std::io::Error,
    },
    /// The file was read but is not a valid topology; every problem is listed.
    #[error("{}", render_issues(.origin, .issues))]
    Invalid {
        /// File path, or `<string>`.
        origin: String,
        /// All problems found, in file order.
        issues: Vec<TopologyIssue>,
    },
}

fn render_issues(origin: &str, issues: &[TopologyIssue]) -> String {
    let mut s = format!("invalid topology {origin}: {} problem(s)", issues.len());
    for i in issues {
        s.push_str(&format!("\n  {origin}:{}:{}: {}", i.line, i.col, i.message));
    }
    s
}

/// Replication topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every DC sends its own changes to every other DC.
    Mesh,
    /// Spokes send to the hub; the hub applies and relays to the other spokes.
    Star {
        /// Index into [`Topology::dcs`] of the hub.
        hub: usize,
    },
}

/// A datacenter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcConfig {
    /// Short id (`bj`).
    pub id: String,
    /// `host:port` where peers reach this DC's agent.
    pub link: String,
    /// `host:port` the agent binds its link listener to; defaults to `link`
    /// (differs behind NAT, a load balancer or a test proxy).
    pub listen: String,
    /// `host:port` of the agent's HTTP admin endpoint (Prometheus
    /// `/metrics`, `/status`); `None` = no admin endpoint.
    pub admin: Option<String>,
}

/// The unit routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Units {
    /// Number of units (shards); units are `0..count`.
    pub count: u32,
    /// Owner DC id of each unit, indexed by unit.
    owners: Vec<String>,
}

impl Units {
    /// Owner DC of `unit`, `None` if out of range.
    pub fn owner_of(&self, unit: u32) -> Option<&str> {
        self.owners.get(unit as usize).map(String::as_str)
    }
}

/// A URL whose password is redacted in `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl(String);

impl StoreUrl {
    /// The full URL including credentials: pass to drivers, never log.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

/// Replaces the password of `scheme://user:password@host` with `***`.
pub fn redact_url(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        if let Some(at) = rest.find('@') {
            let userinfo = &rest[..at];
            if let Some(colon) = userinfo.find(':') {
                return format!(
                    "{}://{}:***@{}",
                    &url[..scheme_end],
                    &userinfo[..colon],
                    &rest[at + 1..]
                );
            }
        }
    }
    url.to_string()
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}
impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// A replicated store.
///
/// Core holds the keys every store has; the keys of its kind were parsed by
/// the kind's connector into [`StoreConfig::options`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Logical name, the same in every DC.
    pub name: String,
    /// Kind name as registered by its connector (`kind = "..."`; an alias
    /// is replaced by the connector's kind name).
    pub kind: String,
    /// URL of the store in each DC, by DC id.
    pub urls: BTreeMap<String, StoreUrl>,
    /// Sink: at most this many source transactions per target commit
    /// (at least 1; default from the connector).
    pub apply_group_txns: usize,
    /// Sink: at most this many payload bytes per target commit (at least
    /// 1; default from the connector).
    pub apply_group_bytes: usize,
    /// What the sink does when two DCs write the same row or key
    /// (`conflict = "none" | "lww"`; default: the first policy the
    /// connector lists in [`crate::connector::Connector::conflict_policies`]).
    pub conflict: crate::conflict::ConflictPolicy,
    /// Seconds between two periodic comparisons of this store across the
    /// DCs, the one `dcsync verify` makes (`verify_every_s`; 0, the
    /// default: never). One DC's agent runs them: [`StoreConfig::verify_from`].
    pub verify_every_s: u64,
    /// The DC whose agent runs the periodic comparison (`verify_from`;
    /// default: the first `[[dc]]` of the file), so that not every agent
    /// reads every DC's store.
    pub verify_from: String,
    /// Seconds of HLC a version stays in the version index after every
    /// other DC's changes applied here passed it (`version_retention_s`,
    /// default 3600; docs/conflicts.md, "Version index size"). The
    /// index is pruned below `min(HLC of the last change applied here of
    /// each other DC) - this`.
    pub version_retention_s: u64,
    /// The connector's parsed options (opaque here).
    options: StoreOptions,
}

impl StoreConfig {
    /// The URL of this store in DC `dc`.
    pub fn url_for(&self, dc: &str) -> Option<&StoreUrl> {
        self.urls.get(dc)
    }

    /// The connector's options of this store, as `T` (`MysqlOptions`);
    /// `None` if they are of another type (another kind's store).
    pub fn options<T: std::any::Any>(&self) -> Option<&T> {
        self.options.get::<T>()
    }

    /// Replaces the connector's options (tests change a parsed store this
    /// way); nothing validates them here.
    pub fn set_options<T: std::any::Any + fmt::Debug + PartialEq + Send + Sync>(
        &mut self,
        options: T,
    ) {
        self.options = StoreOptions::new(options);
    }
}

/// Link tuning (`[link]`, optional; every key has a default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSettings {
    /// Most transactions in one batch frame (default 2048).
    pub batch_max_txns: usize,
    /// Most payload bytes in one batch frame (default 4 MiB).
    pub batch_max_bytes: usize,
    /// Batches sent but not yet acknowledged, per link (default 8).
    pub window: usize,
    /// Largest frame accepted, bytes (default 64 MiB).
    pub max_frame_bytes: usize,
    /// Heartbeat interval, ms (default 1000).
    pub heartbeat_ms: u64,
    /// A link with no frame received for this long is dead, ms (default 10000).
    pub dead_after_ms: u64,
    /// First reconnect delay, ms (default 100); doubles up to `backoff_max_ms`.
    pub backoff_min_ms: u64,
    /// Reconnect delay cap, ms (default 5000).
    pub backoff_max_ms: u64,
    /// Offer LZ4 compression of batches (default true); used when both ends
    /// allow it.
    pub compression: bool,
    /// Cap on bytes sent per second on each outbound link; 0 = no cap
    /// (default). Keeps a backlog replay from saturating a shared line.
    pub max_bytes_per_sec: u64,
}

impl Default for LinkSettings {
    fn default() -> Self {
        LinkSettings {
            batch_max_txns: 2048,
            batch_max_bytes: 4 << 20,
            window: 8,
            max_frame_bytes: 64 << 20,
            heartbeat_ms: 1000,
            dead_after_ms: 10_000,
            backoff_min_ms: 100,
            backoff_max_ms: 5000,
            compression: true,
            max_bytes_per_sec: 0,
        }
    }
}

/// How links are secured (`[tls]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkSecurity {
    /// No `[tls]` section: `dcsync run` refuses to start (links must be
    /// secured, or plaintext chosen explicitly).
    Unset,
    /// `[tls] plaintext = true`: plain TCP, with a loud warning.
    Plaintext,
    /// Mutual TLS: every agent presents its DC certificate, signed by the
    /// cluster CA, valid for the name `<dc>.<cluster>.dcsync`.
    Tls {
        /// CA certificate (PEM) that signed every DC certificate.
        ca: std::path::PathBuf,
        /// This DC's certificate chain (PEM); `{dc}` is replaced by the DC id.
        cert: String,
        /// This DC's private key (PEM); `{dc}` is replaced by the DC id.
        key: String,
    },
}

impl LinkSecurity {
    /// Certificate and key paths of DC `dc` (`{dc}` substituted).
    pub fn paths_for(
        &self,
        dc: &str,
    ) -> Option<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)> {
        match self {
            LinkSecurity::Tls { ca, cert, key } => Some((
                ca.clone(),
                std::path::PathBuf::from(cert.replace("{dc}", dc)),
                std::path::PathBuf::from(key.replace("{dc}", dc)),
            )),
            _ => None,
        }
    }
}

/// A validated topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Cluster name; links between different clusters are refused.
    pub cluster: String,
    /// Mesh or star.
    pub mode: Mode,
    /// DC ids that may become the hub (`hub_candidates`; empty: any DC).
    /// Each has a url for every store.
    pub hub_candidates: Vec<String>,
    /// The DCs, in file order.
    pub dcs: Vec<DcConfig>,
    /// Unit routing.
    pub units: Units,
    /// Replicated stores, in file order.
    pub stores: Vec<StoreConfig>,
    /// Link tuning.
    pub link: LinkSettings,
    /// Link security (`[tls]`).
    pub tls: LinkSecurity,
}

impl Topology {
    /// Reads and validates a topology file; store kinds are looked up in
    /// `registry`.
    ///
    /// Errors: [`TopologyError::Read`] if the file cannot be read,
    /// [`TopologyError::Invalid`] listing every problem with `path:line:col`.
    pub fn load(path: &Path, registry: &Registry) -> Result<Topology, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut t = Self::parse_named(&text, &path.display().to_string(), registry)?;
        // Relative TLS paths are relative to the topology file.
        if let LinkSecurity::Tls { ca, cert, key } = &mut t.tls {
            let base = path.parent().unwrap_or(Path::new("."));
            let abs = |p: &str| {
                if Path::new(p).is_absolute() {
                    p.to_string()
                } else {
                    base.join(p).display().to_string()
                }
            };
            *ca = std::path::PathBuf::from(abs(&ca.display().to_string()));
            *cert = abs(cert);
            *key = abs(key);
        }
        Ok(t)
    }

    /// Parses and validates topology text; errors name `<string>` as origin.
    pub fn parse(text: &str, registry: &Registry) -> Result<Topology, TopologyError> {
        Self::parse_named(text, "<string>", registry)
    }

    /// Parses and validates topology text; `origin` names it in errors and
    /// store kinds are looked up in `registry`.
    pub fn parse_named(
        text: &str,
        origin: &str,
        registry: &Registry,
    ) -> Result<Topology, TopologyError> {
        let invalid = |issues| TopologyError::Invalid {
            origin: origin.to_string(),
            issues,
        };
        let syntax = |e: toml::de::Error| {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            invalid(vec![TopologyIssue {
                line,
                col,
                message: e.message().trim().to_string(),
            }])
        };
        // The store tables go to their connectors with every key's
        // location, so they are split off the parsed document before the
        // rest is deserialized (serde `flatten` would lose the locations).
        let mut doc = toml::de::DeTable::parse(text).map_err(syntax)?;
        let stores = doc.get_mut().remove("store");
        let mut c = Collector {
            text,
            issues: Vec::new(),
        };
        // Unknown keys are reported (all of them) and removed first: serde
        // would stop at the first one.
        drop_unknown_keys(doc.get_mut(), &mut c);
        let dcs = lenient_dcs(doc.get_ref());
        let units_count = lenient_units_count(doc.get_ref());
        let topo = match RawTopology::deserialize(toml::de::Deserializer::from(doc)) {
            Ok(raw) => validate(raw, stores, units_count, registry, &mut c),
            Err(e) => {
                // A wrong type or a missing key stops serde; the stores are
                // still checked so their problems come in the same pass.
                let span = e.span().unwrap_or(0..0);
                c.at(span, e.message().trim().to_string());
                validate_stores(stores, &dcs, units_count, registry, &mut c);
                None
            }
        };
        if c.issues.is_empty() {
            if let Some(t) = topo {
                return Ok(t);
            }
        }
        c.issues.sort_by_key(|i| (i.line, i.col));
        Err(invalid(c.issues))
    }

    /// The DC with id `id`.
    pub fn dc(&self, id: &str) -> Option<&DcConfig> {
        self.dcs.iter().find(|d| d.id == id)
    }

    /// Ids of every DC except `me`: the peers `me` links to in mesh mode.
    /// The hub's DC id in a star, `None` in a mesh.
    pub fn hub(&self) -> Option<&str> {
        match self.mode {
            Mode::Mesh => None,
            Mode::Star { hub } => self.dcs.get(hub).map(|d| d.id.as_str()),
        }
    }

    /// DC ids, in file order.
    pub fn dc_ids(&self) -> Vec<String> {
        self.dcs.iter().map(|d| d.id.clone()).collect()
    }

    pub fn peers_of(&self, me: &str) -> Vec<&DcConfig> {
        self.dcs.iter().filter(|d| d.id != me).collect()
    }

    /// The store named `name`.
    pub fn store(&self, name: &str) -> Option<&StoreConfig> {
        self.stores.iter().find(|s| s.name == name)
    }
}

mod options;
mod raw;
#[cfg(test)]
mod tests;

pub use options::{StoreKeys, StoreOptions};
use raw::{
    drop_unknown_keys, lenient_dcs, lenient_units_count, line_col, validate, validate_stores,
    Collector, RawTopology,
};
/// A value with its byte range in the topology text, as
/// [`StoreKeys::take`] returns it (re-exported so connectors need no
/// `toml` dependency of their own).
pub use toml::Spanned;
