//! The source position: binlog file + byte offset after a transaction, plus
//! the GTID of that transaction for operators.
//!
//! Encoded as JSON into [`Position::bytes`] (only this connector reads it);
//! [`Position::display`] is `mysql-bin.000003:4711 gtid=0-1-42`.

use dcsync_core::connector::{ConnectorError, Position};
use serde::{Deserialize, Serialize};

/// A binlog position: the byte offset in `file` just after a committed
/// transaction (the `log_pos` field of its XID / COMMIT event header, i.e.
/// where the next event starts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogPosition {
    /// Binlog file name as listed by `SHOW BINARY LOGS` (`mysql-bin.000003`).
    pub file: String,
    /// Byte offset in `file` (>= 4).
    pub pos: u64,
    /// GTID of the last transaction before `pos`, when the server logs one:
    /// MariaDB `domain-server-seq` (`0-1-42`), MySQL `uuid:n`. Informational;
    /// resumption uses `file` and `pos`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<String>,
}

impl BinlogPosition {
    /// Encodes into the agent's opaque [`Position`].
    pub fn to_position(&self) -> Position {
        // Serialising a struct of strings and integers cannot fail.
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        Position {
            bytes,
            display: self.to_string(),
        }
    }

    /// Decodes a [`Position`] written by [`BinlogPosition::to_position`].
    ///
    /// Errors: [`ConnectorError::Definite`] if the bytes are not such a
    /// position (a journal written by another connector, or corrupted).
    pub fn from_position(p: &Position) -> Result<BinlogPosition, ConnectorError> {
        let bp: BinlogPosition = serde_json::from_slice(&p.bytes).map_err(|e| {
            ConnectorError::Definite(format!(
                "stored resume position {:?} is not a MySQL binlog position: {e}",
                p.display
            ))
        })?;
        if bp.file.is_empty() || bp.pos < 4 {
            return Err(ConnectorError::Definite(format!(
                "stored resume position {:?} is invalid (empty file or offset < 4)",
                p.display
            )));
        }
        Ok(bp)
    }
}

impl BinlogPosition {
    /// Whether this position is at or after `file`:`pos` of the same
    /// server's binlog. Files compare by their numeric suffix
    /// (`mysql-bin.000010` after `mysql-bin.000009`), then offsets.
    pub fn at_or_after(&self, file: &str, pos: u64) -> bool {
        fn index(f: &str) -> u64 {
            f.rsplit('.')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        }
        (index(&self.file), self.pos) >= (index(file), pos)
    }
}

impl std::fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)?;
        if let Some(g) = &self.gtid {
            write!(f, " gtid={g}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_compare_by_file_number_then_offset() {
        let p = BinlogPosition {
            file: "mysql-bin.000010".into(),
            pos: 400,
            gtid: None,
        };
        assert!(p.at_or_after("mysql-bin.000010", 400));
        assert!(p.at_or_after("mysql-bin.000010", 399));
        assert!(!p.at_or_after("mysql-bin.000010", 401));
        assert!(p.at_or_after("mysql-bin.000009", 99_999));
        assert!(!p.at_or_after("mysql-bin.000011", 4));
    }

    #[test]
    fn round_trip_and_display() {
        let p = BinlogPosition {
            file: "mysql-bin.000003".into(),
            pos: 4711,
            gtid: Some("0-1-42".into()),
        };
        let enc = p.to_position();
        assert_eq!(enc.display, "mysql-bin.000003:4711 gtid=0-1-42");
        assert_eq!(BinlogPosition::from_position(&enc).ok(), Some(p));
        let bad = Position {
            bytes: b"xx".to_vec(),
            display: "x".into(),
        };
        assert!(BinlogPosition::from_position(&bad).is_err());
    }
}
