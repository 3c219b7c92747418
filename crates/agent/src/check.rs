//! `dcsync check`: validates a topology file and, with `--connect`, the
//! stores it names (see `docs/operations.md`, "Checking the stores").
//!
//! The file's problems are all listed with `file:line:col` (exit 2). With
//! `--connect`, every store of the selected DCs is inspected at once
//! through its connector's optional [`Connector::inspect`] capability (the
//! agent names no store kind): each finding, and each store that cannot be
//! reached, is printed naming the store, the DC and the redacted URL. Then
//! the limits of each store are compared across the DCs that answered
//! ([`compare_limits`]). Exit 1 if any error was found, 0 if only warnings.
//!
//! [`Connector::inspect`]: dcsync_core::connector::Connector::inspect

use crate::registry::REGISTRY;
use dcsync_core::connector::{
    compare_limits, ConnectorError, Finding, Inspection, Limit, Severity,
};
use dcsync_core::Topology;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Exit code for a topology file that is invalid or a bad command line.
const EXIT_INVALID: u8 = 2;
/// Exit code when `--connect` found at least one error.
const EXIT_FINDINGS: u8 = 1;
/// Longest one store's inspection may take (connectors time out their own
/// connect; this bounds a server that accepts and then hangs).
const INSPECT_TIMEOUT: Duration = Duration::from_secs(60);

/// One line of the report: a finding about one DC's store.
struct Reported {
    store: usize,
    dc: usize,
    finding: Finding,
}

/// Runs `dcsync check --topology path [--connect [--dc ID ...]]`, printing
/// the report to stdout (an invalid file to stderr), and returns the exit
/// code.
pub fn run(path: &Path, connect: bool, dcs: &[String]) -> ExitCode {
    let topo = match Topology::load(path, &REGISTRY) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    println!(
        "{}: ok (cluster {}, {} dcs, {} units, {} stores)",
        path.display(),
        topo.cluster,
        topo.dcs.len(),
        topo.units.count,
        topo.stores.len()
    );
    if !connect {
        return ExitCode::SUCCESS;
    }
    if let Some(unknown) = dcs.iter().find(|d| topo.dc(d).is_none()) {
        eprintln!(
            "dcsync: dc {unknown:?} is not declared in {} (declared: {})",
            path.display(),
            topo.dcs
                .iter()
                .map(|d| d.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitCode::from(EXIT_INVALID);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dcsync: starting the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (reported, checked) = rt.block_on(inspect_all(&topo, dcs));
    let mut errors = 0;
    let mut warnings = 0;
    for r in &reported {
        let store = &topo.stores[r.store];
        let dc = &topo.dcs[r.dc].id;
        let url = store.url_for(dc).map(|u| u.redacted()).unwrap_or_default();
        match r.finding.severity {
            Severity::Error => errors += 1,
            Severity::Warning => warnings += 1,
        }
        println!(
            "{}: store {:?} in dc {dc} ({url}): {}",
            r.finding.severity, store.name, r.finding.message
        );
    }
    println!(
        "{}: {errors} error(s), {warnings} warning(s) in {checked} store connection(s)",
        path.display()
    );
    if errors > 0 {
        ExitCode::from(EXIT_FINDINGS)
    } else {
        ExitCode::SUCCESS
    }
}

/// Inspects every store of the DCs in `only` (every DC if empty) at once,
/// then compares each store's limits across those DCs. Returns the findings
/// in store, DC order and the number of store connections attempted.
async fn inspect_all(topo: &Topology, only: &[String]) -> (Vec<Reported>, usize) {
    let mut tasks = tokio::task::JoinSet::new();
    let mut reported = Vec::new();
    let mut checked = 0;
    for (si, store) in topo.stores.iter().enumerate() {
        let connector = match REGISTRY.connector_for(store) {
            Ok(c) => c,
            Err(e) => {
                for (di, _) in topo.dcs.iter().enumerate() {
                    reported.push(Reported {
                        store: si,
                        dc: di,
                        finding: Finding::error(e.to_string()),
                    });
                }
                continue;
            }
        };
        for (di, dc) in topo.dcs.iter().enumerate() {
            if !only.is_empty() && !only.contains(&dc.id) {
                continue;
            }
            let Some(url) = store.url_for(&dc.id) else {
                continue;
            };
            let Some(inspection) = connector.inspect(url.expose().to_string(), store.clone())
            else {
                continue;
            };
            checked += 1;
            tasks.spawn(async move {
                let r = tokio::time::timeout(INSPECT_TIMEOUT, inspection).await;
                (si, di, r)
            });
        }
    }
    // Limits of each store by DC id, for the cross-DC comparison.
    let mut limits: BTreeMap<usize, BTreeMap<String, BTreeMap<String, Limit>>> = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (si, di, result) = match joined {
            Ok(r) => r,
            Err(e) => {
                eprintln!("dcsync: an inspection task failed: {e}");
                continue;
            }
        };
        match result {
            Ok(Ok(Inspection {
                findings,
                limits: l,
            })) => {
                reported.extend(findings.into_iter().map(|finding| Reported {
                    store: si,
                    dc: di,
                    finding,
                }));
                limits
                    .entry(si)
                    .or_default()
                    .insert(topo.dcs[di].id.clone(), l);
            }
            Ok(Err(e)) => reported.push(Reported {
                store: si,
                dc: di,
                finding: unreachable(&e),
            }),
            Err(_) => reported.push(Reported {
                store: si,
                dc: di,
                finding: Finding::error(format!(
                    "no answer within {} s; fix: check the server is up and not overloaded",
                    INSPECT_TIMEOUT.as_secs()
                )),
            }),
        }
    }
    for (si, by_dc) in &limits {
        for (dc, finding) in compare_limits(by_dc) {
            if let Some(di) = topo.dcs.iter().position(|d| d.id == dc) {
                reported.push(Reported {
                    store: *si,
                    dc: di,
                    finding,
                });
            }
        }
    }
    reported.sort_by_key(|r| (r.store, r.dc));
    (reported, checked)
}

/// The finding for a store that could not be inspected at all.
fn unreachable(e: &ConnectorError) -> Finding {
    match e {
        ConnectorError::Transient(m) => Finding::error(format!(
            "cannot connect: {m}; fix: check the url in the topology and that the server is \
             up and reachable from here"
        )),
        ConnectorError::Definite(m) => Finding::error(format!(
            "cannot inspect: {m}; fix: check the url (user, password) in the topology and the \
             user's privileges"
        )),
    }
}
