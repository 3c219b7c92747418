//! `dcsync verify`: proves that the DCs hold the same data of one store,
//! or names what differs (see `docs/operations.md`, "Checking
//! consistency").
//!
//! Every DC's store is opened through its connector's optional
//! [`Connector::verify`] capability (the agent names no store kind) and
//! compared collection by collection (tables, databases): a collection
//! missing or defined differently in a DC is a difference; the others are
//! divided into units (chunks, buckets) planned by the first DC, and each
//! unit's digest is compared across DCs. Writes go on meanwhile, so a
//! unit that differs may only hold a change still on its way: it is
//! re-checked item by item (rows, keys) after `--recheck-ms`, `--rechecks`
//! times, and only the items that differ in every round are reported,
//! with what each DC holds.
//!
//! Exit codes: 0 equal, 1 a difference remains, 2 nothing could be
//! concluded (bad arguments, a store unreachable, a collection that could
//! not be compared).
//!
//! [`Connector::verify`]: dcsync_core::connector::Connector::verify

use crate::registry::REGISTRY;
use anyhow::{bail, Context};
use dcsync_core::connector::ConnectorError;
use dcsync_core::verify::{ItemDigest, VerifyOptions, VerifyScan, VerifyTerms, VerifyUnit};
use dcsync_core::Topology;
use futures_util::future::try_join_all;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Exit code when a difference remains after the re-checks.
const EXIT_DIFFERENT: u8 = 1;
/// Exit code when nothing could be concluded.
const EXIT_FAILED: u8 = 2;

/// The options of one `dcsync verify` run.
#[derive(Debug, Clone)]
pub struct Args {
    /// The store, by name.
    pub store: String,
    /// The DCs to compare; empty: every DC with a url for the store.
    pub dcs: Vec<String>,
    /// Print the report as JSON.
    pub json: bool,
    /// Delay before each re-check of a differing unit.
    pub recheck: Duration,
    /// How many re-checks a difference must survive to be reported.
    pub rechecks: u32,
    /// Rows (keys) per chunk (bucket).
    pub chunk_rows: u64,
    /// `--repair --from DC`: make every differing row or key equal to this
    /// DC's copy, through the normal pipeline.
    pub repair_from: Option<String>,
}

/// What one DC holds of a differing item or collection.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Difference {
    /// The table or database.
    pub collection: String,
    /// The row or key (`id=42`); `None` when the whole collection differs
    /// (missing in a DC, defined differently).
    pub item: Option<String>,
    /// `missing in sh`, `values differ`, `definition differs`.
    pub what: String,
    /// Per DC: `missing`, the item's digest (16 hex digits), or the
    /// collection's definition.
    pub dcs: BTreeMap<String, String>,
    /// The item's identity ([`ItemDigest::key`]), for `--repair`.
    #[serde(skip)]
    pub key: Option<Vec<u8>>,
}

/// A collection that could not be compared, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NotCompared {
    /// The table or database.
    pub collection: String,
    /// Why (`table shop.log has no primary key ...`).
    pub reason: String,
}

/// The result of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The store's name.
    pub store: String,
    /// Its kind.
    pub kind: String,
    /// The DCs compared; the first planned the units.
    pub dcs: Vec<String>,
    /// The kind's words for collections, units and items.
    pub terms: VerifyTerms,
    /// Collections (tables, databases) seen in any DC.
    pub collections: u64,
    /// Units (chunks, buckets) compared.
    pub units: u64,
    /// Items (rows, keys) the first DC holds in the compared units.
    pub items: u64,
    /// Units that differed at first and were re-checked.
    pub units_rechecked: u64,
    /// Re-check rounds asked for.
    pub rechecks: u32,
    /// What still differs.
    pub differences: Vec<Difference>,
    /// Items that differed in every round and were still changing in the
    /// last one (written while compared): not concluded.
    pub unsettled: Vec<Difference>,
    /// What could not be compared.
    pub not_compared: Vec<NotCompared>,
    /// With `--repair`: what was written again (`table shop.items row
    /// id=17: rewritten in bj`), in the order done.
    pub repaired: Vec<String>,
    /// Wall time of the run, ms.
    pub elapsed_ms: u64,
    /// Items per second of the run (first DC's items).
    pub items_per_s: u64,
}

/// Runs `dcsync verify --topology path ...`, prints the report and
/// returns the exit code.
pub fn run(path: &Path, args: &Args) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dcsync: starting the tokio runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match rt.block_on(verify(path, args)) {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("dcsync: {e}");
                        return ExitCode::from(EXIT_FAILED);
                    }
                }
            } else {
                print_text(&report);
            }
            if !report.differences.is_empty() && args.repair_from.is_none() {
                ExitCode::from(EXIT_DIFFERENT)
            } else if !report.not_compared.is_empty() || !report.unsettled.is_empty() {
                ExitCode::from(EXIT_FAILED)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("dcsync: verify: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// One difference as the report prints it, after `difference: `:
/// `table shop.items row id=17: values differ (bj: f7e4…, sh: 3666…)`.
pub fn difference_text(t: &VerifyTerms, d: &Difference) -> String {
    let states: Vec<String> = d.dcs.iter().map(|(dc, s)| format!("{dc}: {s}")).collect();
    match &d.item {
        Some(item) => format!(
            "{} {} {} {item}: {} ({})",
            t.collection,
            d.collection,
            t.item,
            d.what,
            states.join(", ")
        ),
        None => format!(
            "{} {}: {} ({})",
            t.collection,
            d.collection,
            d.what,
            states.join("; ")
        ),
    }
}

/// What a report checked: `3 table(s), 1202 row(s) in 21 chunk(s)`.
pub fn checked_text(r: &Report) -> String {
    let t = &r.terms;
    format!(
        "{} {}(s), {} {}(s) in {} {}(s)",
        r.collections, t.collection, r.items, t.item, r.units, t.unit
    )
}

fn print_text(r: &Report) {
    let t = &r.terms;
    for d in &r.differences {
        println!("difference: {}", difference_text(t, d));
    }
    for d in &r.unsettled {
        println!(
            "still changing: {} {} {} {}: {} in every round, written while compared ({})",
            t.collection,
            d.collection,
            t.item,
            d.item.as_deref().unwrap_or_default(),
            d.what,
            d.dcs
                .iter()
                .map(|(dc, s)| format!("{dc}: {s}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for n in &r.not_compared {
        println!(
            "not compared: {} {}: {}",
            t.collection, n.collection, n.reason
        );
    }
    for line in &r.repaired {
        println!("repaired: {line}");
    }
    let result = if r.differences.is_empty() && r.not_compared.is_empty() && r.unsettled.is_empty()
    {
        "equal".to_string()
    } else {
        format!(
            "{} difference(s), {} {}(s) still changing, {} {}(s) not compared",
            r.differences.len(),
            r.unsettled.len(),
            t.item,
            r.not_compared.len(),
            t.collection
        )
    };
    println!(
        "store {:?} ({}) in {}: {result}; {}, {} {}(s) re-checked up to {} time(s); {:.2} s, \
         {} {}s/s",
        r.store,
        r.kind,
        r.dcs.join(", "),
        checked_text(r),
        r.units_rechecked,
        t.unit,
        r.rechecks,
        r.elapsed_ms as f64 / 1000.0,
        r.items_per_s,
        t.item
    );
}

/// Loads the topology at `path` and compares the store.
async fn verify(path: &Path, args: &Args) -> anyhow::Result<Report> {
    let topo = Topology::load(path, &REGISTRY)?;
    compare(&topo, &path.display().to_string(), args).await
}

/// Opens every DC's store of `args.store` through `topo`'s urls and
/// compares them (with `args.repair_from`, repairs what differs): what
/// `dcsync verify` runs, and the agent's periodic check
/// (`crate::periodic_verify`). `file` names the topology in messages.
///
/// Errors: a store or DC not declared, fewer than two DCs, a kind without
/// the verify capability, a store that cannot be opened or read.
pub async fn compare(topo: &Topology, file: &str, args: &Args) -> anyhow::Result<Report> {
    let started = Instant::now();
    let Some(store) = topo.stores.iter().find(|s| s.name == args.store) else {
        bail!(
            "store {:?} is not declared in {} (declared: {})",
            args.store,
            file,
            topo.stores
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let dcs: Vec<String> = if args.dcs.is_empty() {
        topo.dcs
            .iter()
            .filter(|d| store.url_for(&d.id).is_some())
            .map(|d| d.id.clone())
            .collect()
    } else {
        args.dcs.clone()
    };
    for dc in &dcs {
        if topo.dc(dc).is_none() {
            bail!("dc {dc:?} is not declared in {file}");
        }
        if store.url_for(dc).is_none() {
            bail!("store {:?} has no url for dc {dc}", store.name);
        }
    }
    if dcs.len() < 2 {
        bail!(
            "store {:?}: verify compares at least two DCs, {} given ({})",
            store.name,
            dcs.len(),
            dcs.join(", ")
        );
    }
    let connector = REGISTRY.connector_for(store)?;
    let opts = VerifyOptions {
        chunk_items: args.chunk_rows.max(1),
    };
    let mut opening = Vec::new();
    for dc in &dcs {
        let url = store
            .url_for(dc)
            .with_context(|| format!("no url for dc {dc}"))?;
        let Some(open) = connector.verify(url.expose().to_string(), store.clone(), opts) else {
            bail!(
                "store {:?}: kind {} cannot be verified (its connector has no verify capability)",
                store.name,
                store.kind
            );
        };
        let redacted = url.redacted();
        let dc = dc.clone();
        opening.push(async move {
            open.await
                .with_context(|| format!("dc {dc} ({redacted}): cannot open the store"))
        });
    }
    let mut scans = try_join_all(opening).await?;
    let mut report = Report {
        store: store.name.clone(),
        kind: store.kind.clone(),
        dcs: dcs.clone(),
        terms: scans[0].terms(),
        collections: 0,
        units: 0,
        items: 0,
        units_rechecked: 0,
        rechecks: args.rechecks,
        differences: Vec::new(),
        unsettled: Vec::new(),
        not_compared: Vec::new(),
        repaired: Vec::new(),
        elapsed_ms: 0,
        items_per_s: 0,
    };
    let mut pending = Vec::new();
    let mut collections = BTreeSet::new();
    for listed in try_join_all(scans.iter_mut().map(|s| s.collections())).await? {
        collections.extend(listed);
    }
    report.collections = collections.len() as u64;
    for c in &collections {
        match compare_collection(&mut scans, &dcs, c, &mut report).await {
            Ok(mut differing) => pending.append(&mut differing),
            Err(ConnectorError::Definite(reason)) => report.not_compared.push(NotCompared {
                collection: c.clone(),
                reason,
            }),
            Err(e) => return Err(e).with_context(|| format!("comparing {c}")),
        }
    }
    report.units_rechecked = pending.len() as u64;
    recheck(&mut scans, &dcs, pending, args, &mut report).await?;
    if let Some(from) = &args.repair_from {
        // `--repair` without `--from`: the first DC compared.
        let from = if from.is_empty() { &dcs[0] } else { from };
        repair(&mut scans, &dcs, from, &mut report).await?;
    }
    let elapsed = started.elapsed();
    report.elapsed_ms = elapsed.as_millis() as u64;
    report.items_per_s = (report.items as f64 / elapsed.as_secs_f64().max(0.001)) as u64;
    Ok(report)
}

/// Compares one collection's definition and units; returns the units
/// whose digests differ, to re-check.
async fn compare_collection(
    scans: &mut [Box<dyn VerifyScan>],
    dcs: &[String],
    c: &str,
    report: &mut Report,
) -> Result<Vec<(String, VerifyUnit)>, ConnectorError> {
    let shapes = try_join_all(scans.iter_mut().map(|s| s.shape(c))).await?;
    let missing: Vec<&str> = dcs
        .iter()
        .zip(&shapes)
        .filter(|(_, s)| s.is_none())
        .map(|(dc, _)| dc.as_str())
        .collect();
    let state = |s: &Option<String>| s.clone().unwrap_or_else(|| "missing".to_string());
    if !missing.is_empty() {
        report.differences.push(Difference {
            collection: c.to_string(),
            item: None,
            what: format!("missing in {}", missing.join(", ")),
            dcs: dcs.iter().cloned().zip(shapes.iter().map(state)).collect(),
            key: None,
        });
        return Ok(Vec::new());
    }
    if shapes.windows(2).any(|w| w[0] != w[1]) {
        report.differences.push(Difference {
            collection: c.to_string(),
            item: None,
            what: "definition differs".to_string(),
            dcs: dcs.iter().cloned().zip(shapes.iter().map(state)).collect(),
            key: None,
        });
        return Ok(Vec::new());
    }
    let mut differing = Vec::new();
    let mut after: Option<VerifyUnit> = None;
    loop {
        let batch = scans[0].plan(c, after.as_ref()).await?;
        if batch.is_empty() {
            return Ok(differing);
        }
        let digests = try_join_all(scans.iter_mut().map(|s| s.digest(c, &batch))).await?;
        for (i, unit) in batch.iter().enumerate() {
            let of_dc: Vec<_> = digests.iter().map(|d| d.get(i).copied()).collect();
            report.units += 1;
            report.items += of_dc[0].map_or(0, |d| d.items);
            if of_dc.windows(2).any(|w| w[0] != w[1]) {
                differing.push((c.to_string(), unit.clone()));
            }
        }
        after = batch.last().cloned();
    }
}

/// What each DC holds of one item: `None` = missing.
type Holdings = Vec<Option<u64>>;

/// The items of `unit` that differ between DCs, with their labels and
/// what each DC holds.
async fn differing_items(
    scans: &mut [Box<dyn VerifyScan>],
    c: &str,
    unit: &VerifyUnit,
) -> Result<BTreeMap<Vec<u8>, (String, Holdings)>, ConnectorError> {
    let units = std::slice::from_ref(unit);
    let per_dc: Vec<Vec<ItemDigest>> =
        try_join_all(scans.iter_mut().map(|s| s.items(c, units))).await?;
    let n = per_dc.len();
    let mut all: BTreeMap<Vec<u8>, (String, Holdings)> = BTreeMap::new();
    for (i, items) in per_dc.into_iter().enumerate() {
        for it in items {
            let e = all
                .entry(it.key)
                .or_insert_with(|| (it.label, vec![None; n]));
            if let Some(slot) = e.1.get_mut(i) {
                *slot = Some(it.digest);
            }
        }
    }
    all.retain(|_, (_, h)| h.windows(2).any(|w| w[0] != w[1]));
    Ok(all)
}

/// One item that differed in every round so far.
#[derive(Debug, Clone)]
struct Candidate {
    label: String,
    holdings: Holdings,
    /// Whether every DC held the same as in the round before.
    stable: bool,
}

/// Re-checks the differing units item by item, rounds `args.recheck`
/// apart (one round at once when `args.rechecks` is 0). An item that is
/// equal in any round was in flight and is dropped. After
/// `args.rechecks` rounds an item that still differs and held still since
/// the round before is a difference; one still changing (written while
/// being compared) gets up to `args.rechecks` more rounds to settle, and
/// is reported as unsettled if it does not.
async fn recheck(
    scans: &mut [Box<dyn VerifyScan>],
    dcs: &[String],
    pending: Vec<(String, VerifyUnit)>,
    args: &Args,
    report: &mut Report,
) -> anyhow::Result<()> {
    let k = args.rechecks.max(1);
    let last_round = if args.rechecks >= 2 { 2 * k } else { k };
    // Each unit with the items that differed in every round so far
    // (`None` before the first round).
    type Candidates = Option<BTreeMap<Vec<u8>, Candidate>>;
    let mut pending: Vec<(String, VerifyUnit, Candidates)> =
        pending.into_iter().map(|(c, u)| (c, u, None)).collect();
    for round in 1..=last_round {
        if pending.is_empty() {
            return Ok(());
        }
        if args.rechecks > 0 {
            tokio::time::sleep(args.recheck).await;
        }
        for (c, unit, cand) in pending.iter_mut() {
            let now = match differing_items(scans, c, unit).await {
                Ok(now) => now,
                Err(ConnectorError::Definite(reason)) => {
                    report.not_compared.push(NotCompared {
                        collection: c.clone(),
                        reason,
                    });
                    *cand = Some(BTreeMap::new());
                    continue;
                }
                Err(e) => return Err(e).with_context(|| format!("re-checking {c} {}", unit.label)),
            };
            let before = cand.take();
            let mut next = BTreeMap::new();
            for (key, (label, holdings)) in now {
                let stable = match &before {
                    // The first round has nothing to compare with: only
                    // a single round (rechecks 0 or 1) reports it as is.
                    None => last_round == 1,
                    Some(b) => match b.get(&key) {
                        Some(was) => was.holdings == holdings,
                        // Equal in an earlier round: it was in flight.
                        None => continue,
                    },
                };
                next.insert(
                    key,
                    Candidate {
                        label,
                        holdings,
                        stable,
                    },
                );
            }
            if round >= k {
                // Decided: differing and still since the last round.
                let decided: Vec<Vec<u8>> = next
                    .iter()
                    .filter(|(_, cd)| cd.stable || round == last_round)
                    .map(|(key, _)| key.clone())
                    .collect();
                for key in decided {
                    if let Some(cd) = next.remove(&key) {
                        let mut d = item_difference(c, cd.label, dcs, &cd.holdings);
                        d.key = Some(key.clone());
                        if cd.stable {
                            report.differences.push(d);
                        } else {
                            report.unsettled.push(d);
                        }
                    }
                }
            }
            *cand = Some(next);
        }
        pending.retain(|(_, _, cand)| cand.as_ref().is_none_or(|m| !m.is_empty()));
    }
    Ok(())
}

/// `--repair --from`: every differing item is made equal to `from`'s copy
/// through the normal pipeline: written again in `from` (its source ships
/// it to every DC, marked and echo-free like any write), or, where `from`
/// does not hold it, deleted in the DCs that do. A collection missing or
/// defined differently is left to the operator (DDL is not replicated).
async fn repair(
    scans: &mut [Box<dyn VerifyScan>],
    dcs: &[String],
    from: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let Some(reference) = dcs.iter().position(|d| d == from) else {
        bail!(
            "--from {from}: not one of the DCs compared ({})",
            dcs.join(", ")
        );
    };
    for d in &report.differences {
        let (Some(key), Some(item)) = (&d.key, &d.item) else {
            report.repaired.push(format!(
                "{} {}: {} (not repaired: create or alter it by hand)",
                report.terms.collection, d.collection, d.what
            ));
            continue;
        };
        let what = format!(
            "{} {} {} {item}",
            report.terms.collection, d.collection, report.terms.item
        );
        let held = d.dcs.get(from).is_some_and(|h| h != "missing");
        if held {
            let done = scans[reference]
                .repair(&d.collection, key, false)
                .await
                .with_context(|| format!("repairing {what} in {from}"))?;
            report.repaired.push(if done {
                format!("{what}: written again in {from}, which ships it to every DC")
            } else {
                format!("{what}: no longer in {from}; left as it is")
            });
        } else {
            for (i, dc) in dcs.iter().enumerate() {
                if i == reference || d.dcs.get(dc).is_none_or(|h| h == "missing") {
                    continue;
                }
                scans[i]
                    .repair(&d.collection, key, true)
                    .await
                    .with_context(|| format!("deleting {what} in {dc}"))?;
                report
                    .repaired
                    .push(format!("{what}: deleted in {dc} ({from} does not hold it)"));
            }
        }
    }
    Ok(())
}

/// The [`Difference`] of one item held as `holdings` by `dcs`.
fn item_difference(c: &str, label: String, dcs: &[String], holdings: &Holdings) -> Difference {
    let missing: Vec<&str> = dcs
        .iter()
        .zip(holdings)
        .filter(|(_, h)| h.is_none())
        .map(|(dc, _)| dc.as_str())
        .collect();
    let present: BTreeSet<u64> = holdings.iter().flatten().copied().collect();
    let mut what = Vec::new();
    if !missing.is_empty() {
        what.push(format!("missing in {}", missing.join(", ")));
    }
    if present.len() > 1 {
        what.push("values differ".to_string());
    }
    Difference {
        collection: c.to_string(),
        item: Some(label),
        what: what.join("; "),
        dcs: dcs
            .iter()
            .cloned()
            .zip(holdings.iter().map(|h| match h {
                None => "missing".to_string(),
                Some(d) => format!("{d:016x}"),
            }))
            .collect(),
        key: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_difference_names_missing_dcs_and_differing_values() {
        let dcs = vec!["bj".to_string(), "sh".to_string(), "tk".to_string()];
        let d = item_difference(
            "shop.items",
            "id=7".into(),
            &dcs,
            &vec![Some(1), None, Some(2)],
        );
        assert_eq!(d.what, "missing in sh; values differ");
        assert_eq!(d.dcs["sh"], "missing");
        assert_eq!(d.dcs["bj"], "0000000000000001");
        let d = item_difference(
            "shop.items",
            "id=7".into(),
            &dcs,
            &vec![Some(1), Some(1), None],
        );
        assert_eq!(d.what, "missing in tk");
    }
}
