//! Fuzz the link's frame decoder with arbitrary bytes: whole frames (header,
//! checksum, bincode body) and batch payloads (LZ4 and raw). The decoder must
//! return an error for anything malformed, never panic, hang or allocate
//! beyond its limits.
#![no_main]

use dcsync_link::frame::{decode, decode_body, unpack_batch, Codec, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode(data, 1 << 20);
    if data.len() >= 4 {
        // Bodies with a correct checksum reach the bincode decoder.
        let body = &data[4..];
        let _ = decode_body(crc32(body), body);
        let raw_len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        let _ = unpack_batch(Codec::Lz4, raw_len, body, 1 << 20, 2);
        let _ = unpack_batch(Codec::None, body.len() as u32, body, 1 << 20, 1);
    }
    if let Ok(Frame::Batch { codec, raw_len, data, .. }) = decode(data, 1 << 20) {
        let _ = unpack_batch(codec, raw_len, &data, 1 << 20, 2);
    }
});

fn crc32(b: &[u8]) -> u32 {
    // CRC-32 (IEEE), bitwise; small and dependency-free for the fuzz target.
    let mut c = !0u32;
    for &x in b {
        c ^= u32::from(x);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}
