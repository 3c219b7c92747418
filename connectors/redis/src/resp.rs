//! Minimal RESP2 codec for the replication link
//! (<https://redis.io/docs/latest/develop/reference/protocol-spec/>): the one
//! RESP parser of the connector.
//!
//! The primary sends the command stream as arrays of bulk strings
//! (`*<n>\r\n$<len>\r\n<bytes>\r\n...`, [`parse_command`]); handshake
//! replies are simple strings, errors, integers or bulk strings
//! ([`parse_reply`]). Parsing is incremental: a call returns `None` until a
//! whole frame is buffered, and reports how many bytes the frame took (the
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
/// Longest line (a reply or a header, without its CRLF) accepted.
pub const MAX_LINE: usize = 1 << 20;

fn line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let rel = buf.get(from..)?.windows(2).position(|w| w == b"\r\n")?;
    Some((&buf[from..from + rel], from + rel + 2))
}

/// Splits one CRLF-terminated line off the start of `buf`: the line without
/// its CRLF and the bytes it took, `None` if the CRLF is not buffered yet,
/// an error once more than [`MAX_LINE`] bytes came without one.
pub fn parse_line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, RespError> {
    match line(buf, 0) {
        Some((l, used)) if l.len() <= MAX_LINE => Ok(Some((l, used))),
        None if buf.len() <= MAX_LINE + 1 => Ok(None),
        _ => Err(RespError(format!(
            "line longer than {MAX_LINE} bytes without CRLF"
        ))),
    }
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

/// A reply to a command (the replica's handshake: `AUTH`, `INFO`, `PING`,
/// `REPLCONF`, `PSYNC`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+<text>`
    Status(String),
    /// `-<text>`
    Error(String),
    /// `:<n>`
    Integer(i64),
    /// `$<len>` and its bytes; `None` for the null bulk string `$-1`.
    Bulk(Option<Vec<u8>>),
}

/// Parses one reply from the start of `buf`. Returns the reply and the
/// frame length in bytes, or `None` if `buf` does not hold a whole frame
/// yet. Arrays are not expected during the handshake and are an error.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
    let Some((l, used)) = parse_line(buf)? else {
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(&l[1..]).into_owned();
    let reply = match l.first() {
        Some(b'+') => Reply::Status(text()),
        Some(b'-') => Reply::Error(text()),
        Some(b':') => Reply::Integer(int(&l[1..])?),
        Some(b'$') => {
            let len = int(&l[1..])?;
            if len < 0 {
                return Ok(Some((Reply::Bulk(None), used)));
            }
            if len > MAX_BULK as i64 {
                return Err(RespError(format!("bulk length {len} out of range")));
            }
            let len = len as usize;
            if buf.len() < used + len + 2 {
                return Ok(None);
            }
            if &buf[used + len..used + len + 2] != b"\r\n" {
                return Err(RespError("bulk string not terminated by CRLF".into()));
            }
            return Ok(Some((
                Reply::Bulk(Some(buf[used..used + len].to_vec())),
                used + len + 2,
            )));
        }
        _ => {
            return Err(RespError(format!(
                "unexpected reply {:?}",
                String::from_utf8_lossy(&l[..l.len().min(80)])
            )))
        }
    };
    Ok(Some((reply, used)))
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
    fn replies_incremental() {
        let cases: [(&[u8], Reply); 5] = [
            (
                b"+FULLRESYNC abc 0\r\n",
                Reply::Status("FULLRESYNC abc 0".into()),
            ),
            (b"-ERR nope\r\n", Reply::Error("ERR nope".into())),
            (b":42\r\n", Reply::Integer(42)),
            (b"$3\r\na\r\n\r\n", Reply::Bulk(Some(b"a\r\n".to_vec()))),
            (b"$-1\r\n", Reply::Bulk(None)),
        ];
        for (frame, want) in cases {
            for cut in 0..frame.len() {
                assert_eq!(parse_reply(&frame[..cut]), Ok(None), "cut {cut}");
            }
            let mut more = frame.to_vec();
            more.extend_from_slice(b"+next\r\n");
            assert_eq!(parse_reply(&more), Ok(Some((want, frame.len()))));
        }
    }

    #[test]
    fn bad_replies_are_errors() {
        assert!(parse_reply(b"*1\r\n$1\r\nx\r\n").is_err());
        assert!(parse_reply(b"$1\r\nxy\r\n").is_err());
        assert!(parse_reply(b":x\r\n").is_err());
        assert!(parse_line(&vec![b'a'; MAX_LINE + 2]).is_err());
        assert_eq!(parse_line(&vec![b'a'; MAX_LINE]), Ok(None));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_command(b"+OK\r\n").is_err());
        assert!(parse_command(b"*1\r\n:5\r\n").is_err());
    }
}
