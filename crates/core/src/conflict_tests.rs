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

/// Applies `m` at its DC by the lww rule; the DC's clock observes the
/// version applied (what the source does when it reads the echo).
fn deliver(dcs: &mut [Dc], m: Msg) {
    let dc = &mut dcs[m.to];
    let current = dc.store.get(&m.key).map(|(_, v)| v);
    if wins(&m.version, current) {
        dc.clock.observe(m.version.hlc);
        dc.store.insert(m.key, (m.value, m.version));
    }
}

fn run_model(n: usize, skew_ms: &[u64], steps: Vec<Step>) -> Result<(), TestCaseError> {
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
    for step in steps {
        match step {
            Step::Write(d, key) => {
                // A local write: stamped above everything this DC applied
                // (its clock observed each applied version).
                let version = Version {
                    hlc: dcs[d].clock.now(),
                    dc: dcs[d].id.clone(),
                };
                if let Some((_, cur)) = dcs[d].store.get(&key) {
                    prop_assert!(
                        version > *cur,
                        "a local write is above the value it overwrites"
                    );
                }
                dcs[d].store.insert(key, (next_value, version.clone()));
                for to in (0..n).filter(|t| *t != d) {
                    pending.push(Msg {
                        to,
                        key,
                        value: next_value,
                        version: version.clone(),
                    });
                }
                next_value += 1;
            }
            Step::Deliver(i) if !pending.is_empty() => {
                let m = pending.remove(i % pending.len());
                deliver(&mut dcs, m);
            }
            Step::Deliver(_) => {}
        }
    }
    // The lines come back: everything still in flight arrives, in any order.
    while let Some(m) = pending.pop() {
        deliver(&mut dcs, m);
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
        run_model(n, &skew, steps)?;
    }
}
