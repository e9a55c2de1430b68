//! Mailboxes: what an author wrote in a room, left in the DHT for members who were offline.
//!
//! Gossip reaches the members online when a message is written, and reconciliation brings
//! it to the others from any member that holds it. A message that only its author holds
//! (a direct message to a contact who is offline) reached no one once the author went
//! offline too. So an author whose members have not all confirmed its recent entries puts
//! them, sealed, in a Kademlia value record; a member coming back online reads the
//! mailboxes of the room's authors and checks each entry like one pulled from a peer.
//!
//! One record per (room, author): its key and its sealing key are derived from what the
//! room's readers share (the room's content key in a named room, the room id in a direct
//! or group room), so a DHT node that stores it sees opaque bytes under an opaque key. The
//! entries inside are signed envelopes: a record that someone else put under the key (a
//! member, or anyone who can compute a direct room's id) can replace the author's, and so
//! withhold it, but not add anything a reader would accept.

use crate::crypto::{self, SecretKey};
use crate::identity::UserId;
use crate::room::{Access, Room};

/// The largest value a mailbox record holds, sealing included: one envelope of the largest
/// size ([`crate::envelope::MAX_ENVELOPE`]) and its framing fit.
pub const MAX_RECORD: usize = 64 * 1024;
/// Entries one mailbox carries at most.
pub const MAX_ENTRIES: usize = 256;
/// Sealing adds a nonce and a tag; the version byte and the entry lengths the rest.
const SEAL_OVERHEAD: usize = crypto::NONCE_LEN + 16;
const VERSION: u8 = 1;
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
    /// The DHT record key.
    pub record: [u8; 32],
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
        let ikm = [shared, &author.0].concat();
        let record = crypto::hkdf32(&room.id.0, &ikm, "mailbox-record-key");
        let seal = crypto::hkdf32(&room.id.0, &ikm, "mailbox-seal-key");
        MailboxKeys {
            record: *record,
            seal,
        }
    }

    /// Seals as many of `entries` as fit, from the first: readers take an author's chain
    /// in order, so an entry after one left out would only wait for it. Returns the record's
    /// value and how many entries it carries (0: the first one alone does not fit).
    pub fn seal<'a>(
        &self,
        entries: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(Vec<u8>, usize), crypto::CryptoError> {
        let mut plain = vec![VERSION];
        let mut count = 0;
        for entry in entries.into_iter().take(MAX_ENTRIES) {
            if plain.len() + LEN_BYTES + entry.len() + SEAL_OVERHEAD > MAX_RECORD {
                break;
            }
            plain.extend_from_slice(&(entry.len() as u32).to_be_bytes());
            plain.extend_from_slice(entry);
            count += 1;
        }
        let value = crypto::seal_blob(&self.seal, &self.record, &plain)?;
        Ok((value, count))
    }

    /// Opens a record found under [`MailboxKeys::record`]: the entries, still to be checked
    /// one by one like any entry a peer sends.
    pub fn open(&self, value: &[u8]) -> Result<Vec<Vec<u8>>, MailboxError> {
        if value.len() > MAX_RECORD {
            return Err(MailboxError::TooLarge(value.len()));
        }
        let plain =
            crypto::open_blob(&self.seal, &self.record, value).map_err(|_| MailboxError::Sealed)?;
        let (&version, mut rest) = plain
            .split_first()
            .ok_or(MailboxError::Malformed("empty"))?;
        if version != VERSION {
            return Err(MailboxError::Malformed("unknown version"));
        }
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
        Ok(entries)
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

    #[test]
    fn entries_come_back_in_order() {
        let keys = MailboxKeys::new(&lobby(), &author(1));
        let entries: Vec<Vec<u8>> = (1..=5u8).map(|i| vec![i; 100 * i as usize]).collect();
        let (value, n) = keys.seal(entries.iter().map(Vec::as_slice)).unwrap();
        assert_eq!(n, 5);
        assert!(value.len() <= MAX_RECORD);
        assert_eq!(keys.open(&value).unwrap(), entries);
    }

    #[test]
    fn what_does_not_fit_is_left_out_from_the_end() {
        let keys = MailboxKeys::new(&lobby(), &author(1));
        let entries: Vec<Vec<u8>> = (0..10).map(|i| vec![i; 20_000]).collect();
        let (value, n) = keys.seal(entries.iter().map(Vec::as_slice)).unwrap();
        assert_eq!(n, 3);
        assert!(value.len() <= MAX_RECORD);
        assert_eq!(keys.open(&value).unwrap(), entries[..3]);
        // The largest envelope alone fits.
        let big = vec![7u8; crate::envelope::MAX_ENVELOPE];
        let (value, n) = keys.seal([big.as_slice()]).unwrap();
        assert_eq!(n, 1);
        assert_eq!(keys.open(&value).unwrap(), vec![big]);
        // At most MAX_ENTRIES, however small.
        let tiny = [1u8; 1];
        let (_, n) = keys.seal(std::iter::repeat_n(&tiny[..], 1000)).unwrap();
        assert_eq!(n, MAX_ENTRIES);
    }

    #[test]
    fn each_author_and_room_has_its_own_record_and_key() {
        let a = MailboxKeys::new(&lobby(), &author(1));
        let b = MailboxKeys::new(&lobby(), &author(2));
        let other_room = MailboxKeys::new(&Room::named("lobby", Some("pw")).unwrap(), &author(1));
        assert_ne!(a.record, b.record);
        assert_ne!(a.record, other_room.record);
        // Nothing of the room id shows in the key a DHT node sees.
        assert_ne!(a.record, lobby().id.0);
        let (value, _) = a.seal([&b"entry"[..]]).unwrap();
        assert_eq!(b.open(&value), Err(MailboxError::Sealed));
        assert_eq!(other_room.open(&value), Err(MailboxError::Sealed));
    }

    #[test]
    fn garbage_and_tampering_are_refused() {
        let keys = MailboxKeys::new(&lobby(), &author(1));
        let (mut value, _) = keys.seal([&b"entry"[..]]).unwrap();
        let last = value.len() - 1;
        value[last] ^= 1;
        assert_eq!(keys.open(&value), Err(MailboxError::Sealed));
        assert_eq!(keys.open(&[]), Err(MailboxError::Sealed));
        assert_eq!(
            keys.open(&vec![0; MAX_RECORD + 1]),
            Err(MailboxError::TooLarge(MAX_RECORD + 1))
        );
        // Well sealed but badly framed: a length past the end.
        let mut plain = vec![VERSION];
        plain.extend_from_slice(&100u32.to_be_bytes());
        plain.extend_from_slice(b"short");
        let value = crypto::seal_blob(&keys.seal, &keys.record, &plain).unwrap();
        assert!(matches!(keys.open(&value), Err(MailboxError::Malformed(_))));
        let value = crypto::seal_blob(&keys.seal, &keys.record, &[9]).unwrap();
        assert!(matches!(keys.open(&value), Err(MailboxError::Malformed(_))));
    }
}
