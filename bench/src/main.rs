//! `dcsync-bench`: measures dcsync against native replication on this
//! machine and prints a table (optionally written as markdown).
//!
//! Cases (each on fresh private `mariadbd`/`redis-server` processes from
//! `dcsync-testkit`, agents as real `dcsync` processes behind a line proxy):
//!
//! 1. MySQL backlog replay: `sysbench oltp_write_only` into DC A with the line
//!    into DC B cut (agent A journals it), then the line restored and timed
//!    until B has applied everything; against native MariaDB replication
//!    with the replica's SQL thread stopped during the load and then started.
//!    Durable (`innodb_flush_log_at_trx_commit=1`, `sync_binlog=1`) and
//!    relaxed (`2`, `0`) server settings.
//! 2. MySQL steady-state lag at fixed sysbench rates over a 30 ms RTT line.
//! 3. Agent RSS, sampled every 500 ms during the case-1 build-up and replay.
//! 4. Redis: `redis-benchmark` pipelined writes end to end against
//!    `REPLICAOF`, and steady-state lag at fixed pipelined loads.
//! 5. MySQL big transaction: one 300,000-row UPDATE of a 10-column table on
//!    A, timed until B holds it, with each agent's peak RSS (VmHWM); against
//!    native MariaDB replication of the same UPDATE.
//! 6. MySQL initial snapshot (`--cases snapshot`, not in the default run):
//!    one sysbench table in DC A, an empty copy in B, the agents started with
//!    `initial = "snapshot"` and timed until B holds every row with A's
//!    checksum, with agent A's peak RSS; against `mariadb-dump
//!    --single-transaction --no-create-info | mariadb` of the same table.
//! 7. `dcsync verify` (`--cases verify`, not in the default run) over the
//!    two DCs once the snapshot converged: rows checked per second; the
//!    case fails unless it reports them equal.
//! 8. Star against mesh (`--cases star`, not in the default run): four DCs
//!    (`bj` the hub, `sh`, `gz`, `tk`), each inserting heartbeat rows at
//!    the same fixed rate over 30 ms RTT lines, once as a star and once as
//!    a mesh on fresh servers: WAN bytes per change over all links, lag
//!    `sh` → `tk` (through the hub in the star), `bj`'s agent CPU and peak
//!    RSS. The star goes in the table's first value column, the mesh in
//!    the second.
//!
//! Speed and memory are measured here, never asserted in tests. Run it with
//! `scripts/bench.sh`; see `docs/benchmarks.md`.

mod cluster;
mod mysql_cases;
mod redis_cases;
mod snapshot_cases;
mod star_cases;
mod util;

use anyhow::{Context, Result};
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "dcsync benchmarks against native MariaDB and Redis replication")]
struct Args {
    /// Small sizes (about 5 minutes in all, plus 1-2 for big-transaction,
    /// whose size is fixed); the default is the full run.
    #[arg(long)]
    quick: bool,
    /// sysbench transactions per backlog replay (overrides the mode's size).
    #[arg(long)]
    txns: Option<u64>,
    /// redis-benchmark requests per command (four commands).
    #[arg(long)]
    redis_n: Option<u64>,
    /// Rows of the snapshot and verify cases' table (default: 1,000,000;
    /// 100,000 with --quick).
    #[arg(long)]
    snapshot_rows: Option<u64>,
    /// Seconds of offered load per lag measurement (also the star case's
    /// load, per topology).
    #[arg(long)]
    lag_secs: Option<u64>,
    /// Heartbeat rows (one transaction each) every DC inserts per second in
    /// the star case.
    #[arg(long, default_value_t = 200)]
    star_rate: u32,
    /// Cases to run, comma-separated: replay, lag, redis, big-transaction,
    /// snapshot, verify, star. The default leaves out snapshot and verify
    /// (a 1,000,000-row table in the full run) and star (eight servers and
    /// agents): name them to run them.
    #[arg(
        long,
        default_value = "replay,lag,redis,big-transaction",
        value_delimiter = ','
    )]
    cases: Vec<String>,
    /// Server settings for the replay case, comma-separated: durable, relaxed.
    #[arg(long, default_value = "durable,relaxed", value_delimiter = ',')]
    settings: Vec<String>,
    /// Also run native replication with slave_parallel_threads=4.
    #[arg(long)]
    native_parallel: bool,
    /// Also run native replication with log_slave_updates=ON (the replica
    /// writes a binlog of what it applies, as dcsync's target does).
    #[arg(long)]
    native_log_updates: bool,
    /// Links without TLS (`[tls] plaintext = true`); default is mutual TLS
    /// with certificates from `dcsync certs`.
    #[arg(long)]
    plaintext: bool,
    /// The `dcsync` binary (default: next to this one).
    #[arg(long)]
    dcsync: Option<PathBuf>,
    /// Also write the table as markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

/// Every case `--cases` accepts.
const CASES: [&str; 7] = [
    "replay",
    "lag",
    "redis",
    "big-transaction",
    "snapshot",
    "verify",
    "star",
];

/// One table row.
struct Row {
    case: String,
    setting: String,
    dcsync: String,
    native: String,
    ratio: String,
    notes: String,
}

fn row(
    case: &str,
    setting: &str,
    dcsync: String,
    native: String,
    ratio: String,
    notes: String,
) -> Row {
    Row {
        case: case.into(),
        setting: setting.into(),
        dcsync,
        native,
        ratio,
        notes,
    }
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn print_rows(rows: &[Row]) {
    let head = [
        "case",
        "setting",
        "dcsync",
        "native",
        "dcsync/native",
        "notes",
    ];
    let cells: Vec<[&str; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.case.as_str(),
                r.setting.as_str(),
                r.dcsync.as_str(),
                r.native.as_str(),
                r.ratio.as_str(),
                r.notes.as_str(),
            ]
        })
        .collect();
    let mut w = head.map(str::len);
    for c in &cells {
        for i in 0..6 {
            w[i] = w[i].max(c[i].chars().count());
        }
    }
    let line = |c: [&str; 6]| {
        let parts: Vec<String> = (0..6).map(|i| format!("{:<1$}", c[i], w[i])).collect();
        println!("{}", parts.join(" | "));
    };
    line(head);
    println!(
        "{}",
        w.iter()
            .map(|n| "-".repeat(*n))
            .collect::<Vec<_>>()
            .join("-+-")
    );
    for c in cells {
        line(c);
    }
}

fn markdown(rows: &[Row], header: &str) -> String {
    let mut s = format!("{header}\n\n| case | setting | dcsync | native | dcsync/native | notes |\n|---|---|---|---|---|---|\n");
    // A `|` inside a cell (the snapshot row names a shell pipeline) would
    // end the cell.
    let cell = |v: &str| v.replace('|', "\\|");
    for r in rows {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            cell(&r.case),
            cell(&r.setting),
            cell(&r.dcsync),
            cell(&r.native),
            cell(&r.ratio),
            cell(&r.notes)
        );
    }
    s
}

fn lag_cell(s: (f64, f64, f64)) -> String {
    format!("{:.1} / {:.1} / {:.1}", s.0, s.1, s.2)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    util::now_us();
    cluster::set_tls(!args.plaintext);
    let dcsync = match &args.dcsync {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("current_exe")?
            .with_file_name("dcsync"),
    };
    anyhow::ensure!(
        dcsync.exists(),
        "{} not found: cargo build --release -p dcsync-agent",
        dcsync.display()
    );
    let p = mysql_cases::Params {
        txns: args
            .txns
            .unwrap_or(if args.quick { 20_000 } else { 250_000 }),
        tables: 4,
        table_size: if args.quick { 20_000 } else { 100_000 },
        lag_secs: args.lag_secs.unwrap_or(if args.quick { 15 } else { 60 }),
    };
    let redis_n = args
        .redis_n
        .unwrap_or(if args.quick { 100_000 } else { 500_000 });
    let snapshot_rows = args
        .snapshot_rows
        .unwrap_or(if args.quick { 100_000 } else { 1_000_000 });
    let mode = if args.quick { "quick" } else { "full" };
    let links = if args.plaintext {
        "plaintext"
    } else {
        "mutual TLS"
    };
    eprintln!("dcsync-bench ({mode}): {p:?}, redis n={redis_n}/command, links: {links}");
    if let Some(c) = args.cases.iter().find(|c| !CASES.contains(&c.as_str())) {
        anyhow::bail!("unknown case {c:?}; the cases are {}", CASES.join(", "));
    }
    let has = |c: &str| args.cases.iter().any(|x| x == c);
    let mut rows = Vec::new();

    if has("replay") {
        for durable in [true, false] {
            let setting = if durable { "durable" } else { "relaxed" };
            if !args.settings.iter().any(|s| s == setting) {
                continue;
            }
            eprintln!("== MySQL backlog replay, {setting}: dcsync");
            let d = mysql_cases::replay_dcsync(&dcsync, &p, durable).await?;
            eprintln!("   {d:?}");
            eprintln!("== MySQL backlog replay, {setting}: native (slave_parallel_threads=0)");
            let n = mysql_cases::replay_native(&p, durable, 0, false).await?;
            eprintln!("   {n:?}");
            let note = format!(
                "{} trx = {} row changes; source load {:.0} trx/s in {:.1} s; journal caught up {:.1} s after it",
                d.load.txns, d.rows, d.load.tps, d.load.secs, d.journal_wait
            );
            rows.push(row(
                "MySQL replay trx/s",
                setting,
                format!("{:.0}", d.tps()),
                format!("{:.0}", n.tps()),
                ratio(d.tps(), n.tps()),
                note,
            ));
            rows.push(row(
                "MySQL replay rows/s",
                setting,
                format!("{:.0}", d.rows_per_sec()),
                format!("{:.0}", n.rows_per_sec()),
                ratio(d.rows_per_sec(), n.rows_per_sec()),
                format!(
                    "replay {:.1} s vs {:.1} s; CPU s in the replay: agents A / B {}, server B {} (native: server B {})",
                    d.secs,
                    n.secs,
                    d.cpu
                        .iter()
                        .take(2)
                        .map(|c| format!("{c:.2}"))
                        .collect::<Vec<_>>()
                        .join(" / "),
                    d.cpu.get(2).map_or("-".into(), |c| format!("{c:.2}")),
                    n.cpu.first().map_or("-".into(), |c| format!("{c:.2}")),
                ),
            ));
            if args.native_parallel {
                eprintln!("== MySQL backlog replay, {setting}: native (slave_parallel_threads=4)");
                let n4 = mysql_cases::replay_native(&p, durable, 4, false).await?;
                eprintln!("   {n4:?}");
                rows.push(row(
                    "MySQL replay trx/s, native parallel=4",
                    setting,
                    format!("{:.0}", d.tps()),
                    format!("{:.0}", n4.tps()),
                    ratio(d.tps(), n4.tps()),
                    format!("{} trx, native replay {:.1} s", n4.load.txns, n4.secs),
                ));
            }
            if args.native_log_updates {
                eprintln!("== MySQL backlog replay, {setting}: native (log_slave_updates=ON)");
                let nl = mysql_cases::replay_native(&p, durable, 0, true).await?;
                eprintln!("   {nl:?}");
                rows.push(row(
                    "MySQL replay trx/s, native log_slave_updates",
                    setting,
                    format!("{:.0}", d.tps()),
                    format!("{:.0}", nl.tps()),
                    ratio(d.tps(), nl.tps()),
                    format!("{} trx, native replay {:.1} s", nl.load.txns, nl.secs),
                ));
            }
            for (i, r) in d.rss.iter().enumerate() {
                rows.push(row(
                    &format!(
                        "agent RSS ({})",
                        if i == 0 { "A, journals" } else { "B, applies" }
                    ),
                    setting,
                    format!("max {}", mib(r.max)),
                    "-".into(),
                    "-".into(),
                    format!(
                        "at start {}; {} changes built up and replayed",
                        mib(r.start),
                        d.rows
                    ),
                ));
            }
        }
    }

    if has("lag") {
        for (rate, rtt) in [(500u32, 30u64), (1000, 30), (2000, 30), (2000, 0)] {
            eprintln!("== MySQL steady-state lag at {rate} trx/s, {rtt} ms RTT (relaxed): dcsync");
            let d = mysql_cases::lag(Some(&dcsync), &p, false, rate, rtt).await?;
            eprintln!("   {d:?}");
            eprintln!("== MySQL steady-state lag at {rate} trx/s, {rtt} ms RTT (relaxed): native");
            let n = mysql_cases::lag(None, &p, false, rate, rtt).await?;
            eprintln!("   {n:?}");
            rows.push(row(
                "MySQL lag p50/p99/max ms",
                &format!("{rate} trx/s offered, {rtt} ms RTT, relaxed"),
                lag_cell(d.summary),
                lag_cell(n.summary),
                ratio(d.summary.0, n.summary.0),
                format!(
                    "sysbench achieved {:.0} / {:.0} trx/s; {} / {} heartbeats; dcsync backlog at end of load: {} trx",
                    d.achieved,
                    n.achieved,
                    d.samples,
                    n.samples,
                    d.backlog_at_end.map_or("?".into(), |v| v.to_string())
                ),
            ));
        }
    }

    if has("redis") {
        eprintln!("== Redis end-to-end throughput: dcsync");
        let d = redis_cases::throughput_dcsync(&dcsync, redis_n).await?;
        eprintln!("   {d:?}");
        eprintln!("== Redis end-to-end throughput: native REPLICAOF");
        let n = redis_cases::throughput_native(redis_n).await?;
        eprintln!("   {n:?}");
        rows.push(row(
            "Redis end-to-end ops/s",
            "redis-benchmark -P 32",
            format!("{:.0}", d.ops_per_sec()),
            format!("{:.0}", n.ops_per_sec()),
            ratio(d.ops_per_sec(), n.ops_per_sec()),
            format!(
                "{} ops; load alone took {:.1} s (dcsync run) / {:.1} s (native run)",
                d.ops, d.load_secs, n.load_secs
            ),
        ));
        for rate in [10_000u64, 50_000] {
            let rtt = 30;
            eprintln!("== Redis steady-state lag at {rate} ops/s, {rtt} ms RTT: dcsync");
            let d = redis_cases::lag(Some(&dcsync), rate, p.lag_secs, rtt).await?;
            eprintln!("   {d:?}");
            eprintln!("== Redis steady-state lag at {rate} ops/s, {rtt} ms RTT: native");
            let n = redis_cases::lag(None, rate, p.lag_secs, rtt).await?;
            eprintln!("   {n:?}");
            rows.push(row(
                "Redis lag p50/p99/max ms",
                &format!("{rate} ops/s offered, {rtt} ms RTT"),
                lag_cell(d.summary),
                lag_cell(n.summary),
                ratio(d.summary.0, n.summary.0),
                format!(
                    "achieved {:.0} / {:.0} ops/s; {} / {} heartbeats",
                    d.achieved, n.achieved, d.samples, n.samples
                ),
            ));
        }
    }

    if has("big-transaction") {
        let rows_k = mysql_cases::BIG_ROWS / 1000;
        eprintln!("== MySQL {rows_k}k-row UPDATE, one transaction (durable): dcsync");
        let d = mysql_cases::big_txn_dcsync(&dcsync).await?;
        eprintln!("   {d:?}");
        eprintln!("== MySQL {rows_k}k-row UPDATE, one transaction (durable): native");
        let n = mysql_cases::big_txn_native().await?;
        eprintln!("   {n:?}");
        let peaks = d
            .peak_rss
            .iter()
            .map(|k| format!("{:.0}", *k as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(" / ");
        rows.push(row(
            &format!("MySQL {rows_k}k-row UPDATE, s"),
            "durable, 10 columns, one transaction",
            format!("{:.1}", d.secs),
            format!("{:.1}", n.secs),
            // Seconds: native ÷ dcsync, so that > 1 means dcsync is faster,
            // as in the replay rows.
            ratio(n.secs, d.secs),
            format!(
                "agent peak RSS, MiB (A / B, VmHWM): {peaks}; applied in {} parts; \
                 UPDATE on A took {:.1} s / {:.1} s; ratio = native s / dcsync s",
                d.parts.map_or("?".into(), |p| p.to_string()),
                d.source_secs,
                n.source_secs
            ),
        ));
    }

    if has("snapshot") || has("verify") {
        snapshot_rows_of(
            &dcsync,
            snapshot_rows,
            has("snapshot"),
            has("verify"),
            &mut rows,
        )
        .await?;
    }

    if has("star") {
        star_rows(
            &dcsync,
            &star_cases::Params {
                rate: args.star_rate,
                secs: p.lag_secs,
                rtt_ms: 30,
            },
            &mut rows,
        )
        .await?;
    }

    println!();
    print_rows(&rows);
    if let Some(path) = &args.markdown {
        let header = format!(
            "dcsync-bench {mode} (links: {links}): {} trx per replay, {} tables x {} rows, lag {} s per rate, redis-benchmark -n {}, snapshot {} rows, star {} rows/s per DC",
            p.txns, p.tables, p.table_size, p.lag_secs, redis_n, snapshot_rows, args.star_rate
        );
        std::fs::write(path, markdown(&rows, &header))
            .with_context(|| format!("write {}", path.display()))?;
        eprintln!("markdown written to {}", path.display());
    }
    Ok(())
}

/// The snapshot case (dcsync against `mariadb-dump | mariadb`, when
/// `snapshot`) and the verify case (after the dcsync snapshot, which it
/// needs, when `verify`), over one prepared table of `n` rows.
async fn snapshot_rows_of(
    dcsync: &std::path::Path,
    n: u64,
    snapshot: bool,
    verify: bool,
    rows: &mut Vec<Row>,
) -> Result<()> {
    eprintln!("== MySQL initial snapshot of {n} rows: sysbench prepare on A");
    let src = snapshot_cases::Source::prepare(n).await?;
    eprintln!("== MySQL initial snapshot of {n} rows (durable): dcsync");
    let d = snapshot_cases::snapshot_dcsync(dcsync, &src, verify).await?;
    eprintln!("   {d:?}");
    if snapshot {
        eprintln!("== MySQL initial snapshot of {n} rows (durable): mariadb-dump | mariadb");
        let m = snapshot_cases::snapshot_dump(&src).await?;
        eprintln!("   {m:?}");
        let (dr, mr) = (n as f64 / d.secs, n as f64 / m.secs);
        let peaks = d
            .peak_rss
            .iter()
            .map(|k| format!("{:.0}", *k as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(" / ");
        let cpu = d
            .cpu_secs
            .iter()
            .map(|s| format!("{s:.1}"))
            .collect::<Vec<_>>()
            .join(" / ");
        rows.push(row(
            "MySQL initial snapshot rows/s",
            &format!("durable, 1 sysbench table x {n} rows"),
            format!("{dr:.0}"),
            format!("{mr:.0}"),
            ratio(dr, mr),
            format!(
                "native = mariadb-dump --single-transaction --no-create-info | mariadb; \
                 {:.1} s from agent start vs {:.1} s; A's source read it in {} s; \
                 agent peak RSS, MiB (A / B, VmHWM): {}; agent CPU s (A / B): {}",
                d.secs,
                m.secs,
                d.source_secs.map_or("?".into(), |s| format!("{s:.1}")),
                peaks,
                cpu,
            ),
        ));
    }
    if let Some(v) = d.verify {
        rows.push(row(
            "MySQL verify rows/s",
            &format!("2 DCs x {} rows, equal", v.rows),
            format!("{:.0}", v.rows as f64 / v.secs),
            "-".into(),
            "-".into(),
            format!(
                "dcsync verify --json: exit 0 (equal), {} rows in {} chunks, {:.2} s wall \
                 ({} ms by its own clock)",
                v.rows, v.chunks, v.secs, v.own_ms
            ),
        ));
    }
    Ok(())
}

/// The star case: a star with hub `bj`, then a mesh, each on four fresh
/// servers under the same load; rows with the star in the first value
/// column and the mesh in the second.
async fn star_rows(
    dcsync: &std::path::Path,
    p: &star_cases::Params,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let what = format!(
        "4 DCs x {} rows/s, {} ms RTT, {} s",
        p.rate, p.rtt_ms, p.secs
    );
    eprintln!("== star (hub bj) vs mesh, {what} (relaxed): star");
    let s = star_cases::run(dcsync, p, true).await?;
    eprintln!("   {s:?}");
    eprintln!("== star (hub bj) vs mesh, {what} (relaxed): mesh");
    let m = star_cases::run(dcsync, p, false).await?;
    eprintln!("   {m:?}");
    let setting = format!("{what} load, relaxed");
    let cols = "columns: star (hub bj) | mesh; ratio = star / mesh";
    rows.push(row(
        "star vs mesh: WAN bytes/change",
        &setting,
        format!("{:.0}", s.bytes_per_change()),
        format!("{:.0}", m.bytes_per_change()),
        ratio(s.bytes_per_change(), m.bytes_per_change()),
        format!(
            "link batch frame bytes summed over all {} / {} links in use ÷ {} / {} rows \
             written in all DCs ({:.0} / {:.0} rows/s per DC achieved); lines crossed per \
             change (sent txns ÷ changes) {:.2} / {:.2}; {cols}",
            s.links.len(),
            m.links.len(),
            s.changes(),
            m.changes(),
            s.achieved(),
            m.achieved(),
            s.crossings(),
            m.crossings()
        ),
    ));
    rows.push(row(
        "star vs mesh: lag sh→tk p50/p99/max ms",
        &setting,
        lag_cell(s.lag),
        lag_cell(m.lag),
        ratio(s.lag.0, m.lag.0),
        format!(
            "star: sh → bj → tk (two lines), mesh: sh → tk; {} / {} heartbeats; \
             ratio of p50; {cols}",
            s.samples, m.samples
        ),
    ));
    let all = |r: &star_cases::Run| {
        r.cpu_pct
            .iter()
            .map(|c| format!("{c:.0}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    rows.push(row(
        "star vs mesh: bj agent CPU %",
        &setting,
        format!("{:.1}", s.cpu_pct[0]),
        format!("{:.1}", m.cpu_pct[0]),
        ratio(s.cpu_pct[0], m.cpu_pct[0]),
        format!(
            "% of one core from the load's start until every DC held every row \
             ({:.1} / {:.1} s, drained {:.2} / {:.2} s after the load); all agents \
             bj / sh / gz / tk: star {}, mesh {}; in the mesh bj is an ordinary DC; {cols}",
            s.window_secs,
            m.window_secs,
            s.drain_secs,
            m.drain_secs,
            all(&s),
            all(&m)
        ),
    ));
    rows.push(row(
        "star vs mesh: bj agent peak RSS",
        &setting,
        mib(s.hub_peak_rss),
        mib(m.hub_peak_rss),
        ratio(s.hub_peak_rss as f64, m.hub_peak_rss as f64),
        format!(
            "VmHWM since the agent started; RSS at the end {} / {}; {cols}",
            mib(s.hub_rss_end),
            mib(m.hub_rss_end)
        ),
    ));
    Ok(())
}
