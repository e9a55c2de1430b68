//! Scenario files: who runs, who talks, and what goes wrong when.

use std::collections::BTreeMap;
use std::path::Path;

use cryptchat::faults::FaultConfig;
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {why}")]
    Read { path: String, why: String },
    #[error("scenario {path} is not valid TOML for a scenario: {why}")]
    Parse { path: String, why: String },
    #[error("scenario is inconsistent: {0}")]
    Invalid(String),
}

/// A whole simulation.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// Seeds everything the run schedules (send times, churn picks, jitter draws).
    #[serde(default = "one")]
    pub seed: u64,
    /// Number of nodes.
    pub nodes: usize,
    /// Indexes of the bootstrap nodes (the others are given their addresses).
    #[serde(default = "first")]
    pub bootstrap: Vec<usize>,
    /// Named groups of node indexes, for partitions and link settings.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<usize>>,
    pub rooms: Vec<RoomSpec>,
    pub load: Load,
    /// Faults applied from the start to every node's incoming links.
    #[serde(default)]
    pub link: FaultConfig,
    /// Changes over time.
    #[serde(default)]
    pub events: Vec<EventSpec>,
    /// How long to wait after the load for everything to converge.
    #[serde(default = "settle")]
    pub settle_s: f64,
    /// How long at most to wait for the room meshes to form and the connection count to
    /// hold still before the load starts (the load starts as soon as both hold).
    #[serde(default = "warmup")]
    pub warmup_s: f64,
    /// Reconciliation interval of every node.
    #[serde(default = "sync_interval")]
    pub sync_interval_s: f64,
    /// A quiet period between the warm-up and the load, in which the run measures what
    /// idle nodes cost: CPU and resident memory per joined room (0: no idle period).
    #[serde(default)]
    pub idle_s: f64,
    /// What the nodes connect over ("tcp", the default, or "quic").
    #[serde(default)]
    pub transport: Transport,
}

/// The transport a run's nodes use; faults apply the same to both (they wrap the muxer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TCP with noise and yamux: two sockets per connection in a one-process run.
    #[default]
    Tcp,
    /// QUIC: one UDP socket per node, whatever its connection count, so a run of a
    /// thousand nodes stays under a process's descriptor limit.
    Quic,
}

impl Transport {
    /// A loopback listen address on a free port.
    pub fn listen_addr(self) -> Multiaddr {
        let a = match self {
            Transport::Tcp => "/ip4/127.0.0.1/tcp/0",
            Transport::Quic => "/ip4/127.0.0.1/udp/0/quic-v1",
        };
        a.parse().expect("a valid multiaddr")
    }

    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Quic => "quic",
        }
    }
}

fn one() -> u64 {
    1
}
fn first() -> Vec<usize> {
    vec![0]
}
fn settle() -> f64 {
    30.0
}
fn warmup() -> f64 {
    20.0
}
fn sync_interval() -> f64 {
    2.0
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomSpec {
    pub name: String,
    /// "all", a group name, or omitted with `nodes` given.
    #[serde(default)]
    pub members: Option<String>,
    #[serde(default)]
    pub nodes: Vec<usize>,
    #[serde(default)]
    pub password: Option<String>,
    /// Expands into this many rooms named "{name}-{i}", all with the same members.
    #[serde(default)]
    pub count: Option<usize>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Messages per second each member sends into each of its rooms.
    pub rate: f64,
    /// Text size in bytes.
    #[serde(default = "size")]
    pub size: usize,
    /// How long the load lasts.
    pub duration_s: f64,
    /// Only these nodes send (default: every member).
    #[serde(default)]
    pub senders: Option<Vec<usize>>,
}

fn size() -> usize {
    100
}

/// Something that happens at `at_s` seconds after the load starts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventSpec {
    pub at_s: f64,
    #[serde(flatten)]
    pub action: Action,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Action {
    /// Cut every link between the named groups.
    Partition { groups: Vec<String> },
    /// Undo every partition.
    Heal,
    /// Stop nodes (their journals stay on disk).
    Kill { nodes: Vec<usize> },
    /// Start stopped nodes again on the same data dirs; with `new_machine`, on empty ones
    /// (the same identity on another machine: it must take up its earlier messages).
    Restart {
        nodes: Vec<usize>,
        #[serde(default)]
        new_machine: bool,
    },
    /// A share of the non-bootstrap nodes leaves, and rejoins after `down_s`.
    Churn { share: f64, down_s: f64 },
    /// Change the incoming-link faults of a group (or of every node without `group`).
    Link {
        #[serde(default)]
        group: Option<String>,
        #[serde(flatten)]
        faults: FaultConfig,
    },
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        Scenario::load_with(path, None)
    }

    /// Loads a scenario, replacing the `count` of every counted room spec with `rooms`
    /// (to measure how a cost grows with the number of rooms).
    pub fn load_with(path: &Path, rooms: Option<usize>) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError::Read {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        let mut s: Scenario = toml::from_str(&text).map_err(|e| ScenarioError::Parse {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        if let Some(n) = rooms {
            for r in s.rooms.iter_mut().filter(|r| r.count.is_some()) {
                r.count = Some(n);
            }
        }
        s.expand_rooms();
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |m: String| Err(ScenarioError::Invalid(m));
        if self.nodes == 0 {
            return bad("no nodes".into());
        }
        let check = |what: &str, list: &[usize]| -> Result<(), ScenarioError> {
            match list.iter().find(|&&n| n >= self.nodes) {
                Some(n) => Err(ScenarioError::Invalid(format!(
                    "{what} names node {n}, but there are {} nodes",
                    self.nodes
                ))),
                None => Ok(()),
            }
        };
        if !(self.load.rate > 0.0 && self.load.rate.is_finite()) {
            return bad(format!(
                "load rate {} is not a positive number",
                self.load.rate
            ));
        }
        if !(self.idle_s >= 0.0 && self.idle_s.is_finite()) {
            return bad(format!("idle_s {} is not a duration", self.idle_s));
        }
        check("bootstrap", &self.bootstrap)?;
        for (g, list) in &self.groups {
            check(&format!("group {g}"), list)?;
        }
        for r in &self.rooms {
            check(&format!("room {}", r.name), &r.nodes)?;
            if let Some(m) = &r.members
                && m != "all"
                && !self.groups.contains_key(m)
            {
                return bad(format!("room {} uses unknown group {m}", r.name));
            }
        }
        for e in &self.events {
            match &e.action {
                Action::Partition { groups } => {
                    for g in groups {
                        if !self.groups.contains_key(g) {
                            return bad(format!("partition uses unknown group {g}"));
                        }
                    }
                }
                Action::Kill { nodes } | Action::Restart { nodes, .. } => check("event", nodes)?,
                Action::Churn { share, .. } if !(0.0..=1.0).contains(share) => {
                    return bad(format!("churn share {share} is not between 0 and 1"));
                }
                Action::Link { group, faults } => {
                    if let Some(g) = group
                        && !self.groups.contains_key(g)
                    {
                        return bad(format!("link change uses unknown group {g}"));
                    }
                    faults.validate().map_err(ScenarioError::Invalid)?;
                }
                _ => {}
            }
        }
        self.link.validate().map_err(ScenarioError::Invalid)?;
        Ok(())
    }

    /// Replaces rooms with a `count` by that many numbered rooms.
    pub fn expand_rooms(&mut self) {
        let mut out = Vec::new();
        for r in self.rooms.drain(..) {
            match r.count {
                Some(n) => out.extend((0..n).map(|i| RoomSpec {
                    name: format!("{}-{i}", r.name),
                    count: None,
                    ..r.clone()
                })),
                None => out.push(r),
            }
        }
        self.rooms = out;
    }

    /// Node indexes of a room's members.
    pub fn members(&self, room: &RoomSpec) -> Vec<usize> {
        match room.members.as_deref() {
            Some("all") => (0..self.nodes).collect(),
            Some(g) => self.groups.get(g).cloned().unwrap_or_default(),
            None if room.nodes.is_empty() => (0..self.nodes).collect(),
            None => room.nodes.clone(),
        }
    }

    /// (room, member) pairs: how many rooms the nodes have joined between them.
    pub fn memberships(&self) -> usize {
        self.rooms.iter().map(|r| self.members(r).len()).sum()
    }

    pub fn group(&self, name: &str) -> Vec<usize> {
        self.groups.get(name).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            Scenario::load(&p).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
        assert!(n >= 5);
    }

    #[test]
    fn a_scenario_names_its_transport() {
        let base = "name = \"x\"\nnodes = 2\n[[rooms]]\nname = \"r\"\nmembers = \"all\"\n[load]\nrate = 1.0\nduration_s = 1.0\n";
        let tcp: Scenario = toml::from_str(base).unwrap();
        assert_eq!(tcp.transport, Transport::Tcp);
        let quic: Scenario = toml::from_str(&format!("transport = \"quic\"\n{base}")).unwrap();
        assert_eq!(quic.transport, Transport::Quic);
        assert_eq!(
            quic.transport.listen_addr().to_string(),
            "/ip4/127.0.0.1/udp/0/quic-v1"
        );
        assert!(toml::from_str::<Scenario>(&format!("transport = \"sctp\"\n{base}")).is_err());
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/scale-1000.toml");
        assert_eq!(Scenario::load(&shipped).unwrap().transport, Transport::Quic);
    }

    #[test]
    fn inconsistent_scenarios_are_refused() {
        let s = r#"
            name = "x"
            nodes = 2
            [[rooms]]
            name = "r"
            members = "nope"
            [load]
            rate = 1.0
            duration_s = 1.0
        "#;
        let sc: Scenario = toml::from_str(s).unwrap();
        assert!(sc.validate().is_err());
    }

    #[test]
    fn room_counts_can_be_overridden() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/many-rooms.toml");
        let s = Scenario::load(&path).unwrap();
        assert_eq!(s.rooms.len(), 1000);
        assert_eq!(s.memberships(), 2000);
        let s = Scenario::load_with(&path, Some(10)).unwrap();
        assert_eq!(s.rooms.len(), 10);
        assert_eq!(s.rooms[9].name, "room-9");
    }
}
