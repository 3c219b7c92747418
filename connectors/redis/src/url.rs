//! Where a Redis store is: one server (`redis://`), or the master of a
//! set that Redis Sentinel monitors (`redis+sentinel://`, alias
//! `sentinel://`).
//!
//! ```text
//! redis://[user:password@]host[:port][/db]
//! redis+sentinel://[user:password@]host1[:port1][,host2[:port2]...]/<master name>[/db]
//! sentinel://...                            (the same)
//! ```
//!
//! The sentinel form follows the `redis+sentinel://` convention of the
//! Python, Java and Ruby Sentinel URL libraries (hosts separated by
//! commas, the master set's name as the first path segment, then the
//! database); sentinel ports default to 26379. The credentials and the
//! database are the master's; the sentinels are asked without
//! authentication.
//!
//! Resolving follows the Sentinel client guidelines
//! (<https://redis.io/docs/latest/develop/reference/sentinel-clients/>):
//! ask the sentinels in order `SENTINEL get-master-addr-by-name <name>`,
//! take the first address one gives, connect, and check that the server
//! says `role:master` (during a failover a sentinel may still name the old
//! master). The source and the sink resolve again on every (re)connect,
//! so they follow a failover.

use dcsync_core::connector::ConnectorError;
use std::time::Duration;

/// Default sentinel port.
pub const SENTINEL_PORT: u16 = 26379;
/// How long one sentinel may take to connect and answer.
pub const SENTINEL_TIMEOUT: Duration = Duration::from_secs(2);

/// A parsed store URL.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `redis://...`, as written.
    Direct(String),
    /// A Sentinel-monitored master.
    Sentinel(SentinelUrl),
}

/// The parts of a `redis+sentinel://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    /// The sentinels, `host:port`, in the order they are asked.
    pub sentinels: Vec<String>,
    /// Name of the master set (`sentinel monitor <name> ...`).
    pub master: String,
    /// `user:password` for the master, as written (never logged).
    userinfo: Option<String>,
    /// Database of the master, if given.
    pub db: Option<u32>,
}

impl std::fmt::Debug for SentinelUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelUrl")
            .field("sentinels", &self.sentinels)
            .field("master", &self.master)
            .field("credentials", &self.userinfo.as_ref().map(|_| "***"))
            .field("db", &self.db)
            .finish()
    }
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Direct(u) => write!(f, "Direct({:?})", dcsync_core::topology::redact_url(u)),
            StoreUrl::Sentinel(s) => s.fmt(f),
        }
    }
}

/// The URL schemes of a Redis store, without `://`.
pub const SCHEMES: &[&str] = &["redis", "redis+sentinel", "sentinel"];

impl StoreUrl {
    /// Parses a store URL without I/O.
    ///
    /// Errors: a message naming the problem, without the credentials
    /// (an unknown scheme, no host, a bad port, no master name, a database
    /// that is not a number).
    pub fn parse(url: &str) -> Result<StoreUrl, String> {
        if url.starts_with("redis://") {
            return Ok(StoreUrl::Direct(url.to_string()));
        }
        let rest = url
            .strip_prefix("redis+sentinel://")
            .or_else(|| url.strip_prefix("sentinel://"))
            .ok_or_else(|| {
                "a redis store url starts with redis://, redis+sentinel:// or sentinel://"
                    .to_string()
            })?;
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((u, r)) => (Some(u.to_string()), r),
            None => (None, rest),
        };
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut sentinels = Vec::new();
        for h in hosts.split(',') {
            let h = h.trim();
            if h.is_empty() {
                return Err(format!(
                    "sentinel url: empty host in {hosts:?} (write host1:26379,host2:26379)"
                ));
            }
            let addr = match h.rsplit_once(':') {
                None => format!("{h}:{SENTINEL_PORT}"),
                Some((host, port)) => {
                    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
                        return Err(format!(
                            "sentinel url: {h:?} is not host:port (port 1-65535)"
                        ));
                    }
                    h.to_string()
                }
            };
            sentinels.push(addr);
        }
        let mut parts = path.split('/');
        let master = parts.next().unwrap_or_default().to_string();
        if master.is_empty() {
            return Err(
                "sentinel url: no master name after the hosts (redis+sentinel://host:26379/mymaster)"
                    .to_string(),
            );
        }
        let db = match parts.next() {
            None | Some("") => None,
            Some(d) => Some(d.parse::<u32>().map_err(|_| {
                format!("sentinel url: database {d:?} after the master name is not a number")
            })?),
        };
        if let Some(extra) = parts.find(|p| !p.is_empty()) {
            return Err(format!(
                "sentinel url: unexpected {extra:?} after the database (/<master name>[/db])"
            ));
        }
        Ok(StoreUrl::Sentinel(SentinelUrl {
            sentinels,
            master,
            userinfo,
            db,
        }))
    }
}

impl SentinelUrl {
    /// The `redis://` URL of the master at `addr` (`host:port`), with this
    /// URL's credentials and database.
    pub fn master_url(&self, addr: &str) -> String {
        let auth = self
            .userinfo
            .as_ref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let db = self.db.map(|d| format!("/{d}")).unwrap_or_default();
        format!("redis://{auth}{addr}{db}")
    }

    /// Asks the sentinels in order for the master's address (`host:port`)
    /// and returns the first answer with the sentinel that gave it.
    ///
    /// Errors: [`ConnectorError::Definite`] when every sentinel answered
    /// and none knows the master name (a wrong name in the URL);
    /// [`ConnectorError::Transient`] when none could be asked (each
    /// sentinel's problem is named).
    pub async fn ask_master(&self) -> Result<(String, String), ConnectorError> {
        let mut problems = Vec::new();
        let mut unknown = 0;
        for s in &self.sentinels {
            match ask_one(s, &self.master).await {
                Ok(Some(addr)) => return Ok((addr, s.clone())),
                Ok(None) => {
                    unknown += 1;
                    problems.push(format!(
                        "{s}: does not monitor a master named {:?}",
                        self.master
                    ));
                }
                Err(e) => problems.push(format!("{s}: {e}")),
            }
        }
        let msg = format!(
            "no sentinel named the master of {:?}: {}",
            self.master,
            problems.join("; ")
        );
        if unknown == self.sentinels.len() {
            Err(ConnectorError::Definite(format!(
                "{msg} (check the master name in the store url)"
            )))
        } else {
            Err(ConnectorError::Transient(msg))
        }
    }
}

/// `SENTINEL get-master-addr-by-name <master>` on one sentinel:
/// `Some("host:port")`, `None` if it does not monitor that name.
async fn ask_one(sentinel: &str, master: &str) -> Result<Option<String>, String> {
    let client = redis::Client::open(format!("redis://{sentinel}")).map_err(|e| e.to_string())?;
    let ask = async {
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let v: Option<Vec<String>> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(master)
            .query_async(&mut c)
            .await
            .map_err(|e| e.to_string())?;
        match v.as_deref() {
            None => Ok(None),
            Some([host, port]) => Ok(Some(format!("{host}:{port}"))),
            Some(other) => Err(format!("unexpected answer {other:?}")),
        }
    };
    tokio::time::timeout(SENTINEL_TIMEOUT, ask)
        .await
        .map_err(|_| format!("no answer in {} s", SENTINEL_TIMEOUT.as_secs()))?
}

/// A store URL resolved to one server.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// `redis://[user:password@]host:port[/db]` of the server to use.
    pub url: String,
    /// `host:port` of that server (no credentials), for messages.
    pub addr: String,
    /// How it was found, for the log: `sentinel 127.0.0.1:26379 names
    /// 127.0.0.1:6380 as master "mymaster"`; `None` for a `redis://` URL.
    pub via: Option<String>,
}

impl Resolved {
    /// Whether the server was found through Sentinel (the caller should
    /// then check that it is a master: `role:master`).
    pub fn is_sentinel(&self) -> bool {
        self.via.is_some()
    }
}

/// Resolves a store URL: a `redis://` URL as is, a sentinel URL by asking
/// the sentinels ([`SentinelUrl::ask_master`]).
///
/// Errors: [`ConnectorError::Definite`] for a URL that does not parse or a
/// master name no sentinel knows; [`ConnectorError::Transient`] when no
/// sentinel answers.
pub async fn resolve(url: &str) -> Result<Resolved, ConnectorError> {
    match StoreUrl::parse(url).map_err(ConnectorError::Definite)? {
        StoreUrl::Direct(u) => {
            let addr = direct_addr(&u);
            Ok(Resolved {
                url: u,
                addr,
                via: None,
            })
        }
        StoreUrl::Sentinel(s) => {
            let (addr, sentinel) = s.ask_master().await?;
            Ok(Resolved {
                url: s.master_url(&addr),
                via: Some(format!(
                    "sentinel {sentinel} names {addr} as master {:?}",
                    s.master
                )),
                addr,
            })
        }
    }
}

/// `host:port` of a `redis://` URL (port 6379 if absent), for messages.
fn direct_addr(url: &str) -> String {
    let rest = url.strip_prefix("redis://").unwrap_or(url);
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = host.split('/').next().unwrap_or_default();
    if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:6379")
    }
}

/// The `role:` line of an `INFO replication` text (`master`, `slave`).
pub fn role_of(info: &str) -> Option<&str> {
    info.lines().find_map(|l| l.trim().strip_prefix("role:"))
}

/// The error for a server that Sentinel named as master but that reports
/// another role (a failover in progress): transient, the caller asks the
/// sentinels again.
pub fn not_master(resolved: &Resolved, role: &str) -> ConnectorError {
    ConnectorError::Transient(format!(
        "{} but that server reports role:{role} (a failover in progress?); asking the sentinels again",
        resolved.via.as_deref().unwrap_or(&resolved.addr)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentinel(url: &str) -> SentinelUrl {
        match StoreUrl::parse(url) {
            Ok(StoreUrl::Sentinel(s)) => s,
            other => panic!("{url}: {other:?}"),
        }
    }

    #[test]
    fn sentinel_urls_parse() {
        let s = sentinel("redis+sentinel://10.0.0.1:26380,10.0.0.2/mymaster");
        assert_eq!(s.sentinels, ["10.0.0.1:26380", "10.0.0.2:26379"]);
        assert_eq!(s.master, "mymaster");
        assert_eq!(s.db, None);
        assert_eq!(s.master_url("10.0.0.9:6380"), "redis://10.0.0.9:6380");
        let s = sentinel("sentinel://app:s3cr@t@h1:26379/cache/2");
        assert_eq!(s.sentinels, ["h1:26379"]);
        assert_eq!((s.master.as_str(), s.db), ("cache", Some(2)));
        assert_eq!(s.master_url("m:1"), "redis://app:s3cr@t@m:1/2");
        let s = sentinel("sentinel://:pw@h1/cache/");
        assert_eq!(s.master_url("m:1"), "redis://:pw@m:1");
        assert!(!format!("{s:?}").contains("pw"), "{s:?}");
    }

    #[test]
    fn direct_urls_are_kept() {
        assert_eq!(
            StoreUrl::parse("redis://:pw@h:7000/1"),
            Ok(StoreUrl::Direct("redis://:pw@h:7000/1".into()))
        );
        assert_eq!(direct_addr("redis://:pw@h:7000/1"), "h:7000");
        assert_eq!(direct_addr("redis://h"), "h:6379");
    }

    #[test]
    fn bad_urls_name_the_problem() {
        for (url, why) in [
            ("http://h/x", "starts with redis://"),
            ("sentinel://h1:26379", "no master name"),
            ("sentinel://h1:26379/", "no master name"),
            ("sentinel://h1,,h2/m", "empty host"),
            ("sentinel://h1:0/m", "\"h1:0\" is not host:port"),
            ("sentinel://h1:x/m", "\"h1:x\" is not host:port"),
            ("sentinel://:pw@:26379/m", "\":26379\" is not host:port"),
            ("sentinel://h1/m/zero", "database \"zero\""),
            ("sentinel://h1/m/0/x", "unexpected \"x\""),
        ] {
            match StoreUrl::parse(url) {
                Err(m) => {
                    assert!(m.contains(why), "{url}: {m}");
                    assert!(!m.contains("pw"), "{m}");
                }
                Ok(u) => panic!("{url}: parsed as {u:?}"),
            }
        }
    }

    #[test]
    fn role_is_read_from_info() {
        assert_eq!(
            role_of("# Replication\r\nrole:slave\r\nmaster_host:x\r\n"),
            Some("slave")
        );
        assert_eq!(role_of("# Replication\r\n"), None);
    }
}
