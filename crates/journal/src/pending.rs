//! Pending re-ships: what a sink still has to do after its target commit,
//! made durable before that commit (docs/conflicts.md, "Redis").
//!
//! The Redis sink learns the values it re-ships (the `owner`/`lww` re-ship
//! of keys whose incoming commands lost) only from the `EXEC` that applies
//! the rest of the group, and journals the re-ship after it. An agent that
//! died between the two lost the re-ship for good: the group's apply
//! marker had moved, so the group was never decided again. So the sink
//! writes its intent (the keys, the HLC to re-ship above, the conflicts to
//! log) in the same durable commit as the group's version record, before
//! the `EXEC`, and clears it once the re-ship is journaled; a sink that
//! finds an intent after a restart finishes it.

use crate::{storage, Journal, JournalError, PENDING_RESHIPS};
use dcsync_core::conflict::Version;
use redb::ReadableDatabase;

impl Journal {
    /// Records `entries` as [`Journal::record_versions`] does and, in the
    /// same durable commit, `intent` as the pending re-ship of `origin`'s
    /// changes to `store` (replacing an earlier one). `intent` is the
    /// sink's own encoding; the journal only keeps it. Errors: the journal
    /// cannot be written.
    pub fn record_versions_pending(
        &self,
        store: &str,
        entries: &[(Vec<u8>, Version)],
        origin: &str,
        intent: &[u8],
    ) -> Result<(), JournalError> {
        let w = self.db.begin_write().map_err(storage)?;
        w.open_table(PENDING_RESHIPS)
            .map_err(storage)?
            .insert((store, origin), intent)
            .map_err(storage)?;
        let logged = self.log_sink_versions(&w, store, entries)?;
        self.commit_holding(w, logged)
    }

    /// The pending re-ship of `origin`'s changes to `store` (see
    /// [`Journal::record_versions_pending`]), `None` if there is none.
    /// Errors: the journal cannot be read.
    pub fn pending_reship(
        &self,
        store: &str,
        origin: &str,
    ) -> Result<Option<Vec<u8>>, JournalError> {
        let r = self.db.begin_read().map_err(storage)?;
        let t = match r.open_table(PENDING_RESHIPS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(storage(e)),
        };
        Ok(t.get((store, origin))
            .map_err(storage)?
            .map(|g| g.value().to_vec()))
    }

    /// Removes the pending re-ship of `origin`'s changes to `store`, once
    /// done (durably: a crash before this commit only repeats the re-ship,
    /// which is idempotent). Errors: the journal cannot be written.
    pub fn clear_pending_reship(&self, store: &str, origin: &str) -> Result<(), JournalError> {
        let w = self.db.begin_write().map_err(storage)?;
        w.open_table(PENDING_RESHIPS)
            .map_err(storage)?
            .remove((store, origin))
            .map_err(storage)?;
        w.commit().map_err(storage)
    }
}
