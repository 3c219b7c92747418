//! Multi-DC clusters of real `dcsync` agent processes, shared by the
//! end-to-end tests (`tests/`) and the benchmarks (`bench/`).
//!
//! - [`Agents`]: one agent process per DC, each behind a [`Proxy`] that
//!   stands in for the WAN line into that DC (the topology's `link` is the
//!   proxy, `listen` the agent's own port), so a caller can cut, stall,
//!   delay and restore lines. It writes the topology (mesh, units split
//!   evenly, the caller's stores), makes certificates with `dcsync certs`
//!   and starts, kills and restarts agents. The caller owns the servers.
//! - [`Cluster`]: the end-to-end tests' cluster: a private `mariadbd` (and
//!   optionally `redis-server`) per DC plus [`Agents`], a readiness wait
//!   that writes nothing (the agents' status), convergence waits, and the
//!   no-echo check on the sources' counters.
//! - [`Status`]: an agent's `status.json`, read as plain JSON (no dependency
//!   on the agent's types).
//!
//! The agent binary is a parameter: tests pass
//! `env!("CARGO_BIN_EXE_dcsync")`, the benchmark finds its own.

use crate::mariadb::MariaDb;
use crate::proxy::Proxy;
use crate::redis::Redis;
pub use crate::status::{Backlog, SourceStatus, Status};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[path = "cluster_routing.rs"]
mod routing;

/// `[link]` keys of every harness topology: heartbeats every 200 ms, a
/// stalled line noticed after 3 s, redials from 50 ms on (add
/// `backoff_max_ms` and any other keys after these).
pub const LINK_BASE: &str = "heartbeat_ms = 200\ndead_after_ms = 3000\nbackoff_min_ms = 50\n";

/// What [`Agents::start`] builds.
#[derive(Debug, Clone)]
pub struct AgentsOptions {
    /// The `dcsync` binary.
    pub dcsync: PathBuf,
    /// Cluster name in the topology (and in the certificates).
    pub cluster: String,
    /// DC ids, in topology order.
    pub dcs: Vec<String>,
    /// One or more `[[store]]` tables whose `url` maps every DC id.
    pub stores_toml: String,
    /// Keys of the `[link]` section (start from [`LINK_BASE`]).
    pub link_toml: String,
    /// Mutual TLS on the links (certificates made with `dcsync certs`);
    /// false = `[tls] plaintext = true`.
    pub tls: bool,
    /// `DCSYNC_LOG` of the agents (the environment's `DCSYNC_TEST_LOG`,
    /// when set, takes its place).
    pub log_filter: String,
    /// Prefix of the temporary directory (topology, certs, logs, data).
    pub dir_prefix: String,
    /// Top-level routing keys (`mode = "star"\nhub = "bj"\n`); empty: a
    /// mesh.
    pub mode_toml: String,
}

/// One DC's agent and the line into it.
pub struct Agent {
    /// DC id.
    pub id: String,
    /// The proxy peers dial to reach this DC (the "line" into it).
    pub proxy: Proxy,
    /// Port the agent binds its link listener to.
    pub listen_port: u16,
    /// Agent data dir (journal, `status.json`).
    pub data_dir: PathBuf,
    /// Port of the agent's admin endpoint (`/metrics`, `/status`).
    pub admin_port: u16,
    /// Extra environment of the agent process, applied from its next
    /// [`Agents::start_agent`] on (`DCSYNC_CLOCK_SKEW_MS`).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

/// An agent process that exited while it should have been running.
#[derive(Debug)]
pub struct AgentExited {
    /// DC id.
    pub dc: String,
    /// How it exited.
    pub status: ExitStatus,
    /// The end of its log.
    pub log_tail: String,
}

impl std::fmt::Display for AgentExited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "agent {} exited with {}:\n{}",
            self.dc, self.status, self.log_tail
        )
    }
}

impl std::error::Error for AgentExited {}

/// Running agents, one per DC; killed on drop.
pub struct Agents {
    /// The agents, in topology order.
    pub dcs: Vec<Agent>,
    /// The topology file.
    pub topology: PathBuf,
    /// The temporary directory (topology, `certs/`, agent logs and data).
    pub dir: tempfile::TempDir,
    dcsync: PathBuf,
    log_filter: String,
}

/// `units` split into `n` contiguous owner ranges, as `[units]` TOML.
fn units_toml(ids: &[String], count: u32) -> String {
    let n = ids.len() as u32;
    let per = count / n;
    let owners: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let lo = i as u32 * per;
            let hi = if i as u32 == n - 1 {
                count - 1
            } else {
                lo + per - 1
            };
            format!("{id} = \"{lo}-{hi}\"")
        })
        .collect();
    format!(
        "[units]\ncount = {count}\nowners = {{ {} }}\n",
        owners.join(", ")
    )
}

impl Agents {
    /// Writes the topology, makes certificates if `tls`, and starts one
    /// agent per DC. Panics on setup failure (test harness).
    pub async fn start(o: AgentsOptions) -> Agents {
        let dir = tempfile::Builder::new()
            .prefix(&o.dir_prefix)
            .tempdir()
            .expect("tempdir");
        let mut dcs = Vec::new();
        for id in &o.dcs {
            let listen_port = crate::listen_port();
            let proxy = Proxy::start(format!("127.0.0.1:{listen_port}")).await;
            dcs.push(Agent {
                id: id.clone(),
                proxy,
                listen_port,
                data_dir: dir.path().join(format!("data-{id}")),
                admin_port: crate::listen_port(),
                env: Vec::new(),
                child: None,
            });
        }
        let mode = if o.mode_toml.is_empty() {
            "mode = \"mesh\"\n".to_string()
        } else {
            o.mode_toml.clone()
        };
        let mut t = format!("cluster = \"{}\"\n{mode}", o.cluster);
        for d in &dcs {
            t += &format!(
                "[[dc]]\nid = \"{}\"\nlink = \"{}\"\nlisten = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{}\"\n",
                d.id,
                d.proxy.addr(),
                d.listen_port,
                d.admin_port
            );
        }
        t += &units_toml(&o.dcs, 64);
        t += &o.stores_toml;
        t += "[link]\n";
        t += &o.link_toml;
        if o.tls {
            t += "[tls]\nca = \"certs/ca.crt\"\ncert = \"certs/{dc}.crt\"\nkey = \"certs/{dc}.key\"\n";
        } else {
            t += "[tls]\nplaintext = true\n";
        }
        let topology = dir.path().join("topology.toml");
        std::fs::write(&topology, t).expect("write topology");
        if o.tls {
            let out = Command::new(&o.dcsync)
                .arg("certs")
                .arg("--topology")
                .arg(&topology)
                .output()
                .unwrap_or_else(|e| panic!("run {} certs: {e}", o.dcsync.display()));
            assert!(
                out.status.success(),
                "dcsync certs: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut a = Agents {
            dcs,
            topology,
            dir,
            dcsync: o.dcsync,
            // `DCSYNC_TEST_LOG` overrides the filter for one run (chasing a
            // failure: `DCSYNC_TEST_LOG=info,dcsync_mysql=debug`).
            log_filter: std::env::var("DCSYNC_TEST_LOG").unwrap_or(o.log_filter),
        };
        for i in 0..a.dcs.len() {
            a.start_agent(i);
        }
        a
    }

    /// `GET path` on the admin endpoint of DC `i`: the response body, or
    /// an error naming what failed (connect, status line).
    pub fn admin_get(&self, i: usize, path: &str) -> Result<String, String> {
        use std::io::{Read, Write};
        let addr = format!("127.0.0.1:{}", self.dcs[i].admin_port);
        let mut s = std::net::TcpStream::connect(&addr).map_err(|e| format!("{addr}: {e}"))?;
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(10)));
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| format!("{addr}: {e}"))?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)
            .map_err(|e| format!("{addr}: {e}"))?;
        let resp = String::from_utf8_lossy(&resp).to_string();
        let (head, body) = resp
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("{addr}{path}: no HTTP header in {resp:?}"))?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!(
                "{addr}{path}: {}",
                head.lines().next().unwrap_or("")
            ));
        }
        Ok(body.to_string())
    }

    /// Starts (or restarts) the agent of DC `i`; its log is appended to
    /// `agent-<id>.log` in the cluster dir.
    pub fn start_agent(&mut self, i: usize) {
        let log_path = self.log_path(i);
        let d = &mut self.dcs[i];
        assert!(d.child.is_none(), "agent {} already running", d.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .expect("agent log");
        let child = Command::new(&self.dcsync)
            .arg("run")
            .arg("--topology")
            .arg(&self.topology)
            .arg("--dc")
            .arg(&d.id)
            .arg("--data-dir")
            .arg(&d.data_dir)
            .env("DCSYNC_LOG", &self.log_filter)
            .env("NO_COLOR", "1")
            .envs(d.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.dcsync.display()));
        d.child = Some(child);
    }

    /// Starts a second agent for DC `i` with its own data directory
    /// `data_dir` (a standby on another host), logging to `log`; the caller
    /// owns (and kills) the process.
    pub fn spawn_standby(&self, i: usize, data_dir: &Path, log: &Path) -> Child {
        let d = &self.dcs[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("standby log");
        Command::new(&self.dcsync)
            .arg("run")
            .arg("--topology")
            .arg(&self.topology)
            .arg("--dc")
            .arg(&d.id)
            .arg("--data-dir")
            .arg(data_dir)
            .env("DCSYNC_LOG", &self.log_filter)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.dcsync.display()))
    }

    /// Kills the agent of DC `i` with SIGKILL.
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut c) = self.dcs[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether DC `i`'s agent process has exited (by itself: a crash, an
    /// injected crash point); false if it runs or was never started.
    pub fn exited(&mut self, i: usize) -> bool {
        self.dcs[i]
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Process ids of the running agents, in DC order.
    pub fn pids(&self) -> Vec<u32> {
        self.dcs
            .iter()
            .filter_map(|d| d.child.as_ref().map(|c| c.id()))
            .collect()
    }

    /// Resident memory of DC `i`'s agent process, KiB (VmRSS).
    pub fn rss_kib(&self, i: usize) -> Option<u64> {
        self.proc_status_kib(i, "VmRSS:")
    }

    /// Peak resident memory of DC `i`'s agent process since it started,
    /// KiB (VmHWM).
    pub fn peak_rss_kib(&self, i: usize) -> Option<u64> {
        self.proc_status_kib(i, "VmHWM:")
    }

    fn proc_status_kib(&self, i: usize, key: &str) -> Option<u64> {
        let pid = self.dcs[i].child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("agent-{}.log", self.dcs[i].id))
    }

    /// The agent log of DC `i` (all its runs).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    /// The last `n` lines of DC `i`'s agent log.
    pub fn log_tail(&self, i: usize, n: usize) -> String {
        tail(&self.log(i), n)
    }

    /// Fails with the log tail if an agent process exited.
    pub fn check_alive(&mut self) -> Result<(), AgentExited> {
        for i in 0..self.dcs.len() {
            if let Some(c) = self.dcs[i].child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(AgentExited {
                        dc: self.dcs[i].id.clone(),
                        status,
                        log_tail: self.log_tail(i, 60),
                    });
                }
            }
        }
        Ok(())
    }

    /// Panics with the log tail if an agent process exited.
    pub fn assert_alive(&mut self) {
        if let Err(e) = self.check_alive() {
            panic!("{e}");
        }
    }

    /// `dcsync status --dc <id> --data-dir <dir> [--json]` output.
    pub fn status_text(&self, i: usize, json: bool) -> String {
        let d = &self.dcs[i];
        let mut cmd = Command::new(&self.dcsync);
        cmd.arg("status")
            .arg("--dc")
            .arg(&d.id)
            .arg("--data-dir")
            .arg(&d.data_dir);
        if json {
            cmd.arg("--json");
        }
        match cmd.output() {
            Ok(out) => String::from_utf8_lossy(&out.stdout).to_string(),
            Err(e) => format!("dcsync status: {e}"),
        }
    }

    /// DC `i`'s `status.json`, if written yet.
    pub fn status(&self, i: usize) -> Option<Status> {
        Status::read(&self.dcs[i].data_dir)
    }

    /// Prints every agent's log tail and status (for a failing test).
    pub fn dump(&self) {
        for i in 0..self.dcs.len() {
            eprintln!(
                "==== agent {} log ====\n{}\n==== agent {} status ====\n{}",
                self.dcs[i].id,
                self.log_tail(i, 60),
                self.dcs[i].id,
                self.status_text(i, false)
            );
        }
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for i in 0..self.dcs.len() {
            self.kill_agent(i);
        }
        let logs: Vec<(String, PathBuf)> = (0..self.dcs.len())
            .map(|i| (self.dcs[i].id.clone(), self.log_path(i)))
            .collect();
        crate::keep_logs(&logs);
    }
}

/// Last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

use dcsync_core::now_ms;

/// The schema the [`MYSQL_STORE`] replicates (`tables = ["shop.*"]`):
/// created in every DC, as a source refuses a pattern that matches no
/// schema.
const SCHEMA_SQL: &str = "CREATE DATABASE IF NOT EXISTS shop";

/// The MySQL store of a [`Cluster`]: every table of schema `shop`.
pub const MYSQL_STORE: &str = "orders";
/// The Redis store of a [`Cluster`] with `redis: true`.
pub const REDIS_STORE: &str = "cache";

/// Options of an end-to-end [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The `dcsync` binary.
    pub dcsync: PathBuf,
    /// DC ids.
    pub dcs: Vec<&'static str>,
    /// SQL run on every DC's MariaDB before the agents start.
    pub schema_sql: String,
    /// Per DC (by index), SQL run on its MariaDB after `schema_sql`, before
    /// the agents start: rows that only that DC holds.
    pub seed_sql: Vec<String>,
    /// Wait for the agents to ship and apply before returning (default);
    /// `false` returns as soon as they are started (no echo baseline).
    pub wait_ready: bool,
    /// Extra keys of the [`MYSQL_STORE`] store, a line each
    /// (`units_by_table = { "shop.audit" = 40 }\n`).
    pub mysql_store_toml: String,
    /// Also start a Redis per DC with a [`REDIS_STORE`] store.
    pub redis: bool,
    /// Extra keys of the [`REDIS_STORE`] store, a line each
    /// (`conflict = "lww"\n`).
    pub redis_store_toml: String,
    /// Extra `[link]` keys.
    pub link_toml: String,
    /// Mutual TLS on the links; false = `[tls] plaintext = true`.
    pub tls: bool,
    /// Extra `mariadbd` options of every DC's server
    /// (`--max-allowed-packet=256M`).
    pub db_args: Vec<String>,
    /// `[link] dead_after_ms` (default 3000: outages are detected fast).
    pub dead_after_ms: u64,
    /// Every DC's agent reaches its MariaDB through a [`Proxy`] standing in
    /// for the DC's VIP ([`Dc::vip`]), and the servers are started with
    /// [`crate::mariadb::MariaDbOptions::gtid_replication`], so a test can
    /// give a DC's primary a GTID replica, promote it and move the VIP
    /// ([`Proxy::set_target`]) to switch the DC's primary.
    pub mysql_vip: bool,
    /// A star with this DC as its hub; `None`: a mesh.
    pub hub: Option<&'static str>,
}

impl ClusterOptions {
    /// Two DCs `bj` and `sh`, MariaDB only, TLS, agents from `dcsync`.
    pub fn new(dcsync: impl Into<PathBuf>) -> ClusterOptions {
        ClusterOptions {
            dcsync: dcsync.into(),
            dcs: vec!["bj", "sh"],
            schema_sql: String::new(),
            seed_sql: Vec::new(),
            wait_ready: true,
            mysql_store_toml: String::new(),
            redis: false,
            redis_store_toml: String::new(),
            link_toml: String::new(),
            tls: true,
            db_args: Vec::new(),
            dead_after_ms: 3000,
            mysql_vip: false,
            hub: None,
        }
    }
}

/// One simulated datacenter's stores.
pub struct Dc {
    /// DC id.
    pub id: String,
    /// Its MariaDB ([`MYSQL_STORE`]).
    pub db: MariaDb,
    /// Its Redis ([`REDIS_STORE`]), if the cluster has one.
    pub redis: Option<Redis>,
    /// The proxy in front of `db` that the agent's store URL names, if the
    /// cluster was started with [`ClusterOptions::mysql_vip`]. A test that
    /// switches the primary points it at the new server and puts that
    /// server in `db`.
    pub vip: Option<Proxy>,
}

impl Dc {
    /// The URL clients of this DC's MySQL store use: the VIP's if it has
    /// one, else the server's. The VIP's has `prefer_socket=false`:
    /// `mysql_async` otherwise reconnects to a 127.0.0.1 server through the
    /// Unix socket the server names (`@@socket`), past the proxy, and a
    /// moved VIP would not move the connection.
    pub fn mysql_url(&self) -> String {
        match &self.vip {
            Some(v) => format!("mysql://root@{}?prefer_socket=false", v.addr()),
            None => self.db.url(),
        }
    }
}

/// The counters of one store's source at every DC, as of a moment when
/// everything was shipped, applied and read back (see
/// [`Cluster::settled_sources`]).
pub type Counters = Vec<SourceStatus>;

/// A running multi-DC end-to-end cluster.
pub struct Cluster {
    /// The agents and their lines (declared first: dropped, i.e. killed,
    /// before the servers).
    pub agents: Agents,
    /// The DCs' stores, in topology order.
    pub dcs: Vec<Dc>,
    /// Source counters per store once [`Cluster::start`] found the agents
    /// ready and settled.
    baseline: BTreeMap<&'static str, Counters>,
}

impl Cluster {
    /// Starts the servers, applies the schema, writes the topology, starts
    /// one agent per DC, waits until they ship and apply, and records the
    /// sources' counters as the baseline of [`Cluster::assert_no_echo`].
    pub async fn start(opts: ClusterOptions) -> Cluster {
        let mut dcs = Vec::new();
        for id in &opts.dcs {
            let db = MariaDb::start_with(crate::mariadb::MariaDbOptions {
                extra_args: opts.db_args.clone(),
                gtid_replication: opts.mysql_vip,
                ..Default::default()
            })
            .await;
            let vip = if opts.mysql_vip {
                Some(Proxy::start(format!("127.0.0.1:{}", db.port)).await)
            } else {
                None
            };
            db.exec(SCHEMA_SQL).await;
            if !opts.schema_sql.is_empty() {
                db.exec(&opts.schema_sql).await;
            }
            if let Some(sql) = opts.seed_sql.get(dcs.len()).filter(|s| !s.is_empty()) {
                db.exec(sql).await;
            }
            let redis = if opts.redis {
                Some(Redis::start_with(vec!["--enable-debug-command".into(), "local".into()]).await)
            } else {
                None
            };
            dcs.push(Dc {
                id: id.to_string(),
                db,
                redis,
                vip,
            });
        }
        let urls = |url: &dyn Fn(&Dc) -> String| -> String {
            let u: Vec<String> = dcs
                .iter()
                .map(|d| format!("{} = \"{}\"", d.id, url(d)))
                .collect();
            u.join(", ")
        };
        // `initial = "none"` unless a test asks for a snapshot: the
        // scenarios seed the same rows in every DC (`schema_sql`) and count
        // exactly what each source journals; a snapshot would re-ship
        // those identical rows from every DC as local transactions.
        let initial = if opts.mysql_store_toml.contains("initial") {
            ""
        } else {
            "initial = \"none\"\n"
        };
        let mut stores = format!(
            "[[store]]\nname = \"{MYSQL_STORE}\"\nkind = \"mysql\"\ntables = [\"shop.*\"]\nunit_key = \"user_id\"\n{initial}{}url = {{ {} }}\n",
            opts.mysql_store_toml,
            urls(&Dc::mysql_url)
        );
        if opts.redis {
            stores += &format!(
                "[[store]]\nname = \"{REDIS_STORE}\"\nkind = \"redis\"\n{}url = {{ {} }}\n",
                opts.redis_store_toml,
                urls(&|d| d.redis.as_ref().map(Redis::url).unwrap_or_default())
            );
        }
        let agents = Agents::start(AgentsOptions {
            dcsync: opts.dcsync,
            cluster: "e2e".into(),
            dcs: opts.dcs.iter().map(|s| s.to_string()).collect(),
            stores_toml: stores,
            link_toml: format!(
                "{}backoff_max_ms = 1000\n{}",
                LINK_BASE.replace(
                    "dead_after_ms = 3000",
                    &format!("dead_after_ms = {}", opts.dead_after_ms)
                ),
                opts.link_toml
            ),
            tls: opts.tls,
            log_filter: "info,dcsync_link=debug".into(),
            dir_prefix: "dcsync-e2e-".into(),
            mode_toml: opts
                .hub
                .map(|h| format!("mode = \"star\"\nhub = \"{h}\"\n"))
                .unwrap_or_default(),
        })
        .await;
        let mut c = Cluster {
            agents,
            dcs,
            baseline: BTreeMap::new(),
        };
        if !opts.wait_ready {
            return c;
        }
        c.wait_ready().await;
        for store in c.stores() {
            let counters = c.settled_sources(store, 60).await;
            c.baseline.insert(store, counters);
        }
        c
    }

    /// The cluster's stores.
    pub fn stores(&self) -> Vec<&'static str> {
        let mut v = vec![MYSQL_STORE];
        if self.dcs.iter().any(|d| d.redis.is_some()) {
            v.push(REDIS_STORE);
        }
        v
    }

    /// Waits (writing nothing) until every agent is ready to replicate, as
    /// its status tells: every source of every store is tailing its store
    /// (its position journaled, the initial copy if any done: on a first
    /// start with `initial = "none"` a source begins at the binlog position
    /// current when it connects, so a row written before that would by
    /// design not be shipped; a Redis source has finished its full sync),
    /// and every link to every peer is connected (handshake done: the
    /// peer's receiver answers and the streams settle).
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.agents.assert_alive();
            let mut why = Vec::new();
            for i in 0..self.dcs.len() {
                let id = &self.dcs[i].id;
                let Some(st) = self.agents.status(i) else {
                    why.push(format!("{id}: no status.json yet"));
                    continue;
                };
                for store in self.stores() {
                    let src = st.source(store).unwrap_or_default();
                    if src.state != "running"
                        || src.copying
                        || Self::position_end(store, &src.position).is_none()
                    {
                        why.push(format!("{id}: source of {store} not tailing yet: {src:?}"));
                    }
                }
                let up = st.connected_peers();
                // In a star two spokes have no line between them.
                let hub = st.0["routing"]["hub"].as_str().map(str::to_string);
                let linked = |peer: &str| match &hub {
                    None => true,
                    Some(h) => h == id || h == peer,
                };
                for peer in self.dcs.iter().filter(|d| &d.id != id && linked(&d.id)) {
                    if !up.contains(&peer.id) {
                        why.push(format!("{id}: link to {} not connected", peer.id));
                    }
                }
            }
            if why.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                self.agents.dump();
                panic!("agents not ready within 60 s:\n{}", why.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `CHECKSUM TABLE` of every table in `tables` is equal in
    /// all DCs (deadline `secs`); dumps agent logs on timeout.
    pub async fn wait_converged(&mut self, tables: &[&str], secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            self.agents.assert_alive();
            let mut differ = Vec::new();
            for t in tables {
                let mut sums = Vec::new();
                for d in &self.dcs {
                    sums.push(d.db.checksum(t).await);
                }
                if sums.windows(2).any(|w| w[0] != w[1]) {
                    differ.push(format!("{t}: checksums differ: {sums:?}"));
                }
            }
            if differ.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                self.agents.dump();
                panic!(
                    "DCs did not converge on {tables:?} within {secs} s:\n{}",
                    differ.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Where `store`'s data ends at DC `i` now, in the form its source
    /// reports positions: MariaDB `file:pos`, Redis `master_repl_offset`.
    async fn store_end(&self, store: &str, i: usize) -> String {
        let d = &self.dcs[i];
        if store == REDIS_STORE {
            let r = d.redis.as_ref().expect("cluster without redis");
            r.info_field("replication", "master_repl_offset")
                .await
                .unwrap_or_default()
        } else {
            let (file, pos) = d.db.binlog_pos().await;
            format!("{file}:{pos}")
        }
    }

    /// The `store_end` part of a source position: MariaDB positions read
    /// `mysql-bin.000001:4711 gtid=...`, Redis ones `redis <replid> offset
    /// <n>` (with a suffix while a full sync is in progress).
    fn position_end(store: &str, position: &str) -> Option<String> {
        let mut words = position.split_whitespace();
        if store == REDIS_STORE {
            match (words.next(), words.next(), words.next(), words.next()) {
                (Some("redis"), Some(_), Some("offset"), Some(n)) if words.next().is_none() => {
                    Some(n.to_string())
                }
                _ => None,
            }
        } else {
            words.next().map(str::to_string)
        }
    }

    /// DC `i`'s status as written after `since` (ms since the epoch); the
    /// agent rewrites it every second.
    async fn fresh_status(&self, i: usize, since: u64) -> Option<Status> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(st) = self.agents.status(i).filter(|s| s.written_ms() > since) {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (deadline `secs`) until, in one status snapshot per DC written
    /// after the stores' ends were read, every link has every journaled
    /// transaction of `store` acknowledged (so applied at the peer) and
    /// every DC's source of `store` has read its store to the end (so has
    /// classified every transaction there, the applied ones included, as
    /// local or echo). Returns the sources' counters at that moment. Call
    /// it only while nothing writes to the stores.
    pub async fn settled_sources(&mut self, store: &str, secs: u64) -> Counters {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            self.agents.assert_alive();
            let since = now_ms();
            let mut ends = Vec::new();
            for i in 0..self.dcs.len() {
                ends.push(self.store_end(store, i).await);
            }
            let mut why = Vec::new();
            let mut counters = Vec::new();
            for (i, end) in ends.iter().enumerate() {
                let id = &self.dcs[i].id;
                let Some(st) = self.fresh_status(i, since).await else {
                    why.push(format!("{id}: status.json not rewritten within 5 s"));
                    continue;
                };
                for (peer, b) in st.backlogs(store) {
                    if b.acked_seq != b.last_seq {
                        why.push(format!("{id}: {peer} acked {store} up to {b:?}"));
                    }
                }
                let src = st.source(store).unwrap_or_default();
                if Self::position_end(store, &src.position).as_ref() != Some(end) {
                    why.push(format!(
                        "{id}: source of {store} at {:?}, store ends at {end}",
                        src.position
                    ));
                }
                counters.push(src);
            }
            if why.is_empty() {
                return counters;
            }
            if Instant::now() > deadline {
                self.agents.dump();
                panic!("{store} not settled within {secs} s:\n{}", why.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Checks by counters that nothing echoed: `written[i]` is the number of
    /// transactions the test wrote to `store` in DC `i` since
    /// [`Cluster::start`] (transactions that changed something; a statement
    /// that changed nothing leaves no transaction in the store's log). The
    /// agents must not have been restarted (the counters are per process).
    ///
    /// Once [`Cluster::settled_sources`] holds:
    /// - every DC's source journaled exactly `written[i]` local
    ///   transactions: a transaction that dcsync applied there and that the
    ///   source failed to recognise would have been journaled as local too;
    /// - a DC that applied transactions from its peers saw at least one of
    ///   the sink's commits as an echo, and one that applied none saw none.
    ///   The echo count is not the number of applied transactions: the sink
    ///   commits groups of consecutive transactions (up to
    ///   `apply_group_txns`), and the MySQL sink one commit per
    ///   `apply_parallel` partition per group, so the count depends on
    ///   timing.
    pub async fn assert_no_echo(&mut self, store: &str, written: &[u64]) {
        assert_eq!(written.len(), self.dcs.len(), "one count per DC");
        let now = self.settled_sources(store, 120).await;
        let base = self.baseline.get(store).cloned().unwrap_or_default();
        let total: u64 = written.iter().sum();
        for (i, d) in self.dcs.iter().enumerate() {
            let b = base.get(i).cloned().unwrap_or_default();
            let local = now[i].local_txns - b.local_txns;
            let echo = now[i].echo_txns - b.echo_txns;
            assert_eq!(
                local, written[i],
                "{}: the source of {store} journaled {local} local transactions, the test wrote {} \
                 (more means applied transactions came back as local: an echo)",
                d.id, written[i]
            );
            let applied = total - written[i];
            if applied > 0 {
                assert!(
                    echo > 0,
                    "{}: {applied} transactions of {store} applied from peers, no echo seen",
                    d.id
                );
            } else {
                assert_eq!(echo, 0, "{}: echoes of {store} with nothing applied", d.id);
            }
        }
    }
}
