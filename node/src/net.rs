//! The libp2p behaviour and swarm: transports (TCP, QUIC, WebRTC-direct, relay), discovery
//! (identify, Kademlia, mDNS), NAT traversal (AutoNAT, relay, DCUtR) and gossipsub.

use std::path::Path;
use std::time::Duration;

use libp2p::gossipsub::{self, MessageAuthenticity, TopicHash, ValidationMode};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, Swarm, SwarmBuilder, allow_block_list, autonat, dcutr, identify, kad, mdns,
    noise, ping, relay, tcp, yamux,
};
use libp2p_webrtc::tokio::Certificate;

/// The WebRTC certificate type, for callers that build transports themselves.
pub use libp2p_webrtc::tokio::Certificate as WebRtcCertificate;

use crate::crypto;
use crate::dial_order::{OrderedDials, SharedDialOrder};
use crate::faults::{Faults, FaultyMuxer};
use crate::sync::{SyncRequest, SyncResponse};
use futures::future::Either;
use libp2p::PeerId;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::{Transport, upgrade};

/// History reconciliation protocol (see [`crate::sync`]).
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new(crate::sync::PROTOCOL);

/// Our own Kademlia protocol, so cryptchat's DHT does not mix with IPFS's.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/cryptchat/kad/1.0.0");
/// How often Kademlia walks the DHT to refresh its routing table (libp2p's default is 5
/// minutes). Each walk connects to dozens of nodes, mostly not connected yet, and at 200
/// nodes these walks and the rooms' re-announcements together cost several times the CPU
/// of the room's own traffic; our room lookups and announcements refresh the table on the
/// way anyway. Kademlia still walks as soon as a peer enters a
/// table that holds fewer than 20 (a node starting up or left nearly alone).
pub const DHT_REFRESH: Duration = Duration::from_secs(30 * 60);
/// Kademlia's largest message: a mailbox record ([`crate::mailbox::MAX_RECORD`]) and its
/// framing (libp2p's default, 16 KiB, holds a few messages only).
pub const KAD_MAX_PACKET: usize = crate::mailbox::MAX_RECORD + 8 * 1024;
/// How long a DHT node keeps a mailbox after it was last put (libp2p's default is 48 h):
/// a member away for a long weekend still finds what was written meanwhile. The author
/// puts it again every day while it is online (Kademlia's publication interval).
pub const MAILBOX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Identify protocol version string.
pub const PROTOCOL_VERSION: &str = "/cryptchat/1.0.0";
/// Gossipsub's largest frame, and the most subscription and control bytes one frame may
/// carry. When a connection opens gossipsub sends the peer every topic we are in as one
/// frame; libp2p's default control limit (16 KiB) made the receiver refuse the whole list
/// past ~195 rooms, so the peer learnt of none of them. Both limits are 64 KiB, which fits
/// [`crate::core::MAX_ROOMS`] rooms. (1 MiB frames broke WebRTC-direct connections:
/// tests/webrtc.rs, `room_chat_over_webrtc_direct`.)
pub const MAX_TRANSMIT: usize = 64 * 1024;

/// Protobuf bytes one topic takes in a subscription list: the `subscriptions` field's tag
/// and length (2), the `subscribe`, `requestsPartial` and `supportsPartial` flags (2 each),
/// the `topic_id` field's tag and length (2) and the topic itself (one-byte lengths hold
/// while topics are under 110 bytes). Checked against libp2p: 1,000 56-byte topics made a
/// 66,318-byte frame (see docs/protocol.md, "Topic").
const SUBSCRIPTION_BYTES: usize = crate::room::TOPIC_LEN + 10;
const _: () = assert!(crate::room::TOPIC_LEN < 110);
/// The whole list, plus the frame's length prefix, fits with a margin.
const _: () = assert!(crate::core::MAX_ROOMS * SUBSCRIPTION_BYTES + 1024 < MAX_TRANSMIT);
const _: () = assert!(crate::envelope::MAX_ENVELOPE + 1024 < MAX_TRANSMIT);
/// Sync streams open at once per connection (see `build_swarm`).
pub const SYNC_MAX_STREAMS: usize = 256;
/// Connections stay open this long without traffic (libp2p's default of 10 s is too short
/// for a chat whose members are idle most of the time).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("could not build the libp2p swarm: {0}")]
    Build(String),
    #[error("WebRTC certificate file {path}: {why}")]
    Certificate { path: String, why: String },
    #[error("peer key file {path}: {why}")]
    PeerKey { path: String, why: String },
}

/// Accepts any number of cryptchat topics from a peer. Gossipsub's stock filters cap a
/// peer's subscription list (and drop all of it past the cap); a node in many rooms must
/// still be heard.
#[derive(Default, Clone)]
pub struct RoomTopics;

impl gossipsub::TopicSubscriptionFilter for RoomTopics {
    fn can_subscribe(&mut self, topic: &TopicHash) -> bool {
        let t = topic.as_str();
        t.starts_with(crate::room::TOPIC_PREFIX) && t.len() <= 128
    }
}

pub type Gossipsub = gossipsub::Behaviour<gossipsub::IdentityTransform, RoomTopics>;

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Peers cut off on purpose (fault injection: partitions).
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub relay_client: relay::client::Behaviour,
    pub relay: relay::Behaviour,
    pub ping: ping::Behaviour,
    pub identify: identify::Behaviour,
    pub kad: kad::Behaviour<crate::dht_store::DhtStore>,
    pub gossipsub: Gossipsub,
    pub autonat: autonat::Behaviour,
    pub dcutr: dcutr::Behaviour,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    pub sync: request_response::cbor::Behaviour<SyncRequest, SyncResponse>,
}

/// Options that shape the swarm.
#[derive(Clone, Debug)]
pub struct SwarmOptions {
    pub mdns: bool,
    /// Gossipsub heartbeat; shorter in tests and simulations for faster mesh formation.
    pub heartbeat: Duration,
    /// Latency, jitter, bandwidth and loss injected on this node's links.
    pub faults: Faults,
}

impl Default for SwarmOptions {
    fn default() -> Self {
        SwarmOptions {
            mdns: false,
            heartbeat: Duration::from_millis(700),
            faults: Faults::default(),
        }
    }
}

/// Gossipsub as cryptchat runs it, minus application validation: what netsim's and the
/// latency bench's baselines run too, so they measure cryptchat's own substrate.
///
/// Messages are anonymous at the gossipsub layer (no peer id, sequence number or ed25519
/// signature): every envelope is already signed by its author, so a second signature per
/// message would only cost a signature check per received copy and reveal which peer
/// published it. Ids are content hashes, so the same envelope is one message whoever
/// relays it, and a replay is a duplicate.
pub fn gossipsub_base(heartbeat: Duration) -> gossipsub::ConfigBuilder {
    let mut b = gossipsub::ConfigBuilder::default();
    b.heartbeat_interval(heartbeat)
        .validation_mode(ValidationMode::Anonymous)
        .max_transmit_size(MAX_TRANSMIT)
        .max_control_message_size(MAX_TRANSMIT)
        .message_id_fn(|m| gossipsub::MessageId::from(&crypto::sha256(&[&m.data])[..20]));
    b
}

/// What gossipsub messages carry about their publisher (see [`gossipsub_base`]).
pub const GOSSIP_AUTHENTICITY: MessageAuthenticity = MessageAuthenticity::Anonymous;

fn gossipsub_config(heartbeat: Duration) -> Result<gossipsub::Config, NetError> {
    gossipsub_base(heartbeat)
        // Every message waits for the node's verdict (signature, room, decryption).
        .validate_messages()
        .build()
        .map_err(|e| NetError::Build(e.to_string()))
}

/// Builds the swarm with every transport; nothing listens or dials yet.
pub fn build_swarm(
    keypair: libp2p::identity::Keypair,
    certificate: Certificate,
    opts: &SwarmOptions,
    dial_order: SharedDialOrder,
) -> Result<Swarm<Behaviour>, NetError> {
    let err = |e: &dyn std::fmt::Display| NetError::Build(e.to_string());
    let gcfg = gossipsub_config(opts.heartbeat)?;
    let mdns_on = opts.mdns;
    let faults = opts.faults.clone();
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(|key| direct_transports(key, certificate, faults, Some(dial_order)))
        .map_err(|e| err(&e))?
        .with_dns()
        .map_err(|e| err(&e))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| err(&e))?
        .with_behaviour(|key, relay_client| {
            let peer_id = key.public().to_peer_id();
            let mut kad_cfg = kad::Config::new(KAD_PROTOCOL);
            kad_cfg.set_query_timeout(Duration::from_secs(30));
            kad_cfg.set_periodic_bootstrap_interval(Some(DHT_REFRESH));
            // The service decides what enters the routing table (`Service::kad_has_room`):
            // inserted on connection, a full bucket dials its oldest disconnected entry.
            kad_cfg.set_kbucket_inserts(kad::BucketInserts::Manual);
            kad_cfg.set_max_packet_size(KAD_MAX_PACKET);
            kad_cfg.set_record_ttl(Some(MAILBOX_TTL));
            let mut kad = kad::Behaviour::with_config(
                peer_id,
                crate::dht_store::DhtStore::new(peer_id),
                kad_cfg,
            );
            // Kademlia starts as a client; a cryptchat node serves the DHT for its peers.
            kad.set_mode(Some(kad::Mode::Server));
            let gossipsub: Gossipsub = gossipsub::Behaviour::new_with_subscription_filter(
                GOSSIP_AUTHENTICITY,
                gcfg,
                RoomTopics,
            )?;
            let mdns = if mdns_on {
                Some(mdns::tokio::Behaviour::new(
                    mdns::Config::default(),
                    peer_id,
                )?)
            } else {
                None
            };
            Ok(Behaviour {
                blocked: Default::default(),
                sync: request_response::cbor::Behaviour::new(
                    [(SYNC_PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(60))
                        // A vector exchange covers many rooms, but the pulls it leads to are
                        // one per room, all due together: more than libp2p's default 100.
                        .with_max_concurrent_streams(SYNC_MAX_STREAMS),
                ),
                relay_client,
                relay: relay::Behaviour::new(peer_id, relay::Config::default()),
                // Pings every 5 s with a 10 s timeout; the service closes a link after two
                // failed pings in a row (`PING_FAILURES_TO_CLOSE`).
                ping: ping::Behaviour::new(
                    ping::Config::new()
                        .with_interval(Duration::from_secs(5))
                        .with_timeout(Duration::from_secs(10)),
                ),
                identify: identify::Behaviour::new(
                    identify::Config::new(PROTOCOL_VERSION.into(), key.public())
                        .with_push_listen_addr_updates(true),
                ),
                kad,
                gossipsub,
                autonat: autonat::Behaviour::new(peer_id, autonat::Config::default()),
                dcutr: dcutr::Behaviour::new(peer_id),
                mdns: mdns.into(),
            })
        })
        .map_err(|e| err(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
        .build();
    Ok(swarm)
}

/// Every direct transport, boxed, with connections wrapped in the fault layer.
pub type DirectTransport = libp2p::core::transport::Boxed<(PeerId, FaultyMuxer<StreamMuxerBox>)>;

/// TCP (noise + yamux), QUIC and WebRTC-direct, every connection wrapped in the fault layer
/// (a pass-through unless faults are configured). With `dial_order`, WebRTC-direct dials
/// follow it (see [`crate::dial_order`]).
pub fn direct_transports(
    key: &libp2p::identity::Keypair,
    certificate: Certificate,
    faults: Faults,
    dial_order: Option<SharedDialOrder>,
) -> Result<DirectTransport, Box<dyn std::error::Error + Send + Sync>> {
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
        .upgrade(upgrade::Version::V1Lazy)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .map(|(p, m), _| (p, StreamMuxerBox::new(m)));
    let quic = libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(key))
        .map(|(p, m), _| (p, StreamMuxerBox::new(m)));
    let webrtc = libp2p_webrtc::tokio::Transport::new(key.clone(), certificate)
        .map(|(p, m), _| (p, StreamMuxerBox::new(m)))
        .boxed();
    let webrtc = match dial_order {
        Some(order) => OrderedDials::new(webrtc, order).boxed(),
        None => webrtc,
    };
    Ok(tcp
        .or_transport(quic)
        .or_transport(webrtc)
        .map(move |either, _| {
            let (peer, muxer) = match either {
                Either::Left(Either::Left(x))
                | Either::Left(Either::Right(x))
                | Either::Right(x) => x,
            };
            (peer, FaultyMuxer::new(muxer, peer, faults.clone()))
        })
        .boxed())
}

/// The node's libp2p key: made at random on a data dir's first run and kept there, so the
/// peer id is the same at every start of that data dir and differs from machine to machine.
///
/// It is not derived from the identity: two machines running one identity at once are two
/// peers to the network (their connections, gossip and DHT entries would otherwise be
/// mixed up as one peer's), and the peer id tells nothing about the password.
pub fn load_or_create_peer_key(path: &Path) -> Result<libp2p::identity::Keypair, NetError> {
    match read_peer_key(path) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => {
            let key = libp2p::identity::Keypair::generate_ed25519();
            store_peer_key(path, &key)?;
            Ok(key)
        }
        Err(why) => Err(peer_key_error(path, why)),
    }
}

/// Keeps `key` as the peer key at `path` (a simulation chooses its nodes' keys).
pub fn store_peer_key(path: &Path, key: &libp2p::identity::Keypair) -> Result<(), NetError> {
    let fail = |e: &dyn std::fmt::Display| peer_key_error(path, e.to_string());
    let bytes = key.to_protobuf_encoding().map_err(|e| fail(&e))?;
    crate::config::write_private(path, &bytes).map_err(|e| fail(&e))
}

fn peer_key_error(path: &Path, why: String) -> NetError {
    NetError::PeerKey {
        path: path.display().to_string(),
        why,
    }
}

/// The peer key kept at `path`, if there is one (see [`load_or_create_peer_key`]).
pub fn read_peer_key(path: &Path) -> Result<Option<libp2p::identity::Keypair>, String> {
    match std::fs::read(path) {
        Ok(bytes) => libp2p::identity::Keypair::from_protobuf_encoding(&bytes)
            .map(Some)
            .map_err(|e| {
                format!("{e}; delete it to make a new one (the node's peer id then changes)")
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Loads the WebRTC certificate, creating it on first use, so the node's `/certhash` (part
/// of its WebRTC address) stays the same across restarts.
pub fn load_or_create_certificate(path: &Path) -> Result<Certificate, NetError> {
    let fail = |why: String| NetError::Certificate {
        path: path.display().to_string(),
        why,
    };
    match std::fs::read_to_string(path) {
        Ok(pem) => Certificate::from_pem(&pem)
            .map_err(|e| fail(format!("{e}; delete it to create a new one"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // The RNG argument is ignored by libp2p-webrtc (rcgen draws its own randomness).
            let cert = Certificate::generate(&mut rand::rng()).map_err(|e| fail(e.to_string()))?;
            crate::config::write_private(path, cert.serialize_pem().as_bytes())
                .map_err(|e| fail(e.to_string()))?;
            Ok(cert)
        }
        Err(e) => Err(fail(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dirs_peer_key_is_made_once_kept_private_and_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::config::PEER_KEY_FILE);
        assert!(read_peer_key(&path).unwrap().is_none());
        let first = load_or_create_peer_key(&path).unwrap();
        let again = load_or_create_peer_key(&path).unwrap();
        assert_eq!(first.public(), again.public(), "kept across starts");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Another data dir (another machine) is another peer.
        let other = load_or_create_peer_key(&dir.path().join("other.key")).unwrap();
        assert_ne!(other.public(), first.public());
    }

    #[test]
    fn a_damaged_peer_key_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::config::PEER_KEY_FILE);
        std::fs::write(&path, b"not a key").unwrap();
        let err = load_or_create_peer_key(&path).unwrap_err().to_string();
        assert!(
            err.contains("peer.key") && err.contains("delete it"),
            "{err}"
        );
        // Left as it was: nothing is overwritten behind the user's back.
        assert_eq!(std::fs::read(&path).unwrap(), b"not a key");
    }
}
