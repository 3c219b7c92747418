//! What a QUERY event of the binlog holds: a transaction boundary, DDL, or
//! a statement-format write (DML) on some table, decided from the
//! statement's head and target table; and how a statement may be logged
//! without credentials. Used by the MySQL source (`source.rs`).

/// What a statement found in a QUERY event is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Statement {
    /// A data change: its verb (`INSERT`, `UPDATE`, `DELETE`, `REPLACE`,
    /// `LOAD DATA`, `TRUNCATE`) and target `(schema, table)` when it could be
    /// read (the first table named; the statement's default schema when the
    /// name is unqualified).
    Dml {
        verb: &'static str,
        table: Option<(String, String)>,
    },
    /// DDL or any other statement (GRANT, ANALYZE, ...).
    Other,
}

/// Classifies `sql` (run with default schema `schema`) by its head:
/// comments and `WITH ...` are not looked through (a CTE-prefixed write is
/// [`Statement::Dml`] with an unknown table only if it starts with a verb).
pub(crate) fn classify_statement(sql: &str, schema: &str) -> Statement {
    let mut rest = skip_comments(sql);
    let verb = match next_word(&mut rest).to_ascii_uppercase().as_str() {
        "INSERT" => "INSERT",
        "REPLACE" => "REPLACE",
        "UPDATE" => "UPDATE",
        "DELETE" => "DELETE",
        "TRUNCATE" => "TRUNCATE",
        "LOAD" => {
            let w = next_word(&mut rest).to_ascii_uppercase();
            if w != "DATA" && w != "XML" {
                return Statement::Other;
            }
            "LOAD DATA"
        }
        _ => return Statement::Other,
    };
    // Skip modifiers up to the table name.
    const MODIFIERS: [&str; 9] = [
        "LOW_PRIORITY",
        "DELAYED",
        "HIGH_PRIORITY",
        "IGNORE",
        "QUICK",
        "INTO",
        "FROM",
        "TABLE",
        "CONCURRENT",
    ];
    if verb == "LOAD DATA" {
        // LOAD DATA ... INFILE 'file' [REPLACE | IGNORE] INTO TABLE t
        match rest.to_ascii_uppercase().find(" INTO TABLE ") {
            Some(i) => rest = &rest[i + " INTO TABLE ".len()..],
            None => return Statement::Dml { verb, table: None },
        }
    }
    loop {
        let before = rest;
        let w = next_word(&mut rest).to_ascii_uppercase();
        if !MODIFIERS.contains(&w.as_str()) {
            rest = before;
            break;
        }
    }
    let table = table_name(rest).map(|(s, t)| (s.unwrap_or_else(|| schema.to_string()), t));
    Statement::Dml { verb, table }
}

/// `sql` without leading whitespace and `/* */`, `-- `, `#` comments.
fn skip_comments(mut sql: &str) -> &str {
    loop {
        sql = sql.trim_start();
        if let Some(r) = sql.strip_prefix("/*") {
            sql = r.find("*/").map(|i| &r[i + 2..]).unwrap_or("");
        } else if sql.starts_with("-- ") || sql.starts_with('#') {
            sql = sql.find('\n').map(|i| &sql[i + 1..]).unwrap_or("");
        } else {
            return sql;
        }
    }
}

/// The next bare word of `rest` (letters, digits, `_`), advancing past it.
fn next_word<'a>(rest: &mut &'a str) -> &'a str {
    let s = skip_comments(rest);
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    *rest = &s[end..];
    &s[..end]
}

/// One identifier at the start of `s` (backquoted with doubled backquotes,
/// double-quoted, or bare) and what follows it.
fn ident(s: &str) -> Option<(String, &str)> {
    let s = skip_comments(s);
    let quote = s.chars().next().filter(|c| *c == '`' || *c == '"');
    match quote {
        Some(q) => {
            let mut out = String::new();
            let mut chars = s[1..].char_indices();
            while let Some((i, c)) = chars.next() {
                if c == q {
                    if s[1 + i + 1..].starts_with(q) {
                        out.push(q);
                        chars.next();
                    } else {
                        return Some((out, &s[1 + i + 1..]));
                    }
                } else {
                    out.push(c);
                }
            }
            None
        }
        None => {
            let end = s
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
                .unwrap_or(s.len());
            (end > 0).then(|| (s[..end].to_string(), &s[end..]))
        }
    }
}

/// `[schema.]table` at the start of `s`.
fn table_name(s: &str) -> Option<(Option<String>, String)> {
    let (first, rest) = ident(s)?;
    match rest.trim_start().strip_prefix('.') {
        Some(r) => {
            let (second, _) = ident(r)?;
            Some((Some(first), second))
        }
        None => Some((None, first)),
    }
}

/// A statement as it may be logged: at most 500 characters, and only its
/// first two words when it may carry credentials (`CREATE USER ..
/// IDENTIFIED BY`, `GRANT`, `SET PASSWORD`, `CHANGE MASTER TO ..
/// MASTER_PASSWORD`).
pub(crate) fn loggable_statement(sql: &str) -> String {
    let upper = sql.to_ascii_uppercase();
    let sensitive = [
        "IDENTIFIED",
        "PASSWORD",
        "GRANT",
        "CHANGE MASTER",
        "CHANGE REPLICATION",
    ]
    .iter()
    .any(|w| upper.contains(w));
    if sensitive {
        let head: Vec<&str> = sql.split_whitespace().take(2).collect();
        format!(
            "{} ... (rest not logged: may contain credentials)",
            head.join(" ")
        )
    } else {
        sql.chars().take(500).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_not_logged() {
        let s = loggable_statement("CREATE USER 'app'@'%' IDENTIFIED BY 's3cret'");
        assert!(!s.contains("s3cret"), "{s}");
        assert!(s.starts_with("CREATE USER"));
        let s = loggable_statement("ALTER TABLE t ADD COLUMN c INT");
        assert_eq!(s, "ALTER TABLE t ADD COLUMN c INT");
    }

    fn dml(verb: &'static str, schema: &str, table: &str) -> Statement {
        Statement::Dml {
            verb,
            table: Some((schema.into(), table.into())),
        }
    }

    #[test]
    fn statements_are_classified_by_head_and_table() {
        let c = |sql| classify_statement(sql, "shop");
        assert_eq!(c("INSERT INTO t VALUES (1)"), dml("INSERT", "shop", "t"));
        assert_eq!(
            c("insert low_priority ignore into `other`.`my``t` (a) values (1)"),
            dml("INSERT", "other", "my`t")
        );
        assert_eq!(
            c("/* app */ UPDATE shop.orders SET n = n + 1"),
            dml("UPDATE", "shop", "orders")
        );
        assert_eq!(
            c("DELETE QUICK FROM orders WHERE id = 1"),
            dml("DELETE", "shop", "orders")
        );
        assert_eq!(
            c("DELETE t1 FROM t1 JOIN t2 USING (id)"),
            dml("DELETE", "shop", "t1")
        );
        assert_eq!(c("REPLACE INTO x.y SET a = 1"), dml("REPLACE", "x", "y"));
        assert_eq!(c("TRUNCATE TABLE t"), dml("TRUNCATE", "shop", "t"));
        assert_eq!(
            c("LOAD DATA INFILE '../tmp/SQL_LOAD-1-2-3.data' REPLACE INTO TABLE `t` FIELDS TERMINATED BY ','"),
            dml("LOAD DATA", "shop", "t")
        );
        assert_eq!(c("ALTER TABLE t ADD COLUMN c INT"), Statement::Other);
        assert_eq!(c("CREATE TABLE t (id INT PRIMARY KEY)"), Statement::Other);
        assert_eq!(c("GRANT SELECT ON *.* TO x"), Statement::Other);
        assert_eq!(
            c("UPDATE"),
            Statement::Dml {
                verb: "UPDATE",
                table: None
            }
        );
    }
}
