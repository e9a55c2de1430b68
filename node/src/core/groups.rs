//! Adding members to a group.
//!
//! A group's id comes from its name and its members' ids, and every message in it is
//! wrapped for exactly those members, so its member set cannot change. Adding members makes
//! the group's successor instead: the group of the same name with the new member set. The
//! member who adds writes, in the old group, a message that invites every member there to
//! the successor, and invites the newcomers in the direct rooms as for any group. Each
//! member's node then takes the old group's local name for the successor and renames the
//! old one `NAME (earlier)`, where its history stays; a newcomer reads the group from that
//! point on. Two members adding the same people arrive at the same successor.

use super::{Composed, Core, CoreError, RoomView};
use crate::envelope::{Invite, Kind, Payload};
use crate::identity::ContactCode;
use crate::room::{Access, Member, Room, RoomId, RoomKind, StoredRoom};

/// What inviting contacts to a room did: the group it joined, if the invitation made one.
pub struct Invited {
    pub joined: Option<RoomView>,
    pub composed: Vec<Composed>,
}

impl Core {
    /// Invites contacts to a room (see [`Core::invite`]); to a group they are not all in,
    /// makes its successor with them ([`Core::grow_group`]).
    pub fn invite_contacts(
        &mut self,
        room_name: &str,
        contacts: &[String],
    ) -> Result<Invited, CoreError> {
        let room = self.room_by_name(room_name)?.clone();
        if room.kind == RoomKind::Group {
            let members = room.member_ids().unwrap_or_default();
            let mut newcomers = false;
            for contact in contacts {
                let (_, code) = self.contact(contact)?;
                newcomers |= !members.contains(&code.identity.id());
            }
            if newcomers {
                return self.grow_group(&room, contacts);
            }
        }
        Ok(Invited {
            joined: None,
            composed: self.invite(room_name, contacts)?,
        })
    }

    /// The group `room` with `contacts` added: joins its successor under the group's local
    /// name (the group itself becomes `NAME (earlier)`), and writes the invitations: one in
    /// the group, for its members, and one in the direct room with each contact.
    fn grow_group(&mut self, room: &Room, contacts: &[String]) -> Result<Invited, CoreError> {
        let Access::Members(members) = &room.access else {
            return Err(CoreError::NotInvitable(
                "only a group has members to add to",
            ));
        };
        let mut members = members.clone();
        let mut added = Vec::new();
        for contact in contacts {
            let (name, code) = self.contact(contact)?;
            if !members
                .iter()
                .any(|m| m.identity.id() == code.identity.id())
            {
                let mut member: Member = code.clone().into();
                member.username = name.to_string();
                members.push(member);
                added.push(name.to_string());
            }
        }
        added.sort();
        added.dedup();
        let mut next = Room::group(room.id_name(), members)?;
        if self.rooms.contains_key(&next.id) {
            // Added already (by us, or by another member): invite to it as it stands.
            let name = self.rooms[&next.id].name.clone();
            return Ok(Invited {
                joined: None,
                composed: self.invite(&name, contacts)?,
            });
        }
        let (invite, names) = self.group_invite(&next);
        let notice = Payload {
            text: Some(format!(
                "adds {}: the group goes on in a new room ({names}); its earlier messages stay here",
                added.join(", ")
            )),
            invite: Some(invite),
            ..Payload::default()
        };
        // Written first: once it is, every member follows, whatever fails here after (and
        // inviting again writes it again, which members already in the successor ignore).
        let mut told = self.compose_entry(&room.name, Kind::Text, notice)?;
        let (name, earlier) = self.make_way(room)?;
        told.2.room = earlier;
        next.name = name.clone();
        self.join(next)?;
        let next = self.room_by_name(&name)?.clone();
        let mut composed = vec![told];
        composed.extend(self.invite(&name, &added)?);
        Ok(Invited {
            joined: Some(self.room_view(&next)?),
            composed,
        })
    }

    /// Joins the successor a member of the group `from` invites us to in it (see the module
    /// doc): under the group's local name, which the group gives up for `NAME (earlier)`.
    /// `None` if we are in it already.
    pub(super) fn join_successor(
        &mut self,
        from: RoomId,
        mut next: Room,
    ) -> Result<Option<Room>, CoreError> {
        if self.rooms.contains_key(&next.id) {
            return Ok(None);
        }
        let Some(group) = self.rooms.get(&from).cloned() else {
            return Ok(None);
        };
        next.name = self.make_way(&group)?.0;
        let (room, _) = self.join(next)?;
        Ok(Some(room.clone()))
    }

    /// The local name for a successor of `group`, and the group's own after it: the
    /// group's, which it gives up for `NAME (earlier)`; or, if it has a successor already
    /// (two members added members at once), a name of its own, `NAME 2`.
    fn make_way(&mut self, group: &Room) -> Result<(String, String), CoreError> {
        // Nothing renamed for a successor that cannot be joined.
        if self.rooms.len() >= self.room_limit {
            return Err(CoreError::TooManyRooms(self.rooms.len()));
        }
        let superseded = (self.rooms.values()).any(|r| is_successor(group, r));
        if superseded {
            return Ok((self.free_name(group.id_name()), group.name.clone()));
        }
        let earlier = self.free_name(&format!("{} (earlier)", group.id_name()));
        self.rename_room(group.id, &earlier)?;
        Ok((group.name.clone(), earlier))
    }

    /// The invitation to a group, with its members' usernames as a text would list them:
    /// every member's contact code, under the members' own usernames, not our names for them.
    pub(super) fn group_invite(&self, room: &Room) -> (Invite, String) {
        let me = self.identity.id();
        let members = match &room.access {
            Access::Members(m) => m.as_slice(),
            Access::Shared(_) => &[],
        };
        let codes: Vec<ContactCode> = members
            .iter()
            .map(|m| {
                let id = m.identity.id();
                match self.contacts.values().find(|c| c.identity.id() == id) {
                    Some(code) => code.clone(),
                    None if id == me => self.identity.contact_code(),
                    None => ContactCode {
                        username: m.username.clone(),
                        identity: m.identity.clone(),
                    },
                }
            })
            .collect();
        let mut names: Vec<&str> = codes.iter().map(|c| c.username.as_str()).collect();
        names.sort_unstable();
        let names = names.join(", ");
        let invite = Invite {
            name: room.id_name().to_string(),
            members: codes.iter().map(ContactCode::encode).collect(),
            shared: None,
        };
        (invite, names)
    }

    /// `name`, or if a room has it, `name` with a number: "team (earlier 2)".
    fn free_name(&self, name: &str) -> String {
        let mut free = name.to_string();
        let mut n = 2;
        while self.names.contains_key(&free) {
            free = match name.strip_suffix(')') {
                Some(open) => format!("{open} {n})"),
                None => format!("{name} {n}"),
            };
            n += 1;
        }
        free
    }

    /// Gives a room another local name (its id, keys and history stay).
    fn rename_room(&mut self, id: RoomId, name: &str) -> Result<(), CoreError> {
        let Some(mut room) = self.rooms.get(&id).cloned() else {
            return Err(CoreError::UnknownRoom(id.to_hex()));
        };
        if self.names.contains_key(name) {
            return Err(CoreError::AlreadyJoined(name.to_string()));
        }
        let old = std::mem::replace(&mut room.name, name.to_string());
        self.store_room(&room)?;
        self.names.remove(&old);
        self.names.insert(room.name.clone(), id);
        self.rooms.insert(id, room);
        Ok(())
    }
}

/// Whether an invitation that came in the group `room` invites to its successor: a group
/// of the same name with every member of `room` in it, and more.
pub(super) fn is_successor(room: &Room, invited: &Room) -> bool {
    let (Some(now), Some(next)) = (room.member_ids(), invited.member_ids()) else {
        return false;
    };
    room.kind == RoomKind::Group
        && invited.kind == RoomKind::Group
        && invited.name == room.id_name()
        && next.len() > now.len()
        && now.iter().all(|id| next.contains(id))
}

impl Core {
    /// Stores a room's record (sealed), as joined or renamed.
    pub(super) fn store_room(&self, room: &Room) -> Result<(), CoreError> {
        let key = format!("{}{}", super::ROOM_PREFIX, room.id.to_hex());
        let stored = serde_json::to_vec(&StoredRoom::from(room))
            .map_err(|e| CoreError::CorruptSetting(e.to_string()))?;
        let blob = self.seal(&key, &stored)?;
        self.journal.put_setting(&key, &blob)?;
        Ok(())
    }
}
