//! Changing a running cluster's routing: the topology's `mode`/`hub` keys
//! and the signals that make agents reread them (or die).

use super::Agents;
use std::process::Command;

impl Agents {
    /// Rewrites the topology's routing keys (`mode`, `hub`, ...: the text
    /// between the `cluster` line and the first `[[dc]]`) with
    /// `mode_toml`; running agents see it after [`Agents::signal`] `HUP`.
    pub fn set_routing(&self, mode_toml: &str) {
        let t = std::fs::read_to_string(&self.topology).expect("read topology");
        let (head, rest) = t.split_once("[[dc]]").expect("a [[dc]] table");
        let cluster = head.lines().next().expect("the cluster line");
        let out = format!("{cluster}\n{mode_toml}[[dc]]{rest}");
        let tmp = self.topology.with_extension("tmp");
        std::fs::write(&tmp, out).expect("write topology");
        std::fs::rename(&tmp, &self.topology).expect("replace topology");
    }

    /// Sends signal `sig` (`HUP`: reread the routing; `KILL`: die now, to
    /// be reaped by [`Agents::kill_agent`]) to the agent of DC `i`.
    pub fn signal(&self, i: usize, sig: &str) {
        let pid = self.dcs[i]
            .child
            .as_ref()
            .map(|c| c.id())
            .unwrap_or_else(|| panic!("agent {} is not running", self.dcs[i].id));
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} {pid}");
    }
}
