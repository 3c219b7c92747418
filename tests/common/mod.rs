//! Multi-DC harness for end-to-end tests: one private `mariadbd` (and
//! optionally `redis-server`) per simulated DC on free loopback ports, one
//! real `dcsync` agent process per DC, and a controllable TCP proxy in front
//! of every agent's link listener so tests can cut, stall and restore lines.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use dcsync_testkit::mariadb::MariaDb;
use dcsync_testkit::proxy::Proxy;
use dcsync_testkit::redis::Redis;
use mysql_async::prelude::Queryable;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A replicated table the harness uses to see that the agents are up.
const WARMUP_SQL: &str = "CREATE DATABASE IF NOT EXISTS shop;
CREATE TABLE shop.warmup (id INT PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB;";

/// One simulated datacenter.
pub struct Dc {
    /// DC id.
    pub id: String,
    /// Its MariaDB.
    pub db: MariaDb,
    /// Its Redis, if the cluster has one.
    pub redis: Option<Redis>,
    /// Port the agent binds its link listener to.
    pub listen_port: u16,
    /// The proxy peers dial to reach this DC (the "line" into it).
    pub proxy: Proxy,
    /// Agent data dir.
    pub data_dir: PathBuf,
    agent: Option<Child>,
    starts: u32,
}

/// Options of a test cluster.
pub struct ClusterOptions {
    /// DC ids.
    pub dcs: Vec<&'static str>,
    /// SQL run on every DC's MariaDB before the agents start.
    pub schema_sql: String,
    /// Also start a Redis per DC with a `cache` store.
    pub redis: bool,
    /// Extra `[link]` keys.
    pub link_toml: String,
    /// Mutual TLS on the links (certificates made with `dcsync certs`);
    /// false = `[tls] plaintext = true`.
    pub tls: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            dcs: vec!["bj", "sh"],
            schema_sql: String::new(),
            redis: false,
            link_toml: String::new(),
            tls: true,
        }
    }
}

/// A running multi-DC test cluster.
pub struct Cluster {
    /// The DCs, in topology order.
    pub dcs: Vec<Dc>,
    /// The topology file.
    pub topology: PathBuf,
    /// The cluster's temporary directory (topology, certs, logs, data).
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts the servers, applies the schema, writes the topology and starts
    /// one agent per DC.
    pub async fn start(opts: ClusterOptions) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("dcsync-e2e-")
            .tempdir()
            .unwrap();
        let mut dcs = Vec::new();
        for id in &opts.dcs {
            let db = MariaDb::start().await;
            db.exec(WARMUP_SQL).await;
            if !opts.schema_sql.is_empty() {
                db.exec(&opts.schema_sql).await;
            }
            let redis = if opts.redis {
                Some(Redis::start().await)
            } else {
                None
            };
            let listen_port = dcsync_testkit::free_port();
            let proxy = Proxy::start(format!("127.0.0.1:{listen_port}")).await;
            dcs.push(Dc {
                id: id.to_string(),
                db,
                redis,
                listen_port,
                proxy,
                data_dir: dir.path().join(format!("data-{id}")),
                agent: None,
                starts: 0,
            });
        }
        let n = dcs.len() as u32;
        let per = 64 / n;
        let mut t = String::from("cluster = \"e2e\"\nmode = \"mesh\"\n");
        for d in &dcs {
            t += &format!(
                "[[dc]]\nid = \"{}\"\nlink = \"{}\"\nlisten = \"127.0.0.1:{}\"\n",
                d.id,
                d.proxy.addr(),
                d.listen_port
            );
        }
        let owners: Vec<String> = dcs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let lo = i as u32 * per;
                let hi = if i as u32 == n - 1 { 63 } else { lo + per - 1 };
                format!("{} = \"{lo}-{hi}\"", d.id)
            })
            .collect();
        t += &format!(
            "[units]\ncount = 64\nowners = {{ {} }}\n",
            owners.join(", ")
        );
        let urls: Vec<String> = dcs
            .iter()
            .map(|d| format!("{} = \"{}\"", d.id, d.db.url()))
            .collect();
        t += &format!(
            "[[store]]\nname = \"orders\"\nkind = \"mysql\"\ntables = [\"shop.*\"]\nunit_key = \"user_id\"\nurl = {{ {} }}\n",
            urls.join(", ")
        );
        if opts.redis {
            let urls: Vec<String> = dcs
                .iter()
                .map(|d| format!("{} = \"{}\"", d.id, d.redis.as_ref().unwrap().url()))
                .collect();
            t += &format!(
                "[[store]]\nname = \"cache\"\nkind = \"redis\"\nurl = {{ {} }}\n",
                urls.join(", ")
            );
        }
        t += "[link]\nheartbeat_ms = 200\ndead_after_ms = 3000\nbackoff_min_ms = 50\nbackoff_max_ms = 1000\n";
        t += &opts.link_toml;
        if opts.tls {
            t += "[tls]\nca = \"certs/ca.crt\"\ncert = \"certs/{dc}.crt\"\nkey = \"certs/{dc}.key\"\n";
        } else {
            t += "[tls]\nplaintext = true\n";
        }
        let topology = dir.path().join("topology.toml");
        std::fs::write(&topology, t).unwrap();
        if opts.tls {
            let out = Command::new(env!("CARGO_BIN_EXE_dcsync"))
                .arg("certs")
                .arg("--topology")
                .arg(&topology)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "dcsync certs: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut c = Cluster { dcs, topology, dir };
        for i in 0..c.dcs.len() {
            c.start_agent(i);
        }
        c.wait_ready().await;
        c
    }

    /// Waits until every agent ships and applies: on a first start a source
    /// begins at the binlog position current when it connects, so rows
    /// written before that are (by design) not copied. Each DC bumps its own
    /// row of `shop.warmup` until every DC holds the same rows.
    pub async fn wait_ready(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            self.assert_agents_alive();
            for (i, d) in self.dcs.iter().enumerate() {
                d.db.exec(&format!(
                    "INSERT INTO shop.warmup VALUES ({i}, 1) ON DUPLICATE KEY UPDATE n = n + 1"
                ))
                .await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut sums = Vec::new();
            for d in &self.dcs {
                let rows = query_i64(&d.db, "SELECT COUNT(*) FROM shop.warmup").await;
                sums.push((rows, d.db.checksum("shop.warmup").await));
            }
            if sums
                .iter()
                .all(|s| s.0 == self.dcs.len() as i64 && *s == sums[0])
            {
                return;
            }
            if std::time::Instant::now() > deadline {
                for i in 0..self.dcs.len() {
                    eprintln!(
                        "==== agent {} log ====\n{}",
                        self.dcs[i].id,
                        tail(&self.agent_log(i), 60)
                    );
                }
                panic!("agents not ready within 60 s: {sums:?}");
            }
        }
    }

    /// Starts (or restarts) the agent of DC `i`; its log is appended to
    /// `agent-<id>.log` in the cluster dir.
    pub fn start_agent(&mut self, i: usize) {
        let d = &mut self.dcs[i];
        assert!(d.agent.is_none(), "agent {} already running", d.id);
        d.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("agent-{}.log", d.id)))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_dcsync"))
            .arg("run")
            .arg("--topology")
            .arg(&self.topology)
            .arg("--dc")
            .arg(&d.id)
            .arg("--data-dir")
            .arg(&d.data_dir)
            .env("DCSYNC_LOG", "info,dcsync_link=debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        d.agent = Some(child);
    }

    /// Kills the agent of DC `i` with SIGKILL.
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut c) = self.dcs[i].agent.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Resident memory of DC `i`'s agent process, KiB (VmRSS).
    pub fn agent_rss_kib(&self, i: usize) -> Option<u64> {
        let pid = self.dcs[i].agent.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }

    /// The agent log of DC `i`.
    pub fn agent_log(&self, i: usize) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join(format!("agent-{}.log", self.dcs[i].id)),
        )
        .unwrap_or_default()
    }

    /// Panics with every agent's log tail if an agent process exited.
    pub fn assert_agents_alive(&mut self) {
        for i in 0..self.dcs.len() {
            if let Some(c) = self.dcs[i].agent.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!(
                        "agent {} exited with {st}:\n{}",
                        self.dcs[i].id,
                        self.agent_log(i)
                    );
                }
            }
        }
    }

    /// `dcsync status --dc <id> --data-dir <dir>` output.
    pub fn status(&self, i: usize, json: bool) -> String {
        let d = &self.dcs[i];
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dcsync"));
        cmd.arg("status")
            .arg("--dc")
            .arg(&d.id)
            .arg("--data-dir")
            .arg(&d.data_dir);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Waits until `CHECKSUM TABLE` of every table in `tables` is equal in
    /// all DCs (deadline `secs`); dumps agent logs on timeout.
    pub async fn wait_converged(&mut self, tables: &[&str], secs: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            self.assert_agents_alive();
            let mut all_equal = true;
            for t in tables {
                let mut sums = Vec::new();
                for d in &self.dcs {
                    sums.push(d.db.checksum(t).await);
                }
                if sums.windows(2).any(|w| w[0] != w[1]) {
                    all_equal = false;
                    if std::time::Instant::now() > deadline {
                        eprintln!("{t}: checksums differ: {sums:?}");
                    }
                }
            }
            if all_equal {
                return;
            }
            if std::time::Instant::now() > deadline {
                for i in 0..self.dcs.len() {
                    eprintln!(
                        "==== agent {} log ====\n{}",
                        self.dcs[i].id,
                        tail(&self.agent_log(i), 60)
                    );
                    eprintln!(
                        "==== agent {} status ====\n{}",
                        self.dcs[i].id,
                        self.status(i, false)
                    );
                }
                panic!("DCs did not converge on {tables:?} within {secs} s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.dcs.len() {
            self.kill_agent(i);
        }
    }
}

/// Last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs one query returning a single integer.
pub async fn query_i64(db: &MariaDb, sql: &str) -> i64 {
    let mut c = db.conn().await;
    let v: Option<i64> = c
        .query_first(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = c.disconnect().await;
    v.unwrap_or(0)
}
