//! RDB parser against RDB files written by the real redis-server: every type
//! in every encoding Redis 7.0 writes, expiries, several databases, streams
//! with consumer groups, a function library.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use dcsync_redis::rdb::{self, RdbError};
use dcsync_testkit::redis::Redis;
use redis::aio::MultiplexedConnection;

async fn q(c: &mut MultiplexedConnection, args: &[&str]) -> redis::Value {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(c)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

async fn encoding(c: &mut MultiplexedConnection, key: &str) -> String {
    redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(key)
        .query_async(c)
        .await
        .unwrap()
}

/// Fills db 0, 1 and 5 with every type in every encoding; returns the
/// expected `OBJECT ENCODING` of some keys in db 0.
pub async fn populate(r: &Redis) -> Vec<(&'static str, &'static str)> {
    let mut c = r.conn().await;
    for (k, v) in [
        ("list-max-listpack-size", "4"),
        ("hash-max-listpack-entries", "16"),
        ("zset-max-listpack-entries", "16"),
        ("set-max-intset-entries", "16"),
        ("stream-node-max-entries", "10"),
    ] {
        q(&mut c, &["CONFIG", "SET", k, v]).await;
    }
    // Elements of 1000 bytes and more become plain quicklist nodes.
    let _ = redis::cmd("DEBUG")
        .arg("QUICKLIST-PACKED-THRESHOLD")
        .arg(1000)
        .query_async::<redis::Value>(&mut c)
        .await;
    q(&mut c, &["SET", "s:raw", "hello world"]).await;
    q(&mut c, &["SET", "s:int", "12345"]).await;
    q(&mut c, &["SET", "s:neg", "-7"]).await;
    q(&mut c, &["SET", "s:i16", "-30000"]).await;
    q(&mut c, &["SET", "s:i32", "2000000000"]).await;
    q(&mut c, &["SET", "s:big", "9223372036854775807"]).await;
    q(&mut c, &["SET", "s:empty", ""]).await;
    let lzf = format!("{}{}", "a".repeat(1000), "bc".repeat(300));
    q(&mut c, &["SET", "s:lzf", &lzf]).await;
    let _: () = redis::cmd("SET")
        .arg("s:bin")
        .arg(&[0u8, 255, 10, 13, 1][..])
        .query_async(&mut c)
        .await
        .unwrap();
    q(&mut c, &["SET", "s:ttl", "v", "PX", "100000"]).await;
    q(&mut c, &["RPUSH", "l:tiny", "a", "b"]).await;
    let long = "y".repeat(70);
    q(
        &mut c,
        &[
            "RPUSH", "l:small", "a", "1", "2", "-3", "300", "70000", &long,
        ],
    )
    .await;
    let big: Vec<String> = (0..1000)
        .map(|i| {
            if i % 3 == 0 {
                i.to_string()
            } else {
                format!("e{i}")
            }
        })
        .collect();
    let mut cmd = vec!["RPUSH", "l:big"];
    cmd.extend(big.iter().map(String::as_str));
    q(&mut c, &cmd).await;
    let plain = "p".repeat(5000);
    q(&mut c, &["RPUSH", "l:plain", "a", &plain, "b"]).await;
    q(
        &mut c,
        &[
            "SADD",
            "set:int",
            "1",
            "2",
            "3",
            "-100",
            "70000",
            "5000000000",
        ],
    )
    .await;
    q(&mut c, &["SADD", "set:ht", "a", "b", "c"]).await;
    let ints: Vec<String> = (0..100).map(|i| (i * 7).to_string()).collect();
    let mut cmd = vec!["SADD", "set:bigint"];
    cmd.extend(ints.iter().map(String::as_str));
    q(&mut c, &cmd).await;
    q(
        &mut c,
        &[
            "ZADD", "z:lp", "1", "a", "2.5", "b", "-inf", "c", "inf", "d", "0.1", "e",
        ],
    )
    .await;
    let members: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    let scores: Vec<String> = (0..50).map(|i| format!("{}", f64::from(i) / 3.0)).collect();
    let mut cmd = vec!["ZADD", "z:sk"];
    for (m, s) in members.iter().zip(&scores) {
        cmd.push(s);
        cmd.push(m);
    }
    q(&mut c, &cmd).await;
    q(&mut c, &["ZADD", "z:sk", "-inf", "low", "inf", "high"]).await;
    q(
        &mut c,
        &["HSET", "h:lp", "f1", "v1", "f2", "123", "f3", "-5"],
    )
    .await;
    let fields: Vec<String> = (0..50).map(|i| format!("f{i}")).collect();
    let mut cmd = vec!["HSET", "h:ht"];
    for f in &fields {
        cmd.push(f);
        cmd.push(f);
    }
    q(&mut c, &cmd).await;
    q(&mut c, &["HSET", "h:long", "f", &"x".repeat(100)]).await;
    q(&mut c, &["HSET", "h:ttl", "a", "b"]).await;
    q(
        &mut c,
        &[
            "PEXPIREAT",
            "h:ttl",
            &(common::now_ms() + 3_600_000).to_string(),
        ],
    )
    .await;
    for i in 0..25 {
        let v = i.to_string();
        if i % 4 == 0 {
            q(&mut c, &["XADD", "x:s", "*", "other", &v]).await;
        } else {
            q(&mut c, &["XADD", "x:s", "*", "name", "n", "val", &v]).await;
        }
    }
    let ids: Vec<Vec<String>> = redis::cmd("XRANGE")
        .arg("x:s")
        .arg("-")
        .arg("+")
        .query_async::<Vec<(String, Vec<String>)>>(&mut c)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| vec![id])
        .collect();
    q(&mut c, &["XDEL", "x:s", &ids[3][0], &ids[11][0]]).await;
    q(&mut c, &["XGROUP", "CREATE", "x:s", "g1", "0"]).await;
    q(
        &mut c,
        &[
            "XREADGROUP",
            "GROUP",
            "g1",
            "c1",
            "COUNT",
            "3",
            "STREAMS",
            "x:s",
            ">",
        ],
    )
    .await;
    q(&mut c, &["XGROUP", "CREATE", "x:s", "g2", "$"]).await;
    q(&mut c, &["XGROUP", "CREATECONSUMER", "x:s", "g2", "c9"]).await;
    q(&mut c, &["XADD", "x:empty", "5-1", "a", "b"]).await;
    q(&mut c, &["XDEL", "x:empty", "5-1"]).await;
    q(&mut c, &[
        "FUNCTION",
        "LOAD",
        "#!lua name=mylib\nredis.register_function('myfunc', function(keys, args) return 1 end)",
    ])
    .await;
    q(&mut c, &["SELECT", "1"]).await;
    q(&mut c, &["SET", "db1:k", "v1"]).await;
    q(&mut c, &["RPUSH", "db1:l", "x"]).await;
    q(&mut c, &["SELECT", "5"]).await;
    q(&mut c, &["SET", "db5:k", "v5", "EX", "1000"]).await;
    q(&mut c, &["SELECT", "0"]).await;
    vec![
        ("s:int", "int"),
        ("s:raw", "embstr"),
        ("l:tiny", "quicklist"),
        ("set:int", "intset"),
        ("set:ht", "hashtable"),
        ("set:bigint", "hashtable"),
        ("z:lp", "listpack"),
        ("z:sk", "skiplist"),
        ("h:lp", "listpack"),
        ("h:ht", "hashtable"),
        ("h:long", "hashtable"),
        ("x:s", "stream"),
    ]
}

async fn save(r: &Redis) -> Vec<u8> {
    let mut c = r.conn().await;
    q(&mut c, &["SAVE"]).await;
    std::fs::read(r.dir().join("dump.rdb")).unwrap()
}

#[tokio::test]
async fn parses_every_type_and_encoding_written_by_redis() {
    let r = Redis::start().await;
    let expected_enc = populate(&r).await;
    let mut c = r.conn().await;
    for (k, enc) in expected_enc {
        assert_eq!(encoding(&mut c, k).await, enc, "encoding of {k}");
    }
    let data = save(&r).await;
    let parsed = rdb::parse(&data).unwrap();
    assert_eq!(parsed.version, 10, "redis 7.0 writes RDB 10");
    assert_eq!(parsed.functions.len(), 1);
    assert!(String::from_utf8_lossy(&parsed.functions[0]).contains("name=mylib"));
    let mut live = common::Canon::new();
    for db in [0, 1, 5] {
        live.extend(common::canon_server(&r.url(), db).await);
    }
    let from_rdb = common::canon_rdb(&parsed);
    common::assert_same(&live, &from_rdb, 2000);
    assert!(live.len() > 25, "{}", live.len());
    // The stream kept its groups, consumers and deleted-entry bookkeeping.
    let s = parsed
        .entries
        .iter()
        .find_map(|e| match (&e.key[..], &e.value) {
            (b"x:s", rdb::RdbValue::Stream(s)) => Some(s.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(s.entries.len(), 23);
    assert_eq!(s.entries_added, Some(25));
    assert_eq!(s.groups.len(), 2);
    let g1 = s.groups.iter().find(|g| g.name == b"g1").unwrap();
    assert_eq!(g1.pending, 3);
    let g2 = s.groups.iter().find(|g| g.name == b"g2").unwrap();
    assert_eq!(g2.consumers, vec![b"c9".to_vec()]);
}

#[tokio::test]
async fn checksum_and_truncation_are_detected() {
    let r = Redis::start().await;
    let mut c = r.conn().await;
    q(&mut c, &["SET", "k", "v"]).await;
    let data = save(&r).await;
    let mut bad = data.clone();
    let i = bad.len() - 12;
    bad[i] ^= 0x55;
    assert!(matches!(
        rdb::parse(&bad),
        Err(RdbError::Checksum { .. }) | Err(RdbError::Corrupt(_))
    ));
    assert!(matches!(
        rdb::parse(&data[..data.len() - 9]),
        Err(RdbError::Corrupt(_))
    ));
    assert!(rdb::parse(b"NOTAREDISFILE").is_err());
}
