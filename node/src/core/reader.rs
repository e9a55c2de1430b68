//! Reading a room's stored history apart from [`Core`]: pages, kinds and searches, each
//! entry verified and opened again (the database is not trusted more than the network).

use std::sync::Arc;

use super::{Core, CoreError, MemberView, MessageView};
use crate::authors::AuthorKeys;
use crate::envelope::{Envelope, Kind, Payload};
use crate::files::FileRef;
use crate::identity::{Identity, UserId};
use crate::journal::{Journal, Page, StoredEntry};
use crate::room::{Room, RoomId};

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
pub(super) fn open_entry(
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

impl Core {
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
}
