//! Stream values in RDB (`RDB_TYPE_STREAM_LISTPACKS` 15, `_2` 19, `_3` 21;
//! `src/rdb.c` and the listpack layout of `src/t_stream.c`).
//!
//! Each radix-tree node is a 16-byte big-endian master id followed by a
//! listpack: a master entry `count deleted num-fields field... 0`, then entries
//! `flags ms-diff seq-diff [num-fields] (field value)*|value* lp-count`, where
//! flag 1 = deleted, 2 = same fields as the master entry.

use crate::encodings;
use crate::rdb::{ConsumerGroup, RdbError, StreamEntry, StreamInput, StreamValue};

fn num(v: &[u8]) -> Result<i64, RdbError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            RdbError::Corrupt(format!(
                "stream listpack: expected an integer, got {:?}",
                String::from_utf8_lossy(v)
            ))
        })
}

fn next<'a>(it: &mut impl Iterator<Item = &'a Vec<u8>>) -> Result<&'a Vec<u8>, RdbError> {
    it.next()
        .ok_or_else(|| RdbError::Corrupt("stream listpack ends inside an entry".into()))
}

fn decode_node(master: (u64, u64), lp: &[u8], out: &mut Vec<StreamEntry>) -> Result<(), RdbError> {
    let items = encodings::listpack(lp)?;
    let mut it = items.iter();
    if items.is_empty() {
        return Ok(());
    }
    let count = num(next(&mut it)?)?;
    let deleted = num(next(&mut it)?)?;
    let nmaster = num(next(&mut it)?)? as usize;
    let mut master_fields = Vec::with_capacity(nmaster);
    for _ in 0..nmaster {
        master_fields.push(next(&mut it)?.clone());
    }
    next(&mut it)?; // master terminator 0
    for _ in 0..(count + deleted) {
        let flags = num(next(&mut it)?)?;
        let ms = master.0.wrapping_add(num(next(&mut it)?)? as u64);
        let seq = master.1.wrapping_add(num(next(&mut it)?)? as u64);
        let mut fields = Vec::new();
        if flags & 2 != 0 {
            for f in &master_fields {
                fields.push((f.clone(), next(&mut it)?.clone()));
            }
        } else {
            let n = num(next(&mut it)?)?;
            for _ in 0..n {
                let f = next(&mut it)?.clone();
                let v = next(&mut it)?.clone();
                fields.push((f, v));
            }
        }
        next(&mut it)?; // lp-count
        if flags & 1 == 0 {
            out.push(StreamEntry {
                id: (ms, seq),
                fields,
            });
        }
    }
    Ok(())
}

/// Reads a stream value of RDB type `t` (15, 19 or 21).
pub(crate) fn read_stream(
    mut r: StreamInput<'_, '_>,
    t: u8,
    _version: u32,
) -> Result<StreamValue, RdbError> {
    let mut s = StreamValue::default();
    let nodes = r.count()?;
    for _ in 0..nodes {
        let key = r.string()?;
        if key.len() != 16 {
            return Err(RdbError::Corrupt(format!(
                "stream node key of {} bytes (expected 16)",
                key.len()
            )));
        }
        let mut ms = [0u8; 8];
        let mut seq = [0u8; 8];
        ms.copy_from_slice(&key[..8]);
        seq.copy_from_slice(&key[8..]);
        let lp = r.string()?;
        decode_node(
            (u64::from_be_bytes(ms), u64::from_be_bytes(seq)),
            &lp,
            &mut s.entries,
        )?;
    }
    let _length = r.len()?;
    s.last_id = r.stream_id_len()?;
    if t >= 19 {
        let _first_id = r.stream_id_len()?;
        s.max_deleted_id = Some(r.stream_id_len()?);
        s.entries_added = Some(r.len()?);
    }
    let ngroups = r.count()?;
    for _ in 0..ngroups {
        let name = r.string()?;
        let last_id = r.stream_id_len()?;
        // -1 (stored as u64::MAX) means "unknown", e.g. after XDEL.
        let entries_read = if t >= 19 { Some(r.len()?) } else { None }.filter(|n| *n != u64::MAX);
        let pel = r.count()?;
        for _ in 0..pel {
            r.stream_id_raw()?;
            r.u64_le()?; // delivery time
            r.len()?; // delivery count
        }
        let nconsumers = r.count()?;
        let mut consumers = Vec::with_capacity(nconsumers);
        for _ in 0..nconsumers {
            consumers.push(r.string()?);
            r.u64_le()?; // seen time
            if t >= 21 {
                r.u64_le()?; // active time
            }
            let cpel = r.count()?;
            for _ in 0..cpel {
                r.stream_id_raw()?;
            }
        }
        s.groups.push(ConsumerGroup {
            name,
            last_id,
            entries_read,
            pending: pel as u64,
            consumers,
        });
    }
    Ok(s)
}
