//! The agent's side of conflict handling (docs/conflicts.md): the version
//! index a sink consults ([`AgentVersions`], over the journal), the wait
//! for the local source, and the conflict log (`conflicts.jsonl` in the
//! data dir, one JSON [`Conflict`] per line, read by `dcsync conflicts`).

use crate::status::{ConflictStatus, SourceStatus};
use dcsync_core::conflict::{Conflict, Version, Versions};
use dcsync_core::connector::{BoxFuture, ConnectorError, Position};
use dcsync_journal::Journal;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// File name of the conflict log in the agent's data dir.
pub const CONFLICT_LOG: &str = "conflicts.jsonl";

/// The conflict log of one agent: appends one JSON line per conflict.
#[derive(Debug)]
pub struct ConflictLog {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
}

impl ConflictLog {
    /// The log in `data_dir` (opened at the first conflict).
    pub fn new(data_dir: &Path) -> ConflictLog {
        ConflictLog {
            path: data_dir.join(CONFLICT_LOG),
            file: Mutex::new(None),
        }
    }

    /// Appends `c` as one line. A write error is logged (the conflict is
    /// still counted and in the agent's log line).
    pub fn append(&self, c: &Conflict) {
        let line = match serde_json::to_string(c) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a conflict record");
                return;
            }
        };
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
            {
                Ok(f) => *guard = Some(f),
                Err(e) => {
                    tracing::error!(path = %self.path.display(), error = %e, "cannot open the conflict log");
                    return;
                }
            }
        }
        if let Some(f) = guard.as_mut() {
            if let Err(e) = writeln!(f, "{line}") {
                tracing::error!(path = %self.path.display(), error = %e, "cannot write the conflict log");
                *guard = None;
            }
        }
    }
}

/// Reads the conflict log in `data_dir`: every conflict once, oldest
/// first (a record repeated by a retried group is folded). A line that
/// does not parse is an error naming its line number.
pub fn read_log(data_dir: &Path) -> anyhow::Result<Vec<Conflict>> {
    let path = data_dir.join(CONFLICT_LOG);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    };
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (i, l) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let c: Conflict = serde_json::from_str(l).map_err(|e| {
            anyhow::anyhow!("{}:{}: not a conflict record: {e}", path.display(), i + 1)
        })?;
        // A group retried after a failure logs its conflicts again: the
        // same loser against the same winner is one conflict.
        let id = (
            c.dc.clone(),
            c.store.clone(),
            c.key.clone(),
            c.winner.clone(),
            c.loser.clone(),
        );
        if seen.insert(id) {
            out.push(c);
        }
    }
    Ok(out)
}

/// What the `owner` policy needs besides the index: the routing table,
/// the agent's clock, the senders' wake-up and the store's stamp floor.
pub struct OwnerContext {
    /// The unit routing table.
    pub units: dcsync_core::topology::Units,
    /// The agent's HLC clock.
    pub clock: Arc<dcsync_core::HlcClock>,
    /// Wakes the senders (the last local seq journaled).
    pub appended: Arc<watch::Sender<u64>>,
    /// The store's stamp floor, shared with its source supervisor.
    pub floor: Arc<std::sync::atomic::AtomicU64>,
    /// The store's kind, which names the version keys of a change.
    pub connector: Option<&'static dyn dcsync_core::connector::Connector>,
}

/// The version index, source wait and conflict log of one store.
pub struct AgentVersions {
    me: String,
    store: String,
    units: dcsync_core::topology::Units,
    clock: Arc<dcsync_core::HlcClock>,
    /// Wakes the senders after a re-ship is journaled.
    appended: Arc<watch::Sender<u64>>,
    /// Floor of the HLC stamps of the store's local transactions, shared
    /// with its source supervisor: a re-ship raises it.
    floor: Arc<std::sync::atomic::AtomicU64>,
    connector: Option<&'static dyn dcsync_core::connector::Connector>,
    journal: Arc<Journal>,
    /// The store's source position durable in the journal (with the
    /// versions of every local write before it).
    position: watch::Receiver<Option<Position>>,
    log: Arc<ConflictLog>,
    status: Arc<Mutex<SourceStatus>>,
}

impl AgentVersions {
    /// The versions of `store`, over `journal`; `position` follows the
    /// store's durable source position.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: &str,
        store: &str,
        journal: Arc<Journal>,
        position: watch::Receiver<Option<Position>>,
        log: Arc<ConflictLog>,
        status: Arc<Mutex<SourceStatus>>,
        owner: OwnerContext,
    ) -> AgentVersions {
        AgentVersions {
            me: me.to_string(),
            store: store.to_string(),
            units: owner.units,
            clock: owner.clock,
            appended: owner.appended,
            floor: owner.floor,
            connector: owner.connector,
            journal,
            position,
            log,
            status,
        }
    }
}

fn journal_error(e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Transient(format!("version index: {e}"))
}

impl AgentVersions {
    /// Runs `f` on the journal with this store's name, off the async
    /// threads (redb blocks).
    async fn on_journal<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Journal, &str) -> Result<T, dcsync_journal::JournalError> + Send + 'static,
    ) -> Result<T, ConnectorError> {
        let (j, store) = (self.journal.clone(), self.store.clone());
        tokio::task::spawn_blocking(move || f(&j, &store))
            .await
            .map_err(journal_error)?
            .map_err(journal_error)
    }
}

impl Versions for AgentVersions {
    fn current(
        &self,
        keys: Vec<Vec<u8>>,
    ) -> BoxFuture<'_, Result<Vec<Option<Version>>, ConnectorError>> {
        Box::pin(self.on_journal(move |j, store| j.versions(store, &keys)))
    }

    fn record(
        &self,
        entries: Vec<(Vec<u8>, Version)>,
    ) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(self.on_journal(move |j, store| j.record_versions(store, &entries)))
    }

    fn generation(&self) -> u64 {
        self.journal.version_generation()
    }

    fn high_water(&self) -> Option<dcsync_core::Hlc> {
        self.journal.version_high_water(&self.store)
    }

    fn record_pending(
        &self,
        entries: Vec<(Vec<u8>, Version)>,
        origin: String,
        intent: Vec<u8>,
    ) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(self.on_journal(move |j, store| {
            j.record_versions_pending(store, &entries, &origin, &intent)
        }))
    }

    fn pending(&self, origin: String) -> BoxFuture<'_, Result<Option<Vec<u8>>, ConnectorError>> {
        Box::pin(self.on_journal(move |j, store| j.pending_reship(store, &origin)))
    }

    fn clear_pending(&self, origin: String) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(self.on_journal(move |j, store| j.clear_pending_reship(store, &origin)))
    }

    fn wait_source<'a>(
        &'a self,
        reached: Box<dyn Fn(&Position) -> bool + Send + Sync + 'a>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            let mut rx = self.position.clone();
            let waited =
                tokio::time::timeout(timeout, rx.wait_for(|p| p.as_ref().is_some_and(&reached)))
                    .await;
            match waited {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(_)) => Err(ConnectorError::Transient(
                    "the agent is shutting down".into(),
                )),
                Err(_) => {
                    let at = self
                        .position
                        .borrow()
                        .as_ref()
                        .map_or("nothing yet".to_string(), |p| p.display.clone());
                    Err(ConnectorError::Transient(format!(
                        "store {}: the local source has not read the store's log up to the \
                         position this apply needs within {} s (it is at {at}); changes of other \
                         DCs wait, since their conflicts cannot be decided before the local \
                         writes are known (see `dcsync status`: is the source running?)",
                        self.store,
                        timeout.as_secs()
                    )))
                }
            }
        })
    }

    fn me(&self) -> &str {
        &self.me
    }

    fn owner_of(&self, unit: u32) -> Option<String> {
        self.units.owner_of(unit).map(str::to_string)
    }

    fn reassert(
        &self,
        changes: Vec<dcsync_core::Change>,
        above: dcsync_core::Hlc,
    ) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(async move {
            if changes.is_empty() {
                return Ok(());
            }
            let hlc = self.clock.observe(above);
            self.floor
                .fetch_max(hlc.0, std::sync::atomic::Ordering::SeqCst);
            let mut versions = Vec::new();
            for c in &changes {
                for k in self
                    .connector
                    .map(|k| k.version_keys(c))
                    .unwrap_or_default()
                {
                    versions.push((k, hlc));
                }
            }
            let n = changes.len();
            let mut tx = [dcsync_core::Transaction {
                origin: self.me.clone(),
                store: self.store.clone(),
                seq: 0,
                hlc,
                position: "re-shipped by the unit's owner".into(),
                commit_ts_ms: dcsync_core::now_ms(),
                changes,
                part: 0,
                more: false,
                epoch: 0,
            }];
            let j = self.journal.clone();
            let store = self.store.clone();
            let appended = tokio::task::spawn_blocking(move || {
                j.append_versioned(&store, &mut tx, None, &versions, dcsync_core::Hlc(0), false)
            })
            .await
            .map_err(journal_error)?
            .map_err(journal_error)?;
            if let Some((_, last)) = appended {
                self.appended.send_replace(last);
            }
            tracing::info!(store = %self.store, rows_or_keys = n, %hlc, "re-shipped the current value of rows or keys whose conflicting changes of other DCs were not applied");
            Ok(())
        })
    }

    fn conflict(&self, mut c: Conflict) {
        if c.dc.is_empty() {
            c.dc.clone_from(&self.me);
        }
        tracing::warn!(
            store = %c.store, key = %c.key, unit = ?c.unit, winner = %c.winner, loser = %c.loser,
            loser_seq = c.loser_seq, "conflict: {}", c.decision
        );
        dcsync_core::events::ConflictResolved {
            store: &c.store,
            policy: &c.policy,
        }
        .emit();
        if let Ok(mut st) = self.status.lock() {
            st.conflicts += 1;
            st.last_conflict = Some(ConflictStatus {
                key: c.key.clone(),
                winner: c.winner.to_string(),
                loser: c.loser.to_string(),
                at_ms: c.at_ms,
            });
        }
        self.log.append(&c);
    }
}

/// The changes of a snapshot copy (an initial snapshot, a Redis full
/// resync's RDB) except those of rows or keys whose current value
/// another DC wrote (their version in the index): the copy re-emits
/// the store's state, and re-shipping a value another DC wrote as this
/// DC's would set back that DC's later changes in flight.
pub(crate) fn unowned_snapshot_changes(
    journal: &Journal,
    store: &dcsync_core::topology::StoreConfig,
    me: &str,
    changes: Vec<dcsync_core::Change>,
) -> Vec<dcsync_core::Change> {
    let Ok(connector) = crate::registry::REGISTRY.connector_for(store) else {
        return changes;
    };
    let before = changes.len();
    // One index read for the whole event: (change index, key) pairs.
    let keyed: Vec<(usize, Vec<u8>)> = changes
        .iter()
        .enumerate()
        .flat_map(|(i, c)| connector.version_keys(c).into_iter().map(move |k| (i, k)))
        .collect();
    let keys: Vec<Vec<u8>> = keyed.iter().map(|(_, k)| k.clone()).collect();
    let Ok(found) = journal.versions(&store.name, &keys) else {
        return changes;
    };
    let mut others = std::collections::HashSet::new();
    for ((i, _), v) in keyed.iter().zip(found) {
        if v.is_some_and(|v| v.dc != me) {
            others.insert(*i);
        }
    }
    let kept: Vec<dcsync_core::Change> = changes
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !others.contains(i))
        .map(|(_, c)| c)
        .collect();
    if kept.len() < before {
        tracing::info!(store = %store.name, left_out = before - kept.len(),
            "snapshot copy: left out rows or keys whose current value another DC wrote");
    }
    kept
}
