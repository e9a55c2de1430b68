//! Finding a room's members: announcing our membership in the DHT, looking members up,
//! and asking connected members whom they know, paced so that a node in many rooms, or a
//! room of many nodes, does not flood the DHT.

use libp2p::{PeerId, kad};

use super::Service;
use crate::room::RoomId;

/// Each room is announced in the DHT again every this many rendezvous rounds at least
/// (provider records live in other nodes' memory, which restarts lose)...
const ANNOUNCE_MIN_ROUNDS: u32 = 10;
/// ...and at most, whatever the room's size (see [`crate::peers::announce_every`]).
const ANNOUNCE_MAX_ROUNDS: u32 = 120;
/// A room whose member count holds still asks the DHT at least this many rendezvous rounds
/// apart (see [`crate::peers::Pacing`]).
const LOOKUP_MAX_EVERY: u32 = 8;
/// DHT queries (announcements and lookups) a node runs at once at most; see
/// [`Service::rendezvous`].
const MAX_DHT_QUERIES: usize = 64;

impl Service {
    /// Announces ourselves as a member of the room in the DHT (with `announce`), and looks
    /// for other members if the room has fewer connected than the budget's target (with
    /// `paced`, less and less often while that number holds still).
    pub(super) fn rendezvous(&mut self, id: RoomId, announce: bool, paced: bool) {
        if !self.kad_ready {
            return;
        }
        let key = kad::RecordKey::new(&id.0);
        // Every announcement and lookup is a DHT query, and libp2p keeps its queries in a
        // table that never shrinks, some 20 KiB each: a node joining 1,000 rooms at once
        // would start 2,000 and keep their memory for good. What does not fit waits for a
        // later rendezvous round.
        let busy = self.dht_busy();
        if announce || self.announce_due.contains(&id) {
            if busy {
                self.announce_due.insert(id);
            } else {
                self.announce_due.remove(&id);
                self.activity.announcements += 1;
                if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(key.clone()) {
                    tracing::warn!(error = %e, "could not announce room membership");
                }
                self.announced_now(id);
            }
        }
        let have = self.room_peers_or_dialled(id);
        let short = have < self.budget.target
            && (!paced
                || self
                    .lookups
                    .entry(id)
                    .or_default()
                    .due(have, LOOKUP_MAX_EVERY));
        if !short {
            return;
        }
        // Ask a connected member first; the DHT when there is none, when it answers with no
        // one new, and when the last exchange left the count where it was (the member asked
        // may have named peers that were gone, or lied): then the DHT gets its turn once.
        let stale = self.exchanged_at.remove(&id) == Some(have);
        if !stale && self.ask_members(id) {
            self.exchanged_at.insert(id, have);
        } else {
            // `lookup` checks the DHT's query table itself (after any announcement above).
            self.lookup(id);
        }
    }

    /// Whether the DHT runs as many queries as we allow (see [`MAX_DHT_QUERIES`]).
    pub(super) fn dht_busy(&mut self) -> bool {
        self.swarm.behaviour_mut().kad.iter_queries().count() >= MAX_DHT_QUERIES
    }

    /// Looks the room's members up in the DHT (unless too many queries run already).
    pub(super) fn lookup(&mut self, id: RoomId) {
        if self.dht_busy() {
            return;
        }
        tracing::debug!(
            have = self.room_peers(id),
            "looking for room members in the DHT"
        );
        self.activity.lookups += 1;
        self.swarm
            .behaviour_mut()
            .kad
            .get_providers(kad::RecordKey::new(&id.0));
    }

    /// Member exchange ([`crate::peers::pick_offered`]): asks a random connected room member
    /// which members it is connected to. False if we have no connected member to ask, or
    /// too many exchanges are under way.
    fn ask_members(&mut self, id: RoomId) -> bool {
        use rand::seq::IndexedRandom;
        let Some(peer) = self.room_peer_ids(id).choose(&mut rand::rng()).copied() else {
            return false;
        };
        self.request_members(peer, id)
    }

    /// Whether Kademlia's routing table takes `peer`: it is in it already, or its bucket is
    /// not full. libp2p-kad answers an insertion into a full bucket by dialling the bucket's
    /// oldest disconnected entry to see whether it is still alive, and the connection budget
    /// keeps most entries disconnected, so feeding every identify into the table dialled
    /// someone for nearly every new connection, and each such connection was an insertion
    /// on the other side (measured at 500 nodes: 8,500-18,600 dials a minute that no query
    /// asked for). A full table keeps the peers it has; the entries that stop answering
    /// are dropped as queries fail to reach them, which makes room again.
    pub(super) fn kad_has_room(&mut self, peer: &PeerId) -> bool {
        match self.swarm.behaviour_mut().kad.kbucket(*peer) {
            Some(bucket) => {
                bucket.num_entries() < kad::K_VALUE.get()
                    || bucket.iter().any(|e| e.node.key.preimage() == peer)
            }
            // Ourselves.
            None => false,
        }
    }

    /// One rendezvous round: every room looks for members (paced), and the rooms whose
    /// turn has come are announced again.
    pub(super) fn rendezvous_round(&mut self) {
        let ids: Vec<RoomId> = self.core.rooms().map(|r| r.id).collect();
        for id in ids {
            let due = self.announce_is_due(id);
            self.rendezvous(id, due, true);
        }
    }

    /// Whether our announcement of `room` is due again: [`crate::peers::announce_every`]
    /// rounds after the last, stretched by a factor drawn at each announcement so that
    /// members who joined together spread out. Decided afresh every round, so a room that
    /// loses its connected members shortens its wait at once.
    fn announce_is_due(&mut self, room: RoomId) -> bool {
        let Some(&(last, stretch)) = self.announced.get(&room) else {
            return true;
        };
        // Never sooner than the minimum: spares the counting below in most rounds.
        let soonest = (f64::from(ANNOUNCE_MIN_ROUNDS) * stretch).round().max(1.0) as u64;
        if self.rendezvous_rounds < last + soonest {
            return false;
        }
        let well_connected = self.room_peers(room) >= self.budget.target;
        let every = crate::peers::announce_every(
            self.core.room_size(room),
            well_connected,
            ANNOUNCE_MIN_ROUNDS,
            ANNOUNCE_MAX_ROUNDS,
        );
        let wait = (f64::from(every) * stretch).round().max(1.0) as u64;
        self.rendezvous_rounds >= last + wait
    }

    /// Notes that `room` was just announced.
    fn announced_now(&mut self, room: RoomId) {
        use rand::RngExt;
        let stretch = rand::rng().random_range(0.5..1.5);
        self.announced
            .insert(room, (self.rendezvous_rounds, stretch));
    }

    /// Looks for members of every room short of its target now (unpaced), and announces
    /// every room with `announce`.
    pub(super) fn rendezvous_all(&mut self, announce: bool) {
        let ids: Vec<RoomId> = self.core.rooms().map(|r| r.id).collect();
        for id in ids {
            self.rendezvous(id, announce, false);
        }
    }

    /// What a finished (or progressing) DHT query found.
    pub(super) fn on_kad_result(&mut self, result: kad::QueryResult) {
        match result {
            kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                key,
                providers,
            })) => {
                if let Some(file) = self.fetches.lookup_of(&key) {
                    return self.on_file_holders(file, providers);
                }
                // Not a room of ours: one we left, or a search for a file's holders that
                // has ended.
                let Ok(room) = <[u8; 32]>::try_from(key.as_ref()).map(RoomId) else {
                    return;
                };
                if self.core.room(&room).is_none() {
                    return;
                }
                // Enough members connected (or being dialled) already: gossipsub
                // spreads the rest. Answers arrive from many DHT nodes at once, so
                // dials in flight count too.
                let want = self.members_wanted(room);
                let me = *self.swarm.local_peer_id();
                let fresh: Vec<PeerId> = providers
                    .into_iter()
                    .filter(|p| *p != me && !self.swarm.is_connected(p))
                    .take(want)
                    .collect();
                // Someone to reach: keep looking every round until they show up, in
                // case the dial fails (pacing is for lookups that find nobody new).
                if !fresh.is_empty() {
                    self.lookups.remove(&room);
                }
                for p in fresh {
                    self.room_dials
                        .entry(room)
                        .or_default()
                        .insert(p, std::time::Instant::now());
                    self.dial_peer(p, vec![]);
                }
            }
            kad::QueryResult::GetClosestPeers(Ok(ok)) => {
                // We looked up one room member whose address we lacked: dial it, and
                // only it (the rest of the answer is just its DHT neighbourhood).
                let Ok(wanted) = PeerId::from_bytes(&ok.key) else {
                    return;
                };
                if let Some(info) = ok.peers.into_iter().find(|p| p.peer_id == wanted)
                    && !info.addrs.is_empty()
                {
                    self.dial_peer(info.peer_id, info.addrs);
                }
            }
            _ => {}
        }
    }
}
