//! `dcsync bootstrap --topology F --dc NEW --from DC`: fills a new DC's
//! empty stores from an existing DC while every DC keeps writing, and
//! prepares the new DC's journal so that its agent starts streaming right
//! after the copy (docs/operations.md, "Adding a DC").
//!
//! Per store the kind can bootstrap ([`Connector::bootstrap`]):
//!
//! 1. The existing DC's agent status (`GET /status` on its `admin`
//!    address) gives its journal epoch and how far its journal has read its
//!    store, *before* the copy starts: the new DC's apply marker of that DC
//!    starts there, so its agent resends from the next seq (a change the
//!    copy already holds is applied again, idempotently; none is skipped).
//! 2. The connector copies the store in one consistent snapshot and writes
//!    the new DC's markers of every other origin as that snapshot's own.
//! 3. The new DC's journal (its `--data-dir`) gets the position after the
//!    copy as its source checkpoint, and its streams are settled: its
//!    agent tails from there and ships nothing of the copy back.
//!
//! The new DC's agent must not be running; the existing DC's must be (its
//! journal must keep the changes after the copy for the new DC: the new DC
//! must be in the topology every agent runs with before the bootstrap).
//!
//! With `--backup-position [STORE=]P` the operator already restored the new
//! DC's store from a backup of the existing DC's store taken at source
//! position `P` (its `dcsync` schema included): nothing is copied. Step 1
//! asks the existing DC's agent instead which seq of its journal the backup
//! holds (`GET /journal/seq-at`: the highest seq at or before `P`); step 2
//! writes only that DC's marker at that seq, keeping the other origins'
//! markers the restore brought; step 3 is the same.
//!
//! [`Connector::bootstrap`]: dcsync_core::connector::Connector::bootstrap

use crate::registry::REGISTRY;
use crate::seq_at::SeqAt;
use anyhow::{bail, Context};
use dcsync_core::connector::BootstrapFrom;
use dcsync_core::Topology;
use dcsync_journal::Journal;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

/// `GET path` on `addr` (`host:port`): the HTTP status code and the body.
///
/// Errors: the agent cannot be reached or gave no HTTP answer.
fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s =
        std::net::TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)
        .with_context(|| format!("reading {addr}{path}"))?;
    let resp = String::from_utf8_lossy(&resp).to_string();
    let Some((head, body)) = resp.split_once("\r\n\r\n") else {
        bail!("{addr}{path}: not an HTTP answer");
    };
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("{addr}{path}: no HTTP status in {:?}", head.lines().next()))?;
    Ok((code, body.to_string()))
}

/// (journal epoch, seq its journal reached for `store`) from an agent's
/// status document.
fn reached(status: &serde_json::Value, store: &str) -> anyhow::Result<(u64, u64)> {
    let epoch = status["journal_epoch"].as_u64().unwrap_or(0);
    if epoch == 0 {
        bail!("the agent's status names no journal epoch (an older release?)");
    }
    let seq = status["links"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["backlog"].as_array())
        .flatten()
        .filter(|b| b["store"].as_str() == Some(store))
        .filter_map(|b| b["last_seq"].as_u64())
        .max()
        .unwrap_or(0);
    Ok((epoch, seq))
}

/// The agent status at `admin`, written after this call began (the status
/// is rewritten every second): its journal's head is then at least where
/// it was when the bootstrap started, so the seq taken from it is still in
/// the journal (every entry after it is kept for the new DC).
///
/// Errors: the agent unreachable, or no fresh status within 10 s.
async fn fresh_status(admin: &str) -> anyhow::Result<serde_json::Value> {
    let asked = dcsync_core::now_ms();
    let mut last = String::from("no answer");
    for _ in 0..100 {
        // An agent that is (re)starting answers after a moment.
        match http_get(admin, "/status") {
            Ok((200, body)) => {
                let status: serde_json::Value = serde_json::from_str(&body)
                    .with_context(|| format!("the agent status at {admin}"))?;
                if status["written_ms"].as_u64().unwrap_or(0) > asked {
                    return Ok(status);
                }
                last = "its status is older than this command".into();
            }
            Ok((code, _)) => last = format!("HTTP {code}"),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the agent at {admin} gave no new status within 10 s ({last}): is it running?")
}

/// The seq of `from`'s journal of `store` that a backup taken at `position`
/// holds, from its agent at `admin` (`GET /journal/seq-at`).
///
/// Errors: the agent unreachable for 10 s, or its answer (a backup older
/// than its journal, a position it cannot compare).
async fn seq_at(admin: &str, from: &str, store: &str, position: &str) -> anyhow::Result<SeqAt> {
    let path = format!(
        "/journal/seq-at?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("store", store)
            .append_pair("position", position)
            .finish()
    );
    let mut last = String::from("no answer");
    for _ in 0..100 {
        match http_get(admin, &path) {
            Ok((200, body)) => {
                return serde_json::from_str(&body)
                    .with_context(|| format!("the answer of {admin}{path}: {body:?}"))
            }
            Ok((code, body)) => {
                let why = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or_else(|| format!("HTTP {code} (an agent older than this command?)"));
                bail!(
                    "store {store}: dc {from}'s agent cannot place the backup position {position:?} \
                     in its journal: {why}"
                );
            }
            // An agent that is (re)starting answers after a moment.
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the agent at {admin} did not answer within 10 s ({last}): is it running?")
}

/// `--backup-position` values: `STORE=POSITION` for one store, or a bare
/// position for every store. A position may itself hold `=` (`file:offset
/// gtid=...`): the part before the first `=` names a store only if it is
/// one.
fn backup_positions(
    topo: &Topology,
    given: &[String],
) -> anyhow::Result<(Option<String>, BTreeMap<String, String>)> {
    let mut bare = None;
    let mut per_store = BTreeMap::new();
    for g in given {
        match g.split_once('=') {
            Some((name, p)) if topo.store(name).is_some() => {
                if per_store.insert(name.to_string(), p.to_string()).is_some() {
                    bail!("--backup-position: store {name} given twice");
                }
            }
            Some((name, _))
                if !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                bail!("--backup-position {g:?}: no store {name:?} in the topology");
            }
            _ => {
                if bare.replace(g.clone()).is_some() {
                    bail!(
                        "--backup-position: give one position, or one per store as STORE=POSITION"
                    );
                }
            }
        }
    }
    Ok((bare, per_store))
}

/// Runs the bootstrap of DC `to` from DC `from` (see the module docs);
/// `backups` are the `--backup-position` values.
pub async fn run(
    topology: &Path,
    to: &str,
    from: &str,
    data_dir: &Path,
    backups: &[String],
) -> anyhow::Result<()> {
    let topo = Topology::load(topology, &REGISTRY)?;
    let Some(from_dc) = topo.dc(from) else {
        bail!("--from {from}: not declared in {}", topology.display());
    };
    if topo.dc(to).is_none() {
        bail!("--dc {to}: not declared in {}", topology.display());
    }
    if to == from {
        bail!("--dc and --from name the same DC");
    }
    let Some(admin) = from_dc.admin.clone() else {
        bail!("dc {from} has no `admin` address in the topology: the bootstrap reads its agent's status there");
    };
    let (bare_backup, store_backups) = backup_positions(&topo, backups)?;
    let peers: Vec<String> = topo.peers_of(to).iter().map(|d| d.id.clone()).collect();
    let journal = Journal::open(data_dir, to, &peers)
        .with_context(|| format!("opening the journal in {}", data_dir.display()))?;
    for store in &topo.stores {
        let (Some(from_url), Some(to_url)) = (store.url_for(from), store.url_for(to)) else {
            continue;
        };
        if journal.position(&store.name)?.is_some() {
            bail!(
                "store {}: the journal in {} already has a source position: bootstrap fills a new DC \
                 (an empty --data-dir)",
                store.name,
                data_dir.display()
            );
        }
        let connector = REGISTRY.connector_for(store)?;
        let job = |from: BootstrapFrom| {
            connector.bootstrap(
                from_url.expose().to_string(),
                to_url.expose().to_string(),
                store.clone(),
                from,
            )
        };
        let mut target = BootstrapFrom {
            dc: from.to_string(),
            seq: 0,
            epoch: 0,
            position: String::new(),
            skip_origins: vec![to.to_string()],
            restored: false,
        };
        // Whether the kind can bootstrap at all, before asking the agent
        // anything (the job is a lazy future: dropped, it did nothing).
        if job(target.clone()).is_none() {
            if store_backups.contains_key(&store.name) {
                bail!(
                    "store {}: kind {} cannot be bootstrapped, with or without --backup-position",
                    store.name,
                    store.kind
                );
            }
            println!(
                "store {}: kind {} cannot be bootstrapped; fill it another way",
                store.name, store.kind
            );
            continue;
        }
        let backup = store_backups.get(&store.name).or(bare_backup.as_ref());
        match backup {
            Some(p) => {
                let at = seq_at(&admin, from, &store.name, p).await?;
                (target.seq, target.epoch, target.position) = (at.seq, at.epoch, at.position);
                target.restored = true;
            }
            None => {
                let status = fresh_status(&admin).await?;
                (target.epoch, target.seq) = reached(&status, &store.name)
                    .with_context(|| format!("dc {from}'s agent status at {admin}"))?;
            }
        }
        let (seq, position) = (target.seq, target.position.clone());
        let Some(job) = job(target) else {
            continue;
        };
        let started = std::time::Instant::now();
        let done = job
            .await
            .with_context(|| format!("bootstrapping store {} of {to} from {from}", store.name))?;
        journal.append(&store.name, &mut [], Some(&done.position))?;
        journal.settle(&store.name, &[])?;
        let secs = started.elapsed().as_secs_f64();
        if let Some(p) = backup {
            println!(
                "store {}: restored from a backup of {from} at {p:?}: {from}'s changes after its \
                 seq {seq} ({position}) come from its agent; apply markers {:?}; {to}'s agent \
                 starts at {}",
                store.name, done.markers, done.position.display
            );
            continue;
        }
        println!(
            "store {}: {} row(s) of {} table(s) copied from {from} in {secs:.1} s ({:.0} rows/s); \
             apply markers {:?}; {to}'s agent starts at {}",
            store.name,
            done.rows,
            done.tables,
            done.rows as f64 / secs.max(0.001),
            done.markers,
            done.position.display
        );
    }
    println!(
        "bootstrap of {to} done: start its agent with --data-dir {}",
        data_dir.display()
    );
    Ok(())
}
