//! Entries arriving from the network: checked (signature, room, membership, decryption),
//! shown, stored, or rejected with a reason; by gossip one at a time, by reconciliation in
//! batches checked in parallel.

use std::time::Instant;

use super::{
    Admitted, BatchReport, Core, CoreError, Incoming, MAX_RECEIPT_AUTHORS, MessageView, Rejection,
    short_id,
};
use crate::authors::AuthorKeys;
use crate::claims::Arrival;
use crate::envelope::{Envelope, Kind, Payload};
use crate::files::FileRef;
use crate::identity::Identity;
use crate::journal::{AppendOutcome, EntryMeta, Id, Note};
use crate::receipt::Heads;
use crate::room::{Room, RoomId, RoomKind};

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
    // The author's name is self-asserted, but it is a username as a node writes one: no
    // line break, escape sequence or bidi override in it makes it read as something else.
    // (In any Unicode normal form: a node from before names were NFC wrote its user's as
    // typed, and it reads the same.)
    if crate::identity::normalise_username(&payload.from).ok()
        != Some(crate::chars::canonical(&payload.from).into_owned())
    {
        return Err(Rejection::Malformed);
    }
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
    // A revision names one earlier entry of its author, and carries no file; nothing else
    // names one.
    let revises_earlier = payload.revises.is_some_and(|t| t >= 1 && t < env.seq);
    if (env.kind == Kind::Revision) != revises_earlier
        || (env.kind == Kind::Revision && payload.file.is_some())
        || (env.kind != Kind::Revision && payload.revises.is_some())
    {
        return Err(Rejection::Malformed);
    }
    // A reaction names a message and carries nothing else; nothing else reacts.
    let reaction = payload.react.as_ref().is_some_and(|r| r.is_valid())
        && payload.text.is_none()
        && payload.file.is_none()
        && payload.reply_to.is_none();
    if (env.kind == Kind::Reaction) != reaction
        || (env.kind != Kind::Reaction && payload.react.is_some())
    {
        return Err(Rejection::Malformed);
    }
    // Only a text replies, and it names a message.
    if payload
        .reply_to
        .as_ref()
        .is_some_and(|r| env.kind != Kind::Text || !r.is_valid())
    {
        return Err(Rejection::Malformed);
    }
    // An invitation is a text: in a direct room, to a named room or to a group of its
    // author's and ours; in a group, to its successor (`groups`).
    if let Some(invite) = &payload.invite {
        let invited = invite.room();
        let to_us = || match invited.as_ref().map(Room::member_ids) {
            Some(Some(ids)) => ids.contains(&env.author_id()) && ids.contains(&me.id()),
            Some(None) => true,
            None => false,
        };
        let where_ok = match room.kind {
            RoomKind::Direct => true,
            RoomKind::Group => invited
                .as_ref()
                .is_some_and(|next| super::groups::is_successor(room, next)),
            RoomKind::Named => false,
        };
        if env.kind != Kind::Text
            || !where_ok
            || payload.text.is_none()
            || payload.reply_to.is_some()
            || !to_us()
        {
            return Err(Rejection::Malformed);
        }
    }
    if env.carries_key {
        keys.insert(env.author.clone());
    }
    Ok((env, payload))
}

/// What a checked entry says of another, for the journal to note with it.
pub(super) fn note(payload: &Payload) -> Option<Note> {
    match (&payload.revises, &payload.react) {
        (Some(seq), _) => Some(Note::Revises(*seq)),
        (None, Some(r)) => Some(Note::ReactsTo(r.author()?, r.seq)),
        (None, None) => None,
    }
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

impl Core {
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
        let batch: Vec<(EntryMeta, Vec<u8>, Option<Note>)> = entries
            .iter()
            .map(|(_, env, payload)| (env.meta(), env.bytes().to_vec(), note(payload)))
            .collect();
        // Received entries are also held by others: durable at the next flush.
        let outcomes = self.journal.append_batch_deferred_noting(&batch)?;
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
        let me = self.identity.id();
        let mut out = Vec::with_capacity(outcomes.len());
        let mut chains = Vec::new();
        let mut own = Vec::new();
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
                    if author == me {
                        own.push((room_id, env.seq, advanced_to));
                    }
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
        // (The entries are stored: a mark that cannot be kept only shows them as unread.)
        for (room_id, from, to) in own {
            if let Err(e) = self.read_own_arrived(room_id, from, to) {
                tracing::warn!(error = %e, "cannot mark our own messages from elsewhere read");
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

    pub(super) fn reject(&mut self, why: Rejection) -> Incoming {
        let name = serde_json::to_value(why)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{why:?}"));
        *self.counters.rejected.entry(name).or_default() += 1;
        tracing::debug!(reason = ?why, "rejected envelope");
        Incoming::Rejected(why)
    }
}
