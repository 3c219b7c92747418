//! `dcsync verify` for Redis ([`RedisVerify`], the [`VerifyScan`] of one
//! DC's server): the keys of each replicated database are compared in
//! buckets by a hash of the key.
//!
//! - **Collections** are the databases the store replicates (`databases`,
//!   empty = all) that hold keys (`INFO keyspace`); a database always
//!   exists, so one that is empty in a DC compares as empty.
//! - **Planning** (reference DC): `DBSIZE / chunk_items` buckets (at least
//!   1, at most [`MAX_BUCKETS`]); a key's bucket is
//!   [`fnv64`]`(key) % buckets`, the same in every DC.
//! - **Digest**: one `SCAN` of the database; each key outside dcsync's own
//!   `dcsync:` keys and inside `key_prefixes` (if set) adds the digest of
//!   its key, type, whether it expires and its value to its bucket's sum.
//! - **Items**: the same scan, keeping the keys of the buckets asked for.
//!
//! A value's digest is computed here, from the value read with its type's
//! command (`GET`, `HGETALL`, `SMEMBERS`, `ZRANGE .. WITHSCORES`,
//! `LRANGE`, `XRANGE`), with the members of hashes and sets summed so that
//! their order does not matter: like `DEBUG DIGEST-VALUE` it does not
//! depend on the encoding a server chose (listpack or hashtable), which
//! `DUMP` does; unlike it, it needs no `enable-debug-command`, which
//! production servers leave off. One key's value is in memory at a time
//! (a batch of at most [`BATCH`] keys). The remaining time to live is not
//! compared (it moves), only whether a key expires.

use crate::config::RedisOptions;
use crate::inspect;
use dcsync_core::connector::{BoxFuture, ConnectorError};
use dcsync_core::topology::StoreConfig;
use dcsync_core::verify::{
    fnv64, Fnv64, ItemDigest, UnitDigest, VerifyOptions, VerifyScan, VerifyTerms, VerifyUnit,
};
use redis::aio::MultiplexedConnection;
use redis::Value;
use std::collections::BTreeMap;

/// Most buckets one database is divided into.
pub const MAX_BUCKETS: u64 = 65_536;
/// Keys asked per `SCAN` and read per pipeline.
pub const BATCH: usize = 500;
/// Prefix of dcsync's own keys (apply markers, leases): never compared.
const OWN_PREFIX: &[u8] = b"dcsync:";

/// A bucket: keys whose [`fnv64`] is `index` modulo `of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    index: u64,
    of: u64,
}

/// The bucket of `key` among `of`.
pub fn bucket_of(key: &[u8], of: u64) -> u64 {
    fnv64(&[key]) % of.max(1)
}

/// The [`VerifyScan`] of one DC's Redis server.
pub struct RedisVerify {
    conn: MultiplexedConnection,
    options: RedisOptions,
    chunk_keys: u64,
}

fn err(what: &str, e: redis::RedisError) -> ConnectorError {
    inspect::err(what, e)
}

impl RedisVerify {
    /// Connects to the server at `url` (for a sentinel URL, the master) for
    /// `store`.
    ///
    /// Errors: [`ConnectorError::Definite`] for a bad URL or options of
    /// another kind, [`ConnectorError::Transient`] when the server does not
    /// answer in 10 s.
    pub async fn connect(
        url: &str,
        store: &StoreConfig,
        opts: VerifyOptions,
    ) -> Result<RedisVerify, ConnectorError> {
        let options = RedisOptions::of(store)?.clone();
        Ok(RedisVerify {
            conn: inspect::connect(url).await?,
            options,
            chunk_keys: opts.chunk_items.max(1),
        })
    }

    async fn select(&mut self, collection: &str) -> Result<(), ConnectorError> {
        let db: u32 = collection
            .strip_prefix("db")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                ConnectorError::Definite(format!("{collection:?} is not a database (db<n>)"))
            })?;
        redis::cmd("SELECT")
            .arg(db)
            .query_async::<()>(&mut self.conn)
            .await
            .map_err(|e| err(&format!("SELECT {db}"), e))
    }

    fn compared(&self, key: &[u8]) -> bool {
        !key.starts_with(OWN_PREFIX)
            && (self.options.key_prefixes.is_empty()
                || self
                    .options
                    .key_prefixes
                    .iter()
                    .any(|p| key.starts_with(p.as_bytes())))
    }

    async fn collections(&mut self) -> Result<Vec<String>, ConnectorError> {
        let text: String = redis::cmd("INFO")
            .arg("keyspace")
            .query_async(&mut self.conn)
            .await
            .map_err(|e| err("INFO keyspace", e))?;
        let mut dbs: Vec<u32> = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter_map(|(db, _)| db.strip_prefix("db")?.parse().ok())
            .filter(|db| self.options.databases.is_empty() || self.options.databases.contains(db))
            .collect();
        dbs.sort_unstable();
        Ok(dbs.into_iter().map(|d| format!("db{d}")).collect())
    }

    async fn plan(
        &mut self,
        collection: &str,
        after: Option<&VerifyUnit>,
    ) -> Result<Vec<VerifyUnit>, ConnectorError> {
        if after.is_some() {
            // Every bucket is planned in the first batch.
            return Ok(Vec::new());
        }
        self.select(collection).await?;
        let size: u64 = redis::cmd("DBSIZE")
            .query_async(&mut self.conn)
            .await
            .map_err(|e| err("DBSIZE", e))?;
        let of = size.div_ceil(self.chunk_keys).clamp(1, MAX_BUCKETS);
        Ok((0..of)
            .map(|index| VerifyUnit::new(format!("bucket {index} of {of}"), Bucket { index, of }))
            .collect())
    }

    /// Scans `collection` and calls `each(position in units, key, digest)`
    /// for every compared key of the buckets of `units`.
    async fn scan(
        &mut self,
        collection: &str,
        units: &[VerifyUnit],
        mut each: impl FnMut(usize, &[u8], u64),
    ) -> Result<(), ConnectorError> {
        let mut wanted: BTreeMap<u64, usize> = BTreeMap::new();
        let mut of = 1;
        for (i, u) in units.iter().enumerate() {
            let b = u.data_or_err::<Bucket>()?;
            of = b.of;
            wanted.insert(b.index, i);
        }
        if wanted.is_empty() {
            return Ok(());
        }
        self.select(collection).await?;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut self.conn)
                .await
                .map_err(|e| err("SCAN", e))?;
            let keys: Vec<(usize, Vec<u8>)> = keys
                .into_iter()
                .filter(|k| self.compared(k))
                .filter_map(|k| wanted.get(&bucket_of(&k, of)).map(|i| (*i, k)))
                .collect();
            for chunk in keys.chunks(BATCH) {
                let digests = self.key_digests(chunk.iter().map(|(_, k)| k)).await?;
                for ((i, k), d) in chunk.iter().zip(digests) {
                    if let Some(d) = d {
                        each(*i, k, d);
                    }
                }
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// The digest of each key (type, whether it expires, value); `None`
    /// for a key that vanished since it was listed.
    async fn key_digests<'k>(
        &mut self,
        keys: impl Iterator<Item = &'k Vec<u8>> + Clone,
    ) -> Result<Vec<Option<u64>>, ConnectorError> {
        let mut p = redis::pipe();
        for k in keys.clone() {
            p.cmd("TYPE").arg(k).cmd("PTTL").arg(k);
        }
        let meta: Vec<Value> = p
            .query_async(&mut self.conn)
            .await
            .map_err(|e| err("TYPE/PTTL", e))?;
        let mut read = redis::pipe();
        let mut kinds = Vec::new();
        for (k, m) in keys.zip(meta.chunks(2)) {
            let kind = match m.first() {
                Some(Value::SimpleString(s)) => s.clone(),
                Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                _ => "none".to_string(),
            };
            let expires = matches!(m.get(1), Some(Value::Int(t)) if *t >= 0);
            match kind.as_str() {
                "string" => read.cmd("GET").arg(k),
                "hash" => read.cmd("HGETALL").arg(k),
                "set" => read.cmd("SMEMBERS").arg(k),
                "zset" => read.cmd("ZRANGE").arg(k).arg(0).arg(-1).arg("WITHSCORES"),
                "list" => read.cmd("LRANGE").arg(k).arg(0).arg(-1),
                "stream" => read.cmd("XRANGE").arg(k).arg("-").arg("+"),
                // A module type: compared by type only.
                _ => read.cmd("EXISTS").arg(k),
            };
            kinds.push((kind, expires));
        }
        let values: Vec<Value> = read
            .query_async(&mut self.conn)
            .await
            .map_err(|e| err("reading values", e))?;
        Ok(kinds
            .iter()
            .zip(values.iter())
            .map(|((kind, expires), v)| (kind != "none").then(|| value_digest(kind, *expires, v)))
            .collect())
    }
}

/// The digest of one key's value read with its type's command (see the
/// module docs): hashes, sets and sorted sets as sums over their members
/// (order-independent), lists and streams in order.
pub fn value_digest(kind: &str, expires: bool, v: &Value) -> u64 {
    let unordered = match kind {
        "hash" | "zset" => Some(2),
        "set" => Some(1),
        _ => None,
    };
    let body = match (unordered, flatten(v)) {
        (Some(width), Some(items)) => items.chunks(width).fold(0u64, |sum, member| {
            let mut h = Fnv64::new();
            for m in member {
                hash_value(&mut h, m);
            }
            sum.wrapping_add(h.finish())
        }),
        _ => {
            let mut h = Fnv64::new();
            hash_value(&mut h, v);
            h.finish()
        }
    };
    let mut h = Fnv64::new();
    h.part(kind.as_bytes())
        .part(&[u8::from(expires)])
        .part(&body.to_le_bytes());
    h.finish()
}

/// The elements of an array, set or map reply (a map as key, value, ...).
fn flatten(v: &Value) -> Option<Vec<&Value>> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a.iter().collect()),
        Value::Map(m) => Some(m.iter().flat_map(|(k, v)| [k, v]).collect()),
        _ => None,
    }
}

/// Adds a reply to `h`, nested arrays included (stream entries).
fn hash_value(h: &mut Fnv64, v: &Value) {
    match v {
        Value::BulkString(b) => {
            h.part(b);
        }
        Value::SimpleString(s) => {
            h.part(s.as_bytes());
        }
        Value::Int(i) => {
            h.part(i.to_string().as_bytes());
        }
        Value::Nil => {
            h.part(b"\0nil");
        }
        other => match flatten(other) {
            Some(items) => {
                h.part(format!("\0array {}", items.len()).as_bytes());
                for i in items {
                    hash_value(h, i);
                }
            }
            None => {
                h.part(format!("{other:?}").as_bytes());
            }
        },
    }
}

/// A key for the operator: printable ASCII as is, other bytes escaped.
fn key_label(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}

impl VerifyScan for RedisVerify {
    fn terms(&self) -> VerifyTerms {
        VerifyTerms {
            collection: "database",
            unit: "bucket",
            item: "key",
        }
    }

    fn collections(&mut self) -> BoxFuture<'_, Result<Vec<String>, ConnectorError>> {
        Box::pin(RedisVerify::collections(self))
    }

    fn shape<'a>(
        &'a mut self,
        collection: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ConnectorError>> {
        // Every database exists (empty or not).
        let _ = collection;
        Box::pin(async { Ok(Some("redis database".to_string())) })
    }

    fn plan<'a>(
        &'a mut self,
        collection: &'a str,
        after: Option<&'a VerifyUnit>,
    ) -> BoxFuture<'a, Result<Vec<VerifyUnit>, ConnectorError>> {
        Box::pin(RedisVerify::plan(self, collection, after))
    }

    fn digest<'a>(
        &'a mut self,
        collection: &'a str,
        units: &'a [VerifyUnit],
    ) -> BoxFuture<'a, Result<Vec<UnitDigest>, ConnectorError>> {
        Box::pin(async move {
            let mut out = vec![UnitDigest::default(); units.len()];
            self.scan(collection, units, |i, key, d| {
                if let Some(u) = out.get_mut(i) {
                    u.items += 1;
                    u.digest = u.digest.wrapping_add(fnv64(&[key, &d.to_le_bytes()]));
                }
            })
            .await?;
            Ok(out)
        })
    }

    /// See [`VerifyScan::repair`]: `RESTORE key ttl <its own DUMP>
    /// REPLACE` (the replication stream carries it, and this DC's source
    /// ships it), or `DEL`.
    fn repair<'a>(
        &'a mut self,
        collection: &'a str,
        key: &'a [u8],
        delete: bool,
    ) -> BoxFuture<'a, Result<bool, ConnectorError>> {
        Box::pin(async move {
            self.select(collection).await?;
            let label = key_label(key);
            if delete {
                let n: i64 = redis::cmd("DEL")
                    .arg(key)
                    .query_async(&mut self.conn)
                    .await
                    .map_err(|e| err(&format!("DEL {label}"), e))?;
                return Ok(n > 0);
            }
            let (dump, pttl): (Option<Vec<u8>>, i64) = redis::pipe()
                .cmd("DUMP")
                .arg(key)
                .cmd("PTTL")
                .arg(key)
                .query_async(&mut self.conn)
                .await
                .map_err(|e| err(&format!("DUMP {label}"), e))?;
            let Some(dump) = dump else {
                return Ok(false);
            };
            redis::cmd("RESTORE")
                .arg(key)
                .arg(pttl.max(0))
                .arg(dump)
                .arg("REPLACE")
                .query_async::<()>(&mut self.conn)
                .await
                .map_err(|e| err(&format!("RESTORE {label}"), e))?;
            Ok(true)
        })
    }

    fn items<'a>(
        &'a mut self,
        collection: &'a str,
        units: &'a [VerifyUnit],
    ) -> BoxFuture<'a, Result<Vec<ItemDigest>, ConnectorError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            self.scan(collection, units, |_, key, digest| {
                out.push(ItemDigest {
                    key: key.to_vec(),
                    label: key_label(key),
                    digest,
                })
            })
            .await?;
            // SCAN may return a key twice (while the server rehashes).
            out.sort_by(|a, b| a.key.cmp(&b.key));
            out.dedup_by(|a, b| a.key == b.key);
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn hash_and_set_digests_do_not_depend_on_member_order() {
        let a = Value::Array(vec![bulk("f1"), bulk("v1"), bulk("f2"), bulk("v2")]);
        let b = Value::Array(vec![bulk("f2"), bulk("v2"), bulk("f1"), bulk("v1")]);
        assert_eq!(
            value_digest("hash", false, &a),
            value_digest("hash", false, &b)
        );
        // A field is paired with its own value.
        let c = Value::Array(vec![bulk("f1"), bulk("v2"), bulk("f2"), bulk("v1")]);
        assert_ne!(
            value_digest("hash", false, &a),
            value_digest("hash", false, &c)
        );
        let s1 = Value::Array(vec![bulk("a"), bulk("b")]);
        let s2 = Value::Set(vec![bulk("b"), bulk("a")]);
        assert_eq!(
            value_digest("set", false, &s1),
            value_digest("set", false, &s2)
        );
    }

    #[test]
    fn list_order_type_and_expiry_matter() {
        let a = Value::Array(vec![bulk("a"), bulk("b")]);
        let b = Value::Array(vec![bulk("b"), bulk("a")]);
        assert_ne!(
            value_digest("list", false, &a),
            value_digest("list", false, &b)
        );
        assert_ne!(
            value_digest("list", false, &a),
            value_digest("set", false, &a)
        );
        let v = bulk("x");
        assert_ne!(
            value_digest("string", false, &v),
            value_digest("string", true, &v)
        );
    }

    #[test]
    fn buckets_are_stable() {
        assert_eq!(bucket_of(b"user:1", 1), 0);
        assert_eq!(bucket_of(b"user:1", 64), bucket_of(b"user:1", 64));
        assert!(bucket_of(b"user:1", 64) < 64);
    }
}
