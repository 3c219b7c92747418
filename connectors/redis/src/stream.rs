//! The command stream after the sync: RESP frames to transactions.
//!
//! - `SELECT n` sets the database of the following commands.
//! - `MULTI` ... `EXEC` is one transaction, emitted at `EXEC`; if its first
//!   command is the sink's marker write it is an [`SourceEvent::Echo`].
//! - Consecutive commands outside `MULTI` are coalesced into one Local event
//!   (at most [`STREAM_COMMANDS_PER_TXN`] commands, ending where the buffered
//!   input ends): a Local event may hold several independent commands, in
//!   source order.
//! - A lone marker write (a sink block whose data commands were no-ops is
//!   propagated without `MULTI`) is an Echo too.
//! - `PING` and `REPLCONF GETACK` only advance the offset (GETACK is answered
//!   with the durable offset).

use crate::commands::{self, KeyFilter, Verdict};
use crate::config::{FlushPolicy, RedisOptions};
use crate::position::ReplPosition;
use crate::resp;
use crate::source::{
    definite, flush_allowed, transient, Conn, ACK_INTERVAL, READ_TIMEOUT, STREAM_COMMANDS_PER_TXN,
};
use crate::unit::UnitRules;
use dcsync_core::connector::{ConnectorError, Position, SourceContext, SourceEvent};
use dcsync_core::{Change, Payload, RedisCommand};
use std::time::Instant;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};

/// Replica state while streaming.
pub(crate) struct StreamState {
    replid: String,
    /// Replication offset of the last byte consumed.
    offset: u64,
    db: u32,
    multi: Option<Vec<(u32, Vec<Vec<u8>>)>>,
    pending: Vec<Change>,
    last_emitted: u64,
    filter: KeyFilter,
    flush: FlushPolicy,
    units: UnitRules,
    events: mpsc::Sender<SourceEvent>,
    /// Commands refused by the flush policy since the last report:
    /// (command, db).
    refused: Vec<(String, u32)>,
    durable: watch::Receiver<Option<Position>>,
    shutdown: watch::Receiver<bool>,
    ack_tick: tokio::time::Interval,
}

impl StreamState {
    pub(crate) fn new(
        cx: &SourceContext,
        options: &RedisOptions,
        replid: String,
        offset: u64,
    ) -> Self {
        let mut ack_tick = tokio::time::interval(ACK_INTERVAL);
        ack_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        StreamState {
            replid,
            offset,
            db: 0,
            multi: None,
            pending: Vec::new(),
            last_emitted: offset,
            filter: KeyFilter::new(options),
            flush: options.flush,
            units: UnitRules::new(options, cx.units.count),
            events: cx.events.clone(),
            refused: Vec::new(),
            durable: cx.durable.clone(),
            shutdown: cx.shutdown.clone(),
            ack_tick,
        }
    }

    /// Unit of `key` per the store's unit rules; `None` if the key has no
    /// unit.
    pub(crate) fn unit_of(&self, key: &[u8]) -> Option<u32> {
        self.units.unit_of(key)
    }

    fn pos_at(&self, offset: u64, snapshot: bool) -> Position {
        ReplPosition {
            replid: self.replid.clone(),
            offset,
            snapshot,
        }
        .to_position()
    }

    /// The current position (`snapshot` while an RDB is being emitted).
    pub(crate) fn position(&self, snapshot: bool) -> Position {
        self.pos_at(self.offset, snapshot)
    }

    /// The offset to acknowledge: the durable one if it belongs to this
    /// replication id and is not inside a full sync, else 0.
    fn ack_offset(&self) -> u64 {
        self.durable
            .borrow()
            .as_ref()
            .and_then(|p| ReplPosition::from_position(p).ok())
            .filter(|r| r.replid == self.replid && !r.snapshot)
            .map(|r| r.offset)
            .unwrap_or(0)
    }

    async fn ack(&self, conn: &mut Conn) -> Result<(), ConnectorError> {
        let off = self.ack_offset().to_string();
        conn.send(&[b"REPLCONF", b"ACK", off.as_bytes()]).await
    }

    /// Sends an event; keeps acknowledging while the channel is full (full
    /// means wait, never drop).
    pub(crate) async fn emit(
        &mut self,
        conn: &mut Conn,
        ev: SourceEvent,
    ) -> Result<(), ConnectorError> {
        loop {
            tokio::select! {
                permit = self.events.reserve() => {
                    let permit = permit
                        .map_err(|_| transient("emit", "the agent closed the event channel"))?;
                    permit.send(ev);
                    return Ok(());
                }
                _ = self.ack_tick.tick() => {
                    if *self.shutdown.borrow() {
                        return Err(transient("emit", "shutting down"));
                    }
                    self.ack(conn).await?;
                }
            }
        }
    }

    async fn flush_pending(&mut self, conn: &mut Conn, offset: u64) -> Result<(), ConnectorError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let changes = std::mem::take(&mut self.pending);
        let position = self.pos_at(offset, false);
        self.last_emitted = offset;
        self.emit(
            conn,
            SourceEvent::Local {
                changes,
                // The replication stream carries no commit time: the agent's
                // HLC clock stamps it (above every stamp it applied or
                // observed, so a write made after an applied change is
                // versioned after it: docs/conflicts.md, "Redis").
                commit_ts_ms: 0,
                position,
            },
        )
        .await
    }

    fn change(&mut self, db: u32, args: &[Vec<u8>]) -> Option<Change> {
        let nm = commands::name(args);
        if matches!(nm.as_slice(), b"FLUSHDB" | b"FLUSHALL") && !flush_allowed(self.flush, args, db)
        {
            self.refused
                .push((String::from_utf8_lossy(&nm).into_owned(), db));
            return None;
        }
        match self.filter.command(db, args) {
            Verdict::Drop => None,
            Verdict::Keep { args, first_key } => Some(Change {
                unit: first_key.and_then(|k| self.unit_of(&k)),
                payload: Payload::Redis(RedisCommand { db, args }),
            }),
        }
    }

    /// Reports the commands the flush policy refused as
    /// [`SourceEvent::Skipped`] (counted in the status).
    async fn report_refused(&mut self, conn: &mut Conn) -> Result<(), ConnectorError> {
        for (command, db) in std::mem::take(&mut self.refused) {
            let position = self.pos_at(self.offset, false).display;
            self.emit(
                conn,
                SourceEvent::Skipped {
                    what: "flush",
                    count: 1,
                    detail: format!("{command} in db {db} (flush = \"refuse\")"),
                    position,
                },
            )
            .await?;
        }
        Ok(())
    }

    async fn handle(
        &mut self,
        conn: &mut Conn,
        args: Vec<Vec<u8>>,
        before: u64,
    ) -> Result<(), ConnectorError> {
        self.handle_command(conn, args, before).await?;
        if !self.refused.is_empty() {
            self.report_refused(conn).await?;
        }
        Ok(())
    }

    async fn handle_command(
        &mut self,
        conn: &mut Conn,
        args: Vec<Vec<u8>>,
        before: u64,
    ) -> Result<(), ConnectorError> {
        let nm = commands::name(&args);
        match nm.as_slice() {
            b"SELECT" => {
                self.db = args
                    .get(1)
                    .and_then(|a| std::str::from_utf8(a).ok())
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| definite("SELECT without a valid database index"))?;
            }
            b"PING" => {}
            b"REPLCONF" => {
                if args
                    .get(1)
                    .is_some_and(|a| a.eq_ignore_ascii_case(b"GETACK"))
                {
                    self.ack(conn).await?;
                }
            }
            b"MULTI" => {
                self.flush_pending(conn, before).await?;
                self.multi = Some(Vec::new());
            }
            b"EXEC" => {
                let block = self
                    .multi
                    .take()
                    .ok_or_else(|| definite("EXEC without MULTI on the replication stream"))?;
                let position = self.pos_at(self.offset, false);
                self.last_emitted = self.offset;
                let ev = match block.first().and_then(|(_, a)| commands::marker_of(a)) {
                    Some((origin, seq)) => SourceEvent::Echo {
                        origin,
                        seq,
                        hlc: dcsync_core::Hlc(0),
                        position,
                    },
                    None => {
                        let changes: Vec<Change> = block
                            .iter()
                            .filter_map(|(db, a)| self.change(*db, a))
                            .collect();
                        if changes.is_empty() {
                            SourceEvent::Progress { position }
                        } else {
                            SourceEvent::Local {
                                changes,
                                // The replication stream carries no commit time: the agent's
                                // HLC clock stamps it (above every stamp it applied or
                                // observed, so a write made after an applied change is
                                // versioned after it: docs/conflicts.md, "Redis").
                                commit_ts_ms: 0,
                                position,
                            }
                        }
                    }
                };
                self.emit(conn, ev).await?;
            }
            _ => {
                if let Some(block) = self.multi.as_mut() {
                    block.push((self.db, args));
                } else if let Some((origin, seq)) = commands::marker_of(&args) {
                    self.flush_pending(conn, before).await?;
                    let position = self.pos_at(self.offset, false);
                    self.last_emitted = self.offset;
                    self.emit(
                        conn,
                        SourceEvent::Echo {
                            origin,
                            seq,
                            hlc: dcsync_core::Hlc(0),
                            position,
                        },
                    )
                    .await?;
                } else if let Some(c) = self.change(self.db, &args) {
                    self.pending.push(c);
                    if self.pending.len() >= STREAM_COMMANDS_PER_TXN {
                        let off = self.offset;
                        self.flush_pending(conn, off).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Handles every whole frame in the buffer, then emits what is pending.
    async fn process(&mut self, conn: &mut Conn) -> Result<(), ConnectorError> {
        let mut consumed = 0;
        loop {
            let parsed = resp::parse_command(&conn.buf[consumed..])
                .map_err(|e| definite(format!("command stream at offset {}: {e}", self.offset)))?;
            let Some((args, used)) = parsed else { break };
            let before = self.offset;
            self.offset += used as u64;
            consumed += used;
            self.handle(conn, args, before).await?;
        }
        conn.buf.drain(..consumed);
        if self.multi.is_none() {
            let off = self.offset;
            if !self.pending.is_empty() {
                self.flush_pending(conn, off).await?;
            } else if off > self.last_emitted {
                self.last_emitted = off;
                let position = self.pos_at(off, false);
                self.emit(conn, SourceEvent::Progress { position }).await?;
            }
        }
        Ok(())
    }
}

/// Streams commands until shutdown or an error.
pub(crate) async fn run_stream(
    cx: SourceContext,
    mut conn: Conn,
    mut st: StreamState,
) -> Result<(), ConnectorError> {
    let mut shutdown = cx.shutdown.clone();
    drop(cx);
    let r = async {
        st.ack(&mut conn).await?;
        let mut last_rx = Instant::now();
        let mut chunk = vec![0u8; 256 * 1024];
        loop {
            st.process(&mut conn).await?;
            tokio::select! {
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        return Ok(());
                    }
                }
                _ = st.ack_tick.tick() => {
                    if last_rx.elapsed() > READ_TIMEOUT {
                        return Err(transient("read", "no data from the primary for 60 s"));
                    }
                    st.ack(&mut conn).await?;
                }
                n = conn_read(&mut conn, &mut chunk) => {
                    let n = n?;
                    last_rx = Instant::now();
                    conn.buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }
    .await;
    if *shutdown.borrow() {
        return Ok(());
    }
    r
}

async fn conn_read(conn: &mut Conn, chunk: &mut [u8]) -> Result<usize, ConnectorError> {
    let n = conn
        .rd
        .read(chunk)
        .await
        .map_err(|e| transient("read", e))?;
    if n == 0 {
        return Err(transient("read", "the primary closed the connection"));
    }
    Ok(n)
}
