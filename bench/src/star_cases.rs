//! Star against mesh (`--cases star`): four DCs (`bj`, `sh`, `gz`, `tk`),
//! each with its own private MariaDB (relaxed settings) and a 30 ms RTT
//! line into it, the same offered load in every DC, run once as a star
//! with `bj` the hub and once as a mesh on fresh servers. Measured: WAN
//! bytes per change (link batch bytes over every link of every agent),
//! end-to-end lag from spoke `sh` to spoke `tk` (through the hub in the
//! star, direct in the mesh), and `bj`'s agent CPU and memory.

use crate::cluster;
use crate::mysql_cases::{conn, start_db};
use crate::util::{cpu_secs, lag_summary, now_us};
use anyhow::{bail, Context, Result};
use dcsync_testkit::cluster::{Agents, Status};
use dcsync_testkit::mariadb::MariaDb;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// DC ids, in topology order; the first is the star's hub.
pub const DCS: [&str; 4] = ["bj", "sh", "gz", "tk"];
/// Index in [`DCS`] of the hub (`bj`), whose agent's CPU and memory are
/// reported in both runs.
const HUB: usize = 0;
/// Index in [`DCS`] of the DC whose heartbeats are timed (`sh`).
const FROM: usize = 1;
/// Index in [`DCS`] of the DC that polls them (`tk`).
const TO: usize = 3;

const SCHEMA: &str = "CREATE DATABASE IF NOT EXISTS bench;
CREATE TABLE bench.warmup (dc VARCHAR(8) PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB;
CREATE TABLE bench.hb (dc VARCHAR(8) NOT NULL, id INT NOT NULL, t_us BIGINT NOT NULL,
  PRIMARY KEY (dc, id)) ENGINE=InnoDB;";

/// Size of one star or mesh run.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Heartbeat rows each DC inserts per second (one transaction each).
    pub rate: u32,
    /// Seconds of offered load.
    pub secs: u64,
    /// Round-trip time of every line, ms (half of it each way, 3 ms
    /// jitter).
    pub rtt_ms: u64,
}

/// What one link carried: counters of the sending agent's `links[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkLoad {
    /// Sending DC.
    pub from: &'static str,
    /// Receiving DC.
    pub to: String,
    /// Bytes of batch frames written to the socket (`sent_bytes`).
    pub bytes: u64,
    /// Transactions sent (`sent_txns`).
    pub txns: u64,
}

/// Outcome of one run (star or mesh).
#[derive(Debug, Clone)]
pub struct Run {
    /// Rows (= transactions = changes) written per DC, in [`DCS`] order.
    pub written: Vec<u64>,
    /// Seconds the writers ran.
    pub load_secs: f64,
    /// Per link in use (not idle: a star has none between spokes), what
    /// it carried during the load.
    pub links: Vec<LinkLoad>,
    /// Lag `sh` → `tk`: p50, p99, max in ms.
    pub lag: (f64, f64, f64),
    /// Heartbeats of `sh` timed on `tk` (the first second left out).
    pub samples: usize,
    /// Seconds from the end of the load until every DC held every row.
    pub drain_secs: f64,
    /// Seconds from the start of the load until every DC held every row
    /// (the CPU window).
    pub window_secs: f64,
    /// CPU of each agent over the window, % of one core, in [`DCS`] order.
    pub cpu_pct: Vec<f64>,
    /// Peak RSS (VmHWM) of `bj`'s agent since it started, KiB.
    pub hub_peak_rss: u64,
    /// RSS (VmRSS) of `bj`'s agent at the end, KiB.
    pub hub_rss_end: u64,
}

impl Run {
    /// Changes written in all DCs.
    pub fn changes(&self) -> u64 {
        self.written.iter().sum()
    }
    /// Bytes of batch frames written to every link's socket during the
    /// load (heartbeat and acknowledgement frames and TLS records are not
    /// counted).
    pub fn sent_bytes(&self) -> u64 {
        self.links.iter().map(|l| l.bytes).sum()
    }
    /// Batch bytes sent over all links per change written.
    pub fn bytes_per_change(&self) -> f64 {
        self.sent_bytes() as f64 / self.changes().max(1) as f64
    }
    /// Lines each change crossed on average (transactions sent over every
    /// link, resends included, ÷ changes).
    pub fn crossings(&self) -> f64 {
        let txns: u64 = self.links.iter().map(|l| l.txns).sum();
        txns as f64 / self.changes().max(1) as f64
    }
    /// Rows per second each DC achieved on average.
    pub fn achieved(&self) -> f64 {
        self.changes() as f64 / DCS.len() as f64 / self.load_secs.max(1e-9)
    }
}

/// The store over `bench.*` in every DC, without an initial snapshot (the
/// servers start empty), plus `DCSYNC_BENCH_STORE_EXTRA` as in the other
/// cases.
fn store_toml(dbs: &[MariaDb]) -> String {
    let mut extra = std::env::var("DCSYNC_BENCH_STORE_EXTRA").unwrap_or_default();
    if !extra.contains("initial") {
        extra.push_str("\ninitial = \"none\"");
    }
    let urls: Vec<String> = DCS
        .iter()
        .zip(dbs)
        .map(|(dc, db)| format!("{dc} = \"{}\"", db.url()))
        .collect();
    format!(
        "[[store]]\nname = \"sql\"\nkind = \"mysql\"\ntables = [\"bench.*\"]\n{extra}\nurl = {{ {} }}\n",
        urls.join(", ")
    )
}

/// Milliseconds since the Unix epoch (0 if the clock is before it), the
/// clock of `status.json`'s `written_ms`.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The last `n` log lines of every agent, for a failure message.
fn logs(agents: &Agents, n: usize) -> String {
    (0..agents.dcs.len())
        .map(|i| format!("agent {} log:\n{}", DCS[i], agents.log_tail(i, n)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Each DC bumps its own row of `bench.warmup` every 200 ms until every
/// DC holds all four rows (a source tails from where the binlog ended when
/// it connected, so rows written before are not shipped), then waits until
/// every DC holds the last round's values: changes flow in every direction
/// and the warm-up has drained.
async fn wait_flowing(agents: &mut Agents, conns: &mut [Conn]) -> Result<()> {
    let start = Instant::now();
    let mut k = 0i64;
    let mut all_seen = false;
    loop {
        agents.check_alive()?;
        if !all_seen {
            k += 1;
            for (i, c) in conns.iter_mut().enumerate() {
                c.exec_drop(
                    "INSERT INTO bench.warmup VALUES (?, ?) ON DUPLICATE KEY UPDATE n = VALUES(n)",
                    (DCS[i], k),
                )
                .await?;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut counts = Vec::new();
        for c in conns.iter_mut() {
            let q = if all_seen {
                format!("SELECT COUNT(*) FROM bench.warmup WHERE n = {k}")
            } else {
                "SELECT COUNT(*) FROM bench.warmup".to_string()
            };
            let n: Option<i64> = c.query_first(q).await?;
            counts.push(n.unwrap_or(0));
        }
        if counts.iter().all(|&n| n == DCS.len() as i64) {
            if all_seen {
                return Ok(());
            }
            all_seen = true;
        }
        if start.elapsed() > Duration::from_secs(90) {
            bail!(
                "changes not flowing in every direction within 90 s (warm-up rows per DC: {counts:?}, round {k}):\n{}",
                logs(agents, 30)
            );
        }
    }
}

/// `DCS[i]`'s agent's status written after `since` (ms since the epoch);
/// the agent rewrites it every second.
async fn fresh_status(agents: &Agents, i: usize, since: u64) -> Result<Status> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(st) = agents.status(i).filter(|s| s.written_ms() > since) {
            return Ok(st);
        }
        if Instant::now() > deadline {
            bail!("agent {}: status.json not rewritten within 5 s", DCS[i]);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Once every DC holds what was written (the caller checked), waits for a
/// status of every agent written after this call whose every link has
/// every stream acknowledged, and returns the counters of every link in
/// use from it (since the agents started). Fails after `limit`.
async fn settled_links(agents: &mut Agents, limit: Duration) -> Result<Vec<LinkLoad>> {
    let start = Instant::now();
    loop {
        agents.check_alive()?;
        let since = now_ms();
        let mut why = Vec::new();
        let mut links = Vec::new();
        for (i, dc) in DCS.iter().enumerate() {
            let st = fresh_status(agents, i, since).await?;
            let ls = st.0["links"]
                .as_array()
                .with_context(|| format!("agent {}: status without links", dc))?;
            for l in ls {
                let peer = l["link"]["peer"].as_str().unwrap_or("?");
                for b in l["backlog"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                    if b["txns"].as_u64() != Some(0) || b["acked_seq"] != b["last_seq"] {
                        why.push(format!("{} → {peer}: {b}", dc));
                    }
                }
                if l["link"]["state"] == "Idle" {
                    continue;
                }
                links.push(LinkLoad {
                    from: dc,
                    to: peer.to_string(),
                    bytes: l["link"]["sent_bytes"]
                        .as_u64()
                        .with_context(|| format!("{} → {peer}: no sent_bytes", dc))?,
                    txns: l["link"]["sent_txns"]
                        .as_u64()
                        .with_context(|| format!("{} → {peer}: no sent_txns", dc))?,
                });
            }
        }
        if why.is_empty() {
            return Ok(links);
        }
        if start.elapsed() > limit {
            bail!(
                "links not acknowledged within {limit:?}:\n{}\n{}",
                why.join("\n"),
                logs(agents, 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Heartbeat rows of each DC held by `c`'s server, in [`DCS`] order.
async fn hb_counts(c: &mut Conn) -> Result<Vec<u64>> {
    let rows: Vec<(String, i64)> = c
        .query("SELECT dc, COUNT(*) FROM bench.hb GROUP BY dc")
        .await?;
    Ok(DCS
        .iter()
        .map(|dc| {
            rows.iter()
                .find(|(d, _)| d == dc)
                .map_or(0, |(_, n)| *n as u64)
        })
        .collect())
}

/// Inserts heartbeat rows `(dc, id, t_us)` on `c` at `rate` rows/s (one
/// transaction each, ids from 1) until `stop`; returns the last id.
fn writer(
    mut c: Conn,
    dc: &'static str,
    rate: u32,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<i64>> {
    tokio::spawn(async move {
        let mut id = 0i64;
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
        while !stop.load(Ordering::SeqCst) {
            tick.tick().await;
            id += 1;
            c.exec_drop(
                "INSERT INTO bench.hb (dc, id, t_us) VALUES (?, ?, ?)",
                (dc, id, now_us()),
            )
            .await?;
        }
        let _ = c.disconnect().await;
        Ok(id)
    })
}

/// Polls `c` every 2 ms for `dc`'s heartbeat rows until it has seen ids
/// 1..=`done` and records now − `t_us` (µs) of each row the first time it
/// shows, leaving out ids up to `skip` (the ramp-up). Rows of one origin
/// may become visible slightly out of order (the sink commits its
/// partitions separately), so it keeps every id above the highest id below
/// which all were seen.
fn poller(
    mut c: Conn,
    dc: &'static str,
    skip: i64,
    done: Arc<AtomicI64>,
) -> tokio::task::JoinHandle<Result<Vec<i64>>> {
    tokio::spawn(async move {
        let mut low = 0i64;
        let mut seen = BTreeSet::new();
        let mut lags = Vec::new();
        while low < done.load(Ordering::SeqCst) {
            let rows: Vec<(i64, i64)> = c
                .exec(
                    "SELECT id, t_us FROM bench.hb WHERE dc = ? AND id > ? ORDER BY id",
                    (dc, low),
                )
                .await?;
            let now = now_us();
            for (id, t) in rows {
                if seen.insert(id) && id > skip {
                    lags.push(now - t);
                }
            }
            while seen.remove(&(low + 1)) {
                low += 1;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let _ = c.disconnect().await;
        Ok(lags)
    })
}

/// One run on four fresh servers: a star with hub `bj` (`star`) or a mesh.
pub async fn run(dcsync: &Path, p: &Params, star: bool) -> Result<Run> {
    let mut dbs = Vec::new();
    for _ in DCS {
        let db = start_db(false, &[]).await;
        conn(&db).await?.query_drop(SCHEMA).await?;
        dbs.push(db);
    }
    let mode = if star {
        format!("mode = \"star\"\nhub = \"{}\"\n", DCS[HUB])
    } else {
        String::new()
    };
    let mut agents = cluster::start_dcs(dcsync, &DCS, &store_toml(&dbs), &mode).await;
    for d in &agents.dcs {
        d.proxy.set_latency(
            Duration::from_millis(p.rtt_ms / 2),
            Duration::from_millis(3),
        );
    }
    let mut conns = Vec::new();
    for db in &dbs {
        conns.push(conn(db).await?);
    }
    wait_flowing(&mut agents, &mut conns).await?;
    let before = settled_links(&mut agents, Duration::from_secs(60)).await?;
    let pids = agents.pids();
    anyhow::ensure!(pids.len() == DCS.len(), "not every agent is running");

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicI64::new(i64::MAX));
    let poll = poller(
        conn(&dbs[TO]).await?,
        DCS[FROM],
        i64::from(p.rate),
        done.clone(),
    );
    let cpu0 = pids
        .iter()
        .map(|&pid| cpu_secs(pid).context("agent CPU time"))
        .collect::<Result<Vec<f64>>>()?;
    let t0 = Instant::now();
    let mut writers = Vec::new();
    for (i, db) in dbs.iter().enumerate() {
        writers.push(writer(conn(db).await?, DCS[i], p.rate, stop.clone()));
    }
    tokio::time::sleep(Duration::from_secs(p.secs)).await;
    stop.store(true, Ordering::SeqCst);
    let mut written = Vec::new();
    for w in writers {
        written.push(w.await?? as u64);
    }
    let load_secs = t0.elapsed().as_secs_f64();
    done.store(written[FROM] as i64, Ordering::SeqCst);

    // Drained: every DC holds every DC's rows.
    let t_end = Instant::now();
    loop {
        agents.check_alive()?;
        let mut behind = Vec::new();
        for (i, c) in conns.iter_mut().enumerate() {
            let n = hb_counts(c).await?;
            if n != written {
                behind.push(format!("{} holds {n:?}", DCS[i]));
            }
        }
        if behind.is_empty() {
            break;
        }
        if t_end.elapsed() > Duration::from_secs(300) {
            bail!(
                "not drained 300 s after the load (written per DC {written:?}):\n{}\n{}",
                behind.join("\n"),
                logs(&agents, 40)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_secs = t_end.elapsed().as_secs_f64();
    let window_secs = t0.elapsed().as_secs_f64();
    let cpu_pct = pids
        .iter()
        .zip(&cpu0)
        .map(|(&pid, c0)| {
            cpu_secs(pid)
                .map(|c1| (c1 - c0) / window_secs * 100.0)
                .context("agent CPU time")
        })
        .collect::<Result<Vec<f64>>>()?;

    let after = settled_links(&mut agents, Duration::from_secs(60)).await?;
    let ends = |l: &[LinkLoad]| l.iter().map(|l| (l.from, l.to.clone())).collect::<Vec<_>>();
    anyhow::ensure!(
        ends(&before) == ends(&after),
        "links in use changed during the load: {:?} → {:?}",
        ends(&before),
        ends(&after)
    );
    let links = after
        .into_iter()
        .zip(&before)
        .map(|(a, b)| {
            Ok(LinkLoad {
                bytes: a
                    .bytes
                    .checked_sub(b.bytes)
                    .context("sent_bytes went down")?,
                txns: a.txns.checked_sub(b.txns).context("sent_txns went down")?,
                ..a
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut lags = tokio::time::timeout(Duration::from_secs(60), poll)
        .await
        .context("tk never showed sh's last heartbeat")???;
    agents.check_alive()?;
    let hub_peak_rss = agents.peak_rss_kib(HUB).context("VmHWM of the bj agent")?;
    let hub_rss_end = agents.rss_kib(HUB).context("VmRSS of the bj agent")?;
    let samples = lags.len();
    let lag = lag_summary(&mut lags).context("no heartbeat measured")?;
    for c in conns {
        let _ = c.disconnect().await;
    }
    Ok(Run {
        written,
        load_secs,
        links,
        lag,
        samples,
        drain_secs,
        window_secs,
        cpu_pct,
        hub_peak_rss,
        hub_rss_end,
    })
}
