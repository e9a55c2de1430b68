//! The signed, encrypted envelope every message travels and rests in.
//!
//! Layout (version 2, all integers big-endian; documented in docs/protocol.md):
//!
//! ```text
//! "CC" | version u8 = 2 | kind u8 | room id [32]
//! | author id [32] | key len u16 | author public key (DER SubjectPublicKeyInfo), or nothing
//! | seq u64 | prev hash [32] | lamport u64 | timestamp ms u64
//! | access u8 (0 = shared room key, 1 = wrapped per member)
//!   [access 1: count u8 | count x (recipient id [32] | len u16 | RSA-OAEP wrapped key)]
//! | nonce [12]                                   <- header ends: AES-GCM AAD = header
//! | ciphertext len u32 | AES-256-GCM ciphertext || tag
//! | signature len u16 | RSA-PSS-SHA256 signature over every byte before "signature len"
//! ```
//!
//! The key travels only in an author's first entry of a room and in receipts (see
//! [`crate::authors`]); elsewhere "key len" is 0 and readers look the key up by id. Version 1
//! (no author id, the key in every envelope) is still read, for journals written before.
//!
//! The signature covers the whole envelope, so any replica can verify authorship without
//! being able to read the content; the entry hash (SHA-256 of all bytes) chains an author's
//! entries through `prev`.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::authors::AuthorKeys;
use crate::crypto::{self, NONCE_LEN};
use crate::identity::{Identity, IdentityError, PublicIdentity, UserId};
use crate::journal::EntryMeta;
use crate::receipt::Heads;
use crate::room::{Access, Room, RoomId};

const MAGIC: &[u8; 2] = b"CC";
/// Current envelope version.
pub const VERSION: u8 = 2;
/// The version that carried the author's key in every envelope; still read.
const VERSION_KEYED: u8 = 1;
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
    /// An edit or a deletion of one of the author's earlier messages in the room (which one
    /// is inside the ciphertext: [`Payload::revises`]).
    Revision,
    /// A reaction to a message of the room, or taking one back ([`Payload::react`]).
    Reaction,
}

impl Kind {
    fn to_u8(self) -> u8 {
        match self {
            Kind::Text => 1,
            Kind::File => 2,
            Kind::Receipt => 3,
            Kind::Revision => 4,
            Kind::Reaction => 5,
        }
    }

    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Kind::Text),
            2 => Some(Kind::File),
            3 => Some(Kind::Receipt),
            4 => Some(Kind::Revision),
            5 => Some(Kind::Reaction),
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
    #[error("the author's key is not known here yet (its first entry has not arrived)")]
    UnknownAuthor,
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
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Payload {
    /// The author's username.
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A delivery receipt: heads of the sender's version vector (see [`crate::receipt`]);
    /// only those that moved since its last receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Heads>,
    /// A shared file (kind `file`): what members need to fetch and read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<crate::files::FileRef>,
    /// A revision (kind `revision`): the seq of the author's earlier message in the room
    /// that this one replaces, with `text` its new text, or deletes, without `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revises: Option<u64>,
    /// A reply (kind `text`): the message it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<ReplyTo>,
    /// A reaction (kind `reaction`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub react: Option<React>,
    /// An invitation to a group room (kind `text`, in a direct room only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite: Option<Invite>,
}

/// An invitation to a room, sent in a direct room: what the invitee's node needs to join it.
/// To a group (`members`), sent to each member by the member who created it: the group's id
/// follows from the name and the members' ids, so every member's node arrives at the same
/// room. To a named room (`shared`), sent by a member to a contact: the room's id and key,
/// which its name and password give (the password itself does not travel).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Invite {
    /// The room's name.
    pub name: String,
    /// A group: every member's contact code (`cc1:...`), the inviter's and the invitee's
    /// among them: the keys that messages of the group are wrapped for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// A named room: its id and content key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedRoom>,
}

/// What joins a named room: its id and key (64 hex digits each), and whether a password
/// went into them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SharedRoom {
    pub id: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub password: bool,
}

impl Invite {
    /// A named room's invitation, from the room.
    pub fn named(room: &Room) -> Option<Invite> {
        let crate::room::Access::Shared(key) = &room.access else {
            return None;
        };
        Some(Invite {
            name: room.id_name().to_string(),
            members: Vec::new(),
            shared: Some(SharedRoom {
                id: room.id.to_hex(),
                key: hex::encode(&key[..]),
                password: room.has_password,
            }),
        })
    }

    /// The room it invites to, if it makes one: a group of 2 to 32 members whose codes
    /// parse, or a named room whose id and key are well formed (and, without a password,
    /// are the ones its name gives).
    pub fn room(&self) -> Option<Room> {
        match (&self.shared, self.members.is_empty()) {
            (None, false) => self.group(),
            (Some(shared), true) => Self::shared(&self.name, shared),
            _ => None,
        }
    }

    fn group(&self) -> Option<Room> {
        if self.members.len() > MAX_RECIPIENTS {
            return None;
        }
        let members = self
            .members
            .iter()
            .map(|code| crate::identity::ContactCode::decode(code).map(Into::into))
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        Room::group(&self.name, members).ok()
    }

    fn shared(name: &str, shared: &SharedRoom) -> Option<Room> {
        let hex32 = |s: &str| {
            let mut b = [0u8; 32];
            (valid_id(s) && hex::decode_to_slice(s, &mut b).is_ok()).then_some(b)
        };
        let (id, key) = (hex32(&shared.id)?, hex32(&shared.key)?);
        if !shared.password {
            // Anyone can work these out from the name: they must be those.
            let room = Room::named(name, None).ok()?;
            let invited = Self::named(&room)?;
            return (invited.shared.as_ref() == Some(shared)).then_some(room);
        }
        crate::room::StoredRoom {
            name: crate::room::check_name(name).ok()?,
            id,
            kind: crate::room::RoomKind::Named,
            has_password: true,
            key: Some(key),
            members: Vec::new(),
        }
        .into_room()
    }
}

/// The longest reaction, in bytes: an emoji, or a short word.
pub const MAX_REACTION: usize = 32;

/// A reaction: to the message (author, seq) of the room, this emoji (or short word); with
/// `undo`, taking back the reactor's earlier one of the same.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct React {
    /// The author's user id, 64 lowercase hex digits.
    pub author_id: String,
    pub seq: u64,
    pub emoji: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub undo: bool,
}

impl React {
    /// Whether it names a message and a reaction within bounds (no spaces, no
    /// [deceptive](crate::chars::is_deceptive) characters).
    pub fn is_valid(&self) -> bool {
        valid_id(&self.author_id)
            && self.seq >= 1
            && !self.emoji.is_empty()
            && self.emoji.len() <= MAX_REACTION
            && !self
                .emoji
                .chars()
                .any(|c| c.is_whitespace() || crate::chars::is_deceptive(c))
    }

    /// The author id, as bytes (`None` unless [`Self::is_valid`]).
    pub fn author(&self) -> Option<[u8; 32]> {
        let mut id = [0u8; 32];
        hex::decode_to_slice(&self.author_id, &mut id).ok()?;
        valid_id(&self.author_id).then_some(id)
    }
}

/// 64 lowercase hex digits: a user id as views and payloads write it.
fn valid_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The longest quote a reply carries, in bytes.
pub const MAX_QUOTE: usize = 280;

/// What a reply says of the message it answers: that message's author and seq (its place
/// in the author's chain), and the start of it as the replier saw it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplyTo {
    /// The author's user id, 64 lowercase hex digits.
    pub author_id: String,
    pub seq: u64,
    /// The start of the message's text (or `[file] NAME`), at most [`MAX_QUOTE`] bytes:
    /// the replier's words, so a reader sees what was answered even without the message.
    pub quote: String,
}

/// The start of `text`, at most [`MAX_QUOTE`] bytes, cut at a character (and marked when
/// cut).
pub fn quote(text: &str) -> String {
    if text.len() <= MAX_QUOTE {
        return text.to_string();
    }
    let mut end = MAX_QUOTE - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

impl ReplyTo {
    /// Whether it names a message at all: an id, a seq, a quote within bounds.
    pub fn is_valid(&self) -> bool {
        valid_id(&self.author_id) && self.seq >= 1 && self.quote.len() <= MAX_QUOTE
    }
}

/// A parsed envelope whose signature has been verified.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub kind: Kind,
    pub room: RoomId,
    pub author: PublicIdentity,
    /// Whether the envelope carries its author's key (see [`crate::authors`]).
    pub carries_key: bool,
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
    /// Encrypts and signs `payload` for `room` as `author`. The author's key goes where a
    /// reader may not have it yet: the author's first entry of the room, and receipts.
    pub fn seal(
        author: &Identity,
        room: &Room,
        kind: Kind,
        pos: Position,
        payload: &Payload,
    ) -> Result<Envelope, EnvelopeError> {
        let carry_key = kind == Kind::Receipt || pos.seq == 1;
        Self::seal_carrying_key(author, room, kind, pos, payload, carry_key)
    }

    /// [`Envelope::seal`], with the caller deciding whether the envelope carries the
    /// author's key: a receipt from a member who has written in the room can leave it out,
    /// as its readers met the key in that member's first entry.
    pub fn seal_carrying_key(
        author: &Identity,
        room: &Room,
        kind: Kind,
        pos: Position,
        payload: &Payload,
        carry_key: bool,
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

        let der: &[u8] = if carry_key {
            author.public().der()
        } else {
            &[]
        };
        let mut b = Vec::with_capacity(512 + der.len() + plain.len());
        b.extend_from_slice(MAGIC);
        b.push(VERSION);
        b.push(kind.to_u8());
        b.extend_from_slice(&room.id.0);
        b.extend_from_slice(&author.id().0);
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
        let me = author.public();
        let env = Envelope::parse_with(b, |id| (*id == me.id()).then(|| me.clone()))?;
        debug_assert_eq!(env.header_len, header_len);
        Ok(env)
    }

    /// The kind an envelope says it is, unverified: lets a reader that wants one kind (the
    /// file messages of a room, say) skip the others without checking their signatures.
    pub fn peek_kind(bytes: &[u8]) -> Option<Kind> {
        match bytes {
            [m0, m1, version, kind, ..]
                if [*m0, *m1] == *MAGIC && (*version == VERSION || *version == VERSION_KEYED) =>
            {
                Kind::from_u8(*kind)
            }
            _ => None,
        }
    }

    /// Whether the envelope `bytes` hold a message (a text or a file), read off its header:
    /// what a room's message counts count, not its edits and reactions.
    pub fn is_message(bytes: &[u8]) -> bool {
        matches!(Self::peek_kind(bytes), Some(Kind::Text | Kind::File))
    }

    /// Parses `bytes` and verifies the author's signature, with the author's key from the
    /// envelope or else from `keys`. Never panics on any input.
    pub fn parse(bytes: Vec<u8>, keys: &AuthorKeys) -> Result<Envelope, EnvelopeError> {
        Self::parse_with(bytes, |id| keys.get(id))
    }

    fn parse_with(
        bytes: Vec<u8>,
        lookup: impl FnOnce(&UserId) -> Option<PublicIdentity>,
    ) -> Result<Envelope, EnvelopeError> {
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
        if version != VERSION && version != VERSION_KEYED {
            return Err(EnvelopeError::Version(version));
        }
        let kind = Kind::from_u8(r.u8()?).ok_or(EnvelopeError::Malformed("unknown kind"))?;
        let room = RoomId(r.array()?);
        let named = if version == VERSION {
            Some(UserId(r.array()?))
        } else {
            None
        };
        let der_len = r.u16()? as usize;
        if der_len > MAX_KEY_DER {
            return Err(EnvelopeError::Malformed("author key too long"));
        }
        let der = r.take(der_len)?;
        let carries_key = der_len > 0;
        let author = match (named, carries_key) {
            (_, true) => {
                let key = PublicIdentity::from_der(der)
                    .map_err(|_| EnvelopeError::Malformed("bad author key"))?;
                // The id is the key's hash: compared in constant time like any digest.
                if named.is_some_and(|id| !crypto::ct_eq(&id.0, &key.id().0)) {
                    return Err(EnvelopeError::Malformed("author id does not match the key"));
                }
                key
            }
            (Some(id), false) => lookup(&id).ok_or(EnvelopeError::UnknownAuthor)?,
            (None, false) => return Err(EnvelopeError::Malformed("no author key")),
        };
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
            carries_key,
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

    /// Keys of alice and bob, as a node that has met them holds them.
    fn known() -> AuthorKeys {
        let keys = AuthorKeys::default();
        keys.insert(ids().0.public().clone());
        keys.insert(ids().1.public().clone());
        keys
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
            file: None,
            revises: None,
            reply_to: None,
            react: None,
            invite: None,
        }
    }

    #[test]
    fn shared_room_roundtrip() {
        let (alice, bob, _) = ids();
        let room = Room::named("lobby", None).unwrap();
        // Long enough not to turn up by chance in a kilobyte of ciphertext and signature
        // (two bytes did, in about one run in seventy).
        let said = "hi bob, this stays between us";
        let env = Envelope::seal(alice, &room, Kind::Text, pos(1), &text("alice", said)).unwrap();
        let parsed = Envelope::parse(env.bytes().to_vec(), &AuthorKeys::default()).unwrap();
        assert_eq!(parsed.author_id(), alice.id());
        assert_eq!(parsed.hash(), env.hash());
        assert_eq!(parsed.open(&room, bob).unwrap(), text("alice", said));
        // The plaintext is not visible in the bytes.
        assert!(
            !env.bytes()
                .windows(said.len())
                .any(|w| w == said.as_bytes())
        );
    }

    #[test]
    fn the_kind_is_read_without_verifying() {
        let (alice, _, _) = ids();
        let room = Room::named("lobby", None).unwrap();
        for kind in [Kind::Text, Kind::File, Kind::Receipt] {
            let env = Envelope::seal(alice, &room, kind, pos(1), &text("alice", "x")).unwrap();
            assert_eq!(Envelope::peek_kind(env.bytes()), Some(kind));
        }
        assert_eq!(Envelope::peek_kind(b""), None);
        assert_eq!(Envelope::peek_kind(b"CC\x02"), None);
        assert_eq!(Envelope::peek_kind(b"CC\x09\x01"), None, "unknown version");
        assert_eq!(Envelope::peek_kind(b"XX\x02\x01"), None, "bad magic");
        assert_eq!(Envelope::peek_kind(b"CC\x02\x07"), None, "unknown kind");
    }

    /// The key rides in an author's first entry of a room and in receipts only; a later
    /// entry is verified against the key learnt from the first, and waits without it.
    #[test]
    fn the_author_key_travels_once() {
        let (alice, _, _) = ids();
        let room = Room::named("lobby", None).unwrap();
        let first = Envelope::seal(alice, &room, Kind::Text, pos(1), &text("alice", "a")).unwrap();
        let later = Envelope::seal(alice, &room, Kind::Text, pos(2), &text("alice", "a")).unwrap();
        let receipt = Envelope::seal(alice, &room, Kind::Receipt, pos(7), &text("alice", "a"));
        assert!(first.carries_key && !later.carries_key && receipt.unwrap().carries_key);
        assert!(first.bytes().len() >= later.bytes().len() + alice.public().der().len());

        let none = AuthorKeys::default();
        assert_eq!(
            Envelope::parse(later.bytes().to_vec(), &none).err(),
            Some(EnvelopeError::UnknownAuthor)
        );
        let parsed = Envelope::parse(first.bytes().to_vec(), &none).unwrap();
        none.insert(parsed.author.clone());
        let parsed = Envelope::parse(later.bytes().to_vec(), &none).unwrap();
        assert_eq!(parsed.author_id(), alice.id());

        // A known key does not let someone else's envelope pass as alice's: the id is
        // signed, and a key that is not the id's own is refused.
        let (_, bob, _) = ids();
        let mut forged = first.bytes().to_vec();
        let at = 2 + 1 + 1 + 32;
        forged[at..at + 32].copy_from_slice(&bob.id().0);
        assert!(matches!(
            Envelope::parse(forged, &known()),
            Err(EnvelopeError::Malformed(_))
        ));
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
            assert!(
                Envelope::parse(t, &known()).is_err(),
                "flip at {i} accepted"
            );
        }
    }

    #[test]
    fn malformed_input_never_panics() {
        let (alice, _, _) = ids();
        let room = Room::named("lobby", None).unwrap();
        let env = Envelope::seal(alice, &room, Kind::Text, pos(1), &text("alice", "hi")).unwrap();
        let bytes = env.bytes().to_vec();
        for n in 0..bytes.len() {
            assert!(Envelope::parse(bytes[..n].to_vec(), &known()).is_err());
        }
        assert!(matches!(
            Envelope::parse(vec![0u8; MAX_ENVELOPE + 1], &known()),
            Err(EnvelopeError::Oversized(_))
        ));
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(Envelope::parse(extra, &known()).is_err());
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
