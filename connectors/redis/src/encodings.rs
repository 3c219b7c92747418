//! Compact encodings found inside RDB values, decoded into plain byte strings.
//!
//! - listpack (`src/listpack.c`, Redis 7): `<total u32 LE><count u16 LE>
//!   <entry>... 0xFF`, each entry `<encoding+data><backlen>`;
//! - ziplist (`src/ziplist.c`, RDB < 10): `<zlbytes u32><zltail u32>
//!   <zllen u16> <entry>... 0xFF`, each entry `<prevlen><encoding><data>`;
//! - intset (`src/intset.c`): `<encoding u32 LE (2|4|8)><length u32 LE>`
//!   then little-endian integers;
//! - zipmap (`src/zipmap.c`, RDB < 4 hashes);
//! - LZF (`lzf_d.c`) decompression and CRC-64/Jones (`src/crc64.c`), the RDB
//!   checksum.
//!
//! Integers stored in these encodings are returned as their decimal text,
//! which is how Redis exposes them to clients.

use crate::rdb::RdbError;

fn corrupt(what: &str) -> RdbError {
    RdbError::Corrupt(what.to_string())
}

fn take<'a>(b: &'a [u8], pos: &mut usize, n: usize, what: &str) -> Result<&'a [u8], RdbError> {
    let end = pos
        .checked_add(n)
        .filter(|e| *e <= b.len())
        .ok_or_else(|| corrupt(what))?;
    let s = &b[*pos..end];
    *pos = end;
    Ok(s)
}

fn le_int(bytes: &[u8]) -> i64 {
    // Sign-extend a little-endian integer of 1..=8 bytes.
    let mut v: u64 = 0;
    for (i, b) in bytes.iter().enumerate() {
        v |= u64::from(*b) << (8 * i);
    }
    let bits = 8 * bytes.len() as u32;
    if bits < 64 {
        let shift = 64 - bits;
        ((v << shift) as i64) >> shift
    } else {
        v as i64
    }
}

/// Decodes a listpack into its elements (strings, integers as decimal text).
pub fn listpack(b: &[u8]) -> Result<Vec<Vec<u8>>, RdbError> {
    const W: &str = "listpack";
    if b.len() < 7 {
        return Err(corrupt("listpack shorter than its header"));
    }
    let mut pos = 6;
    let mut out = Vec::new();
    loop {
        let first = *b
            .get(pos)
            .ok_or_else(|| corrupt("listpack without end byte"))?;
        if first == 0xFF {
            return Ok(out);
        }
        let start = pos;
        pos += 1;
        let value: Vec<u8> = if first & 0x80 == 0 {
            (first & 0x7F).to_string().into_bytes()
        } else if first & 0xC0 == 0x80 {
            take(b, &mut pos, usize::from(first & 0x3F), W)?.to_vec()
        } else if first & 0xE0 == 0xC0 {
            let lo = take(b, &mut pos, 1, W)?[0];
            let mut v = (i64::from(first & 0x1F) << 8) | i64::from(lo);
            if v >= 1 << 12 {
                v -= 1 << 13;
            }
            v.to_string().into_bytes()
        } else if first & 0xF0 == 0xE0 {
            let lo = take(b, &mut pos, 1, W)?[0];
            let len = (usize::from(first & 0x0F) << 8) | usize::from(lo);
            take(b, &mut pos, len, W)?.to_vec()
        } else {
            match first {
                0xF0 => {
                    let l = take(b, &mut pos, 4, W)?;
                    let len = u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
                    take(b, &mut pos, len, W)?.to_vec()
                }
                0xF1 => le_int(take(b, &mut pos, 2, W)?).to_string().into_bytes(),
                0xF2 => le_int(take(b, &mut pos, 3, W)?).to_string().into_bytes(),
                0xF3 => le_int(take(b, &mut pos, 4, W)?).to_string().into_bytes(),
                0xF4 => le_int(take(b, &mut pos, 8, W)?).to_string().into_bytes(),
                other => {
                    return Err(RdbError::Corrupt(format!(
                        "listpack entry with unknown encoding byte 0x{other:02x}"
                    )))
                }
            }
        };
        let entry_len = pos - start;
        let backlen = match entry_len {
            0..=127 => 1,
            128..=16383 => 2,
            16384..=2_097_151 => 3,
            2_097_152..=268_435_455 => 4,
            _ => 5,
        };
        take(b, &mut pos, backlen, W)?;
        out.push(value);
    }
}

/// Decodes a ziplist into its elements (integers as decimal text).
pub fn ziplist(b: &[u8]) -> Result<Vec<Vec<u8>>, RdbError> {
    const W: &str = "ziplist";
    if b.len() < 11 {
        return Err(corrupt("ziplist shorter than its header"));
    }
    let mut pos = 10;
    let mut out = Vec::new();
    loop {
        let first = *b
            .get(pos)
            .ok_or_else(|| corrupt("ziplist without end byte"))?;
        if first == 0xFF {
            return Ok(out);
        }
        // prevlen
        pos += if first == 0xFE { 5 } else { 1 };
        let enc = take(b, &mut pos, 1, W)?[0];
        let value = match enc >> 6 {
            0 => take(b, &mut pos, usize::from(enc & 0x3F), W)?.to_vec(),
            1 => {
                let lo = take(b, &mut pos, 1, W)?[0];
                let len = (usize::from(enc & 0x3F) << 8) | usize::from(lo);
                take(b, &mut pos, len, W)?.to_vec()
            }
            2 => {
                let l = take(b, &mut pos, 4, W)?;
                let len = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
                take(b, &mut pos, len, W)?.to_vec()
            }
            _ => {
                let v = match enc {
                    0xC0 => le_int(take(b, &mut pos, 2, W)?),
                    0xD0 => le_int(take(b, &mut pos, 4, W)?),
                    0xE0 => le_int(take(b, &mut pos, 8, W)?),
                    0xF0 => le_int(take(b, &mut pos, 3, W)?),
                    0xFE => le_int(take(b, &mut pos, 1, W)?),
                    0xF1..=0xFD => i64::from(enc & 0x0F) - 1,
                    other => {
                        return Err(RdbError::Corrupt(format!(
                            "ziplist entry with unknown encoding byte 0x{other:02x}"
                        )))
                    }
                };
                v.to_string().into_bytes()
            }
        };
        out.push(value);
    }
}

/// Decodes an intset into its members as decimal text.
pub fn intset(b: &[u8]) -> Result<Vec<Vec<u8>>, RdbError> {
    const W: &str = "intset";
    let mut pos = 0;
    let h = take(b, &mut pos, 8, W)?;
    let width = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let count = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    if !matches!(width, 2 | 4 | 8) {
        return Err(RdbError::Corrupt(format!(
            "intset with element width {width}"
        )));
    }
    let mut out = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        out.push(
            le_int(take(b, &mut pos, width, W)?)
                .to_string()
                .into_bytes(),
        );
    }
    Ok(out)
}

/// Decodes a zipmap (legacy hash encoding) into field, value, field, value...
pub fn zipmap(b: &[u8]) -> Result<Vec<Vec<u8>>, RdbError> {
    const W: &str = "zipmap";
    let mut pos = 1; // zmlen
    let mut out = Vec::new();
    let read_len = |pos: &mut usize| -> Result<Option<usize>, RdbError> {
        let f = take(b, pos, 1, W)?[0];
        Ok(match f {
            0xFF => None,
            0xFE => {
                let l = take(b, pos, 4, W)?;
                Some(u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize)
            }
            n => Some(usize::from(n)),
        })
    };
    loop {
        let Some(klen) = read_len(&mut pos)? else {
            return Ok(out);
        };
        out.push(take(b, &mut pos, klen, W)?.to_vec());
        let vlen = read_len(&mut pos)?.ok_or_else(|| corrupt("zipmap value length"))?;
        let free = usize::from(take(b, &mut pos, 1, W)?[0]);
        out.push(take(b, &mut pos, vlen, W)?.to_vec());
        take(b, &mut pos, free, W)?;
    }
}

/// LZF decompression (liblzf format as used by Redis) into exactly
/// `out_len` bytes.
pub fn lzf_decompress(input: &[u8], out_len: usize) -> Result<Vec<u8>, RdbError> {
    let mut out: Vec<u8> = Vec::with_capacity(out_len.min(1 << 20));
    let mut i = 0;
    while i < input.len() {
        let ctrl = usize::from(input[i]);
        i += 1;
        if ctrl < 32 {
            let n = ctrl + 1;
            let lit = input
                .get(i..i + n)
                .ok_or_else(|| corrupt("LZF literal run"))?;
            out.extend_from_slice(lit);
            i += n;
        } else {
            let mut len = ctrl >> 5;
            if len == 7 {
                len += usize::from(*input.get(i).ok_or_else(|| corrupt("LZF length"))?);
                i += 1;
            }
            let lo = usize::from(*input.get(i).ok_or_else(|| corrupt("LZF offset"))?);
            i += 1;
            let back = ((ctrl & 0x1F) << 8) + lo + 1;
            if back > out.len() {
                return Err(corrupt("LZF back reference before start"));
            }
            let start = out.len() - back;
            for k in 0..len + 2 {
                let c = out[start + k];
                out.push(c);
            }
        }
        if out.len() > out_len {
            return Err(corrupt("LZF output longer than declared"));
        }
    }
    if out.len() != out_len {
        return Err(RdbError::Corrupt(format!(
            "LZF output is {} bytes, header says {out_len}",
            out.len()
        )));
    }
    Ok(out)
}

/// CRC-64/Jones as used by Redis for the RDB checksum (reflected polynomial
/// 0xad93d23594c935a9, init 0, no final xor; check value of `123456789` is
/// 0xe9c6d914c4b8d9ca).
pub fn crc64(mut crc: u64, data: &[u8]) -> u64 {
    static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        const POLY_REFLECTED: u64 = 0x95ac_9329_ac4b_c9b5;
        let mut t = [0u64; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u64;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ POLY_REFLECTED
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    for b in data {
        crc = table[((crc ^ u64::from(*b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_check_value() {
        assert_eq!(crc64(0, b"123456789"), 0xe9c6d914c4b8d9ca);
    }

    #[test]
    fn listpack_ints_and_strings() {
        // total, count, then: 7-bit 5, 6-bit str "ab", 13-bit -1, int16 1000, end.
        let mut lp = vec![0, 0, 0, 0, 4, 0];
        lp.extend([0x05, 0x01]);
        lp.extend([0x82, b'a', b'b', 0x03]);
        lp.extend([0xDF, 0xFF, 0x02]);
        lp.extend([0xF1, 0xE8, 0x03, 0x03]);
        lp.push(0xFF);
        let v = listpack(&lp).unwrap_or_default();
        assert_eq!(
            v,
            vec![
                b"5".to_vec(),
                b"ab".to_vec(),
                b"-1".to_vec(),
                b"1000".to_vec()
            ]
        );
    }

    #[test]
    fn ziplist_intset_zipmap() {
        // header, "ab", immediate 2, int8 -5, int16 1000, end
        let mut zl = vec![0; 10];
        zl.extend([0x00, 0x02, b'a', b'b']);
        zl.extend([0x04, 0xF3]);
        zl.extend([0x02, 0xFE, 0xFB]);
        zl.extend([0x03, 0xC0, 0xE8, 0x03]);
        zl.push(0xFF);
        let v = ziplist(&zl).unwrap_or_default();
        assert_eq!(
            v,
            vec![
                b"ab".to_vec(),
                b"2".to_vec(),
                b"-5".to_vec(),
                b"1000".to_vec()
            ]
        );
        let is = [2, 0, 0, 0, 2, 0, 0, 0, 0xFF, 0xFF, 7, 0];
        assert_eq!(
            intset(&is).unwrap_or_default(),
            vec![b"-1".to_vec(), b"7".to_vec()]
        );
        // zmlen, key "k", value "v" with 1 free byte, end
        let zm = [1, 1, b'k', 1, 1, b'v', 0, 0xFF];
        assert_eq!(
            zipmap(&zm).unwrap_or_default(),
            vec![b"k".to_vec(), b"v".to_vec()]
        );
        assert!(ziplist(&zl[..zl.len() - 3]).is_err());
    }

    #[test]
    fn lzf_roundtrip_literal_and_backref() {
        // literal "abc" then back-reference of length 3 at distance 3 -> "abcabc"
        let input = [0x02, b'a', b'b', b'c', 0x20, 0x02];
        assert_eq!(lzf_decompress(&input, 6).unwrap_or_default(), b"abcabc");
    }
}
