//! A controllable TCP proxy standing in for a WAN line between two agents.
//!
//! `cut()` closes every open connection and refuses new ones until
//! `restore()`; `stall()` keeps connections open but stops moving bytes (a
//! blackholed line), also until `restore()`. Connections are counted so
//! tests can wait for a reconnect.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const UP: u8 = 0;
const CUT: u8 = 1;
const STALLED: u8 = 2;

/// A running proxy; stops when dropped.
pub struct Proxy {
    /// Port the proxy listens on (127.0.0.1).
    pub port: u16,
    state: Arc<AtomicU8>,
    epoch: watch::Sender<u64>,
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free port and forwards to `target` (`host:port`).
    pub async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(AtomicU8::new(UP));
        let (epoch, epoch_rx) = watch::channel(0u64);
        let accepted = Arc::new(AtomicU64::new(0));
        let (st, acc) = (state.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if st.load(Ordering::SeqCst) == CUT {
                    drop(client);
                    continue;
                }
                acc.fetch_add(1, Ordering::SeqCst);
                let (st, target, mut ep) = (st.clone(), target.clone(), epoch_rx.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let start_epoch = *ep.borrow_and_update();
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let a = pump(cr, sw, st.clone());
                    let b = pump(sr, cw, st.clone());
                    tokio::select! {
                        _ = a => {}
                        _ = b => {}
                        _ = async { while ep.changed().await.is_ok() { if *ep.borrow() != start_epoch { break; } } } => {}
                    }
                });
            }
        });
        Proxy {
            port,
            state,
            epoch,
            accepted,
            task,
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Closes all connections and refuses new ones.
    pub fn cut(&self) {
        self.state.store(CUT, Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
    }

    /// Keeps connections open but forwards nothing.
    pub fn stall(&self) {
        self.state.store(STALLED, Ordering::SeqCst);
    }

    /// Back to normal forwarding.
    pub fn restore(&self) {
        self.state.store(UP, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    st: Arc<AtomicU8>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while st.load(Ordering::SeqCst) == STALLED {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while st.load(Ordering::SeqCst) == STALLED {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if st.load(Ordering::SeqCst) == CUT || w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}
