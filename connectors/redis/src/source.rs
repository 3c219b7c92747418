//! The tailing half: a replica speaking the Redis replication protocol
//! (<https://redis.io/docs/latest/operate/oss_and_stack/management/replication/>)
//! over a raw TCP connection.
//!
//! Handshake: `AUTH` (if the URL has a password), `INFO cluster` (Redis
//! Cluster is refused), `PING`, `REPLCONF listening-port`, `REPLCONF capa eof
//! capa psync2`, then `PSYNC <replid> <offset+1>` when resuming from a
//! continuable position, else `PSYNC ? -1`.
//!
//! `+FULLRESYNC`: the RDB bulk (`$<len>\r\n<bytes>` or, diskless,
//! `$EOF:<40-byte mark>\r\n<bytes><mark>`) is read into memory, parsed and
//! emitted as Local transactions that recreate every key; every one but the
//! last carries a `snapshot` position, which a restart cannot continue (it
//! does a new full sync). `+CONTINUE`: the stream goes on from the offset.
//!
//! The primary starts streaming only after the first `REPLCONF ACK`; we ack
//! every second, and answer `REPLCONF GETACK`, with the *durable* offset from
//! `cx.durable`, never the received one. Progress (offset) advances by the
//! exact byte length of each frame.

use crate::commands::{self, KeyFilter};
use crate::config::{FlushPolicy, RedisOptions};
use crate::position::ReplPosition;
use crate::rdb;
use crate::resp::{self, Reply};
use crate::stream::StreamState;
use dcsync_core::connector::{ConnectorError, Source, SourceContext, SourceEvent};
use dcsync_core::{Change, Payload, RedisCommand};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Full resyncs that happened on a reconnect (resume position given but the
/// primary answered `+FULLRESYNC`), process-wide, for the agent's metrics.
pub static FULL_RESYNCS: AtomicU64 = AtomicU64::new(0);
/// Successful partial resyncs (`+CONTINUE`), process-wide.
pub static PARTIAL_RESYNCS: AtomicU64 = AtomicU64::new(0);

/// Commands per transaction when emitting an RDB.
pub const RDB_COMMANDS_PER_TXN: usize = 1000;
/// Largest batch of consecutive non-MULTI commands in one Local event.
pub const STREAM_COMMANDS_PER_TXN: usize = 1000;
/// No byte from the primary for this long means the link is dead (Redis'
/// default `repl-timeout`).
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Interval of `REPLCONF ACK`.
pub const ACK_INTERVAL: Duration = Duration::from_secs(1);

/// How the last (re)connect synchronised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// Not connected yet.
    None,
    /// First start: full sync without a resume position.
    Initial,
    /// `+FULLRESYNC` although a resume position was given.
    FullResync,
    /// `+CONTINUE`.
    Partial,
}

/// Counters of one source, readable while it runs (see
/// [`RedisSource::stats`]).
#[derive(Debug, Default)]
pub struct SyncStats {
    /// Full resyncs on reconnect (`+FULLRESYNC` with a resume position).
    pub full_resyncs: AtomicU64,
    /// Partial resyncs (`+CONTINUE`).
    pub partial_resyncs: AtomicU64,
    /// Initial full syncs (no resume position).
    pub initial_syncs: AtomicU64,
    last: AtomicU8,
}

impl SyncStats {
    /// Kind of the last synchronisation.
    pub fn last_sync_kind(&self) -> SyncKind {
        match self.last.load(Ordering::SeqCst) {
            1 => SyncKind::Initial,
            2 => SyncKind::FullResync,
            3 => SyncKind::Partial,
            _ => SyncKind::None,
        }
    }
    fn record(&self, k: SyncKind) {
        let (n, counter) = match k {
            SyncKind::None => return,
            SyncKind::Initial => (1, &self.initial_syncs),
            SyncKind::FullResync => (2, &self.full_resyncs),
            SyncKind::Partial => (3, &self.partial_resyncs),
        };
        counter.fetch_add(1, Ordering::SeqCst);
        self.last.store(n, Ordering::SeqCst);
    }
}

/// Redis replication source (a replica of the local primary).
pub struct RedisSource {
    url: String,
    stats: Arc<SyncStats>,
}

impl RedisSource {
    /// A source for `redis://[user:password@]host:port[/db]` (the db part is
    /// ignored: the replication stream covers every database).
    pub fn new(url: String) -> Self {
        RedisSource {
            url,
            stats: Arc::default(),
        }
    }

    /// Counters and last sync kind of this source; stays valid after `run`.
    pub fn stats(&self) -> Arc<SyncStats> {
        self.stats.clone()
    }
}

pub(crate) fn transient(what: &str, e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Transient(format!("redis replication: {what}: {e}"))
}

pub(crate) fn definite(msg: impl Into<String>) -> ConnectorError {
    ConnectorError::Definite(format!("redis replication: {}", msg.into()))
}

struct Url {
    addr: String,
    user: Option<String>,
    password: Option<String>,
}

fn parse_url(url: &str) -> Result<Url, ConnectorError> {
    let rest = url
        .strip_prefix("redis://")
        .ok_or_else(|| definite("url must start with redis://"))?;
    let (userinfo, hostpart) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let addr = hostpart.split('/').next().unwrap_or_default().to_string();
    if addr.is_empty() {
        return Err(definite("url has no host"));
    }
    let addr = if addr.contains(':') {
        addr
    } else {
        format!("{addr}:6379")
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some((user, pw)) => (
                (!user.is_empty()).then(|| user.to_string()),
                Some(pw.to_string()),
            ),
            None => (None, None),
        },
    };
    Ok(Url {
        addr,
        user,
        password,
    })
}

/// The connection to the primary: read half with a buffer, write half.
pub(crate) struct Conn {
    pub(crate) rd: OwnedReadHalf,
    pub(crate) wr: OwnedWriteHalf,
    pub(crate) buf: Vec<u8>,
}

impl Conn {
    /// Reads more bytes into `buf`; EOF or timeout is a transient error.
    pub(crate) async fn read_more(&mut self) -> Result<(), ConnectorError> {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = tokio::time::timeout(READ_TIMEOUT, self.rd.read(&mut chunk))
            .await
            .map_err(|_| transient("read", "no data from the primary for 60 s"))?
            .map_err(|e| transient("read", e))?;
        if n == 0 {
            return Err(transient("read", "the primary closed the connection"));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    pub(crate) async fn send(&mut self, args: &[&[u8]]) -> Result<(), ConnectorError> {
        self.wr
            .write_all(&resp::encode(args))
            .await
            .map_err(|e| transient("write", e))
    }

    /// Drops bare `\n` bytes at the start of the buffer: keep-alives the
    /// primary sends while it prepares the RDB (`repl-diskless-sync-delay`,
    /// fork time), before `+FULLRESYNC` and before the `$` of the RDB bulk.
    fn skip_keepalives(&mut self) {
        let skip = self.buf.iter().take_while(|b| **b == b'\n').count();
        if skip > 0 {
            self.buf.drain(..skip);
        }
    }

    /// Reads one CRLF-terminated line, after any keep-alives.
    async fn line(&mut self) -> Result<Vec<u8>, ConnectorError> {
        loop {
            self.skip_keepalives();
            let parsed = resp::parse_line(&self.buf).map_err(|e| definite(e.to_string()))?;
            if let Some((l, used)) = parsed {
                let l = l.to_vec();
                self.buf.drain(..used);
                return Ok(l);
            }
            self.read_more().await?;
        }
    }

    /// Reads one reply, after any keep-alives.
    async fn reply(&mut self) -> Result<Reply, ConnectorError> {
        loop {
            self.skip_keepalives();
            let parsed = resp::parse_reply(&self.buf).map_err(|e| definite(e.to_string()))?;
            if let Some((reply, used)) = parsed {
                self.buf.drain(..used);
                return Ok(reply);
            }
            self.read_more().await?;
        }
    }

    async fn command_ok(&mut self, args: &[&[u8]], what: &str) -> Result<String, ConnectorError> {
        self.send(args).await?;
        match self.reply().await? {
            Reply::Status(s) => Ok(s),
            Reply::Integer(n) => Ok(n.to_string()),
            Reply::Bulk(b) => Ok(String::from_utf8_lossy(&b.unwrap_or_default()).into_owned()),
            Reply::Error(e) if e.starts_with("LOADING") || e.starts_with("BUSY") => {
                Err(transient(what, e))
            }
            Reply::Error(e) => Err(definite(format!("{what} refused: {e}"))),
        }
    }

    /// Reads the RDB bulk that follows `+FULLRESYNC`.
    async fn read_rdb(&mut self) -> Result<Vec<u8>, ConnectorError> {
        // The primary sends "\n" keepalives while it prepares the RDB.
        let header = self.line().await?;
        let h = String::from_utf8_lossy(&header).into_owned();
        if let Some(mark) = h.strip_prefix("$EOF:") {
            let mark = mark.as_bytes().to_vec();
            if mark.len() != 40 {
                return Err(definite(format!("bad EOF mark in {h:?}")));
            }
            while !(self.buf.len() >= 40 && self.buf.ends_with(&mark)) {
                self.read_more().await?;
            }
            let len = self.buf.len() - 40;
            let data: Vec<u8> = self.buf.drain(..len).collect();
            self.buf.clear();
            Ok(data)
        } else if let Some(n) = h.strip_prefix('$') {
            let n: usize = n
                .parse()
                .map_err(|_| definite(format!("bad RDB bulk header {h:?}")))?;
            while self.buf.len() < n {
                self.read_more().await?;
            }
            Ok(self.buf.drain(..n).collect())
        } else {
            Err(definite(format!("expected the RDB bulk, got {h:?}")))
        }
    }
}

impl Source for RedisSource {
    async fn run(self, cx: SourceContext) -> Result<(), ConnectorError> {
        let shutdown = cx.shutdown.clone();
        let r = self.run_inner(cx).await;
        if *shutdown.borrow() {
            return Ok(());
        }
        if let Err(e) = &r {
            tracing::warn!(error = %e, "redis source stopped");
        }
        r
    }
}

impl RedisSource {
    async fn run_inner(self, cx: SourceContext) -> Result<(), ConnectorError> {
        let options = RedisOptions::of(&cx.store)?.clone();
        // A sentinel URL is asked again on every (re)connect, so a source
        // restarted after its primary went away follows the failover.
        let resolved = crate::url::resolve(&self.url).await?;
        if let Some(via) = &resolved.via {
            tracing::info!(store = %cx.store.name, "redis source: {via}");
        }
        let url = parse_url(&resolved.url)?;
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&url.addr))
            .await
            .map_err(|_| transient("connect", format!("{} timed out", url.addr)))?
            .map_err(|e| transient("connect", format!("{}: {e}", url.addr)))?;
        let _ = stream.set_nodelay(true);
        let local_port = stream.local_addr().map(|a| a.port()).unwrap_or(0);
        let (rd, wr) = stream.into_split();
        let mut conn = Conn {
            rd,
            wr,
            buf: Vec::new(),
        };
        if let Some(pw) = &url.password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(u) = &url.user {
                args.push(u.as_bytes());
            }
            args.push(pw.as_bytes());
            conn.command_ok(&args, "AUTH").await?;
        }
        if resolved.is_sentinel() {
            let info = conn
                .command_ok(&[b"INFO", b"replication"], "INFO replication")
                .await?;
            match crate::url::role_of(&info) {
                Some("master") => {}
                role => return Err(crate::url::not_master(&resolved, role.unwrap_or("unknown"))),
            }
        }
        let info = conn
            .command_ok(&[b"INFO", b"cluster"], "INFO cluster")
            .await?;
        if info.lines().any(|l| l.trim() == "cluster_enabled:1") {
            return Err(definite("Redis Cluster is not supported yet"));
        }
        conn.command_ok(&[b"PING"], "PING").await?;
        let port = local_port.to_string();
        conn.command_ok(
            &[b"REPLCONF", b"listening-port", port.as_bytes()],
            "REPLCONF listening-port",
        )
        .await?;
        conn.command_ok(
            &[b"REPLCONF", b"capa", b"eof", b"capa", b"psync2"],
            "REPLCONF capa",
        )
        .await?;
        let resume = cx
            .resume
            .as_ref()
            .map(ReplPosition::from_position)
            .transpose()?;
        let psync_reply = match resume.as_ref().filter(|r| !r.snapshot) {
            Some(r) => {
                let next = (r.offset + 1).to_string();
                conn.send(&[b"PSYNC", r.replid.as_bytes(), next.as_bytes()])
                    .await?;
                conn.reply().await?
            }
            None => {
                conn.send(&[b"PSYNC", b"?", b"-1"]).await?;
                conn.reply().await?
            }
        };
        let status = match psync_reply {
            Reply::Status(s) => s,
            Reply::Error(e) if e.starts_with("NOMASTERLINK") || e.starts_with("LOADING") => {
                return Err(transient("PSYNC", e))
            }
            Reply::Error(e) => return Err(definite(format!("PSYNC refused: {e}"))),
            other @ (Reply::Integer(_) | Reply::Bulk(_)) => {
                return Err(definite(format!("PSYNC answered with {other:?}")))
            }
        };
        let mut words = status.split_whitespace();
        let state = match words.next() {
            Some("FULLRESYNC") => {
                let replid = words.next().unwrap_or_default().to_string();
                let offset: u64 = words
                    .next()
                    .and_then(|o| o.parse().ok())
                    .ok_or_else(|| definite(format!("bad FULLRESYNC reply {status:?}")))?;
                let mut st = StreamState::new(&cx, &options, replid.clone(), offset);
                if let Some(r) = &resume {
                    FULL_RESYNCS.fetch_add(1, Ordering::SeqCst);
                    self.stats.record(SyncKind::FullResync);
                    let detail = format!(
                        "full resync from {}: it could not continue from {} (its backlog no \
                         longer holds that offset, or it has another replication history: a \
                         replica promoted before it had everything); the whole dataset is \
                         re-sent from an RDB (replid {replid} offset {offset})",
                        resolved.addr,
                        r.display()
                    );
                    tracing::warn!(store = %cx.store.name, "redis primary answered +FULLRESYNC: {detail}");
                    st.emit(&mut conn, SourceEvent::Resync { full: true, detail })
                        .await?;
                } else {
                    self.stats.record(SyncKind::Initial);
                    tracing::info!(replid, offset, "redis initial full sync");
                }
                let data = conn.read_rdb().await?;
                emit_rdb(&data, &options, &mut st, &mut conn).await?;
                st
            }
            Some("CONTINUE") => {
                let Some(r) = resume else {
                    return Err(definite("+CONTINUE without a resume position"));
                };
                // psync2: a server whose replication id is not ours (a
                // promoted replica that kept ours as replid2) answers
                // `+CONTINUE <its replid>`; the stream goes on in its id.
                let new_id = words.next().filter(|id| *id != r.replid);
                PARTIAL_RESYNCS.fetch_add(1, Ordering::SeqCst);
                self.stats.record(SyncKind::Partial);
                let detail = match new_id {
                    Some(id) => format!(
                        "+CONTINUE: continued with PSYNC on the promoted primary (replid2) at {} \
                         from offset {}: replid {} is now {id}",
                        resolved.addr, r.offset, r.replid
                    ),
                    None => format!(
                        "+CONTINUE: continued with PSYNC at {} from {}",
                        resolved.addr,
                        r.display()
                    ),
                };
                tracing::info!(store = %cx.store.name, "redis partial resync: {detail}");
                let replid = new_id.map(str::to_string).unwrap_or(r.replid);
                let mut st = StreamState::new(&cx, &options, replid, r.offset);
                st.emit(
                    &mut conn,
                    SourceEvent::Resync {
                        full: false,
                        detail,
                    },
                )
                .await?;
                st
            }
            _ => return Err(definite(format!("unexpected PSYNC reply {status:?}"))),
        };
        crate::stream::run_stream(cx, conn, state).await
    }
}

/// Parses the RDB and emits it as Local transactions of at most
/// [`RDB_COMMANDS_PER_TXN`] commands.
async fn emit_rdb(
    data: &[u8],
    options: &RedisOptions,
    st: &mut StreamState,
    conn: &mut Conn,
) -> Result<(), ConnectorError> {
    let parsed = rdb::parse(data).map_err(|e| definite(format!("full sync: {e}")))?;
    tracing::info!(
        version = parsed.version,
        keys = parsed.entries.len(),
        bytes = data.len(),
        "redis full sync: RDB parsed"
    );
    let filter = KeyFilter::new(options);
    let mut cmds: Vec<Change> = Vec::new();
    for f in &parsed.functions {
        cmds.push(Change {
            unit: None,
            payload: Payload::Redis(RedisCommand {
                db: 0,
                args: vec![
                    b"FUNCTION".to_vec(),
                    b"LOAD".to_vec(),
                    b"REPLACE".to_vec(),
                    f.clone(),
                ],
            }),
        });
    }
    let mut batches: Vec<Vec<Change>> = Vec::new();
    for e in &parsed.entries {
        if !filter.db_passes(e.db) || !filter.key_passes(&e.key) {
            continue;
        }
        let unit = st.unit_of(&e.key);
        for args in commands::recreate(e) {
            cmds.push(Change {
                unit,
                payload: Payload::Redis(RedisCommand { db: e.db, args }),
            });
            if cmds.len() >= RDB_COMMANDS_PER_TXN {
                batches.push(std::mem::take(&mut cmds));
            }
        }
    }
    if !cmds.is_empty() {
        batches.push(cmds);
    }
    let n = batches.len();
    for (i, changes) in batches.into_iter().enumerate() {
        let pos = st.position(i + 1 < n);
        st.emit(
            conn,
            SourceEvent::Local {
                changes,
                // The RDB is the store's state, not writes: stamped as a
                // snapshot copy, so every write made anywhere wins over
                // it, and the agent leaves out the keys whose value another
                // DC wrote (docs/conflicts.md, "Redis").
                commit_ts_ms: dcsync_core::connector::SNAPSHOT_COMMIT_MS,
                position: pos,
            },
        )
        .await?;
    }
    // The last RDB transaction (or this Progress) closes the snapshot.
    if n == 0 {
        let position = st.position(false);
        st.emit(conn, SourceEvent::Progress { position }).await?;
    }
    tracing::info!(transactions = n, "redis full sync: RDB emitted");
    Ok(())
}

/// Whether a `FLUSHDB`/`FLUSHALL` may be shipped under `policy`; logs the
/// refusal.
pub(crate) fn flush_allowed(policy: FlushPolicy, args: &[Vec<u8>], db: u32) -> bool {
    match policy {
        FlushPolicy::Replicate => true,
        FlushPolicy::Refuse => {
            tracing::error!(
                command = %String::from_utf8_lossy(&commands::name(args)),
                db,
                "redis source: {} seen on the replication stream and NOT shipped (store flush \
                 policy is \"refuse\"); the other DCs keep their data",
                String::from_utf8_lossy(&commands::name(args))
            );
            false
        }
    }
}
