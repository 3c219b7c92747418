//! The topology file as written (with spans for error locations) and its
//! validation into a [`Topology`].

use super::*;

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
    #[serde(default)]
    apply_parallel: Option<Spanned<i64>>,
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

fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(super) fn validate(raw: RawTopology, c: &mut Collector<'_>) -> Option<Topology> {
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
        if let (Some(StoreKind::Redis), Some(pattern)) = (kind, &s.unit_key) {
            if let Err(e) = crate::unit::compile_redis_unit_key(pattern) {
                c.at(s.name.span(), format!("store {name:?}: {e}"));
            }
        }
        let apply_parallel = match &s.apply_parallel {
            None => DEFAULT_APPLY_PARALLEL,
            Some(n) if (1..=MAX_APPLY_PARALLEL as i64).contains(n.get_ref()) => {
                *n.get_ref() as usize
            }
            Some(n) => {
                c.at(
                    n.span(),
                    format!(
                        "store {name:?}: apply_parallel = {}: must be between 1 and {MAX_APPLY_PARALLEL}",
                        n.get_ref()
                    ),
                );
                DEFAULT_APPLY_PARALLEL
            }
        };
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
                // A MySQL group is one commit per partition: larger is
                // cheaper. A Redis group is one MULTI/EXEC, which blocks
                // the server while it runs: keep it short.
                apply_group_txns: s
                    .apply_group_txns
                    .unwrap_or(if kind == StoreKind::Mysql { 2048 } else { 256 })
                    .max(1),
                apply_group_bytes: s
                    .apply_group_bytes
                    .unwrap_or(if kind == StoreKind::Mysql {
                        16 << 20
                    } else {
                        4 << 20
                    })
                    .max(1),
                apply_parallel,
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
