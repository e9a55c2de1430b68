//! Dialling and keeping connections: bootstrap nodes and the peers known from earlier
//! runs, room members the DHT names, the connection budget (see [`crate::peers`]), and
//! peers cut off for relaying invalid messages.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use libp2p::gossipsub::{self, IdentTopic};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};

use super::Service;
use crate::known_peers::KnownPeers;
use crate::listen_ports::KeptPorts;
use crate::room::RoomId;

/// A rendezvous dial counts towards its room's budget this long before the peer shows up
/// as a member (connection, identify, subscription).
const DIAL_PENDING: Duration = Duration::from_secs(15);
/// Invalid messages a peer may relay per window before it is cut off.
const STRIKE_LIMIT: u32 = 20;
/// The window over which a peer's invalid messages are counted.
const STRIKE_WINDOW: Duration = Duration::from_secs(60);
/// How long a peer past [`STRIKE_LIMIT`] stays cut off.
const BAN_TIME: Duration = Duration::from_secs(300);

impl Service {
    /// Where a connected peer listens, as it told us (identify), for member exchange.
    pub(super) fn listen_addrs_of(&self, peer: &PeerId) -> Option<&Vec<Multiaddr>> {
        self.peer_addrs.get(peer).filter(|a| !a.is_empty())
    }

    /// Connected members of a room, plus members dialled for it that have not shown up yet.
    pub(super) fn room_peers_or_dialled(&mut self, id: RoomId) -> usize {
        let members: HashSet<PeerId> = self.room_peer_ids(id).into_iter().collect();
        let dials = self.room_dials.entry(id).or_default();
        dials.retain(|p, at| at.elapsed() < DIAL_PENDING && !members.contains(p));
        members.len() + dials.len()
    }

    /// How many more members `room` wants connected: its target, less those connected or
    /// dialled for it.
    pub(super) fn members_wanted(&mut self, room: RoomId) -> usize {
        self.budget
            .target
            .saturating_sub(self.room_peers_or_dialled(room))
    }

    /// A member dialled for a room will not show up through that dial (it failed, or was
    /// refused): it no longer counts towards any room's target.
    pub(super) fn forget_room_dials(&mut self, peer: &PeerId) {
        for dials in self.room_dials.values_mut() {
            dials.remove(peer);
        }
    }

    /// Closes connections beyond the budget (see [`crate::peers`]).
    pub(super) fn trim_connections(&mut self) {
        let gossipsub = &self.swarm.behaviour().gossipsub;
        let mesh: HashSet<PeerId> = gossipsub.all_mesh_peers().copied().collect();
        let topics: HashMap<PeerId, Vec<gossipsub::TopicHash>> = gossipsub
            .all_peers()
            .map(|(p, t)| (*p, t.into_iter().cloned().collect()))
            .collect();
        let ours: HashMap<gossipsub::TopicHash, RoomId> = self
            .core
            .rooms()
            .map(|r| (IdentTopic::new(r.id.topic()).hash(), r.id))
            .collect();
        let pulling = self.reconcile.pulling_from();
        // Bootstrap nodes double as our relays when we are behind NAT.
        let relays: HashSet<PeerId> = self
            .bootstrap
            .iter()
            .flat_map(|a| a.iter())
            .filter_map(|p| match p {
                Protocol::P2p(id) => Some(id),
                _ => None,
            })
            .collect();
        let connected: Vec<crate::peers::Connected<PeerId, RoomId>> = self
            .connections
            .iter()
            .map(|(peer, (since, _))| crate::peers::Connected {
                peer: *peer,
                rooms: topics
                    .get(peer)
                    .map(|ts| ts.iter().filter_map(|t| ours.get(t).copied()).collect())
                    .unwrap_or_default(),
                protected: mesh.contains(peer)
                    || pulling.contains(peer)
                    || relays.contains(peer)
                    || self.relayed.contains_key(peer)
                    || self.fetches.transfers_with(peer)
                    || since.elapsed() < self.budget.grace,
                rank: u64::from_be_bytes(
                    crate::crypto::sha256(&[&self.rank_salt.to_be_bytes(), &peer.to_bytes()])[..8]
                        .try_into()
                        .expect("8 bytes"),
                ),
            })
            .collect();
        let surplus = crate::peers::excess(&connected, self.budget);
        if !surplus.is_empty() {
            tracing::debug!(
                closing = surplus.len(),
                connected = connected.len(),
                "closing connections beyond the room budget"
            );
        }
        for peer in surplus {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// With no connection at all, dials the bootstrap nodes again: the first dial can fail
    /// (a bootstrap node not up yet, a lost handshake), and nothing else would ever bring
    /// the node into the network. Every few seconds while settling, then every sync round.
    pub(super) fn redial_if_alone(&mut self) {
        if !self.connections.is_empty() {
            return;
        }
        self.dial_bootstrap();
    }

    /// Dials every bootstrap node, and the best [`KNOWN_DIALS`] of the peers this node knew
    /// before (see [`crate::known_peers`]), not connected or being dialled already. A
    /// second dial while the first is still in its handshake would only compete with it
    /// (over WebRTC-direct both come from the same UDP port, and the remote keeps the
    /// first).
    pub(super) fn dial_bootstrap(&mut self) {
        let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
        for addr in self.bootstrap.clone() {
            match crate::dial_order::peer_of(&addr) {
                Some(peer) => by_peer.entry(peer).or_default().push(addr),
                None => self.dial_addr(addr),
            }
        }
        let local = *self.swarm.local_peer_id();
        let known = self.known_peers.to_dial(KNOWN_DIALS, |p| {
            *p == local || by_peer.contains_key(p) || self.swarm.is_connected(p)
        });
        by_peer.extend(known);
        for (peer, addrs) in by_peer {
            if let Err(e) = self.dial_unless_dialling(peer, addrs) {
                tracing::trace!(%peer, error = %e, "bootstrap or known node not dialled again");
            }
        }
    }

    fn dial_addr(&mut self, addr: Multiaddr) {
        if let Err(e) = self.swarm.dial(addr.clone()) {
            tracing::warn!(%addr, error = %e, "dial failed");
        }
    }

    /// Dials `peer` at `addrs` unless it is connected or being dialled already.
    fn dial_unless_dialling(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    ) -> Result<(), libp2p::swarm::DialError> {
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        self.swarm.dial(opts)
    }

    pub(super) fn dial_peer(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if peer == *self.swarm.local_peer_id() || self.swarm.is_connected(&peer) {
            return;
        }
        match self.dial_unless_dialling(peer, addrs) {
            Ok(()) => {}
            // Nobody knows where it is: the DHT walks to its neighbourhood, which does.
            Err(libp2p::swarm::DialError::NoAddresses) => {
                tracing::debug!(%peer, "no address for a room member; asking the DHT");
                self.activity.address_walks += 1;
                self.swarm.behaviour_mut().kad.get_closest_peers(peer);
            }
            // Blocked: it will not show up, so it stops counting towards any room's target.
            Err(e @ libp2p::swarm::DialError::Denied { .. }) => {
                tracing::trace!(%peer, error = %e, "room member not dialled");
                self.forget_room_dials(&peer);
            }
            // Already being dialled (DHT answers name the same members many times over): a
            // walk would find nothing the dial in flight does not.
            Err(e) => tracing::trace!(%peer, error = %e, "room member not dialled"),
        }
    }

    /// Counts an invalid message relayed by `peer`; past the limit the peer is cut off for a
    /// while (gossipsub's own scoring has no per-topic penalties configured).
    pub(super) fn strike(&mut self, peer: PeerId) {
        let now = std::time::Instant::now();
        let e = self.strikes.entry(peer).or_insert((now, 0));
        if now.duration_since(e.0) > STRIKE_WINDOW {
            *e = (now, 0);
        }
        e.1 += 1;
        if e.1 >= STRIKE_LIMIT {
            tracing::warn!(%peer, "too many invalid messages: cutting the peer off for a while");
            self.strikes.remove(&peer);
            self.swarm.behaviour_mut().blocked.block_peer(peer);
            self.banned.insert(peer, now + BAN_TIME);
        }
    }

    /// Lifts bans whose time is up.
    pub(super) fn expire_bans(&mut self) {
        let now = std::time::Instant::now();
        let expired: Vec<PeerId> = self
            .banned
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in expired {
            self.banned.remove(&p);
            self.swarm.behaviour_mut().blocked.unblock_peer(p);
        }
    }
}

/// How many of the peers this node knew it dials when it has no connection.
const KNOWN_DIALS: usize = 8;

/// The setting that keeps [`crate::known_peers::KnownPeers`], sealed.
const KNOWN_PEERS_KEY: &str = "known-peers";

/// The setting that keeps [`KeptPorts`], sealed.
const KEPT_PORTS_KEY: &str = "listen-ports";

/// The sealed setting `key` (None if it is not there or cannot be read: what it held is
/// then started afresh, as on a new data dir).
fn load_setting(core: &crate::core::Core, key: &str) -> Option<crate::core::OpenedSetting> {
    match core.sealed_settings(key) {
        Ok(stored) => stored
            .into_iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, plain)| plain.ok()),
        Err(e) => {
            tracing::warn!(error = %e, key, "cannot read a setting");
            None
        }
    }
}

/// The peers this node knew when it last ran.
pub(super) fn load_known_peers(core: &crate::core::Core) -> KnownPeers {
    let now = crate::core::now_ms() / 1000;
    load_setting(core, KNOWN_PEERS_KEY)
        .map(|plain| KnownPeers::decode(&plain, now))
        .unwrap_or_default()
}

/// The ports this node's listeners had when it last ran.
pub(super) fn load_kept_ports(core: &crate::core::Core) -> KeptPorts {
    load_setting(core, KEPT_PORTS_KEY)
        .map(|plain| KeptPorts::decode(&plain))
        .unwrap_or_default()
}

impl Service {
    /// Writes down the peers this node knows and the ports it listens on, if that changed
    /// (made durable with the journal's next flush, as the other settings are).
    pub(super) fn save_peers_and_ports(&mut self) {
        let (peers, ports) = (self.known_peers.take_dirty(), self.kept_ports.take_dirty());
        let mut values = Vec::new();
        if peers {
            values.push((KNOWN_PEERS_KEY.to_string(), self.known_peers.encode()));
        }
        if ports {
            values.push((KEPT_PORTS_KEY.to_string(), self.kept_ports.encode()));
        }
        if values.is_empty() {
            return;
        }
        if let Err(e) = self.core.put_sealed_settings(&values, false) {
            tracing::warn!(error = %e, "could not store the peers and ports this node knows");
            // Tried again at the next round.
            if peers {
                self.known_peers.unsaved();
            }
            if ports {
                self.kept_ports.unsaved();
            }
        }
    }
}
