//! Reading Prometheus text exposition in tests: `promtool check metrics`
//! (from Debian's `prometheus` package, which `scripts/setup.sh` installs)
//! and sample lookup.

use std::collections::BTreeMap;
use std::io::Write;

/// Runs `promtool check metrics` on `text`.
///
/// Errors: promtool's complaints (or why it could not run), for a test
/// failure message. A missing promtool is an error naming the package.
pub fn promtool_check(text: &str) -> Result<(), String> {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("promtool not found ({e}): run scripts/setup.sh (Debian package prometheus)")
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("promtool stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("promtool: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The sum of the samples of metric `name` whose labels include every pair
/// of `labels`; `None` if no sample matches.
///
/// Panics on a sample value that is not a number (a test helper).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (lab, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        let have: BTreeMap<&str, &str> = lab
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        if labels.iter().all(|(k, v)| have.get(k) == Some(v)) {
            let v: f64 = value
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("{line}: {e}"));
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}
