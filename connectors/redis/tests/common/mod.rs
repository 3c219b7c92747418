//! Shared test helpers: store config, a canonical dump of a server or an RDB
//! for comparison, and a source->sink pump.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::type_complexity
)]

use dcsync_core::connector::{Position, Registry, Sink, Source, SourceContext, SourceEvent};
use dcsync_core::topology::StoreConfig;
use dcsync_core::{Hlc, Topology, Transaction};
use dcsync_redis::rdb::{Rdb, RdbValue};
use dcsync_redis::{RedisSink, RedisSource, SyncStats};
use redis::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// (db, key) -> (canonical value text, absolute expiry ms).
pub type Canon = BTreeMap<(u32, Vec<u8>), (String, Option<u64>)>;

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn topology(prefixes: &str, flush: &str) -> Topology {
    Topology::parse(
        &format!(
            r#"
cluster = "t"
mode = "mesh"
[[dc]]
id = "bj"
link = "127.0.0.1:1"
[[dc]]
id = "sh"
link = "127.0.0.1:2"
[units]
count = 16
owners = {{ bj = "0-7", sh = "8-15" }}
[[store]]
name = "cache"
kind = "redis"
key_prefixes = [{prefixes}]
flush = "{flush}"
url = {{ bj = "redis://127.0.0.1:1", sh = "redis://127.0.0.1:2" }}
"#
        ),
        &REGISTRY,
    )
    .unwrap()
}

/// The registry the test topologies are parsed with.
pub static REGISTRY: Registry = Registry::new(&[&dcsync_redis::CONNECTOR]);

pub fn store() -> StoreConfig {
    topology("", "refuse").stores[0].clone()
}

pub use dcsync_core::now_ms;

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Okay => "OK".into(),
        Value::Nil => "nil".into(),
        Value::Double(d) => d.to_string(),
        Value::Array(a) | Value::Set(a) => {
            format!("[{}]", a.iter().map(text).collect::<Vec<_>>().join(","))
        }
        Value::Map(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}={}", text(k), text(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => format!("{other:?}"),
    }
}

fn bytes_list(v: &Value) -> Vec<Vec<u8>> {
    match v {
        Value::Array(a) | Value::Set(a) => a
            .iter()
            .map(|x| match x {
                Value::BulkString(b) => b.clone(),
                other => text(other).into_bytes(),
            })
            .collect(),
        _ => vec![],
    }
}

fn field(map: &Value, name: &str) -> String {
    if let Value::Array(a) = map {
        for kv in a.chunks(2) {
            if kv.len() == 2 && text(&kv[0]) == name {
                return text(&kv[1]);
            }
        }
    }
    if let Value::Map(m) = map {
        for (k, v) in m {
            if text(k) == name {
                return text(v);
            }
        }
    }
    String::new()
}

fn score(s: f64) -> String {
    format!("{s}")
}

fn canon_list(v: &[Vec<u8>]) -> String {
    format!(
        "{:?}",
        v.iter()
            .map(|x| String::from_utf8_lossy(x))
            .collect::<Vec<_>>()
    )
}

fn canon_set(v: &[Vec<u8>]) -> String {
    let mut v = v.to_vec();
    v.sort();
    canon_list(&v)
}

fn canon_zset(v: &[(Vec<u8>, f64)]) -> String {
    let mut v: Vec<(String, String)> = v
        .iter()
        .map(|(m, s)| (String::from_utf8_lossy(m).into_owned(), score(*s)))
        .collect();
    v.sort();
    format!("{v:?}")
}

fn canon_hash(v: &[(Vec<u8>, Vec<u8>)]) -> String {
    let mut v: Vec<(String, String)> = v
        .iter()
        .map(|(a, b)| {
            (
                String::from_utf8_lossy(a).into_owned(),
                String::from_utf8_lossy(b).into_owned(),
            )
        })
        .collect();
    v.sort();
    format!("{v:?}")
}

/// Canonical stream: entries, last id, groups (name, last id, entries read,
/// sorted consumers).
fn canon_stream(
    entries: &[(String, Vec<(Vec<u8>, Vec<u8>)>)],
    last_id: &str,
    groups: &mut [(String, String, String, Vec<String>)],
) -> String {
    groups.sort();
    let e: Vec<(String, String)> = entries
        .iter()
        .map(|(id, f)| (id.clone(), canon_hash_ordered(f)))
        .collect();
    format!("stream entries={e:?} last={last_id} groups={groups:?}")
}

fn canon_hash_ordered(v: &[(Vec<u8>, Vec<u8>)]) -> String {
    format!(
        "{:?}",
        v.iter()
            .map(|(a, b)| (String::from_utf8_lossy(a), String::from_utf8_lossy(b)))
            .collect::<Vec<_>>()
    )
}

/// Canonical dump of one database of a live server.
pub async fn canon_server(url: &str, db: u32) -> Canon {
    let client = redis::Client::open(format!("{url}/{db}")).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut c)
            .await
            .unwrap();
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    keys.sort();
    keys.dedup();
    // Apply markers are dcsync's bookkeeping, not data.
    keys.retain(|k| !k.starts_with(dcsync_redis::MARKER_PREFIX.as_bytes()));
    let mut out = Canon::new();
    for chunk in keys.chunks(500) {
        let mut p = redis::pipe();
        for k in chunk {
            p.cmd("TYPE").arg(k).cmd("PTTL").arg(k);
        }
        let meta: Vec<Value> = p.query_async(&mut c).await.unwrap();
        let now = now_ms();
        let mut p = redis::pipe();
        let mut types = Vec::new();
        for (i, k) in chunk.iter().enumerate() {
            let t = text(&meta[2 * i]);
            match t.as_str() {
                "string" => p.cmd("GET").arg(k),
                "list" => p.cmd("LRANGE").arg(k).arg(0).arg(-1),
                "set" => p.cmd("SMEMBERS").arg(k),
                "zset" => p.cmd("ZRANGE").arg(k).arg(0).arg(-1).arg("WITHSCORES"),
                "hash" => p.cmd("HGETALL").arg(k),
                "stream" => p
                    .cmd("XRANGE")
                    .arg(k)
                    .arg("-")
                    .arg("+")
                    .cmd("XINFO")
                    .arg("STREAM")
                    .arg(k)
                    .cmd("XINFO")
                    .arg("GROUPS")
                    .arg(k),
                _ => p.cmd("PING"),
            };
            types.push(t);
        }
        let vals: Vec<Value> = p.query_async(&mut c).await.unwrap();
        let mut vi = vals.into_iter();
        for (i, k) in chunk.iter().enumerate() {
            let pttl = match &meta[2 * i + 1] {
                Value::Int(n) if *n >= 0 => Some(now + *n as u64),
                _ => None,
            };
            let v = vi.next().unwrap();
            let canon = match types[i].as_str() {
                "string" => format!("string {}", text(&v)),
                "list" => format!("list {}", canon_list(&bytes_list(&v))),
                "set" => format!("set {}", canon_set(&bytes_list(&v))),
                "zset" => {
                    let l = bytes_list(&v);
                    let z: Vec<(Vec<u8>, f64)> = l
                        .chunks(2)
                        .map(|p| {
                            let s = String::from_utf8_lossy(&p[1]).into_owned();
                            let f = match s.as_str() {
                                "inf" => f64::INFINITY,
                                "-inf" => f64::NEG_INFINITY,
                                s => s.parse().unwrap(),
                            };
                            (p[0].clone(), f)
                        })
                        .collect();
                    format!("zset {}", canon_zset(&z))
                }
                "hash" => {
                    let l = bytes_list(&v);
                    let h: Vec<(Vec<u8>, Vec<u8>)> =
                        l.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
                    format!("hash {}", canon_hash(&h))
                }
                "stream" => {
                    let info = vi.next().unwrap();
                    let groups_v = vi.next().unwrap();
                    let mut entries = Vec::new();
                    if let Value::Array(a) = &v {
                        for e in a {
                            if let Value::Array(pair) = e {
                                let id = text(&pair[0]);
                                let f = bytes_list(&pair[1]);
                                entries.push((
                                    id,
                                    f.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect(),
                                ));
                            }
                        }
                    }
                    let mut groups = Vec::new();
                    if let Value::Array(gs) = &groups_v {
                        for g in gs {
                            let name = field(g, "name");
                            let consumers: Value = redis::cmd("XINFO")
                                .arg("CONSUMERS")
                                .arg(k)
                                .arg(&name)
                                .query_async(&mut c)
                                .await
                                .unwrap();
                            let mut cs = Vec::new();
                            if let Value::Array(a) = consumers {
                                for cv in &a {
                                    cs.push(field(cv, "name"));
                                }
                            }
                            cs.sort();
                            groups.push((
                                name,
                                field(g, "last-delivered-id"),
                                field(g, "entries-read"),
                                cs,
                            ));
                        }
                    }
                    canon_stream(&entries, &field(&info, "last-generated-id"), &mut groups)
                }
                other => format!("unknown type {other}"),
            };
            out.insert((db, k.clone()), (canon, pttl));
        }
    }
    out
}

/// Canonical dump of a parsed RDB (marker keys skipped like the source does).
pub fn canon_rdb(rdb: &Rdb) -> Canon {
    let mut out = Canon::new();
    for e in &rdb.entries {
        let canon = match &e.value {
            RdbValue::String(v) => format!("string {}", String::from_utf8_lossy(v)),
            RdbValue::List(v) => format!("list {}", canon_list(v)),
            RdbValue::Set(v) => format!("set {}", canon_set(v)),
            RdbValue::SortedSet(v) => format!("zset {}", canon_zset(v)),
            RdbValue::Hash(v) => format!("hash {}", canon_hash(v)),
            RdbValue::Stream(s) => {
                let entries: Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)> = s
                    .entries
                    .iter()
                    .map(|e| (format!("{}-{}", e.id.0, e.id.1), e.fields.clone()))
                    .collect();
                let mut groups: Vec<(String, String, String, Vec<String>)> = s
                    .groups
                    .iter()
                    .map(|g| {
                        let mut cs: Vec<String> = g
                            .consumers
                            .iter()
                            .map(|c| String::from_utf8_lossy(c).into_owned())
                            .collect();
                        cs.sort();
                        (
                            String::from_utf8_lossy(&g.name).into_owned(),
                            format!("{}-{}", g.last_id.0, g.last_id.1),
                            g.entries_read
                                .filter(|n| *n != u64::MAX)
                                .map(|n| n.to_string())
                                .unwrap_or_else(|| "nil".into()),
                            cs,
                        )
                    })
                    .collect();
                canon_stream(
                    &entries,
                    &format!("{}-{}", s.last_id.0, s.last_id.1),
                    &mut groups,
                )
            }
        };
        out.insert((e.db, e.key.clone()), (canon, e.expire_ms));
    }
    out
}

/// Asserts two canonical dumps are equal, expiries within `tol_ms`.
pub fn assert_same(a: &Canon, b: &Canon, tol_ms: u64) {
    let diff = diff(a, b, tol_ms);
    assert!(
        diff.is_empty(),
        "{} differences, first: {:?}",
        diff.len(),
        &diff[..diff.len().min(5)]
    );
}

/// Differences between two canonical dumps, expiries within `tol_ms`.
pub fn diff(a: &Canon, b: &Canon, tol_ms: u64) -> Vec<String> {
    let mut out = Vec::new();
    for (k, (va, ea)) in a {
        match b.get(k) {
            None => out.push(format!("{k:?} missing on the right")),
            Some((vb, eb)) => {
                if va != vb {
                    out.push(format!("{k:?}: {va} != {vb}"));
                }
                let close = match (ea, eb) {
                    (None, None) => true,
                    (Some(x), Some(y)) => x.abs_diff(*y) <= tol_ms,
                    _ => false,
                };
                if !close {
                    out.push(format!("{k:?}: expiry {ea:?} != {eb:?}"));
                }
            }
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            out.push(format!("{k:?} missing on the left"));
        }
    }
    out
}

/// A running source with its channels.
pub struct RunningSource {
    pub events: mpsc::Receiver<SourceEvent>,
    pub durable: watch::Sender<Option<Position>>,
    pub shutdown: watch::Sender<bool>,
    pub stats: Arc<SyncStats>,
    pub task: tokio::task::JoinHandle<Result<(), dcsync_core::connector::ConnectorError>>,
}

pub fn start_source(url: &str, store: StoreConfig, resume: Option<Position>) -> RunningSource {
    let topo = topology("", "refuse");
    let (etx, erx) = mpsc::channel(64);
    let (dtx, drx) = watch::channel(resume.clone());
    let (stx, srx) = watch::channel(false);
    // The Redis source never splits a transaction; nothing to count.
    let (_, fragments) = watch::channel(0u64);
    let src = RedisSource::new(url.to_string());
    let stats = src.stats();
    let cx = SourceContext {
        dc: "bj".into(),
        store,
        units: topo.units.clone(),
        resume,
        events: etx,
        durable: drx,
        fragments_journaled: fragments,
        shutdown: srx,
    };
    let task = tokio::spawn(src.run(cx));
    RunningSource {
        events: erx,
        durable: dtx,
        shutdown: stx,
        stats,
        task,
    }
}

impl RunningSource {
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let r = tokio::time::timeout(std::time::Duration::from_secs(10), self.task)
            .await
            .expect("source stops on shutdown")
            .expect("join");
        assert!(r.is_ok(), "source returned {r:?}");
    }
}

/// Wraps Local events as transactions of origin `origin` with dense seqs.
pub fn to_tx(
    origin: &str,
    seq: u64,
    changes: Vec<dcsync_core::Change>,
    pos: &Position,
) -> Transaction {
    Transaction {
        origin: origin.into(),
        store: "cache".into(),
        seq,
        hlc: Hlc::default(),
        position: pos.display.clone(),
        commit_ts_ms: 0,
        changes,
        part: 0,
        more: false,
        epoch: 0,
    }
}

/// Pumps source events into `sink` until `stop` is set; each Local event is
/// one transaction with the next seq; the position is published as durable
/// after the sink applied it. Returns every event seen.
pub async fn pump(
    src: &mut RunningSource,
    sink: &mut RedisSink,
    origin: &str,
    seq: &mut u64,
    seen: &mut Vec<SourceEvent>,
) {
    while let Ok(ev) = src.events.try_recv() {
        match &ev {
            SourceEvent::Local {
                changes, position, ..
            } => {
                *seq += 1;
                let tx = to_tx(origin, *seq, changes.clone(), position);
                sink.apply(origin, &[tx]).await.expect("apply");
                let _ = src.durable.send(Some(position.clone()));
            }
            SourceEvent::Fragment { .. } => panic!("the Redis source never splits a transaction"),
            SourceEvent::Echo { position, .. } | SourceEvent::Progress { position } => {
                let _ = src.durable.send(Some(position.clone()));
            }
            SourceEvent::Skipped { .. }
            | SourceEvent::Resync { .. }
            | SourceEvent::Copying { .. } => {}
        }
        seen.push(ev);
    }
}
