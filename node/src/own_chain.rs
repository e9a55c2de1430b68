//! Whether a node holds its user's own chain in a room before it writes there.
//!
//! An identity is the same on any machine, so a user's messages in a room may come from
//! several data dirs over time: a new laptop, a reinstalled one, the old one again. Each
//! message takes the next seq of the user's chain as the node's journal knows it. A node
//! that writes before it holds what its user wrote elsewhere signs a second entry at a seq
//! that exists already: a fork of its own chain, which every member holding the first entry
//! refuses, and with it everything the node writes after (docs/protocol.md, "Forks").
//!
//! So after it starts, or joins a room, a node writes in the room only once a member's
//! vector has shown that it holds its own chain as far as the member knows it, pulling what
//! it lacks first. It does not wait for ever: a room with no member within reach after
//! [`DISCOVERY`] is written in at once (offline work goes on), and any room after
//! [`MAX_WAIT`]. A fork of its own chain shown by a member (it serves, or claims and we hold
//! the proof of, a branch of ours that is not ours) stops writes in the room with an error,
//! rather than losing them.
//!
//! What a member claims about us is not proof: it can only confirm, or make us wait for a
//! pull (a member that lies costs at most [`MAX_WAIT`] once).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::journal::Head;

/// How long after a room is opened a node with no member of it within reach waits before
/// it writes anyway: long enough for the bootstrap nodes and the DHT to find members.
pub const DISCOVERY: Duration = Duration::from_secs(8);
/// How long after a room is opened a node waits at most before it writes, members or not.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// How long a write waits, after our chain forked, for the node to settle which branch
/// goes on ([`crate::own_fork`]): members are asked at once, and one that lacks the proof
/// of the fork pulls it and tells in the next exchange, a sync round (5 s) later.
pub const SETTLE_WAIT: Duration = Duration::from_secs(15);

/// What the node knows of its own chain in one room since it opened the room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// No member has told us its vector yet.
    Unknown { since: Instant },
    /// A member holds our chain up to `seq`, past what we hold: we are pulling it.
    Behind { since: Instant, seq: u64 },
    /// A member's vector showed we hold our chain as far as it knows it.
    Confirmed,
    /// Confirmed, then no member was within reach: the next vector heard may hold what
    /// another machine of ours wrote meanwhile. Writes go on (offline work).
    CutOff,
    /// Our key signed two entries at `seq` (we hold the proof), found at `since`: members
    /// holding the other branch refuse what we write here.
    Forked { seq: u64, since: Instant },
}

/// Whether a write in a room may go ahead now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Write,
    /// Ask again at this time at the latest (or as soon as the standing changes).
    Wait(Instant),
    /// Our own chain forked at this seq.
    Forked(u64),
}

/// What a member's vector said of our chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heard {
    /// It holds nothing of ours that we lack.
    Confirms,
    /// It holds our chain up to this seq, past ours.
    Ahead(u64),
    /// It claims a head we do not hold at its seq (unproven: not acted on).
    Conflicts,
}

/// The standing of our chain per room.
#[derive(Debug)]
pub struct OwnChains<R> {
    rooms: HashMap<R, Standing>,
    /// How long writes wait for a fork to settle: [`SETTLE_WAIT`], or nothing when the
    /// node leaves forks to the user.
    settle_wait: Duration,
}

impl<R> Default for OwnChains<R> {
    fn default() -> Self {
        Self::new(true)
    }
}

impl<R> OwnChains<R> {
    /// `settles`: whether the node settles forks of its chain by itself (writes wait for
    /// it), or leaves them to the user (writes are refused at once).
    pub fn new(settles: bool) -> Self {
        OwnChains {
            rooms: HashMap::new(),
            settle_wait: if settles { SETTLE_WAIT } else { Duration::ZERO },
        }
    }
}

impl<R: Hash + Eq + Copy> OwnChains<R> {
    /// The node starts, or joins `room`: nothing is known yet. (A proof of a fork of our
    /// chain in the journal is not enough to stop writes: it may be of a branch we dropped,
    /// see [`crate::core::Core::repair`]. A member's vector tells which branch it holds.)
    pub fn open(&mut self, room: R, now: Instant) {
        self.rooms.insert(room, Standing::Unknown { since: now });
    }

    /// We left `room`.
    pub fn forget(&mut self, room: &R) {
        self.rooms.remove(room);
    }

    pub fn standing(&self, room: &R) -> Option<Standing> {
        self.rooms.get(room).copied()
    }

    /// A member's vector held `theirs` as our head at `now`, and we hold `mine`; `hash_at`
    /// reads the hash of our entry at a seq we hold.
    pub fn heard(
        &mut self,
        room: R,
        now: Instant,
        mine: Option<Head>,
        theirs: Option<Head>,
        hash_at: impl FnOnce(u64) -> Option<[u8; 32]>,
    ) -> Heard {
        let held = mine.map_or(0, |h| h.seq);
        let heard = match theirs {
            None => Heard::Confirms,
            Some(t) if t.seq > held => Heard::Ahead(t.seq),
            Some(t) if t.seq == held && mine.is_some_and(|m| m.hash == t.hash) => Heard::Confirms,
            Some(t) if t.seq < held && hash_at(t.seq) == Some(t.hash) => Heard::Confirms,
            Some(_) => Heard::Conflicts,
        };
        let Some(standing) = self.rooms.get_mut(&room) else {
            return heard;
        };
        match (*standing, heard) {
            (Standing::Forked { .. }, _) => {}
            (_, Heard::Confirms) => *standing = Standing::Confirmed,
            (Standing::Unknown { since }, Heard::Ahead(seq)) => {
                *standing = Standing::Behind { since, seq }
            }
            (Standing::Behind { since, seq: was }, Heard::Ahead(seq)) => {
                *standing = Standing::Behind {
                    since,
                    seq: seq.max(was),
                }
            }
            // Confirmed already: what we write goes on from what we hold, and while members
            // stay within reach they pass on whatever else of ours they get. (A member's
            // claim is not proof: it does not hold up our writes again and again.)
            (Standing::Confirmed, Heard::Ahead(_)) => {}
            // Back from a time with no member within reach: more of our chain than we hold
            // was written meanwhile by another machine of ours. Pull it before writing.
            (Standing::CutOff, Heard::Ahead(seq)) => {
                *standing = Standing::Behind { since: now, seq }
            }
            (_, Heard::Conflicts) => {}
        }
        heard
    }

    /// No member of `room` is within reach any more: a confirmed chain is confirmed again
    /// by the next member heard, or pulled first if it holds more of ours.
    pub fn cut_off(&mut self, room: R) {
        if let Some(standing) = self.rooms.get_mut(&room)
            && *standing == Standing::Confirmed
        {
            *standing = Standing::CutOff;
        }
    }

    /// A member of `room` is within reach again and we are about to write: if we were cut
    /// off, our chain is unknown again until a member's vector tells, as after a start.
    /// Returns whether it was.
    pub fn back_in_reach(&mut self, room: R, now: Instant) -> bool {
        let cut_off = self.rooms.get(&room) == Some(&Standing::CutOff);
        if cut_off {
            self.open(room, now);
        }
        cut_off
    }

    /// Our chain in `room` grew to `mine` (entries pulled).
    pub fn stored(&mut self, room: R, mine: Option<Head>) {
        if let Some(standing) = self.rooms.get_mut(&room)
            && let Standing::Behind { seq, .. } = *standing
            && mine.is_some_and(|m| m.seq >= seq)
        {
            *standing = Standing::Confirmed;
        }
    }

    /// We hold proof that our key signed two entries at `seq` in `room`, found at `now`.
    pub fn forked(&mut self, room: R, seq: u64, now: Instant) {
        if let Some(standing) = self.rooms.get_mut(&room) {
            *standing = match *standing {
                Standing::Forked { seq: was, since } => Standing::Forked {
                    seq: was.min(seq),
                    since,
                },
                _ => Standing::Forked { seq, since: now },
            };
        }
    }

    /// Whether the node settles forks of its chain by itself (see [`OwnChains::new`]).
    pub fn settles(&self) -> bool {
        !self.settle_wait.is_zero()
    }

    /// Whether our chain in `room` forked and writes there wait for the node to settle it.
    pub fn settling(&self, room: &R, now: Instant) -> bool {
        matches!(self.rooms.get(room), Some(Standing::Forked { since, .. })
            if now < *since + self.settle_wait)
    }

    /// Our branch of a forked chain in `room` is the one its members hold (see
    /// [`crate::own_fork`]): writes go on.
    pub fn keep(&mut self, room: R) {
        if let Some(standing) = self.rooms.get_mut(&room)
            && matches!(standing, Standing::Forked { .. })
        {
            *standing = Standing::Confirmed;
        }
    }

    /// Whether we may write in `room` now; `alone` if no member of it is within reach.
    /// A room we do not know is left to whoever writes (it refuses an unknown room).
    pub fn verdict(&self, room: &R, now: Instant, alone: bool) -> Verdict {
        match self.rooms.get(room) {
            None | Some(Standing::Confirmed | Standing::CutOff) => Verdict::Write,
            Some(Standing::Forked { since, .. }) if now < *since + self.settle_wait => {
                Verdict::Wait(*since + self.settle_wait)
            }
            Some(Standing::Forked { seq, .. }) => Verdict::Forked(*seq),
            Some(Standing::Unknown { since }) => {
                let found_nobody = *since + DISCOVERY;
                if now >= *since + MAX_WAIT || (alone && now >= found_nobody) {
                    Verdict::Write
                } else if now < found_nobody {
                    Verdict::Wait(found_nobody)
                } else {
                    Verdict::Wait(*since + MAX_WAIT)
                }
            }
            Some(Standing::Behind { since, .. }) => {
                if now >= *since + MAX_WAIT {
                    Verdict::Write
                } else {
                    Verdict::Wait(*since + MAX_WAIT)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(seq: u64, tag: u8) -> Option<Head> {
        Some(Head {
            seq,
            hash: [tag; 32],
        })
    }

    fn opened(now: Instant) -> OwnChains<u8> {
        let mut own = OwnChains::default();
        own.open(1, now);
        own
    }

    #[test]
    fn a_fresh_room_waits_for_a_member_or_for_discovery() {
        let t0 = Instant::now();
        let own = opened(t0);
        let soon = t0 + Duration::from_secs(1);
        assert_eq!(own.verdict(&1, soon, true), Verdict::Wait(t0 + DISCOVERY));
        assert_eq!(own.verdict(&1, soon, false), Verdict::Wait(t0 + DISCOVERY));
        // Nobody found: offline work goes on.
        assert_eq!(own.verdict(&1, t0 + DISCOVERY, true), Verdict::Write);
        // Members within reach that have not answered: wait for them, not for ever.
        assert_eq!(
            own.verdict(&1, t0 + DISCOVERY, false),
            Verdict::Wait(t0 + MAX_WAIT)
        );
        assert_eq!(own.verdict(&1, t0 + MAX_WAIT, false), Verdict::Write);
        // Rooms it never opened are not held up.
        assert_eq!(own.verdict(&2, soon, false), Verdict::Write);
    }

    #[test]
    fn a_member_that_holds_nothing_newer_confirms() {
        let t0 = Instant::now();
        for (mine, theirs) in [
            (None, None),
            (head(3, 7), None),
            (head(3, 7), head(3, 7)),
            (head(3, 7), head(2, 5)),
        ] {
            let mut own = opened(t0);
            let heard = own.heard(1, t0, mine, theirs, |seq| (seq == 2).then_some([5; 32]));
            assert_eq!(heard, Heard::Confirms, "{mine:?} {theirs:?}");
            assert_eq!(own.verdict(&1, t0, false), Verdict::Write);
        }
    }

    #[test]
    fn behind_waits_until_the_pull_brings_our_chain() {
        let t0 = Instant::now();
        let mut own = opened(t0);
        assert_eq!(
            own.heard(1, t0, head(1, 1), head(3, 3), |_| None),
            Heard::Ahead(3)
        );
        // A second member knows even more.
        assert_eq!(
            own.heard(1, t0, head(1, 1), head(5, 5), |_| None),
            Heard::Ahead(5)
        );
        assert_eq!(own.verdict(&1, t0, true), Verdict::Wait(t0 + MAX_WAIT));
        own.stored(1, head(3, 3));
        assert!(matches!(
            own.standing(&1),
            Some(Standing::Behind { seq: 5, .. })
        ));
        own.stored(1, head(5, 5));
        assert_eq!(own.standing(&1), Some(Standing::Confirmed));
        assert_eq!(own.verdict(&1, t0, true), Verdict::Write);
    }

    #[test]
    fn more_of_our_chain_after_a_time_cut_off_is_pulled_before_writing_again() {
        let t0 = Instant::now();
        let mut own = opened(t0);
        own.heard(1, t0, head(3, 3), head(3, 3), |_| None);
        assert_eq!(own.standing(&1), Some(Standing::Confirmed));
        // While members stay within reach, a claim of more does not hold writes up.
        own.heard(1, t0, head(3, 3), head(9, 9), |_| None);
        assert_eq!(own.verdict(&1, t0, false), Verdict::Write);
        // Cut off, writes go on; back in reach, more of ours (another machine of ours
        // wrote meanwhile) is pulled before the next write.
        own.cut_off(1);
        assert_eq!(own.verdict(&1, t0, true), Verdict::Write);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(
            own.heard(1, later, head(3, 3), head(4, 4), |_| None),
            Heard::Ahead(4)
        );
        assert_eq!(
            own.verdict(&1, later, false),
            Verdict::Wait(later + MAX_WAIT)
        );
        own.stored(1, head(4, 4));
        assert_eq!(own.verdict(&1, later, false), Verdict::Write);
        // About to write with a member in reach again, before it was heard: wait for it.
        own.cut_off(1);
        assert!(own.back_in_reach(1, later));
        assert_eq!(
            own.verdict(&1, later, false),
            Verdict::Wait(later + DISCOVERY)
        );
        assert!(!own.back_in_reach(1, later), "once");
        // Back in reach with nothing new: confirmed as before.
        own.heard(1, later, head(4, 4), head(4, 4), |_| None);
        own.cut_off(1);
        own.heard(1, later, head(4, 4), head(4, 4), |_| None);
        assert_eq!(own.standing(&1), Some(Standing::Confirmed));
    }

    #[test]
    fn a_pull_that_never_comes_holds_writes_only_until_max_wait() {
        let t0 = Instant::now();
        let mut own = opened(t0);
        own.heard(1, t0, None, head(1000, 1), |_| None);
        assert_eq!(
            own.verdict(&1, t0 + DISCOVERY, true),
            Verdict::Wait(t0 + MAX_WAIT)
        );
        assert_eq!(own.verdict(&1, t0 + MAX_WAIT, true), Verdict::Write);
    }

    #[test]
    fn claimed_conflicts_are_not_proof_but_do_not_confirm() {
        let t0 = Instant::now();
        let mut own = opened(t0);
        assert_eq!(
            own.heard(1, t0, head(3, 3), head(3, 9), |_| None),
            Heard::Conflicts
        );
        assert_eq!(
            own.heard(1, t0, head(3, 3), head(2, 9), |_| Some([2; 32])),
            Heard::Conflicts
        );
        assert!(matches!(own.standing(&1), Some(Standing::Unknown { .. })));
        // Another member confirms.
        own.heard(1, t0, head(3, 3), head(3, 3), |_| None);
        assert_eq!(own.verdict(&1, t0, false), Verdict::Write);
    }

    #[test]
    fn a_proven_fork_stops_writes_and_stays() {
        let t0 = Instant::now();
        let mut own = opened(t0);
        own.forked(1, 4, t0);
        own.forked(1, 6, t0 + Duration::from_secs(1));
        own.heard(1, t0, head(3, 3), None, |_| None);
        own.stored(1, head(9, 9));
        // Writes wait a while for the node to settle it, from when it was first found.
        assert!(own.settling(&1, t0));
        assert_eq!(own.verdict(&1, t0, true), Verdict::Wait(t0 + SETTLE_WAIT));
        assert!(!own.settling(&1, t0 + SETTLE_WAIT));
        assert_eq!(own.verdict(&1, t0 + SETTLE_WAIT, true), Verdict::Forked(4));
        // Until the members show our branch is the room's.
        own.keep(1);
        assert_eq!(own.standing(&1), Some(Standing::Confirmed));
        own.keep(1);
        assert_eq!(own.verdict(&1, t0, false), Verdict::Write);
        own.forked(1, 4, t0);
        // Leaving forgets it; a fork in a room we are not in is nothing to us.
        own.forget(&1);
        own.forked(1, 2, t0);
        assert_eq!(own.verdict(&1, t0, false), Verdict::Write);
    }

    #[test]
    fn a_node_that_leaves_forks_to_the_user_refuses_writes_at_once() {
        let t0 = Instant::now();
        let mut own: OwnChains<u8> = OwnChains::new(false);
        assert!(!own.settles() && OwnChains::<u8>::default().settles());
        own.open(1, t0);
        own.forked(1, 4, t0);
        assert!(!own.settling(&1, t0));
        assert_eq!(own.verdict(&1, t0, false), Verdict::Forked(4));
    }
}
