//! Agent status: link states, backlogs and source positions, written to
//! `<data dir>/status.json` every second (atomically: write + rename) and
//! printed by `dcsync status`. A file rather than a socket so the command
//! works with nothing but read access to the data directory.

use anyhow::Context;
use dcsync_journal::Journal;
use dcsync_link::{now_ms, LinkState, LinkStats, SharedStats};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// State of one store's source.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SourceStatus {
    /// Store name.
    pub store: String,
    /// The initial copy (snapshot) of this store, while it runs and once
    /// done (since the agent started).
    #[serde(default)]
    pub copy: Option<CopyStatus>,
    /// `starting`, `running`, `failed` (a transient error: restarting with
    /// backoff) or `stopped` (a definite error: needs an operator; retried
    /// every 30 s from the same position, nothing after it is journaled).
    pub state: String,
    /// Last error, if failed or stopped.
    pub error: Option<String>,
    /// Since when the source is stopped by a definite error, ms since the
    /// Unix epoch; cleared once it journals past the position it stopped at.
    #[serde(default)]
    pub stuck_since_ms: Option<u64>,
    /// Last durable source position.
    pub position: String,
    /// Local transactions journaled since start.
    pub local_txns: u64,
    /// Echo transactions (applied by dcsync) skipped since start.
    pub echo_txns: u64,
    /// Things deliberately not shipped since start, by kind (`ddl`,
    /// `statement_dml`, `no_primary_key`, `flush`); a source restarted
    /// before its position passed one counts it again.
    #[serde(default)]
    pub skipped: BTreeMap<String, u64>,
    /// The last thing skipped.
    #[serde(default)]
    pub last_skipped: Option<SkippedStatus>,
    /// Conflicts detected by the sinks of this store since start (changes
    /// of other DCs that lost; details in `conflicts.jsonl`).
    #[serde(default)]
    pub conflicts: u64,
    /// The last conflict.
    #[serde(default)]
    pub last_conflict: Option<ConflictStatus>,
    /// Local writes to units other DCs own (the attribution guard).
    #[serde(default)]
    pub misrouted: crate::attribution::MisroutedStatus,
    /// Reconnects since start on which the store continued from the
    /// source's position (Redis `+CONTINUE`, also on a promoted replica).
    #[serde(default)]
    pub resyncs_continued: u64,
    /// Reconnects since start on which the store could not continue and
    /// the source re-read the whole dataset (Redis `+FULLRESYNC`; also in
    /// `dcsync_source_full_resyncs_total`).
    #[serde(default)]
    pub resyncs_full: u64,
    /// The last reconnect's resync.
    #[serde(default)]
    pub last_resync: Option<ResyncStatus>,
}

/// How a source's last reconnect synchronised.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResyncStatus {
    /// `true` for a full resync (the whole dataset re-read).
    pub full: bool,
    /// What the source said: server, how, why.
    pub detail: String,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
}

/// The last conflict of a store, in short.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConflictStatus {
    /// The row or key (`shop.items id=7`).
    pub key: String,
    /// Version kept (`sh@1764547200000.3`).
    pub winner: String,
    /// Version of the change not applied.
    pub loser: String,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
}

/// The last thing a source deliberately did not ship.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SkippedStatus {
    /// Kind (`ddl`, `statement_dml`, ...).
    pub what: String,
    /// The statement (truncated, credentials left out) or table.
    pub detail: String,
    /// Source position where it was read.
    pub position: String,
    /// When it was read, ms since the Unix epoch.
    pub at_ms: u64,
}

/// Backlog of one peer for one origin stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BacklogStatus {
    /// Origin DC of the stream (this DC, or one it forwards).
    #[serde(default)]
    pub origin: String,
    /// Store name.
    pub store: String,
    /// Transactions journaled but not acknowledged by the peer.
    pub txns: u64,
    /// Encoded bytes of those transactions.
    pub bytes: u64,
    /// Highest seq acknowledged by the peer.
    pub acked_seq: u64,
    /// Highest seq journaled.
    pub last_seq: u64,
    /// Age of the oldest unacknowledged transaction, ms.
    pub oldest_age_ms: Option<u64>,
    /// How long the source keeps its log (binlog expiry), s; `None` if
    /// unknown or unlimited.
    pub source_retention_s: Option<u64>,
}

/// One link with its backlogs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkStatus {
    /// Link counters and state.
    pub link: LinkStats,
    /// Transactions acknowledged per second over the last status interval
    /// (the replay rate while a backlog drains).
    pub acked_per_sec: f64,
    /// Per-store backlog.
    pub backlog: Vec<BacklogStatus>,
}

/// One origin stream this agent applies.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboundStatus {
    /// Origin DC.
    pub origin: String,
    /// Store.
    pub store: String,
    /// Highest origin seq applied.
    pub applied_seq: u64,
    /// Transactions applied since start.
    pub applied_txns: u64,
    /// Apply lag of the last applied transaction: when it was applied
    /// minus its HLC (source commit time), ms; `None` before the first.
    pub lag_ms: Option<u64>,
    /// When the last batch applied, ms since the Unix epoch (0 = never).
    pub applied_at_ms: u64,
    /// `applying` or `failing`.
    pub state: String,
    /// Why the stream is paused, if it is.
    pub error: Option<String>,
    /// Whether that failure needs an operator (definite) or is transient.
    pub definite: bool,
    /// Since when it fails, ms since the Unix epoch.
    pub failing_since_ms: Option<u64>,
}

/// Progress of a store's initial copy (`SourceEvent::Copying`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyStatus {
    /// Table being copied (the last one, once done).
    pub table: String,
    /// Tables finished.
    pub tables_done: u64,
    /// Tables in all.
    pub tables: u64,
    /// Rows shipped.
    pub rows: u64,
    /// The server's estimate of all rows (0: unknown).
    pub rows_estimate: u64,
    /// Complete.
    pub done: bool,
    /// When the agent saw the first progress, ms since the Unix epoch.
    pub started_ms: u64,
    /// When it saw the last, ms since the Unix epoch.
    pub at_ms: u64,
}

impl CopyStatus {
    /// Rows per second so far.
    pub fn rows_per_s(&self) -> f64 {
        self.rows as f64 * 1000.0 / (self.at_ms.saturating_sub(self.started_ms).max(1)) as f64
    }

    /// Seconds left at the rate so far, if the total is estimated.
    pub fn eta_s(&self) -> Option<f64> {
        (self.rows_estimate > self.rows && !self.done)
            .then(|| (self.rows_estimate - self.rows) as f64 / self.rows_per_s().max(1.0))
    }
}

/// The whole status document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// DC id.
    pub dc: String,
    /// When written, ms since epoch.
    pub written_ms: u64,
    /// Agent process id.
    pub pid: u32,
    /// The journal's epoch (docs/architecture.md, "Journal identity"): what
    /// `dcsync bootstrap` writes into a new DC's apply markers of this DC.
    #[serde(default)]
    pub journal_epoch: u64,
    /// Outbound links.
    pub links: Vec<LinkStatus>,
    /// Sources.
    pub sources: Vec<SourceStatus>,
    /// Origin streams this agent applies (inbound), by origin and store.
    #[serde(default)]
    pub inbound: Vec<InboundStatus>,
    /// Operator warnings (backlog approaching the source's retention, ...).
    pub warnings: Vec<String>,
    /// Mesh or star, and the hub.
    #[serde(default)]
    pub routing: crate::vector_status::RoutingStatus,
    /// Per store and origin, what each DC applied (applied vectors).
    #[serde(default)]
    pub vectors: Vec<crate::vector_status::VectorStatus>,
    /// The periodic consistency checks this agent runs (stores whose
    /// `verify_from` is this DC), by store.
    #[serde(default)]
    pub verify: Vec<crate::periodic_verify::VerifyStatus>,
}

/// Per peer (acked_txns, ms) at the last snapshot, and when warnings were
/// last logged (ms).
type RateState = (BTreeMap<String, (u64, u64)>, u64);

/// Collects status from the running parts.
#[derive(Clone)]
pub struct StatusBoard {
    dc: String,
    journal_epoch: u64,
    path: PathBuf,
    links: Arc<Mutex<Vec<SharedStats>>>,
    sources: Arc<Mutex<Vec<Arc<Mutex<SourceStatus>>>>>,
    /// Source retention per store, s (set by the retention watcher).
    retention: Arc<Mutex<BTreeMap<String, u64>>>,
    /// Previous (acked_txns, ms) per peer, for rates; last warning log, ms.
    prev: Arc<Mutex<RateState>>,
    /// What the link receiver applied, per origin stream.
    inbound: dcsync_link::InboundBoard,
    /// The last status document, as JSON (served on `/status`).
    last: Arc<Mutex<Vec<u8>>>,
    /// Routing and applied vectors, once the agent set them.
    vectors: Arc<Mutex<Option<crate::vector_status::VectorSource>>>,
    /// Periodic consistency checks, by store.
    verify: Arc<Mutex<BTreeMap<String, crate::periodic_verify::VerifyStatus>>>,
}

impl StatusBoard {
    /// A board writing to `dir/status.json`.
    pub fn new(dc: &str, dir: &Path, journal_epoch: u64) -> Self {
        StatusBoard {
            journal_epoch,
            dc: dc.to_string(),
            path: dir.join("status.json"),
            links: Arc::default(),
            sources: Arc::default(),
            retention: Arc::default(),
            prev: Arc::default(),
            inbound: Arc::default(),
            last: Arc::default(),
            vectors: Arc::default(),
            verify: Arc::default(),
        }
    }

    /// Where the routing and applied vectors are read from.
    pub fn set_vectors(&self, src: crate::vector_status::VectorSource) {
        if let Ok(mut v) = self.vectors.lock() {
            *v = Some(src);
        }
    }

    /// Registers (or replaces) the periodic check of `v.store`.
    pub fn set_verify(&self, v: crate::periodic_verify::VerifyStatus) {
        if let Ok(mut m) = self.verify.lock() {
            m.insert(v.store.clone(), v);
        }
    }

    /// Updates the periodic check of `store`, if registered.
    pub fn update_verify(
        &self,
        store: &str,
        f: impl FnOnce(&mut crate::periodic_verify::VerifyStatus),
    ) {
        if let Ok(mut m) = self.verify.lock() {
            if let Some(v) = m.get_mut(store) {
                f(v);
            }
        }
    }

    /// The last status document written, as JSON (`{}` before the first).
    pub fn last_json(&self) -> Vec<u8> {
        match self.last.lock() {
            Ok(l) if !l.is_empty() => l.clone(),
            _ => b"{}".to_vec(),
        }
    }

    /// The board the link receiver publishes applied positions and
    /// failing streams on.
    pub fn inbound(&self) -> dcsync_link::InboundBoard {
        self.inbound.clone()
    }

    /// Registers a link.
    pub fn add_link(&self, s: SharedStats) {
        if let Ok(mut l) = self.links.lock() {
            l.push(s);
        }
    }

    /// Registers a source; returns its status cell.
    pub fn add_source(&self, store: &str) -> Arc<Mutex<SourceStatus>> {
        let s = Arc::new(Mutex::new(SourceStatus {
            store: store.to_string(),
            state: "starting".into(),
            ..Default::default()
        }));
        if let Ok(mut v) = self.sources.lock() {
            v.push(s.clone());
        }
        s
    }

    /// Records that `store`'s source keeps its log for `secs` seconds.
    pub fn set_retention(&self, store: &str, secs: Option<u64>) {
        if let Ok(mut r) = self.retention.lock() {
            match secs {
                Some(s) => r.insert(store.to_string(), s),
                None => r.remove(store),
            };
        }
    }

    fn snapshot(&self, journal: &Journal, stores: &[String]) -> Status {
        let now = now_ms();
        let retention = self.retention.lock().map(|r| r.clone()).unwrap_or_default();
        let mut warnings = Vec::new();
        let links = self
            .links
            .lock()
            .map(|l| {
                l.iter()
                    .filter_map(|s| s.lock().ok().map(|g| g.clone()))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let mut prev = match self.prev.lock() {
            Ok(p) => p,
            Err(p) => p.into_inner(),
        };
        let mut out = Vec::new();
        let streams = journal.streams().unwrap_or_default();
        for link in links {
            let acked_per_sec = match prev.0.insert(link.peer.clone(), (link.acked_txns, now)) {
                Some((n, t)) if now > t => {
                    link.acked_txns.saturating_sub(n) as f64 * 1000.0 / (now - t) as f64
                }
                _ => 0.0,
            };
            let mut backlog = Vec::new();
            for (origin, store) in streams
                .iter()
                .filter(|(o, s)| *o != link.peer && stores.contains(s))
            {
                let Ok(b) = journal.backlog(&link.peer, origin, store) else {
                    continue;
                };
                let oldest_age_ms = b.oldest.map(|h| now.saturating_sub(h.physical_ms()));
                dcsync_core::events::BacklogObserved {
                    peer: &link.peer,
                    origin,
                    store,
                    txns: b.txns,
                    bytes: b.bytes,
                    oldest_age_ms: oldest_age_ms.unwrap_or(0),
                }
                .emit();
                let source_retention_s = retention.get(store).copied();
                if let (Some(age), Some(keep)) = (oldest_age_ms, source_retention_s) {
                    if age / 1000 >= keep * 8 / 10 {
                        warnings.push(format!(
                            "backlog of {store} to {} is {} s old and the source keeps its binlog for {keep} s: \
                             restore the link soon; a backlog older than the binlog cannot be re-read after an agent restart",
                            link.peer,
                            age / 1000
                        ));
                    }
                }
                backlog.push(BacklogStatus {
                    origin: origin.clone(),
                    store: store.clone(),
                    txns: b.txns,
                    bytes: b.bytes,
                    acked_seq: b.acked,
                    last_seq: b.last,
                    oldest_age_ms,
                    source_retention_s,
                });
            }
            out.push(LinkStatus {
                link,
                acked_per_sec,
                backlog,
            });
        }
        // Log warnings at most once a minute; the status file has them always.
        if !warnings.is_empty() && now.saturating_sub(prev.1) >= 60_000 {
            prev.1 = now;
            for w in &warnings {
                tracing::warn!("{w}");
            }
        }
        drop(prev);
        let sources = self
            .sources
            .lock()
            .map(|v| {
                v.iter()
                    .filter_map(|s| s.lock().ok().map(|g| g.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let inbound = self
            .inbound
            .lock()
            .map(|b| {
                b.values()
                    .map(|st| InboundStatus {
                        origin: st.origin.clone(),
                        store: st.store.clone(),
                        applied_seq: st.applied_seq,
                        applied_txns: st.applied_txns,
                        lag_ms: (st.last_hlc > 0).then(|| {
                            st.applied_at_ms
                                .saturating_sub(dcsync_core::Hlc(st.last_hlc).physical_ms())
                        }),
                        applied_at_ms: st.applied_at_ms,
                        state: if st.failing.is_some() {
                            "failing"
                        } else {
                            "applying"
                        }
                        .into(),
                        error: st.failing.as_ref().map(|f| f.0.clone()),
                        definite: st.failing.as_ref().is_some_and(|f| f.1),
                        failing_since_ms: st.failing.as_ref().map(|f| f.2),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let src = self.vectors.lock().ok().and_then(|v| v.clone());
        let (routing, vectors) = src.map(|v| v.read(journal, stores)).unwrap_or_default();
        Status {
            routing,
            vectors,
            dc: self.dc.clone(),
            written_ms: now,
            pid: std::process::id(),
            journal_epoch: self.journal_epoch,
            links: out,
            sources,
            inbound,
            warnings,
            verify: self
                .verify
                .lock()
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default(),
        }
    }

    /// Rewrites the status file every second until shutdown.
    pub async fn run(
        self,
        journal: Arc<Journal>,
        _peers: Vec<String>,
        stores: Vec<String>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let board = self.clone();
            let j = journal.clone();
            let st = stores.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let s = board.snapshot(&j, &st);
                if let Ok(json) = serde_json::to_vec_pretty(&s) {
                    let tmp = board.path.with_extension("json.tmp");
                    if std::fs::write(&tmp, &json).is_ok() {
                        let _ = std::fs::rename(&tmp, &board.path);
                    }
                    if let Ok(mut l) = board.last.lock() {
                        *l = json;
                    }
                }
            })
            .await;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

pub(crate) fn ago(ms: u64, now: u64) -> String {
    let s = now.saturating_sub(ms) / 1000;
    if s < 120 {
        format!("{s}s ago")
    } else if s < 7200 {
        format!("{}m ago", s / 60)
    } else {
        format!("{}h ago", s / 3600)
    }
}

fn human_bytes(b: u64) -> String {
    match b {
        0..=9_999 => format!("{b} B"),
        10_000..=9_999_999 => format!("{:.1} KiB", b as f64 / 1024.0),
        10_000_000..=9_999_999_999 => format!("{:.1} MiB", b as f64 / 1_048_576.0),
        _ => format!("{:.1} GiB", b as f64 / 1_073_741_824.0),
    }
}

/// Prints the status file of the agent whose data dir is `dir`.
pub fn print(dir: &Path, json: bool) -> anyhow::Result<()> {
    let path = dir.join("status.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (is the agent running with this --data-dir?)",
            path.display()
        )
    })?;
    if json {
        println!("{text}");
        return Ok(());
    }
    let s: Status =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let now = now_ms();
    println!(
        "dc {} (pid {}, status written {})",
        s.dc,
        s.pid,
        ago(s.written_ms, now)
    );
    if now.saturating_sub(s.written_ms) > 5000 {
        println!("  warning: status is stale; the agent may not be running");
    }
    println!(
        "{:<8} {:<26} {:<14} {:>10} {:>11} {:>10} {:>9} {:>9}",
        "PEER", "STATE", "ORIGIN/STORE", "BACKLOG", "BYTES", "ACKED", "OLDEST", "REPLAY/s"
    );
    for l in &s.links {
        let state = match &l.link.state {
            LinkState::Idle => "idle".to_string(),
            LinkState::Connected { since_ms } => format!("connected since {}", ago(*since_ms, now)),
            LinkState::Retrying { since_ms, .. } => {
                format!("retrying since {}", ago(*since_ms, now))
            }
        };
        for b in &l.backlog {
            println!(
                "{:<8} {:<26} {:<14} {:>10} {:>11} {:>10} {:>9} {:>9.0}",
                l.link.peer,
                state,
                format!("{}/{}", b.origin, b.store),
                b.txns,
                human_bytes(b.bytes),
                b.acked_seq,
                b.oldest_age_ms
                    .map(|a| format!("{:.1}s", a as f64 / 1000.0))
                    .unwrap_or_else(|| "-".into()),
                l.acked_per_sec
            );
        }
        if let LinkState::Retrying { error, .. } = &l.link.state {
            println!("         last error: {error}");
        }
        for f in &l.link.failing {
            println!(
                "         PAUSED {}/{}: {} cannot apply it ({}; {} attempts, failing since {}, next retry in {:.1}s): {}",
                f.origin,
                f.store,
                l.link.peer,
                if f.definite { "needs an operator" } else { "transient" },
                f.attempts,
                ago(f.since_ms, now),
                f.retry_at_ms.saturating_sub(now) as f64 / 1000.0,
                f.reason
            );
        }
    }
    crate::vector_status::print(&s.routing, &s.vectors);
    if !s.inbound.is_empty() {
        println!(
            "{:<8} {:<10} {:<9} {:>10} {:>10} {:>9}",
            "ORIGIN", "STORE", "STATE", "APPLIED", "TXNS", "LAG"
        );
        for i in &s.inbound {
            println!(
                "{:<8} {:<10} {:<9} {:>10} {:>10} {:>9}",
                i.origin,
                i.store,
                i.state,
                i.applied_seq,
                i.applied_txns,
                i.lag_ms
                    .map(|l| format!("{:.1}s", l as f64 / 1000.0))
                    .unwrap_or_else(|| "-".into())
            );
            if let Some(e) = &i.error {
                println!(
                    "         error ({}, since {}): {e}",
                    if i.definite {
                        "needs an operator"
                    } else {
                        "transient"
                    },
                    i.failing_since_ms.map(|t| ago(t, now)).unwrap_or_default()
                );
            }
        }
    }
    for w in &s.warnings {
        println!("WARNING: {w}");
    }
    println!(
        "{:<10} {:<8} {:>10} {:>10}  POSITION",
        "SOURCE", "STATE", "LOCAL", "ECHOES"
    );
    for src in &s.sources {
        println!(
            "{:<10} {:<8} {:>10} {:>10}  {}",
            src.store, src.state, src.local_txns, src.echo_txns, src.position
        );
        match (&src.error, src.stuck_since_ms) {
            (Some(e), Some(since)) => println!(
                "           STOPPED: stuck since {} (needs an operator; retried every 30 s from the same position), reason: {e}",
                ago(since, now)
            ),
            (Some(e), None) => println!("           error: {e}"),
            _ => {}
        }
        if !src.skipped.is_empty() {
            let counts: Vec<String> = src
                .skipped
                .iter()
                .map(|(what, n)| format!("{what} {n}"))
                .collect();
            println!("           skipped (not shipped): {}", counts.join(", "));
        }
        if let Some(l) = &src.last_skipped {
            println!(
                "           last skipped: {} at {} ({}): {}",
                l.what,
                l.position,
                ago(l.at_ms, now),
                l.detail
            );
        }
        if let Some(c) = &src.copy {
            if c.done {
                println!(
                    "           initial copy done: {} row(s) of {} table(s) in {:.1} s",
                    c.rows,
                    c.tables,
                    c.at_ms.saturating_sub(c.started_ms) as f64 / 1000.0
                );
            } else {
                println!(
                    "           INITIAL COPY: table {} ({}/{} tables done), {} of ~{} rows, {:.0} rows/s, ETA {}",
                    c.table,
                    c.tables_done,
                    c.tables,
                    c.rows,
                    c.rows_estimate,
                    c.rows_per_s(),
                    c.eta_s().map_or("unknown".to_string(), |s| format!("{s:.0} s"))
                );
            }
        }
        if let Some(r) = &src.last_resync {
            println!(
                "           resyncs: {} continued, {} full; last {} ({}): {}",
                src.resyncs_continued,
                src.resyncs_full,
                if r.full { "FULL RESYNC" } else { "continued" },
                ago(r.at_ms, now),
                r.detail
            );
        }
        if let Some(c) = &src.last_conflict {
            println!(
                "           conflicts: {} (see `dcsync conflicts`); last {}: {} kept, {} not applied",
                src.conflicts,
                ago(c.at_ms, now),
                c.winner,
                c.loser
            );
            println!("           last conflict on: {}", c.key);
        }
        crate::attribution::print(&src.misrouted, now);
    }
    crate::periodic_verify::print(&s.verify, now);
    Ok(())
}
