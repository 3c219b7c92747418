//! Wiring of one agent: sources → journal → links → peers' sinks.
//!
//! # Progress tracking
//! Each store's source runs under a supervisor that drains its events in
//! batches, stamps local transactions with this DC as origin and an HLC, and
//! appends them to the journal together with the position after the last
//! one (one durable commit). The durable position is then published back to
//! the source (Redis acknowledges it with `REPLCONF ACK`). A source that
//! fails is restarted from the journal's position: transient errors with a
//! short capped backoff, definite ones (operator needed) every 30 s with an
//! error log each time.
//!
//! # Shutdown
//! SIGINT/SIGTERM stop sources, links and the listener; everything journaled
//! stays on disk and is shipped after the restart.

use crate::applier::AgentApplier;
use crate::registry::REGISTRY;
use crate::status::{SourceStatus, StatusBoard};
use anyhow::{bail, Context};
use dcsync_core::connector::{ConnectorError, Position, SourceContext, SourceEvent};
use dcsync_core::topology::{LinkSecurity, StoreConfig};
use dcsync_core::{HlcClock, Topology, Transaction};
use dcsync_journal::Journal;
use dcsync_link::{receiver, sender, LinkStats};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Most events journaled in one commit.
const APPEND_MAX_EVENTS: usize = 2048;
/// Capacity of a source's event channel (events).
const SOURCE_CHANNEL: usize = 4096;

/// Runs the agent of `me` until SIGINT/SIGTERM; `SIGHUP` rereads the
/// routing from `topology_path` (see `routing.rs`).
pub async fn run(
    topo: Topology,
    topology_path: Option<PathBuf>,
    me: String,
    data_dir: PathBuf,
    admin: Option<String>,
    lease_ms: u64,
) -> anyhow::Result<()> {
    let Some(my_dc) = topo.dc(&me).cloned() else {
        bail!(
            "dc {me:?} is not declared in the topology (declared: {})",
            topo.dcs
                .iter()
                .map(|d| d.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let tls = match &topo.tls {
        LinkSecurity::Unset => bail!(
            "the topology has no [tls] section: links carry your data across the WAN. \
             Generate certificates with `dcsync certs --topology FILE` and add the [tls] section it prints, \
             or set `[tls] plaintext = true` to run unencrypted on a private line"
        ),
        LinkSecurity::Plaintext => {
            tracing::warn!("LINKS ARE NOT ENCRYPTED OR AUTHENTICATED ([tls] plaintext = true): anyone who can reach the link port can read and inject changes; use it only on a trusted private line or for local tests");
            None
        }
        LinkSecurity::Tls { .. } => {
            let Some((ca, cert, key)) = topo.tls.paths_for(&me) else { bail!("[tls] paths missing") };
            Some(dcsync_link::tls::LinkTls::load(&topo.cluster, &ca, &cert, &key).context("loading the [tls] files")?)
        }
    };
    // One active agent per DC: a standby waits here.
    if lease_ms > 0 {
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        match crate::lease::DcLease::new(&topo, &me, &data_dir, lease_ms) {
            Some(lease) => {
                tokio::select! {
                    _ = lease.acquire() => {}
                    _ = wait_for_signal() => return Ok(()),
                }
                tokio::spawn(lease.keep());
            }
            None => {
                tracing::warn!(dc = %me, "no store of this DC keeps an agent lease: nothing stops a second agent of this DC")
            }
        }
    }
    let peers: Vec<String> = topo.peers_of(&me).iter().map(|d| d.id.clone()).collect();
    let journal = Arc::new(
        Journal::open(&data_dir, &me, &peers)
            .with_context(|| format!("opening the journal in {}", data_dir.display()))?,
    );
    let skew_ms: i64 = match std::env::var("DCSYNC_CLOCK_SKEW_MS") {
        Ok(v) => v
            .parse()
            .with_context(|| format!("DCSYNC_CLOCK_SKEW_MS={v:?} is not a number of ms"))?,
        Err(_) => 0,
    };
    if skew_ms != 0 {
        tracing::warn!(
            skew_ms,
            "DCSYNC_CLOCK_SKEW_MS: this agent's clock is moved (for tests only)"
        );
    }
    let clock = Arc::new(HlcClock::with_floor(journal.hlc_floor()?).with_skew(skew_ms));
    // Mesh or star: who ships which origin streams to whom (reloaded on
    // SIGHUP), and what every DC applied of each origin.
    let routing = crate::routing::routing_of(&topo, &me);
    crate::routing::drop_relay_journal(&journal, &routing);
    if let Some(hub) = routing.hub() {
        tracing::info!(%hub, relays = routing.relays(), "star topology");
    }
    let (routing_tx, routing_rx) = watch::channel(Arc::new(routing.clone()));
    let vectors = Arc::new(dcsync_link::vectors::AppliedVectors::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (appended_tx, appended_rx) = watch::channel(0u64);
    let appended_tx = Arc::new(appended_tx);
    let board = StatusBoard::new(&me, &data_dir, journal.epoch());
    board.set_vectors(crate::vector_status::VectorSource {
        me: me.clone(),
        routing: routing_rx.clone(),
        vectors: vectors.clone(),
    });
    tracing::info!(dc = %me, link = %my_dc.link, data_dir = %data_dir.display(), stores = topo.stores.len(), "dcsync agent starting");
    let metrics = crate::admin::install_recorder(&me)?;

    // Inbound: listener + sinks.
    let listener = tokio::net::TcpListener::bind(&my_dc.listen)
        .await
        .with_context(|| format!("binding link listener {}", my_dc.listen))?;
    // Per store: its status, the durable source position (what a sink
    // waits for before deciding a conflict) and, with a conflict policy,
    // the version index and conflict log its sinks use.
    let conflict_log = Arc::new(crate::versions::ConflictLog::new(&data_dir));
    let mut per_store = std::collections::BTreeMap::new();
    let mut versions = std::collections::BTreeMap::new();
    for store in &topo.stores {
        let st = board.add_source(&store.name);
        let (pos_tx, pos_rx) = watch::channel(journal.position(&store.name)?);
        let floor = Arc::new(std::sync::atomic::AtomicU64::new(0));
        if store.conflict != dcsync_core::conflict::ConflictPolicy::None {
            let v: Arc<dyn dcsync_core::conflict::Versions> =
                Arc::new(crate::versions::AgentVersions::new(
                    &me,
                    &store.name,
                    journal.clone(),
                    pos_rx,
                    conflict_log.clone(),
                    st.clone(),
                    crate::versions::OwnerContext {
                        units: topo.units.clone(),
                        clock: clock.clone(),
                        appended: appended_tx.clone(),
                        floor: floor.clone(),
                        connector: REGISTRY.get(&store.kind),
                    },
                ));
            versions.insert(store.name.clone(), v);
        }
        per_store.insert(store.name.clone(), (st, Arc::new(pos_tx), floor));
    }
    let applied_hlcs = Arc::new(crate::version_upkeep::AppliedHlcs::default());
    let applier = Arc::new(AgentApplier::new(
        &topo,
        &me,
        clock.clone(),
        versions,
        applied_hlcs.clone(),
    ));
    let inbound = board.inbound();
    let rcfg = Arc::new(receiver::ReceiverConfig {
        board: inbound,
        cluster: topo.cluster.clone(),
        me: me.clone(),
        peers: peers.clone(),
        stores: topo.stores.iter().map(|s| s.name.clone()).collect(),
        settings: topo.link.clone(),
        tls: tls.clone(),
        relay: Some(receiver::Relay {
            journal: journal.clone(),
            appended: appended_tx.clone(),
            routing: routing_rx.clone(),
            vectors: vectors.clone(),
        }),
    });
    let mut tasks = Vec::new();
    if let Some(path) = topology_path {
        tasks.push(tokio::spawn(crate::routing::reload_on_hangup(
            path,
            me.clone(),
            topo.clone(),
            routing_tx,
            journal.clone(),
            shutdown_rx.clone(),
        )));
    }
    // What the peers applied of this DC's streams (a new journal waits for
    // it before shipping; see recovery.rs).
    let marks = Arc::new(dcsync_link::PeerMarks::default());
    // The admin endpoint: `--admin` wins over the DC's `admin` key.
    if let Some(addr) = admin.as_ref().or(my_dc.admin.as_ref()) {
        let journal_query = crate::seq_at::JournalQuery::new(&journal, &me, &topo);
        tasks.push(
            crate::admin::serve(
                addr,
                metrics,
                board.clone(),
                journal_query,
                shutdown_rx.clone(),
            )
            .await?,
        );
    }
    tasks.push(tokio::spawn(receiver::serve(
        listener,
        rcfg,
        applier,
        shutdown_rx.clone(),
    )));

    // Outbound: one sender per peer; the routing decides which origin
    // streams it ships (none: idle).
    for peer in topo.peers_of(&me) {
        let stats = Arc::new(Mutex::new(LinkStats {
            peer: peer.id.clone(),
            ..Default::default()
        }));
        board.add_link(stats.clone());
        let cfg = sender::SenderConfig {
            cluster: topo.cluster.clone(),
            me: me.clone(),
            peer: peer.id.clone(),
            addr: peer.link.clone(),
            routing: routing_rx.clone(),
            vectors: Some(vectors.clone()),
            // The stores both DCs have.
            stores: topo
                .stores
                .iter()
                .filter(|s| s.url_for(&me).is_some() && s.url_for(&peer.id).is_some())
                .map(|s| s.name.clone())
                .collect(),
            settings: topo.link.clone(),
            tls: tls.clone(),
            marks: Some(marks.clone()),
        };
        tasks.push(tokio::spawn(sender::run(
            cfg,
            journal.clone(),
            appended_rx.clone(),
            stats,
            shutdown_rx.clone(),
        )));
    }

    // Sources.
    for store in &topo.stores {
        let Some(url) = store.url_for(&me) else {
            bail!("store {} has no url for dc {me}", store.name);
        };
        let Some((st, position, floor)) = per_store.get(&store.name).cloned() else {
            bail!("store {} has no status", store.name);
        };
        let sup = Supervisor {
            position,
            floor,
            marks: marks.clone(),
            // The DCs this DC ships its own changes to directly (a star's
            // spoke: the hub) tell what they applied of them.
            peers: routing
                .own_receivers()
                .into_iter()
                .filter(|p| store.url_for(p).is_some())
                .collect(),
            me: me.clone(),
            store: store.clone(),
            topo: topo.clone(),
            url: url.expose().to_string(),
            journal: journal.clone(),
            clock: clock.clone(),
            appended: appended_tx.clone(),
            status: st,
            shutdown: shutdown_rx.clone(),
            last_hlc: journal
                .head(&me, &store.name)?
                .1
                .max(journal.stamp_floor(&store.name)?),
            attribution: crate::attribution::Guard::new(&me, &store.name),
            part: 0,
            fragments: 0,
            sync_position: true,
        };
        tasks.push(tokio::spawn(sup.run()));
    }

    // Source retention (e.g. binlog expiry) of the kinds that have one,
    // refreshed every minute for the backlog-age warning.
    {
        let board = board.clone();
        let stores: Vec<_> = topo
            .stores
            .iter()
            .filter_map(|s| {
                let connector = REGISTRY.get(&s.kind)?;
                let url = s.url_for(&me)?.expose().to_string();
                Some((s.name.clone(), connector, url))
            })
            .collect();
        let mut sd = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                for (name, connector, url) in &stores {
                    let Some(check) = connector.source_retention(url.clone()) else {
                        continue;
                    };
                    match check.await {
                        Ok(r) => board.set_retention(name, r.map(|d| d.as_secs())),
                        Err(e) => tracing::debug!(store = %name, error = %e, "cannot read the source's retention"),
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    _ = sd.changed() => return,
                }
            }
        }));
    }
    // Periodic consistency checks this DC runs (`verify_every_s`).
    tasks.extend(crate::version_upkeep::spawn(
        journal.clone(),
        &topo,
        &me,
        applied_hlcs,
        &shutdown_rx,
    ));
    tasks.extend(crate::periodic_verify::spawn(
        &topo,
        &me,
        &board,
        &shutdown_rx,
    ));
    tasks.push(tokio::spawn(board.clone().run(
        journal.clone(),
        peers,
        topo.stores.iter().map(|s| s.name.clone()).collect(),
        shutdown_rx.clone(),
    )));

    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    Ok(())
}

/// Adds the version-index entries `(row or key, hlc)` of `changes` (local
/// writes stamped `hlc`), as the store's kind names them.
fn push_versions(
    out: &mut Vec<(Vec<u8>, dcsync_core::Hlc)>,
    store: &StoreConfig,
    changes: &[dcsync_core::Change],
    hlc: dcsync_core::Hlc,
) {
    let Ok(connector) = REGISTRY.connector_for(store) else {
        return;
    };
    for c in changes {
        for key in connector.version_keys(c) {
            out.push((key, hlc));
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs one store's source, restarting it from the journal after failures.
struct Supervisor {
    /// The store's durable source position, for the sinks' conflict
    /// decisions (kept across source restarts).
    position: Arc<watch::Sender<Option<Position>>>,
    /// Floor of this store's local stamps, raised when the sink re-ships
    /// an owner's rows (`conflict = "owner"`): local transactions journaled
    /// after are stamped above it.
    floor: Arc<std::sync::atomic::AtomicU64>,
    /// What the peers applied of this DC's streams.
    marks: Arc<dcsync_link::PeerMarks>,
    /// The peers that apply this store.
    peers: Vec<String>,
    me: String,
    store: StoreConfig,
    topo: Topology,
    url: String,
    journal: Arc<Journal>,
    clock: Arc<HlcClock>,
    appended: Arc<watch::Sender<u64>>,
    status: Arc<Mutex<SourceStatus>>,
    shutdown: watch::Receiver<bool>,
    /// HLC of the last transaction journaled for this store (stamps rise
    /// along the stream).
    last_hlc: dcsync_core::Hlc,
    /// Reports local writes to units other DCs own.
    attribution: crate::attribution::Guard,
    /// Part index the next entry of the local transaction being read gets
    /// (0 outside a transaction split in parts).
    part: u32,
    /// Fragments of this source run journaled so far.
    fragments: u64,
    /// Whether the next position-only journal commit must be durable:
    /// the first of a source run, and the first after snapshot copies
    /// ([`Journal::append_versioned`]'s `sync_position`).
    sync_position: bool,
}

impl Supervisor {
    async fn run(mut self) {
        let mut backoff = dcsync_link::Backoff::new(
            Duration::from_millis(200),
            Duration::from_millis(self.topo.link.backoff_max_ms),
        );
        loop {
            if *self.shutdown.borrow() {
                return;
            }
            let result = self.once().await;
            if *self.shutdown.borrow() {
                return;
            }
            let delay = match &result {
                Ok(true) => continue,
                Ok(false) => return,
                Err(ConnectorError::Transient(e)) => {
                    tracing::warn!(store = %self.store.name, error = %e, "source failed, restarting from the journaled position");
                    backoff.next_delay()
                }
                Err(ConnectorError::Definite(e)) => {
                    tracing::error!(store = %self.store.name, error = %e, "source stopped: needs an operator; retrying in 30 s");
                    Duration::from_secs(30)
                }
            };
            if let (Ok(mut st), Err(e)) = (self.status.lock(), result.as_ref()) {
                if e.is_transient() {
                    st.state = "failed".into();
                    st.stuck_since_ms = None;
                } else {
                    // Stopped at this position until an operator acts: it
                    // stays so across the retries, which fail at the same
                    // event, until the source journals past it.
                    st.state = "stopped".into();
                    if st.stuck_since_ms.is_none() {
                        st.stuck_since_ms = Some(dcsync_core::now_ms());
                    }
                }
                st.error = Some(e.to_string());
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.shutdown.changed() => return,
            }
        }
    }

    /// One run of the source, until it ends. `Ok(true)`: run it again at
    /// once (the stream was restarted at a peer's marker).
    async fn once(&mut self) -> Result<bool, ConnectorError> {
        let j = self.journal.clone();
        let name = self.store.name.clone();
        let resume = tokio::task::spawn_blocking(move || j.position(&name))
            .await
            .map_err(|e| ConnectorError::Transient(e.to_string()))?
            .map_err(|e| ConnectorError::Definite(format!("journal: {e}")))?;
        // Parts of a transaction the previous run did not read to its end:
        // the source reads it again from the checkpoint before it.
        let j = self.journal.clone();
        let name = self.store.name.clone();
        let discarded = tokio::task::spawn_blocking(move || j.discard_open(&name))
            .await
            .map_err(|e| ConnectorError::Transient(e.to_string()))?
            .map_err(|e| ConnectorError::Definite(format!("journal: {e}")))?;
        if discarded > 0 {
            tracing::info!(store = %self.store.name, parts = discarded, "discarded the journaled parts of a transaction the source had not read to its end; it is read again");
        }
        self.part = 0;
        self.fragments = 0;
        self.sync_position = true;
        let (etx, mut erx) = mpsc::channel(SOURCE_CHANNEL);
        let (durable_tx, durable_rx) = watch::channel(resume.clone());
        let (fragments_tx, fragments_rx) = watch::channel(0u64);
        // The source stops on shutdown, or when a new journal's stream is
        // restarted at a peer's marker.
        let (stop_tx, stop_rx) = watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        let forward = {
            let (mut sd, stop) = (self.shutdown.clone(), stop_tx.clone());
            AbortOnDrop(tokio::spawn(async move {
                let _ = sd.wait_for(|v| *v).await;
                let _ = stop.send(true);
            }))
        };
        let recovered: Arc<Mutex<Option<crate::recovery::Settle>>> = Arc::default();
        let settler = self.settler(stop_tx.clone(), recovered.clone())?;
        let cx = SourceContext {
            dc: self.me.clone(),
            store: self.store.clone(),
            units: self.topo.units.clone(),
            resume,
            events: etx,
            durable: durable_rx,
            fragments_journaled: fragments_rx,
            shutdown: stop_rx,
        };
        let connector = REGISTRY.connector_for(&self.store)?;
        let handle = tokio::spawn(connector.run_source(self.url.clone(), cx));
        if let Ok(mut st) = self.status.lock() {
            // A source stopped by a definite error shows as stopped until it
            // journals past that position (see `journal_events`).
            if st.stuck_since_ms.is_none() {
                st.state = "running".into();
                st.error = None;
            }
        }
        // Drain events until the source ends (it drops the sender).
        let mut buf = Vec::with_capacity(APPEND_MAX_EVENTS);
        loop {
            buf.clear();
            let n = erx.recv_many(&mut buf, APPEND_MAX_EVENTS).await;
            if n == 0 {
                break;
            }
            self.journal_events(std::mem::take(&mut buf), &durable_tx, &fragments_tx)
                .await?;
        }
        let ended = handle.await;
        drop((forward, settler));
        let decision = recovered.lock().ok().and_then(|mut r| r.take());
        if let Some(d) = decision {
            let (j, name) = (self.journal.clone(), self.store.name.clone());
            tokio::task::spawn_blocking(move || crate::recovery::apply(&j, &name, &d))
                .await
                .map_err(|e| ConnectorError::Transient(e.to_string()))??;
            let head = self.journal.head(&self.me, &self.store.name);
            let floor = self.journal.stamp_floor(&self.store.name);
            self.last_hlc = head
                .map(|h| h.1)
                .unwrap_or_default()
                .max(floor.unwrap_or_default());
            return Ok(true);
        }
        match ended {
            Ok(r) => r.map(|()| false),
            Err(e) => Err(ConnectorError::Transient(format!(
                "source task ended abnormally: {e}"
            ))),
        }
    }

    /// For a stream of a new journal (not settled), a task that waits for
    /// every peer's marker and settles it: as it is, or by stopping the
    /// source (`stop`) with the restart decision in `recovered`.
    fn settler(
        &self,
        stop: Arc<watch::Sender<bool>>,
        recovered: Arc<Mutex<Option<crate::recovery::Settle>>>,
    ) -> Result<Option<AbortOnDrop>, ConnectorError> {
        let settled = self
            .journal
            .settled(&self.store.name)
            .map_err(|e| ConnectorError::Definite(format!("journal: {e}")))?;
        if settled {
            return Ok(None);
        }
        let connector = REGISTRY.connector_for(&self.store)?;
        let (journal, marks, peers) =
            (self.journal.clone(), self.marks.clone(), self.peers.clone());
        let (store, status) = (self.store.name.clone(), self.status.clone());
        Ok(Some(AbortOnDrop(tokio::spawn(async move {
            let parse = |d: &str| connector.parse_position(d);
            match crate::recovery::decide(&store, &peers, &marks, parse).await {
                Ok(crate::recovery::Settle::Fresh) => {
                    let r = tokio::task::spawn_blocking(move || {
                        crate::recovery::apply(&journal, &store, &crate::recovery::Settle::Fresh)
                    })
                    .await;
                    if let Ok(Err(e)) | Err(e) =
                        r.map_err(|e| ConnectorError::Transient(e.to_string()))
                    {
                        tracing::error!(error = %e, "cannot settle the journal stream");
                    }
                }
                Ok(d) => {
                    if let Ok(mut r) = recovered.lock() {
                        *r = Some(d);
                    }
                    let _ = stop.send(true);
                }
                Err(e) => {
                    tracing::error!(%store, error = %e, "new journal: cannot recover this DC's stream; nothing of it is shipped");
                    if let Ok(mut st) = status.lock() {
                        st.error = Some(e.to_string());
                    }
                }
            }
        }))))
    }

    /// Counts something the source deliberately did not ship and keeps it
    /// as the last skipped in the status.
    fn skipped(&self, what: &'static str, count: u64, detail: String, position: String) {
        dcsync_core::events::SourceSkipped {
            store: &self.store.name,
            what,
            count,
        }
        .emit();
        if let Ok(mut st) = self.status.lock() {
            *st.skipped.entry(what.to_string()).or_insert(0) += count;
            st.last_skipped = Some(crate::status::SkippedStatus {
                what: what.to_string(),
                detail,
                position,
                at_ms: dcsync_core::now_ms(),
            });
        }
    }

    /// Counts how the source's reconnect synchronised (a full resync also
    /// in `dcsync_source_full_resyncs_total`) and keeps it as the last
    /// resync in the status; the source logged it.
    fn resynced(&self, full: bool, detail: String) {
        if full {
            dcsync_core::events::FullResync {
                store: &self.store.name,
            }
            .emit();
        }
        if let Ok(mut st) = self.status.lock() {
            if full {
                st.resyncs_full += 1;
            } else {
                st.resyncs_continued += 1;
            }
            st.last_resync = Some(crate::status::ResyncStatus {
                full,
                detail,
                at_ms: dcsync_core::now_ms(),
            });
        }
    }

    async fn journal_events(
        &mut self,
        events: Vec<SourceEvent>,
        durable: &watch::Sender<Option<Position>>,
        fragments: &watch::Sender<u64>,
    ) -> Result<(), ConnectorError> {
        let mut txs = Vec::new();
        let mut fragments_n = 0u64;
        let mut last_pos: Option<Position> = None;
        let mut echoes = 0u64;
        let mut changes_n = 0u64;
        let mut last_commit_ms = 0u64;
        let versioned = self.store.conflict != dcsync_core::conflict::ConflictPolicy::None;
        self.last_hlc = self.last_hlc.max(dcsync_core::Hlc(
            self.floor.load(std::sync::atomic::Ordering::SeqCst),
        ));
        let mut versions: Vec<(Vec<u8>, dcsync_core::Hlc)> = Vec::new();
        // Whether the last transaction of the batch is a snapshot copy's.
        let mut snapshot_last = false;
        for ev in events {
            match ev {
                SourceEvent::Fragment {
                    changes,
                    commit_ts_ms,
                } => {
                    let hlc = self.clock.stamp_source(commit_ts_ms, self.last_hlc);
                    self.last_hlc = hlc;
                    changes_n += changes.len() as u64;
                    fragments_n += 1;
                    if versioned {
                        push_versions(&mut versions, &self.store, &changes, hlc);
                    }
                    txs.push(Transaction {
                        origin: self.me.clone(),
                        store: self.store.name.clone(),
                        seq: 0,
                        hlc,
                        position: String::new(),
                        commit_ts_ms,
                        changes,
                        part: self.part,
                        more: true,
                        epoch: 0,
                    });
                    self.part += 1;
                }
                SourceEvent::Local {
                    mut changes,
                    commit_ts_ms,
                    position,
                } => {
                    if versioned && commit_ts_ms == dcsync_core::connector::SNAPSHOT_COMMIT_MS {
                        changes = crate::versions::unowned_snapshot_changes(
                            &self.journal,
                            &self.store,
                            &self.me,
                            changes,
                        );
                    }
                    // The last part of a split transaction is journaled
                    // even without changes: it closes the transaction.
                    if !changes.is_empty() || self.part > 0 {
                        // The stamp derives from the source commit time
                        // (rising along the stream), not from when it was
                        // read: a source catching up does not make old
                        // writes look new.
                        let hlc = self.clock.stamp_source(commit_ts_ms, self.last_hlc);
                        self.last_hlc = hlc;
                        changes_n += changes.len() as u64;
                        last_commit_ms = commit_ts_ms;
                        snapshot_last = commit_ts_ms == dcsync_core::connector::SNAPSHOT_COMMIT_MS;
                        if versioned {
                            push_versions(&mut versions, &self.store, &changes, hlc);
                        }
                        txs.push(Transaction {
                            origin: self.me.clone(),
                            store: self.store.name.clone(),
                            seq: 0,
                            hlc,
                            position: position.display.clone(),
                            commit_ts_ms,
                            changes,
                            part: self.part,
                            more: false,
                            epoch: 0,
                        });
                        self.part = 0;
                    }
                    last_pos = Some(position);
                }
                SourceEvent::Echo { position, hlc, .. } => {
                    // Local writes after this echo are stamped above every
                    // value it applied (docs/architecture.md, "Conflicts").
                    self.last_hlc = self.last_hlc.max(hlc);
                    echoes += 1;
                    last_pos = Some(position);
                }
                SourceEvent::Progress { position } => last_pos = Some(position),
                SourceEvent::Skipped {
                    what,
                    count,
                    detail,
                    position,
                } => self.skipped(what, count, detail, position),
                SourceEvent::Resync { full, detail } => self.resynced(full, detail),
                SourceEvent::Copying {
                    table,
                    tables_done,
                    tables,
                    rows,
                    rows_estimate,
                    done,
                } => {
                    if let Ok(mut st) = self.status.lock() {
                        let now = dcsync_core::now_ms();
                        let started_ms = st.copy.as_ref().map_or(now, |c| c.started_ms);
                        st.copy = Some(crate::status::CopyStatus {
                            table,
                            tables_done,
                            tables,
                            rows,
                            rows_estimate,
                            done,
                            started_ms,
                            at_ms: now,
                        });
                    }
                }
            }
        }
        let j = self.journal.clone();
        let name = self.store.name.clone();
        let pos = last_pos.clone();
        let n = txs.iter().filter(|t| !t.more).count() as u64;
        let misrouted = self.attribution.scan(&self.topo.units, &txs);
        // With the position, the stamp floor the echoes read up to it
        // raised: a restart resumes past them and does not read them again.
        let floor = if last_pos.is_some() {
            self.last_hlc
        } else {
            dcsync_core::Hlc(0)
        };
        let had_txs = !txs.is_empty();
        let sync = self.sync_position;
        let appended = tokio::task::spawn_blocking(move || {
            j.append_versioned(&name, &mut txs, pos.as_ref(), &versions, floor, sync)
        })
        .await
        .map_err(|e| ConnectorError::Transient(e.to_string()))?
        .map_err(|e| ConnectorError::Definite(format!("journal append failed: {e}")))?;
        // A position was committed durably (with transactions, or synced).
        // After a snapshot copy's transactions the position that closes the
        // copy must be durable too: a restart would copy the store again,
        // and stamp what was written meanwhile as copied. A batch of
        // fragments alone journals no position and changes nothing.
        if last_pos.is_some() {
            self.sync_position = had_txs && snapshot_last;
        }
        self.attribution.record(misrouted, &self.status);
        if n > 0 {
            dcsync_core::events::SourceCaptured {
                store: &self.store.name,
                txns: n,
                changes: changes_n,
                lag_ms: (last_commit_ms > dcsync_core::connector::SNAPSHOT_COMMIT_MS)
                    .then(|| dcsync_core::now_ms().saturating_sub(last_commit_ms)),
            }
            .emit();
        }
        if echoes > 0 {
            dcsync_core::events::EchoDropped {
                store: &self.store.name,
                txns: echoes,
            }
            .emit();
        }
        if let Some(p) = last_pos {
            let _ = durable.send(Some(p.clone()));
            self.position.send_replace(Some(p.clone()));
            if let Ok(mut st) = self.status.lock() {
                if st.stuck_since_ms.is_some() && st.position != p.display {
                    // Past the position it was stopped at: an operator
                    // fixed it.
                    tracing::info!(store = %self.store.name, position = %p.display, "source running again past the position it was stopped at");
                    st.stuck_since_ms = None;
                    st.state = "running".into();
                    st.error = None;
                }
                st.position = p.display;
                st.local_txns += n;
                st.echo_txns += echoes;
            }
        }
        if fragments_n > 0 {
            self.fragments += fragments_n;
            fragments.send_replace(self.fragments);
        }
        if let Some((_, last)) = appended {
            if n > 0 {
                self.appended.send_replace(last);
            }
        }
        Ok(())
    }
}
