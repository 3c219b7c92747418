//! The version index (`versions` table, see the crate docs): the version of
//! the value each row or key holds in this DC's store, for stores with a
//! conflict policy (docs/conflicts.md).

use crate::{storage, Journal, JournalError, VERSIONS};
use dcsync_core::conflict::Version;
use dcsync_core::Hlc;
use redb::ReadableDatabase;

impl Journal {
    /// The versions of `keys` of `store` in the version index, in order
    /// (`None`: no write known). See the module docs, `versions`.
    pub fn versions(
        &self,
        store: &str,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Version>>, JournalError> {
        let r = self.db.begin_read().map_err(storage)?;
        let t = match r.open_table(VERSIONS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![None; keys.len()]),
            Err(e) => return Err(storage(e)),
        };
        keys.iter()
            .map(|k| {
                Ok(t.get((store, k.as_slice())).map_err(storage)?.map(|g| {
                    let (hlc, dc) = g.value();
                    Version {
                        hlc: Hlc(hlc),
                        dc: dc.to_string(),
                    }
                }))
            })
            .collect()
    }

    /// Records `entries` (row or key, version) of `store` in the version
    /// index in one durable commit, each keeping the greater version.
    pub fn record_versions(
        &self,
        store: &str,
        entries: &[(Vec<u8>, Version)],
    ) -> Result<(), JournalError> {
        if entries.is_empty() {
            return Ok(());
        }
        let w = self.db.begin_write().map_err(storage)?;
        {
            let mut t = w.open_table(VERSIONS).map_err(storage)?;
            for (key, v) in entries {
                put_version(&mut t, store, key, v.hlc, &v.dc)?;
            }
        }
        w.commit().map_err(storage)
    }
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
