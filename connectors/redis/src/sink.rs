//! The applying half: `MULTI`, marker, commands, `EXEC` per transaction.
//!
//! Each transaction becomes one block on one connection:
//! `MULTI`, [`SELECT 0`], `SET <MARKER_PREFIX><origin> <seq>`, then its
//! commands with `SELECT <db>` whenever the database changes, `EXEC`. Several
//! blocks (up to the store's `apply_group_txns`/`apply_group_bytes`) go in one
//! pipelined round trip, in order. The marker (database 0) is read once with
//! `GET` and cached; the cache is dropped after any error.
//!
//! A command the target rejects is reported with its key and reason and the
//! call fails: at queue time (`EXECABORT`, nothing of that block applied) or
//! at execution (`EXEC` returns an error element; the rest of the block and
//! the marker are applied, as Redis transactions do not roll back). Blocks
//! after the failing one in the same round trip have been applied too; the
//! marker tells exactly how far.
//!
//! Before a group is sent, every command's name is looked up in the
//! target's command table (`COMMAND LIST`, re-read when a name is missing):
//! a command the target does not know (a module command, a command of a
//! newer Redis) fails the call with a definite error naming the origin, seq,
//! command and key before anything of that group is sent, unless the
//! store's `skip = ["unsupported_command"]` allows leaving it out (logged
//! and counted in `dcsync_apply_skipped_total`).

use crate::MARKER_PREFIX;
use dcsync_core::conflict::{ConflictPolicy, Versions};
use dcsync_core::connector::{AppliedMark, ConnectorError, Sink};
use dcsync_core::topology::StoreConfig;
use dcsync_core::{Payload, Transaction};
use redis::aio::MultiplexedConnection;
use redis::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "sink_lww.rs"]
mod lww;
#[path = "sink_pending.rs"]
mod pending;
pub use lww::{command_version_keys, describe_key, version_key};

/// Most commands in one checked block of a store with a conflict policy
/// (`sink_lww.rs`: the whole group is one `MULTI`/`EXEC`, which blocks the
/// server while it runs); a single larger transaction is still one block.
const VERSIONED_BLOCK_COMMANDS: usize = 1000;

/// Least time between two reads of the target's command table.
const COMMAND_TABLE_REFRESH: Duration = Duration::from_secs(1);

/// Redis sink for one store.
pub struct RedisSink {
    /// The store URL as configured (`redis://` or a sentinel URL),
    /// resolved again on every connect.
    url: String,
    conn: Option<MultiplexedConnection>,
    /// Database the connection has selected, `None` if unknown.
    selected: Option<u32>,
    markers: HashMap<String, u64>,
    group_txns: usize,
    group_bytes: usize,
    /// Store name (for messages and metrics).
    store: String,
    /// `skip = ["unsupported_command"]`.
    skip_unsupported: bool,
    /// Lower-case names of the commands the target knows (`COMMAND
    /// LIST`), `None` if it cannot tell (Redis before 7); when it was read.
    commands: Option<(HashSet<Vec<u8>>, Instant)>,
    /// The store's conflict policy (docs/conflicts.md, "Redis").
    policy: ConflictPolicy,
    /// The version index and conflict log, when the policy needs them.
    versions: Option<Arc<dyn Versions>>,
    /// Origins whose pending re-ship this connection looked for
    /// (`sink_pending.rs`).
    pending_checked: HashSet<String>,
}

/// A queued data command: (seq, command name, first argument / key).
type Queued = (u64, Vec<u8>, Vec<u8>);

fn marker_key(origin: &str) -> String {
    format!("{MARKER_PREFIX}{origin}")
}

/// The marker value of `tx`: `<seq> <epoch, hex> <position>` (see
/// [`parse_marker`]).
fn marker_value(tx: &Transaction) -> String {
    format!("{} {:x} {}", tx.seq, tx.epoch, tx.position)
}

/// Parses an apply-marker value: `<seq>` (releases before journal
/// epochs) or `<seq> <origin journal epoch, hex> <origin source position,
/// human-readable>`. `None` if it does not start with a decimal seq.
pub fn parse_marker(v: &str) -> Option<AppliedMark> {
    let mut it = v.splitn(3, ' ');
    let seq = it.next()?.parse().ok()?;
    let epoch = match it.next() {
        Some(e) => u64::from_str_radix(e, 16).ok()?,
        None => 0,
    };
    Some(AppliedMark {
        seq,
        epoch,
        position: it.next().unwrap_or_default().to_string(),
    })
}

fn redis_err(what: &str, e: redis::RedisError) -> ConnectorError {
    if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_connection_refusal() {
        ConnectorError::Transient(format!("redis sink: {what}: {e}"))
    } else {
        ConnectorError::Definite(format!("redis sink: {what}: {e}"))
    }
}

impl RedisSink {
    /// Connects to `url` (`redis://[user:password@]host:port[/db]`, or a
    /// sentinel URL: see [`crate::url`]) for `store`. A sentinel URL is
    /// resolved again on every reconnect, so the sink follows a failover.
    /// A bad URL or a master name no sentinel knows is Definite, an
    /// unreachable server or sentinel Transient.
    pub async fn connect(url: &str, store: &StoreConfig) -> Result<RedisSink, ConnectorError> {
        crate::url::StoreUrl::parse(url).map_err(|e| {
            ConnectorError::Definite(format!(
                "redis sink: bad url {}: {e}",
                dcsync_core::topology::redact_url(url)
            ))
        })?;
        let mut sink = RedisSink {
            url: url.to_string(),
            conn: None,
            selected: None,
            markers: HashMap::new(),
            group_txns: store.apply_group_txns.max(1),
            group_bytes: store.apply_group_bytes.max(1),
            store: store.name.clone(),
            skip_unsupported: crate::config::RedisOptions::of(store)?.skip_unsupported_command,
            commands: None,
            policy: store.conflict,
            versions: None,
            pending_checked: HashSet::new(),
        };
        sink.conn().await?;
        Ok(sink)
    }

    async fn conn(&mut self) -> Result<MultiplexedConnection, ConnectorError> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let resolved = crate::url::resolve(&self.url).await?;
        let client = redis::Client::open(resolved.url.as_str()).map_err(|e| {
            ConnectorError::Definite(format!(
                "redis sink: bad url {}: {e}",
                dcsync_core::topology::redact_url(&resolved.url)
            ))
        })?;
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| redis_err("connect", e))?;
        if let Some(via) = &resolved.via {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut c)
                .await
                .map_err(|e| redis_err("INFO replication", e))?;
            match crate::url::role_of(&info) {
                Some("master") => {}
                role => return Err(crate::url::not_master(&resolved, role.unwrap_or("unknown"))),
            }
            tracing::info!(store = %self.store, "redis sink: {via}");
        }
        self.selected = None;
        self.conn = Some(c.clone());
        Ok(c)
    }

    fn reset(&mut self, e: &ConnectorError) {
        self.markers.clear();
        self.pending_checked.clear();
        self.selected = None;
        if e.is_transient() {
            self.conn = None;
        }
    }

    async fn read_marker(&mut self, origin: &str) -> Result<u64, ConnectorError> {
        if let Some(s) = self.markers.get(origin) {
            return Ok(*s);
        }
        let mark = self.read_mark(origin).await?;
        self.markers.insert(origin.to_string(), mark.seq);
        Ok(mark.seq)
    }

    /// Once per connection and origin, under a conflict policy: finishes
    /// a re-ship of `origin`'s changes left pending by an agent that
    /// stopped between a group's `EXEC` and its re-ship (before anything
    /// else of that origin is applied or acknowledged).
    async fn check_pending(&mut self, origin: &str) -> Result<(), ConnectorError> {
        let Some(v) = self.versions.clone() else {
            return Ok(());
        };
        if self.policy == ConflictPolicy::None || self.pending_checked.contains(origin) {
            return Ok(());
        }
        if let Err(e) = self.finish_pending(origin, &v).await {
            self.reset(&e);
            return Err(e);
        }
        self.pending_checked.insert(origin.to_string());
        Ok(())
    }

    /// The marker of `origin` as stored (not cached).
    async fn read_mark(&mut self, origin: &str) -> Result<AppliedMark, ConnectorError> {
        let mut c = self.conn().await?;
        let mut p = redis::pipe();
        if self.selected != Some(0) {
            p.cmd("SELECT").arg(0).ignore();
        }
        p.cmd("GET").arg(marker_key(origin));
        let (v,): (Option<String>,) = p.query_async(&mut c).await.map_err(|e| {
            let e = redis_err("GET marker", e);
            self.reset(&e);
            e
        })?;
        self.selected = Some(0);
        match v {
            None => Ok(AppliedMark::default()),
            Some(s) => parse_marker(&s).ok_or_else(|| {
                ConnectorError::Definite(format!(
                    "redis sink: marker {} holds {s:?}, not `<seq> <epoch> <position>`",
                    marker_key(origin)
                ))
            }),
        }
    }

    /// Whether the target does not know command `name`: looked up in its
    /// command table, re-read (at most once per [`COMMAND_TABLE_REFRESH`])
    /// when the name is missing, so a module loaded to fix it is seen.
    /// `false` when the target cannot list its commands.
    async fn unsupported(&mut self, name: &[u8]) -> Result<bool, ConnectorError> {
        let lower = name.to_ascii_lowercase();
        if let Some((known, _)) = &self.commands {
            if known.contains(&lower) {
                return Ok(false);
            }
        }
        let fresh = self
            .commands
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() < COMMAND_TABLE_REFRESH);
        if !fresh {
            let mut c = self.conn().await?;
            let listed: Result<Vec<Vec<u8>>, _> =
                redis::cmd("COMMAND").arg("LIST").query_async(&mut c).await;
            match listed {
                Ok(names) => {
                    let known = names.iter().map(|n| n.to_ascii_lowercase()).collect();
                    self.commands = Some((known, Instant::now()));
                }
                Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
                    let e = redis_err("COMMAND LIST", e);
                    self.reset(&e);
                    return Err(e);
                }
                // Redis before 7 has no COMMAND LIST: let the server judge.
                Err(_) => return Ok(false),
            }
        }
        Ok(self
            .commands
            .as_ref()
            .is_some_and(|(known, _)| !known.contains(&lower)))
    }

    /// The commands of `txs` the target does not know, as (seq, command,
    /// first argument); a definite error naming the first one unless the
    /// store may skip them.
    async fn check_supported(
        &mut self,
        origin: &str,
        txs: &[&Transaction],
    ) -> Result<HashSet<(u64, usize)>, ConnectorError> {
        let mut skip = HashSet::new();
        for tx in txs {
            for (i, ch) in tx.changes.iter().enumerate() {
                let Payload::Redis(c) = &ch.payload else {
                    continue;
                };
                let Some(name) = c.args.first() else { continue };
                if !self.unsupported(name).await? {
                    continue;
                }
                let q: Queued = (
                    tx.seq,
                    name.clone(),
                    c.args.get(1).cloned().unwrap_or_default(),
                );
                if !self.skip_unsupported {
                    return Err(ConnectorError::Definite(format!(
                        "redis sink: origin {origin} {}: the target Redis does not know this command, so \
                         store {:?} stops here (nothing of this or later transactions of {origin} is \
                         applied). Fix: make the target know it (load the module, upgrade Redis), or add \
                         skip = [\"unsupported_command\"] to the store to leave such commands out \
                         (the DCs then differ on that key)",
                        describe(&q, "unknown command"),
                        self.store
                    )));
                }
                tracing::warn!(origin, store = %self.store, "redis sink: skipping a command the target does not know (skip = [\"unsupported_command\"]): {}", describe(&q, "unknown command"));
                skip.insert((tx.seq, i));
            }
        }
        if !skip.is_empty() {
            dcsync_core::events::ApplySkipped {
                origin,
                store: &self.store,
                what: "unsupported_command",
                count: skip.len() as u64,
            }
            .emit();
        }
        Ok(skip)
    }

    /// Applies one group of transactions in one round trip.
    async fn apply_group(
        &mut self,
        origin: &str,
        txs: &[&Transaction],
    ) -> Result<(), ConnectorError> {
        let skip = self.check_supported(origin, txs).await?;
        let mut p = redis::pipe();
        p.ignore_errors();
        let mut sel = self.selected;
        // Per block: responses expected before EXEC (MULTI + queued commands)
        // and, for error reports, the queued commands' args.
        let mut layout: Vec<Vec<Option<Queued>>> = Vec::new();
        for tx in txs {
            let mut queued: Vec<Option<Queued>> = Vec::new();
            p.cmd("MULTI");
            if sel != Some(0) {
                p.cmd("SELECT").arg(0);
                queued.push(None);
                sel = Some(0);
            }
            p.cmd("SET").arg(marker_key(origin)).arg(marker_value(tx));
            queued.push(None);
            for (i, ch) in tx.changes.iter().enumerate() {
                if skip.contains(&(tx.seq, i)) {
                    continue;
                }
                let Payload::Redis(c) = &ch.payload else {
                    return Err(ConnectorError::Definite(format!(
                        "redis sink: transaction {origin}/{} seq {} holds a non-Redis change",
                        tx.store, tx.seq
                    )));
                };
                if sel != Some(c.db) {
                    p.cmd("SELECT").arg(c.db);
                    queued.push(None);
                    sel = Some(c.db);
                }
                let Some((name, rest)) = c.args.split_first() else {
                    continue;
                };
                let mut cmd = redis::cmd(&String::from_utf8_lossy(name));
                for a in rest {
                    cmd.arg(a.as_slice());
                }
                p.add_command(cmd);
                queued.push(Some((
                    tx.seq,
                    name.clone(),
                    rest.first().cloned().unwrap_or_default(),
                )));
            }
            p.cmd("EXEC");
            layout.push(queued);
        }
        let mut c = self.conn().await?;
        let replies: Vec<Value> = p
            .query_async(&mut c)
            .await
            .map_err(|e| redis_err("apply", e))?;
        let mut it = replies.into_iter();
        let mut problems: Vec<String> = Vec::new();
        for (tx, queued) in txs.iter().zip(&layout) {
            let mut next = || {
                it.next().ok_or_else(|| {
                    ConnectorError::Transient("redis sink: short pipeline reply".into())
                })
            };
            if let Value::ServerError(e) = next()? {
                problems.push(format!("seq {}: MULTI failed: {e:?}", tx.seq));
            }
            let mut queue_errors = Vec::new();
            for q in queued {
                if let Value::ServerError(e) = next()? {
                    queue_errors.push((q.clone(), format!("{e:?}")));
                }
            }
            match next()? {
                Value::Array(results) => {
                    for (r, q) in results.iter().zip(queued) {
                        if let (Value::ServerError(e), Some(q)) = (r, q) {
                            problems.push(describe(q, &format!("{e:?}")));
                        }
                    }
                }
                Value::ServerError(e) => {
                    for (q, reason) in queue_errors {
                        match q {
                            Some(q) => problems.push(describe(&q, &reason)),
                            None => problems.push(format!("seq {}: {reason}", tx.seq)),
                        }
                    }
                    problems.push(format!(
                        "seq {}: transaction aborted, nothing of it applied: {e:?}",
                        tx.seq
                    ));
                }
                Value::Nil => problems.push(format!("seq {}: EXEC returned nil", tx.seq)),
                _ => {}
            }
        }
        self.selected = sel;
        if problems.is_empty() {
            if let Some(last) = txs.last() {
                self.markers.insert(origin.to_string(), last.seq);
            }
            return Ok(());
        }
        Err(self.rejected(origin, problems))
    }

    /// The error of a round trip in which the target rejected commands:
    /// transient when the target turned read-only (a failover), else
    /// definite, naming each command.
    fn rejected(&self, origin: &str, problems: Vec<String>) -> ConnectorError {
        if problems.iter().any(|p| p.contains("READONLY")) {
            // The server became a replica (a failover): nothing of a block
            // with a refused write applied; reconnect (and ask the
            // sentinels again) and send it again. The marker skips what did.
            return ConnectorError::Transient(format!(
                "redis sink: the target is read-only now (a replica after a failover?): {}",
                problems.join("; ")
            ));
        }
        for pr in &problems {
            tracing::error!(origin, "redis sink: target rejected a command: {pr}");
        }
        ConnectorError::Definite(format!(
            "redis sink: target rejected {} command(s) from origin {origin}: {}",
            problems.len(),
            problems.join("; ")
        ))
    }
}

fn describe(q: &Queued, reason: &str) -> String {
    format!(
        "seq {}: {} key {:?}: {reason}",
        q.0,
        String::from_utf8_lossy(&q.1),
        String::from_utf8_lossy(&q.2)
    )
}

impl Sink for RedisSink {
    async fn applied_seq(&mut self, origin: &str) -> Result<u64, ConnectorError> {
        self.read_marker(origin).await
    }

    fn set_versions(&mut self, versions: Arc<dyn Versions>) {
        self.versions = Some(versions);
    }

    async fn applied_mark(&mut self, origin: &str) -> Result<AppliedMark, ConnectorError> {
        self.check_pending(origin).await?;
        let mark = self.read_mark(origin).await?;
        self.markers.insert(origin.to_string(), mark.seq);
        Ok(mark)
    }

    async fn apply(&mut self, origin: &str, txs: &[Transaction]) -> Result<u64, ConnectorError> {
        self.check_pending(origin).await?;
        let mut applied = self.read_marker(origin).await?;
        let todo: Vec<&Transaction> = txs.iter().filter(|t| t.seq > applied).collect();
        // The Redis source never splits a transaction (a MULTI/EXEC block
        // is one entry); a part can only come from another store kind.
        if let Some(t) = todo.iter().find(|t| !t.is_whole()) {
            return Err(ConnectorError::Definite(format!(
                "store {}: origin {origin} seq {} is part {} of a transaction split in parts,                  which the Redis sink does not apply (only MySQL stores split transactions)",
                self.store, t.seq, t.part
            )));
        }
        // A versioned group is one MULTI/EXEC, which blocks the server
        // while it runs: it also ends at VERSIONED_BLOCK_COMMANDS commands.
        let versioned = self.versions.is_some() && self.policy != ConflictPolicy::None;
        let mut start = 0;
        while start < todo.len() {
            let mut end = start;
            let mut bytes = 0;
            let mut commands = 0;
            while end < todo.len() && end - start < self.group_txns {
                let n = todo[end].changes.len();
                if versioned && end > start && commands + n > VERSIONED_BLOCK_COMMANDS {
                    break;
                }
                commands += n;
                bytes += todo[end].approx_bytes();
                end += 1;
                if bytes >= self.group_bytes {
                    break;
                }
            }
            let group = &todo[start..end];
            let r = match self.versions.clone() {
                Some(v) if self.policy != ConflictPolicy::None => {
                    self.apply_group_versioned(origin, group, &v).await
                }
                _ => self.apply_group(origin, group).await,
            };
            if let Err(e) = r {
                self.reset(&e);
                return Err(e);
            }
            applied = group.last().map(|t| t.seq).unwrap_or(applied);
            start = end;
        }
        Ok(applied)
    }
}
