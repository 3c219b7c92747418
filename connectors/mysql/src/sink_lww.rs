//! `conflict = "lww"`: last writer wins by version (docs/conflicts.md).
//!
//! Per group, before planning, the versions of every row the group writes
//! are read from the agent's version index ([`Versions::current`]); a row
//! change is applied only if its version `(transaction HLC, origin DC)` is
//! at least the row's current one ([`wins`]); a change that loses is left
//! out of the plan and recorded as a conflict after the commit.
//!
//! The index knows a local write only once this DC's source has journaled
//! it. So each partition's transaction runs its statements (which lock
//! every row it writes) without `COMMIT`; then the partition reads the
//! binlog's end (`SHOW MASTER STATUS`), waits until the local source has
//! journaled up to it ([`Versions::wait_source`]: every local write that
//! could have touched these rows before the locks is then in the index),
//! and reads the versions of the group's rows again ([`Check`]). If a local
//! write with a greater version landed in between, the partition rolls
//! back and the partitions that did not commit decide again (as after a
//! deadlock between partitions); otherwise the group's versions are
//! recorded ([`Versions::record`], durable; each keeps the greater) and the
//! partition commits. A local write
//! that waits for the locks commits after the group, and its source stamps
//! it above the group's HLC (the source observes the marker's HLC), so it
//! is correctly newer.

use super::{classify, quote_ident, MysqlSink};
use crate::position::BinlogPosition;
use crate::sqltext::push_literal;
use dcsync_core::conflict::Versions;
use dcsync_core::conflict::{
    describe_image, describe_row_key, owner_vetoes, row_version_keys, wins, Conflict, Version,
};
use dcsync_core::connector::ConnectorError;
use dcsync_core::{Payload, RowChange, Transaction};
use mysql_async::prelude::Queryable;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// How long a group waits for the local source to reach the binlog's end
/// before it fails (transiently) and is retried.
pub(super) const SOURCE_WAIT: Duration = Duration::from_secs(30);

/// A change that lost against the current version of its row, or a row
/// deleted because a change that won took its unique value.
pub(super) struct Lost {
    pub(super) row: RowChange,
    pub(super) unit: Option<u32>,
    pub(super) winner: Version,
    pub(super) loser: Version,
    pub(super) seq: u64,
    /// The decision in words, when not the plain "change not applied".
    pub(super) decision: Option<String>,
}

/// The hasher of the per-group maps (thousands of lookups per group, on
/// the apply path; keys are the group's own rows, not chosen by a peer).
pub(super) type FastHash = foldhash::fast::RandomState;

/// What the lww rule decided for one group.
#[derive(Default)]
pub(super) struct Decision {
    /// `(transaction index, change index)` of the changes left out.
    pub(super) skip: HashSet<(usize, usize), FastHash>,
    /// Each written row's key with the version it will have.
    pub(super) decided: Vec<(Vec<u8>, Version)>,
    /// The changes that lost, logged by the first partition to commit.
    pub(super) lost: Vec<Lost>,
    /// Rows of the target to delete because a winning change takes their
    /// secondary unique value (pk values filled in, other columns NULL).
    pub(super) deletes: Vec<RowChange>,
    /// `owner`: the vetoed changes, whose rows the owner re-ships.
    pub(super) reassert: Vec<(RowChange, Option<u32>)>,
    /// The greatest HLC of a vetoed change (the re-ship is stamped above).
    pub(super) reassert_above: dcsync_core::Hlc,
    /// [`Versions::generation`] before the group's versions were read.
    pub(super) generation: u64,
}

/// The rows an `owner` group re-ships, and the HLC to stamp above.
pub(super) type Reassert = std::sync::Mutex<(Vec<(RowChange, Option<u32>)>, dcsync_core::Hlc)>;

/// The check every partition of an lww group runs after its statements
/// and before its `COMMIT` (see the module docs). Partitions finish
/// independently: none holds its locks while waiting for another, so an
/// application transaction that waits for one partition's rows while
/// holding rows another needs cannot deadlock them unseen.
pub(super) struct Check {
    versions: Arc<dyn Versions>,
    store: String,
    /// The rows this partition writes, with the versions they will have.
    decided: Vec<(Vec<u8>, Version)>,
    /// The group's losing changes, until a partition logs them (before its
    /// `COMMIT`: a crash right after the commit cannot lose them; a group
    /// retried after a failure may log them again, which readers of the
    /// log fold, see `dcsync conflicts`).
    lost: Arc<std::sync::Mutex<Vec<Lost>>>,
    /// The versions of every row of the group, recorded once (one durable
    /// index write per group) by the first partition ready to commit; the
    /// others wait for it. Recording rows of a partition that then rolls
    /// back is harmless: the group is retried with the same versions.
    group: Arc<GroupRecord>,
    /// `owner`: the rows to re-ship, taken by the first partition ready to
    /// commit (read under lock, journaled before the commit).
    reassert: Arc<Reassert>,
    /// The store's URL, for the conflict log's own read connection.
    url: String,
}

/// The versions of all rows of one group, recorded at most once.
///
/// The record starts as soon as the group is decided, while the
/// partitions run their statements (its durable commit is then off the
/// path to `COMMIT`); each partition waits for it before its `COMMIT`.
/// Recorded before the rows commit, a version can describe a row change a
/// partition then rolls back: harmless, as after a crash between record
/// and `COMMIT` (which was always possible). The group is retried with the
/// same versions, which tie with the recorded ones and apply, or it loses
/// to a greater version, which the index keeps (keep-greater).
pub(super) struct GroupRecord {
    all: Vec<(Vec<u8>, Version)>,
    done: tokio::sync::OnceCell<()>,
    /// The record started when the group was decided, until a partition
    /// waits for it.
    started: std::sync::Mutex<Option<tokio::task::JoinHandle<Result<(), ConnectorError>>>>,
    /// Set once the started record is readable.
    recorded: Arc<std::sync::atomic::AtomicBool>,
    /// [`Versions::generation`] before the group's versions were read.
    generation: u64,
}

impl GroupRecord {
    /// The record of a group writing `all`, started at once when there is
    /// an index (`versions`); `generation` is the index's generation
    /// before the group's versions were read.
    pub(super) fn start(
        versions: Option<&Arc<dyn Versions>>,
        all: Vec<(Vec<u8>, Version)>,
        generation: u64,
    ) -> GroupRecord {
        let recorded = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let started = versions.filter(|_| !all.is_empty()).map(|v| {
            let (v, entries, flag) = (v.clone(), all.clone(), recorded.clone());
            tokio::spawn(async move {
                v.record(entries).await?;
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            })
        });
        GroupRecord {
            all,
            done: tokio::sync::OnceCell::new(),
            started: std::sync::Mutex::new(started),
            recorded,
            generation,
        }
    }

    /// Every row the group writes, with the version it will have.
    pub(super) fn all(&self) -> &[(Vec<u8>, Version)] {
        &self.all
    }

    /// Waits until the group's versions are recorded (durable); records
    /// them itself if the started record failed. Errors: the journal
    /// cannot be written (transient).
    async fn wait(&self, versions: &Arc<dyn Versions>) -> Result<(), ConnectorError> {
        self.done
            .get_or_try_init(|| async {
                let started = self
                    .started
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                match started {
                    Some(h) => h.await.map_err(|e| {
                        ConnectorError::Transient(format!("recording the group's versions: {e}"))
                    })?,
                    None => versions.record(self.all.clone()).await,
                }
            })
            .await
            .map(|_| ())
    }

    /// Whether no version but the group's own record was recorded since
    /// the group's versions were read: a re-read would find what the
    /// decision was made on. (The flag is read before the generation, and
    /// set after the record raised it.)
    fn unchanged_since_read(&self, versions: &dyn Versions) -> bool {
        let own = u64::from(self.recorded.load(std::sync::atomic::Ordering::SeqCst));
        versions.generation() == self.generation + own
    }
}

impl Check {
    /// The check of one partition of a group of `store` that writes
    /// `decided`; `lost` is shared by the group's partitions.
    pub(super) fn new(
        versions: Arc<dyn Versions>,
        store: &str,
        decided: Vec<(Vec<u8>, Version)>,
        lost: Arc<std::sync::Mutex<Vec<Lost>>>,
        group: Arc<GroupRecord>,
        reassert: Arc<Reassert>,
        url: &str,
    ) -> Check {
        Check {
            versions,
            store: store.to_string(),
            decided,
            lost,
            group,
            reassert,
            url: url.to_string(),
        }
    }

    /// A connection of its own to the store (for the conflict log).
    async fn read_conn(&self) -> Result<mysql_async::Conn, ConnectorError> {
        let opts = mysql_async::Opts::from_url(&self.url)
            .map_err(|e| ConnectorError::Definite(format!("bad store URL: {e}")))?;
        mysql_async::Conn::new(opts)
            .await
            .map_err(|e| classify("connecting to read the kept rows", e))
    }

    /// On `conn`, whose transaction ran its statements: reads the binlog's
    /// end, waits for the local source to reach it, and if no row of the
    /// group has a greater version now, records the group's versions and
    /// commits (`Ok(true)`). `Ok(false)`: overtaken, nothing committed;
    /// the caller rolls back.
    pub(super) async fn finish(
        &self,
        conn: &mut mysql_async::Conn,
    ) -> Result<bool, ConnectorError> {
        let t0 = std::time::Instant::now();
        let end = binlog_end(conn, &self.store).await?;
        let t_end = t0.elapsed();
        self.versions
            .wait_source(
                Box::new(move |p| BinlogPosition::from_position(p).is_ok_and(|b| b.reached(&end))),
                SOURCE_WAIT,
            )
            .await?;
        let t_wait = t0.elapsed();
        // Local writes journaled since the decision (or another origin's
        // group) may have raised a row's version: read them again, unless
        // nothing was recorded since.
        if !self.group.unchanged_since_read(self.versions.as_ref()) {
            let keys: Vec<Vec<u8>> = self.decided.iter().map(|(k, _)| k.clone()).collect();
            let now = self.versions.current(keys).await?;
            if self
                .decided
                .iter()
                .zip(&now)
                .any(|((_, mine), cur)| !wins(mine, cur.as_ref()))
            {
                return Ok(false);
            }
        }
        let t_read = t0.elapsed();
        let (rows, above) = {
            let mut g = self.reassert.lock().unwrap_or_else(|e| e.into_inner());
            (std::mem::take(&mut g.0), g.1)
        };
        if !rows.is_empty() {
            let changes = match current_rows(conn, &rows).await {
                Ok(c) => c,
                Err(e) => {
                    // Put them back for the retry of this group.
                    self.reassert.lock().unwrap_or_else(|e| e.into_inner()).0 = rows;
                    return Err(e);
                }
            };
            self.versions.reassert(changes, above).await?;
        }
        let lost = std::mem::take(&mut *self.lost.lock().unwrap_or_else(|e| e.into_inner()));
        if !lost.is_empty() {
            self.log(lost).await;
        }
        self.group.wait(&self.versions).await?;
        let t_record = t0.elapsed();
        conn.query_drop("COMMIT")
            .await
            .map_err(|e| classify("COMMIT", e))?;
        tracing::trace!(
            rows = self.decided.len(),
            end_us = t_end.as_micros() as u64,
            wait_us = (t_wait - t_end).as_micros() as u64,
            reread_us = (t_read - t_wait).as_micros() as u64,
            record_us = (t_record - t_read).as_micros() as u64,
            commit_us = (t0.elapsed() - t_record).as_micros() as u64,
            "mysql sink: partition check timings"
        );
        Ok(true)
    }
}

impl MysqlSink {
    /// Decides which changes of `group` (from `origin`) are applied.
    pub(super) async fn decide(
        &mut self,
        origin: &str,
        group: &[&Transaction],
    ) -> Result<Decision, ConnectorError> {
        let Some(versions) = self.versions.clone() else {
            return Ok(Decision::default());
        };
        let owner_policy = self.policy == dcsync_core::conflict::ConflictPolicy::Owner;
        let me = versions.me().to_string();
        // The owner's veto holds against a greater HLC: a group with a row
        // of a unit this DC owns always reads its versions.
        let vetoes_possible = owner_policy
            && group.iter().any(|tx| {
                tx.changes
                    .iter()
                    .any(|c| c.unit.and_then(|u| versions.owner_of(u)).as_deref() == Some(&me))
            });
        let GroupVersions {
            generation,
            keys,
            index,
            change_slots,
            mut current,
        } = read_versions(&versions, group, !vetoes_possible).await?;
        let mut d = Decision {
            generation,
            ..Decision::default()
        };
        for (ti, tx) in group.iter().enumerate() {
            let v = Version {
                hlc: tx.hlc,
                dc: origin.to_string(),
            };
            for (ci, c) in tx.changes.iter().enumerate() {
                let Payload::Row(r) = &c.payload else {
                    continue;
                };
                let slots = &change_slots[ti][ci];
                let lost_to = slots
                    .iter()
                    .filter_map(|i| current[*i].as_ref())
                    .find(|cur| !wins(&v, Some(cur)))
                    .cloned();
                let vetoed_by = if lost_to.is_none() && owner_policy {
                    let owner = c.unit.and_then(|u| versions.owner_of(u));
                    slots
                        .iter()
                        .filter_map(|i| current[*i].as_ref())
                        .find(|cur| owner_vetoes(&me, owner.as_deref(), &v, Some(cur)))
                        .cloned()
                } else {
                    None
                };
                if let Some(winner) = vetoed_by {
                    d.skip.insert((ti, ci));
                    d.reassert.push((r.clone(), c.unit));
                    d.reassert_above = d.reassert_above.max(tx.hlc);
                    d.lost.push(Lost {
                        row: r.clone(),
                        unit: c.unit,
                        loser: v.clone(),
                        seq: tx.seq,
                        decision: Some(format!(
                            "{me} owns unit {} and wrote the current value ({winner}): the change \
                             of {origin} seq {} ({}) was not applied, and {me} re-shipped its \
                             value to every DC",
                            c.unit.unwrap_or_default(),
                            tx.seq,
                            v
                        )),
                        winner,
                    });
                    continue;
                }
                match lost_to {
                    None => {
                        for i in slots {
                            current[*i] = Some(v.clone());
                        }
                    }
                    // The origin's own later write is applied already (a
                    // batch resent after some partitions committed): a
                    // replay, not a conflict between DCs.
                    Some(winner) if winner.dc == v.dc => {
                        d.skip.insert((ti, ci));
                    }
                    Some(winner) => {
                        d.skip.insert((ti, ci));
                        d.lost.push(Lost {
                            row: r.clone(),
                            unit: c.unit,
                            winner,
                            loser: v.clone(),
                            seq: tx.seq,
                            decision: None,
                        });
                    }
                }
            }
        }
        let t_unique = std::time::Instant::now();
        self.unique_collisions(origin, group, &mut d).await?;
        tracing::trace!(
            unique_us = t_unique.elapsed().as_micros() as u64,
            "mysql sink: unique keys checked"
        );
        // The versions the written rows will have (the last applied change
        // of each row; changes that lost do not move it; a row deleted for
        // a unique value takes the version of the change that won it).
        let mut written: Vec<Option<Version>> = vec![None; keys.len()];
        for (ti, tx) in group.iter().enumerate() {
            let v = Version {
                hlc: tx.hlc,
                dc: origin.to_string(),
            };
            for (ci, slots) in change_slots[ti].iter().enumerate() {
                if slots.is_empty() || d.skip.contains(&(ti, ci)) {
                    continue;
                }
                for i in slots {
                    written[*i] = Some(v.clone());
                }
            }
        }
        // Rows deleted for a unique value, unless a change of the group
        // writes them too (the later one wins, as in the group's order).
        let mut deleted: HashMap<Vec<u8>, Version> = HashMap::new();
        for (k, v) in std::mem::take(&mut d.decided) {
            if index.get(&k).is_none_or(|i| written[*i].is_none()) {
                deleted.insert(k, v);
            }
        }
        d.decided = deleted.into_iter().collect();
        d.decided.extend(
            written
                .into_iter()
                .zip(keys)
                .filter_map(|(v, k)| Some((k, v?))),
        );
        Ok(d)
    }
}

/// The versions of the rows a group writes, read from the index, with the
/// index's generation before the read: what [`MysqlSink::decide`] decides
/// on.
struct GroupVersions {
    /// [`Versions::generation`] before the read.
    generation: u64,
    /// Every row the group writes, once.
    keys: Vec<Vec<u8>>,
    /// Position of each key in `keys`.
    index: HashMap<Vec<u8>, usize, FastHash>,
    /// Per transaction and change: its rows, as positions in `keys`.
    change_slots: Vec<Vec<Vec<usize>>>,
    /// The current version of each key.
    current: Vec<Option<Version>>,
}

/// Reads the current versions of the rows `group` writes (each row's
/// version keys computed once). With `may_skip` (no owner veto possible),
/// a group stamped above the index's high-water mark
/// ([`Versions::high_water`]) skips the read: every row's version is below
/// each of its changes, which then win exactly as over no version (the
/// replay of one origin's backlog into a DC without local writes takes
/// this path). Errors: the index cannot be read.
async fn read_versions(
    versions: &Arc<dyn Versions>,
    group: &[&Transaction],
    may_skip: bool,
) -> Result<GroupVersions, ConnectorError> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut index: HashMap<Vec<u8>, usize, FastHash> = HashMap::default();
    let mut change_slots: Vec<Vec<Vec<usize>>> = Vec::with_capacity(group.len());
    for tx in group {
        let mut per_change = Vec::with_capacity(tx.changes.len());
        for c in &tx.changes {
            let mut slots = Vec::new();
            if let Payload::Row(r) = &c.payload {
                for k in row_version_keys(r) {
                    let n = keys.len();
                    let i = *index.entry(k).or_insert_with_key(|k| {
                        keys.push(k.clone());
                        n
                    });
                    slots.push(i);
                }
            }
            per_change.push(slots);
        }
        change_slots.push(per_change);
    }
    // Taken before the read: a version recorded after it raises it.
    let generation = versions.generation();
    let t0 = std::time::Instant::now();
    let lowest = group.iter().map(|tx| tx.hlc).min();
    let above =
        may_skip && lowest.is_some_and(|low| versions.high_water().is_none_or(|hw| hw < low));
    let current = if above {
        vec![None; keys.len()]
    } else {
        versions.current(keys.clone()).await?
    };
    tracing::trace!(
        keys = keys.len(),
        skipped = above,
        read_us = t0.elapsed().as_micros() as u64,
        "mysql sink: group versions read"
    );
    Ok(GroupVersions {
        generation,
        keys,
        index,
        change_slots,
        current,
    })
}

/// The binlog's end: `SHOW MASTER STATUS` (file and offset), then on
/// MariaDB `@@gtid_binlog_pos` (read after, so it is at or past that
/// offset: waiting for it may wait for a commit more, never for less).
/// The source is compared with it by [`BinlogPosition::reached`]: by GTID
/// where both have one, so that right after a primary switch a position
/// of the old primary is not taken for one of the new primary's.
pub(super) async fn binlog_end(
    conn: &mut mysql_async::Conn,
    store: &str,
) -> Result<BinlogPosition, ConnectorError> {
    let row: Option<mysql_async::Row> = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .map_err(|e| classify("reading the binlog position (SHOW MASTER STATUS)", e))?;
    let (file, pos) = row
        .and_then(|r| {
            Some((
                r.get_opt::<String, _>(0)?.ok()?,
                r.get_opt::<u64, _>(1)?.ok()?,
            ))
        })
        .ok_or_else(|| {
            ConnectorError::Definite(format!(
                "store {store}: conflict = \"lww\" needs the binary log on the target server \
                 (SHOW MASTER STATUS is empty): the local source must see local writes"
            ))
        })?;
    Ok(BinlogPosition {
        gtid_state: crate::server::gtid_binlog_pos(conn).await?,
        ..BinlogPosition::new(file, pos)
    })
}

/// Most rows read back in one query for the conflict log.
const READ_BACK_ROWS: usize = 500;

impl Check {
    /// Logs `lost`, each with the row it lost to as the target holds it
    /// now (read back on `conn`, in the open transaction; one query per
    /// table and [`READ_BACK_ROWS`] rows).
    async fn log(&self, lost: Vec<Lost>) {
        let mut kept: Vec<String> = vec!["(not read)".to_string(); lost.len()];
        // The kept rows are read on a connection of their own, outside the
        // partition's transaction: no snapshot of it, no locks it could wait
        // for (a read in it once saw no row; a failed read there would have
        // rolled the partition back).
        let mut conn = match self.read_conn().await {
            Ok(c) => Some(c),
            Err(e) => {
                for k in &mut kept {
                    *k = format!("(not readable: {e})");
                }
                None
            }
        };
        let mut by_table: HashMap<(String, String), Vec<usize>> = HashMap::new();
        for (i, l) in lost.iter().enumerate() {
            by_table
                .entry((l.row.table.schema.clone(), l.row.table.name.clone()))
                .or_default()
                .push(i);
        }
        for idx in by_table.values() {
            for chunk in idx.chunks(READ_BACK_ROWS) {
                if let Some(conn) = conn.as_mut() {
                    read_back(conn, &lost, chunk, &mut kept).await;
                }
            }
        }
        for (l, kept) in lost.into_iter().zip(kept) {
            let image = l.row.after.as_deref().or(l.row.before.as_deref());
            let key = image.map_or_else(
                || l.row.table.qualified(),
                |img| describe_row_key(&l.row, img),
            );
            let loser_value = match l.row.after.as_deref() {
                Some(a) => describe_image(&l.row, Some(a)),
                None => "(delete)".into(),
            };
            self.versions.conflict(Conflict {
                at_ms: dcsync_core::now_ms(),
                dc: String::new(),
                store: self.store.clone(),
                key,
                unit: l.unit,
                policy: "lww".into(),
                decision: l.decision.unwrap_or_else(|| {
                    format!(
                        "kept {} (greater version); the change of {} seq {} was not applied",
                        l.winner, l.loser.dc, l.seq
                    )
                }),
                winner: l.winner,
                winner_value: kept,
                loser: l.loser,
                loser_value,
                loser_seq: l.seq,
            });
        }
    }
}

/// `` `a` `` or `` (`a`,`b`) `` of `r`'s primary key columns.
fn pk_expr(r: &RowChange) -> String {
    let names: Vec<String> = r
        .primary_key()
        .iter()
        .filter_map(|i| r.table.columns.get(*i))
        .map(|c| quote_ident(&c.name))
        .collect();
    if names.len() == 1 {
        names[0].clone()
    } else {
        format!("({})", names.join(","))
    }
}

/// `` `a`,`b`,.. `` of all of `r`'s columns.
fn column_list(r: &RowChange) -> String {
    r.table
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(",")
}

/// `SELECT <all columns> FROM t WHERE <pk> = <pk of img><suffix>`.
fn select_row_sql(r: &RowChange, img: &[dcsync_core::Value], suffix: &str) -> String {
    let mut sql = format!(
        "SELECT {} FROM {}.{} WHERE {} = ",
        column_list(r),
        quote_ident(&r.table.schema),
        quote_ident(&r.table.name),
        pk_expr(r)
    )
    .into_bytes();
    sql.extend_from_slice(&pk_literal(r, img));
    sql.extend_from_slice(suffix.as_bytes());
    String::from_utf8_lossy(&sql).into_owned()
}

/// A fetched row of `r`'s table (its columns from index `offset` on) in
/// short readable form, as the conflict log shows rows.
fn describe_fetched(r: &RowChange, row: &mysql_async::Row, offset: usize) -> String {
    let cols: Vec<String> = r
        .table
        .columns
        .iter()
        .enumerate()
        .map(|(n, c)| {
            let v = row
                .as_ref(n + offset)
                .map_or("?".to_string(), |v| v.as_sql(false));
            format!("{}={}", c.name, dcsync_core::conflict::truncate(&v, 64))
        })
        .collect();
    dcsync_core::conflict::truncate(
        &format!("{{{}}}", cols.join(", ")),
        dcsync_core::conflict::IMAGE_CHARS,
    )
}

/// A value read back from the target as a change value: the text protocol
/// gives bytes, which the sink writes back as literals (integers keep
/// their type).
pub(super) fn from_mysql(v: Option<&mysql_async::Value>) -> dcsync_core::Value {
    match v {
        Some(mysql_async::Value::Bytes(b)) => dcsync_core::Value::Bytes(b.clone()),
        Some(mysql_async::Value::Int(x)) => dcsync_core::Value::Int(*x),
        Some(mysql_async::Value::UInt(x)) => dcsync_core::Value::UInt(*x),
        Some(mysql_async::Value::NULL) | None => dcsync_core::Value::Null,
        Some(other) => dcsync_core::Value::Bytes(other.as_sql(true).into_bytes()),
    }
}

/// The primary key of `r` in `image` as a SQL tuple `(v1,v2)` (or `v1`).
fn pk_literal(r: &RowChange, image: &[dcsync_core::Value]) -> Vec<u8> {
    let pk = r.primary_key();
    let mut out = Vec::new();
    if pk.len() > 1 {
        out.push(b'(');
    }
    for (n, i) in pk.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        match image.get(*i) {
            Some(v) => push_literal(&mut out, v, true),
            None => out.extend_from_slice(b"NULL"),
        }
    }
    if pk.len() > 1 {
        out.push(b')');
    }
    out
}

/// Reads the current rows of the losers `chunk` (all of one table) into
/// `kept`, in short readable form; `(no row)` where there is none.
async fn read_back(
    conn: &mut mysql_async::Conn,
    lost: &[Lost],
    chunk: &[usize],
    kept: &mut [String],
) {
    let Some(first) = chunk.first().map(|i| &lost[*i].row) else {
        return;
    };
    let pk_expr = pk_expr(first);
    let mut sql = b"SELECT CASE ".to_vec();
    let mut list = Vec::new();
    for i in chunk {
        let r = &lost[*i].row;
        let Some(img) = r.after.as_deref().or(r.before.as_deref()) else {
            continue;
        };
        let lit = pk_literal(r, img);
        sql.extend_from_slice(format!(" WHEN {pk_expr} = ").as_bytes());
        sql.extend_from_slice(&lit);
        sql.extend_from_slice(format!(" THEN {i}").as_bytes());
        if !list.is_empty() {
            list.push(b',');
        }
        list.extend_from_slice(&lit);
    }
    if list.is_empty() {
        return;
    }
    sql.extend_from_slice(b" END, ");
    sql.extend_from_slice(column_list(first).as_bytes());
    sql.extend_from_slice(
        format!(
            " FROM {}.{} WHERE {pk_expr} IN (",
            quote_ident(&first.table.schema),
            quote_ident(&first.table.name)
        )
        .as_bytes(),
    );
    sql.extend_from_slice(&list);
    sql.push(b')');
    for i in chunk {
        kept[*i] = "(no row)".into();
    }
    let Ok(sql) = String::from_utf8(sql) else {
        return;
    };
    let rows: Vec<mysql_async::Row> = match conn.query(sql).await {
        Ok(rows) => rows,
        Err(e) => {
            for i in chunk {
                kept[*i] = format!("(not readable: {e})");
            }
            return;
        }
    };
    let returned = rows.len();
    for row in rows {
        let Some(Ok(i)) = row.get_opt::<usize, _>(0) else {
            continue;
        };
        let Some(slot) = kept.get_mut(i) else {
            continue;
        };
        *slot = describe_fetched(first, &row, 1);
    }
    let missing = chunk.iter().filter(|i| kept[**i] == "(no row)").count();
    if missing > 0 {
        tracing::debug!(
            table = %first.table.qualified(), asked = chunk.len(), returned, missing,
            "conflict log: kept rows not found by the batch read; reading them one by one"
        );
        for i in chunk {
            if kept[*i] == "(no row)" {
                kept[*i] = read_one(conn, &lost[*i].row).await;
            }
        }
    }
}

/// The current row of `r`'s primary key in short readable form, read on
/// its own (`(no row)` if there is none).
async fn read_one(conn: &mut mysql_async::Conn, r: &RowChange) -> String {
    let Some(img) = r.after.as_deref().or(r.before.as_deref()) else {
        return "(no row)".into();
    };
    match conn
        .query_first::<mysql_async::Row, _>(select_row_sql(r, img, ""))
        .await
    {
        Ok(Some(row)) => describe_fetched(r, &row, 0),
        Ok(None) => "(no row)".into(),
        Err(e) => format!("(not readable: {e})"),
    }
}

/// The version-index entries of the rows of `parts` (a transaction split
/// in parts, applied whole: its versions are recorded, not decided).
pub(super) fn part_versions(origin: &str, parts: &[&Transaction]) -> Vec<(Vec<u8>, Version)> {
    let mut out = Vec::new();
    for tx in parts {
        for c in &tx.changes {
            if let Payload::Row(r) = &c.payload {
                for k in row_version_keys(r) {
                    out.push((
                        k,
                        Version {
                            hlc: tx.hlc,
                            dc: origin.to_string(),
                        },
                    ));
                }
            }
        }
    }
    out
}

/// `owner`: the owner's current rows of the vetoed changes `rows` (read
/// with `FOR UPDATE` on `conn`, in the partition's open transaction, so no
/// local write changes them before the commit), as changes to re-ship: an
/// UPDATE to the row as it is, or a DELETE where there is no row.
async fn current_rows(
    conn: &mut mysql_async::Conn,
    rows: &[(RowChange, Option<u32>)],
) -> Result<Vec<dcsync_core::Change>, ConnectorError> {
    let mut out = Vec::with_capacity(rows.len());
    for (r, unit) in rows {
        let Some(img) = r.after.as_deref().or(r.before.as_deref()) else {
            continue;
        };
        let pk = r.primary_key();
        let sql = select_row_sql(r, img, " FOR UPDATE");
        let row: Option<mysql_async::Row> = conn
            .query_first(sql)
            .await
            .map_err(|e| classify(&format!("reading {} to re-ship it", r.table.qualified()), e))?;
        let change = match row {
            Some(row) => {
                let image: Vec<dcsync_core::Value> = (0..r.table.columns.len())
                    .map(|i| from_mysql(row.as_ref(i)))
                    .collect();
                RowChange {
                    table: r.table.clone(),
                    kind: dcsync_core::RowKind::Update,
                    before: Some(image.clone()),
                    after: Some(image),
                }
            }
            None => {
                let mut image = vec![dcsync_core::Value::Null; r.table.columns.len()];
                for i in &pk {
                    if let (Some(slot), Some(v)) = (image.get_mut(*i), img.get(*i)) {
                        *slot = v.clone();
                    }
                }
                RowChange {
                    table: r.table.clone(),
                    kind: dcsync_core::RowKind::Delete,
                    before: Some(image),
                    after: None,
                }
            }
        };
        out.push(dcsync_core::Change {
            unit: *unit,
            payload: dcsync_core::Payload::Row(change),
        });
    }
    Ok(out)
}
