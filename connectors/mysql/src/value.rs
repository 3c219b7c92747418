//! Column metadata and value conversion.
//!
//! **Binlog to [`Value`]**: `mysql_common` decodes a ROWS event value
//! according to the TABLE_MAP column type and metadata
//! (<https://dev.mysql.com/doc/dev/mysql-server/latest/classmysql_1_1binlog_1_1event_1_1Table__map__event.html>).
//! What it yields is not always the lossless form dcsync documents on
//! [`Value`], so [`from_binlog`] normalises per column type:
//!
//! | column type            | mysql_common yields               | dcsync [`Value`]                    |
//! |------------------------|-----------------------------------|-------------------------------------|
//! | TINYINT..BIGINT        | `Int`/`UInt`, signedness unreliable | `Int`, or `UInt` if UNSIGNED (re-read by width) |
//! | FLOAT / DOUBLE         | `Float` / `Double`                | same                                |
//! | DECIMAL                | `Bytes` decimal text              | `Bytes` (text)                      |
//! | YEAR                   | `Bytes` "1900 + byte"             | `Int` (0 for YEAR 0000)             |
//! | DATE, DATETIME(n)      | `Date`                            | `Date`                              |
//! | TIMESTAMP(n)           | `Bytes` "unix_sec[.usec]"         | `Date` in UTC (0 = zero timestamp)  |
//! | TIME(n)                | `Time`                            | `Time`                              |
//! | BIT(n)                 | `Bytes` big-endian                | `Bytes`                             |
//! | ENUM                   | `Int` index                       | `UInt` index                        |
//! | SET                    | `Bytes` little-endian bitmask     | `UInt` bitmask                      |
//! | CHAR..TEXT, BINARY..BLOB | `Bytes`                         | `Bytes`                             |
//! | JSON (MySQL binary)    | `Jsonb`                           | `Bytes` JSON text                   |
//! | JSON (MariaDB LONGTEXT)| `Bytes`                           | `Bytes`                             |
//!
//! **[`Value`] to SQL** is the sink's literal writer
//! ([`crate::sqltext::push_literal`]): the sink session runs with
//! `time_zone='+00:00'` so a UTC `Date` lands in a TIMESTAMP column
//! unchanged, an integer written to ENUM/SET is the index / bitmask, and
//! bytes written to BIT are its big-endian value.

use dcsync_core::{ColumnMeta, Value};
use mysql_async::binlog::events::{OptionalMetadataField, TableMapEvent};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType;

/// A table as described by one TABLE_MAP event.
#[derive(Debug, Clone)]
pub(crate) struct TableInfo {
    pub schema: String,
    pub table: String,
    pub columns: Vec<ColumnMeta>,
    /// Real column types (ENUM/SET resolved from `MYSQL_TYPE_STRING`).
    pub types: Vec<ColumnType>,
    /// The same schema, table and columns, shared by the row changes of
    /// this table.
    pub meta: std::sync::Arc<dcsync_core::TableMeta>,
}

/// Whether the binlog signedness bitmap has a bit for a column of type `t`.
/// Both servers count every numeric type *including YEAR* (verified on
/// MariaDB 10.11: a YEAR column before an UNSIGNED one shifts the bits).
fn has_signedness_bit(t: ColumnType) -> bool {
    t.is_numeric_type()
}

/// Builds [`TableInfo`] from a TABLE_MAP event with FULL optional metadata
/// (column names, signedness, primary key).
///
/// Errors (as text, the caller wraps them): a column type `mysql_common`
/// does not know, or missing column names (`binlog_row_metadata` not FULL).
pub(crate) fn table_info(tme: &TableMapEvent<'_>) -> Result<TableInfo, String> {
    let schema = tme.database_name().into_owned();
    let table = tme.table_name().into_owned();
    let n = usize::try_from(tme.columns_count()).map_err(|e| e.to_string())?;
    let mut types = Vec::with_capacity(n);
    for i in 0..n {
        match tme.get_column_type(i) {
            Ok(Some(t)) => types.push(t),
            Ok(None) => return Err(format!("{schema}.{table}: no type for column {i}")),
            Err(e) => return Err(format!("{schema}.{table}: column {i}: {e}")),
        }
    }
    let mut names: Vec<String> = Vec::new();
    let mut unsigned_bits: Vec<bool> = Vec::new();
    let mut pk: Vec<usize> = Vec::new();
    for field in tme.iter_optional_meta() {
        let field = field.map_err(|e| format!("{schema}.{table}: optional metadata: {e}"))?;
        match field {
            OptionalMetadataField::ColumnName(cn) => {
                for name in cn.iter_names() {
                    let name = name.map_err(|e| format!("{schema}.{table}: column name: {e}"))?;
                    names.push(name.name().into_owned());
                }
            }
            OptionalMetadataField::Signedness(bits) => {
                unsigned_bits = bits.iter().map(|b| *b).collect();
            }
            OptionalMetadataField::SimplePrimaryKey(k) => {
                for i in k.iter_indexes() {
                    let i = i.map_err(|e| format!("{schema}.{table}: primary key: {e}"))?;
                    pk.push(usize::try_from(i).unwrap_or(usize::MAX));
                }
            }
            OptionalMetadataField::PrimaryKeyWithPrefix(k) => {
                for key in k.iter_keys() {
                    let key = key.map_err(|e| format!("{schema}.{table}: primary key: {e}"))?;
                    pk.push(usize::try_from(key.column_index()).unwrap_or(usize::MAX));
                }
            }
            _ => {}
        }
    }
    if names.len() != n {
        return Err(format!(
            "{schema}.{table}: the TABLE_MAP event carries {} column names for {n} columns; \
             set binlog_row_metadata=FULL on the server",
            names.len()
        ));
    }
    let mut numeric_idx = 0usize;
    let columns = types
        .iter()
        .zip(names)
        .enumerate()
        .map(|(i, (t, name))| {
            let unsigned = if has_signedness_bit(*t) {
                let u = unsigned_bits.get(numeric_idx).copied().unwrap_or(false);
                numeric_idx += 1;
                u
            } else {
                false
            };
            ColumnMeta {
                name,
                type_code: *t as u8,
                unsigned,
                primary_key: pk.contains(&i),
            }
        })
        .collect();
    let columns: Vec<ColumnMeta> = columns;
    let meta = std::sync::Arc::new(dcsync_core::TableMeta {
        schema: schema.clone(),
        name: table.clone(),
        columns: columns.clone(),
    });
    Ok(TableInfo {
        schema,
        table,
        columns,
        types,
        meta,
    })
}

/// Converts one decoded binlog value of a column with real type `t` and
/// metadata `col` to the lossless dcsync form (see the module table).
pub(crate) fn from_binlog(
    t: ColumnType,
    col: &ColumnMeta,
    v: BinlogValue<'_>,
) -> Result<Value, String> {
    use mysql_async::Value as M;
    use ColumnType::*;
    let v = match v {
        BinlogValue::Value(v) => v,
        BinlogValue::Jsonb(j) => {
            let json = serde_json::Value::try_from(j)
                .map_err(|e| format!("column {}: JSON: {e}", col.name))?;
            return Ok(Value::Bytes(json.to_string().into_bytes()));
        }
        BinlogValue::JsonDiff(_) => {
            return Err(format!(
                "column {}: partial JSON update in the binlog; set binlog_row_value_options='' \
                 on the server",
                col.name
            ))
        }
    };
    if matches!(v, M::NULL) {
        return Ok(Value::Null);
    }
    let bad = |v: &M| format!("column {}: unexpected value {v:?} for type {t:?}", col.name);
    Ok(match t {
        MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG
        | MYSQL_TYPE_LONGLONG => {
            let bits: u32 = match t {
                MYSQL_TYPE_TINY => 8,
                MYSQL_TYPE_SHORT => 16,
                MYSQL_TYPE_INT24 => 24,
                MYSQL_TYPE_LONG => 32,
                _ => 64,
            };
            let raw: u64 = match v {
                M::Int(i) => i as u64,
                M::UInt(u) => u,
                ref other => return Err(bad(other)),
            };
            normalise_int(raw, bits, col.unsigned)
        }
        MYSQL_TYPE_FLOAT => match v {
            M::Float(f) => Value::Float(f),
            M::Double(d) => Value::Float(d as f32),
            ref other => return Err(bad(other)),
        },
        MYSQL_TYPE_DOUBLE => match v {
            M::Double(d) => Value::Double(d),
            M::Float(f) => Value::Double(f64::from(f)),
            ref other => return Err(bad(other)),
        },
        MYSQL_TYPE_YEAR => match v {
            M::Bytes(b) => {
                let y: i64 = std::str::from_utf8(&b)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad(&M::Bytes(b.clone())))?;
                // The stored byte is year - 1900 with 0 meaning YEAR 0000.
                Value::Int(if y == 1900 { 0 } else { y })
            }
            M::Int(i) => Value::Int(i),
            ref other => return Err(bad(other)),
        },
        MYSQL_TYPE_TIMESTAMP2 | MYSQL_TYPE_TIMESTAMP => {
            let (sec, usec) = match v {
                M::Bytes(ref b) => parse_unix(b).ok_or_else(|| bad(&v))?,
                M::Int(i) => (i, 0),
                ref other => return Err(bad(other)),
            };
            unix_to_date(sec, usec)
        }
        MYSQL_TYPE_ENUM => match v {
            M::Int(i) => Value::UInt(i as u64),
            M::UInt(u) => Value::UInt(u),
            ref other => return Err(bad(other)),
        },
        MYSQL_TYPE_SET => match v {
            M::Bytes(b) => {
                if b.len() > 8 {
                    return Err(format!(
                        "column {}: SET bitmask of {} bytes",
                        col.name,
                        b.len()
                    ));
                }
                let mut x = 0u64;
                for (i, byte) in b.iter().enumerate() {
                    x |= u64::from(*byte) << (8 * i);
                }
                Value::UInt(x)
            }
            M::Int(i) => Value::UInt(i as u64),
            M::UInt(u) => Value::UInt(u),
            ref other => return Err(bad(other)),
        },
        _ => match v {
            M::Bytes(b) => Value::Bytes(b),
            M::Date(y, mo, d, h, mi, s, us) => Value::Date(y, mo, d, h, mi, s, us),
            M::Time(neg, d, h, mi, s, us) => Value::Time(neg, d, h, mi, s, us),
            M::Int(i) => Value::Int(i),
            M::UInt(u) => Value::UInt(u),
            M::Float(f) => Value::Float(f),
            M::Double(d) => Value::Double(d),
            M::NULL => Value::Null,
        },
    })
}

/// Re-reads the low `bits` bits of `raw` as signed or unsigned.
fn normalise_int(raw: u64, bits: u32, unsigned: bool) -> Value {
    if bits >= 64 {
        return if unsigned {
            Value::UInt(raw)
        } else {
            Value::Int(raw as i64)
        };
    }
    let masked = raw & ((1u64 << bits) - 1);
    if unsigned {
        Value::UInt(masked)
    } else {
        let shift = 64 - bits;
        Value::Int(((masked << shift) as i64) >> shift)
    }
}

/// Parses `sec` or `sec.usec` (mysql_common's TIMESTAMP2 text).
fn parse_unix(b: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(b).ok()?;
    match s.split_once('.') {
        None => Some((s.parse().ok()?, 0)),
        Some((a, f)) => Some((a.parse().ok()?, f.parse().ok()?)),
    }
}

/// Unix seconds + microseconds to a UTC `Date`; 0 is the zero timestamp
/// (`0000-00-00 00:00:00`), which TIMESTAMP stores as 0.
pub(crate) fn unix_to_date(sec: i64, usec: u32) -> Value {
    if sec == 0 && usec == 0 {
        return Value::Date(0, 0, 0, 0, 0, 0, 0);
    }
    let days = sec.div_euclid(86_400);
    let rem = sec.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    Value::Date(
        y as u16,
        m as u8,
        d as u8,
        (rem / 3600) as u8,
        (rem % 3600 / 60) as u8,
        (rem % 60) as u8,
        usec,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_by_width() {
        assert_eq!(normalise_int(-1i64 as u64, 8, true), Value::UInt(255));
        assert_eq!(normalise_int(255, 8, false), Value::Int(-1));
        assert_eq!(normalise_int(0x80_0000, 24, false), Value::Int(-8_388_608));
        assert_eq!(normalise_int(u64::MAX, 64, true), Value::UInt(u64::MAX));
        assert_eq!(normalise_int(u64::MAX, 64, false), Value::Int(-1));
    }

    #[test]
    fn unix_dates() {
        assert_eq!(unix_to_date(0, 0), Value::Date(0, 0, 0, 0, 0, 0, 0));
        assert_eq!(unix_to_date(1, 5), Value::Date(1970, 1, 1, 0, 0, 1, 5));
        assert_eq!(
            unix_to_date(2_147_483_647, 999_999),
            Value::Date(2038, 1, 19, 3, 14, 7, 999_999)
        );
        assert_eq!(
            unix_to_date(951_782_400, 0),
            Value::Date(2000, 2, 29, 0, 0, 0, 0)
        );
    }
}
