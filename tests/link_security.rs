//! Untrusted input on the link port (docs/architecture.md, invariant 7): a certificate
//! from another CA, a DC not in the topology, a certificate that belongs to
//! another DC, another cluster, another protocol version, garbage bytes and an
//! oversized frame. Each is refused with a log line naming the reason; the
//! agent keeps serving its real peer and its data stays exact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{options, Cluster, ClusterOptions, MYSQL_STORE};
use dcsync_link::frame::{read_frame, write_frame, Frame, PROTOCOL_VERSION};
use dcsync_link::tls::{generate, LinkStream, LinkTls};
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const SCHEMA: &str =
    "CREATE TABLE shop.t (id INT PRIMARY KEY, user_id INT NOT NULL, n INT NOT NULL)";

/// TLS client with the given certificate files, dialing bj's listener
/// directly (not through the line proxy).
async fn tls_to(
    c: &Cluster,
    certs: &Path,
    as_dc: &str,
    expect_server: &str,
) -> std::io::Result<LinkStream> {
    let tls = LinkTls::load(
        "e2e",
        &certs.join("ca.crt"),
        &certs.join(format!("{as_dc}.crt")),
        &certs.join(format!("{as_dc}.key")),
    )
    .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", c.agents.dcs[0].listen_port)).await?;
    tls.connect(expect_server, tcp).await
}

/// Sends `hello` and returns the peer's answer frame (or the error text).
async fn hello(stream: LinkStream, hello: Frame) -> String {
    let (mut rd, mut wr) = tokio::io::split(stream);
    write_frame(&mut wr, &hello).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), read_frame(&mut rd, 1 << 20)).await {
        Ok(Ok(f)) => format!("{f:?}"),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "timeout".into(),
    }
}

async fn wait_log(c: &Cluster, i: usize, needle: &str) {
    dcsync_testkit::wait_for(
        &format!("agent log line {needle:?}"),
        Duration::from_secs(20),
        || async { c.agents.log(i).contains(needle).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_peers_are_refused_and_service_continues() {
    let mut c = Cluster::start(ClusterOptions {
        schema_sql: format!("CREATE DATABASE IF NOT EXISTS shop; {SCHEMA}"),
        ..options()
    })
    .await;
    let certs = c.agents.dir.path().join("certs");
    let hello_as = |dc: &str, cluster: &str, version: u32| Frame::Hello {
        cluster: cluster.into(),
        dc: dc.into(),
        version,
        codecs: vec![],
    };

    // 1. A certificate from another CA: the TLS handshake fails.
    let rogue = c.agents.dir.path().join("rogue-ca");
    generate("e2e", &["sh".into()], &rogue).unwrap();
    let r = match tls_to(&c, &rogue, "sh", "bj").await {
        Err(e) => format!("error: {e}"),
        Ok(s) => hello(s, hello_as("sh", "e2e", PROTOCOL_VERSION)).await,
    };
    assert!(
        r.contains("error") || r.contains("timeout"),
        "rogue CA was let in: {r}"
    );
    wait_log(&c, 0, "TLS handshake refused").await;

    // 2. A DC not in the topology, with a certificate from the right CA.
    generate("e2e", &["gz".into()], &certs).unwrap();
    let r = hello(
        tls_to(&c, &certs, "gz", "bj").await.unwrap(),
        hello_as("gz", "e2e", PROTOCOL_VERSION),
    )
    .await;
    assert!(
        r.contains("Refused") && r.contains("unknown dc \\\"gz\\\""),
        "{r}"
    );
    wait_log(&c, 0, "unknown dc \"gz\"").await;

    // 3. gz's certificate while claiming to be sh.
    let r = hello(
        tls_to(&c, &certs, "gz", "bj").await.unwrap(),
        hello_as("sh", "e2e", PROTOCOL_VERSION),
    )
    .await;
    assert!(
        r.contains("certificate is not valid for dc \\\"sh\\\""),
        "{r}"
    );

    // 4. Another cluster's name, and 5. a protocol version below the
    // lowest this agent speaks (as sh); a higher one is negotiated down.
    let r = hello(
        tls_to(&c, &certs, "sh", "bj").await.unwrap(),
        hello_as("sh", "other", PROTOCOL_VERSION),
    )
    .await;
    assert!(r.contains("wrong cluster \\\"other\\\""), "{r}");
    let r = hello(
        tls_to(&c, &certs, "sh", "bj").await.unwrap(),
        hello_as("sh", "e2e", 0),
    )
    .await;
    assert!(r.contains("incompatible protocol version 0"), "{r}");

    // 6. Garbage bytes inside an authenticated TLS session.
    let s = tls_to(&c, &certs, "sh", "bj").await.unwrap();
    let (_rd, mut wr) = tokio::io::split(s);
    wr.write_all(&[
        0u8, 0, 0, 12, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ])
    .await
    .unwrap();
    wr.flush().await.unwrap();
    wait_log(&c, 0, "frame checksum mismatch").await;

    // 7. An oversized frame header (2 GiB announced).
    let s = tls_to(&c, &certs, "sh", "bj").await.unwrap();
    let (_rd2, mut wr2) = tokio::io::split(s);
    wr2.write_all(&[0x80, 0, 0, 0, 0, 0, 0, 0]).await.unwrap();
    wr2.flush().await.unwrap();
    wait_log(&c, 0, "oversized frame").await;

    // 8. Plain garbage on the port (no TLS at all).
    let mut raw = TcpStream::connect(("127.0.0.1", c.agents.dcs[0].listen_port))
        .await
        .unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();

    // The agent is alive and its real peer still syncs, exactly.
    c.agents.assert_alive();
    for i in 0..50 {
        c.dcs[1]
            .db
            .exec(&format!("INSERT INTO shop.t VALUES ({i}, {i}, 0)"))
            .await;
        c.dcs[1]
            .db
            .exec(&format!("UPDATE shop.t SET n = n + 1 WHERE id = {i}"))
            .await;
    }
    c.wait_converged(&["shop.t"], 60).await;
    assert_eq!(c.dcs[0].db.query_i64("SELECT SUM(n) FROM shop.t").await, 50);
    c.agents.assert_alive();
    // 50 inserts and 50 updates in sh, nothing in bj; nothing echoed.
    c.assert_no_echo(MYSQL_STORE, &[0, 100]).await;
}
