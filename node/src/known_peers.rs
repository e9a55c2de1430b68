//! The peers a node was connected to, kept across restarts.
//!
//! Without them a node started again with no `--bootstrap` address (and no mDNS) would
//! wait, alone, to be dialled: the network it was part of yesterday is still there, but
//! nothing says where. With them it dials the peers it knew, most useful first, and finds
//! the rest through them (Kademlia, then each room's rendezvous).
//!
//! A peer is worth more if this node dialled it and got an answer (its address works from
//! here, as a bootstrap node's does) than if it only dialled us; among equals the one seen
//! last goes first. A peer that could not be dialled in this run goes behind those not yet
//! tried, so that a node dialling while it is alone works through the whole book rather
//! than the same few gone peers. The book keeps [`MAX_PEERS`] peers and [`MAX_ADDRS`] addresses each,
//! and forgets a peer not seen for [`FORGET_AFTER_S`]. It holds who we talk to, so the
//! service keeps it sealed at rest, like the other settings.

use std::collections::{HashMap, HashSet};

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

/// Peers kept.
pub const MAX_PEERS: usize = 64;

/// Addresses kept per peer.
pub const MAX_ADDRS: usize = 8;

/// A peer not seen for this long (30 days) is forgotten.
pub const FORGET_AFTER_S: u64 = 30 * 24 * 3600;

/// Seeing a peer again changes what is stored only if its last sighting is older than
/// this (an hour): the order of the book barely moves within it, and the journal is not
/// written each time a peer reconnects.
const SEEN_AGAIN_S: u64 = 3600;

/// One peer as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    peer: String,
    /// Addresses that worked first, then those the peer said it listens on.
    addrs: Vec<String>,
    /// Unix seconds.
    seen: u64,
    /// This node dialled the peer and it answered.
    reached: bool,
}

#[derive(Clone, Debug)]
struct Known {
    addrs: Vec<Multiaddr>,
    seen: u64,
    reached: bool,
    /// Dials that failed in this run since the last that worked (not stored).
    failures: u32,
}

/// The peers this node knows, by how much it expects to reach them.
#[derive(Clone, Debug, Default)]
pub struct KnownPeers {
    peers: HashMap<PeerId, Known>,
    /// Something changed that is worth writing down.
    dirty: bool,
}

impl KnownPeers {
    /// Reads what [`KnownPeers::encode`] wrote; what cannot be read is left out (an
    /// unreadable entry costs one peer, not the book).
    pub fn decode(bytes: &[u8], now: u64) -> Self {
        let stored: Vec<Stored> = serde_json::from_slice(bytes).unwrap_or_default();
        let mut book = KnownPeers::default();
        for s in stored {
            let Ok(peer) = s.peer.parse::<PeerId>() else {
                continue;
            };
            if now.saturating_sub(s.seen) > FORGET_AFTER_S {
                continue;
            }
            let addrs: Vec<Multiaddr> = s
                .addrs
                .iter()
                .filter_map(|a| a.parse().ok())
                .take(MAX_ADDRS)
                .collect();
            if addrs.is_empty() {
                continue;
            }
            book.peers.insert(
                peer,
                Known {
                    addrs,
                    seen: s.seen,
                    reached: s.reached,
                    failures: 0,
                },
            );
        }
        book.trim();
        book
    }

    /// The book as stored, best first.
    pub fn encode(&self) -> Vec<u8> {
        let stored: Vec<Stored> = self
            .ranked(false)
            .into_iter()
            .map(|(peer, k)| Stored {
                peer: peer.to_string(),
                addrs: k.addrs.iter().map(|a| a.to_string()).collect(),
                seen: k.seen,
                reached: k.reached,
            })
            .collect();
        serde_json::to_vec(&stored).expect("plain data serialises")
    }

    /// We dialled `peer` at `addr` and it answered.
    pub fn reached(&mut self, peer: PeerId, addr: &Multiaddr, now: u64) {
        if addr
            .iter()
            .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2pCircuit))
        {
            // Through a relay: that says nothing of where the peer itself can be reached
            // (what it listens on comes with `heard`).
            return;
        }
        let addr = without_peer(addr);
        let known = self.entry(peer, now);
        let changed = !known.reached || known.addrs.first() != Some(&addr);
        known.reached = true;
        known.failures = 0;
        known.addrs.retain(|a| *a != addr);
        known.addrs.insert(0, addr);
        known.addrs.truncate(MAX_ADDRS);
        self.touched(peer, now, changed);
    }

    /// `peer`, one of ours (it speaks our protocols), says it listens on `addrs` (in no
    /// particular order: identify sends them from a set).
    pub fn heard(&mut self, peer: PeerId, addrs: &[Multiaddr], now: u64) {
        let claimed: Vec<Multiaddr> = addrs.iter().map(without_peer).collect();
        let known = self.entry(peer, now);
        let before: HashSet<Multiaddr> = known.addrs.iter().cloned().collect();
        // The address that worked stays first, then those kept before that the peer still
        // claims, in their order, then new ones: the same claims in another order change
        // nothing.
        let worked = known.addrs.first().filter(|_| known.reached).cloned();
        let mut fresh: Vec<Multiaddr> = worked.into_iter().collect();
        let kept = known.addrs.iter().filter(|a| claimed.contains(a));
        for a in kept.chain(claimed.iter()) {
            if !fresh.contains(a) {
                fresh.push(a.clone());
            }
        }
        fresh.truncate(MAX_ADDRS);
        let changed = fresh.iter().cloned().collect::<HashSet<_>>() != before;
        known.addrs = fresh;
        self.touched(peer, now, changed);
    }

    /// A dial of `peer` failed: it goes behind the peers not tried yet.
    pub fn failed(&mut self, peer: &PeerId) {
        if let Some(known) = self.peers.get_mut(peer) {
            known.failures = known.failures.saturating_add(1);
        }
    }

    /// Up to `n` peers to dial to find the network again, best first, with their
    /// addresses (none of them `skip`).
    pub fn to_dial(
        &self,
        n: usize,
        skip: impl Fn(&PeerId) -> bool,
    ) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.ranked(true)
            .into_iter()
            .filter(|(peer, k)| !skip(peer) && !k.addrs.is_empty())
            .take(n)
            .map(|(peer, k)| (*peer, k.addrs.clone()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Whether something changed since the last call: the caller then writes the book.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// The write after [`KnownPeers::take_dirty`] failed: the next call says so again.
    pub fn unsaved(&mut self) {
        self.dirty = true;
    }

    fn entry(&mut self, peer: PeerId, now: u64) -> &mut Known {
        self.peers.entry(peer).or_insert_with(|| Known {
            addrs: Vec::new(),
            seen: now,
            reached: false,
            failures: 0,
        })
    }

    fn touched(&mut self, peer: PeerId, now: u64, changed: bool) {
        let Some(known) = self.peers.get_mut(&peer) else {
            return;
        };
        let mut dirty = false;
        if changed || now.saturating_sub(known.seen) >= SEEN_AGAIN_S {
            known.seen = now;
            dirty = true;
        }
        if known.addrs.is_empty() {
            self.peers.remove(&peer);
        }
        let gone = self.trim();
        // A newcomer that ranks last in a full book goes at once: nothing to write.
        if gone.iter().any(|p| *p != peer) || (dirty && self.peers.contains_key(&peer)) {
            self.dirty = true;
        }
    }

    /// Best first: reached before only heard of, then seen last first, then by peer id
    /// (so that the order does not depend on the map's); for dialling, peers whose dials
    /// failed in this run go behind the others (`with_failures`).
    fn ranked(&self, with_failures: bool) -> Vec<(&PeerId, &Known)> {
        let mut all: Vec<(&PeerId, &Known)> = self.peers.iter().collect();
        let failures = |k: &Known| if with_failures { k.failures } else { 0 };
        all.sort_by(|(pa, a), (pb, b)| {
            failures(a)
                .cmp(&failures(b))
                .then(b.reached.cmp(&a.reached))
                .then(b.seen.cmp(&a.seen))
                .then(pa.cmp(pb))
        });
        all
    }

    /// Drops the peers past [`MAX_PEERS`], by what they are worth whatever this run's
    /// failed dials (a node that lost its network for a while keeps its book); returns
    /// them.
    fn trim(&mut self) -> Vec<PeerId> {
        if self.peers.len() <= MAX_PEERS {
            return Vec::new();
        }
        let gone: Vec<PeerId> = self.ranked(false)[MAX_PEERS..]
            .iter()
            .map(|(p, _)| **p)
            .collect();
        for p in &gone {
            self.peers.remove(p);
        }
        gone
    }
}

/// `addr` without a trailing `/p2p/<peer>`: the book keys addresses by peer already.
fn without_peer(addr: &Multiaddr) -> Multiaddr {
    let mut addr = addr.clone();
    if matches!(
        addr.iter().last(),
        Some(libp2p::multiaddr::Protocol::P2p(_))
    ) {
        addr.pop();
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    const DAY: u64 = 24 * 3600;

    #[test]
    fn a_peer_we_reached_goes_before_one_we_only_heard_of() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut book = KnownPeers::default();
        book.heard(b, &[addr("/ip4/10.0.0.2/tcp/4001")], 2000);
        book.reached(a, &addr("/ip4/192.0.2.1/tcp/4001"), 1000);
        book.heard(
            a,
            &[
                addr("/ip4/127.0.0.1/tcp/4001"),
                addr("/ip4/192.0.2.1/tcp/4001"),
            ],
            1000,
        );
        let dial = book.to_dial(8, |_| false);
        assert_eq!(dial.len(), 2);
        assert_eq!(dial[0].0, a, "reached, though seen earlier");
        // The address that worked stays first, and is not there twice.
        assert_eq!(
            dial[0].1,
            [
                addr("/ip4/192.0.2.1/tcp/4001"),
                addr("/ip4/127.0.0.1/tcp/4001")
            ]
        );
        assert_eq!(book.to_dial(8, |p| *p == a)[0].0, b);
        assert_eq!(book.to_dial(1, |_| false).len(), 1);
        // Reached through a relay: not a peer whose address works.
        let c = PeerId::random();
        book.reached(
            c,
            &addr(&format!(
                "/ip4/192.0.2.7/tcp/4001/p2p/{a}/p2p-circuit/p2p/{c}"
            )),
            3000,
        );
        assert_eq!(book.len(), 2);
    }

    #[test]
    fn dialling_again_and_again_works_through_the_whole_book() {
        let mut book = KnownPeers::default();
        let peers: Vec<PeerId> = (0..6).map(|_| PeerId::random()).collect();
        for (i, p) in peers.iter().enumerate() {
            book.reached(
                *p,
                &addr(&format!("/ip4/192.0.2.{i}/tcp/4001")),
                100 - i as u64,
            );
        }
        let mut tried = std::collections::HashSet::new();
        for _ in 0..3 {
            for (p, _) in book.to_dial(2, |_| false) {
                tried.insert(p);
                book.failed(&p);
            }
        }
        assert_eq!(tried.len(), 6, "each of the six, two at a time");
        // One that answers again is first again; failures are not written down.
        book.reached(peers[5], &addr("/ip4/192.0.2.5/tcp/4001"), 100);
        assert_eq!(book.to_dial(1, |_| false)[0].0, peers[5]);
        let back = KnownPeers::decode(&book.encode(), 100);
        assert_eq!(back.to_dial(1, |_| false)[0].0, peers[0]);
    }

    #[test]
    fn the_book_comes_back_as_written_and_forgets_the_long_gone() {
        let mut book = KnownPeers::default();
        let peers: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        let me = |p: &PeerId| addr(&format!("/ip4/192.0.2.1/tcp/4001/p2p/{p}"));
        book.reached(peers[0], &me(&peers[0]), 40 * DAY);
        book.heard(
            peers[1],
            &[addr("/ip4/192.0.2.2/udp/4001/quic-v1")],
            41 * DAY,
        );
        book.heard(peers[2], &[addr("/ip4/192.0.2.3/tcp/4001")], DAY);
        assert!(book.take_dirty());
        assert!(!book.take_dirty());
        let back = KnownPeers::decode(&book.encode(), 42 * DAY);
        let dial = back.to_dial(8, |_| false);
        // The third was last seen 41 days before: forgotten.
        assert_eq!(
            dial.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            [peers[0], peers[1]]
        );
        // Stored without the peer id: it is the key.
        assert_eq!(dial[0].1, [addr("/ip4/192.0.2.1/tcp/4001")]);
        // Damage costs what it damaged.
        assert!(KnownPeers::decode(b"not json", 0).is_empty());
        let bad = br#"[{"peer":"nope","addrs":["/ip4/1.2.3.4/tcp/1"],"seen":5,"reached":true}]"#;
        assert!(KnownPeers::decode(bad, 5).is_empty());
    }

    #[test]
    fn reconnecting_within_the_hour_writes_nothing() {
        let p = PeerId::random();
        let a = addr("/ip4/192.0.2.1/tcp/4001");
        let mut book = KnownPeers::default();
        book.reached(p, &a, 1000);
        assert!(book.take_dirty());
        book.reached(p, &a, 1000 + 60);
        book.heard(p, std::slice::from_ref(&a), 1000 + 120);
        assert!(!book.take_dirty());
        book.reached(p, &a, 1000 + SEEN_AGAIN_S);
        assert!(book.take_dirty());
        // A new address is worth writing at once.
        book.heard(
            p,
            &[a, addr("/ip4/192.0.2.9/tcp/4001")],
            1000 + SEEN_AGAIN_S + 1,
        );
        assert!(book.take_dirty());
    }

    #[test]
    fn the_same_addresses_in_another_order_change_nothing() {
        let p = PeerId::random();
        let addrs: Vec<Multiaddr> = (0..12)
            .map(|i| addr(&format!("/ip4/192.0.2.{i}/tcp/4001")))
            .collect();
        let mut book = KnownPeers::default();
        book.heard(p, &addrs, 1000);
        assert!(book.take_dirty());
        let kept = book.to_dial(1, |_| false)[0].1.clone();
        let mut shuffled = addrs.clone();
        shuffled.reverse();
        book.heard(p, &shuffled, 1010);
        assert!(!book.take_dirty());
        assert_eq!(
            book.to_dial(1, |_| false)[0].1,
            kept,
            "the same eight, in their order"
        );
        // One address gone: the others stay, and a new one takes its place.
        book.heard(p, &addrs[1..], 1020);
        assert!(book.take_dirty());
        assert_eq!(book.to_dial(1, |_| false)[0].1.len(), MAX_ADDRS);
    }

    #[test]
    fn a_full_book_keeps_its_best_through_failed_dials_and_newcomers() {
        let mut book = KnownPeers::default();
        let good: Vec<PeerId> = (0..MAX_PEERS).map(|_| PeerId::random()).collect();
        for (i, p) in good.iter().enumerate() {
            book.reached(
                *p,
                &addr(&format!("/ip4/192.0.2.{}/tcp/4001", i % 250)),
                500,
            );
        }
        assert!(book.take_dirty());
        // The network was gone for a while: every dial failed.
        for p in &good {
            book.failed(p);
        }
        // Peers only heard of come and go: none of them is worth more than those reached,
        // and nothing is written for them.
        for i in 0..10 {
            book.heard(
                PeerId::random(),
                &[addr("/ip4/198.51.100.1/tcp/4001")],
                600 + i,
            );
        }
        assert!(!book.take_dirty());
        let kept: std::collections::HashSet<PeerId> = book
            .to_dial(usize::MAX, |_| false)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(
            kept,
            good.into_iter().collect::<std::collections::HashSet<_>>()
        );
    }

    #[test]
    fn the_book_holds_so_many_peers_and_addresses() {
        let mut book = KnownPeers::default();
        let many: Vec<Multiaddr> = (0..20)
            .map(|i| addr(&format!("/ip4/192.0.2.{i}/tcp/4001")))
            .collect();
        let first = PeerId::random();
        book.reached(first, &many[0], 10_000);
        book.heard(first, &many, 10_000);
        for i in 0..MAX_PEERS as u64 + 10 {
            book.heard(PeerId::random(), &many[..1], i);
        }
        assert_eq!(book.len(), MAX_PEERS);
        let dial = book.to_dial(usize::MAX, |_| false);
        assert_eq!(dial[0].0, first);
        assert_eq!(dial[0].1.len(), MAX_ADDRS);
        // The oldest of those only heard of went first.
        let back = KnownPeers::decode(&book.encode(), 10_000);
        assert_eq!(back.len(), MAX_PEERS);
    }
}
