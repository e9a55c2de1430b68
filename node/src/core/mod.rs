//! The node's protocol state, without the network: joined rooms, contacts, the journal, and
//! what to do with a message coming in or going out. Plain synchronous code, so it can be
//! tested by handing envelopes from one `Core` to another.
//!
//! Here: rooms, contacts, composing and serving pulls; `incoming` (checking and storing
//! what arrives), `receipts` (what we tell rooms we hold, and what members tell us),
//! `members` (who is in a room, delivery counts), `reader` (reading history off the event
//! loop: pages, searches, files).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::authors::AuthorKeys;
use crate::census::Census;
use crate::claims::Claims;
use crate::crypto;
use crate::envelope::{Envelope, EnvelopeError, Kind, Payload, Position};
use crate::files::FileRef;
use crate::identity::{ContactCode, Identity, IdentityError, UserId};
use crate::journal::{Id, Journal, JournalError, StoredEntry};
use crate::receipt::{Heads, ShortId};
use crate::room::{Member, Room, RoomError, RoomId, RoomKind, StoredRoom};
use crate::shown::Shown;
use crate::sync::{self, ForkRef, Range};

mod groups;
mod held;
mod ignore;
mod incoming;
mod members;
pub mod read;
mod reader;
mod receipts;
pub mod repair;

pub use ignore::IgnoredView;
pub use incoming::{Checked, check, check_batch};
use reader::open_entry;
pub use reader::{Opened, Query, Revised, RoomReader};

const OWNER_KEY: &str = "owner";

/// A sealed setting's value, opened (wiped when dropped).
pub type OpenedSetting = zeroize::Zeroizing<Vec<u8>>;
/// A sealed setting's value as read: opened, or why it cannot be.
pub type SettingRead = Result<OpenedSetting, CoreError>;
const ROOM_PREFIX: &str = "room/";
const CONTACT_PREFIX: &str = "contact/";

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("unknown room '{0}': join it first (cryptchat join ROOM), or see cryptchat rooms")]
    UnknownRoom(String),
    #[error("already in room '{0}'; to change its password, leave it first")]
    AlreadyJoined(String),
    #[error(
        "'{0}' is your direct room with a contact: to leave it, remove the contact (cryptchat contact remove NAME)"
    )]
    DirectRoom(String),
    #[error("already in {0} rooms, the most one node can join: leave a room first")]
    TooManyRooms(usize),
    #[error("unknown contact '{0}': add it with cryptchat contact add NAME CODE")]
    UnknownContact(String),
    #[error("that contact code is your contact '{0}' already")]
    SameContact(String),
    #[error("you are in that room already, as '{0}'")]
    JoinedAs(String),
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
    #[error(
        "no message #{0} of yours in room '{1}' (cryptchat history shows your messages' numbers)"
    )]
    UnknownMessage(u64, String),
    #[error("message #{0} cannot be changed: {1}")]
    NotEditable(u64, &'static str),
    #[error(
        "no message {0} in room '{1}': name it AUTHOR#N, AUTHOR a contact or 8+ hex digits \
         of a user id (cryptchat history shows each message's)"
    )]
    NoMessage(String, String),
    #[error(
        "no author '{0}' in room '{1}': name a contact, or 8+ hex digits of a user id \
         (cryptchat members ROOM shows them)"
    )]
    NoAuthor(String, String),
    #[error("you cannot ignore yourself")]
    IgnoreSelf,
    #[error("cannot invite to this room: {0}")]
    NotInvitable(&'static str),
    #[error("your messages in '{0}' conflict with no one's: nothing to repair")]
    NotForked(String),
    #[error("message {0} was deleted")]
    Deleted(String),
    #[error("'{0}' is not a reaction: an emoji or a short word (at most 32 bytes, no spaces)")]
    BadReaction(String),
    #[error("no file '{0}' in room '{1}': see cryptchat files ROOM")]
    UnknownFile(String, String),
    #[error(
        "'{0}' is not a file id: give 8 or more of its hex digits, as cryptchat files ROOM shows them"
    )]
    BadFileId(String),
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
    /// Kind `revision`: the seq of the author's message that this one edits (the new text
    /// is `text`) or deletes (`deleted`). Such entries are events only: history applies
    /// them to the message they revise and does not list them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revises: Option<u64>,
    /// When the text shown was written, if it is an edit (the author's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_ms: Option<u64>,
    /// Deleted by its author: it has no text or file any more.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// A reply: the message it answers, and a quote of it as the replier saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<Box<crate::envelope::ReplyTo>>,
    /// Kind `reaction`: the reaction, to which message. Such entries are events only:
    /// history gathers them into the `reactions` of the message they react to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub react: Option<Box<crate::envelope::React>>,
    /// An invitation to a group (a text in a direct room): the group's name and its
    /// members' contact codes. The invitee's node joins the group when it arrives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite: Option<Box<crate::envelope::Invite>>,
    /// The reactions to this message that stand (history only): each with who gave it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<ReactionView>,
    pub mine: bool,
    /// Known members (other than the author) known to hold this message: ourselves, and
    /// those whose delivery receipts cover it.
    pub delivered_to: u32,
    /// Known members of the room other than the author.
    pub known_members: u32,
}

/// One reaction to a message, and the user ids of the members who gave it, in the order
/// they did.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReactionView {
    pub emoji: String,
    pub by: Vec<String>,
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
    /// Texts and files held, in their authors' chains (not edits, deletions or reactions),
    /// leaving out those of ignored authors.
    pub messages: u64,
    /// How many of those arrived since the user last read the room (see [`read`]).
    #[serde(default)]
    pub unread: u64,
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
    /// Whether the user ignores it (see `cryptchat ignore`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignored: bool,
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
    /// Authors the user does not want to see (see [`ignore`]); shared with readers.
    ignored: Arc<std::collections::BTreeSet<UserId>>,
    /// Per room, how many of its messages the user has read (see [`read`]).
    read: HashMap<RoomId, u64>,
    counters: Counters,
    /// What each member's receipts say it holds, per room.
    receipts: HashMap<RoomId, HashMap<UserId, Receipt>>,
    /// Rooms where a member's hold on our chain grew since it was last stored (see [`held`]).
    held_dirty: HashSet<RoomId>,
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

/// An invitation's words as its author sees them. They are written for the invitee
/// ("invites you to the room 'lobby'"); in the author's own view of the direct room they
/// read "invited bob to the room 'lobby'". Words another client wrote some other way are
/// left as they are.
fn own_invitation(room: &Room, text: String) -> String {
    match text.strip_prefix("invites you to ") {
        Some(rest) if room.kind == RoomKind::Direct => {
            format!("invited {} to {rest}", room.name.trim_start_matches('@'))
        }
        _ => text,
    }
}
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The one id among `ids` whose hex starts with `prefix` (8 or more hex digits), as people
/// name authors (`AUTHOR#N`): none if there is none, or more than one.
fn id_by_prefix<'a>(ids: impl IntoIterator<Item = &'a Id>, prefix: &str) -> Option<Id> {
    if prefix.len() < 8 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut found = ids
        .into_iter()
        .filter(|id| hex::encode(id).starts_with(prefix));
    match (found.next(), found.next()) {
        (Some(id), None) => Some(*id),
        _ => None,
    }
}

/// A message we wrote, in the journal: its room, the envelope to publish, and its view.
pub type Composed = (RoomId, Envelope, MessageView);

impl Core {
    /// Opens or creates the journal file a node keeps, counting a room's texts and files as
    /// its messages (see [`RoomView::messages`]).
    pub fn open_journal(path: &std::path::Path) -> Result<Journal, JournalError> {
        Journal::open_counting(path, Envelope::is_message)
    }

    /// Opens the node state on a journal (from [`Core::open_journal`]); refuses a journal
    /// that belongs to another identity.
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
            ignored: Arc::default(),
            read: HashMap::new(),
            counters: Counters::default(),
            receipts: HashMap::new(),
            held_dirty: HashSet::new(),
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
        core.load_held()?;
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
        core.load_ignored()?;
        core.load_read()?;
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

    /// Stores state the node keeps about its own doings (the service's, opaque here)
    /// sealed with the local key, in one transaction; not `durable`: see
    /// [`Journal::put_settings_with`].
    pub fn put_sealed_settings(
        &self,
        values: &[(String, Vec<u8>)],
        durable: bool,
    ) -> Result<(), CoreError> {
        let sealed = values
            .iter()
            .map(|(key, plain)| Ok((key.clone(), self.seal(key, plain)?)))
            .collect::<Result<Vec<_>, CoreError>>()?;
        Ok(self.journal.put_settings_with(&sealed, durable)?)
    }

    /// The values [`Core::put_sealed_settings`] stored under keys starting with `prefix`,
    /// each opened or the reason it cannot be (one damaged value hides no other).
    pub fn sealed_settings(&self, prefix: &str) -> Result<Vec<(String, SettingRead)>, CoreError> {
        let stored = self.journal.settings_with_prefix(prefix)?;
        Ok(stored
            .into_iter()
            .map(|(key, blob)| {
                let plain = self.unseal(&key, &blob);
                (key, plain)
            })
            .collect())
    }

    /// Drops a value [`Core::put_sealed_settings`] stored.
    pub fn delete_sealed_setting(&self, key: &str) -> Result<(), CoreError> {
        self.journal.delete_setting(key)?;
        Ok(())
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
        // A name stored before names were NFC is found as it was typed.
        self.names
            .get(&crate::room::local_name(name))
            .or_else(|| self.names.get(name.trim()))
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
        // One room, one local name.
        if let Some(existing) = self.rooms.get(&room.id) {
            return Err(CoreError::JoinedAs(existing.name.clone()));
        }
        if self.rooms.len() >= self.room_limit {
            return Err(CoreError::TooManyRooms(self.rooms.len()));
        }
        self.store_room(&room)?;
        let id = room.id;
        self.names.insert(room.name.clone(), id);
        self.rooms.insert(id, room);
        self.gather_members(id)?;
        // What the journal holds of it already (joined before) is read; what comes after is not.
        self.read_all(id)?;
        Ok((&self.rooms[&id], true))
    }

    /// Leaves a room; its history stays in the journal (rejoining shows it again). A direct
    /// room is left with its contact ([`Core::remove_contact`]): left alone, the contact
    /// would stay, unreachable.
    pub fn leave(&mut self, name: &str) -> Result<Room, CoreError> {
        let room = self.room_by_name(name)?;
        if room.kind == RoomKind::Direct {
            return Err(CoreError::DirectRoom(room.name.clone()));
        }
        self.leave_room(name)
    }

    fn leave_room(&mut self, name: &str) -> Result<Room, CoreError> {
        let id = self.room_by_name(name)?.id;
        self.journal
            .delete_setting(&format!("{ROOM_PREFIX}{}", id.to_hex()))?;
        self.names.retain(|_, v| *v != id);
        self.forget_read(id)?;
        self.forget_held(id)?;
        self.claims.forget(id);
        self.shown.forget_room(&id.0);
        self.members.remove(&id);
        self.census.remove(&id);
        self.rooms
            .remove(&id)
            .ok_or_else(|| CoreError::UnknownRoom(name.to_string()))
    }

    pub fn room_view(&self, room: &Room) -> Result<RoomView, CoreError> {
        let messages = self.messages_shown(room.id)?;
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
            messages,
            unread: self.unread(room.id, messages),
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
        // One key, one name: its direct room is one room.
        if let Some(other) = self.contact_name(&code.identity.id())
            && other != name
        {
            return Err(CoreError::SameContact(other));
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

    /// Removes a contact and leaves its direct room, if joined (its history stays on disk,
    /// as with [`Core::leave`]: adding the contact again shows it). Returns the contact and
    /// the room left.
    pub fn remove_contact(&mut self, name: &str) -> Result<(ContactView, Option<Room>), CoreError> {
        let (name, code) = self.contact(name)?;
        let name = name.to_string();
        let code = code.clone();
        self.journal.delete_setting(&self.contact_key(&name))?;
        // Earlier versions wrote it under the name itself (checked: a name could look like
        // another contact's key).
        let legacy = format!("{CONTACT_PREFIX}{name}");
        if let Some(blob) = self.journal.get_setting(&legacy)?
            && let Ok(plain) = self.unseal(&legacy, &blob)
            && serde_json::from_slice::<(String, String)>(&plain).is_ok_and(|(n, _)| n == name)
        {
            self.journal.delete_setting(&legacy)?;
        }
        self.contacts.remove(&name);
        let room_name = format!("@{name}");
        let room = match self.leave_room(&room_name) {
            Ok(room) => Some(room),
            Err(CoreError::UnknownRoom(_)) => None,
            Err(e) => return Err(e),
        };
        let contact = ContactView {
            name,
            user_id: code.identity.id().to_hex(),
            room: room_name,
        };
        Ok((contact, room))
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

    /// Looks up the members of a group among our contacts and joins the group room; writes
    /// an invitation to it into each member's direct room, and returns those to publish.
    /// (Creating a group again invites its members again.)
    pub fn create_group(
        &mut self,
        name: &str,
        members: &[String],
    ) -> Result<(RoomView, Vec<Composed>), CoreError> {
        let mut list: Vec<Member> = vec![self.identity.contact_code().into()];
        let mut invitees = Vec::new();
        for m in members {
            let (contact, code) = self.contact(m)?;
            let mut member: Member = code.clone().into();
            member.username = contact.to_string();
            list.push(member);
            invitees.push(contact.to_string());
        }
        let room = Room::group(name, list)?;
        let (room, _) = self.join(room)?;
        let room = room.clone();
        let invites = self.invite(&room.name, &invitees)?;
        Ok((self.room_view(&room)?, invites))
    }

    /// Invites contacts to a room: writes an invitation into the direct room with each, and
    /// returns those to publish. A named room's carries its id and key (see
    /// [`crate::envelope::Invite`]); a group's, every member's contact code, and goes only to
    /// members (a group's members are fixed: a new member needs a new group).
    pub fn invite(
        &mut self,
        room_name: &str,
        contacts: &[String],
    ) -> Result<Vec<Composed>, CoreError> {
        let room = self.room_by_name(room_name)?.clone();
        let (invite, text) = match &room.access {
            crate::room::Access::Shared(_) => {
                let invite = crate::envelope::Invite::named(&room)
                    .ok_or(CoreError::NotInvitable("it has no shared key"))?;
                let password = if room.has_password {
                    " (it has a password: this invitation carries its key)"
                } else {
                    ""
                };
                let text = format!("invites you to the room '{}'{password}", invite.name);
                (invite, text)
            }
            crate::room::Access::Members(_) if room.kind == RoomKind::Group => {
                let (invite, names) = self.group_invite(&room);
                let text = format!("invites you to the group '{}' ({names})", invite.name);
                (invite, text)
            }
            crate::room::Access::Members(_) => {
                return Err(CoreError::NotInvitable(
                    "a direct room is for its two members",
                ));
            }
        };
        let mut invitees = Vec::new();
        for name in contacts {
            let (contact, code) = self.contact(name)?;
            if room
                .member_ids()
                .is_some_and(|ids| !ids.contains(&code.identity.id()))
            {
                return Err(CoreError::NotInvitable(
                    "a group's members are fixed: make a new group with them",
                ));
            }
            invitees.push(contact.to_string());
        }
        invitees.sort();
        invitees.dedup();
        let mut invites = Vec::with_capacity(invitees.len());
        for contact in invitees {
            let content = Payload {
                text: Some(text.clone()),
                invite: Some(invite.clone()),
                ..Payload::default()
            };
            invites.push(self.compose_entry(&format!("@{contact}"), Kind::Text, content)?);
        }
        Ok(invites)
    }

    /// Joins the room a contact's message invites us to (see [`Core::invite`]): `None` if it
    /// invites to nothing, or to a room we are in. The room takes its name, or if a room of
    /// ours has that name, the name followed by the inviter's in parentheses; a group's
    /// members who are our contacts go by our names for them.
    pub fn join_invited(&mut self, m: &MessageView) -> Result<Option<Room>, CoreError> {
        let Some(invite) = m.invite.as_deref().filter(|_| !m.mine) else {
            return Ok(None);
        };
        let Some(mut group) = invite.room() else {
            return Ok(None);
        };
        if self.rooms.contains_key(&group.id) {
            return Ok(None);
        }
        // In a group: its successor, with members added (checked on arrival).
        if let Ok(from) = self.room_by_name(&m.room)
            && from.kind == RoomKind::Group
        {
            let from = from.id;
            return self.join_successor(from, group);
        }
        if let crate::room::Access::Members(members) = &mut group.access {
            for member in members {
                if let Some(name) = self.contact_name(&member.identity.id()) {
                    member.username = name;
                }
            }
        }
        if self.names.contains_key(&group.name) {
            let inviter = m.contact.as_deref().unwrap_or(&m.author);
            group.name = format!("{} ({inviter})", group.name);
        }
        let (room, _) = self.join(group)?;
        Ok(Some(room.clone()))
    }

    /// The direct room with a contact (by its name, `@NAME` too), if it is one.
    pub fn direct_room(&self, contact: &str) -> Option<RoomId> {
        let (name, _) = self.contact(contact).ok()?;
        self.room_by_name(&format!("@{name}")).ok().map(|r| r.id)
    }

    /// A contact by its name (`@NAME` too) in any case or accent form: the name as stored,
    /// and its code.
    fn contact(&self, name: &str) -> Result<(String, &ContactCode), CoreError> {
        let typed = name.trim().trim_start_matches('@');
        // Names are stored normalised; one stored before they were NFC, as it was typed.
        let stored = crate::identity::normalise_username(typed)
            .ok()
            .filter(|n| self.contacts.contains_key(n))
            .unwrap_or_else(|| typed.to_string());
        match self.contacts.get(&stored) {
            Some(code) => Ok((stored, code)),
            None => Err(CoreError::UnknownContact(typed.to_string())),
        }
    }

    fn contact_name(&self, id: &UserId) -> Option<String> {
        self.contacts
            .iter()
            .find(|(_, c)| c.identity.id() == *id)
            .map(|(n, _)| n.clone())
    }

    fn view(&self, room: &Room, env: &Envelope, payload: Payload) -> MessageView {
        let author = env.author_id();
        let mut text = payload.text;
        if author == self.identity.id() && payload.invite.is_some() {
            text = text.map(|t| own_invitation(room, t));
        }
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
            deleted: env.kind == Kind::Revision && text.is_none(),
            revises: payload.revises.filter(|_| env.kind == Kind::Revision),
            edited_ms: None,
            reply_to: payload.reply_to.map(Box::new),
            react: payload.react.map(Box::new),
            invite: payload.invite.map(Box::new),
            reactions: Vec::new(),
            text,
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

    /// Writes a text message into the journal and returns the envelope to publish.
    pub fn compose(
        &mut self,
        room_name: &str,
        text: &str,
    ) -> Result<(RoomId, Envelope, MessageView), CoreError> {
        if text.trim().is_empty() {
            return Err(CoreError::EmptyMessage);
        }
        let text = Some(text.to_string());
        self.compose_entry(
            room_name,
            Kind::Text,
            Payload {
                text,
                ..Payload::default()
            },
        )
    }

    /// Writes a reply to the room's message `seq` of `author` (a contact's name, or at
    /// least 8 hex digits of a user id), quoting its start, into the journal, and returns
    /// the envelope to publish. The message must be here, and not deleted.
    pub fn compose_reply(
        &mut self,
        room_name: &str,
        text: &str,
        author: &str,
        seq: u64,
    ) -> Result<(RoomId, Envelope, MessageView), CoreError> {
        if text.trim().is_empty() {
            return Err(CoreError::EmptyMessage);
        }
        let quoted = self.message_named(room_name, author, seq)?;
        let quote = match (&quoted.payload.text, &quoted.payload.file) {
            (Some(text), _) => text.clone(),
            (None, Some(file)) => format!("[file] {}", file.name),
            (None, None) => String::new(),
        };
        let reply_to = crate::envelope::ReplyTo {
            author_id: quoted.env.author_id().to_hex(),
            seq,
            quote: crate::envelope::quote(&quote),
        };
        let content = Payload {
            text: Some(text.to_string()),
            reply_to: Some(reply_to),
            ..Payload::default()
        };
        self.compose_entry(room_name, Kind::Text, content)
    }

    /// Reacts to the room's message `seq` of `author` (as for [`Core::compose_reply`]) with
    /// `emoji`, or takes our reaction back (`undo`): writes the reaction into the journal
    /// and returns the envelope to publish.
    pub fn compose_reaction(
        &mut self,
        room_name: &str,
        author: &str,
        seq: u64,
        emoji: &str,
        undo: bool,
    ) -> Result<(RoomId, Envelope, MessageView), CoreError> {
        let quoted = self.message_named(room_name, author, seq)?;
        let react = crate::envelope::React {
            author_id: quoted.env.author_id().to_hex(),
            seq,
            emoji: emoji.trim().to_string(),
            undo,
        };
        if !react.is_valid() {
            return Err(CoreError::BadReaction(emoji.to_string()));
        }
        let content = Payload {
            react: Some(react),
            ..Payload::default()
        };
        self.compose_entry(room_name, Kind::Reaction, content)
    }

    /// The room's message `seq` by `author` as the user named it (see
    /// [`Core::author_named`]); not found, it is named back as the user wrote it.
    fn message_named(
        &self,
        room_name: &str,
        author: &str,
        seq: u64,
    ) -> Result<reader::Opened, CoreError> {
        let reader = self.reader(room_name)?;
        reader
            .message(&self.author_named(author), seq)
            .map_err(|e| match e {
                CoreError::NoMessage(_, room) => {
                    CoreError::NoMessage(format!("{author}#{seq}"), room)
                }
                e => e,
            })
    }

    /// A message's author as a user names it: a contact's name gives its id in hex; any
    /// other name is taken as (the start of) an id, written bare or in the short form
    /// shown beside members (`814d-dc60-...`).
    fn author_named(&self, author: &str) -> String {
        match self.contact(author) {
            Ok((_, code)) => code.identity.id().to_hex(),
            Err(_) => author.replace('-', "").to_ascii_lowercase(),
        }
    }

    /// Edits our own message `seq` in the room (`text`: its new text) or deletes it
    /// (`None`): writes the revision into the journal and returns the envelope to publish.
    /// Only text can be edited; a deleted message can be neither edited nor deleted again.
    pub fn compose_revision(
        &mut self,
        room_name: &str,
        seq: u64,
        text: Option<&str>,
    ) -> Result<(RoomId, Envelope, MessageView), CoreError> {
        if text.is_some_and(|t| t.trim().is_empty()) {
            return Err(CoreError::EmptyMessage);
        }
        let reader = self.reader(room_name)?;
        let unknown = || CoreError::UnknownMessage(seq, reader.room_name().to_string());
        let target = reader.own(seq)?.ok_or_else(unknown)?;
        match (target.env.kind, target.revised, text) {
            // Not messages (a reaction is taken back with `react --undo`).
            (Kind::Revision | Kind::Receipt | Kind::Reaction, ..) => return Err(unknown()),
            (_, Some(reader::Revised::Deleted), _) => {
                return Err(CoreError::NotEditable(seq, "it was deleted"));
            }
            (Kind::File, _, Some(_)) => {
                return Err(CoreError::NotEditable(
                    seq,
                    "it is a file (delete it and share the file again)",
                ));
            }
            // Its text says what it invites to: an edit would make the two differ.
            (_, _, Some(_)) if target.payload.invite.is_some() => {
                return Err(CoreError::NotEditable(seq, "it is an invitation"));
            }
            _ => {}
        }
        let room_name = reader.room_name().to_string();
        let content = Payload {
            text: text.map(str::to_string),
            revises: Some(seq),
            ..Payload::default()
        };
        self.compose_entry(&room_name, Kind::Revision, content)
    }

    /// Writes a `file` message (whose chunks are stored already) into the journal and
    /// returns the envelope to publish.
    pub fn compose_file(
        &mut self,
        room_name: &str,
        file: FileRef,
    ) -> Result<(RoomId, Envelope, MessageView), CoreError> {
        let file = Some(file);
        self.compose_entry(
            room_name,
            Kind::File,
            Payload {
                file,
                ..Payload::default()
            },
        )
    }

    /// Seals `content` (its text, file, revision or reply; the rest is filled in here) as
    /// our next entry of kind `kind` in the room, stores it durably and returns it.
    fn compose_entry(
        &mut self,
        room_name: &str,
        kind: Kind,
        content: Payload,
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
            receipt: (!heads.is_empty()).then(|| packed(&heads)),
            ..content
        };
        let env = Envelope::seal(&self.identity, &room, kind, pos, &payload)?;
        // Durable before it is published; what we write is read, in the same commit.
        let read = match kind {
            Kind::Text | Kind::File => self.read_own(room.id)?,
            _ => None,
        };
        let setting = read.as_ref().map(|r| (r.key.as_str(), &r.blob[..]));
        self.journal.append_noting_with(
            &env.meta(),
            env.bytes(),
            incoming::note(&payload),
            setting,
        )?;
        if let Some(r) = read {
            self.read.insert(room.id, r.count);
        }
        self.counters.sent += 1;
        // The entry itself tells every reader that we hold our own chain up to it.
        heads.push((me.0, pos.seq));
        self.mark_announced(room.id, &heads);
        let view = self.view(&room, &env, payload);
        Ok((room.id, env, view))
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

    /// Our own entries in the room from seq `from` on (at most `limit`), with their seqs,
    /// for our mailbox.
    pub fn own_entries(
        &self,
        room: RoomId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, CoreError> {
        let me = self.identity.id();
        Ok(self
            .journal
            .range(&room.0, &me.0, from.max(1), u64::MAX, limit)?
            .into_iter()
            .map(|e| (e.meta.seq, e.envelope))
            .collect())
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

    fn open_stored(&self, room: &Room, entry: StoredEntry) -> Option<MessageView> {
        let (env, payload) = open_entry(room, entry, &self.keys, &self.identity)?;
        Some(self.view(room, &env, payload))
    }
}

#[cfg(test)]
mod tests;
