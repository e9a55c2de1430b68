//! One simulated node, cryptchat or baseline, behind one interface for the runner.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use cryptchat::faults::Faults;
use cryptchat::identity::Identity;
use cryptchat::service::{self, Event, NodeConfig, NodeHandle};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

use crate::baseline::{BaselineSwarm, PlainNode};

/// A message delivered to a node.
#[derive(Clone, Debug)]
pub struct Delivered {
    /// Index of the node that received it.
    pub node: usize,
    pub text: String,
    /// When the node handed it to its client: stamped by the node's own forwarder, so the
    /// runner's collector, one task for every node, adds nothing to the latency it measures.
    pub at: Instant,
}

impl Delivered {
    /// `text`, delivered to `node` just now.
    fn now(node: usize, text: String) -> Delivered {
        Delivered {
            node,
            text,
            at: Instant::now(),
        }
    }
}

/// A status query waits this long at most. A saturated node (hundreds of nodes on two
/// cores) may not answer for minutes; the run still has to finish and report, counting
/// the query as unanswered (see [`NodeSpec::unanswered`]).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct SimNode {
    kind: Kind,
    /// The node's own runtime, if it has one (see [`SimNode::start`]).
    own: Option<OwnRuntime>,
    unanswered: Arc<AtomicU64>,
}

#[derive(Clone)]
struct OwnRuntime {
    handle: tokio::runtime::Handle,
    /// Ends the runtime's thread when the last clone of the node goes.
    _stop: Arc<oneshot::Sender<()>>,
}

#[derive(Clone)]
enum Kind {
    Chat(NodeHandle),
    Plain(PlainNode),
}

/// How to (re)start a node.
#[derive(Clone)]
pub struct NodeSpec {
    pub index: usize,
    pub identity: Arc<Identity>,
    /// The key kept in `data_dir` (see [`cryptchat::net::load_or_create_peer_key`]).
    pub peer_key: libp2p::identity::Keypair,
    /// How many times the node moved to a new machine (a new data dir and peer key).
    pub machine: u64,
    pub data_dir: PathBuf,
    pub faults: Faults,
    pub sync_interval: Duration,
    pub baseline: bool,
    /// The swarm a baseline node runs.
    pub baseline_swarm: BaselineSwarm,
    /// Run the node on a runtime of its own, on its own thread (see [`SimNode::start`]).
    pub own_thread: bool,
    /// Where the node listens (its transport, on a free loopback port).
    pub listen: Multiaddr,
    /// Status queries that timed out, over the whole run (shared by every node's spec).
    pub unanswered: Arc<AtomicU64>,
}

impl SimNode {
    /// Starts a node. With `own_thread`, the node gets a single-threaded runtime on a thread
    /// of its own, as if it were its own process: the operating system then shares the cores
    /// between nodes, preempting as it would between processes, instead of every node's tasks
    /// taking turns on the few workers of one shared runtime, where any task's long poll
    /// delays every other node's. The node's delivery forwarder runs on that runtime too.
    pub async fn start(spec: &NodeSpec, dial: Vec<Multiaddr>) -> anyhow::Result<SimNode> {
        if !spec.own_thread {
            return Ok(SimNode {
                kind: Kind::start(spec, dial).await?,
                own: None,
                unanswered: spec.unanswered.clone(),
            });
        }
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let unanswered = spec.unanswered.clone();
        let spec = spec.clone();
        std::thread::Builder::new()
            .name(format!("node-{}", spec.index))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                let handle = rt.handle().clone();
                rt.block_on(async move {
                    let started = Kind::start(&spec, dial).await.map(|k| (k, handle));
                    let _ = ready_tx.send(started);
                    // Runs until the last handle goes; dropping the runtime then ends
                    // whatever of the node is left.
                    let _ = stop_rx.await;
                });
            })?;
        let (kind, handle) = ready_rx.await.context("the node's thread ended")??;
        Ok(SimNode {
            kind,
            own: Some(OwnRuntime {
                handle,
                _stop: Arc::new(stop_tx),
            }),
            unanswered,
        })
    }
}

impl Kind {
    async fn start(spec: &NodeSpec, dial: Vec<Multiaddr>) -> anyhow::Result<Kind> {
        if spec.baseline {
            let n = PlainNode::start(
                spec.baseline_swarm,
                spec.peer_key.clone(),
                spec.listen.clone(),
                dial,
                spec.faults.clone(),
                cryptchat::net::SwarmOptions::default().heartbeat,
            )
            .await?;
            return Ok(Kind::Plain(n));
        }
        let mut cfg = NodeConfig::new(spec.data_dir.clone());
        cfg.listen = vec![spec.listen.clone()];
        cfg.bootstrap = dial;
        cfg.sync_interval = spec.sync_interval;
        cfg.swarm.faults = spec.faults.clone();
        Ok(Kind::Chat(
            service::start(spec.identity.clone(), cfg).await?,
        ))
    }
}

impl SimNode {
    /// `query`'s answer, or `fallback` (counted as unanswered) after [`QUERY_TIMEOUT`].
    async fn bounded<T>(
        &self,
        what: &'static str,
        fallback: T,
        query: impl std::future::Future<Output = T>,
    ) -> T {
        match tokio::time::timeout(QUERY_TIMEOUT, query).await {
            Ok(v) => v,
            Err(_) => {
                self.unanswered.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(what, "a node did not answer a status query in time");
                fallback
            }
        }
    }

    pub async fn addr(&self) -> Option<Multiaddr> {
        match &self.kind {
            Kind::Chat(h) => {
                for _ in 0..100 {
                    if let Ok(s) = h.status().await
                        && let Some(a) = s.listen_addrs.first()
                    {
                        return a.parse().ok();
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                None
            }
            Kind::Plain(p) => p.addr().await,
        }
    }

    /// Runs `task` beside the node: on its own runtime if it has one, so that what the task
    /// measures does not wait for another runtime's workers.
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        match &self.own {
            Some(own) => drop(own.handle.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
    }

    /// Forwards every message delivered to this node into `tx`, tagged with `index` and
    /// stamped with the time it came out of the node.
    pub fn forward_deliveries(&self, index: usize, tx: mpsc::UnboundedSender<Delivered>) {
        match &self.kind {
            Kind::Chat(h) => {
                let mut rx = h.subscribe();
                self.spawn(async move {
                    loop {
                        match rx.recv().await {
                            Ok(Event::Message(m)) if !m.mine => {
                                if let Some(text) = m.text {
                                    let _ = tx.send(Delivered::now(index, text));
                                }
                            }
                            Ok(_) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                                tracing::warn!(node = index, missed = n, "event stream lagged");
                            }
                            Err(_) => return,
                        }
                    }
                });
            }
            Kind::Plain(p) => {
                let mut rx = p.subscribe();
                self.spawn(async move {
                    loop {
                        match rx.recv().await {
                            Ok((_room, text)) => {
                                let _ = tx.send(Delivered::now(index, text));
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                            Err(_) => return,
                        }
                    }
                });
            }
        }
    }

    pub async fn join(&self, room: &str, password: Option<String>) -> anyhow::Result<()> {
        match &self.kind {
            Kind::Chat(h) => {
                h.join(room, password).await?;
            }
            Kind::Plain(p) => p.join(room).await,
        }
        Ok(())
    }

    pub async fn send(&self, room: &str, text: &str) -> bool {
        match &self.kind {
            Kind::Chat(h) => h.send(room, text).await.is_ok(),
            Kind::Plain(p) => p.send(room, text).await,
        }
    }

    /// Texts this node holds for a room (journal for cryptchat, received set for baseline).
    pub async fn held(&self, room: &str) -> Vec<String> {
        self.bounded("held", Vec::new(), async {
            match &self.kind {
                Kind::Chat(h) => h
                    .history(room, usize::MAX)
                    .await
                    .map(|v| v.into_iter().filter_map(|m| m.text).collect())
                    .unwrap_or_default(),
                Kind::Plain(p) => p.held(room).await,
            }
        })
        .await
    }

    /// Number of messages held for a room (cheap: no decryption).
    pub async fn count(&self, room: &str) -> u64 {
        self.bounded("count", 0, async {
            match &self.kind {
                Kind::Chat(h) => h
                    .rooms()
                    .await
                    .ok()
                    .and_then(|rs| rs.into_iter().find(|r| r.name == room))
                    .map_or(0, |r| r.messages),
                Kind::Plain(p) => p.held(room).await.len() as u64,
            }
        })
        .await
    }

    /// (author, seq) order of a room, for convergence checks.
    pub async fn order(&self, room: &str) -> Vec<(String, u64)> {
        self.bounded("order", Vec::new(), async {
            match &self.kind {
                Kind::Chat(h) => h
                    .history(room, usize::MAX)
                    .await
                    .map(|v| v.into_iter().map(|m| (m.author_id, m.seq)).collect())
                    .unwrap_or_default(),
                Kind::Plain(_) => vec![],
            }
        })
        .await
    }

    pub async fn room_peers(&self, room: &str) -> usize {
        self.bounded("room_peers", 0, async {
            match &self.kind {
                Kind::Chat(h) => h
                    .status()
                    .await
                    .ok()
                    .and_then(|s| s.rooms.into_iter().find(|r| r.name == room))
                    .map_or(0, |r| r.peers),
                Kind::Plain(p) => p.room_peers(room).await,
            }
        })
        .await
    }

    /// Whether the node holds its own chain in `room` as its members know it, so that its
    /// writes there go out at once (see `cryptchat::own_chain`; always for plain nodes).
    pub async fn own_chain_held(&self, room: &str) -> bool {
        self.bounded("own_chain", false, async {
            match &self.kind {
                Kind::Chat(h) => h.status().await.ok().is_some_and(|s| {
                    s.rooms
                        .into_iter()
                        .any(|r| r.name == room && r.own_chain == "held")
                }),
                Kind::Plain(_) => true,
            }
        })
        .await
    }

    /// Peers this node is connected to.
    pub async fn connections(&self) -> usize {
        self.bounded("connections", 0, async {
            match &self.kind {
                Kind::Chat(h) => h.status().await.map_or(0, |s| s.connected_peers),
                Kind::Plain(p) => p.connections().await,
            }
        })
        .await
    }

    pub async fn block(&self, peers: Vec<PeerId>, blocked: bool) {
        match &self.kind {
            Kind::Chat(h) => {
                let _ = h.block(peers, blocked).await;
            }
            Kind::Plain(p) => p.block(peers, blocked).await,
        }
    }

    /// The node's activity counters (see [`cryptchat::activity`]); None for baseline nodes
    /// and nodes that did not answer.
    pub async fn activity(&self) -> Option<cryptchat::activity::Activity> {
        self.bounded("activity", None, async {
            match &self.kind {
                Kind::Chat(h) => h.status().await.ok().map(|s| s.activity),
                Kind::Plain(_) => None,
            }
        })
        .await
    }

    pub async fn duplicates(&self) -> u64 {
        self.bounded("duplicates", 0, async {
            match &self.kind {
                Kind::Chat(h) => h.status().await.map_or(0, |s| s.counters.duplicates),
                Kind::Plain(_) => 0,
            }
        })
        .await
    }

    pub async fn stop(&self) {
        match &self.kind {
            Kind::Chat(h) => {
                let _ = h.shutdown().await;
            }
            Kind::Plain(p) => p.stop().await,
        }
    }
}
