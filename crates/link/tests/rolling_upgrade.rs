//! Rolling upgrade: this agent (protocol 2) talks to a protocol-1 agent in
//! both directions. The protocol-1 side is played from the frames that
//! release really sends (`fixtures/v1`), byte for byte where it matters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use dcsync_core::connector::AppliedMark;
use dcsync_core::{Change, Hlc, Payload, RedisCommand, Transaction};
use dcsync_journal::Journal;
use dcsync_link::frame::{read_frame, write_frame, Codec, Frame, PROTOCOL_VERSION};
use dcsync_link::{receiver, Applier, ApplyError, BoxFuture};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

mod common;

fn fixture(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/v1/{name}.bin"));
    std::fs::read(p).unwrap()
}

fn tx(n: u64) -> Transaction {
    Transaction {
        origin: "bj".into(),
        store: "orders".into(),
        seq: 0,
        hlc: Hlc::new(1_000 + n, 0),
        position: String::new(),
        commit_ts_ms: 0,
        changes: vec![Change {
            unit: None,
            payload: Payload::Redis(RedisCommand {
                db: 0,
                args: vec![b"SET".to_vec(), n.to_string().into_bytes()],
            }),
        }],
        part: 0,
        more: false,
        epoch: 0,
    }
}

#[tokio::test]
async fn a_protocol_two_sender_downgrades_to_a_protocol_one_listener() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(Journal::open(dir.path(), "bj", &["sh".into()]).unwrap());
    // Settled as after a first start (the peers' markers name no journal).
    for store in ["orders", "cache", "shop"] {
        journal.settle(store, &[0]).unwrap();
    }
    journal
        .append("orders", &mut [tx(1), tx(2), tx(3)], None)
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // The protocol-1 agent: refuses version 2 with its own words, then
    // speaks protocol 1.
    let old_agent = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let Frame::Hello { version, .. } = read_frame(&mut s, 1 << 20).await.unwrap() else {
            panic!("hello expected")
        };
        assert_eq!(version, PROTOCOL_VERSION);
        s.write_all(&fixture("refused")).await.unwrap();
        drop(s);
        let (mut s, _) = listener.accept().await.unwrap();
        let Frame::Hello { version, dc, .. } = read_frame(&mut s, 1 << 20).await.unwrap() else {
            panic!("hello expected")
        };
        assert_eq!((version, dc.as_str()), (1, "bj"));
        write_frame(
            &mut s,
            &Frame::LegacyWelcome {
                dc: "sh".into(),
                applied: vec![("orders".into(), 1)],
                codec: Codec::Lz4,
            },
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        while got.len() < 2 {
            match read_frame(&mut s, 1 << 20).await.unwrap() {
                Frame::LegacyBatch {
                    store,
                    codec,
                    raw_len,
                    data,
                } => {
                    // A protocol-1 agent decodes the untagged version-1 envelope.
                    let txs = dcsync_link::frame::unpack_batch(codec, raw_len, &data, 1 << 20, 1)
                        .unwrap();
                    let last = txs.last().unwrap().seq;
                    got.extend(txs.into_iter().map(|t| t.seq));
                    write_frame(&mut s, &Frame::LegacyAck { store, seq: last })
                        .await
                        .unwrap();
                }
                Frame::Heartbeat => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        got
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (stats, task) = common::sender(
        journal.clone(),
        addr,
        &["orders"],
        common::settings(),
        stop_rx,
    );
    let got = tokio::time::timeout(Duration::from_secs(20), old_agent)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, vec![2, 3], "resumes after what the old agent applied");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while journal.cursor("sh", "bj", "orders").unwrap() < 3 {
        assert!(std::time::Instant::now() < deadline, "ack not recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stats.lock().unwrap().version, 1);
    let _ = stop_tx.send(true);
    let _ = task.await;
}

/// Records what it applies, per origin and store (the receiver's side of
/// the contract; the sinks themselves are tested against real servers).
#[derive(Default)]
struct Recorder(Mutex<Vec<(String, String, u64)>>);

impl Applier for Recorder {
    fn applied<'a>(
        &'a self,
        _o: &'a str,
        _s: &'a str,
    ) -> BoxFuture<'a, Result<AppliedMark, ApplyError>> {
        Box::pin(async { Ok(AppliedMark::default()) })
    }
    fn apply<'a>(
        &'a self,
        origin: &'a str,
        store: &'a str,
        txs: Vec<Transaction>,
    ) -> BoxFuture<'a, Result<u64, ApplyError>> {
        Box::pin(async move {
            let mut v = self.0.lock().unwrap();
            for t in &txs {
                v.push((origin.to_string(), store.to_string(), t.seq));
            }
            Ok(txs.last().map(|t| t.seq).unwrap_or(0))
        })
    }
}

#[tokio::test]
async fn a_protocol_one_dialer_is_served_in_protocol_one() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let applier = Arc::new(Recorder::default());
    let cfg = Arc::new(receiver::ReceiverConfig {
        cluster: "shop".into(),
        me: "sh".into(),
        peers: vec!["bj".into()],
        stores: vec!["orders".into(), "cache".into()],
        settings: common::settings(),
        tls: None,
        board: Default::default(),
        relay: None,
    });
    let (_stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(receiver::serve(
        listener,
        cfg.clone(),
        applier.clone(),
        stop_rx,
    ));
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The exact bytes a protocol-1 agent sends.
    s.write_all(&fixture("hello")).await.unwrap();
    match read_frame(&mut s, 1 << 20).await.unwrap() {
        Frame::LegacyWelcome { dc, applied, .. } => {
            assert_eq!(dc, "sh");
            assert_eq!(
                applied,
                vec![("cache".to_string(), 0), ("orders".to_string(), 0)]
            );
        }
        other => panic!("a protocol-1 dialer must get a protocol-1 welcome, got {other:?}"),
    }
    s.write_all(&fixture("batch")).await.unwrap();
    loop {
        match read_frame(&mut s, 1 << 20).await.unwrap() {
            Frame::LegacyAck { store, seq } => {
                assert_eq!((store.as_str(), seq), ("orders", 3));
                break;
            }
            Frame::Heartbeat => {}
            other => panic!("expected a protocol-1 ack, got {other:?}"),
        }
    }
    assert_eq!(
        *applier.0.lock().unwrap(),
        vec![
            ("bj".into(), "orders".into(), 1),
            ("bj".into(), "orders".into(), 2),
            ("bj".into(), "orders".into(), 3)
        ]
    );
    let b = cfg.board.lock().unwrap();
    assert_eq!(
        b.get(&("bj".to_string(), "orders".to_string()))
            .unwrap()
            .applied_seq,
        3
    );
}
