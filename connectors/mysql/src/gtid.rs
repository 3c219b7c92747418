//! MariaDB global transaction ids and the GTID state a source position
//! carries, so that the source can resume on another server of the same
//! replication topology (a promoted replica, the other master of a
//! dual-master pair) after the DC's primary switched.
//!
//! # Shapes
//! - A [`Gtid`] is `domain-server-seq` (`0-1-42`): the replication domain,
//!   the `server_id` of the server that first committed the transaction,
//!   and its sequence number in the domain.
//! - A [`GtidState`] holds the last GTID per domain, the form of MariaDB's
//!   `@@gtid_binlog_pos` and of `@slave_connect_state`: `0-1-42,1-2-7`,
//!   sorted by domain, at most one GTID per domain. The empty state is the
//!   empty string.
//!
//! # Tracking
//! The source seeds the state at its start position (`BINLOG_GTID_POS(file,
//! offset)`, read right after `SHOW MASTER STATUS` on a first start, or of
//! the stored file + offset when an older position has no state) and
//! records the GTID of every transaction it reads ([`GtidState::record`]);
//! the state after a transaction therefore names, for every domain, the last
//! transaction at or before the position. Resuming with it as
//! `@slave_connect_state` makes the server send exactly the transactions
//! after it, on whichever server of the topology has them.
//!
//! MySQL 8 GTID sets (`uuid:1-42`) are not tracked: MySQL positions keep
//! only the last transaction's GTID, for operators, and resume by file +
//! offset (see `docs/mysql.md`).

use std::collections::BTreeMap;
use std::fmt;

/// One MariaDB GTID, `domain-server-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gtid {
    /// Replication domain (`gtid_domain_id`).
    pub domain: u32,
    /// `server_id` of the server that committed the transaction first.
    pub server: u32,
    /// Sequence number within the domain.
    pub seq: u64,
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

impl std::str::FromStr for Gtid {
    type Err = String;

    /// Parses `domain-server-seq` (decimal; no spaces inside).
    fn from_str(s: &str) -> Result<Gtid, String> {
        let mut parts = s.split('-');
        let (Some(d), Some(srv), Some(seq), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("{s:?} is not a MariaDB GTID (domain-server-seq)"));
        };
        let num = |what: &str, v: &str| -> Result<u64, String> {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{s:?}: {what} {v:?} is not a decimal number"));
            }
            v.parse::<u64>()
                .map_err(|e| format!("{s:?}: {what} {v:?}: {e}"))
        };
        let domain = u32::try_from(num("domain", d)?)
            .map_err(|_| format!("{s:?}: domain {d} is above 2^32-1"))?;
        let server = u32::try_from(num("server id", srv)?)
            .map_err(|_| format!("{s:?}: server id {srv} is above 2^32-1"))?;
        Ok(Gtid {
            domain,
            server,
            seq: num("sequence number", seq)?,
        })
    }
}

/// The last MariaDB GTID per replication domain (see the module docs):
/// what `@@gtid_binlog_pos` shows and `@slave_connect_state` takes.
///
/// Serialised (JSON) as its display string, `0-1-42,1-2-7`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidState {
    by_domain: BTreeMap<u32, Gtid>,
}

impl GtidState {
    /// Whether the state names no transaction (a server without GTIDs, or
    /// one that never committed anything).
    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }

    /// Records `gtid` as the last transaction of its domain (replaces the
    /// domain's previous entry, whatever its server or seq: the binlog's
    /// order is the truth).
    pub fn record(&mut self, gtid: Gtid) {
        self.by_domain.insert(gtid.domain, gtid);
    }

    /// The last GTID of `domain`, if any.
    pub fn get(&self, domain: u32) -> Option<Gtid> {
        self.by_domain.get(&domain).copied()
    }

    /// The GTIDs, by domain.
    pub fn iter(&self) -> impl Iterator<Item = Gtid> + '_ {
        self.by_domain.values().copied()
    }

    /// Whether a reader at this state has read everything up to `other`:
    /// for every domain of `other`, this state has the domain with a
    /// sequence number at least as high. GTIDs of one domain are numbered
    /// in commit order on every server of a replication topology, so this
    /// compares states read from different servers of it (unlike binlog
    /// file + offset, which are per server).
    pub fn covers(&self, other: &GtidState) -> bool {
        other
            .by_domain
            .iter()
            .all(|(d, g)| self.by_domain.get(d).is_some_and(|mine| mine.seq >= g.seq))
    }

    /// Parses the `@@gtid_binlog_pos` form: GTIDs separated by commas
    /// (spaces and newlines around them are ignored, as the server may print
    /// them), at most one per domain; the empty string is the empty state.
    ///
    /// Errors: a message naming the malformed GTID or the repeated domain.
    pub fn parse(s: &str) -> Result<GtidState, String> {
        let mut st = GtidState::default();
        for part in s.split(',').map(str::trim) {
            if part.is_empty() {
                if s.trim().is_empty() {
                    continue;
                }
                return Err(format!("{s:?}: empty GTID in the list"));
            }
            let g: Gtid = part.parse()?;
            if st.by_domain.insert(g.domain, g).is_some() {
                return Err(format!(
                    "{s:?}: domain {} appears twice (a GTID position has one GTID per domain)",
                    g.domain
                ));
            }
        }
        Ok(st)
    }
}

impl fmt::Display for GtidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.by_domain.values().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{g}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for GtidState {
    type Err = String;

    fn from_str(s: &str) -> Result<GtidState, String> {
        GtidState::parse(s)
    }
}

impl serde::Serialize for GtidState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for GtidState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<GtidState, D::Error> {
        let s = String::deserialize(d)?;
        GtidState::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Decodes the body of a MariaDB GTID event (type 162): seq_no (u64 LE),
/// domain_id (u32 LE), flags (u8), ...; the server id is the event
/// header's. `None` if the body is too short.
pub(crate) fn decode_gtid_event(data: &[u8], server_id: u32) -> Option<Gtid> {
    let seq = u64::from_le_bytes(data.get(0..8)?.try_into().ok()?);
    let domain = u32::from_le_bytes(data.get(8..12)?.try_into().ok()?);
    data.get(12)?;
    Some(Gtid {
        domain,
        server: server_id,
        seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(s: &str) -> GtidState {
        GtidState::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parses_and_prints_gtid_binlog_pos() {
        let s = st("1-2-7,0-1-42");
        assert_eq!(s.to_string(), "0-1-42,1-2-7", "sorted by domain");
        assert_eq!(
            s.get(1),
            Some(Gtid {
                domain: 1,
                server: 2,
                seq: 7
            })
        );
        assert_eq!(st(" 0-1-42,\n1-2-7 "), s, "spaces and newlines ignored");
        assert!(st("").is_empty());
        assert_eq!(st("").to_string(), "");
        assert_eq!(
            st("4294967295-4294967295-18446744073709551615").to_string(),
            "4294967295-4294967295-18446744073709551615"
        );
    }

    #[test]
    fn rejects_malformed_states() {
        for bad in [
            "0-1",
            "0-1-2-3",
            "a-1-2",
            "0-1-",
            "0--1-2",
            "0-1-42,,1-2-7",
            "0-1-42,0-2-43",
            "4294967296-1-1",
            "0-1-+5",
            "3e11fa47-71ca-11e1-9e33-c80aa9429563:5",
        ] {
            assert!(GtidState::parse(bad).is_err(), "{bad:?} parsed");
        }
        let e = GtidState::parse("0-1-42,0-2-43").err().unwrap_or_default();
        assert!(e.contains("domain 0 appears twice"), "{e}");
    }

    #[test]
    fn tracking_keeps_the_last_gtid_of_every_domain() {
        let mut s = st("0-1-40");
        for g in ["0-1-41", "1-2-1", "0-1-42", "2-9-100", "1-3-2", "0-5-43"] {
            s.record(g.parse().unwrap_or_else(|e: String| panic!("{e}")));
        }
        // Domain 0 moved to server 5 (a new primary), domain 1 to server 3.
        assert_eq!(s.to_string(), "0-5-43,1-3-2,2-9-100");
    }

    #[test]
    fn covers_compares_per_domain_sequence_numbers() {
        let s = st("0-1-42,1-2-7");
        assert!(s.covers(&st("0-1-42,1-2-7")));
        assert!(s.covers(&st("0-1-41")));
        assert!(s.covers(&st("0-3-40,1-2-7")), "server ids do not matter");
        assert!(s.covers(&GtidState::default()));
        assert!(!s.covers(&st("0-1-43")));
        assert!(!s.covers(&st("0-1-42,1-2-8")));
        assert!(!s.covers(&st("0-1-1,2-1-1")), "a domain it has not seen");
    }

    #[test]
    fn serde_as_a_string() {
        let s = st("0-1-42,1-2-7");
        let j = serde_json::to_string(&s).unwrap_or_default();
        assert_eq!(j, "\"0-1-42,1-2-7\"");
        let back: GtidState = serde_json::from_str(&j).unwrap_or_default();
        assert_eq!(back, s);
        assert!(serde_json::from_str::<GtidState>("\"0-x-1\"").is_err());
    }

    #[test]
    fn decodes_gtid_events() {
        let mut body = Vec::new();
        body.extend_from_slice(&42u64.to_le_bytes());
        body.extend_from_slice(&3u32.to_le_bytes());
        body.push(1);
        assert_eq!(
            decode_gtid_event(&body, 7),
            Some(Gtid {
                domain: 3,
                server: 7,
                seq: 42
            })
        );
        assert_eq!(decode_gtid_event(&body[..12], 7), None);
    }
}
