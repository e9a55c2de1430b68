//! The node's protocol state, without the network: joined rooms, contacts, the journal, and
//! what to do with a message coming in or going out. Plain synchronous code, so it can be
//! tested by handing envelopes from one `Core` to another.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::authors::AuthorKeys;
use crate::census::Census;
use crate::claims::{Arrival, Claims};
use crate::crypto;
use crate::envelope::{Envelope, EnvelopeError, Kind, Payload, Position};
use crate::files::FileRef;
use crate::identity::{ContactCode, Identity, IdentityError, UserId};
use crate::journal::{AppendOutcome, EntryMeta, Id, Journal, JournalError, Page, StoredEntry};
use crate::receipt::{Heads, ShortId};
use crate::room::{Member, Room, RoomError, RoomId, RoomKind, StoredRoom};
use crate::shown::Shown;
use crate::sync::{self, ForkRef, Range};

const OWNER_KEY: &str = "owner";
const ROOM_PREFIX: &str = "room/";
const CONTACT_PREFIX: &str = "contact/";

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("unknown room '{0}': join it first (cryptchat join ROOM), or see cryptchat rooms")]
    UnknownRoom(String),
    #[error("already in room '{0}'; to change its password, leave it first")]
    AlreadyJoined(String),
    #[error("already in {0} rooms, the most one node can join: leave a room first")]
    TooManyRooms(usize),
    #[error("unknown contact '{0}': add it with cryptchat contact add NAME CODE")]
    UnknownContact(String),
    #[error("contact name '{0}' is taken by another key")]
    ContactExists(String),
    #[error("that contact code is your own")]
    OwnContact,
    #[error(
        "the data dir {0} belongs to another identity: wrong username or password? \
         (use another --data-dir for another identity)"
    )]
    WrongIdentity(String),
    #[error("message is empty")]
    EmptyMessage,
    #[error("no file '{0}' in room '{1}': see cryptchat files ROOM")]
    UnknownFile(String, String),
    #[error("more than one file in room '{1}' starts with '{0}': give more of its id")]
    AmbiguousFile(String, String),
    #[error(
        "stored setting '{0}' cannot be read; it was written by another identity or is corrupt"
    )]
    CorruptSetting(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Room(#[from] RoomError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

/// A message as shown to users and scripts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MessageView {
    /// Local room name.
    pub room: String,
    pub room_id: String,
    pub author_id: String,
    /// The username the author gave (self-asserted: compare `author_id` or `contact`).
    pub author: String,
    /// Our contact name for the author, when the author is a contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    pub seq: u64,
    pub lamport: u64,
    pub timestamp_ms: u64,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A shared file (kind `file`): fetch it with its id. (Boxed: most messages are text.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<Box<FileView>>,
    pub hash: String,
    pub mine: bool,
    /// Known members (other than the author) known to hold this message: ourselves, and
    /// those whose delivery receipts cover it.
    pub delivered_to: u32,
    /// Known members of the room other than the author.
    pub known_members: u32,
}

/// A shared file as shown to users: its id, name and size (never its key).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileView {
    pub id: String,
    pub name: String,
    pub size: u64,
    /// Whether this node holds the whole file (shared it, or fetched it), when the view
    /// was made: it opens without the network, and members can fetch it from us.
    #[serde(default)]
    pub held: bool,
}

impl From<&FileRef> for FileView {
    fn from(f: &FileRef) -> Self {
        FileView {
            id: f.id(),
            name: f.name.clone(),
            size: f.size,
            held: false,
        }
    }
}

/// A joined room as listed to users.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoomView {
    pub name: String,
    pub id: String,
    pub topic: String,
    pub kind: RoomKind,
    pub has_password: bool,
    pub messages: u64,
    /// Entries held ahead of a gap in their author's chain, waiting for the missing ones.
    pub pending: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// Authors caught signing two different entries at the same position.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forks: Vec<ForkView>,
}

/// A known member of a room (see `Core::members`), as this node knows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberView {
    pub user_id: String,
    /// The username it gave in its last message here (self-asserted: compare `user_id` or
    /// `contact`); none while we hold none of its messages (it has only said what it holds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Our contact name for it, when it is a contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// How many of its messages in the room this node holds.
    pub messages: u64,
    /// Whether this member is us.
    pub me: bool,
}

/// A detected fork: proof that an author signed two entries at the same seq.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ForkView {
    pub author_id: String,
    pub seq: u64,
}

/// The two conflicting envelopes of a fork: (the one we kept, the conflicting one).
pub type ForkPair = (Vec<u8>, Vec<u8>);

/// What storing a batch of synchronised entries did.
#[derive(Debug, Default)]
pub struct BatchReport {
    /// Newly stored, contiguous entries, as messages (those not shown already: see
    /// [`Core::preview`]).
    pub appended: Vec<MessageView>,
    /// Entries of the batch stored in their chain, shown before or not (not counting held
    /// ones they released).
    pub added: usize,
    pub pending: usize,
    pub duplicates: usize,
    /// Authors whose entries conflicted with ours (fork proofs recorded).
    pub forked_authors: Vec<Id>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContactView {
    pub name: String,
    pub user_id: String,
    pub room: String,
}

/// What happened to an incoming envelope; maps onto gossipsub's Accept/Ignore/Reject.
#[derive(Debug)]
pub enum Incoming {
    /// New and valid: stored durably; forward it. With the views of the entries it released:
    /// held ones (received ahead of a gap) that it made contiguous, in seq order.
    Accepted(Box<MessageView>, Vec<MessageView>),
    /// The same, for an entry shown already when it was admitted ([`Core::preview`]): only
    /// the entries it released are new to show.
    Shown(Vec<MessageView>),
    /// Valid but stored ahead of a gap in the author's chain: forward it.
    Pending,
    /// A member's delivery receipt: recorded, not journaled; forward it. What it says the
    /// member holds and we lack is for reconciliation to fetch ([`Core::chase_claims`]).
    Receipt,
    /// Already held: do not forward again, do not penalise.
    Duplicate,
    /// Not for a room we are in.
    NotOurs,
    /// From an author whose key we lack (its first entry has not arrived): not forwarded,
    /// not held against the relayer, whose history reconciliation pulls from the start.
    UnknownAuthor,
    /// Invalid: penalise the sender, do not forward.
    Rejected(Rejection),
}

/// The outcome of [`Core::admit`].
#[derive(Debug)]
pub enum Admitted {
    /// Valid; store it with [`Core::commit`].
    Entry(Box<(RoomId, Envelope, Payload)>),
    /// Settled without storing anything.
    Done(Incoming),
}

/// Why an incoming envelope was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    Oversized,
    Malformed,
    BadSignature,
    WrongRoom,
    Undecryptable,
    NotAMember,
    Fork,
    /// Signed by an author whose key has not reached us yet (not counted as invalid).
    UnknownAuthor,
}

impl Rejection {
    fn from_envelope(e: &EnvelopeError) -> Self {
        match e {
            EnvelopeError::Oversized(_) => Rejection::Oversized,
            EnvelopeError::BadSignature => Rejection::BadSignature,
            EnvelopeError::WrongRoom => Rejection::WrongRoom,
            EnvelopeError::Undecryptable => Rejection::Undecryptable,
            EnvelopeError::UnknownAuthor => Rejection::UnknownAuthor,
            EnvelopeError::Malformed(_)
            | EnvelopeError::Version(_)
            | EnvelopeError::BadPayload
            | EnvelopeError::TextTooLong(_)
            | EnvelopeError::Build(_) => Rejection::Malformed,
        }
    }
}

/// Counters of what came in, shown by `cryptchat status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    pub sent: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: BTreeMap<String, u64>,
}

/// The protocol state of one node.
pub struct Core {
    identity: Arc<Identity>,
    /// Shared with the thread that makes it durable (see [`Core::shared_journal`]).
    journal: Arc<Journal>,
    /// Keys of the authors met so far: envelopes name their author by id (see
    /// [`crate::authors`]).
    keys: AuthorKeys,
    rooms: BTreeMap<RoomId, Room>,
    names: BTreeMap<String, RoomId>,
    contacts: BTreeMap<String, ContactCode>,
    counters: Counters,
    /// What each member's receipts say it holds, per room.
    receipts: HashMap<RoomId, HashMap<UserId, Receipt>>,
    /// Known members of each room: a direct room's member list; in a named room everyone
    /// who has written (an entry stored) or said what it holds (a receipt, or heads on a
    /// message), and ourselves. Kept as they appear, since every delivered message counts
    /// them.
    members: HashMap<RoomId, HashSet<UserId>>,
    /// Per room, who we heard from lately: how big the room is beyond the members we know
    /// (see [`crate::census`]), for pacing.
    census: HashMap<RoomId, Census>,
    /// Per room, the furthest any member said it holds of each author's chain (receipts and
    /// heads riding on messages), where that is past what we hold: what reconciliation
    /// should fetch (see [`Core::chase_claims`]).
    claims: Claims,
    /// Received entries shown before they were stored ([`Core::preview`]).
    shown: Shown,
    /// What we last told each room (by receipts, and by heads riding on our messages): the
    /// next receipt or message carries only what changed.
    announced: HashMap<RoomId, HashMap<Id, Told>>,
    /// Counts announcements (receipts and messages carrying heads), to order heads by when
    /// they were last told.
    told_clock: u64,
    /// Joins past this many rooms are refused ([`MAX_ROOMS`]; lower in tests).
    room_limit: usize,
    /// Heads one message carries at most ([`MAX_PIGGYBACK_HEADS`]; lower in tests).
    piggyback_max: usize,
}

/// The most rooms one node can be in. A node tells each new peer all its rooms in one
/// gossipsub frame, so the list must fit in [`crate::net::MAX_TRANSMIT`]; past that, peers
/// would not learn of any of its rooms.
pub const MAX_ROOMS: usize = 1000;

/// What we last told a room of one author's chain: the seq, and when (`Core::told_clock`).
#[derive(Clone, Copy, Debug, Default)]
struct Told {
    seq: u64,
    at: u64,
}

/// What a member's receipts say: (latest receipt counter, author -> contiguous seq held).
/// Receipts carry changes, so they merge: a held seq only ever grows.
type Receipt = (u64, HashMap<ShortId, u64>);

fn short_id(id: &Id) -> ShortId {
    id[..8].try_into().expect("ids are 32 bytes")
}

/// Authors whose progress we track per member, and claims per room: what members say they
/// hold is theirs to make up, so memory for it is capped (a room with more authors than
/// this still reconciles, through the backstop rounds).
const MAX_TRACKED_AUTHORS: usize = 4096;

/// At most this many authors in one receipt, so a receipt always fits in one envelope.
pub const MAX_RECEIPT_AUTHORS: usize = 256;

/// At most this many heads ride on one message (about 13 bytes each): enough for the
/// authors of a busy room between two of a member's messages, while a 100-byte message
/// stays under gossipsub's 1,000-byte threshold for IDONTWANT (which costs an extra frame to
/// every mesh peer). The rest rides first on the next message, or goes in the next receipt.
const MAX_PIGGYBACK_HEADS: usize = 24;

/// Heads in their travelling form.
fn packed(heads: &[(Id, u64)]) -> Heads {
    Heads(heads.iter().map(|(a, seq)| (short_id(a), *seq)).collect())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Core {
    /// Opens the node state on a journal; refuses a journal that belongs to another identity.
    pub fn open(identity: Arc<Identity>, journal: Journal) -> Result<Core, CoreError> {
        let keys = AuthorKeys::default();
        keys.insert(identity.public().clone());
        let mut core = Core {
            identity,
            journal: Arc::new(journal),
            keys,
            rooms: BTreeMap::new(),
            names: BTreeMap::new(),
            contacts: BTreeMap::new(),
            counters: Counters::default(),
            receipts: HashMap::new(),
            members: HashMap::new(),
            census: HashMap::new(),
            claims: Claims::new(MAX_TRACKED_AUTHORS),
            shown: Shown::default(),
            announced: HashMap::new(),
            told_clock: 0,
            room_limit: MAX_ROOMS,
            piggyback_max: MAX_PIGGYBACK_HEADS,
        };
        core.check_owner()?;
        for (key, blob) in core.journal.settings_with_prefix(ROOM_PREFIX)? {
            let plain = core.unseal(&key, &blob)?;
            let stored: StoredRoom = serde_json::from_slice(&plain)
                .map_err(|_| CoreError::CorruptSetting(key.clone()))?;
            let room = stored
                .into_room()
                .ok_or_else(|| CoreError::CorruptSetting(key.clone()))?;
            core.names.insert(room.name.clone(), room.id);
            core.rooms.insert(room.id, room);
        }
        let ids: Vec<RoomId> = core.rooms.keys().copied().collect();
        for id in ids {
            core.gather_members(id)?;
        }
        for (key, blob) in core.journal.settings_with_prefix(CONTACT_PREFIX)? {
            let plain = core.unseal(&key, &blob)?;
            let (name, code) = serde_json::from_slice::<(String, String)>(&plain)
                .ok()
                .and_then(|(n, c)| Some((n, ContactCode::decode(&c).ok()?)))
                .ok_or_else(|| CoreError::CorruptSetting(key.clone()))?;
            core.contacts.insert(name, code);
        }
        core.learn_stored_keys()?;
        Ok(core)
    }

    /// Learns the key of every author we hold entries of, from its first entry in each room
    /// (the one that carries the key). Runs at start-up; from then on keys are learnt as
    /// envelopes arrive.
    fn learn_stored_keys(&self) -> Result<(), CoreError> {
        for room in self.rooms.keys() {
            for author in self.journal.vector(&room.0)?.keys() {
                if self.keys.get(&UserId(*author)).is_some() {
                    continue;
                }
                if let Some(first) = self.journal.get(&room.0, author, 1)?
                    && let Ok(env) = Envelope::parse(first.envelope, &self.keys)
                {
                    self.keys.insert(env.author);
                }
            }
        }
        Ok(())
    }

    /// The first identity to open a journal owns it; another identity (most likely a mistyped
    /// password) gets a clear error instead of an empty-looking node.
    fn check_owner(&mut self) -> Result<(), CoreError> {
        let me = self.identity.id();
        match self.journal.get_setting(OWNER_KEY)? {
            Some(blob) => {
                match crypto::open_blob(self.identity.local_key(), OWNER_KEY.as_bytes(), &blob) {
                    Ok(v) if crypto::ct_eq(&v, &me.0) => Ok(()),
                    _ => Err(CoreError::WrongIdentity(
                        self.journal.path().display().to_string(),
                    )),
                }
            }
            None => {
                let blob =
                    crypto::seal_blob(self.identity.local_key(), OWNER_KEY.as_bytes(), &me.0)
                        .map_err(IdentityError::from)?;
                self.journal.put_setting(OWNER_KEY, &blob)?;
                Ok(())
            }
        }
    }

    /// Settings key for a contact: keyed by our local secret, so the file does not list names.
    fn contact_key(&self, name: &str) -> String {
        let h = crypto::sha256_framed(
            "cryptchat/contact-key/v1",
            &[self.identity.local_key(), name.as_bytes()],
        );
        format!("{CONTACT_PREFIX}{}", hex::encode(&h[..16]))
    }

    fn seal(&self, key: &str, plain: &[u8]) -> Result<Vec<u8>, CoreError> {
        Ok(
            crypto::seal_blob(self.identity.local_key(), key.as_bytes(), plain)
                .map_err(IdentityError::from)?,
        )
    }

    fn unseal(&self, key: &str, blob: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, CoreError> {
        crypto::open_blob(self.identity.local_key(), key.as_bytes(), blob)
            .map_err(|_| CoreError::CorruptSetting(key.to_string()))
    }

    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The author keys this node knows, for verification off the event loop.
    pub fn author_keys(&self) -> &AuthorKeys {
        &self.keys
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn rooms(&self) -> impl Iterator<Item = &Room> {
        self.rooms.values()
    }

    pub fn room(&self, id: &RoomId) -> Option<&Room> {
        self.rooms.get(id)
    }

    pub fn room_by_name(&self, name: &str) -> Result<&Room, CoreError> {
        self.names
            .get(name.trim())
            .and_then(|id| self.rooms.get(id))
            .ok_or_else(|| CoreError::UnknownRoom(name.trim().to_string()))
    }

    /// Joins a room (persisted, sealed with the identity's local key). Joining the same room
    /// again is a no-op; the same name with another password is refused.
    pub fn join(&mut self, room: Room) -> Result<(&Room, bool), CoreError> {
        if let Some(existing) = self.names.get(&room.name) {
            if *existing != room.id {
                return Err(CoreError::AlreadyJoined(room.name));
            }
            return Ok((&self.rooms[existing], false));
        }
        if self.rooms.len() >= self.room_limit {
            return Err(CoreError::TooManyRooms(self.rooms.len()));
        }
        let key = format!("{ROOM_PREFIX}{}", room.id.to_hex());
        let stored = serde_json::to_vec(&StoredRoom::from(&room))
            .map_err(|e| CoreError::CorruptSetting(e.to_string()))?;
        let blob = self.seal(&key, &stored)?;
        self.journal.put_setting(&key, &blob)?;
        let id = room.id;
        self.names.insert(room.name.clone(), id);
        self.rooms.insert(id, room);
        self.gather_members(id)?;
        Ok((&self.rooms[&id], true))
    }

    /// Leaves a room; its history stays in the journal (rejoining shows it again).
    pub fn leave(&mut self, name: &str) -> Result<Room, CoreError> {
        let id = self.room_by_name(name)?.id;
        self.journal
            .delete_setting(&format!("{ROOM_PREFIX}{}", id.to_hex()))?;
        self.names.retain(|_, v| *v != id);
        self.claims.forget(id);
        self.shown.forget_room(&id.0);
        self.members.remove(&id);
        self.census.remove(&id);
        self.rooms
            .remove(&id)
            .ok_or_else(|| CoreError::UnknownRoom(name.to_string()))
    }

    pub fn room_view(&self, room: &Room) -> Result<RoomView, CoreError> {
        let members = match &room.access {
            crate::room::Access::Shared(_) => vec![],
            crate::room::Access::Members(m) => m.iter().map(|m| m.username.clone()).collect(),
        };
        Ok(RoomView {
            name: room.name.clone(),
            id: room.id.to_hex(),
            topic: room.id.topic(),
            kind: room.kind,
            has_password: room.has_password,
            messages: self.journal.count(&room.id.0)?,
            pending: self.journal.pending_count(&room.id.0)?,
            members,
            forks: self
                .journal
                .forks(&room.id.0)?
                .into_iter()
                .map(|f| ForkView {
                    author_id: hex::encode(f.author),
                    seq: f.seq,
                })
                .collect(),
        })
    }

    /// Adds a contact and joins the direct room with it.
    pub fn add_contact(&mut self, name: &str, code: &str) -> Result<ContactView, CoreError> {
        let name = crate::identity::normalise_username(name)?;
        let code = ContactCode::decode(code)?;
        if code.identity.id() == self.identity.id() {
            return Err(CoreError::OwnContact);
        }
        if let Some(existing) = self.contacts.get(&name)
            && existing.identity.id() != code.identity.id()
        {
            return Err(CoreError::ContactExists(name));
        }
        let key = self.contact_key(&name);
        let value = serde_json::to_vec(&(&name, code.encode()))
            .map_err(|e| CoreError::CorruptSetting(e.to_string()))?;
        let blob = self.seal(&key, &value)?;
        self.journal.put_setting(&key, &blob)?;
        let me: Member = self.identity.contact_code().into();
        let mut them: Member = code.clone().into();
        them.username = name.clone();
        let room = Room::direct(me, them);
        let room_name = room.name.clone();
        self.contacts.insert(name.clone(), code.clone());
        match self.join(room) {
            Ok(_) | Err(CoreError::AlreadyJoined(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(ContactView {
            name,
            user_id: code.identity.id().to_hex(),
            room: room_name,
        })
    }

    pub fn contacts(&self) -> Vec<ContactView> {
        self.contacts
            .iter()
            .map(|(name, c)| ContactView {
                name: name.clone(),
                user_id: c.identity.id().to_hex(),
                room: format!("@{name}"),
            })
            .collect()
    }

    /// Looks up the members of a group among our contacts and joins the group room.
    pub fn create_group(&mut self, name: &str, members: &[String]) -> Result<RoomView, CoreError> {
        let mut list: Vec<Member> = vec![self.identity.contact_code().into()];
        for m in members {
            let code = self
                .contacts
                .get(m.trim())
                .ok_or_else(|| CoreError::UnknownContact(m.clone()))?;
            let mut member: Member = code.clone().into();
            member.username = m.trim().to_string();
            list.push(member);
        }
        let room = Room::group(name, list)?;
        let (room, _) = self.join(room)?;
        let room = room.clone();
        self.room_view(&room)
    }

    /// A room's known members, us first, then by how many of their messages we hold; their
    /// names are read from the journal by [`RoomReader::name_members`], off the event loop.
    pub fn members(
        &self,
        room_name: &str,
    ) -> Result<(RoomReader, Vec<(UserId, MemberView)>), CoreError> {
        let reader = self.reader(room_name)?;
        let room = reader.room_id();
        let vector = self.journal.vector(&room.0)?;
        let me = self.identity.id();
        let mut list: Vec<(UserId, MemberView)> = self
            .members
            .get(&room)
            .into_iter()
            .flatten()
            .map(|id| {
                let view = MemberView {
                    user_id: id.to_hex(),
                    name: None,
                    contact: self.contact_name(id),
                    messages: vector.get(&id.0).map_or(0, |h| h.seq),
                    me: *id == me,
                };
                (*id, view)
            })
            .collect();
        list.sort_by(|(_, a), (_, b)| {
            (b.me, b.messages, &a.user_id).cmp(&(a.me, a.messages, &b.user_id))
        });
        Ok((reader, list))
    }

    fn contact_name(&self, id: &UserId) -> Option<String> {
        self.contacts
            .iter()
            .find(|(_, c)| c.identity.id() == *id)
            .map(|(n, _)| n.clone())
    }

    fn view(&self, room: &Room, env: &Envelope, payload: Payload) -> MessageView {
        let author = env.author_id();
        let (delivered_to, known_members) = self.delivery(room, &author, env.seq);
        MessageView {
            room: room.name.clone(),
            room_id: room.id.to_hex(),
            author_id: author.to_hex(),
            author: payload.from,
            contact: self.contact_name(&author),
            seq: env.seq,
            lamport: env.lamport,
            // The author's clock is only for display, and never later than ours.
            timestamp_ms: env.timestamp_ms.min(now_ms()),
            kind: env.kind,
            text: payload.text,
            file: match env.kind {
                Kind::File => payload.file.as_ref().map(|f| {
                    let held = self.journal.is_provided(&f.provider_key());
                    Box::new(FileView {
                        held: held.unwrap_or(false),
                        ..FileView::from(f)
                    })
                }),
                _ => None,
            },
            hash: hex::encode(env.hash()),
            mine: author == self.identity.id(),
            delivered_to,
            known_members,
        }
    }

    /// Collects a room's known members (see `Core::members`) when it is loaded or joined;
    /// from then on a named room's are added as they appear.
    fn gather_members(&mut self, room: RoomId) -> Result<(), CoreError> {
        let members: HashSet<UserId> = match self.rooms.get(&room).and_then(Room::member_ids) {
            Some(ids) => ids.into_iter().collect(),
            None => {
                let mut m: HashSet<UserId> = self
                    .journal
                    .vector(&room.0)?
                    .keys()
                    .map(|a| UserId(*a))
                    .collect();
                m.extend(self.receipts.get(&room).into_iter().flat_map(|r| r.keys()));
                m.insert(self.identity.id());
                m
            }
        };
        self.members.insert(room, members);
        Ok(())
    }

    /// `member` has written in named room `room` or said what it holds there (a direct
    /// room's members are its list).
    fn add_member(&mut self, room: RoomId, member: UserId) {
        let named = self
            .rooms
            .get(&room)
            .is_some_and(|r| matches!(r.access, crate::room::Access::Shared(_)));
        if named && let Some(m) = self.members.get_mut(&room) {
            m.insert(member);
        }
    }

    /// A gossip message (entry or receipt) from `sender` reached us in `room`: counts,
    /// before `sender` joins the known members, whether it was one of them. `new` holds
    /// the senders of a batch stored at once that were not known yet: each is known from
    /// its next message on, and counts among the others known, as it would had the batch
    /// come one message at a time.
    fn census_heard(&mut self, room: RoomId, sender: UserId, new: &mut Vec<(RoomId, UserId)>) {
        if sender == self.identity.id() {
            return;
        }
        let Some(known) = self.members.get(&room) else {
            return;
        };
        let new_before = new.iter().filter(|(r, _)| *r == room).count();
        let others = known.len().saturating_sub(1) + new_before;
        let was_known = known.contains(&sender) || new.contains(&(room, sender));
        if !was_known {
            new.push((room, sender));
        }
        self.census
            .entry(room)
            .or_default()
            .heard(others, was_known);
    }

    /// How many members a room has, as far as pacing goes: the known members, or more
    /// when whom we hear says the room is bigger (see [`crate::census`]).
    pub fn room_size(&self, room: RoomId) -> usize {
        let known = self.member_count(room);
        self.census.get(&room).map_or(known, |c| c.estimate(known))
    }

    /// Whether the room's size can be told beyond the `neighbours` members (us included)
    /// we are connected to: we know more members than that, or the census has heard a
    /// known sender again (see [`crate::census::Census::recaptured`]). In a new room whose
    /// members have not spoken yet, neither holds, however big it is.
    pub fn room_size_known(&self, room: RoomId, neighbours: usize) -> bool {
        self.member_count(room) > neighbours
            || self
                .census
                .get(&room)
                .is_some_and(crate::census::Census::recaptured)
    }

    /// Visits each known member of a room once (see `Core::members`).
    fn for_each_member(&self, room: &Room, f: impl FnMut(&UserId)) {
        self.members.get(&room.id).into_iter().flatten().for_each(f);
    }

    /// Number of known members of a room (0 for rooms we are not in).
    pub fn member_count(&self, room: RoomId) -> usize {
        self.members.get(&room).map_or(0, HashSet::len)
    }

    /// (members other than the author known to hold entry `seq` of `author`, such members).
    fn delivery(&self, room: &Room, author: &UserId, seq: u64) -> (u32, u32) {
        let me = self.identity.id();
        let receipts = self.receipts.get(&room.id);
        let mut held = 0;
        let mut total = 0;
        self.for_each_member(room, |m| {
            if m == author {
                return;
            }
            total += 1;
            let has = *m == me
                || receipts
                    .and_then(|r| r.get(m))
                    .and_then(|(_, v)| v.get(&short_id(&author.0)))
                    .is_some_and(|s| *s >= seq);
            if has {
                held += 1;
            }
        });
        (held, total)
    }

    /// A delivery receipt for `room`: the heads of our vector that moved since our last
    /// receipt there, or all of them with `full` (for members who joined since). Signed and
    /// sealed like any envelope but never journaled; its seq is a counter (milliseconds) so a
    /// replayed receipt is recognised. None when there is nothing to say.
    pub fn compose_receipt(
        &mut self,
        room_id: RoomId,
        full: bool,
    ) -> Result<Option<Envelope>, CoreError> {
        if !self.rooms.contains_key(&room_id) {
            return Ok(None);
        }
        let vector = self.journal.vector(&room_id.0)?;
        let changed = self.unannounced(room_id, &vector, full, MAX_RECEIPT_AUTHORS);
        if changed.is_empty() {
            return Ok(None);
        }
        self.mark_announced(room_id, &changed);
        let payload = Payload {
            from: self.identity.username().to_string(),
            text: None,
            receipt: Some(packed(&changed)),
            file: None,
        };
        let pos = Position {
            seq: now_ms().max(1),
            prev: [0; 32],
            lamport: 0,
            timestamp_ms: now_ms(),
        };
        // Once we have written here, every reader met our key in our first entry: only a
        // whole receipt (for members who may not hold that entry yet) carries it again.
        let carry_key = full || !vector.contains_key(&self.identity.id().0);
        let room = &self.rooms[&room_id];
        Ok(Some(Envelope::seal_carrying_key(
            &self.identity,
            room,
            Kind::Receipt,
            pos,
            &payload,
            carry_key,
        )?))
    }

    /// The heads of our vector in a room that moved since we last announced them (all of
    /// them with `full`), at most `max`: those told longest ago (or never) first, so what
    /// does not fit goes out next time, ahead of authors told since. A member who writes
    /// often, each message carrying a few heads, thus tells every author's progress within
    /// a few messages however busy the room.
    fn unannounced(
        &self,
        room: RoomId,
        vector: &crate::journal::Vector,
        full: bool,
        max: usize,
    ) -> Vec<(Id, u64)> {
        let announced = self.announced.get(&room);
        let told = |a: &Id| announced.and_then(|m| m.get(a)).copied();
        let mut changed: Vec<(Id, u64, u64)> = vector
            .iter()
            .filter_map(|(a, h)| {
                let t = told(a);
                (full || t.is_none_or(|t| t.seq < h.seq))
                    .then(|| (*a, h.seq, t.map_or(0, |t| t.at)))
            })
            .collect();
        changed.sort_by_key(|(_, seq, at)| (*at, std::cmp::Reverse(*seq)));
        changed.truncate(max);
        changed.into_iter().map(|(a, seq, _)| (a, seq)).collect()
    }

    /// Records heads as told to the room (by a receipt, or riding on a message).
    fn mark_announced(&mut self, room: RoomId, heads: &[(Id, u64)]) {
        self.told_clock += 1;
        let announced = self.announced.entry(room).or_default();
        for (a, seq) in heads {
            let t = announced.entry(*a).or_default();
            t.seq = t.seq.max(*seq);
            t.at = self.told_clock;
        }
    }

    fn apply_receipt(&mut self, room: RoomId, env: &Envelope, payload: Payload) -> Incoming {
        let Some(Heads(heads)) = payload.receipt else {
            return self.reject(Rejection::Malformed);
        };
        let slot = self
            .receipts
            .entry(room)
            .or_default()
            .entry(env.author_id())
            .or_insert((0, HashMap::new()));
        if env.seq <= slot.0 {
            return Incoming::Duplicate;
        }
        slot.0 = env.seq;
        self.census_heard(room, env.author_id(), &mut Vec::new());
        self.note_heads(room, env.author_id(), &heads);
        Incoming::Receipt
    }

    /// Merges what a member says it holds (a receipt, or heads riding on its message) into
    /// what we know of it. Heads only grow, so a replay or an older list takes nothing back.
    fn note_heads(&mut self, room: RoomId, member: UserId, heads: &[(ShortId, u64)]) {
        self.add_member(room, member);
        let held = &mut self
            .receipts
            .entry(room)
            .or_default()
            .entry(member)
            .or_insert((0, HashMap::new()))
            .1;
        for (id, seq) in heads {
            // A member names any authors it likes: past the cap, only those already known.
            if held.len() >= MAX_TRACKED_AUTHORS && !held.contains_key(id) {
                continue;
            }
            let h = held.entry(*id).or_default();
            *h = (*h).max(*seq);
        }
        self.claims.note(room, heads, Instant::now());
    }

    /// Whether some member said, long enough ago, that it holds entries of `room` we still
    /// lack, and no reconciliation round went after them yet; marks those claims as chased.
    ///
    /// This is how gossip's losses come to light: the members who got a message say so (in
    /// a receipt, or in heads riding on their own messages), while a claim heard lately is
    /// most likely a message still on its way to us: "long enough" is what the room's gossip
    /// has shown it takes ([`Claims::settle`]).
    pub fn chase_claims(&mut self, room: RoomId, now: Instant) -> bool {
        if self.claims.outstanding(room) == 0 {
            return false;
        }
        let ours: HashMap<ShortId, u64> = self
            .journal
            .vector(&room.0)
            .map(|v| v.iter().map(|(a, h)| (short_id(a), h.seq)).collect())
            .unwrap_or_default();
        self.claims.chase(room, |id| ours.get(id).copied(), now)
    }

    /// Writes a text message into the journal and returns the envelope to publish.
    pub fn compose(
        &mut self,
        room_name: &str,
        text: &str,
    ) -> Result<(RoomId, Envelope, MessageView), CoreError> {
        if text.trim().is_empty() {
            return Err(CoreError::EmptyMessage);
        }
        self.compose_entry(room_name, Kind::Text, Some(text.to_string()), None)
    }

    /// Writes a `file` message (whose chunks are stored already) into the journal and
    /// returns the envelope to publish.
    pub fn compose_file(
        &mut self,
        room_name: &str,
        file: FileRef,
    ) -> Result<(RoomId, Envelope, MessageView), CoreError> {
        self.compose_entry(room_name, Kind::File, None, Some(file))
    }

    fn compose_entry(
        &mut self,
        room_name: &str,
        kind: Kind,
        text: Option<String>,
        file: Option<FileRef>,
    ) -> Result<(RoomId, Envelope, MessageView), CoreError> {
        let room = self.room_by_name(room_name)?.clone();
        let me = self.identity.id();
        let vector = self.journal.vector(&room.id.0)?;
        let head = vector.get(&me.0).copied();
        let pos = Position {
            seq: head.map_or(1, |h| h.seq + 1),
            prev: head.map_or([0; 32], |h| h.hash),
            // Capped below the limit receivers enforce: a member who posts a huge clock can
            // make later messages share one lamport (order then falls back to author and
            // seq), but cannot stop the room.
            lamport: self
                .journal
                .max_lamport(&room.id.0)?
                .saturating_add(1)
                .min(crate::envelope::MAX_LAMPORT - 1),
            timestamp_ms: now_ms(),
        };
        // The message doubles as our receipt: it carries the heads that moved since we last
        // told the room, so a member who writes sends few receipts of its own.
        let mut heads = self.unannounced(room.id, &vector, false, self.piggyback_max + 1);
        heads.retain(|(a, _)| *a != me.0);
        heads.truncate(self.piggyback_max);
        let payload = Payload {
            from: self.identity.username().to_string(),
            text,
            receipt: (!heads.is_empty()).then(|| packed(&heads)),
            file,
        };
        let env = Envelope::seal(&self.identity, &room, kind, pos, &payload)?;
        // Durable before it is published.
        self.journal.append(&env.meta(), env.bytes())?;
        self.counters.sent += 1;
        // The entry itself tells every reader that we hold our own chain up to it.
        heads.push((me.0, pos.seq));
        self.mark_announced(room.id, &heads);
        let view = self.view(&room, &env, payload);
        Ok((room.id, env, view))
    }

    /// Validates an envelope received on `topic`; stores it if valid.
    pub fn receive(&mut self, topic: &str, bytes: Vec<u8>) -> Result<Incoming, CoreError> {
        match self.admit(topic, bytes) {
            Admitted::Entry(entry) => Ok(self
                .commit(vec![*entry])?
                .pop()
                .unwrap_or(Incoming::Duplicate)),
            Admitted::Done(incoming) => Ok(incoming),
        }
    }

    /// First half of [`Core::receive`]: verifies an incoming envelope (and applies receipts,
    /// which are never stored). A valid entry is returned for [`Core::commit`], so the
    /// caller can store many in one durable transaction.
    pub fn admit(&mut self, topic: &str, bytes: Vec<u8>) -> Admitted {
        let Some(room_id) = RoomId::from_topic(topic) else {
            return Admitted::Done(Incoming::NotOurs);
        };
        let Some(room) = self.rooms.get(&room_id) else {
            return Admitted::Done(Incoming::NotOurs);
        };
        match check(&self.identity, room, bytes, &self.keys) {
            // Not invalid: its author's first entry has not reached us yet.
            Err(Rejection::UnknownAuthor) => Admitted::Done(Incoming::UnknownAuthor),
            Err(why) => Admitted::Done(self.reject(why)),
            Ok((env, payload)) if env.kind == Kind::Receipt => {
                Admitted::Done(self.apply_receipt(room_id, &env, payload))
            }
            Ok((env, payload)) => Admitted::Entry(Box::new((room_id, env, payload))),
        }
    }

    /// The view of an admitted entry, to show before it is stored, if it comes next in its
    /// author's chain (after what the journal holds or what was shown already): see
    /// [`crate::shown`]. Storing it later ([`Core::commit`], or reconciliation) then
    /// yields [`Incoming::Shown`] instead of showing it again. Entries after a gap, repeats
    /// and forks are left to the store, which decides.
    pub fn preview(
        &mut self,
        room_id: RoomId,
        env: &Envelope,
        payload: &Payload,
    ) -> Option<MessageView> {
        let room = self.rooms.get(&room_id)?;
        let meta = env.meta();
        let held = match self.journal.head(&meta.room, &meta.author) {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a chain's head; shown once stored");
                return None;
            }
        };
        if !self.shown.show(&meta, held) {
            return None;
        }
        Some(self.view(room, env, payload.clone()))
    }

    /// Received entries shown and not yet stored.
    pub fn shown_unstored(&self) -> usize {
        self.shown.len()
    }

    /// Second half of [`Core::receive`]: stores entries gossip brought (admitted) in one
    /// transaction, on disk at the next [`Core::flush`]; one outcome per entry, in order.
    pub fn commit(
        &mut self,
        entries: Vec<(RoomId, Envelope, Payload)>,
    ) -> Result<Vec<Incoming>, CoreError> {
        self.store(entries, Arrival::Gossip)
    }

    fn store(
        &mut self,
        entries: Vec<(RoomId, Envelope, Payload)>,
        how: Arrival,
    ) -> Result<Vec<Incoming>, CoreError> {
        let batch: Vec<(EntryMeta, Vec<u8>)> = entries
            .iter()
            .map(|(_, env, _)| (env.meta(), env.bytes().to_vec()))
            .collect();
        // Received entries are also held by others: durable at the next flush.
        let outcomes = self.journal.append_batch_deferred(&batch)?;
        // Who gossip brought them from, before they count as known (pulled entries come
        // by author, in runs: not a sample of the room).
        if matches!(how, Arrival::Gossip) {
            let mut new = Vec::new();
            for (room_id, env, _) in &entries {
                self.census_heard(*room_id, env.author_id(), &mut new);
            }
        }
        // What their authors held when they wrote them (see `compose`).
        for (room_id, env, payload) in &entries {
            if let Some(Heads(heads)) = &payload.receipt {
                self.note_heads(*room_id, env.author_id(), heads);
            }
        }
        let now = Instant::now();
        let mut out = Vec::with_capacity(outcomes.len());
        let mut chains = Vec::new();
        for ((room_id, env, payload), outcome) in entries.into_iter().zip(outcomes) {
            let hash = env.hash();
            out.push(match outcome {
                AppendOutcome::Appended { advanced_to } => {
                    self.counters.accepted += 1;
                    let author = env.author_id();
                    self.add_member(room_id, author);
                    let short = short_id(&author.0);
                    self.claims.met(room_id, short, advanced_to, how, now);
                    chains.push((room_id, author));
                    let shown = self.shown.stored(&hash);
                    if !self.rooms.contains_key(&room_id) {
                        Incoming::NotOurs
                    } else {
                        let released = self.released(room_id, &env, advanced_to);
                        if shown {
                            Incoming::Shown(released)
                        } else {
                            let view = self.view(&self.rooms[&room_id], &env, payload);
                            Incoming::Accepted(Box::new(view), released)
                        }
                    }
                }
                // Shown or not, it is shown (if not already) when it is released.
                AppendOutcome::Pending => {
                    self.counters.accepted += 1;
                    Incoming::Pending
                }
                AppendOutcome::Duplicate => {
                    self.shown.stored(&hash);
                    self.counters.duplicates += 1;
                    Incoming::Duplicate
                }
                AppendOutcome::Fork => {
                    self.shown.stored(&hash);
                    self.reject(Rejection::Fork)
                }
            });
        }
        // (A head that cannot be read leaves its tip for the next store to clear.)
        for (room_id, author) in chains {
            if let Ok(held) = self.journal.head(&room_id.0, &author.0) {
                self.shown.caught_up(&room_id.0, &author.0, held);
            }
        }
        Ok(out)
    }

    /// Views of the held entries after `env` up to `to` that its arrival made contiguous:
    /// shown now, since they were not when they came in (unless shown ahead of a store that
    /// failed: see [`crate::shown`]).
    fn released(&mut self, room: RoomId, env: &Envelope, to: u64) -> Vec<MessageView> {
        let author = env.author_id();
        let entries: Vec<_> = (env.seq + 1..=to)
            .map(|seq| self.journal.get(&room.0, &author.0, seq))
            .filter(|entry| !matches!(entry, Ok(Some(e)) if self.shown.stored(&e.meta.hash)))
            .collect();
        let Some(room) = self.rooms.get(&room) else {
            return Vec::new();
        };
        entries
            .into_iter()
            .filter_map(|entry| match entry {
                Ok(Some(entry)) => self.open_stored(room, entry),
                Ok(None) => None,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read a released entry");
                    None
                }
            })
            .collect()
    }

    /// Makes stored entries durable (see [`Journal::append_batch_deferred`]).
    pub fn flush(&self) -> Result<bool, CoreError> {
        Ok(self.journal.flush()?)
    }

    /// The journal, for work that must not hold up the caller: a durable flush waits for
    /// the disk, and [`Journal::flush`] may run on another thread while this core keeps
    /// committing (redb's write lock orders the two).
    pub fn shared_journal(&self) -> Arc<Journal> {
        self.journal.clone()
    }

    /// Counts entries that failed verification during sync.
    pub fn count_rejection(&mut self, why: Rejection) {
        self.reject(why);
    }

    /// Stores entries a peer sent during sync (already verified by [`check`]) in one
    /// transaction, durable at the next flush like gossip (their senders hold them too).
    pub fn store_batch(
        &mut self,
        room_id: RoomId,
        verified: Vec<(Envelope, Payload)>,
    ) -> Result<BatchReport, CoreError> {
        if !self.rooms.contains_key(&room_id) {
            return Ok(BatchReport::default());
        }
        // Receipts are never journaled, so a peer has no business sending one here.
        let (receipts, verified): (Vec<_>, Vec<_>) = verified
            .into_iter()
            .partition(|(env, _)| env.kind == Kind::Receipt);
        for _ in receipts {
            self.reject(Rejection::Malformed);
        }
        let authors: Vec<Id> = verified.iter().map(|(e, _)| e.author_id().0).collect();
        let entries = verified
            .into_iter()
            .map(|(env, payload)| (room_id, env, payload))
            .collect();
        let mut report = BatchReport::default();
        for (author, incoming) in authors
            .into_iter()
            .zip(self.store(entries, Arrival::Other)?)
        {
            match incoming {
                Incoming::Accepted(view, released) => {
                    report.added += 1;
                    report.appended.push(*view);
                    report.appended.extend(released);
                }
                Incoming::Shown(released) => {
                    report.added += 1;
                    report.appended.extend(released);
                }
                Incoming::Pending => report.pending += 1,
                Incoming::Duplicate => report.duplicates += 1,
                Incoming::Rejected(Rejection::Fork) => report.forked_authors.push(author),
                Incoming::Rejected(_)
                | Incoming::Receipt
                | Incoming::NotOurs
                | Incoming::UnknownAuthor => {}
            }
        }
        Ok(report)
    }

    /// The room's version vector.
    pub fn vector(&self, room: RoomId) -> Result<crate::journal::Vector, CoreError> {
        Ok(self.journal.vector(&room.0)?)
    }

    /// The forks we hold proofs for in a room.
    pub fn fork_refs(&self, room: RoomId) -> Result<Vec<ForkRef>, CoreError> {
        let mut v: Vec<ForkRef> = self
            .journal
            .forks(&room.0)?
            .into_iter()
            .map(|f| ForkRef {
                author: f.author,
                seq: f.seq,
            })
            .collect();
        v.sort();
        v.dedup();
        Ok(v)
    }

    /// Entries for a peer's pull, bounded in count and bytes; `true` if more remain.
    pub fn serve_pull(
        &self,
        room: RoomId,
        ranges: &[Range],
    ) -> Result<(Vec<Vec<u8>>, bool), CoreError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for r in ranges.iter().take(sync::MAX_RANGES) {
            if r.from == 0 || r.to < r.from {
                continue;
            }
            let room_left = sync::MAX_BATCH_ENTRIES - out.len();
            let entries = self
                .journal
                .range(&room.0, &r.author, r.from, r.to, room_left)?;
            for e in entries {
                if bytes + e.envelope.len() > sync::MAX_BATCH_BYTES {
                    return Ok((out, true));
                }
                bytes += e.envelope.len();
                out.push(e.envelope);
            }
            if out.len() >= sync::MAX_BATCH_ENTRIES {
                return Ok((out, true));
            }
            // A range we only partly hold is fine: the peer asks others for the rest.
        }
        Ok((out, false))
    }

    /// Both envelopes of a fork we hold a proof for.
    pub fn serve_fork_proof(
        &self,
        room: RoomId,
        fork: ForkRef,
    ) -> Result<Option<ForkPair>, CoreError> {
        let Some(proof) = self
            .journal
            .forks(&room.0)?
            .into_iter()
            .find(|f| f.author == fork.author && f.seq == fork.seq)
        else {
            return Ok(None);
        };
        let Some(existing) = self.journal.get(&room.0, &fork.author, fork.seq)? else {
            return Ok(None);
        };
        Ok(Some((existing.envelope, proof.conflicting_envelope)))
    }

    fn reject(&mut self, why: Rejection) -> Incoming {
        let name = serde_json::to_value(why)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{why:?}"));
        *self.counters.rejected.entry(name).or_default() += 1;
        tracing::debug!(reason = ?why, "rejected envelope");
        Incoming::Rejected(why)
    }

    /// The last `limit` messages of a room in display order (the same on every node).
    pub fn history(&self, room_name: &str, limit: usize) -> Result<Vec<MessageView>, CoreError> {
        let reader = self.reader(room_name)?;
        let opened = reader.read(Page::last(limit), None)?;
        self.views(reader.room_id(), opened)
    }

    /// A reader of a joined room's stored history that needs no `Core` (see [`RoomReader`]).
    pub fn reader(&self, room_name: &str) -> Result<RoomReader, CoreError> {
        Ok(RoomReader {
            room: self.room_by_name(room_name)?.clone(),
            journal: self.journal.clone(),
            keys: self.keys.clone(),
            identity: self.identity.clone(),
        })
    }

    /// What the user sees of entries a [`RoomReader`] opened: who wrote them (contacts by
    /// name) and how far they were delivered, as this node knows it now.
    pub fn views(&self, room: RoomId, opened: Vec<Opened>) -> Result<Vec<MessageView>, CoreError> {
        // The room may have been left while its history was read.
        let room = self
            .rooms
            .get(&room)
            .ok_or_else(|| CoreError::UnknownRoom(room.to_hex()))?;
        Ok(opened
            .into_iter()
            .map(|(env, payload)| self.view(room, &env, payload))
            .collect())
    }

    fn open_stored(&self, room: &Room, entry: StoredEntry) -> Option<MessageView> {
        let (env, payload) = open_entry(room, entry, &self.keys, &self.identity)?;
        Some(self.view(room, &env, payload))
    }
}

/// A stored entry, verified and opened.
pub type Opened = (Envelope, Payload);

/// What to read of a room's history ([`RoomReader::query`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// Which stretch, counted among the messages the rest of the query keeps.
    pub page: Page,
    /// Messages of this kind only.
    pub only: Option<Kind>,
    /// Messages whose text or file name contains this, whatever its case.
    pub contains: Option<String>,
}

impl Query {
    /// The last `limit` messages of any kind.
    pub fn last(limit: usize) -> Self {
        Query {
            page: Page::last(limit),
            only: None,
            contains: None,
        }
    }
}

/// Whether a message's text or file name contains `needle` (lower case), whatever its case.
fn mentions(payload: &Payload, needle: &str) -> bool {
    let has = |s: &str| s.to_lowercase().contains(needle);
    payload.text.as_deref().is_some_and(has) || payload.file.as_ref().is_some_and(|f| has(&f.name))
}

/// Verifies a stored entry again (the database is not trusted more than the network) and
/// opens it; one that fails is skipped with a warning.
fn open_entry(
    room: &Room,
    entry: StoredEntry,
    keys: &AuthorKeys,
    identity: &Identity,
) -> Option<Opened> {
    let env = match Envelope::parse(entry.envelope, keys) {
        Ok(env) => env,
        Err(e) => {
            tracing::warn!(error = %e, "journal entry failed verification; skipped");
            return None;
        }
    };
    match env.open(room, identity) {
        Ok(payload) => Some((env, payload)),
        Err(e) => {
            tracing::warn!(error = %e, "journal entry cannot be opened; skipped");
            None
        }
    }
}

/// Reads one room's stored history apart from [`Core`]. Reading verifies every entry's
/// signature again and opens it (21 µs each, 0.4 ms in a direct room for the RSA unwrap),
/// so the service reads on a blocking thread: a long history would stall the swarm.
pub struct RoomReader {
    room: Room,
    journal: Arc<Journal>,
    keys: AuthorKeys,
    identity: Arc<Identity>,
}

impl RoomReader {
    pub fn room_id(&self) -> RoomId {
        self.room.id
    }

    /// A page of the entries of kind `only` (of any kind without it): see [`Self::query`].
    pub fn read(&self, page: Page, only: Option<Kind>) -> Result<Vec<Opened>, CoreError> {
        self.query(&Query {
            page,
            only,
            contains: None,
        })
    }

    /// The messages `q` asks for, in display order, verified and opened. Entries of other
    /// kinds are skipped by their header's kind byte, unverified and never loaded: the kind
    /// is signed, so one that lies about it would fail verification anyway. A search
    /// (`contains`) must open every entry of the kind to look inside (the journal holds
    /// them sealed), about 21 µs each in a named room, newest first until the page is full.
    pub fn query(&self, q: &Query) -> Result<Vec<Opened>, CoreError> {
        let needle = q.contains.as_deref().map(str::to_lowercase);
        let wanted = |env: &[u8]| {
            if q.only.is_some() && Envelope::peek_kind(env) != q.only {
                return false;
            }
            let Some(needle) = &needle else {
                return true;
            };
            Envelope::parse(env.to_vec(), &self.keys)
                .ok()
                .and_then(|env| env.open(&self.room, &self.identity).ok())
                .is_some_and(|payload| mentions(&payload, needle))
        };
        Ok(self
            .journal
            .history_where(&self.room.id.0, q.page, wanted)?
            .into_iter()
            .filter_map(|e| open_entry(&self.room, e, &self.keys, &self.identity))
            .collect())
    }

    /// Names `members` (see [`Core::members`]) by the username each gave in its last
    /// message here, verified and opened again; ours is our own.
    pub fn name_members(
        &self,
        members: Vec<(UserId, MemberView)>,
    ) -> Result<Vec<MemberView>, CoreError> {
        let mut named = Vec::with_capacity(members.len());
        for (id, mut view) in members {
            view.name = if view.me {
                Some(self.identity.username().to_string())
            } else if view.messages > 0 {
                self.journal
                    .get(&self.room.id.0, &id.0, view.messages)?
                    .and_then(|e| open_entry(&self.room, e, &self.keys, &self.identity))
                    .map(|(_, payload)| payload.from)
            } else {
                None
            };
            named.push(view);
        }
        Ok(named)
    }

    /// The file shared in the room whose id starts with `id` (at least 8 hex digits). Scans
    /// the whole history, but loads, verifies and opens file messages only: fetching is
    /// rare next to chatting, and a file known only in memory would be lost to a restart.
    pub fn find_file(&self, id: &str) -> Result<FileRef, CoreError> {
        let room_name = &self.room.name;
        let unknown = || CoreError::UnknownFile(id.to_string(), room_name.clone());
        let id = id.to_ascii_lowercase();
        if id.len() < 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(unknown());
        }
        let mut found: Option<FileRef> = None;
        for (_, payload) in self.read(Page::last(usize::MAX), Some(Kind::File))? {
            let Some(file) = payload.file else {
                continue;
            };
            if file.id().starts_with(&id) {
                match &found {
                    Some(f) if f.list != file.list => {
                        return Err(CoreError::AmbiguousFile(id, room_name.clone()));
                    }
                    _ => found = Some(file),
                }
            }
        }
        found.ok_or_else(unknown)
    }

    /// Files others shared in the room, among its last `limit` file messages, of at most
    /// `max_size` bytes, that this node neither holds nor was told to forget, oldest first:
    /// what fetching unasked has left to do after a restart (its queue is in memory).
    pub fn files_to_fetch(&self, limit: usize, max_size: u64) -> Result<Vec<FileRef>, CoreError> {
        let me = self.identity.id();
        let mut due = Vec::new();
        for (env, payload) in self.read(Page::last(limit), Some(Kind::File))? {
            let Some(file) = payload.file else {
                continue;
            };
            if env.author_id() == me || file.size > max_size {
                continue;
            }
            let key = file.provider_key();
            if !self.journal.is_provided(&key)? && !self.journal.is_declined(&key)? {
                due.push(file);
            }
        }
        Ok(due)
    }

    /// Drops this node's copy of a file shared in the room (see [`RoomReader::find_file`]
    /// for `id`): its chunks and the record that we hold it. The message stays, and the
    /// file can be fetched again from members who hold it. Returns the file and the bytes
    /// freed (0 if none of it was held).
    pub fn forget_file(&self, id: &str) -> Result<(FileRef, u64), CoreError> {
        let file = self.find_file(id)?;
        let mut chunks = vec![file.list];
        // A list that does not open (a broken share) names no chunk we could hold.
        if let Some(list) = self.journal.chunk(&file.list)?
            && let Ok(ids) = crate::files::open_list(&file, &list)
        {
            chunks.extend(ids);
        }
        let freed = self.journal.forget_file(&file.provider_key(), &chunks)?;
        Ok((file, freed))
    }
}

/// Verifies an envelope for `room`: signature, room, membership and decryption, and learns
/// the author's key if the envelope carries it and checks out. Needs no [`Core`], so the
/// service can run it off the swarm task for large sync batches.
pub fn check(
    me: &Identity,
    room: &Room,
    bytes: Vec<u8>,
    keys: &AuthorKeys,
) -> Result<(Envelope, Payload), Rejection> {
    let env = Envelope::parse(bytes, keys).map_err(|e| Rejection::from_envelope(&e))?;
    if env.room != room.id {
        return Err(Rejection::WrongRoom);
    }
    if let Some(members) = room.member_ids()
        && !members.contains(&env.author_id())
    {
        return Err(Rejection::NotAMember);
    }
    let payload = env
        .open(room, me)
        .map_err(|e| Rejection::from_envelope(&e))?;
    if payload
        .receipt
        .as_ref()
        .is_some_and(|h| h.len() > MAX_RECEIPT_AUTHORS)
    {
        return Err(Rejection::Malformed);
    }
    if env.kind == Kind::File && !payload.file.as_ref().is_some_and(FileRef::is_valid) {
        return Err(Rejection::Malformed);
    }
    if env.carries_key {
        keys.insert(env.author.clone());
    }
    Ok((env, payload))
}

/// What [`check`] makes of one envelope.
pub type Checked = Result<(Envelope, Payload), Rejection>;

/// Batches smaller than this are checked on the calling thread.
const PARALLEL_CHECK_MIN: usize = 64;

/// [`check`] for a pulled batch, on up to `threads` threads, results in input order. A node
/// catching up is otherwise bound by one thread's signature checks (about half of its
/// time there). An entry checked before the one that carries its author's key (each thread
/// takes a slice of the batch) is checked again once every slice is done.
pub fn check_batch(
    me: &Identity,
    room: &Room,
    entries: &[Vec<u8>],
    keys: &AuthorKeys,
    threads: usize,
) -> Vec<Checked> {
    let run = |slice: &[Vec<u8>]| -> Vec<Checked> {
        slice
            .iter()
            .map(|bytes| check(me, room, bytes.clone(), keys))
            .collect()
    };
    let threads = threads.clamp(1, entries.len().div_ceil(PARALLEL_CHECK_MIN).max(1));
    let mut checked = if threads == 1 {
        run(entries)
    } else {
        let per = entries.len().div_ceil(threads);
        std::thread::scope(|s| {
            let handles: Vec<_> = entries
                .chunks(per)
                .map(|slice| (slice.len(), s.spawn(move || run(slice))))
                .collect();
            // `check` does not panic; if a thread did anyway, its slice is checked again
            // below, on this thread.
            handles
                .into_iter()
                .flat_map(|(n, h)| {
                    h.join()
                        .unwrap_or_else(|_| vec![Err(Rejection::UnknownAuthor); n])
                })
                .collect()
        })
    };
    for (result, bytes) in checked.iter_mut().zip(entries) {
        if matches!(result, Err(Rejection::UnknownAuthor)) {
            *result = check(me, room, bytes.clone(), keys);
        }
    }
    checked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::KeySize;
    use std::sync::OnceLock;

    fn identities() -> &'static [Arc<Identity>; 3] {
        static IDS: OnceLock<[Arc<Identity>; 3]> = OnceLock::new();
        IDS.get_or_init(|| {
            ["alice", "bob", "carol"].map(|u| {
                Arc::new(
                    Identity::derive_unchecked(u, &format!("{u} test password"), KeySize::Rsa2048)
                        .unwrap(),
                )
            })
        })
    }

    fn core(dir: &tempfile::TempDir, i: usize) -> Core {
        let id = identities()[i].clone();
        let j = Journal::open(&dir.path().join(format!("j{i}.redb"))).unwrap();
        Core::open(id, j).unwrap()
    }

    /// Alice's and Bob's cores, both in the named room "lobby".
    fn three_in_lobby(dir: &tempfile::TempDir) -> (Core, Core, Core) {
        let (mut a, mut b, mut c) = (core(dir, 0), core(dir, 1), core(dir, 2));
        for x in [&mut a, &mut b, &mut c] {
            x.join(Room::named("lobby", None).unwrap()).unwrap();
        }
        (a, b, c)
    }

    /// Delivered-to counts of the lobby's history, oldest first.
    fn delivered(x: &Core) -> Vec<u32> {
        x.history("lobby", 10)
            .unwrap()
            .iter()
            .map(|m| m.delivered_to)
            .collect()
    }

    fn two_in_lobby(dir: &tempfile::TempDir) -> (Core, Core, RoomId) {
        let lobby = Room::named("lobby", None).unwrap();
        let (mut a, mut b) = (core(dir, 0), core(dir, 1));
        a.join(lobby.clone()).unwrap();
        b.join(lobby.clone()).unwrap();
        (a, b, lobby.id)
    }

    #[test]
    fn joins_past_the_room_limit_are_refused_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = core(&dir, 0);
        a.room_limit = 3;
        for i in 0..3 {
            a.join(Room::named(&format!("r{i}"), None).unwrap())
                .unwrap();
        }
        let err = a
            .join(Room::named("one too many", None).unwrap())
            .unwrap_err();
        assert!(matches!(err, CoreError::TooManyRooms(3)), "{err}");
        // Rejoining a room already joined is still fine, and nothing was lost.
        let (_, new) = a.join(Room::named("r1", None).unwrap()).unwrap();
        assert!(!new);
        assert_eq!(a.rooms().count(), 3);
        a.leave("r0").unwrap();
        a.join(Room::named("one too many", None).unwrap()).unwrap();
    }

    #[test]
    fn receipts_carry_what_changed_and_only_grow() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, mut b, mut c) = three_in_lobby(&dir);
        let mut rid = None;
        for i in 0..3 {
            let (r, env, _) = a.compose("lobby", &format!("m{i}")).unwrap();
            assert!(matches!(
                b.receive(&r.topic(), env.bytes().to_vec()).unwrap(),
                Incoming::Accepted(..)
            ));
            rid = Some(r);
        }
        let rid = rid.unwrap();
        let receipt = |x: &mut Core, full| {
            x.compose_receipt(rid, full)
                .unwrap()
                .map(|env| env.into_bytes())
        };
        // Bob holds a's three: his receipt says so, and Alice counts him.
        let first = receipt(&mut b, false).expect("bob has news");
        assert_eq!(delivered(&a), vec![0, 0, 0]);
        assert!(matches!(
            a.receive(&rid.topic(), first.clone()).unwrap(),
            Incoming::Receipt
        ));
        assert_eq!(delivered(&a), vec![1, 1, 1]);
        // Nothing moved: nothing to say, unless asked for everything.
        assert!(receipt(&mut b, false).is_none());
        std::thread::sleep(std::time::Duration::from_millis(2));
        let full = receipt(&mut b, true).expect("a full receipt");
        // A replayed receipt is recognised, and an older one cannot take anything back.
        assert!(matches!(
            a.receive(&rid.topic(), first).unwrap(),
            Incoming::Duplicate
        ));
        assert!(matches!(
            a.receive(&rid.topic(), full).unwrap(),
            Incoming::Receipt
        ));
        assert_eq!(delivered(&a), vec![1, 1, 1]);
        // Carol has none of it: she counts as a member only once she says something.
        assert!(receipt(&mut c, false).is_none());
        let (_, env, _) = a.compose("lobby", "m3").unwrap();
        b.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let delta = receipt(&mut b, false).expect("bob has news");
        let parsed = check(&a.identity, a.room(&rid).unwrap(), delta.clone(), &a.keys)
            .unwrap()
            .1;
        assert_eq!(
            parsed.receipt.as_ref().map(Heads::len),
            Some(1),
            "only the moved head"
        );
        a.receive(&rid.topic(), delta).unwrap();
        assert_eq!(delivered(&a), vec![1, 1, 1, 1]);
    }

    #[test]
    fn a_message_carries_its_authors_receipt() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, mut b, mut c) = three_in_lobby(&dir);
        let (rid, _, _) = a.compose("lobby", "m0").unwrap();
        for i in 1..3 {
            a.compose("lobby", &format!("m{i}")).unwrap();
        }
        for seq in 1..=3 {
            let entry = a.journal.get(&rid.0, &a.identity.id().0, seq).unwrap();
            b.receive(&rid.topic(), entry.unwrap().envelope).unwrap();
        }
        // What a message of Bob's says he holds, as Alice reads it.
        let heads_in = |a: &Core, env: &Envelope| {
            check(
                &a.identity,
                a.room(&rid).unwrap(),
                env.bytes().to_vec(),
                &a.keys,
            )
            .unwrap()
            .1
            .receipt
        };
        // Bob answers: his message says he holds Alice's three, and she counts him.
        let (_, reply, _) = b.compose("lobby", "got them").unwrap();
        let heads = heads_in(&a, &reply);
        assert_eq!(heads.as_ref().map(Heads::len), Some(1), "alice's head only");
        assert_eq!(delivered(&a), vec![0, 0, 0]);
        assert!(matches!(
            a.receive(&rid.topic(), reply.bytes().to_vec()).unwrap(),
            Incoming::Accepted(..)
        ));
        assert_eq!(delivered(&a), vec![1, 1, 1, 1], "and she holds his");
        // Said once: neither his next receipt nor his next message repeats it.
        assert!(b.compose_receipt(rid, false).unwrap().is_none());
        let (_, again, _) = b.compose("lobby", "still here").unwrap();
        assert_eq!(heads_in(&a, &again), None);
        // Heads pulled through reconciliation count as well: Carol gets Bob's message in a
        // batch and learns he holds Alice's chain.
        for seq in 1..=3 {
            let entry = a.journal.get(&rid.0, &a.identity.id().0, seq).unwrap();
            c.receive(&rid.topic(), entry.unwrap().envelope).unwrap();
        }
        let verified = check(
            &c.identity,
            c.room(&rid).unwrap(),
            reply.bytes().to_vec(),
            &c.keys,
        )
        .unwrap();
        c.store_batch(rid, vec![verified]).unwrap();
        assert_eq!(delivered(&c)[..3], [2, 2, 2], "bob and carol herself");
    }

    #[test]
    fn what_a_message_cannot_carry_goes_first_in_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, mut b, mut c) = three_in_lobby(&dir);
        let (rid, env, _) = a.compose("lobby", "a1").unwrap();
        b.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
        let (_, env, _) = c.compose("lobby", "c1").unwrap();
        b.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
        b.piggyback_max = 1;
        let short = |x: &Core| short_id(&x.identity.id().0);
        let carried = |b: &mut Core| -> Vec<(ShortId, u64)> {
            let (_, env, _) = b.compose("lobby", "reply").unwrap();
            check(
                &b.identity,
                b.room(&rid).unwrap(),
                env.into_bytes(),
                &b.keys,
            )
            .unwrap()
            .1
            .receipt
            .map_or(Vec::new(), |h| h.0)
        };
        let first = carried(&mut b);
        assert_eq!(first.len(), 1, "one head fits");
        // Whoever was told moves on again, yet the other author, never told, goes first.
        let (told, other) = if first[0].0 == short(&a) {
            (&mut a, &mut c)
        } else {
            (&mut c, &mut a)
        };
        let (_, env, _) = told.compose("lobby", "again").unwrap();
        b.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
        assert_eq!(carried(&mut b), vec![(short(other), 1)]);
        assert_eq!(carried(&mut b), vec![(short(told), 2)]);
        assert_eq!(carried(&mut b), vec![], "nothing left untold");
    }

    #[test]
    fn an_oversized_receipt_is_malformed_wherever_it_rides() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, rid) = two_in_lobby(&dir);
        let room = b.room(&rid).unwrap().clone();
        let heads = Heads(
            (0..=MAX_RECEIPT_AUTHORS as u64)
                .map(|i| ([7; 8], i))
                .collect(),
        );
        for kind in [Kind::Text, Kind::Receipt] {
            let payload = Payload {
                from: "bob".into(),
                text: (kind == Kind::Text).then(|| "hi".to_string()),
                receipt: Some(heads.clone()),
                file: None,
            };
            let pos = Position {
                seq: 1,
                prev: [0; 32],
                lamport: 1,
                timestamp_ms: now_ms(),
            };
            let env = Envelope::seal(&b.identity, &room, kind, pos, &payload).unwrap();
            assert_eq!(
                check(
                    &a.identity,
                    a.room(&rid).unwrap(),
                    env.into_bytes(),
                    &a.keys
                )
                .err(),
                Some(Rejection::Malformed)
            );
        }
    }

    #[test]
    fn files_left_to_fetch_are_others_small_ones_neither_held_nor_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, mut b, rid) = two_in_lobby(&dir);
        let seal = |name: &str, data: &[u8]| {
            crate::files::seal_file(name, data.len() as u64, data, |_, _| Ok(())).unwrap()
        };
        let mut share = |from: &mut Core, file: &FileRef| {
            let (_, env, _) = from.compose_file("lobby", file.clone()).unwrap();
            b.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
        };
        let small = seal("small.txt", b"hello");
        let big = seal("big.bin", &[7; 100]);
        let held = seal("held.txt", b"kept");
        let forgotten = seal("forgotten.txt", b"dropped");
        let another = seal("another.txt", b"more");
        for f in [&small, &big, &held, &forgotten] {
            share(&mut a, f);
        }
        // Bob's own share is his already.
        b.compose_file("lobby", another).unwrap();
        let reader = b.reader("lobby").unwrap();
        assert_eq!(
            reader.files_to_fetch(100, 50).unwrap(),
            vec![small.clone(), held.clone(), forgotten.clone()]
        );
        b.journal
            .put_provided(&held.provider_key(), &held.list, true)
            .unwrap();
        reader.forget_file(&forgotten.id()).unwrap();
        assert_eq!(reader.files_to_fetch(100, 50).unwrap(), vec![small.clone()]);
        assert_eq!(reader.files_to_fetch(100, 100).unwrap(), vec![small, big]);
        // Only the last file messages are looked at: here, Bob's own.
        assert!(reader.files_to_fetch(1, 100).unwrap().is_empty());
    }

    #[test]
    fn a_search_finds_texts_and_file_names_whatever_their_case_a_page_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, mut b, rid) = two_in_lobby(&dir);
        let mut say = |from: &mut Core, text: &str| {
            let (_, env, _) = from.compose("lobby", text).unwrap();
            b.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
        };
        say(&mut a, "Lunch at noon?");
        say(&mut a, "the LUNCH menu is up");
        say(&mut a, "nothing to see");
        say(&mut a, "Über-lunch plans");
        let menu =
            crate::files::seal_file("Lunch-Menu.pdf", 5, &b"hello"[..], |_, _| Ok(())).unwrap();
        let (_, env, _) = a.compose_file("lobby", menu).unwrap();
        b.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
        b.compose("lobby", "lunch? yes").unwrap();

        let reader = b.reader("lobby").unwrap();
        let found = |contains: &str, page: Page| -> Vec<String> {
            let q = Query {
                page,
                only: None,
                contains: Some(contains.into()),
            };
            let shown = |(_, p): Opened| p.text.or(p.file.map(|f| f.name)).unwrap();
            reader.query(&q).unwrap().into_iter().map(shown).collect()
        };
        let all = [
            "Lunch at noon?",
            "the LUNCH menu is up",
            "Über-lunch plans",
            "Lunch-Menu.pdf",
            "lunch? yes",
        ];
        assert_eq!(found("lunch", Page::last(10)), all);
        assert_eq!(found("LUNCH", Page::last(10)), all);
        assert_eq!(found("über", Page::last(10)), ["Über-lunch plans"]);
        assert_eq!(
            found("MENU", Page::last(10)),
            ["the LUNCH menu is up", "Lunch-Menu.pdf"]
        );
        assert!(found("dinner", Page::last(10)).is_empty());
        // Pages count matches only: the two before the last two.
        let page = Page {
            limit: 2,
            skip: 2,
            before: None,
        };
        assert_eq!(found("lunch", page), all[1..3]);
        // With a kind, files only.
        let q = Query {
            only: Some(Kind::File),
            contains: Some("menu".into()),
            ..Query::last(10)
        };
        assert_eq!(reader.query(&q).unwrap().len(), 1);
    }

    #[test]
    fn a_file_message_is_shown_found_by_its_id_and_refused_when_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, mut b, rid) = two_in_lobby(&dir);
        let file = crate::files::seal_file("plan.txt", 5, &b"hello"[..], |_, _| Ok(())).unwrap();
        let (_, env, view) = a.compose_file("lobby", file.clone()).unwrap();
        assert_eq!(view.kind, Kind::File);
        assert_eq!(view.file.as_ref().map(|f| f.id.clone()), Some(file.id()));
        b.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
        let shown = b.history("lobby", 10).unwrap();
        assert_eq!(shown[0].file.as_ref().unwrap().name, "plan.txt");
        // Found by a prefix of its id, with the key members need.
        let reader = b.reader("lobby").unwrap();
        let found = reader.find_file(&file.id()[..8]).unwrap();
        assert_eq!((reader.room_id(), &found), (rid, &file));
        assert!(matches!(
            reader.find_file("0123456789abcdef"),
            Err(CoreError::UnknownFile(..))
        ));
        assert!(matches!(
            reader.find_file(&file.id()[..4]),
            Err(CoreError::UnknownFile(..))
        ));
        // A file message without a file, or with a name that is a path, is malformed.
        let room = a.room(&rid).unwrap().clone();
        let mut bad = file.clone();
        bad.name = "../../.bashrc".into();
        for file in [None, Some(bad)] {
            let payload = Payload {
                from: "alice".into(),
                text: None,
                receipt: None,
                file,
            };
            let pos = Position {
                seq: 2,
                prev: env.hash(),
                lamport: 2,
                timestamp_ms: now_ms(),
            };
            let env = Envelope::seal(&a.identity, &room, Kind::File, pos, &payload).unwrap();
            assert_eq!(
                check(
                    &b.identity,
                    b.room(&rid).unwrap(),
                    env.into_bytes(),
                    &b.keys
                )
                .err(),
                Some(Rejection::Malformed)
            );
        }
    }

    #[test]
    fn what_members_claim_to_hold_is_chased_once_it_has_settled() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, mut b, mut c) = three_in_lobby(&dir);
        let (rid, m1, _) = a.compose("lobby", "m1").unwrap();
        let (_, m2, _) = a.compose("lobby", "m2").unwrap();
        for env in [&m1, &m2] {
            b.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
        }
        // Gossip lost m2 on its way to Carol; she has nothing to chase yet.
        c.receive(&rid.topic(), m1.bytes().to_vec()).unwrap();
        assert!(!c.chase_claims(rid, Instant::now()));
        // Bob's message carries what he holds, Alice's m2 among it.
        let before = Instant::now();
        let (_, from_bob, _) = b.compose("lobby", "hi").unwrap();
        c.receive(&rid.topic(), from_bob.bytes().to_vec()).unwrap();
        // Heard just now: as likely m2 still on its way as lost.
        assert!(!c.chase_claims(rid, before));
        assert!(c.chase_claims(rid, Instant::now() + c.claims.settle(rid)));
        // Chased once; the backstop rounds take it from there.
        assert!(!c.chase_claims(rid, Instant::now()));
        // Once she holds it, the claim is gone.
        c.receive(&rid.topic(), m2.bytes().to_vec()).unwrap();
        assert!(!c.chase_claims(rid, Instant::now()));
        assert_eq!(c.claims.outstanding(rid), 0);
        // A member claiming more (here in a receipt) is chased again.
        let (_, m3, _) = a.compose("lobby", "m3").unwrap();
        b.receive(&rid.topic(), m3.bytes().to_vec()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let receipt = b.compose_receipt(rid, false).unwrap().unwrap().into_bytes();
        assert!(matches!(
            c.receive(&rid.topic(), receipt).unwrap(),
            Incoming::Receipt
        ));
        assert!(c.chase_claims(rid, Instant::now() + c.claims.settle(rid)));
        // What a member claims of a chain we hold in full is nothing to chase.
        assert!(!b.chase_claims(rid, Instant::now()));
    }

    #[test]
    fn receipts_carry_the_key_only_where_a_reader_may_lack_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, mut b, mut c) = three_in_lobby(&dir);
        let (rid, env, _) = a.compose("lobby", "hi").unwrap();
        b.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
        let carries_key = |x: &Core, bytes: &[u8]| {
            check(&x.identity, x.room(&rid).unwrap(), bytes.to_vec(), &x.keys)
                .unwrap()
                .0
                .carries_key
        };
        // Bob has never written here: nobody may know his key yet.
        let lurker = b.compose_receipt(rid, false).unwrap().unwrap().into_bytes();
        assert!(carries_key(&a, &lurker));
        // Once he has, Alice knows it from his first entry, and his receipts leave it out.
        let (_, first, _) = b.compose("lobby", "hello").unwrap();
        assert!(matches!(
            a.receive(&rid.topic(), first.bytes().to_vec()).unwrap(),
            Incoming::Accepted(..)
        ));
        // (His message carried his receipt; he has news again once Alice writes more.)
        let (_, more, _) = a.compose("lobby", "more").unwrap();
        b.receive(&rid.topic(), more.bytes().to_vec()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let delta = b.compose_receipt(rid, false).unwrap().unwrap().into_bytes();
        assert!(!carries_key(&a, &delta));
        assert!(matches!(
            a.receive(&rid.topic(), delta.clone()).unwrap(),
            Incoming::Receipt
        ));
        // Carol never got that entry: she cannot check the receipt, and does not pass it on.
        assert!(matches!(
            c.receive(&rid.topic(), delta).unwrap(),
            Incoming::UnknownAuthor
        ));
        // A whole receipt (sent to newcomers) carries the key again.
        std::thread::sleep(std::time::Duration::from_millis(2));
        let full = b.compose_receipt(rid, true).unwrap().unwrap().into_bytes();
        assert!(matches!(
            c.receive(&rid.topic(), full).unwrap(),
            Incoming::Receipt
        ));
        // It says Bob holds what Carol lacks: her next reconciliation round goes after it,
        // once (a claim is chased once, until a member claims more).
        let now = Instant::now() + c.claims.settle(rid);
        assert!(c.chase_claims(rid, now));
        assert!(!c.chase_claims(rid, now));
    }

    #[test]
    fn message_flows_between_cores_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, mut b, _) = two_in_lobby(&dir);
        let (rid, env, view) = a.compose("lobby", "hello bob").unwrap();
        assert!(view.mine);
        let got = b.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
        let Incoming::Accepted(v, _) = got else {
            panic!("not accepted: {got:?}")
        };
        assert_eq!(v.text.as_deref(), Some("hello bob"));
        assert_eq!(v.author, "alice");
        assert!(matches!(
            b.receive(&rid.topic(), env.bytes().to_vec()).unwrap(),
            Incoming::Duplicate
        ));
        drop(b);
        let b = core(&dir, 1);
        let h = b.history("lobby", 10).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].text.as_deref(), Some("hello bob"));
    }

    #[test]
    fn a_named_room_knows_its_writers_and_receipt_senders_and_remembers_its_writers() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, mut b, mut c) = three_in_lobby(&dir);
        let rid = Room::named("lobby", None).unwrap().id;
        assert_eq!(c.member_count(rid), 1, "only herself yet");
        let (_, env, _) = a.compose("lobby", "hi").unwrap();
        for x in [&mut b, &mut c] {
            x.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
        }
        assert_eq!(c.member_count(rid), 2);
        // Bob never writes, but says what he holds.
        let receipt = b.compose_receipt(rid, true).unwrap().unwrap().into_bytes();
        assert!(matches!(
            c.receive(&rid.topic(), receipt).unwrap(),
            Incoming::Receipt
        ));
        assert_eq!(c.member_count(rid), 3);
        // A second message from a known member counts nobody twice.
        let (_, env, _) = a.compose("lobby", "again").unwrap();
        let Incoming::Accepted(v, _) = c.receive(&rid.topic(), env.bytes().to_vec()).unwrap()
        else {
            panic!("accepted")
        };
        assert_eq!(
            (v.delivered_to, v.known_members),
            (1, 2),
            "she holds it; Bob's receipt came before it"
        );
        // Receipts are not stored: after a restart, the writers and ourselves.
        drop(c);
        let c = core(&dir, 2);
        assert_eq!(c.member_count(rid), 2);
        assert_eq!(c.member_count(RoomId([9; 32])), 0, "not a room of ours");
    }

    /// Six writers, each heard once and each new to her: the room is bigger than the seven
    /// members she knows, as far as pacing goes; heard again and again, they are all she
    /// hears, and the room is what she knows.
    #[test]
    fn whom_a_member_hears_sizes_the_room_beyond_the_members_it_knows() {
        let dir = tempfile::tempdir().unwrap();
        let lobby = Room::named("lobby", None).unwrap();
        let rid = lobby.id;
        let mut c = core(&dir, 2);
        c.join(lobby.clone()).unwrap();
        let mut writers: Vec<Core> = (0..6u8)
            .map(|i| {
                let master = crypto::sha256(&[b"census test", &[i]]);
                let id = Identity::from_master(&format!("w{i}"), &master, KeySize::Rsa2048);
                let j = Journal::open(&dir.path().join(format!("w{i}.redb"))).unwrap();
                let mut x = Core::open(Arc::new(id.unwrap()), j).unwrap();
                x.join(lobby.clone()).unwrap();
                x
            })
            .collect();
        assert_eq!(c.room_size(rid), 1);
        for w in &mut writers {
            let (_, env, _) = w.compose("lobby", "hi").unwrap();
            c.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
        }
        assert_eq!(c.member_count(rid), 7);
        assert!(c.room_size(rid) > 7, "{}", c.room_size(rid));
        for round in 0..25 {
            for w in &mut writers {
                let (_, env, _) = w.compose("lobby", &format!("again {round}")).unwrap();
                c.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
            }
        }
        assert_eq!(c.member_count(rid), 7);
        assert_eq!(c.room_size(rid), 7);
    }

    #[test]
    fn tampered_and_foreign_envelopes_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, mut b, _) = two_in_lobby(&dir);
        let (rid, env, _) = a.compose("lobby", "hi").unwrap();
        let mut bytes = env.bytes().to_vec();
        let n = bytes.len();
        bytes[n - 300] ^= 1;
        assert!(matches!(
            b.receive(&rid.topic(), bytes).unwrap(),
            Incoming::Rejected(Rejection::BadSignature)
        ));
        assert!(matches!(
            b.receive(&rid.topic(), vec![1, 2, 3]).unwrap(),
            Incoming::Rejected(Rejection::Malformed)
        ));
        // An envelope for another room, replayed on this room's topic.
        a.join(Room::named("other", None).unwrap()).unwrap();
        let (_, other, _) = a.compose("other", "x").unwrap();
        assert!(matches!(
            b.receive(&rid.topic(), other.bytes().to_vec()).unwrap(),
            Incoming::Rejected(Rejection::WrongRoom)
        ));
        assert_eq!(b.counters().rejected.values().sum::<u64>(), 3);
        assert!(b.history("lobby", 10).unwrap().is_empty());
    }

    /// `a`'s next four messages in the lobby: "one" to "four".
    fn four_in_lobby(a: &mut Core) -> Vec<Envelope> {
        ["one", "two", "three", "four"]
            .iter()
            .map(|t| a.compose("lobby", t).unwrap().1)
            .collect()
    }

    /// Entries that came ahead of a gap are shown when the gap fills: the entry that fills
    /// it carries their views, in order, so a client following new messages sees them all.
    #[test]
    fn filling_a_gap_releases_the_entries_held_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, mut b, rid) = two_in_lobby(&dir);
        let envs = four_in_lobby(&mut a);
        let receive = |b: &mut Core, i: usize| b.receive(&rid.topic(), envs[i].bytes().to_vec());
        assert!(matches!(receive(&mut b, 0).unwrap(), Incoming::Accepted(_, r) if r.is_empty()));
        assert!(matches!(receive(&mut b, 3).unwrap(), Incoming::Pending));
        assert!(matches!(receive(&mut b, 2).unwrap(), Incoming::Pending));
        let Incoming::Accepted(v, released) = receive(&mut b, 1).unwrap() else {
            panic!("the gap-filler is accepted")
        };
        assert_eq!(v.text.as_deref(), Some("two"));
        let texts: Vec<_> = released.iter().map(|m| m.text.as_deref()).collect();
        assert_eq!(texts, vec![Some("three"), Some("four")]);
        assert_eq!(b.history("lobby", 10).unwrap().len(), 4);
    }

    /// Admits `env` as gossip does: the entry to store, and its view if shown at once.
    fn admit_entry(
        c: &mut Core,
        rid: RoomId,
        env: &Envelope,
    ) -> ((RoomId, Envelope, Payload), Option<MessageView>) {
        let Admitted::Entry(entry) = c.admit(&rid.topic(), env.bytes().to_vec()) else {
            panic!("a valid entry is admitted")
        };
        let view = c.preview(entry.0, &entry.1, &entry.2);
        (*entry, view)
    }

    /// An entry that comes next in its author's chain is shown when admitted, the same view
    /// it would have had once stored, and storing it shows nothing more; one after a gap
    /// waits for the store, and is shown (once) when the gap fills.
    #[test]
    fn entries_next_in_their_chain_are_shown_before_they_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, mut b, rid) = two_in_lobby(&dir);
        let envs = four_in_lobby(&mut a);

        let (first, shown) = admit_entry(&mut b, rid, &envs[0]);
        let shown = shown.expect("next in the chain: shown at once");
        assert_eq!(shown.text.as_deref(), Some("one"));
        assert_eq!(shown.seq, 1);
        // Two follows one although one is not stored yet; four is after a gap.
        let (second, shown2) = admit_entry(&mut b, rid, &envs[1]);
        assert_eq!(shown2.unwrap().text.as_deref(), Some("two"));
        let (fourth, none) = admit_entry(&mut b, rid, &envs[3]);
        assert!(none.is_none());
        assert_eq!(b.shown_unstored(), 2);
        assert!(
            b.history("lobby", 10).unwrap().is_empty(),
            "nothing stored yet"
        );

        let out = b.commit(vec![first, second, fourth]).unwrap();
        assert!(
            matches!(&out[0], Incoming::Shown(r) if r.is_empty()),
            "{out:?}"
        );
        assert!(
            matches!(&out[1], Incoming::Shown(r) if r.is_empty()),
            "{out:?}"
        );
        assert!(matches!(out[2], Incoming::Pending));
        assert_eq!(b.shown_unstored(), 0);
        // The stored view is the one shown.
        let stored = b.history("lobby", 10).unwrap();
        assert_eq!(stored[0], shown);

        // Three fills the gap: shown at once, and four comes with its store.
        let (third, shown3) = admit_entry(&mut b, rid, &envs[2]);
        assert_eq!(shown3.unwrap().text.as_deref(), Some("three"));
        let out = b.commit(vec![third]).unwrap();
        let Incoming::Shown(released) = &out[0] else {
            panic!("{out:?}")
        };
        let texts: Vec<_> = released.iter().map(|m| m.text.as_deref()).collect();
        assert_eq!(texts, vec![Some("four")]);
        assert_eq!(b.history("lobby", 10).unwrap().len(), 4);
    }

    /// A message shown on arrival that reconciliation stores first is not shown again by
    /// reconciliation, and the gossip copy stored after it is a duplicate; a repeat of a
    /// message shown is not shown again either.
    #[test]
    fn a_shown_entry_is_shown_once_whichever_path_stores_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, mut b, rid) = two_in_lobby(&dir);
        let (_, env, _) = a.compose("lobby", "hello").unwrap();
        let (entry, shown) = admit_entry(&mut b, rid, &env);
        assert!(shown.is_some());
        let (_, again) = admit_entry(&mut b, rid, &env);
        assert!(again.is_none(), "a repeat is not shown twice");

        let payload = entry.2.clone();
        let report = b
            .store_batch(rid, vec![(entry.1.clone(), payload)])
            .unwrap();
        assert_eq!(report.added, 1);
        assert!(report.appended.is_empty(), "shown already");
        assert!(matches!(
            b.commit(vec![entry]).unwrap()[0],
            Incoming::Duplicate
        ));
        assert_eq!(b.shown_unstored(), 0);
        assert_eq!(b.history("lobby", 10).unwrap().len(), 1);

        // The next message goes on from the journal.
        let (_, env2, _) = a.compose("lobby", "again").unwrap();
        assert!(admit_entry(&mut b, rid, &env2).1.is_some());
    }

    /// A batch stored at once sizes the room as the same messages one at a time would: an
    /// author new to the room is a known sender from its second message on (counting it
    /// as new each time made a writer of several messages in one batch look like several
    /// members never met).
    #[test]
    fn a_batch_counts_its_senders_as_one_message_at_a_time_would() {
        let writers = tempfile::tempdir().unwrap();
        let (mut alice, _, mut carol) = three_in_lobby(&writers);
        let rid = Room::named("lobby", None).unwrap().id;
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut one, mut batched) = (core(&d1, 1), core(&d2, 1));
        let hello = carol.compose("lobby", "hello").unwrap().1;
        let envs: Vec<Envelope> = (0..4)
            .map(|i| alice.compose("lobby", &format!("m{i}")).unwrap().1)
            .collect();
        for x in [&mut one, &mut batched] {
            x.join(Room::named("lobby", None).unwrap()).unwrap();
            x.receive(&rid.topic(), hello.bytes().to_vec()).unwrap();
        }
        for env in &envs {
            one.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
        }
        let entries: Vec<_> = envs
            .iter()
            .map(
                |env| match batched.admit(&rid.topic(), env.bytes().to_vec()) {
                    Admitted::Entry(e) => *e,
                    Admitted::Done(i) => panic!("{i:?}"),
                },
            )
            .collect();
        let out = batched.commit(entries).unwrap();
        assert!(
            out.iter().all(|i| matches!(i, Incoming::Accepted(..))),
            "{out:?}"
        );
        for x in [&one, &batched] {
            assert_eq!(x.member_count(rid), 3);
            assert_eq!(
                x.room_size(rid),
                3,
                "a writer of four messages is one member"
            );
        }
    }

    /// A new room's size is unknown, however big, until more members are known than we
    /// are connected to or a known sender is heard again: what paces its first receipts
    /// (`receipt::first_spacing`).
    #[test]
    fn a_rooms_size_is_known_once_a_sender_is_heard_again() {
        let writers = tempfile::tempdir().unwrap();
        let (mut alice, _, mut carol) = three_in_lobby(&writers);
        let rid = Room::named("lobby", None).unwrap().id;
        let d = tempfile::tempdir().unwrap();
        let mut x = core(&d, 1);
        x.join(Room::named("lobby", None).unwrap()).unwrap();
        assert!(!x.room_size_known(rid, 11), "nobody heard yet");
        for env in [
            alice.compose("lobby", "a1").unwrap().1,
            carol.compose("lobby", "c1").unwrap().1,
        ] {
            x.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
        }
        assert!(
            !x.room_size_known(rid, 11),
            "two new senders fit a room of any size"
        );
        assert!(
            x.room_size_known(rid, 2),
            "three members known, more than the two we are connected to"
        );
        let again = alice.compose("lobby", "a2").unwrap().1;
        x.receive(&rid.topic(), again.bytes().to_vec()).unwrap();
        assert!(x.room_size_known(rid, 11), "alice heard again");
    }

    /// A pulled batch checked on several threads gives what one thread gives, in order,
    /// although the slice holding the author's key may be checked last.
    #[test]
    fn batches_checked_in_parallel_match_one_thread() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, b, rid) = two_in_lobby(&dir);
        let mut batch: Vec<Vec<u8>> = (0..200)
            .map(|i| a.compose("lobby", &format!("m{i}")).unwrap().1.into_bytes())
            .collect();
        // One tampered entry in the third slice.
        let last = batch[130].len() - 1;
        batch[130][last] ^= 1;
        let room = b.room(&rid).unwrap();
        let outcome = |threads: usize| -> Vec<Result<u64, Rejection>> {
            // A reader that has not met the author: only entry 1 carries the key.
            let keys = AuthorKeys::default();
            check_batch(&b.identity, room, &batch, &keys, threads)
                .into_iter()
                .map(|r| r.map(|(env, _)| env.seq))
                .collect()
        };
        let one = outcome(1);
        assert_eq!(one[0], Ok(1));
        assert_eq!(one[199], Ok(200));
        assert_eq!(one[130], Err(Rejection::BadSignature));
        assert_eq!(one.iter().filter(|r| r.is_err()).count(), 1);
        for threads in [2, 3, 4, 64] {
            assert_eq!(outcome(threads), one, "{threads} threads");
        }
    }

    /// An author's key arrives with its first entry of a room: a later entry that comes
    /// first waits (not counted as invalid), is accepted once the first is in, and a
    /// restarted node knows the key again from its journal.
    #[test]
    fn author_keys_come_with_first_entries_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, mut b, rid) = two_in_lobby(&dir);
        let (_, first, _) = a.compose("lobby", "one").unwrap();
        let (_, second, _) = a.compose("lobby", "two").unwrap();
        assert!(first.carries_key && !second.carries_key);

        assert!(matches!(
            b.receive(&rid.topic(), second.bytes().to_vec()).unwrap(),
            Incoming::UnknownAuthor
        ));
        assert_eq!(b.counters().rejected.values().sum::<u64>(), 0);
        assert!(matches!(
            b.receive(&rid.topic(), first.bytes().to_vec()).unwrap(),
            Incoming::Accepted(..)
        ));
        assert!(matches!(
            b.receive(&rid.topic(), second.bytes().to_vec()).unwrap(),
            Incoming::Accepted(..)
        ));
        b.flush().unwrap();
        drop(b);

        let mut b = core(&dir, 1);
        assert!(b.author_keys().get(&identities()[0].id()).is_some());
        assert_eq!(b.history("lobby", 10).unwrap().len(), 2);
        let (_, third, _) = a.compose("lobby", "three").unwrap();
        assert!(matches!(
            b.receive(&rid.topic(), third.bytes().to_vec()).unwrap(),
            Incoming::Accepted(..)
        ));
    }

    #[test]
    fn members_are_named_by_their_last_message_and_counted_by_what_we_hold() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, mut b, mut c) = three_in_lobby(&dir);
        let rid = Room::named("lobby", None).unwrap().id;
        for text in ["one", "two"] {
            let (_, env, _) = a.compose("lobby", text).unwrap();
            b.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
            c.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
        }
        // Carol says what she holds, and writes nothing.
        let receipt = c.compose_receipt(rid, true).unwrap().unwrap();
        b.receive(&rid.topic(), receipt.into_bytes()).unwrap();
        let named = |b: &Core| {
            let (reader, list) = b.members("lobby").unwrap();
            reader.name_members(list).unwrap()
        };
        let list = named(&b);
        let got: Vec<(Option<String>, Option<String>, u64, bool)> = list
            .iter()
            .map(|m| (m.name.clone(), m.contact.clone(), m.messages, m.me))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some("bob".into()), None, 0, true),
                (Some("alice".into()), None, 2, false),
                (None, None, 0, false),
            ]
        );
        assert_eq!(list[1].user_id, identities()[0].id().to_hex());
        assert_eq!(list[2].user_id, identities()[2].id().to_hex());
        // A contact shows by our name for it.
        b.add_contact("ally", &identities()[0].contact_code().encode())
            .unwrap();
        assert_eq!(named(&b)[1].contact.as_deref(), Some("ally"));
        assert!(matches!(
            b.members("nowhere"),
            Err(CoreError::UnknownRoom(_))
        ));
    }

    #[test]
    fn direct_messages_reach_only_the_recipient() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = core(&dir, 0);
        let mut b = core(&dir, 1);
        let mut c = core(&dir, 2);
        let b_code = identities()[1].contact_code().encode();
        let a_code = identities()[0].contact_code().encode();
        a.add_contact("bob", &b_code).unwrap();
        b.add_contact("alice", &a_code).unwrap();
        let (rid, env, _) = a.compose("@bob", "secret").unwrap();
        let Incoming::Accepted(v, _) = b.receive(&rid.topic(), env.bytes().to_vec()).unwrap()
        else {
            panic!("bob should read it")
        };
        assert_eq!(v.contact.as_deref(), Some("alice"));
        // Carol knows both public keys, so she can build the room exactly, but cannot read.
        let mut forged = Room::direct(
            identities()[0].contact_code().into(),
            identities()[1].contact_code().into(),
        );
        assert_eq!(forged.id, rid);
        forged.name = "spy".into();
        c.join(forged.clone()).unwrap();
        assert!(matches!(
            c.receive(&rid.topic(), env.bytes().to_vec()).unwrap(),
            Incoming::Rejected(Rejection::Undecryptable)
        ));
        // A room whose member list lacks the author refuses its entries outright.
        let mut wrong_members = Room::direct(
            identities()[2].contact_code().into(),
            identities()[1].contact_code().into(),
        );
        wrong_members.id = rid;
        assert_eq!(
            check(
                &identities()[2],
                &wrong_members,
                env.bytes().to_vec(),
                &AuthorKeys::default()
            )
            .err(),
            Some(Rejection::NotAMember)
        );
    }

    #[test]
    fn group_rooms_are_shared_by_their_members_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut cores: Vec<Core> = (0..3).map(|i| core(&dir, i)).collect();
        let names = ["alice", "bob", "carol"];
        for (i, c) in cores.iter_mut().enumerate() {
            for (j, name) in names.iter().enumerate() {
                if i != j {
                    c.add_contact(name, &identities()[j].contact_code().encode())
                        .unwrap();
                }
            }
        }
        let views: Vec<RoomView> = cores
            .iter_mut()
            .enumerate()
            .map(|(i, c)| {
                let others: Vec<String> = names
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, n)| n.to_string())
                    .collect();
                c.create_group("team", &others).unwrap()
            })
            .collect();
        assert!(
            views.windows(2).all(|w| w[0].id == w[1].id),
            "same group id"
        );
        let (rid, env, _) = cores[0].compose("team", "standup at 10").unwrap();
        for c in &mut cores[1..] {
            let Incoming::Accepted(v, _) = c.receive(&rid.topic(), env.bytes().to_vec()).unwrap()
            else {
                panic!("members read group messages")
            };
            assert_eq!(v.text.as_deref(), Some("standup at 10"));
            assert_eq!(v.known_members, 2);
        }
        // A group needs known contacts.
        assert!(matches!(
            cores[0].create_group("x", &["mallory".into()]),
            Err(CoreError::UnknownContact(_))
        ));
    }

    #[test]
    fn a_runaway_lamport_clock_cannot_stop_a_room() {
        let dir = tempfile::tempdir().unwrap();
        let (_alice, mut b, _) = two_in_lobby(&dir);
        let room = Room::named("lobby", None).unwrap();
        let pos = Position {
            seq: 1,
            prev: [0; 32],
            lamport: crate::envelope::MAX_LAMPORT - 1,
            timestamp_ms: 0,
        };
        let payload = Payload {
            from: "alice".into(),
            text: Some("far future".into()),
            receipt: None,
            file: None,
        };
        let env = Envelope::seal(&identities()[0], &room, Kind::Text, pos, &payload).unwrap();
        assert!(matches!(
            b.receive(&room.id.topic(), env.bytes().to_vec()).unwrap(),
            Incoming::Accepted(..)
        ));
        let (_, next, _) = b.compose("lobby", "still talking").unwrap();
        assert_eq!(next.lamport, crate::envelope::MAX_LAMPORT - 1);
    }

    #[test]
    fn another_identity_cannot_open_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        drop(core(&dir, 0));
        let j = Journal::open(&dir.path().join("j0.redb")).unwrap();
        let err = Core::open(identities()[1].clone(), j).err().unwrap();
        assert!(matches!(err, CoreError::WrongIdentity(_)), "{err}");
    }

    #[test]
    fn rooms_and_contacts_persist_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = core(&dir, 0);
        a.join(Room::named("secret room", Some("room pw")).unwrap())
            .unwrap();
        a.add_contact("bob", &identities()[1].contact_code().encode())
            .unwrap();
        drop(a);
        let raw = std::fs::read(dir.path().join("j0.redb")).unwrap();
        assert!(!raw.windows(11).any(|w| w == b"secret room"));
        assert!(
            !raw.windows(3).any(|w| w == b"bob"),
            "contact names are sealed"
        );
        let a = core(&dir, 0);
        assert!(a.room_by_name("secret room").is_ok());
        assert!(a.room_by_name("@bob").is_ok());
        assert_eq!(a.contacts().len(), 1);
    }
}
