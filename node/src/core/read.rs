//! How far the user has read each room, kept by the node rather than by each client, so the
//! web page in any browser and the CLI show the same unread counts, across restarts.
//!
//! A mark is a count of the room's messages as [`RoomView::messages`] counts them (texts and
//! files, not edits or reactions; ignored authors left out): those past it are unread. A
//! client marks a room read when the user reads it ([`Core::mark_read`]); what we write
//! ourselves is read as it is written, and so is what we wrote on another machine of ours
//! when it arrives here; a room's history held when it is joined is read, what arrives
//! after is not. Marks are sealed like every setting.

use super::{Core, CoreError, RoomView};
use crate::envelope::Envelope;
use crate::room::RoomId;

const READ_PREFIX: &str = "read/";

/// A room's mark, sealed, to store.
pub(super) struct Mark {
    pub key: String,
    pub blob: Vec<u8>,
    pub count: u64,
}

fn key(room: RoomId) -> String {
    format!("{READ_PREFIX}{}", room.to_hex())
}

impl Core {
    /// Reads the marks at start-up; a room without one (joined before marks were kept) is
    /// read as it stands.
    pub(super) fn load_read(&mut self) -> Result<(), CoreError> {
        for (key, blob) in self.journal.settings_with_prefix(READ_PREFIX)? {
            let corrupt = || CoreError::CorruptSetting(key.clone());
            let plain = self.unseal(&key, &blob)?;
            let mut id = [0u8; 32];
            hex::decode_to_slice(&key[READ_PREFIX.len()..], &mut id).map_err(|_| corrupt())?;
            let count = <[u8; 8]>::try_from(&plain[..]).map_err(|_| corrupt())?;
            self.read.insert(RoomId(id), u64::from_be_bytes(count));
        }
        let unmarked: Vec<RoomId> = (self.rooms.keys())
            .filter(|id| !self.read.contains_key(id))
            .copied()
            .collect();
        for id in unmarked {
            self.read_all(id)?;
        }
        Ok(())
    }

    /// The user read the room: nothing in it is unread now.
    pub fn mark_read(&mut self, name: &str) -> Result<RoomView, CoreError> {
        let room = self.room_by_name(name)?.clone();
        self.read_all(room.id)?;
        self.room_view(&room)
    }

    /// How many of the room's `messages` (as the view counts them) are unread.
    pub(super) fn unread(&self, room: RoomId, messages: u64) -> u64 {
        self.read
            .get(&room)
            .map_or(0, |read| messages.saturating_sub(*read))
    }

    /// The room's messages as its view counts them.
    pub(super) fn messages_shown(&self, room: RoomId) -> Result<u64, CoreError> {
        Ok(self
            .journal
            .messages(&room.0)?
            .saturating_sub(self.ignored_messages(&room.0)?))
    }

    pub(super) fn read_all(&mut self, room: RoomId) -> Result<(), CoreError> {
        let messages = self.messages_shown(room)?;
        if self.read.get(&room) != Some(&messages) {
            self.store_read(room, messages)?;
        }
        Ok(())
    }

    /// The room's mark once a message we write there is stored: what we write is not news
    /// to us. Stored with the message ([`crate::journal::Journal::append_noting_with`]), at
    /// no commit of its own; [`Core::read`] follows once it is.
    pub(super) fn read_own(&self, room: RoomId) -> Result<Option<Mark>, CoreError> {
        match self.read.get(&room) {
            Some(read) => self.sealed(room, read + 1).map(Some),
            None => Ok(None),
        }
    }

    /// Our own entries `from..=to` in `room`, written on another machine of ours and
    /// brought here by gossip or a catch-up: their messages are read, as they are where
    /// they were written.
    pub(super) fn read_own_arrived(
        &mut self,
        room: RoomId,
        from: u64,
        to: u64,
    ) -> Result<(), CoreError> {
        let Some(&read) = self.read.get(&room) else {
            return Ok(());
        };
        let me = self.identity.id();
        let mut messages = 0;
        for seq in from..=to {
            if let Some(entry) = self.journal.get(&room.0, &me.0, seq)? {
                messages += u64::from(Envelope::is_message(&entry.envelope));
            }
        }
        if messages > 0 {
            self.store_read(room, read + messages)?;
        }
        Ok(())
    }

    fn sealed(&self, room: RoomId, count: u64) -> Result<Mark, CoreError> {
        let key = key(room);
        let blob = self.seal(&key, &count.to_be_bytes())?;
        Ok(Mark { key, blob, count })
    }

    pub(super) fn forget_read(&mut self, room: RoomId) -> Result<(), CoreError> {
        self.read.remove(&room);
        self.journal.delete_setting(&key(room))?;
        Ok(())
    }

    /// Not waited for on disk: the next durable commit (the next message stored, say) or
    /// flush takes it along, and a mark lost in a crash only shows a message as unread again.
    fn store_read(&mut self, room: RoomId, read: u64) -> Result<(), CoreError> {
        let mark = self.sealed(room, read)?;
        self.journal
            .put_setting_with(&mark.key, &mark.blob, false)?;
        self.read.insert(room, mark.count);
        Ok(())
    }
}
