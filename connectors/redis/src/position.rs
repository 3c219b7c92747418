//! The Redis source position: replication id and offset.

use dcsync_core::connector::{ConnectorError, Position};
use serde::{Deserialize, Serialize};

/// Where the replica stands in the primary's replication stream.
///
/// Encoded as JSON in [`Position::bytes`]. `offset` is the primary's
/// replication offset (bytes of the stream, as in `INFO replication`
/// `master_repl_offset`) of the last byte consumed; resuming sends
/// `PSYNC <replid> <offset + 1>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplPosition {
    /// 40-character replication id of the primary.
    pub replid: String,
    /// Replication offset of the last byte consumed.
    pub offset: u64,
    /// `true` while the events of a full sync (the RDB) are still being
    /// emitted: such a position cannot be continued, a restart from it does a
    /// new full sync (the RDB commands recreate keys, so this converges).
    #[serde(default)]
    pub snapshot: bool,
}

impl ReplPosition {
    /// Encodes into the agent's opaque position.
    pub fn to_position(&self) -> Position {
        Position {
            bytes: serde_json::to_vec(self).unwrap_or_default(),
            display: format!(
                "redis {} offset {}{}",
                self.replid,
                self.offset,
                if self.snapshot {
                    " (full sync in progress)"
                } else {
                    ""
                }
            ),
        }
    }

    /// Decodes a position written by [`ReplPosition::to_position`].
    pub fn from_position(p: &Position) -> Result<Self, ConnectorError> {
        serde_json::from_slice(&p.bytes).map_err(|e| {
            ConnectorError::Definite(format!(
                "resume position {:?} is not a redis position: {e}",
                p.display
            ))
        })
    }
}
