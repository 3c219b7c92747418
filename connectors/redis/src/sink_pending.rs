//! The Redis sink's pending re-ships (docs/conflicts.md, "Redis"): a
//! group with losing commands records what it will re-ship before its
//! `EXEC`; the sink clears it once the re-ship is journaled, and a sink
//! that finds one (an agent that died between the two) finishes it before
//! it applies anything else of that origin.

use super::{redis_err, RedisSink};
use dcsync_core::conflict::{Conflict, Versions};
use dcsync_core::connector::ConnectorError;
use dcsync_core::{Change, Hlc, Payload, RedisCommand};
use redis::Value;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The [`dcsync_core::crash_point`] between a group's `EXEC` and the
/// journaling of its re-ship (tests: `DCSYNC_CRASH_AT=redis-sink-after-exec`).
pub const CRASH_AFTER_EXEC: &str = "redis-sink-after-exec";

/// What a group with losing commands still has to do after its `EXEC`:
/// kept in the journal ([`Versions::record_pending`]) as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReshipIntent {
    /// Seq of the group's last transaction: the `EXEC` ran iff the
    /// origin's apply marker is at or past it.
    pub last_seq: u64,
    /// The origin's journal epoch of that transaction (a marker of another
    /// epoch says nothing about this group).
    pub epoch: u64,
    /// HLC the re-ship is stamped above (the greatest losing change).
    pub above: u64,
    /// Version keys ([`super::lww::version_key`]) to re-ship, with their unit.
    pub keys: Vec<(Vec<u8>, Option<u32>)>,
    /// The group's conflicts, logged once the re-ship is journaled.
    pub conflicts: Vec<Conflict>,
}

impl ReshipIntent {
    /// The journal encoding. Errors: Definite (cannot happen for these
    /// field types, but not unwrapped).
    pub fn encode(&self) -> Result<Vec<u8>, ConnectorError> {
        serde_json::to_vec(self).map_err(|e| {
            ConnectorError::Definite(format!("redis sink: encoding a pending re-ship: {e}"))
        })
    }

    /// Decodes [`ReshipIntent::encode`]'s bytes. Errors: Definite, naming
    /// the problem (a journal written by an incompatible agent).
    pub fn decode(bytes: &[u8]) -> Result<ReshipIntent, ConnectorError> {
        serde_json::from_slice(bytes).map_err(|e| {
            ConnectorError::Definite(format!(
                "redis sink: the journal's pending re-ship is not readable ({e}); \
                 run `dcsync verify --repair` for this store after removing it"
            ))
        })
    }
}

/// The re-ship of version key `vkey` from a `DUMP` and `PTTL` reply: a
/// `RESTORE key ttl payload REPLACE`, or a `DEL` when the key does not
/// exist. `None` if `vkey` has no database prefix.
pub fn reship_change(vkey: &[u8], unit: Option<u32>, dump: &Value, ttl: &Value) -> Option<Change> {
    let (db, key) = vkey.split_first_chunk::<4>()?;
    let db = u32::from_be_bytes(*db);
    let args: Vec<Vec<u8>> = match dump {
        Value::BulkString(payload) => {
            let ttl = match ttl {
                Value::Int(t) if *t > 0 => *t,
                _ => 0,
            };
            vec![
                b"RESTORE".to_vec(),
                key.to_vec(),
                ttl.to_string().into_bytes(),
                payload.clone(),
                b"REPLACE".to_vec(),
            ]
        }
        _ => vec![b"DEL".to_vec(), key.to_vec()],
    };
    Some(Change {
        unit,
        payload: Payload::Redis(RedisCommand { db, args }),
    })
}

impl RedisSink {
    /// Finishes `origin`'s pending re-ship, if the journal holds one: when
    /// the group's `EXEC` ran (the marker is at or past its last seq), the
    /// keys' current values are dumped and re-shipped above the losers and
    /// the conflicts logged; otherwise the group was not applied and is
    /// decided again when it arrives. Then the intent is cleared. Errors:
    /// transient (store or journal unreachable), Definite for an unreadable
    /// intent.
    pub(super) async fn finish_pending(
        &mut self,
        origin: &str,
        versions: &Arc<dyn Versions>,
    ) -> Result<(), ConnectorError> {
        let Some(bytes) = versions.pending(origin.to_string()).await? else {
            return Ok(());
        };
        let intent = ReshipIntent::decode(&bytes)?;
        let mark = self.read_mark(origin).await?;
        let applied =
            mark.seq >= intent.last_seq && (mark.epoch == intent.epoch || intent.epoch == 0);
        if applied {
            let mut c = self.conn().await?;
            let mut p = redis::pipe();
            let mut sel = self.selected;
            for (vkey, _) in &intent.keys {
                let Some((db, key)) = vkey.split_first_chunk::<4>() else {
                    continue;
                };
                let db = u32::from_be_bytes(*db);
                if sel != Some(db) {
                    p.cmd("SELECT").arg(db).ignore();
                    sel = Some(db);
                }
                p.cmd("DUMP").arg(key);
                p.cmd("PTTL").arg(key);
            }
            let replies: Vec<Value> = p.query_async(&mut c).await.map_err(|e| {
                let e = redis_err("DUMP for a pending re-ship", e);
                self.reset(&e);
                e
            })?;
            self.selected = sel;
            let mut it = replies.chunks(2);
            let changes: Vec<Change> = intent
                .keys
                .iter()
                .filter(|(vkey, _)| vkey.len() >= 4)
                .filter_map(|(vkey, unit)| match it.next() {
                    Some([dump, ttl]) => reship_change(vkey, *unit, dump, ttl),
                    _ => None,
                })
                .collect();
            let n = changes.len();
            versions.reassert(changes, Hlc(intent.above)).await?;
            for c in intent.conflicts {
                versions.conflict(c);
            }
            tracing::info!(
                store = %self.store,
                origin,
                seq = intent.last_seq,
                keys = n,
                "finished the re-ship of a group applied just before the agent stopped"
            );
        } else {
            tracing::info!(
                store = %self.store,
                origin,
                seq = intent.last_seq,
                applied = mark.seq,
                "dropped the pending re-ship of a group that was not applied (it is decided again)"
            );
        }
        versions.clear_pending(origin.to_string()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reship_restores_the_dumped_value_with_its_ttl_or_deletes_a_missing_key() {
        let vkey = super::super::lww::version_key(2, b"k");
        let dump = Value::BulkString(b"payload".to_vec());
        let c = reship_change(&vkey, Some(7), &dump, &Value::Int(1500)).unwrap();
        assert_eq!(c.unit, Some(7));
        let Payload::Redis(cmd) = c.payload else {
            panic!("not a Redis change")
        };
        assert_eq!(cmd.db, 2);
        assert_eq!(
            cmd.args,
            vec![
                b"RESTORE".to_vec(),
                b"k".to_vec(),
                b"1500".to_vec(),
                b"payload".to_vec(),
                b"REPLACE".to_vec()
            ]
        );
        // No expiry (-1) restores with ttl 0; a missing key is deleted.
        let c = reship_change(&vkey, None, &dump, &Value::Int(-1)).unwrap();
        let Payload::Redis(cmd) = c.payload else {
            panic!("not a Redis change")
        };
        assert_eq!(cmd.args[2], b"0".to_vec());
        let c = reship_change(&vkey, None, &Value::Nil, &Value::Int(-2)).unwrap();
        let Payload::Redis(cmd) = c.payload else {
            panic!("not a Redis change")
        };
        assert_eq!(cmd.args, vec![b"DEL".to_vec(), b"k".to_vec()]);
        assert!(reship_change(b"ab", None, &dump, &Value::Int(0)).is_none());
    }

    #[test]
    fn an_intent_survives_its_journal_encoding_and_bad_bytes_are_named() {
        let i = ReshipIntent {
            last_seq: 42,
            epoch: 0xabc,
            above: 99,
            keys: vec![(super::super::lww::version_key(0, b"x"), Some(3))],
            conflicts: Vec::new(),
        };
        assert_eq!(ReshipIntent::decode(&i.encode().unwrap()).unwrap(), i);
        let e = ReshipIntent::decode(b"{not json").unwrap_err();
        assert!(e.to_string().contains("pending re-ship"), "{e}");
    }
}
