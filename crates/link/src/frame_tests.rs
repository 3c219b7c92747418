//! Unit tests of the parent module.

use super::*;

#[test]
fn roundtrip_and_rejects() {
    let f = Frame::Ack {
        origin: "bj".into(),
        store: "orders".into(),
        seq: 42,
    };
    let b = encode(&f).unwrap();
    assert_eq!(decode(&b, 1024).unwrap(), f);
    let mut bad = b.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert!(matches!(
        decode(&bad, 1024),
        Err(FrameError::Checksum { .. })
    ));
    assert!(matches!(decode(&b, 2), Err(FrameError::Oversized { .. })));
    assert!(matches!(
        decode(&b[..b.len() - 1], 1024),
        Err(FrameError::Malformed(_))
    ));
}

#[test]
fn garbage_with_valid_crc_is_malformed_not_a_panic() {
    let body = vec![0xffu8; 64];
    let mut buf = (body.len() as u32).to_be_bytes().to_vec();
    buf.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    buf.extend_from_slice(&body);
    assert!(matches!(decode(&buf, 1024), Err(FrameError::Malformed(_))));
}

#[test]
fn lying_batch_lengths_are_refused() {
    let (raw_len, data) = pack_batch(&[], Codec::Lz4, PROTOCOL_VERSION).unwrap();
    assert!(matches!(
        unpack_batch(Codec::Lz4, raw_len + 7, &data, 1 << 20, PROTOCOL_VERSION),
        Err(FrameError::Malformed(_))
    ));
    assert!(matches!(
        unpack_batch(Codec::Lz4, u32::MAX, &data, 1 << 20, PROTOCOL_VERSION),
        Err(FrameError::Oversized { .. })
    ));
    assert!(matches!(
        unpack_batch(Codec::None, 3, &[1, 2, 3], 1 << 20, PROTOCOL_VERSION),
        Err(FrameError::Malformed(_))
    ));
}

proptest::proptest! {
    #[test]
    fn any_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = decode(&data, 1 << 20);
    }

    #[test]
    fn batches_roundtrip(store in "[a-z]{1,8}", seq in 0u64..u64::MAX, n in 0usize..4) {
        let txs: Vec<dcsync_core::Transaction> = (0..n).map(|i| dcsync_core::Transaction {
            origin: "bj".into(), store: store.clone(), seq: seq.wrapping_add(i as u64),
            hlc: dcsync_core::Hlc(seq), position: String::new(), commit_ts_ms: 0,
            changes: vec![dcsync_core::Change { unit: Some(3), payload: dcsync_core::Payload::Row(dcsync_core::RowChange {
                table: std::sync::Arc::new(dcsync_core::TableMeta { schema: "s".into(), name: "t".into(), columns: vec![] }),
                kind: dcsync_core::RowKind::Insert, before: None,
                after: Some(vec![dcsync_core::Value::Int(-5), dcsync_core::Value::Bytes(vec![0, 255]), dcsync_core::Value::Null]) }) }],
            part: 0, more: false,
            epoch: 0,
        }).collect();
        for (codec, protocol) in [(Codec::None, 1), (Codec::Lz4, 1), (Codec::None, 2), (Codec::Lz4, 2), (Codec::None, 3), (Codec::Lz4, 3)] {
            let (raw_len, data) = pack_batch(&txs, codec, protocol).unwrap();
            let f = Frame::Batch { origin: "bj".into(), store: store.clone(), codec, raw_len, data };
            let back = decode(&encode(&f).unwrap(), usize::MAX).unwrap();
            proptest::prop_assert_eq!(&back, &f);
            let Frame::Batch { codec, raw_len, data, .. } = back else { unreachable!() };
            proptest::prop_assert_eq!(unpack_batch(codec, raw_len, &data, usize::MAX, protocol).unwrap(), txs.clone());
        }
    }
}
