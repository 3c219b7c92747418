//! Planner model test: applying the planned runs to a table model reaches
//! the same end state as applying every change in source order.

use super::*;
use dcsync_core::ColumnMeta;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn columns() -> Vec<ColumnMeta> {
    ["id", "v"]
        .iter()
        .enumerate()
        .map(|(i, n)| ColumnMeta {
            name: (*n).into(),
            type_code: 3,
            unsigned: false,
            primary_key: i == 0,
        })
        .collect()
}

fn row(kind: RowKind, before: Option<(i64, i64)>, after: Option<(i64, i64)>) -> RowChange {
    let img = |r: Option<(i64, i64)>| r.map(|(k, v)| vec![Value::Int(k), Value::Int(v)]);
    RowChange {
        table: std::sync::Arc::new(dcsync_core::TableMeta {
            schema: "s".into(),
            name: "t".into(),
            columns: columns(),
        }),
        kind,
        before: img(before),
        after: img(after),
    }
}

/// Generates a valid change sequence against a model starting with keys
/// 0..4 present: each op picks a key from a small space so keys repeat.
fn changes(ops: &[(u8, i64, i64)]) -> (BTreeMap<i64, i64>, Vec<RowChange>) {
    let start: BTreeMap<i64, i64> = (0..4).map(|k| (k, 100 + k)).collect();
    let mut model = start.clone();
    let mut out = Vec::new();
    for (op, key, val) in ops {
        let key = key % 8;
        match (op % 3, model.get(&key).copied()) {
            (0, None) => {
                model.insert(key, *val);
                out.push(row(RowKind::Insert, None, Some((key, *val))));
            }
            (1, Some(old)) => {
                // Update, sometimes moving the row to a free key.
                let to = (key + val.rem_euclid(3)) % 8;
                if to != key && model.contains_key(&to) {
                    continue;
                }
                model.remove(&key);
                model.insert(to, *val);
                out.push(row(RowKind::Update, Some((key, old)), Some((to, *val))));
            }
            (2, Some(old)) => {
                model.remove(&key);
                out.push(row(RowKind::Delete, Some((key, old)), None));
            }
            _ => {}
        }
    }
    (start, out)
}

/// Applies every partition's runs, the last partition first (partitions
/// are independent connections: any order must do).
fn apply_runs(mut table: BTreeMap<i64, i64>, plan: GroupPlan<'_>) -> BTreeMap<i64, i64> {
    for (_, runs) in plan.into_runs().into_iter().rev().flatten() {
        for run in runs {
            for img in run.rows {
                let (Value::Int(k), Value::Int(v)) = (&img[0], &img[1]) else {
                    panic!("unexpected image {img:?}");
                };
                match run.kind {
                    RunKind::Delete => {
                        table.remove(k);
                    }
                    RunKind::Replace => {
                        table.insert(*k, *v);
                    }
                }
            }
        }
    }
    table
}

proptest! {
    #[test]
    fn planned_runs_reach_the_source_end_state(
        ops in proptest::collection::vec((0u8..3, 0i64..8, 0i64..1000), 0..60),
        partitions in 1usize..5,
    ) {
        let (start, changes) = changes(&ops);
        let mut model = start.clone();
        for c in &changes {
            if let Some(b) = &c.before {
                if let Value::Int(k) = b[0] { model.remove(&k); }
            }
            if let Some(a) = &c.after {
                if let (Value::Int(k), Value::Int(v)) = (&a[0], &a[1]) { model.insert(*k, *v); }
            }
        }
        for spread in [Spread::ByKey(vec![KeyNorm::Exact]), Spread::Whole] {
            let mut plan = GroupPlan::new(vec![0; partitions]);
            for (seq, c) in changes.iter().enumerate() {
                plan.add(c, &[0], &spread, seq as u64 + 1).unwrap();
            }
            prop_assert_eq!(&apply_runs(start.clone(), plan), &model, "{:?}", spread);
        }
    }
}

#[test]
fn merged_table_gets_one_delete_run_then_one_replace_run() {
    let changes = [
        row(RowKind::Insert, None, Some((10, 1))),
        row(RowKind::Update, Some((10, 1)), Some((10, 2))),
        row(RowKind::Delete, Some((1, 101)), None),
        row(RowKind::Insert, None, Some((1, 7))),
        row(RowKind::Delete, Some((2, 102)), None),
        row(RowKind::Update, Some((3, 103)), Some((11, 103))),
    ];
    let mut plan = GroupPlan::new(vec![0]);
    for c in &changes {
        plan.add(c, &[0], &Spread::Whole, 1).unwrap();
    }
    let runs = plan.into_runs().remove(0);
    assert_eq!(runs.len(), 1);
    let kinds: Vec<(RunKind, usize)> = runs[0].1.iter().map(|r| (r.kind, r.rows.len())).collect();
    // Deletes: 2 and 3 (moved away); replaces: 10 (last image), 1, 11.
    assert_eq!(kinds, vec![(RunKind::Delete, 2), (RunKind::Replace, 3)]);
    assert_eq!(runs[0].1[1].rows[0][1], Value::Int(2));
}

#[test]
fn keys_differing_in_one_byte_or_in_type_do_not_merge() {
    let k = |v: Value| key_bytes(&[0], &[v], None);
    assert_ne!(
        k(Value::Bytes(b"ab".to_vec())),
        k(Value::Bytes(b"ab ".to_vec()))
    );
    assert_ne!(k(Value::Int(1)), k(Value::UInt(1)));
    assert_ne!(
        key_bytes(
            &[0, 1],
            &[Value::Bytes(b"a".to_vec()), Value::Bytes(b"bc".to_vec())],
            None
        ),
        key_bytes(
            &[0, 1],
            &[Value::Bytes(b"ab".to_vec()), Value::Bytes(b"c".to_vec())],
            None
        )
    );
}

#[test]
fn a_change_without_its_image_is_refused_with_the_table_name() {
    let mut bad = row(RowKind::Update, Some((1, 1)), Some((1, 2)));
    bad.before = None;
    let err = GroupPlan::new(vec![0])
        .add(&bad, &[0], &Spread::Whole, 1)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "s.t: Update change without a full before image"
    );
}

#[test]
fn partitions_follow_the_key_and_skip_what_they_already_applied() {
    let changes: Vec<RowChange> = (0..64)
        .map(|k| row(RowKind::Insert, None, Some((k, k))))
        .collect();
    // Partition 1 already applied seqs up to 40.
    let mut plan = GroupPlan::new(vec![0, 40, 0]);
    for (i, c) in changes.iter().enumerate() {
        plan.add(c, &[0], &Spread::ByKey(vec![KeyNorm::Exact]), i as u64 + 1)
            .unwrap();
    }
    let parts = plan.into_runs();
    let keys = |p: usize| -> Vec<i64> {
        parts[p]
            .iter()
            .flat_map(|(_, runs)| runs.iter().flat_map(|r| r.rows.iter()))
            .map(|img| match img[0] {
                Value::Int(k) => k,
                _ => -1,
            })
            .collect()
    };
    let all: Vec<usize> = (0..3).map(|p| keys(p).len()).collect();
    assert!(
        all.iter().all(|n| *n > 0),
        "every partition gets keys: {all:?}"
    );
    // Partition 1 holds only keys of seq > 40 (key k is seq k + 1).
    assert!(keys(1).iter().all(|k| *k >= 40), "{:?}", keys(1));
    // Every key is in exactly one partition, except partition 1's skipped ones.
    let mut seen: Vec<i64> = (0..3).flat_map(keys).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen.len(),
        all.iter().sum::<usize>(),
        "a key in two partitions"
    );
    // A whole-table spread puts every key in one partition.
    let mut whole = GroupPlan::new(vec![0, 0, 0]);
    for c in &changes {
        whole.add(c, &[0], &Spread::Whole, 1).unwrap();
    }
    let sizes: Vec<usize> = whole.into_runs().iter().map(|p| p.len()).collect();
    assert_eq!(sizes.iter().filter(|n| **n > 0).count(), 1, "{sizes:?}");
}

#[test]
fn spread_follows_the_key_collation() {
    let text = |t: &str, cs: &str, co: &str| {
        vec![(t.to_string(), Some(cs.to_string()), Some(co.to_string()))]
    };
    assert_eq!(
        Spread::for_key(&text("varchar", "utf8mb4", "utf8mb4_bin")),
        Spread::ByKey(vec![KeyNorm::TrimSpaces])
    );
    assert_eq!(
        Spread::for_key(&text("varchar", "utf8mb4", "utf8mb4_nopad_bin")),
        Spread::ByKey(vec![KeyNorm::Exact])
    );
    assert_eq!(
        Spread::for_key(&text("varchar", "utf8mb4", "utf8mb4_general_ci")),
        Spread::Whole
    );
    assert_eq!(
        Spread::for_key(&text("char", "ucs2", "ucs2_bin")),
        Spread::Whole
    );
    assert_eq!(
        Spread::for_key(&[("double".into(), None, None)]),
        Spread::Whole
    );
    assert_eq!(
        Spread::for_key(&[
            ("bigint".into(), None, None),
            (
                "varbinary".into(),
                Some("binary".into()),
                Some("binary".into())
            )
        ]),
        Spread::ByKey(vec![KeyNorm::Exact, KeyNorm::Exact])
    );
    let trim = [KeyNorm::TrimSpaces];
    assert_eq!(
        key_bytes(&[0], &[Value::Bytes(b"ab  ".to_vec())], Some(&trim)),
        key_bytes(&[0], &[Value::Bytes(b"ab".to_vec())], Some(&trim))
    );
}
