//! Writes the fixtures of the current formats (journal format
//! [`dcsync_journal::FORMAT_VERSION`], link protocol
//! [`PROTOCOL_VERSION`]) into `crates/journal/tests/fixtures/v<N>` and
//! `crates/link/tests/fixtures/v<N>`. Run it once when a release fixes a
//! format (`cargo run -p dcsync-link --example capture_fixtures`) and commit
//! the files: the next format's tests read them (see
//! `crates/core/src/envelope/mod.rs`, "Changing the envelope").

use dcsync_core::connector::Position;
use dcsync_core::*;
use dcsync_journal::{Journal, FORMAT_VERSION};
use dcsync_link::frame::*;

/// Row transaction `n` of origin `origin` (the content the tests expect).
fn row_tx(origin: &str, n: u64) -> Transaction {
    Transaction {
        origin: origin.into(),
        store: "orders".into(),
        seq: n,
        hlc: Hlc::new(1_800_000_000_000 + n, n as u16),
        position: format!("mysql-bin.000002:{}", 2000 + n),
        commit_ts_ms: 1_800_000_000_000 + n,
        changes: vec![Change {
            unit: Some(n as u32 % 4),
            payload: Payload::Row(RowChange {
                table: std::sync::Arc::new(TableMeta {
                    schema: "shop".into(),
                    name: "items".into(),
                    columns: vec![
                        ColumnMeta {
                            name: "id".into(),
                            type_code: 8,
                            unsigned: false,
                            primary_key: true,
                        },
                        ColumnMeta {
                            name: "price".into(),
                            type_code: 246,
                            unsigned: false,
                            primary_key: false,
                        },
                    ],
                }),
                kind: RowKind::Insert,
                before: None,
                after: Some(vec![
                    Value::Int(n as i64),
                    Value::Bytes(format!("{n}.50").into_bytes()),
                ]),
            }),
        }],
        part: 0,
        more: false,
        epoch: 0,
    }
}

/// Transaction `n` of `origin` as part `part` of a split transaction
/// (`more` on all but the last part).
fn part_tx(origin: &str, n: u64, part: u32, more: bool) -> Transaction {
    Transaction {
        part,
        more,
        ..row_tx(origin, n)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let v = FORMAT_VERSION;
    let jdir = root.join(format!("journal/tests/fixtures/v{v}"));
    let _ = std::fs::remove_dir_all(&jdir);
    let j = Journal::open(&jdir, "bj", &["sh".into(), "gz".into()])?;
    let mut local: Vec<_> = (1..=3).map(|n| row_tx("bj", n)).collect();
    j.append(
        "orders",
        &mut local,
        Some(&Position {
            bytes: b"binlog-pos-v2".to_vec(),
            display: "mysql-bin.000002:2003".into(),
        }),
    )?;
    // A transaction split in two parts (seqs 4 and 5), the checkpoint after
    // it.
    j.append(
        "orders",
        &mut [part_tx("bj", 4, 0, true), part_tx("bj", 5, 1, false)],
        Some(&Position {
            bytes: b"binlog-pos-v3".to_vec(),
            display: "mysql-bin.000002:2005".into(),
        }),
    )?;
    // gz's changes journaled for forwarding (a hub), origin seqs kept.
    j.append_relayed(&(1..=2).map(|n| row_tx("gz", n)).collect::<Vec<_>>())?;
    j.ack("sh", "bj", "orders", 1)?;
    j.ack("gz", "bj", "orders", 2)?;
    j.ack("sh", "gz", "orders", 1)?;
    drop(j);

    let p = PROTOCOL_VERSION;
    let fdir = root.join(format!("link/tests/fixtures/v{p}"));
    std::fs::create_dir_all(&fdir)?;
    // Seq 1 whole, seqs 2-3 the two parts of one transaction.
    let txs = vec![
        row_tx("gz", 1),
        part_tx("gz", 2, 0, true),
        part_tx("gz", 3, 1, false),
    ];
    let (raw_len, data) = pack_batch(&txs, Codec::Lz4, p)?;
    let frames = [
        (
            "hello",
            Frame::Hello {
                cluster: "shop".into(),
                dc: "bj".into(),
                version: p,
                codecs: vec![Codec::Lz4, Codec::None],
            },
        ),
        (
            "welcome",
            Frame::Welcome {
                dc: "sh".into(),
                version: p,
                applied: vec![
                    Applied {
                        origin: "bj".into(),
                        store: "orders".into(),
                        seq: 7,
                    },
                    Applied {
                        origin: "gz".into(),
                        store: "orders".into(),
                        seq: 0,
                    },
                ],
                codec: Codec::Lz4,
            },
        ),
        (
            "batch",
            Frame::Batch {
                origin: "gz".into(),
                store: "orders".into(),
                codec: Codec::Lz4,
                raw_len,
                data,
            },
        ),
        (
            "ack",
            Frame::Ack {
                origin: "gz".into(),
                store: "orders".into(),
                seq: 3,
            },
        ),
        (
            "store_failed",
            Frame::StoreFailed {
                origin: "gz".into(),
                store: "orders".into(),
                definite: true,
                reason: "table shop.items does not exist on the target store".into(),
                seq: 4,
            },
        ),
    ];
    for (name, f) in frames {
        std::fs::write(fdir.join(format!("{name}.bin")), encode(&f)?)?;
    }
    println!(
        "fixtures written: {} and {}",
        jdir.display(),
        fdir.display()
    );
    Ok(())
}
