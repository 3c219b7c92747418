//! Conflict handling of the Redis sink (`conflict = "lww"` or `"owner"`;
//! docs/conflicts.md, "Redis").
//!
//! Every key has a version (HLC, DC) in the agent's version index, keyed
//! by [`version_key`] (database and key). A group of another DC's
//! transactions is applied as one checked block:
//!
//! 1. `WATCH` every key the group writes, then read the local store's
//!    replication offset (`INFO replication`) and wait until this DC's
//!    source has journaled up to it ([`Versions::wait_source`]): every
//!    local write that touched those keys before the `WATCH` is then in the
//!    index; any later one aborts the `EXEC` below.
//! 2. Read the keys' versions. A version of the command's own origin does
//!    not count: changes of one origin arrive in order and the marker,
//!    written in the same `EXEC`, applies each once, so such a version is
//!    either older or was recorded for a group whose `EXEC` never ran.
//!    A command is applied only if its version
//!    (its transaction's HLC and origin) [`wins`] over the current version
//!    of every key it writes and, under `owner`, the owner does not veto
//!    it ([`owner_vetoes`]). Otherwise it *lost*: it is left out and
//!    recorded as a conflict.
//! 3. Queue `MULTI`, the marker, the winning commands, a `DUMP` and `PTTL`
//!    of every key that had a losing command while the winners' versions
//!    are recorded (durable), then `EXEC`. A nil `EXEC` (a watched key changed: a local
//!    write) decides the group again from step 1.
//!    When some command lost, the version record also holds the sink's
//!    *pending re-ship* ([`Versions::record_pending`]: the keys, the HLC to
//!    re-ship above, the conflicts), so an agent that dies between the
//!    `EXEC` and step 4 finishes the re-ship when it starts again
//!    (`sink_pending.rs`).
//! 4. Re-ship the dumped keys ([`Versions::reassert`]): each as `RESTORE
//!    … REPLACE` (or `DEL` when it does not exist) in a local transaction of
//!    this DC stamped above the losers. Redis commands are not full values
//!    (`HSET` sets one field, `INCRBY` adds): the DC where a change lost
//!    holds the winning value, but the loser's DC applied the winner's
//!    command on top of its own change; the re-ship of the whole value
//!    makes every DC hold the same value.
//!
//! Commands without a key (`FLUSHDB`, `FLUSHALL`, `SWAPDB`, `FUNCTION`)
//! are applied unconditionally.

use super::pending::{reship_change, ReshipIntent, CRASH_AFTER_EXEC};
use super::{describe, redis_err, Queued, RedisSink};
use crate::position::ReplPosition;
use dcsync_core::conflict::{
    owner_vetoes, truncate, wins, Conflict, ConflictPolicy, Version, Versions,
};
use dcsync_core::connector::ConnectorError;
use dcsync_core::{Change, Hlc, Payload, RedisCommand, Transaction};
use redis::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// How long a group waits for the local source to journal up to the
/// store's replication offset before it fails (transient, retried).
const SOURCE_WAIT: Duration = Duration::from_secs(30);

/// How many times a group is decided again after a local write aborted its
/// `EXEC` before the call fails (transient, retried by the sender).
const MAX_ATTEMPTS: u32 = 100;

/// The version-index key of `key` in database `db`: `db` as 4 bytes
/// big-endian, then the key's bytes.
pub fn version_key(db: u32, key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + key.len());
    v.extend_from_slice(&db.to_be_bytes());
    v.extend_from_slice(key);
    v
}

/// `db3 user:42` for a [`version_key`], for logs and the conflict log.
pub fn describe_key(vkey: &[u8]) -> String {
    match vkey.split_first_chunk::<4>() {
        Some((db, key)) => format!(
            "db{} {}",
            u32::from_be_bytes(*db),
            String::from_utf8_lossy(key)
        ),
        None => String::from_utf8_lossy(vkey).into_owned(),
    }
}

/// The keys a write command writes, by its key layout
/// ([`crate::commands::key_layout`]).
pub fn command_keys(args: &[Vec<u8>]) -> Vec<&[u8]> {
    use crate::commands::KeyLayout;
    match crate::commands::key_layout(args) {
        KeyLayout::None => Vec::new(),
        KeyLayout::AllKeys => args.iter().skip(1).map(Vec::as_slice).collect(),
        KeyLayout::KeyValuePairs => args.iter().skip(1).step_by(2).map(Vec::as_slice).collect(),
        KeyLayout::At(idx) => idx
            .iter()
            .filter_map(|i| args.get(*i))
            .map(Vec::as_slice)
            .collect(),
    }
}

/// The version-index keys of a command ([`version_key`] of each of its
/// keys).
pub fn command_version_keys(c: &RedisCommand) -> Vec<Vec<u8>> {
    command_keys(&c.args)
        .into_iter()
        .map(|k| version_key(c.db, k))
        .collect()
}

/// A command as readable text, cut for the conflict log.
fn command_text(c: &RedisCommand) -> String {
    let words: Vec<String> = c
        .args
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    truncate(&words.join(" "), dcsync_core::conflict::IMAGE_CHARS)
}

/// `master_repl_offset` of an `INFO replication` text.
fn repl_offset(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse().ok())
}

/// One losing command, for the conflict log.
struct Lost {
    key: Vec<u8>,
    unit: Option<u32>,
    winner: Version,
    loser: Version,
    seq: u64,
    command: String,
    vetoed: bool,
}

impl RedisSink {
    /// The conflict-log record of a losing command `l`, decided in DC `me`.
    fn conflict_record(&self, me: &str, l: Lost) -> Conflict {
        let decision = if l.vetoed {
            format!(
                "{me} owns unit {} and wrote the current value ({}): the change of {} seq {} was not applied, and {me} re-shipped the key to every DC",
                l.unit.unwrap_or_default(),
                l.winner,
                l.loser.dc,
                l.seq
            )
        } else {
            format!(
                "kept {} (greater version); the change of {} seq {} was not applied, and {me} re-shipped the key to every DC",
                l.winner, l.loser.dc, l.seq
            )
        };
        Conflict {
            at_ms: dcsync_core::now_ms(),
            dc: me.to_string(),
            store: self.store.clone(),
            key: describe_key(&l.key),
            unit: l.unit,
            policy: self.policy.as_str().into(),
            winner: l.winner,
            winner_value: "(the value held here, re-shipped)".into(),
            loser: l.loser,
            loser_value: l.command,
            loser_seq: l.seq,
            decision,
        }
    }

    /// Applies one group under the store's conflict policy (see the module
    /// docs). Errors as [`RedisSink::apply_group`], plus transient ones
    /// when the local source is behind or the version index cannot be read.
    pub(super) async fn apply_group_versioned(
        &mut self,
        origin: &str,
        txs: &[&Transaction],
        versions: &Arc<dyn Versions>,
    ) -> Result<(), ConnectorError> {
        let skip = self.check_supported(origin, txs).await?;
        let me = versions.me().to_string();
        // The version keys of every command, and the raw keys per database
        // for WATCH.
        let mut cmds: Vec<(usize, usize, Vec<Vec<u8>>)> = Vec::new();
        let mut watch: BTreeMap<u32, BTreeSet<Vec<u8>>> = BTreeMap::new();
        for (ti, tx) in txs.iter().enumerate() {
            for (ci, ch) in tx.changes.iter().enumerate() {
                if skip.contains(&(tx.seq, ci)) {
                    continue;
                }
                let Payload::Redis(c) = &ch.payload else {
                    return Err(ConnectorError::Definite(format!(
                        "redis sink: transaction {origin}/{} seq {} holds a non-Redis change",
                        tx.store, tx.seq
                    )));
                };
                let keys = command_keys(&c.args);
                for k in &keys {
                    watch.entry(c.db).or_default().insert(k.to_vec());
                }
                cmds.push((
                    ti,
                    ci,
                    keys.into_iter().map(|k| version_key(c.db, k)).collect(),
                ));
            }
        }
        let all: Vec<Vec<u8>> = cmds
            .iter()
            .flat_map(|(_, _, k)| k.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // A pending re-ship recorded by an attempt whose EXEC a local write
        // aborted, to clear if the last attempt has none.
        let mut intent_recorded = false;
        for attempt in 1..=MAX_ATTEMPTS {
            let mut c = self.conn().await?;
            // 1. WATCH, then the local offset every earlier local write is at
            // or below.
            let mut p = redis::pipe();
            for (db, keys) in &watch {
                p.cmd("SELECT").arg(*db).ignore();
                let mut w = redis::cmd("WATCH");
                for k in keys {
                    w.arg(k.as_slice());
                }
                p.add_command(w).ignore();
            }
            p.cmd("INFO").arg("replication");
            let (info,): (String,) = p
                .query_async(&mut c)
                .await
                .map_err(|e| redis_err("WATCH", e))?;
            self.selected = watch.keys().last().copied().or(self.selected);
            let end = repl_offset(&info).ok_or_else(|| {
                ConnectorError::Transient(
                    "redis sink: INFO replication has no master_repl_offset".into(),
                )
            })?;
            versions
                .wait_source(
                    Box::new(move |p| {
                        ReplPosition::from_position(p).is_ok_and(|r| !r.snapshot && r.offset >= end)
                    }),
                    SOURCE_WAIT,
                )
                .await?;
            // 2. Decide.
            let now = versions.current(all.clone()).await?;
            let mut current: HashMap<Vec<u8>, Option<Version>> =
                all.iter().cloned().zip(now).collect();
            let mut lost_cmds: HashSet<(usize, usize)> = HashSet::new();
            let mut record: Vec<(Vec<u8>, Version)> = Vec::new();
            let mut reship: BTreeMap<Vec<u8>, Option<u32>> = BTreeMap::new();
            let mut above = Hlc(0);
            let mut lost: Vec<Lost> = Vec::new();
            for (ti, ci, keys) in &cmds {
                let tx = txs[*ti];
                let unit = tx.changes[*ci].unit;
                let incoming = Version {
                    hlc: tx.hlc,
                    dc: origin.to_string(),
                };
                let owner = match (self.policy, unit) {
                    (ConflictPolicy::Owner, Some(u)) => versions.owner_of(u),
                    _ => None,
                };
                let against = keys.iter().find_map(|k| {
                    // A version of the same origin never stands against
                    // its changes: they arrive in order and the marker
                    // applies each once, so a greater one was recorded
                    // for a group whose EXEC never ran (the agent died
                    // between the two) and is stale.
                    let cur = current.get(k).cloned().flatten().filter(|c| c.dc != origin);
                    let vetoed = owner_vetoes(&me, owner.as_deref(), &incoming, cur.as_ref());
                    let beaten = !wins(&incoming, cur.as_ref());
                    (vetoed || beaten).then(|| (k.clone(), cur, vetoed && !beaten))
                });
                match against {
                    None => {
                        for k in keys {
                            record.push((k.clone(), incoming.clone()));
                            current.insert(k.clone(), Some(incoming.clone()));
                        }
                    }
                    Some((key, winner, vetoed)) => {
                        lost_cmds.insert((*ti, *ci));
                        above = above.max(tx.hlc);
                        for k in keys {
                            reship.insert(k.clone(), unit);
                        }
                        let command = match &tx.changes[*ci].payload {
                            Payload::Redis(c) => command_text(c),
                            _ => String::new(),
                        };
                        lost.push(Lost {
                            key,
                            unit,
                            winner: winner.unwrap_or(Version {
                                hlc: Hlc(0),
                                dc: me.clone(),
                            }),
                            loser: incoming,
                            seq: tx.seq,
                            command,
                            vetoed,
                        });
                    }
                }
            }
            // 3. One block: marker, winners, dumps of the keys to re-ship.
            // It is queued (MULTI and its commands) while the winners'
            // versions are recorded, and executed once they are durable.
            let Some(last) = txs.last() else {
                return Ok(());
            };
            let conflicts: Vec<Conflict> = lost
                .into_iter()
                .map(|l| self.conflict_record(&me, l))
                .collect();
            let intent = if reship.is_empty() {
                None
            } else {
                let intent = ReshipIntent {
                    last_seq: last.seq,
                    epoch: last.epoch,
                    above: above.0,
                    keys: reship.iter().map(|(k, u)| (k.clone(), *u)).collect(),
                    conflicts: conflicts.clone(),
                };
                Some(intent.encode()?)
            };
            let pending = intent.is_some();
            let mut p = redis::pipe();
            p.ignore_errors();
            p.cmd("MULTI");
            let mut queued: Vec<Option<Queued>> = Vec::new();
            let mut sel = self.selected;
            if sel != Some(0) {
                p.cmd("SELECT").arg(0);
                queued.push(None);
                sel = Some(0);
            }
            p.cmd("SET")
                .arg(super::marker_key(origin))
                .arg(super::marker_value(last));
            queued.push(None);
            for (ti, ci, _) in &cmds {
                if lost_cmds.contains(&(*ti, *ci)) {
                    continue;
                }
                let tx = txs[*ti];
                let Payload::Redis(cmd) = &tx.changes[*ci].payload else {
                    continue;
                };
                let Some((name, rest)) = cmd.args.split_first() else {
                    continue;
                };
                if sel != Some(cmd.db) {
                    p.cmd("SELECT").arg(cmd.db);
                    queued.push(None);
                    sel = Some(cmd.db);
                }
                let mut r = redis::cmd(&String::from_utf8_lossy(name));
                for a in rest {
                    r.arg(a.as_slice());
                }
                p.add_command(r);
                queued.push(Some((
                    tx.seq,
                    name.clone(),
                    rest.first().cloned().unwrap_or_default(),
                )));
            }
            // The dumps come last in the EXEC reply: (position, key).
            let mut dumps: Vec<(usize, Vec<u8>)> = Vec::new();
            for vkey in reship.keys() {
                let Some((db, key)) = vkey.split_first_chunk::<4>() else {
                    continue;
                };
                let db = u32::from_be_bytes(*db);
                if sel != Some(db) {
                    p.cmd("SELECT").arg(db);
                    queued.push(None);
                    sel = Some(db);
                }
                p.cmd("DUMP").arg(key);
                queued.push(None);
                dumps.push((queued.len() - 1, vkey.clone()));
                p.cmd("PTTL").arg(key);
                queued.push(None);
            }
            let mut queue_conn = c.clone();
            let (queued_replies, recorded) =
                tokio::join!(p.query_async::<Vec<Value>>(&mut queue_conn), async {
                    match intent {
                        Some(intent) => {
                            versions
                                .record_pending(record, origin.to_string(), intent)
                                .await
                        }
                        None if record.is_empty() => Ok(()),
                        None => versions.record(record).await,
                    }
                });
            let mut replies = queued_replies.map_err(|e| redis_err("apply", e))?;
            if let Err(e) = recorded {
                // Nothing of the block runs: DISCARD ends the MULTI.
                let _: Result<Value, _> = redis::cmd("DISCARD").query_async(&mut c).await;
                return Err(e);
            }
            intent_recorded |= pending;
            let mut exec = redis::pipe();
            exec.ignore_errors();
            exec.cmd("EXEC");
            let exec_reply: Vec<Value> = exec
                .query_async(&mut c)
                .await
                .map_err(|e| redis_err("apply", e))?;
            replies.extend(exec_reply);
            self.selected = sel;
            let mut problems = Vec::new();
            let mut it = replies.into_iter();
            if let Some(Value::ServerError(e)) = it.next() {
                problems.push(format!("MULTI failed: {e:?}"));
            }
            for q in &queued {
                if let Some(Value::ServerError(e)) = it.next() {
                    match q {
                        Some(q) => problems.push(describe(q, &format!("{e:?}"))),
                        None => problems.push(format!("{e:?}")),
                    }
                }
            }
            let results = match it.next() {
                Some(Value::Nil) => {
                    // A watched key changed: a local write. Decide again.
                    tracing::debug!(origin, store = %self.store, attempt, "redis sink: a local write changed a key of the group; deciding again");
                    continue;
                }
                Some(Value::Array(r)) => r,
                Some(Value::ServerError(e)) => {
                    problems.push(format!("transaction aborted, nothing of it applied: {e:?}"));
                    Vec::new()
                }
                other => {
                    return Err(ConnectorError::Transient(format!(
                        "redis sink: unexpected EXEC reply {other:?}"
                    )))
                }
            };
            for (r, q) in results.iter().zip(&queued) {
                if let (Value::ServerError(e), Some(q)) = (r, q) {
                    problems.push(describe(q, &format!("{e:?}")));
                }
            }
            if !problems.is_empty() {
                return Err(self.rejected(origin, problems));
            }
            if let Some(last) = txs.last() {
                self.markers.insert(origin.to_string(), last.seq);
            }
            if pending {
                dcsync_core::crash_point(CRASH_AFTER_EXEC);
            }
            // 4. Re-ship the keys that had a losing command, then log.
            let changes: Vec<Change> = dumps
                .iter()
                .filter_map(|(pos, vkey)| {
                    reship_change(
                        vkey,
                        reship.get(vkey).copied().flatten(),
                        results.get(*pos)?,
                        results.get(pos + 1)?,
                    )
                })
                .collect();
            if !changes.is_empty() {
                versions.reassert(changes, above).await?;
            }
            for c in conflicts {
                versions.conflict(c);
            }
            if intent_recorded {
                versions.clear_pending(origin.to_string()).await?;
            }
            return Ok(());
        }
        Err(ConnectorError::Transient(format!(
            "redis sink: local writes kept changing the keys of a group of {origin} ({MAX_ATTEMPTS} attempts); retrying"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn version_keys_name_the_database_and_every_key_written() {
        let k = command_version_keys(&RedisCommand {
            db: 3,
            args: args(&["MSET", "a", "1", "b", "2"]),
        });
        assert_eq!(k, vec![version_key(3, b"a"), version_key(3, b"b")]);
        assert_eq!(describe_key(&k[1]), "db3 b");
        assert_eq!(
            command_keys(&args(&["HSET", "h", "f", "v"])),
            vec![b"h".as_slice()]
        );
        assert_eq!(command_keys(&args(&["DEL", "x", "y"])).len(), 2);
        assert!(command_keys(&args(&["FLUSHDB"])).is_empty());
    }

    #[test]
    fn the_offset_comes_from_info_replication() {
        let info = "# Replication\r\nrole:master\r\nmaster_repl_offset:4711\r\n";
        assert_eq!(repl_offset(info), Some(4711));
        assert_eq!(repl_offset("role:master"), None);
    }
}
