//! The `dcsync` command line: `check` on the documented example and on broken
//! files, and `run` refusing what it cannot do, each with a clear message.
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
