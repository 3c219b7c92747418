//! Secondary UNIQUE keys under `lww` / `owner` (docs/conflicts.md,
//! "Secondary unique keys"): two rows taking the same unique value are a
//! conflict between the two rows, decided by their versions.

use super::lww::{binlog_end, Decision, Lost, SOURCE_WAIT};
use super::{classify, quote_ident, MysqlSink};
use crate::position::BinlogPosition;
use crate::sqltext::push_literal;
use dcsync_core::conflict::{describe_row_key, row_version_keys, wins, Version, Versions};
use dcsync_core::connector::ConnectorError;
use dcsync_core::{Payload, RowChange, Transaction};
use mysql_async::prelude::Queryable;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Most unique values looked up in one query.
const UNIQUE_LOOKUP_ROWS: usize = 500;

/// A winning change's value of one secondary unique index.
struct Candidate {
    ti: usize,
    ci: usize,
    /// Its canonical bytes per column ([`dcsync_core::Value::unit_key_bytes`]).
    values: Vec<Vec<u8>>,
}

impl MysqlSink {
    /// Secondary UNIQUE keys: a winning change whose after image holds a
    /// unique value that another row of the target (a primary key the group
    /// does not write) holds is a conflict between the two rows, decided by
    /// their versions: the change wins (that row is deleted, recorded as the
    /// loser, and its key takes the change's version, so its own change
    /// loses wherever it arrives later) or loses (it is not applied). Both
    /// DCs compare the same two versions, so both keep the same row.
    pub(super) async fn unique_collisions(
        &mut self,
        origin: &str,
        group: &[&Transaction],
        d: &mut Decision,
    ) -> Result<(), ConnectorError> {
        let Some(versions) = self.versions.clone() else {
            return Ok(());
        };
        // Nothing to look up unless a table of the group has a secondary
        // unique key (each table checked once).
        let mut seen: HashSet<(&str, &str)> = HashSet::new();
        let mut any_unique = false;
        for c in group.iter().flat_map(|tx| &tx.changes) {
            if let Payload::Row(r) = &c.payload {
                if seen.insert((r.table.schema.as_str(), r.table.name.as_str())) {
                    let key = (r.table.schema.clone(), r.table.name.clone());
                    any_unique |= self.sql.get(&key).is_some_and(|t| !t.uniques.is_empty());
                }
            }
        }
        if !any_unique {
            return Ok(());
        }
        // Candidates per (table, unique index).
        let mut by_index: HashMap<(String, String, usize), Vec<Candidate>> = HashMap::new();
        let mut written: HashSet<Vec<u8>, super::lww::FastHash> = HashSet::default();
        for (ti, tx) in group.iter().enumerate() {
            for (ci, c) in tx.changes.iter().enumerate() {
                let Payload::Row(r) = &c.payload else {
                    continue;
                };
                if d.skip.contains(&(ti, ci)) {
                    continue;
                }
                written.extend(row_version_keys(r));
                let Some(after) = r.after.as_deref() else {
                    continue;
                };
                let key = (r.table.schema.clone(), r.table.name.clone());
                let Some(t) = self.sql.get(&key) else {
                    continue;
                };
                for (u, cols) in t.uniques.iter().enumerate() {
                    let values: Option<Vec<Vec<u8>>> = cols
                        .iter()
                        .map(|i| after.get(*i).and_then(dcsync_core::Value::unit_key_bytes))
                        .collect();
                    // NULLs never collide in a unique index.
                    if let Some(values) = values {
                        by_index
                            .entry((key.0.clone(), key.1.clone(), u))
                            .or_default()
                            .push(Candidate { ti, ci, values });
                    }
                }
            }
        }
        if by_index.is_empty() {
            return Ok(());
        }
        // Local rows that took a unique value must be in the version index.
        self.wait_for_local_source(&versions).await?;
        let mut found: Vec<(usize, usize, RowChange)> = Vec::new();
        for ((schema, table, u), cands) in &by_index {
            let Some(t) = self.sql.get(&(schema.clone(), table.clone())) else {
                continue;
            };
            let Some(meta) = group
                .get(cands[0].ti)
                .and_then(|tx| tx.changes.get(cands[0].ci))
                .and_then(|c| match &c.payload {
                    Payload::Row(r) => Some(r.table.clone()),
                    Payload::Redis(_) => None,
                })
            else {
                continue;
            };
            let cols = t.uniques[*u].clone();
            let pk = t.pk.clone();
            for chunk in cands.chunks(UNIQUE_LOOKUP_ROWS) {
                let rows = self.lookup_unique(&meta, &pk, &cols, chunk).await?;
                for image in rows {
                    let existing = RowChange {
                        table: meta.clone(),
                        kind: dcsync_core::RowKind::Delete,
                        before: Some(image),
                        after: None,
                    };
                    let Some(img) = existing.before.as_deref() else {
                        continue;
                    };
                    let Some(k) = dcsync_core::conflict::row_version_key(&existing, img) else {
                        continue;
                    };
                    if written.contains(&k) {
                        // The group rewrites that row itself.
                        continue;
                    }
                    let held: Vec<Vec<u8>> = cols
                        .iter()
                        .map(|i| {
                            img.get(*i)
                                .and_then(dcsync_core::Value::unit_key_bytes)
                                .unwrap_or_default()
                        })
                        .collect();
                    let same = |a: &[Vec<u8>], b: &[Vec<u8>]| {
                        a.len() == b.len()
                            && a.iter().zip(b).all(|(x, y)| x.eq_ignore_ascii_case(y))
                    };
                    if let Some(c) = chunk.iter().find(|c| same(&c.values, &held)) {
                        found.push((c.ti, c.ci, existing));
                    }
                }
            }
        }
        for (ti, ci, existing) in found {
            if d.skip.contains(&(ti, ci)) {
                continue;
            }
            let (Some(tx), Some(img)) = (group.get(ti), existing.before.as_deref()) else {
                continue;
            };
            let Some(Payload::Row(incoming)) = tx.changes.get(ci).map(|c| &c.payload) else {
                continue;
            };
            let unit = tx.changes.get(ci).and_then(|c| c.unit);
            let Some(k) = dcsync_core::conflict::row_version_key(&existing, img) else {
                continue;
            };
            let held_by = versions
                .current(vec![k.clone()])
                .await?
                .into_iter()
                .next()
                .flatten();
            let mine = Version {
                hlc: tx.hlc,
                dc: origin.to_string(),
            };
            let other = describe_row_key(&existing, img);
            let unknown = Version {
                hlc: dcsync_core::Hlc(0),
                dc: "(unknown)".into(),
            };
            if wins(&mine, held_by.as_ref()) {
                d.lost.push(Lost {
                    row: existing.clone(),
                    unit,
                    winner: mine.clone(),
                    loser: held_by.unwrap_or(unknown),
                    seq: 0,
                    decision: Some(format!(
                        "the change of {origin} seq {} (greater version {mine}) takes a unique value \
                         of {other}; that row was deleted",
                        tx.seq
                    )),
                });
                d.decided.push((k, mine));
                d.deletes.push(existing);
            } else {
                d.skip.insert((ti, ci));
                d.lost.push(Lost {
                    row: incoming.clone(),
                    unit,
                    winner: held_by.clone().unwrap_or(unknown),
                    loser: mine,
                    seq: tx.seq,
                    decision: Some(format!(
                        "{other} holds a unique value the change of {origin} seq {} would take, and \
                         has the greater version: the change was not applied",
                        tx.seq
                    )),
                });
            }
        }
        Ok(())
    }

    /// Reads the binlog's end and waits for the local source to reach it.
    async fn wait_for_local_source(
        &mut self,
        versions: &Arc<dyn Versions>,
    ) -> Result<(), ConnectorError> {
        let store = self.store.clone();
        let conn = self.conn(0).await?;
        let end = binlog_end(conn, &store).await?;
        versions
            .wait_source(
                Box::new(move |p| BinlogPosition::from_position(p).is_ok_and(|b| b.reached(&end))),
                SOURCE_WAIT,
            )
            .await
    }

    /// The target rows holding one of `cands`' values of the unique index
    /// `cols`, as images with the primary key and `cols` filled in (as
    /// text; other columns NULL).
    async fn lookup_unique(
        &mut self,
        meta: &Arc<dcsync_core::TableMeta>,
        pk: &[usize],
        cols: &[usize],
        cands: &[Candidate],
    ) -> Result<Vec<Vec<dcsync_core::Value>>, ConnectorError> {
        let name = |i: &usize| {
            meta.columns
                .get(*i)
                .map_or("?".to_string(), |c| quote_ident(&c.name))
        };
        let wanted: Vec<usize> = pk.iter().chain(cols).copied().collect();
        let tuple = |v: &[String]| {
            if v.len() == 1 {
                v[0].clone()
            } else {
                format!("({})", v.join(","))
            }
        };
        let uk = tuple(&cols.iter().map(name).collect::<Vec<_>>());
        let mut sql = format!(
            "SELECT {} FROM {}.{} WHERE {uk} IN (",
            wanted.iter().map(name).collect::<Vec<_>>().join(","),
            quote_ident(&meta.schema),
            quote_ident(&meta.name)
        )
        .into_bytes();
        for (n, c) in cands.iter().enumerate() {
            if n > 0 {
                sql.push(b',');
            }
            if c.values.len() > 1 {
                sql.push(b'(');
            }
            for (m, v) in c.values.iter().enumerate() {
                if m > 0 {
                    sql.push(b',');
                }
                push_literal(&mut sql, &dcsync_core::Value::Bytes(v.clone()), false);
            }
            if c.values.len() > 1 {
                sql.push(b')');
            }
        }
        sql.push(b')');
        let sql = String::from_utf8_lossy(&sql).into_owned();
        let conn = self.conn(0).await?;
        let rows: Vec<mysql_async::Row> = conn.query(sql).await.map_err(|e| {
            classify(
                &format!("looking up unique values of {}", meta.qualified()),
                e,
            )
        })?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let mut image = vec![dcsync_core::Value::Null; meta.columns.len()];
                for (n, i) in wanted.iter().enumerate() {
                    if let (Some(slot), Some(v)) = (image.get_mut(*i), row.as_ref(n)) {
                        *slot = super::lww::from_mysql(Some(v));
                    }
                }
                image
            })
            .collect())
    }
}
