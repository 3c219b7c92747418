//! The version index: the version `(HLC, DC)` of the value each row or key
//! holds in this DC's store, for stores with a conflict policy
//! (docs/conflicts.md, docs/architecture.md "Conflicts").
//!
//! # Write path: a log, folded in the background
//! Every key of a write is a B-tree insert, and a sink records the versions
//! of every row or key it applies before it applies them; inserting them
//! one by one into the `versions` B-tree on that path measured as the
//! Redis sink's largest cost (docs/benchmarks.md). So a record is written
//! as **one** entry of the `version_log` table (`id -> bincode
//! [LoggedVersions]`), in one durable commit (with the journal entries
//! when the writes are local: [`Journal::append_versioned`]), and also
//! kept in memory (the *overlay*) until it is folded in.
//! [`Journal::compact_versions`] folds logged records into the `versions`
//! B-tree and deletes them, in one write transaction per chunk (atomic, so
//! a crash leaves either the log entry or the folded versions); the agent
//! calls it in the background. [`Journal::open`] folds whatever a stopped
//! agent left in the log.
//!
//! # Read path
//! [`Journal::versions`] takes, per key, the greater of the overlay's and
//! the B-tree's version. The overlay is read first: an entry leaves the
//! overlay only after its fold committed, so a reader that misses it in
//! the overlay finds it in the B-tree; and a record's commit and its entry
//! into the overlay happen under the overlay's lock, so no reader sees a
//! committed record in neither.
//!
//! # Keep-greater
//! Every write keeps the greater version, in the overlay, in the log fold
//! and in the B-tree, so the order in which records are folded does not
//! matter.
//!
//! # Pruning
//! [`Journal::prune_versions`] removes versions older than a horizon the
//! caller proves no change still in flight can be older than
//! (docs/conflicts.md, "Version index size").

use crate::{storage, Journal, JournalError, VERSIONS, VERSION_LOG};
use dcsync_core::conflict::Version;
use dcsync_core::Hlc;
use redb::{ReadableDatabase, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

const BINCODE: bincode::config::Configuration = bincode::config::standard();

/// One record of the `version_log` table: versions of rows or keys of one
/// store, `(key, HLC, DC)`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LoggedVersions {
    store: String,
    entries: Vec<(Vec<u8>, u64, String)>,
}

/// A version in the overlay, with the id of the log record that set it.
#[derive(Debug, Clone)]
struct Held {
    hlc: Hlc,
    dc: Arc<str>,
    id: u64,
}

/// The versions logged but not yet folded into the B-tree: store -> key ->
/// version. Bounded by how often the agent folds (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    /// Keys hashed with foldhash (seeded per process): one lookup per row
    /// applied, where SipHash cost a measurable share of the apply.
    stores: HashMap<String, HashMap<Vec<u8>, Held, foldhash::fast::RandomState>>,
    /// DC ids, shared by the entries (a handful of distinct values).
    dcs: HashMap<String, Arc<str>>,
    entries: usize,
    /// Per store, the greatest HLC of any version in the index: of the
    /// B-tree when the journal was opened, raised by every record since
    /// (see [`Journal::version_high_water`]).
    high_water: HashMap<String, Hlc>,
}

impl Overlay {
    /// An empty overlay over a B-tree whose greatest HLC per store is
    /// `high_water`.
    pub(crate) fn with_high_water(high_water: HashMap<String, Hlc>) -> Overlay {
        Overlay {
            high_water,
            ..Overlay::default()
        }
    }

    fn dc(&mut self, dc: &str) -> Arc<str> {
        if let Some(d) = self.dcs.get(dc) {
            return d.clone();
        }
        let d: Arc<str> = Arc::from(dc);
        self.dcs.insert(dc.to_string(), d.clone());
        d
    }

    /// Sets `key` to `(hlc, dc)` of log record `id` unless it holds a
    /// greater version.
    fn put(&mut self, store: &str, key: &[u8], hlc: Hlc, dc: &str, id: u64) {
        let dc = self.dc(dc);
        let m = match self.stores.get_mut(store) {
            Some(m) => m,
            None => self.stores.entry(store.to_string()).or_default(),
        };
        match m.get_mut(key) {
            Some(h) => {
                if (hlc, &*dc) >= (h.hlc, &*h.dc) {
                    *h = Held { hlc, dc, id };
                }
            }
            None => {
                m.insert(key.to_vec(), Held { hlc, dc, id });
                self.entries += 1;
            }
        }
    }

    /// Drops the entries of log records up to `id` (folded into the
    /// B-tree).
    fn folded(&mut self, id: u64) {
        let mut n = 0;
        for m in self.stores.values_mut() {
            m.retain(|_, h| h.id > id);
            n += m.len();
        }
        self.stores.retain(|_, m| !m.is_empty());
        self.entries = n;
    }
}

/// Inserts one log record in `w` under the next id and returns the id. Ids
/// are taken inside the write transaction, which redb serializes: they
/// rise in commit order.
fn log_versions(
    j: &Journal,
    w: &WriteTransaction,
    rec: &LoggedVersions,
) -> Result<u64, JournalError> {
    let bytes = bincode::serde::encode_to_vec(rec, BINCODE).map_err(storage)?;
    let id = j
        .version_ids
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    w.open_table(VERSION_LOG)
        .map_err(storage)?
        .insert(id, bytes.as_slice())
        .map_err(storage)?;
    Ok(id)
}

/// What [`Journal::compact_versions`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Folded {
    /// Log records folded and deleted.
    pub records: usize,
    /// Versions written into the B-tree.
    pub versions: usize,
}

impl Journal {
    /// The versions of `keys` of `store`, in order (`None`: no write
    /// known): per key the greater of the overlay's and the B-tree's (see
    /// the module docs).
    pub fn versions(
        &self,
        store: &str,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Version>>, JournalError> {
        let mut out: Vec<Option<Version>> = {
            let o = self.overlay.lock().unwrap_or_else(|e| e.into_inner());
            let m = o.stores.get(store);
            keys.iter()
                .map(|k| {
                    m.and_then(|m| m.get(k)).map(|h| Version {
                        hlc: h.hlc,
                        dc: h.dc.to_string(),
                    })
                })
                .collect()
        };
        let r = self.db.begin_read().map_err(storage)?;
        let t = match r.open_table(VERSIONS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
            Err(e) => return Err(storage(e)),
        };
        for (k, o) in keys.iter().zip(out.iter_mut()) {
            if let Some(g) = t.get((store, k.as_slice())).map_err(storage)? {
                let (hlc, dc) = g.value();
                if o.as_ref()
                    .is_none_or(|v| (Hlc(hlc), dc) > (v.hlc, v.dc.as_str()))
                {
                    *o = Some(Version {
                        hlc: Hlc(hlc),
                        dc: dc.to_string(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Records `entries` (row or key, version) of `store` in the version
    /// index in one durable commit (one log record), each keeping the
    /// greater version.
    pub fn record_versions(
        &self,
        store: &str,
        entries: &[(Vec<u8>, Version)],
    ) -> Result<(), JournalError> {
        if entries.is_empty() {
            return Ok(());
        }
        let w = self.db.begin_write().map_err(storage)?;
        let logged = self.log_sink_versions(&w, store, entries)?;
        self.commit_holding(w, logged)
    }

    /// Logs the versions `entries` a sink applies to `store` in `w`;
    /// returns the record to hold after the commit (`None` if empty).
    pub(crate) fn log_sink_versions(
        &self,
        w: &WriteTransaction,
        store: &str,
        entries: &[(Vec<u8>, Version)],
    ) -> Result<Option<(LoggedVersions, u64)>, JournalError> {
        let entries = entries
            .iter()
            .map(|(k, v)| (k.clone(), v.hlc.0, v.dc.clone()));
        self.log_entries(w, store, entries.collect())
    }

    /// Logs the versions of local writes `(key, HLC)` of `store` (DC =
    /// this DC) in `w`; returns the record to [`Journal::hold`] after the
    /// commit.
    pub(crate) fn log_local_versions(
        &self,
        w: &WriteTransaction,
        store: &str,
        versions: &[(Vec<u8>, Hlc)],
    ) -> Result<Option<(LoggedVersions, u64)>, JournalError> {
        let entries = versions
            .iter()
            .map(|(k, h)| (k.clone(), h.0, self.me.clone()));
        self.log_entries(w, store, entries.collect())
    }

    /// Logs `(key, HLC, DC)` versions of `store` as one record in `w`
    /// (`None` if there are none).
    fn log_entries(
        &self,
        w: &WriteTransaction,
        store: &str,
        entries: Vec<(Vec<u8>, u64, String)>,
    ) -> Result<Option<(LoggedVersions, u64)>, JournalError> {
        if entries.is_empty() {
            return Ok(None);
        }
        let rec = LoggedVersions {
            store: store.to_string(),
            entries,
        };
        let id = log_versions(self, w, &rec)?;
        Ok(Some((rec, id)))
    }

    /// Commits `w` and puts its log record (if any) into the overlay,
    /// holding the overlay's lock across both: a reader (which reads the
    /// overlay, then the B-tree) sees the record either nowhere, because
    /// it ran before the commit, or in the overlay, never committed but
    /// missing from both.
    pub(crate) fn commit_holding(
        &self,
        w: WriteTransaction,
        logged: Option<(LoggedVersions, u64)>,
    ) -> Result<(), JournalError> {
        let Some((rec, id)) = logged else {
            return w.commit().map_err(storage);
        };
        let mut o = self.overlay.lock().unwrap_or_else(|e| e.into_inner());
        w.commit().map_err(storage)?;
        let mut top = Hlc(0);
        for (k, h, dc) in &rec.entries {
            o.put(&rec.store, k, Hlc(*h), dc, id);
            top = top.max(Hlc(*h));
        }
        match o.high_water.get_mut(rec.store.as_str()) {
            Some(hw) => *hw = (*hw).max(top),
            None => {
                o.high_water.insert(rec.store.clone(), top);
            }
        }
        // Under the lock, after the versions are readable.
        self.version_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// How many version records (local writes' or a sink's) have been
    /// committed since the journal was opened. A reader that takes it
    /// before [`Journal::versions`] and finds it unchanged later knows no
    /// version was recorded in between (it is raised after the record is
    /// readable). Folds and prunes do not raise it: they raise no version.
    pub fn version_generation(&self) -> u64 {
        self.version_generation
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The greatest HLC of any version of `store` in the index (`None`: no
    /// version of it). Every version [`Journal::versions`] can return is at
    /// or below it, so a change stamped above it wins over every row it
    /// writes without a read (a sink's fast path). Taken after
    /// [`Journal::version_generation`], it covers every record that
    /// generation counts (it is raised before the generation, under the
    /// same lock). Pruning does not lower it.
    pub fn version_high_water(&self, store: &str) -> Option<Hlc> {
        self.overlay
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .high_water
            .get(store)
            .copied()
    }

    /// Versions held in memory, not yet folded into the B-tree.
    pub fn unfolded_versions(&self) -> usize {
        self.overlay
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
    }

    /// Folds logged version records into the `versions` B-tree, oldest
    /// first, at most about `max_versions` versions per write transaction
    /// (each transaction holds the journal's writer lock: a source append
    /// waits for it), until the log is empty. Each fold is a durable
    /// commit: a long run of large non-durable commits (a fold after a
    /// burst of writes, while only non-durable position commits follow)
    /// was seen to stall the journal's later commits until the next
    /// durable one.
    pub fn compact_versions(&self, max_versions: usize) -> Result<Folded, JournalError> {
        let mut total = Folded::default();
        loop {
            let w = self.db.begin_write().map_err(storage)?;
            let (done, last) = fold_in(&w, max_versions)?;
            w.commit().map_err(storage)?;
            let Some(last) = last else {
                return Ok(total);
            };
            self.overlay
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .folded(last);
            total.records += done.records;
            total.versions += done.versions;
        }
    }

    /// Removes from `store`'s B-tree the versions older than `below`,
    /// scanning at most `max_keys` keys after `after` (`None`: from the
    /// first). Returns how many were removed and the key to continue after
    /// (`None`: the scan reached the end). The caller proves that no change
    /// older than `below` can still be applied here (docs/conflicts.md,
    /// "Version index size"). Versions still in the log or the overlay are
    /// left for a later pass.
    pub fn prune_versions(
        &self,
        store: &str,
        below: Hlc,
        after: Option<&[u8]>,
        max_keys: usize,
    ) -> Result<(usize, Option<Vec<u8>>), JournalError> {
        let w = self.db.begin_write().map_err(storage)?;
        let mut removed = 0;
        let mut next = None;
        {
            let mut t = w.open_table(VERSIONS).map_err(storage)?;
            let mut old: Vec<Vec<u8>> = Vec::new();
            {
                let range = match after {
                    Some(a) => t.range((store, a)..).map_err(storage)?,
                    None => t.range((store, &[][..])..).map_err(storage)?,
                };
                let mut seen = 0;
                for item in range {
                    let (k, v) = item.map_err(storage)?;
                    let (s, key) = k.value();
                    if s != store {
                        break;
                    }
                    if after == Some(key) {
                        continue;
                    }
                    if seen == max_keys {
                        break;
                    }
                    seen += 1;
                    if Hlc(v.value().0) < below {
                        old.push(key.to_vec());
                    }
                    next = Some(key.to_vec());
                }
                if seen < max_keys {
                    next = None;
                }
            }
            for k in &old {
                t.remove((store, k.as_slice())).map_err(storage)?;
                removed += 1;
            }
        }
        w.commit().map_err(storage)?;
        Ok((removed, next))
    }
}

/// Per store, the greatest HLC in the `versions` B-tree (one scan, when
/// the journal is opened, after the version log was folded in).
pub(crate) fn scan_high_water(w: &WriteTransaction) -> Result<HashMap<String, Hlc>, JournalError> {
    let t = w.open_table(VERSIONS).map_err(storage)?;
    let mut out: HashMap<String, Hlc> = HashMap::new();
    for item in t.iter().map_err(storage)? {
        let (k, v) = item.map_err(storage)?;
        let (store, _) = k.value();
        let hlc = Hlc(v.value().0);
        match out.get_mut(store) {
            Some(h) => *h = (*h).max(hlc),
            None => {
                out.insert(store.to_string(), hlc);
            }
        }
    }
    Ok(out)
}

/// Folds log records, oldest first, until about `max_versions` versions
/// are written; returns what was folded and the id of the last record.
pub(crate) fn fold_in(
    w: &WriteTransaction,
    max_versions: usize,
) -> Result<(Folded, Option<u64>), JournalError> {
    let mut log = w.open_table(VERSION_LOG).map_err(storage)?;
    let mut t = w.open_table(VERSIONS).map_err(storage)?;
    let mut done = Folded::default();
    let mut last = None;
    // The records' versions, the greater per key, inserted in key order:
    // consecutive inserts then land in the same B-tree leaf, which costs
    // far less than inserting them in the records' (random) order.
    let mut sorted: BTreeMap<String, BTreeMap<Vec<u8>, (u64, String)>> = BTreeMap::new();
    while done.versions < max_versions.max(1) {
        let Some((id, bytes)) = log
            .pop_first()
            .map_err(storage)?
            .map(|(k, v)| (k.value(), v.value().to_vec()))
        else {
            break;
        };
        let (rec, _): (LoggedVersions, usize) = bincode::serde::decode_from_slice(&bytes, BINCODE)
            .map_err(|e| {
                JournalError::Storage(format!("version log record {id} does not decode: {e}"))
            })?;
        done.records += 1;
        done.versions += rec.entries.len();
        last = Some(id);
        let m = sorted.entry(rec.store).or_default();
        for (k, h, dc) in rec.entries {
            match m.entry(k) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert((h, dc));
                }
                std::collections::btree_map::Entry::Occupied(mut e) => {
                    if (h, dc.as_str()) >= (e.get().0, e.get().1.as_str()) {
                        e.insert((h, dc));
                    }
                }
            }
        }
    }
    for (store, m) in &sorted {
        for (k, (h, dc)) in m {
            put_version(&mut t, store, k, Hlc(*h), dc)?;
        }
    }
    Ok((done, last))
}

/// Sets the version of `key` of `store` to `(hlc, dc)` unless the index
/// holds a greater one. One B-tree operation when the new version is the
/// greater (the usual case): the previous value comes back from the insert
/// and is put back only if it was greater.
pub(crate) fn put_version(
    t: &mut redb::Table<(&str, &[u8]), (u64, &str)>,
    store: &str,
    key: &[u8],
    hlc: Hlc,
    dc: &str,
) -> Result<(), JournalError> {
    let previous = t
        .insert((store, key), (hlc.0, dc))
        .map_err(storage)?
        .map(|g| {
            let (h, d) = g.value();
            (h, d.to_string())
        });
    if let Some((h, d)) = previous {
        if (Hlc(h), d.as_str()) > (hlc, dc) {
            t.insert((store, key), (h, d.as_str())).map_err(storage)?;
        }
    }
    Ok(())
}
