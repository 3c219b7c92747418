//! The Redis source position: replication id and offset.

use dcsync_core::connector::{ConnectorError, Position};
use serde::{Deserialize, Serialize};

/// Suffix of [`ReplPosition::to_position`]'s display while a full sync's
/// RDB is still being emitted.
const SNAPSHOT_SUFFIX: &str = " (full sync in progress)";

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
    /// Encodes into the agent's opaque position. The display form is
    /// `redis <replid> offset <offset>`, followed by
    /// ` (full sync in progress)` for a snapshot position;
    /// [`ReplPosition::parse_display`] reads it back.
    pub fn to_position(&self) -> Position {
        Position {
            bytes: serde_json::to_vec(self).unwrap_or_default(),
            display: self.display(),
        }
    }

    /// The display form of [`ReplPosition::to_position`].
    pub fn display(&self) -> String {
        format!(
            "redis {} offset {}{}",
            self.replid,
            self.offset,
            if self.snapshot { SNAPSHOT_SUFFIX } else { "" }
        )
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

    /// Parses the display form that [`ReplPosition::to_position`] prints
    /// (`redis 8f1c…e2 offset 4711`, or with ` (full sync in progress)`),
    /// e.g. the position an apply marker or a peer's status reports, so
    /// that an agent can resume from it. Leading and trailing whitespace is
    /// ignored; everything else must match exactly.
    ///
    /// Errors: [`ConnectorError::Definite`] naming the text and what is
    /// wrong (not a Redis position, no replication id, an offset that is
    /// not a decimal `u64`, trailing words).
    pub fn parse_display(text: &str) -> Result<ReplPosition, ConnectorError> {
        let bad = |why: &str| {
            ConnectorError::Definite(format!(
                "{text:?} is not a redis position (expected \"redis <replid> offset <n>\"): {why}"
            ))
        };
        let trimmed = text.trim();
        let (body, snapshot) = match trimmed.strip_suffix(SNAPSHOT_SUFFIX) {
            Some(b) => (b, true),
            None => (trimmed, false),
        };
        let mut words = body.split_whitespace();
        match words.next() {
            Some("redis") => {}
            Some(w) => return Err(bad(&format!("starts with {w:?}, not \"redis\""))),
            None => return Err(bad("empty")),
        }
        let replid = match words.next() {
            Some("offset") | None => return Err(bad("no replication id")),
            Some(r) => r.to_string(),
        };
        if words.next() != Some("offset") {
            return Err(bad("no \"offset\" after the replication id"));
        }
        let offset = match words.next() {
            None => return Err(bad("no offset")),
            Some(n) => n
                .parse::<u64>()
                .map_err(|e| bad(&format!("offset {n:?}: {e}")))?,
        };
        if let Some(extra) = words.next() {
            return Err(bad(&format!("unexpected {extra:?} after the offset")));
        }
        Ok(ReplPosition {
            replid,
            offset,
            snapshot,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "8e3f2c0a2b9d4c4e9f1a6b7c8d9e0f1a2b3c4d5e";

    #[test]
    fn display_round_trips() {
        for (offset, snapshot) in [(0, false), (4711, false), (u64::MAX, false), (12, true)] {
            let p = ReplPosition {
                replid: ID.into(),
                offset,
                snapshot,
            };
            let shown = p.to_position().display;
            assert_eq!(ReplPosition::parse_display(&shown).ok(), Some(p), "{shown}");
        }
    }

    #[test]
    fn display_has_the_documented_shape() {
        let p = ReplPosition {
            replid: ID.into(),
            offset: 42,
            snapshot: false,
        };
        assert_eq!(p.to_position().display, format!("redis {ID} offset 42"));
        let p = ReplPosition::parse_display(&format!(
            "  redis {ID} offset 42 (full sync in progress)\n"
        ));
        assert!(p.is_ok_and(|p| p.snapshot && p.offset == 42));
    }

    #[test]
    fn bad_displays_name_the_problem() {
        let cases = [
            ("", "empty"),
            ("mysql-bin.000001:4", "not \"redis\""),
            ("redis", "no replication id"),
            ("redis offset 5", "no replication id"),
            (&format!("redis {ID}") as &str, "no \"offset\""),
            (&format!("redis {ID} at 5"), "no \"offset\""),
            (&format!("redis {ID} offset"), "no offset"),
            (&format!("redis {ID} offset -1"), "offset \"-1\""),
            (&format!("redis {ID} offset 18446744073709551616"), "offset"),
            (&format!("redis {ID} offset 5 more"), "unexpected \"more\""),
        ];
        for (text, why) in cases {
            match ReplPosition::parse_display(text) {
                Err(ConnectorError::Definite(m)) => {
                    assert!(m.contains(why), "{text:?}: {m}");
                    assert!(m.contains("is not a redis position"), "{m}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }
}
