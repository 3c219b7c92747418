//! RDB file parser (versions 1..=12; Redis 7.0 writes version 10, 7.2 writes
//! 11, 7.4 writes 12).
//!
//! Written against the RDB format description
//! (<https://rdb.fnordig.de/file_format.html>) and Redis' `src/rdb.h`,
//! `src/rdb.c`, `src/t_stream.c`. We parse ourselves because the `rdb` crate
//! silently skips streams and `librdb` needs Redis' C parser.
//!
//! Layout: `REDIS` + 4 ASCII version digits, then opcodes until `0xFF`, then
//! (version >= 5) an 8-byte little-endian CRC-64/Jones of everything before
//! it (0 = checksum disabled). The whole file is held in memory.
//!
//! Covered: opcodes AUX, SELECTDB, RESIZEDB, EXPIRETIME (s), EXPIRETIME_MS,
//! FREQ, IDLE, FUNCTION2, SLOT_INFO, EOF; value types string (raw, int, LZF),
//! list (plain, ziplist, quicklist v1 ziplists, quicklist v2 plain/listpack
//! nodes), set (plain, intset, listpack), sorted set (text doubles, binary
//! doubles, ziplist, listpack), hash (plain, zipmap, ziplist, listpack),
//! stream (listpacks v1/v2/v3 with consumer groups, their consumers and PEL
//! sizes). Module values, MODULE_AUX and Redis 7.4 hash-field-TTL types are
//! refused with an error naming them.

use crate::encodings;

/// Errors of the RDB parser.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RdbError {
    /// Structurally invalid or truncated data.
    #[error("corrupt RDB: {0}")]
    Corrupt(String),
    /// Valid RDB with content we cannot turn into commands.
    #[error("unsupported RDB content: {0}")]
    Unsupported(String),
    /// The CRC-64 trailer does not match.
    #[error("RDB checksum mismatch: file says {expected:#018x}, computed {computed:#018x}")]
    Checksum {
        /// Trailer value.
        expected: u64,
        /// Computed over the file.
        computed: u64,
    },
}

/// A (field, value) pair.
pub type Pair = (Vec<u8>, Vec<u8>);

/// A stream entry id `<ms>-<seq>`.
pub type StreamId = (u64, u64);

/// One stream entry.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEntry {
    /// Entry id.
    pub id: StreamId,
    /// Field/value pairs in entry order.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A stream consumer group (PEL contents are counted, not kept).
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerGroup {
    /// Group name.
    pub name: Vec<u8>,
    /// Last delivered id.
    pub last_id: StreamId,
    /// `entries_read` counter (RDB >= 10); `None` for older files or when
    /// Redis marked it unknown (-1, e.g. after `XDEL`).
    pub entries_read: Option<u64>,
    /// Number of pending (delivered, unacknowledged) entries.
    pub pending: u64,
    /// Consumer names.
    pub consumers: Vec<Vec<u8>>,
}

/// A stream value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamValue {
    /// Live (not deleted) entries in id order.
    pub entries: Vec<StreamEntry>,
    /// Last id ever generated.
    pub last_id: StreamId,
    /// Largest deleted id (RDB >= 10).
    pub max_deleted_id: Option<StreamId>,
    /// Count of entries ever added (RDB >= 10).
    pub entries_added: Option<u64>,
    /// Consumer groups.
    pub groups: Vec<ConsumerGroup>,
}

/// A decoded value.
#[derive(Debug, Clone, PartialEq)]
pub enum RdbValue {
    /// String (integers as decimal text).
    String(Vec<u8>),
    /// List, head to tail.
    List(Vec<Vec<u8>>),
    /// Set members.
    Set(Vec<Vec<u8>>),
    /// Sorted set (member, score).
    SortedSet(Vec<(Vec<u8>, f64)>),
    /// Hash (field, value).
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
    /// Stream.
    Stream(Box<StreamValue>),
}

/// One key of the dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct RdbEntry {
    /// Database index.
    pub db: u32,
    /// Key.
    pub key: Vec<u8>,
    /// Value.
    pub value: RdbValue,
    /// Absolute expiry, ms since the Unix epoch.
    pub expire_ms: Option<u64>,
}

/// A parsed RDB file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rdb {
    /// RDB version number.
    pub version: u32,
    /// AUX fields (`redis-ver`, `repl-id`, ...).
    pub aux: Vec<(Vec<u8>, Vec<u8>)>,
    /// Function library sources (FUNCTION2 opcode), for `FUNCTION LOAD`.
    pub functions: Vec<Vec<u8>>,
    /// Keys in file order.
    pub entries: Vec<RdbEntry>,
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

enum Len {
    Plain(u64),
    Int(i64),
    Lzf,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RdbError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| {
                RdbError::Corrupt(format!("truncated: need {n} bytes at offset {}", self.pos))
            })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, RdbError> {
        Ok(self.take(1)?[0])
    }
    fn u64_le(&mut self) -> Result<u64, RdbError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    fn u64_be(&mut self) -> Result<u64, RdbError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }
    fn len_enc(&mut self) -> Result<Len, RdbError> {
        let first = self.u8()?;
        Ok(match first >> 6 {
            0 => Len::Plain(u64::from(first & 0x3F)),
            1 => Len::Plain((u64::from(first & 0x3F) << 8) | u64::from(self.u8()?)),
            2 => match first {
                0x80 => {
                    let s = self.take(4)?;
                    Len::Plain(u64::from(u32::from_be_bytes([s[0], s[1], s[2], s[3]])))
                }
                0x81 => Len::Plain(self.u64_be()?),
                other => {
                    return Err(RdbError::Corrupt(format!(
                        "unknown length encoding 0x{other:02x}"
                    )))
                }
            },
            _ => match first & 0x3F {
                0 => Len::Int(i64::from(self.u8()? as i8)),
                1 => {
                    let s = self.take(2)?;
                    Len::Int(i64::from(i16::from_le_bytes([s[0], s[1]])))
                }
                2 => {
                    let s = self.take(4)?;
                    Len::Int(i64::from(i32::from_le_bytes([s[0], s[1], s[2], s[3]])))
                }
                3 => Len::Lzf,
                other => {
                    return Err(RdbError::Corrupt(format!(
                        "unknown special string encoding {other}"
                    )))
                }
            },
        })
    }
    fn len(&mut self) -> Result<u64, RdbError> {
        match self.len_enc()? {
            Len::Plain(n) => Ok(n),
            _ => Err(RdbError::Corrupt(format!(
                "expected a length at offset {}",
                self.pos
            ))),
        }
    }
    fn count(&mut self) -> Result<usize, RdbError> {
        let n = self.len()?;
        // Every counted item takes at least one byte: bound allocations.
        if n > (self.b.len() - self.pos) as u64 + 1 {
            return Err(RdbError::Corrupt(format!(
                "count {n} exceeds the file size"
            )));
        }
        Ok(n as usize)
    }
    fn string(&mut self) -> Result<Vec<u8>, RdbError> {
        match self.len_enc()? {
            Len::Plain(n) => {
                let n = usize::try_from(n)
                    .map_err(|_| RdbError::Corrupt("string length overflow".into()))?;
                Ok(self.take(n)?.to_vec())
            }
            Len::Int(i) => Ok(i.to_string().into_bytes()),
            Len::Lzf => {
                let clen = self.len()? as usize;
                let ulen = self.len()? as usize;
                if ulen > 1 << 32 {
                    return Err(RdbError::Corrupt(format!("LZF length {ulen} too large")));
                }
                let c = self.take(clen)?;
                encodings::lzf_decompress(c, ulen)
            }
        }
    }
    fn text_double(&mut self) -> Result<f64, RdbError> {
        let n = self.u8()?;
        match n {
            253 => Ok(f64::NAN),
            254 => Ok(f64::INFINITY),
            255 => Ok(f64::NEG_INFINITY),
            n => {
                let s = self.take(usize::from(n))?;
                parse_f64(s)
            }
        }
    }
    fn binary_double(&mut self) -> Result<f64, RdbError> {
        Ok(f64::from_bits(self.u64_le()?))
    }
    fn stream_id_raw(&mut self) -> Result<StreamId, RdbError> {
        Ok((self.u64_be()?, self.u64_be()?))
    }
    fn stream_id_len(&mut self) -> Result<StreamId, RdbError> {
        Ok((self.len()?, self.len()?))
    }
}

fn parse_f64(s: &[u8]) -> Result<f64, RdbError> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|t| match t {
            "inf" | "+inf" => Some(f64::INFINITY),
            "-inf" => Some(f64::NEG_INFINITY),
            t => t.parse().ok(),
        })
        .ok_or_else(|| RdbError::Corrupt(format!("bad score {:?}", String::from_utf8_lossy(s))))
}

fn pairs(v: Vec<Vec<u8>>, what: &str) -> Result<Vec<Pair>, RdbError> {
    if !v.len().is_multiple_of(2) {
        return Err(RdbError::Corrupt(format!("{what} with odd element count")));
    }
    let mut out = Vec::with_capacity(v.len() / 2);
    let mut it = v.into_iter();
    while let (Some(a), Some(b)) = (it.next(), it.next()) {
        out.push((a, b));
    }
    Ok(out)
}

fn zset_pairs(v: Vec<Vec<u8>>, what: &str) -> Result<Vec<(Vec<u8>, f64)>, RdbError> {
    pairs(v, what)?
        .into_iter()
        .map(|(m, s)| Ok((m, parse_f64(&s)?)))
        .collect()
}

/// Name of a module type from its 64-bit RDB module id (9 characters of
/// 6 bits each, then 10 bits of encoding version; `moduleTypeNameByID`).
pub fn module_type_name(id: u64) -> String {
    const CHARSET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut id = id >> 10;
    let mut name = [0u8; 9];
    for j in 0..9 {
        name[8 - j] = CHARSET[(id & 63) as usize];
        id >>= 6;
    }
    String::from_utf8_lossy(&name).into_owned()
}

/// Parses a complete RDB file held in memory.
pub fn parse(data: &[u8]) -> Result<Rdb, RdbError> {
    let mut r = Reader { b: data, pos: 0 };
    let magic = r.take(9)?;
    if &magic[..5] != b"REDIS" {
        return Err(RdbError::Corrupt("missing REDIS magic".into()));
    }
    let version: u32 = std::str::from_utf8(&magic[5..])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RdbError::Corrupt("bad version digits".into()))?;
    if version == 0 || version > 12 {
        return Err(RdbError::Unsupported(format!(
            "RDB version {version} (supported: 1..=12)"
        )));
    }
    let mut rdb = Rdb {
        version,
        ..Rdb::default()
    };
    let mut db: u32 = 0;
    let mut expire: Option<u64> = None;
    loop {
        let op = r.u8()?;
        match op {
            0xFF => break,
            0xFE => {
                db = u32::try_from(r.len()?)
                    .map_err(|_| RdbError::Corrupt("SELECTDB out of range".into()))?
            }
            0xFD => {
                let s = r.take(4)?;
                expire = Some(u64::from(u32::from_le_bytes([s[0], s[1], s[2], s[3]])) * 1000);
            }
            0xFC => expire = Some(r.u64_le()?),
            0xFB => {
                r.len()?;
                r.len()?;
            }
            0xFA => {
                let k = r.string()?;
                let v = r.string()?;
                rdb.aux.push((k, v));
            }
            0xF9 => {
                r.u8()?;
            }
            0xF8 => {
                r.len()?;
            }
            0xF7 => {
                let id = r.len()?;
                return Err(RdbError::Unsupported(format!(
                    "module auxiliary data of module type {:?}",
                    module_type_name(id)
                )));
            }
            0xF5 => rdb.functions.push(r.string()?),
            0xF6 => {
                return Err(RdbError::Unsupported(
                    "pre-GA Redis 7.0 FUNCTION opcode (re-save with Redis >= 7.0 GA)".into(),
                ))
            }
            0xF4 => {
                r.len()?;
                r.len()?;
                r.len()?;
            }
            t => {
                let key = r.string()?;
                let value = read_value(&mut r, t, version)?;
                rdb.entries.push(RdbEntry {
                    db,
                    key,
                    value,
                    expire_ms: expire.take(),
                });
            }
        }
    }
    if version >= 5 {
        let end = r.pos;
        let expected = r.u64_le()?;
        if expected != 0 {
            let computed = encodings::crc64(0, &data[..end]);
            if computed != expected {
                return Err(RdbError::Checksum { expected, computed });
            }
        }
    }
    Ok(rdb)
}

fn read_value(r: &mut Reader<'_>, t: u8, version: u32) -> Result<RdbValue, RdbError> {
    Ok(match t {
        0 => RdbValue::String(r.string()?),
        1 => {
            let n = r.count()?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(r.string()?);
            }
            RdbValue::List(v)
        }
        2 => {
            let n = r.count()?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(r.string()?);
            }
            RdbValue::Set(v)
        }
        3 | 5 => {
            let n = r.count()?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let m = r.string()?;
                let s = if t == 3 {
                    r.text_double()?
                } else {
                    r.binary_double()?
                };
                v.push((m, s));
            }
            RdbValue::SortedSet(v)
        }
        4 => {
            let n = r.count()?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push((r.string()?, r.string()?));
            }
            RdbValue::Hash(v)
        }
        6 | 7 => {
            let id = r.len()?;
            return Err(RdbError::Unsupported(format!(
                "value of module type {:?} (module data cannot be recreated with commands)",
                module_type_name(id)
            )));
        }
        9 => RdbValue::Hash(pairs(encodings::zipmap(&r.string()?)?, "zipmap")?),
        10 => RdbValue::List(encodings::ziplist(&r.string()?)?),
        11 => RdbValue::Set(encodings::intset(&r.string()?)?),
        12 => RdbValue::SortedSet(zset_pairs(
            encodings::ziplist(&r.string()?)?,
            "zset ziplist",
        )?),
        13 => RdbValue::Hash(pairs(encodings::ziplist(&r.string()?)?, "hash ziplist")?),
        14 => {
            let n = r.count()?;
            let mut v = Vec::new();
            for _ in 0..n {
                v.extend(encodings::ziplist(&r.string()?)?);
            }
            RdbValue::List(v)
        }
        18 => {
            let n = r.count()?;
            let mut v = Vec::new();
            for _ in 0..n {
                let container = r.len()?;
                let node = r.string()?;
                match container {
                    1 => v.push(node),
                    2 => v.extend(encodings::listpack(&node)?),
                    other => {
                        return Err(RdbError::Corrupt(format!(
                            "quicklist node container type {other}"
                        )))
                    }
                }
            }
            RdbValue::List(v)
        }
        16 => RdbValue::Hash(pairs(encodings::listpack(&r.string()?)?, "hash listpack")?),
        17 => RdbValue::SortedSet(zset_pairs(
            encodings::listpack(&r.string()?)?,
            "zset listpack",
        )?),
        20 => RdbValue::Set(encodings::listpack(&r.string()?)?),
        15 | 19 | 21 => RdbValue::Stream(Box::new(crate::rdb_stream::read_stream(
            r_bytes(r),
            t,
            version,
        )?)),
        22..=25 => {
            return Err(RdbError::Unsupported(format!(
                "hash with field expirations (RDB type {t}, Redis 7.4+)"
            )))
        }
        other => {
            return Err(RdbError::Unsupported(format!("RDB value type {other}")));
        }
    })
}

/// Gives the stream reader access to this reader (kept private to the crate).
fn r_bytes<'r, 'a>(r: &'r mut Reader<'a>) -> StreamInput<'r, 'a> {
    StreamInput(r)
}

/// Handle passed to [`crate::rdb_stream`]: the primitive readers it needs.
pub(crate) struct StreamInput<'r, 'a>(&'r mut Reader<'a>);

impl StreamInput<'_, '_> {
    pub(crate) fn len(&mut self) -> Result<u64, RdbError> {
        self.0.len()
    }
    pub(crate) fn count(&mut self) -> Result<usize, RdbError> {
        self.0.count()
    }
    pub(crate) fn string(&mut self) -> Result<Vec<u8>, RdbError> {
        self.0.string()
    }
    pub(crate) fn u64_le(&mut self) -> Result<u64, RdbError> {
        self.0.u64_le()
    }
    pub(crate) fn stream_id_raw(&mut self) -> Result<StreamId, RdbError> {
        self.0.stream_id_raw()
    }
    pub(crate) fn stream_id_len(&mut self) -> Result<StreamId, RdbError> {
        self.0.stream_id_len()
    }
}
