//! Versioned encoding of the change envelope ([`Transaction`]), as stored in
//! the journal and sent in link batches.
//!
//! # Format
//! - **Version 2** (current, [`ENVELOPE_VERSION`]): one tag byte `2`, then
//!   the bincode 2 (standard config: little endian, varint integers)
//!   encoding of [`Transaction`] (a single record, [`encode_tx`]) or of
//!   `Vec<Transaction>` (a link batch, [`encode_batch`]).
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

use crate::Transaction;

/// The envelope version this agent writes.
pub const ENVELOPE_VERSION: u8 = 2;

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
}

pub(crate) type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DECODE_LIMIT>,
>;

pub(crate) fn config() -> Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

fn encode_tagged<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EnvelopeError> {
    let mut out = vec![ENVELOPE_VERSION];
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
    encode_tagged(tx)
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
        Some((&2, rest)) => decode_exact(rest, 2),
        Some((&v, _)) => Err(EnvelopeError::UnknownVersion {
            found: v,
            newest: ENVELOPE_VERSION,
        }),
    }
}

/// Decodes an untagged version-1 record (journal format 1).
pub fn decode_tx_v1(bytes: &[u8]) -> Result<Transaction, EnvelopeError> {
    decode_exact::<v1::Transaction>(bytes, 1).map(Transaction::from)
}

/// Encodes the transactions of a link batch in envelope `version` (1 for a
/// protocol-1 peer: untagged; 2: tagged).
pub fn encode_batch(txs: &[Transaction], version: u8) -> Result<Vec<u8>, EnvelopeError> {
    match version {
        1 => {
            let old: Vec<v1::Transaction> =
                txs.iter().cloned().map(v1::Transaction::from).collect();
            bincode::serde::encode_to_vec(&old, config())
                .map_err(|e| EnvelopeError::Encode(e.to_string()))
        }
        _ => encode_tagged(txs),
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
        Some((&2, rest)) => decode_exact(rest, 2),
        Some((&v, _)) => Err(EnvelopeError::UnknownVersion {
            found: v,
            newest: ENVELOPE_VERSION,
        }),
    }
}

#[cfg(test)]
mod tests;
