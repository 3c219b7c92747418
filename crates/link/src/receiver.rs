//! The receiving half of a link: accepts peers, checks who they are, applies
//! their batches through the [`Applier`] and acknowledges only what is
//! applied.
//!
//! A bad peer (garbage bytes, oversized or malformed frame, wrong cluster,
//! unknown DC, wrong protocol version) only loses its own connection, with a
//! log line naming the reason; the listener and every other link go on.

use crate::frame::{
    read_frame, write_frame, Applied, AppliedAt, Codec, Frame, FrameError, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
};
use crate::{now_ms, AbortOnDrop, Applier, ApplyError, InboundBoard, InboundStream};
use dcsync_core::events;
use dcsync_core::topology::LinkSettings;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// What a receiver needs to know.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Cluster name; a hello with another one is refused.
    pub cluster: String,
    /// This DC's id.
    pub me: String,
    /// DC ids allowed to connect (the topology's DCs minus this one).
    pub peers: Vec<String>,
    /// Stores this agent applies.
    pub stores: Vec<String>,
    /// Link tuning.
    pub settings: LinkSettings,
    /// Mutual TLS; `None` = plain TCP (`[tls] plaintext = true`).
    pub tls: Option<crate::tls::LinkTls>,
    /// Where the receiver publishes what it applied and which streams are
    /// failing (read by status and metrics).
    pub board: InboundBoard,
    /// Relaying and applied vectors; `None`: this agent never relays and
    /// sends no [`Frame::Progress`].
    pub relay: Option<Relay>,
}

/// What a receiver needs to relay (a star's hub journals other origins'
/// batches before applying them, for the other spokes) and to report
/// applied vectors.
#[derive(Clone)]
pub struct Relay {
    /// The agent's journal (the relay journal is part of it).
    pub journal: Arc<dcsync_journal::Journal>,
    /// Bumped after each relayed append (wakes the senders).
    pub appended: Arc<watch::Sender<u64>>,
    /// Whether this agent relays now; a connection closes when it changes.
    pub routing: crate::routing::RoutingWatch,
    /// Applied vectors: this DC's applies are recorded in it, and what it
    /// knows of other DCs is reported to each dialer about its own
    /// streams.
    pub vectors: Arc<crate::vectors::AppliedVectors>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("routing", &*self.routing.borrow())
            .finish_non_exhaustive()
    }
}

/// Accepts connections on `listener` until `shutdown` turns true; each
/// connection runs in its own task.
pub async fn serve(
    listener: TcpListener,
    cfg: Arc<ReceiverConfig>,
    applier: Arc<dyn Applier>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, addr)) => {
                    let cfg = cfg.clone();
                    let applier = applier.clone();
                    let sd = shutdown.clone();
                    tokio::spawn(async move {
                        match handle(stream, addr, &cfg, applier, sd).await {
                            Ok(()) => {}
                            Err(e) => tracing::warn!(%addr, error = %e, "inbound link closed"),
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// Why an inbound connection ended.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// Frame-level problem: I/O, oversized, checksum, malformed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer was refused; the reason was sent to it too.
    #[error("refused peer: {0}")]
    Refused(String),
    /// No frame within the dead-peer timeout.
    #[error("connection stalled: no frame for {0} ms")]
    Stalled(u64),
    /// TLS handshake failed (wrong CA, no client certificate, garbage).
    #[error("TLS handshake refused: {0}")]
    Tls(String),
    /// Applying failed; the sender will retry.
    #[error("{0}")]
    Apply(#[from] ApplyError),
}

async fn refuse(
    wr: &mut tokio::io::WriteHalf<crate::tls::LinkStream>,
    reason: String,
) -> InboundError {
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        write_frame(
            wr,
            &Frame::Refused {
                reason: reason.clone(),
            },
        ),
    )
    .await;
    InboundError::Refused(reason)
}

async fn handle(
    stream: TcpStream,
    addr: SocketAddr,
    cfg: &ReceiverConfig,
    applier: Arc<dyn Applier>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), InboundError> {
    let s = &cfg.settings;
    let dead = Duration::from_millis(s.dead_after_ms);
    let _ = stream.set_nodelay(true);
    let (stream, peer_cert): (crate::tls::LinkStream, _) = match &cfg.tls {
        None => (Box::new(stream), None),
        Some(tls) => match tokio::time::timeout(dead, tls.accept(stream)).await {
            Err(_) => {
                return Err(InboundError::Tls(format!(
                    "handshake timed out after {} ms",
                    s.dead_after_ms
                )))
            }
            Ok(Err(e)) => return Err(InboundError::Tls(e.to_string())),
            Ok(Ok((st, cert))) => (st, cert),
        },
    };
    let (mut rd, mut wr) = tokio::io::split(stream);
    let hello = tokio::time::timeout(dead, read_frame(&mut rd, s.max_frame_bytes.min(64 << 10)))
        .await
        .map_err(|_| InboundError::Stalled(s.dead_after_ms))??;
    let codec: Codec;
    let negotiated: u32;
    let origin = match hello {
        Frame::Hello {
            cluster,
            dc,
            version,
            codecs,
        } => {
            codec = if s.compression && codecs.contains(&Codec::Lz4) {
                Codec::Lz4
            } else {
                Codec::None
            };
            if cluster != cfg.cluster {
                return Err(refuse(
                    &mut wr,
                    format!(
                        "wrong cluster {cluster:?}: this is cluster {:?}",
                        cfg.cluster
                    ),
                )
                .await);
            }
            if version < MIN_PROTOCOL_VERSION {
                return Err(refuse(
                    &mut wr,
                    format!("incompatible protocol version {version}: this agent speaks versions {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"),
                )
                .await);
            }
            negotiated = version.min(PROTOCOL_VERSION);
            if dc == cfg.me {
                return Err(refuse(&mut wr, format!("dc {dc:?} is this agent itself")).await);
            }
            if !cfg.peers.contains(&dc) {
                return Err(
                    refuse(&mut wr, format!("unknown dc {dc:?}: not in the topology")).await,
                );
            }
            if let Some(tls) = &cfg.tls {
                let ok = peer_cert.as_ref().is_some_and(|c| tls.cert_is_for(c, &dc));
                if !ok {
                    return Err(refuse(
                        &mut wr,
                        format!(
                            "certificate is not valid for dc {dc:?} (expected a certificate for {})",
                            crate::tls::identity_name(&dc, &cfg.cluster)
                        ),
                    )
                    .await);
                }
            }
            dc
        }
        other => {
            return Err(refuse(&mut wr, format!("expected Hello, got {}", other.name())).await);
        }
    };
    // Applied positions: protocol 1 asks only for the dialer's own
    // changes; protocol 2 for every origin stream this agent applies. A
    // stream whose marker cannot be read now is left out: the sender then
    // resumes it from its own cursor (at or below what was applied), and
    // this side reads the marker again at its first batch.
    let origins: Vec<String> = if negotiated == 1 {
        vec![origin.clone()]
    } else {
        cfg.peers.clone()
    };
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut routing = cfg.relay.as_ref().map(|r| r.routing.clone());
    let relaying = routing.as_mut().map(|r| r.borrow_and_update().clone());
    // Streams of the dialer this DC relays whose relay journal is behind
    // the marker: asked again from the relay journal's head.
    let mut resend: Vec<Applied> = Vec::new();
    let mut marks: BTreeMap<(String, String), dcsync_core::connector::AppliedMark> =
        BTreeMap::new();
    // Streams that failed since their last successful apply: their batches
    // still in flight are stale and dropped.
    let mut failed: std::collections::BTreeSet<(String, String)> = Default::default();
    for o in &origins {
        for store in &cfg.stores {
            match applier.applied(o, store).await {
                Ok(mark) => {
                    let seq = mark.seq;
                    if let Some(r) = &cfg.relay {
                        r.vectors.report(&cfg.me, o, store, seq);
                        if *o == origin && relaying.as_ref().is_some_and(|x| x.relays_origin(o)) {
                            let head = r.journal.last_seq(o, store).map_err(|e| {
                                ApplyError::Transient(format!("reading the relay journal: {e}"))
                            })?;
                            if head < seq {
                                resend.push(Applied {
                                    origin: o.clone(),
                                    store: store.clone(),
                                    seq: head,
                                });
                            }
                        }
                    }
                    expected.insert((o.clone(), store.clone()), seq + 1);
                    marks.insert((o.clone(), store.clone()), mark);
                    publish(&cfg.board, o, store, |st| {
                        st.applied_seq = st.applied_seq.max(seq)
                    });
                }
                Err(e) if negotiated == 1 => {
                    return Err(refuse(&mut wr, format!("store {store} not ready: {e}")).await)
                }
                Err(e) => {
                    tracing::warn!(origin = %o, %store, error = %e, "cannot read the apply marker; the stream resumes from the sender's cursor")
                }
            }
        }
    }
    tracing::info!(peer = %origin, %addr, version = negotiated, "inbound link accepted");
    let welcome = if negotiated == 1 {
        Frame::LegacyWelcome {
            dc: cfg.me.clone(),
            applied: expected
                .iter()
                .map(|((_, st), next)| (st.clone(), next - 1))
                .collect(),
            codec,
        }
    } else if negotiated >= 5 {
        if !resend.is_empty() {
            tracing::info!(peer = %origin, streams = ?resend, "relay journal behind the apply markers: asking the origin again from its head");
        }
        Frame::WelcomeRelay {
            dc: cfg.me.clone(),
            version: negotiated,
            applied: applied_at(marks),
            resend,
            codec,
        }
    } else if negotiated >= 4 {
        Frame::WelcomeMarks {
            dc: cfg.me.clone(),
            version: negotiated,
            applied: applied_at(marks),
            codec,
        }
    } else {
        Frame::Welcome {
            dc: cfg.me.clone(),
            version: negotiated,
            applied: expected
                .iter()
                .map(|((o, st), next)| Applied {
                    origin: o.clone(),
                    store: st.clone(),
                    seq: next - 1,
                })
                .collect(),
            codec,
        }
    };
    write_frame(&mut wr, &welcome).await?;

    // Writer task: acks and heartbeats go out while a batch is being applied.
    let (otx, mut orx) = mpsc::channel::<Frame>(64);
    let hb = Duration::from_millis(s.heartbeat_ms);
    let writer = tokio::spawn(async move {
        loop {
            let f = match tokio::time::timeout(hb, orx.recv()).await {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(_) => Frame::Heartbeat,
            };
            match tokio::time::timeout(dead, write_frame(&mut wr, &f)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
        }
    });
    let w = AbortOnDrop(writer);
    // Progress task: what other DCs applied of the dialer's own streams.
    let _progress = match &cfg.relay {
        Some(r) if negotiated >= 5 => Some(AbortOnDrop(tokio::spawn(report_progress(
            r.vectors.clone(),
            origin.clone(),
            cfg.me.clone(),
            cfg.stores.clone(),
            otx.clone(),
        )))),
        _ => None,
    };
    let rerouted = async {
        match routing.as_mut() {
            Some(r) => crate::routing::changed(r).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(rerouted);
    // Reader task: the next frame is read, decrypted, decompressed and
    // decoded while a batch is being applied (at most one decoded batch
    // waits; see `READ_AHEAD`), so none of that sits between two applies.
    let (ftx, mut frx) = mpsc::channel::<Result<Inbound, InboundError>>(READ_AHEAD);
    let reader = tokio::spawn(read_ahead(
        rd,
        ftx,
        s.max_frame_bytes,
        dead,
        negotiated,
        origin.clone(),
    ));
    let _reader = AbortOnDrop(reader);
    loop {
        let next = tokio::select! {
            r = frx.recv() => match r {
                Some(r) => r?,
                // The reader stops only after sending its error.
                None => return Ok(()),
            },
            _ = shutdown.changed() => return Ok(()),
            _ = &mut rerouted => {
                tracing::info!(peer = %origin, "routing changed: closing the inbound link (the peer redials)");
                return Ok(());
            }
        };
        let (batch_origin, store, frame_bytes, txs) = match next {
            Inbound::Batch {
                origin: o,
                store,
                frame_bytes,
                txs,
            } => (o, store, frame_bytes, txs),
            Inbound::Other(Frame::Heartbeat) => continue,
            Inbound::Other(Frame::Floor {
                origin: o,
                store,
                seq,
            }) if negotiated >= 5 => {
                if let Some(r) = cfg
                    .relay
                    .as_ref()
                    .filter(|_| relaying.as_ref().is_some_and(|x| x.relays_origin(&o)))
                {
                    let moved = r.journal.rebase_relayed(&o, &store, seq).map_err(|e| {
                        ApplyError::Transient(format!("rebasing the relay journal: {e}"))
                    })?;
                    if moved {
                        tracing::info!(origin = %o, %store, seq, "every DC applied the stream up to this seq: the relay journal continues after it");
                    }
                }
                continue;
            }
            Inbound::Other(other) => {
                let reason = format!(
                    "unexpected {} after handshake (protocol {negotiated})",
                    other.name()
                );
                return Err(refuse_and_close(otx, w, reason).await);
            }
        };
        if let Err(reason) = check_batch(cfg, &batch_origin, &store, &txs) {
            return Err(refuse_and_close(otx, w, reason).await);
        }
        let key = (batch_origin.clone(), store.clone());
        let first = txs.first().map(|t| t.seq).unwrap_or(0);
        // The stream's next expected seq, reading the marker if unknown.
        let want = match expected.get(&key) {
            Some(n) => Ok(*n),
            None => applier
                .applied(&batch_origin, &store)
                .await
                .map(|a| a.seq + 1),
        };
        let result = match want {
            Ok(want) if first > want && failed.contains(&key) => {
                // Most likely a batch sent before this stream failed (the
                // sender ignores the report then, as it already gave up on
                // that batch); if it is the sender's retry, the store's
                // marker is behind what the sender saw acknowledged, and the
                // report keeps the stream paused with the reason below.
                tracing::debug!(origin = %batch_origin, %store, first, want, "batch does not follow the applied seq");
                let f = Frame::StoreFailed {
                    origin: batch_origin,
                    store,
                    definite: true,
                    reason: gap_reason(&key, first, want),
                    seq: first,
                };
                if otx.send(f).await.is_err() {
                    return Ok(());
                }
                continue;
            }
            Ok(want) if first > want => {
                // Not after a failure: the store's marker is behind what the
                // sender believes was applied (the marker was reset, or the
                // store restored from an older backup). Applying would skip
                // seqs.
                Err(ApplyError::Definite(gap_reason(&key, first, want)))
            }
            Ok(_)
                if relaying
                    .as_ref()
                    .is_some_and(|x| x.relays_origin(&batch_origin)) =>
            {
                // Journaled for the other DCs first, then applied: an
                // acknowledged batch is in both; after a crash between
                // the two, the origin resends from the marker and the
                // journal skips what it holds.
                match relay_append(cfg.relay.as_ref(), txs).await {
                    Ok(txs) => {
                        let n = txs.len() as u64;
                        let hlc = lag_hlc(&txs);
                        let last = txs.last().map(|t| t.seq).unwrap_or(0);
                        applier
                            .apply(&batch_origin, &store, txs)
                            .await
                            .map(|seq| (seq, last, n, hlc))
                    }
                    Err(e) => Err(e),
                }
            }
            Ok(_) => {
                let n = txs.len() as u64;
                let hlc = lag_hlc(&txs);
                let last = txs.last().map(|t| t.seq).unwrap_or(0);
                applier
                    .apply(&batch_origin, &store, txs)
                    .await
                    .map(|seq| (seq, last, n, hlc))
            }
            Err(e) => Err(e),
        };
        match result {
            Ok((seq, last, n, hlc)) => {
                failed.remove(&key);
                if let Some(r) = &cfg.relay {
                    r.vectors.report(&cfg.me, &batch_origin, &store, seq);
                }
                // The sink took every transaction of the batch: `seq` is
                // what it committed; parts of a split transaction after it
                // wait, uncommitted, for the batch that ends it.
                expected.insert(key, seq.max(last) + 1);
                events::BatchApplied {
                    peer: &origin,
                    origin: &batch_origin,
                    store: &store,
                    txns: n,
                    bytes: frame_bytes,
                    // A batch of snapshot copies only tells no commit time.
                    lag_ms: if hlc == 0 {
                        0
                    } else {
                        now_ms().saturating_sub(dcsync_core::Hlc(hlc).physical_ms())
                    },
                }
                .emit();
                publish(&cfg.board, &batch_origin, &store, |st| {
                    st.applied_seq = st.applied_seq.max(seq);
                    st.applied_txns += n;
                    st.last_hlc = st.last_hlc.max(hlc);
                    st.applied_at_ms = now_ms();
                    if st.failing.take().is_some() {
                        tracing::info!(origin = %st.origin, store = %st.store, "store applies again");
                    }
                });
                let ack = if negotiated >= 2 {
                    Frame::Ack {
                        origin: batch_origin,
                        store,
                        seq,
                    }
                } else {
                    Frame::LegacyAck { store, seq }
                };
                if otx.send(ack).await.is_err() {
                    return Ok(());
                }
            }
            Err(e) if negotiated == 1 => match e {
                ApplyError::Definite(reason) => {
                    let _ = refuse_and_close(otx, w, reason.clone()).await;
                    return Err(ApplyError::Definite(reason).into());
                }
                e => return Err(e.into()),
            },
            Err(e) => {
                // Protocol 2: only this stream pauses.
                let definite = !matches!(e, ApplyError::Transient(_));
                let reason = e.to_string();
                events::ApplyFailed {
                    peer: &origin,
                    origin: &batch_origin,
                    store: &store,
                    definite,
                    bytes: frame_bytes,
                }
                .emit();
                expected.remove(&key);
                failed.insert(key);
                publish(&cfg.board, &batch_origin, &store, |st| {
                    let since = match &st.failing {
                        Some((old, _, since)) if *old == reason => {
                            tracing::debug!(origin = %batch_origin, %store, %reason, "store still cannot apply");
                            *since
                        }
                        _ => {
                            tracing::warn!(origin = %batch_origin, %store, definite, %reason,
                                "store cannot apply this origin's changes: only this stream pauses; the sender retries it");
                            now_ms()
                        }
                    };
                    st.failing = Some((reason.clone(), definite, since));
                });
                let f = Frame::StoreFailed {
                    origin: batch_origin,
                    store,
                    definite,
                    reason,
                    seq: first,
                };
                if otx.send(f).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// Decoded batches the reader task may hold ready beyond the one being
/// applied (each up to `batch_max_bytes` on the wire, several times that
/// decoded).
const READ_AHEAD: usize = 1;

/// What the reader task hands to the apply loop, in the order read.
enum Inbound {
    /// A batch frame, decoded: its origin (the peer's own for protocol 1),
    /// store, size on the wire (bytes) and transactions.
    Batch {
        origin: String,
        store: String,
        frame_bytes: u64,
        txs: Vec<dcsync_core::Transaction>,
    },
    /// Any other frame, as read.
    Other(Frame),
}

/// Reads frames from `rd` and sends them to the apply loop, batch frames
/// already unpacked ([`crate::frame::unpack_batch`]), until the loop is
/// gone or an error (sent as the last item): a stall of `dead` (no bytes,
/// [`InboundError::Stalled`]) or a frame that cannot be read or decoded.
/// `peer` is the dialer's DC, the origin of protocol-1 batches.
async fn read_ahead(
    mut rd: tokio::io::ReadHalf<crate::tls::LinkStream>,
    ftx: mpsc::Sender<Result<Inbound, InboundError>>,
    max_frame_bytes: usize,
    dead: Duration,
    negotiated: u32,
    peer: String,
) {
    // A batch that does not decode names its stream: the sender forwards
    // stored journal records without decoding them, so a damaged record
    // is first seen here.
    let unpack = |origin: String, store: String, codec, raw_len, data: Vec<u8>| {
        match crate::frame::unpack_batch(codec, raw_len, &data, max_frame_bytes, negotiated) {
            Ok(txs) => Ok(Inbound::Batch {
                origin,
                store,
                frame_bytes: data.len() as u64,
                txs,
            }),
            Err(FrameError::Malformed(m)) => Err(InboundError::from(FrameError::Malformed(
                format!("batch of {origin}/{store}: {m}"),
            ))),
            Err(e) => Err(e.into()),
        }
    };
    loop {
        let item = match crate::frame::read_frame_progress(&mut rd, max_frame_bytes, dead).await {
            Err(FrameError::Stalled(_)) => Err(InboundError::Stalled(dead.as_millis() as u64)),
            Err(e) => Err(e.into()),
            Ok(Frame::Batch {
                origin,
                store,
                codec,
                raw_len,
                data,
            }) if negotiated >= 2 => unpack(origin, store, codec, raw_len, data),
            Ok(Frame::LegacyBatch {
                store,
                codec,
                raw_len,
                data,
            }) if negotiated == 1 => unpack(peer.clone(), store, codec, raw_len, data),
            Ok(f) => Ok(Inbound::Other(f)),
        };
        let last = item.is_err();
        if ftx.send(item).await.is_err() || last {
            return;
        }
    }
}

/// The greatest HLC of `txs` that tells a commit time, for lag figures
/// (0: none does): a snapshot copy is stamped at the start of time
/// ([`dcsync_core::connector::SNAPSHOT_COMMIT_MS`]), not when it was written.
fn lag_hlc(txs: &[dcsync_core::Transaction]) -> u64 {
    txs.iter()
        .map(|t| t.hlc)
        .filter(|h| h.physical_ms() > dcsync_core::connector::SNAPSHOT_COMMIT_MS)
        .map(|h| h.0)
        .max()
        .unwrap_or(0)
}

/// Journals a batch of another origin in the relay journal (one durable
/// commit, off the async task) and wakes the senders; gives the batch back.
async fn relay_append(
    relay: Option<&Relay>,
    txs: Vec<dcsync_core::Transaction>,
) -> Result<Vec<dcsync_core::Transaction>, ApplyError> {
    let Some(r) = relay else {
        return Ok(txs);
    };
    let journal = r.journal.clone();
    let (txs, res) = tokio::task::spawn_blocking(move || {
        let res = journal.append_relayed(&txs);
        (txs, res)
    })
    .await
    .map_err(|e| ApplyError::Transient(format!("relay journal task failed: {e}")))?;
    match res {
        Ok(_) => {
            r.appended.send_modify(|n| *n += 1);
            Ok(txs)
        }
        Err(e @ dcsync_journal::JournalError::Gap { .. }) => Err(ApplyError::Definite(format!(
            "relay journal: {e} (the sender skipped seqs it did not declare applied everywhere)"
        ))),
        Err(e) => Err(ApplyError::Transient(format!("relay journal: {e}"))),
    }
}

/// Sends [`Frame::Progress`] to the dialer `dialer` whenever what this
/// agent knows other DCs applied of the dialer's own streams advances
/// (checked at most once a second).
async fn report_progress(
    vectors: Arc<crate::vectors::AppliedVectors>,
    dialer: String,
    me: String,
    stores: Vec<String>,
    otx: mpsc::Sender<Frame>,
) {
    let mut changed = vectors.watch();
    let mut sent: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    loop {
        for store in &stores {
            let applied: Vec<(String, u64)> = vectors
                .of(&dialer, store)
                .into_iter()
                .filter(|(dc, _)| *dc != dialer && *dc != me)
                .collect();
            if applied.is_empty() || sent.get(store) == Some(&applied) {
                continue;
            }
            let f = Frame::Progress {
                origin: dialer.clone(),
                store: store.clone(),
                applied: applied.clone(),
            };
            if otx.send(f).await.is_err() {
                return;
            }
            sent.insert(store.clone(), applied);
        }
        if changed.changed().await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Apply markers as a protocol-4+ welcome lists them.
fn applied_at(
    marks: BTreeMap<(String, String), dcsync_core::connector::AppliedMark>,
) -> Vec<AppliedAt> {
    marks
        .into_iter()
        .map(|((o, st), m)| AppliedAt {
            origin: o,
            store: st,
            seq: m.seq,
            epoch: m.epoch,
            position: m.position,
        })
        .collect()
}

/// Why a batch starting at `first` cannot be applied to a store whose
/// marker says `want` is next.
fn gap_reason(key: &(String, String), first: u64, want: u64) -> String {
    format!(
        "batch of {}/{} starts at seq {first} but the store's apply marker says seq {want} is the next to apply: \
         the marker was reset or the store restored from an older backup; applying would skip seqs {want}..{}",
        key.0,
        key.1,
        first - 1
    )
}

/// Updates the board entry of `(origin, store)`.
fn publish(board: &InboundBoard, origin: &str, store: &str, f: impl FnOnce(&mut InboundStream)) {
    if let Ok(mut b) = board.lock() {
        let e = b
            .entry((origin.to_string(), store.to_string()))
            .or_insert_with(|| InboundStream {
                origin: origin.to_string(),
                store: store.to_string(),
                ..Default::default()
            });
        f(e);
    }
}

/// Why a batch from `origin` cannot be applied, if it cannot: an unknown
/// store, a transaction of another origin or store, or seqs that are not
/// dense and ascending (a gap would be skipped silently by the marker).
fn check_batch(
    cfg: &ReceiverConfig,
    origin: &str,
    store: &str,
    txs: &[dcsync_core::Transaction],
) -> Result<(), String> {
    if !cfg.stores.iter().any(|s| s == store) {
        return Err(format!("unknown store {store:?}"));
    }
    if origin == cfg.me {
        return Err(format!(
            "batch of this dc's own changes ({origin}/{store}): they would echo back"
        ));
    }
    if !cfg.peers.iter().any(|p| p == origin) {
        return Err(format!("batch of unknown origin dc {origin:?}"));
    }
    if let Some(bad) = txs.iter().find(|t| t.origin != origin || t.store != store) {
        return Err(format!(
            "batch from {origin} for {store} holds a transaction of origin {} store {}",
            bad.origin, bad.store
        ));
    }
    if let Some(pair) = txs.windows(2).find(|p| p[1].seq != p[0].seq + 1) {
        return Err(format!(
            "batch seqs are not dense: {} follows {}",
            pair[1].seq, pair[0].seq
        ));
    }
    Ok(())
}

/// Sends `Refused{reason}` as the last frame, lets the writer flush it, and
/// returns the error that closes the connection.
async fn refuse_and_close(
    otx: mpsc::Sender<Frame>,
    mut w: AbortOnDrop,
    reason: String,
) -> InboundError {
    let _ = otx
        .send(Frame::Refused {
            reason: reason.clone(),
        })
        .await;
    drop(otx);
    let _ = tokio::time::timeout(Duration::from_secs(2), &mut w.0).await;
    InboundError::Refused(reason)
}
