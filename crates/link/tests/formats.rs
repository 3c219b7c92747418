//! Frames encoded by the protocol-1 release (`fixtures/v1/*.bin`, see
//! `fixtures/README.md`) decode with the current code, so a rolling upgrade
//! can talk to agents that are not upgraded yet; and the frames this agent
//! sends a protocol-1 peer are byte-identical to what that release sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use dcsync_core::{Payload, RowKind, Value};
use dcsync_link::frame::{decode, encode, pack_batch, unpack_batch, Codec, Frame};

fn fixture(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/v1/{name}.bin"));
    std::fs::read(p).unwrap()
}

#[test]
fn protocol_one_frames_decode() {
    let hello = decode(&fixture("hello"), 1 << 20).unwrap();
    assert_eq!(
        hello,
        Frame::Hello {
            cluster: "shop".into(),
            dc: "bj".into(),
            version: 1,
            codecs: vec![Codec::Lz4, Codec::None]
        }
    );
    assert_eq!(
        decode(&fixture("welcome"), 1 << 20).unwrap(),
        Frame::LegacyWelcome {
            dc: "sh".into(),
            applied: vec![("orders".into(), 7), ("cache".into(), 0)],
            codec: Codec::Lz4
        }
    );
    assert_eq!(
        decode(&fixture("ack"), 1 << 20).unwrap(),
        Frame::LegacyAck {
            store: "orders".into(),
            seq: 3
        }
    );
    assert_eq!(
        decode(&fixture("heartbeat"), 1 << 20).unwrap(),
        Frame::Heartbeat
    );
    let Frame::Refused { reason } = decode(&fixture("refused"), 1 << 20).unwrap() else {
        panic!("refused expected")
    };
    assert!(reason.contains("speaks version 1"));

    let Frame::LegacyBatch {
        store,
        codec,
        raw_len,
        data,
    } = decode(&fixture("batch"), 1 << 20).unwrap()
    else {
        panic!("batch expected")
    };
    assert_eq!(store, "orders");
    let txs = unpack_batch(codec, raw_len, &data, 1 << 20, 1).unwrap();
    assert_eq!(txs.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(txs.iter().all(|t| t.origin == "bj" && t.store == "orders"));
    let Payload::Row(r) = &txs[1].changes[0].payload else {
        panic!("row expected")
    };
    assert_eq!(r.kind, RowKind::Update);
    assert_eq!(r.before.as_ref().unwrap()[0], Value::Int(2));
    assert_eq!(
        r.after.as_ref().unwrap()[1],
        Value::Bytes(b"note-2".to_vec())
    );

    // What this agent sends a protocol-1 peer is what that release sent.
    let (raw_len2, data2) = pack_batch(&txs, Codec::Lz4, 1).unwrap();
    let again = encode(&Frame::LegacyBatch {
        store: "orders".into(),
        codec: Codec::Lz4,
        raw_len: raw_len2,
        data: data2,
    })
    .unwrap();
    assert_eq!(again, fixture("batch"));
    assert_eq!(encode(&hello).unwrap(), fixture("hello"));
}

/// The current protocol's frames, as this release wrote them
/// (`examples/capture_fixtures.rs`). A later version must keep decoding them.
#[test]
fn protocol_two_frames_decode() {
    let f = |name: &str| {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/fixtures/v2/{name}.bin"));
        decode(&std::fs::read(p).unwrap(), 1 << 20).unwrap()
    };
    assert_eq!(
        f("hello"),
        Frame::Hello {
            cluster: "shop".into(),
            dc: "bj".into(),
            version: 2,
            codecs: vec![Codec::Lz4, Codec::None]
        }
    );
    let Frame::Welcome {
        dc,
        version,
        applied,
        codec,
    } = f("welcome")
    else {
        panic!("welcome expected")
    };
    assert_eq!((dc.as_str(), version, codec), ("sh", 2, Codec::Lz4));
    assert_eq!(
        applied
            .iter()
            .map(|a| (a.origin.as_str(), a.store.as_str(), a.seq))
            .collect::<Vec<_>>(),
        vec![("bj", "orders", 7), ("gz", "orders", 0)]
    );
    assert_eq!(
        f("ack"),
        Frame::Ack {
            origin: "gz".into(),
            store: "orders".into(),
            seq: 3
        }
    );
    let Frame::StoreFailed {
        origin,
        definite,
        seq,
        reason,
        ..
    } = f("store_failed")
    else {
        panic!("StoreFailed expected")
    };
    assert_eq!((origin.as_str(), definite, seq), ("gz", true, 4));
    assert!(reason.contains("shop.items"));
    let Frame::Batch {
        origin,
        store,
        codec,
        raw_len,
        data,
    } = f("batch")
    else {
        panic!("batch expected")
    };
    assert_eq!((origin.as_str(), store.as_str()), ("gz", "orders"));
    let txs = unpack_batch(codec, raw_len, &data, 1 << 20, 2).unwrap();
    assert_eq!(
        txs.iter()
            .map(|t| (t.origin.as_str(), t.seq))
            .collect::<Vec<_>>(),
        vec![("gz", 1), ("gz", 2), ("gz", 3)]
    );
    let Payload::Row(r) = &txs[2].changes[0].payload else {
        panic!("row expected")
    };
    assert_eq!(r.after.as_ref().unwrap()[1], Value::Bytes(b"3.50".to_vec()));
}

/// The current protocol's frames (protocol 3, envelope 3), as this release
/// wrote them (`examples/capture_fixtures.rs`): the batch holds a whole
/// transaction and one split in two parts. A later version must keep
/// decoding them.
#[test]
fn protocol_three_frames_decode() {
    let f = |name: &str| {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/fixtures/v3/{name}.bin"));
        decode(&std::fs::read(p).unwrap(), 1 << 20).unwrap()
    };
    assert!(matches!(f("hello"), Frame::Hello { version: 3, .. }));
    let Frame::Batch {
        origin,
        store,
        codec,
        raw_len,
        data,
    } = f("batch")
    else {
        panic!("batch expected")
    };
    assert_eq!((origin.as_str(), store.as_str()), ("gz", "orders"));
    let txs = unpack_batch(codec, raw_len, &data, 1 << 20, 3).unwrap();
    assert_eq!(
        txs.iter()
            .map(|t| (t.seq, t.part, t.more))
            .collect::<Vec<_>>(),
        vec![(1, 0, false), (2, 0, true), (3, 1, false)]
    );
    let dcsync_core::Payload::Row(r) = &txs[2].changes[0].payload else {
        panic!("row expected")
    };
    assert_eq!(
        (r.table.schema.as_str(), r.table.name.as_str()),
        ("shop", "items")
    );
    assert!(r.table.columns[0].primary_key);
    assert_eq!(
        r.after.as_ref().unwrap()[1],
        dcsync_core::Value::Bytes(b"3.50".to_vec())
    );
}
