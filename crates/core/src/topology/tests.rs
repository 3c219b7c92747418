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

#[test]
fn redis_unit_key_pattern_is_checked() {
    let redis = |pattern: &str| {
        format!(
            "{GOOD}[[store]]\nname = \"cache\"\nkind = \"redis\"\nunit_key = '{pattern}'\nurl = {{ bj = \"redis://a:1\", sh = \"redis://b:1\" }}\n"
        )
    };
    assert!(Topology::parse(&redis(r"^user:(\d+):")).is_ok());
    let i = issues(&redis("user:"));
    assert!(
        i.iter().any(|i| i.message.contains("no capture group")),
        "{i:?}"
    );
}

#[test]
fn apply_parallel_defaults_to_4_and_is_range_checked() {
    let t = Topology::parse(GOOD).unwrap();
    assert_eq!(t.store("orders").unwrap().apply_parallel, 4);
    let one = GOOD.replace(
        "unit_key = \"user_id\"",
        "unit_key = \"user_id\"\napply_parallel = 1",
    );
    assert_eq!(
        Topology::parse(&one)
            .unwrap()
            .store("orders")
            .unwrap()
            .apply_parallel,
        1
    );
    let bad = GOOD.replace(
        "unit_key = \"user_id\"",
        "unit_key = \"user_id\"\napply_parallel = 0",
    );
    let i = issues(&bad);
    assert!(
        i.iter().any(|i| i.message
            == "store \"orders\": apply_parallel = 0: must be between 1 and 64"
            && i.line == 18),
        "{i:?}"
    );
}
