//! Two `dcsync` agents (DC `a` and DC `b`) over servers the caller owns,
//! each behind a [`Proxy`] standing in for the WAN line into that DC, as in
//! `tests/common/mod.rs`: the topology's `link` is the proxy, `listen` the
//! agent's own port.

use anyhow::{bail, Context, Result};
use dcsync_testkit::proxy::Proxy;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// DC ids, in topology order.
pub const DCS: [&str; 2] = ["a", "b"];

/// Link tuning used by every benchmark: fast redial after a cut (so the
/// replay timer measures the replay, not a 5 s backoff), defaults otherwise.
pub const LINK_TOML: &str =
    "[link]\nheartbeat_ms = 200\ndead_after_ms = 3000\nbackoff_min_ms = 50\nbackoff_max_ms = 500\n";

/// Whether links use mutual TLS (the default; `--plaintext` turns it off).
static TLS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Chooses TLS (true, certificates from `dcsync certs`) or `[tls]
/// plaintext = true` for every cluster started afterwards.
pub fn set_tls(on: bool) {
    let _ = TLS.set(on);
}

/// A free port below the kernel's ephemeral range (32768+ on Linux), so
/// the many client connections of a benchmark (sysbench, pollers) cannot
/// take it between choosing it and the agent binding it.
fn listen_port() -> Result<u16> {
    for i in 0..1000u64 {
        let r = (crate::util::now_us() as u64 ^ (i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
            .wrapping_mul(0x100_0000_01b3);
        let port = 20_000 + (r % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port in 20000-31999")
}

/// One agent with its line.
pub struct Agent {
    /// DC id.
    pub id: &'static str,
    /// The proxy peers dial to reach this DC.
    pub proxy: Proxy,
    /// Agent data dir.
    pub data_dir: PathBuf,
    listen_port: u16,
    child: Option<Child>,
}

/// Two running agents.
pub struct Agents {
    /// DC `a` and DC `b`.
    pub dcs: Vec<Agent>,
    dir: tempfile::TempDir,
}

impl Agents {
    /// Writes a topology with `stores_toml` (one or more `[[store]]`
    /// tables whose `url` maps `a` and `b`) and starts both agents.
    pub async fn start(dcsync: &Path, stores_toml: &str) -> Result<Agents> {
        let dir = tempfile::Builder::new()
            .prefix("dcsync-bench-")
            .tempdir()
            .context("tempdir")?;
        let mut dcs = Vec::new();
        for id in DCS {
            let listen_port = listen_port()?;
            let proxy = Proxy::start(format!("127.0.0.1:{listen_port}")).await;
            dcs.push(Agent {
                id,
                proxy,
                data_dir: dir.path().join(format!("data-{id}")),
                listen_port,
                child: None,
            });
        }
        let mut t = String::from("cluster = \"bench\"\nmode = \"mesh\"\n");
        for d in &dcs {
            t += &format!(
                "[[dc]]\nid = \"{}\"\nlink = \"{}\"\nlisten = \"127.0.0.1:{}\"\n",
                d.id,
                d.proxy.addr(),
                d.listen_port
            );
        }
        t += "[units]\ncount = 64\nowners = { a = \"0-31\", b = \"32-63\" }\n";
        t += stores_toml;
        t += LINK_TOML;
        // Extra `[link]` keys to try settings (e.g. `batch_max_txns = 512`).
        if let Ok(extra) = std::env::var("DCSYNC_BENCH_LINK_EXTRA") {
            t += &extra;
            t.push('\n');
        }
        let tls = *TLS.get_or_init(|| true);
        if tls {
            t += "[tls]\nca = \"certs/ca.crt\"\ncert = \"certs/{dc}.crt\"\nkey = \"certs/{dc}.key\"\n";
        } else {
            t += "[tls]\nplaintext = true\n";
        }
        let topology = dir.path().join("topology.toml");
        std::fs::write(&topology, t).context("write topology")?;
        if tls {
            let out = Command::new(dcsync)
                .arg("certs")
                .arg("--topology")
                .arg(&topology)
                .output()
                .context("dcsync certs")?;
            if !out.status.success() {
                bail!("dcsync certs: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let mut a = Agents { dcs, dir };
        for i in 0..a.dcs.len() {
            let d = &mut a.dcs[i];
            let log = std::fs::File::create(a.dir.path().join(format!("agent-{}.log", d.id)))
                .context("agent log")?;
            let child = Command::new(dcsync)
                .arg("run")
                .arg("--topology")
                .arg(&topology)
                .arg("--dc")
                .arg(d.id)
                .arg("--data-dir")
                .arg(&d.data_dir)
                .env("DCSYNC_LOG", "info")
                .env("NO_COLOR", "1")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("spawn {}", dcsync.display()))?;
            d.child = Some(child);
        }
        Ok(a)
    }

    /// Process ids of the agents.
    pub fn pids(&self) -> Vec<u32> {
        self.dcs
            .iter()
            .filter_map(|d| d.child.as_ref().map(|c| c.id()))
            .collect()
    }

    /// Fails with the log tail if an agent exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for i in 0..self.dcs.len() {
            if let Some(c) = self.dcs[i].child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    bail!(
                        "agent {} exited with {st}:\n{}",
                        self.dcs[i].id,
                        self.log_tail(i, 40)
                    );
                }
            }
        }
        Ok(())
    }

    /// Last `n` lines of agent `i`'s log.
    pub fn log_tail(&self, i: usize, n: usize) -> String {
        let s = std::fs::read_to_string(
            self.dir
                .path()
                .join(format!("agent-{}.log", self.dcs[i].id)),
        )
        .unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for d in &mut self.dcs {
            if let Some(mut c) = d.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
