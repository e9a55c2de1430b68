//! Which pages of our mailboxes are in the DHT, kept across restarts. A page that has not
//! changed is not put again for [`PUT_AGAIN`]; in memory only, a restarted node put every
//! unchanged page again at its next put (each stop, for a member long away). Only puts the
//! DHT took count: one still under way when the node stops, or one no DHT node took, is
//! put again at the next start.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::Service;
use super::mailbox::PUT_AGAIN;
use super::room_settings::{RoomSettings, epoch_ms, instant_at};
use crate::room::RoomId;

/// Where a room's put pages are kept (sealed: a digest of a page is a digest of what it
/// says).
const SETTINGS: RoomSettings = RoomSettings::new("mailbox-pages/", "our put mailbox pages");

/// What a page held when it was put (its digest, see [`crate::mailbox::Pages::digest`]),
/// when, and whether the DHT took it yet.
#[derive(Clone, Copy)]
struct PagePut {
    digest: [u8; 32],
    at: Instant,
    placed: bool,
}

/// Our rooms' mailbox pages as last put.
#[derive(Default)]
pub(super) struct PutPages {
    pages: HashMap<(RoomId, u8), PagePut>,
    /// Rooms whose pages changed since they were last stored.
    dirty: HashSet<RoomId>,
}

/// A page as stored.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
struct Stored {
    page: u8,
    digest: [u8; 32],
    /// When it was put (ms since the Unix epoch).
    put_ms: u64,
}

impl PutPages {
    /// Whether page `page` of `room`, holding what `digest` says, was put recently enough
    /// to be left as it is (or is being put).
    pub(super) fn fresh(&self, room: RoomId, page: u8, digest: &[u8; 32]) -> bool {
        (self.pages.get(&(room, page)))
            .is_some_and(|p| p.digest == *digest && p.at.elapsed() < PUT_AGAIN)
    }

    /// The page is being put.
    pub(super) fn putting(&mut self, room: RoomId, page: u8, digest: [u8; 32]) {
        let at = Instant::now();
        let put = PagePut {
            digest,
            at,
            placed: false,
        };
        self.pages.insert((room, page), put);
    }

    /// The put ended: `placed` if a DHT node took the page (otherwise it is put again
    /// next time).
    pub(super) fn put_ended(&mut self, room: RoomId, page: u8, placed: bool) {
        if placed {
            if let Some(p) = self.pages.get_mut(&(room, page)) {
                p.placed = true;
                self.dirty.insert(room);
            }
        } else if self.pages.remove(&(room, page)).is_some_and(|p| p.placed) {
            self.dirty.insert(room);
        }
    }

    fn forget_room(&mut self, room: RoomId) {
        self.pages.retain(|(r, _), _| *r != room);
        self.dirty.remove(&room);
    }

    /// The room's pages the DHT took, as stored.
    fn stored(&self, room: RoomId) -> Vec<Stored> {
        let mut pages: Vec<Stored> = (self.pages.iter())
            .filter(|((r, _), p)| *r == room && p.placed)
            .map(|(&(_, page), p)| Stored {
                page,
                digest: p.digest,
                put_ms: epoch_ms(p.at),
            })
            .collect();
        pages.sort_by_key(|p| p.page);
        pages
    }

    /// Takes back the pages [`PutPages::stored`] gave.
    fn restore(&mut self, room: RoomId, stored: Vec<Stored>) {
        for s in stored {
            // Older than the clock reaches back: as good as never put.
            let Some(at) = instant_at(s.put_ms) else {
                continue;
            };
            let put = PagePut {
                digest: s.digest,
                at,
                placed: true,
            };
            self.pages.insert((room, s.page), put);
        }
    }
}

impl Service {
    /// Stores the put pages of the rooms where they changed; not durable: a change lost in
    /// a crash only has a page put once more.
    pub(super) fn save_put_pages(&mut self) {
        let pages = &mut self.mailboxes.pages;
        let rooms = std::mem::take(&mut pages.dirty);
        let values = rooms.into_iter().map(|room| (room, pages.stored(room)));
        SETTINGS.save(&self.core, values, false);
    }

    /// Reads which pages of our mailboxes were in the DHT when the node last ran (those
    /// that cannot be read are put again).
    pub(super) fn load_put_pages(&mut self) {
        for (room, pages) in SETTINGS.load::<Vec<Stored>>(&self.core) {
            self.mailboxes.pages.restore(room, pages);
        }
    }

    /// A room left: its pages are forgotten with it.
    pub(super) fn forget_put_pages(&mut self, room: RoomId) {
        self.mailboxes.pages.forget_room(room);
        SETTINGS.forget(&self.core, room);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pages_the_dht_took_are_stored_and_they_come_back_as_they_were() {
        let (room, other) = (RoomId([1; 32]), RoomId([2; 32]));
        let mut pages = PutPages::default();
        pages.putting(room, 0, [10; 32]);
        pages.putting(room, 1, [11; 32]);
        pages.putting(room, 2, [12; 32]);
        pages.putting(other, 0, [20; 32]);
        // Under way: fresh (not put twice at once), but not stored.
        assert!(pages.fresh(room, 0, &[10; 32]));
        assert!(!pages.fresh(room, 0, &[99; 32]));
        assert!(pages.stored(room).is_empty());
        // Page 0 taken, page 1 taken by none (put again next time), page 2 still going.
        pages.put_ended(room, 0, true);
        pages.put_ended(room, 1, false);
        assert!(!pages.fresh(room, 1, &[11; 32]));
        assert_eq!(pages.dirty, HashSet::from([room]));
        let stored = pages.stored(room);
        assert_eq!(stored.len(), 1);
        assert_eq!((stored[0].page, stored[0].digest), (0, [10; 32]));

        // Through CBOR, into a node that starts again.
        let bytes = cbor4ii::serde::to_vec(Vec::new(), &stored).unwrap();
        let mut again = PutPages::default();
        again.restore(room, cbor4ii::serde::from_slice(&bytes).unwrap());
        assert!(again.fresh(room, 0, &[10; 32]));
        assert!(!again.fresh(room, 0, &[11; 32]));
        assert!(!again.fresh(room, 2, &[12; 32]));
        assert_eq!(again.stored(room), stored);
        // As read: nothing to write back.
        assert!(again.dirty.is_empty());

        // A page put longer ago than PUT_AGAIN is put again.
        let old = Stored {
            page: 3,
            digest: [13; 32],
            put_ms: crate::core::now_ms() - PUT_AGAIN.as_millis() as u64 - 1000,
        };
        again.restore(room, vec![old]);
        assert!(!again.fresh(room, 3, &[13; 32]));

        // A room left forgets its pages, and only them.
        pages.forget_room(room);
        assert!(!pages.fresh(room, 2, &[12; 32]));
        assert!(pages.fresh(other, 0, &[20; 32]));
    }
}
