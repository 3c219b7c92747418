//! Unit tests of the parent module: what counts as misrouted, how it is
//! described and counted, and the log's rate limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use dcsync_core::connector::Registry;
use dcsync_core::{ColumnMeta, Hlc, RedisCommand, RowChange, TableMeta, Topology};
use std::sync::Arc;

/// 8 units: 0-3 bj's, 4-7 sh's.
fn units() -> Units {
    Topology::parse(
        "cluster = \"c\"\n[[dc]]\nid = \"bj\"\nlink = \"a:1\"\n[[dc]]\nid = \"sh\"\nlink = \"b:1\"\n\
         [units]\ncount = 8\nowners = { bj = \"0-3\", sh = \"4-7\" }\n",
        &Registry::new(&[]),
    )
    .unwrap()
    .units
}

fn table() -> Arc<TableMeta> {
    let col = |name: &str, pk: bool| ColumnMeta {
        name: name.into(),
        type_code: 3,
        unsigned: false,
        primary_key: pk,
    };
    Arc::new(TableMeta {
        schema: "shop".into(),
        name: "t".into(),
        columns: vec![col("id", true), col("user_id", false), col("code", true)],
    })
}

fn row(unit: Option<u32>, kind: RowKind, id: i64) -> Change {
    let img = Some(vec![
        Value::Int(id),
        Value::Int(42),
        Value::Bytes(b"a\"b".to_vec()),
    ]);
    let (before, after) = match kind {
        RowKind::Insert => (None, img),
        RowKind::Update => (img.clone(), img),
        RowKind::Delete => (img, None),
    };
    Change {
        unit,
        payload: Payload::Row(RowChange {
            table: table(),
            kind,
            before,
            after,
        }),
    }
}

fn redis(unit: Option<u32>, key: &str) -> Change {
    Change {
        unit,
        payload: Payload::Redis(RedisCommand {
            db: 0,
            args: vec![b"SET".to_vec(), key.as_bytes().to_vec(), b"v".to_vec()],
        }),
    }
}

fn tx(changes: Vec<Change>, position: &str) -> Transaction {
    Transaction {
        origin: "bj".into(),
        store: "orders".into(),
        seq: 0,
        hlc: Hlc(0),
        position: position.into(),
        commit_ts_ms: 0,
        changes,
        part: 0,
        more: false,
        epoch: 0,
    }
}

#[test]
fn only_units_another_dc_owns_are_misrouted() {
    let g = Guard::new("bj", "orders");
    let found = g.scan(
        &units(),
        &[
            tx(
                vec![
                    row(Some(5), RowKind::Insert, 1),
                    row(Some(2), RowKind::Insert, 2), // bj's own unit
                    row(None, RowKind::Insert, 3),    // no unit
                ],
                "f:1",
            ),
            tx(
                vec![
                    row(Some(5), RowKind::Update, 4),
                    row(Some(7), RowKind::Delete, 5),
                ],
                "f:2",
            ),
        ],
    );
    assert_eq!(found.total, 3);
    assert_eq!(found.per_unit, BTreeMap::from([(5, 2), (7, 1)]));
    let last = found.last.unwrap();
    assert_eq!(
        (
            last.table.as_deref(),
            last.key.as_str(),
            last.unit,
            last.owner.as_str(),
            last.position.as_str()
        ),
        (Some("shop.t"), "id=5,code=\"a\\\"b\"", 7, "sh", "f:2")
    );
    // The owner's own writes: nothing.
    let own = g.scan(
        &units(),
        &[tx(vec![row(Some(1), RowKind::Insert, 1)], "f:3")],
    );
    assert_eq!(own, Found::default());
}

#[test]
fn a_redis_write_is_described_by_its_key() {
    let g = Guard::new("sh", "cache");
    let found = g.scan(&units(), &[tx(vec![redis(Some(0), "user:42:cart")], "")]);
    let last = found.last.unwrap();
    assert_eq!(
        (last.table, last.key.as_str(), last.owner.as_str()),
        (None, "user:42:cart", "bj")
    );
    let long = "k".repeat(100);
    let found = g.scan(&units(), &[tx(vec![redis(Some(0), &long)], "")]);
    assert_eq!(
        found.last.unwrap().key,
        format!("{}…", "k".repeat(MAX_VALUE_CHARS))
    );
}

#[test]
fn record_adds_to_the_status_with_a_bounded_unit_map() {
    let mut g = Guard::new("bj", "orders");
    let status = Mutex::new(SourceStatus::default());
    let u = units();
    g.record(
        g.scan(&u, &[tx(vec![row(Some(5), RowKind::Insert, 1)], "f:1")]),
        &status,
    );
    g.record(
        g.scan(
            &u,
            &[tx(
                vec![
                    row(Some(5), RowKind::Insert, 2),
                    row(Some(6), RowKind::Insert, 3),
                ],
                "f:2",
            )],
        ),
        &status,
    );
    let m = status.lock().unwrap().misrouted.clone();
    assert_eq!(m.total, 3);
    assert_eq!(m.by_unit, BTreeMap::from([(5, 2), (6, 1)]));
    assert_eq!(m.other_units, 0);
    assert_eq!(m.last.unwrap().key, "id=3,code=\"a\\\"b\"");
    // Nothing found: nothing changes.
    g.record(Found::default(), &status);
    assert_eq!(status.lock().unwrap().misrouted.total, 3);

    // A full map keeps its units and counts the others apart.
    let mut full = SourceStatus::default();
    full.misrouted.by_unit = (100..100 + MAX_UNITS_SHOWN as u32)
        .map(|u| (u, 1))
        .collect();
    let status = Mutex::new(full);
    g.record(
        g.scan(
            &u,
            &[tx(
                vec![
                    row(Some(5), RowKind::Insert, 1),
                    row(Some(5), RowKind::Insert, 2),
                ],
                "f:1",
            )],
        ),
        &status,
    );
    let m = status.lock().unwrap().misrouted.clone();
    assert_eq!(m.by_unit.len(), MAX_UNITS_SHOWN);
    assert!(!m.by_unit.contains_key(&5));
    assert_eq!((m.total, m.other_units), (2, 2));
}

#[test]
fn one_line_per_interval_counting_what_it_held_back() {
    let mut r = RateLimit::new(Duration::from_secs(10));
    let t0 = Instant::now();
    // The first batch is logged: one line for its 3 writes, 2 not shown.
    assert_eq!(r.admit(t0, 3), Some(2));
    assert_eq!(r.admit(t0 + Duration::from_secs(1), 1), None);
    assert_eq!(r.admit(t0 + Duration::from_secs(9), 4), None);
    // 10 s on: a line again, saying the 5 held back (and none of its own).
    assert_eq!(r.admit(t0 + Duration::from_secs(10), 1), Some(5));
    assert_eq!(r.admit(t0 + Duration::from_secs(11), 1), None);
    assert_eq!(r.admit(t0 + Duration::from_secs(25), 2), Some(2));
}

#[test]
fn status_json_shape() {
    let m = MisroutedStatus {
        total: 2,
        by_unit: BTreeMap::from([(40, 2)]),
        other_units: 0,
        last: Some(MisroutedWrite {
            table: Some("shop.t".into()),
            key: "id=7".into(),
            unit: 40,
            owner: "sh".into(),
            at_ms: 5,
            position: "mysql-bin.000001:99".into(),
        }),
    };
    let v = serde_json::to_value(&m).unwrap();
    assert_eq!(v["by_unit"]["40"], 2);
    assert_eq!(v["last"]["owner"], "sh");
    // An older status file without the field still reads.
    let st: SourceStatus = serde_json::from_str(
        r#"{"store":"orders","state":"running","error":null,"position":"","local_txns":0,"echo_txns":0}"#,
    )
    .unwrap();
    assert_eq!(st.misrouted, MisroutedStatus::default());
}
