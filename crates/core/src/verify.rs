//! The consistency-check capability of a connector (`dcsync verify`): what
//! one DC's store tells about its data so that the agent can compare DCs
//! without reading the data whole (docs/operations.md, "Checking
//! consistency").
//!
//! # Shapes
//! A store's data is divided into **collections** (MySQL: the replicated
//! tables `schema.table`; Redis: the replicated databases `db0`, `db1`),
//! each collection into **units** (MySQL: a chunk of consecutive primary
//! keys; Redis: a bucket of keys by a hash of the key), and each unit into
//! **items** (a row by its primary key, a key). The agent:
//!
//! 1. asks every DC for its collections ([`VerifyScan::collections`]) and
//!    each collection's [`VerifyScan::shape`] (its definition: a table's
//!    columns; a collection missing or defined differently in one DC is a
//!    difference);
//! 2. asks one DC, the *reference*, to [`VerifyScan::plan`] the units of a
//!    collection, a batch at a time: unit boundaries come from one DC so
//!    that every DC digests exactly the same ranges;
//! 3. asks every DC for the [`UnitDigest`] of each unit of the batch
//!    ([`VerifyScan::digest`]) and compares them;
//! 4. re-checks a differing unit after a delay, item by item
//!    ([`VerifyScan::items`]), several times: only items that differ in
//!    every round are reported, so a change that was still on its way
//!    between DCs is not a difference.
//!
//! Memory is bounded by one batch of units and one unit's items: a
//! connector never loads a whole collection.
//!
//! # Errors
//! [`ConnectorError::Transient`] when the store cannot be reached or the
//! connection breaks (the run fails: nothing can be concluded),
//! [`ConnectorError::Definite`] when a collection cannot be compared this
//! way (a table without a primary key); the agent reports the collection
//! as not compared and goes on with the others.

use crate::connector::{BoxFuture, ConnectorError};
use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// Settings of one `dcsync verify` run, given to every DC's scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Items per unit the reference DC aims at (MySQL: rows per chunk;
    /// Redis: keys per bucket), at least 1. Bounds the memory of a
    /// re-check, and the work one query does.
    pub chunk_items: u64,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            chunk_items: 10_000,
        }
    }
}

/// The words a kind uses for its collections, units and items, for the
/// report (`table` / `chunk` / `row`, `database` / `bucket` / `key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct VerifyTerms {
    /// What a collection is (`table`).
    pub collection: &'static str,
    /// What a unit is (`chunk`).
    pub unit: &'static str,
    /// What an item is (`row`).
    pub item: &'static str,
}

/// One unit of a collection, as planned by the reference DC: a label for
/// the operator and connector-defined data (chunk bounds, bucket number)
/// that only the connector that planned it reads back, in any DC's scan of
/// the same kind.
#[derive(Clone)]
pub struct VerifyUnit {
    /// For the report (`id >= 10000 and < 20000`, `bucket 17 of 64`).
    pub label: String,
    /// Connector-defined; read back with [`VerifyUnit::data`].
    data: Arc<dyn Any + Send + Sync>,
}

impl VerifyUnit {
    /// A unit with connector-defined `data`.
    pub fn new<T: Any + Send + Sync>(label: impl Into<String>, data: T) -> VerifyUnit {
        VerifyUnit {
            label: label.into(),
            data: Arc::new(data),
        }
    }

    /// The connector-defined data, if it is a `T`.
    pub fn data<T: Any>(&self) -> Option<&T> {
        self.data.downcast_ref::<T>()
    }

    /// [`VerifyUnit::data`] or a [`ConnectorError::Definite`] naming the
    /// unit (a unit planned by another kind's connector).
    pub fn data_or_err<T: Any>(&self) -> Result<&T, ConnectorError> {
        self.data().ok_or_else(|| {
            ConnectorError::Definite(format!(
                "verify unit {:?} was not planned by this connector",
                self.label
            ))
        })
    }
}

impl fmt::Debug for VerifyUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyUnit")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// What one DC holds in one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct UnitDigest {
    /// How many items (rows, keys).
    pub items: u64,
    /// An order-independent digest of every item's key and value: equal
    /// data gives equal digests in every DC, whatever the storage
    /// encoding.
    pub digest: u64,
}

/// One item of a unit as one DC holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemDigest {
    /// The item's identity, the same bytes in every DC for the same
    /// item (a row's primary key values, a key); items are compared by it.
    pub key: Vec<u8>,
    /// The identity for the operator (`id=42`, `user:7`).
    pub label: String,
    /// A digest of the item's value (and of whatever else makes two
    /// copies differ: a Redis key's type and whether it expires).
    pub digest: u64,
}

/// A connection to one DC's store for `dcsync verify`, built by
/// [`Connector::verify`](crate::connector::Connector::verify). Every method
/// is read-only. Object-safe: the agent holds `Box<dyn VerifyScan>`.
pub trait VerifyScan: Send {
    /// The kind's words for the report.
    fn terms(&self) -> VerifyTerms;

    /// The collections the store replicates that this DC holds, sorted
    /// (MySQL: the tables matched by `tables`, outside the system schemas
    /// and `dcsync`; Redis: the databases of `databases` that hold keys).
    fn collections(&mut self) -> BoxFuture<'_, Result<Vec<String>, ConnectorError>>;

    /// The definition of `collection` in this DC (a table's columns, their
    /// types and its primary key), compared across DCs; `None` if this DC
    /// does not have it. A kind whose collections always exist (Redis
    /// databases) returns the same text everywhere.
    fn shape<'a>(
        &'a mut self,
        collection: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ConnectorError>>;

    /// The next units of `collection` after `after` (`None`: from the
    /// start), in order, covering everything a DC may hold (the first unit
    /// is open below, the last open above); an empty batch when there are
    /// no more. Called on the reference DC only.
    ///
    /// Errors: [`ConnectorError::Definite`] when the collection cannot be
    /// divided into units (a table without a primary key).
    fn plan<'a>(
        &'a mut self,
        collection: &'a str,
        after: Option<&'a VerifyUnit>,
    ) -> BoxFuture<'a, Result<Vec<VerifyUnit>, ConnectorError>>;

    /// The digest of each of `units` (planned by any DC's scan of this
    /// kind) in this DC, in the same order.
    fn digest<'a>(
        &'a mut self,
        collection: &'a str,
        units: &'a [VerifyUnit],
    ) -> BoxFuture<'a, Result<Vec<UnitDigest>, ConnectorError>>;

    /// Every item of `units` in this DC with its digest, sorted by
    /// [`ItemDigest::key`]. At most about one unit's worth of items per
    /// unit given.
    fn items<'a>(
        &'a mut self,
        collection: &'a str,
        units: &'a [VerifyUnit],
    ) -> BoxFuture<'a, Result<Vec<ItemDigest>, ConnectorError>>;

    /// Repair (`dcsync verify --repair`), the only method that writes: the
    /// item `key` ([`ItemDigest::key`]) of `collection` is written again in
    /// this DC through the store, so that this DC's source ships it to
    /// every DC like any write (MySQL: the row deleted and inserted again
    /// in one transaction; Redis: `RESTORE … REPLACE` of its own `DUMP`);
    /// with `delete`, it is deleted. Returns whether this DC held it.
    ///
    /// Errors: the store's; the default, a kind without repair, a Definite
    /// error.
    fn repair<'a>(
        &'a mut self,
        collection: &'a str,
        key: &'a [u8],
        delete: bool,
    ) -> BoxFuture<'a, Result<bool, ConnectorError>> {
        let _ = (collection, key, delete);
        Box::pin(async {
            Err(ConnectorError::Definite(
                "this store kind cannot repair an item".into(),
            ))
        })
    }
}

/// 64-bit FNV-1a over `parts`, each preceded by its length, so that
/// `["ab", "c"]` and `["a", "bc"]` differ. Stable across builds and
/// machines: connectors use it for digests computed in the agent.
pub fn fnv64(parts: &[&[u8]]) -> u64 {
    let mut h = Fnv64::new();
    for p in parts {
        h.part(p);
    }
    h.finish()
}

/// Incremental [`fnv64`].
#[derive(Debug, Clone, Copy)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64::new()
    }
}

impl Fnv64 {
    /// An empty hash.
    pub fn new() -> Fnv64 {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    /// Adds one length-prefixed part.
    pub fn part(&mut self, bytes: &[u8]) -> &mut Fnv64 {
        self.bytes(&(bytes.len() as u64).to_le_bytes());
        self.bytes(bytes);
        self
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    /// The hash.
    pub fn finish(&self) -> u64 {
        // A final avalanche (splitmix64's), so that sums of digests of
        // similar items spread over all 64 bits.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_length_prefixed() {
        assert_ne!(fnv64(&[b"ab", b"c"]), fnv64(&[b"a", b"bc"]));
        assert_eq!(fnv64(&[b"ab", b"c"]), fnv64(&[b"ab", b"c"]));
        let mut h = Fnv64::new();
        h.part(b"ab").part(b"c");
        assert_eq!(h.finish(), fnv64(&[b"ab", b"c"]));
    }

    #[test]
    fn unit_data_reads_back_only_as_its_type() {
        let u = VerifyUnit::new("bucket 1 of 4", (1u32, 4u32));
        assert_eq!(u.data::<(u32, u32)>(), Some(&(1, 4)));
        assert!(u.data::<String>().is_none());
        assert!(u.data_or_err::<String>().is_err());
    }
}
