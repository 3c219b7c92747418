//! Literal and statement text: escapes, binary strings, hex for non-UTF-8
//! bytes, exact floats, temporal forms, statement and chunk cuts.

use super::*;

fn lit(v: Value, binary: bool) -> String {
    let mut b = Vec::new();
    push_literal(&mut b, &v, binary);
    String::from_utf8_lossy(&b).into_owned()
}

#[test]
fn literals() {
    assert_eq!(lit(Value::Null, true), "NULL");
    assert_eq!(lit(Value::Int(-5), false), "-5");
    assert_eq!(lit(Value::UInt(u64::MAX), false), "18446744073709551615");
    assert_eq!(
        lit(Value::Bytes(b"a'b\\c\0\n\r\"\x1a".to_vec()), false),
        r#"'a\'b\\c\0\n\r\"\Z'"#
    );
    assert_eq!(lit(Value::Bytes(b"x".to_vec()), true), "_binary'x'");
    assert_eq!(lit(Value::Bytes(vec![0xff, 0x00]), false), "0xFF00");
    assert_eq!(lit(Value::Double(0.1), false), "1e-1");
    assert_eq!(lit(Value::Double(-0.0), false), "-0e0");
    assert_eq!(
        lit(Value::Double(f64::MAX), false),
        "1.7976931348623157e308"
    );
    // A FLOAT goes as the exact f64 of its value.
    assert_eq!(lit(Value::Float(0.5), false), "5e-1");
    assert_eq!(
        lit(Value::Date(2024, 2, 29, 0, 0, 0, 0), false),
        "'2024-02-29'"
    );
    assert_eq!(
        lit(Value::Date(2024, 2, 29, 1, 2, 3, 4), false),
        "'2024-02-29 01:02:03.000004'"
    );
    assert_eq!(
        lit(Value::Time(true, 34, 22, 59, 59, 0), false),
        "'-838:59:59.000000'"
    );
}

#[test]
fn non_utf8_binary_bytes_pass_unchanged_and_escaped() {
    let mut b = Vec::new();
    push_literal(&mut b, &Value::Bytes(vec![0xe9, b'\'', 0xff]), true);
    assert_eq!(b, b"_binary'\xe9\\'\xff'");
}

fn table(pk: Vec<usize>) -> TableText {
    TableText {
        table: "`s`.`t`".into(),
        written: vec![0, 1],
        binary: vec![false, true],
        names: "(`id`,`v`)".into(),
        pk_names: if pk.len() == 1 {
            "`id`".into()
        } else {
            "(`id`,`v`)".into()
        },
        pk,
    }
}

#[test]
fn statements_and_chunks() {
    let rows: Vec<Vec<Value>> = (0..4)
        .map(|i| vec![Value::Int(i), Value::Bytes(b"x".to_vec())])
        .collect();
    let refs: Vec<&[Value]> = rows.iter().map(|r| r.as_slice()).collect();
    let mut c = Chunks::new(b"BEGIN;\n", 1 << 20, 1 << 20);
    c.delete(&table(vec![0]), &refs[..2]);
    c.replace(&table(vec![0]), &refs);
    c.delete(&table(vec![0, 1]), &refs[..1]);
    let q = c.finish(b"COMMIT");
    assert_eq!(q.len(), 1);
    assert_eq!(
        String::from_utf8(q[0].clone()).unwrap(),
        "BEGIN;\nDELETE FROM `s`.`t` WHERE `id` IN (0,1);\n\
         REPLACE INTO `s`.`t`(`id`,`v`) VALUES (0,_binary'x'),(1,_binary'x'),(2,_binary'x'),(3,_binary'x');\n\
         DELETE FROM `s`.`t` WHERE (`id`,`v`) IN ((0,'x'));\nCOMMIT"
    );
    // Tiny caps: one row per statement, a new chunk per statement.
    let mut c = Chunks::new(b"BEGIN;", 1, 1);
    c.replace(&table(vec![0]), &refs[..3]);
    let q = c.finish(b"COMMIT");
    assert_eq!(q.len(), 4, "{q:?}");
    assert!(q[1].starts_with(b"REPLACE") && q[1].ends_with(b"(0,_binary'x');\n"));
    assert_eq!(
        q[3],
        b"REPLACE INTO `s`.`t`(`id`,`v`) VALUES (2,_binary'x');\nCOMMIT"
    );
}
