//! The receiving half of a link: accepts peers, checks who they are, applies
//! their batches through the [`Applier`] and acknowledges only what is
//! applied.
//!
//! A bad peer (garbage bytes, oversized or malformed frame, wrong cluster,
//! unknown DC, wrong protocol version) only loses its own connection, with a
//! log line naming the reason; the listener and every other link go on.

use crate::frame::{read_frame, write_frame, Codec, Frame, FrameError, PROTOCOL_VERSION};
use crate::sender::frame_name;
use crate::{Applier, ApplyError};
use dcsync_core::topology::LinkSettings;
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
            if version != PROTOCOL_VERSION {
                return Err(refuse(
                    &mut wr,
                    format!("incompatible protocol version {version}: this agent speaks version {PROTOCOL_VERSION}"),
                )
                .await);
            }
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
            return Err(refuse(
                &mut wr,
                format!("expected Hello, got {}", frame_name(&other)),
            )
            .await);
        }
    };
    let mut applied = Vec::new();
    for store in &cfg.stores {
        match applier.applied(&origin, store).await {
            Ok(seq) => applied.push((store.clone(), seq)),
            Err(e) => return Err(refuse(&mut wr, format!("store {store} not ready: {e}")).await),
        }
    }
    tracing::info!(peer = %origin, %addr, ?applied, "inbound link accepted");
    write_frame(
        &mut wr,
        &Frame::Welcome {
            dc: cfg.me.clone(),
            applied,
            codec,
        },
    )
    .await?;

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
    loop {
        let f = tokio::select! {
            r = tokio::time::timeout(dead, read_frame(&mut rd, s.max_frame_bytes)) => {
                r.map_err(|_| InboundError::Stalled(s.dead_after_ms))??
            }
            _ = shutdown.changed() => return Ok(()),
        };
        match f {
            Frame::Batch {
                store,
                codec: batch_codec,
                raw_len,
                data,
            } => {
                let txs =
                    crate::frame::unpack_batch(batch_codec, raw_len, &data, s.max_frame_bytes)?;
                drop(data);
                if let Err(reason) = check_batch(cfg, &origin, &store, &txs) {
                    return Err(refuse_and_close(otx, w, reason).await);
                }
                match applier.apply(&origin, &store, txs).await {
                    Ok(seq) => {
                        if otx.send(Frame::Ack { store, seq }).await.is_err() {
                            return Ok(());
                        }
                    }
                    Err(ApplyError::Definite(reason)) => {
                        let _ = refuse_and_close(otx, w, reason.clone()).await;
                        return Err(ApplyError::Definite(reason).into());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Frame::Heartbeat => {}
            other => {
                let reason = format!("unexpected {} after handshake", frame_name(&other));
                return Err(refuse_and_close(otx, w, reason).await);
            }
        }
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

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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
