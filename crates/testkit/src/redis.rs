//! A private `redis-server` for tests on a free loopback port, no
//! persistence; replicas of one ([`Redis::start_replica_of`]), caught up
//! ([`Redis::wait_replica_caught_up`]) and promoted ([`Redis::promote`])
//! as in a failover (see <https://redis.io/docs/latest/operate/oss_and_stack/management/replication/>).

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

    /// Starts a replica of `primary` (`--replicaof 127.0.0.1 <port>`) with
    /// extra `--option value` arguments, and waits until its link to the
    /// primary is up (`master_link_status:up`, the initial sync done).
    pub async fn start_replica_of(primary: &Redis, mut extra_args: Vec<String>) -> Redis {
        extra_args.extend([
            "--replicaof".to_string(),
            "127.0.0.1".to_string(),
            primary.port.to_string(),
        ]);
        let r = Self::start_with(extra_args).await;
        crate::wait_for(
            "the replica's link to its primary",
            Duration::from_secs(30),
            || async {
                (r.info_field("replication", "master_link_status")
                    .await
                    .as_deref()
                    == Some("up"))
                .then_some(())
            },
        )
        .await;
        r
    }

    /// `master_repl_offset` of `INFO replication`: on a primary the end
    /// of its replication stream, on a replica how far it has processed
    /// its primary's stream. `None` if unreadable.
    pub async fn repl_offset(&self) -> Option<u64> {
        self.info_field("replication", "master_repl_offset")
            .await
            .and_then(|v| v.parse().ok())
    }

    /// Waits (up to `deadline`) until `replica` has processed everything
    /// this primary has written to its replication stream (equal
    /// `master_repl_offset`s, read primary first) and returns that offset.
    /// Stop the writes first (`CLIENT PAUSE ... WRITE` also stops the
    /// primary's pings to its replicas), or the offsets move on.
    pub async fn wait_replica_caught_up(&self, replica: &Redis, deadline: Duration) -> u64 {
        crate::wait_for(
            "the replica to catch up with its primary",
            deadline,
            || async {
                let p = self.repl_offset().await?;
                let r = replica.repl_offset().await?;
                (p == r).then_some(p)
            },
        )
        .await
    }

    /// Runs one command, panicking with the server's error (test helper).
    pub async fn command(&self, args: &[&str]) -> ::redis::Value {
        let mut c = self.conn().await;
        let mut cmd = ::redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{args:?} on port {}: {e}", self.port))
    }

    /// Promotes this replica to a primary (`REPLICAOF NO ONE`); it keeps
    /// its old primary's replication id as `replid2`, so replicas of the
    /// old primary can continue with `PSYNC` on it.
    pub async fn promote(&self) {
        self.command(&["REPLICAOF", "NO", "ONE"]).await;
        crate::wait_for(
            "role:master after REPLICAOF NO ONE",
            Duration::from_secs(10),
            || async {
                (self.info_field("replication", "role").await.as_deref() == Some("master"))
                    .then_some(())
            },
        )
        .await;
    }

    /// `CLIENT PAUSE <ms> WRITE`: clients' writes wait, and the primary
    /// sends its replicas nothing (not even pings) until
    /// [`Redis::unpause`] or the timeout.
    pub async fn pause_writes(&self, ms: u64) {
        self.command(&["CLIENT", "PAUSE", &ms.to_string(), "WRITE"])
            .await;
    }

    /// `CLIENT UNPAUSE`.
    pub async fn unpause(&self) {
        self.command(&["CLIENT", "UNPAUSE"]).await;
    }

    /// `DEBUG DIGEST-VALUE` of every data key (not dcsync's own `dcsync:`
    /// keys), with whether it has a TTL: the digest depends on the value
    /// only, not on its encoding, so two servers holding the same data give
    /// equal maps. Needs `--enable-debug-command local` (or `yes`).
    ///
    /// Errors: the server's (`DEBUG` not enabled, a lost connection).
    pub async fn digests(
        &self,
    ) -> Result<std::collections::BTreeMap<Vec<u8>, (String, bool)>, ::redis::RedisError> {
        let mut c = self.conn().await;
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) = ::redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await?;
            keys.extend(batch.into_iter().filter(|k| !k.starts_with(b"dcsync:")));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut out = std::collections::BTreeMap::new();
        for chunk in keys.chunks(500) {
            let digests: Vec<String> = ::redis::cmd("DEBUG")
                .arg("DIGEST-VALUE")
                .arg(chunk)
                .query_async(&mut c)
                .await?;
            let mut p = ::redis::pipe();
            for k in chunk {
                p.cmd("PTTL").arg(k);
            }
            let ttls: Vec<i64> = p.query_async(&mut c).await?;
            for ((k, d), t) in chunk.iter().zip(digests).zip(ttls) {
                // -2: the key vanished (expired) between SCAN and here.
                if t != -2 {
                    out.insert(k.clone(), (d, t >= 0));
                }
            }
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
