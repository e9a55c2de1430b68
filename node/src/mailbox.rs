//! Mailboxes: what an author wrote in a room, left in the DHT for members who were offline.
//!
//! Gossip reaches the members online when a message is written, and reconciliation brings
//! it to the others from any member that holds it. A message that only its author holds
//! (a direct message to a contact who is offline) reached no one once the author went
//! offline too. So an author whose members have not all confirmed its recent entries puts
//! them, sealed, in a Kademlia value record; a member coming back online reads the
//! mailboxes of the room's authors and checks each entry like one pulled from a peer.
//!
//! One mailbox per (room, author), of up to [`MAX_PAGES`] records (pages) of 64 KiB: its
//! keys and its sealing key are derived from what the room's readers share (the room's content key in a named room, the room id in a direct
//! or group room), so a DHT node that stores it sees opaque bytes under an opaque key. The
//! entries inside are signed envelopes: a record that someone else put under the key (a
//! member, or anyone who can compute a direct room's id) can replace the author's, and so
//! withhold it, but not add anything a reader would accept.

use zeroize::Zeroizing;

use crate::crypto::{self, SecretKey};
use crate::identity::UserId;
use crate::room::{Access, Room};

/// The largest value a mailbox record holds, sealing included: one envelope of the largest
/// size ([`crate::envelope::MAX_ENVELOPE`]) and its framing fit.
pub const MAX_RECORD: usize = 64 * 1024;
/// Entries one record carries at most.
pub const MAX_ENTRIES: usize = 256;
/// Records one mailbox spans at most: 1 MiB, some thousand short direct messages, written
/// while the reader was away.
pub const MAX_PAGES: usize = 16;
/// Sealing adds a nonce and a tag; the header and the entry lengths the rest.
const SEAL_OVERHEAD: usize = crypto::NONCE_LEN + 16;
/// Version 1 had one record and no page count; version 2 adds the page count after it.
const VERSION_ONE_PAGE: u8 = 1;
const VERSION: u8 = 2;
const HEADER: usize = 2;
const LEN_BYTES: usize = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MailboxError {
    #[error("mailbox record of {0} bytes is over the limit of {MAX_RECORD}")]
    TooLarge(usize),
    #[error("mailbox record does not open with this room's key")]
    Sealed,
    #[error("mailbox record is malformed: {0}")]
    Malformed(&'static str),
}

/// Where one author's mailbox in one room lives, and the key it is sealed with.
pub struct MailboxKeys {
    salt: [u8; 32],
    ikm: Zeroizing<Vec<u8>>,
    seal: SecretKey,
}

impl MailboxKeys {
    pub fn new(room: &Room, author: &UserId) -> Self {
        // What every reader of the room holds and a DHT node does not: the content key of
        // a named room; a direct or group room has none, and its id is what its members
        // (and whoever knows them all) can compute.
        let shared: &[u8] = match &room.access {
            Access::Shared(key) => &key[..],
            Access::Members(_) => &room.id.0,
        };
        let ikm = Zeroizing::new([shared, &author.0].concat());
        let seal = crypto::hkdf32(&room.id.0, &ikm, "mailbox-seal-key");
        MailboxKeys {
            salt: room.id.0,
            ikm,
            seal,
        }
    }

    /// The DHT record key of page `page`; the first page's says how many there are.
    pub fn record(&self, page: u8) -> [u8; 32] {
        let info = match page {
            0 => "mailbox-record-key".to_string(),
            n => format!("mailbox-record-key/{n}"),
        };
        *crypto::hkdf32(&self.salt, &self.ikm, &info)
    }

    /// Seals page `page` of `pages` under its own record key (so that a page cannot stand
    /// in for another).
    pub fn seal(&self, pages: &Pages, page: u8) -> Result<Vec<u8>, crypto::CryptoError> {
        let plain = Zeroizing::new(pages.plain(usize::from(page)));
        crypto::seal_blob(&self.seal, &self.record(page), &plain)
    }

    /// Opens page `page` of a mailbox: the entries, still to be checked one by one like any
    /// entry a peer sends, and how many pages the mailbox had when it was put.
    pub fn open(&self, page: u8, value: &[u8]) -> Result<Opened, MailboxError> {
        if value.len() > MAX_RECORD {
            return Err(MailboxError::TooLarge(value.len()));
        }
        let plain = crypto::open_blob(&self.seal, &self.record(page), value)
            .map_err(|_| MailboxError::Sealed)?;
        let (pages, mut rest) = match plain.split_first() {
            Some((&VERSION_ONE_PAGE, rest)) if page == 0 => (1, rest),
            Some((&VERSION, [pages, rest @ ..])) => {
                let said = match page {
                    0 => (1..=MAX_PAGES).contains(&usize::from(*pages)),
                    _ => *pages == 0,
                };
                if !said {
                    return Err(MailboxError::Malformed("bad page count"));
                }
                (*pages, rest)
            }
            Some(_) => return Err(MailboxError::Malformed("unknown version")),
            None => return Err(MailboxError::Malformed("empty")),
        };
        let mut entries = Vec::new();
        while !rest.is_empty() {
            if entries.len() == MAX_ENTRIES {
                return Err(MailboxError::Malformed("too many entries"));
            }
            let (len, tail) = rest
                .split_first_chunk::<LEN_BYTES>()
                .ok_or(MailboxError::Malformed("truncated length"))?;
            let len = u32::from_be_bytes(*len) as usize;
            if len == 0 || len > tail.len() {
                return Err(MailboxError::Malformed("bad entry length"));
            }
            let (entry, tail) = tail.split_at(len);
            entries.push(entry.to_vec());
            rest = tail;
        }
        Ok(Opened { pages, entries })
    }
}

/// A page of a mailbox, opened.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    /// On the first page, how many pages the mailbox had when it was put (at least 1); 0
    /// on the others (so a page that did not change need not be put again when the
    /// mailbox grows).
    pub pages: u8,
    pub entries: Vec<Vec<u8>>,
}

/// An author's entries laid out in pages as they come, from the first: readers take an
/// author's chain in order, so an entry after one left out would only wait for it.
#[derive(Debug, Default)]
pub struct Pages {
    /// Each page's framed entries (length, envelope), and how many.
    pages: Vec<(Vec<u8>, usize)>,
    entries: usize,
}

impl Pages {
    /// Adds the next entry; `false` if the mailbox is full (or the entry could never fit).
    pub fn push(&mut self, entry: &[u8]) -> bool {
        let need = LEN_BYTES + entry.len();
        let fits = |(body, n): &(Vec<u8>, usize)| {
            *n < MAX_ENTRIES && HEADER + body.len() + need + SEAL_OVERHEAD <= MAX_RECORD
        };
        if !self.pages.last().is_some_and(fits) {
            if self.pages.len() == MAX_PAGES || HEADER + need + SEAL_OVERHEAD > MAX_RECORD {
                return false;
            }
            self.pages.push((Vec::new(), 0));
        }
        let (body, n) = self.pages.last_mut().expect("a page was just made");
        body.extend_from_slice(&(entry.len() as u32).to_be_bytes());
        body.extend_from_slice(entry);
        *n += 1;
        self.entries += 1;
        true
    }

    /// Pages laid out.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// Entries carried.
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// What page `i` holds, as it is sealed: equal digests, equal pages (a page that has not
    /// changed since it was put need not be put again).
    pub fn digest(&self, i: usize) -> [u8; 32] {
        crypto::sha256(&[&self.plain(i)])
    }

    fn plain(&self, i: usize) -> Vec<u8> {
        let body = &self.pages[i].0;
        let count = if i == 0 { self.pages.len() as u8 } else { 0 };
        let mut plain = Vec::with_capacity(HEADER + body.len());
        plain.extend_from_slice(&[VERSION, count]);
        plain.extend_from_slice(body);
        plain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lobby() -> Room {
        Room::named("lobby", None).unwrap()
    }

    fn author(n: u8) -> UserId {
        UserId([n; 32])
    }

    fn pages_of(entries: &[Vec<u8>]) -> Pages {
        let mut pages = Pages::default();
        for e in entries {
            if !pages.push(e) {
                break;
            }
        }
        pages
    }

    fn seal_all(keys: &MailboxKeys, pages: &Pages) -> Vec<Vec<u8>> {
        (0..pages.len() as u8)
            .map(|i| keys.seal(pages, i).unwrap())
            .collect()
    }

    /// Every page opened, with the page count each one says.
    fn open_all(keys: &MailboxKeys, values: &[Vec<u8>]) -> Vec<Opened> {
        (0..values.len())
            .map(|i| keys.open(i as u8, &values[i]).unwrap())
            .collect()
    }

    #[test]
    fn entries_come_back_in_order() {
        let keys = MailboxKeys::new(&lobby(), &author(1));
        let entries: Vec<Vec<u8>> = (1..=5u8).map(|i| vec![i; 100 * i as usize]).collect();
        let pages = pages_of(&entries);
        assert_eq!((pages.len(), pages.entries()), (1, 5));
        let values = seal_all(&keys, &pages);
        assert!(values[0].len() <= MAX_RECORD);
        let opened = keys.open(0, &values[0]).unwrap();
        assert_eq!(opened, Opened { pages: 1, entries });
    }

    #[test]
    fn a_long_mailbox_spans_pages_up_to_the_limit() {
        let keys = MailboxKeys::new(&lobby(), &author(1));
        // Three 20,000-byte entries fill a page.
        let entries: Vec<Vec<u8>> = (0..10).map(|i| vec![i; 20_000]).collect();
        let pages = pages_of(&entries);
        assert_eq!((pages.len(), pages.entries()), (4, 10));
        let values = seal_all(&keys, &pages);
        assert!(values.iter().all(|v| v.len() <= MAX_RECORD));
        let opened = open_all(&keys, &values);
        let counts: Vec<u8> = opened.iter().map(|o| o.pages).collect();
        assert_eq!(counts, [4, 0, 0, 0], "the first page says how many");
        let back: Vec<Vec<u8>> = opened.into_iter().flat_map(|o| o.entries).collect();
        assert_eq!(back, entries);
        // Each page under its own key: one cannot pass for another.
        assert_ne!(keys.record(0), keys.record(1));
        assert_eq!(keys.open(1, &values[0]), Err(MailboxError::Sealed));

        // The largest envelope alone fits a page; past MAX_PAGES, the mailbox is full.
        let big = vec![7u8; crate::envelope::MAX_ENVELOPE];
        let mut pages = Pages::default();
        let taken = (0..100).take_while(|_| pages.push(&big)).count();
        assert_eq!((taken, pages.len()), (MAX_PAGES, MAX_PAGES));
        assert!(!pages.push(&big));
        // At most MAX_ENTRIES a page, however small.
        let mut pages = Pages::default();
        for _ in 0..MAX_ENTRIES + 1 {
            assert!(pages.push(&[1]));
        }
        assert_eq!(pages.len(), 2);
        // What no page could hold is refused.
        assert!(!Pages::default().push(&vec![0; MAX_RECORD]));
    }

    #[test]
    fn a_page_that_did_not_change_has_the_same_digest() {
        let entries: Vec<Vec<u8>> = (0..4).map(|i| vec![i; 30_000]).collect();
        let (three, four) = (pages_of(&entries[..3]), pages_of(&entries));
        assert_eq!(three.len(), 2);
        assert_eq!(four.len(), 2);
        assert_eq!(three.digest(0), four.digest(0));
        assert_ne!(three.digest(1), four.digest(1));
        // A mailbox that grew a page changes its first (which counts them) and its new one.
        let five = pages_of(&[entries.clone(), vec![vec![9; 30_000]]].concat());
        assert_eq!(five.len(), 3);
        assert_ne!(five.digest(0), four.digest(0));
        assert_eq!(five.digest(1), four.digest(1));
    }

    #[test]
    fn each_author_and_room_has_its_own_record_and_key() {
        let a = MailboxKeys::new(&lobby(), &author(1));
        let b = MailboxKeys::new(&lobby(), &author(2));
        let other_room = MailboxKeys::new(&Room::named("lobby", Some("pw")).unwrap(), &author(1));
        assert_ne!(a.record(0), b.record(0));
        assert_ne!(a.record(0), other_room.record(0));
        // Nothing of the room id shows in the key a DHT node sees.
        assert_ne!(a.record(0), lobby().id.0);
        let value = a.seal(&pages_of(&[b"entry".to_vec()]), 0).unwrap();
        assert_eq!(b.open(0, &value), Err(MailboxError::Sealed));
        assert_eq!(other_room.open(0, &value), Err(MailboxError::Sealed));
    }

    #[test]
    fn a_record_of_the_first_layout_still_opens() {
        let keys = MailboxKeys::new(&lobby(), &author(1));
        let mut plain = vec![VERSION_ONE_PAGE];
        plain.extend_from_slice(&5u32.to_be_bytes());
        plain.extend_from_slice(b"entry");
        let value = crypto::seal_blob(&keys.seal, &keys.record(0), &plain).unwrap();
        let opened = keys.open(0, &value).unwrap();
        assert_eq!(
            opened,
            Opened {
                pages: 1,
                entries: vec![b"entry".to_vec()]
            }
        );
    }

    #[test]
    fn garbage_and_tampering_are_refused() {
        let keys = MailboxKeys::new(&lobby(), &author(1));
        let mut value = keys.seal(&pages_of(&[b"entry".to_vec()]), 0).unwrap();
        let last = value.len() - 1;
        value[last] ^= 1;
        assert_eq!(keys.open(0, &value), Err(MailboxError::Sealed));
        assert_eq!(keys.open(0, &[]), Err(MailboxError::Sealed));
        assert_eq!(
            keys.open(0, &vec![0; MAX_RECORD + 1]),
            Err(MailboxError::TooLarge(MAX_RECORD + 1))
        );
        let sealed = |page: u8, plain: &[u8]| {
            crypto::seal_blob(&keys.seal, &keys.record(page), plain).unwrap()
        };
        // Well sealed but badly framed: a length past the end, an unknown version, page
        // counts that cannot be.
        let mut plain = vec![VERSION, 1];
        plain.extend_from_slice(&100u32.to_be_bytes());
        plain.extend_from_slice(b"short");
        let malformed = |r| matches!(r, Err(MailboxError::Malformed(_)));
        assert!(malformed(keys.open(0, &sealed(0, &plain))));
        assert!(malformed(keys.open(0, &sealed(0, &[9]))));
        assert!(malformed(keys.open(0, &sealed(0, &[VERSION, 0]))));
        assert!(malformed(
            keys.open(0, &sealed(0, &[VERSION, MAX_PAGES as u8 + 1]))
        ));
        assert!(malformed(keys.open(2, &sealed(2, &[VERSION, 3]))));
        assert!(malformed(keys.open(1, &sealed(1, &[VERSION_ONE_PAGE]))));
        assert_eq!(keys.open(1, &sealed(1, &[VERSION, 0])).unwrap().pages, 0);
    }
}
