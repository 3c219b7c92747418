//! Applying a source transaction split in parts (see the module docs of
//! [`super`], "Transactions split in parts"): one target transaction on
//! connection 0, held open between [`dcsync_core::connector::Sink::apply`]
//! calls until the last part.

use super::{
    marker_position, marker_table, push_marker_upsert, MysqlSink, MARKER_SLOTS, ROLLBACK_TIMEOUT,
};
use crate::error::classify;
use crate::plan::{GroupPlan, Spread};
use crate::sqltext::push_literal;
use dcsync_core::connector::ConnectorError;
use dcsync_core::{Payload, Transaction, Value};
use mysql_async::prelude::Queryable;

/// A source transaction split in parts whose target transaction is open.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) origin: String,
    /// Seq of its first part (names the marker slots written).
    pub(super) first: u64,
    /// Seq of the next part to apply.
    pub(super) next: u64,
}

impl MysqlSink {
    /// Rolls back a held split transaction, if any (the connection is
    /// dropped if the rollback does not succeed in time).
    pub(super) async fn release_held(&mut self) {
        let Some(h) = self.held.take() else {
            return;
        };
        tracing::info!(store = %self.store, origin = %h.origin, first = h.first, next = h.next,
            "mysql sink: rolling back a split transaction whose remaining parts did not come; it is applied again from its first part");
        if let Some(mut conn) = self.conns.first_mut().and_then(Option::take) {
            if matches!(
                tokio::time::timeout(ROLLBACK_TIMEOUT, conn.query_drop("ROLLBACK")).await,
                Ok(Ok(()))
            ) {
                self.conns[0] = Some(conn);
            }
        }
    }

    /// Applies consecutive parts of one split transaction inside its target
    /// transaction on connection 0, opening it at the first part and
    /// committing it with the last. Returns the last part's seq once
    /// committed, `None` while parts remain.
    pub(super) async fn apply_parts(
        &mut self,
        origin: &str,
        parts: &[&Transaction],
    ) -> Result<Option<u64>, ConnectorError> {
        let (Some(first_part), Some(last_part)) = (parts.first(), parts.last()) else {
            return Ok(None);
        };
        self.prepare_tables(parts).await?;
        let n = self.conns.len() as u64;
        let marker = marker_table();
        let mut first_sql = Vec::new();
        let start = match &self.held {
            Some(h) => h.first,
            None => {
                // The marker rows first: the source half of this DC sees
                // them before any data row and skips the rest as an echo.
                first_sql.extend_from_slice(b"BEGIN;\n");
                for p in 0..n {
                    push_marker_upsert(
                        &mut first_sql,
                        origin,
                        &self.store,
                        p * MARKER_SLOTS + first_part.seq % MARKER_SLOTS,
                        first_part,
                    );
                }
                first_part.seq
            }
        };
        let mut plan = GroupPlan::new(vec![0]);
        for tx in parts {
            for change in &tx.changes {
                match &change.payload {
                    Payload::Row(r) => {
                        let key = (r.table.schema.clone(), r.table.name.clone());
                        let Some(t) = self.sql.get(&key).filter(|t| !t.needs_rebuild(r)) else {
                            return Err(ConnectorError::Definite(format!(
                                "no SQL prepared for {}",
                                r.table.qualified()
                            )));
                        };
                        plan.add(r, &t.pk, &Spread::Whole, tx.seq)
                            .map_err(|e| ConnectorError::Definite(e.to_string()))?;
                    }
                    Payload::Redis(_) => {
                        return Err(ConnectorError::Definite(format!(
                            "store {}: a Redis command cannot be applied to MySQL (origin {origin} seq {})",
                            self.store, tx.seq
                        )))
                    }
                }
            }
        }
        let closing = !last_part.more;
        let mut last_sql = Vec::new();
        if closing {
            last_sql.extend_from_slice(b"UPDATE ");
            last_sql.extend_from_slice(marker.as_bytes());
            last_sql.extend_from_slice(b" SET seq=");
            push_literal(&mut last_sql, &Value::UInt(last_part.seq), false);
            last_sql.extend_from_slice(b", hlc=");
            push_literal(&mut last_sql, &Value::UInt(last_part.hlc.0), false);
            last_sql.extend_from_slice(b", epoch=");
            push_literal(&mut last_sql, &Value::UInt(last_part.epoch), false);
            last_sql.extend_from_slice(b", position=");
            push_literal(&mut last_sql, &marker_position(last_part), false);
            last_sql.extend_from_slice(b", applied_at=NOW(6) WHERE origin=");
            push_literal(
                &mut last_sql,
                &Value::Bytes(origin.as_bytes().to_vec()),
                false,
            );
            last_sql.extend_from_slice(b" AND store=");
            push_literal(
                &mut last_sql,
                &Value::Bytes(self.store.as_bytes().to_vec()),
                false,
            );
            last_sql.extend_from_slice(b" AND slot IN (");
            for p in 0..n {
                if p > 0 {
                    last_sql.push(b',');
                }
                push_literal(
                    &mut last_sql,
                    &Value::UInt(p * MARKER_SLOTS + start % MARKER_SLOTS),
                    false,
                );
            }
            last_sql.extend_from_slice(b");\nCOMMIT");
        }
        let runs = plan.into_runs().into_iter().next().unwrap_or_default();
        let (chunks, tables) = self.statements(first_sql, runs, &last_sql)?;
        if self.held.is_none() {
            self.held = Some(Held {
                origin: origin.to_string(),
                first: start,
                next: first_part.seq,
            });
        }
        // Under lww a split transaction is applied whole (docs/conflicts.md):
        // its rows' versions are recorded before they are written.
        if let Some(v) = self.versions.clone() {
            v.record(super::lww::part_versions(origin, parts)).await?;
        }
        let conn = self.conn(0).await?;
        for chunk in chunks {
            if let Err(e) = conn.query_drop(chunk).await {
                // Dropping the connection rolls the held transaction back.
                self.held = None;
                self.conns[0] = None;
                return Err(classify(&format!("applying to {tables}"), e));
            }
        }
        if closing {
            self.held = None;
            Ok(Some(last_part.seq))
        } else {
            if let Some(h) = &mut self.held {
                h.next = last_part.seq + 1;
            }
            Ok(None)
        }
    }
}
