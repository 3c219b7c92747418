//! The sending half of a link: ships this DC's journaled changes to one peer.
//!
//! Runs forever: connect, handshake, stream batches from the journal with at
//! most `window` unacknowledged, advance the journal cursor on each ack; on
//! any failure (refused, closed, stalled, checksum) log it, record
//! `Retrying`, wait a capped exponential backoff with jitter, and start over
//! from what the peer reports as applied.

use crate::frame::{read_frame, write_frame, Codec, Frame, FrameError, PROTOCOL_VERSION};
use crate::{now_ms, Backoff, LinkState, SharedStats};
use dcsync_core::topology::LinkSettings;
use dcsync_journal::Journal;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

/// What a sender needs to know.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Cluster name.
    pub cluster: String,
    /// This DC's id.
    pub me: String,
    /// Peer DC id.
    pub peer: String,
    /// Peer's link address (`host:port`).
    pub addr: String,
    /// Stores whose changes go to this peer.
    pub stores: Vec<String>,
    /// Link tuning.
    pub settings: LinkSettings,
    /// Mutual TLS; `None` = plain TCP (`[tls] plaintext = true`).
    pub tls: Option<crate::tls::LinkTls>,
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Frame-level problem (I/O, oversized, checksum, malformed).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer refused us; its reason.
    #[error("refused by peer: {0}")]
    Refused(String),
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Nothing was received for too long.
    #[error("connection stalled: no frame from peer for {0} ms")]
    Stalled(u64),
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] dcsync_journal::JournalError),
    /// Connect failed or timed out.
    #[error("connect to {addr}: {reason}")]
    Connect {
        /// Peer address.
        addr: String,
        /// Reason.
        reason: String,
    },
}

/// Runs the sender until `shutdown` turns true. `appended` changes whenever
/// the journal gains entries (it wakes an idle sender).
pub async fn run(
    cfg: SenderConfig,
    journal: Arc<Journal>,
    mut appended: watch::Receiver<u64>,
    stats: SharedStats,
    mut shutdown: watch::Receiver<bool>,
) {
    let s = &cfg.settings;
    let mut backoff = Backoff::new(
        Duration::from_millis(s.backoff_min_ms),
        Duration::from_millis(s.backoff_max_ms),
    );
    let mut failing_since: Option<u64> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let result = session(
            &cfg,
            &journal,
            &mut appended,
            &stats,
            &mut shutdown,
            &mut backoff,
        )
        .await;
        if *shutdown.borrow() {
            return;
        }
        let err = match result {
            Ok(()) => return,
            Err(e) => e,
        };
        let was_connected = stats
            .lock()
            .map(|st| matches!(st.state, LinkState::Connected { .. }))
            .unwrap_or(false);
        if was_connected {
            failing_since = None;
        }
        let since = *failing_since.get_or_insert_with(now_ms);
        tracing::warn!(peer = %cfg.peer, addr = %cfg.addr, error = %err, "link down, retrying");
        if let Ok(mut st) = stats.lock() {
            st.state = LinkState::Retrying {
                since_ms: since,
                error: err.to_string(),
            };
        }
        let delay = if matches!(err, SessionError::Refused(_)) {
            Duration::from_millis(s.backoff_max_ms)
        } else {
            backoff.next_delay()
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn session(
    cfg: &SenderConfig,
    journal: &Arc<Journal>,
    appended: &mut watch::Receiver<u64>,
    stats: &SharedStats,
    shutdown: &mut watch::Receiver<bool>,
    backoff: &mut Backoff,
) -> Result<(), SessionError> {
    let s = &cfg.settings;
    let dead = Duration::from_millis(s.dead_after_ms);
    let connect_err = |reason: String| SessionError::Connect {
        addr: cfg.addr.clone(),
        reason,
    };
    let stream = tokio::time::timeout(dead, TcpStream::connect(&cfg.addr))
        .await
        .map_err(|_| connect_err(format!("timed out after {} ms", s.dead_after_ms)))?
        .map_err(|e| connect_err(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let stream: crate::tls::LinkStream = match &cfg.tls {
        None => Box::new(stream),
        Some(tls) => tokio::time::timeout(dead, tls.connect(&cfg.peer, stream))
            .await
            .map_err(|_| {
                connect_err(format!(
                    "TLS handshake timed out after {} ms",
                    s.dead_after_ms
                ))
            })?
            .map_err(|e| connect_err(format!("TLS handshake: {e}")))?,
    };
    let (mut rd, mut wr) = tokio::io::split(stream);
    let hello = Frame::Hello {
        cluster: cfg.cluster.clone(),
        dc: cfg.me.clone(),
        version: PROTOCOL_VERSION,
        codecs: if s.compression {
            vec![Codec::Lz4, Codec::None]
        } else {
            vec![Codec::None]
        },
    };
    timed_write(&mut wr, &hello, dead, s.dead_after_ms).await?;
    let first = tokio::time::timeout(dead, read_frame(&mut rd, s.max_frame_bytes))
        .await
        .map_err(|_| SessionError::Stalled(s.dead_after_ms))??;
    let codec: Codec;
    let applied: BTreeMap<String, u64> = match first {
        Frame::Welcome {
            dc,
            applied,
            codec: chosen,
        } => {
            codec = chosen;
            if dc != cfg.peer {
                return Err(SessionError::Protocol(format!(
                    "dialed {} at {} but it says it is dc {dc:?}",
                    cfg.peer, cfg.addr
                )));
            }
            applied.into_iter().collect()
        }
        Frame::Refused { reason } => return Err(SessionError::Refused(reason)),
        other => {
            return Err(SessionError::Protocol(format!(
                "expected Welcome, got {}",
                frame_name(&other)
            )))
        }
    };
    // Resume points.
    let mut next: BTreeMap<String, u64> = BTreeMap::new();
    for store in &cfg.stores {
        let peer_applied = applied.get(store).copied().unwrap_or(0);
        let last = journal.last_seq(store)?;
        if peer_applied > last {
            return Err(SessionError::Protocol(format!(
                "peer {} has applied {store} up to seq {peer_applied} but this journal only reaches seq {last}; \
                 the journal was lost or reset: refusing to ship (restore the journal directory)",
                cfg.peer
            )));
        }
        if peer_applied > journal.cursor(&cfg.peer, store)? {
            journal.ack(&cfg.peer, store, peer_applied)?;
        }
        next.insert(store.clone(), peer_applied);
    }
    tracing::info!(peer = %cfg.peer, addr = %cfg.addr, resume = ?next, "link connected");
    if let Ok(mut st) = stats.lock() {
        st.state = LinkState::Connected { since_ms: now_ms() };
        st.connects += 1;
    }
    backoff.reset();

    // Reader task: frames from the peer, so that reads are never cancelled
    // half-way by the select below.
    let (ftx, mut frx) = mpsc::channel::<Result<Frame, FrameError>>(64);
    let limit = s.max_frame_bytes;
    let reader = tokio::spawn(async move {
        loop {
            let r = read_frame(&mut rd, limit).await;
            let stop = r.is_err();
            if ftx.send(r).await.is_err() || stop {
                return;
            }
        }
    });
    let _abort = AbortOnDrop(reader);

    let mut in_flight: VecDeque<(String, u64, u64)> = VecDeque::new(); // (store, last seq, txns)
    let mut last_rx = Instant::now();
    let mut last_tx = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(s.heartbeat_ms.min(1000)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rr = 0usize;
    let mut pace = Instant::now();
    loop {
        // Fill the window.
        while in_flight.len() < s.window {
            let mut sent = false;
            for i in 0..cfg.stores.len() {
                let store = &cfg.stores[(rr + i) % cfg.stores.len()];
                let from = next.get(store).copied().unwrap_or(0);
                if journal.last_seq(store)? <= from {
                    continue;
                }
                let txs = journal.read(store, from, s.batch_max_txns, s.batch_max_bytes)?;
                let (Some(first), Some(last)) = (txs.first(), txs.last()) else {
                    continue;
                };
                if first.seq != from + 1 {
                    return Err(SessionError::Protocol(format!(
                        "journal for {store} resumes at seq {} but the peer needs seq {}: entries were removed before every peer acknowledged them",
                        first.seq,
                        from + 1
                    )));
                }
                let last_seq = last.seq;
                let n = txs.len() as u64;
                let (raw_len, data) = crate::frame::pack_batch(&txs, codec)?;
                drop(txs);
                // Bandwidth cap: pace batches so the average stays under the cap.
                if s.max_bytes_per_sec > 0 {
                    let now = Instant::now();
                    if pace > now {
                        tokio::time::sleep_until(pace.into()).await;
                    }
                    pace = pace.max(now)
                        + Duration::from_secs_f64(data.len() as f64 / s.max_bytes_per_sec as f64);
                }
                let bytes = timed_write(
                    &mut wr,
                    &Frame::Batch {
                        store: store.clone(),
                        codec,
                        raw_len,
                        data,
                    },
                    dead,
                    s.dead_after_ms,
                )
                .await?;
                last_tx = Instant::now();
                next.insert(store.clone(), last_seq);
                in_flight.push_back((store.clone(), last_seq, n));
                if let Ok(mut st) = stats.lock() {
                    st.sent_txns += n;
                    st.sent_bytes += bytes as u64;
                }
                rr = (rr + i + 1) % cfg.stores.len();
                sent = true;
                break;
            }
            if !sent {
                break;
            }
        }
        tokio::select! {
            f = frx.recv() => {
                last_rx = Instant::now();
                match f {
                    None => return Err(SessionError::Protocol("reader stopped".into())),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(Frame::Ack { store, seq })) => {
                        journal.ack(&cfg.peer, &store, seq)?;
                        let mut acked = 0;
                        while let Some((s0, q, n)) = in_flight.front() {
                            if *s0 == store && *q <= seq {
                                acked += n;
                                in_flight.pop_front();
                            } else {
                                break;
                            }
                        }
                        if let Ok(mut st) = stats.lock() {
                            st.acked_txns += acked;
                        }
                    }
                    Some(Ok(Frame::Heartbeat)) => {}
                    Some(Ok(Frame::Refused { reason })) => return Err(SessionError::Refused(reason)),
                    Some(Ok(other)) => return Err(SessionError::Protocol(format!("unexpected {} from receiver", frame_name(&other)))),
                }
            }
            _ = appended.changed() => {}
            _ = tick.tick() => {
                if last_rx.elapsed() > dead {
                    return Err(SessionError::Stalled(s.dead_after_ms));
                }
                if last_tx.elapsed() >= Duration::from_millis(s.heartbeat_ms) {
                    timed_write(&mut wr, &Frame::Heartbeat, dead, s.dead_after_ms).await?;
                    last_tx = Instant::now();
                }
            }
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn timed_write<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    f: &Frame,
    dead: Duration,
    dead_ms: u64,
) -> Result<usize, SessionError> {
    tokio::time::timeout(dead, write_frame(w, f))
        .await
        .map_err(|_| SessionError::Stalled(dead_ms))?
        .map_err(SessionError::from)
}

/// Short name of a frame for error messages.
pub fn frame_name(f: &Frame) -> &'static str {
    match f {
        Frame::Hello { .. } => "Hello",
        Frame::Welcome { .. } => "Welcome",
        Frame::Refused { .. } => "Refused",
        Frame::Batch { .. } => "Batch",
        Frame::Ack { .. } => "Ack",
        Frame::Heartbeat => "Heartbeat",
    }
}
