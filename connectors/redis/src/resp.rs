//! Minimal RESP2 codec for the replication link
//! (<https://redis.io/docs/latest/develop/reference/protocol-spec/>).
//!
//! The primary sends the command stream as arrays of bulk strings
//! (`*<n>\r\n$<len>\r\n<bytes>\r\n...`); handshake replies are simple strings,
//! errors or bulk strings. Parsing is incremental: a call returns `None` until
//! a whole frame is buffered, and reports how many bytes the frame took (the
//! replication offset advances by exactly that).

/// A malformed frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("RESP protocol error: {0}")]
pub struct RespError(pub String);

/// A parsed command and the number of bytes its frame took.
pub type Frame = (Vec<Vec<u8>>, usize);

/// Largest bulk string accepted on the command stream (Redis'
/// `proto-max-bulk-len` default is 512 MiB).
pub const MAX_BULK: usize = 512 << 20;
/// Largest array accepted on the command stream.
pub const MAX_ARGS: usize = 1 << 24;

fn line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let rel = buf.get(from..)?.windows(2).position(|w| w == b"\r\n")?;
    Some((&buf[from..from + rel], from + rel + 2))
}

fn int(s: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| RespError(format!("bad integer {:?}", String::from_utf8_lossy(s))))
}

/// Parses one command (array of bulk strings) from the start of `buf`.
/// Returns the arguments and the frame length in bytes, or `None` if `buf`
/// does not hold a whole frame yet.
pub fn parse_command(buf: &[u8]) -> Result<Option<Frame>, RespError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first != b'*' {
        return Err(RespError(format!(
            "expected an array ('*'), got byte 0x{first:02x} ({:?})",
            String::from_utf8_lossy(&buf[..buf.len().min(40)])
        )));
    }
    let Some((hdr, mut pos)) = line(buf, 1) else {
        return Ok(None);
    };
    let n = int(hdr)?;
    if !(0..=MAX_ARGS as i64).contains(&n) {
        return Err(RespError(format!("array length {n} out of range")));
    }
    let mut args = Vec::with_capacity(n as usize);
    for _ in 0..n {
        match buf.get(pos) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(b) => {
                return Err(RespError(format!(
                    "expected a bulk string ('$'), got byte 0x{b:02x}"
                )))
            }
        }
        let Some((l, p)) = line(buf, pos + 1) else {
            return Ok(None);
        };
        let len = int(l)?;
        if !(0..=MAX_BULK as i64).contains(&len) {
            return Err(RespError(format!("bulk length {len} out of range")));
        }
        let len = len as usize;
        if buf.len() < p + len + 2 {
            return Ok(None);
        }
        if &buf[p + len..p + len + 2] != b"\r\n" {
            return Err(RespError("bulk string not terminated by CRLF".into()));
        }
        args.push(buf[p..p + len].to_vec());
        pos = p + len + 2;
    }
    Ok(Some((args, pos)))
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental() {
        let frame = encode(&["SET", "k", "v"]);
        for cut in 0..frame.len() {
            assert_eq!(parse_command(&frame[..cut]), Ok(None), "cut {cut}");
        }
        let (args, used) = parse_command(&frame).ok().flatten().unwrap_or_default();
        assert_eq!(args, vec![b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()]);
        assert_eq!(used, frame.len());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_command(b"+OK\r\n").is_err());
        assert!(parse_command(b"*1\r\n:5\r\n").is_err());
    }
}
