//! Versioned encoding of the change envelope ([`Transaction`]), as stored in
//! the journal and sent in link batches.
//!
//! # Format
//! - **Version 4** (current, [`ENVELOPE_VERSION`]): one tag byte `4`, then
//!   the bincode of the pair (version-3 wire record, origin journal epoch
//!   as a varint `u64`), i.e. the version-3 bytes followed by the epoch
//!   ([`crate::Transaction::epoch`]); a batch is a sequence of such pairs.
//! - **Version 3**: one tag byte `3`, then
//!   the bincode 2 (standard config: little endian, varint integers)
//!   encoding of the wire record in [`v3`] (a single record, [`encode_tx`])
//!   or of a sequence of them (a link batch, [`encode_batch`]). A record
//!   carries a table dictionary (schema, name, columns once per table) and
//!   each row refers to its table by index; an UPDATE's before image holds
//!   only the columns whose value differs from the after image (the rest is
//!   rebuilt from the after image when decoding); a record has the part
//!   index and the `more` flag of a transaction split in parts.
//! - **Version 2**: one tag byte `2`, then the version-1 layout. Written
//!   for protocol-2 peers during a rolling upgrade; it cannot carry a part
//!   of a split transaction ([`EnvelopeError::NotRepresentable`]).
//! - **Version 1** (releases before the origin-keyed journal): the same
//!   bincode encoding with no tag byte. Journal entries of version 1 are
//!   migrated when the journal is opened; version-1 batches are what a
//!   protocol-1 peer sends during a rolling upgrade. Decoded through the
//!   frozen copies of the version-1 types in [`v1`].
//!
//! # Changing the envelope
//! bincode is positional: adding, removing or reordering a field of any type
//! reachable from [`Transaction`] changes the format. To do it, copy today's
//! types into a frozen module `vN` (as [`v1`] is), bump
//! [`ENVELOPE_VERSION`], add the `vN` arm to [`decode_tx`] /
//! [`decode_batch`] with a conversion to the new types, and capture fixtures
//! with the old release (see `crates/journal/tests/fixtures`). Appending a
//! new variant at the end of an enum ([`crate::Payload`], [`crate::Value`])
//! keeps old records readable and needs no new version, but an older agent
//! cannot read records that use it: do it together with a protocol version
//! bump so that old peers are not sent such records.

pub mod v1;
pub mod v3;

use crate::Transaction;

/// The envelope version this agent writes.
pub const ENVELOPE_VERSION: u8 = 4;

/// Upper bound on what the decoder may allocate for one record or batch,
/// bytes.
pub const DECODE_LIMIT: usize = 1 << 30;

/// Envelope encoding errors.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The tag names a version this agent does not know (written by a newer
    /// agent).
    #[error("envelope version {found} is newer than this agent understands (it reads versions 1 to {newest}): upgrade this agent")]
    UnknownVersion {
        /// Tag found.
        found: u8,
        /// Newest version this agent reads.
        newest: u8,
    },
    /// The bytes do not decode as the version they claim.
    #[error("malformed envelope (version {version}): {reason}")]
    Malformed {
        /// Version being decoded.
        version: u8,
        /// Decoder message.
        reason: String,
    },
    /// Encoding failed (a value bincode cannot represent).
    #[error("cannot encode envelope: {0}")]
    Encode(String),
    /// The transaction cannot be written in the older version asked for (a
    /// part of a split transaction for a protocol-2 peer).
    #[error("cannot encode in an older envelope version: {0}")]
    NotRepresentable(String),
}

pub(crate) type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DECODE_LIMIT>,
>;

pub(crate) fn config() -> Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

fn encode_tagged<T: serde::Serialize + ?Sized>(
    value: &T,
    version: u8,
) -> Result<Vec<u8>, EnvelopeError> {
    let mut out = vec![version];
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| EnvelopeError::Encode(e.to_string()))?;
    Ok(out)
}

pub(crate) fn decode_exact<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    version: u8,
) -> Result<T, EnvelopeError> {
    let malformed = |reason: String| EnvelopeError::Malformed { version, reason };
    let (v, used) = bincode::serde::decode_from_slice::<T, _>(bytes, config())
        .map_err(|e| malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(malformed(format!("{} trailing bytes", bytes.len() - used)));
    }
    Ok(v)
}

/// Encodes one transaction as a tagged record of the current version
/// (journal entries).
pub fn encode_tx(tx: &Transaction) -> Result<Vec<u8>, EnvelopeError> {
    encode_tagged(&(v3::TxOut::from_tx(tx), tx.epoch), ENVELOPE_VERSION)
}

/// [`encode_tx`] appended to `out` (no intermediate buffer: the journal
/// writes a record behind its own prefix). Returns the bytes appended.
pub fn encode_tx_into(tx: &Transaction, out: &mut Vec<u8>) -> Result<usize, EnvelopeError> {
    let start = out.len();
    out.push(ENVELOPE_VERSION);
    bincode::serde::encode_into_std_write((v3::TxOut::from_tx(tx), tx.epoch), out, config())
        .map_err(|e| EnvelopeError::Encode(e.to_string()))?;
    Ok(out.len() - start)
}

/// Decodes a tagged record of any known version.
///
/// Errors: [`EnvelopeError::UnknownVersion`] for a newer tag,
/// [`EnvelopeError::Malformed`] for bytes that do not decode.
pub fn decode_tx(bytes: &[u8]) -> Result<Transaction, EnvelopeError> {
    match bytes.split_first() {
        None => Err(EnvelopeError::Malformed {
            version: 0,
            reason: "empty record".into(),
        }),
        Some((&2, rest)) => decode_exact::<v1::Transaction>(rest, 2).map(Transaction::from),
        Some((&3, rest)) => decode_exact::<v3::TxIn>(rest, 3)?.into_tx(),
        Some((&4, rest)) => with_epoch(decode_exact::<(v3::TxIn, u64)>(rest, 4)?),
        Some((&v, _)) => Err(EnvelopeError::UnknownVersion {
            found: v,
            newest: ENVELOPE_VERSION,
        }),
    }
}

/// A version-4 pair as a transaction.
fn with_epoch((tx, epoch): (v3::TxIn, u64)) -> Result<Transaction, EnvelopeError> {
    let mut tx = tx.into_tx()?;
    tx.epoch = epoch;
    Ok(tx)
}

/// Decodes an untagged version-1 record (journal format 1).
pub fn decode_tx_v1(bytes: &[u8]) -> Result<Transaction, EnvelopeError> {
    decode_exact::<v1::Transaction>(bytes, 1).map(Transaction::from)
}

/// Encodes the transactions of a link batch in envelope `version` (1 for a
/// protocol-1 peer: untagged; 2: tagged version-1 layout; 3: the version-3
/// layout, without the journal epoch; 4 and up: the current layout).
///
/// Errors: [`EnvelopeError::NotRepresentable`] when `version` is 1 or 2 and
/// a transaction is a part of a split one.
pub fn encode_batch(txs: &[Transaction], version: u8) -> Result<Vec<u8>, EnvelopeError> {
    match version {
        1 | 2 => {
            let old = txs
                .iter()
                .cloned()
                .map(v1::Transaction::try_from)
                .collect::<Result<Vec<_>, _>>()?;
            if version == 1 {
                bincode::serde::encode_to_vec(&old, config())
                    .map_err(|e| EnvelopeError::Encode(e.to_string()))
            } else {
                encode_tagged(&old, 2)
            }
        }
        3 => {
            let out: Vec<v3::TxOut<'_>> = txs.iter().map(v3::TxOut::from_tx).collect();
            encode_tagged(&out, 3)
        }
        _ => {
            let out: Vec<(v3::TxOut<'_>, u64)> = txs
                .iter()
                .map(|t| (v3::TxOut::from_tx(t), t.epoch))
                .collect();
            encode_tagged(&out, ENVELOPE_VERSION)
        }
    }
}

/// The leading fields of a current-version record ([`encode_tx`]), read
/// without decoding its changes: what a sender needs to forward the stored
/// bytes as they are ([`RawBatch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHead<'a> {
    /// Origin DC.
    pub origin: &'a str,
    /// Store name.
    pub store: &'a str,
    /// Origin seq.
    pub seq: u64,
    /// Whether more parts of the same transaction follow.
    pub more: bool,
}

/// The borrowed prefix of the version-3 wire record (field order of
/// [`v3::TxOut`] up to `more`).
#[derive(serde::Deserialize)]
struct HeadIn<'a> {
    origin: &'a str,
    store: &'a str,
    seq: u64,
    #[allow(dead_code)]
    hlc: u64,
    #[allow(dead_code)]
    position: &'a str,
    #[allow(dead_code)]
    commit_ts_ms: u64,
    #[allow(dead_code)]
    part: u32,
    more: bool,
}

/// Reads the head of a record written by [`encode_tx`] in the current
/// version. Returns `Ok(None)` for a record of an older version (the caller
/// decodes it with [`decode_tx`] instead).
///
/// Errors: [`EnvelopeError::UnknownVersion`] for a newer tag,
/// [`EnvelopeError::Malformed`] when the head does not decode.
pub fn record_head(record: &[u8]) -> Result<Option<RecordHead<'_>>, EnvelopeError> {
    match record.split_first() {
        Some((&ENVELOPE_VERSION, rest)) => {
            let (h, _) = bincode::serde::borrow_decode_from_slice::<HeadIn<'_>, _>(rest, config())
                .map_err(|e| EnvelopeError::Malformed {
                    version: ENVELOPE_VERSION,
                    reason: format!("record head: {e}"),
                })?;
            Ok(Some(RecordHead {
                origin: h.origin,
                store: h.store,
                seq: h.seq,
                more: h.more,
            }))
        }
        Some((&v, _)) if v > ENVELOPE_VERSION => Err(EnvelopeError::UnknownVersion {
            found: v,
            newest: ENVELOPE_VERSION,
        }),
        None => Err(EnvelopeError::Malformed {
            version: 0,
            reason: "empty record".into(),
        }),
        Some(_) => Ok(None),
    }
}

/// A link batch of the current envelope version built from stored records
/// without decoding them.
///
/// A batch of version 4 is the tag byte, the bincode length of the sequence
/// (a varint `u64`) and the records' bytes after their own tag byte, one
/// after another: exactly what [`encode_batch`] writes for the decoded
/// transactions, so a receiver cannot tell the two apart. Only records of
/// the current version may be pushed ([`record_head`] tells).
#[derive(Debug, Default)]
pub struct RawBatch {
    body: Vec<u8>,
    n: u64,
}

impl RawBatch {
    /// An empty batch.
    pub fn new() -> RawBatch {
        RawBatch::default()
    }

    /// Appends a record of the current version (tag byte included).
    ///
    /// Errors: [`EnvelopeError::NotRepresentable`] for a record of another
    /// version.
    pub fn push(&mut self, record: &[u8]) -> Result<(), EnvelopeError> {
        match record.split_first() {
            Some((&ENVELOPE_VERSION, rest)) => {
                self.body.extend_from_slice(rest);
                self.n += 1;
                Ok(())
            }
            other => Err(EnvelopeError::NotRepresentable(format!(
                "a raw batch holds version-{ENVELOPE_VERSION} records, not version {}",
                other.map_or(0, |(v, _)| *v)
            ))),
        }
    }

    /// Records pushed so far.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The batch bytes (as [`encode_batch`] with [`ENVELOPE_VERSION`]).
    pub fn finish(self) -> Result<Vec<u8>, EnvelopeError> {
        let mut out = Vec::with_capacity(self.body.len() + 10);
        out.push(ENVELOPE_VERSION);
        bincode::serde::encode_into_std_write(self.n, &mut out, config())
            .map_err(|e| EnvelopeError::Encode(e.to_string()))?;
        out.extend_from_slice(&self.body);
        Ok(out)
    }
}

/// Decodes a link batch sent in envelope `version` (1: untagged; 2 and up:
/// the tag byte decides).
pub fn decode_batch(bytes: &[u8], version: u8) -> Result<Vec<Transaction>, EnvelopeError> {
    if version == 1 {
        return decode_exact::<Vec<v1::Transaction>>(bytes, 1)
            .map(|v| v.into_iter().map(Transaction::from).collect());
    }
    match bytes.split_first() {
        None => Err(EnvelopeError::Malformed {
            version,
            reason: "empty batch".into(),
        }),
        Some((&2, rest)) => decode_exact::<Vec<v1::Transaction>>(rest, 2)
            .map(|v| v.into_iter().map(Transaction::from).collect()),
        Some((&3, rest)) => decode_exact::<Vec<v3::TxIn>>(rest, 3)?
            .into_iter()
            .map(v3::TxIn::into_tx)
            .collect(),
        Some((&4, rest)) => decode_exact::<Vec<(v3::TxIn, u64)>>(rest, 4)?
            .into_iter()
            .map(with_epoch)
            .collect(),
        Some((&v, _)) => Err(EnvelopeError::UnknownVersion {
            found: v,
            newest: ENVELOPE_VERSION,
        }),
    }
}

#[cfg(test)]
mod tests;
