//! `dcsync verify` for MySQL/MariaDB ([`MysqlVerify`], the
//! [`VerifyScan`] of one DC's server): tables are compared in chunks of
//! consecutive primary keys, the way pt-table-checksum does.
//!
//! - **Collections** are the replicated tables (`tables` patterns, system
//!   schemas and `dcsync` left out); a table's **shape** is its columns
//!   with their types, in order, and its primary key.
//! - **Planning** (reference DC only) walks the primary key in order:
//!   the next chunk's upper bound is the key `chunk_items` rows past its
//!   lower bound (`ORDER BY pk LIMIT 1 OFFSET n` over the primary key index,
//!   from the lower bound). The first chunk is open below and the last
//!   open above, so rows only another DC holds are covered too. Bounds are
//!   kept as the server's typed values and sent back as statement
//!   parameters, so every DC compares them with the column's own type and
//!   collation.
//! - **Digest** of a chunk, one query per DC: `COUNT(*)` and the
//!   `BIT_XOR` of the first 64 bits of `MD5(CONCAT_WS('#', every column,
//!   ISNULL(every column)))` over `WHERE pk >= lo AND pk < hi`
//!   (composite keys expanded into `OR`s of column comparisons, which
//!   every server turns into index ranges). The `ISNULL` flags tell a NULL
//!   from an empty string, which `CONCAT_WS` would skip alike.
//! - **Items** of a chunk: each row's primary key and the same 64-bit MD5
//!   prefix, in key order: at most one chunk of rows in memory.
//!
//! Every query is a consistent read (no locks); nothing is written.

use crate::config::MysqlOptions;
use crate::error::classify;
use crate::quote_ident;
use dcsync_core::connector::{BoxFuture, ConnectorError};
use dcsync_core::topology::StoreConfig;
use dcsync_core::verify::{
    ItemDigest, UnitDigest, VerifyOptions, VerifyScan, VerifyTerms, VerifyUnit,
};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long opening a verify connection waits for the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A table's definition as read from `information_schema`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TableDef {
    schema: String,
    table: String,
    /// `(name, type)` in ordinal order.
    columns: Vec<(String, String)>,
    /// Primary key columns in key order; empty: none.
    pk: Vec<String>,
}

impl TableDef {
    fn shape(&self) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|(n, t)| format!("{n} {t}"))
            .collect();
        format!(
            "columns ({}), primary key ({})",
            cols.join(", "),
            self.pk.join(", ")
        )
    }

    fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }

    fn column_names(&self) -> Vec<String> {
        self.columns.iter().map(|(n, _)| n.clone()).collect()
    }
}

/// A chunk's bounds: `lo <= pk < hi`, `None` = open.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chunk {
    lo: Option<Vec<Value>>,
    hi: Option<Vec<Value>>,
}

/// The [`VerifyScan`] of one DC's MySQL/MariaDB server.
pub struct MysqlVerify {
    conn: Conn,
    options: MysqlOptions,
    chunk_rows: u64,
    /// Definitions read so far, by `schema.table`; `None`: not here.
    defs: BTreeMap<String, Option<TableDef>>,
}

impl MysqlVerify {
    /// Connects to the server at `url` for `store`.
    ///
    /// Errors: [`ConnectorError::Definite`] for a bad URL, options of
    /// another kind or a refused login, [`ConnectorError::Transient`] when
    /// the server does not answer in 10 s.
    pub async fn connect(
        url: &str,
        store: &StoreConfig,
        opts: VerifyOptions,
    ) -> Result<MysqlVerify, ConnectorError> {
        let options = MysqlOptions::of(store)?.clone();
        let o = mysql_async::Opts::from_url(url)
            .map_err(|e| ConnectorError::Definite(format!("bad mysql url: {e}")))?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(o))
            .await
            .map_err(|_| {
                ConnectorError::Transient(format!(
                    "connect: no answer in {} s",
                    CONNECT_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| classify("connect", e))?;
        Ok(MysqlVerify {
            conn,
            options,
            chunk_rows: opts.chunk_items.max(1),
            defs: BTreeMap::new(),
        })
    }

    async fn def(&mut self, name: &str) -> Result<Option<TableDef>, ConnectorError> {
        if let Some(d) = self.defs.get(name) {
            return Ok(d.clone());
        }
        let (schema, table) = name.split_once('.').ok_or_else(|| {
            ConnectorError::Definite(format!("{name:?} is not a schema.table name"))
        })?;
        let columns: Vec<(String, String)> = self
            .conn
            .exec(
                "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                (schema, table),
            )
            .await
            .map_err(|e| classify(&format!("reading the columns of {name}"), e))?;
        let def = if columns.is_empty() {
            None
        } else {
            let pk: Vec<String> = self
                .conn
                .exec(
                    "SELECT COLUMN_NAME FROM information_schema.STATISTICS \
                     WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' \
                     ORDER BY SEQ_IN_INDEX",
                    (schema, table),
                )
                .await
                .map_err(|e| classify(&format!("reading the primary key of {name}"), e))?;
            Some(TableDef {
                schema: schema.to_string(),
                table: table.to_string(),
                columns,
                pk,
            })
        };
        self.defs.insert(name.to_string(), def.clone());
        Ok(def)
    }

    /// The definition of `name`, which must exist and have a primary key.
    async fn keyed_def(&mut self, name: &str) -> Result<TableDef, ConnectorError> {
        match self.def(name).await? {
            None => Err(ConnectorError::Definite(format!(
                "table {name} does not exist here"
            ))),
            Some(d) if d.pk.is_empty() => Err(ConnectorError::Definite(format!(
                "table {name} has no primary key: it cannot be compared in chunks \
                 (and dcsync does not replicate its changes)"
            ))),
            Some(d) => Ok(d),
        }
    }

    async fn collections(&mut self) -> Result<Vec<String>, ConnectorError> {
        let tables: Vec<(String, String)> = self
            .conn
            .query(
                "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
                 WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN \
                 ('mysql', 'sys', 'information_schema', 'performance_schema', 'dcsync') \
                 ORDER BY TABLE_SCHEMA, TABLE_NAME",
            )
            .await
            .map_err(|e| classify("listing tables", e))?;
        Ok(tables
            .into_iter()
            .filter(|(s, t)| self.options.matches_table(s, t))
            .map(|(s, t)| format!("{s}.{t}"))
            .collect())
    }

    async fn plan(
        &mut self,
        name: &str,
        after: Option<&VerifyUnit>,
    ) -> Result<Vec<VerifyUnit>, ConnectorError> {
        let def = self.keyed_def(name).await?;
        let lo = match after {
            None => None,
            Some(u) => match &u.data_or_err::<Chunk>()?.hi {
                // The previous chunk was the last one.
                None => return Ok(Vec::new()),
                Some(hi) => Some(hi.clone()),
            },
        };
        let (cond, params) = range_where(&def.pk, lo.as_deref(), None);
        let pk = quoted_list(&def.pk);
        let sql = format!(
            "SELECT {pk} FROM {} FORCE INDEX (PRIMARY) WHERE {cond} ORDER BY {pk} LIMIT 1 OFFSET {}",
            def.quoted(),
            self.chunk_rows
        );
        let row: Option<Row> = self
            .conn
            .exec_first(sql, params)
            .await
            .map_err(|e| classify(&format!("planning chunks of {name}"), e))?;
        let hi = row.map(|r| row_values(&r));
        let chunk = Chunk { lo, hi };
        Ok(vec![VerifyUnit::new(chunk_label(&def.pk, &chunk), chunk)])
    }

    async fn digest(
        &mut self,
        name: &str,
        units: &[VerifyUnit],
    ) -> Result<Vec<UnitDigest>, ConnectorError> {
        let def = self.keyed_def(name).await?;
        let mut out = Vec::with_capacity(units.len());
        for u in units {
            let chunk = u.data_or_err::<Chunk>()?;
            let (cond, params) = range_where(&def.pk, chunk.lo.as_deref(), chunk.hi.as_deref());
            let sql = format!(
                "SELECT COUNT(*), COALESCE(BIT_XOR({}), 0) FROM {} FORCE INDEX (PRIMARY) WHERE {cond}",
                row_hash_expr(&def.column_names()),
                def.quoted()
            );
            let r: Option<(u64, u64)> = self
                .conn
                .exec_first(sql, params)
                .await
                .map_err(|e| classify(&format!("checksumming {name} {}", u.label), e))?;
            let (items, digest) = r.unwrap_or((0, 0));
            out.push(UnitDigest { items, digest });
        }
        Ok(out)
    }

    async fn items(
        &mut self,
        name: &str,
        units: &[VerifyUnit],
    ) -> Result<Vec<ItemDigest>, ConnectorError> {
        let def = self.keyed_def(name).await?;
        let mut out = Vec::new();
        for u in units {
            let chunk = u.data_or_err::<Chunk>()?;
            let (cond, params) = range_where(&def.pk, chunk.lo.as_deref(), chunk.hi.as_deref());
            let pk = quoted_list(&def.pk);
            let sql = format!(
                "SELECT {pk}, {} FROM {} FORCE INDEX (PRIMARY) WHERE {cond} ORDER BY {pk}",
                row_hash_expr(&def.column_names()),
                def.quoted()
            );
            let rows: Vec<Row> = self
                .conn
                .exec(sql, params)
                .await
                .map_err(|e| classify(&format!("reading rows of {name} {}", u.label), e))?;
            for r in rows {
                let mut values = row_values(&r);
                let digest = match values.pop() {
                    Some(v) => mysql_async::from_value_opt::<u64>(v).map_err(|e| {
                        ConnectorError::Definite(format!("row digest of {name}: {e}"))
                    })?,
                    None => 0,
                };
                let (key, label) = key_of(&def.pk, &values);
                out.push(ItemDigest { key, label, digest });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// See [`VerifyScan::repair`]: the row deleted and inserted again with
    /// its own values in one transaction (foreign key checks off, so no
    /// cascade fires; triggers do), so the binlog holds it and this DC's
    /// source ships it; or deleted.
    async fn repair(
        &mut self,
        name: &str,
        key: &[u8],
        delete: bool,
    ) -> Result<bool, ConnectorError> {
        let def = self.keyed_def(name).await?;
        let cond = key_condition(&def.pk, key)?;
        let table = def.quoted();
        let what = |w: &str| format!("{w} {name} where {cond}");
        if delete {
            self.conn
                .query_drop(format!("DELETE FROM {table} WHERE {cond}"))
                .await
                .map_err(|e| classify(&what("deleting"), e))?;
            return Ok(self.conn.affected_rows() > 0);
        }
        let generated: Vec<String> = self
            .conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? \
                 AND TABLE_NAME = ? AND EXTRA LIKE '%GENERATED%'",
                (&def.schema, &def.table),
            )
            .await
            .map_err(|e| classify(&what("reading the generated columns of"), e))?;
        let cols: Vec<String> = def
            .column_names()
            .into_iter()
            .filter(|c| !generated.contains(c))
            .collect();
        let list = quoted_list(&cols);
        let r = async {
            self.conn
                .query_drop("SET SESSION foreign_key_checks = 0; BEGIN")
                .await?;
            let row: Option<Row> = self
                .conn
                .exec_first(
                    format!("SELECT {list} FROM {table} WHERE {cond} FOR UPDATE"),
                    (),
                )
                .await?;
            let Some(row) = row else {
                self.conn.query_drop("ROLLBACK").await?;
                return Ok(false);
            };
            self.conn
                .query_drop(format!("DELETE FROM {table} WHERE {cond}"))
                .await?;
            let marks = vec!["?"; cols.len()].join(", ");
            self.conn
                .exec_drop(
                    format!("INSERT INTO {table} ({list}) VALUES ({marks})"),
                    row_values(&row),
                )
                .await?;
            self.conn.query_drop("COMMIT").await?;
            Ok::<bool, mysql_async::Error>(true)
        }
        .await;
        let _ = self
            .conn
            .query_drop("SET SESSION foreign_key_checks = 1")
            .await;
        match r {
            Ok(done) => Ok(done),
            Err(e) => {
                let _ = self.conn.query_drop("ROLLBACK").await;
                Err(classify(&what("writing again"), e))
            }
        }
    }
}

impl VerifyScan for MysqlVerify {
    fn terms(&self) -> VerifyTerms {
        VerifyTerms {
            collection: "table",
            unit: "chunk",
            item: "row",
        }
    }

    fn collections(&mut self) -> BoxFuture<'_, Result<Vec<String>, ConnectorError>> {
        Box::pin(MysqlVerify::collections(self))
    }

    fn shape<'a>(
        &'a mut self,
        collection: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ConnectorError>> {
        Box::pin(async move { Ok(self.def(collection).await?.map(|d| d.shape())) })
    }

    fn plan<'a>(
        &'a mut self,
        collection: &'a str,
        after: Option<&'a VerifyUnit>,
    ) -> BoxFuture<'a, Result<Vec<VerifyUnit>, ConnectorError>> {
        Box::pin(MysqlVerify::plan(self, collection, after))
    }

    fn digest<'a>(
        &'a mut self,
        collection: &'a str,
        units: &'a [VerifyUnit],
    ) -> BoxFuture<'a, Result<Vec<UnitDigest>, ConnectorError>> {
        Box::pin(MysqlVerify::digest(self, collection, units))
    }

    fn items<'a>(
        &'a mut self,
        collection: &'a str,
        units: &'a [VerifyUnit],
    ) -> BoxFuture<'a, Result<Vec<ItemDigest>, ConnectorError>> {
        Box::pin(MysqlVerify::items(self, collection, units))
    }

    fn repair<'a>(
        &'a mut self,
        collection: &'a str,
        key: &'a [u8],
        delete: bool,
    ) -> BoxFuture<'a, Result<bool, ConnectorError>> {
        Box::pin(MysqlVerify::repair(self, collection, key, delete))
    }
}

/// The values of a result row, NULL for a missing one.
fn row_values(r: &Row) -> Vec<Value> {
    (0..r.len())
        .map(|i| r.as_ref(i).cloned().unwrap_or(Value::NULL))
        .collect()
}

/// `` `a`, `b` ``.
fn quoted_list(cols: &[String]) -> String {
    cols.iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The 64-bit row digest as SQL: the first 16 hex digits of the MD5 of
/// every column and every column's NULL flag, as an unsigned integer.
pub(crate) fn row_hash_expr(columns: &[String]) -> String {
    let mut parts: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    parts.extend(
        columns
            .iter()
            .map(|c| format!("ISNULL({})", quote_ident(c))),
    );
    format!(
        "CAST(CONV(LEFT(MD5(CONCAT_WS('#', {})), 16), 16, 10) AS UNSIGNED)",
        parts.join(", ")
    )
}

/// `pk >= lo AND pk < hi` for a (possibly composite) primary key, as SQL
/// with `?` placeholders and their parameters. A composite comparison is
/// expanded column by column (`a > ? OR (a = ? AND b >= ?)`), which every
/// server turns into index ranges. `TRUE` when both ends are open.
pub(crate) fn range_where(
    pk: &[String],
    lo: Option<&[Value]>,
    hi: Option<&[Value]>,
) -> (String, Vec<Value>) {
    let mut conds = Vec::new();
    let mut params = Vec::new();
    if let Some(lo) = lo {
        conds.push(compare(pk, lo, ">", ">=", &mut params));
    }
    if let Some(hi) = hi {
        conds.push(compare(pk, hi, "<", "<", &mut params));
    }
    if conds.is_empty() {
        ("TRUE".to_string(), params)
    } else {
        (conds.join(" AND "), params)
    }
}

/// `(c1 <strict> v1) OR (c1 = v1 AND c2 <strict> v2) OR ... OR (c1 = v1
/// AND ... AND cn <last> vn)`.
fn compare(
    pk: &[String],
    bound: &[Value],
    strict: &str,
    last: &str,
    params: &mut Vec<Value>,
) -> String {
    let n = pk.len().min(bound.len());
    let mut ors = Vec::with_capacity(n);
    for i in 0..n {
        let mut ands = Vec::with_capacity(i + 1);
        for j in 0..i {
            ands.push(format!("{} = ?", quote_ident(&pk[j])));
            params.push(bound[j].clone());
        }
        let op = if i + 1 == n { last } else { strict };
        ands.push(format!("{} {op} ?", quote_ident(&pk[i])));
        params.push(bound[i].clone());
        ors.push(format!("({})", ands.join(" AND ")));
    }
    format!("({})", ors.join(" OR "))
}

/// `id=42` / `a=1, b='x'`: key values as SQL literals.
fn key_text(pk: &[String], values: &[Value]) -> String {
    pk.iter()
        .zip(values)
        .map(|(c, v)| format!("{c}={}", v.as_sql(false)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A row's identity (the same bytes in every DC for the same key: its
/// values as SQL literals, NUL-separated; a literal never holds a NUL
/// byte, `as_sql` escapes it) and its label.
fn key_of(pk: &[String], values: &[Value]) -> (Vec<u8>, String) {
    let label = key_text(pk, values);
    let key = values
        .iter()
        .take(pk.len())
        .map(|v| v.as_sql(false))
        .collect::<Vec<_>>()
        .join("\0");
    (key.into_bytes(), label)
}

/// `` `a` = 1 AND `b` = 'x' ``: the row named by a [`key_of`] key.
fn key_condition(pk: &[String], key: &[u8]) -> Result<String, ConnectorError> {
    let text = std::str::from_utf8(key)
        .map_err(|_| ConnectorError::Definite("a row key that is not text".into()))?;
    let literals: Vec<&str> = text.split('\0').collect();
    if literals.len() != pk.len() {
        return Err(ConnectorError::Definite(format!(
            "a row key of {} value(s) for a primary key of {} column(s)",
            literals.len(),
            pk.len()
        )));
    }
    Ok(pk
        .iter()
        .zip(literals)
        .map(|(c, l)| format!("{} = {l}", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(" AND "))
}

/// `id >= 10000 and < 20000`, `from the start to id < 100`,
/// `id >= 900 to the end`, `the whole table`.
pub(crate) fn chunk_label(pk: &[String], c: &Chunk) -> String {
    let tuple = |v: &[Value]| {
        if pk.len() == 1 {
            key_text(pk, v).replacen('=', " ", 1)
        } else {
            format!("({})", key_text(pk, v))
        }
    };
    match (&c.lo, &c.hi) {
        (None, None) => "the whole table".to_string(),
        (Some(lo), None) => format!("from {} to the end", tuple(lo)),
        (None, Some(hi)) => format!("from the start to before {}", tuple(hi)),
        (Some(lo), Some(hi)) => format!("from {} to before {}", tuple(lo), tuple(hi)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pk(cols: &[&str]) -> Vec<String> {
        cols.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn a_single_column_range_is_two_comparisons() {
        let (sql, params) = range_where(
            &pk(&["id"]),
            Some(&[Value::Int(10)]),
            Some(&[Value::Int(20)]),
        );
        assert_eq!(sql, "((`id` >= ?)) AND ((`id` < ?))");
        assert_eq!(params, vec![Value::Int(10), Value::Int(20)]);
        assert_eq!(range_where(&pk(&["id"]), None, None).0, "TRUE");
    }

    #[test]
    fn a_composite_range_is_expanded_column_by_column() {
        let lo = [Value::Int(1), Value::Bytes(b"x".to_vec())];
        let (sql, params) = range_where(&pk(&["a", "b"]), Some(&lo), None);
        assert_eq!(sql, "((`a` > ?) OR (`a` = ? AND `b` >= ?))");
        assert_eq!(
            params,
            vec![Value::Int(1), Value::Int(1), Value::Bytes(b"x".to_vec())]
        );
        let (sql, params) = range_where(
            &pk(&["a", "b", "c"]),
            None,
            Some(&[Value::Int(1), Value::Int(2), Value::Int(3)]),
        );
        assert_eq!(
            sql,
            "((`a` < ?) OR (`a` = ? AND `b` < ?) OR (`a` = ? AND `b` = ? AND `c` < ?))"
        );
        assert_eq!(params.len(), 6);
    }

    #[test]
    fn the_row_digest_covers_every_column_and_its_null_flag() {
        assert_eq!(
            row_hash_expr(&pk(&["id", "n`ote"])),
            "CAST(CONV(LEFT(MD5(CONCAT_WS('#', `id`, `n``ote`, ISNULL(`id`), \
             ISNULL(`n``ote`))), 16), 16, 10) AS UNSIGNED)"
        );
    }

    #[test]
    fn chunks_and_keys_read_as_sql() {
        let c = Chunk {
            lo: Some(vec![Value::Int(100)]),
            hi: Some(vec![Value::Int(200)]),
        };
        assert_eq!(
            chunk_label(&pk(&["id"]), &c),
            "from id 100 to before id 200"
        );
        let c = Chunk {
            lo: None,
            hi: Some(vec![Value::Int(1), Value::Bytes(b"it's".to_vec())]),
        };
        assert_eq!(
            chunk_label(&pk(&["a", "b"]), &c),
            "from the start to before (a=1, b='it\\'s')"
        );
        let (key, label) = key_of(&pk(&["id"]), &[Value::Int(42)]);
        assert_eq!((key, label.as_str()), (b"42".to_vec(), "id=42"));
        let two = pk(&["a", "b"]);
        let (key, _) = key_of(&two, &[Value::Int(1), Value::Bytes(b"x, y".to_vec())]);
        assert_eq!(
            key_condition(&two, &key).unwrap(),
            "`a` = 1 AND `b` = 'x, y'",
            "a key reads back as the row's condition, commas in values included"
        );
        assert!(key_condition(&pk(&["id"]), &key).is_err());
    }
}
