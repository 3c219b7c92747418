//! The topology file: one TOML file, the same in every DC.
//!
//! It names the cluster, the DCs and their link addresses, the unit routing
//! table, and the replicated stores with their per-DC URLs. Every key is
//! documented in `docs/topology.md`. Parsing is strict (`deny_unknown_fields`)
//! and validation collects *every* problem, each with its line and column, so
//! an operator fixes a file in one pass.
//!
//! ```
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
//! "#).unwrap();
//! assert_eq!(t.units.owner_of(3), Some("sh"));
//! ```

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use toml::Spanned;

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

/// Kind of store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// MySQL 8 / MariaDB 10.11+: binlog source, transactional sink.
    Mysql,
    /// Redis 7: replica (PSYNC) source, MULTI/EXEC sink.
    Redis,
}

/// What to do with `FLUSHDB`/`FLUSHALL` seen on a Redis replication stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Ship it to the other DCs like any command.
    Replicate,
    /// Do not ship it; log an error naming the command (default).
    Refuse,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Logical name, the same in every DC.
    pub name: String,
    /// Store kind.
    pub kind: StoreKind,
    /// MySQL: `schema.table` patterns to replicate; `*` matches any run of
    /// characters. Empty means every table outside the system schemas.
    pub tables: Vec<String>,
    /// MySQL: column whose value selects the unit; `None` = no unit.
    pub unit_key: Option<String>,
    /// Redis: key prefixes to replicate; empty means all keys.
    pub key_prefixes: Vec<String>,
    /// Redis: database indexes to replicate; empty means all.
    pub databases: Vec<u32>,
    /// Redis: `FLUSHDB`/`FLUSHALL` handling.
    pub flush: FlushPolicy,
    /// URL of the store in each DC, by DC id.
    pub urls: BTreeMap<String, StoreUrl>,
    /// Sink: at most this many source transactions per target commit.
    pub apply_group_txns: usize,
    /// Sink: at most this many payload bytes per target commit.
    pub apply_group_bytes: usize,
}

impl StoreConfig {
    /// The URL of this store in DC `dc`.
    pub fn url_for(&self, dc: &str) -> Option<&StoreUrl> {
        self.urls.get(dc)
    }

    /// Whether `schema.table` is replicated by this store. System schemas
    /// (`mysql`, `sys`, `information_schema`, `performance_schema`, `dcsync`)
    /// never are.
    pub fn matches_table(&self, schema: &str, table: &str) -> bool {
        if matches!(
            schema,
            "mysql" | "sys" | "information_schema" | "performance_schema" | "dcsync"
        ) {
            return false;
        }
        if self.tables.is_empty() {
            return true;
        }
        let full = format!("{schema}.{table}");
        self.tables.iter().any(|p| glob_match(p, &full))
    }
}

/// `*`-only glob match (`shop.*`, `*.orders`, `shop.order_*`).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// Link tuning (`[link]`, optional; every key has a default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSettings {
    /// Most transactions in one batch frame (default 512).
    pub batch_max_txns: usize,
    /// Most payload bytes in one batch frame (default 1 MiB).
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
            batch_max_txns: 512,
            batch_max_bytes: 1 << 20,
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

// ---- raw (as written) form, with spans for error locations ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    cluster: Spanned<String>,
    #[serde(default)]
    mode: Option<Spanned<String>>,
    #[serde(default)]
    hub: Option<Spanned<String>>,
    #[serde(default)]
    dc: Vec<Spanned<RawDc>>,
    units: Option<Spanned<RawUnits>>,
    #[serde(default)]
    store: Vec<Spanned<RawStore>>,
    #[serde(default)]
    link: Option<RawLink>,
    #[serde(default)]
    tls: Option<Spanned<RawTls>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    plaintext: bool,
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDc {
    id: Spanned<String>,
    link: Spanned<String>,
    #[serde(default)]
    listen: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnits {
    count: Spanned<i64>,
    owners: Spanned<BTreeMap<Spanned<String>, Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    name: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    tables: Vec<String>,
    #[serde(default)]
    unit_key: Option<String>,
    #[serde(default)]
    key_prefixes: Vec<String>,
    #[serde(default)]
    databases: Vec<u32>,
    #[serde(default)]
    flush: Option<Spanned<String>>,
    url: Spanned<BTreeMap<Spanned<String>, String>>,
    #[serde(default)]
    apply_group_txns: Option<usize>,
    #[serde(default)]
    apply_group_bytes: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLink {
    batch_max_txns: Option<usize>,
    batch_max_bytes: Option<usize>,
    window: Option<usize>,
    max_frame_bytes: Option<usize>,
    heartbeat_ms: Option<u64>,
    dead_after_ms: Option<u64>,
    backoff_min_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
    compression: Option<Spanned<String>>,
    max_bytes_per_sec: Option<u64>,
}

struct Collector<'a> {
    text: &'a str,
    issues: Vec<TopologyIssue>,
}

impl Collector<'_> {
    fn at(&mut self, span: std::ops::Range<usize>, message: impl Into<String>) {
        let (line, col) = line_col(self.text, span.start);
        self.issues.push(TopologyIssue {
            line,
            col,
            message: message.into(),
        });
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map(|p| offset - p).unwrap_or(offset + 1);
    (line, col)
}

fn parse_ranges(s: &str, count: u32) -> Result<Vec<(u32, u32)>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(format!("empty unit range in {s:?}"));
        }
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let a: u32 = a
            .parse()
            .map_err(|_| format!("{part:?} is not a unit range like \"0-31\" or \"7\""))?;
        let b: u32 = b
            .parse()
            .map_err(|_| format!("{part:?} is not a unit range like \"0-31\" or \"7\""))?;
        if a > b {
            return Err(format!("unit range {part:?} runs backwards"));
        }
        if b >= count {
            return Err(format!(
                "unit range {part:?} goes past the last unit {} (units.count = {count})",
                count.saturating_sub(1)
            ));
        }
        out.push((a, b));
    }
    Ok(out)
}

fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Topology {
    /// Reads and validates a topology file.
    ///
    /// Errors: [`TopologyError::Read`] if the file cannot be read,
    /// [`TopologyError::Invalid`] listing every problem with `path:line:col`.
    pub fn load(path: &Path) -> Result<Topology, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut t = Self::parse_named(&text, &path.display().to_string())?;
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
    pub fn parse(text: &str) -> Result<Topology, TopologyError> {
        Self::parse_named(text, "<string>")
    }

    /// Parses and validates topology text; `origin` names it in errors.
    pub fn parse_named(text: &str, origin: &str) -> Result<Topology, TopologyError> {
        let invalid = |issues| TopologyError::Invalid {
            origin: origin.to_string(),
            issues,
        };
        let raw: RawTopology = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
                return Err(invalid(vec![TopologyIssue {
                    line,
                    col,
                    message: e.message().trim().to_string(),
                }]));
            }
        };
        let mut c = Collector {
            text,
            issues: Vec::new(),
        };
        let topo = validate(raw, &mut c);
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
    pub fn peers_of(&self, me: &str) -> Vec<&DcConfig> {
        self.dcs.iter().filter(|d| d.id != me).collect()
    }

    /// The store named `name`.
    pub fn store(&self, name: &str) -> Option<&StoreConfig> {
        self.stores.iter().find(|s| s.name == name)
    }
}

fn validate(raw: RawTopology, c: &mut Collector<'_>) -> Option<Topology> {
    if !is_valid_id(raw.cluster.get_ref()) {
        c.at(
            raw.cluster.span(),
            "cluster name must be 1-32 characters of [A-Za-z0-9_-]",
        );
    }
    // DCs
    let mut dcs = Vec::new();
    let mut seen = BTreeSet::new();
    let mut links = BTreeSet::new();
    for d in &raw.dc {
        let d = d.get_ref();
        let id = d.id.get_ref();
        if !is_valid_id(id) {
            c.at(
                d.id.span(),
                format!("dc id {id:?} must be 1-32 characters of [A-Za-z0-9_-]"),
            );
        }
        if !seen.insert(id.clone()) {
            c.at(d.id.span(), format!("duplicate dc id {id:?}"));
        }
        let link = d.link.get_ref();
        match link.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => c.at(
                d.link.span(),
                format!("dc {id:?}: link {link:?} is not host:port (e.g. \"10.0.0.5:7701\")"),
            ),
        }
        if !links.insert(link.clone()) {
            c.at(
                d.link.span(),
                format!("dc {id:?}: link address {link:?} is used by another dc"),
            );
        }
        let listen = d.listen.clone().unwrap_or_else(|| link.clone());
        dcs.push(DcConfig {
            id: id.clone(),
            link: link.clone(),
            listen,
        });
    }
    if dcs.len() < 2 {
        c.at(
            0..0,
            format!(
                "at least two [[dc]] entries are needed, found {}",
                dcs.len()
            ),
        );
    }
    // mode
    let mode = match raw.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
        None | Some(("mesh", _)) => {
            if let Some(h) = &raw.hub {
                c.at(h.span(), "hub is only used with mode = \"star\"");
            }
            Some(Mode::Mesh)
        }
        Some(("star", span)) => match &raw.hub {
            None => {
                c.at(span, "mode = \"star\" needs hub = \"<dc id>\"");
                None
            }
            Some(h) => match dcs.iter().position(|d| &d.id == h.get_ref()) {
                Some(hub) => Some(Mode::Star { hub }),
                None => {
                    c.at(
                        h.span(),
                        format!("hub {:?} is not a declared dc", h.get_ref()),
                    );
                    None
                }
            },
        },
        Some((other, span)) => {
            c.at(
                span,
                format!("unknown mode {other:?}: expected \"mesh\" or \"star\""),
            );
            None
        }
    };
    // units
    let units = match &raw.units {
        None => {
            c.at(0..0, "missing [units] section (count and owners)");
            None
        }
        Some(u) => validate_units(u, &seen, c),
    };
    // stores
    let mut stores = Vec::new();
    let mut names = BTreeSet::new();
    for s in &raw.store {
        let s = s.get_ref();
        let name = s.name.get_ref();
        if !is_valid_id(name) {
            c.at(
                s.name.span(),
                format!("store name {name:?} must be 1-32 characters of [A-Za-z0-9_-]"),
            );
        }
        if !names.insert(name.clone()) {
            c.at(s.name.span(), format!("duplicate store name {name:?}"));
        }
        let kind = match s.kind.get_ref().as_str() {
            "mysql" | "mariadb" => Some(StoreKind::Mysql),
            "redis" => Some(StoreKind::Redis),
            other => {
                c.at(
                    s.kind.span(),
                    format!(
                        "store {name:?}: unknown kind {other:?}: expected \"mysql\" or \"redis\""
                    ),
                );
                None
            }
        };
        let flush = match s.flush.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
            None | Some(("refuse", _)) => FlushPolicy::Refuse,
            Some(("replicate", _)) => FlushPolicy::Replicate,
            Some((other, span)) => {
                c.at(
                    span,
                    format!(
                        "store {name:?}: flush {other:?}: expected \"replicate\" or \"refuse\""
                    ),
                );
                FlushPolicy::Refuse
            }
        };
        let mut urls = BTreeMap::new();
        for (dc, url) in s.url.get_ref() {
            if !seen.contains(dc.get_ref()) {
                c.at(
                    dc.span(),
                    format!(
                        "store {name:?}: url given for unknown dc {:?}",
                        dc.get_ref()
                    ),
                );
            }
            let scheme_ok = match kind {
                Some(StoreKind::Mysql) => url.starts_with("mysql://"),
                Some(StoreKind::Redis) => url.starts_with("redis://"),
                None => true,
            };
            if !scheme_ok {
                c.at(
                    dc.span(),
                    format!(
                        "store {name:?}: url for dc {:?} must start with {}",
                        dc.get_ref(),
                        if kind == Some(StoreKind::Mysql) {
                            "mysql://"
                        } else {
                            "redis://"
                        }
                    ),
                );
            }
            urls.insert(dc.get_ref().clone(), StoreUrl(url.clone()));
        }
        for d in &dcs {
            if !urls.contains_key(&d.id) {
                c.at(
                    s.url.span(),
                    format!("store {name:?}: no url for dc {:?}", d.id),
                );
            }
        }
        if kind == Some(StoreKind::Mysql) && (!s.key_prefixes.is_empty() || !s.databases.is_empty())
        {
            c.at(
                s.name.span(),
                format!("store {name:?}: key_prefixes/databases apply to redis stores only"),
            );
        }
        if kind == Some(StoreKind::Redis) && !s.tables.is_empty() {
            c.at(
                s.name.span(),
                format!("store {name:?}: tables applies to mysql stores only"),
            );
        }
        for t in &s.tables {
            if !t.contains('.') {
                c.at(s.name.span(), format!("store {name:?}: table pattern {t:?} must be schema.table (e.g. \"shop.*\")"));
            }
        }
        if let Some(kind) = kind {
            stores.push(StoreConfig {
                name: name.clone(),
                kind,
                tables: s.tables.clone(),
                unit_key: s.unit_key.clone(),
                key_prefixes: s.key_prefixes.clone(),
                databases: s.databases.clone(),
                flush,
                urls,
                apply_group_txns: s.apply_group_txns.unwrap_or(256).max(1),
                apply_group_bytes: s.apply_group_bytes.unwrap_or(4 << 20).max(1),
            });
        }
    }
    let l = raw.link.unwrap_or_default();
    let compression = match l
        .compression
        .as_ref()
        .map(|c| (c.get_ref().as_str(), c.span()))
    {
        None | Some(("lz4", _)) => true,
        Some(("none", _)) => false,
        Some((other, span)) => {
            c.at(
                span,
                format!("link.compression {other:?}: expected \"lz4\" or \"none\""),
            );
            true
        }
    };
    let d = LinkSettings::default();
    let link = LinkSettings {
        batch_max_txns: l.batch_max_txns.unwrap_or(d.batch_max_txns).max(1),
        batch_max_bytes: l.batch_max_bytes.unwrap_or(d.batch_max_bytes).max(1),
        window: l.window.unwrap_or(d.window).max(1),
        max_frame_bytes: l.max_frame_bytes.unwrap_or(d.max_frame_bytes).max(1024),
        heartbeat_ms: l.heartbeat_ms.unwrap_or(d.heartbeat_ms).max(10),
        dead_after_ms: l.dead_after_ms.unwrap_or(d.dead_after_ms).max(100),
        backoff_min_ms: l.backoff_min_ms.unwrap_or(d.backoff_min_ms).max(1),
        backoff_max_ms: l.backoff_max_ms.unwrap_or(d.backoff_max_ms).max(1),
        compression,
        max_bytes_per_sec: l.max_bytes_per_sec.unwrap_or(0),
    };
    let tls = match &raw.tls {
        None => LinkSecurity::Unset,
        Some(t) => {
            let span = t.span();
            let t = t.get_ref();
            match (t.plaintext, &t.ca, &t.cert, &t.key) {
                (true, None, None, None) => LinkSecurity::Plaintext,
                (true, ..) => {
                    c.at(
                        span,
                        "[tls]: plaintext = true cannot be combined with ca/cert/key",
                    );
                    LinkSecurity::Plaintext
                }
                (false, Some(ca), Some(cert), Some(key)) => {
                    if !cert.contains("{dc}") || !key.contains("{dc}") {
                        c.at(span, "[tls]: cert and key must contain {dc} (e.g. \"certs/{dc}.crt\"): the file is the same in every DC");
                    }
                    LinkSecurity::Tls {
                        ca: std::path::PathBuf::from(ca),
                        cert: cert.clone(),
                        key: key.clone(),
                    }
                }
                (false, ..) => {
                    c.at(
                        span,
                        "[tls]: give ca, cert and key (see `dcsync certs`), or plaintext = true",
                    );
                    LinkSecurity::Unset
                }
            }
        }
    };
    Some(Topology {
        cluster: raw.cluster.into_inner(),
        mode: mode?,
        dcs,
        units: units?,
        stores,
        link,
        tls,
    })
}

fn validate_units(
    u: &Spanned<RawUnits>,
    dcs: &BTreeSet<String>,
    c: &mut Collector<'_>,
) -> Option<Units> {
    let u_span = u.span();
    let u = u.get_ref();
    let count = *u.count.get_ref();
    if !(1..=1_000_000).contains(&count) {
        c.at(
            u.count.span(),
            format!("units.count = {count}: must be between 1 and 1000000"),
        );
        return None;
    }
    let count = count as u32;
    let mut owners: Vec<Option<String>> = vec![None; count as usize];
    for (dc, ranges) in u.owners.get_ref() {
        if !dcs.contains(dc.get_ref()) {
            c.at(
                dc.span(),
                format!("units.owners names unknown dc {:?}", dc.get_ref()),
            );
        }
        match parse_ranges(ranges.get_ref(), count) {
            Err(e) => c.at(ranges.span(), format!("units.owners.{}: {e}", dc.get_ref())),
            Ok(rs) => {
                for (a, b) in rs {
                    for unit in a..=b {
                        let slot = &mut owners[unit as usize];
                        if let Some(prev) = slot {
                            c.at(
                                ranges.span(),
                                format!(
                                    "unit {unit} is owned twice: by {prev:?} and by {:?}",
                                    dc.get_ref()
                                ),
                            );
                            break;
                        }
                        *slot = Some(dc.get_ref().clone());
                    }
                }
            }
        }
    }
    let unowned: Vec<u32> = (0..count)
        .filter(|i| owners[*i as usize].is_none())
        .collect();
    if !unowned.is_empty() {
        c.at(
            u.owners.span(),
            format!(
                "units {} have no owner dc in units.owners",
                compress_ranges(&unowned)
            ),
        );
        let _ = u_span;
        return None;
    }
    Some(Units {
        count,
        owners: owners.into_iter().map(Option::unwrap_or_default).collect(),
    })
}

fn compress_ranges(v: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
cluster = "shop"
mode = "mesh"
[[dc]]
id = "bj"
link = "127.0.0.1:7701"
[[dc]]
id = "sh"
link = "127.0.0.1:7702"
[units]
count = 64
owners = { bj = "0-31", sh = "32-63" }
[[store]]
name = "orders"
kind = "mysql"
tables = ["shop.*"]
unit_key = "user_id"
url = { bj = "mysql://root:secret@127.0.0.1:13306", sh = "mysql://root@127.0.0.1:13307" }
"#;

    fn issues(text: &str) -> Vec<TopologyIssue> {
        match Topology::parse(text) {
            Err(TopologyError::Invalid { issues, .. }) => issues,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn good_file_parses() {
        let t = Topology::parse(GOOD).unwrap();
        assert_eq!(t.dcs.len(), 2);
        assert_eq!(t.units.owner_of(0), Some("bj"));
        assert_eq!(t.units.owner_of(63), Some("sh"));
        let s = t.store("orders").unwrap();
        assert!(s.matches_table("shop", "users"));
        assert!(!s.matches_table("other", "users"));
        assert!(
            !format!("{t:?}").contains("secret"),
            "password leaked in Debug"
        );
    }

    #[test]
    fn unknown_key_is_named_with_location() {
        let text = GOOD.replace("mode = \"mesh\"", "mode = \"mesh\"\ncolour = \"blue\"");
        let i = issues(&text);
        assert_eq!(i.len(), 1);
        assert!(i[0].message.contains("colour"), "{i:?}");
        assert_eq!(i[0].line, 4);
    }

    #[test]
    fn duplicate_dc_id() {
        let text = GOOD.replace("id = \"sh\"", "id = \"bj\"");
        let i = issues(&text);
        assert!(
            i.iter()
                .any(|i| i.message.contains("duplicate dc id \"bj\"") && i.line == 8),
            "{i:?}"
        );
    }

    #[test]
    fn unowned_and_overlapping_units() {
        let i = issues(&GOOD.replace("sh = \"32-63\"", "sh = \"40-63\""));
        assert!(
            i.iter()
                .any(|i| i.message.contains("units 32-39 have no owner")),
            "{i:?}"
        );
        let i = issues(&GOOD.replace("sh = \"32-63\"", "sh = \"30-63\""));
        assert!(
            i.iter()
                .any(|i| i.message.contains("unit 30 is owned twice")),
            "{i:?}"
        );
    }

    #[test]
    fn missing_store_url() {
        let text = GOOD.replace(", sh = \"mysql://root@127.0.0.1:13307\"", "");
        let i = issues(&text);
        assert!(
            i.iter()
                .any(|i| i.message.contains("no url for dc \"sh\"") && i.line == 18),
            "{i:?}"
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let text = GOOD
            .replace("id = \"sh\"", "id = \"bj\"")
            .replace("kind = \"mysql\"", "kind = \"oracle\"")
            .replace("count = 64", "count = 0");
        assert!(issues(&text).len() >= 3);
    }

    #[test]
    fn tls_section() {
        assert_eq!(Topology::parse(GOOD).unwrap().tls, LinkSecurity::Unset);
        let t = Topology::parse(&format!("{GOOD}[tls]\nplaintext = true\n")).unwrap();
        assert_eq!(t.tls, LinkSecurity::Plaintext);
        let t = Topology::parse(&format!(
            "{GOOD}[tls]\nca = \"c/ca.crt\"\ncert = \"c/{{dc}}.crt\"\nkey = \"c/{{dc}}.key\"\n"
        ))
        .unwrap();
        let (_, cert, key) = t.tls.paths_for("bj").unwrap();
        assert_eq!(
            (cert.to_str(), key.to_str()),
            (Some("c/bj.crt"), Some("c/bj.key"))
        );
        let i = issues(&format!("{GOOD}[tls]\nca = \"ca.crt\"\n"));
        assert!(
            i.iter()
                .any(|i| i.message.contains("give ca, cert and key")),
            "{i:?}"
        );
        let i = issues(&format!(
            "{GOOD}[tls]\nca = \"a\"\ncert = \"same.crt\"\nkey = \"k{{dc}}\"\n"
        ));
        assert!(
            i.iter().any(|i| i.message.contains("must contain {dc}")),
            "{i:?}"
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("shop.*", "shop.orders"));
        assert!(glob_match("*.orders", "x.orders"));
        assert!(glob_match("shop.ord*s", "shop.orders"));
        assert!(!glob_match("shop.ord*x", "shop.orders"));
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_url("mysql://u:p@h:1/db"), "mysql://u:***@h:1/db");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
    }
}
