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
    describe_image, describe_row_key, row_version_keys, wins, Conflict, Version,
};
use dcsync_core::connector::ConnectorError;
use dcsync_core::{Payload, RowChange, Transaction};
use mysql_async::prelude::Queryable;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// How long a group waits for the local source to reach the binlog's end
/// before it fails (transiently) and is retried.
const SOURCE_WAIT: Duration = Duration::from_secs(30);

/// A change that lost against the current version of its row.
pub(super) struct Lost {
    row: RowChange,
    unit: Option<u32>,
    winner: Version,
    loser: Version,
    seq: u64,
}

/// What the lww rule decided for one group.
#[derive(Default)]
pub(super) struct Decision {
    /// `(transaction index, change index)` of the changes left out.
    pub(super) skip: HashSet<(usize, usize)>,
    /// Each written row's key with the version it will have.
    pub(super) decided: Vec<(Vec<u8>, Version)>,
    /// The changes that lost, logged by the first partition to commit.
    pub(super) lost: Vec<Lost>,
}

/// The check every partition of an lww group runs after its statements
/// and before its `COMMIT` (see the module docs). Partitions finish
/// independently: none holds its locks while waiting for another, so an
/// application transaction that waits for one partition's rows while
/// holding rows another needs cannot deadlock them unseen.
pub(super) struct Check {
    versions: Arc<dyn Versions>,
    store: String,
    /// Every row the group writes, with the version it will have.
    decided: Vec<(Vec<u8>, Version)>,
    /// The group's losing changes, until a partition logs them (before its
    /// `COMMIT`: a crash right after the commit cannot lose them; a group
    /// retried after a failure may log them again, which readers of the
    /// log fold, see `dcsync conflicts`).
    lost: std::sync::Mutex<Vec<Lost>>,
}

impl Check {
    /// The check of a group of `store` that writes `decided`.
    pub(super) fn new(versions: Arc<dyn Versions>, store: &str, d: Decision) -> Check {
        Check {
            versions,
            store: store.to_string(),
            decided: d.decided,
            lost: std::sync::Mutex::new(d.lost),
        }
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
        let row: Option<mysql_async::Row> = conn
            .query_first("SHOW MASTER STATUS")
            .await
            .map_err(|e| classify("reading the binlog position (SHOW MASTER STATUS)", e))?;
        let Some((file, pos)) = row.and_then(|r| {
            Some((
                r.get_opt::<String, _>(0)?.ok()?,
                r.get_opt::<u64, _>(1)?.ok()?,
            ))
        }) else {
            return Err(ConnectorError::Definite(format!(
                "store {}: conflict = \"lww\" needs the binary log on the target server \
                 (SHOW MASTER STATUS is empty): the local source must see local writes",
                self.store
            )));
        };
        self.versions
            .wait_source(
                Box::new(move |p| {
                    BinlogPosition::from_position(p).is_ok_and(|b| b.at_or_after(&file, pos))
                }),
                SOURCE_WAIT,
            )
            .await?;
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
        let lost = std::mem::take(&mut *self.lost.lock().unwrap_or_else(|e| e.into_inner()));
        if !lost.is_empty() {
            self.log(conn, lost).await;
        }
        self.versions.record(self.decided.clone()).await?;
        conn.query_drop("COMMIT")
            .await
            .map_err(|e| classify("COMMIT", e))?;
        Ok(true)
    }
}

impl MysqlSink {
    /// Decides which changes of `group` (from `origin`) are applied.
    pub(super) async fn decide(
        &self,
        origin: &str,
        group: &[&Transaction],
    ) -> Result<Decision, ConnectorError> {
        let Some(versions) = &self.versions else {
            return Ok(Decision::default());
        };
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
        for tx in group {
            for c in &tx.changes {
                if let Payload::Row(r) = &c.payload {
                    for k in row_version_keys(r) {
                        index.entry(k.clone()).or_insert_with(|| {
                            keys.push(k);
                            keys.len() - 1
                        });
                    }
                }
            }
        }
        let mut current = versions.current(keys.clone()).await?;
        let mut d = Decision::default();
        for (ti, tx) in group.iter().enumerate() {
            let v = Version {
                hlc: tx.hlc,
                dc: origin.to_string(),
            };
            for (ci, c) in tx.changes.iter().enumerate() {
                let Payload::Row(r) = &c.payload else {
                    continue;
                };
                let slots: Vec<usize> = row_version_keys(r)
                    .iter()
                    .filter_map(|k| index.get(k).copied())
                    .collect();
                let lost_to = slots
                    .iter()
                    .filter_map(|i| current[*i].as_ref())
                    .find(|cur| !wins(&v, Some(cur)))
                    .cloned();
                match lost_to {
                    None => {
                        for i in slots {
                            current[i] = Some(v.clone());
                        }
                    }
                    Some(winner) => {
                        d.skip.insert((ti, ci));
                        d.lost.push(Lost {
                            row: r.clone(),
                            unit: c.unit,
                            winner,
                            loser: v.clone(),
                            seq: tx.seq,
                        });
                    }
                }
            }
        }
        // The versions the written rows will have (the last applied change
        // of each row; changes that lost do not move it).
        let mut written: HashMap<Vec<u8>, Version> = HashMap::new();
        for (ti, tx) in group.iter().enumerate() {
            for (ci, c) in tx.changes.iter().enumerate() {
                if d.skip.contains(&(ti, ci)) {
                    continue;
                }
                if let Payload::Row(r) = &c.payload {
                    for k in row_version_keys(r) {
                        written.insert(
                            k,
                            Version {
                                hlc: tx.hlc,
                                dc: origin.to_string(),
                            },
                        );
                    }
                }
            }
        }
        d.decided = written.into_iter().collect();
        Ok(d)
    }
}

/// Most rows read back in one query for the conflict log.
const READ_BACK_ROWS: usize = 500;

impl Check {
    /// Logs `lost`, each with the row it lost to as the target holds it
    /// now (read back on `conn`, in the open transaction; one query per
    /// table and [`READ_BACK_ROWS`] rows).
    async fn log(&self, conn: &mut mysql_async::Conn, lost: Vec<Lost>) {
        let mut kept: Vec<String> = vec!["(not read)".to_string(); lost.len()];
        let mut by_table: HashMap<(String, String), Vec<usize>> = HashMap::new();
        for (i, l) in lost.iter().enumerate() {
            by_table
                .entry((l.row.table.schema.clone(), l.row.table.name.clone()))
                .or_default()
                .push(i);
        }
        for idx in by_table.values() {
            for chunk in idx.chunks(READ_BACK_ROWS) {
                read_back(conn, &lost, chunk, &mut kept).await;
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
                decision: format!(
                    "kept {} (greater version); the change of {} seq {} was not applied",
                    l.winner, l.loser.dc, l.seq
                ),
                winner: l.winner,
                winner_value: kept,
                loser: l.loser,
                loser_value,
                loser_seq: l.seq,
            });
        }
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
    let pk = first.primary_key();
    let pk_names: Vec<String> = pk
        .iter()
        .filter_map(|i| first.table.columns.get(*i))
        .map(|c| quote_ident(&c.name))
        .collect();
    let pk_expr = if pk_names.len() == 1 {
        pk_names[0].clone()
    } else {
        format!("({})", pk_names.join(","))
    };
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
    sql.extend_from_slice(
        first
            .table
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(",")
            .as_bytes(),
    );
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
    for row in rows {
        let Some(Ok(i)) = row.get_opt::<usize, _>(0) else {
            continue;
        };
        let Some(slot) = kept.get_mut(i) else {
            continue;
        };
        let cols: Vec<String> = first
            .table
            .columns
            .iter()
            .enumerate()
            .map(|(n, c)| {
                let v = row
                    .as_ref(n + 1)
                    .map_or("?".to_string(), |v| v.as_sql(false));
                format!("{}={}", c.name, dcsync_core::conflict::truncate(&v, 64))
            })
            .collect();
        *slot = dcsync_core::conflict::truncate(
            &format!("{{{}}}", cols.join(", ")),
            dcsync_core::conflict::IMAGE_CHARS,
        );
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
