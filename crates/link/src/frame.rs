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

/// Version of this protocol; peers with another version are refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// Upper bound on what the bincode decoder may allocate for one frame, bytes.
const DECODE_LIMIT: usize = 1 << 30;

/// A message between two agents.
///
/// The dialing agent (the *sender* of its own changes) opens with
/// [`Frame::Hello`]; the listening agent (the *receiver*, which applies them)
/// answers [`Frame::Welcome`] or [`Frame::Refused`]. Then the sender streams
/// [`Frame::Batch`]es and the receiver answers each with an [`Frame::Ack`]
/// once it is applied. Either side sends [`Frame::Heartbeat`] when idle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// First frame of the dialer.
    Hello {
        /// Cluster name from the topology file.
        cluster: String,
        /// The dialer's DC id.
        dc: String,
        /// [`PROTOCOL_VERSION`] of the dialer.
        version: u32,
        /// Batch codecs the dialer can send, preferred first.
        codecs: Vec<Codec>,
    },
    /// The receiver accepted the hello; `applied` is, per store, the highest
    /// seq of the dialer's changes already applied (from the apply markers):
    /// the sender resumes after it.
    Welcome {
        /// The receiver's DC id.
        dc: String,
        /// `(store, applied seq)` pairs.
        applied: Vec<(String, u64)>,
        /// The codec the sender must use for batches.
        codec: Codec,
    },
    /// The peer refuses the connection or a batch; the reason names the problem.
    Refused {
        /// Human-readable reason.
        reason: String,
    },
    /// Consecutive transactions of one store, ascending dense seqs.
    Batch {
        /// Store name.
        store: String,
        /// How `data` is compressed.
        codec: Codec,
        /// Length of `data` once decompressed, bytes.
        raw_len: u32,
        /// bincode 2 (standard) encoding of `Vec<Transaction>`, compressed
        /// with `codec`; see [`pack_batch`] / [`unpack_batch`].
        data: Vec<u8>,
    },
    /// Everything of `store` up to `seq` is applied at the receiver.
    Ack {
        /// Store name.
        store: String,
        /// Highest applied seq.
        seq: u64,
    },
    /// Liveness; carries nothing.
    Heartbeat,
}

/// Batch compression, negotiated in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Codec {
    /// Uncompressed.
    None,
    /// LZ4 block format (lz4_flex), fast enough to never be the bottleneck.
    Lz4,
}

/// Encodes (and compresses) the transactions of a batch; returns
/// `(raw_len, data)` for [`Frame::Batch`].
pub fn pack_batch(txs: &[Transaction], codec: Codec) -> Result<(u32, Vec<u8>), FrameError> {
    let raw = bincode::serde::encode_to_vec(txs, config())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
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

/// Decompresses and decodes a batch, refusing a `raw_len` above `limit`
/// bytes before allocating.
pub fn unpack_batch(
    codec: Codec,
    raw_len: u32,
    data: &[u8],
    limit: usize,
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
    let (txs, used) = bincode::serde::decode_from_slice::<Vec<Transaction>, _>(bytes, config())
        .map_err(|e| FrameError::Malformed(format!("batch: {e}")))?;
    if used != bytes.len() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes after batch",
            bytes.len() - used
        )));
    }
    Ok(txs)
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
