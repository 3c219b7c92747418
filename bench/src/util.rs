//! Small measuring helpers: a process-wide microsecond clock, percentiles,
//! an RSS sampler over `/proc/<pid>/status`, CPU time from
//! `/proc/<pid>/stat`, and the `sysbench` driver.

use anyhow::{bail, Context, Result};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Microseconds since the first call in this process. Writers and pollers of
/// heartbeats share it (both servers run on this host), so lag needs no
/// clock synchronisation.
pub fn now_us() -> i64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as i64
}

/// p50, p99 and max of `samples` (µs), in milliseconds.
pub fn lag_summary(samples: &mut [i64]) -> Option<(f64, f64, f64)> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let pick = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i.min(samples.len() - 1)] as f64 / 1000.0
    };
    Some((pick(0.5), pick(0.99), pick(1.0)))
}

/// Whether a MariaDB source position as the agent reports it
/// (`mysql-bin.000001:4711 gtid=...`) is at or past `file:pos` of the same
/// server. Binlog file names of one server share their base name and a
/// zero-padded sequence number, so they order as strings.
///
/// A source passes the end of a load without stopping on it: dcsync's own
/// lease renewals (every few seconds) and the position updates that are
/// coalesced within 100 ms move it on, so a wait for *equality* can miss it
/// for good.
pub fn binlog_reached(position: &str, file: &str, pos: u64) -> bool {
    let Some((f, p)) = position
        .split_whitespace()
        .next()
        .and_then(|w| w.rsplit_once(':'))
    else {
        return false;
    };
    let Ok(p) = p.parse::<u64>() else {
        return false;
    };
    (f, p) >= (file, pos)
}

/// VmRSS of `pid` in KiB, if the process exists.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// CPU time (user + system) `pid` has used, in seconds, from
/// `/proc/<pid>/stat` (in clock ticks of 1/100 s: Linux's `USER_HZ`).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name, from field 3 (state):
    // utime and stime are fields 14 and 15.
    let mut f = s.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// RSS (KiB) of one process over a sampling window.
#[derive(Debug, Clone, Copy, Default)]
pub struct RssStats {
    /// First sample.
    pub start: u64,
    /// Largest sample.
    pub max: u64,
    /// Samples taken.
    pub samples: u64,
}

/// Samples the RSS of some processes every 500 ms until stopped.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<Vec<RssStats>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    /// Starts sampling `pids` (in that order in the result).
    pub fn start(pids: Vec<u32>) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(vec![RssStats::default(); pids.len()]));
        let (st, sx) = (stop.clone(), stats.clone());
        let task = tokio::spawn(async move {
            while !st.load(Ordering::SeqCst) {
                for (i, pid) in pids.iter().enumerate() {
                    if let (Some(kib), Ok(mut g)) = (rss_kib(*pid), sx.lock()) {
                        let s = &mut g[i];
                        if s.samples == 0 {
                            s.start = kib;
                        }
                        s.max = s.max.max(kib);
                        s.samples += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        RssSampler { stop, stats, task }
    }

    /// Stops and returns the statistics.
    pub async fn finish(self) -> Vec<RssStats> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        self.stats.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

/// Connection parameters `sysbench` needs for a private MariaDB.
pub fn sysbench_args(port: u16, tables: u32, table_size: u64) -> Vec<String> {
    vec![
        "oltp_write_only".into(),
        "--db-driver=mysql".into(),
        "--mysql-host=127.0.0.1".into(),
        format!("--mysql-port={port}"),
        "--mysql-user=root".into(),
        "--mysql-db=sbtest".into(),
        format!("--tables={tables}"),
        format!("--table-size={table_size}"),
    ]
}

/// What one `sysbench run` reported.
#[derive(Debug, Clone, Copy)]
pub struct SysbenchRun {
    /// Transactions committed.
    pub txns: u64,
    /// Transactions per second as sysbench measured them.
    pub tps: f64,
    /// Wall time of the run.
    pub secs: f64,
}

/// Runs `sysbench <base> <extra> <cmd>` and parses its transaction count.
pub fn sysbench(base: &[String], extra: &[String], cmd: &str) -> Result<SysbenchRun> {
    let t = Instant::now();
    let out = Command::new("sysbench")
        .args(base)
        .args(extra)
        .arg(cmd)
        .output()
        .context("running sysbench (apt-get install sysbench)")?;
    let secs = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "sysbench {cmd} failed: {}\n{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut run = SysbenchRun {
        txns: 0,
        tps: 0.0,
        secs,
    };
    // "    transactions:                        10000  (1234.56 per sec.)"
    if let Some(l) = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("transactions:"))
    {
        let mut it = l.split_whitespace().skip(1);
        run.txns = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        run.tps = it
            .next()
            .map(|v| v.trim_start_matches('('))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
    }
    Ok(run)
}

/// Polls `check` every `every` until it yields `Some`, failing after `limit`.
pub async fn poll<T, F, Fut>(
    what: &str,
    every: Duration,
    limit: Duration,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::binlog_reached;

    #[test]
    fn binlog_reached_is_at_or_after_in_file_order() {
        let end = ("mysql-bin.000002", 500);
        let at = |p: &str| binlog_reached(p, end.0, end.1);
        assert!(at("mysql-bin.000002:500 gtid=0-1-9"));
        assert!(at("mysql-bin.000002:501"));
        assert!(at("mysql-bin.000010:4"));
        assert!(!at("mysql-bin.000002:499 gtid=0-1-8"));
        assert!(!at("mysql-bin.000001:90000"));
        assert!(!at("not a position"));
        assert!(!at(""));
    }
}
