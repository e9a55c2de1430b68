//! Rooms: how a name (and optional password) or a set of members becomes a topic and keys.
//!
//! Only hashes travel: the gossipsub topic and the Kademlia rendezvous key are both derived
//! from the room id, which hides the name and, for password rooms, costs an argon2id run per
//! guess.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::crypto::{self, CryptoError, SecretKey};
use crate::identity::{ContactCode, PublicIdentity, UserId};

const ROOM_LABEL: &str = "cryptchat/room/v1";
const ROOM_PASSWORD_SALT_LABEL: &str = "cryptchat/room-password-salt/v1";
const DIRECT_LABEL: &str = "cryptchat/direct/v1";
const GROUP_LABEL: &str = "cryptchat/group/v1";
/// Topics are short because every topic a node is in goes to each new peer in one gossipsub
/// frame (see [`crate::net::MAX_TRANSMIT`]): v1 was `cryptchat/v1/` and the id in hex, 77
/// bytes in all.
pub const TOPIC_PREFIX: &str = "cc/v2/";
/// Length of every room topic: the prefix and the id in unpadded base64url (43 characters).
pub const TOPIC_LEN: usize = TOPIC_PREFIX.len() + 43;
/// At most this many members in a group room: every message wraps its key once per member.
pub const MAX_GROUP_MEMBERS: usize = 32;

/// A room id: 32 bytes, the hash every room name or member set turns into.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RoomId(pub [u8; 32]);

impl RoomId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The gossipsub topic string for this room.
    pub fn topic(&self) -> String {
        format!("{TOPIC_PREFIX}{}", URL_SAFE_NO_PAD.encode(self.0))
    }

    /// Parses a topic string back into a room id (None for foreign topics).
    pub fn from_topic(topic: &str) -> Option<Self> {
        let encoded = topic.strip_prefix(TOPIC_PREFIX)?;
        let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
        Some(RoomId(bytes.try_into().ok()?))
    }
}

impl std::fmt::Debug for RoomId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RoomId({})", &self.to_hex()[..12])
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    #[error(
        "room name must be 1 to 128 characters without control or bidirectional formatting characters"
    )]
    BadName,
    #[error("a room name cannot start with '@': '@NAME' is the direct room with contact NAME")]
    ReservedName,
    #[error("a group needs 2 to {MAX_GROUP_MEMBERS} members, including you")]
    BadMembers,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Who can read a room's messages and how its content keys are protected.
#[derive(Clone)]
pub enum Access {
    /// Everyone who knows the name (and password) shares one content key.
    Shared(SecretKey),
    /// Each message has a fresh content key wrapped with RSA-OAEP for every listed member.
    Members(Vec<Member>),
}

/// A member of a direct or group room.
#[derive(Clone, Debug)]
pub struct Member {
    pub username: String,
    pub identity: PublicIdentity,
}

impl From<ContactCode> for Member {
    fn from(c: ContactCode) -> Self {
        Member {
            username: c.username,
            identity: c.identity,
        }
    }
}

/// The kind of room, as shown to users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomKind {
    Named,
    Direct,
    Group,
}

/// A joined room: its local name, id and access keys. Kept sealed at rest.
#[derive(Clone)]
pub struct Room {
    /// The name the local user refers to the room by ("lobby", "@alice", "team").
    pub name: String,
    pub id: RoomId,
    pub kind: RoomKind,
    pub has_password: bool,
    pub access: Access,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print keys.
        f.debug_struct("Room")
            .field("name", &self.name)
            .field("id", &self.id)
            .field("kind", &self.kind)
            .finish()
    }
}

/// The room name as it derives the room: trimmed and [canonical](crate::chars::canonical),
/// so that "café" is one room however its "é" was typed. Case is kept: "Lobby" is another
/// room than "lobby", as its key is another.
pub(crate) fn check_name(name: &str) -> Result<String, RoomError> {
    let name = crate::chars::canonical(name.trim()).into_owned();
    let n = name.chars().count();
    if n == 0 || n > 128 || !crate::chars::is_plain(&name) {
        return Err(RoomError::BadName);
    }
    // Local names: `@NAME` is the direct room with contact NAME, and nothing else may be
    // (a message to a contact would otherwise go to a room anyone can join by that name).
    if name.starts_with('@') {
        return Err(RoomError::ReservedName);
    }
    Ok(name)
}

/// The local name of a joined room as a user may type it: names are kept
/// [canonical](check_name), and a direct room is named after its contact's username,
/// whatever its case ("@Bob" is "@bob").
pub fn local_name(typed: &str) -> String {
    let typed = typed.trim();
    match typed.strip_prefix('@') {
        Some(contact) => match crate::identity::normalise_username(contact) {
            Ok(contact) => format!("@{contact}"),
            Err(_) => typed.to_string(),
        },
        None => crate::chars::canonical(typed).into_owned(),
    }
}

impl Room {
    /// A named room. With a password, the room id and key both depend on an argon2id run
    /// (salted by the name), so the topic does not let anyone test passwords quickly.
    pub fn named(name: &str, password: Option<&str>) -> Result<Room, RoomError> {
        let name = check_name(name)?;
        let pw_secret = match password.filter(|p| !p.is_empty()) {
            Some(pw) => {
                let salt = crypto::sha256_framed(ROOM_PASSWORD_SALT_LABEL, &[name.as_bytes()]);
                let pw = zeroize::Zeroizing::new(crate::chars::canonical(pw).into_owned());
                Some(crypto::argon2id(pw.as_bytes(), &salt)?)
            }
            None => None,
        };
        let secret: &[u8] = pw_secret.as_ref().map(|s| &s[..]).unwrap_or(&[]);
        let id = RoomId(crypto::sha256_framed(
            ROOM_LABEL,
            &[name.as_bytes(), secret],
        ));
        let ikm: Vec<u8> = [name.as_bytes(), secret].concat();
        let key = crypto::hkdf32(&id.0, &ikm, "room-content-key");
        Ok(Room {
            name,
            id,
            kind: RoomKind::Named,
            has_password: pw_secret.is_some(),
            access: Access::Shared(key),
        })
    }

    /// The direct room between two users: the same id on both sides, from both public keys.
    pub fn direct(me: Member, contact: Member) -> Room {
        let (a, b) = if me.identity.id() <= contact.identity.id() {
            (me.identity.id(), contact.identity.id())
        } else {
            (contact.identity.id(), me.identity.id())
        };
        let id = RoomId(crypto::sha256_framed(DIRECT_LABEL, &[&a.0, &b.0]));
        Room {
            name: format!("@{}", contact.username),
            id,
            kind: RoomKind::Direct,
            has_password: false,
            access: Access::Members(vec![me, contact]),
        }
    }

    /// A group room with an explicit member list (the creator included).
    pub fn group(name: &str, mut members: Vec<Member>) -> Result<Room, RoomError> {
        let name = check_name(name)?;
        members.sort_by_key(|m| m.identity.id());
        members.dedup_by_key(|m| m.identity.id());
        if members.len() < 2 || members.len() > MAX_GROUP_MEMBERS {
            return Err(RoomError::BadMembers);
        }
        let mut parts: Vec<&[u8]> = vec![name.as_bytes()];
        let ids: Vec<UserId> = members.iter().map(|m| m.identity.id()).collect();
        parts.extend(ids.iter().map(|i| &i.0[..]));
        let id = RoomId(crypto::sha256_framed(GROUP_LABEL, &parts));
        Ok(Room {
            name,
            id,
            kind: RoomKind::Group,
            has_password: false,
            access: Access::Members(members),
        })
    }

    /// The name the room's id was made from, which an invitation must carry for the
    /// invitee to arrive at the same room: the local name, unless the room was joined as
    /// `NAME (INVITER)` because a room of ours had its name; then NAME. (A room with a
    /// password keeps its local name: its id cannot be checked without the password, and
    /// an invitation carries the id anyway.)
    pub fn id_name(&self) -> &str {
        let mut name = self.name.as_str();
        loop {
            if self.made_from(name) {
                return name;
            }
            match name.strip_suffix(')').and_then(|n| n.rsplit_once(" (")) {
                Some((shorter, _)) => name = shorter,
                None => return &self.name,
            }
        }
    }

    /// Whether `name` gives this room's id.
    fn made_from(&self, name: &str) -> bool {
        match (&self.access, self.kind) {
            (Access::Members(members), RoomKind::Group) => {
                Room::group(name, members.clone()).is_ok_and(|r| r.id == self.id)
            }
            (Access::Shared(_), _) if !self.has_password => {
                Room::named(name, None).is_ok_and(|r| r.id == self.id)
            }
            _ => true,
        }
    }

    /// Member ids for rooms with an explicit member list.
    pub fn member_ids(&self) -> Option<Vec<UserId>> {
        match &self.access {
            Access::Shared(_) => None,
            Access::Members(m) => Some(m.iter().map(|m| m.identity.id()).collect()),
        }
    }
}

/// What is persisted (sealed with the identity's local key) to rejoin a room after restart.
#[derive(Serialize, Deserialize)]
pub struct StoredRoom {
    pub name: String,
    pub id: [u8; 32],
    pub kind: RoomKind,
    pub has_password: bool,
    /// Shared content key (named rooms).
    pub key: Option<[u8; 32]>,
    /// (username, public key DER) per member (direct and group rooms).
    pub members: Vec<(String, Vec<u8>)>,
}

impl From<&Room> for StoredRoom {
    fn from(r: &Room) -> Self {
        let (key, members) = match &r.access {
            Access::Shared(k) => (Some(**k), vec![]),
            Access::Members(m) => (
                None,
                m.iter()
                    .map(|m| (m.username.clone(), m.identity.der().to_vec()))
                    .collect(),
            ),
        };
        StoredRoom {
            name: r.name.clone(),
            id: r.id.0,
            kind: r.kind,
            has_password: r.has_password,
            key,
            members,
        }
    }
}

impl StoredRoom {
    pub fn into_room(self) -> Option<Room> {
        let access = match self.key {
            Some(k) => Access::Shared(zeroize::Zeroizing::new(k)),
            None => Access::Members(
                self.members
                    .into_iter()
                    .map(|(username, der)| {
                        Some(Member {
                            username,
                            identity: PublicIdentity::from_der(&der).ok()?,
                        })
                    })
                    .collect::<Option<Vec<_>>>()?,
            ),
        };
        Some(Room {
            name: self.name,
            id: RoomId(self.id),
            kind: self.kind,
            has_password: self.has_password,
            access,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_joined_under_another_local_name_knows_the_name_its_id_came_from() {
        let renamed = |mut room: Room, name: &str| {
            room.name = name.to_string();
            room
        };
        let lobby = Room::named("lobby (ops)", None).unwrap();
        assert_eq!(lobby.id_name(), "lobby (ops)", "parentheses of its own");
        assert_eq!(
            renamed(lobby, "lobby (ops) (alice)").id_name(),
            "lobby (ops)"
        );
        let members = |n: usize| {
            ["alice", "bob", "carol"][..n]
                .iter()
                .map(|u| {
                    let id = crate::identity::Identity::derive_unchecked(
                        u,
                        "a test password",
                        crate::identity::KeySize::Rsa2048,
                    )
                    .unwrap();
                    Member::from(id.contact_code())
                })
                .collect::<Vec<_>>()
        };
        let team = Room::group("team", members(3)).unwrap();
        assert_eq!(renamed(team.clone(), "team (alice)").id_name(), "team");
        assert_eq!(team.id_name(), "team");
        // A password room's name cannot be checked: its local name.
        let den = Room::named("den", Some("a long room password 77")).unwrap();
        assert_eq!(renamed(den, "den (bob)").id_name(), "den (bob)");
    }

    #[test]
    fn named_room_ids_depend_on_name_and_password() {
        let a = Room::named("lobby", None).unwrap();
        let b = Room::named(" lobby ", None).unwrap();
        assert_eq!(a.id, b.id);
        let c = Room::named("lobby", Some("room secret one")).unwrap();
        let d = Room::named("lobby", Some("room secret two")).unwrap();
        assert_ne!(a.id, c.id);
        assert_ne!(c.id, d.id);
        assert!(c.has_password && !a.has_password);
        // The topic never contains the name.
        assert!(!a.id.topic().contains("lobby"));
        assert_eq!(a.id.topic().len(), TOPIC_LEN);
        assert_eq!(RoomId::from_topic(&a.id.topic()), Some(a.id));
        assert_eq!(RoomId::from_topic("other/topic"), None);
        let (Access::Shared(k1), Access::Shared(k2)) = (&c.access, &d.access) else {
            panic!("named rooms share a key")
        };
        assert_ne!(**k1, **k2);
    }

    #[test]
    fn a_name_and_password_typed_with_other_accent_characters_are_one_room() {
        // "é" as one character, and as "e" with a combining accent (as macOS file names
        // and some input methods write it).
        let composed = Room::named("caf\u{e9}", Some("cr\u{e8}me br\u{fb}l\u{e9}e 42")).unwrap();
        let decomposed =
            Room::named("cafe\u{301}", Some("cre\u{300}me bru\u{302}le\u{301}e 42")).unwrap();
        assert_eq!(composed.id, decomposed.id);
        assert_eq!(decomposed.name, "caf\u{e9}");
        let (Access::Shared(k1), Access::Shared(k2)) = (&composed.access, &decomposed.access)
        else {
            panic!("named rooms share a key")
        };
        assert_eq!(**k1, **k2);
        // The accent still counts, and so does case.
        assert_ne!(
            Room::named("cafe", None).unwrap().id,
            Room::named("caf\u{e9}", None).unwrap().id
        );
        assert_ne!(
            Room::named("Lobby", None).unwrap().id,
            Room::named("lobby", None).unwrap().id
        );
    }

    #[test]
    fn a_room_is_found_by_its_name_however_typed() {
        assert_eq!(local_name(" cafe\u{301} "), "caf\u{e9}");
        assert_eq!(local_name("Lobby"), "Lobby");
        assert_eq!(local_name("@Bob "), "@bob");
        assert_eq!(local_name("@"), "@");
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(Room::named("", None).is_err());
        assert!(Room::named("a\nb", None).is_err());
        assert!(
            Room::named("lobby\u{202E}ybbol", None).is_err(),
            "a bidi override"
        );
        assert!(Room::named(&"x".repeat(129), None).is_err());
    }
}
