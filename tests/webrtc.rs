//! End-to-end: the three-node room chat of `tests/chat.rs`, over WebRTC-direct only.
//!
//! A test binary of its own, so it does not share the machine with the other end-to-end
//! tests' start-ups (argon2id takes 64 MiB and a core per node): a WebRTC-direct handshake
//! must finish within `libp2p-webrtc`'s 10 s, and what happens when it does not is covered by
//! the node's recovery rules (docs/protocol.md, "WebRTC-direct dialling"), which this test also
//! exercises whenever a handshake is slow.

mod common;

use std::time::Duration;

#[test]
fn room_chat_over_webrtc_direct() {
    // Longer than the others: a failed handshake costs 10 s before the node may retry it.
    common::three_nodes_chat("webrtc-direct", Duration::from_secs(120));
}
