//! The relay journal: other origins' streams a star's hub journals
//! ([`Journal::append_relayed`]) to forward them to the spokes
//! (docs/architecture.md, "Relay and applied vectors").
//!
//! A relayed stream may start above seq 1: a new hub asks each origin for
//! its changes from what its relay journal holds (nothing, at first), and
//! the origin starts at the oldest change it still keeps, telling the seq
//! below it, which every DC has applied ([`Journal::rebase_relayed`]). A DC
//! that stops relaying drops its relayed streams ([`Journal::drop_relayed`]):
//! their origins keep every change until each DC has applied it, so nothing
//! is lost, and a later relay journal starts over from the origins.

use crate::{discard_open_in, storage, Journal, JournalError, HEADS, LOG, OPEN_PARTS};
use crate::{PEER_CURSORS, STREAM_CUM, STREAM_REMOVED_CUM};
use redb::ReadableTable;

impl Journal {
    /// Moves the head of the relayed stream `(origin, store)` to `floor`
    /// when it is below: every DC has applied the stream up to `floor`, so
    /// the next relayed entry may be `floor + 1` although this journal
    /// never held the seqs between. Entries at or below `floor` (and the
    /// parts of an unfinished transaction) are removed. Returns whether the
    /// head moved.
    ///
    /// Errors: [`JournalError::Gap`] for this DC's own stream (its seqs are
    /// assigned here, never rebased).
    pub fn rebase_relayed(
        &self,
        origin: &str,
        store: &str,
        floor: u64,
    ) -> Result<bool, JournalError> {
        if origin == self.me {
            return Err(JournalError::Gap {
                origin: origin.to_string(),
                store: store.to_string(),
                seq: floor + 1,
                head: self.last_seq(origin, store)?,
            });
        }
        let w = self.db.begin_write().map_err(storage)?;
        let (head, hlc) = {
            let t = w.open_table(HEADS).map_err(storage)?;
            let v = t
                .get((origin, store))
                .map_err(storage)?
                .map(|g| g.value())
                .unwrap_or((0, 0));
            v
        };
        if head >= floor {
            return Ok(false);
        }
        discard_open_in(&w, origin, store)?;
        w.open_table(LOG)
            .map_err(storage)?
            .retain_in((origin, store, 0u64)..=(origin, store, floor), |_, _| false)
            .map_err(storage)?;
        w.open_table(HEADS)
            .map_err(storage)?
            .insert((origin, store), (floor, hlc))
            .map_err(storage)?;
        // No entry left: the bytes removed so far are all the bytes written.
        let cum = w
            .open_table(STREAM_CUM)
            .map_err(storage)?
            .get((origin, store))
            .map_err(storage)?
            .map(|g| g.value())
            .unwrap_or(0);
        w.open_table(STREAM_REMOVED_CUM)
            .map_err(storage)?
            .insert((origin, store), cum)
            .map_err(storage)?;
        {
            let mut cur = w.open_table(PEER_CURSORS).map_err(storage)?;
            for p in &self.peers {
                let prev = cur
                    .get((p.as_str(), origin, store))
                    .map_err(storage)?
                    .map(|g| g.value())
                    .unwrap_or(0);
                if prev < floor {
                    cur.insert((p.as_str(), origin, store), floor)
                        .map_err(storage)?;
                }
            }
        }
        w.commit().map_err(storage)?;
        Ok(true)
    }

    /// Removes every relayed stream (origin other than this DC) of this
    /// journal: entries, head and cursors. Returns the streams removed.
    pub fn drop_relayed(&self) -> Result<Vec<(String, String)>, JournalError> {
        let streams: Vec<(String, String)> = self
            .streams()?
            .into_iter()
            .filter(|(o, _)| *o != self.me)
            .collect();
        if streams.is_empty() {
            return Ok(streams);
        }
        let w = self.db.begin_write().map_err(storage)?;
        for (origin, store) in &streams {
            let (o, s) = (origin.as_str(), store.as_str());
            w.open_table(LOG)
                .map_err(storage)?
                .retain_in((o, s, 0u64)..=(o, s, u64::MAX), |_, _| false)
                .map_err(storage)?;
            w.open_table(HEADS)
                .map_err(storage)?
                .remove((o, s))
                .map_err(storage)?;
            w.open_table(OPEN_PARTS)
                .map_err(storage)?
                .remove((o, s))
                .map_err(storage)?;
            for t in [STREAM_CUM, STREAM_REMOVED_CUM] {
                w.open_table(t)
                    .map_err(storage)?
                    .remove((o, s))
                    .map_err(storage)?;
            }
            let mut cur = w.open_table(PEER_CURSORS).map_err(storage)?;
            for p in &self.peers {
                cur.remove((p.as_str(), o, s)).map_err(storage)?;
            }
        }
        w.commit().map_err(storage)?;
        Ok(streams)
    }
}
