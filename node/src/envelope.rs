//! The signed, encrypted envelope every message travels and rests in.
//!
//! Layout (version 1, all integers big-endian; documented in docs/protocol.md):
//!
//! ```text
//! "CC" | version u8 = 1 | kind u8 | room id [32]
//! | author key len u16 | author public key (DER SubjectPublicKeyInfo)
//! | seq u64 | prev hash [32] | lamport u64 | timestamp ms u64
//! | access u8 (0 = shared room key, 1 = wrapped per member)
//!   [access 1: count u8 | count x (recipient id [32] | len u16 | RSA-OAEP wrapped key)]
//! | nonce [12]                                   <- header ends: AES-GCM AAD = header
//! | ciphertext len u32 | AES-256-GCM ciphertext || tag
//! | signature len u16 | RSA-PSS-SHA256 signature over every byte before "signature len"
//! ```
//!
//! The signature covers the whole envelope, so any replica can verify authorship without
//! being able to read the content; the entry hash (SHA-256 of all bytes) chains an author's
//! entries through `prev`.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{self, NONCE_LEN};
use crate::identity::{Identity, IdentityError, PublicIdentity, UserId};
use crate::journal::EntryMeta;
use crate::room::{Access, Room, RoomId};

const MAGIC: &[u8; 2] = b"CC";
/// Current envelope version.
pub const VERSION: u8 = 1;
/// Largest envelope accepted from anyone; below gossipsub's 64 KiB transmit limit.
pub const MAX_ENVELOPE: usize = 60 * 1024;
/// Largest message text.
pub const MAX_TEXT: usize = 16 * 1024;
/// Lamport clocks at or above this are refused: a peer cannot push its messages to the end
/// of every history forever, or overflow the next author's clock.
pub const MAX_LAMPORT: u64 = 1 << 48;
const MAX_KEY_DER: usize = 1024;
const MAX_WRAPPED: usize = 1024;
const MAX_SIGNATURE: usize = 1024;
const MAX_RECIPIENTS: usize = crate::room::MAX_GROUP_MEMBERS;

/// What an envelope carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Text,
    File,
    Receipt,
}

impl Kind {
    fn to_u8(self) -> u8 {
        match self {
            Kind::Text => 1,
            Kind::File => 2,
            Kind::Receipt => 3,
        }
    }

    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Kind::Text),
            2 => Some(Kind::File),
            3 => Some(Kind::Receipt),
            _ => None,
        }
    }
}

/// Why an envelope was refused. Each variant is counted separately by the node.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("envelope of {0} bytes exceeds the {MAX_ENVELOPE}-byte limit")]
    Oversized(usize),
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
    #[error("unsupported envelope version {0}")]
    Version(u8),
    #[error("bad signature")]
    BadSignature,
    #[error("envelope is for another room")]
    WrongRoom,
    #[error("cannot decrypt: wrong room key, not a recipient, or tampered")]
    Undecryptable,
    #[error("malformed payload")]
    BadPayload,
    #[error("could not build envelope: {0}")]
    Build(String),
    #[error("message text is {0} bytes; the limit is {MAX_TEXT}")]
    TextTooLong(usize),
}

/// How the content key is given to readers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyAccess {
    Shared,
    Wrapped(Vec<(UserId, Vec<u8>)>),
}

/// The decrypted content of an envelope. Serialised as JSON inside the ciphertext, so the
/// author's display name travels only to those who can read the room.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Payload {
    /// The author's username.
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A delivery receipt: heads of the sender's version vector as (first 8 bytes of the
    /// author id in hex, contiguous seq held); only those that moved since its last receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Vec<(String, u64)>>,
}

/// A parsed envelope whose signature has been verified.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub kind: Kind,
    pub room: RoomId,
    pub author: PublicIdentity,
    pub seq: u64,
    pub prev: [u8; 32],
    pub lamport: u64,
    pub timestamp_ms: u64,
    pub access: KeyAccess,
    nonce: [u8; NONCE_LEN],
    header_len: usize,
    ciphertext: std::ops::Range<usize>,
    bytes: Vec<u8>,
    hash: [u8; 32],
}

/// Fields the author chooses when sealing.
#[derive(Clone, Copy, Debug)]
pub struct Position {
    pub seq: u64,
    pub prev: [u8; 32],
    pub lamport: u64,
    pub timestamp_ms: u64,
}

impl Envelope {
    /// Encrypts and signs `payload` for `room` as `author`.
    pub fn seal(
        author: &Identity,
        room: &Room,
        kind: Kind,
        pos: Position,
        payload: &Payload,
    ) -> Result<Envelope, EnvelopeError> {
        if let Some(t) = &payload.text
            && t.len() > MAX_TEXT
        {
            return Err(EnvelopeError::TextTooLong(t.len()));
        }
        let plain = Zeroizing::new(
            serde_json::to_vec(payload).map_err(|e| EnvelopeError::Build(e.to_string()))?,
        );
        let (content_key, wrapped) = match &room.access {
            Access::Shared(k) => (k.clone(), None),
            Access::Members(members) => {
                let k = crypto::random_key().map_err(|e| EnvelopeError::Build(e.to_string()))?;
                let w = members
                    .iter()
                    .map(|m| Ok((m.identity.id(), m.identity.wrap_key(&k)?)))
                    .collect::<Result<Vec<_>, IdentityError>>()
                    .map_err(|e| EnvelopeError::Build(e.to_string()))?;
                (k, Some(w))
            }
        };
        let mut nonce = [0u8; NONCE_LEN];
        crypto::fill_random(&mut nonce).map_err(|e| EnvelopeError::Build(e.to_string()))?;

        let der = author.public().der();
        let mut b = Vec::with_capacity(512 + plain.len());
        b.extend_from_slice(MAGIC);
        b.push(VERSION);
        b.push(kind.to_u8());
        b.extend_from_slice(&room.id.0);
        b.extend_from_slice(&(der.len() as u16).to_be_bytes());
        b.extend_from_slice(der);
        b.extend_from_slice(&pos.seq.to_be_bytes());
        b.extend_from_slice(&pos.prev);
        b.extend_from_slice(&pos.lamport.to_be_bytes());
        b.extend_from_slice(&pos.timestamp_ms.to_be_bytes());
        match &wrapped {
            None => b.push(0),
            Some(w) => {
                b.push(1);
                b.push(w.len() as u8);
                for (id, wk) in w {
                    b.extend_from_slice(&id.0);
                    b.extend_from_slice(&(wk.len() as u16).to_be_bytes());
                    b.extend_from_slice(wk);
                }
            }
        }
        b.extend_from_slice(&nonce);
        let header_len = b.len();
        let ct = crypto::seal_with_nonce(&content_key, &nonce, &b, &plain)
            .map_err(|e| EnvelopeError::Build(e.to_string()))?;
        b.extend_from_slice(&(ct.len() as u32).to_be_bytes());
        b.extend_from_slice(&ct);
        let sig = author
            .sign(&b)
            .map_err(|e| EnvelopeError::Build(e.to_string()))?;
        b.extend_from_slice(&(sig.len() as u16).to_be_bytes());
        b.extend_from_slice(&sig);
        if b.len() > MAX_ENVELOPE {
            return Err(EnvelopeError::Oversized(b.len()));
        }
        // Parse what we built: one code path for every envelope, ours or a peer's.
        let env = Envelope::parse(b)?;
        debug_assert_eq!(env.header_len, header_len);
        Ok(env)
    }

    /// Parses `bytes` and verifies the author's signature. Never panics on any input.
    pub fn parse(bytes: Vec<u8>) -> Result<Envelope, EnvelopeError> {
        if bytes.len() > MAX_ENVELOPE {
            return Err(EnvelopeError::Oversized(bytes.len()));
        }
        let mut r = Reader {
            buf: &bytes,
            pos: 0,
        };
        if r.take(2)? != MAGIC {
            return Err(EnvelopeError::Malformed("bad magic"));
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(EnvelopeError::Version(version));
        }
        let kind = Kind::from_u8(r.u8()?).ok_or(EnvelopeError::Malformed("unknown kind"))?;
        let room = RoomId(r.array()?);
        let der_len = r.u16()? as usize;
        if der_len > MAX_KEY_DER {
            return Err(EnvelopeError::Malformed("author key too long"));
        }
        let author = PublicIdentity::from_der(r.take(der_len)?)
            .map_err(|_| EnvelopeError::Malformed("bad author key"))?;
        let seq = r.u64()?;
        if seq == 0 {
            return Err(EnvelopeError::Malformed("seq starts at 1"));
        }
        let prev = r.array()?;
        let lamport = r.u64()?;
        if lamport >= MAX_LAMPORT {
            return Err(EnvelopeError::Malformed("lamport clock out of range"));
        }
        let timestamp_ms = r.u64()?;
        let access = match r.u8()? {
            0 => KeyAccess::Shared,
            1 => {
                let n = r.u8()? as usize;
                if n == 0 || n > MAX_RECIPIENTS {
                    return Err(EnvelopeError::Malformed("bad recipient count"));
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let id = UserId(r.array()?);
                    let len = r.u16()? as usize;
                    if len > MAX_WRAPPED {
                        return Err(EnvelopeError::Malformed("wrapped key too long"));
                    }
                    v.push((id, r.take(len)?.to_vec()));
                }
                KeyAccess::Wrapped(v)
            }
            _ => return Err(EnvelopeError::Malformed("unknown access mode")),
        };
        let nonce = r.array()?;
        let header_len = r.pos;
        let ct_len = r.u32()? as usize;
        let ct_start = r.pos;
        r.take(ct_len)?;
        let ciphertext = ct_start..r.pos;
        let signed_len = r.pos;
        let sig_len = r.u16()? as usize;
        if sig_len > MAX_SIGNATURE {
            return Err(EnvelopeError::Malformed("signature too long"));
        }
        let sig = r.take(sig_len)?;
        if r.pos != bytes.len() {
            return Err(EnvelopeError::Malformed("trailing bytes"));
        }
        if !author.verify(&bytes[..signed_len], sig) {
            return Err(EnvelopeError::BadSignature);
        }
        let hash = crypto::sha256(&[&bytes]);
        Ok(Envelope {
            kind,
            room,
            author,
            seq,
            prev,
            lamport,
            timestamp_ms,
            access,
            nonce,
            header_len,
            ciphertext,
            bytes,
            hash,
        })
    }

    /// Decrypts the payload with the room's access: the shared key, or our wrapped key.
    pub fn open(&self, room: &Room, me: &Identity) -> Result<Payload, EnvelopeError> {
        if self.room != room.id {
            return Err(EnvelopeError::WrongRoom);
        }
        let key = match (&room.access, &self.access) {
            (Access::Shared(k), KeyAccess::Shared) => k.clone(),
            (Access::Members(_), KeyAccess::Wrapped(list)) => {
                let mine = me.id();
                let (_, wrapped) = list
                    .iter()
                    .find(|(id, _)| crypto::ct_eq(&id.0, &mine.0))
                    .ok_or(EnvelopeError::Undecryptable)?;
                me.unwrap_key(wrapped)
                    .map_err(|_| EnvelopeError::Undecryptable)?
            }
            _ => return Err(EnvelopeError::Undecryptable),
        };
        let plain = crypto::open(
            &key,
            &self.nonce,
            &self.bytes[..self.header_len],
            &self.bytes[self.ciphertext.clone()],
        )
        .map_err(|_| EnvelopeError::Undecryptable)?;
        let payload: Payload =
            serde_json::from_slice(&plain).map_err(|_| EnvelopeError::BadPayload)?;
        if payload.text.as_ref().is_some_and(|t| t.len() > MAX_TEXT) {
            return Err(EnvelopeError::BadPayload);
        }
        Ok(payload)
    }

    pub fn author_id(&self) -> UserId {
        self.author.id()
    }

    /// SHA-256 of the whole envelope: its identity in the author's chain.
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The journal's view of this entry.
    pub fn meta(&self) -> EntryMeta {
        EntryMeta {
            room: self.room.0,
            author: self.author_id().0,
            seq: self.seq,
            prev: self.prev,
            hash: self.hash,
            lamport: self.lamport,
        }
    }
}

/// A bounds-checked cursor: every read returns an error instead of panicking.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EnvelopeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(EnvelopeError::Malformed("truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], EnvelopeError> {
        self.take(N)?
            .try_into()
            .map_err(|_| EnvelopeError::Malformed("truncated"))
    }

    fn u8(&mut self) -> Result<u8, EnvelopeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, EnvelopeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, EnvelopeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, EnvelopeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::KeySize;
    use crate::room::Member;
    use std::sync::OnceLock;

    fn ids() -> &'static (Identity, Identity, Identity) {
        static IDS: OnceLock<(Identity, Identity, Identity)> = OnceLock::new();
        IDS.get_or_init(|| {
            let mk = |u: &str| {
                Identity::derive_unchecked(u, &format!("{u} test password"), KeySize::Rsa2048)
                    .unwrap()
            };
            (mk("alice"), mk("bob"), mk("carol"))
        })
    }

    fn member(i: &Identity) -> Member {
        i.contact_code().into()
    }

    fn pos(seq: u64) -> Position {
        Position {
            seq,
            prev: [0; 32],
            lamport: seq,
            timestamp_ms: 1_700_000_000_000,
        }
    }

    fn text(from: &str, t: &str) -> Payload {
        Payload {
            from: from.into(),
            text: Some(t.into()),
            receipt: None,
        }
    }

    #[test]
    fn shared_room_roundtrip() {
        let (alice, bob, _) = ids();
        let room = Room::named("lobby", None).unwrap();
        let env = Envelope::seal(alice, &room, Kind::Text, pos(1), &text("alice", "hi")).unwrap();
        let parsed = Envelope::parse(env.bytes().to_vec()).unwrap();
        assert_eq!(parsed.author_id(), alice.id());
        assert_eq!(parsed.hash(), env.hash());
        assert_eq!(parsed.open(&room, bob).unwrap(), text("alice", "hi"));
        // The plaintext is not visible in the bytes.
        assert!(!env.bytes().windows(2).any(|w| w == b"hi"));
    }

    #[test]
    fn wrong_room_password_cannot_read() {
        let (alice, bob, _) = ids();
        let room = Room::named("lobby", Some("right password")).unwrap();
        let wrong = Room::named("lobby", Some("wrong password")).unwrap();
        let env = Envelope::seal(alice, &room, Kind::Text, pos(1), &text("alice", "x")).unwrap();
        assert_eq!(env.open(&wrong, bob), Err(EnvelopeError::WrongRoom));
        // Even with the right id but a wrong key, decryption fails.
        let mut forged = wrong.clone();
        forged.id = room.id;
        assert_eq!(env.open(&forged, bob), Err(EnvelopeError::Undecryptable));
    }

    #[test]
    fn direct_room_only_members_read() {
        let (alice, bob, carol) = ids();
        let room = Room::direct(member(alice), member(bob));
        let env = Envelope::seal(alice, &room, Kind::Text, pos(1), &text("alice", "psst")).unwrap();
        assert_eq!(env.open(&room, bob).unwrap().text.as_deref(), Some("psst"));
        assert_eq!(
            env.open(&room, alice).unwrap().text.as_deref(),
            Some("psst")
        );
        assert_eq!(env.open(&room, carol), Err(EnvelopeError::Undecryptable));
        assert_eq!(
            Room::direct(member(bob), member(alice)).id,
            room.id,
            "both sides derive the same direct room"
        );
    }

    #[test]
    fn tampering_anywhere_is_detected() {
        let (alice, _, _) = ids();
        let room = Room::named("lobby", None).unwrap();
        let env = Envelope::seal(alice, &room, Kind::Text, pos(3), &text("alice", "hi")).unwrap();
        let bytes = env.bytes().to_vec();
        for i in (0..bytes.len()).step_by(7) {
            let mut t = bytes.clone();
            t[i] ^= 0x40;
            assert!(Envelope::parse(t).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn malformed_input_never_panics() {
        let (alice, _, _) = ids();
        let room = Room::named("lobby", None).unwrap();
        let env = Envelope::seal(alice, &room, Kind::Text, pos(1), &text("alice", "hi")).unwrap();
        let bytes = env.bytes().to_vec();
        for n in 0..bytes.len() {
            assert!(Envelope::parse(bytes[..n].to_vec()).is_err());
        }
        assert!(matches!(
            Envelope::parse(vec![0u8; MAX_ENVELOPE + 1]),
            Err(EnvelopeError::Oversized(_))
        ));
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(Envelope::parse(extra).is_err());
    }

    #[test]
    fn oversized_text_is_refused_at_seal() {
        let (alice, _, _) = ids();
        let room = Room::named("lobby", None).unwrap();
        let big = "x".repeat(MAX_TEXT + 1);
        assert_eq!(
            Envelope::seal(alice, &room, Kind::Text, pos(1), &text("alice", &big)).err(),
            Some(EnvelopeError::TextTooLong(MAX_TEXT + 1))
        );
        let ok = "x".repeat(MAX_TEXT);
        assert!(Envelope::seal(alice, &room, Kind::Text, pos(1), &text("alice", &ok)).is_ok());
    }

    #[test]
    fn runaway_lamport_clocks_are_refused() {
        let (alice, _, _) = ids();
        let room = Room::named("lobby", None).unwrap();
        let mut p = pos(1);
        p.lamport = MAX_LAMPORT;
        let env = Envelope::seal(alice, &room, Kind::Text, p, &text("alice", "x"));
        assert!(matches!(env, Err(EnvelopeError::Malformed(_))));
    }
}
