//! `dcsync verify` against a real two-DC cluster (MariaDB and Redis per
//! DC, agents running): converged DCs are equal (exit 0); rows and keys
//! changed behind the agents' backs are named exactly (exit 1); a steady
//! write load in both DCs gives no false difference, because differing
//! chunks are re-checked row by row until the changes in flight arrive
//! (docs/operations.md, "Checking consistency").
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{options, Cluster, ClusterOptions, MYSQL_STORE, REDIS_STORE};
use dcsync_testkit::prometheus::{promtool_check, sample};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SCHEMA: &str = "
CREATE DATABASE IF NOT EXISTS shop;
CREATE TABLE shop.items (id BIGINT PRIMARY KEY, dc VARCHAR(8) NOT NULL, note VARCHAR(64), amount DECIMAL(10,2), at DATETIME(3) NULL) ENGINE=InnoDB;
CREATE TABLE shop.pairs (a INT NOT NULL, b VARCHAR(16) NOT NULL, v BLOB, PRIMARY KEY (a, b)) ENGINE=InnoDB;
";

const TABLES: &[&str] = &["shop.items", "shop.pairs"];

/// Runs `dcsync verify` on the cluster's topology; (exit code, stdout,
/// stderr).
fn verify(c: &Cluster, store: &str, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dcsync"))
        .arg("verify")
        .arg("--topology")
        .arg(&c.agents.topology)
        .arg("--store")
        .arg(store)
        .args(extra)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    eprintln!("verify {store} {extra:?}:\n{stdout}{stderr}");
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

/// Rows `from..to` of DC number `k` in both tables, 50 per transaction,
/// with NULLs, decimals, datetimes and binary values.
async fn fill(c: &Cluster, k: usize, from: i64, to: i64) {
    let db = &c.dcs[k].db;
    let dc = &c.dcs[k].id;
    let mut i = from;
    while i < to {
        let end = (i + 50).min(to);
        let items: Vec<String> = (i..end)
            .map(|n| {
                let id = k as i64 * 1_000_000 + n;
                let note = if n % 7 == 0 {
                    "NULL".to_string()
                } else {
                    format!("'note {n}'")
                };
                format!(
                    "({id}, '{dc}', {note}, {n}.25, '2024-05-0{} 10:00:00.123')",
                    1 + n % 9
                )
            })
            .collect();
        let pairs: Vec<String> = (i..end)
            .map(|n| format!("({k}, 'b{n}', X'{:04x}00ff')", n))
            .collect();
        db.exec(&format!(
            "BEGIN; INSERT INTO shop.items VALUES {}; INSERT INTO shop.pairs VALUES {}; COMMIT",
            items.join(", "),
            pairs.join(", ")
        ))
        .await;
        i = end;
    }
}

/// Keys of every type in DC number `k`'s Redis, then `done:<k>` last.
async fn fill_redis(c: &Cluster, k: usize, n: usize) {
    let r = c.dcs[k].redis.as_ref().unwrap();
    let mut conn = r.conn().await;
    let mut p = redis::pipe();
    for i in 0..n {
        p.cmd("SET").arg(format!("s:{k}:{i}")).arg(format!("v{i}"));
        if i % 10 == 0 {
            p.cmd("HSET")
                .arg(format!("h:{k}:{i}"))
                .arg("a")
                .arg(i)
                .arg("b")
                .arg("x");
            p.cmd("SADD")
                .arg(format!("set:{k}:{i}"))
                .arg("m1")
                .arg("m2");
            p.cmd("ZADD").arg(format!("z:{k}:{i}")).arg(1.5).arg("m");
            p.cmd("RPUSH").arg(format!("l:{k}:{i}")).arg("1").arg("2");
        }
    }
    p.cmd("SET")
        .arg(format!("ttl:{k}"))
        .arg("x")
        .arg("EX")
        .arg(3600);
    let _: () = p.query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("done:{k}"))
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// Waits until every DC's Redis holds `done:<k>` of each DC number `k`
/// in `filled`: the keys written before it arrived too (per-origin order).
async fn wait_redis(c: &Cluster, filled: &[usize]) {
    for d in &c.dcs {
        let r = d.redis.as_ref().unwrap();
        for &k in filled {
            dcsync_testkit::wait_for(
                &format!("done:{k} in {}", d.id),
                Duration::from_secs(60),
                || async {
                    let mut conn = r.conn().await;
                    let n: i64 = redis::cmd("EXISTS")
                        .arg(format!("done:{k}"))
                        .query_async(&mut conn)
                        .await
                        .ok()?;
                    (n == 1).then_some(())
                },
            )
            .await;
        }
    }
}

async fn start() -> Cluster {
    Cluster::start(ClusterOptions {
        schema_sql: SCHEMA.into(),
        redis: true,
        ..options()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn converged_dcs_are_equal() {
    let mut c = start().await;
    fill(&c, 0, 0, 700).await;
    fill(&c, 1, 0, 600).await;
    fill_redis(&c, 0, 300).await;
    fill_redis(&c, 1, 200).await;
    c.wait_converged(TABLES, 60).await;
    wait_redis(&c, &[0, 1]).await;

    // Small chunks: several per table, bounds inside the composite key.
    let (code, out, err) = verify(&c, MYSQL_STORE, &["--chunk-rows", "97"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(": equal; 2 table(s), 2600 row(s) in ")
            && out.contains("0 chunk(s) re-checked"),
        "{out}"
    );
    let (code, out, err) = verify(&c, REDIS_STORE, &["--json", "--chunk-rows", "50"]);
    assert_eq!(code, 0, "{out}{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    // Per DC: its strings, 4 keys per tenth of them, a key with a TTL and
    // done:<k>.
    assert_eq!(r["items"], (300 + 4 * 30 + 2) + (200 + 4 * 20 + 2), "{out}");
    assert!(r["units"].as_u64().unwrap() > 1, "{out}");
    assert_eq!(r["differences"], serde_json::json!([]), "{out}");
    assert_eq!(r["terms"]["item"], "key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_behind_the_agents_backs_are_named() {
    let mut c = start().await;
    let (bj, sh) = (0, 1);
    fill(&c, bj, 0, 300).await;
    fill(&c, sh, 0, 300).await;
    fill_redis(&c, bj, 100).await;
    c.wait_converged(TABLES, 60).await;
    wait_redis(&c, &[bj]).await;

    // sql_log_bin=0: the change is not in the binlog, so no agent ships
    // it; each DC keeps its own version of these rows.
    c.dcs[bj]
        .db
        .exec("SET SESSION sql_log_bin=0; UPDATE shop.items SET note = 'drift' WHERE id = 17")
        .await;
    c.dcs[sh]
        .db
        .exec("SET SESSION sql_log_bin=0; DELETE FROM shop.items WHERE id = 1000042")
        .await;
    c.dcs[sh]
        .db
        .exec("SET SESSION sql_log_bin=0; INSERT INTO shop.pairs VALUES (1, 'extra', NULL)")
        .await;
    // Redis has no such switch: every write to the primary is on the
    // replication stream the agent reads. So bj's agent is stopped: a key
    // changed in bj now is not shipped while it is down, and a key written
    // in sh waits in sh's backlog for bj. Both differ for as long as
    // verify runs.
    c.agents.kill_agent(bj);
    let mut conn = c.dcs[bj].redis.as_ref().unwrap().conn().await;
    let _: () = redis::cmd("SET")
        .arg("s:0:5")
        .arg("drift")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut conn = c.dcs[sh].redis.as_ref().unwrap().conn().await;
    let _: () = redis::cmd("HSET")
        .arg("only:sh")
        .arg("f")
        .arg("v")
        .query_async(&mut conn)
        .await
        .unwrap();

    let fast = [
        "--chunk-rows",
        "64",
        "--recheck-ms",
        "200",
        "--rechecks",
        "2",
    ];
    let (code, out, err) = verify(&c, MYSQL_STORE, &fast);
    assert_eq!(code, 1, "{out}{err}");
    let diffs: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("difference:"))
        .collect();
    assert_eq!(diffs.len(), 3, "{out}");
    let has = |prefix: &str| diffs.iter().any(|l| l.starts_with(prefix));
    assert!(
        has("difference: table shop.items row id=17: values differ (bj: "),
        "{out}"
    );
    assert!(
        has("difference: table shop.items row id=1000042: missing in sh (bj: ")
            && out.contains("sh: missing)"),
        "{out}"
    );
    assert!(
        has("difference: table shop.pairs row a=1, b='extra': missing in bj (bj: missing, sh: "),
        "{out}"
    );
    assert!(out.contains("3 difference(s)"), "{out}");

    let mut args = fast.to_vec();
    args.push("--json");
    let (code, out, err) = verify(&c, REDIS_STORE, &args);
    assert_eq!(code, 1, "{out}{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let diffs = r["differences"].as_array().unwrap();
    let mut named: Vec<(String, String)> = diffs
        .iter()
        .map(|d| {
            (
                d["item"].as_str().unwrap().to_string(),
                d["what"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    named.sort();
    assert_eq!(
        named,
        vec![
            ("only:sh".to_string(), "missing in bj".to_string()),
            ("s:0:5".to_string(), "values differ".to_string()),
        ],
        "{out}"
    );
    assert_eq!(diffs[0]["collection"], "db0");

    // Repair: bj's copy wins. Its agent ships what --repair writes there
    // (id 17 and 1000042 written again), and the row bj lacks is deleted
    // in sh; all through the agents, nothing behind their backs.
    c.agents.start_agent(bj);
    let mut args = fast.to_vec();
    args.extend(["--repair", "--from", "bj"]);
    let (code, out, err) = verify(&c, MYSQL_STORE, &args);
    assert_eq!(code, 0, "{out}{err}");
    let repaired: Vec<&str> = out.lines().filter(|l| l.starts_with("repaired:")).collect();
    assert_eq!(repaired.len(), 3, "{out}");
    assert!(
        out.contains("repaired: table shop.items row id=17: written again in bj")
            && out.contains("repaired: table shop.items row id=1000042: written again in bj")
            && out.contains("repaired: table shop.pairs row a=1, b='extra': deleted in sh"),
        "{out}"
    );
    // A second verify is clean once the agents shipped the repairs; the
    // Redis differences heal by themselves now that bj's agent ships its
    // backlog and applies sh's.
    for store in [MYSQL_STORE, REDIS_STORE] {
        dcsync_testkit::wait_for(
            &format!("a clean verify of {store} after the repair"),
            Duration::from_secs(60),
            || async { (verify(&c, store, &fast).0 == 0).then_some(()) },
        )
        .await;
    }
    let note: String = c.dcs[sh]
        .db
        .query_i64("SELECT COUNT(*) FROM shop.items WHERE id = 17 AND note = 'drift'")
        .await
        .to_string();
    assert_eq!(note, "1", "bj's copy of row 17 won in sh");
}

/// Polls DC number `i`'s status until its periodic check of the MySQL
/// store satisfies `ok` (deadline 60 s).
async fn wait_check(
    c: &Cluster,
    i: usize,
    what: &str,
    ok: impl Fn(&dcsync_testkit::status::VerifyCheck) -> bool,
) -> dcsync_testkit::status::VerifyCheck {
    dcsync_testkit::wait_for(what, Duration::from_secs(60), || async {
        c.agents
            .status(i)
            .and_then(|s| s.verify(MYSQL_STORE))
            .filter(|v| ok(v))
    })
    .await
}

/// `verify_every_s = 1`: bj's agent (the first DC) compares the store with
/// sh's every second, as `dcsync verify` does, and shows the result in its
/// status, `dcsync status` and metrics; sh's agent runs no check. A row
/// changed behind the agents' backs shows as a difference; once repaired
/// (`dcsync verify --repair`), the next checks find none; a store that
/// cannot be reached is an error in the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_periodic_check_reports_a_difference_until_it_is_repaired() {
    let mut c = Cluster::start(ClusterOptions {
        schema_sql: SCHEMA.into(),
        mysql_store_toml: "verify_every_s = 1\n".into(),
        ..options()
    })
    .await;
    let (bj, sh) = (0, 1);
    fill(&c, bj, 0, 200).await;
    fill(&c, sh, 0, 200).await;
    c.wait_converged(TABLES, 60).await;
    let converged = dcsync_core::now_ms();
    let v = wait_check(&c, bj, "a check after convergence", |v| {
        v.last_ms > Some(converged)
    })
    .await;
    assert_eq!((v.differences, v.error.clone()), (0, None), "{v:?}");
    assert!(
        c.agents.status(sh).unwrap().verify(MYSQL_STORE).is_none(),
        "only verify_from (bj) checks"
    );

    c.dcs[bj]
        .db
        .exec("SET SESSION sql_log_bin=0; UPDATE shop.items SET note = 'drift' WHERE id = 17")
        .await;
    let v = wait_check(&c, bj, "the drifted row in bj's status", |v| {
        v.differences == 1
    })
    .await;
    assert!(
        v.named[0].starts_with("table shop.items row id=17: values differ (bj: "),
        "{v:?}"
    );
    let metrics = c.agents.admin_get(bj, "/metrics").unwrap();
    let labels = [("store", MYSQL_STORE)];
    assert_eq!(
        sample(&metrics, "dcsync_verify_differences", &labels),
        Some(1.0),
        "{metrics}"
    );
    let last = sample(&metrics, "dcsync_verify_last_timestamp_seconds", &labels).unwrap();
    assert!(last * 1000.0 >= converged as f64, "{metrics}");
    promtool_check(&metrics).unwrap_or_else(|e| panic!("{e}\n{metrics}"));
    let text = c.agents.status_text(bj, false);
    eprintln!("{text}");
    assert!(
        text.contains("difference: table shop.items row id=17: values differ"),
        "{text}"
    );
    assert!(
        c.agents.log(bj).contains("the DCs differ"),
        "a warning in bj's log"
    );

    let fast = ["--recheck-ms", "200", "--rechecks", "2"];
    let (code, out, err) = verify(&c, MYSQL_STORE, &[&fast[..], &["--repair"]].concat());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("written again in bj"), "{out}");
    let repaired = dcsync_core::now_ms();
    wait_check(&c, bj, "a clean check after the repair", |v| {
        v.differences == 0 && v.last_ms > Some(repaired)
    })
    .await;
    let metrics = c.agents.admin_get(bj, "/metrics").unwrap();
    assert_eq!(
        sample(&metrics, "dcsync_verify_differences", &labels),
        Some(0.0),
        "{metrics}"
    );

    // sh's store down: the check cannot compare, and says why.
    c.dcs[sh].db.stop();
    // (A check running when the server stopped fails on its query; the
    // next one cannot open the store.)
    let v = wait_check(&c, bj, "an error in bj's status", |v| {
        v.error
            .as_ref()
            .is_some_and(|e| e.contains("cannot open the store"))
    })
    .await;
    let e = v.error.unwrap_or_default();
    assert!(e.contains("dc sh (mysql://"), "{e}");
    let metrics = c.agents.admin_get(bj, "/metrics").unwrap();
    assert!(sample(&metrics, "dcsync_verify_errors_total", &labels).unwrap_or(0.0) >= 1.0);
    assert!(c
        .agents
        .status_text(bj, false)
        .contains("could not compare"));
}

/// Writes to DC number `k`'s own rows and keys until `stop`: updates of
/// random rows among `rows`, inserts, Redis SETs and HINCRBYs, spread
/// over many rows and keys (a single row written faster than the agents'
/// lag, all the time, never holds still long enough to be compared: it is
/// reported as still changing, see docs/operations.md).
async fn load(c: Arc<Cluster>, k: usize, rows: i64, stop: Arc<AtomicBool>) -> u64 {
    let db = c.dcs[k].db.conn().await;
    let mut db = db;
    let mut r = c.dcs[k].redis.as_ref().unwrap().conn().await;
    let mut n = 0u64;
    use mysql_async::prelude::Queryable;
    while !stop.load(Ordering::Relaxed) {
        let id = k as i64 * 1_000_000 + (rand::random::<u64>() % rows as u64) as i64;
        db.query_drop(format!(
            "UPDATE shop.items SET note = 'load {n}', amount = amount + 1 WHERE id = {id}"
        ))
        .await
        .unwrap();
        if n.is_multiple_of(5) {
            db.query_drop(format!(
                "INSERT INTO shop.pairs VALUES ({k}, 'load{n}', NULL)"
            ))
            .await
            .unwrap();
        }
        let key = format!("s:{k}:{}", rand::random::<u64>() % 300);
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(n)
            .query_async(&mut r)
            .await
            .unwrap();
        if n.is_multiple_of(10) {
            let _: i64 = redis::cmd("HINCRBY")
                .arg(format!("h:{k}:{}", rand::random::<u64>() % 30 * 10))
                .arg("a")
                .arg(1)
                .query_async(&mut r)
                .await
                .unwrap();
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_steady_write_load_gives_no_false_difference() {
    let mut c = start().await;
    fill(&c, 0, 0, 2000).await;
    fill(&c, 1, 0, 2000).await;
    fill_redis(&c, 0, 300).await;
    fill_redis(&c, 1, 300).await;
    c.wait_converged(TABLES, 60).await;
    wait_redis(&c, &[0, 1]).await;

    let c = Arc::new(c);
    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<_> = (0..2)
        .map(|k| tokio::spawn(load(c.clone(), k, 2000, stop.clone())))
        .collect();
    // Let the load reach its pace before comparing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let args = ["--json", "--chunk-rows", "300", "--recheck-ms", "1000"];
    let (code_m, out_m, err_m) = verify(&c, MYSQL_STORE, &args);
    let (code_r, out_r, err_r) = verify(&c, REDIS_STORE, &args);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut writes = 0;
    for l in loads {
        writes += l.await.unwrap();
    }
    eprintln!("{writes} write rounds in both DCs during {elapsed:?} of verify");
    assert_eq!(code_m, 0, "{out_m}{err_m}");
    assert_eq!(code_r, 0, "{out_r}{err_r}");
    let m: serde_json::Value = serde_json::from_str(&out_m).unwrap();
    // The load was really in flight: chunks differed at first and were
    // re-checked.
    assert!(m["units_rechecked"].as_u64().unwrap() > 0, "{out_m}");
    assert!(writes > 100, "{writes} writes");
}

/// How fast verify reads: two servers holding the same 200,000 rows
/// (filled from MariaDB's sequence engine, no agents), compared with the
/// default chunk size; prints rows/s (not asserted: the machine is
/// shared). `cargo test -p dcsync-agent --test verify -- --ignored
/// --nocapture throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check: run it by name"]
async fn throughput_on_200k_rows() {
    use dcsync_testkit::mariadb::MariaDb;
    let (bj, sh) = (MariaDb::start().await, MariaDb::start().await);
    for db in [&bj, &sh] {
        db.exec(SCHEMA).await;
        db.exec(
            "INSERT INTO shop.items SELECT seq, 'bj', CONCAT('note ', seq), seq / 4, \
             '2024-05-01 10:00:00.123' FROM shop.seq_1_to_200000",
        )
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topology.toml");
    std::fs::write(
        &path,
        format!(
            "cluster = \"bench\"\n\
             [[dc]]\nid = \"bj\"\nlink = \"127.0.0.1:7701\"\n\
             [[dc]]\nid = \"sh\"\nlink = \"127.0.0.1:7702\"\n\
             [units]\ncount = 2\nowners = {{ bj = \"0\", sh = \"1\" }}\n\
             [[store]]\nname = \"orders\"\nkind = \"mysql\"\ntables = [\"shop.*\"]\n\
             url = {{ bj = \"{}\", sh = \"{}\" }}\n\
             [tls]\nplaintext = true\n",
            bj.url(),
            sh.url()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dcsync"))
        .args(["verify", "--topology"])
        .arg(&path)
        .args(["--store", "orders"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("200000 row(s)"), "{text}");
}

/// Nothing to conclude is exit 2 with a message naming the problem: an
/// unknown store, a single DC, a store that cannot be reached (its DC and
/// redacted url named, no password).
#[test]
fn what_cannot_be_compared_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topology.toml");
    let down = dcsync_testkit::free_port();
    std::fs::write(
        &path,
        format!(
            "cluster = \"t\"\n\
             [[dc]]\nid = \"bj\"\nlink = \"127.0.0.1:7701\"\n\
             [[dc]]\nid = \"sh\"\nlink = \"127.0.0.1:7702\"\n\
             [units]\ncount = 2\nowners = {{ bj = \"0\", sh = \"1\" }}\n\
             [[store]]\nname = \"cache\"\nkind = \"redis\"\n\
             url = {{ bj = \"redis://:secret@127.0.0.1:{down}\", sh = \"redis://:secret@127.0.0.1:{down}\" }}\n\
             [tls]\nplaintext = true\n"
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_dcsync"))
            .args(["verify", "--topology"])
            .arg(&path)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run(&["--store", "orders"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("store \"orders\" is not declared") && err.contains("(declared: cache)"),
        "{err}"
    );
    let (code, err) = run(&["--store", "cache", "--dc", "bj"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("verify compares at least two DCs, 1 given"),
        "{err}"
    );
    let (code, err) = run(&["--store", "cache"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("cannot open the store")
            && (err.contains("dc bj (redis://") || err.contains("dc sh (redis://"))
            && !err.contains("secret"),
        "{err}"
    );
}
