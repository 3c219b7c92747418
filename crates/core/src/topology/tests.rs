use super::*;
use crate::connector::{
    ApplyGroup, BoxFuture, Connector, ConnectorError, DynSink, Registry, SourceContext,
};

/// A row-store kind for these tests: `tables` (`schema.table` patterns),
/// `unit_key` (a column) and `parallel` (1..=8).
struct Rows;

#[derive(Debug, Clone, PartialEq)]
struct RowOptions {
    tables: Vec<String>,
    unit_key: Option<String>,
    parallel: usize,
}

/// A key-value kind for these tests: `prefixes`, and `units_by_prefix`
/// (taken with [`StoreKeys::take_units`]).
struct Kv;

#[derive(Debug, Clone, PartialEq)]
struct KvOptions {
    prefixes: Vec<String>,
    units_by_prefix: Vec<(String, u32)>,
}

impl Connector for Rows {
    fn kind(&self) -> &'static str {
        "rows"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["rowz"]
    }
    fn url_schemes(&self) -> &'static [&'static str] {
        &["rows"]
    }
    fn default_apply_group(&self) -> ApplyGroup {
        ApplyGroup {
            txns: 100,
            bytes: 1000,
        }
    }
    fn parse_options(&self, keys: &mut StoreKeys<'_>) -> StoreOptions {
        let mut tables = Vec::new();
        for t in keys
            .take::<Vec<Spanned<String>>>("tables")
            .map(Spanned::into_inner)
            .unwrap_or_default()
        {
            if !t.get_ref().contains('.') {
                keys.error(
                    t.span(),
                    format!("table pattern {:?} must be schema.table", t.get_ref()),
                );
            }
            tables.push(t.into_inner());
        }
        let unit_key = keys.take::<String>("unit_key").map(Spanned::into_inner);
        let parallel = match keys.take::<i64>("parallel") {
            None => 4,
            Some(n) if (1..=8).contains(n.get_ref()) => *n.get_ref() as usize,
            Some(n) => {
                keys.error(
                    n.span(),
                    format!("parallel = {}: must be between 1 and 8", n.get_ref()),
                );
                4
            }
        };
        StoreOptions::new(RowOptions {
            tables,
            unit_key,
            parallel,
        })
    }
    fn run_source(
        &self,
        _url: String,
        _cx: SourceContext,
    ) -> BoxFuture<'static, Result<(), ConnectorError>> {
        Box::pin(async { Ok(()) })
    }
    fn connect_sink(
        &self,
        _url: String,
        _store: StoreConfig,
    ) -> BoxFuture<'static, Result<Box<dyn DynSink>, ConnectorError>> {
        Box::pin(async { Err(ConnectorError::Definite("test connector".into())) })
    }
}

impl Connector for Kv {
    fn kind(&self) -> &'static str {
        "kv"
    }
    fn url_schemes(&self) -> &'static [&'static str] {
        &["kv", "kvs"]
    }
    fn default_apply_group(&self) -> ApplyGroup {
        ApplyGroup {
            txns: 10,
            bytes: 99,
        }
    }
    fn parse_options(&self, keys: &mut StoreKeys<'_>) -> StoreOptions {
        let prefixes = keys
            .take::<Vec<String>>("prefixes")
            .map(Spanned::into_inner)
            .unwrap_or_default();
        let units_by_prefix = keys
            .take_units("units_by_prefix")
            .into_iter()
            .map(|(p, u)| (p.into_inner(), u))
            .collect();
        StoreOptions::new(KvOptions {
            prefixes,
            units_by_prefix,
        })
    }
    fn run_source(
        &self,
        _url: String,
        _cx: SourceContext,
    ) -> BoxFuture<'static, Result<(), ConnectorError>> {
        Box::pin(async { Ok(()) })
    }
    fn connect_sink(
        &self,
        _url: String,
        _store: StoreConfig,
    ) -> BoxFuture<'static, Result<Box<dyn DynSink>, ConnectorError>> {
        Box::pin(async { Err(ConnectorError::Definite("test connector".into())) })
    }
}

static REGISTRY: Registry = Registry::new(&[&Rows, &Kv]);

fn parse(text: &str) -> Result<Topology, TopologyError> {
    Topology::parse(text, &REGISTRY)
}

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
kind = "rows"
tables = ["shop.*"]
unit_key = "user_id"
url = { bj = "rows://root:secret@127.0.0.1:13306", sh = "rows://root@127.0.0.1:13307" }
"#;

fn issues(text: &str) -> Vec<TopologyIssue> {
    match parse(text) {
        Err(TopologyError::Invalid { issues, .. }) => issues,
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn good_file_parses() {
    let t = parse(GOOD).unwrap();
    assert_eq!(t.dcs.len(), 2);
    assert_eq!(t.units.owner_of(0), Some("bj"));
    assert_eq!(t.units.owner_of(63), Some("sh"));
    let s = t.store("orders").unwrap();
    assert_eq!(s.kind, "rows");
    assert_eq!(
        s.url_for("sh").unwrap().expose(),
        "rows://root@127.0.0.1:13307"
    );
    assert_eq!(
        s.options::<RowOptions>(),
        Some(&RowOptions {
            tables: vec!["shop.*".into()],
            unit_key: Some("user_id".into()),
            parallel: 4
        })
    );
    // The connector's defaults.
    assert_eq!((s.apply_group_txns, s.apply_group_bytes), (100, 1000));
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
    let text = GOOD.replace(", sh = \"rows://root@127.0.0.1:13307\"", "");
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
        .replace("kind = \"rows\"", "kind = \"oracle\"")
        .replace("count = 64", "count = 0");
    assert!(issues(&text).len() >= 3);
}

#[test]
fn typos_in_every_section_are_reported_together() {
    // serde's deny_unknown_fields stops at the first unknown key; each of
    // these is in a different table and all must come out of one parse.
    let text = GOOD
        .replace("mode = \"mesh\"", "mode = \"mesh\"\nclutser = \"x\"")
        .replace(
            "link = \"127.0.0.1:7702\"",
            "link = \"127.0.0.1:7702\"\nlisten_addr = \"0.0.0.0:7702\"",
        )
        .replace("count = 64", "count = 64\ncuont = 1")
        .replace("unit_key = \"user_id\"", "unit_kye = \"user_id\"")
        + "[link]\nwindw = 4\n";
    let found = located(&text);
    let want = [
        (4, 1, "top level: unknown key \"clutser\""),
        (11, 1, "[[dc]] #2: unknown key \"listen_addr\""),
        (14, 1, "[units]: unknown key \"cuont\""),
        (20, 1, "unknown key \"unit_kye\""),
        (23, 1, "[link]: unknown key \"windw\""),
    ];
    assert_eq!(found.len(), want.len(), "{found:#?}");
    for ((line, col, msg), (wl, wc, wm)) in found.iter().zip(want) {
        assert_eq!((*line, *col), (wl, wc), "{msg}");
        assert!(msg.contains(wm), "{msg} lacks {wm}");
    }
}

#[test]
fn a_wrong_type_still_reports_the_stores_problems() {
    let text = GOOD
        .replace("count = 64", "count = \"64\"")
        .replace("unit_key = \"user_id\"", "unit_kye = \"user_id\"");
    let found = located(&text);
    assert!(
        found
            .iter()
            .any(|(l, _, m)| *l == 11 && m.contains("expected i64")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|(l, _, m)| *l == 17 && m.contains("unit_kye")),
        "{found:#?}"
    );
}

#[test]
fn tls_section() {
    assert_eq!(parse(GOOD).unwrap().tls, LinkSecurity::Unset);
    let t = parse(&format!("{GOOD}[tls]\nplaintext = true\n")).unwrap();
    assert_eq!(t.tls, LinkSecurity::Plaintext);
    let t = parse(&format!(
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
fn redaction() {
    assert_eq!(redact_url("rows://u:p@h:1/db"), "rows://u:***@h:1/db");
    assert_eq!(redact_url("kv://h:1"), "kv://h:1");
}

/// `(line, col, message)` of every issue, in report order.
fn located(text: &str) -> Vec<(usize, usize, String)> {
    issues(text)
        .into_iter()
        .map(|i| (i.line, i.col, i.message))
        .collect()
}

const KV_STORE: &str = "[[store]]\nname = \"cache\"\nkind = \"kv\"\nprefixes = [\"s:\"]\nurl = { bj = \"kv://a:1\", sh = \"kvs://b:1\" }\n";

/// `GOOD` with the kv store whose `units_by_prefix` is `units` (line 23).
fn with_kv_units(text: &str, units: &str) -> String {
    format!(
        "{text}{}",
        KV_STORE.replace(
            "prefixes = [\"s:\"]",
            &format!("prefixes = [\"s:\"]\nunits_by_prefix = {units}")
        )
    )
}

#[test]
fn units_of_a_connector_key_are_checked_against_units_count() {
    let t = parse(&with_kv_units(GOOD, "{ \"s:a\" = 0, \"s:b\" = 63 }")).unwrap();
    assert_eq!(
        t.store("cache")
            .unwrap()
            .options::<KvOptions>()
            .unwrap()
            .units_by_prefix,
        [("s:a".to_string(), 0), ("s:b".to_string(), 63)]
    );
    // Each unit out of range at its own value, in one pass.
    assert_eq!(
        located(&with_kv_units(GOOD, "{ \"s:a\" = 64, \"s:b\" = -1, \"s:c\" = 7 }")),
        [
            (
                23,
                29,
                "store \"cache\": units_by_prefix.\"s:a\" = 64: unit out of range 0-63 (units.count = 64)"
                    .to_string()
            ),
            (
                23,
                41,
                "store \"cache\": units_by_prefix.\"s:b\" = -1: unit out of range 0-63 (units.count = 64)"
                    .to_string()
            ),
        ]
    );
    // Not an integer: located at the value, naming the key.
    let i = located(&with_kv_units(GOOD, "{ \"s:a\" = \"seven\" }"));
    assert_eq!(i.len(), 1, "{i:?}");
    assert_eq!((i[0].0, i[0].1), (23, 29), "{i:?}");
    assert!(
        i[0].2
            .starts_with("store \"cache\": units_by_prefix: invalid type"),
        "{i:?}"
    );
}

#[test]
fn units_are_checked_when_the_rest_of_the_file_does_not_deserialize() {
    // A wrong type elsewhere stops serde; the count is still known.
    let text = with_kv_units(
        &GOOD.replace("cluster = \"shop\"", "cluster = 7"),
        "{ \"s:a\" = 64 }",
    );
    let found = located(&text);
    assert!(
        found
            .iter()
            .any(|(l, _, m)| *l == 23 && m.ends_with("unit out of range 0-63 (units.count = 64)")),
        "{found:#?}"
    );
    // An invalid count is reported on its own; only negative units are
    // judged without it.
    let text = with_kv_units(
        &GOOD.replace("count = 64", "count = 0"),
        "{ \"s:a\" = 64, \"s:b\" = -1 }",
    );
    let found = located(&text);
    assert!(
        found
            .iter()
            .any(|(l, _, m)| *l == 11 && m.contains("units.count = 0")),
        "{found:#?}"
    );
    assert!(
        !found.iter().any(|(_, _, m)| m.contains("\"s:a\"")),
        "{found:#?}"
    );
    assert!(
        found.iter().any(|(l, _, m)| *l == 23
            && m.contains(
                "units_by_prefix.\"s:b\" = -1: a unit is a number from 0 to units.count - 1"
            )),
        "{found:#?}"
    );
}

#[test]
fn connector_key_error_is_located_at_its_value() {
    let bad = GOOD.replace(
        "unit_key = \"user_id\"",
        "unit_key = \"user_id\"\nparallel = 0",
    );
    assert_eq!(
        located(&bad),
        [(
            18,
            12,
            "store \"orders\": parallel = 0: must be between 1 and 8".to_string()
        )]
    );
    // An element of an array is located at the element.
    let bad = GOOD.replace("[\"shop.*\"]", "[\"shop.*\", \"orders\"]");
    assert_eq!(
        located(&bad),
        [(
            16,
            21,
            "store \"orders\": table pattern \"orders\" must be schema.table".to_string()
        )]
    );
    // A value of the wrong type is located at the value, naming the key.
    let bad = GOOD.replace("[\"shop.*\"]", "\"shop.*\"");
    let i = located(&bad);
    assert_eq!(i.len(), 1, "{i:?}");
    assert_eq!((i[0].0, i[0].1), (16, 10), "{i:?}");
    assert!(
        i[0].2
            .starts_with("store \"orders\": tables: invalid type: string \"shop.*\""),
        "{i:?}"
    );
}

#[test]
fn unknown_connector_key_is_located_at_the_key_and_names_its_kind() {
    let bad = GOOD.replace(
        "unit_key = \"user_id\"",
        "unit_key = \"user_id\"\n  prefixes = [\"a\"]",
    );
    assert_eq!(
        located(&bad),
        [(
            18,
            3,
            "store \"orders\": unknown key \"prefixes\" (a key of \"kv\" stores); a \"rows\" \
             store takes name, kind, url, apply_group_txns, apply_group_bytes, conflict, \
             verify_every_s, verify_from, version_retention_s, tables, unit_key, parallel"
                .to_string()
        )]
    );
    let bad = GOOD.replace("unit_key = \"user_id\"", "colour = 1");
    let i = located(&bad);
    assert_eq!((i[0].0, i[0].1), (17, 1), "{i:?}");
    assert!(
        i[0].2
            .starts_with("store \"orders\": unknown key \"colour\"; a \"rows\" store takes name,"),
        "{i:?}"
    );
}

#[test]
fn unknown_kind_lists_the_registered_kinds() {
    // The kind's own keys are not judged (nor reported as unknown).
    let bad = GOOD.replace("kind = \"rows\"", "kind = \"oracle\"");
    assert_eq!(
        located(&bad),
        [(
            15,
            8,
            "store \"orders\": unknown kind \"oracle\": expected \"rows\" or \"kv\"".to_string()
        )]
    );
    let i = located(&GOOD.replace("kind = \"rows\"\n", ""));
    assert_eq!(
        i,
        [(
            13,
            1,
            "store \"orders\": missing key \"kind\" (expected \"rows\" or \"kv\")".to_string()
        )]
    );
}

#[test]
fn an_alias_becomes_the_kind_name() {
    let t = parse(&GOOD.replace("kind = \"rows\"", "kind = \"rowz\"")).unwrap();
    assert_eq!(t.store("orders").unwrap().kind, "rows");
}

#[test]
fn url_scheme_is_the_connectors() {
    let bad = GOOD.replace("bj = \"rows://root:secret", "bj = \"kv://root:secret");
    assert_eq!(
        located(&bad),
        [(
            18,
            9,
            "store \"orders\": url for dc \"bj\" must start with rows://".to_string()
        )]
    );
    let t = parse(&format!("{GOOD}{KV_STORE}")).unwrap();
    let kv = t.store("cache").unwrap();
    assert_eq!(kv.kind, "kv");
    assert_eq!((kv.apply_group_txns, kv.apply_group_bytes), (10, 99));
    let i = located(&format!("{GOOD}{}", KV_STORE.replace("kvs://", "http://")));
    assert_eq!(
        i,
        [(
            23,
            26,
            "store \"cache\": url for dc \"sh\" must start with kv:// or kvs://".to_string()
        )]
    );
}

#[test]
fn several_problems_are_reported_at_once_in_file_order() {
    let text = format!(
        "{}{}[[store]]\nname = \"x\"\nkind = \"oracle\"\nurl = {{ bj = \"o://\", sh = \"o://\" }}\n",
        GOOD.replace("link = \"127.0.0.1:7702\"", "link = \"127.0.0.1:7702\"\nadmin = \"nowhere\"")
            .replace("unit_key = \"user_id\"", "unit_key = \"user_id\"\nparallel = 99"),
        KV_STORE.replace("prefixes", "tables").replace("kvs://", "rows://"),
    );
    let i = located(&text);
    let expect: &[(usize, usize, &str)] = &[
        (10, 9, "dc \"sh\": admin \"nowhere\" is not host:port"),
        (
            19,
            12,
            "store \"orders\": parallel = 99: must be between 1 and 8",
        ),
        (
            24,
            1,
            "store \"cache\": unknown key \"tables\" (a key of \"rows\" stores)",
        ),
        (
            25,
            26,
            "store \"cache\": url for dc \"sh\" must start with kv:// or kvs://",
        ),
        (28, 8, "store \"x\": unknown kind \"oracle\""),
    ];
    assert_eq!(i.len(), expect.len(), "{i:?}");
    for ((line, col, msg), (el, ec, em)) in i.iter().zip(expect) {
        assert_eq!((line, col), (el, ec), "{msg}");
        assert!(msg.starts_with(em), "{msg:?} should start with {em:?}");
    }
}

#[test]
fn generic_store_keys() {
    let t = parse(&GOOD.replace(
        "unit_key = \"user_id\"",
        "unit_key = \"user_id\"\napply_group_txns = 5\napply_group_bytes = 0",
    ))
    .unwrap();
    let s = t.store("orders").unwrap();
    // Zero is raised to one, as before.
    assert_eq!((s.apply_group_txns, s.apply_group_bytes), (5, 1));
    let i = located(&GOOD.replace(
        "unit_key = \"user_id\"",
        "unit_key = \"user_id\"\napply_group_txns = -1",
    ));
    assert_eq!(i.len(), 1, "{i:?}");
    assert_eq!((i[0].0, i[0].1), (18, 20), "{i:?}");
    assert!(
        i[0].2
            .starts_with("store \"orders\": apply_group_txns: invalid value"),
        "{i:?}"
    );
    let i = located(
        &GOOD
            .replace("name = \"orders\"\n", "")
            .replace("url = {", "url = 7 #{"),
    );
    assert!(
        i.iter()
            .any(|i| i.2 == "[[store]] #1: missing key \"name\" (the store's logical name)"),
        "{i:?}"
    );
    assert!(
        i.iter().any(|i| i
            .2
            .starts_with("[[store]] #1: url: invalid type: integer `7`")),
        "{i:?}"
    );
    let i = located(&GOOD.replace("url = {", "#url = {"));
    assert!(
        i.iter()
            .any(|i| i.2.starts_with("store \"orders\": missing key \"url\"")),
        "{i:?}"
    );
    let i = located(&GOOD.replace("}\n", ", gz = \"rows://x\" }\n"));
    assert!(
        i.iter()
            .any(|i| i.2 == "store \"orders\": url given for unknown dc \"gz\""),
        "{i:?}"
    );
}

#[test]
fn periodic_verify_keys() {
    let s = parse(GOOD).unwrap().store("orders").unwrap().clone();
    // Off by default; run by the first DC of the file.
    assert_eq!((s.verify_every_s, s.verify_from.as_str()), (0, "bj"));
    let t = parse(&GOOD.replace(
        "unit_key = \"user_id\"",
        "unit_key = \"user_id\"\nverify_every_s = 600\nverify_from = \"sh\"",
    ))
    .unwrap();
    let s = t.store("orders").unwrap();
    assert_eq!((s.verify_every_s, s.verify_from.as_str()), (600, "sh"));
    let i = located(&GOOD.replace(
        "unit_key = \"user_id\"",
        "unit_key = \"user_id\"\nverify_every_s = -5\nverify_from = \"gz\"",
    ));
    assert_eq!(i.len(), 2, "{i:?}");
    assert_eq!((i[0].0, i[0].1), (18, 18), "{i:?}");
    assert!(
        i[0].2
            .starts_with("store \"orders\": verify_every_s: invalid value"),
        "{i:?}"
    );
    assert_eq!(
        (i[1].0, i[1].1, i[1].2.as_str()),
        (
            19,
            15,
            "store \"orders\": verify_from = \"gz\": not a declared dc (declared: bj, sh)"
        )
    );
}

#[test]
fn store_must_be_an_array_of_tables() {
    let cut = GOOD.find("[[store]]").unwrap();
    let top = |line: &str| {
        GOOD[..cut].replace("mode = \"mesh\"\n", &format!("mode = \"mesh\"\n{line}\n"))
    };
    assert_eq!(
        located(&top("store = 1")),
        [(
            4,
            9,
            "store must be an array of tables ([[store]])".to_string()
        )]
    );
    assert_eq!(
        located(&top("store = [1]")),
        [(4, 10, "each store must be a table ([[store]])".to_string())]
    );
}

#[test]
fn admin_address() {
    let t = parse(&GOOD.replace(
        "link = \"127.0.0.1:7701\"",
        "link = \"127.0.0.1:7701\"\nadmin = \"127.0.0.1:9101\"",
    ))
    .unwrap();
    assert_eq!(t.dc("bj").unwrap().admin.as_deref(), Some("127.0.0.1:9101"));
    assert_eq!(t.dc("sh").unwrap().admin, None);
    let i = located(&GOOD.replace(
        "link = \"127.0.0.1:7701\"",
        "link = \"127.0.0.1:7701\"\nadmin = \"127.0.0.1:http\"",
    ));
    assert_eq!(
        i,
        [(
            7,
            9,
            "dc \"bj\": admin \"127.0.0.1:http\" is not host:port (e.g. \"127.0.0.1:9101\")"
                .to_string()
        )]
    );
    let i = located(&GOOD.replace(
        "link = \"127.0.0.1:7701\"",
        "link = \"127.0.0.1:7701\"\nadmin = \"127.0.0.1:7701\"",
    ));
    assert_eq!(
        i,
        [(
            7,
            9,
            "dc \"bj\": admin \"127.0.0.1:7701\" is also the link listen address".to_string()
        )]
    );
}

#[test]
fn options_are_typed_and_replaceable() {
    let t = parse(GOOD).unwrap();
    let mut s = t.store("orders").unwrap().clone();
    assert!(s.options::<KvOptions>().is_none());
    let mut o = s.options::<RowOptions>().unwrap().clone();
    o.parallel = 1;
    s.set_options(o);
    assert_ne!(&s, t.store("orders").unwrap());
    assert_eq!(s.options::<RowOptions>().unwrap().parallel, 1);
    // Options compare by value: two parses of one file are equal.
    assert_eq!(parse(GOOD).unwrap(), t);
}

#[test]
fn a_registry_finds_kinds_by_name_and_alias() {
    assert_eq!(REGISTRY.get("rowz").map(|c| c.kind()), Some("rows"));
    assert!(REGISTRY.get("ROWS").is_none());
    assert_eq!(format!("{REGISTRY:?}"), "[\"rows\", \"kv\"]");
    let t = parse(GOOD).unwrap();
    let s = t.store("orders").unwrap();
    assert_eq!(REGISTRY.connector_for(s).unwrap().kind(), "rows");
    let err = Registry::new(&[&Kv]).connector_for(s).err().unwrap();
    assert_eq!(
        err.to_string(),
        "store \"orders\": kind \"rows\" is not built into this agent (known: \"kv\")"
    );
}
