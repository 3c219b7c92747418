use super::*;
use crate::{Change, Hlc, Payload, RedisCommand, RowChange, RowKind, Value};

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
                    schema: "shop".into(),
                    table: "t".into(),
                    kind: RowKind::Update,
                    columns: vec![],
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
    let old = bincode::serde::encode_to_vec(v1::Transaction::from(t.clone()), config()).unwrap();
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
