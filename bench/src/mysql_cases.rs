//! MariaDB cases: backlog replay through dcsync against native
//! primary→replica replication (with agent RSS sampled on the way),
//! steady-state lag at a fixed sysbench rate over a 30 ms RTT line, and one
//! big transaction (a 300,000-row UPDATE) end to end with the agents' peak
//! RSS.

use crate::cluster;
use crate::util::{
    lag_summary, now_us, poll, sysbench, sysbench_args, RssSampler, RssStats, SysbenchRun,
};
use anyhow::{bail, Context, Result};
use dcsync_testkit::cluster::{Agents, Status};
use dcsync_testkit::mariadb::{MariaDb, MariaDbOptions};
use dcsync_testkit::proxy::Proxy;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Size of a MySQL run.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// sysbench transactions in the backlog.
    pub txns: u64,
    /// sysbench tables.
    pub tables: u32,
    /// Rows per table.
    pub table_size: u64,
    /// Seconds of offered load per lag measurement.
    pub lag_secs: u64,
}

/// Outcome of one backlog replay.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The load on the source.
    pub load: SysbenchRun,
    /// Row changes on the source (`Handler_write/update/delete`).
    pub rows: u64,
    /// Seconds from releasing the backlog to the target having all of it.
    pub secs: f64,
    /// dcsync: seconds from the end of the load until agent A's status
    /// showed it all journaled (status is written once a second).
    pub journal_wait: f64,
    /// Agent RSS (a, b) over build-up and replay; empty for native.
    pub rss: Vec<RssStats>,
    /// CPU seconds used during the replay window (user + system), by
    /// process: dcsync `[agent A, agent B, server B]`, native `[server B]`.
    pub cpu: Vec<f64>,
}

/// CPU seconds of each of `pids` so far (0 for a process that is gone).
fn cpu_now(pids: &[u32]) -> Vec<f64> {
    pids.iter()
        .map(|p| crate::util::cpu_secs(*p).unwrap_or(0.0))
        .collect()
}

/// `after - before`, element by element.
fn cpu_delta(before: &[f64], after: &[f64]) -> Vec<f64> {
    before.iter().zip(after).map(|(b, a)| a - b).collect()
}

impl Replay {
    /// Transactions per second of the replay.
    pub fn tps(&self) -> f64 {
        self.load.txns as f64 / self.secs
    }
    /// Row changes per second of the replay.
    pub fn rows_per_sec(&self) -> f64 {
        self.rows as f64 / self.secs
    }
}

/// Outcome of one lag measurement.
#[derive(Debug, Clone)]
pub struct Lag {
    /// What sysbench achieved (tps).
    pub achieved: f64,
    /// p50, p99, max in ms.
    pub summary: (f64, f64, f64),
    /// Heartbeats measured.
    pub samples: usize,
    /// dcsync: transactions journaled by A but not yet acknowledged by B
    /// when the load stopped (from A's status, up to 1 s old).
    pub backlog_at_end: Option<u64>,
}

const SCHEMA: &str = "CREATE DATABASE IF NOT EXISTS sbtest;
CREATE DATABASE IF NOT EXISTS bench;
CREATE TABLE bench.warmup (id INT PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB;
CREATE TABLE bench.lag (id INT PRIMARY KEY, t BIGINT NOT NULL) ENGINE=InnoDB;";

/// The dcsync store covering the benchmark schemas, plus the TOML lines in
/// `DCSYNC_BENCH_STORE_EXTRA` (e.g. `apply_parallel = 2`) to try settings.
fn store_toml(a: &MariaDb, b: &MariaDb) -> String {
    let mut extra = std::env::var("DCSYNC_BENCH_STORE_EXTRA").unwrap_or_default();
    if !extra.contains("initial") {
        // The replay cases fill one DC before the agents start and measure
        // the binlog replay, not an initial snapshot.
        extra.push_str("\ninitial = \"none\"");
    }
    format!(
        "[[store]]\nname = \"sql\"\nkind = \"mysql\"\ntables = [\"sbtest.*\", \"bench.*\"]\n{extra}\nurl = {{ a = \"{}\", b = \"{}\" }}\n",
        a.url(),
        b.url()
    )
}

pub async fn conn(db: &MariaDb) -> Result<Conn> {
    Conn::from_url(db.url())
        .await
        .with_context(|| format!("connect {}", db.url()))
}

pub async fn start_db(durable: bool, extra: &[&str]) -> MariaDb {
    // Both the dcsync and the native runs use the same server settings; the
    // pool holds the whole benchmark data set.
    let mut extra_args = vec!["--innodb-buffer-pool-size=512M".to_string()];
    extra_args.extend(extra.iter().map(|a| a.to_string()));
    MariaDb::start_with(MariaDbOptions {
        durable,
        extra_args,
        ..Default::default()
    })
    .await
}

/// Starts two servers with identical sysbench tables: prepared on A, copied
/// to B with `mariadb-dump | mariadb` (sysbench 1.0's prepare is not
/// deterministic even with `--rand-seed`), verified by `CHECKSUM TABLE`.
async fn start_pair(p: &Params, durable: bool, b_extra: &[&str]) -> Result<(MariaDb, MariaDb)> {
    let a = start_db(durable, &[]).await;
    let b = start_db(durable, b_extra).await;
    for db in [&a, &b] {
        conn(db).await?.query_drop(SCHEMA).await?;
    }
    let base = sysbench_args(a.port, p.tables, p.table_size);
    tokio::task::spawn_blocking(move || sysbench(&base, &["--threads=1".into()], "prepare"))
        .await??;
    let copy = format!(
        "mariadb-dump --no-defaults -h127.0.0.1 -P{} -uroot --single-transaction sbtest \
         | mariadb --no-defaults -h127.0.0.1 -P{} -uroot sbtest",
        a.port, b.port
    );
    let st = tokio::task::spawn_blocking(move || Command::new("sh").arg("-c").arg(copy).status())
        .await?
        .context("mariadb-dump | mariadb")?;
    if !st.success() {
        bail!("copying the sysbench tables from A to B failed ({st})");
    }
    same_tables(&a, &b, p).await?;
    Ok((a, b))
}

/// `CHECKSUM TABLE` of every sysbench table equal on both servers.
async fn same_tables(a: &MariaDb, b: &MariaDb, p: &Params) -> Result<()> {
    for t in 1..=p.tables {
        let table = format!("sbtest.sbtest{t}");
        let (x, y) = (a.checksum(&table).await, b.checksum(&table).await);
        if x != y {
            bail!("{table}: checksums differ: {x:?} vs {y:?}");
        }
    }
    Ok(())
}

/// Row changes so far: `Handler_write + Handler_update + Handler_delete`
/// (MariaDB 10.11 has no `Innodb_rows_*` counters any more).
async fn rows_changed(db: &MariaDb) -> Result<u64> {
    let mut c = conn(db).await?;
    let rows: Vec<(String, String)> = c.query("SHOW GLOBAL STATUS LIKE 'Handler_%'").await?;
    let _ = c.disconnect().await;
    Ok(rows
        .iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            k == "handler_write" || k == "handler_update" || k == "handler_delete"
        })
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum())
}

fn run_load(
    db: &MariaDb,
    p: &Params,
    extra: Vec<String>,
) -> tokio::task::JoinHandle<Result<SysbenchRun>> {
    let base = sysbench_args(db.port, p.tables, p.table_size);
    tokio::task::spawn_blocking(move || sysbench(&base, &extra, "run"))
}

fn backlog_load(p: &Params) -> Vec<String> {
    vec![
        format!("--events={}", p.txns),
        "--time=0".into(),
        "--rate=0".into(),
        "--threads=4".into(),
        "--rand-seed=7".into(),
    ]
}

/// Bumps `bench.warmup` on A until B shows it: the agents ship and apply
/// (a first start begins at the binlog position current when it connects).
async fn wait_flowing(agents: &mut Agents, a: &MariaDb, b: &MariaDb) -> Result<()> {
    let (mut ca, mut cb) = (conn(a).await?, conn(b).await?);
    let start = Instant::now();
    for k in 1i64.. {
        agents.check_alive()?;
        ca.query_drop(format!(
            "INSERT INTO bench.warmup VALUES (1, {k}) ON DUPLICATE KEY UPDATE n = {k}"
        ))
        .await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let n: Option<i64> = cb
            .query_first("SELECT n FROM bench.warmup WHERE id = 1")
            .await?;
        if n == Some(k) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(90) {
            bail!(
                "agents not shipping within 90 s; agent a log:\n{}\nagent b log:\n{}",
                agents.log_tail(0, 30),
                agents.log_tail(1, 30)
            );
        }
    }
    unreachable!("the loop returns or fails")
}

/// dcsync: the line into B cut, the load journaled by agent A, then the line
/// restored and timed until B applied all of it.
pub async fn replay_dcsync(dcsync: &Path, p: &Params, durable: bool) -> Result<Replay> {
    let (a, b) = start_pair(p, durable, &[]).await?;
    let mut agents = cluster::start(dcsync, &store_toml(&a, &b)).await;
    wait_flowing(&mut agents, &a, &b).await?;
    agents.dcs[1].proxy.cut();
    let rss = RssSampler::start(agents.pids());
    let rows0 = rows_changed(&a).await?;
    let load = run_load(&a, p, backlog_load(p)).await??;
    let rows = rows_changed(&a).await? - rows0;
    let (file, pos) = a.binlog_pos().await;
    // A's source has read up to the binlog end and journaled it.
    let load_end = Instant::now();
    let data_a = agents.dcs[0].data_dir.clone();
    let last_seq = poll(
        "agent a to journal the backlog",
        Duration::from_millis(200),
        Duration::from_secs(1800),
        || {
            let st = Status::read(&data_a);
            let alive = agents.check_alive();
            let file = file.clone();
            async move {
                alive?;
                let Some(st) = st else { return Ok(None) };
                let Some(source) = st.source("sql") else {
                    return Ok(None);
                };
                if !crate::util::binlog_reached(&source.position, &file, pos) {
                    return Ok(None);
                }
                Ok(st.last_seq("sql"))
            }
        },
    )
    .await?;
    let journal_wait = load_end.elapsed().as_secs_f64();
    let mut cb = conn(&b).await?;
    let mut pids = agents.pids();
    pids.extend(b.pid());
    let cpu0 = cpu_now(&pids);
    let t0 = Instant::now();
    let wall0 = unix_secs();
    agents.dcs[1].proxy.restore();
    loop {
        let seq: Option<u64> = cb
            .query_first("SELECT MAX(seq) FROM dcsync.apply_marker WHERE origin = 'a'")
            .await?;
        if seq.unwrap_or(0) >= last_seq {
            break;
        }
        if t0.elapsed() > Duration::from_secs(3600) {
            bail!("replay not finished within an hour");
        }
        agents.check_alive()?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_delta(&cpu0, &cpu_now(&pids));
    // For `perf record -k realtime` / `perf report --time start,end`.
    eprintln!("   replay window (unix s): {wall0:.6},{:.6}", unix_secs());
    let rss = rss.finish().await;
    same_tables(&a, &b, p).await?;
    Ok(Replay {
        load,
        rows,
        secs,
        journal_wait,
        rss,
        cpu,
    })
}

async fn slave_status(c: &mut Conn) -> Result<Row> {
    let r: Option<Row> = c.query_first("SHOW SLAVE STATUS").await?;
    r.context("SHOW SLAVE STATUS is empty")
}

fn field(r: &Row, name: &str) -> String {
    r.get_opt::<String, &str>(name)
        .and_then(|v| v.ok())
        .unwrap_or_default()
}

/// Native MariaDB replication: B replicates A with its SQL thread stopped
/// while the load runs; the SQL thread is then started and timed until it
/// executed everything the IO thread received.
/// Native replication into B with `parallel` SQL worker threads; with
/// `log_updates`, B also writes the applied rows to its own binlog
/// (`log_slave_updates=ON`, what a replica that is itself a primary needs,
/// and what dcsync's target always does).
pub async fn replay_native(
    p: &Params,
    durable: bool,
    parallel: u32,
    log_updates: bool,
) -> Result<Replay> {
    let b_extra: &[&str] = if log_updates {
        &["--log-slave-updates=ON"]
    } else {
        &[]
    };
    let (a, b) = start_pair(p, durable, b_extra).await?;
    let (file, pos) = a.binlog_pos().await;
    let mut cb = conn(&b).await?;
    cb.query_drop(format!(
        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='root', \
         MASTER_LOG_FILE='{file}', MASTER_LOG_POS={pos}; \
         SET GLOBAL slave_parallel_threads = {parallel}; START SLAVE IO_THREAD",
        a.port
    ))
    .await?;
    let rows0 = rows_changed(&a).await?;
    let load = run_load(&a, p, backlog_load(p)).await??;
    let rows = rows_changed(&a).await? - rows0;
    let (file, pos) = a.binlog_pos().await;
    let pos_s = pos.to_string();
    let t = Instant::now();
    loop {
        let r = slave_status(&mut cb).await?;
        let err = field(&r, "Last_IO_Error");
        if !err.is_empty() {
            bail!("replica IO error: {err}");
        }
        if field(&r, "Master_Log_File") == file && field(&r, "Read_Master_Log_Pos") == pos_s {
            break;
        }
        if t.elapsed() > Duration::from_secs(600) {
            bail!("the replica's IO thread did not receive the load in 600 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pids: Vec<u32> = b.pid().into_iter().collect();
    let cpu0 = cpu_now(&pids);
    let t0 = Instant::now();
    cb.query_drop("START SLAVE SQL_THREAD").await?;
    loop {
        let r = slave_status(&mut cb).await?;
        let err = field(&r, "Last_SQL_Error");
        if !err.is_empty() {
            bail!("replica SQL error: {err}");
        }
        if field(&r, "Relay_Master_Log_File") == file && field(&r, "Exec_Master_Log_Pos") == pos_s {
            break;
        }
        if t0.elapsed() > Duration::from_secs(3600) {
            bail!("native replay not finished within an hour");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_delta(&cpu0, &cpu_now(&pids));
    same_tables(&a, &b, p).await?;
    Ok(Replay {
        load,
        rows,
        secs,
        journal_wait: 0.0,
        rss: Vec::new(),
        cpu,
    })
}

/// Steady-state lag at `rate` sysbench trx/s over a line of `rtt_ms`
/// (half each way, 3 ms jitter when non-zero): a heartbeat row is inserted
/// on A every 20 ms with the bench clock, B is polled every 2 ms, lag =
/// first seen on B − written on A. `dcsync: None` measures native MariaDB
/// replication (B a replica of A through the same kind of line).
pub async fn lag(
    dcsync: Option<&Path>,
    p: &Params,
    durable: bool,
    rate: u32,
    rtt_ms: u64,
) -> Result<Lag> {
    let (a, b) = start_pair(p, durable, &[]).await?;
    let shape = |proxy: &Proxy| {
        if rtt_ms > 0 {
            proxy.set_latency(Duration::from_millis(rtt_ms / 2), Duration::from_millis(3));
        }
    };
    let mut agents = None;
    let mut _line = None;
    if let Some(dcsync) = dcsync {
        let mut ag = cluster::start(dcsync, &store_toml(&a, &b)).await;
        wait_flowing(&mut ag, &a, &b).await?;
        for d in &ag.dcs {
            shape(&d.proxy);
        }
        agents = Some(ag);
    } else {
        let proxy = Proxy::start(format!("127.0.0.1:{}", a.port)).await;
        shape(&proxy);
        let (file, pos) = a.binlog_pos().await;
        let mut cb = conn(&b).await?;
        cb.query_drop(format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='root', \
             MASTER_LOG_FILE='{file}', MASTER_LOG_POS={pos}; START SLAVE",
            proxy.port
        ))
        .await?;
        let t = Instant::now();
        while field(&slave_status(&mut cb).await?, "Slave_IO_Running") != "Yes" {
            if t.elapsed() > Duration::from_secs(60) {
                bail!("replica IO thread not running within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        _line = Some(proxy);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut ca = conn(&a).await?;
    let st = stop.clone();
    let writer = tokio::spawn(async move {
        let mut id = 0i64;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while !st.load(Ordering::SeqCst) {
            tick.tick().await;
            id += 1;
            ca.exec_drop(
                "INSERT INTO bench.lag (id, t) VALUES (?, ?)",
                (id, now_us()),
            )
            .await?;
        }
        anyhow::Ok(id)
    });
    let mut cb = conn(&b).await?;
    let done = Arc::new(std::sync::atomic::AtomicI64::new(i64::MAX));
    let dn = done.clone();
    let poller = tokio::spawn(async move {
        let mut seen = 0i64;
        let mut lags = Vec::new();
        while seen < dn.load(Ordering::SeqCst) {
            let rows: Vec<(i64, i64)> = cb
                .exec(
                    "SELECT id, t FROM bench.lag WHERE id > ? ORDER BY id",
                    (seen,),
                )
                .await?;
            let now = now_us();
            for (id, t) in rows {
                // The first second is the load ramping up.
                if id > 50 {
                    lags.push(now - t);
                }
                seen = id;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        anyhow::Ok(lags)
    });
    let load = run_load(
        &a,
        p,
        vec![
            format!("--rate={rate}"),
            format!("--time={}", p.lag_secs),
            "--events=0".into(),
            "--threads=8".into(),
        ],
    )
    .await??;
    stop.store(true, Ordering::SeqCst);
    let backlog_at_end = agents
        .as_ref()
        .and_then(|ag| ag.status(0))
        .and_then(|st| st.backlogs("sql").first().map(|(_, b)| b.txns));
    let last = writer.await??;
    done.store(last, Ordering::SeqCst);
    let mut lags = tokio::time::timeout(Duration::from_secs(600), poller)
        .await
        .context("B never showed the last heartbeat")???;
    if let Some(ag) = agents.as_mut() {
        ag.check_alive()?;
    }
    let samples = lags.len();
    let summary = lag_summary(&mut lags).context("no heartbeat measured")?;
    Ok(Lag {
        achieved: load.tps,
        summary,
        samples,
        backlog_at_end,
    })
}

/// Rows of `bench.wide`, all changed by the big transaction.
pub const BIG_ROWS: i64 = 300_000;

/// The big-transaction table: ten columns (BIGINT key, integers, strings,
/// a decimal, a datetime), filled by the Sequence engine so that both
/// servers hold the same rows without replicating them. `n` starts at 0 in
/// every row; the UPDATE adds 1, so `SUM(n)` tells whether a server has it.
fn wide_schema() -> String {
    format!(
        "CREATE TABLE bench.wide (
  id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, a INT, b INT, c BIGINT,
  d VARCHAR(32), e VARCHAR(32), f DECIMAL(12,2), g DATETIME(6), n INT NOT NULL
) ENGINE=InnoDB;
INSERT INTO bench.wide SELECT seq, seq % 97, seq, seq * 2, seq * 3,
  CONCAT('name-', seq), CONCAT('city-', seq % 1000), seq / 7, '2026-01-02 03:04:05.000006', 0
  FROM bench.seq_1_to_{BIG_ROWS};"
    )
}

/// The big transaction: every row of `bench.wide`, one statement, one
/// transaction (autocommit).
const BIG_UPDATE: &str = "UPDATE bench.wide SET n = n + 1, e = CONCAT(e, '-x')";

/// Outcome of one big-transaction run.
#[derive(Debug, Clone)]
pub struct BigTxn {
    /// Seconds from issuing the UPDATE on A until B held its result.
    pub secs: f64,
    /// Seconds the UPDATE took on A (until its commit returned).
    pub source_secs: f64,
    /// dcsync: parts the transaction was applied in (the advance of B's
    /// apply marker for origin `a`, one seq per part).
    pub parts: Option<i64>,
    /// dcsync: peak RSS (VmHWM, KiB) of agents a and b since they started;
    /// empty for native.
    pub peak_rss: Vec<u64>,
}

/// Two servers, same settings as the replay case (durable), each with the
/// benchmark schemas and its own identical copy of `bench.wide`, checked by
/// `CHECKSUM TABLE`. No replication between them yet.
async fn start_wide_pair() -> Result<(MariaDb, MariaDb)> {
    let a = start_db(true, &[]).await;
    let b = start_db(true, &[]).await;
    for db in [&a, &b] {
        let mut c = conn(db).await?;
        c.query_drop(SCHEMA).await?;
        c.query_drop(wide_schema())
            .await
            .context("filling bench.wide (Sequence engine)")?;
        let _ = c.disconnect().await;
    }
    same_wide(&a, &b).await?;
    Ok((a, b))
}

/// `CHECKSUM TABLE bench.wide` equal (and present) on both servers.
async fn same_wide(a: &MariaDb, b: &MariaDb) -> Result<()> {
    let (x, y) = (
        a.checksum("bench.wide").await,
        b.checksum("bench.wide").await,
    );
    match (x, y) {
        (Some(x), Some(y)) if x == y => Ok(()),
        _ => bail!("bench.wide: checksums differ: {x:?} vs {y:?}"),
    }
}

/// `SUM(n)` of `bench.wide` (0 for an empty table).
async fn wide_sum(c: &mut Conn) -> Result<i64> {
    let v: Option<Option<i64>> = c
        .query_first("SELECT CAST(SUM(n) AS SIGNED) FROM bench.wide")
        .await?;
    Ok(v.flatten().unwrap_or(0))
}

/// Highest apply-marker seq of origin `a` on `c`'s server.
async fn marker_seq(c: &mut Conn) -> Result<i64> {
    let v: Option<Option<i64>> = c
        .query_first("SELECT CAST(MAX(seq) AS SIGNED) FROM dcsync.apply_marker WHERE origin = 'a'")
        .await?;
    Ok(v.flatten().unwrap_or(0))
}

/// What fails a big-transaction run while B is polled.
enum Watch<'a> {
    /// An agent process exited.
    Agents(&'a mut Agents),
    /// The replica reports an IO or SQL thread error (a connection to B).
    Replica(&'a mut Conn),
}

impl Watch<'_> {
    async fn check(&mut self) -> Result<()> {
        match self {
            Watch::Agents(agents) => Ok(agents.check_alive()?),
            Watch::Replica(c) => {
                let r = slave_status(c).await?;
                for key in ["Last_IO_Error", "Last_SQL_Error"] {
                    let err = field(&r, key);
                    if !err.is_empty() {
                        bail!("replica {key}: {err}");
                    }
                }
                Ok(())
            }
        }
    }
}

/// Runs the big UPDATE on A and polls B every 100 ms (a `SUM(n)` over the
/// table takes some tens of ms) until it holds the result, checking `watch`
/// on every poll. Returns (seconds from issuing the UPDATE until B held it,
/// seconds the UPDATE took on A).
async fn time_big_update(a: &MariaDb, cb: &mut Conn, mut watch: Watch<'_>) -> Result<(f64, f64)> {
    let mut ca = conn(a).await?;
    if wide_sum(cb).await? != 0 {
        bail!("bench.wide on B is not in its initial state");
    }
    let t0 = Instant::now();
    ca.query_drop(BIG_UPDATE).await.context(BIG_UPDATE)?;
    let source_secs = t0.elapsed().as_secs_f64();
    let _ = ca.disconnect().await;
    loop {
        if wide_sum(cb).await? == BIG_ROWS {
            return Ok((t0.elapsed().as_secs_f64(), source_secs));
        }
        if t0.elapsed() > Duration::from_secs(1800) {
            bail!("B did not hold the {BIG_ROWS}-row UPDATE within 30 minutes");
        }
        watch.check().await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// dcsync: both agents started over the two identical servers and shipping,
/// then one UPDATE of every row of `bench.wide` on A, timed until B holds
/// it; the agents' peak RSS is read afterwards.
pub async fn big_txn_dcsync(dcsync: &Path) -> Result<BigTxn> {
    let (a, b) = start_wide_pair().await?;
    let mut agents = cluster::start(dcsync, &store_toml(&a, &b)).await;
    wait_flowing(&mut agents, &a, &b).await?;
    let mut cb = conn(&b).await?;
    let marker0 = marker_seq(&mut cb).await?;
    let (secs, source_secs) = time_big_update(&a, &mut cb, Watch::Agents(&mut agents)).await?;
    let parts = marker_seq(&mut cb).await? - marker0;
    let _ = cb.disconnect().await;
    agents.check_alive()?;
    let peak_rss = (0..agents.dcs.len())
        .map(|i| {
            agents
                .peak_rss_kib(i)
                .with_context(|| format!("VmHWM of agent {}", cluster::DCS[i]))
        })
        .collect::<Result<Vec<u64>>>()?;
    same_wide(&a, &b).await?;
    Ok(BigTxn {
        secs,
        source_secs,
        parts: Some(parts),
        peak_rss,
    })
}

/// Native MariaDB replication: B a replica of A (default settings, one SQL
/// thread), both threads running, then the same UPDATE on A timed until B
/// holds it.
pub async fn big_txn_native() -> Result<BigTxn> {
    let (a, b) = start_wide_pair().await?;
    let (file, pos) = a.binlog_pos().await;
    let mut cb = conn(&b).await?;
    cb.query_drop(format!(
        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='root', \
         MASTER_LOG_FILE='{file}', MASTER_LOG_POS={pos}; START SLAVE",
        a.port
    ))
    .await?;
    let t = Instant::now();
    loop {
        let r = slave_status(&mut cb).await?;
        if field(&r, "Slave_IO_Running") == "Yes" && field(&r, "Slave_SQL_Running") == "Yes" {
            break;
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("replica threads not running within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut cs = conn(&b).await?;
    let (secs, source_secs) = time_big_update(&a, &mut cb, Watch::Replica(&mut cs)).await?;
    same_wide(&a, &b).await?;
    Ok(BigTxn {
        secs,
        source_secs,
        parts: None,
        peak_rss: Vec::new(),
    })
}

/// Wall-clock time in seconds since the Unix epoch (0 if the clock is
/// before it).
fn unix_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
