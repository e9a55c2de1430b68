//! Taking up the members' branch of our own chain after it forked (see
//! [`crate::own_chain`]): the node drops what it holds of the room, pulls it again from the
//! members, and writes again what of ours they lack.

use std::collections::BTreeMap;

use super::{Core, CoreError, open_entry};
use crate::envelope::Kind;
use crate::files::FileRef;
use crate::journal::Id;
use crate::room::RoomId;

/// One of our messages that only this node may hold, to write again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resend {
    Text(String),
    File(FileRef),
}

/// One of our entries in a room, as this node held it before [`Core::repair`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ours {
    pub seq: u64,
    pub hash: Id,
    /// The message as it read last (edits applied); `None` for what is not written again:
    /// edits and deletions themselves, deleted messages, reactions, invitations.
    pub resend: Option<Resend>,
}

impl Core {
    /// Our chain in `room_name` forked: drops everything this journal holds of the room,
    /// so that reconciliation brings back the members' history, ours included, and returns
    /// our entries as they were, for the caller to write again, once the history is back,
    /// those the members lack (see [`Core::lacking`]).
    pub fn repair(&mut self, room_name: &str) -> Result<(RoomId, Vec<Ours>), CoreError> {
        let room = self.room_by_name(room_name)?.clone();
        let me = self.identity.id().0;
        let head = self.journal.head(&room.id.0, &me)?.map_or(0, |h| h.seq);
        let entries = self.journal.range(&room.id.0, &me, 1, head, usize::MAX)?;
        let mut ours: BTreeMap<u64, Ours> = BTreeMap::new();
        for entry in entries {
            let (seq, hash) = (entry.meta.seq, entry.meta.hash);
            let mut resend = None;
            if let Some((env, payload)) = open_entry(&room, entry, &self.keys, &self.identity) {
                match (env.kind, payload.revises) {
                    (Kind::Revision, Some(target)) => {
                        if let Some(o) = ours.get_mut(&target)
                            && o.resend.is_some()
                        {
                            o.resend = payload.text.map(Resend::Text);
                        }
                    }
                    (Kind::Text, None) if payload.react.is_none() && payload.invite.is_none() => {
                        resend = payload.text.map(Resend::Text);
                    }
                    (Kind::File, None) => resend = payload.file.map(Resend::File),
                    _ => {}
                }
            }
            ours.insert(seq, Ours { seq, hash, resend });
        }
        self.journal.purge_room(&room.id.0)?;
        tracing::warn!(
            entries = ours.len(),
            "dropped a room's history to take up the members' branch of our chain"
        );
        Ok((room.id, ours.into_values().collect()))
    }

    /// What of `ours` (see [`Core::repair`]) the journal does not hold now, to write again.
    pub fn lacking(&self, room: RoomId, ours: Vec<Ours>) -> Result<Vec<Resend>, CoreError> {
        let me = self.identity.id().0;
        let mut out = Vec::new();
        for o in ours {
            let Some(resend) = o.resend else { continue };
            let held = self.journal.get(&room.0, &me, o.seq)?;
            if held.is_none_or(|e| e.meta.hash != o.hash) {
                out.push(resend);
            }
        }
        Ok(out)
    }
}
