//! Reading the next batch of an origin stream from the journal and packing
//! it for the wire (the sender's blocking half; `sender` runs it off the
//! async task). From protocol 4 on, stored records are forwarded without
//! being decoded (docs/architecture.md, "Transport").

use crate::frame::{Codec, FrameError};
use crate::sender::SessionError;
use dcsync_core::envelope::{record_head, RawBatch, ENVELOPE_VERSION};
use dcsync_journal::Journal;

/// A batch read from the journal and encoded for the wire.
pub(crate) struct Packed {
    pub(crate) first: u64,
    pub(crate) last_seq: u64,
    /// It ends inside a transaction split in parts.
    pub(crate) open: bool,
    pub(crate) n: u64,
    pub(crate) raw_len: u32,
    pub(crate) data: Vec<u8>,
}

/// Reads the next batch of `(origin, store)` after seq `from` (at most
/// `limits = (transactions, bytes)`, at least one transaction) and packs it
/// for protocol `version`. Returns `None` when the journal holds nothing
/// after `from`.
///
/// From protocol 4 on, the stored records are forwarded as they are
/// ([`RawBatch`]): only each record's head is decoded (its seq is checked
/// against the journal key, and the last one's `more` flag ends the batch
/// open or not), which spares the sender a decode and a re-encode of every
/// change. A record of an older envelope version (a journal written by an
/// older release) makes the batch fall back to decoding and re-encoding.
///
/// Errors: [`SessionError::Journal`] for storage errors and a record that
/// does not decode (`Corrupt`, naming the stream and seq);
/// [`SessionError::Frame`] when a batch cannot be encoded.
pub(crate) fn read_batch(
    journal: &Journal,
    origin: &str,
    store: &str,
    from: u64,
    (max_txns, max_bytes): (usize, usize),
    codec: Codec,
    version: u32,
) -> Result<Option<Packed>, SessionError> {
    if crate::frame::envelope_version(version) == ENVELOPE_VERSION {
        let corrupt = |seq: u64, reason: String| dcsync_journal::JournalError::Corrupt {
            origin: origin.to_string(),
            store: store.to_string(),
            seq,
            reason,
        };
        let mut raw = RawBatch::new();
        let (mut first, mut last, mut open, mut bytes) = (0, 0, false, 0usize);
        let mut older = false;
        journal.read_raw(origin, store, from, |seq, record| {
            let head = match record_head(record) {
                Ok(Some(h)) => h,
                Ok(None) => {
                    older = true;
                    return Ok(false);
                }
                Err(e) => return Err(corrupt(seq, e.to_string())),
            };
            if head.seq != seq {
                return Err(corrupt(seq, format!("the record holds seq {}", head.seq)));
            }
            raw.push(record).map_err(|e| corrupt(seq, e.to_string()))?;
            if first == 0 {
                first = seq;
            }
            (last, open) = (seq, head.more);
            bytes += record.len();
            Ok(raw.len() < max_txns as u64 && bytes < max_bytes)
        })?;
        if !older {
            if raw.is_empty() {
                return Ok(None);
            }
            let n = raw.len();
            let encoded = raw
                .finish()
                .map_err(|e| FrameError::Malformed(e.to_string()))?;
            let (raw_len, data) = crate::frame::compress_batch(encoded, codec)?;
            return Ok(Some(Packed {
                first,
                last_seq: last,
                open,
                n,
                raw_len,
                data,
            }));
        }
    }
    let txs = journal.read(origin, store, from, max_txns, max_bytes)?;
    let (Some(first), Some(last)) = (txs.first(), txs.last()) else {
        return Ok(None);
    };
    let (first, last_seq, open) = (first.seq, last.seq, last.more);
    let (raw_len, data) = crate::frame::pack_batch(&txs, codec, version)?;
    Ok(Some(Packed {
        first,
        last_seq,
        open,
        n: txs.len() as u64,
        raw_len,
        data,
    }))
}
