//! Who is in a room, as far as this node knows: the members it has heard from, how big
//! the room is beyond them (for pacing), and how far each message was delivered.

use std::collections::{HashMap, HashSet};

use super::{Core, CoreError, MemberView, Receipt, RoomReader, short_id};
use crate::identity::UserId;
use crate::receipt::ShortId;
use crate::room::{Access, Room, RoomId};

impl Core {
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
                    ignored: self.ignored.contains(id),
                };
                (*id, view)
            })
            .collect();
        list.sort_by(|(_, a), (_, b)| {
            (b.me, b.messages, &a.user_id).cmp(&(a.me, a.messages, &b.user_id))
        });
        Ok((reader, list))
    }

    /// Collects a room's known members (see `Core::members`) when it is loaded or joined;
    /// from then on a named room's are added as they appear.
    pub(super) fn gather_members(&mut self, room: RoomId) -> Result<(), CoreError> {
        // A direct or group room's list names its members' keys: their entries check out
        // whichever arrives first (a mailbox's later page before the one with the key the
        // author's first entry carries).
        if let Some(Access::Members(list)) = self.rooms.get(&room).map(|r| &r.access) {
            for m in list {
                self.keys.insert(m.identity.clone());
            }
        }
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
    pub(super) fn add_member(&mut self, room: RoomId, member: UserId) {
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
    pub(super) fn census_heard(
        &mut self,
        room: RoomId,
        sender: UserId,
        new: &mut Vec<(RoomId, UserId)>,
    ) {
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

    /// How far every known member other than `author` (and us) is known to hold the
    /// author's chain in the room, leaving out members known to hold less than `at_least`:
    /// what a mailbox must carry from ([`crate::mailbox`]). `None` when the room has no
    /// such member.
    pub fn held_by_all(&self, room: RoomId, author: &UserId, at_least: u64) -> Option<u64> {
        let me = self.identity.id();
        let (receipts, short) = (self.receipts.get(&room), short_id(&author.0));
        self.members
            .get(&room)
            .into_iter()
            .flatten()
            .filter(|m| *m != author && **m != me)
            .map(|m| said_held(receipts, m, &short))
            .filter(|held| *held >= at_least)
            .min()
    }

    /// Whose mailboxes a member of the room reads: a direct or group room's other members;
    /// in a named room the authors we hold entries of (the furthest along first, at most
    /// `named_limit`): an author we never heard of has no key we could check its entries
    /// with.
    pub fn mailbox_authors(
        &self,
        room: &Room,
        named_limit: usize,
    ) -> Result<Vec<UserId>, CoreError> {
        let me = self.identity.id();
        if let Some(ids) = room.member_ids() {
            return Ok(ids.into_iter().filter(|id| *id != me).collect());
        }
        let vector = self.journal.vector(&room.id.0)?;
        let mut authors: Vec<(u64, UserId)> = vector
            .iter()
            .map(|(author, head)| (head.seq, UserId(*author)))
            .filter(|(_, id)| *id != me)
            .collect();
        authors.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.0.cmp(&b.1.0)));
        Ok(authors
            .into_iter()
            .take(named_limit)
            .map(|(_, id)| id)
            .collect())
    }

    /// (members other than the author known to hold entry `seq` of `author`, such members).
    pub(super) fn delivery(&self, room: &Room, author: &UserId, seq: u64) -> (u32, u32) {
        let me = self.identity.id();
        let (receipts, short) = (self.receipts.get(&room.id), short_id(&author.0));
        let mut held = 0;
        let mut total = 0;
        self.for_each_member(room, |m| {
            if m == author {
                return;
            }
            total += 1;
            let has = *m == me || said_held(receipts, m, &short) >= seq;
            if has {
                held += 1;
            }
        });
        (held, total)
    }
}

/// How far `member` said (receipts, heads on its messages) it holds the chain of the author
/// named `short`, from a room's receipts: 0 if it said nothing of it.
fn said_held(receipts: Option<&HashMap<UserId, Receipt>>, member: &UserId, short: &ShortId) -> u64 {
    receipts
        .and_then(|r| r.get(member))
        .and_then(|(_, v)| v.get(short))
        .copied()
        .unwrap_or(0)
}
