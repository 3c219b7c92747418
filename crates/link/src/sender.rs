//! The sending half of a link: ships journaled origin streams to one peer.
//!
//! Runs forever: connect, handshake (negotiating the protocol version),
//! stream batches of every origin stream `(origin, store)` it forwards to
//! this peer from the journal with at most `window` unacknowledged, advance
//! the journal cursor of each stream on its ack; on any link failure
//! (refused, closed, stalled, checksum) log it, record `Retrying`, wait a
//! capped exponential backoff with jitter, and start over from what the peer
//! reports as applied per stream.
//!
//! # Per-store isolation (protocol 2)
//! When the peer reports [`Frame::StoreFailed`] for a stream, only that
//! stream pauses: its unacknowledged batches are forgotten (the receiver
//! drops them, since they no longer follow what it applied) and it is
//! resent from its last ack once the retry time comes (transient: growing
//! backoff; definite: `backoff_max_ms`). Every other stream keeps flowing
//! on the same connection. Paused streams are listed in
//! [`LinkStats::failing`](crate::LinkStats) with the peer's reason.
//!
//! # Version negotiation
//! The hello carries [`PROTOCOL_VERSION`]; the listener answers with the
//! version it picked. A version-1 listener refuses any other version with
//! "incompatible protocol version N: this agent speaks version 1"; the
//! sender then redials at once with that version (rolling upgrade).

use crate::frame::{read_frame, Codec, Frame, FrameError, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use crate::packing::{read_batch, Packed};
use crate::{now_ms, AbortOnDrop, Backoff, LinkState, SharedStats, StreamFailure};
use dcsync_core::connector::AppliedMark;
use dcsync_core::events;
use dcsync_core::topology::LinkSettings;
use dcsync_journal::Journal;
use std::collections::BTreeMap;
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
    /// Which origins' streams go to this peer, read at every session
    /// ([`crate::routing::Routing::origins_to`]; mesh: this DC only; a hub
    /// also forwards the other spokes'). A session ends when the routing
    /// changes; with no origin for this peer the sender stays idle.
    pub routing: crate::routing::RoutingWatch,
    /// Stores whose changes go to this peer.
    pub stores: Vec<String>,
    /// Link tuning.
    pub settings: LinkSettings,
    /// Mutual TLS; `None` = plain TCP (`[tls] plaintext = true`).
    pub tls: Option<crate::tls::LinkTls>,
    /// Where the peer's markers of this DC's own streams are reported at
    /// each handshake (the recovery of a new journal waits for them).
    pub marks: Option<Arc<crate::PeerMarks>>,
    /// Where what the peer applied of every origin is recorded (its
    /// handshake and acks), and what a relay reports of this DC's own
    /// streams ([`Frame::Progress`]).
    pub vectors: Option<Arc<crate::vectors::AppliedVectors>>,
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
    /// The peer speaks only an older protocol version: redial with it.
    #[error("peer speaks protocol version {0}: redialing with it")]
    Downgrade(u32),
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Nothing was received for too long.
    #[error("connection stalled: no frame from peer for {0} ms")]
    Stalled(u64),
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] dcsync_journal::JournalError),
    /// A stream this session held back (its journal stream was not
    /// settled) is settled now: redial at once to ship it.
    #[error("a held-back stream is settled: redialing")]
    Settled,
    /// The routing changed (a topology reload): redial with the new
    /// streams.
    #[error("the routing changed: redialing")]
    Rerouted,
    /// Connect failed or timed out.
    #[error("connect to {addr}: {reason}")]
    Connect {
        /// Peer address.
        addr: String,
        /// Reason.
        reason: String,
    },
}

/// How long a session runs before it redials to ask again for a marker the
/// peer could not report of a held-back stream.
const UNREPORTED_REDIAL: Duration = Duration::from_secs(5);

/// One origin stream: `(origin, store)`.
type Stream = (String, String);

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
    let mut version = PROTOCOL_VERSION;
    let mut routing = cfg.routing.clone();
    loop {
        if *shutdown.borrow() {
            return;
        }
        // No line to this peer under the current routing (two spokes of a
        // star): idle until it changes.
        if routing.borrow_and_update().origins_to(&cfg.peer).is_empty() {
            if let Ok(mut st) = stats.lock() {
                st.state = LinkState::Idle;
                st.failing.clear();
            }
            failing_since = None;
            tokio::select! {
                _ = crate::routing::changed(&mut routing) => {}
                _ = shutdown.changed() => return,
            }
            continue;
        }
        let result = session(
            &cfg,
            version,
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
            Err(SessionError::Settled) | Err(SessionError::Rerouted) => continue,
            Err(SessionError::Downgrade(v)) => {
                tracing::info!(peer = %cfg.peer, version = v, "peer speaks an older protocol version; redialing with it");
                version = v;
                continue;
            }
            Err(e) => e,
        };
        events::LinkFailed { peer: &cfg.peer }.emit();
        let was_connected = stats
            .lock()
            .map(|st| matches!(st.state, LinkState::Connected { .. }))
            .unwrap_or(false);
        if was_connected {
            failing_since = None;
            // The peer may have been upgraded meanwhile.
            version = PROTOCOL_VERSION;
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

/// The version a version-1 listener names in its refusal ("... this agent
/// speaks version 1"), if the refusal is about the version.
fn refused_version(reason: &str) -> Option<u32> {
    if !reason.starts_with("incompatible protocol version") {
        return None;
    }
    let tail = reason.rsplit("speaks version ").next()?;
    tail.trim().parse().ok()
}

/// A paused stream and when it may be retried.
struct Paused {
    until: Instant,
    failure: StreamFailure,
    backoff: Backoff,
}

async fn session(
    cfg: &SenderConfig,
    offer: u32,
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
        version: offer,
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
    let seq_only = |seq: u64| AppliedMark {
        seq,
        ..AppliedMark::default()
    };
    let mut resend: BTreeMap<Stream, u64> = BTreeMap::new();
    let (version, codec, peer_dc, applied): (u32, Codec, String, BTreeMap<Stream, AppliedMark>) =
        match first {
            Frame::WelcomeRelay {
                dc,
                version,
                applied,
                resend: r,
                codec,
            } => {
                resend = r
                    .into_iter()
                    .map(|a| ((a.origin, a.store), a.seq))
                    .collect();
                (version, codec, dc, marks_of(applied))
            }
            Frame::WelcomeMarks {
                dc,
                version,
                applied,
                codec,
            } => (version, codec, dc, marks_of(applied)),
            Frame::Welcome {
                dc,
                version,
                applied,
                codec,
            } => (
                version,
                codec,
                dc,
                applied
                    .into_iter()
                    .map(|a| ((a.origin, a.store), seq_only(a.seq)))
                    .collect(),
            ),
            Frame::LegacyWelcome { dc, applied, codec } => (
                1,
                codec,
                dc,
                applied
                    .into_iter()
                    .map(|(store, seq)| ((cfg.me.clone(), store), seq_only(seq)))
                    .collect(),
            ),
            Frame::Refused { reason } => {
                return Err(match refused_version(&reason) {
                    Some(v) if (MIN_PROTOCOL_VERSION..offer).contains(&v) => {
                        SessionError::Downgrade(v)
                    }
                    _ => SessionError::Refused(reason),
                })
            }
            other => {
                return Err(SessionError::Protocol(format!(
                    "expected Welcome, got {}",
                    other.name()
                )))
            }
        };
    if peer_dc != cfg.peer {
        return Err(SessionError::Protocol(format!(
            "dialed {} at {} but it says it is dc {peer_dc:?}",
            cfg.peer, cfg.addr
        )));
    }
    if !(MIN_PROTOCOL_VERSION..=offer).contains(&version) {
        return Err(SessionError::Protocol(format!(
            "peer chose protocol version {version}, outside {MIN_PROTOCOL_VERSION}..={offer}"
        )));
    }
    // What the peer applied of every origin (applied vectors), and of our
    // own streams for the recovery of a new journal.
    if let Some(v) = &cfg.vectors {
        for ((o, st), m) in &applied {
            v.report(&cfg.peer, o, st, m.seq);
        }
    }
    if let Some(board) = &cfg.marks {
        for st in &cfg.stores {
            if let Some(m) = applied.get(&(cfg.me.clone(), st.clone())) {
                board.report(&cfg.peer, st, m.clone());
            }
        }
    }
    // The streams this session ships: protocol 1 carries only our own; an
    // own stream of a new journal waits until it is settled (it may be
    // restarted at a peer's marker).
    let mut unsettled: Vec<Stream> = Vec::new();
    let mut streams: Vec<Stream> = Vec::new();
    let mut routing = cfg.routing.clone();
    let origins = routing.borrow_and_update().origins_to(&cfg.peer);
    for o in origins
        .iter()
        .filter(|o| **o != cfg.peer && (version >= 2 || **o == cfg.me))
    {
        for st in &cfg.stores {
            let key = (o.clone(), st.clone());
            if *o == cfg.me && !journal.settled(st)? {
                unsettled.push(key);
            } else {
                streams.push(key);
            }
        }
    }
    if !unsettled.is_empty() {
        tracing::info!(peer = %cfg.peer, streams = ?unsettled, "holding back streams of a new journal until every peer has told what it applied of them");
    }
    // A held-back stream the peer could not report (its store not ready):
    // ask again with a new handshake after a while.
    let unreported = unsettled.iter().any(|k| !applied.contains_key(k));
    let session_start = Instant::now();
    // Resume points.
    let mut next: BTreeMap<Stream, u64> = BTreeMap::new();
    let mut acked: BTreeMap<Stream, u64> = BTreeMap::new();
    for key in &streams {
        let (origin, store) = key;
        // A stream the peer could not report (its store not ready) resumes
        // from our cursor: at or below what it applied, so a resend is a
        // no-op there, and never below what this journal still holds.
        let mark = match applied.get(key) {
            Some(m) => m.clone(),
            None => seq_only(journal.cursor(&cfg.peer, origin, store)?),
        };
        let peer_applied = mark.seq;
        let last = journal.last_seq(origin, store)?;
        if *origin == cfg.me
            && version >= 4
            && peer_applied > 0
            && !journal.continues(store, mark.epoch)?
        {
            return Err(SessionError::Protocol(format!(
                "peer {} has applied {origin}/{store} up to seq {peer_applied} of journal epoch {:016x}, \
                 which this journal (epoch {:016x}) does not continue: this DC's journal was replaced \
                 without recovering from {}; refusing to ship (seqs of two journals would be confused \
                 and changes skipped). See docs/operations.md, \"Replacing an agent's host\"",
                cfg.peer,
                mark.epoch,
                journal.epoch(),
                cfg.peer
            )));
        }
        // A peer ahead of this journal (a recovered journal re-reading its
        // source from a less advanced peer's marker; a new hub's relay
        // journal, filled from the origins): its stream resumes once the
        // journal has passed what it applied.
        if peer_applied > last && *origin != cfg.me {
            tracing::debug!(peer = %cfg.peer, %origin, %store, peer_applied, last, "peer is ahead of the relay journal; the stream resumes once the journal passes it");
        }
        let cursor = peer_applied.min(last);
        if cursor > journal.cursor(&cfg.peer, origin, store)? {
            journal.ack(&cfg.peer, origin, store, cursor)?;
        }
        // A relaying peer asks again for what its relay journal lacks.
        let start = resend
            .get(key)
            .map_or(peer_applied, |r| (*r).min(peer_applied));
        if start < peer_applied {
            tracing::info!(peer = %cfg.peer, %origin, %store, from = start + 1, applied = peer_applied, "relaying peer asks again for seqs it applied, for its relay journal");
        }
        next.insert(key.clone(), start);
        acked.insert(key.clone(), start);
    }
    tracing::info!(peer = %cfg.peer, addr = %cfg.addr, version, resume = ?next, "link connected");
    events::LinkConnected {
        peer: &cfg.peer,
        version,
    }
    .emit();
    if let Ok(mut st) = stats.lock() {
        st.state = LinkState::Connected { since_ms: now_ms() };
        st.connects += 1;
        st.version = version;
        st.failing.clear();
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

    // Unacknowledged batches: (stream, first seq, last seq, txns, ends
    // inside a split transaction). A batch that ends inside a transaction
    // split in parts cannot be acknowledged before the batch that ends it
    // (the receiver commits the parts together), so it does not count
    // against the window: TCP flow control bounds those (the receiver reads
    // the next frame only after applying one).
    let mut in_flight: Vec<InFlight> = Vec::new();
    let mut paused: BTreeMap<Stream, Paused> = BTreeMap::new();
    let mut last_rx = Instant::now();
    let mut last_tx = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(s.heartbeat_ms.min(1000)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rr = 0usize;
    let mut pace = Instant::now();
    loop {
        // Fill the window.
        while in_flight.iter().filter(|b| !b.4).count() < s.window && !streams.is_empty() {
            let mut sent = false;
            let now = Instant::now();
            for i in 0..streams.len() {
                let key = &streams[(rr + i) % streams.len()];
                if paused.get(key).is_some_and(|p| p.until > now) {
                    continue;
                }
                let (origin, store) = key;
                let from = next.get(key).copied().unwrap_or(0);
                if journal.last_seq(origin, store)? <= from {
                    continue;
                }
                // Reading and encoding a batch runs off the async task,
                // and heartbeats go out meanwhile: a batch holding one very
                // large row can take longer than `dead_after_ms` to encode.
                let job = {
                    let journal = journal.clone();
                    let (origin, store) = (origin.clone(), store.clone());
                    let (max_txns, max_bytes) = (s.batch_max_txns, s.batch_max_bytes);
                    tokio::task::spawn_blocking(move || -> Result<Option<Packed>, SessionError> {
                        read_batch(
                            &journal,
                            &origin,
                            &store,
                            from,
                            (max_txns, max_bytes),
                            codec,
                            version,
                        )
                    })
                };
                tokio::pin!(job);
                let packed = loop {
                    tokio::select! {
                        r = &mut job => {
                            break r.map_err(|e| SessionError::Protocol(format!("batch encoding task failed: {e}")))??;
                        }
                        _ = tokio::time::sleep(Duration::from_millis(s.heartbeat_ms)) => {
                            timed_write(&mut wr, &Frame::Heartbeat, dead, s.dead_after_ms).await?;
                            last_tx = Instant::now();
                        }
                    }
                };
                let Some(Packed {
                    first,
                    last_seq,
                    open,
                    n,
                    raw_len,
                    data,
                }) = packed
                else {
                    continue;
                };
                if first > from + 1 && version >= 5 {
                    // Entries are removed only once every DC applied them
                    // (the cursors of every peer, direct or through a
                    // relay's Progress): tell the peer where the stream
                    // resumes.
                    tracing::info!(peer = %cfg.peer, %origin, %store, asked = from + 1, first, "every DC applied the seqs before this journal's oldest entry: the stream resumes at it");
                    let f = Frame::Floor {
                        origin: origin.clone(),
                        store: store.clone(),
                        seq: first - 1,
                    };
                    timed_write(&mut wr, &f, dead, s.dead_after_ms).await?;
                    if acked.get(key).is_some_and(|a| *a < first - 1) {
                        acked.insert(key.clone(), first - 1);
                    }
                } else if first != from + 1 {
                    return Err(SessionError::Protocol(format!(
                        "journal for {origin}/{store} resumes at seq {first} but the peer needs seq {}: entries were removed before every peer acknowledged them",
                        from + 1
                    )));
                }
                // Bandwidth cap: pace batches so the average stays under the cap.
                if s.max_bytes_per_sec > 0 {
                    let now = Instant::now();
                    if pace > now {
                        tokio::time::sleep_until(pace.into()).await;
                    }
                    pace = pace.max(now)
                        + Duration::from_secs_f64(data.len() as f64 / s.max_bytes_per_sec as f64);
                }
                let frame = if version >= 2 {
                    Frame::Batch {
                        origin: origin.clone(),
                        store: store.clone(),
                        codec,
                        raw_len,
                        data,
                    }
                } else {
                    Frame::LegacyBatch {
                        store: store.clone(),
                        codec,
                        raw_len,
                        data,
                    }
                };
                let bytes = timed_write(&mut wr, &frame, dead, s.dead_after_ms).await?;
                last_tx = Instant::now();
                next.insert(key.clone(), last_seq);
                in_flight.push((key.clone(), first, last_seq, n, open));
                if let Ok(mut st) = stats.lock() {
                    st.sent_txns += n;
                    st.sent_bytes += bytes as u64;
                }
                events::BatchSent {
                    peer: &cfg.peer,
                    txns: n,
                    bytes: bytes as u64,
                }
                .emit();
                rr = (rr + i + 1) % streams.len();
                sent = true;
                break;
            }
            if !sent {
                break;
            }
        }
        tokio::select! {
            // Frames that arrived while a large batch was being written are
            // handled before the stall check below looks at `last_rx`.
            biased;
            f = frx.recv() => {
                last_rx = Instant::now();
                let frame = match f {
                    None => return Err(SessionError::Protocol("reader stopped".into())),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(f)) => f,
                };
                match frame {
                    Frame::Ack { origin, store, seq } => {
                        on_ack(cfg, journal, stats, &mut in_flight, &mut acked, &mut paused, (origin, store), seq)?;
                    }
                    Frame::LegacyAck { store, seq } if version == 1 => {
                        on_ack(cfg, journal, stats, &mut in_flight, &mut acked, &mut paused, (cfg.me.clone(), store), seq)?;
                    }
                    Frame::StoreFailed { origin, store, definite, reason, seq } if version >= 2 => {
                        let key = (origin, store);
                        if !streams.contains(&key) {
                            return Err(SessionError::Protocol(format!("StoreFailed for {}/{}, which this link does not ship", key.0, key.1)));
                        }
                        if !in_flight.iter().any(|(k, first, _, _, _)| *k == key && *first == seq) {
                            // About a batch already given up on (sent before
                            // an earlier failure of the stream): stale.
                            tracing::debug!(peer = %cfg.peer, origin = %key.0, store = %key.1, seq, "stale StoreFailed ignored");
                            continue;
                        }
                        in_flight.retain(|(k, _, _, _, _)| *k != key);
                        let resume = acked.get(&key).copied().unwrap_or(0);
                        next.insert(key.clone(), resume);
                        let p = paused.entry(key.clone()).or_insert_with(|| Paused {
                            until: Instant::now(),
                            failure: StreamFailure {
                                origin: key.0.clone(),
                                store: key.1.clone(),
                                definite,
                                reason: String::new(),
                                since_ms: now_ms(),
                                retry_at_ms: 0,
                                attempts: 0,
                            },
                            backoff: Backoff::new(
                                Duration::from_millis(s.backoff_min_ms),
                                Duration::from_millis(s.backoff_max_ms),
                            ),
                        });
                        let delay = if definite {
                            Duration::from_millis(s.backoff_max_ms)
                        } else {
                            p.backoff.next_delay()
                        };
                        p.until = Instant::now() + delay;
                        p.failure.definite = definite;
                        p.failure.reason = reason;
                        p.failure.attempts += 1;
                        p.failure.retry_at_ms = now_ms() + delay.as_millis() as u64;
                        if p.failure.attempts == 1 || p.failure.attempts.is_power_of_two() {
                            tracing::warn!(peer = %cfg.peer, origin = %key.0, store = %key.1, definite,
                                attempts = p.failure.attempts, reason = %p.failure.reason,
                                retry_in_ms = delay.as_millis() as u64,
                                "peer cannot apply this store's stream; it is paused, the other stores keep flowing");
                        }
                        publish_failing(stats, &paused);
                        events::StreamPauseChanged { peer: &cfg.peer, origin: &key.0, store: &key.1, paused: true }.emit();
                    }
                    Frame::Progress { origin, store, applied } if version >= 5 => {
                        on_progress(cfg, journal, &origin, &store, &applied)?;
                    }
                    Frame::Heartbeat => {}
                    Frame::Refused { reason } => return Err(SessionError::Refused(reason)),
                    other => return Err(SessionError::Protocol(format!("unexpected {} from receiver (protocol {version})", other.name()))),
                }
            }
            _ = appended.changed() => {}
            _ = crate::routing::changed(&mut routing) => {
                if routing.borrow_and_update().origins_to(&cfg.peer) != origins {
                    return Err(SessionError::Rerouted);
                }
            }
            _ = tick.tick() => {
                if last_rx.elapsed() > dead {
                    return Err(SessionError::Stalled(s.dead_after_ms));
                }
                for (_, store) in &unsettled {
                    if journal.settled(store)? {
                        return Err(SessionError::Settled);
                    }
                }
                if unreported && session_start.elapsed() >= UNREPORTED_REDIAL {
                    return Err(SessionError::Protocol(format!(
                        "peer {} could not tell what it applied of this DC's held-back streams \
                         (its store not ready?): asking again",
                        cfg.peer
                    )));
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

/// Handles an acknowledgement of `key` through `seq`: journal cursor,
/// window, counters, and the end of a pause.
#[allow(clippy::too_many_arguments)]
fn on_ack(
    cfg: &SenderConfig,
    journal: &Journal,
    stats: &SharedStats,
    in_flight: &mut Vec<InFlight>,
    acked: &mut BTreeMap<Stream, u64>,
    paused: &mut BTreeMap<Stream, Paused>,
    key: Stream,
    seq: u64,
) -> Result<(), SessionError> {
    if !acked.contains_key(&key) {
        return Err(SessionError::Protocol(format!(
            "ack for {}/{}, which this link does not ship",
            key.0, key.1
        )));
    }
    journal.ack(&cfg.peer, &key.0, &key.1, seq)?;
    if let Some(v) = &cfg.vectors {
        v.report(&cfg.peer, &key.0, &key.1, seq);
    }
    let mut n = 0;
    in_flight.retain(|(k, _, q, c, _)| {
        let done = *k == key && *q <= seq;
        if done {
            n += c;
        }
        !done
    });
    if let Some(a) = acked.get_mut(&key) {
        *a = (*a).max(seq);
    }
    if paused.remove(&key).is_some() {
        tracing::info!(peer = %cfg.peer, origin = %key.0, store = %key.1, "paused stream applies again");
        publish_failing(stats, paused);
        events::StreamPauseChanged {
            peer: &cfg.peer,
            origin: &key.0,
            store: &key.1,
            paused: false,
        }
        .emit();
    }
    if let Ok(mut st) = stats.lock() {
        st.acked_txns += n;
    }
    events::BatchAcked {
        peer: &cfg.peer,
        txns: n,
    }
    .emit();
    Ok(())
}

/// Handles a relay's report of what DCs behind it applied of this DC's own
/// stream `(origin, store)`: journal cursors (this DC keeps its changes
/// until every DC applied them) and applied vectors.
fn on_progress(
    cfg: &SenderConfig,
    journal: &Journal,
    origin: &str,
    store: &str,
    applied: &[(String, u64)],
) -> Result<(), SessionError> {
    if origin != cfg.me {
        return Err(SessionError::Protocol(format!(
            "Progress about {origin}/{store}: only this DC's own streams are reported to it"
        )));
    }
    for (dc, seq) in applied {
        if *dc == cfg.me {
            continue;
        }
        journal.ack(dc, origin, store, *seq)?;
        if let Some(v) = &cfg.vectors {
            v.report(dc, origin, store, *seq);
        }
    }
    Ok(())
}

/// Apply markers of a protocol-4+ welcome, by stream.
fn marks_of(applied: Vec<crate::frame::AppliedAt>) -> BTreeMap<Stream, AppliedMark> {
    applied
        .into_iter()
        .map(|a| {
            let mark = AppliedMark {
                seq: a.seq,
                epoch: a.epoch,
                position: a.position,
            };
            ((a.origin, a.store), mark)
        })
        .collect()
}

/// A batch sent and not yet acknowledged: (stream, first seq, last seq,
/// transactions, ends inside a split transaction).
type InFlight = (Stream, u64, u64, u64, bool);

fn publish_failing(stats: &SharedStats, paused: &BTreeMap<Stream, Paused>) {
    if let Ok(mut st) = stats.lock() {
        st.failing = paused.values().map(|p| p.failure.clone()).collect();
    }
}

async fn timed_write<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    f: &Frame,
    dead: Duration,
    dead_ms: u64,
) -> Result<usize, SessionError> {
    // A large frame may take longer than `dead` to write; only a write
    // that makes no progress for `dead` means the line or peer is dead.
    match crate::frame::write_frame_progress(w, f, dead).await {
        Err(FrameError::Stalled(_)) => Err(SessionError::Stalled(dead_ms)),
        r => r.map_err(SessionError::from),
    }
}

#[cfg(test)]
mod tests {
    use super::refused_version;

    #[test]
    fn a_version_one_refusal_names_the_version_to_redial_with() {
        assert_eq!(
            refused_version("incompatible protocol version 2: this agent speaks version 1"),
            Some(1)
        );
        assert_eq!(refused_version("wrong cluster \"x\""), None);
    }
}
