//! Helpers for in-process nodes: real swarms on loopback and real redb files, driven through
//! `NodeHandle` (what the local API uses).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptchat::identity::{Identity, KeySize};
use cryptchat::service::{self, NodeConfig, NodeHandle};

pub fn identity(name: &str) -> Arc<Identity> {
    Arc::new(
        Identity::derive_unchecked(
            name,
            &format!("{name} in-process password"),
            KeySize::Rsa2048,
        )
        .unwrap(),
    )
}

pub fn config(dir: &Path, bootstrap: &[String]) -> NodeConfig {
    let mut cfg = NodeConfig::new(dir.to_path_buf());
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    cfg.bootstrap = bootstrap.iter().map(|a| a.parse().unwrap()).collect();
    cfg.sync_interval = Duration::from_secs(2);
    cfg
}

pub async fn node(id: Arc<Identity>, dir: &Path, bootstrap: &[String]) -> NodeHandle {
    cryptchat::install_crypto_provider();
    service::start(id, config(dir, bootstrap)).await.unwrap()
}

/// Makes `a` and `b` each other's contacts, under their usernames.
pub async fn befriend(a: &NodeHandle, b: &NodeHandle) {
    for (x, y) in [(a, b), (b, a)] {
        let them = y.identity();
        x.add_contact(them.username(), &them.contact_code().encode())
            .await
            .unwrap();
    }
}

pub async fn wait_for(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

pub async fn first_addr(n: &NodeHandle) -> String {
    let mut addr = None;
    wait_for("listen address", Duration::from_secs(10), async || {
        addr = n.status().await.unwrap().listen_addrs.first().cloned();
        addr.is_some()
    })
    .await;
    addr.unwrap()
}

pub async fn room_peers(n: &NodeHandle, room: &str) -> usize {
    let s = n.status().await.unwrap();
    s.rooms
        .iter()
        .find(|r| r.name == room)
        .map_or(0, |r| r.peers)
}

pub async fn texts(n: &NodeHandle, room: &str) -> Vec<String> {
    n.history(room, 1_000_000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| m.text)
        .collect()
}

/// Whether the room's history holds the message that shares file `id`.
pub async fn has_file(n: &NodeHandle, room: &str, id: &str) -> bool {
    let history = n.history(room, 1_000_000).await.unwrap();
    history
        .iter()
        .any(|m| m.file.as_ref().is_some_and(|f| f.id == id))
}

/// (author, seq) of every message in display order: what "identical history" compares.
pub async fn entries(n: &NodeHandle, room: &str) -> Vec<(String, u64)> {
    n.history(room, 1_000_000)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.author_id, m.seq))
        .collect()
}
