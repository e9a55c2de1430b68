//! How big a room is, estimated from whom a member hears.
//!
//! A member knows the others it has heard from (writers and receipt senders), which in a
//! big room is a small part of it for a long while: a member of a 1,000-member room that
//! has heard from 30 paces its receipts as if the room had 30, and the room carries many
//! times its receipt budget ("Found: receipts" in docs/benchmarks.md). Who it hears tells
//! more than how many: if senders are drawn from the whole room, the share of them it
//! already knew is about the share of the room it knows. That is capture–recapture
//! (Lincoln–Petersen) counting, one sender at a time: with `K` others known when a sender
//! is heard, the chance that the sender is one of them is `K / (N - 1)`, so over a window
//! of senders `N - 1 ≈ ΣK / hits`.
//!
//! It is an estimate for pacing (receipts, announcements), never shown as a member count:
//! senders are not a uniform draw (busy writers are heard more often, which makes it
//! low, the safe side: the old behaviour), and it never goes below the members known.

use std::collections::VecDeque;

/// Senders remembered per room: enough for a few hits in a room twenty times bigger than
/// what a member knows, few enough that the estimate follows a room that shrinks.
pub const WINDOW: usize = 128;

/// One room's recent senders, each as (others known when it was heard, whether it was one
/// of them).
#[derive(Debug, Default, Clone)]
pub struct Census {
    heard: VecDeque<(u32, bool)>,
    /// Sum of the known counts in `heard`.
    known_sum: u64,
    /// Senders in `heard` that were known already.
    hits: u32,
}

impl Census {
    /// A sender other than us was heard; `known_others` members other than us were known
    /// just before, and `was_known` says whether the sender was one of them.
    pub fn heard(&mut self, known_others: usize, was_known: bool) {
        let k = u32::try_from(known_others).unwrap_or(u32::MAX);
        if self.heard.len() == WINDOW
            && let Some((old_k, old_hit)) = self.heard.pop_front()
        {
            self.known_sum -= u64::from(old_k);
            self.hits -= u32::from(old_hit);
        }
        self.heard.push_back((k, was_known));
        self.known_sum += u64::from(k);
        self.hits += u32::from(was_known);
    }

    /// Whether some sender heard was one of the members known just before: the first
    /// recapture. Until then every sender has been new, which a room of any size beyond
    /// them would give, so the estimate says little.
    pub fn recaptured(&self) -> bool {
        self.hits > 0
    }

    /// The room's size, us included, given `known` members (us included): never fewer.
    /// Before a single hit the estimate is what the window's senders alone imply (each
    /// missed sender a known count's worth), which keeps a room's first seconds from
    /// looking infinite.
    pub fn estimate(&self, known: usize) -> usize {
        if self.heard.is_empty() {
            return known;
        }
        let others = self.known_sum as f64 / f64::from(self.hits.max(1));
        // At most 128 senders times u32::MAX others: no overflow.
        known.max(1 + others.round() as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    /// Hears `n` senders drawn uniformly from a room of `size` (member 0 is us), adding
    /// each to `known` (us included) once heard.
    fn hear(
        c: &mut Census,
        known: &mut std::collections::HashSet<usize>,
        size: usize,
        n: usize,
        rng: &mut rand::rngs::StdRng,
    ) {
        for _ in 0..n {
            let sender = rng.random_range(1..size);
            let was = known.contains(&sender);
            c.heard(known.len() - 1, was);
            known.insert(sender);
        }
    }

    #[test]
    fn nothing_heard_means_what_is_known() {
        assert_eq!(Census::default().estimate(7), 7);
    }

    #[test]
    fn a_room_is_recaptured_once_a_known_sender_is_heard_again() {
        let mut c = Census::default();
        assert!(!c.recaptured());
        c.heard(0, false);
        c.heard(1, false);
        assert!(
            !c.recaptured(),
            "two new senders say nothing of the room's size"
        );
        c.heard(2, true);
        assert!(c.recaptured());
        // The hit leaves the window after WINDOW more senders, all new.
        for k in 3..3 + WINDOW {
            c.heard(k, false);
        }
        assert!(!c.recaptured());
    }

    #[test]
    fn a_big_room_is_seen_as_big_long_before_its_members_are_known() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for size in [500usize, 1000, 2000] {
            let mut c = Census::default();
            let mut known: std::collections::HashSet<usize> = [0].into();
            // A member that knows 30 others (from its first minute's connections) ...
            known.extend(1..31);
            // ... hears 100 receipts: it then knows about 130 of them.
            hear(&mut c, &mut known, size, 100, &mut rng);
            let est = c.estimate(known.len());
            assert!(known.len() < size / 3, "{} known of {size}", known.len());
            assert!(
                est > size / 3 && est < size * 3,
                "room of {size}: estimated {est} knowing {}",
                known.len()
            );
        }
    }

    #[test]
    fn a_small_room_is_seen_at_its_size() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut c = Census::default();
        let mut known: std::collections::HashSet<usize> = [0].into();
        // Its first senders are all new: the estimate stays modest ...
        hear(&mut c, &mut known, 5, 4, &mut rng);
        assert!(c.estimate(known.len()) <= 12, "{}", c.estimate(known.len()));
        // ... and once everyone is known it is the room's size.
        hear(&mut c, &mut known, 5, 2 * WINDOW, &mut rng);
        assert_eq!(known.len(), 5);
        assert_eq!(c.estimate(known.len()), 5);
    }

    #[test]
    fn never_below_what_is_known_and_forgets_old_senders() {
        let mut c = Census::default();
        // Every sender new: the window says "bigger than 40"...
        for k in 0..40 {
            c.heard(k, false);
        }
        assert!(c.estimate(41) > 41);
        // ... then a window of known ones only: back to what is known.
        for _ in 0..WINDOW {
            c.heard(40, true);
        }
        assert_eq!(c.estimate(41), 41);
        assert_eq!(c.hits as usize, WINDOW);
        assert_eq!(c.known_sum, 40 * WINDOW as u64);
    }
}
