//! `conflict = "lww"`: last writer wins by version (docs/conflicts.md).
//!
//! Per group, before planning, the versions of every row the group writes
//! are read from the agent's version index ([`Versions::current`]); a row
//! change is applied only if its version `(transaction HLC, origin DC)` is
//! at least the row's current one ([`wins`]); a change that loses is left
//! out of the plan and recorded as a conflict after the commit.
//!
//! The index knows a local write only once this DC's source has journaled
//! it. So the partitions' transactions run their statements (which lock
//! every row they write) without `COMMIT`; then the sink reads the binlog's
//! end (`SHOW MASTER STATUS`), waits until the local source has journaled
//! up to it ([`Versions::wait_source`]: every local write that could have
//! touched these rows before the locks is then in the index), and reads the
//! versions of the rows it wrote again. If a local write with a greater
//! version landed in between, everything is rolled back and the group is
//! decided again; otherwise the new versions are recorded
//! ([`Versions::record`], durable) and the partitions commit. A local write
//! that waits for the locks commits after the group, and its source stamps
//! it above the group's HLC (the source observes the marker's HLC), so it
//! is correctly newer.

use super::{classify, quote_ident, MysqlSink, ROLLBACK_TIMEOUT};
use crate::position::BinlogPosition;
use crate::sqltext::push_literal;
use dcsync_core::conflict::{
    describe_image, describe_row_key, row_version_keys, wins, Conflict, Version,
};
use dcsync_core::connector::ConnectorError;
use dcsync_core::{Payload, RowChange, Transaction};
use mysql_async::prelude::Queryable;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// How long a group waits for the local source to reach the binlog's end
/// before it fails (transiently) and is retried.
const SOURCE_WAIT: Duration = Duration::from_secs(30);

/// Times a group is decided again because local writes landed on its rows
/// while it ran, before the apply fails (transiently) and is retried later.
pub(super) const REDECIDE: usize = 5;

/// A change that lost against the current version of its row.
pub(super) struct Lost<'a> {
    row: &'a RowChange,
    unit: Option<u32>,
    winner: Version,
    loser: Version,
    seq: u64,
}

/// What the lww rule decided for one group.
#[derive(Default)]
pub(super) struct Decision<'a> {
    /// `(transaction index, change index)` of the changes left out.
    pub(super) skip: HashSet<(usize, usize)>,
    /// Each written row's key with the version it will have.
    decided: Vec<(Vec<u8>, Version)>,
    lost: Vec<Lost<'a>>,
}

/// How finishing an lww group went.
pub(super) enum Finish {
    /// Committed.
    Committed,
    /// Rolled back: a local write with a greater version landed on a row
    /// of the group; decide again.
    Redecide,
}

impl MysqlSink {
    /// Decides which changes of `group` (from `origin`) are applied.
    pub(super) async fn decide<'a>(
        &self,
        origin: &str,
        group: &[&'a Transaction],
    ) -> Result<Decision<'a>, ConnectorError> {
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
                            row: r,
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

    /// After the statements of every partition in `ran` ran without
    /// `COMMIT`: waits for the local source, checks that no local write of
    /// a greater version landed on the group's rows, records the versions
    /// and commits (or rolls everything back). The connections of `ran`
    /// hold open transactions on entry.
    pub(super) async fn finish(
        &mut self,
        ran: &[usize],
        d: &Decision<'_>,
    ) -> Result<Finish, ConnectorError> {
        let Some(versions) = self.versions.clone() else {
            return Err(ConnectorError::Definite(
                "lww without a version index".into(),
            ));
        };
        let checked = async {
            let conn = self.conn(ran.first().copied().unwrap_or(0)).await?;
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
            versions
                .wait_source(
                    Box::new(move |p| {
                        BinlogPosition::from_position(p).is_ok_and(|b| b.at_or_after(&file, pos))
                    }),
                    SOURCE_WAIT,
                )
                .await?;
            let keys: Vec<Vec<u8>> = d.decided.iter().map(|(k, _)| k.clone()).collect();
            let now = versions.current(keys).await?;
            let overtaken = d
                .decided
                .iter()
                .zip(&now)
                .any(|((_, mine), cur)| !wins(mine, cur.as_ref()));
            if overtaken {
                return Ok(false);
            }
            versions.record(d.decided.clone()).await?;
            Ok(true)
        }
        .await;
        let commit = match checked {
            Ok(c) => c,
            Err(e) => {
                self.roll_back(ran).await;
                return Err(e);
            }
        };
        if !commit {
            self.roll_back(ran).await;
            return Ok(Finish::Redecide);
        }
        let mut first_err = None;
        for p in ran {
            let Some(conn) = self.conns[*p].as_mut() else {
                first_err.get_or_insert(ConnectorError::Transient(format!(
                    "apply connection {p} lost before COMMIT"
                )));
                continue;
            };
            if let Err(e) = conn.query_drop("COMMIT").await {
                self.conns[*p] = None;
                first_err.get_or_insert(classify("COMMIT", e));
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(Finish::Committed),
        }
    }

    /// Rolls back the open transactions of `ran` (dropping a connection
    /// whose `ROLLBACK` fails, which rolls it back too).
    pub(super) async fn roll_back(&mut self, ran: &[usize]) {
        for p in ran {
            if let Some(conn) = self.conns[*p].as_mut() {
                let ok = matches!(
                    tokio::time::timeout(ROLLBACK_TIMEOUT, conn.query_drop("ROLLBACK")).await,
                    Ok(Ok(()))
                );
                if !ok {
                    self.conns[*p] = None;
                }
            }
        }
    }

    /// Records the conflicts of a committed group (the kept row read back
    /// for the log, best effort).
    pub(super) async fn report_lost(&mut self, origin: &str, d: Decision<'_>) {
        let Some(versions) = self.versions.clone() else {
            return;
        };
        for l in d.lost {
            let image = l.row.after.as_deref().or(l.row.before.as_deref());
            let kept = match image {
                Some(img) => self.current_row(l.row, img).await,
                None => "(unknown)".into(),
            };
            let key = image.map_or_else(
                || l.row.table.qualified(),
                |img| describe_row_key(l.row, img),
            );
            let loser_value = match l.row.after.as_deref() {
                Some(a) => describe_image(l.row, Some(a)),
                None => "(delete)".into(),
            };
            versions.conflict(Conflict {
                at_ms: dcsync_core::now_ms(),
                dc: String::new(),
                store: self.store.clone(),
                key,
                unit: l.unit,
                policy: "lww".into(),
                decision: format!(
                    "kept {} (greater version); the change of {origin} seq {} was not applied",
                    l.winner, l.seq
                ),
                winner: l.winner,
                winner_value: kept,
                loser: l.loser,
                loser_value,
                loser_seq: l.seq,
            });
        }
    }

    /// The target's current row with `r`'s primary key (taken from
    /// `image`), in short readable form.
    async fn current_row(&mut self, r: &RowChange, image: &[dcsync_core::Value]) -> String {
        let pk = r.primary_key();
        let mut sql = format!(
            "SELECT {} FROM {}.{} WHERE ",
            r.table
                .columns
                .iter()
                .map(|c| quote_ident(&c.name))
                .collect::<Vec<_>>()
                .join(","),
            quote_ident(&r.table.schema),
            quote_ident(&r.table.name)
        )
        .into_bytes();
        for (n, i) in pk.iter().enumerate() {
            if n > 0 {
                sql.extend_from_slice(b" AND ");
            }
            let name = r.table.columns.get(*i).map_or("?", |c| c.name.as_str());
            sql.extend_from_slice(quote_ident(name).as_bytes());
            sql.extend_from_slice(b" <=> ");
            match image.get(*i) {
                Some(v) => push_literal(&mut sql, v, true),
                None => sql.extend_from_slice(b"NULL"),
            }
        }
        let Ok(sql) = String::from_utf8(sql) else {
            return "(not readable)".into();
        };
        let Ok(conn) = self.conn(0).await else {
            return "(not readable)".into();
        };
        match conn.query_first::<mysql_async::Row, _>(sql).await {
            Ok(Some(row)) => {
                let cols: Vec<String> = r
                    .table
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let v = row.as_ref(i).map_or("?".to_string(), |v| v.as_sql(false));
                        format!("{}={}", c.name, dcsync_core::conflict::truncate(&v, 64))
                    })
                    .collect();
                dcsync_core::conflict::truncate(
                    &format!("{{{}}}", cols.join(", ")),
                    dcsync_core::conflict::IMAGE_CHARS,
                )
            }
            Ok(None) => "(no row)".into(),
            Err(e) => format!("(not readable: {e})"),
        }
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
