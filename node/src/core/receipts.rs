//! Delivery receipts, both ways: what we tell a room we hold (receipts, and heads riding
//! on our messages), and what members' receipts tell us (delivery counts, and claims that
//! reconciliation chases).

use std::collections::HashMap;
use std::time::Instant;

use super::{
    Core, CoreError, Incoming, MAX_RECEIPT_AUTHORS, MAX_TRACKED_AUTHORS, Rejection, now_ms, packed,
    short_id,
};
use crate::envelope::{Envelope, Kind, Payload, Position};
use crate::identity::UserId;
use crate::journal::Id;
use crate::receipt::{Heads, ShortId};
use crate::room::RoomId;

impl Core {
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
            revises: None,
            reply_to: None,
            react: None,
            invite: None,
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
    pub(super) fn unannounced(
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
    pub(super) fn mark_announced(&mut self, room: RoomId, heads: &[(Id, u64)]) {
        self.told_clock += 1;
        let announced = self.announced.entry(room).or_default();
        for (a, seq) in heads {
            let t = announced.entry(*a).or_default();
            t.seq = t.seq.max(*seq);
            t.at = self.told_clock;
        }
    }

    pub(super) fn apply_receipt(
        &mut self,
        room: RoomId,
        env: &Envelope,
        payload: Payload,
    ) -> Incoming {
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
    pub(super) fn note_heads(&mut self, room: RoomId, member: UserId, heads: &[(ShortId, u64)]) {
        self.add_member(room, member);
        let me = self.identity.id();
        let mine = short_id(&me.0);
        let held = &mut self
            .receipts
            .entry(room)
            .or_default()
            .entry(member)
            .or_insert((0, HashMap::new()))
            .1;
        let mut ours_grew = false;
        for (id, seq) in heads {
            // A member names any authors it likes: past the cap, only those already known.
            if held.len() >= MAX_TRACKED_AUTHORS && !held.contains_key(id) {
                continue;
            }
            let h = held.entry(*id).or_default();
            ours_grew |= *id == mine && *seq > *h;
            *h = (*h).max(*seq);
        }
        if ours_grew && member != me {
            self.held_dirty.insert(room);
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
}
