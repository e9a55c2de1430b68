//! Which connections a node keeps.
//!
//! Gossipsub holds every connection it has a stream on, and every Kademlia query or
//! rendezvous dial adds connections, so without a budget a node in a big room ends up
//! connected to nearly every member (49 of 49 at 50 nodes, out of file descriptors at 200).
//! A room needs only a handful of connected members: gossipsub's mesh plus a few spares
//! for gossip and reconciliation. This module decides which connections to close; the
//! service gathers the facts and closes them.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// How many connected members each room aims at, and when to trim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Rendezvous dials more members while a room has fewer than this many connected.
    pub target: usize,
    /// A room with more connected members than this is trimmed back to this many. The gap
    /// between `target` and `high` keeps nodes from dialling and trimming in turn: a node
    /// trimmed by its peers drops below `target` only after many of them did so.
    pub high: usize,
    /// Connections that share no room with us kept anyway (DHT neighbours, bootstrap).
    pub spare: usize,
    /// New connections are left alone this long: they are still exchanging
    /// subscriptions, joining meshes and reconciling.
    pub grace: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            target: 8,
            high: 16,
            spare: 4,
            grace: Duration::from_secs(10),
        }
    }
}

impl Budget {
    /// Checks that the numbers make sense together.
    pub fn validate(&self) -> Result<(), String> {
        if self.target == 0 || self.high < self.target {
            return Err(format!(
                "room peer budget needs 0 < target <= high (target {}, high {})",
                self.target, self.high
            ));
        }
        Ok(())
    }
}

/// One connected peer, as the service sees it.
#[derive(Clone, Debug)]
pub struct Connected<P, R> {
    pub peer: P,
    /// Rooms we share with it (rooms we are in whose topic it subscribes to).
    pub rooms: Vec<R>,
    /// Never close: a gossipsub mesh peer, a fresh connection still settling, a peer we
    /// are pulling history from.
    pub protected: bool,
    /// Order among candidates (lowest closed first). The service draws it per node, so
    /// nodes do not all drop the same peers.
    pub rank: u64,
}

/// The peers to disconnect so that no room keeps more than `budget.high` connected members,
/// and at most `budget.spare` connections share no room with us. Protected peers are never
/// chosen, and no peer is chosen that another room needs to stay at `budget.high`.
pub fn excess<P: Clone, R: Copy + Eq + Hash>(peers: &[Connected<P, R>], budget: Budget) -> Vec<P> {
    let mut count: HashMap<R, usize> = HashMap::new();
    for p in peers {
        for r in &p.rooms {
            *count.entry(*r).or_default() += 1;
        }
    }
    let mut candidates: Vec<&Connected<P, R>> = peers.iter().filter(|p| !p.protected).collect();
    // Peers sharing fewer rooms go first: one that links us to several rooms is worth more.
    candidates.sort_by_key(|p| (p.rooms.len(), p.rank));
    let mut unshared_kept = peers
        .iter()
        .filter(|p| p.protected && p.rooms.is_empty())
        .count();
    let mut out = Vec::new();
    for p in candidates {
        if p.rooms.is_empty() {
            if unshared_kept < budget.spare {
                unshared_kept += 1;
            } else {
                out.push(p.peer.clone());
            }
            continue;
        }
        // Close only if every room it links us to has members to spare.
        if p.rooms.iter().all(|r| count[r] > budget.high) {
            for r in &p.rooms {
                *count.get_mut(r).expect("counted above") -= 1;
            }
            out.push(p.peer.clone());
        }
    }
    out
}

/// Rendezvous rounds between two announcements of a room by one member.
///
/// An announcement is a DHT walk plus a provider record stored on the 20 nodes closest to
/// the room's key, and those records outlive the walk by two days (Kademlia also republishes
/// them every 12 hours by itself): what re-announcing repairs is records lost with the
/// nodes that held them, as a restart empties a node's store. A newcomer needs only one
/// live record to find the room, and each holder keeps only the first 20 providers of a key
/// anyway (libp2p's guard against record flooding), so a big room gains nothing from all
/// its members re-announcing often. A member `well_connected` (at its budget's target of
/// connected room members) waits the longest, `max` rounds; otherwise the room as a whole
/// re-announces about once a round: each of `members` members (the room's size as
/// [`crate::core::Core::room_size`] estimates it) every `members` rounds, within
/// `min..=max` (measured at 200 members: every member re-announcing every 10 rounds kept
/// the nodes busier with DHT walks than with the room's messages).
pub fn announce_every(members: usize, well_connected: bool, min: u32, max: u32) -> u32 {
    let max = max.max(min);
    if well_connected {
        return max;
    }
    u32::try_from(members).unwrap_or(u32::MAX).clamp(min, max)
}

/// Paces a room's DHT lookups for members. A room short of its target asks the DHT every
/// rendezvous round at first; while the number of members it finds stays the same, it asks
/// half as often each time, down to once every `max_every` rounds. A node in many small
/// rooms (all forever short of the target) would otherwise run a DHT query per room per
/// round. New members are not missed: a newcomer looks the room up itself and dials us. A
/// lookup that names a member we are not connected to starts the pacing over (the service
/// drops it), so a failed dial is retried at the next round.
#[derive(Clone, Debug, Default)]
pub struct Pacing {
    /// Members at the last lookup.
    last: Option<usize>,
    /// Rounds between lookups now.
    every: u32,
    /// Rounds left to skip.
    skip: u32,
}

impl Pacing {
    /// Called once per rendezvous round with the room's member count: whether to look up.
    pub fn due(&mut self, members: usize, max_every: u32) -> bool {
        if self.last != Some(members) {
            *self = Pacing {
                last: Some(members),
                every: 1,
                skip: 0,
            };
            return true;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        self.every = (self.every * 2).min(max_every.max(1));
        self.skip = self.every - 1;
        true
    }
}

/// Members one answer to a member exchange names at most (see [`pick_offered`]).
pub const EXCHANGE_MAX_MEMBERS: usize = 16;
/// Addresses per member in such an answer at most.
pub const EXCHANGE_MAX_ADDRS: usize = 4;

/// Member exchange: a member short of connected room members asks one it is connected to
/// which members *it* is connected to, and dials some of them. A DHT lookup hands every
/// member that asks the same first 20 providers of the room key (each record holder keeps
/// only those), so in a big room everyone who lost connections crowds onto the same few;
/// the members' own neighbours are spread over the whole room, and asking one costs a
/// single request instead of a DHT walk. The DHT stays the fallback for a member with no
/// room member connected, or whose neighbours know no one new.
///
/// From what a peer `offered`, the members worth dialling: the first of each peer only (an
/// answer may repeat one), none that `skip` rules out (ourselves, connected or being
/// dialled already), at most `want`, drawn at random so that members who ask the same peer
/// do not all dial the same few. Only the first [`EXCHANGE_MAX_MEMBERS`] offered count.
pub fn pick_offered<P, A, R>(
    offered: Vec<(P, A)>,
    skip: impl Fn(&P) -> bool,
    want: usize,
    rng: &mut R,
) -> Vec<(P, A)>
where
    P: Clone + Eq + Hash,
    R: rand::Rng + ?Sized,
{
    use rand::seq::IndexedRandom;
    let mut seen = std::collections::HashSet::new();
    let fresh: Vec<(P, A)> = offered
        .into_iter()
        .take(EXCHANGE_MAX_MEMBERS)
        .filter(|(p, _)| !skip(p) && seen.insert(p.clone()))
        .collect();
    let chosen: Vec<usize> = (0..fresh.len())
        .collect::<Vec<_>>()
        .sample(rng, want)
        .copied()
        .collect();
    fresh
        .into_iter()
        .enumerate()
        .filter(|(i, _)| chosen.contains(i))
        .map(|(_, x)| x)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offered_members_are_picked_fresh_unique_and_at_random() {
        let mut rng = rand::rng();
        let offered: Vec<(u32, ())> = [1, 2, 2, 3, 4, 5, 6].iter().map(|p| (*p, ())).collect();
        // 1 is us, 2 is connected already.
        let skip = |p: &u32| *p == 1 || *p == 2;
        let all = pick_offered(offered.clone(), skip, 10, &mut rng);
        let mut ids: Vec<u32> = all.iter().map(|(p, _)| *p).collect();
        ids.sort();
        assert_eq!(ids, vec![3, 4, 5, 6]);
        assert_eq!(pick_offered(offered.clone(), skip, 2, &mut rng).len(), 2);
        assert!(pick_offered(offered.clone(), skip, 0, &mut rng).is_empty());
        // Over many draws every fresh member gets picked: askers spread out.
        let mut picked = std::collections::HashSet::new();
        for _ in 0..200 {
            for (p, _) in pick_offered(offered.clone(), skip, 1, &mut rng) {
                picked.insert(p);
            }
        }
        assert_eq!(picked.len(), 4);
        // An answer longer than allowed counts only up to the limit.
        let long: Vec<(usize, ())> = (0..1000).map(|p| (p, ())).collect();
        let got = pick_offered(long, |_| false, 1000, &mut rng);
        assert_eq!(got.len(), EXCHANGE_MAX_MEMBERS);
        assert!(got.iter().all(|(p, _)| *p < EXCHANGE_MAX_MEMBERS));
    }

    fn peer(id: u32, rooms: &[u8], protected: bool) -> Connected<u32, u8> {
        Connected {
            peer: id,
            rooms: rooms.to_vec(),
            protected,
            rank: u64::from(id),
        }
    }

    const B: Budget = Budget {
        target: 3,
        high: 5,
        spare: 1,
        grace: Duration::from_secs(1),
    };

    #[test]
    fn a_room_within_its_budget_is_left_alone() {
        let peers: Vec<_> = (0..5).map(|i| peer(i, &[1], false)).collect();
        assert!(excess(&peers, B).is_empty());
    }

    #[test]
    fn an_overfull_room_is_trimmed_to_high_sparing_protected_peers() {
        let mut peers: Vec<_> = (0..10).map(|i| peer(i, &[1], false)).collect();
        peers[0].protected = true;
        peers[1].protected = true;
        let out = excess(&peers, B);
        assert_eq!(out.len(), 5, "{out:?}");
        assert!(!out.contains(&0) && !out.contains(&1));
    }

    #[test]
    fn protected_peers_can_keep_a_room_over_budget() {
        let peers: Vec<_> = (0..8).map(|i| peer(i, &[1], i < 7)).collect();
        assert_eq!(excess(&peers, B), vec![7]);
    }

    #[test]
    fn a_peer_is_kept_if_another_room_needs_it() {
        // Room 1 is over budget; peer 0 is also one of room 2's only two members.
        let mut peers: Vec<_> = (0..8).map(|i| peer(i, &[1], false)).collect();
        peers[0].rooms.push(2);
        peers.push(peer(20, &[2], true));
        let out = excess(&peers, B);
        assert!(!out.contains(&0), "{out:?}");
        assert_eq!(out.len(), 3, "room 1 goes from 8 to 5 without peer 0");
    }

    #[test]
    fn peers_sharing_no_room_are_kept_up_to_the_spare_count() {
        let peers = vec![
            peer(1, &[], false),
            peer(2, &[], false),
            peer(3, &[], false),
            peer(4, &[9], false),
        ];
        let out = excess(&peers, B);
        assert_eq!(out, vec![2, 3], "the lowest rank is kept");
        // A protected unshared peer uses the spare slot.
        let mut peers = peers;
        peers[2].protected = true;
        assert_eq!(excess(&peers, B), vec![1, 2]);
    }

    #[test]
    fn peers_linking_several_rooms_go_last() {
        // Both rooms are over budget; peer 0 (the lowest rank) is in both.
        let mut peers: Vec<_> = (0..8).map(|i| peer(i, &[1], false)).collect();
        peers[0].rooms.push(2);
        for i in 10..16 {
            peers.push(peer(i, &[2], false));
        }
        let out = excess(&peers, B);
        assert_eq!(out.len(), 5, "room 1 goes from 8 to 5, room 2 from 7 to 5");
        assert!(!out.contains(&0));
    }

    #[test]
    fn budget_validation() {
        assert!(B.validate().is_ok());
        assert!(Budget { target: 0, ..B }.validate().is_err());
        assert!(
            Budget {
                target: 6,
                high: 5,
                ..B
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn big_rooms_announce_less_often_per_member_within_bounds() {
        assert_eq!(announce_every(0, false, 10, 120), 10);
        assert_eq!(announce_every(5, false, 10, 120), 10);
        assert_eq!(announce_every(40, false, 10, 120), 40);
        assert_eq!(announce_every(200, false, 10, 120), 120);
        assert_eq!(announce_every(usize::MAX, false, 10, 120), 120);
        // A member with enough connected members waits the longest, whatever it knows.
        assert_eq!(announce_every(0, true, 10, 120), 120);
        // A maximum below the minimum does not panic; the minimum wins.
        assert_eq!(announce_every(50, false, 10, 5), 10);
        assert_eq!(announce_every(50, true, 10, 5), 10);
    }

    #[test]
    fn lookups_thin_out_while_nothing_changes_and_restart_on_change() {
        let mut p = Pacing::default();
        let rounds: Vec<bool> = (0..20).map(|_| p.due(2, 8)).collect();
        let asked: Vec<usize> = (0..20).filter(|i| rounds[*i]).collect();
        // Rounds 0, 1, 3, 7, then every 8th.
        assert_eq!(asked, [0, 1, 3, 7, 15]);
        // A member left: ask right away, then thin out again.
        assert!(p.due(1, 8));
        assert!(p.due(1, 8));
        assert!(!p.due(1, 8));
        // max_every 1 means every round.
        let mut q = Pacing::default();
        assert!((0..10).all(|_| q.due(0, 1)));
    }
}
