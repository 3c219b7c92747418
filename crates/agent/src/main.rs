//! `dcsync`: the agent binary (one per datacenter) and its operator commands.
//!
//! - `dcsync check --topology FILE [--connect [--dc ID ...]]`: validate a
//!   topology file, print every problem with its location; with `--connect`
//!   also every problem of the stores it names ([`check`]).
//! - `dcsync run --topology FILE --dc ID [--data-dir DIR]`: run the agent of
//!   one DC. Its journal lives in `DIR` (default `./dcsync-data/<ID>`).
//! - `dcsync status --dc ID [--data-dir DIR]`: print the running agent's link
//!   states and backlogs (read from `DIR/status.json`, rewritten every second).
//! - `dcsync conflicts --dc ID [--data-dir DIR] [--store S] [--since 2h]`:
//!   print the conflicts the agent recorded (`DIR/conflicts.jsonl`).
//! - `dcsync route --topology FILE --store S [--table schema.table] VALUE`:
//!   print the unit of a row or key and its owner DC ([`route`]).
//! - `dcsync verify --topology FILE --store S [--dc ID ...] [--json]`:
//!   compare one store across DCs while writes go on; exit 1 if a
//!   difference remains ([`verify`]).

mod admin;
mod agent;
mod applier;
mod attribution;
mod bootstrap;
mod check;
mod lease;
mod periodic_verify;
mod recovery;
mod registry;
mod route;
mod routing;
mod seq_at;
mod status;
mod vector_status;
mod verify;
mod version_upkeep;
mod versions;

/// mimalloc instead of glibc malloc: the agent allocates and frees many
/// small row images per second, and glibc's free-list consolidation was a
/// tenth of the agent's CPU time in the replay benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use dcsync_core::Topology;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "dcsync", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate a topology file and print every problem with its line:column;
    /// with --connect, also connect to the stores and report every problem
    /// there (exit 2: invalid file, 1: a store has an error, 0: ok or only
    /// warnings).
    Check {
        /// The topology file (TOML).
        #[arg(long)]
        topology: PathBuf,
        /// Connect to the stores and check their settings, tables and limits.
        #[arg(long)]
        connect: bool,
        /// With --connect: only the stores of these DCs (default: every DC).
        #[arg(long = "dc", requires = "connect")]
        dcs: Vec<String>,
    },
    /// Run the agent of one DC.
    Run {
        /// The topology file (TOML), the same in every DC.
        #[arg(long)]
        topology: PathBuf,
        /// This agent's DC id, as declared in the topology.
        #[arg(long)]
        dc: String,
        /// Journal and status directory (default: ./dcsync-data/<dc>).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Serve Prometheus `/metrics` and `/status` (JSON) on this
        /// `host:port` (overrides the DC's `admin` key in the topology).
        #[arg(long)]
        admin: Option<String>,
        /// Lifetime of the DC's agent lease, ms: a standby agent of the same
        /// DC takes over at most this long after the active one died
        /// (0: no lease; see docs/operations.md, "Standby agent").
        #[arg(long, default_value_t = 10_000)]
        lease_ms: u64,
    },
    /// Generate a cluster CA and one certificate per DC of a topology, for the
    /// `[tls]` section (an existing ca.crt/ca.key in OUT is reused).
    Certs {
        /// The topology file (TOML).
        #[arg(long)]
        topology: PathBuf,
        /// Output directory (default: `certs` next to the topology file).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only these DCs (default: every DC of the topology).
        #[arg(long = "dc")]
        dcs: Vec<String>,
    },
    /// Print the unit of a row or key and the DC that owns it: where an
    /// application should send the write (`unit 17 owner bj (store orders,
    /// rule: hash of user_id)`).
    Route {
        /// The topology file (TOML).
        #[arg(long)]
        topology: PathBuf,
        /// The store, by name.
        #[arg(long)]
        store: String,
        /// The row's table, `schema.table` (row stores; applies the
        /// store's units_by_table rules).
        #[arg(long)]
        table: Option<String>,
        /// The unit key value (row stores: the unit_key column's value,
        /// integers in decimal) or the key (Redis).
        value: String,
    },
    /// Compare one store's data across DCs while writes go on, and name
    /// every row or key that differs (exit 0: equal, 1: a difference
    /// remains after the re-checks, 2: could not compare).
    Verify {
        /// The topology file (TOML).
        #[arg(long)]
        topology: PathBuf,
        /// The store, by name.
        #[arg(long)]
        store: String,
        /// Only these DCs (at least two; default: every DC with a url for
        /// the store). The first one plans the chunks.
        #[arg(long = "dc")]
        dcs: Vec<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Delay before each re-check of a chunk or bucket that differs,
        /// ms: long enough for a change in flight to arrive.
        #[arg(long, default_value_t = 2000)]
        recheck_ms: u64,
        /// How many re-checks a difference must survive to be reported
        /// (0: report what differs at once).
        #[arg(long, default_value_t = 3)]
        rechecks: u32,
        /// Rows (Redis: keys) per chunk (bucket): what one query reads and
        /// a re-check holds in memory.
        #[arg(long, default_value_t = 10_000)]
        chunk_rows: u64,
        /// Make every differing row or key equal to the `--from` DC's copy,
        /// through the normal pipeline: written again in that DC (its
        /// agent ships it to every DC), or deleted where that DC does not
        /// hold it. Run verify again afterwards.
        #[arg(long)]
        repair: bool,
        /// With `--repair`: the DC whose copy wins (default: the first DC
        /// compared). Choose the one the store's conflict policy would make
        /// win (the unit's owner under `conflict = "owner"`).
        #[arg(long, value_name = "DC", requires = "repair")]
        from: Option<String>,
    },
    /// Fill a new DC's empty stores from an existing DC while every DC keeps
    /// writing, and prepare the new DC's journal so that its agent streams
    /// on from the copy (docs/operations.md, "Adding a DC"). The new DC's
    /// agent must be stopped; the existing DC's must run (its status is
    /// read at its `admin` address).
    Bootstrap {
        /// The topology file (TOML), already naming the new DC.
        #[arg(long)]
        topology: PathBuf,
        /// The new DC.
        #[arg(long)]
        dc: String,
        /// The DC to copy from.
        #[arg(long)]
        from: String,
        /// The new DC's agent data directory (default: ./dcsync-data/<dc>);
        /// it must not hold a journal with positions yet.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The new DC's store was already restored from a backup of the
        /// `--from` DC's store, `dcsync` schema included, taken at this
        /// source position (MySQL: `file:offset`, a MariaDB GTID list such
        /// as mariadb-dump's `gtid_slave_pos`, or mariabackup's
        /// `xtrabackup_binlog_info` line): nothing is copied, the new DC
        /// resumes after it. `STORE=POSITION` for one store; repeat per
        /// store.
        #[arg(long, value_name = "[STORE=]POSITION")]
        backup_position: Vec<String>,
    },
    /// Make a DC the hub of a star: rewrites `mode = "star"` and `hub` in
    /// the topology file (comments kept) after checking the DC can be the
    /// hub. Then copy the file to every DC and send SIGHUP to every agent
    /// (docs/operations.md, "Star topology: hub failover").
    Promote {
        /// The topology file (TOML), rewritten in place.
        #[arg(long)]
        topology: PathBuf,
        /// The DC that becomes the hub.
        #[arg(long)]
        dc: String,
    },
    /// Show link states and backlogs of a running agent.
    Status {
        /// The DC id of the agent.
        #[arg(long)]
        dc: String,
        /// Its data directory (default: ./dcsync-data/<dc>).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the conflicts an agent recorded (changes of other DCs that lost
    /// against the value held in this DC), oldest first.
    Conflicts {
        /// The DC id of the agent.
        #[arg(long)]
        dc: String,
        /// Its data directory (default: ./dcsync-data/<dc>).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Only this store's.
        #[arg(long)]
        store: Option<String>,
        /// Only those of the last DURATION (`90s`, `30m`, `2h`, `7d`).
        #[arg(long, value_parser = parse_duration_ms)]
        since: Option<u64>,
        /// Print the records as JSON lines.
        #[arg(long)]
        json: bool,
    },
}

/// A duration (`90s`, `30m`, `2h`, `7d`, humantime syntax) → milliseconds.
fn parse_duration_ms(s: &str) -> Result<u64, String> {
    humantime::parse_duration(s)
        .map(|d| d.as_millis() as u64)
        .map_err(|e| format!("{s:?} is not a duration like 90s, 30m, 2h or 7d: {e}"))
}

/// Prints the conflict log of the agent whose data dir is `dir`.
fn conflicts(
    dir: &std::path::Path,
    store: Option<&str>,
    since_ms: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    let from = since_ms.map_or(0, |d| dcsync_core::now_ms().saturating_sub(d));
    let records = versions::read_log(dir)?;
    let mut shown = 0usize;
    for c in records
        .iter()
        .filter(|c| c.at_ms >= from && store.is_none_or(|s| c.store == s))
    {
        shown += 1;
        if json {
            println!("{}", serde_json::to_string(c)?);
            continue;
        }
        println!(
            "{} store {} {}{}: kept {} {}; not applied {} seq {} {}",
            humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(c.at_ms)
            ),
            c.store,
            c.key,
            c.unit.map_or(String::new(), |u| format!(" (unit {u})")),
            c.winner,
            c.winner_value,
            c.loser,
            c.loser_seq,
            c.loser_value
        );
        println!("    {}", c.decision);
    }
    if !json {
        println!(
            "{shown} conflict(s) in {}",
            dir.join(versions::CONFLICT_LOG).display()
        );
    }
    Ok(())
}

fn data_dir_for(dc: &str, given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| PathBuf::from("dcsync-data").join(dc))
}

fn main() -> ExitCode {
    let about = format!("Multi-datacenter two-way sync for {}", registry::kinds());
    let cli = Cli::from_arg_matches(&Cli::command().about(about).get_matches())
        .unwrap_or_else(|e| e.exit());
    let result = match cli.cmd {
        Cmd::Check {
            topology,
            connect,
            dcs,
        } => return check::run(&topology, connect, &dcs),
        Cmd::Verify {
            topology,
            store,
            dcs,
            json,
            recheck_ms,
            rechecks,
            chunk_rows,
            repair,
            from,
        } => {
            return verify::run(
                &topology,
                &verify::Args {
                    store,
                    dcs,
                    json,
                    recheck: std::time::Duration::from_millis(recheck_ms),
                    rechecks,
                    chunk_rows,
                    repair_from: repair.then(|| from.unwrap_or_default()),
                },
            )
        }
        Cmd::Bootstrap {
            topology,
            dc,
            from,
            data_dir,
            backup_position,
        } => {
            let dir = data_dir_for(&dc, data_dir);
            // Progress per table goes to stderr (DCSYNC_LOG filters it).
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("DCSYNC_LOG")
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .init();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| {
                    rt.block_on(bootstrap::run(
                        &topology,
                        &dc,
                        &from,
                        &dir,
                        &backup_position,
                    ))
                })
        }
        Cmd::Certs { topology, out, dcs } => certs(&topology, out, dcs),
        Cmd::Status { dc, data_dir, json } => status::print(&data_dir_for(&dc, data_dir), json),
        Cmd::Conflicts {
            dc,
            data_dir,
            store,
            since,
            json,
        } => conflicts(&data_dir_for(&dc, data_dir), store.as_deref(), since, json),
        Cmd::Promote { topology, dc } => routing::promote(&topology, &dc).map(|prev| {
            println!(
                "{}: hub is now {dc} (was {}). Copy this file to every DC and send SIGHUP to every agent \
                 (`kill -HUP <pid>`); start a stopped agent, the old hub's included, with this file.",
                topology.display(),
                prev.as_deref().unwrap_or("none: mesh")
            );
        }),
        Cmd::Route {
            topology,
            store,
            table,
            value,
        } => route::run(&topology, &store, table.as_deref(), &value),
        Cmd::Run {
            topology,
            dc,
            data_dir,
            admin,
            lease_ms,
        } => run(topology, dc, data_dir, admin, lease_ms),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dcsync: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn certs(topology: &std::path::Path, out: Option<PathBuf>, dcs: Vec<String>) -> anyhow::Result<()> {
    let topo = Topology::load(topology, &registry::REGISTRY)?;
    let out = out.unwrap_or_else(|| {
        topology
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("certs")
    });
    let dcs = if dcs.is_empty() {
        topo.dcs.iter().map(|d| d.id.clone()).collect()
    } else {
        dcs
    };
    for dc in &dcs {
        if topo.dc(dc).is_none() {
            anyhow::bail!("dc {dc:?} is not declared in {}", topology.display());
        }
    }
    let g = dcsync_link::tls::generate(&topo.cluster, &dcs, &out)?;
    println!(
        "{} CA {}",
        if g.reused_ca { "reused" } else { "created" },
        g.ca_cert.display()
    );
    for (dc, cert, key) in &g.dcs {
        println!(
            "dc {dc}: {} {} (valid for {})",
            cert.display(),
            key.display(),
            dcsync_link::tls::identity_name(dc, &topo.cluster)
        );
    }
    println!(
        "\nCopy ca.crt and each DC's own .crt/.key to that DC (keep ca.key offline), and set:\n"
    );
    println!(
        "[tls]\nca = \"{0}/ca.crt\"\ncert = \"{0}/{{dc}}.crt\"\nkey = \"{0}/{{dc}}.key\"",
        out.display()
    );
    Ok(())
}

fn run(
    topology: PathBuf,
    dc: String,
    data_dir: Option<PathBuf>,
    admin: Option<String>,
    lease_ms: u64,
) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DCSYNC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let topo = Topology::load(&topology, &registry::REGISTRY)?;
    let data_dir = data_dir_for(&dc, data_dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(agent::run(
        topo,
        Some(topology.clone()),
        dc,
        data_dir,
        admin,
        lease_ms,
    ))
}
