//! Unit tests of the parent module.

use super::*;

fn limits(bytes: u64) -> BTreeMap<String, Limit> {
    BTreeMap::from([(
        "max_allowed_packet".to_string(),
        Limit {
            bytes,
            fix: "SET GLOBAL max_allowed_packet={value}".to_string(),
        },
    )])
}

#[test]
fn a_limit_below_another_dcs_is_an_error_naming_both() {
    let by_dc = BTreeMap::from([
        ("bj".to_string(), limits(64 << 20)),
        ("sh".to_string(), limits(1 << 20)),
        ("gz".to_string(), limits(16 << 20)),
    ]);
    let found = compare_limits(&by_dc);
    let dcs: Vec<&str> = found.iter().map(|(dc, _)| dc.as_str()).collect();
    assert_eq!(dcs, ["gz", "sh"], "{found:?}");
    let (_, sh) = &found[1];
    assert_eq!(sh.severity, Severity::Error);
    assert!(
        sh.message
            .contains("1048576 bytes here but 67108864 in dc bj")
            && sh
                .message
                .contains("SET GLOBAL max_allowed_packet=67108864"),
        "{}",
        sh.message
    );
}

#[test]
fn equal_or_unshared_limits_are_fine() {
    let mut other = limits(1);
    other.clear();
    let by_dc = BTreeMap::from([
        ("bj".to_string(), limits(1 << 20)),
        ("sh".to_string(), limits(1 << 20)),
        ("gz".to_string(), other),
    ]);
    assert!(compare_limits(&by_dc).is_empty());
}
