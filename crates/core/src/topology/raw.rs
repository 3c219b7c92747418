//! The topology file as written (with spans for error locations) and its
//! validation into a [`Topology`].

use super::*;
use crate::conflict::ConflictPolicy;
use crate::connector::Connector;
use toml::de::DeValue;

// ---- raw (as written) form, with spans for error locations ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTopology {
    cluster: Spanned<String>,
    #[serde(default)]
    mode: Option<Spanned<String>>,
    #[serde(default)]
    hub: Option<Spanned<String>>,
    #[serde(default)]
    hub_candidates: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    dc: Vec<Spanned<RawDc>>,
    units: Option<Spanned<RawUnits>>,
    // `store` is split off before deserializing: see `Topology::parse_named`.
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
    #[serde(default)]
    admin: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnits {
    count: Spanned<i64>,
    owners: Spanned<BTreeMap<Spanned<String>, Spanned<String>>>,
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

pub(super) struct Collector<'a> {
    pub(super) text: &'a str,
    pub(super) issues: Vec<TopologyIssue>,
}

impl Collector<'_> {
    pub(super) fn at(&mut self, span: std::ops::Range<usize>, message: impl Into<String>) {
        let (line, col) = line_col(self.text, span.start);
        self.issues.push(TopologyIssue {
            line,
            col,
            message: message.into(),
        });
    }
}

pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
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

/// Largest `units.count`.
const MAX_UNITS: u32 = 1_000_000;

/// Whether `s` is `host:port` (non-empty host, port a u16).
fn is_host_port(s: &str) -> bool {
    matches!(s.rsplit_once(':'), Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok())
}

fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(super) fn validate<'i>(
    raw: RawTopology,
    stores: Option<Spanned<DeValue<'i>>>,
    units_count: Option<u32>,
    registry: &Registry,
    c: &mut Collector<'_>,
) -> Option<Topology> {
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
        if !is_host_port(link) {
            c.at(
                d.link.span(),
                format!("dc {id:?}: link {link:?} is not host:port (e.g. \"10.0.0.5:7701\")"),
            );
        }
        if !links.insert(link.clone()) {
            c.at(
                d.link.span(),
                format!("dc {id:?}: link address {link:?} is used by another dc"),
            );
        }
        let listen = d.listen.clone().unwrap_or_else(|| link.clone());
        if let Some(admin) = &d.admin {
            let a = admin.get_ref();
            if !is_host_port(a) {
                c.at(
                    admin.span(),
                    format!("dc {id:?}: admin {a:?} is not host:port (e.g. \"127.0.0.1:9101\")"),
                );
            } else if *a == listen {
                c.at(
                    admin.span(),
                    format!("dc {id:?}: admin {a:?} is also the link listen address"),
                );
            }
        }
        dcs.push(DcConfig {
            id: id.clone(),
            link: link.clone(),
            listen,
            admin: d.admin.as_ref().map(|a| a.get_ref().clone()),
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
    let stores = validate_stores(stores, &dcs, units_count, registry, c);
    let mut hub_candidates = Vec::new();
    for h in raw
        .hub_candidates
        .as_ref()
        .map(|v| v.get_ref().as_slice())
        .unwrap_or_default()
    {
        if !dcs.iter().any(|d| &d.id == h.get_ref()) {
            c.at(
                h.span(),
                format!("hub candidate {:?} is not a declared dc", h.get_ref()),
            );
        } else {
            hub_candidates.push(h.get_ref().clone());
        }
    }
    if let (Some(Mode::Star { hub }), Some(h)) = (&mode, &raw.hub) {
        let id = dcs.get(*hub).map(|d| d.id.clone()).unwrap_or_default();
        if !hub_candidates.is_empty() && !hub_candidates.contains(&id) {
            c.at(
                h.span(),
                format!("hub {id:?} is not one of hub_candidates {hub_candidates:?}"),
            );
        }
        for st in &stores {
            if st.url_for(&id).is_none() {
                c.at(
                    h.span(),
                    format!("hub {id:?} has no url for store {:?}: a hub applies and relays every store", st.name),
                );
            }
        }
    }
    for id in &hub_candidates {
        for st in &stores {
            if st.url_for(id).is_none() {
                if let Some(span) = raw.hub_candidates.as_ref().map(|v| v.span()) {
                    c.at(
                        span,
                        format!("hub candidate {id:?} has no url for store {:?}: a hub applies and relays every store", st.name),
                    );
                }
            }
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
        hub_candidates,
        dcs,
        units: units?,
        stores,
        link,
        tls,
    })
}

/// Validates every `[[store]]` table (see [`validate_store`]) against the
/// declared `dcs` and `units.count` (`None` if unknown); returns the valid
/// ones.
pub(super) fn validate_stores(
    stores: Option<Spanned<DeValue<'_>>>,
    dcs: &[DcConfig],
    units_count: Option<u32>,
    registry: &Registry,
    c: &mut Collector<'_>,
) -> Vec<StoreConfig> {
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    for (index, table) in store_tables(stores, c).into_iter().enumerate() {
        let target = StoreTarget { dcs, units_count };
        if let Some(s) = validate_store(index, table, target, registry, &mut names, c) {
            out.push(s);
        }
    }
    out
}

/// Keys of the top level, once `store` is split off.
const TOP_KEYS: [&str; 8] = [
    "cluster",
    "mode",
    "hub",
    "hub_candidates",
    "dc",
    "units",
    "link",
    "tls",
];
/// Keys of a `[[dc]]` table.
const DC_KEYS: [&str; 4] = ["id", "link", "listen", "admin"];
/// Keys of `[units]`.
const UNITS_KEYS: [&str; 2] = ["count", "owners"];
/// Keys of `[link]`.
const LINK_KEYS: [&str; 10] = [
    "batch_max_txns",
    "batch_max_bytes",
    "window",
    "max_frame_bytes",
    "heartbeat_ms",
    "dead_after_ms",
    "backoff_min_ms",
    "backoff_max_ms",
    "compression",
    "max_bytes_per_sec",
];
/// Keys of `[tls]`.
const TLS_KEYS: [&str; 4] = ["plaintext", "ca", "cert", "key"];

/// Reports every unknown key outside the `[[store]]` tables at its own
/// line:col and removes it from `doc`. Serde's `deny_unknown_fields` stops
/// at the first unknown key, so without this pass a file with three typos
/// would need three runs. Keep these lists in step with the raw structs.
pub(super) fn drop_unknown_keys(doc: &mut toml::de::DeTable<'_>, c: &mut Collector<'_>) {
    strip_unknown(doc, "top level", &TOP_KEYS, c);
    for (key, label, known) in [
        ("units", "[units]", &UNITS_KEYS[..]),
        ("link", "[link]", &LINK_KEYS[..]),
        ("tls", "[tls]", &TLS_KEYS[..]),
    ] {
        if let Some(DeValue::Table(t)) = doc.get_mut(key).map(Spanned::get_mut) {
            strip_unknown(t, label, known, c);
        }
    }
    if let Some(DeValue::Array(dcs)) = doc.get_mut("dc").map(Spanned::get_mut) {
        for (i, d) in dcs.iter_mut().enumerate() {
            if let DeValue::Table(t) = d.get_mut() {
                strip_unknown(t, &format!("[[dc]] #{}", i + 1), &DC_KEYS, c);
            }
        }
    }
}

fn strip_unknown(
    table: &mut toml::de::DeTable<'_>,
    label: &str,
    known: &[&str],
    c: &mut Collector<'_>,
) {
    let unknown: Vec<(String, std::ops::Range<usize>)> = table
        .keys()
        .filter(|k| !known.contains(&k.get_ref().as_ref()))
        .map(|k| (k.get_ref().to_string(), k.span()))
        .collect();
    for (key, span) in unknown {
        c.at(
            span,
            format!(
                "{label}: unknown key {key:?}; expected one of {}",
                known.join(", ")
            ),
        );
        table.remove(key.as_str());
    }
}

/// The DC ids of `doc`'s `[[dc]]` tables that have a string `id`, for
/// validating the stores when the rest of the file did not deserialize.
pub(super) fn lenient_dcs(doc: &toml::de::DeTable<'_>) -> Vec<DcConfig> {
    let Some(DeValue::Array(dcs)) = doc.get("dc").map(Spanned::get_ref) else {
        return Vec::new();
    };
    dcs.iter()
        .filter_map(|d| match d.get_ref() {
            DeValue::Table(t) => match t.get("id").map(Spanned::get_ref) {
                Some(DeValue::String(id)) => Some(DcConfig {
                    id: id.to_string(),
                    link: String::new(),
                    listen: String::new(),
                    admin: None,
                }),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// `units.count` of `doc` when it is an integer in the valid range, for the
/// connectors' unit checks (read before the rest of the file deserializes,
/// so the stores are checked against it even when the file has other
/// problems).
pub(super) fn lenient_units_count(doc: &toml::de::DeTable<'_>) -> Option<u32> {
    let Some(DeValue::Table(units)) = doc.get("units").map(Spanned::get_ref) else {
        return None;
    };
    let count = units.get("count")?.get_ref().clone();
    let count =
        i64::deserialize(toml::de::ValueDeserializer::from(Spanned::new(0..0, count))).ok()?;
    u32::try_from(count)
        .ok()
        .filter(|c| (1..=MAX_UNITS).contains(c))
}

/// The `[[store]]` tables of the document, each with its span.
fn store_tables<'i>(
    stores: Option<Spanned<DeValue<'i>>>,
    c: &mut Collector<'_>,
) -> Vec<Spanned<DeValue<'i>>> {
    let Some(stores) = stores else {
        return Vec::new();
    };
    let span = stores.span();
    match stores.into_inner() {
        DeValue::Array(a) => a
            .into_iter()
            .filter(|t| {
                let ok = t.get_ref().is_table();
                if !ok {
                    c.at(t.span(), "each store must be a table ([[store]])");
                }
                ok
            })
            .collect(),
        _ => {
            c.at(span, "store must be an array of tables ([[store]])");
            Vec::new()
        }
    }
}

/// `version_retention_s` when the file does not set it: one hour.
pub const DEFAULT_VERSION_RETENTION_S: u64 = 3600;

/// Keys every `[[store]]` table may have, whatever its kind.
const GENERIC_STORE_KEYS: [&str; 9] = [
    "name",
    "kind",
    "url",
    "apply_group_txns",
    "apply_group_bytes",
    "conflict",
    "verify_every_s",
    "verify_from",
    "version_retention_s",
];

/// What a store is validated against: the declared DCs and `units.count`
/// (`None` if the `[units]` section is invalid).
#[derive(Clone, Copy)]
struct StoreTarget<'a> {
    dcs: &'a [DcConfig],
    units_count: Option<u32>,
}

/// Validates one `[[store]]` table: the generic keys here, the rest by the
/// kind's connector; untaken keys are reported as unknown.
fn validate_store<'i>(
    index: usize,
    table: Spanned<DeValue<'i>>,
    StoreTarget { dcs, units_count }: StoreTarget<'_>,
    registry: &Registry,
    names: &mut BTreeSet<String>,
    c: &mut Collector<'_>,
) -> Option<StoreConfig> {
    let span = table.span();
    let DeValue::Table(t) = table.into_inner() else {
        return None;
    };
    let entries = t
        .into_iter()
        .map(|(k, v)| {
            let key_span = k.span();
            (k.into_inner().into_owned(), (key_span, v))
        })
        .collect();
    let mut keys = StoreKeys::new(
        format!("[[store]] #{}", index + 1),
        span,
        entries,
        units_count,
    );
    let name = keys.require::<String>("name", "the store's logical name");
    if let Some(name) = &name {
        let n = name.get_ref();
        if !is_valid_id(n) {
            c.at(
                name.span(),
                format!("store name {n:?} must be 1-32 characters of [A-Za-z0-9_-]"),
            );
        }
        if !names.insert(n.clone()) {
            c.at(name.span(), format!("duplicate store name {n:?}"));
        }
        keys.set_label(format!("store {n:?}"));
    }
    let expected = registry.expected_kinds();
    let kind = keys.require::<String>("kind", &format!("expected {expected}"));
    let url = keys.require::<BTreeMap<Spanned<String>, Spanned<String>>>(
        "url",
        "the store's url in each dc: url = { <dc> = \"...\" }",
    );
    let group_txns = keys.take::<usize>("apply_group_txns");
    let group_bytes = keys.take::<usize>("apply_group_bytes");
    let conflict = keys.take::<String>("conflict");
    let verify_every_s = keys.take::<u64>("verify_every_s");
    let verify_from = keys.take::<String>("verify_from");
    let retention = keys.take::<u64>("version_retention_s");
    if let Some(v) = &verify_from {
        if !dcs.iter().any(|d| &d.id == v.get_ref()) {
            keys.error(
                v.span(),
                format!(
                    "verify_from = {:?}: not a declared dc (declared: {})",
                    v.get_ref(),
                    dcs.iter()
                        .map(|d| d.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
    let connector = kind.as_ref().and_then(|k| {
        let found = registry.get(k.get_ref());
        if found.is_none() {
            keys.error(
                k.span(),
                format!("unknown kind {:?}: expected {expected}", k.get_ref()),
            );
        }
        found
    });
    let policy = match (&conflict, connector) {
        (_, None) => None,
        (None, Some(conn)) => conn.conflict_policies().first().copied(),
        (Some(p), Some(conn)) => {
            let supported: Vec<&str> = conn
                .conflict_policies()
                .iter()
                .map(|p| p.as_str())
                .collect();
            match ConflictPolicy::parse(p.get_ref()) {
                Some(policy) if conn.conflict_policies().contains(&policy) => Some(policy),
                _ => {
                    keys.error(
                        p.span(),
                        format!(
                            "conflict = {:?}: a {:?} store takes {}",
                            p.get_ref(),
                            conn.kind(),
                            supported
                                .iter()
                                .map(|s| format!("{s:?}"))
                                .collect::<Vec<_>>()
                                .join(" or ")
                        ),
                    );
                    None
                }
            }
        }
    };
    let mut urls = BTreeMap::new();
    if let Some(url) = &url {
        for (dc, u) in url.get_ref() {
            if !dcs.iter().any(|d| &d.id == dc.get_ref()) {
                keys.error(
                    dc.span(),
                    format!("url given for unknown dc {:?}", dc.get_ref()),
                );
            }
            if let Some(conn) = connector {
                let schemes = conn.url_schemes();
                if !schemes.iter().any(|s| {
                    u.get_ref()
                        .strip_prefix(s)
                        .is_some_and(|r| r.starts_with("://"))
                }) {
                    let wanted: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
                    keys.error(
                        dc.span(),
                        format!(
                            "url for dc {:?} must start with {}",
                            dc.get_ref(),
                            wanted.join(" or ")
                        ),
                    );
                } else if let Err(why) = conn.check_url(u.get_ref()) {
                    keys.error(dc.span(), format!("url for dc {:?}: {why}", dc.get_ref()));
                }
            }
            urls.insert(dc.get_ref().clone(), StoreUrl(u.get_ref().clone()));
        }
        for d in dcs {
            if !urls.contains_key(&d.id) {
                keys.error(url.span(), format!("no url for dc {:?}", d.id));
            }
        }
    }
    let options = match connector {
        Some(conn) => Some(conn.parse_options(&mut keys)),
        None => {
            // Without a kind the other keys cannot be judged.
            keys.discard_rest();
            None
        }
    };
    let label = keys.label().to_string();
    let taken: Vec<String> = keys.asked().to_vec();
    let (rest, issues) = keys.finish();
    for (span, message) in issues {
        c.at(span, message);
    }
    if let Some(conn) = connector {
        for (key, span) in rest {
            c.at(
                span,
                unknown_store_key(&label, &key, conn, &taken, registry),
            );
        }
    }
    let conn = connector?;
    let defaults = conn.default_apply_group();
    Some(StoreConfig {
        name: name?.into_inner(),
        kind: conn.kind().to_string(),
        urls: url.map(|_| urls)?,
        apply_group_txns: group_txns
            .map(Spanned::into_inner)
            .unwrap_or(defaults.txns)
            .max(1),
        apply_group_bytes: group_bytes
            .map(Spanned::into_inner)
            .unwrap_or(defaults.bytes)
            .max(1),
        conflict: policy?,
        verify_every_s: verify_every_s.map(Spanned::into_inner).unwrap_or(0),
        verify_from: verify_from
            .map(Spanned::into_inner)
            .or_else(|| dcs.first().map(|d| d.id.clone()))
            .unwrap_or_default(),
        version_retention_s: retention
            .map(Spanned::into_inner)
            .unwrap_or(DEFAULT_VERSION_RETENTION_S),
        options: options?,
    })
}

/// `store "orders": unknown key "key_prefixes" (a key of "redis" stores); a
/// "mysql" store takes name, kind, ...`.
fn unknown_store_key(
    label: &str,
    key: &str,
    conn: &dyn Connector,
    taken: &[String],
    registry: &Registry,
) -> String {
    let elsewhere: Vec<String> = registry
        .connectors()
        .iter()
        .filter(|other| other.kind() != conn.kind())
        .filter(|other| {
            let mut probe = StoreKeys::empty();
            let _ = other.parse_options(&mut probe);
            probe.asked().iter().any(|k| k == key)
        })
        .map(|other| format!("{:?}", other.kind()))
        .collect();
    let hint = if elsewhere.is_empty() {
        String::new()
    } else {
        format!(" (a key of {} stores)", elsewhere.join(" and "))
    };
    let mut known: Vec<&str> = GENERIC_STORE_KEYS.to_vec();
    for k in taken {
        if !known.contains(&k.as_str()) {
            known.push(k);
        }
    }
    format!(
        "{label}: unknown key {key:?}{hint}; a {:?} store takes {}",
        conn.kind(),
        known.join(", ")
    )
}

fn validate_units(
    u: &Spanned<RawUnits>,
    dcs: &BTreeSet<String>,
    c: &mut Collector<'_>,
) -> Option<Units> {
    let u_span = u.span();
    let u = u.get_ref();
    let count = *u.count.get_ref();
    if !(1..=i64::from(MAX_UNITS)).contains(&count) {
        c.at(
            u.count.span(),
            format!("units.count = {count}: must be between 1 and {MAX_UNITS}"),
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
