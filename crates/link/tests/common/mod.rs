//! What the link tests share: bj's sender to sh and sh's receiver, on
//! loopback, without TLS. Each test file uses part of it.
#![allow(dead_code, clippy::unwrap_used)]

use dcsync_core::topology::LinkSettings;
use dcsync_journal::Journal;
use dcsync_link::{receiver, sender, Applier, LinkStats, SharedStats};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Short heartbeats and backoffs, so a test does not wait on a redial.
pub fn settings() -> LinkSettings {
    LinkSettings {
        heartbeat_ms: 100,
        dead_after_ms: 3000,
        backoff_min_ms: 10,
        backoff_max_ms: 100,
        ..Default::default()
    }
}

/// sh's receiver for bj's `stores` on a free loopback port, applying with
/// `applier` until `stop` says true. Returns the address to dial.
pub async fn receiver<A: Applier + 'static>(
    applier: Arc<A>,
    stores: &[&str],
    settings: LinkSettings,
    stop: watch::Receiver<bool>,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let cfg = Arc::new(receiver::ReceiverConfig {
        cluster: "shop".into(),
        me: "sh".into(),
        peers: vec!["bj".into()],
        stores: stores.iter().map(|s| s.to_string()).collect(),
        settings,
        tls: None,
        board: Default::default(),
        relay: None,
    });
    tokio::spawn(receiver::serve(listener, cfg, applier, stop));
    addr
}

/// bj's sender of `journal`'s `stores` to sh at `addr` (a two-DC mesh),
/// until `stop` says true: its stats and its task.
pub fn sender(
    journal: Arc<Journal>,
    addr: String,
    stores: &[&str],
    settings: LinkSettings,
    stop: watch::Receiver<bool>,
) -> (SharedStats, tokio::task::JoinHandle<()>) {
    let stats = Arc::new(Mutex::new(LinkStats {
        peer: "sh".into(),
        ..Default::default()
    }));
    // Nothing is appended while the tests run the sender: the watch only
    // has to stay open.
    let (appended, appended_rx) = watch::channel(0u64);
    let cfg = sender::SenderConfig {
        cluster: "shop".into(),
        me: "bj".into(),
        peer: "sh".into(),
        addr,
        routing: dcsync_link::routing::fixed(dcsync_link::routing::Routing::mesh(
            "bj",
            &["bj".to_string(), "sh".to_string()],
        )),
        vectors: None,
        stores: stores.iter().map(|s| s.to_string()).collect(),
        settings,
        tls: None,
        marks: None,
    };
    let task = tokio::spawn({
        let stats = stats.clone();
        async move {
            sender::run(cfg, journal, appended_rx, stats, stop).await;
            drop(appended);
        }
    });
    (stats, task)
}
