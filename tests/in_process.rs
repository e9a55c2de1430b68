//! End-to-end with in-process nodes (real swarms on loopback, real redb files): what a
//! hostile peer can do that the CLI cannot, such as publishing forged envelopes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptchat::envelope::{Envelope, Kind, Payload, Position};
use cryptchat::identity::{Identity, KeySize};
use cryptchat::room::Room;
use cryptchat::service::{self, NodeConfig, NodeHandle};

fn identity(name: &str) -> Arc<Identity> {
    Arc::new(
        Identity::derive_unchecked(
            name,
            &format!("{name} in-process password"),
            KeySize::Rsa2048,
        )
        .unwrap(),
    )
}

async fn node(id: Arc<Identity>, dir: &std::path::Path, bootstrap: Option<String>) -> NodeHandle {
    let mut cfg = NodeConfig::new(dir.to_path_buf());
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    cfg.bootstrap = bootstrap.into_iter().map(|a| a.parse().unwrap()).collect();
    service::start(id, cfg).await.unwrap()
}

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn first_addr(n: &NodeHandle) -> String {
    let mut addr = None;
    wait_for("listen address", async || {
        addr = n.status().await.unwrap().listen_addrs.first().cloned();
        addr.is_some()
    })
    .await;
    addr.unwrap()
}

async fn room_peers(n: &NodeHandle, room: &str) -> usize {
    let s = n.status().await.unwrap();
    s.rooms
        .iter()
        .find(|r| r.name == room)
        .map_or(0, |r| r.peers)
}

async fn texts(n: &NodeHandle, room: &str) -> Vec<String> {
    n.history(room, 100)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| m.text)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_and_malformed_envelopes_are_rejected_and_never_stored() {
    cryptchat::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let alice = identity("alice");
    let a = node(alice.clone(), &dir.path().join("a"), None).await;
    let b = node(
        identity("bob"),
        &dir.path().join("b"),
        Some(first_addr(&a).await),
    )
    .await;
    a.join("lobby", None).await.unwrap();
    b.join("lobby", None).await.unwrap();
    wait_for("mesh", async || room_peers(&a, "lobby").await >= 1).await;
    a.send("lobby", "real").await.unwrap();
    wait_for("the real message", async || {
        texts(&b, "lobby").await == ["real"]
    })
    .await;

    let room = Room::named("lobby", None).unwrap();
    let pos = Position {
        seq: 2,
        prev: [0; 32],
        lamport: 9,
        timestamp_ms: 0,
    };
    let payload = Payload {
        from: "alice".into(),
        text: Some("forged".into()),
    };
    let env = Envelope::seal(&alice, &room, Kind::Text, pos, &payload).unwrap();
    let mut tampered = env.bytes().to_vec();
    let n = tampered.len();
    tampered[n - 300] ^= 0x01; // inside the ciphertext, covered by the signature
    a.publish_raw("lobby", tampered).await.unwrap();
    a.publish_raw("lobby", b"not an envelope at all".to_vec())
        .await
        .unwrap();
    a.publish_raw("lobby", vec![7u8; 61 * 1024]).await.unwrap();
    // An envelope for another room, replayed into this one.
    let other = Room::named("elsewhere", None).unwrap();
    let foreign = Envelope::seal(&alice, &other, Kind::Text, pos, &payload).unwrap();
    a.publish_raw("lobby", foreign.into_bytes()).await.unwrap();

    wait_for("four rejections at bob", async || {
        let c = b.status().await.unwrap().counters;
        c.rejected.values().sum::<u64>() >= 4
    })
    .await;
    let rejected = b.status().await.unwrap().counters.rejected;
    assert_eq!(rejected.get("bad_signature"), Some(&1), "{rejected:?}");
    assert_eq!(rejected.get("malformed"), Some(&1), "{rejected:?}");
    assert_eq!(rejected.get("oversized"), Some(&1), "{rejected:?}");
    assert_eq!(rejected.get("wrong_room"), Some(&1), "{rejected:?}");
    assert_eq!(texts(&b, "lobby").await, ["real"]);
    // The node is still healthy after all that.
    a.send("lobby", "still here").await.unwrap();
    wait_for("a later message", async || {
        texts(&b, "lobby").await.len() == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn eavesdropper_on_a_direct_room_cannot_read() {
    cryptchat::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, carol) = (identity("alice"), identity("bob"), identity("carol"));
    let a = node(alice.clone(), &dir.path().join("a"), None).await;
    let boot = first_addr(&a).await;
    let b = node(bob.clone(), &dir.path().join("b"), Some(boot.clone())).await;
    let c = node(carol.clone(), &dir.path().join("c"), Some(boot)).await;
    a.add_contact("bob", &bob.contact_code().encode())
        .await
        .unwrap();
    b.add_contact("alice", &alice.contact_code().encode())
        .await
        .unwrap();
    // Carol knows both public keys, so she can compute the direct room's topic and listen.
    let mut spy = Room::direct(carol.contact_code().into(), bob.contact_code().into());
    spy.id = Room::direct(alice.contact_code().into(), bob.contact_code().into()).id;
    spy.name = "spy".into();
    c.join_room(spy).await.unwrap();
    wait_for("direct room mesh", async || {
        room_peers(&a, "@bob").await >= 2 && room_peers(&c, "spy").await >= 1
    })
    .await;
    a.dm("bob", "for bob only").await.unwrap();
    wait_for("bob reads it", async || {
        texts(&b, "@alice").await == ["for bob only"]
    })
    .await;
    wait_for("carol refuses it", async || {
        let r = c.status().await.unwrap().counters.rejected;
        r.get("undecryptable") == Some(&1)
    })
    .await;
    assert!(texts(&c, "spy").await.is_empty());
}
