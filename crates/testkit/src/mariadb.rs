//! A private `mariadbd` for tests: `mariadb-install-db` into a temporary data
//! dir, started on a free loopback port with the binlog on (ROW, FULL row
//! image, FULL row metadata unless overridden), root without a password.
//!
//! Two of them make a DC's primary and its GTID replica
//! ([`MariaDbOptions::gtid_replication`], [`MariaDb::replicate_from`],
//! [`MariaDb::wait_caught_up`], [`MariaDb::promote`]), for primary-switch
//! tests where a [`crate::proxy::Proxy`] plays the VIP.

use mysql_async::prelude::Queryable;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT_SERVER_ID: AtomicU32 = AtomicU32::new(100);

/// Options for [`MariaDb::start_with`].
#[derive(Debug, Clone)]
pub struct MariaDbOptions {
    /// `binlog_format` (default `ROW`).
    pub binlog_format: String,
    /// Durable commits (`innodb_flush_log_at_trx_commit=1`, `sync_binlog=1`);
    /// default false (tests do not need fsync).
    pub durable: bool,
    /// Extra `--option=value` arguments.
    pub extra_args: Vec<String>,
    /// A member of a GTID replication pair: `log_slave_updates=ON` (a
    /// replica logs what it applies, with the original GTIDs, so it can be
    /// promoted and tailed by GTID) and `gtid_strict_mode=ON` (GTIDs of a
    /// domain only ever grow in its binlog). Every server gets its own
    /// `server_id` either way.
    pub gtid_replication: bool,
}

impl Default for MariaDbOptions {
    fn default() -> Self {
        MariaDbOptions {
            binlog_format: "ROW".into(),
            durable: false,
            extra_args: Vec::new(),
            gtid_replication: false,
        }
    }
}

/// A running private MariaDB server; killed and its data dir removed on drop.
pub struct MariaDb {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// `server_id`.
    pub server_id: u32,
    dir: tempfile::TempDir,
    opts: MariaDbOptions,
    child: Option<Child>,
}

fn bin(name: &str, alt: &str) -> String {
    for cand in [name, alt] {
        for d in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
            let p = Path::new(d).join(cand);
            if p.exists() {
                return p.display().to_string();
            }
        }
    }
    name.to_string()
}

/// A data directory made once by `mariadb-install-db` and copied for every
/// server: faster than installing each time, and concurrent installs clash
/// (shared bootstrap temp files). Cached under the system temp dir; built in
/// a private dir and renamed into place so concurrent processes are safe.
fn template() -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let version = Command::new(bin("mariadbd", "mysqld"))
        .arg("--version")
        .output()
        .map(|o| crate::short_hash(&o.stdout))
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("dcsync-mariadb-template-{version:x}"));
    if dir.join("mysql").exists() {
        return dir;
    }
    let build = std::env::temp_dir().join(format!(
        "dcsync-mariadb-template-build-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&build);
    let out = Command::new(bin("mariadb-install-db", "mysql_install_db"))
        .arg("--no-defaults")
        .arg(format!("--datadir={}", build.display()))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .arg("--user=root")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("{}", crate::missing("mariadb-install-db", &e)));
    assert!(
        out.status.success(),
        "mariadb-install-db failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if std::fs::rename(&build, &dir).is_err() {
        // Another process won the race; use theirs.
        let _ = std::fs::remove_dir_all(&build);
    }
    dir
}

impl MariaDb {
    /// Starts a server with default options (ROW binlog).
    pub async fn start() -> MariaDb {
        Self::start_with(MariaDbOptions::default()).await
    }

    /// Starts a server with `opts`; panics with the server log if it does not
    /// come up within 60 s.
    pub async fn start_with(opts: MariaDbOptions) -> MariaDb {
        let dir = tempfile::Builder::new()
            .prefix("dcsync-mariadb-")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        let tpl = template();
        let st = Command::new("cp")
            .arg("-a")
            .arg(&tpl)
            .arg(&data)
            .status()
            .expect("cp");
        assert!(
            st.success(),
            "copying the MariaDB template {} failed",
            tpl.display()
        );
        let mut db = MariaDb {
            port: crate::free_port(),
            server_id: NEXT_SERVER_ID.fetch_add(1, Ordering::Relaxed)
                + std::process::id() % 1000 * 100,
            dir,
            opts,
            child: None,
        };
        db.spawn().await;
        db
    }

    /// The server's process id (`None` once stopped or killed).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    async fn spawn(&mut self) {
        let d = self.dir.path();
        let mut cmd = Command::new(bin("mariadbd", "mysqld"));
        cmd.arg("--no-defaults")
            .arg("--user=root")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", d.join("sock").display()))
            .arg(format!("--pid-file={}", d.join("pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .arg("--log-bin=mysql-bin")
            .arg(format!("--binlog-format={}", self.opts.binlog_format))
            .arg("--binlog-row-image=FULL")
            .arg("--binlog-row-metadata=FULL")
            .arg(format!("--server-id={}", self.server_id))
            .arg("--skip-name-resolve")
            .arg("--innodb-buffer-pool-size=64M")
            .arg("--innodb-log-file-size=64M")
            .arg("--max-connections=200")
            .arg("--character-set-server=utf8mb4")
            .arg("--collation-server=utf8mb4_bin");
        if self.opts.durable {
            cmd.arg("--innodb-flush-log-at-trx-commit=1")
                .arg("--sync-binlog=1");
        } else {
            cmd.arg("--innodb-flush-log-at-trx-commit=2")
                .arg("--sync-binlog=0");
        }
        if self.opts.gtid_replication {
            cmd.arg("--log-slave-updates=ON")
                .arg("--gtid-strict-mode=ON");
        }
        for a in &self.opts.extra_args {
            cmd.arg(a);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}", crate::missing("mariadbd", &e)));
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Ok(mut c) = mysql_async::Conn::from_url(self.url()).await {
                if c.query_drop("SELECT 1").await.is_ok() {
                    let _ = c.disconnect().await;
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("mariadbd exited ({status}):\n{}", self.log());
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!("mariadbd did not start in 60 s:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The server's error log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// `mysql://root@127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// A new connection (utf8mb4). Retries for up to 20 s: on a loaded
    /// 2-core machine a connect can time out while the server is busy
    /// (seen once under a parallel compile); a server that stays
    /// unreachable still fails the test, with the last error.
    pub async fn conn(&self) -> mysql_async::Conn {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            match mysql_async::Conn::from_url(self.url()).await {
                Ok(mut c) => {
                    c.query_drop("SET NAMES utf8mb4").await.expect("set names");
                    return c;
                }
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("connect to {} failed ({e}); retrying", self.url());
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(e) => panic!(
                    "connect to {}: {e}\n--- server error log (tail) ---\n{}",
                    self.url(),
                    crate::cluster::tail(&self.log(), 80)
                ),
            }
        }
    }

    /// Runs SQL statements (separated by `;`) on a fresh connection.
    pub async fn exec(&self, sql: &str) {
        let mut c = self.conn().await;
        c.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = c.disconnect().await;
    }

    /// Runs one query returning a single integer (0 for no row or NULL).
    pub async fn query_i64(&self, sql: &str) -> i64 {
        let mut c = self.conn().await;
        let v: Option<Option<i64>> = c
            .query_first(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = c.disconnect().await;
        v.flatten().unwrap_or(0)
    }

    /// `CHECKSUM TABLE` of `schema.table`; `None` if it does not exist.
    pub async fn checksum(&self, table: &str) -> Option<i64> {
        let mut c = self.conn().await;
        let r: Option<(String, Option<i64>)> = c
            .query_first(format!("CHECKSUM TABLE {table}"))
            .await
            .ok()
            .flatten();
        let _ = c.disconnect().await;
        r.and_then(|(_, v)| v)
    }

    /// Current binlog (file, position) from `SHOW MASTER STATUS`.
    pub async fn binlog_pos(&self) -> (String, u64) {
        let mut c = self.conn().await;
        let row: mysql_async::Row = c
            .query_first("SHOW MASTER STATUS")
            .await
            .expect("show master status")
            .expect("binlog on");
        let _ = c.disconnect().await;
        (row.get(0).expect("file"), row.get(1).expect("pos"))
    }

    /// `@@gtid_binlog_pos`: the last GTID of every domain in the binlog
    /// (`0-101-42`; empty before the first transaction).
    pub async fn gtid_binlog_pos(&self) -> String {
        let mut c = self.conn().await;
        let v: Option<Option<String>> = c
            .query_first("SELECT @@gtid_binlog_pos")
            .await
            .expect("gtid_binlog_pos");
        let _ = c.disconnect().await;
        v.flatten().unwrap_or_default()
    }

    /// Makes this server a GTID replica of `primary` (`CHANGE MASTER TO
    /// ... MASTER_USE_GTID=slave_pos; START SLAVE`). A replica started
    /// empty replays the primary's whole binlog, so it gets every schema
    /// and row written since the primary started. Start both with
    /// [`MariaDbOptions::gtid_replication`].
    pub async fn replicate_from(&self, primary: &MariaDb) {
        self.exec(&format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='root', \
             MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; START SLAVE",
            primary.port
        ))
        .await;
    }

    /// Waits until this replica has applied every transaction `primary`
    /// has logged now (its `@@gtid_binlog_pos`, with `MASTER_GTID_WAIT`),
    /// within `deadline`; panics with the replica's `SHOW SLAVE STATUS`
    /// error otherwise.
    pub async fn wait_caught_up(&self, primary: &MariaDb, deadline: Duration) {
        let pos = primary.gtid_binlog_pos().await;
        self.wait_gtid(&pos, deadline).await;
    }

    /// Waits until this replica has applied up to the GTID position `pos`
    /// (`MASTER_GTID_WAIT`), within `deadline`; panics with the replica's
    /// `SHOW SLAVE STATUS` error otherwise.
    pub async fn wait_gtid(&self, pos: &str, deadline: Duration) {
        let mut c = self.conn().await;
        let r: Option<i64> = c
            .exec_first(
                "SELECT MASTER_GTID_WAIT(?, ?)",
                (pos, deadline.as_secs_f64()),
            )
            .await
            .expect("MASTER_GTID_WAIT");
        if r != Some(0) {
            let st: Option<mysql_async::Row> = c
                .query_first("SHOW SLAVE STATUS")
                .await
                .expect("SHOW SLAVE STATUS");
            let field = |name: &str| -> String {
                st.as_ref()
                    .and_then(|r| {
                        let i = r.columns_ref().iter().position(|c| c.name_str() == name)?;
                        r.get_opt::<String, usize>(i)?.ok()
                    })
                    .unwrap_or_default()
            };
            panic!(
                "replica on port {} did not reach GTID {pos} in {deadline:?} (at {}): IO {} {}, \
                 SQL {} {}",
                self.port,
                field("Gtid_IO_Pos"),
                field("Slave_IO_Running"),
                field("Last_IO_Error"),
                field("Slave_SQL_Running"),
                field("Last_SQL_Error"),
            );
        }
        let _ = c.disconnect().await;
    }

    /// Promotes this replica to a primary: `STOP SLAVE; RESET SLAVE ALL`
    /// and `read_only` off. Its binlog keeps the primary's GTIDs; its own
    /// writes continue the domain's sequence with its own `server_id`.
    pub async fn promote(&self) {
        self.exec("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = OFF")
            .await;
    }

    /// Stops the server cleanly (SIGTERM, wait).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(60) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the server with SIGKILL (crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and data dir.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.kill();
    }
}
