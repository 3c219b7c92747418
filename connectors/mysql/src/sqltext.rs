//! SQL text for the sink: value literals and multi-row statements, sent
//! over the text protocol as few multi-statement queries per partition
//! transaction (one round trip for a typical group).
//!
//! Why text and not prepared statements: with the binlog on, the server
//! expands every prepared statement's parameters into query text for the
//! binlog's annotate event anyway (MariaDB `insert_params_with_log`), and a
//! group would cost one round trip per statement. Literals follow the
//! server's lexer rules (MySQL reference manual, "String Literals"):
//! strings are quoted with `\0 \n \r \\ \' \" \Z` escaped (the sink session
//! does not set `NO_BACKSLASH_ESCAPES`); bytes of a text or blob column are
//! written as a `_binary'..'` literal so that they land unchanged in a
//! column of any character set, as `CAST(? AS BINARY)` did; other byte
//! strings (DECIMAL text, BIT, JSON) are quoted when valid UTF-8 and `0x`
//! hex otherwise, as `mysql_common`'s `Value::as_sql` does. Floating point
//! values use Rust's shortest round-trip exponent form of the value as f64
//! (`1.5e-7`), which the server parses as a double.

use dcsync_core::Value;
use std::io::Write;

/// Appends `bytes` with the server's string escapes (no quotes).
pub fn push_escaped(buf: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        match b {
            0 => buf.extend_from_slice(b"\\0"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\'' => buf.extend_from_slice(b"\\'"),
            b'"' => buf.extend_from_slice(b"\\\""),
            0x1a => buf.extend_from_slice(b"\\Z"),
            _ => buf.push(b),
        }
    }
}

/// Appends the SQL literal of `v`. `binary`: the value goes into a text or
/// blob column and is written as `_binary'..'` (see the module docs).
pub fn push_literal(buf: &mut Vec<u8>, v: &Value, binary: bool) {
    // Writes into a Vec cannot fail.
    let _ = match v {
        Value::Null => buf.write_all(b"NULL"),
        Value::Int(i) => write!(buf, "{i}"),
        Value::UInt(u) => write!(buf, "{u}"),
        Value::Float(f) => write!(buf, "{:e}", f64::from(*f)),
        Value::Double(d) => write!(buf, "{d:e}"),
        Value::Bytes(b) if binary => {
            buf.extend_from_slice(b"_binary'");
            push_escaped(buf, b);
            buf.write_all(b"'")
        }
        Value::Bytes(b) => {
            if std::str::from_utf8(b).is_ok() {
                buf.push(b'\'');
                push_escaped(buf, b);
                buf.write_all(b"'")
            } else {
                buf.extend_from_slice(b"0x");
                for c in b {
                    let _ = write!(buf, "{c:02X}");
                }
                Ok(())
            }
        }
        Value::Date(y, mo, d, 0, 0, 0, 0) => write!(buf, "'{y:04}-{mo:02}-{d:02}'"),
        Value::Date(y, mo, d, h, mi, s, us) => {
            write!(buf, "'{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}'")
        }
        Value::Time(neg, d, h, mi, s, us) => {
            let sign = if *neg { "-" } else { "" };
            let hours = d * 24 + u32::from(*h);
            write!(buf, "'{sign}{hours:03}:{mi:02}:{s:02}.{us:06}'")
        }
    };
}

/// The text of one target table: names and literal kinds.
#[derive(Debug, Clone)]
pub struct TableText {
    /// `` `schema`.`table` ``.
    pub table: String,
    /// Indexes of the columns written by REPLACE.
    pub written: Vec<usize>,
    /// Per written column: a text or blob column (`_binary'..'`).
    pub binary: Vec<bool>,
    /// `(`a`,`b`,..)` of the written columns.
    pub names: String,
    /// Indexes of the primary key columns.
    pub pk: Vec<usize>,
    /// `` `a` `` or `` (`a`,`b`) `` of the key columns.
    pub pk_names: String,
}

/// A partition transaction as query chunks: statements are appended to the
/// current chunk, and a new chunk starts when it passes `chunk_bytes`, so
/// that no query packet grows past the server's `max_allowed_packet`.
#[derive(Debug)]
pub struct Chunks {
    chunks: Vec<Vec<u8>>,
    chunk_bytes: usize,
    stmt_bytes: usize,
}

impl Chunks {
    /// Starts with `first` (e.g. `BEGIN;` and the marker statement).
    /// Statements are cut at about `stmt_bytes`, chunks at about
    /// `chunk_bytes` (a single row longer than that still goes alone).
    pub fn new(first: &[u8], stmt_bytes: usize, chunk_bytes: usize) -> Chunks {
        Chunks {
            chunks: vec![first.to_vec()],
            chunk_bytes: chunk_bytes.max(1),
            stmt_bytes: stmt_bytes.max(1),
        }
    }

    fn current(&mut self) -> &mut Vec<u8> {
        if self
            .chunks
            .last()
            .is_none_or(|c| c.len() >= self.chunk_bytes)
        {
            self.chunks.push(Vec::new());
        }
        let n = self.chunks.len() - 1;
        &mut self.chunks[n]
    }

    /// Appends `REPLACE INTO t (..) VALUES (..),(..);` statements for the
    /// after images `rows`.
    pub fn replace(&mut self, t: &TableText, rows: &[&[Value]]) {
        self.write_rows(b"REPLACE INTO ", t, rows);
    }

    /// `INSERT INTO` statements of `rows` (full images), as
    /// [`Chunks::replace`]: a row whose key exists fails (1062).
    pub fn insert(&mut self, t: &TableText, rows: &[&[Value]]) {
        self.write_rows(b"INSERT INTO ", t, rows);
    }

    fn write_rows(&mut self, verb: &[u8], t: &TableText, rows: &[&[Value]]) {
        let stmt_bytes = self.stmt_bytes;
        let mut i = 0;
        while i < rows.len() {
            let buf = self.current();
            let start = buf.len();
            buf.extend_from_slice(verb);
            buf.extend_from_slice(t.table.as_bytes());
            buf.extend_from_slice(t.names.as_bytes());
            buf.extend_from_slice(b" VALUES ");
            let mut first = true;
            while i < rows.len() && (first || buf.len() - start < stmt_bytes) {
                if !first {
                    buf.push(b',');
                }
                first = false;
                buf.push(b'(');
                for (n, (c, bin)) in t.written.iter().zip(&t.binary).enumerate() {
                    if n > 0 {
                        buf.push(b',');
                    }
                    push_literal(buf, &rows[i][*c], *bin);
                }
                buf.push(b')');
                i += 1;
            }
            buf.extend_from_slice(b";\n");
        }
    }

    /// Appends `DELETE FROM t WHERE pk IN (..);` statements for the before
    /// images `rows`.
    pub fn delete(&mut self, t: &TableText, rows: &[&[Value]]) {
        let stmt_bytes = self.stmt_bytes;
        let mut i = 0;
        while i < rows.len() {
            let buf = self.current();
            let start = buf.len();
            buf.extend_from_slice(b"DELETE FROM ");
            buf.extend_from_slice(t.table.as_bytes());
            buf.extend_from_slice(b" WHERE ");
            buf.extend_from_slice(t.pk_names.as_bytes());
            buf.extend_from_slice(b" IN (");
            let mut first = true;
            while i < rows.len() && (first || buf.len() - start < stmt_bytes) {
                if !first {
                    buf.push(b',');
                }
                first = false;
                if t.pk.len() > 1 {
                    buf.push(b'(');
                }
                for (n, c) in t.pk.iter().enumerate() {
                    if n > 0 {
                        buf.push(b',');
                    }
                    push_literal(buf, &rows[i][*c], false);
                }
                if t.pk.len() > 1 {
                    buf.push(b')');
                }
                i += 1;
            }
            buf.extend_from_slice(b");\n");
        }
    }

    /// Appends `last` (e.g. `COMMIT`) to the last chunk and returns the
    /// chunks, each one query.
    pub fn finish(mut self, last: &[u8]) -> Vec<Vec<u8>> {
        match self.chunks.last_mut() {
            Some(c) => c.extend_from_slice(last),
            None => self.chunks.push(last.to_vec()),
        }
        self.chunks
    }
}

#[cfg(test)]
#[path = "sqltext_tests.rs"]
mod tests;
