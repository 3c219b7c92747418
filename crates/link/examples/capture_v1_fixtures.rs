//! One-shot: writes the format-version-1 fixtures (journal file and link
//! frames) with the release that defined them. Kept in git history only.
use dcsync_core::connector::Position;
use dcsync_core::*;
use dcsync_journal::Journal;
use dcsync_link::frame::*;

fn row_tx(n: u64) -> Transaction {
    Transaction {
        origin: "bj".into(),
        store: "orders".into(),
        seq: 0,
        hlc: Hlc::new(1_700_000_000_000 + n, n as u16),
        position: format!("mysql-bin.000001:{}", 1000 + n),
        commit_ts_ms: 1_700_000_000_000 + n,
        changes: vec![Change {
            unit: Some(n as u32 % 4),
            payload: Payload::Row(RowChange {
                schema: "shop".into(),
                table: "items".into(),
                kind: if n % 2 == 0 { RowKind::Update } else { RowKind::Insert },
                columns: vec![
                    ColumnMeta { name: "id".into(), type_code: 8, unsigned: false, primary_key: true },
                    ColumnMeta { name: "note".into(), type_code: 15, unsigned: false, primary_key: false },
                    ColumnMeta { name: "at".into(), type_code: 12, unsigned: false, primary_key: false },
                ],
                before: (n % 2 == 0).then(|| vec![Value::Int(n as i64), Value::Null, Value::Date(2024, 1, 2, 3, 4, 5, 6)]),
                after: Some(vec![Value::Int(n as i64), Value::Bytes(format!("note-{n}").into_bytes()), Value::Date(2024, 1, 2, 3, 4, 5, 6)]),
            }),
        }],
    }
}

fn redis_tx(n: u64) -> Transaction {
    Transaction {
        origin: "bj".into(),
        store: "cache".into(),
        seq: 0,
        hlc: Hlc::new(1_700_000_001_000 + n, 0),
        position: format!("redis offset {}", 500 + n),
        commit_ts_ms: 0,
        changes: vec![Change {
            unit: None,
            payload: Payload::Redis(RedisCommand { db: 0, args: vec![b"SET".to_vec(), format!("k{n}").into_bytes(), b"v".to_vec()] }),
        }],
    }
}

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let jdir = root.join("journal/tests/fixtures/v1");
    let _ = std::fs::remove_dir_all(&jdir);
    let j = Journal::open(&jdir, &["sh".into(), "gz".into()]).unwrap();
    let mut rows: Vec<_> = (1..=3).map(row_tx).collect();
    j.append("orders", &mut rows, Some(&Position { bytes: b"binlog-pos-v1".to_vec(), display: "mysql-bin.000001:1003".into() })).unwrap();
    let mut cmds: Vec<_> = (1..=2).map(redis_tx).collect();
    j.append("cache", &mut cmds, Some(&Position { bytes: b"redis-pos-v1".to_vec(), display: "redis offset 502".into() })).unwrap();
    j.ack("sh", "orders", 1).unwrap();
    j.ack("gz", "orders", 2).unwrap();
    j.ack("sh", "cache", 2).unwrap();
    drop(j);

    let fdir = root.join("link/tests/fixtures/v1");
    std::fs::create_dir_all(&fdir).unwrap();
    let mut txs: Vec<_> = (1..=3).map(row_tx).collect();
    for (i, t) in txs.iter_mut().enumerate() { t.seq = i as u64 + 1; }
    let (raw_len, data) = pack_batch(&txs, Codec::Lz4).unwrap();
    let frames = [
        ("hello", Frame::Hello { cluster: "shop".into(), dc: "bj".into(), version: PROTOCOL_VERSION, codecs: vec![Codec::Lz4, Codec::None] }),
        ("welcome", Frame::Welcome { dc: "sh".into(), applied: vec![("orders".into(), 7), ("cache".into(), 0)], codec: Codec::Lz4 }),
        ("batch", Frame::Batch { store: "orders".into(), codec: Codec::Lz4, raw_len, data }),
        ("ack", Frame::Ack { store: "orders".into(), seq: 3 }),
        ("heartbeat", Frame::Heartbeat),
        ("refused", Frame::Refused { reason: "incompatible protocol version 2: this agent speaks version 1".into() }),
    ];
    for (name, f) in frames {
        std::fs::write(fdir.join(format!("{name}.bin")), encode(&f).unwrap()).unwrap();
    }
    println!("fixtures written");
}
