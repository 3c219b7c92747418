//! A controllable TCP proxy standing in for a WAN line between two agents
//! (this kernel has no `netem`, so the line is simulated in user space).
//!
//! - [`Proxy::set_latency`]: one-way delay plus uniform jitter per direction
//!   (30 ms RTT = 15 ms each way). Bytes keep their order: a chunk is never
//!   released before the one read before it.
//! - [`Proxy::set_bandwidth`]: a byte-rate cap per direction and connection.
//! - [`Proxy::cut`] / [`Proxy::restore`]: close every open connection and
//!   refuse new ones until restored.
//! - [`Proxy::stall`]: keep connections open but move no bytes (blackhole).
//! - [`Proxy::drop_connections`]: close the open connections once; new ones
//!   are accepted (a flapping line).
//! - [`Proxy::set_target`]: close the open connections and forward new ones
//!   to another server (a VIP moved to a promoted replica).
//!
//! Connections are counted so tests can wait for a reconnect.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

const UP: u8 = 0;
const CUT: u8 = 1;
const STALLED: u8 = 2;

#[derive(Default)]
struct Shape {
    /// One-way delay, µs.
    delay_us: AtomicU64,
    /// Uniform jitter added on top, µs.
    jitter_us: AtomicU64,
    /// Bytes per second per direction; 0 = unlimited.
    rate: AtomicU64,
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    /// Port the proxy listens on (127.0.0.1).
    pub port: u16,
    state: Arc<AtomicU8>,
    shape: Arc<Shape>,
    epoch: watch::Sender<u64>,
    accepted: Arc<AtomicU64>,
    target: Arc<std::sync::Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free port and forwards to `target` (`host:port`).
    pub async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(AtomicU8::new(UP));
        let shape = Arc::new(Shape::default());
        let (epoch, epoch_rx) = watch::channel(0u64);
        let accepted = Arc::new(AtomicU64::new(0));
        let target = Arc::new(std::sync::Mutex::new(target));
        let (st, acc, sh, tg) = (
            state.clone(),
            accepted.clone(),
            shape.clone(),
            target.clone(),
        );
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
                let target = tg.lock().map(|t| t.clone()).unwrap_or_default();
                let (st, sh, mut ep) = (st.clone(), sh.clone(), epoch_rx.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let _ = server.set_nodelay(true);
                    let _ = client.set_nodelay(true);
                    let start_epoch = *ep.borrow_and_update();
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let a = pipe(cr, sw, st.clone(), sh.clone());
                    let b = pipe(sr, cw, st.clone(), sh.clone());
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
            shape,
            epoch,
            accepted,
            target,
            task,
        }
    }

    /// Forwards new connections to `target` (`host:port`) from now on and
    /// closes the open ones: what moving a VIP to another server does.
    pub fn set_target(&self, target: String) {
        if let Ok(mut t) = self.target.lock() {
            *t = target;
        }
        self.epoch.send_modify(|e| *e += 1);
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// One-way `delay` plus uniform `jitter` in each direction (RTT = 2 ×
    /// delay on average plus jitter).
    pub fn set_latency(&self, delay: Duration, jitter: Duration) {
        self.shape
            .delay_us
            .store(delay.as_micros() as u64, Ordering::SeqCst);
        self.shape
            .jitter_us
            .store(jitter.as_micros() as u64, Ordering::SeqCst);
    }

    /// Caps each direction of each connection at `bytes_per_sec` (0 = no cap).
    pub fn set_bandwidth(&self, bytes_per_sec: u64) {
        self.shape.rate.store(bytes_per_sec, Ordering::SeqCst);
    }

    /// Closes all connections and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.state.store(CUT, Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
    }

    /// Closes the open connections once; new ones are accepted.
    pub fn drop_connections(&self) {
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

/// One direction: a reader stamps each chunk with its release time, a writer
/// releases chunks in order once due, paced by the rate cap.
async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    st: Arc<AtomicU8>,
    shape: Arc<Shape>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let sh = shape.clone();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut last_due = Instant::now();
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let delay = sh.delay_us.load(Ordering::Relaxed);
            let jitter = sh.jitter_us.load(Ordering::Relaxed);
            let extra = if jitter > 0 { rand_below(jitter) } else { 0 };
            let due = (Instant::now() + Duration::from_micros(delay + extra)).max(last_due);
            last_due = due;
            if tx.send((due, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due.into()).await;
            while st.load(Ordering::SeqCst) == STALLED {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if st.load(Ordering::SeqCst) == CUT {
                return;
            }
            let rate = shape.rate.load(Ordering::Relaxed);
            if rate > 0 {
                for part in chunk.chunks(4096) {
                    let t = Instant::now();
                    if w.write_all(part).await.is_err() {
                        return;
                    }
                    let budget = Duration::from_secs_f64(part.len() as f64 / rate as f64);
                    if let Some(rest) = budget.checked_sub(t.elapsed()) {
                        tokio::time::sleep(rest).await;
                    }
                }
            } else if w.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    // The writer drains what the reader queued before the reader hit EOF, so
    // a graceful close delivers everything, as a real line would.
    tokio::join!(reader, writer);
}

fn rand_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() % n.max(1)
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}
