//! The source position: binlog file + byte offset after a transaction, plus
//! (MariaDB) the server's GTID state after it, or (MySQL) the GTID of that
//! transaction for operators.
//!
//! Encoded as JSON into [`Position::bytes`] (only this connector reads it);
//! [`Position::display`] is `mysql-bin.000003:4711 gtid=0-1-42,1-2-7` and
//! carries everything needed to resume: [`BinlogPosition::parse_display`]
//! reads it back.

use crate::gtid::GtidState;
use dcsync_core::connector::{ConnectorError, Position};
use serde::{Deserialize, Serialize};

/// A binlog position: the byte offset in `file` just after a committed
/// transaction (the `log_pos` field of its XID / COMMIT event header, i.e.
/// where the next event starts), and where the server has GTIDs, the GTID
/// state after that transaction.
///
/// `file` and `pos` belong to the server that was tailed when the position
/// was taken; `gtid_state` is valid on every server of its replication
/// topology, which is what lets the source resume after a primary switch
/// (docs/mysql.md, "Resumption and primary switches").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogPosition {
    /// Binlog file name as listed by `SHOW BINARY LOGS` (`mysql-bin.000003`).
    pub file: String,
    /// Byte offset in `file` (>= 4).
    pub pos: u64,
    /// MySQL: GTID of the last transaction before `pos` (`uuid:n`), for
    /// operators; resumption uses `file` and `pos`. MariaDB positions
    /// written before GTID resumption had the last `domain-server-seq`
    /// here; newer ones leave it out and carry `gtid_state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<String>,
    /// MariaDB: the last GTID of every replication domain at `pos` (the
    /// `@@gtid_binlog_pos` form, `0-1-42,1-2-7`). When not empty, the
    /// source resumes by GTID. Empty for MySQL, for a MariaDB server that
    /// never logged a GTID, and in positions stored before this field
    /// existed (serde default), which resume by `file` + `pos`.
    #[serde(default, skip_serializing_if = "GtidState::is_empty")]
    pub gtid_state: GtidState,
}

impl BinlogPosition {
    /// A position at `file`:`pos` without GTIDs.
    pub fn new(file: impl Into<String>, pos: u64) -> BinlogPosition {
        BinlogPosition {
            file: file.into(),
            pos,
            ..BinlogPosition::default()
        }
    }

    /// Encodes into the agent's opaque [`Position`].
    pub fn to_position(&self) -> Position {
        // Serialising a struct of strings and integers cannot fail.
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        Position {
            bytes,
            display: self.to_string(),
        }
    }

    /// Decodes a [`Position`] written by [`BinlogPosition::to_position`]
    /// (by this version or an older one: the GTID state is optional).
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
        bp.validate(&p.display)
    }

    /// Parses what [`Display`](std::fmt::Display) prints:
    /// `<file>:<offset>`, optionally followed by ` gtid=<gtids>`, where
    /// `<gtids>` is a MariaDB GTID state (`0-1-42,1-2-7`, one per domain;
    /// read into [`BinlogPosition::gtid_state`]) or a MySQL GTID
    /// (`3e11fa47-71ca-11e1-9e33-c80aa9429563:23`, read into
    /// [`BinlogPosition::gtid`]). `parse_display(&p.to_string())` gives `p`
    /// back for every position the source reports. A display string of an
    /// older release (`gtid=` with the last MariaDB GTID only) parses as a
    /// one-domain state, which is the full state on a one-domain server.
    ///
    /// Errors: [`ConnectorError::Definite`] naming the part that is not
    /// such a position (no `:offset`, an offset below 4, an unknown word, a
    /// malformed GTID).
    pub fn parse_display(s: &str) -> Result<BinlogPosition, ConnectorError> {
        let bad = |why: String| {
            ConnectorError::Definite(format!("{s:?} is not a MySQL binlog position: {why}"))
        };
        let mut words = s.split_whitespace();
        let head = words.next().ok_or_else(|| bad("it is empty".into()))?;
        let (file, pos) = head
            .rsplit_once(':')
            .ok_or_else(|| bad(format!("{head:?} is not <file>:<offset>")))?;
        let pos: u64 = pos
            .parse()
            .map_err(|e| bad(format!("offset {pos:?}: {e}")))?;
        let mut bp = BinlogPosition::new(file, pos);
        for w in words {
            let Some(g) = w.strip_prefix("gtid=") else {
                return Err(bad(format!("unknown part {w:?} (expected gtid=...)")));
            };
            if !bp.gtid_state.is_empty() || bp.gtid.is_some() {
                return Err(bad("gtid= appears twice".into()));
            }
            if g.contains(':') {
                // MySQL uuid:n (informational only).
                bp.gtid = Some(g.to_string());
            } else {
                bp.gtid_state = GtidState::parse(g).map_err(bad)?;
            }
        }
        bp.validate(s)
    }

    fn validate(self, shown: &str) -> Result<BinlogPosition, ConnectorError> {
        if self.file.is_empty() || self.pos < 4 {
            return Err(ConnectorError::Definite(format!(
                "stored resume position {shown:?} is invalid (empty file or offset < 4)"
            )));
        }
        Ok(self)
    }
}

impl BinlogPosition {
    /// Whether this position is at or after `file`:`pos` of the same
    /// server's binlog. Files compare by their numeric suffix
    /// (`mysql-bin.000010` after `mysql-bin.000009`), then offsets.
    /// Meaningless across servers: see [`BinlogPosition::reached`].
    pub fn at_or_after(&self, file: &str, pos: u64) -> bool {
        fn index(f: &str) -> u64 {
            f.rsplit('.')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        }
        (index(&self.file), self.pos) >= (index(file), pos)
    }

    /// Whether a source at this position has read everything up to `end`
    /// (a server's binlog end, read with its GTID state). When this state
    /// has every domain of `end`'s they are compared by GTID
    /// ([`GtidState::covers`]), which holds across a primary switch: a
    /// position of the old primary is never taken for one of the new
    /// primary's. Otherwise by file and offset
    /// ([`BinlogPosition::at_or_after`]), valid only while the source and
    /// `end` are the same server: MySQL 8, servers without GTIDs, and a
    /// domain the source has not seen yet (a new one on the same server, or
    /// a state that could not be seeded at the start).
    pub fn reached(&self, end: &BinlogPosition) -> bool {
        let by_gtid = !end.gtid_state.is_empty()
            && end
                .gtid_state
                .iter()
                .all(|g| self.gtid_state.get(g.domain).is_some());
        if by_gtid {
            self.gtid_state.covers(&end.gtid_state)
        } else {
            self.at_or_after(&end.file, end.pos)
        }
    }
}

impl BinlogPosition {
    /// Parses the position of a backup as an operator gives it (`dcsync
    /// bootstrap --backup-position`):
    ///
    /// - `<file>:<offset>`, optionally followed by ` gtid=<list>`
    ///   ([`BinlogPosition::parse_display`]);
    /// - a MariaDB GTID list alone, `0-1-42,1-2-7` (what `mariadb-dump
    ///   --master-data --gtid` writes as `gtid_slave_pos`): `file` empty;
    /// - mariabackup's `xtrabackup_binlog_info` line, `<file> <offset>
    ///   [<gtid list>]` (tabs or spaces).
    ///
    /// Errors: [`ConnectorError::Definite`] naming what is not such a
    /// position.
    pub fn parse_backup(s: &str) -> Result<BinlogPosition, ConnectorError> {
        let words: Vec<&str> = s.split_whitespace().collect();
        match words.as_slice() {
            [list] if !list.contains(':') => {
                let gtid_state = GtidState::parse(list).map_err(|e| {
                    ConnectorError::Definite(format!(
                        "{s:?} is neither <file>:<offset> nor a MariaDB GTID list: {e}"
                    ))
                })?;
                if gtid_state.is_empty() {
                    return Err(ConnectorError::Definite(
                        "the backup position is empty".into(),
                    ));
                }
                Ok(BinlogPosition {
                    gtid_state,
                    ..BinlogPosition::default()
                })
            }
            [file, offset, rest @ ..]
                if !file.contains(':')
                    && rest.len() <= 1
                    && offset.bytes().all(|b| b.is_ascii_digit()) =>
            {
                let line = match rest {
                    [list] => format!("{file}:{offset} gtid={list}"),
                    _ => format!("{file}:{offset}"),
                };
                BinlogPosition::parse_display(&line)
            }
            _ => BinlogPosition::parse_display(s),
        }
    }

    /// Whether a transaction ending at this position (a journaled one) is
    /// held by a backup taken at `backup` ([`BinlogPosition::parse_backup`]):
    /// by GTID when both name GTIDs (the backup's state covers this one's
    /// every domain: valid on every server of the replication topology),
    /// else by file and offset (valid only on the server the backup was
    /// taken from).
    ///
    /// Errors: [`ConnectorError::Definite`] when the backup gives only GTIDs
    /// and this position has none (MySQL 8, a server without GTIDs).
    pub fn held_by(&self, backup: &BinlogPosition) -> Result<bool, ConnectorError> {
        if !backup.gtid_state.is_empty() && !self.gtid_state.is_empty() {
            return Ok(backup.gtid_state.covers(&self.gtid_state));
        }
        if backup.file.is_empty() {
            return Err(ConnectorError::Definite(format!(
                "the journaled position {self} has no GTID state to compare with the backup's                  GTIDs {}: give the backup's binlog <file>:<offset>",
                backup.gtid_state
            )));
        }
        Ok(backup.at_or_after(&self.file, self.pos))
    }
}

impl std::fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)?;
        if !self.gtid_state.is_empty() {
            write!(f, " gtid={}", self.gtid_state)?;
        } else if let Some(g) = &self.gtid {
            write!(f, " gtid={g}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(s: &str) -> GtidState {
        GtidState::parse(s).unwrap()
    }

    #[test]
    fn positions_compare_by_file_number_then_offset() {
        let p = BinlogPosition::new("mysql-bin.000010", 400);
        assert!(p.at_or_after("mysql-bin.000010", 400));
        assert!(p.at_or_after("mysql-bin.000010", 399));
        assert!(!p.at_or_after("mysql-bin.000010", 401));
        assert!(p.at_or_after("mysql-bin.000009", 99_999));
        assert!(!p.at_or_after("mysql-bin.000011", 4));
    }

    #[test]
    fn reached_compares_by_gtid_when_both_have_one() {
        let old_primary = BinlogPosition {
            gtid_state: st("0-1-42"),
            ..BinlogPosition::new("mysql-bin.000009", 90_000)
        };
        // The new primary's end: a smaller file and offset, but a later
        // transaction. By file + offset the source would look past it.
        let new_end = BinlogPosition {
            gtid_state: st("0-2-43"),
            ..BinlogPosition::new("mysql-bin.000001", 500)
        };
        assert!(old_primary.at_or_after(&new_end.file, new_end.pos));
        assert!(!old_primary.reached(&new_end));
        let caught_up = BinlogPosition {
            gtid_state: st("0-2-43"),
            ..BinlogPosition::new("mysql-bin.000001", 500)
        };
        assert!(caught_up.reached(&new_end));
        // Without GTIDs on either side: file + offset.
        assert!(BinlogPosition::new("mysql-bin.000002", 4).reached(&new_end));
        assert!(!BinlogPosition::new("mysql-bin.000001", 499).reached(&new_end));
        // A domain the source has not seen: file + offset (same server).
        let two_domains = BinlogPosition {
            gtid_state: st("0-2-43,1-2-1"),
            ..BinlogPosition::new("mysql-bin.000001", 700)
        };
        assert!(!caught_up.reached(&two_domains));
        assert!(BinlogPosition {
            pos: 700,
            ..caught_up.clone()
        }
        .reached(&two_domains));
    }

    #[test]
    fn round_trip_and_display() {
        let p = BinlogPosition {
            gtid_state: st("0-1-42,1-2-7"),
            ..BinlogPosition::new("mysql-bin.000003", 4711)
        };
        let enc = p.to_position();
        assert_eq!(enc.display, "mysql-bin.000003:4711 gtid=0-1-42,1-2-7");
        assert_eq!(BinlogPosition::from_position(&enc).ok(), Some(p.clone()));
        assert_eq!(BinlogPosition::parse_display(&enc.display).ok(), Some(p));
        let bad = Position {
            bytes: b"xx".to_vec(),
            display: "x".into(),
        };
        assert!(BinlogPosition::from_position(&bad).is_err());
    }

    #[test]
    fn positions_stored_before_gtid_states_still_decode() {
        // The JSON of the previous release: the last GTID only.
        let old = Position {
            bytes: br#"{"file":"mysql-bin.000003","pos":4711,"gtid":"0-1-42"}"#.to_vec(),
            display: "mysql-bin.000003:4711 gtid=0-1-42".into(),
        };
        let bp = BinlogPosition::from_position(&old).unwrap();
        assert_eq!(bp.gtid.as_deref(), Some("0-1-42"));
        assert!(bp.gtid_state.is_empty(), "resumes by file + offset");
        assert_eq!(bp.to_position().display, old.display);
        let json = String::from_utf8(
            BinlogPosition {
                gtid_state: st("0-1-42"),
                ..BinlogPosition::new("f.000001", 4)
            }
            .to_position()
            .bytes,
        )
        .unwrap();
        assert_eq!(json, r#"{"file":"f.000001","pos":4,"gtid_state":"0-1-42"}"#);
    }

    #[test]
    fn parse_display_round_trips_every_form() {
        for p in [
            BinlogPosition::new("mysql-bin.000001", 4),
            BinlogPosition {
                gtid_state: st("0-1-42"),
                ..BinlogPosition::new("mysql-bin.000003", 4711)
            },
            BinlogPosition {
                gtid_state: st("0-1-42,1-2-7,4294967295-3-18446744073709551615"),
                ..BinlogPosition::new("db1-bin.123456", 1 << 40)
            },
            BinlogPosition {
                gtid: Some("3e11fa47-71ca-11e1-9e33-c80aa9429563:23".into()),
                ..BinlogPosition::new("binlog.000002", 157)
            },
        ] {
            let shown = p.to_string();
            assert_eq!(
                BinlogPosition::parse_display(&shown).ok(),
                Some(p),
                "{shown}"
            );
        }
        // An older release's MariaDB display: the last GTID, read as a
        // one-domain state.
        let old = BinlogPosition::parse_display("mysql-bin.000003:4711 gtid=0-1-42").unwrap();
        assert_eq!(old.gtid_state, st("0-1-42"));
    }

    #[test]
    fn backup_positions_in_every_form() {
        let gtids = BinlogPosition::parse_backup("0-1-42,1-2-7").unwrap();
        assert_eq!(
            (gtids.file.as_str(), gtids.gtid_state.clone()),
            ("", st("0-1-42,1-2-7"))
        );
        let file = BinlogPosition::parse_backup("mysql-bin.000003:4711").unwrap();
        assert_eq!(file, BinlogPosition::new("mysql-bin.000003", 4711));
        let both = BinlogPosition::parse_backup("mysql-bin.000003:4711 gtid=0-1-42").unwrap();
        assert_eq!(both.gtid_state, st("0-1-42"));
        // mariabackup's xtrabackup_binlog_info.
        let info = BinlogPosition::parse_backup("mysql-bin.000003\t4711\t0-1-42\n").unwrap();
        assert_eq!(info, both);
        assert_eq!(
            BinlogPosition::parse_backup("mysql-bin.000003 4711").unwrap(),
            file
        );
        for bad in ["", "0-1", "mysql-bin.000003", "f 12 0-1-2 x", "a:b"] {
            assert!(BinlogPosition::parse_backup(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_backup_holds_what_ended_at_or_before_it() {
        let at = |s: &str| BinlogPosition::parse_display(s).unwrap();
        let backup = |s: &str| BinlogPosition::parse_backup(s).unwrap();
        let tx = at("mysql-bin.000003:4711 gtid=0-1-42,1-2-7");
        // By GTID, whatever the file and offset.
        assert!(tx.held_by(&backup("0-1-42,1-2-7")).unwrap());
        assert!(tx.held_by(&backup("0-1-50,1-2-7")).unwrap());
        assert!(!tx.held_by(&backup("0-1-41,1-2-7")).unwrap());
        assert!(
            !tx.held_by(&backup("0-1-42")).unwrap(),
            "domain 1 not in it"
        );
        assert!(tx
            .held_by(&backup("mysql-bin.000001:4 gtid=0-1-42,1-2-7"))
            .unwrap());
        // By file and offset when the backup has no GTIDs.
        assert!(tx.held_by(&backup("mysql-bin.000003:4711")).unwrap());
        assert!(tx.held_by(&backup("mysql-bin.000004:4")).unwrap());
        assert!(!tx.held_by(&backup("mysql-bin.000003:4710")).unwrap());
        // GTIDs only, and a journaled position without any.
        let no_gtid = at("binlog.000002:157");
        assert!(no_gtid.held_by(&backup("binlog.000002:157")).unwrap());
        match no_gtid.held_by(&backup("0-1-42")) {
            Err(ConnectorError::Definite(m)) => assert!(m.contains("<file>:<offset>"), "{m}"),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn parse_display_names_what_is_wrong() {
        for (bad, why) in [
            ("", "empty"),
            ("mysql-bin.000001", "<file>:<offset>"),
            ("mysql-bin.000001:x", "offset"),
            ("mysql-bin.000001:3", "offset < 4"),
            (":100", "empty file"),
            ("mysql-bin.000001:100 pos=3", "unknown part"),
            ("mysql-bin.000001:100 gtid=0-1", "domain-server-seq"),
            ("mysql-bin.000001:100 gtid=0-1-2,0-1-3", "twice"),
            ("mysql-bin.000001:100 gtid=0-1-2 gtid=1-1-2", "twice"),
        ] {
            match BinlogPosition::parse_display(bad) {
                Err(ConnectorError::Definite(m)) => assert!(m.contains(why), "{bad:?}: {m}"),
                r => panic!("{bad:?}: {r:?}"),
            }
        }
    }
}
