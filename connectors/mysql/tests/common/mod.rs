//! Shared helpers for the MySQL connector tests: a store config, a source
//! run by hand with channels, and event collection with deadlines.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use dcsync_core::connector::{
    ConnectorError, Position, Registry, Source, SourceContext, SourceEvent,
};
use dcsync_core::topology::{StoreConfig, Units};
use dcsync_core::{Change, Hlc, Topology, Transaction};
use dcsync_mysql::{MysqlOptions, MysqlSource};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub const DEADLINE: Duration = Duration::from_secs(30);

/// A store replicating `tables` (empty = all), and the unit table.
pub fn store(tables: &[&str], unit_key: Option<&str>) -> (StoreConfig, Units) {
    let tables: Vec<String> = tables.iter().map(|t| format!("{t:?}")).collect();
    let unit = unit_key
        .map(|k| format!("unit_key = {k:?}\n"))
        .unwrap_or_default();
    let text = format!(
        r#"
cluster = "t"
mode = "mesh"
[[dc]]
id = "bj"
link = "127.0.0.1:1"
[[dc]]
id = "sh"
link = "127.0.0.1:2"
[units]
count = 8
owners = {{ bj = "0-3", sh = "4-7" }}
[[store]]
name = "orders"
kind = "mysql"
tables = [{}]
initial = "none"
{unit}url = {{ bj = "mysql://root@127.0.0.1:1", sh = "mysql://root@127.0.0.1:2" }}
"#,
        tables.join(",")
    );
    let t = Topology::parse(&text, &REGISTRY).expect("topology");
    (t.stores[0].clone(), t.units)
}

/// The registry the test topologies are parsed with.
pub static REGISTRY: Registry = Registry::new(&[&dcsync_mysql::CONNECTOR]);

/// Changes the sink's `apply_parallel` of a parsed `store`.
pub fn set_apply_parallel(store: &mut StoreConfig, n: usize) {
    let mut o = MysqlOptions::of(store).unwrap().clone();
    o.apply_parallel = n;
    store.set_options(o);
}

/// Changes the source's `skip` set of a parsed `store`.
pub fn set_skip(store: &mut StoreConfig, skip: dcsync_mysql::SkipSet) {
    let mut o = MysqlOptions::of(store).unwrap().clone();
    o.skip = skip;
    store.set_options(o);
}

/// A source running in a task.
pub struct Running {
    pub events: mpsc::Receiver<SourceEvent>,
    pub shutdown: watch::Sender<bool>,
    pub handle: JoinHandle<Result<(), ConnectorError>>,
    _durable: watch::Sender<Option<Position>>,
    /// Fragments received so far (what an agent would have journaled).
    fragments: watch::Sender<u64>,
}

pub fn start_source(
    url: String,
    store: StoreConfig,
    units: Units,
    resume: Option<Position>,
) -> Running {
    start_source_with(MysqlSource::new(url), store, units, resume)
}

pub fn start_source_with(
    source: MysqlSource,
    store: StoreConfig,
    units: Units,
    resume: Option<Position>,
) -> Running {
    let (tx, rx) = mpsc::channel(16);
    let (sd_tx, sd_rx) = watch::channel(false);
    let (du_tx, du_rx) = watch::channel(None);
    let (fr_tx, fr_rx) = watch::channel(0u64);
    let cx = SourceContext {
        dc: "bj".into(),
        store,
        units,
        resume,
        events: tx,
        durable: du_rx,
        fragments_journaled: fr_rx,
        shutdown: sd_rx,
    };
    let handle = tokio::spawn(source.run(cx));
    Running {
        events: rx,
        shutdown: sd_tx,
        handle,
        _durable: du_tx,
        fragments: fr_tx,
    }
}

impl Running {
    /// Next event, panicking after the deadline or if the source stopped.
    /// A fragment counts as journaled once returned.
    pub async fn next(&mut self) -> SourceEvent {
        match tokio::time::timeout(DEADLINE, self.events.recv()).await {
            Ok(Some(ev)) => {
                if matches!(ev, SourceEvent::Fragment { .. }) {
                    self.fragments.send_modify(|n| *n += 1);
                }
                ev
            }
            Ok(None) => {
                let r = (&mut self.handle).await;
                panic!("source stopped: {r:?}");
            }
            Err(_) => panic!("no source event within {DEADLINE:?}"),
        }
    }

    /// Collects `n` Local events (skipping Progress; the changes of
    /// fragments are put in front of their transaction's Local), returning
    /// them with the position after each; panics on Echo.
    pub async fn locals(&mut self, n: usize) -> Vec<(Vec<Change>, Position)> {
        let mut out = Vec::new();
        let mut parts: Vec<Change> = Vec::new();
        while out.len() < n {
            match self.next().await {
                SourceEvent::Fragment { changes, .. } => parts.extend(changes),
                SourceEvent::Local {
                    changes, position, ..
                } => {
                    let mut all = std::mem::take(&mut parts);
                    all.extend(changes);
                    out.push((all, position))
                }
                SourceEvent::Progress { .. }
                | SourceEvent::Skipped { .. }
                | SourceEvent::Resync { .. }
                | SourceEvent::Copying { .. } => {}
                e @ SourceEvent::Echo { .. } => panic!("unexpected echo {e:?}"),
            }
        }
        out
    }

    /// Waits for the source to end with an error and returns it (events sent
    /// meanwhile are discarded).
    pub async fn error(mut self) -> ConnectorError {
        let res = tokio::time::timeout(DEADLINE, async {
            loop {
                tokio::select! {
                    r = &mut self.handle => return r,
                    ev = self.events.recv() => if ev.is_none() {
                        return (&mut self.handle).await;
                    },
                }
            }
        })
        .await;
        match res {
            Ok(Ok(Err(e))) => e,
            other => panic!("expected the source to fail, got {other:?}"),
        }
    }

    /// Signals shutdown and expects a clean return.
    pub async fn stop(self) {
        self.shutdown.send(true).unwrap();
        let r = tokio::time::timeout(DEADLINE, self.handle).await;
        assert!(
            matches!(r, Ok(Ok(Ok(())))),
            "source did not stop cleanly: {r:?}"
        );
    }
}

/// Wraps Local changes as transactions from origin `bj` with seqs from 1.
pub fn as_transactions(locals: &[(Vec<Change>, Position)], first_seq: u64) -> Vec<Transaction> {
    locals
        .iter()
        .enumerate()
        .map(|(i, (changes, pos))| Transaction {
            origin: "bj".into(),
            store: "orders".into(),
            seq: first_seq + i as u64,
            hlc: Hlc::new(1_700_000_000_000 + i as u64, 0),
            position: pos.display.clone(),
            commit_ts_ms: 0,
            changes: changes.clone(),
            part: 0,
            more: false,
            epoch: 0,
        })
        .collect()
}

/// Every row of `table` as text: each column `HEX(CAST(col AS BINARY))` or
/// NULL, ordered by the primary key `order`.
pub async fn dump(db: &dcsync_testkit::mariadb::MariaDb, table: &str, order: &str) -> Vec<String> {
    use mysql_async::prelude::Queryable;
    let mut c = db.conn().await;
    let (schema, name) = table.split_once('.').unwrap();
    let cols: Vec<String> = c
        .exec(
            "SELECT column_name FROM information_schema.columns WHERE table_schema=? AND table_name=? ORDER BY ordinal_position",
            (schema, name),
        )
        .await
        .unwrap();
    let exprs: Vec<String> = cols
        .iter()
        .map(|col| format!("COALESCE(HEX(CAST(`{col}` AS BINARY)), 'NULL')"))
        .collect();
    let sql = format!(
        "SELECT CONCAT_WS('|', {}) FROM {table} ORDER BY {order}",
        exprs.join(",")
    );
    let rows: Vec<String> = c.query(sql).await.unwrap();
    let _ = c.disconnect().await;
    rows
}

/// Writes a probe row (outside the replicated tables) until the source
/// reports progress past it, so that later writes are after the source's
/// start position. Probe writes that happen before the source has read its
/// start position are simply not seen; hence the loop.
pub async fn wait_ready(db: &dcsync_testkit::mariadb::MariaDb, src: &mut Running) {
    db.exec("CREATE DATABASE IF NOT EXISTS probe; CREATE TABLE IF NOT EXISTS probe.p (id INT PRIMARY KEY, n INT)")
        .await;
    let start = std::time::Instant::now();
    loop {
        db.exec("INSERT INTO probe.p VALUES (1, 0) ON DUPLICATE KEY UPDATE n = n + 1")
            .await;
        match tokio::time::timeout(Duration::from_millis(300), src.events.recv()).await {
            Ok(Some(SourceEvent::Progress { .. })) => break,
            // The CREATE of the probe table, if the source already runs.
            Ok(Some(SourceEvent::Skipped { what: "ddl", .. })) => {}
            Ok(Some(other)) => panic!("unexpected event while waiting for the source: {other:?}"),
            Ok(None) => {
                let r = (&mut src.handle).await;
                panic!("source stopped: {r:?}");
            }
            Err(_) => assert!(start.elapsed() < DEADLINE, "source never started"),
        }
    }
    // Drain the progress of the remaining probe writes (throttled, flushed
    // within PROGRESS_INTERVAL).
    while let Ok(Some(ev)) =
        tokio::time::timeout(Duration::from_millis(300), src.events.recv()).await
    {
        assert!(
            matches!(
                ev,
                SourceEvent::Progress { .. } | SourceEvent::Skipped { what: "ddl", .. }
            ),
            "unexpected {ev:?}"
        );
    }
}

static START_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts a server, one at a time per test binary: concurrent
/// `mariadb-install-db` runs were seen to fail (temp table clash, segfault).
pub async fn start_db(
    opts: dcsync_testkit::mariadb::MariaDbOptions,
) -> dcsync_testkit::mariadb::MariaDb {
    let _g = START_LOCK.lock().await;
    dcsync_testkit::mariadb::MariaDb::start_with(opts).await
}
