//! Conflicts through real agents and servers (docs/conflicts.md). Under
//! `conflict = "lww"`: two or three DCs writing the same rows while the
//! lines between them are down converge to the greater version everywhere,
//! every conflict is in the conflict log and the status, nothing echoes,
//! the HLC (not a DC's wall clock) decides, a secondary unique value keeps
//! one row everywhere, and an agent killed while applying conflicts loses
//! and doubles nothing. Under `conflict = "owner"` (the MySQL default) the
//! unit's owner wins, also after the unit moved to another DC.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{options, Cluster, ClusterOptions, MYSQL_STORE};
use std::path::Path;
use std::time::Duration;

/// The store key of the `lww` tests.
const LWW: &str = "conflict = \"lww\"\n";

const SCHEMA: &str = "CREATE DATABASE IF NOT EXISTS shop; \
    CREATE TABLE shop.items (id INT PRIMARY KEY, note VARCHAR(64), n INT) ENGINE=InnoDB;";

/// The conflict log of an agent, one JSON value per conflict (a record a
/// retried group logged again is folded, as `dcsync conflicts` does).
fn conflicts(data_dir: &Path) -> Vec<serde_json::Value> {
    let mut seen = std::collections::HashSet::new();
    match std::fs::read_to_string(data_dir.join("conflicts.jsonl")) {
        Ok(text) => text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("a conflict record is JSON")
            })
            .filter(|r| {
                seen.insert(format!(
                    "{} {} {} {} {}",
                    r["dc"], r["store"], r["key"], r["winner"], r["loser"]
                ))
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Every `note` of `shop.items` at DC `i`, by id.
async fn notes(c: &Cluster, i: usize) -> Vec<(i64, String)> {
    use mysql_async::prelude::Queryable;
    let mut conn = c.dcs[i].db.conn().await;
    conn.query("SELECT id, note FROM shop.items ORDER BY id")
        .await
        .unwrap()
}

fn cut(c: &Cluster) {
    for a in &c.agents.dcs {
        a.proxy.cut();
    }
}

fn restore(c: &Cluster) {
    for a in &c.agents.dcs {
        a.proxy.restore();
    }
}

/// With the line cut, `bj_sql` runs in bj, then `sh_sql` in sh with sh's
/// server clock five minutes ahead (its binlog events carry that time, and
/// the HLC derives from it); then the line returns and `table` converges.
async fn race_with_sh_ahead(c: &mut Cluster, table: &str, bj_sql: &str, sh_sql: &str) {
    cut(c);
    c.dcs[0].db.exec(bj_sql).await;
    c.dcs[1]
        .db
        .exec(&format!(
            "SET SESSION timestamp = UNIX_TIMESTAMP() + 300; {sh_sql}"
        ))
        .await;
    restore(c);
    c.wait_converged(&[table], 90).await;
}

/// `(hlc, dc)` of a version in a conflict record.
fn version(v: &serde_json::Value) -> (u64, String) {
    (
        v["hlc"].as_u64().expect("hlc"),
        v["dc"].as_str().expect("dc").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_rows_written_in_both_dcs_converge_to_the_greater_version() {
    let mut c = Cluster::start(ClusterOptions {
        schema_sql: SCHEMA.into(),
        mysql_store_toml: LWW.into(),
        ..options()
    })
    .await;
    let mut written = [0u64, 0u64];
    c.dcs[0]
        .db
        .exec("INSERT INTO shop.items SELECT seq, 'init', 0 FROM shop.seq_1_to_200")
        .await;
    written[0] += 1;
    c.wait_converged(&["shop.items"], 60).await;

    // Three rounds of both DCs updating all 200 rows while the line is
    // down: every row is written concurrently in both DCs each round.
    for round in 1..=3 {
        cut(&c);
        let (bj_sql, sh_sql) = (
            format!("UPDATE shop.items SET note = 'bj-{round}', n = n + 1"),
            format!("UPDATE shop.items SET note = 'sh-{round}', n = n + 10"),
        );
        tokio::join!(c.dcs[0].db.exec(&bj_sql), c.dcs[1].db.exec(&sh_sql));
        written[0] += 1;
        written[1] += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
        restore(&c);
        c.wait_converged(&["shop.items"], 90).await;
        // One DC's update won every row of this round.
        let rows = notes(&c, 0).await;
        assert_eq!(rows.len(), 200);
        let winner = rows[0].1.clone();
        assert!(
            winner == format!("bj-{round}") || winner == format!("sh-{round}"),
            "round {round}: {winner}"
        );
        assert!(
            rows.iter().all(|(_, n)| *n == winner),
            "round {round}: rows differ in winner"
        );
        assert_eq!(rows, notes(&c, 1).await);
    }

    // Every conflict is recorded where the losing change arrived: each
    // round, the 200 rows' losing updates.
    // (A sink logs a group's conflicts right after its commit, so the log
    // may trail the data by a moment.)
    let all = |c: &Cluster| {
        let mut records = Vec::new();
        for a in &c.agents.dcs {
            records.extend(conflicts(&a.data_dir));
        }
        records
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while all(&c).len() < 600 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let records = all(&c);
    assert_eq!(
        records.len(),
        600,
        "one record per row and round: {records:?}"
    );
    for r in &records {
        assert!(version(&r["winner"]) > version(&r["loser"]), "{r}");
        assert_ne!(r["winner"]["dc"], r["loser"]["dc"], "{r}");
        assert_eq!(r["store"], MYSQL_STORE);
        assert_eq!(r["policy"], "lww");
        assert!(
            r["key"].as_str().unwrap().starts_with("shop.items id="),
            "{r}"
        );
        // The kept row was read back for the log, the lost one is its image.
        assert!(r["winner_value"].as_str().unwrap().contains("note="), "{r}");
        assert!(r["loser_value"].as_str().unwrap().contains("note="), "{r}");
    }
    // The status counts them per store (status.json is rewritten every
    // second).
    let counted = |c: &Cluster| {
        (0..2)
            .map(|i| {
                let st: serde_json::Value =
                    serde_json::from_str(&c.agents.status_text(i, true)).unwrap_or_default();
                st["sources"].as_array().map_or(0, |a| {
                    a.iter()
                        .filter(|s| s["store"] == MYSQL_STORE)
                        .filter_map(|s| s["conflicts"].as_u64())
                        .sum::<u64>()
                })
            })
            .sum::<u64>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while counted(&c) != 600 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(counted(&c), 600);
    // `dcsync conflicts` prints them.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dcsync"))
        .args(["conflicts", "--dc", "bj", "--since", "1h", "--data-dir"])
        .arg(&c.agents.dcs[0].data_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let bj_records = conflicts(&c.agents.dcs[0].data_dir).len();
    assert!(
        text.contains(&format!("{bj_records} conflict(s) in")),
        "{text}"
    );
    // Nothing echoed: each DC's source journaled exactly its own writes.
    c.assert_no_echo(MYSQL_STORE, &written).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_hlc_not_the_wall_clock_decides() {
    let mut c = Cluster::start(ClusterOptions {
        schema_sql: SCHEMA.into(),
        mysql_store_toml: LWW.into(),
        ..options()
    })
    .await;
    c.dcs[0]
        .db
        .exec("INSERT INTO shop.items VALUES (1, 'init', 0)")
        .await;
    c.wait_converged(&["shop.items"], 60).await;

    // sh's server clock runs five minutes ahead (its binlog events carry
    // that time, and the HLC derives from it). Concurrent writes: sh's is
    // stamped later, so it wins in both DCs.
    race_with_sh_ahead(
        &mut c,
        "shop.items",
        "UPDATE shop.items SET note = 'bj-concurrent' WHERE id = 1",
        "UPDATE shop.items SET note = 'sh-ahead' WHERE id = 1",
    )
    .await;
    assert_eq!(notes(&c, 0).await, vec![(1, "sh-ahead".to_string())]);

    // bj writes after it has seen sh's value: by the wall clock bj's write
    // is five minutes older than sh's, but it happened after it, and the
    // HLC says so: it wins everywhere.
    c.dcs[0]
        .db
        .exec("UPDATE shop.items SET note = 'bj-after' WHERE id = 1")
        .await;
    c.wait_converged(&["shop.items"], 90).await;
    assert_eq!(notes(&c, 0).await, vec![(1, "bj-after".to_string())]);
    assert_eq!(notes(&c, 1).await, vec![(1, "bj-after".to_string())]);
    // The one conflict was detected in sh, where bj's concurrent write
    // arrived after sh's later-stamped one.
    assert!(conflicts(&c.agents.dcs[0].data_dir).is_empty());
    let sh = conflicts(&c.agents.dcs[1].data_dir);
    assert_eq!(sh.len(), 1, "{sh:?}");
    assert_eq!(sh[0]["winner"]["dc"], "sh");
    assert_eq!(sh[0]["loser"]["dc"], "bj");
    assert_eq!(sh[0]["key"], "shop.items id=1");
    assert!(sh[0]["loser_value"]
        .as_str()
        .unwrap()
        .contains("bj-concurrent"));
    assert!(sh[0]["winner_value"].as_str().unwrap().contains("sh-ahead"));
    c.assert_no_echo(MYSQL_STORE, &[3, 1]).await;
}

/// Waits until every agent's status shows the journal's last seq of the
/// MySQL store, and returns them in DC order (0 for a DC that journaled
/// nothing of it yet: its status has no stream of it).
async fn journaled(c: &Cluster) -> Vec<u64> {
    // A status written after now (it is rewritten every second) shows
    // everything journaled before this call.
    let since = dcsync_core::now_ms();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let seqs: Vec<Option<u64>> = (0..c.dcs.len())
            .map(|i| {
                c.agents
                    .status(i)
                    .filter(|s| s.written_ms() > since)
                    .map(|s| s.last_seq(MYSQL_STORE).unwrap_or(0))
            })
            .collect();
        if seqs.iter().all(Option::is_some) {
            return seqs.into_iter().flatten().collect();
        }
        assert!(std::time::Instant::now() < deadline, "no fresh status");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_dcs_writing_the_same_rows_converge() {
    let mut c = Cluster::start(ClusterOptions {
        dcs: vec!["bj", "sh", "gz"],
        schema_sql: SCHEMA.into(),
        mysql_store_toml: LWW.into(),
        ..options()
    })
    .await;
    c.dcs[0]
        .db
        .exec("INSERT INTO shop.items SELECT seq, 'init', 0 FROM shop.seq_1_to_100")
        .await;
    c.wait_converged(&["shop.items"], 60).await;
    cut(&c);
    let sql: Vec<String> = ["bj", "sh", "gz"]
        .iter()
        .map(|dc| format!("UPDATE shop.items SET note = '{dc}', n = n + 1"))
        .collect();
    tokio::join!(
        c.dcs[0].db.exec(&sql[0]),
        c.dcs[1].db.exec(&sql[1]),
        c.dcs[2].db.exec(&sql[2])
    );
    restore(&c);
    c.wait_converged(&["shop.items"], 120).await;
    let rows = notes(&c, 0).await;
    assert_eq!(rows.len(), 100);
    assert!(rows.iter().all(|(_, n)| *n == rows[0].1), "{rows:?}");
    for i in 1..3 {
        assert_eq!(notes(&c, i).await, rows);
    }
    // Per row, the two losers are rejected in the winner's DC, the lowest
    // in the middle one, and in the lowest DC the middle one too if it
    // arrived after the winner: 3 or 4 records per row.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let records = loop {
        let mut all = Vec::new();
        for a in &c.agents.dcs {
            all.extend(conflicts(&a.data_dir));
        }
        if all.len() >= 300 || std::time::Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!((300..=400).contains(&records.len()), "{}", records.len());
    for r in &records {
        assert!(version(&r["winner"]) > version(&r["loser"]), "{r}");
        // The row as it was when the conflict was logged (a later
        // winner may already have replaced it): one of the DCs' notes.
        assert!(
            ["bj", "sh", "gz"].iter().any(|dc| r["winner_value"]
                .as_str()
                .unwrap()
                .contains(&format!("note='{dc}'"))),
            "{r}"
        );
    }
    c.assert_no_echo(MYSQL_STORE, &[2, 1, 1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_killed_while_applying_conflicts_loses_and_doubles_nothing() {
    let mut c = Cluster::start(ClusterOptions {
        schema_sql: SCHEMA.into(),
        mysql_store_toml: LWW.into(),
        ..options()
    })
    .await;
    c.dcs[0]
        .db
        .exec("INSERT INTO shop.items SELECT seq, 'init', 0 FROM shop.seq_1_to_20000")
        .await;
    c.wait_converged(&["shop.items"], 90).await;
    let before = journaled(&c).await;
    cut(&c);
    tokio::join!(
        c.dcs[0]
            .db
            .exec("UPDATE shop.items SET note = 'bj', n = n + 1"),
        c.dcs[1]
            .db
            .exec("UPDATE shop.items SET note = 'sh', n = n + 10")
    );
    restore(&c);
    // sh's agent dies while it applies bj's conflicting rows (or just
    // before or after: the outcome must not depend on it).
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.agents.kill_agent(1);
    c.agents.start_agent(1);
    c.wait_converged(&["shop.items"], 180).await;
    let rows = notes(&c, 0).await;
    assert_eq!(rows.len(), 20000);
    assert!(rows.iter().all(|(_, n)| *n == rows[0].1));
    assert_eq!(rows, notes(&c, 1).await);
    // Each DC journaled exactly its one UPDATE: nothing applied came back.
    let after = journaled(&c).await;
    assert_eq!(after[0] - before[0], 1, "bj: {before:?} -> {after:?}");
    assert_eq!(after[1] - before[1], 1, "sh: {before:?} -> {after:?}");
    // Every row lost in exactly one DC (a conflict logged twice would be
    // a group applied twice).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n: usize = c
            .agents
            .dcs
            .iter()
            .map(|a| conflicts(&a.data_dir).len())
            .sum();
        if n >= 20000 {
            assert_eq!(n, 20000);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{n} conflicts logged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_unique_value_inserted_in_both_dcs_keeps_one_row_everywhere() {
    let mut c = Cluster::start(ClusterOptions {
        schema_sql: "CREATE DATABASE IF NOT EXISTS shop; \
            CREATE TABLE shop.accounts (id INT PRIMARY KEY, email VARCHAR(64) NOT NULL, \
              name VARCHAR(32), UNIQUE KEY email (email)) ENGINE=InnoDB;"
            .into(),
        mysql_store_toml: LWW.into(),
        ..options()
    })
    .await;
    c.dcs[0]
        .db
        .exec("INSERT INTO shop.accounts VALUES (10, 'old@x', 'both')")
        .await;
    c.wait_converged(&["shop.accounts"], 60).await;
    // The same e-mail signs up in both DCs at once (different ids).
    cut(&c);
    c.dcs[0]
        .db
        .exec("INSERT INTO shop.accounts VALUES (1, 'a@x', 'bj')")
        .await;
    c.dcs[1]
        .db
        .exec("INSERT INTO shop.accounts VALUES (2, 'a@x', 'sh')")
        .await;
    restore(&c);
    c.wait_converged(&["shop.accounts"], 90).await;
    let rows = |i: usize| {
        let db = &c.dcs[i].db;
        async move {
            use mysql_async::prelude::Queryable;
            let mut conn = db.conn().await;
            let r: Vec<(i64, String, String)> = conn
                .query("SELECT id, email, name FROM shop.accounts ORDER BY id")
                .await
                .unwrap();
            r
        }
    };
    let bj = rows(0).await;
    assert_eq!(bj, rows(1).await);
    // One of the two sign-ups survives everywhere, and the other row is
    // gone everywhere (never each DC keeping its own).
    assert_eq!(bj.len(), 2, "{bj:?}");
    assert!(
        bj.contains(&(10, "old@x".to_string(), "both".to_string())),
        "{bj:?}"
    );
    let Some((id, email, name)) = bj.iter().find(|r| r.0 != 10).cloned() else {
        panic!("{bj:?}")
    };
    assert_eq!(email, "a@x");
    assert!(
        (id == 1 && name == "bj") || (id == 2 && name == "sh"),
        "{bj:?}"
    );
    // The loser is in a conflict log: where the winner arrived, the losing
    // row was deleted for it; where the loser arrived, it was not applied.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let records = loop {
        let mut all = Vec::new();
        for a in &c.agents.dcs {
            all.extend(conflicts(&a.data_dir));
        }
        if all.len() >= 2 || std::time::Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(records.len(), 2, "{records:?}");
    let winner = if name == "bj" { "bj" } else { "sh" };
    for r in &records {
        assert_eq!(r["winner"]["dc"], winner, "{r}");
        assert!(
            r["decision"].as_str().unwrap().contains("unique value"),
            "{r}"
        );
    }
    c.assert_no_echo(MYSQL_STORE, &[2, 1]).await;
}

/// A `user_id` whose unit (of 64; the harness gives bj units 0-31 and sh
/// 32-63) is `want_bj ? < 32 : >= 32`, with its unit.
fn user_of(want_bj: bool) -> (u32, u32) {
    (1..1000)
        .map(|u: u32| (u, dcsync_core::unit::unit_of(u.to_string().as_bytes(), 64)))
        .find(|(_, unit)| (*unit < 32) == want_bj)
        .expect("a user id of each DC")
}

const PROFILES: &str = "CREATE DATABASE IF NOT EXISTS shop; \
    CREATE TABLE shop.profiles (id INT PRIMARY KEY, user_id INT, note VARCHAR(64)) ENGINE=InnoDB;";

async fn profile_note(c: &Cluster, i: usize) -> String {
    use mysql_async::prelude::Queryable;
    let mut conn = c.dcs[i].db.conn().await;
    conn.query_first("SELECT note FROM shop.profiles WHERE id = 1")
        .await
        .unwrap()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_owner_the_units_owner_wins_and_a_moved_unit_follows_its_new_owner() {
    let mut c = Cluster::start(ClusterOptions {
        schema_sql: PROFILES.into(),
        mysql_store_toml: "conflict = \"owner\"\n".into(),
        ..options()
    })
    .await;
    let (user, unit) = user_of(true);
    c.dcs[0]
        .db
        .exec(&format!(
            "INSERT INTO shop.profiles VALUES (1, {user}, 'init')"
        ))
        .await;
    c.wait_converged(&["shop.profiles"], 60).await;

    // bj owns the row's unit. sh's write is stamped five minutes later (its
    // clock runs ahead): lww would keep it, owner keeps bj's.
    race_with_sh_ahead(
        &mut c,
        "shop.profiles",
        "UPDATE shop.profiles SET note = 'bj-owner' WHERE id = 1",
        "UPDATE shop.profiles SET note = 'sh-ahead' WHERE id = 1",
    )
    .await;
    assert_eq!(profile_note(&c, 0).await, "bj-owner");
    assert_eq!(profile_note(&c, 1).await, "bj-owner");
    let bj = conflicts(&c.agents.dcs[0].data_dir);
    assert!(
        bj.iter().any(|r| r["winner"]["dc"] == "bj"
            && r["loser"]["dc"] == "sh"
            && r["unit"] == unit
            && r["decision"].as_str().unwrap().contains("re-shipped")),
        "{bj:?}"
    );

    // The unit moves to sh while bj is cut off. bj's late write (stamped
    // five minutes ahead) reaches sh after sh, the new owner, wrote the
    // row: the new owner's value wins everywhere.
    cut(&c);
    c.dcs[0]
        .db
        .exec(
            "SET SESSION timestamp = UNIX_TIMESTAMP() + 300; \
             UPDATE shop.profiles SET note = 'bj-late' WHERE id = 1",
        )
        .await;
    let topology = std::fs::read_to_string(&c.agents.topology).unwrap();
    let bj_units: Vec<String> = (0..32)
        .filter(|u| *u != unit)
        .map(|u| u.to_string())
        .collect();
    let moved = topology.replace(
        "bj = \"0-31\", sh = \"32-63\"",
        &format!("bj = \"{}\", sh = \"{unit},32-63\"", bj_units.join(",")),
    );
    assert_ne!(moved, topology, "owners line not found:\n{topology}");
    std::fs::write(&c.agents.topology, moved).unwrap();
    for i in 0..2 {
        c.agents.kill_agent(i);
        c.agents.start_agent(i);
    }
    c.dcs[1]
        .db
        .exec("UPDATE shop.profiles SET note = 'sh-new-owner' WHERE id = 1")
        .await;
    restore(&c);
    c.wait_converged(&["shop.profiles"], 90).await;
    assert_eq!(profile_note(&c, 0).await, "sh-new-owner");
    assert_eq!(profile_note(&c, 1).await, "sh-new-owner");
    let sh = conflicts(&c.agents.dcs[1].data_dir);
    assert!(
        sh.iter()
            .any(|r| r["winner"]["dc"] == "sh" && r["loser"]["dc"] == "bj"),
        "{sh:?}"
    );
}
