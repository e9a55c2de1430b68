//! Authors the user chose not to see. Anyone who knows a named room's name can write in it
//! without limit; ignoring an author hides its messages and reactions from this node's
//! history, search, counts and events, and its files are no longer fetched unasked. Its
//! entries are still stored and passed on: other members may read them, and chains stay
//! whole for reconciliation.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Core, CoreError, id_by_prefix};
use crate::envelope::Envelope;
use crate::identity::UserId;

/// Settings key of the ignored authors (sealed, like every setting).
const IGNORED_KEY: &str = "ignored";

/// An ignored author.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IgnoredView {
    pub user_id: String,
    /// Our contact name for it, when it is a contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
}

impl Core {
    /// Reads the ignored authors at start-up.
    pub(super) fn load_ignored(&mut self) -> Result<(), CoreError> {
        let Some(blob) = self.journal.get_setting(IGNORED_KEY)? else {
            return Ok(());
        };
        let plain = self.unseal(IGNORED_KEY, &blob)?;
        let corrupt = || CoreError::CorruptSetting(IGNORED_KEY.to_string());
        let ids: Vec<String> = serde_json::from_slice(&plain).map_err(|_| corrupt())?;
        let mut set = BTreeSet::new();
        for id in ids {
            let mut raw = [0u8; 32];
            hex::decode_to_slice(&id, &mut raw).map_err(|_| corrupt())?;
            set.insert(UserId(raw));
        }
        self.ignored = Arc::new(set);
        Ok(())
    }

    /// Ignores an author of the room (`undo`: sees it again), named as for a reply: a
    /// contact's name, or 8+ hex digits of a user id. Lasts across restarts, in every room.
    pub fn ignore(
        &mut self,
        room_name: &str,
        author: &str,
        undo: bool,
    ) -> Result<IgnoredView, CoreError> {
        let room = self.room_by_name(room_name)?.id;
        let named = self.author_named(author);
        let unknown = || CoreError::NoAuthor(author.to_string(), room_name.to_string());
        let found = if undo {
            // Ignored authors may have left the room's members: look among them.
            id_by_prefix(self.ignored.iter().map(|id| &id.0), &named)
        } else {
            id_by_prefix(self.journal.vector(&room.0)?.keys(), &named)
        };
        let id = UserId(found.ok_or_else(unknown)?);
        if id == self.identity.id() {
            return Err(CoreError::IgnoreSelf);
        }
        let mut set = (*self.ignored).clone();
        if undo {
            set.remove(&id);
        } else {
            set.insert(id);
        }
        let ids: Vec<String> = set.iter().map(UserId::to_hex).collect();
        let plain =
            serde_json::to_vec(&ids).map_err(|e| CoreError::CorruptSetting(e.to_string()))?;
        let blob = self.seal(IGNORED_KEY, &plain)?;
        self.journal.put_setting(IGNORED_KEY, &blob)?;
        self.ignored = Arc::new(set);
        Ok(self.ignored_view(&id))
    }

    /// The ignored authors, by user id.
    pub fn ignored(&self) -> Vec<IgnoredView> {
        self.ignored
            .iter()
            .map(|id| self.ignored_view(id))
            .collect()
    }

    fn ignored_view(&self, id: &UserId) -> IgnoredView {
        IgnoredView {
            user_id: id.to_hex(),
            contact: self.contact_name(id),
        }
    }

    /// Whether the author of this id (64 hex digits, as views give it) is ignored.
    pub fn is_ignored(&self, author_id: &str) -> bool {
        let mut raw = [0u8; 32];
        hex::decode_to_slice(author_id, &mut raw).is_ok() && self.ignored.contains(&UserId(raw))
    }

    /// How many of the room's messages are by ignored authors: what its count leaves out.
    pub(super) fn ignored_messages(&self, room: &[u8; 32]) -> Result<u64, CoreError> {
        let vector = self.journal.vector(room)?;
        let mut n = 0;
        for id in self.ignored.iter().filter(|id| vector.contains_key(&id.0)) {
            n += self
                .journal
                .count_chain_where(room, &id.0, Envelope::is_message)?;
        }
        Ok(n)
    }
}
