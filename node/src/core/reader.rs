//! Reading a room's stored history apart from [`Core`]: pages, kinds and searches, each
//! entry verified and opened again (the database is not trusted more than the network).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::{Core, CoreError, MemberView, MessageView, ReactionView, now_ms};
use crate::authors::AuthorKeys;
use crate::envelope::{Envelope, Kind, Payload};
use crate::files::FileRef;
use crate::identity::{Identity, UserId};
use crate::journal::{Id, Journal, Page, StoredEntry};
use crate::room::{Room, RoomId};

/// A stored entry, verified and opened, with its latest revision applied.
#[derive(Clone, Debug)]
pub struct Opened {
    pub env: Envelope,
    /// The payload as it reads now: an edit's text, nothing of a deleted message.
    pub payload: Payload,
    pub revised: Option<Revised>,
    /// The reactions that stand (read with a page of history only).
    pub reactions: Vec<ReactionView>,
}

/// What the latest revision of a message did to it (see [`Kind::Revision`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revised {
    /// Its text is an edit, written then (the author's clock).
    Edited {
        at_ms: u64,
    },
    Deleted,
}

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

/// Whether a message's text or file name contains `needle` ([folded](crate::chars::folded)),
/// whatever its case and however its accents were typed.
fn mentions(payload: &Payload, needle: &str) -> bool {
    let has = |s: &str| crate::chars::folded(s).contains(needle);
    payload.text.as_deref().is_some_and(has) || payload.file.as_ref().is_some_and(|f| has(&f.name))
}

/// Verifies a stored entry again (the database is not trusted more than the network) and
/// opens it; one that fails is skipped with a warning.
pub(super) fn open_entry(
    room: &Room,
    entry: StoredEntry,
    keys: &AuthorKeys,
    identity: &Identity,
) -> Option<(Envelope, Payload)> {
    open_bytes(room, entry.envelope, keys, identity)
}

fn open_bytes(
    room: &Room,
    bytes: Vec<u8>,
    keys: &AuthorKeys,
    identity: &Identity,
) -> Option<(Envelope, Payload)> {
    let env = match Envelope::parse(bytes, keys) {
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
    /// Authors whose messages and reactions it passes over (see `Core::ignore`).
    ignored: Arc<BTreeSet<UserId>>,
}

impl RoomReader {
    pub fn room_id(&self) -> RoomId {
        self.room.id
    }

    pub fn room_name(&self) -> &str {
        &self.room.name
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
    ///
    /// Revisions (edits and deletions) are not listed unless asked for by kind: each
    /// message is shown as its latest revision left it, and a search looks in that.
    pub fn query(&self, q: &Query) -> Result<Vec<Opened>, CoreError> {
        let needle = q.contains.as_deref().map(crate::chars::folded);
        let wanted = |env: &[u8]| {
            let kind = Envelope::peek_kind(env);
            if q.only.is_some_and(|only| kind != Some(only))
                || (q.only.is_none() && matches!(kind, Some(Kind::Revision | Kind::Reaction)))
            {
                return false;
            }
            let Some(needle) = &needle else {
                return true;
            };
            open_bytes(&self.room, env.to_vec(), &self.keys, &self.identity)
                .and_then(|(env, payload)| {
                    let by = self.revised_by(&env).ok()?;
                    self.revise(env, payload, by).ok()
                })
                .is_some_and(|opened| mentions(&opened.payload, needle))
        };
        let heard = |author: &Id| !self.ignored.contains(&UserId(*author));
        let entries = self
            .journal
            .history_of(&self.room.id.0, q.page, heard, wanted)?;
        // Which of them were revised or reacted to, in one read.
        let ids: Vec<_> = entries
            .iter()
            .map(|e| (e.meta.author, e.meta.seq))
            .collect();
        let notes = self.journal.notes(&self.room.id.0, &ids)?;
        let mut out = Vec::with_capacity(entries.len());
        for (entry, notes) in entries.into_iter().zip(notes) {
            if let Some((env, payload)) = open_entry(&self.room, entry, &self.keys, &self.identity)
            {
                let mut opened = self.revise(env, payload, notes.revision)?;
                if opened.revised != Some(Revised::Deleted) {
                    opened.reactions = self.standing(&opened.env, &notes.reactions)?;
                }
                out.push(opened);
            }
        }
        Ok(out)
    }

    /// The reactions to a message that stand, from its reaction entries (reactor, seq):
    /// each verified and opened; per reactor and reaction, the latest says whether it
    /// stands. Grouped by reaction, in the order they were first given (lamport order).
    fn standing(
        &self,
        env: &Envelope,
        entries: &[(Id, u64)],
    ) -> Result<Vec<ReactionView>, CoreError> {
        let target = env.author_id().to_hex();
        // (reactor, emoji) -> (its latest seq, lamport, whether it stands)
        let mut latest: HashMap<(Id, String), (u64, u64, bool)> = HashMap::new();
        for (reactor, seq) in entries {
            if self.ignored.contains(&UserId(*reactor)) {
                continue;
            }
            let Some(entry) = self.journal.get(&self.room.id.0, reactor, *seq)? else {
                continue;
            };
            let Some((r, payload)) = open_entry(&self.room, entry, &self.keys, &self.identity)
            else {
                continue;
            };
            let Some(react) = payload
                .react
                .filter(|x| r.kind == Kind::Reaction && x.author_id == target && x.seq == env.seq)
            else {
                continue;
            };
            let slot = latest
                .entry((*reactor, react.emoji))
                .or_insert((0, 0, false));
            if *seq > slot.0 {
                *slot = (*seq, r.lamport, !react.undo);
            }
        }
        let mut given: Vec<(u64, Id, String)> = latest
            .into_iter()
            .filter(|(_, (_, _, stands))| *stands)
            .map(|((reactor, emoji), (_, lamport, _))| (lamport, reactor, emoji))
            .collect();
        given.sort();
        let mut views: Vec<ReactionView> = Vec::new();
        for (_, reactor, emoji) in given {
            let by = hex::encode(reactor);
            match views.iter_mut().find(|v| v.emoji == emoji) {
                Some(v) => v.by.push(by),
                None => views.push(ReactionView {
                    emoji,
                    by: vec![by],
                }),
            }
        }
        Ok(views)
    }

    /// The seq of the latest revision of an entry, if it has one.
    fn revised_by(&self, env: &Envelope) -> Result<Option<u64>, CoreError> {
        let (room, author) = (self.room.id.0, env.author_id().0);
        Ok(self.journal.revision(&room, &author, env.seq)?)
    }

    /// Applies the latest revision of an opened message (`by`: its seq, as the journal noted
    /// it), if it has one.
    fn revise(
        &self,
        env: Envelope,
        mut payload: Payload,
        by: Option<u64>,
    ) -> Result<Opened, CoreError> {
        let revised = self.revision_of(&env, by)?.and_then(|(at_ms, text)| {
            match (text, env.kind) {
                (None, _) => {
                    payload.text = None;
                    payload.file = None;
                    payload.invite = None;
                    Some(Revised::Deleted)
                }
                // An invitation's text says what it invites to: it is not edited.
                (Some(text), Kind::Text) if payload.invite.is_none() => {
                    payload.text = Some(text);
                    Some(Revised::Edited { at_ms })
                }
                // Only text can be edited: an edit of anything else changes nothing.
                (Some(_), _) => None,
            }
        });
        Ok(Opened {
            env,
            payload,
            revised,
            reactions: Vec::new(),
        })
    }

    /// A message's latest revision (`by`, its seq), verified and opened like any entry:
    /// when it was written and its text (`None`: the message is deleted).
    fn revision_of(
        &self,
        env: &Envelope,
        by: Option<u64>,
    ) -> Result<Option<(u64, Option<String>)>, CoreError> {
        let Some(by) = by.filter(|_| !matches!(env.kind, Kind::Revision | Kind::Receipt)) else {
            return Ok(None);
        };
        let (room, author) = (self.room.id.0, env.author_id().0);
        let Some(entry) = self.journal.get(&room, &author, by)? else {
            return Ok(None);
        };
        Ok(open_entry(&self.room, entry, &self.keys, &self.identity)
            .filter(|(r, p)| r.kind == Kind::Revision && p.revises == Some(env.seq))
            .map(|(r, p)| (r.timestamp_ms, p.text)))
    }

    /// The room's message `seq` of the author whose user id starts with `author` (8 or more
    /// hex digits), as it reads now: what a reply quotes ([`Core::compose_reply`]).
    pub(super) fn message(&self, author: &str, seq: u64) -> Result<Opened, CoreError> {
        let reference = format!("{author}#{seq}");
        let none = || CoreError::NoMessage(reference.clone(), self.room.name.clone());
        let vector = self.journal.vector(&self.room.id.0)?;
        let id = super::id_by_prefix(vector.keys(), author).ok_or_else(none)?;
        let entry = self.journal.get(&self.room.id.0, &id, seq)?;
        let (env, payload) = entry
            .and_then(|e| open_entry(&self.room, e, &self.keys, &self.identity))
            .filter(|(env, _)| matches!(env.kind, Kind::Text | Kind::File))
            .ok_or_else(none)?;
        let by = self.revised_by(&env)?;
        let opened = self.revise(env, payload, by)?;
        if opened.revised == Some(Revised::Deleted) {
            return Err(CoreError::Deleted(reference));
        }
        Ok(opened)
    }

    /// Our own message `seq`, as it reads now, for [`Core::compose_revision`].
    pub(super) fn own(&self, seq: u64) -> Result<Option<Opened>, CoreError> {
        let me = self.identity.id();
        let Some(entry) = self.journal.get(&self.room.id.0, &me.0, seq)? else {
            return Ok(None);
        };
        match open_entry(&self.room, entry, &self.keys, &self.identity) {
            Some((env, payload)) => {
                let by = self.revised_by(&env)?;
                Ok(Some(self.revise(env, payload, by)?))
            }
            None => Ok(None),
        }
    }

    /// Names `members` (see [`Core::members`]) by the username each gave in its last
    /// message here, verified and opened again; ours is our own.
    pub fn name_members(
        &self,
        members: Vec<(UserId, MemberView)>,
    ) -> Result<Vec<MemberView>, CoreError> {
        let mut named = Vec::with_capacity(members.len());
        for (id, mut view) in members {
            // `messages` came as the length of the member's chain: the last entry names
            // it, and only its texts and files count as messages (not edits, reactions).
            let head = view.messages;
            view.name = if view.me {
                Some(self.identity.username().to_string())
            } else if head > 0 {
                self.journal
                    .get(&self.room.id.0, &id.0, head)?
                    .and_then(|e| open_entry(&self.room, e, &self.keys, &self.identity))
                    .map(|(_, payload)| payload.from)
            } else {
                None
            };
            if head > 0 {
                view.messages =
                    self.journal
                        .count_chain_where(&self.room.id.0, &id.0, Envelope::is_message)?;
            }
            named.push(view);
        }
        named.sort_by(|a, b| (b.me, b.messages, &a.user_id).cmp(&(a.me, a.messages, &b.user_id)));
        Ok(named)
    }

    /// The file shared in the room whose id starts with `id` (at least 8 hex digits). Scans
    /// the whole history, but loads, verifies and opens file messages only: fetching is
    /// rare next to chatting, and a file known only in memory would be lost to a restart.
    pub fn find_file(&self, id: &str) -> Result<FileRef, CoreError> {
        self.find_file_among(id, false)
    }

    /// [`Self::find_file`], among deleted file messages too (`deleted_too`): a copy of a
    /// file whose message was deleted can still be forgotten.
    fn find_file_among(&self, id: &str, deleted_too: bool) -> Result<FileRef, CoreError> {
        let room_name = &self.room.name;
        let unknown = || CoreError::UnknownFile(id.to_string(), room_name.clone());
        let id = id.trim().to_ascii_lowercase();
        if id.len() < 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CoreError::BadFileId(id));
        }
        let mut found: Option<FileRef> = None;
        let files = if deleted_too {
            let only_files = |env: &[u8]| Envelope::peek_kind(env) == Some(Kind::File);
            self.journal
                .history_where(&self.room.id.0, Page::last(usize::MAX), only_files)?
                .into_iter()
                .filter_map(|e| open_entry(&self.room, e, &self.keys, &self.identity))
                .filter_map(|(_, payload)| payload.file)
                .collect::<Vec<_>>()
        } else {
            self.read(Page::last(usize::MAX), Some(Kind::File))?
                .into_iter()
                .filter_map(|o| o.payload.file)
                .collect()
        };
        for file in files {
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
        for Opened { env, payload, .. } in self.read(Page::last(limit), Some(Kind::File))? {
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
        let file = self.find_file_among(id, true)?;
        let freed = self.drop_file(&file)?;
        Ok((file, freed))
    }

    /// When its author deletes a file message (the revision `seq` of `author`, deleting its
    /// entry `target`), members drop their copies of the file, as `forget` would: the
    /// author withdrew it. Returns the file and the bytes freed, if the entry was a file.
    pub fn drop_withdrawn_file(
        &self,
        author: UserId,
        target: u64,
    ) -> Result<Option<(FileRef, u64)>, CoreError> {
        let Some(entry) = self.journal.get(&self.room.id.0, &author.0, target)? else {
            return Ok(None);
        };
        let file = open_entry(&self.room, entry, &self.keys, &self.identity)
            .filter(|(env, _)| env.kind == Kind::File)
            .and_then(|(_, payload)| payload.file);
        match file {
            Some(file) => {
                let freed = self.drop_file(&file)?;
                Ok(Some((file, freed)))
            }
            None => Ok(None),
        }
    }

    /// Drops a file's chunks and the record that we hold it, and marks it not to be
    /// fetched again unasked; returns the bytes freed.
    fn drop_file(&self, file: &FileRef) -> Result<u64, CoreError> {
        let mut chunks = vec![file.list];
        // A list that does not open (a broken share) names no chunk we could hold.
        if let Some(list) = self.journal.chunk(&file.list)?
            && let Ok(ids) = crate::files::open_list(file, &list)
        {
            chunks.extend(ids);
        }
        Ok(self.journal.forget_file(&file.provider_key(), &chunks)?)
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
            ignored: self.ignored.clone(),
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
            .map(|o| {
                let mut view = self.view(room, &o.env, o.payload);
                view.reactions = o.reactions;
                match o.revised {
                    Some(Revised::Edited { at_ms }) => view.edited_ms = Some(at_ms.min(now_ms())),
                    Some(Revised::Deleted) => view.deleted = true,
                    None => {}
                }
                view
            })
            .collect())
    }
}
