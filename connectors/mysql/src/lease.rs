//! The agent lease in `dcsync.agent_lease` (see
//! [`dcsync_core::connector::Connector::lease`]): one row per DC, `holder`
//! and `expires_at` (server time, `DATETIME(6)`), taken or renewed with one
//! atomic `INSERT … ON DUPLICATE KEY UPDATE`. The `dcsync` schema never
//! replicates, so the renewals are not shipped.

use crate::sink::{open, quote_ident};
use crate::MARKER_SCHEMA;
use dcsync_core::connector::{ConnectorError, Lease, LeaseRequest};
use mysql_async::prelude::Queryable;

/// Name of the lease table in the `dcsync` schema.
pub const LEASE_TABLE: &str = "agent_lease";

fn err(what: &str, e: mysql_async::Error) -> ConnectorError {
    ConnectorError::Transient(format!("agent lease: {what}: {e}"))
}

/// Takes or renews the lease of `req.dc` for `req.holder` (see the module
/// docs). Errors: transient (the store is unreachable or refuses).
pub async fn lease(url: &str, req: &LeaseRequest) -> Result<Lease, ConnectorError> {
    let mut conn = open(url).await?;
    let table = format!(
        "{}.{}",
        quote_ident(MARKER_SCHEMA),
        quote_ident(LEASE_TABLE)
    );
    conn.query_drop(format!(
        "CREATE DATABASE IF NOT EXISTS {s}; \
         CREATE TABLE IF NOT EXISTS {table} ( \
           dc VARCHAR(64) NOT NULL PRIMARY KEY, \
           holder VARCHAR(255) NOT NULL, \
           expires_at DATETIME(6) NOT NULL \
         ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        s = quote_ident(MARKER_SCHEMA)
    ))
    .await
    .map_err(|e| err("creating dcsync.agent_lease", e))?;
    // `holder` is assigned first, so the `expires_at` expression sees the
    // new holder: the lease is extended only for whoever holds it now.
    conn.exec_drop(
        format!(
            "INSERT INTO {table} (dc, holder, expires_at) \
             VALUES (?, ?, NOW(6) + INTERVAL ? MICROSECOND) \
             ON DUPLICATE KEY UPDATE \
               holder = IF(holder = VALUES(holder) OR expires_at < NOW(6), VALUES(holder), holder), \
               expires_at = IF(holder = VALUES(holder), VALUES(expires_at), expires_at)"
        ),
        (&req.dc, &req.holder, req.ttl_ms.saturating_mul(1000)),
    )
    .await
    .map_err(|e| err("taking the lease", e))?;
    let row: Option<(String, i64)> = conn
        .exec_first(
            format!(
                "SELECT holder, TIMESTAMPDIFF(MICROSECOND, NOW(6), expires_at) FROM {table} WHERE dc = ?"
            ),
            (&req.dc,),
        )
        .await
        .map_err(|e| err("reading the lease", e))?;
    let _ = conn.disconnect().await;
    let (holder, us) = row.ok_or_else(|| {
        ConnectorError::Transient(format!(
            "agent lease: no row for dc {} after writing it",
            req.dc
        ))
    })?;
    Ok(Lease {
        holder,
        remaining_ms: u64::try_from(us).unwrap_or(0) / 1000,
    })
}
