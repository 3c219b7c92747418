//! The `dcsync` command line: `check` on the documented example and on broken
//! files, `run` refusing what it cannot do, each with a clear message, and
//! `route` answering with the unit and owner DC of every kind of unit rule.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn dcsync(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dcsync"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn example() -> String {
    format!(
        "{}/../../docs/examples/two-dc.toml",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn check_accepts_the_documented_example() {
    let (code, out, err) = dcsync(&["check", "--topology", &example()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ok (cluster shop, 2 dcs, 64 units, 1 stores)"),
        "{out}"
    );
}

#[test]
fn check_lists_every_problem_with_its_location() {
    let text = std::fs::read_to_string(example()).unwrap();
    let bad = text
        .replace("id = \"sh\"", "id = \"bj\"")
        .replace("sh = \"32-63\"", "sh = \"40-63\"")
        .replace(", sh = \"mysql://root@127.0.0.1:13307\"", "");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, bad).unwrap();
    let (code, _, err) = dcsync(&["check", "--topology", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("duplicate dc id \"bj\""), "{err}");
    assert!(err.contains("units 32-39 have no owner"), "{err}");
    assert!(err.contains("bad.toml:"), "location missing: {err}");

    std::fs::write(
        &path,
        text.replace("cluster = \"shop\"", "cluster = \"shop\"\nflavour = 1"),
    )
    .unwrap();
    let (code, _, err) = dcsync(&["check", "--topology", path.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("flavour") && err.contains("bad.toml:7:"),
        "{err}"
    );
}

/// Three typos in three different tables come out of one run, each at its
/// own line:col (the parser used to stop at the first unknown key outside
/// the store tables).
#[test]
fn check_reports_three_typos_together() {
    let text = std::fs::read_to_string(example()).unwrap();
    let bad = text
        .replace("mode = \"mesh\"", "mdoe = \"mesh\"")
        .replace("link = \"127.0.0.1:7702\"", "lnik = \"127.0.0.1:7702\"")
        .replace("unit_key = \"user_id\"", "unit_kye = \"user_id\"");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typos.toml");
    std::fs::write(&path, bad).unwrap();
    let (code, _, err) = dcsync(&["check", "--topology", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    for want in [
        "typos.toml:7:1: top level: unknown key \"mdoe\"",
        "typos.toml:15:1: [[dc]] #2: unknown key \"lnik\"",
        "typos.toml:25:1: store \"orders\": unknown key \"unit_kye\"",
    ] {
        assert!(err.contains(want), "{want} missing: {err}");
    }
}

#[test]
fn run_refuses_an_undeclared_dc() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = dcsync(&[
        "run",
        "--topology",
        &example(),
        "--dc",
        "gz",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("dc \"gz\" is not declared"), "{err}");
}

#[test]
fn check_accepts_the_docker_compose_topology() {
    let path = format!(
        "{}/../../deploy/docker-two-dc.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let (code, out, err) = dcsync(&["check", "--topology", &path]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn run_refuses_a_topology_without_tls() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(example()).unwrap();
    let cut = text.find("[tls]").unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(&path, &text[..cut]).unwrap();
    let (code, _, err) = dcsync(&[
        "run",
        "--topology",
        path.to_str().unwrap(),
        "--dc",
        "bj",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no [tls] section") && err.contains("dcsync certs"),
        "{err}"
    );
}

#[test]
fn certs_makes_a_ca_and_one_certificate_per_dc() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    std::fs::copy(example(), &path).unwrap();
    let (code, out, err) = dcsync(&["certs", "--topology", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("created CA"), "{out}");
    for f in ["ca.crt", "ca.key", "bj.crt", "bj.key", "sh.crt", "sh.key"] {
        assert!(dir.path().join("certs").join(f).exists(), "{f} missing");
    }
    let (code, out, _) = dcsync(&["certs", "--topology", path.to_str().unwrap(), "--dc", "sh"]);
    assert_eq!(code, 0);
    assert!(out.contains("reused CA"), "{out}");
    let (code, _, err) = dcsync(&["certs", "--topology", path.to_str().unwrap(), "--dc", "gz"]);
    assert_ne!(code, 0);
    assert!(err.contains("\"gz\" is not declared"), "{err}");
}

/// A topology with a unit rule of every kind: by hash (`orders`), by table
/// (`orders`' `units_by_table`), by value map (`geo`) and by key prefix
/// (`cache`); units 0-31 are bj's, 32-63 sh's.
const ROUTED: &str = r#"
cluster = "shop"
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
units_by_table = { "shop.inventory" = 7, "shop.audit_*" = 40 }
url = { bj = "mysql://root@127.0.0.1:13306", sh = "mysql://root@127.0.0.1:13307" }
[[store]]
name = "geo"
kind = "mysql"
tables = ["geo.*"]
unit_key = "region"
unit_values = { "north" = 3, "south" = 40 }
url = { bj = "mysql://root@127.0.0.1:13306", sh = "mysql://root@127.0.0.1:13307" }
[[store]]
name = "cache"
kind = "redis"
unit_key = '^user:(\d+):'
units_by_prefix = { "inventory:" = 50 }
url = { bj = "redis://127.0.0.1:6380", sh = "redis://127.0.0.1:6381" }
[tls]
plaintext = true
"#;

/// `dcsync route` on [`ROUTED`]: (exit code, stdout, stderr).
fn route(dir: &tempfile::TempDir, args: &[&str]) -> (i32, String, String) {
    let path = dir.path().join("routed.toml");
    std::fs::write(&path, ROUTED).unwrap();
    let mut all = vec!["route", "--topology", path.to_str().unwrap()];
    all.extend_from_slice(args);
    dcsync(&all)
}

/// The owner of `unit` in [`ROUTED`].
fn owner(unit: u32) -> &'static str {
    if unit < 32 {
        "bj"
    } else {
        "sh"
    }
}

#[test]
fn route_prints_the_unit_and_owner_of_each_rule() {
    let dir = tempfile::tempdir().unwrap();
    let ok = |args: &[&str]| {
        let (code, out, err) = route(&dir, args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        (out.trim_end().to_string(), err)
    };
    // Hash of the unit key value (the same function the sources use).
    let u = dcsync_core::unit::unit_of(b"42", 64);
    let want = format!(
        "unit {u} owner {} (store orders, rule: hash of user_id)",
        owner(u)
    );
    let (out, err) = ok(&["--store", "orders", "--table", "shop.orders", "42"]);
    assert_eq!((out.as_str(), err.as_str()), (want.as_str(), ""));
    // Without --table the table rules cannot apply: said on stderr.
    let (out, err) = ok(&["--store", "orders", "42"]);
    assert_eq!(out, want);
    assert!(err.contains("pass --table"), "{err}");
    // By table: the value does not matter.
    let (out, _) = ok(&["--store", "orders", "--table", "shop.audit_2024", "42"]);
    assert_eq!(
        out,
        "unit 40 owner sh (store orders, rule: units_by_table \"shop.audit_*\")"
    );
    let (out, _) = ok(&["--store", "orders", "--table", "shop.inventory", "1"]);
    assert_eq!(
        out,
        "unit 7 owner bj (store orders, rule: units_by_table \"shop.inventory\")"
    );
    // By value map, and the hash fallback for a value it does not list.
    let (out, _) = ok(&["--store", "geo", "north"]);
    assert_eq!(
        out,
        "unit 3 owner bj (store geo, rule: unit_values of region)"
    );
    let (out, _) = ok(&["--store", "geo", "south"]);
    assert_eq!(
        out,
        "unit 40 owner sh (store geo, rule: unit_values of region)"
    );
    let w = dcsync_core::unit::unit_of(b"west", 64);
    let (out, _) = ok(&["--store", "geo", "west"]);
    assert_eq!(
        out,
        format!(
            "unit {w} owner {} (store geo, rule: hash of region: the value is not in unit_values)",
            owner(w)
        )
    );
    // Redis: the key itself.
    let (out, _) = ok(&["--store", "cache", "user:42:cart"]);
    assert_eq!(
        out,
        format!(
            "unit {u} owner {} (store cache, rule: hash of the unit_key capture \"42\")",
            owner(u)
        )
    );
    let (out, _) = ok(&["--store", "cache", "inventory:sku-9"]);
    assert_eq!(
        out,
        "unit 50 owner sh (store cache, rule: units_by_prefix \"inventory:\")"
    );
}

#[test]
fn route_refuses_bad_questions_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let fails = |args: &[&str], want: &str| {
        let (code, out, err) = route(&dir, args);
        assert_ne!(code, 0, "{args:?}: {out}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(err.contains(want), "{args:?}: want {want:?} in: {err}");
    };
    fails(&["--store", "nope", "42"], "store \"nope\" is not in");
    fails(
        &["--store", "nope", "42"],
        "(its stores: orders, geo, cache)",
    );
    fails(
        &["--store", "orders", "--table", "other.t", "42"],
        "store \"orders\": table other.t is not replicated by this store (tables = [\"shop.*\"])",
    );
    fails(
        &["--store", "orders", "--table", "orders", "42"],
        "--table \"orders\" must be schema.table",
    );
    fails(
        &["--store", "cache", "--table", "shop.t", "user:1:x"],
        "a redis store has no tables",
    );
    fails(
        &["--store", "cache", "session:1"],
        "key \"session:1\" has no unit: it does not match unit_key",
    );
    // No value: a usage error from the argument parser.
    let (code, _, err) = route(&dir, &["--store", "orders"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("<VALUE>"), "{err}");
    // An invalid topology: its problems, as `check` prints them.
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        ROUTED.replace("\"shop.inventory\" = 7", "\"shop.inventory\" = 70"),
    )
    .unwrap();
    let (code, _, err) = dcsync(&[
        "route",
        "--topology",
        path.to_str().unwrap(),
        "--store",
        "orders",
        "1",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("bad.toml:17:39: store \"orders\": units_by_table.\"shop.inventory\" = 70: unit out of range 0-63 (units.count = 64)"),
        "{err}"
    );
}
