//! Initial snapshot and verify: one sysbench table of N rows in DC A, an
//! empty table of the same schema in DC B, and the agents started with the
//! store's `initial = "snapshot"`, timed until B holds every row with A's
//! `CHECKSUM TABLE`; against `mariadb-dump --single-transaction
//! --no-create-info | mariadb` of the same table into an empty copy. After
//! the snapshot converged, `dcsync verify` compares the two DCs.

use crate::cluster;
use crate::mysql_cases::{conn, start_db};
use crate::util::{cpu_secs, sysbench, sysbench_args};
use anyhow::{bail, Context, Result};
use dcsync_testkit::cluster::Agents;
use dcsync_testkit::mariadb::MariaDb;
use mysql_async::prelude::Queryable;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The table the snapshot copies.
const TABLE: &str = "sbtest.sbtest1";

/// DC A's server with the prepared sysbench table, shared by the dcsync and
/// the `mariadb-dump` run (both only read it).
pub struct Source {
    /// The server.
    pub db: MariaDb,
    /// Rows of the table.
    pub rows: u64,
    /// Its highest primary key (sysbench numbers rows 1..=rows).
    max_id: i64,
    /// Its `CHECKSUM TABLE`.
    checksum: i64,
}

/// Outcome of the dcsync snapshot (and of `dcsync verify` after it).
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Seconds from the agents' start until B held every row with A's
    /// checksum.
    pub secs: f64,
    /// Seconds agent A's source took to read the table and hand it to the
    /// agent (its `initial snapshot done` log line), if found.
    pub source_secs: Option<f64>,
    /// Peak RSS (VmHWM, KiB) of agents a and b since they started.
    pub peak_rss: Vec<u64>,
    /// CPU seconds (user + system) agents a and b used until then.
    pub cpu_secs: Vec<f64>,
    /// `dcsync verify` run afterwards, if asked for.
    pub verify: Option<Verify>,
}

/// Outcome of the `mariadb-dump | mariadb` baseline.
#[derive(Debug, Clone, Copy)]
pub struct Dump {
    /// Seconds from starting the pipeline until it finished (every row
    /// committed on B; the checksum is compared afterwards).
    pub secs: f64,
}

/// Outcome of one `dcsync verify --json` over the converged DCs.
#[derive(Debug, Clone, Copy)]
pub struct Verify {
    /// Rows checked (the first DC's rows in the compared chunks).
    pub rows: u64,
    /// Chunks compared.
    pub chunks: u64,
    /// Wall time of the `dcsync verify` process, s.
    pub secs: f64,
    /// What verify reports as its own run time, ms.
    pub own_ms: u64,
}

impl Source {
    /// A fresh durable server (the replay case's settings) with
    /// `sysbench oltp_read_write --tables=1 --table-size=rows prepare`
    /// (the replay case's schema), flushed so that its background writes
    /// do not fall into the first timed run.
    pub async fn prepare(rows: u64) -> Result<Source> {
        let db = start_db(true, &[]).await;
        conn(&db)
            .await?
            .query_drop("CREATE DATABASE sbtest")
            .await?;
        let mut base = sysbench_args(db.port, 1, rows);
        base[0] = "oltp_read_write".into();
        tokio::task::spawn_blocking(move || sysbench(&base, &["--threads=1".into()], "prepare"))
            .await??;
        let mut c = conn(&db).await?;
        c.query_drop(format!("FLUSH TABLES {TABLE} FOR EXPORT; UNLOCK TABLES"))
            .await?;
        let (count, max_id): (i64, i64) = c
            .query_first(format!("SELECT COUNT(*), MAX(id) FROM {TABLE}"))
            .await?
            .context("COUNT(*) on A")?;
        let _ = c.disconnect().await;
        if count as u64 != rows {
            bail!("sysbench prepared {count} rows, not {rows}");
        }
        let checksum = db.checksum(TABLE).await.context("CHECKSUM TABLE on A")?;
        Ok(Source {
            db,
            rows,
            max_id,
            checksum,
        })
    }

    /// A fresh server like A's with the table created and empty (its
    /// `CREATE TABLE` from `mariadb-dump --no-data`).
    async fn empty_copy(&self) -> Result<MariaDb> {
        let b = start_db(true, &[]).await;
        conn(&b).await?.query_drop("CREATE DATABASE sbtest").await?;
        let (db, table) = TABLE.split_once('.').unwrap_or(("sbtest", TABLE));
        shell(&format!(
            "mariadb-dump --no-defaults -h127.0.0.1 -P{} -uroot --no-data {db} {table} \
             | mariadb --no-defaults -h127.0.0.1 -P{} -uroot {db}",
            self.db.port, b.port
        ))
        .await
        .context("copying the table definition to B")?;
        Ok(b)
    }

    /// Whether `b` holds every row with A's checksum: `COUNT(*)` first,
    /// then `CHECKSUM TABLE` (both read the whole table).
    async fn complete_on(&self, b: &MariaDb) -> Result<bool> {
        let mut c = conn(b).await?;
        let count: Option<i64> = c
            .query_first(format!("SELECT COUNT(*) FROM {TABLE}"))
            .await?;
        let _ = c.disconnect().await;
        if count.map(|n| n as u64) != Some(self.rows) {
            return Ok(false);
        }
        Ok(b.checksum(TABLE).await == Some(self.checksum))
    }
}

/// Runs `bash -c cmd` (with `pipefail`) off the async runtime; fails with
/// its exit status.
async fn shell(cmd: &str) -> Result<()> {
    let script = format!("set -o pipefail; {cmd}");
    let st =
        tokio::task::spawn_blocking(move || Command::new("bash").arg("-c").arg(script).status())
            .await?
            .context("running bash")?;
    if !st.success() {
        bail!("{cmd}: {st}");
    }
    Ok(())
}

/// The store of the snapshot case: the sysbench schema, `initial =
/// "snapshot"`, plus the lines of `DCSYNC_BENCH_STORE_EXTRA` (e.g.
/// `snapshot_rows_per_sec = 50000`), which must not set `initial`.
fn store_toml(a: &MariaDb, b: &MariaDb) -> Result<String> {
    let extra = std::env::var("DCSYNC_BENCH_STORE_EXTRA").unwrap_or_default();
    if extra.contains("initial") {
        bail!("the snapshot case sets `initial` itself; leave it out of DCSYNC_BENCH_STORE_EXTRA");
    }
    Ok(format!(
        "[[store]]\nname = \"sql\"\nkind = \"mysql\"\ntables = [\"sbtest.*\"]\ninitial = \"snapshot\"\n{extra}\nurl = {{ a = \"{}\", b = \"{}\" }}\n",
        a.url(),
        b.url()
    ))
}

/// The `secs=` of agent A's `initial snapshot done` log line.
fn source_secs(log: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains("initial snapshot done"))?;
    let v = line.split("secs=").nth(1)?;
    v.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?
        .parse()
        .ok()
}

/// dcsync: both agents started over A (the table) and an empty B with the
/// store's `initial = "snapshot"`, timed from their start until B holds
/// every row with A's checksum; then, with `verify`, `dcsync verify` over
/// the two DCs.
///
/// B is polled every 20 ms with `MAX(id)` (one index dive); once it has
/// A's last row, `COUNT(*)` and `CHECKSUM TABLE` (each a full read, so not
/// every 20 ms) decide. The time is taken just before the `COUNT(*)` that
/// saw every row: its read view shows them all already.
pub async fn snapshot_dcsync(dcsync: &Path, src: &Source, verify: bool) -> Result<Snapshot> {
    let b = src.empty_copy().await?;
    let mut agents = cluster::start(dcsync, &store_toml(&src.db, &b)?).await;
    // `cluster::start` spawns the agents as its last step.
    let t0 = Instant::now();
    let mut cb = conn(&b).await?;
    let secs = loop {
        agents.check_alive()?;
        let max: Option<Option<i64>> = cb
            .query_first(format!("SELECT MAX(id) FROM {TABLE}"))
            .await?;
        if max.flatten() == Some(src.max_id) {
            let t = t0.elapsed().as_secs_f64();
            if src.complete_on(&b).await? {
                break t;
            }
        }
        if t0.elapsed() > Duration::from_secs(3600) {
            bail!(
                "B did not hold the {} rows within an hour; agent a log:\n{}\nagent b log:\n{}",
                src.rows,
                agents.log_tail(0, 30),
                agents.log_tail(1, 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = cb.disconnect().await;
    let peak_rss = (0..agents.dcs.len())
        .map(|i| {
            agents
                .peak_rss_kib(i)
                .with_context(|| format!("VmHWM of agent {}", cluster::DCS[i]))
        })
        .collect::<Result<Vec<u64>>>()?;
    let cpu_secs = agents
        .pids()
        .into_iter()
        .map(|pid| cpu_secs(pid).unwrap_or(0.0))
        .collect();
    let source_secs = source_secs(&agents.log(0));
    let verify = if verify {
        Some(run_verify(dcsync, &agents, src.rows).await?)
    } else {
        None
    };
    agents.check_alive()?;
    Ok(Snapshot {
        secs,
        source_secs,
        peak_rss,
        cpu_secs,
        verify,
    })
}

/// The first `"key": <unsigned number>` of verify's JSON report: the
/// bench has no JSON parser, and the report's counts are plain numbers at
/// its top level.
fn json_u64(doc: &str, key: &str) -> Option<u64> {
    doc.split(&format!("\"{key}\":")).skip(1).find_map(|v| {
        let v = v.trim_start();
        v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    })
}

/// `dcsync verify --topology <the agents'> --store sql --json`, timed as a
/// process; fails unless it exits 0 (equal) having checked `rows` rows.
async fn run_verify(dcsync: &Path, agents: &Agents, rows: u64) -> Result<Verify> {
    let mut cmd = Command::new(dcsync);
    cmd.arg("verify")
        .arg("--topology")
        .arg(&agents.topology)
        .args(["--store", "sql", "--json"])
        .current_dir(agents.dir.path());
    let t = Instant::now();
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await?
        .context("running dcsync verify")?;
    let secs = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "dcsync verify did not report the DCs equal ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let field = |k: &str| {
        json_u64(&stdout, k).with_context(|| format!("no {k:?} in verify's report:\n{stdout}"))
    };
    let v = Verify {
        rows: field("items")?,
        chunks: field("units")?,
        secs,
        own_ms: field("elapsed_ms")?,
    };
    if v.rows != rows {
        bail!("dcsync verify checked {} rows, not {rows}", v.rows);
    }
    Ok(v)
}

/// The baseline: `mariadb-dump --single-transaction --no-create-info` of
/// A's table piped into `mariadb` on a fresh empty copy (the `mysqldump |
/// mysql` a user would otherwise run), timed from its start until the
/// pipeline exits; B's `COUNT(*)` and `CHECKSUM TABLE` are then compared
/// with A's.
pub async fn snapshot_dump(src: &Source) -> Result<Dump> {
    let b = src.empty_copy().await?;
    let (db, table) = TABLE.split_once('.').unwrap_or(("sbtest", TABLE));
    let cmd = format!(
        "mariadb-dump --no-defaults -h127.0.0.1 -P{} -uroot --single-transaction \
         --no-create-info {db} {table} | mariadb --no-defaults -h127.0.0.1 -P{} -uroot {db}",
        src.db.port, b.port
    );
    let t0 = Instant::now();
    shell(&cmd).await?;
    let secs = t0.elapsed().as_secs_f64();
    if !src.complete_on(&b).await? {
        bail!("after mariadb-dump | mariadb, B's {TABLE} differs from A's");
    }
    Ok(Dump { secs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_verify_counts_and_snapshot_secs() {
        let doc = "{\n  \"store\": \"sql\",\n  \"units\": 100,\n  \"items\": 1000000,\n  \"units_rechecked\": 0,\n  \"elapsed_ms\": 2345\n}";
        assert_eq!(json_u64(doc, "items"), Some(1_000_000));
        assert_eq!(json_u64(doc, "units"), Some(100));
        assert_eq!(json_u64(doc, "elapsed_ms"), Some(2345));
        assert_eq!(json_u64(doc, "missing"), None);
        let log = "x INFO mysql source: initial snapshot done; tailing the binlog from its position store=sql rows=20000 tables=1 secs=1.25\n";
        assert_eq!(source_secs(log), Some(1.25));
    }
}
