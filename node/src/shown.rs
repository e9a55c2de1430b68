//! Received entries shown to a node's clients before they are stored.
//!
//! Storing a received message costs a write transaction (about a tenth of a millisecond of
//! CPU, whatever its size). Shown only once stored, every message waited for that write at
//! every member, and in a busy room the writes of some members delayed the messages of
//! others. So a verified entry that extends its author's chain (as held, or as shown
//! already) is shown at once and stored a little later with whatever else came in.
//!
//! What is tracked here keeps such an entry from being shown a second time when it is
//! stored, by gossip's batch or by reconciliation, whichever gets there first, and keeps
//! the order of one author's entries as shown the order of its chain. It holds only
//! entries shown and not yet stored, so it stays small.

use std::collections::{HashMap, HashSet};

use crate::journal::{EntryMeta, Head, Id};

/// Entries shown ahead of the journal past this many means stores keep failing (each is
/// retried through reconciliation); then everything is forgotten, and the worst that
/// follows is a message shown twice.
const MAX_SHOWN: usize = 100_000;

/// Entries shown and not yet stored.
#[derive(Debug, Default)]
pub struct Shown {
    /// Per (room, author): the last entry shown of the author's chain, where that is past
    /// what the journal holds.
    tips: HashMap<(Id, Id), Head>,
    /// Hashes of the entries shown and not yet stored.
    hashes: HashSet<Id>,
}

impl Shown {
    /// Whether the entry `meta` comes right after what is shown of its author's chain in
    /// its room (`held`: the journal's head of that chain, when nothing shown is past it).
    /// If so it counts as shown from now on.
    pub fn show(&mut self, meta: &EntryMeta, held: Option<Head>) -> bool {
        let key = (meta.room, meta.author);
        let tip = match (self.tips.get(&key).copied(), held) {
            (Some(tip), Some(held)) if held.seq >= tip.seq => Some(held),
            (Some(tip), _) => Some(tip),
            (None, held) => held,
        };
        let (seq, hash) = tip.map_or((0, [0; 32]), |h| (h.seq, h.hash));
        if meta.seq != seq + 1 || meta.prev != hash {
            return false;
        }
        if self.hashes.len() >= MAX_SHOWN {
            self.tips.clear();
            self.hashes.clear();
        }
        self.tips.insert(
            key,
            Head {
                seq: meta.seq,
                hash: meta.hash,
            },
        );
        self.hashes.insert(meta.hash);
        true
    }

    /// An entry has been stored, or found held or invalid: whether it was shown already.
    /// Either way it is no longer waiting.
    pub fn stored(&mut self, hash: &Id) -> bool {
        self.hashes.remove(hash)
    }

    /// The journal now holds `room`'s chain of `author` up to `held`: a tip it has reached
    /// is no longer needed.
    pub fn caught_up(&mut self, room: &Id, author: &Id, held: Option<Head>) {
        let key = (*room, *author);
        if let (Some(tip), Some(held)) = (self.tips.get(&key), held)
            && held.seq >= tip.seq
        {
            self.tips.remove(&key);
        }
    }

    /// Forgets a room that was left.
    pub fn forget_room(&mut self, room: &Id) {
        self.tips.retain(|(r, _), _| r != room);
    }

    /// Entries shown and not yet stored.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: Id = [1; 32];
    const AUTHOR: Id = [2; 32];

    fn meta(seq: u64, prev: Id, hash: Id) -> EntryMeta {
        EntryMeta {
            room: ROOM,
            author: AUTHOR,
            seq,
            prev,
            hash,
            lamport: seq,
        }
    }

    fn head(seq: u64, hash: Id) -> Option<Head> {
        Some(Head { seq, hash })
    }

    #[test]
    fn a_chain_is_shown_in_order_ahead_of_the_journal() {
        let mut s = Shown::default();
        assert!(s.show(&meta(1, [0; 32], [11; 32]), None));
        // The next one links to the one shown, not yet stored.
        assert!(s.show(&meta(2, [11; 32], [12; 32]), None));
        // A gap, or the same seq again (a repeat or a fork), waits for the journal.
        assert!(!s.show(&meta(4, [13; 32], [14; 32]), None));
        assert!(!s.show(&meta(2, [11; 32], [99; 32]), None));
        assert!(!s.show(&meta(2, [11; 32], [12; 32]), None));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn an_entry_that_does_not_link_to_what_is_held_is_not_shown() {
        let mut s = Shown::default();
        assert!(!s.show(&meta(6, [9; 32], [16; 32]), head(5, [15; 32])));
        assert!(!s.show(&meta(5, [14; 32], [15; 32]), head(5, [15; 32])));
        assert!(s.show(&meta(6, [15; 32], [16; 32]), head(5, [15; 32])));
    }

    #[test]
    fn a_stored_entry_is_shown_once() {
        let mut s = Shown::default();
        assert!(s.show(&meta(1, [0; 32], [11; 32]), None));
        assert!(s.stored(&[11; 32]));
        assert!(
            !s.stored(&[11; 32]),
            "the second store (a duplicate) shows nothing"
        );
        assert!(!s.stored(&[12; 32]), "never shown");
        assert!(s.is_empty());
    }

    #[test]
    fn the_journal_overtaking_a_tip_takes_over() {
        let mut s = Shown::default();
        assert!(s.show(&meta(1, [0; 32], [11; 32]), None));
        // Reconciliation stored 1..=3 meanwhile: the chain goes on from the journal.
        assert!(s.show(&meta(4, [13; 32], [14; 32]), head(3, [13; 32])));
        s.caught_up(&ROOM, &AUTHOR, head(3, [13; 32]));
        assert!(s.tips.contains_key(&(ROOM, AUTHOR)), "4 is still ahead");
        s.caught_up(&ROOM, &AUTHOR, head(4, [14; 32]));
        assert!(s.tips.is_empty());
        // A store that failed leaves its tip: what follows still links to it.
        assert!(s.show(&meta(5, [14; 32], [15; 32]), head(4, [14; 32])));
        assert!(s.show(&meta(6, [15; 32], [16; 32]), head(4, [14; 32])));
        s.forget_room(&ROOM);
        assert!(s.tips.is_empty());
    }
}
