//! What a run measured, as a terminal table, JSON and an SVG plot.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: usize,
    pub min: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(mut v: Vec<f64>) -> Percentiles {
        if v.is_empty() {
            return Percentiles::default();
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Percentiles {
            count: v.len(),
            min: v[0],
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: v[v.len() - 1],
        }
    }
}

/// Past this many rooms the table summarises them instead of a line per room.
const MAX_ROOM_LINES: usize = 10;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoomReport {
    pub name: String,
    pub members: usize,
    pub online_members: usize,
    pub messages: u64,
    /// Share of (message, online member) pairs where the member holds the message.
    pub delivery_ratio: f64,
    /// Every online member shows the same entries in the same order.
    pub journals_identical: bool,
}

/// One delivery: when the message was sent (seconds into the load) and how long it took.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sample {
    pub sent_s: f64,
    pub latency_ms: f64,
    pub node: usize,
}

/// What the nodes cost while nothing is sent (the scenario's `idle_s`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Idle {
    pub seconds: f64,
    /// (room, member) pairs, summed over all nodes.
    pub memberships: usize,
    /// Process CPU over the idle period, in % of one core.
    pub cpu_percent: f64,
    /// Bytes all nodes wrote on their links per second over the idle period.
    #[serde(default)]
    pub bytes_per_s: f64,
    /// Resident memory before the first node started, and at the start of the idle period.
    pub rss_before_mib: f64,
    pub rss_mib: f64,
}

impl Idle {
    /// CPU per joined room, in microseconds per second (millionths of a core).
    pub fn cpu_us_per_s_per_room(&self) -> f64 {
        self.cpu_percent * 1e4 / self.memberships.max(1) as f64
    }

    /// Bytes written per joined room per second while idle.
    pub fn bytes_per_s_per_room(&self) -> f64 {
        self.bytes_per_s / self.memberships.max(1) as f64
    }

    /// Resident memory the nodes added, per joined room, in KiB.
    pub fn kib_per_room(&self) -> f64 {
        (self.rss_mib - self.rss_before_mib).max(0.0) * 1024.0 / self.memberships.max(1) as f64
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub mode: String,
    /// "shared" (every node's tasks on one runtime) or "per-node" (a runtime and a thread
    /// for each node, as if each were its own process).
    #[serde(default)]
    pub runtime: String,
    /// "tcp" or "quic" (see [`crate::scenario::Transport`]); empty in reports from before.
    #[serde(default)]
    pub transport: String,
    pub nodes: usize,
    pub setup_s: f64,
    /// Connected room members per node when the load started.
    pub room_peers: Percentiles,
    /// Connected peers per node at the end of the run (every room and the DHT).
    #[serde(default)]
    pub connections: Percentiles,
    pub messages_sent: u64,
    pub rooms: Vec<RoomReport>,
    /// Publish-to-deliver latency over every (message, receiver) pair, in ms.
    pub latency: Percentiles,
    /// Deliveries of a message a node already had.
    pub duplicates: u64,
    /// (message, member) pairs held at the end: what the per-delivery figures divide by.
    #[serde(default)]
    pub delivered: u64,
    /// Bytes written on all links per (message, member) pair delivered: amplification.
    pub bytes_per_delivered: f64,
    /// The same, counting only what was written from the start of the load until every
    /// member held every message (or the settle time ran out): without start-up traffic.
    #[serde(default)]
    pub load_bytes_per_delivered: f64,
    /// Over the same window, writes on substreams per delivery: each is a muxer frame, and
    /// per-frame costs (syscalls, wake-ups) are most of what moving messages costs.
    #[serde(default)]
    pub load_writes_per_delivered: f64,
    /// Over the same window, substreams opened per delivery (request-response exchanges,
    /// DHT queries and the like each open one).
    #[serde(default)]
    pub load_streams_per_delivered: f64,
    /// What the nodes' networking did from the start of the load until convergence, summed
    /// over nodes (cryptchat only): receipts, vector exchanges, pulls, connections.
    #[serde(default)]
    pub load_activity: Option<cryptchat::activity::Activity>,
    /// Seconds from the last heal/restart (or the end of the load) until every online
    /// member held every message; None if that never happened within the settle time.
    pub convergence_s: Option<f64>,
    pub cpu_s_per_node: f64,
    /// Cores the whole simulation kept busy from the start of the load until convergence
    /// (or the settle time ran out): what the messages cost on top of staying connected.
    #[serde(default)]
    pub load_cores: f64,
    /// CPU time of all nodes from the start of the load until convergence, per delivered
    /// message: what a delivery costs the machine. On loopback, where links add nothing,
    /// a message reaches the last members once the machine has done the work of every hop,
    /// so latency follows this figure.
    #[serde(default)]
    pub load_cpu_ms_per_delivered: f64,
    pub peak_rss_mib_per_node: f64,
    pub wall_s: f64,
    /// Idle cost, if the scenario has an idle period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<Idle>,
    /// Delivery ratio seen through live events, per node (online at the end).
    pub per_node_delivery: Vec<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub samples: Vec<Sample>,
    /// Status queries a node did not answer within [`crate::node::QUERY_TIMEOUT`]: the
    /// figures drawn from them (delivery, convergence) count that node as holding nothing.
    #[serde(default)]
    pub unanswered_queries: u64,
}

impl Report {
    /// Full delivery in every room and identical journals.
    pub fn complete(&self) -> bool {
        self.rooms
            .iter()
            .all(|r| r.delivery_ratio >= 1.0 && r.journals_identical)
    }

    pub fn table(&self, baseline: Option<&Report>) -> String {
        let mut out = String::new();
        let line = |out: &mut String, k: &str, v: String, b: Option<String>| {
            out.push_str(&format!("  {k:<32} {v:>14}"));
            if let Some(b) = b {
                out.push_str(&format!("   {b:>14}"));
            }
            out.push('\n');
        };
        out.push_str(&format!(
            "scenario {} ({} nodes, {} messages, {} runtime, {})\n",
            self.scenario, self.nodes, self.messages_sent, self.runtime, self.transport
        ));
        if let Some(b) = baseline {
            if b.mode != "baseline" {
                out.push_str(&format!("  against {}\n", b.mode));
            }
            out.push_str(&format!(
                "  {:<32} {:>14}   {:>14}\n",
                "", "cryptchat", "baseline"
            ));
        }
        if self.unanswered_queries > 0 {
            line(
                &mut out,
                "status queries unanswered",
                self.unanswered_queries.to_string(),
                baseline.map(|b| b.unanswered_queries.to_string()),
            );
        }
        if self.rooms.len() <= MAX_ROOM_LINES {
            for r in &self.rooms {
                let b = baseline.and_then(|b| b.rooms.iter().find(|x| x.name == r.name));
                line(
                    &mut out,
                    &format!("delivery in {} ({} online)", r.name, r.online_members),
                    format!("{:.2}%", r.delivery_ratio * 100.0),
                    b.map(|b| format!("{:.2}%", b.delivery_ratio * 100.0)),
                );
                line(
                    &mut out,
                    &format!("journals identical in {}", r.name),
                    r.journals_identical.to_string(),
                    None,
                );
            }
        } else {
            // Many rooms: the worst room and how many fell short say it all.
            let worst = |rooms: &[RoomReport]| {
                rooms
                    .iter()
                    .map(|r| r.delivery_ratio)
                    .fold(1.0f64, f64::min)
            };
            let full =
                |rooms: &[RoomReport]| rooms.iter().filter(|r| r.delivery_ratio >= 1.0).count();
            line(
                &mut out,
                &format!("delivery, worst of {} rooms", self.rooms.len()),
                format!("{:.2}%", worst(&self.rooms) * 100.0),
                baseline.map(|b| format!("{:.2}%", worst(&b.rooms) * 100.0)),
            );
            line(
                &mut out,
                "rooms with full delivery",
                format!("{}/{}", full(&self.rooms), self.rooms.len()),
                baseline.map(|b| format!("{}/{}", full(&b.rooms), b.rooms.len())),
            );
            line(
                &mut out,
                "rooms with identical journals",
                format!(
                    "{}/{}",
                    self.rooms.iter().filter(|r| r.journals_identical).count(),
                    self.rooms.len()
                ),
                None,
            );
        }
        let ms = |v: f64| format!("{v:.1} ms");
        let pairs = [
            (
                "latency p50",
                self.latency.p50,
                baseline.map(|b| b.latency.p50),
            ),
            (
                "latency p95",
                self.latency.p95,
                baseline.map(|b| b.latency.p95),
            ),
            (
                "latency p99",
                self.latency.p99,
                baseline.map(|b| b.latency.p99),
            ),
            (
                "latency max",
                self.latency.max,
                baseline.map(|b| b.latency.max),
            ),
        ];
        for (k, v, b) in pairs {
            line(&mut out, k, ms(v), b.map(ms));
        }
        if let Some(b) = baseline
            && b.latency.p99 > 0.0
        {
            line(
                &mut out,
                "p99 ratio (cryptchat / baseline)",
                format!("{:.2}x", self.latency.p99 / b.latency.p99),
                None,
            );
        }
        line(
            &mut out,
            "duplicates",
            self.duplicates.to_string(),
            baseline.map(|b| b.duplicates.to_string()),
        );
        line(
            &mut out,
            "bytes sent per delivery",
            format!("{:.0}", self.bytes_per_delivered),
            baseline.map(|b| format!("{:.0}", b.bytes_per_delivered)),
        );
        line(
            &mut out,
            "  of which from load start",
            format!("{:.0}", self.load_bytes_per_delivered),
            baseline.map(|b| format!("{:.0}", b.load_bytes_per_delivered)),
        );
        line(
            &mut out,
            "writes per delivery from load start",
            format!("{:.1}", self.load_writes_per_delivered),
            baseline.map(|b| format!("{:.1}", b.load_writes_per_delivered)),
        );
        line(
            &mut out,
            "substreams per delivery from load start",
            format!("{:.3}", self.load_streams_per_delivered),
            baseline.map(|b| format!("{:.3}", b.load_streams_per_delivered)),
        );
        if let Some(a) = &self.load_activity {
            let per = |n: u64| n as f64 / self.delivered.max(1) as f64;
            line(
                &mut out,
                "from load start, per delivery",
                format!(
                    "receipts heard {:.3}, vector exchanges {:.3}, pulls {:.3}, entries pulled {:.3}",
                    per(a.receipts_heard),
                    per(a.exchanges_sent),
                    per(a.pulls_sent),
                    per(a.entries_pulled),
                ),
                None,
            );
            line(
                &mut out,
                "from load start, in all",
                format!(
                    "connections opened {} (dialled {}), closed {}; DHT queries {} (lookups {}, announcements {}, bootstraps {}, address walks {}); member asks {} (dialled {}); sync failures {}",
                    a.connections_opened,
                    a.connections_dialled,
                    a.connections_closed,
                    a.dht_queries,
                    a.lookups,
                    a.announcements,
                    a.dht_bootstraps,
                    a.address_walks,
                    a.member_asks,
                    a.members_dialled,
                    a.sync_failures
                ),
                None,
            );
        }
        line(
            &mut out,
            "convergence after heal/restart",
            self.convergence_s
                .map_or("never".into(), |c| format!("{c:.1} s")),
            baseline.map(|b| {
                b.convergence_s
                    .map_or("never".into(), |c| format!("{c:.1} s"))
            }),
        );
        line(
            &mut out,
            "CPU per node",
            format!("{:.2} s", self.cpu_s_per_node),
            baseline.map(|b| format!("{:.2} s", b.cpu_s_per_node)),
        );
        line(
            &mut out,
            "cores busy from load start",
            format!("{:.2}", self.load_cores),
            baseline.map(|b| format!("{:.2}", b.load_cores)),
        );
        line(
            &mut out,
            "CPU per delivery from load start",
            format!("{:.2} ms", self.load_cpu_ms_per_delivered),
            baseline.map(|b| format!("{:.2} ms", b.load_cpu_ms_per_delivered)),
        );
        line(
            &mut out,
            "peak memory per node",
            format!("{:.1} MiB", self.peak_rss_mib_per_node),
            baseline.map(|b| format!("{:.1} MiB", b.peak_rss_mib_per_node)),
        );
        line(
            &mut out,
            "room peers per node (p50/min)",
            format!("{:.0}/{:.0}", self.room_peers.p50, self.room_peers.min),
            baseline.map(|b| format!("{:.0}/{:.0}", b.room_peers.p50, b.room_peers.min)),
        );
        line(
            &mut out,
            "connections per node (p50/max)",
            format!("{:.0}/{:.0}", self.connections.p50, self.connections.max),
            baseline.map(|b| format!("{:.0}/{:.0}", b.connections.p50, b.connections.max)),
        );
        if let Some(i) = &self.idle {
            let b = baseline.and_then(|b| b.idle.as_ref());
            line(
                &mut out,
                &format!("idle CPU ({} rooms joined)", i.memberships),
                format!("{:.2}%", i.cpu_percent),
                b.map(|b| format!("{:.2}%", b.cpu_percent)),
            );
            line(
                &mut out,
                "idle CPU per joined room",
                format!("{:.1} us/s", i.cpu_us_per_s_per_room()),
                b.map(|b| format!("{:.1} us/s", b.cpu_us_per_s_per_room())),
            );
            line(
                &mut out,
                "idle traffic per joined room",
                format!("{:.1} B/s", i.bytes_per_s_per_room()),
                b.map(|b| format!("{:.1} B/s", b.bytes_per_s_per_room())),
            );
            line(
                &mut out,
                "memory per joined room",
                format!("{:.1} KiB", i.kib_per_room()),
                b.map(|b| format!("{:.1} KiB", b.kib_per_room())),
            );
        }
        line(&mut out, "setup", format!("{:.1} s", self.setup_s), None);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_costs_are_shared_by_the_joined_rooms() {
        let idle = Idle {
            seconds: 60.0,
            memberships: 2000,
            cpu_percent: 4.0,
            bytes_per_s: 50_000.0,
            rss_before_mib: 100.0,
            rss_mib: 150.0,
        };
        // 4% of a core is 40,000 us/s, over 2,000 rooms.
        assert!((idle.cpu_us_per_s_per_room() - 20.0).abs() < 1e-9);
        assert!((idle.bytes_per_s_per_room() - 25.0).abs() < 1e-9);
        assert!((idle.kib_per_room() - 25.6).abs() < 1e-9);
    }
}
