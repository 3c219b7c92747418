//! A private `redis-server` for tests on a free loopback port, no persistence.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running private Redis server; killed and its dir removed on drop.
pub struct Redis {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl Redis {
    /// Starts a server with default settings.
    pub async fn start() -> Redis {
        Self::start_with(Vec::new()).await
    }

    /// Starts a server with extra `--option value` arguments (e.g.
    /// `["--repl-backlog-size", "16kb"]`).
    pub async fn start_with(extra_args: Vec<String>) -> Redis {
        let dir = tempfile::Builder::new()
            .prefix("dcsync-redis-")
            .tempdir()
            .expect("tempdir");
        let mut r = Redis {
            port: crate::free_port(),
            dir,
            extra_args,
            child: None,
        };
        r.spawn().await;
        r
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            // Replicas (the dcsync source) get their RDB at once, not after
            // the default 5 s diskless-sync delay.
            .arg("--repl-diskless-sync-delay")
            .arg("0")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"));
        for a in &self.extra_args {
            cmd.arg(a);
        }
        self.child = Some(
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{}", crate::missing("redis-server", &e))),
        );
        let start = Instant::now();
        loop {
            if let Ok(c) = redis::Client::open(self.url()) {
                if let Ok(mut con) = c.get_multiplexed_async_connection().await {
                    let pong: Result<String, _> = redis::cmd("PING").query_async(&mut con).await;
                    if pong.is_ok() {
                        return;
                    }
                }
            }
            if start.elapsed() > Duration::from_secs(30) {
                panic!("redis-server did not start in 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A new multiplexed connection.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connect")
    }

    /// The server's data directory (`SAVE` writes `dump.rdb` here).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Kills the server and starts it again on the same port and dir (with
    /// `--save ""` the dataset is gone unless `dump.rdb` was saved).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// One field of `INFO <section>` (`master_repl_offset`), if present.
    pub async fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let mut c = self.conn().await;
        let info: String = redis::cmd("INFO")
            .arg(section)
            .query_async(&mut c)
            .await
            .ok()?;
        info.lines().find_map(|l| {
            l.strip_prefix(field)
                .and_then(|r| r.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        })
    }

    /// Every data key (not dcsync's own `dcsync:` apply markers) with its
    /// value, for keyspaces of plain strings (`GET`); compare the result
    /// between DCs.
    ///
    /// Errors: the server's (a key that is not a string, a lost connection).
    pub async fn string_values(
        &self,
    ) -> Result<std::collections::BTreeMap<String, String>, ::redis::RedisError> {
        let mut c = self.conn().await;
        let keys: Vec<String> = ::redis::cmd("KEYS").arg("*").query_async(&mut c).await?;
        let mut out = std::collections::BTreeMap::new();
        for k in keys.into_iter().filter(|k| !k.starts_with("dcsync:")) {
            let v: String = ::redis::cmd("GET").arg(&k).query_async(&mut c).await?;
            out.insert(k, v);
        }
        Ok(out)
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
