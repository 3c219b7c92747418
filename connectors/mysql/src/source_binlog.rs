//! Small decoders of binlog event contents used by the source: the apply
//! marker of an echo, the file name of MariaDB's artificial ROTATE, and
//! MySQL GTID source ids.

use dcsync_core::Value;

/// (origin, seq, hlc) from an apply-marker row image (`hlc` 0 if the
/// column is missing).
pub(super) fn marker_of(
    columns: &[dcsync_core::ColumnMeta],
    img: Option<&Vec<Value>>,
) -> Option<(String, u64, dcsync_core::Hlc)> {
    let img = img?;
    let origin = columns.iter().position(|c| c.name == "origin")?;
    let seq = columns.iter().position(|c| c.name == "seq")?;
    let origin = match img.get(origin)? {
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        _ => return None,
    };
    let seq = match img.get(seq)? {
        Value::UInt(u) => *u,
        Value::Int(i) => u64::try_from(*i).ok()?,
        _ => return None,
    };
    let hlc = match columns
        .iter()
        .position(|c| c.name == "hlc")
        .and_then(|i| img.get(i))
    {
        Some(Value::UInt(u)) => *u,
        Some(Value::Int(i)) => u64::try_from(*i).unwrap_or(0),
        _ => 0,
    };
    Some((origin, seq, dcsync_core::Hlc(hlc)))
}

/// Strips the 4 CRC32 bytes MariaDB appends to the file name of the
/// artificial ROTATE event (sent before the FORMAT_DESCRIPTION event, so the
/// decoder does not yet know checksums are on). Binlog names end in
/// `.<digits>`; anything after that is the checksum.
pub(super) fn strip_checksum(name: &[u8]) -> &[u8] {
    let ends_ok = |n: &[u8]| {
        let digits = n.iter().rev().take_while(|b| b.is_ascii_digit()).count();
        digits > 0 && n.len() > digits && n[n.len() - digits - 1] == b'.'
    };
    if ends_ok(name) {
        return name;
    }
    if name.len() > 4 && ends_ok(&name[..name.len() - 4]) {
        return &name[..name.len() - 4];
    }
    name
}

pub(super) fn format_uuid(sid: &[u8; 16]) -> String {
    let h: String = sid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_strip() {
        assert_eq!(strip_checksum(b"mysql-bin.000001"), b"mysql-bin.000001");
        assert_eq!(
            strip_checksum(b"mysql-bin.000001\x8a\xff\x01z"),
            b"mysql-bin.000001"
        );
    }

    #[test]
    fn uuid() {
        let sid = [
            0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42,
            0x95, 0x63,
        ];
        assert_eq!(format_uuid(&sid), "3e11fa47-71ca-11e1-9e33-c80aa9429563");
    }
}
