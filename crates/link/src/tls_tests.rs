//! Unit tests of the parent module.

use super::*;

#[test]
fn generated_certs_load_and_name_their_dc() {
    let d = tempfile::tempdir().unwrap();
    let g = generate("shop", &["bj".into(), "sh".into()], d.path()).unwrap();
    assert!(!g.reused_ca);
    let bj = LinkTls::load("shop", &g.ca_cert, &g.dcs[0].1, &g.dcs[0].2).unwrap();
    let sh_cert = read_certs("certificate", &g.dcs[1].1).unwrap();
    assert!(bj.cert_is_for(&sh_cert[0], "sh"));
    assert!(!bj.cert_is_for(&sh_cert[0], "bj"));
    // Adding a DC later reuses the CA.
    let g2 = generate("shop", &["gz".into()], d.path()).unwrap();
    assert!(g2.reused_ca);
    let gz = LinkTls::load("shop", &g2.ca_cert, &g2.dcs[0].1, &g2.dcs[0].2).unwrap();
    assert!(gz.cert_is_for(&sh_cert[0], "sh"));
}

#[test]
fn missing_file_is_named() {
    let e = LinkTls::load(
        "shop",
        Path::new("/nonexistent/ca.crt"),
        Path::new("a"),
        Path::new("b"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/ca.crt"), "{e}");
}
