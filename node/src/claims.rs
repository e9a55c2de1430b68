//! What room members claim to hold that we lack, and when to go after it.
//!
//! Members say what they hold in receipts and in the heads riding on their messages. A claim
//! past our own vector is either a message still on its way to us or one gossip lost; only
//! the second is worth a vector exchange. Which it is shows in time: the room's own claims
//! that came true by gossip say how long a message usually trails a claim about it, so a
//! claim is chased once it is older than that ([`Claims::settle`]): about a second in a
//! small room on a fast network, several seconds in a room of hundreds where gossip takes
//! seconds to reach everyone. Everything here is plain state; the caller passes the time.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::receipt::ShortId;
use crate::room::RoomId;

/// A claim is chased once it is at least this old, however fast the room's gossip.
pub const MIN_SETTLE: Duration = Duration::from_millis(1000);
/// ...and at most this old, however slow: past it a lost message waits too long.
pub const MAX_SETTLE: Duration = Duration::from_secs(8);
/// Claims that came true by gossip, per room, the settle time follows (the latest ones).
const LAG_SAMPLES: usize = 32;
/// The settle time is the longest recent lag with this margin.
const LAG_MARGIN: f64 = 1.5;

/// A member said it holds an author's chain up to `seq`, first at `at`; `chased` once a
/// reconciliation round went after it.
#[derive(Clone, Copy, Debug)]
struct Claim {
    seq: u64,
    at: Instant,
    chased: bool,
}

#[derive(Debug, Default)]
struct RoomClaims {
    by_author: HashMap<ShortId, Claim>,
    /// How long recent claims took to come true by gossip, newest last.
    lags: VecDeque<Duration>,
}

impl RoomClaims {
    fn settle(&self) -> Duration {
        let longest = self.lags.iter().max().copied().unwrap_or_default();
        longest.mul_f64(LAG_MARGIN).clamp(MIN_SETTLE, MAX_SETTLE)
    }
}

/// How the entry that met a claim reached us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Gossip: how long it trailed the claim is what the settle time learns from.
    Gossip,
    /// A pull, or our own: says nothing of gossip's timing.
    Other,
}

/// Claims per room, each capped at `max_authors` authors: what members say they hold is
/// theirs to make up, so the memory for it is bounded (a room with more authors still
/// reconciles, through the backstop rounds).
#[derive(Debug)]
pub struct Claims {
    rooms: HashMap<RoomId, RoomClaims>,
    max_authors: usize,
}

impl Claims {
    pub fn new(max_authors: usize) -> Claims {
        Claims {
            rooms: HashMap::new(),
            max_authors,
        }
    }

    /// A member says it holds these authors' chains up to these seqs. A claim that grows is
    /// a new claim (heard now, not chased yet); one that does not changes nothing.
    pub fn note(&mut self, room: RoomId, heads: &[(ShortId, u64)], now: Instant) {
        let claims = &mut self.rooms.entry(room).or_default().by_author;
        let fresh = |seq| Claim {
            seq,
            at: now,
            chased: false,
        };
        for (id, seq) in heads {
            let full = claims.len() >= self.max_authors;
            match claims.get_mut(id) {
                Some(c) if c.seq < *seq => *c = fresh(*seq),
                Some(_) => {}
                None if full => {}
                None => {
                    claims.insert(*id, fresh(*seq));
                }
            }
        }
    }

    /// We now hold `author`'s chain up to `seq`: a claim it meets is settled, and if gossip
    /// brought it, how long it took counts towards the room's settle time.
    pub fn met(&mut self, room: RoomId, author: ShortId, seq: u64, how: Arrival, now: Instant) {
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        let Some(c) = r.by_author.get(&author) else {
            return;
        };
        if c.seq > seq {
            return;
        }
        let lag = now.saturating_duration_since(c.at);
        r.by_author.remove(&author);
        if how == Arrival::Gossip {
            if r.lags.len() == LAG_SAMPLES {
                r.lags.pop_front();
            }
            r.lags.push_back(lag);
        }
    }

    /// Whether some claim in `room` is past what we hold (`ours`: the seq we hold of an
    /// author), older than the room's settle time and not chased yet; marks those chased.
    /// Claims we meet are dropped on the way (entries pulled, or stored before we knew).
    pub fn chase(
        &mut self,
        room: RoomId,
        ours: impl Fn(&ShortId) -> Option<u64>,
        now: Instant,
    ) -> bool {
        let Some(r) = self.rooms.get_mut(&room) else {
            return false;
        };
        if r.by_author.is_empty() {
            return false;
        }
        let settle = r.settle();
        r.by_author
            .retain(|id, c| ours(id).is_none_or(|held| held < c.seq));
        let mut chase = false;
        for c in r.by_author.values_mut() {
            if !c.chased && now.saturating_duration_since(c.at) >= settle {
                c.chased = true;
                chase = true;
            }
        }
        chase
    }

    /// How old a claim in `room` must be before it is chased.
    pub fn settle(&self, room: RoomId) -> Duration {
        self.rooms.get(&room).map_or(MIN_SETTLE, RoomClaims::settle)
    }

    /// Claims outstanding in `room`.
    pub fn outstanding(&self, room: RoomId) -> usize {
        self.rooms.get(&room).map_or(0, |r| r.by_author.len())
    }

    /// We left the room.
    pub fn forget(&mut self, room: RoomId) {
        self.rooms.remove(&room);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: RoomId = RoomId([7; 32]);
    const A: ShortId = [1; 8];
    const B: ShortId = [2; 8];

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn a_claim_is_chased_once_it_has_settled_and_once_only() {
        let t0 = Instant::now();
        let mut c = Claims::new(16);
        c.note(ROOM, &[(A, 3)], t0);
        let ours = |_: &ShortId| Some(1);
        assert!(
            !c.chase(ROOM, ours, t0 + secs(0.5)),
            "still likely on its way"
        );
        assert!(c.chase(ROOM, ours, t0 + MIN_SETTLE));
        assert!(!c.chase(ROOM, ours, t0 + secs(5.0)), "chased already");
        // A member claiming more is a new claim.
        c.note(ROOM, &[(A, 4)], t0 + secs(5.0));
        assert!(!c.chase(ROOM, ours, t0 + secs(5.5)));
        assert!(c.chase(ROOM, ours, t0 + secs(6.0)));
        // Claiming less, or the same, changes nothing.
        c.note(ROOM, &[(A, 2)], t0 + secs(6.0));
        assert!(!c.chase(ROOM, ours, t0 + secs(9.0)));
    }

    #[test]
    fn claims_we_meet_are_dropped_and_nothing_is_chased_for_them() {
        let t0 = Instant::now();
        let mut c = Claims::new(16);
        c.note(ROOM, &[(A, 3), (B, 2)], t0);
        c.met(ROOM, A, 2, Arrival::Gossip, t0);
        assert_eq!(c.outstanding(ROOM), 2, "seq 2 does not meet a claim of 3");
        c.met(ROOM, A, 3, Arrival::Gossip, t0);
        assert_eq!(c.outstanding(ROOM), 1);
        // Pulled before the round looked (here: the vector says we hold B up to 5).
        let ours = |id: &ShortId| (*id == B).then_some(5);
        assert!(!c.chase(ROOM, ours, t0 + secs(2.0)));
        assert_eq!(c.outstanding(ROOM), 0);
    }

    #[test]
    fn the_settle_time_follows_how_long_gossip_trails_claims() {
        let t0 = Instant::now();
        let mut c = Claims::new(16);
        assert_eq!(c.settle(ROOM), MIN_SETTLE);
        // A fast room: messages trail claims by milliseconds.
        c.note(ROOM, &[(A, 1)], t0);
        c.met(ROOM, A, 1, Arrival::Gossip, t0 + secs(0.02));
        assert_eq!(c.settle(ROOM), MIN_SETTLE);
        // A big room: a message came three seconds after a claim about it.
        c.note(ROOM, &[(A, 2)], t0);
        c.met(ROOM, A, 2, Arrival::Gossip, t0 + secs(3.0));
        assert_eq!(c.settle(ROOM), secs(4.5));
        c.note(ROOM, &[(A, 3)], t0);
        assert!(!c.chase(ROOM, |_| Some(2), t0 + secs(4.0)));
        assert!(c.chase(ROOM, |_| Some(2), t0 + secs(4.5)));
        // Pulls say nothing of gossip's timing.
        c.met(ROOM, A, 3, Arrival::Other, t0 + secs(60.0));
        assert_eq!(c.settle(ROOM), secs(4.5));
        // Never past the cap, and old lags age out.
        c.note(ROOM, &[(A, 4)], t0);
        c.met(ROOM, A, 4, Arrival::Gossip, t0 + secs(30.0));
        assert_eq!(c.settle(ROOM), MAX_SETTLE);
        for seq in 5..5 + LAG_SAMPLES as u64 {
            c.note(ROOM, &[(A, seq)], t0);
            c.met(ROOM, A, seq, Arrival::Gossip, t0 + secs(0.1));
        }
        assert_eq!(c.settle(ROOM), MIN_SETTLE);
    }

    #[test]
    fn claims_are_capped_per_room() {
        let t0 = Instant::now();
        let mut c = Claims::new(2);
        c.note(ROOM, &[(A, 1), (B, 1), ([3; 8], 1)], t0);
        assert_eq!(c.outstanding(ROOM), 2);
        // Known authors still grow past the cap.
        c.note(ROOM, &[(A, 9)], t0);
        c.met(ROOM, A, 8, Arrival::Gossip, t0);
        assert_eq!(c.outstanding(ROOM), 2);
        c.forget(ROOM);
        assert_eq!(c.outstanding(ROOM), 0);
    }
}
