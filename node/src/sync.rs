//! History reconciliation between two room members, without the network.
//!
//! Peers exchange version vectors ({author: (contiguous head seq, head hash)}) and each pulls
//! the ranges it lacks, in bounded batches. To keep the exchange small, a peer sends only the
//! heads that changed since what it last told that peer, plus a digest of its whole vector;
//! a receiver whose reconstruction does not match the digest asks for the full vector again.
//! Forks travel as (author, seq) pairs; a peer that lacks a proof pulls it. A round's
//! vectors for every room two peers share travel in one request ([`batches`]), so a node in
//! a thousand rooms opens a few streams per round, not a thousand.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::crypto;
use crate::journal::{Head, Id};

/// Request-response protocol name.
pub const PROTOCOL: &str = "/cryptchat/sync/2.0.0";
/// At most this many entries in one response.
pub const MAX_BATCH_ENTRIES: usize = 512;
/// At most this many envelope bytes in one response (below the codec's 10 MiB cap).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// At most this many heads in one vector message: rooms with more authors than this are
/// refused by reconciliation (gossip still works for them).
pub const MAX_HEADS: usize = 10_000;
/// At most this many ranges in one pull.
pub const MAX_RANGES: usize = 1024;
/// At most this many rooms' vectors in one request; a longer list is refused whole.
pub const MAX_HELLOS: usize = 256;
/// A request takes no more rooms once its vectors hold this many heads (a room's vector
/// alone may hold more, up to [`MAX_HEADS`]): keeps requests far below the codec's 1 MiB.
pub const MAX_BATCH_HEADS: usize = 4096;

/// One author's head as carried on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireHead {
    #[serde(with = "serde_bytes")]
    pub author: Id,
    pub seq: u64,
    #[serde(with = "serde_bytes")]
    pub hash: Id,
}

/// A peer's version vector, whole or as a change since the last exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    #[serde(with = "serde_bytes")]
    pub room: Id,
    /// SHA-256 over the sender's whole vector: lets the receiver check its reconstruction.
    #[serde(with = "serde_bytes")]
    pub digest: Id,
    /// `heads` is the whole vector, not a change.
    pub full: bool,
    /// Ask the receiver to answer with its whole vector.
    pub want_full: bool,
    pub heads: Vec<WireHead>,
    /// (author, seq) of forks the sender holds proofs for.
    pub forks: Vec<ForkRef>,
    /// Sent by a node that holds a proof of a fork of its own chain in the room: its
    /// [`crate::identity::Identity::machine_tag`], by which another machine of the same
    /// user tells it from the room's other members (docs/protocol.md, "Two machines at
    /// once"). Absent otherwise; nodes that do not know the field skip it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<serde_bytes::ByteBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ForkRef {
    #[serde(with = "serde_bytes")]
    pub author: Id,
    pub seq: u64,
}

/// A contiguous run of one author's entries, both ends inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    #[serde(with = "serde_bytes")]
    pub author: Id,
    pub from: u64,
    pub to: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SyncRequest {
    /// Our vectors for rooms we share with the peer (at most [`MAX_HELLOS`]).
    Hellos(Vec<Hello>),
    Pull {
        #[serde(with = "serde_bytes")]
        room: Id,
        ranges: Vec<Range>,
    },
    ForkProof {
        #[serde(with = "serde_bytes")]
        room: Id,
        fork: ForkRef,
    },
    /// Which room members the peer is connected to, and where they listen (member
    /// exchange; see [`crate::peers::pick_offered`]). Nodes before it fail the request,
    /// and the asker falls back to the DHT.
    Members {
        #[serde(with = "serde_bytes")]
        room: Id,
    },
    /// A sealed chunk of a file shared in the room, by name (see [`crate::files`]).
    Chunk {
        #[serde(with = "serde_bytes")]
        room: Id,
        #[serde(with = "serde_bytes")]
        id: Id,
    },
}

/// A room member the responder is connected to: its peer id and listen addresses, as
/// bytes (the asker parses them and drops what does not parse).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    pub peer: serde_bytes::ByteBuf,
    pub addrs: Vec<serde_bytes::ByteBuf>,
}

/// The answer for one room of a [`SyncRequest::Hellos`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum HelloReply {
    /// The responder's vector for that room.
    Hello(Hello),
    /// The change could not be applied: send the whole vector.
    Resend(#[serde(with = "serde_bytes")] Id),
    /// Not a room the responder is in (or its vector is too large).
    Denied(#[serde(with = "serde_bytes")] Id, String),
}

impl HelloReply {
    pub fn room(&self) -> Id {
        match self {
            HelloReply::Hello(h) => h.room,
            HelloReply::Resend(r) | HelloReply::Denied(r, _) => *r,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SyncResponse {
    /// One reply per room asked, in any order.
    Hellos(Vec<HelloReply>),
    Entries {
        entries: Vec<serde_bytes::ByteBuf>,
        /// More of the requested ranges remain.
        more: bool,
    },
    /// Two conflicting envelopes by the same author at the same seq.
    ForkProof {
        first: serde_bytes::ByteBuf,
        second: serde_bytes::ByteBuf,
    },
    /// Answer to [`SyncRequest::Members`]: at most [`crate::peers::EXCHANGE_MAX_MEMBERS`].
    Members(Vec<Member>),
    /// Answer to [`SyncRequest::Chunk`]: the sealed chunk, or nothing if not held.
    Chunk(Option<serde_bytes::ByteBuf>),
    /// Not a room this node serves, or too many requests.
    Denied(String),
}

/// Digest of a whole vector: SHA-256 over the sorted (author, seq, hash) triples.
pub fn digest(vector: &BTreeMap<Id, Head>) -> Id {
    let mut buf = Vec::with_capacity(vector.len() * 72);
    for (a, h) in vector {
        buf.extend_from_slice(a);
        buf.extend_from_slice(&h.seq.to_be_bytes());
        buf.extend_from_slice(&h.hash);
    }
    crypto::sha256_framed("cryptchat/vector/v1", &[&buf])
}

/// Splits one round's vectors for a peer into requests: at most [`MAX_HELLOS`] rooms and,
/// past the first room, [`MAX_BATCH_HEADS`] heads each.
pub fn batches(hellos: Vec<Hello>) -> Vec<Vec<Hello>> {
    let mut out: Vec<Vec<Hello>> = Vec::new();
    let mut heads = 0;
    for h in hellos {
        let fits = out.last().is_some_and(|b| {
            b.len() < MAX_HELLOS && heads + h.heads.len() + h.forks.len() <= MAX_BATCH_HEADS
        });
        if !fits {
            out.push(Vec::new());
            heads = 0;
        }
        heads += h.heads.len() + h.forks.len();
        out.last_mut().expect("pushed above").push(h);
    }
    out
}

/// Our knowledge about one peer in one room.
#[derive(Default, Debug)]
struct View {
    /// What we last told the peer; None before the first exchange.
    sent: Option<BTreeMap<Id, Head>>,
    /// The peer's vector as we know it.
    theirs: Option<BTreeMap<Id, Head>>,
    /// Authors we stopped pulling from this peer because its chain conflicts with ours.
    diverged: BTreeSet<Id>,
    /// Authors the peer holds fork proofs for, as its last vector said.
    forked: BTreeSet<Id>,
}

/// Why a received vector could not be applied.
#[derive(Debug, PartialEq, Eq)]
pub enum ApplyError {
    /// A change arrived but our base is missing or stale: ask for the whole vector.
    NeedFull,
    /// More heads than allowed.
    TooLarge,
}

/// Per-peer reconciliation state for every room, keyed by any peer identifier.
#[derive(Debug)]
pub struct PeerViews<P> {
    views: HashMap<(P, Id), View>,
}

impl<P> Default for PeerViews<P> {
    fn default() -> Self {
        PeerViews {
            views: HashMap::new(),
        }
    }
}

impl<P: Hash + Eq + Clone> PeerViews<P> {
    /// Builds the vector message for `peer`: only what changed since the last one we sent,
    /// or everything on first contact or when asked.
    pub fn hello(
        &mut self,
        peer: &P,
        room: Id,
        mine: &BTreeMap<Id, Head>,
        forks: Vec<ForkRef>,
        force_full: bool,
    ) -> Hello {
        let view = self.views.entry((peer.clone(), room)).or_default();
        let (full, heads) = match (&view.sent, force_full) {
            (Some(sent), false) => (
                false,
                mine.iter()
                    .filter(|(a, h)| sent.get(*a) != Some(h))
                    .map(|(a, h)| wire(a, h))
                    .collect(),
            ),
            _ => (true, mine.iter().map(|(a, h)| wire(a, h)).collect()),
        };
        view.sent = Some(mine.clone());
        Hello {
            room,
            digest: digest(mine),
            full,
            want_full: view.theirs.is_none(),
            heads,
            forks,
            machine: None,
        }
    }

    /// Applies a peer's vector message. On error the peer's view is cleared.
    pub fn apply(&mut self, peer: &P, hello: &Hello) -> Result<(), ApplyError> {
        let view = self.views.entry((peer.clone(), hello.room)).or_default();
        if hello.heads.len() > MAX_HEADS {
            view.theirs = None;
            return Err(ApplyError::TooLarge);
        }
        let mut theirs = if hello.full {
            BTreeMap::new()
        } else {
            match view.theirs.take() {
                Some(t) => t,
                None => return Err(ApplyError::NeedFull),
            }
        };
        for h in &hello.heads {
            theirs.insert(
                h.author,
                Head {
                    seq: h.seq,
                    hash: h.hash,
                },
            );
        }
        if !crypto::ct_eq(&digest(&theirs), &hello.digest) {
            view.theirs = None;
            return Err(ApplyError::NeedFull);
        }
        view.theirs = Some(theirs);
        view.forked = hello.forks.iter().map(|f| f.author).collect();
        Ok(())
    }

    /// Whether the peer's last vector said it holds a proof of a fork of `author`'s chain.
    pub fn knows_fork(&self, peer: &P, room: Id, author: &Id) -> bool {
        self.views
            .get(&(peer.clone(), room))
            .is_some_and(|v| v.forked.contains(author))
    }

    /// Forgets what we told `peer` about `room`, so the next message is whole.
    pub fn reset_sent(&mut self, peer: &P, room: Id) {
        if let Some(v) = self.views.get_mut(&(peer.clone(), room)) {
            v.sent = None;
        }
    }

    /// Forgets the peer's vector for a room (it advertised what it did not serve); the
    /// next exchange asks for it whole.
    pub fn forget_vector(&mut self, peer: &P, room: Id) {
        if let Some(v) = self.views.get_mut(&(peer.clone(), room)) {
            v.theirs = None;
        }
    }

    /// Forgets everything about a room with every peer (we dropped what we held of it):
    /// the next exchanges are whole, and no author is marked diverged any more.
    pub fn forget_room(&mut self, room: Id) {
        self.views.retain(|(_, r), _| *r != room);
    }

    /// Forgets everything about a peer (it disconnected).
    pub fn forget_peer(&mut self, peer: &P) {
        self.views.retain(|(p, _), _| p != peer);
    }

    /// Marks an author whose chain at this peer conflicts with ours: stop pulling it there.
    pub fn mark_diverged(&mut self, peer: &P, room: Id, author: Id) {
        self.views
            .entry((peer.clone(), room))
            .or_default()
            .diverged
            .insert(author);
    }

    /// Whether a pull from the peer gave us a branch of `author`'s chain that conflicts
    /// with ours ([`PeerViews::mark_diverged`]).
    pub fn is_diverged(&self, peer: &P, room: Id, author: &Id) -> bool {
        self.views
            .get(&(peer.clone(), room))
            .is_some_and(|v| v.diverged.contains(author))
    }

    /// The peer's vector as last reconstructed.
    pub fn theirs(&self, peer: &P, room: Id) -> Option<&BTreeMap<Id, Head>> {
        self.views.get(&(peer.clone(), room))?.theirs.as_ref()
    }

    /// What we lack that the peer has: one range per author, capped at `MAX_RANGES`.
    pub fn missing(&self, peer: &P, room: Id, mine: &BTreeMap<Id, Head>) -> Vec<Range> {
        let Some(view) = self.views.get(&(peer.clone(), room)) else {
            return vec![];
        };
        let Some(theirs) = &view.theirs else {
            return vec![];
        };
        missing_ranges(mine, theirs, &view.diverged)
    }
}

/// Ranges in `theirs` beyond `mine`, skipping `diverged` authors.
pub fn missing_ranges(
    mine: &BTreeMap<Id, Head>,
    theirs: &BTreeMap<Id, Head>,
    diverged: &BTreeSet<Id>,
) -> Vec<Range> {
    theirs
        .iter()
        .filter(|(a, _)| !diverged.contains(*a))
        .filter_map(|(a, h)| {
            let have = mine.get(a).map_or(0, |m| m.seq);
            (h.seq > have).then_some(Range {
                author: *a,
                from: have + 1,
                to: h.seq,
            })
        })
        .take(MAX_RANGES)
        .collect()
}

/// Most rounds a quiet room waits between two vector exchanges (16 rounds: 80 s at the
/// default 5 s sync interval).
pub const MAX_QUIET_ROUNDS: u64 = 16;

/// When each room's next vector exchange is due. A room with news (an entry arrived or was
/// written, a receipt showed a member holding what we lack, a member appeared) exchanges
/// every round; a quiet one waits twice as many rounds after each exchange, up to
/// [`MAX_QUIET_ROUNDS`]. Exchanges are the backstop for what gossip lost, and what gossip
/// loses shows up as news: the members who got it say so in their receipts. So idle rooms
/// cost a node little, and a room where anything happens is reconciled as before.
#[derive(Debug)]
pub struct Pacing<R> {
    /// Room -> (rounds to wait after its next exchange, round it is next due).
    rooms: HashMap<R, (u64, u64)>,
}

impl<R> Default for Pacing<R> {
    fn default() -> Self {
        Pacing {
            rooms: HashMap::new(),
        }
    }
}

impl<R: Hash + Eq> Pacing<R> {
    /// Whether `room` exchanges vectors in round `round`; if so, the wait before the next
    /// one doubles.
    pub fn due(&mut self, room: R, round: u64) -> bool {
        let (wait, next) = self.rooms.entry(room).or_insert((1, 0));
        if round < *next {
            return false;
        }
        *next = round + *wait;
        *wait = (*wait * 2).min(MAX_QUIET_ROUNDS);
        true
    }

    /// Something happened in `room`: exchange in every round again, starting with the next.
    pub fn wake(&mut self, room: R) {
        self.rooms.insert(room, (1, 0));
    }

    /// The room was left.
    pub fn forget(&mut self, room: &R) {
        self.rooms.remove(room);
    }
}

fn wire(a: &Id, h: &Head) -> WireHead {
    WireHead {
        author: *a,
        seq: h.seq,
        hash: h.hash,
    }
}

/// Encoded size of a message, as sent by the request-response codec (CBOR).
pub fn encoded_len<T: Serialize>(msg: &T) -> usize {
    cbor4ii::serde::to_vec(Vec::new(), msg).map_or(0, |v| v.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(n: usize, seq: u64) -> BTreeMap<Id, Head> {
        (0..n)
            .map(|i| {
                let mut a = [0u8; 32];
                a[..8].copy_from_slice(&(i as u64).to_be_bytes());
                (
                    a,
                    Head {
                        seq,
                        hash: [seq as u8; 32],
                    },
                )
            })
            .collect()
    }

    #[test]
    fn first_exchange_is_full_then_only_changes() {
        let mut alice: PeerViews<&str> = PeerViews::default();
        let mut bob: PeerViews<&str> = PeerViews::default();
        let room = [1; 32];
        let mut mine = vector(100, 5);
        let h1 = alice.hello(&"bob", room, &mine, vec![], false);
        assert!(h1.full);
        assert_eq!(h1.heads.len(), 100);
        bob.apply(&"alice", &h1).unwrap();
        // One author moves on: only that head travels.
        let a0 = *mine.keys().next().unwrap();
        mine.insert(
            a0,
            Head {
                seq: 6,
                hash: [6; 32],
            },
        );
        let h2 = alice.hello(&"bob", room, &mine, vec![], false);
        assert!(!h2.full);
        assert_eq!(h2.heads.len(), 1);
        assert!(encoded_len(&h2) * 20 < encoded_len(&h1));
        bob.apply(&"alice", &h2).unwrap();
        assert_eq!(bob.theirs(&"alice", room), Some(&mine));
        // Bob's missing ranges: the one new entry.
        let bobs = vector(100, 5);
        assert_eq!(
            bob.missing(&"alice", room, &bobs),
            vec![Range {
                author: a0,
                from: 6,
                to: 6
            }]
        );
    }

    #[test]
    fn lost_base_asks_for_the_whole_vector() {
        let mut alice: PeerViews<&str> = PeerViews::default();
        let mut bob: PeerViews<&str> = PeerViews::default();
        let room = [1; 32];
        let mine = vector(3, 1);
        let _lost = alice.hello(&"bob", room, &mine, vec![], false);
        let mut next = mine.clone();
        next.insert(
            [9; 32],
            Head {
                seq: 1,
                hash: [1; 32],
            },
        );
        let delta = alice.hello(&"bob", room, &next, vec![], false);
        assert_eq!(bob.apply(&"alice", &delta), Err(ApplyError::NeedFull));
        alice.reset_sent(&"bob", room);
        let full = alice.hello(&"bob", room, &next, vec![], false);
        assert!(full.full);
        bob.apply(&"alice", &full).unwrap();
        assert_eq!(bob.theirs(&"alice", room), Some(&next));
    }

    #[test]
    fn stale_base_is_caught_by_the_digest() {
        let mut bob: PeerViews<&str> = PeerViews::default();
        let room = [1; 32];
        let mut alice: PeerViews<&str> = PeerViews::default();
        let v1 = vector(3, 1);
        bob.apply(&"alice", &alice.hello(&"bob", room, &v1, vec![], false))
            .unwrap();
        // Alice restarts (forgets what she sent) but Bob still has the old view: she sends
        // a full vector, which replaces it. A forged digest is refused.
        let mut h = alice.hello(&"bob", room, &vector(3, 2), vec![], true);
        h.digest = [0; 32];
        assert_eq!(bob.apply(&"alice", &h), Err(ApplyError::NeedFull));
    }

    #[test]
    fn diverged_authors_are_not_pulled() {
        let mut bob: PeerViews<&str> = PeerViews::default();
        let mut alice: PeerViews<&str> = PeerViews::default();
        let room = [1; 32];
        let theirs = vector(2, 4);
        bob.apply(&"alice", &alice.hello(&"bob", room, &theirs, vec![], false))
            .unwrap();
        let a0 = *theirs.keys().next().unwrap();
        assert!(!bob.is_diverged(&"alice", room, &a0));
        bob.mark_diverged(&"alice", room, a0);
        assert!(bob.is_diverged(&"alice", room, &a0));
        let m = bob.missing(&"alice", room, &BTreeMap::new());
        assert_eq!(m.len(), 1);
        assert_ne!(m[0].author, a0);
    }

    #[test]
    fn vector_message_sizes_grow_with_authors() {
        let mut alice: PeerViews<u8> = PeerViews::default();
        for n in [10, 100, 1000] {
            let h = alice.hello(&(n as u8), [0; 32], &vector(n, 1), vec![], false);
            let len = encoded_len(&SyncRequest::Hellos(vec![h]));
            assert!(
                len > n * 72 && len < n * 90 + 200,
                "{n} authors: {len} bytes"
            );
        }
    }

    #[test]
    fn a_round_for_many_rooms_goes_in_a_few_bounded_requests() {
        let mut alice: PeerViews<&str> = PeerViews::default();
        // A thousand rooms of three authors each: four requests of at most 256 rooms.
        let hellos: Vec<Hello> = (0..1000u32)
            .map(|i| {
                let mut room = [0u8; 32];
                room[..4].copy_from_slice(&i.to_be_bytes());
                alice.hello(&"bob", room, &vector(3, 1), vec![], false)
            })
            .collect();
        let b = batches(hellos.clone());
        assert_eq!(
            b.iter().map(Vec::len).collect::<Vec<_>>(),
            [256, 256, 256, 232]
        );
        assert_eq!(b.concat(), hellos);
        for batch in &b {
            assert!(encoded_len(&SyncRequest::Hellos(batch.clone())) < 256 * 1024);
        }
        // Large vectors: the heads cap splits sooner, and a room larger than the cap still
        // goes, alone.
        let mut big = |n: usize, i: u8| alice.hello(&"bob", [i; 32], &vector(n, 1), vec![], true);
        let b = batches(vec![big(3000, 1), big(1000, 2), big(5000, 3), big(10, 4)]);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1, 1]);
        assert_eq!(b[1][0].heads.len(), 5000);
        assert!(batches(vec![]).is_empty());
    }

    #[test]
    fn quiet_rooms_back_off_and_news_wakes_them() {
        let mut p = Pacing::default();
        let rounds: Vec<u64> = (0..100).filter(|r| p.due("quiet", *r)).collect();
        // 1, 2, 4, 8 rounds apart, then every MAX_QUIET_ROUNDS.
        assert_eq!(&rounds[..6], &[0, 1, 3, 7, 15, 31]);
        assert!(rounds.windows(2).all(|w| w[1] - w[0] <= MAX_QUIET_ROUNDS));
        assert_eq!(rounds.len(), 10);

        // News: due in the next round, then backs off again from the start.
        assert!(!p.due("quiet", 100));
        p.wake("quiet");
        assert!(p.due("quiet", 101));
        assert!(p.due("quiet", 102));
        assert!(!p.due("quiet", 103));
        assert!(p.due("quiet", 104));

        // A room that keeps getting news exchanges every round.
        let mut busy = 0;
        for r in 0..50 {
            if p.due("busy", r) {
                busy += 1;
            }
            p.wake("busy");
        }
        assert_eq!(busy, 50);

        p.forget(&"quiet");
        assert!(p.due("quiet", 105), "a forgotten room starts over");
    }

    #[test]
    fn a_peer_knows_the_forks_its_last_vector_listed() {
        let mut bob: PeerViews<&str> = PeerViews::default();
        let mut alice: PeerViews<&str> = PeerViews::default();
        let (room, a0) = ([1; 32], [7; 32]);
        let fork = ForkRef { author: a0, seq: 2 };
        let hello = alice.hello(&"bob", room, &vector(2, 4), vec![fork], false);
        bob.apply(&"alice", &hello).unwrap();
        assert!(bob.knows_fork(&"alice", room, &a0));
        assert!(!bob.knows_fork(&"alice", room, &[8; 32]));
        assert!(!bob.knows_fork(&"carol", room, &a0));
        let hello = alice.hello(&"bob", room, &vector(2, 4), vec![], false);
        bob.apply(&"alice", &hello).unwrap();
        assert!(!bob.knows_fork(&"alice", room, &a0));
    }

    /// The machine tag is optional on the wire both ways: a node from before it reads a
    /// vector that carries one, and one without it reads as none.
    #[test]
    fn a_vector_with_or_without_a_machine_tag_reads_on_either_version() {
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Before {
            #[serde(with = "serde_bytes")]
            room: Id,
            #[serde(with = "serde_bytes")]
            digest: Id,
            full: bool,
            want_full: bool,
            heads: Vec<WireHead>,
            forks: Vec<ForkRef>,
        }
        let mut views: PeerViews<&str> = PeerViews::default();
        let mut hello = views.hello(&"bob", [1; 32], &vector(2, 3), vec![], false);
        let plain = cbor4ii::serde::to_vec(Vec::new(), &hello).unwrap();
        hello.machine = Some(serde_bytes::ByteBuf::from(vec![9u8; 32]));
        let tagged = cbor4ii::serde::to_vec(Vec::new(), &hello).unwrap();
        assert_eq!(
            tagged.len(),
            plain.len() + 42,
            "32 bytes and the field's name"
        );

        let old: Before = cbor4ii::serde::from_slice(&tagged).unwrap();
        assert_eq!((old.room, old.heads.len()), (hello.room, 2));
        let new: Hello = cbor4ii::serde::from_slice(&plain).unwrap();
        assert_eq!(new.machine, None);
        let new: Hello = cbor4ii::serde::from_slice(&tagged).unwrap();
        assert_eq!(new, hello);
    }
}
