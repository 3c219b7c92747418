//! `dcsync check --connect` against real servers: every problem of every
//! DC's store in one run, each naming the store, the DC and the fix; exit 1
//! on any error, 0 on warnings alone. Needs `mariadbd` and `redis-server`
//! (the testkit fails a test that cannot start them, it never skips).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use dcsync_testkit::mariadb::{MariaDb, MariaDbOptions};
use dcsync_testkit::redis::Redis;
use std::process::Command;

fn dcsync(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dcsync"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A two-DC topology (`bj`, `sh`) holding `store` (a `[[store]]` table).
fn topology(dir: &std::path::Path, store: &str) -> String {
    let text = format!(
        "cluster = \"shop\"\n\
         [[dc]]\nid = \"bj\"\nlink = \"127.0.0.1:7701\"\n\
         [[dc]]\nid = \"sh\"\nlink = \"127.0.0.1:7702\"\n\
         [units]\ncount = 4\nowners = {{ bj = \"0-1\", sh = \"2-3\" }}\n\
         {store}\n\
         [tls]\nplaintext = true\n"
    );
    let path = dir.join("topology.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The report lines about one DC's store.
fn lines_of<'a>(out: &'a str, severity: &str, store: &str, dc: &str) -> Vec<&'a str> {
    let prefix = format!("{severity}: store \"{store}\" in dc {dc} (");
    out.lines().filter(|l| l.starts_with(&prefix)).collect()
}

/// A `tables` pattern with a typo, a replicated table without a primary
/// key and a DC whose `max_allowed_packet` is below the other's: all of it,
/// in both DCs, from one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mysql_problem_of_every_dc_in_one_run() {
    let bj = MariaDb::start().await;
    let sh = MariaDb::start_with(MariaDbOptions {
        extra_args: vec!["--max-allowed-packet=1M".into()],
        ..MariaDbOptions::default()
    })
    .await;
    for db in [&bj, &sh] {
        db.exec(
            "CREATE DATABASE shop; \
             CREATE TABLE shop.orders (id INT PRIMARY KEY, v INT); \
             CREATE TABLE shop.audit (a INT, b INT); \
             CREATE DATABASE other; CREATE TABLE other.log (a INT)",
        )
        .await;
    }
    let bj_packet = bj.query_i64("SELECT @@GLOBAL.max_allowed_packet").await;
    assert!(bj_packet > 1 << 20, "bj's packet {bj_packet}");
    let dir = tempfile::tempdir().unwrap();
    let path = topology(
        dir.path(),
        &format!(
            "[[store]]\nname = \"orders\"\nkind = \"mysql\"\ntables = [\"shop.*\", \"shpo.*\"]\n\
             url = {{ bj = \"{}\", sh = \"{}\" }}\n",
            bj.url(),
            sh.url()
        ),
    );
    let (code, out, err) = dcsync(&["check", "--topology", &path, "--connect"]);
    assert_eq!(code, 1, "{out}{err}");
    for dc in ["bj", "sh"] {
        let errors = lines_of(&out, "error", "orders", dc);
        let has = |s: &str| errors.iter().any(|l| l.contains(s));
        assert!(
            has("tables pattern \"shpo.*\" matches no schema on this server (its schemas: other, shop)")
                && has("fix the pattern"),
            "{dc}: {out}"
        );
        assert!(
            has("table shop.audit has no PRIMARY KEY")
                && has("ALTER TABLE `shop`.`audit` ADD PRIMARY KEY"),
            "{dc}: {out}"
        );
        // Only replicated tables need a key; the matching pattern is fine.
        assert!(
            !out.contains("other.log") && !out.contains("\"shop.*\""),
            "{out}"
        );
    }
    let packet = format!(
        "max_allowed_packet is 1048576 bytes here but {bj_packet} in dc bj: a change dc bj accepts \
         may not fit when applied here; fix: SET GLOBAL max_allowed_packet={bj_packet}"
    );
    assert!(
        lines_of(&out, "error", "orders", "sh")
            .iter()
            .any(|l| l.contains(&packet)),
        "{out}"
    );
    assert!(
        !lines_of(&out, "error", "orders", "bj")
            .iter()
            .any(|l| l.contains("max_allowed_packet")),
        "{out}"
    );
    assert!(
        out.contains("5 error(s), 0 warning(s) in 2 store connection(s)"),
        "{out}"
    );
}

/// Redis' default 1 MiB backlog makes an agent restart under load a full
/// resync: a warning, so the exit code stays 0; `--dc` leaves the other DC
/// out, and an unreachable store is an error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_redis_backlog_is_a_warning_and_an_unreachable_store_an_error() {
    let bj = Redis::start().await;
    let down = dcsync_testkit::free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = topology(
        dir.path(),
        &format!(
            "[[store]]\nname = \"cache\"\nkind = \"redis\"\n\
             url = {{ bj = \"{}\", sh = \"redis://:secret@127.0.0.1:{down}\" }}\n",
            bj.url()
        ),
    );
    let (code, out, err) = dcsync(&["check", "--topology", &path, "--connect", "--dc", "bj"]);
    assert_eq!(code, 0, "{out}{err}");
    let warnings = lines_of(&out, "warning", "cache", "bj");
    assert!(
        warnings.len() == 1
            && warnings[0].contains("repl-backlog-size is 1048576 bytes")
            && warnings[0].contains("a new RDB of the whole dataset instead of +CONTINUE")
            && warnings[0].contains("CONFIG SET repl-backlog-size 67108864"),
        "{out}"
    );
    assert!(!out.contains("dc sh"), "--dc bj checked sh: {out}");

    let (code, out, err) = dcsync(&["check", "--topology", &path, "--connect"]);
    assert_eq!(code, 1, "{out}{err}");
    let errors = lines_of(&out, "error", "cache", "sh");
    assert!(
        errors.len() == 1
            && errors[0].contains(&format!("(redis://:***@127.0.0.1:{down}): cannot connect"))
            && errors[0].contains("check the url"),
        "{out}"
    );
    assert!(!out.contains("secret"), "password leaked: {out}");

    // A backlog that holds a minute of an idle server's writes passes.
    let big = Redis::start_with(vec!["--repl-backlog-size".into(), "64mb".into()]).await;
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&bj.url(), &big.url());
    std::fs::write(&path, text).unwrap();
    let (code, out, err) = dcsync(&["check", "--topology", &path, "--connect", "--dc", "bj"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("0 error(s), 0 warning(s) in 1 store connection(s)"),
        "{out}"
    );
}
