//! cryptchat: a serverless, end-to-end encrypted group chat node.
//!
//! Protocol logic lives in plain synchronous modules ([`identity`], [`room`], [`envelope`],
//! [`journal`], [`core`]); [`service`] runs them on a libp2p swarm ([`net`]) owned by a single
//! task, and [`api`] exposes the node on loopback for the CLI ([`client`]) and the web page.

pub mod activity;
pub mod api;
pub mod authors;
pub mod census;
pub mod chars;
pub mod chunk_slices;
pub mod claims;
pub mod client;
pub mod config;
pub mod core;
pub mod crypto;
pub mod dht_store;
pub mod dial_order;
pub mod disk;
pub mod envelope;
pub mod faults;
pub mod files;
pub mod identity;
pub mod journal;
pub mod known_peers;
pub mod listen_ports;
pub mod mailbox;
pub mod net;
pub mod own_chain;
pub mod own_fork;
pub mod peers;
pub mod receipt;
pub mod room;
pub mod service;
pub mod shown;
pub mod sync;

/// Installs the process-wide rustls crypto provider. libp2p-webrtc (via webrtc-rs) panics on
/// the first WebRTC connection without one, so every binary calls this first.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
