//! The exposition is valid Prometheus text (checked by `promtool check
//! metrics`, from Debian's `prometheus` package, installed by
//! `scripts/setup.sh`), and the Grafana dashboard only uses metrics the
//! agent exports.

use dcsync_core::events::{self, names};
use metrics_exporter_prometheus::PrometheusBuilder;

/// Emits one of every event into a private recorder and renders it.
fn sample_exposition() -> String {
    let recorder = PrometheusBuilder::new()
        .add_global_label("dc", "bj")
        .build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        events::describe();
        events::SourceCaptured {
            store: "orders",
            txns: 3,
            changes: 7,
            lag_ms: Some(1500),
        }
        .emit();
        events::EchoDropped {
            store: "orders",
            txns: 2,
        }
        .emit();
        events::FullResync { store: "cache" }.emit();
        events::SourceSkipped {
            store: "orders",
            what: "ddl",
            count: 2,
        }
        .emit();
        events::ConflictResolved {
            store: "orders",
            policy: "lww",
        }
        .emit();
        events::MisroutedWrites {
            store: "orders",
            count: 3,
        }
        .emit();
        events::ApplySkipped {
            origin: "sh",
            store: "cache",
            what: "unsupported_command",
            count: 1,
        }
        .emit();
        events::BatchApplied {
            peer: "sh",
            origin: "sh",
            store: "orders",
            txns: 4,
            bytes: 900,
            lag_ms: 30,
        }
        .emit();
        events::ApplyFailed {
            peer: "sh",
            origin: "sh",
            store: "cache",
            definite: true,
            bytes: 10,
        }
        .emit();
        events::BatchSent {
            peer: "sh",
            txns: 5,
            bytes: 1000,
        }
        .emit();
        events::BatchAcked {
            peer: "sh",
            txns: 5,
        }
        .emit();
        events::LinkConnected {
            peer: "sh",
            version: 2,
        }
        .emit();
        events::LinkFailed { peer: "sh" }.emit();
        events::StreamPauseChanged {
            peer: "sh",
            origin: "bj",
            store: "orders",
            paused: true,
        }
        .emit();
        events::VectorObserved {
            store: "orders",
            origin: "sh",
            applier: "gz",
            behind: 4,
        }
        .emit();
        events::BacklogObserved {
            peer: "sh",
            origin: "bj",
            store: "orders",
            txns: 9,
            bytes: 4096,
            oldest_age_ms: 2500,
        }
        .emit();
        events::VerifyChecked {
            store: "orders",
            at_ms: 1_764_547_200_000,
            differences: 2,
        }
        .emit();
        events::VerifyFailed { store: "cache" }.emit();
        events::VersionUpkeep {
            store: "cache",
            pruned: 12,
            unfolded: 300,
        }
        .emit();
    });
    handle.render()
}

#[test]
fn every_metric_is_exported_with_help_and_passes_promtool() {
    let text = sample_exposition();
    for name in names::ALL {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}:\n{text}"
        );
        assert!(
            text.contains(&format!("\n{name}{{")),
            "no sample of {name}:\n{text}"
        );
    }
    assert!(
        text.contains(r#"dcsync_source_transactions_total{dc="bj",store="orders"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"dcsync_apply_errors_total{dc="bj",origin="sh",store="cache",kind="definite"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"dcsync_source_skipped_total{dc="bj",store="orders",kind="ddl"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"dcsync_misrouted_writes_total{dc="bj",store="orders"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"dcsync_verify_differences{dc="bj",store="orders"} 2"#)
            && text.contains(
                r#"dcsync_verify_last_timestamp_seconds{dc="bj",store="orders"} 1764547200"#
            ),
        "{text}"
    );
    if let Err(e) = dcsync_testkit::prometheus::promtool_check(&text) {
        panic!("{e}\n{text}");
    }
}

#[test]
fn the_dashboard_uses_only_exported_metrics() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/dcsync.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dash: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("dashboard JSON: {e}"));
    let mut used = 0;
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("dcsync_") && word != "dcsync_overview" {
            assert!(
                names::ALL.contains(&word),
                "dashboard uses {word}, which the agent does not export"
            );
            used += 1;
        }
    }
    assert!(used >= 10, "dashboard references only {used} metrics");
    assert!(dash["panels"].as_array().is_some_and(|p| p.len() >= 8));
}
