//! The checks behind `dcsync check --connect` for a Redis store
//! ([`inspect`]), and the same replication-backlog rule logged when a
//! source starts ([`warn_if_backlog_small`]).
//!
//! # The backlog rule
//! A source that reconnects (agent restart, line cut, `kill -9`) resumes
//! with `PSYNC <replid> <offset>`; Redis answers `+CONTINUE` only if the
//! offset is still in its replication backlog (`repl-backlog-size`, default
//! 1 MiB), else `+FULLRESYNC`: a new RDB of the whole dataset. dcsync wants
//! the backlog to hold at least [`BACKLOG_SECONDS`] of writes and never less
//! than [`MIN_BACKLOG_BYTES`]. The warning's wording never says "full
//! resync": tests and operators grep the log for that phrase to find real
//! ones. The write rate is sampled over [`SAMPLE`]:
//! the growth of `master_repl_offset` when the backlog is active (a replica
//! is or was attached), else the growth of `total_net_input_bytes` (every
//! command sent to the server, reads included: an overestimate).

use dcsync_core::connector::{ConnectorError, Finding, Inspection};
use dcsync_core::topology::{redact_url, StoreConfig};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Smallest replication backlog dcsync accepts without a warning (64 MiB).
pub const MIN_BACKLOG_BYTES: u64 = 64 << 20;
/// Seconds of writes the replication backlog should hold.
pub const BACKLOG_SECONDS: u64 = 60;
/// How long the write rate is sampled.
pub const SAMPLE: Duration = Duration::from_secs(1);
/// How long [`inspect`] waits for the server to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The backlog rule (see the module docs), pure: `Some(message)` when a
/// backlog of `backlog` bytes holds less than [`BACKLOG_SECONDS`] of writes
/// at `rate` bytes/s or is below [`MIN_BACKLOG_BYTES`]; the message names
/// both numbers and the fix. `rate_source` says how the rate was measured.
pub fn backlog_advice(backlog: u64, rate: u64, rate_source: &str) -> Option<String> {
    let needed = rate.saturating_mul(BACKLOG_SECONDS).max(MIN_BACKLOG_BYTES);
    if backlog >= needed {
        return None;
    }
    let recommended = needed.checked_next_power_of_two().unwrap_or(needed);
    let holds = match backlog.checked_div(rate) {
        Some(secs) => format!("it holds {secs} s of writes at the {rate} bytes/s {rate_source}"),
        None => format!("no writes in the {rate_source}"),
    };
    Some(format!(
        "repl-backlog-size is {backlog} bytes ({holds}); dcsync wants at least \
         {BACKLOG_SECONDS} s of writes and at least {MIN_BACKLOG_BYTES} bytes (64 MiB), or an \
         agent restart or line cut under load makes the primary send a new RDB of the whole \
         dataset instead of +CONTINUE; fix: CONFIG SET repl-backlog-size {recommended} \
         and repl-backlog-size {recommended} in redis.conf"
    ))
}

/// `key:value` lines of an `INFO` reply.
fn info_fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn number(fields: &BTreeMap<String, String>, key: &str) -> Option<u64> {
    fields.get(key).and_then(|v| v.parse().ok())
}

/// A driver error as a [`ConnectorError`]: I/O, dropped or refused
/// connections and timeouts are transient, the rest definite.
pub(crate) fn err(what: &str, e: redis::RedisError) -> ConnectorError {
    if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_connection_refusal() {
        ConnectorError::Transient(format!("{what}: {e}"))
    } else {
        ConnectorError::Definite(format!("{what}: {e}"))
    }
}

/// Connects to the store's server: for a sentinel URL, the master the
/// sentinels name (checked to be `role:master`).
pub(crate) async fn connect(
    url: &str,
) -> Result<redis::aio::MultiplexedConnection, ConnectorError> {
    let resolved = crate::url::resolve(url).await?;
    let url = resolved.url.as_str();
    let client = redis::Client::open(url)
        .map_err(|e| ConnectorError::Definite(format!("bad redis url {}: {e}", redact_url(url))))?;
    let mut conn = connect_client(client).await?;
    if resolved.is_sentinel() {
        let repl = info(&mut conn, "replication").await?;
        match repl.get("role").map(String::as_str) {
            Some("master") => {}
            role => return Err(crate::url::not_master(&resolved, role.unwrap_or("unknown"))),
        }
    }
    Ok(conn)
}

async fn connect_client(
    client: redis::Client,
) -> Result<redis::aio::MultiplexedConnection, ConnectorError> {
    tokio::time::timeout(CONNECT_TIMEOUT, client.get_multiplexed_async_connection())
        .await
        .map_err(|_| {
            ConnectorError::Transient(format!(
                "connect: no answer in {} s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| err("connect", e))
}

async fn info(
    conn: &mut redis::aio::MultiplexedConnection,
    section: &str,
) -> Result<BTreeMap<String, String>, ConnectorError> {
    let text: String = redis::cmd("INFO")
        .arg(section)
        .query_async(conn)
        .await
        .map_err(|e| err(&format!("INFO {section}"), e))?;
    Ok(info_fields(&text))
}

/// Samples the write rate and applies [`backlog_advice`]; `Ok(None)` when
/// the backlog is large enough.
async fn backlog_check(
    conn: &mut redis::aio::MultiplexedConnection,
) -> Result<Option<String>, ConnectorError> {
    let counters = |repl: &BTreeMap<String, String>, stats: &BTreeMap<String, String>| {
        (
            number(repl, "master_repl_offset").unwrap_or(0),
            number(stats, "total_net_input_bytes").unwrap_or(0),
        )
    };
    let repl = info(conn, "replication").await?;
    let before = counters(&repl, &info(conn, "stats").await?);
    let started = Instant::now();
    tokio::time::sleep(SAMPLE).await;
    let repl = info(conn, "replication").await?;
    let after = counters(&repl, &info(conn, "stats").await?);
    let elapsed_ms = (started.elapsed().as_millis() as u64).max(1);
    let Some(backlog) = number(&repl, "repl_backlog_size") else {
        return Ok(Some(
            "INFO replication reports no repl_backlog_size: cannot tell whether a restart \
             resumes with +CONTINUE; check repl-backlog-size (CONFIG GET repl-backlog-size)"
                .to_string(),
        ));
    };
    let active = number(&repl, "repl_backlog_active") == Some(1);
    let (delta, source) = if active {
        (
            after.0.saturating_sub(before.0),
            "write rate sampled over 1 s (master_repl_offset)",
        )
    } else {
        (
            after.1.saturating_sub(before.1),
            "command input rate sampled over 1 s (no replica attached yet, reads included)",
        )
    };
    let rate = delta.saturating_mul(1000) / elapsed_ms;
    Ok(backlog_advice(backlog, rate, source))
}

/// Inspects the Redis server at `url` (`dcsync check --connect`): Redis
/// Cluster (an error: the source refuses it) and the replication backlog
/// rule of the module docs (a warning). Takes about [`SAMPLE`].
///
/// Errors: [`ConnectorError::Definite`] for a bad URL or a refused `INFO`
/// (wrong password), [`ConnectorError::Transient`] when the server cannot
/// be reached in 10 s.
pub async fn inspect(url: String, store: StoreConfig) -> Result<Inspection, ConnectorError> {
    let _ = store;
    let mut conn = connect(&url).await?;
    let mut out = Inspection::default();
    let cluster = info(&mut conn, "cluster").await?;
    if cluster.get("cluster_enabled").map(String::as_str) == Some("1") {
        out.findings.push(Finding::error(
            "the server runs Redis Cluster (cluster_enabled:1), which dcsync does not \
             support yet: point the store at a standalone Redis",
        ));
    }
    if let Some(advice) = backlog_check(&mut conn).await? {
        out.findings.push(Finding::warning(advice));
    }
    Ok(out)
}

/// Logs the backlog rule's warning for `store` (once per store and process:
/// a source restarted after an error does not repeat it). Errors reaching
/// the server are left to the source, which reports them itself.
pub async fn warn_if_backlog_small(url: String, store: String) {
    static WARNED: std::sync::Mutex<std::collections::BTreeSet<String>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let first = WARNED
        .lock()
        .map(|mut w| w.insert(store.clone()))
        .unwrap_or(false);
    if !first {
        return;
    }
    let advice = match connect(&url).await {
        Ok(mut conn) => backlog_check(&mut conn).await,
        Err(e) => Err(e),
    };
    match advice {
        Ok(Some(advice)) => tracing::warn!(%store, "redis source: {advice}"),
        Ok(None) => {}
        Err(e) => tracing::debug!(%store, error = %e, "redis source: backlog check failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_backlog_is_too_small_even_when_idle() {
        let m = backlog_advice(1 << 20, 0, "sampled").unwrap_or_default();
        assert!(m.contains("repl-backlog-size is 1048576 bytes"), "{m}");
        assert!(m.contains("CONFIG SET repl-backlog-size 67108864"), "{m}");
        assert!(backlog_advice(64 << 20, 0, "sampled").is_none());
    }

    #[test]
    fn a_busy_server_needs_a_minute_of_writes() {
        // 2 MB/s: 64 MiB hold only 33 s; 120 MB are needed, 128 MiB advised.
        let m = backlog_advice(64 << 20, 2_000_000, "sampled").unwrap_or_default();
        assert!(m.contains("it holds 33 s of writes"), "{m}");
        assert!(m.contains("CONFIG SET repl-backlog-size 134217728"), "{m}");
        assert!(backlog_advice(128 << 20, 2_000_000, "sampled").is_none());
    }

    #[test]
    fn info_lines_are_split_at_the_first_colon() {
        let f = info_fields("# Replication\r\nrole:master\r\nmaster_replid:ab:c\r\n");
        assert_eq!(f.get("role").map(String::as_str), Some("master"));
        assert_eq!(f.get("master_replid").map(String::as_str), Some("ab:c"));
    }
}
