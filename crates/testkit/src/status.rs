//! An agent's `status.json` as the tests read it: plain JSON, with typed
//! accessors for what the scenarios check.

use std::path::Path;

/// An agent's `status.json` (rewritten every second), read as plain JSON.
#[derive(Debug, Clone)]
pub struct Status(pub serde_json::Value);

/// One store's source in a [`Status`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceStatus {
    /// `starting`, `running` or `failed`.
    pub state: String,
    /// Last durable source position (display form).
    pub position: String,
    /// Local transactions journaled since the agent started.
    pub local_txns: u64,
    /// Transactions written by dcsync's sink (apply marker seen) that the
    /// source dropped since the agent started.
    pub echo_txns: u64,
    /// Its initial copy (snapshot) is under way.
    pub copying: bool,
}

/// One link's backlog of one store in a [`Status`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Transactions journaled and not acknowledged by the peer.
    pub txns: u64,
    /// Highest seq journaled.
    pub last_seq: u64,
    /// Highest seq the peer acknowledged.
    pub acked_seq: u64,
}

/// One store's periodic consistency check in a [`Status`] (only in the
/// status of the DC that runs it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyCheck {
    /// Checks completed since the agent started.
    pub runs: u64,
    /// When the last completed check ended, ms since the Unix epoch.
    pub last_ms: Option<u64>,
    /// Differences it found.
    pub differences: u64,
    /// The first differences, as `dcsync verify` prints them.
    pub named: Vec<String>,
    /// Why the last check could not compare, if it could not.
    pub error: Option<String>,
}

impl Status {
    /// The periodic check of `store`, if this agent runs one.
    pub fn verify(&self, store: &str) -> Option<VerifyCheck> {
        let v = self.0["verify"]
            .as_array()?
            .iter()
            .find(|v| v["store"].as_str() == Some(store))?;
        Some(VerifyCheck {
            runs: v["runs"].as_u64().unwrap_or(0),
            last_ms: v["last_ms"].as_u64(),
            differences: v["differences"].as_u64().unwrap_or(0),
            named: v["named"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect(),
            error: v["error"].as_str().map(str::to_string),
        })
    }

    /// Reads `<data_dir>/status.json`; `None` if missing or unreadable.
    pub fn read(data_dir: &Path) -> Option<Status> {
        let s = std::fs::read(data_dir.join("status.json")).ok()?;
        serde_json::from_slice(&s).ok().map(Status)
    }

    /// When the agent wrote it, ms since the Unix epoch.
    pub fn written_ms(&self) -> u64 {
        self.0["written_ms"].as_u64().unwrap_or(0)
    }

    /// The source of `store`.
    pub fn source(&self, store: &str) -> Option<SourceStatus> {
        let s = self.0["sources"]
            .as_array()?
            .iter()
            .find(|s| s["store"].as_str() == Some(store))?;
        Some(SourceStatus {
            state: s["state"].as_str().unwrap_or_default().to_string(),
            position: s["position"].as_str().unwrap_or_default().to_string(),
            local_txns: s["local_txns"].as_u64().unwrap_or(0),
            echo_txns: s["echo_txns"].as_u64().unwrap_or(0),
            copying: s["copy"].is_object() && s["copy"]["done"].as_bool() != Some(true),
        })
    }

    /// The peers whose outbound link is connected (handshake done).
    pub fn connected_peers(&self) -> Vec<String> {
        let links = self.0["links"].as_array().cloned().unwrap_or_default();
        links
            .iter()
            .filter(|l| l["link"]["state"]["Connected"].is_object())
            .filter_map(|l| l["link"]["peer"].as_str().map(str::to_string))
            .collect()
    }

    /// `(peer, backlog)` of `store` on every link.
    pub fn backlogs(&self, store: &str) -> Vec<(String, Backlog)> {
        let links = self.0["links"].as_array().cloned().unwrap_or_default();
        links
            .iter()
            .filter_map(|l| {
                let b = l["backlog"]
                    .as_array()?
                    .iter()
                    .find(|b| b["store"].as_str() == Some(store))?;
                Some((
                    l["link"]["peer"].as_str().unwrap_or_default().to_string(),
                    Backlog {
                        txns: b["txns"].as_u64().unwrap_or(0),
                        last_seq: b["last_seq"].as_u64().unwrap_or(0),
                        acked_seq: b["acked_seq"].as_u64().unwrap_or(0),
                    },
                ))
            })
            .collect()
    }

    /// Highest seq of `store` journaled (as the first link reports it).
    pub fn last_seq(&self, store: &str) -> Option<u64> {
        self.backlogs(store).first().map(|(_, b)| b.last_seq)
    }

    /// Transactions `peer` acknowledged on its link since the agent started.
    pub fn acked_txns(&self, peer: &str) -> Option<u64> {
        self.0["links"]
            .as_array()?
            .iter()
            .find(|l| l["link"]["peer"].as_str() == Some(peer))?["link"]["acked_txns"]
            .as_u64()
    }
}
