//! Which machine gives way after the user's own chain forked in a room.
//!
//! Two machines of one user that write in a room at the same moment, or one that wrote while
//! cut off while another wrote, sign two entries at one seq: a fork of the user's chain
//! ([`crate::own_chain`]). Members keep whichever entry reached them first, so one machine's
//! branch is the room's and the other's is refused. The machine whose branch the members
//! refuse takes up theirs and writes its messages again after it (the repair,
//! [`crate::core::Core::repair`]); the machine whose branch they hold writes on. Each
//! machine finds out which it is from the members' vectors, leaving out the user's other
//! machines (known by their [`crate::identity::Identity::machine_tag`]), whose branches
//! say nothing of what the room holds.
//!
//! It decides only when every member in reach has told: a member that has not, or whose
//! head does not reach the fork, makes it wait; members that hold different branches leave
//! it to the user (`cryptchat repair`). With no member in reach but the user's other
//! machines, the machine with the lowest peer id goes on: each knows the others' peer
//! ids, so they agree without a word.

use crate::journal::Head;

/// What a peer's vector says of our chain past the fork.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// It holds our branch (its head for us is an entry we hold, at or past the fork).
    Ours,
    /// It holds the other branch.
    Other,
    /// It has not told, holds nothing of ours at the fork yet, or holds more of ours than
    /// we do (a pull tells which branch).
    Unknown,
}

/// What a machine whose chain forked does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    /// Its branch is the room's: it writes on.
    Keep,
    /// Its branch is refused: it takes up the room's and writes its messages again.
    TakeUp,
    /// Not every member in reach has told yet.
    Wait,
    /// Members hold different branches: the user decides.
    Split,
}

/// What a peer told of our chain: its head for us, and whether it holds a proof of the
/// fork (a peer that does may have seen both branches, and if it is one of the user's
/// machines it said so with its vector: see [`crate::sync::Hello::machine`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Told {
    pub head: Option<Head>,
    pub knows_fork: bool,
}

/// Which side a peer is on. `fork`: the seq at which our chain forked; `mine`: our head;
/// `told`: what the peer's last vector said, if it told one; `hash_at`: the hash of the
/// entry we hold at a seq; `diverged`: a pull from the peer gave us a branch of ours that
/// conflicts with ours.
///
/// A peer counts only once it holds the proof: before, one of the user's machines that has
/// not found the fork yet looks like a member holding the other branch. (A member lacking
/// the proof pulls it: our vector lists the fork.)
pub fn side(
    fork: u64,
    mine: Option<Head>,
    told: Option<Told>,
    diverged: bool,
    hash_at: impl FnOnce(u64) -> Option<[u8; 32]>,
) -> Side {
    let Some(Told {
        head: Some(theirs),
        knows_fork: true,
    }) = told
    else {
        return Side::Unknown;
    };
    if theirs.seq < fork.max(1) {
        return Side::Unknown;
    }
    if diverged {
        return Side::Other;
    }
    if theirs.seq > mine.map_or(0, |m| m.seq) {
        return Side::Unknown;
    }
    if hash_at(theirs.seq) == Some(theirs.hash) {
        Side::Ours
    } else {
        Side::Other
    }
}

/// What to do, from the sides of the room's members in reach and of the user's other
/// machines in reach. `lowest`: our peer id is lower than those machines'.
pub fn settle(members: &[Side], machines: &[Side], lowest: bool) -> Settle {
    if !members.is_empty() {
        return if members.contains(&Side::Unknown) {
            Settle::Wait
        } else if members.iter().all(|s| *s == Side::Ours) {
            Settle::Keep
        } else if members.iter().all(|s| *s == Side::Other) {
            Settle::TakeUp
        } else {
            Settle::Split
        };
    }
    // Only the user's machines in reach: the lowest peer id goes on, or one whose branch
    // another machine took up already; the others take it up from a machine that told
    // its vector (the repair pulls the room's history from the peers in reach).
    if machines.contains(&Side::Ours) || (lowest && !machines.is_empty()) {
        Settle::Keep
    } else if machines.is_empty() || machines.contains(&Side::Unknown) {
        Settle::Wait
    } else {
        Settle::TakeUp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(seq: u64, tag: u8) -> Option<Told> {
        Some(Told {
            head: Some(Head {
                seq,
                hash: [tag; 32],
            }),
            knows_fork: true,
        })
    }

    /// We hold our branch, tagged 1, up to seq 5; the fork is at 3.
    fn ours(seq: u64) -> Option<[u8; 32]> {
        (seq <= 5).then_some([1; 32])
    }

    fn mine() -> Option<Head> {
        Some(Head {
            seq: 5,
            hash: [1; 32],
        })
    }

    #[test]
    fn a_peer_is_on_our_side_when_its_head_is_an_entry_we_hold_past_the_fork() {
        assert_eq!(side(3, mine(), head(3, 1), false, ours), Side::Ours);
        assert_eq!(side(3, mine(), head(5, 1), false, ours), Side::Ours);
        assert_eq!(side(3, mine(), head(4, 2), false, ours), Side::Other);
        // A pull from it proved it serves another branch, whatever its head.
        assert_eq!(side(3, mine(), head(9, 2), true, ours), Side::Other);
        // Past our head: a pull tells.
        assert_eq!(side(3, mine(), head(6, 2), false, ours), Side::Unknown);
        // Short of the fork, or nothing of ours, or no vector heard: it holds neither.
        assert_eq!(side(3, mine(), head(2, 1), false, ours), Side::Unknown);
        let nothing = Told {
            head: None,
            knows_fork: true,
        };
        assert_eq!(side(3, mine(), Some(nothing), false, ours), Side::Unknown);
        assert_eq!(side(3, mine(), None, false, ours), Side::Unknown);
        // It has not found the fork yet: one of our machines looks like that too.
        let unaware = head(4, 2).map(|t| Told {
            knows_fork: false,
            ..t
        });
        assert_eq!(side(3, mine(), unaware, true, ours), Side::Unknown);
        // A fork recorded at 0 (a first entry with a non-zero prev) is at seq 1.
        assert_eq!(side(0, mine(), head(1, 1), false, ours), Side::Ours);
    }

    #[test]
    fn members_decide_when_all_in_reach_told_and_agree() {
        use Side::*;
        assert_eq!(settle(&[Ours, Ours], &[Other], false), Settle::Keep);
        assert_eq!(settle(&[Other, Other], &[Other], true), Settle::TakeUp);
        assert_eq!(settle(&[Other], &[], true), Settle::TakeUp);
        assert_eq!(settle(&[Ours, Unknown], &[], false), Settle::Wait);
        assert_eq!(settle(&[Other, Unknown], &[], false), Settle::Wait);
        assert_eq!(settle(&[Ours, Other], &[Ours], true), Settle::Split);
    }

    #[test]
    fn with_only_the_users_machines_in_reach_the_lowest_peer_id_goes_on() {
        use Side::*;
        assert_eq!(settle(&[], &[Other], true), Settle::Keep);
        assert_eq!(settle(&[], &[Other], false), Settle::TakeUp);
        assert_eq!(settle(&[], &[Unknown], false), Settle::Wait);
        // The other machine took up our branch already.
        assert_eq!(settle(&[], &[Ours], false), Settle::Keep);
        // Nobody to take the room's history from.
        assert_eq!(settle(&[], &[], false), Settle::Wait);
        assert_eq!(settle(&[], &[], true), Settle::Wait);
    }
}
