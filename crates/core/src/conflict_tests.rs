use super::*;
use crate::change::{ColumnMeta, TableMeta};
use crate::HlcClock;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

fn table() -> Arc<TableMeta> {
    Arc::new(TableMeta {
        schema: "shop".into(),
        name: "items".into(),
        columns: vec![
            ColumnMeta {
                name: "id".into(),
                type_code: 3,
                unsigned: false,
                primary_key: true,
            },
            ColumnMeta {
                name: "note".into(),
                type_code: 15,
                unsigned: false,
                primary_key: false,
            },
        ],
    })
}

fn row(kind: RowKind, before: Option<(i64, &str)>, after: Option<(i64, &str)>) -> RowChange {
    let img = |(id, note): (i64, &str)| vec![Value::Int(id), Value::Bytes(note.into())];
    RowChange {
        table: table(),
        kind,
        before: before.map(img),
        after: after.map(img),
    }
}

#[test]
fn versions_order_by_hlc_then_dc() {
    let v = |h: u64, dc: &str| Version {
        hlc: Hlc(h),
        dc: dc.into(),
    };
    assert!(v(5, "sh") > v(4, "zz"));
    assert!(v(5, "sh") > v(5, "bj"));
    assert!(wins(&v(5, "bj"), None));
    assert!(
        wins(&v(5, "bj"), Some(&v(5, "bj"))),
        "a redelivery is applied"
    );
    assert!(!wins(&v(5, "bj"), Some(&v(5, "sh"))));
    assert!(!wins(&v(4, "sh"), Some(&v(5, "bj"))));
}

#[test]
fn row_keys_cover_both_images_when_the_key_changes() {
    let upd = row(RowKind::Update, Some((1, "a")), Some((1, "b")));
    assert_eq!(row_version_keys(&upd).len(), 1);
    let moved = row(RowKind::Update, Some((1, "a")), Some((2, "a")));
    let keys = row_version_keys(&moved);
    assert_eq!(keys.len(), 2);
    assert_ne!(keys[0], keys[1]);
    let del = row(RowKind::Delete, Some((2, "a")), None);
    assert_eq!(row_version_keys(&del), vec![keys[0].clone()]);
    // The key names the table and the primary key only.
    let other_note = row(RowKind::Insert, None, Some((2, "zzz")));
    assert_eq!(row_version_keys(&other_note), vec![keys[0].clone()]);
    assert!(keys[0].starts_with(b"shop\0items\0"));
    assert_eq!(
        describe_row_key(&moved, moved.after.as_deref().unwrap()),
        "shop.items id=2"
    );
}

#[test]
fn readable_forms_are_truncated() {
    let long = "x".repeat(5000);
    let r = row(RowKind::Insert, None, Some((1, &long)));
    let s = describe_image(&r, r.after.as_deref());
    assert!(s.chars().count() <= IMAGE_CHARS + 1, "{}", s.len());
    assert!(s.starts_with("{id=1, note='xxx"));
    assert_eq!(describe_image(&r, None), "(no row)");
    assert_eq!(truncate("héllo", 2), "hé…");
}

/// One DC of the model: its store (key → value, version) and clock.
struct Dc {
    id: String,
    clock: HlcClock,
    store: BTreeMap<u8, (u32, Version)>,
}

/// A write in flight from its origin to one DC.
#[derive(Clone)]
struct Msg {
    to: usize,
    key: u8,
    value: u32,
    version: Version,
}

/// Steps of a run: a local write (dc, key) or the delivery of a pending
/// message (index into the pending list, modulo its length). Clocks are
/// skewed per DC by up to a minute.
#[derive(Debug, Clone)]
enum Step {
    Write(usize, u8),
    Deliver(usize),
}

fn steps(dcs: usize) -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            (0..dcs, 0u8..4).prop_map(|(d, k)| Step::Write(d, k)),
            (0usize..64).prop_map(Step::Deliver),
        ],
        1..80,
    )
}

/// Applies `m` at its DC by the lww rule (and, with `owner`, the veto of
/// DC 0, which owns every key); the DC's clock observes the version (what
/// the applier and the source do). Returns the value the owner re-ships
/// after a veto.
fn deliver(dcs: &mut [Dc], m: Msg, owner: bool) -> Option<(u8, u32)> {
    let owner_id = dcs[0].id.clone();
    let dc = &mut dcs[m.to];
    dc.clock.observe(m.version.hlc);
    let current = dc.store.get(&m.key).map(|(_, v)| v);
    if !wins(&m.version, current) {
        return None;
    }
    let owner = owner.then_some(owner_id.as_str());
    if owner_vetoes(&dc.id, owner, &m.version, current) {
        return dc.store.get(&m.key).map(|(value, _)| (m.key, *value));
    }
    dc.store.insert(m.key, (m.value, m.version));
    None
}

/// A local write of `value` to `key` at DC `d`, sent to every other DC.
fn write(
    dcs: &mut [Dc],
    pending: &mut Vec<Msg>,
    d: usize,
    key: u8,
    value: u32,
) -> Result<(), TestCaseError> {
    let version = Version {
        hlc: dcs[d].clock.now(),
        dc: dcs[d].id.clone(),
    };
    if let Some((_, cur)) = dcs[d].store.get(&key) {
        // A local write is stamped above the value it overwrites (its
        // clock observed it).
        prop_assert!(
            version > *cur,
            "a local write is above the value it overwrites"
        );
    }
    dcs[d].store.insert(key, (value, version.clone()));
    for to in (0..dcs.len()).filter(|t| *t != d) {
        pending.push(Msg {
            to,
            key,
            value,
            version: version.clone(),
        });
    }
    Ok(())
}

fn run_model(
    n: usize,
    skew_ms: &[u64],
    steps: Vec<Step>,
    owner: bool,
) -> Result<(), TestCaseError> {
    let base = crate::now_ms();
    let mut dcs: Vec<Dc> = (0..n)
        .map(|i| Dc {
            id: format!("dc{i}"),
            clock: HlcClock::with_floor(Hlc::new(base + skew_ms[i], 0)),
            store: BTreeMap::new(),
        })
        .collect();
    let mut pending: Vec<Msg> = Vec::new();
    let mut next_value = 1u32;
    let mut vetoes = 0;
    for step in steps {
        match step {
            Step::Write(d, key) => {
                write(&mut dcs, &mut pending, d, key, next_value)?;
                next_value += 1;
            }
            Step::Deliver(i) if !pending.is_empty() => {
                let m = pending.remove(i % pending.len());
                if let Some((key, value)) = deliver(&mut dcs, m, owner) {
                    vetoes += 1;
                    write(&mut dcs, &mut pending, 0, key, value)?;
                }
            }
            Step::Deliver(_) => {}
        }
    }
    // The lines come back: everything still in flight arrives, in any order.
    while let Some(m) = pending.pop() {
        if let Some((key, value)) = deliver(&mut dcs, m, owner) {
            vetoes += 1;
            write(&mut dcs, &mut pending, 0, key, value)?;
        }
        prop_assert!(vetoes < 10_000, "re-ships do not end");
    }
    let first = &dcs[0].store;
    for dc in &dcs[1..] {
        prop_assert_eq!(&dc.store, first, "{} differs from {}", dc.id, dcs[0].id);
    }
    Ok(())
}

proptest! {
    /// For random interleavings of local writes and deliveries among two
    /// or three DCs with skewed clocks, every DC ends with the same value
    /// and version for every key.
    #[test]
    fn lww_converges_for_any_interleaving(
        n in 2usize..=3,
        skew in prop::collection::vec(0u64..60_000, 3),
        steps in steps(3),
    ) {
        let steps = steps
            .into_iter()
            .map(|s| match s {
                Step::Write(d, k) => Step::Write(d % n, k),
                other => other,
            })
            .collect();
        run_model(n, &skew, steps, false)?;
    }

    /// The same under `owner` (DC 0 owns every key): the owner's vetoes
    /// and re-ships keep every DC equal too.
    #[test]
    fn owner_converges_for_any_interleaving(
        n in 2usize..=3,
        skew in prop::collection::vec(0u64..60_000, 3),
        steps in steps(3),
    ) {
        let steps = steps
            .into_iter()
            .map(|s| match s {
                Step::Write(d, k) => Step::Write(d % n, k),
                other => other,
            })
            .collect();
        run_model(n, &skew, steps, true)?;
    }
}

/// Under `owner`, the owner's write wins a conflict even against a later
/// HLC of another DC.
#[test]
fn the_owner_wins_against_a_later_clock() {
    let base = crate::now_ms();
    let mut dcs: Vec<Dc> = [("dc0", 0), ("dc1", 600_000)]
        .iter()
        .map(|(id, skew)| Dc {
            id: id.to_string(),
            clock: HlcClock::with_floor(Hlc::new(base + skew, 0)),
            store: BTreeMap::new(),
        })
        .collect();
    let mut pending = Vec::new();
    write(&mut dcs, &mut pending, 0, 1, 100).unwrap();
    write(&mut dcs, &mut pending, 1, 1, 200).unwrap();
    while let Some(m) = pending.pop() {
        if let Some((key, value)) = deliver(&mut dcs, m, true) {
            write(&mut dcs, &mut pending, 0, key, value).unwrap();
        }
    }
    assert_eq!(dcs[0].store.get(&1).map(|v| v.0), Some(100));
    assert_eq!(dcs[1].store.get(&1).map(|v| v.0), Some(100));
}

/// The version index is persisted: a key's bytes must not change between
/// agent versions (`schema \0 table \0`, then per primary-key column its
/// length, u32 big-endian, and its unit-key bytes, or `u32::MAX` for NULL).
#[test]
fn version_key_bytes_are_stable() {
    let img = vec![Value::Int(-7), Value::Bytes(b"ab".to_vec()), Value::Null];
    let mut want = b"s\0t\0".to_vec();
    want.extend_from_slice(&[0, 0, 0, 2]);
    want.extend_from_slice(b"-7");
    want.extend_from_slice(&[0, 0, 0, 2]);
    want.extend_from_slice(b"ab");
    want.extend_from_slice(&[0xff; 4]);
    assert_eq!(version_key("s", "t", &[0, 1, 2], &img), want);
    // A column the image lacks counts as NULL.
    let mut short = b"s\0t\0".to_vec();
    short.extend_from_slice(&[0xff; 4]);
    assert_eq!(version_key("s", "t", &[9], &img), short);
    // row_version_key takes the primary-key columns in column order.
    let r = row(RowKind::Insert, None, Some((42, "x")));
    let after = r.after.clone().unwrap();
    assert_eq!(
        row_version_key(&r, &after),
        Some(version_key("shop", "items", &r.primary_key(), &after))
    );
    for v in [
        Value::UInt(u64::MAX),
        Value::Double(1.5),
        Value::Float(-0.25),
        Value::Bytes(b"\xff\x00".to_vec()),
    ] {
        let mut out = Vec::new();
        assert!(v.write_unit_key(&mut out));
        assert_eq!(Some(out), v.unit_key_bytes());
    }
    assert_eq!(Value::Null.unit_key_bytes(), None);
}
