//! Two cryptchat nodes in one room on 127.0.0.1 TCP, Bob bootstrapped from Alice: what the
//! benches that measure between two nodes start from.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptchat::identity::{Identity, KeySize};
use cryptchat::service::{self, NodeConfig, NodeHandle};

const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

async fn node(id: Arc<Identity>, dir: &Path, bootstrap: Option<String>) -> NodeHandle {
    let mut cfg = NodeConfig::new(dir.to_path_buf());
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    cfg.bootstrap = bootstrap.into_iter().map(|a| a.parse().unwrap()).collect();
    service::start(id, cfg).await.unwrap()
}

async fn room_peers(n: &NodeHandle, room: &str) -> usize {
    let s = n.status().await.unwrap();
    s.rooms
        .iter()
        .find(|r| r.name == room)
        .map_or(0, |r| r.peers)
}

/// Alice's and Bob's identities, derived in parallel; `bench` goes into their passwords.
pub async fn identities(bench: &str) -> (Arc<Identity>, Arc<Identity>) {
    let derive = |name: &'static str| {
        let pw = format!("{name} {bench} bench password");
        tokio::task::spawn_blocking(move || {
            Arc::new(Identity::derive_unchecked(name, &pw, KeySize::Rsa2048).unwrap())
        })
    };
    let (alice, bob) = (derive("alice"), derive("bob"));
    (alice.await.unwrap(), bob.await.unwrap())
}

/// Starts both nodes in `dir` (`a` and `b`), joins `room` on both, and returns once each
/// counts the other as a room peer.
pub async fn two_in_room(
    alice: Arc<Identity>,
    bob: Arc<Identity>,
    dir: &Path,
    room: &str,
) -> (NodeHandle, NodeHandle) {
    let start = Instant::now();
    let a = node(alice, &dir.join("a"), None).await;
    let addr = loop {
        if let Some(addr) = a.status().await.unwrap().listen_addrs.first() {
            break addr.clone();
        }
        assert!(start.elapsed() < SETUP_TIMEOUT, "alice never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let b = node(bob, &dir.join("b"), Some(addr)).await;
    a.join(room, None).await.unwrap();
    b.join(room, None).await.unwrap();
    while room_peers(&a, room).await < 1 || room_peers(&b, room).await < 1 {
        assert!(
            start.elapsed() < SETUP_TIMEOUT,
            "the nodes never met in the room"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (a, b)
}
