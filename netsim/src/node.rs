//! One simulated node, cryptchat or baseline, behind one interface for the runner.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cryptchat::faults::Faults;
use cryptchat::identity::Identity;
use cryptchat::service::{self, Event, NodeConfig, NodeHandle};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;

use crate::baseline::PlainNode;

/// A message delivered to a node: (room name, text).
pub type Delivered = (String, String);

#[derive(Clone)]
pub enum SimNode {
    Chat(NodeHandle),
    Plain(PlainNode),
}

/// How to (re)start a node.
#[derive(Clone)]
pub struct NodeSpec {
    pub index: usize,
    pub identity: Arc<Identity>,
    pub data_dir: PathBuf,
    pub faults: Faults,
    pub sync_interval: Duration,
    pub baseline: bool,
}

impl SimNode {
    pub async fn start(spec: &NodeSpec, dial: Vec<Multiaddr>) -> anyhow::Result<SimNode> {
        if spec.baseline {
            let n = PlainNode::start(
                spec.identity.peer_keypair(),
                dial,
                spec.faults.clone(),
                cryptchat::net::SwarmOptions::default().heartbeat,
            )
            .await?;
            return Ok(SimNode::Plain(n));
        }
        let mut cfg = NodeConfig::new(spec.data_dir.clone());
        cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
        cfg.bootstrap = dial;
        cfg.sync_interval = spec.sync_interval;
        cfg.swarm.faults = spec.faults.clone();
        Ok(SimNode::Chat(
            service::start(spec.identity.clone(), cfg).await?,
        ))
    }

    pub async fn addr(&self) -> Option<Multiaddr> {
        match self {
            SimNode::Chat(h) => {
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
            SimNode::Plain(p) => p.addr().await,
        }
    }

    /// Forwards every message delivered to this node into `tx`, tagged with `index`.
    pub fn forward_deliveries(&self, index: usize, tx: mpsc::UnboundedSender<(usize, Delivered)>) {
        match self {
            SimNode::Chat(h) => {
                let mut rx = h.subscribe();
                tokio::spawn(async move {
                    loop {
                        match rx.recv().await {
                            Ok(Event::Message(m)) if !m.mine => {
                                if let Some(t) = m.text {
                                    let _ = tx.send((index, (m.room, t)));
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
            SimNode::Plain(p) => {
                let mut rx = p.subscribe();
                tokio::spawn(async move {
                    loop {
                        match rx.recv().await {
                            Ok(d) => {
                                let _ = tx.send((index, d));
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
        match self {
            SimNode::Chat(h) => {
                h.join(room, password).await?;
            }
            SimNode::Plain(p) => p.join(room).await,
        }
        Ok(())
    }

    pub async fn send(&self, room: &str, text: &str) -> bool {
        match self {
            SimNode::Chat(h) => h.send(room, text).await.is_ok(),
            SimNode::Plain(p) => p.send(room, text).await,
        }
    }

    /// Texts this node holds for a room (journal for cryptchat, received set for baseline).
    pub async fn held(&self, room: &str) -> Vec<String> {
        match self {
            SimNode::Chat(h) => h
                .history(room, usize::MAX)
                .await
                .map(|v| v.into_iter().filter_map(|m| m.text).collect())
                .unwrap_or_default(),
            SimNode::Plain(p) => p.held(room).await,
        }
    }

    /// Number of messages held for a room (cheap: no decryption).
    pub async fn count(&self, room: &str) -> u64 {
        match self {
            SimNode::Chat(h) => h
                .rooms()
                .await
                .ok()
                .and_then(|rs| rs.into_iter().find(|r| r.name == room))
                .map_or(0, |r| r.messages),
            SimNode::Plain(p) => p.held(room).await.len() as u64,
        }
    }

    /// (author, seq) order of a room, for convergence checks.
    pub async fn order(&self, room: &str) -> Vec<(String, u64)> {
        match self {
            SimNode::Chat(h) => h
                .history(room, usize::MAX)
                .await
                .map(|v| v.into_iter().map(|m| (m.author_id, m.seq)).collect())
                .unwrap_or_default(),
            SimNode::Plain(_) => vec![],
        }
    }

    pub async fn room_peers(&self, room: &str) -> usize {
        match self {
            SimNode::Chat(h) => h
                .status()
                .await
                .ok()
                .and_then(|s| s.rooms.into_iter().find(|r| r.name == room))
                .map_or(0, |r| r.peers),
            SimNode::Plain(p) => p.room_peers(room).await,
        }
    }

    /// Peers this node is connected to.
    pub async fn connections(&self) -> usize {
        match self {
            SimNode::Chat(h) => h.status().await.map_or(0, |s| s.connected_peers),
            SimNode::Plain(p) => p.connections().await,
        }
    }

    pub async fn block(&self, peers: Vec<PeerId>, blocked: bool) {
        match self {
            SimNode::Chat(h) => {
                let _ = h.block(peers, blocked).await;
            }
            SimNode::Plain(p) => p.block(peers, blocked).await,
        }
    }

    pub async fn duplicates(&self) -> u64 {
        match self {
            SimNode::Chat(h) => h.status().await.map_or(0, |s| s.counters.duplicates),
            SimNode::Plain(_) => 0,
        }
    }

    pub async fn stop(&self) {
        match self {
            SimNode::Chat(h) => {
                let _ = h.shutdown().await;
            }
            SimNode::Plain(p) => p.stop().await,
        }
    }
}
