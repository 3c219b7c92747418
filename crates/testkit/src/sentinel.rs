//! A private Redis Sentinel (`redis-server <conf> --sentinel`) on a free
//! loopback port with a temporary directory, monitoring one master set
//! (see <https://redis.io/docs/latest/operate/oss_and_stack/management/sentinel/>).
//!
//! Unlike the servers, Sentinel is optional: [`Sentinel::start`] returns
//! the reason when it cannot run here, and a test that needs it reports
//! itself skipped with that reason (it never passes silently).

use crate::redis::Redis;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running sentinel; killed and its dir removed on drop.
pub struct Sentinel {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// The master set's name.
    pub master_name: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Sentinel {
    /// Starts a sentinel monitoring `master` as `master_name` with quorum
    /// `quorum` (1 lets one sentinel decide), `down-after-milliseconds`
    /// 1000 and `failover-timeout` 10000, and waits until it answers
    /// `SENTINEL get-master-addr-by-name`.
    ///
    /// Errors: why it cannot run (no `redis-server`, sentinel mode refused,
    /// no answer in 10 s), with the end of its log.
    pub async fn start(master_name: &str, master: &Redis, quorum: u32) -> Result<Sentinel, String> {
        let dir = tempfile::Builder::new()
            .prefix("dcsync-sentinel-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let port = crate::free_port();
        let conf = dir.path().join("sentinel.conf");
        let log = dir.path().join("sentinel.log");
        let text = format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {log}\n\
             sentinel monitor {master_name} 127.0.0.1 {mport} {quorum}\n\
             sentinel down-after-milliseconds {master_name} 1000\n\
             sentinel failover-timeout {master_name} 10000\n\
             sentinel parallel-syncs {master_name} 1\n",
            dir = dir.path().display(),
            log = log.display(),
            mport = master.port,
        );
        std::fs::write(&conf, text).map_err(|e| format!("write {}: {e}", conf.display()))?;
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server --sentinel: {e}"))?;
        let mut s = Sentinel {
            port,
            master_name: master_name.to_string(),
            dir,
            child: Some(child),
        };
        let start = Instant::now();
        loop {
            if let Some(c) = s.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(format!(
                        "redis-server --sentinel exited with {status}: {}",
                        s.log_tail(10)
                    ));
                }
            }
            if s.master_addr().await.is_some() {
                return Ok(s);
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "the sentinel did not answer in 10 s: {}",
                    s.log_tail(10)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn conn(&self) -> Option<redis::aio::MultiplexedConnection> {
        redis::Client::open(format!("redis://{}", self.addr()))
            .ok()?
            .get_multiplexed_async_connection()
            .await
            .ok()
    }

    /// `SENTINEL get-master-addr-by-name`: `host:port`, `None` if it does
    /// not answer or know the set.
    pub async fn master_addr(&self) -> Option<String> {
        let mut c = self.conn().await?;
        let v: Option<Vec<String>> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master_name)
            .query_async(&mut c)
            .await
            .ok()?;
        match v.as_deref() {
            Some([h, p]) => Some(format!("{h}:{p}")),
            _ => None,
        }
    }

    /// The replicas the sentinel knows of the set that it can promote
    /// (flags exactly `slave`: not down, not disconnected), as `host:port`.
    pub async fn good_replicas(&self) -> Vec<String> {
        let Some(mut c) = self.conn().await else {
            return Vec::new();
        };
        let v: Result<Vec<Vec<String>>, _> = redis::cmd("SENTINEL")
            .arg("replicas")
            .arg(&self.master_name)
            .query_async(&mut c)
            .await;
        v.unwrap_or_default()
            .iter()
            .filter_map(|flat| {
                let field = |k: &str| {
                    flat.chunks(2)
                        .find(|p| p.first().map(String::as_str) == Some(k))
                        .and_then(|p| p.get(1).cloned())
                };
                if field("flags").as_deref() != Some("slave") {
                    return None;
                }
                Some(format!("{}:{}", field("ip")?, field("port")?))
            })
            .collect()
    }

    /// `SENTINEL FAILOVER <set>`: forces a failover as if the master were
    /// down (no agreement asked of other sentinels).
    ///
    /// Errors: the sentinel's (`NOGOODSLAVE`, `INPROG`).
    pub async fn failover(&self) -> Result<(), String> {
        let mut c = self.conn().await.ok_or("cannot connect to the sentinel")?;
        redis::cmd("SENTINEL")
            .arg("failover")
            .arg(&self.master_name)
            .query_async::<()>(&mut c)
            .await
            .map_err(|e| e.to_string())
    }

    /// The last `n` lines of the sentinel's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("sentinel.log")).unwrap_or_default();
        crate::cluster::tail(&log, n)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
