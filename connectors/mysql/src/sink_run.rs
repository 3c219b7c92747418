//! Running one commit group's partition transactions concurrently, and how
//! each ended (see the module docs of `sink.rs`; under `lww` / `owner` each
//! partition runs its [`super::lww::Check`] before its `COMMIT`).

use super::{classify, lww, MysqlSink, ROLLBACK_TIMEOUT};
use dcsync_core::connector::ConnectorError;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

/// One partition's transaction, not yet awaited.
pub(super) type PartitionFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = PartitionResult> + Send>>;

/// The partition transactions of one group, built but not yet run (they run
/// concurrently in [`Planned::await_all`]).
pub(super) struct Planned(pub(super) Vec<(usize, PartitionFuture)>);

impl Planned {
    /// Awaits every partition, puts the usable connections back into
    /// `sink`, and returns the first error with whether all failures were
    /// deadlocks.
    pub(super) async fn await_all(
        self,
        sink: &mut MysqlSink,
    ) -> Result<(), (ConnectorError, bool)> {
        let (parts, futures): (Vec<usize>, Vec<_>) = self.0.into_iter().unzip();
        let results = futures_util::future::join_all(futures).await;
        let mut first_err = None;
        let mut all_deadlocks = true;
        for (p, r) in parts.into_iter().zip(results) {
            sink.conns[p] = r.conn;
            if let Err(e) = r.result {
                all_deadlocks &= r.deadlock;
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), |e| Err((e, all_deadlocks)))
    }
}

/// Runs one partition's transaction on `conn`: its query chunks (the
/// first starts with `BEGIN` and the marker, the last ends with `COMMIT`).
/// Errors name the tables being applied.
async fn run_partition(
    conn: &mut Conn,
    chunks: Vec<Vec<u8>>,
    tables: &str,
) -> Result<(), (String, mysql_async::Error)> {
    for chunk in chunks {
        conn.query_drop(chunk)
            .await
            .map_err(|e| (format!("applying to {tables}"), e))?;
    }
    Ok(())
}

/// How one partition's transaction ended.
pub(super) struct PartitionResult {
    /// The connection, if still usable.
    conn: Option<Conn>,
    result: Result<(), ConnectorError>,
    /// The server chose this transaction as a deadlock victim (1213) and
    /// rolled it back: another partition held a lock it needed (rows of
    /// different partitions can share a secondary unique value).
    deadlock: bool,
}

/// [`run_partition`], then after a failure a `ROLLBACK` (bounded by
/// [`ROLLBACK_TIMEOUT`]).
pub(super) async fn run_or_roll_back(
    mut conn: Conn,
    chunks: Vec<Vec<u8>>,
    tables: String,
    check: Option<std::sync::Arc<lww::Check>>,
) -> PartitionResult {
    let retry_duplicates = check.is_some();
    let ran = run_partition(&mut conn, chunks, &tables).await;
    let ran = match (ran, check) {
        (Ok(()), Some(check)) => match check.finish(&mut conn).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                // Overtaken by a local write: decided again with the
                // partitions that did not commit, like a deadlock.
                let _ = tokio::time::timeout(ROLLBACK_TIMEOUT, conn.query_drop("ROLLBACK")).await;
                return PartitionResult {
                    conn: Some(conn),
                    result: Err(ConnectorError::Transient(
                        "a local write with a greater version landed on a row of the group; \
                         it is decided again"
                            .into(),
                    )),
                    deadlock: true,
                };
            }
            Err(e) => {
                // Nothing of this partition committed; the sender retries
                // the group with backoff (a source still behind, a deadlock
                // while reading rows to re-ship).
                let _ = tokio::time::timeout(ROLLBACK_TIMEOUT, conn.query_drop("ROLLBACK")).await;
                return PartitionResult {
                    conn: None,
                    result: Err(e),
                    deadlock: false,
                };
            }
        },
        (r, _) => r,
    };
    match ran {
        Ok(()) => PartitionResult {
            conn: Some(conn),
            result: Ok(()),
            deadlock: false,
        },
        Err((what, e)) => {
            // 1213: deadlock victim. 1062 (duplicate key): under lww, a
            // unique value taken meanwhile by a local write; both are
            // retried with the partitions that did not commit.
            let deadlock = matches!(&e, mysql_async::Error::Server(s) if s.code == 1213
                || (s.code == 1062 && retry_duplicates));
            let e = classify(&what, e);
            let rolled_back = matches!(
                tokio::time::timeout(ROLLBACK_TIMEOUT, conn.query_drop("ROLLBACK")).await,
                Ok(Ok(()))
            );
            let keep = rolled_back && (deadlock || !e.is_transient());
            PartitionResult {
                conn: keep.then_some(conn),
                result: Err(e),
                deadlock,
            }
        }
    }
}
