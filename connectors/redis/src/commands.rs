//! Command-level knowledge shared by the source and the sink: where the keys
//! of a write command are, the key/database filter, the apply marker, and the
//! commands that recreate an RDB key.

use crate::config::RedisOptions;
use crate::rdb::{RdbEntry, RdbValue, StreamId};
use crate::MARKER_PREFIX;

/// Largest number of elements put into one RPUSH/SADD/ZADD/HSET when
/// recreating an RDB value.
pub const ELEMENTS_PER_COMMAND: usize = 512;

/// Upper-cased command name.
pub fn name(args: &[Vec<u8>]) -> Vec<u8> {
    args.first()
        .map(|a| a.to_ascii_uppercase())
        .unwrap_or_default()
}

/// How a command's keys are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLayout {
    /// No key (`FUNCTION`, `FLUSHALL`, `SWAPDB`, ...).
    None,
    /// Every argument from index 1 is a key (`DEL`, `UNLINK`): filterable
    /// one key at a time.
    AllKeys,
    /// `key value key value ...` from index 1 (`MSET`): filterable per pair.
    KeyValuePairs,
    /// Keys at these argument indexes; the command is kept or dropped whole.
    At(Vec<usize>),
}

/// Key layout of a propagated write command (a table of common commands;
/// anything unknown is assumed to have its key at index 1).
pub fn key_layout(args: &[Vec<u8>]) -> KeyLayout {
    let n = args.len();
    let numkeys_at = |i: usize| -> Vec<usize> {
        let k = args
            .get(i)
            .and_then(|a| std::str::from_utf8(a).ok())
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(0);
        (i + 1..(i + 1 + k).min(n)).collect()
    };
    match name(args).as_slice() {
        b"SELECT" | b"MULTI" | b"EXEC" | b"DISCARD" | b"PING" | b"REPLCONF" | b"FLUSHDB"
        | b"FLUSHALL" | b"FUNCTION" | b"SCRIPT" | b"SWAPDB" | b"PUBLISH" | b"SPUBLISH" => {
            KeyLayout::None
        }
        b"DEL" | b"UNLINK" | b"TOUCH" => KeyLayout::AllKeys,
        b"MSET" | b"MSETNX" => KeyLayout::KeyValuePairs,
        b"SINTERSTORE" | b"SUNIONSTORE" | b"SDIFFSTORE" | b"PFMERGE" => {
            KeyLayout::At((1..n).collect())
        }
        b"RENAME" | b"RENAMENX" | b"SMOVE" | b"LMOVE" | b"BLMOVE" | b"RPOPLPUSH"
        | b"BRPOPLPUSH" | b"COPY" | b"GEOSEARCHSTORE" | b"ZRANGESTORE" => {
            KeyLayout::At((1..n.min(3)).collect())
        }
        b"ZUNIONSTORE" | b"ZINTERSTORE" | b"ZDIFFSTORE" => {
            let mut v = vec![1];
            v.extend(numkeys_at(2));
            KeyLayout::At(v)
        }
        b"BITOP" => KeyLayout::At((2..n).collect()),
        b"LMPOP" | b"ZMPOP" => KeyLayout::At(numkeys_at(1)),
        b"EVAL" | b"EVALSHA" | b"FCALL" => KeyLayout::At(numkeys_at(2)),
        b"XGROUP" => KeyLayout::At(if n > 2 { vec![2] } else { vec![] }),
        _ if n > 1 => KeyLayout::At(vec![1]),
        _ => KeyLayout::None,
    }
}

/// Whether `key` is an apply-marker key.
pub fn is_marker_key(key: &[u8]) -> bool {
    key.starts_with(MARKER_PREFIX.as_bytes())
}

/// `(origin, seq)` if the command is the sink's marker write
/// `SET <MARKER_PREFIX><origin> <seq>`.
pub fn marker_of(args: &[Vec<u8>]) -> Option<(String, u64)> {
    if args.len() < 3 || name(args) != b"SET" || !is_marker_key(&args[1]) {
        return None;
    }
    let origin = String::from_utf8_lossy(&args[1][MARKER_PREFIX.len()..]).into_owned();
    let seq = crate::sink::parse_marker(std::str::from_utf8(&args[2]).ok()?)?.seq;
    Some((origin, seq))
}

/// What the filter decided for one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Ship these arguments (possibly with filtered-out keys removed); the
    /// unit key is the first remaining key, if any.
    Keep {
        /// Arguments to ship.
        args: Vec<Vec<u8>>,
        /// First key (for the unit), `None` for keyless commands.
        first_key: Option<Vec<u8>>,
    },
    /// Not shipped.
    Drop,
}

/// The key/database filter of a store: `databases` (empty = all) and
/// `key_prefixes` (empty = all); marker keys never pass.
#[derive(Debug, Clone)]
pub struct KeyFilter {
    prefixes: Vec<Vec<u8>>,
    databases: Vec<u32>,
}

impl KeyFilter {
    /// Filter of a store with `options`.
    pub fn new(options: &RedisOptions) -> Self {
        KeyFilter {
            prefixes: options
                .key_prefixes
                .iter()
                .map(|p| p.as_bytes().to_vec())
                .collect(),
            databases: options.databases.clone(),
        }
    }

    /// Whether database `db` is replicated.
    pub fn db_passes(&self, db: u32) -> bool {
        self.databases.is_empty() || self.databases.contains(&db)
    }

    /// Whether `key` is replicated (prefix match, not a marker).
    pub fn key_passes(&self, key: &[u8]) -> bool {
        !is_marker_key(key)
            && (self.prefixes.is_empty() || self.prefixes.iter().any(|p| key.starts_with(p)))
    }

    /// Filters one propagated write command running in `db`. Keyless
    /// server-wide commands (`FUNCTION`, `FLUSHALL`, `SCRIPT`) ignore the
    /// database filter; `PUBLISH`/`SPUBLISH` (not data) are dropped.
    pub fn command(&self, db: u32, args: &[Vec<u8>]) -> Verdict {
        let nm = name(args);
        let global = matches!(nm.as_slice(), b"FUNCTION" | b"FLUSHALL" | b"SCRIPT");
        if matches!(nm.as_slice(), b"PUBLISH" | b"SPUBLISH") || (!global && !self.db_passes(db)) {
            return Verdict::Drop;
        }
        match key_layout(args) {
            KeyLayout::None => Verdict::Keep {
                args: args.to_vec(),
                first_key: None,
            },
            KeyLayout::AllKeys => {
                let mut out = vec![args[0].clone()];
                out.extend(args[1..].iter().filter(|k| self.key_passes(k)).cloned());
                self.keep_if_keys(out)
            }
            KeyLayout::KeyValuePairs => {
                let mut out = vec![args[0].clone()];
                for kv in args[1..].chunks(2) {
                    if kv.len() == 2 && self.key_passes(&kv[0]) {
                        out.extend(kv.iter().cloned());
                    }
                }
                self.keep_if_keys(out)
            }
            KeyLayout::At(idx) => {
                let keys: Vec<&Vec<u8>> = idx.iter().filter_map(|i| args.get(*i)).collect();
                match keys.first() {
                    Some(k) if keys.iter().any(|k| is_marker_key(k)) || !self.key_passes(k) => {
                        Verdict::Drop
                    }
                    first => Verdict::Keep {
                        args: args.to_vec(),
                        first_key: first.map(|k| (*k).clone()),
                    },
                }
            }
        }
    }

    fn keep_if_keys(&self, out: Vec<Vec<u8>>) -> Verdict {
        match out.get(1) {
            Some(k) => Verdict::Keep {
                first_key: Some(k.clone()),
                args: out,
            },
            None => Verdict::Drop,
        }
    }
}

fn id_text(id: StreamId) -> Vec<u8> {
    format!("{}-{}", id.0, id.1).into_bytes()
}

/// Score text that parses back to exactly `s` (`inf`/`-inf` as Redis spells
/// them).
pub fn score_text(s: f64) -> Vec<u8> {
    if s == f64::INFINITY {
        b"inf".to_vec()
    } else if s == f64::NEG_INFINITY {
        b"-inf".to_vec()
    } else {
        format!("{s}").into_bytes()
    }
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// Commands that recreate one RDB key from scratch: `DEL` (so that a repeated
/// full sync converges instead of appending), the type's creating commands in
/// chunks of [`ELEMENTS_PER_COMMAND`], and `PEXPIREAT` for a TTL. Streams:
/// `XADD` per entry with its id, `XSETID` with `ENTRIESADDED`/`MAXDELETEDID`,
/// `XGROUP CREATE ... ENTRIESREAD` and `XGROUP CREATECONSUMER` (pending entry
/// lists are not carried).
pub fn recreate(e: &RdbEntry) -> Vec<Vec<Vec<u8>>> {
    let k = &e.key;
    let mut out: Vec<Vec<Vec<u8>>> = Vec::new();
    let chunked = |out: &mut Vec<Vec<Vec<u8>>>, cmd: &str, items: Vec<Vec<Vec<u8>>>| {
        for chunk in items.chunks(ELEMENTS_PER_COMMAND) {
            let mut c = vec![b(cmd), k.clone()];
            for item in chunk {
                c.extend(item.iter().cloned());
            }
            out.push(c);
        }
    };
    match &e.value {
        RdbValue::String(v) => out.push(vec![b("SET"), k.clone(), v.clone()]),
        RdbValue::List(v) => {
            out.push(vec![b("DEL"), k.clone()]);
            chunked(
                &mut out,
                "RPUSH",
                v.iter().map(|x| vec![x.clone()]).collect(),
            );
        }
        RdbValue::Set(v) => {
            out.push(vec![b("DEL"), k.clone()]);
            chunked(
                &mut out,
                "SADD",
                v.iter().map(|x| vec![x.clone()]).collect(),
            );
        }
        RdbValue::SortedSet(v) => {
            out.push(vec![b("DEL"), k.clone()]);
            let items = v.iter().map(|(m, s)| vec![score_text(*s), m.clone()]);
            chunked(&mut out, "ZADD", items.collect());
        }
        RdbValue::Hash(v) => {
            out.push(vec![b("DEL"), k.clone()]);
            let items = v.iter().map(|(f, x)| vec![f.clone(), x.clone()]);
            chunked(&mut out, "HSET", items.collect());
        }
        RdbValue::Stream(s) => {
            out.push(vec![b("DEL"), k.clone()]);
            for entry in &s.entries {
                let mut c = vec![b("XADD"), k.clone(), id_text(entry.id)];
                for (f, v) in &entry.fields {
                    c.push(f.clone());
                    c.push(v.clone());
                }
                out.push(c);
            }
            if s.entries.is_empty() {
                // Create the empty stream: add and delete a placeholder entry.
                let id = id_text(if s.last_id == (0, 0) {
                    (0, 1)
                } else {
                    s.last_id
                });
                out.push(vec![b("XADD"), k.clone(), id.clone(), b("f"), b("v")]);
                out.push(vec![b("XDEL"), k.clone(), id]);
            }
            let mut setid = vec![b("XSETID"), k.clone(), id_text(s.last_id)];
            if let Some(n) = s.entries_added {
                setid.extend([b("ENTRIESADDED"), n.to_string().into_bytes()]);
            }
            if let Some(m) = s.max_deleted_id {
                setid.extend([b("MAXDELETEDID"), id_text(m)]);
            }
            out.push(setid);
            for g in &s.groups {
                let mut c = vec![
                    b("XGROUP"),
                    b("CREATE"),
                    k.clone(),
                    g.name.clone(),
                    id_text(g.last_id),
                ];
                if let Some(n) = g.entries_read.filter(|n| *n != u64::MAX) {
                    c.extend([b("ENTRIESREAD"), n.to_string().into_bytes()]);
                }
                out.push(c);
                for consumer in &g.consumers {
                    out.push(vec![
                        b("XGROUP"),
                        b("CREATECONSUMER"),
                        k.clone(),
                        g.name.clone(),
                        consumer.clone(),
                    ]);
                }
            }
        }
    }
    if let Some(ms) = e.expire_ms {
        out.push(vec![b("PEXPIREAT"), k.clone(), ms.to_string().into_bytes()]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<Vec<u8>> {
        s.iter().map(|x| x.as_bytes().to_vec()).collect()
    }

    fn filter(prefixes: &[&str]) -> KeyFilter {
        KeyFilter {
            prefixes: prefixes.iter().map(|p| p.as_bytes().to_vec()).collect(),
            databases: vec![0],
        }
    }

    #[test]
    fn multi_key_commands_are_split() {
        let f = filter(&["a:"]);
        assert_eq!(
            f.command(0, &v(&["DEL", "a:1", "b:1", "a:2"])),
            Verdict::Keep {
                args: v(&["DEL", "a:1", "a:2"]),
                first_key: Some(b"a:1".to_vec())
            }
        );
        assert_eq!(
            f.command(0, &v(&["MSET", "b:1", "x", "a:1", "y"])),
            Verdict::Keep {
                args: v(&["MSET", "a:1", "y"]),
                first_key: Some(b"a:1".to_vec())
            }
        );
        assert_eq!(f.command(0, &v(&["SET", "b:1", "x"])), Verdict::Drop);
        assert_eq!(f.command(1, &v(&["SET", "a:1", "x"])), Verdict::Drop);
        assert_eq!(
            f.command(0, &v(&["SET", "dcsync:marker:bj", "1"])),
            Verdict::Drop
        );
    }

    #[test]
    fn marker_parse() {
        assert_eq!(
            marker_of(&v(&["set", "dcsync:marker:bj", "42"])),
            Some(("bj".to_string(), 42))
        );
        assert_eq!(marker_of(&v(&["SET", "other", "42"])), None);
    }
}
