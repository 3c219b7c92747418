//! Redis cases: `redis-benchmark` pipelined writes (SET, HSET, INCR, LPUSH)
//! into DC A, end to end through dcsync against native `REPLICAOF`; and
//! steady-state lag at a fixed pipelined load over a 30 ms RTT line.

use crate::cluster;
use crate::util::{lag_summary, now_us};
use anyhow::{bail, Context, Result};
use dcsync_testkit::cluster::Agents;
use dcsync_testkit::proxy::Proxy;
use dcsync_testkit::redis::Redis;
use redis::aio::MultiplexedConnection;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Outcome of one end-to-end throughput run.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Operations written.
    pub ops: u64,
    /// Seconds redis-benchmark took on the source alone.
    pub load_secs: f64,
    /// Seconds from the start of the load until the target had all of it.
    pub secs: f64,
}

impl Throughput {
    /// End-to-end ops/s.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.secs
    }
}

/// Outcome of one lag measurement.
#[derive(Debug, Clone, Copy)]
pub struct Lag {
    /// Offered ops/s achieved.
    pub achieved: f64,
    /// p50, p99, max in ms.
    pub summary: (f64, f64, f64),
    /// Heartbeats measured.
    pub samples: usize,
}

/// The Redis store of the benchmark; `DCSYNC_BENCH_REDIS_EXTRA` adds keys
/// (`conflict = "none"` to measure without the conflict checks).
fn store_toml(a: &Redis, b: &Redis) -> String {
    let extra = std::env::var("DCSYNC_BENCH_REDIS_EXTRA").unwrap_or_default();
    format!(
        "[[store]]\nname = \"kv\"\nkind = \"redis\"\n{extra}\nurl = {{ a = \"{}\", b = \"{}\" }}\n",
        a.url(),
        b.url()
    )
}

async fn get(c: &mut MultiplexedConnection, key: &str) -> Result<Option<String>> {
    Ok(redis::cmd("GET").arg(key).query_async(c).await?)
}

async fn set(c: &mut MultiplexedConnection, key: &str, v: &str) -> Result<()> {
    redis::cmd("SET")
        .arg(key)
        .arg(v)
        .query_async::<()>(c)
        .await?;
    Ok(())
}

async fn dbsize(c: &mut MultiplexedConnection) -> Result<u64> {
    Ok(redis::cmd("DBSIZE").query_async(c).await?)
}

/// Sets `key` on A until B shows the value (within `limit`).
async fn wait_key(
    agents: &mut Agents,
    ca: &mut MultiplexedConnection,
    cb: &mut MultiplexedConnection,
    key: &str,
    repeat: bool,
    limit: Duration,
) -> Result<()> {
    let start = Instant::now();
    let mut k = 0u64;
    let token = format!("{}", now_us());
    loop {
        agents.check_alive()?;
        let v = if repeat {
            k += 1;
            format!("{token}-{k}")
        } else {
            token.clone()
        };
        if repeat || k == 0 {
            set(ca, key, &v).await?;
            k = k.max(1);
        }
        let mut waited = Duration::ZERO;
        while waited < Duration::from_millis(300) {
            if get(cb, key).await?.as_deref() == Some(v.as_str()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += Duration::from_millis(10);
        }
        if start.elapsed() > limit {
            bail!(
                "{key} not on B within {limit:?}; agent a log:\n{}\nagent b log:\n{}",
                agents.log_tail(0, 30),
                agents.log_tail(1, 30)
            );
        }
    }
}

async fn wait_link_up(replica: &Redis) -> Result<()> {
    let start = Instant::now();
    while replica
        .info_field("replication", "master_link_status")
        .await
        .as_deref()
        != Some("up")
    {
        if start.elapsed() > Duration::from_secs(60) {
            bail!("replica link not up in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn redis_benchmark(port: u16, n: u64) -> Result<f64> {
    let t = Instant::now();
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-t",
            "set,hset,incr,lpush",
            "-P",
            "32",
            "-r",
            "100000",
            "-q",
        ])
        .args(["-n", &n.to_string()])
        .output()
        .context("running redis-benchmark (apt-get install redis-tools)")?;
    if !out.status.success() {
        bail!(
            "redis-benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(t.elapsed().as_secs_f64())
}

/// dcsync: redis-benchmark into A with the line up; timed from the start of
/// the load until B has a marker key written on A after the load (per-origin
/// order means B then has everything before it).
pub async fn throughput_dcsync(dcsync: &Path, n: u64) -> Result<Throughput> {
    let a = Redis::start().await;
    let b = Redis::start().await;
    let mut agents = cluster::start(dcsync, &store_toml(&a, &b)).await;
    let (mut ca, mut cb) = (a.conn().await, b.conn().await);
    wait_key(
        &mut agents,
        &mut ca,
        &mut cb,
        "bench:warmup",
        true,
        Duration::from_secs(90),
    )
    .await?;
    let t0 = Instant::now();
    let port = a.port;
    let load_secs = tokio::task::spawn_blocking(move || redis_benchmark(port, n)).await??;
    wait_key(
        &mut agents,
        &mut ca,
        &mut cb,
        "bench:done",
        false,
        Duration::from_secs(3600),
    )
    .await?;
    let secs = t0.elapsed().as_secs_f64();
    let markers: Vec<String> = redis::cmd("KEYS")
        .arg("dcsync:*")
        .query_async(&mut cb)
        .await?;
    let (ka, kb) = (dbsize(&mut ca).await?, dbsize(&mut cb).await?);
    if ka + markers.len() as u64 != kb {
        bail!(
            "key counts differ after the run: A {ka}, B {kb} (with {} markers)",
            markers.len()
        );
    }
    Ok(Throughput {
        ops: 4 * n,
        load_secs,
        secs,
    })
}

/// Native: B is `REPLICAOF` A; the same load; timed until B's replication
/// offset reaches A's.
pub async fn throughput_native(n: u64) -> Result<Throughput> {
    let a = Redis::start().await;
    let b = Redis::start().await;
    let mut cb = b.conn().await;
    redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(a.port)
        .query_async::<()>(&mut cb)
        .await?;
    let start = Instant::now();
    while b
        .info_field("replication", "master_link_status")
        .await
        .as_deref()
        != Some("up")
    {
        if start.elapsed() > Duration::from_secs(60) {
            bail!("replica link not up in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t0 = Instant::now();
    let port = a.port;
    let load_secs = tokio::task::spawn_blocking(move || redis_benchmark(port, n)).await??;
    let end: u64 = a
        .info_field("replication", "master_repl_offset")
        .await
        .and_then(|v| v.parse().ok())
        .context("master_repl_offset")?;
    loop {
        let off: u64 = b
            .info_field("replication", "slave_repl_offset")
            .await
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if off >= end {
            break;
        }
        if t0.elapsed() > Duration::from_secs(3600) {
            bail!("native replica not caught up within an hour");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let mut ca = a.conn().await;
    let (ka, kb) = (dbsize(&mut ca).await?, dbsize(&mut cb).await?);
    if ka != kb {
        bail!("native replica key count differs: {ka} vs {kb}");
    }
    Ok(Throughput {
        ops: 4 * n,
        load_secs,
        secs,
    })
}

/// Steady-state lag at `rate` ops/s (pipelines of SET/HSET/INCR/LPUSH every
/// 10 ms) through a line of `rtt_ms` (half each way, 3 ms jitter when
/// non-zero): a heartbeat `RPUSH bench:hb <µs>` on A every 20 ms, B polled
/// every 2 ms. `dcsync: None` measures a native `REPLICAOF` replica through
/// the same kind of line.
pub async fn lag(dcsync: Option<&Path>, rate: u64, secs: u64, rtt_ms: u64) -> Result<Lag> {
    let a = Redis::start().await;
    let b = Redis::start().await;
    let shape = |proxy: &Proxy| {
        if rtt_ms > 0 {
            proxy.set_latency(Duration::from_millis(rtt_ms / 2), Duration::from_millis(3));
        }
    };
    let (mut ca, mut cb) = (a.conn().await, b.conn().await);
    let mut agents = None;
    let mut _line = None;
    if let Some(dcsync) = dcsync {
        let mut ag = cluster::start(dcsync, &store_toml(&a, &b)).await;
        wait_key(
            &mut ag,
            &mut ca,
            &mut cb,
            "bench:warmup",
            true,
            Duration::from_secs(90),
        )
        .await?;
        for d in &ag.dcs {
            shape(&d.proxy);
        }
        agents = Some(ag);
    } else {
        let proxy = Proxy::start(format!("127.0.0.1:{}", a.port)).await;
        shape(&proxy);
        redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(proxy.port)
            .query_async::<()>(&mut cb)
            .await?;
        wait_link_up(&b).await?;
        _line = Some(proxy);
    }
    let stop = Arc::new(AtomicBool::new(false));
    // The load.
    let (st, mut cl) = (stop.clone(), a.conn().await);
    let per_tick = (rate / 100).max(4);
    let load = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let (mut sent, mut i) = (0u64, 0u64);
        let t = Instant::now();
        while !st.load(Ordering::SeqCst) {
            tick.tick().await;
            let mut p = redis::pipe();
            for _ in 0..per_tick / 4 {
                i += 1;
                let r = i.wrapping_mul(2_654_435_761) % 100_000;
                p.cmd("SET").arg(format!("key:{r}")).arg("xxx").ignore();
                p.cmd("HSET")
                    .arg("myhash")
                    .arg(format!("f:{r}"))
                    .arg("xxx")
                    .ignore();
                p.cmd("INCR").arg(format!("counter:{r}")).ignore();
                p.cmd("LPUSH").arg("mylist").arg("xxx").ignore();
            }
            p.query_async::<()>(&mut cl).await?;
            sent += per_tick / 4 * 4;
        }
        anyhow::Ok(sent as f64 / t.elapsed().as_secs_f64())
    });
    // The heartbeat.
    let (st, mut ch) = (stop.clone(), a.conn().await);
    let writer = tokio::spawn(async move {
        let mut n = 0i64;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while !st.load(Ordering::SeqCst) {
            tick.tick().await;
            redis::cmd("RPUSH")
                .arg("bench:hb")
                .arg(now_us())
                .query_async::<()>(&mut ch)
                .await?;
            n += 1;
        }
        anyhow::Ok(n)
    });
    let done = Arc::new(AtomicI64::new(i64::MAX));
    let dn = done.clone();
    let poller = tokio::spawn(async move {
        let mut seen = 0i64;
        let mut lags = Vec::new();
        while seen < dn.load(Ordering::SeqCst) {
            let vals: Vec<i64> = redis::cmd("LRANGE")
                .arg("bench:hb")
                .arg(seen)
                .arg(-1)
                .query_async(&mut cb)
                .await?;
            let now = now_us();
            for t in vals {
                seen += 1;
                if seen > 50 {
                    lags.push(now - t);
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        anyhow::Ok(lags)
    });
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::SeqCst);
    let achieved = load.await??;
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
        achieved,
        summary,
        samples,
    })
}
