//! Link frames and their wire encoding.
//!
//! On the wire a frame is `len: u32 BE | crc32: u32 BE | body`, where `body`
//! is the bincode 2 (standard config) encoding of [`Frame`], `len` is the body
//! length in bytes and `crc32` is the CRC-32 (IEEE) of the body. A frame
//! longer than the configured limit, a checksum mismatch or a body that does
//! not decode is a [`FrameError`]; the connection is closed, nothing else is
//! affected.

use dcsync_core::Transaction;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Highest protocol version this agent speaks.
///
/// - **1**: one origin per connection (the dialer's own changes): the
///   [`Frame::LegacyWelcome`], [`Frame::LegacyBatch`], [`Frame::LegacyAck`]
///   frames; batches in envelope version 1.
/// - **2**: every batch, ack and applied position names its origin stream
///   `(origin, store)`, so a DC can forward other DCs' changes unchanged and
///   resume any origin's stream ([`Frame::Welcome`], [`Frame::Batch`],
///   [`Frame::Ack`]); a store that cannot apply is reported with
///   [`Frame::StoreFailed`] instead of closing the link; batches in envelope
///   version 2.
/// - **3**: batches in envelope version 3 (table dictionaries, partial
///   before images, transactions split in parts). Frames are those of
///   version 2. A batch may end inside a split transaction; the receiver
///   acknowledges only what it committed, so such batches do not count
///   against the sender's window (see `sender`).
/// - **4**: the receiver answers [`Frame::WelcomeMarks`], which adds to
///   every applied seq the origin journal's epoch and source position
///   recorded with it (a replacement agent resumes from them, and a sender
///   refuses a peer whose marker names a journal it does not continue);
///   batches in envelope version 4 (each record carries its journal
///   epoch).
/// - **5**: relaying (star topology; docs/architecture.md, "Relay and
///   applied vectors"). The receiver answers [`Frame::WelcomeRelay`], which
///   adds the streams a relaying receiver wants resent from below its
///   marker (to fill its relay journal); the receiver sends
///   [`Frame::Progress`] (what other DCs applied of the dialer's own
///   changes, so the dialer keeps them until every DC has them); the sender
///   sends [`Frame::Floor`] before a stream that resumes above what the
///   receiver asked for, because every DC already applied the seqs between.
pub const PROTOCOL_VERSION: u32 = 5;

/// Lowest protocol version this agent speaks (a rolling upgrade from a
/// version-1 release keeps working).
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// Upper bound on what the bincode decoder may allocate for one frame, bytes.
const DECODE_LIMIT: usize = 1 << 30;

/// A message between two agents.
///
/// The dialing agent (the *sender*) opens with [`Frame::Hello`] carrying the
/// highest protocol version it speaks; the listening agent (the
/// *receiver*, which applies) picks `min(dialer's, its own highest)`,
/// refuses versions below its lowest, and answers [`Frame::Welcome`]
/// (version 2 and up), [`Frame::LegacyWelcome`] (version 1) or
/// [`Frame::Refused`]. Then the sender streams batches and the receiver
/// answers each with an ack once it is applied. Either side sends
/// [`Frame::Heartbeat`] when idle.
///
/// **The variant order is the wire format** (bincode encodes the variant
/// index): never reorder or remove a variant; append new ones at the end,
/// behind a protocol version bump.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// First frame of the dialer (every version).
    Hello {
        /// Cluster name from the topology file.
        cluster: String,
        /// The dialer's DC id.
        dc: String,
        /// The highest protocol version the dialer speaks.
        version: u32,
        /// Batch codecs the dialer can send, preferred first.
        codecs: Vec<Codec>,
    },
    /// Protocol 1: the receiver accepted the hello; `applied` is, per store,
    /// the highest seq of the dialer's own changes already applied.
    LegacyWelcome {
        /// The receiver's DC id.
        dc: String,
        /// `(store, applied seq)` pairs.
        applied: Vec<(String, u64)>,
        /// The codec the sender must use for batches.
        codec: Codec,
    },
    /// The peer refuses the connection; the reason names the problem.
    Refused {
        /// Human-readable reason.
        reason: String,
    },
    /// Protocol 1: consecutive transactions of the dialer's own changes to
    /// one store, ascending dense seqs.
    LegacyBatch {
        /// Store name.
        store: String,
        /// How `data` is compressed.
        codec: Codec,
        /// Length of `data` once decompressed, bytes.
        raw_len: u32,
        /// Envelope-version-1 batch, compressed with `codec`.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Protocol 1: everything of the dialer's `store` up to `seq` is applied.
    LegacyAck {
        /// Store name.
        store: String,
        /// Highest applied seq.
        seq: u64,
    },
    /// Liveness; carries nothing.
    Heartbeat,
    /// Protocol 2+: the receiver accepted the hello.
    Welcome {
        /// The receiver's DC id.
        dc: String,
        /// The negotiated protocol version.
        version: u32,
        /// For every origin stream the receiver applies (every other DC ×
        /// every store), the highest origin seq already applied (from its
        /// apply markers): the sender resumes each stream after it.
        applied: Vec<Applied>,
        /// The codec the sender must use for batches.
        codec: Codec,
    },
    /// Protocol 2+: consecutive transactions of one origin stream,
    /// ascending dense origin seqs.
    Batch {
        /// Origin DC of every transaction in it (not necessarily the
        /// dialer: a hub forwards other DCs' changes).
        origin: String,
        /// Store name.
        store: String,
        /// How `data` is compressed.
        codec: Codec,
        /// Length of `data` once decompressed, bytes.
        raw_len: u32,
        /// Envelope batch ([`dcsync_core::envelope::encode_batch`]),
        /// compressed with `codec`; see [`pack_batch`] / [`unpack_batch`].
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Protocol 2+: everything of `(origin, store)` up to `seq` is applied
    /// at the receiver.
    Ack {
        /// Origin DC.
        origin: String,
        /// Store name.
        store: String,
        /// Highest applied origin seq.
        seq: u64,
    },
    /// Protocol 2+: the receiver could not apply a batch of `(origin,
    /// store)`. Only that stream pauses: the sender drops its unacknowledged
    /// batches of the stream and resends from the last ack after a delay
    /// (transient: growing backoff; definite: `backoff_max_ms`); the link
    /// and every other stream keep flowing.
    StoreFailed {
        /// Origin DC.
        origin: String,
        /// Store name.
        store: String,
        /// Whether an operator is needed (schema mismatch, missing table)
        /// rather than a retry (store unreachable, deadlock).
        definite: bool,
        /// What failed, naming the table or command.
        reason: String,
        /// First origin seq of the batch that was not applied. The sender
        /// acts on the report only while that batch is unacknowledged (a
        /// report about a batch it already gave up on is stale).
        seq: u64,
    },
    /// Protocol 4+: the receiver accepted the hello ([`Frame::Welcome`]
    /// with each applied seq's journal epoch and source position).
    WelcomeMarks {
        /// The receiver's DC id.
        dc: String,
        /// The negotiated protocol version.
        version: u32,
        /// For every origin stream the receiver applies, its apply marker.
        applied: Vec<AppliedAt>,
        /// The codec the sender must use for batches.
        codec: Codec,
    },
    /// Protocol 5+: the receiver accepted the hello ([`Frame::WelcomeMarks`]
    /// plus `resend`).
    WelcomeRelay {
        /// The receiver's DC id.
        dc: String,
        /// The negotiated protocol version.
        version: u32,
        /// For every origin stream the receiver applies, its apply marker.
        applied: Vec<AppliedAt>,
        /// Streams to resume after `seq` rather than after the marker: a
        /// relaying receiver (a star's hub) asks again for what its relay
        /// journal lacks, which it applied already (the re-sent seqs are
        /// skipped by its marker and journaled for the other DCs).
        resend: Vec<Applied>,
        /// The codec the sender must use for batches.
        codec: Codec,
    },
    /// Protocol 5+, sender → receiver, before the first batch of a stream
    /// that resumes after `seq` although the receiver asked for less: every
    /// DC has applied `(origin, store)` up to `seq` (that is why the
    /// sender's journal no longer holds those seqs). A relaying receiver
    /// moves its relay journal's head there.
    Floor {
        /// Origin DC.
        origin: String,
        /// Store name.
        store: String,
        /// Every DC applied the stream up to this seq.
        seq: u64,
    },
    /// Protocol 5+, receiver → sender: what other DCs applied of the
    /// sender's own stream `(origin, store)`, as the receiver knows it (a
    /// hub learns it from the acks of the DCs it relays to). The sender
    /// keeps its changes until every DC applied them.
    Progress {
        /// Origin DC (the sender's own).
        origin: String,
        /// Store name.
        store: String,
        /// `(DC, highest origin seq it applied)`.
        applied: Vec<(String, u64)>,
    },
}

impl Frame {
    /// Short name of the frame, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "Hello",
            Frame::LegacyWelcome { .. } => "Welcome (protocol 1)",
            Frame::Refused { .. } => "Refused",
            Frame::LegacyBatch { .. } => "Batch (protocol 1)",
            Frame::LegacyAck { .. } => "Ack (protocol 1)",
            Frame::Heartbeat => "Heartbeat",
            Frame::Welcome { .. } => "Welcome",
            Frame::Batch { .. } => "Batch",
            Frame::Ack { .. } => "Ack",
            Frame::StoreFailed { .. } => "StoreFailed",
            Frame::WelcomeMarks { .. } => "Welcome (protocol 4)",
            Frame::WelcomeRelay { .. } => "Welcome (protocol 5)",
            Frame::Floor { .. } => "Floor",
            Frame::Progress { .. } => "Progress",
        }
    }
}

/// One applied position in [`Frame::Welcome`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Origin DC.
    pub origin: String,
    /// Store name.
    pub store: String,
    /// Highest origin seq applied (0 = none).
    pub seq: u64,
}

/// One apply marker in [`Frame::WelcomeMarks`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedAt {
    /// Origin DC.
    pub origin: String,
    /// Store name.
    pub store: String,
    /// Highest origin seq applied (0 = none).
    pub seq: u64,
    /// Epoch of the origin journal that assigned `seq` (0: unknown).
    pub epoch: u64,
    /// The origin's source position after `seq`, human-readable form
    /// (empty: unknown).
    pub position: String,
}

/// The envelope version of batches in protocol `version`.
pub fn envelope_version(protocol: u32) -> u8 {
    match protocol {
        0 | 1 => 1,
        2 => 2,
        3 => 3,
        _ => dcsync_core::envelope::ENVELOPE_VERSION,
    }
}

/// Batch compression, negotiated in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Codec {
    /// Uncompressed.
    None,
    /// LZ4 block format (lz4_flex), fast enough to never be the bottleneck.
    Lz4,
}

/// Encodes the transactions of a batch in the envelope of protocol
/// `protocol` ([`envelope_version`]) and compresses them; returns
/// `(raw_len, data)` for [`Frame::Batch`] / [`Frame::LegacyBatch`].
pub fn pack_batch(
    txs: &[Transaction],
    codec: Codec,
    protocol: u32,
) -> Result<(u32, Vec<u8>), FrameError> {
    let raw = dcsync_core::envelope::encode_batch(txs, envelope_version(protocol))
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    compress_batch(raw, codec)
}

/// Compresses an encoded envelope batch (from
/// [`dcsync_core::envelope::encode_batch`] or
/// [`dcsync_core::envelope::RawBatch`]); returns `(raw_len, data)` for
/// [`Frame::Batch`].
///
/// Errors: [`FrameError::Oversized`] for a batch above 4 GiB.
pub fn compress_batch(raw: Vec<u8>, codec: Codec) -> Result<(u32, Vec<u8>), FrameError> {
    let raw_len = u32::try_from(raw.len()).map_err(|_| FrameError::Oversized {
        len: raw.len(),
        limit: u32::MAX as usize,
    })?;
    let data = match codec {
        Codec::None => raw,
        Codec::Lz4 => lz4_flex::block::compress(&raw),
    };
    Ok((raw_len, data))
}

/// Decompresses and decodes a batch sent under protocol `protocol`,
/// refusing a `raw_len` above `limit` bytes before allocating.
pub fn unpack_batch(
    codec: Codec,
    raw_len: u32,
    data: &[u8],
    limit: usize,
    protocol: u32,
) -> Result<Vec<Transaction>, FrameError> {
    let raw_len = raw_len as usize;
    if raw_len > limit {
        return Err(FrameError::Oversized {
            len: raw_len,
            limit,
        });
    }
    let raw;
    let bytes: &[u8] = match codec {
        Codec::None => data,
        Codec::Lz4 => {
            raw = lz4_flex::block::decompress(data, raw_len)
                .map_err(|e| FrameError::Malformed(format!("lz4 batch: {e}")))?;
            &raw
        }
    };
    if bytes.len() != raw_len {
        return Err(FrameError::Malformed(format!(
            "batch is {} bytes, header says {raw_len}",
            bytes.len()
        )));
    }
    dcsync_core::envelope::decode_batch(bytes, envelope_version(protocol))
        .map_err(|e| FrameError::Malformed(format!("batch: {e}")))
}

/// Frame errors: each closes the connection it happened on.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Socket error or the peer closed the connection.
    #[error("link i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The length prefix exceeds the limit.
    #[error("oversized frame: {len} bytes, limit is {limit} bytes")]
    Oversized {
        /// Announced length, bytes.
        len: usize,
        /// Configured limit, bytes.
        limit: usize,
    },
    /// The body does not match its checksum.
    #[error("frame checksum mismatch (expected {expected:08x}, got {actual:08x})")]
    Checksum {
        /// CRC from the header.
        expected: u32,
        /// CRC of the body.
        actual: u32,
    },
    /// The body is not a valid frame.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// No byte of the frame moved for this long, ms (the peer or the line
    /// is dead; a large frame that keeps moving never stalls).
    #[error("frame stalled: no byte moved for {0} ms")]
    Stalled(u64),
}

fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DECODE_LIMIT>,
> {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Encodes `frame` with its header (`len | crc32 | body`).
pub fn encode(frame: &Frame) -> Result<Vec<u8>, FrameError> {
    let body = bincode::serde::encode_to_vec(frame, config())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len = u32::try_from(body.len()).map_err(|_| FrameError::Oversized {
        len: body.len(),
        limit: u32::MAX as usize,
    })?;
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes one frame body after checking it against `crc`.
pub fn decode_body(crc: u32, body: &[u8]) -> Result<Frame, FrameError> {
    let actual = crc32fast::hash(body);
    if actual != crc {
        return Err(FrameError::Checksum {
            expected: crc,
            actual,
        });
    }
    let (frame, used) = bincode::serde::decode_from_slice::<Frame, _>(body, config())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes after frame",
            body.len() - used
        )));
    }
    Ok(frame)
}

/// Decodes a complete buffer holding exactly one frame with header; for
/// tests and fuzzing.
pub fn decode(buf: &[u8], limit: usize) -> Result<Frame, FrameError> {
    if buf.len() < 8 {
        return Err(FrameError::Malformed(format!(
            "truncated header: {} bytes",
            buf.len()
        )));
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > limit {
        return Err(FrameError::Oversized { len, limit });
    }
    let crc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let body = &buf[8..];
    if body.len() != len {
        return Err(FrameError::Malformed(format!(
            "truncated frame: {} of {len} bytes",
            body.len()
        )));
    }
    decode_body(crc, body)
}

/// Reads one frame, refusing bodies over `limit` bytes before allocating.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> Result<Frame, FrameError> {
    let mut head = [0u8; 8];
    r.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > limit {
        return Err(FrameError::Oversized { len, limit });
    }
    let crc = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    decode_body(crc, &body)
}

/// [`read_frame`], failing with [`FrameError::Stalled`] when no byte
/// arrives for `stall` (before the frame starts or in its middle): how a
/// dead peer is told apart from a large frame on a slow line.
pub async fn read_frame_progress<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: usize,
    stall: std::time::Duration,
) -> Result<Frame, FrameError> {
    let stalled = |_| FrameError::Stalled(stall.as_millis() as u64);
    let mut head = [0u8; 8];
    tokio::time::timeout(stall, r.read_exact(&mut head))
        .await
        .map_err(stalled)??;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > limit {
        return Err(FrameError::Oversized { len, limit });
    }
    let crc = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let mut body = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = tokio::time::timeout(stall, r.read(&mut body[got..]))
            .await
            .map_err(stalled)??;
        if n == 0 {
            return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        got += n;
    }
    decode_body(crc, &body)
}

/// [`write_frame`], failing with [`FrameError::Stalled`] when no byte can
/// be written for `stall`.
pub async fn write_frame_progress<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: &Frame,
    stall: std::time::Duration,
) -> Result<usize, FrameError> {
    let stalled = |_| FrameError::Stalled(stall.as_millis() as u64);
    let buf = encode(frame)?;
    let mut off = 0;
    while off < buf.len() {
        let end = buf.len().min(off + (256 << 10));
        let n = tokio::time::timeout(stall, w.write(&buf[off..end]))
            .await
            .map_err(stalled)??;
        if n == 0 {
            return Err(FrameError::Io(std::io::ErrorKind::WriteZero.into()));
        }
        off += n;
    }
    tokio::time::timeout(stall, w.flush())
        .await
        .map_err(stalled)??;
    Ok(buf.len())
}

/// Writes one frame and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: &Frame,
) -> Result<usize, FrameError> {
    let buf = encode(frame)?;
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(buf.len())
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
