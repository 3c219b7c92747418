use super::*;
use crate::{Change, ColumnMeta, Hlc, Payload, RedisCommand, RowChange, RowKind, TableMeta, Value};
use std::sync::Arc;

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
        columns: vec![col("id", true), col("note", false)],
    })
}

fn sample(seq: u64) -> Transaction {
    Transaction {
        origin: "bj".into(),
        store: "orders".into(),
        seq,
        hlc: Hlc::new(1_700_000_000_000, 3),
        position: "mysql-bin.000001:4".into(),
        commit_ts_ms: 1_700_000_000_000,
        changes: vec![
            Change {
                unit: Some(2),
                payload: Payload::Row(RowChange {
                    table: table(),
                    kind: RowKind::Update,
                    before: Some(vec![Value::Int(-1), Value::Null]),
                    after: Some(vec![
                        Value::Date(2024, 1, 2, 3, 4, 5, 6),
                        Value::Time(true, 1, 2, 3, 4, 5),
                    ]),
                }),
            },
            Change {
                unit: None,
                payload: Payload::Redis(RedisCommand {
                    db: 3,
                    args: vec![b"SET".to_vec(), b"k".to_vec()],
                }),
            },
        ],
        part: 0,
        more: false,
        epoch: 0,
    }
}

#[test]
fn records_roundtrip_with_their_tag() {
    let t = sample(7);
    let b = encode_tx(&t).unwrap();
    assert_eq!(b[0], ENVELOPE_VERSION);
    assert_eq!(decode_tx(&b).unwrap(), t);
}

#[test]
fn version_one_records_and_batches_decode() {
    let t = sample(1);
    let old =
        bincode::serde::encode_to_vec(v1::Transaction::try_from(t.clone()).unwrap(), config())
            .unwrap();
    assert_eq!(decode_tx_v1(&old).unwrap(), t);
    let batch = encode_batch(std::slice::from_ref(&t), 1).unwrap();
    assert_eq!(decode_batch(&batch, 1).unwrap(), vec![t.clone()]);
    let batch2 = encode_batch(std::slice::from_ref(&t), 2).unwrap();
    assert_eq!(decode_batch(&batch2, 2).unwrap(), vec![t]);
}

#[test]
fn newer_and_broken_records_are_named_errors() {
    let mut b = encode_tx(&sample(1)).unwrap();
    b[0] = 9;
    assert!(matches!(
        decode_tx(&b),
        Err(EnvelopeError::UnknownVersion { found: 9, .. })
    ));
    assert!(matches!(
        decode_tx(&[]),
        Err(EnvelopeError::Malformed { .. })
    ));
    assert!(matches!(
        decode_tx(&[2, 0xff, 0xff]),
        Err(EnvelopeError::Malformed { .. })
    ));
    let mut trailing = encode_tx(&sample(1)).unwrap();
    trailing.push(0);
    assert!(matches!(
        decode_tx(&trailing),
        Err(EnvelopeError::Malformed { .. })
    ));
}

/// `n` updates of one table, each changing only `note` of a row holding a
/// large value in `id`'s place, as one transaction part.
fn updates(n: usize, part: u32, more: bool) -> Transaction {
    let t = table();
    let big = Value::Bytes(vec![7; 1000]);
    Transaction {
        changes: (0..n)
            .map(|i| Change {
                unit: None,
                payload: Payload::Row(RowChange {
                    table: t.clone(),
                    kind: RowKind::Update,
                    before: Some(vec![big.clone(), Value::Int(i as i64)]),
                    after: Some(vec![big.clone(), Value::Int(i as i64 + 1)]),
                }),
            })
            .collect(),
        part,
        more,
        ..sample(5)
    }
}

#[test]
fn parts_tables_and_partial_before_images_roundtrip() {
    for (part, more) in [(0, true), (3, true), (4, false)] {
        let t = updates(20, part, more);
        let back = decode_tx(&encode_tx(&t).unwrap()).unwrap();
        assert_eq!(back, t);
        // Rows of one table share one TableMeta after decoding too.
        let tables: Vec<&Arc<TableMeta>> = back
            .changes
            .iter()
            .filter_map(|c| match &c.payload {
                Payload::Row(r) => Some(&r.table),
                _ => None,
            })
            .collect();
        assert!(tables.windows(2).all(|w| Arc::ptr_eq(w[0], w[1])));
        let batch = encode_batch(std::slice::from_ref(&t), ENVELOPE_VERSION).unwrap();
        assert_eq!(
            decode_batch(&batch, ENVELOPE_VERSION).unwrap(),
            vec![t.clone()]
        );
    }
}

#[test]
fn unchanged_columns_of_an_update_are_sent_once() {
    // 20 rows with a 1000-byte value that the update does not change: the
    // version-2 record carries it twice per row, version 3 once.
    let t = updates(20, 0, false);
    let v3 = encode_tx(&t).unwrap().len();
    let v2 = encode_batch(std::slice::from_ref(&t), 2).unwrap().len();
    assert!(v3 < 25_000, "{v3}");
    assert!(v2 > 40_000, "{v2}");
}

#[test]
fn older_versions_refuse_a_part_by_name() {
    let t = updates(1, 2, true);
    match encode_batch(&[t], 2) {
        Err(EnvelopeError::NotRepresentable(m)) => assert!(m.contains("part 2"), "{m}"),
        other => panic!("expected NotRepresentable, got {other:?}"),
    }
}

#[test]
fn a_row_naming_a_missing_table_is_malformed() {
    // A record whose row refers to table 1 of a one-table dictionary.
    let t = updates(1, 0, false);
    let mut b = encode_tx(&t).unwrap();
    // Find the row's table index (0) right after the one-table dictionary:
    // rewrite every candidate byte in turn and expect no panic, and at
    // least one Malformed naming the table.
    let mut named = false;
    for i in 1..b.len() {
        let orig = b[i];
        if orig == 0 {
            b[i] = 1;
            if let Err(EnvelopeError::Malformed { reason, .. }) = decode_tx(&b) {
                named |= reason.contains("refers to table 1");
            }
            b[i] = orig;
        }
    }
    assert!(named);
}

#[test]
fn a_raw_batch_of_stored_records_is_the_encoded_batch() {
    let mut txs: Vec<Transaction> = (1..=300).map(sample).collect();
    txs[299].more = true;
    txs[299].part = 4;
    txs[7].epoch = 9;
    let mut raw = RawBatch::new();
    for t in &txs {
        let rec = encode_tx(t).unwrap();
        let head = record_head(&rec).unwrap().unwrap();
        assert_eq!(
            (head.origin, head.store, head.seq, head.more),
            (t.origin.as_str(), t.store.as_str(), t.seq, t.more)
        );
        raw.push(&rec).unwrap();
    }
    assert_eq!(raw.len(), 300);
    let bytes = raw.finish().unwrap();
    assert_eq!(bytes, encode_batch(&txs, ENVELOPE_VERSION).unwrap());
    assert_eq!(decode_batch(&bytes, ENVELOPE_VERSION).unwrap(), txs);
}

#[test]
fn a_raw_batch_refuses_records_of_other_versions() {
    let t = sample(1);
    let old = encode_batch(std::slice::from_ref(&t), 3).unwrap();
    // A version-3 record has the same tag as a version-3 batch.
    assert_eq!(record_head(&old).unwrap(), None);
    assert!(matches!(
        RawBatch::new().push(&old),
        Err(EnvelopeError::NotRepresentable(_))
    ));
    let mut newer = encode_tx(&t).unwrap();
    newer[0] = ENVELOPE_VERSION + 1;
    assert!(matches!(
        record_head(&newer),
        Err(EnvelopeError::UnknownVersion { .. })
    ));
    assert!(matches!(
        record_head(&[ENVELOPE_VERSION, 0xff]),
        Err(EnvelopeError::Malformed { .. })
    ));
    assert!(RawBatch::new().finish().is_ok());
}
