//! What members hold of our own chain, kept across restarts. Receipts live in memory: a
//! restarted node would otherwise take every member for one that holds none of what we
//! wrote, so its next mailbox would start from our first entry (and, past what a mailbox
//! carries, leave out the new ones) and its delivery counts would start from zero.
//!
//! One sealed setting per room: (member id, seq held) pairs, written along with other
//! writes (not waited for on disk): a value lost in a crash is only older, and a mailbox
//! built on it carries more than it needs.

use super::{Core, CoreError, short_id};
use crate::identity::UserId;
use crate::room::RoomId;

const HELD_PREFIX: &str = "held/";
/// A pair: member id, seq (big-endian).
const PAIR: usize = 32 + 8;
/// Members kept per room at most (the furthest along first): a named room's members beyond
/// these count as holding nothing after a restart, as every member did before.
const MAX_KEPT: usize = 4096;

fn key(room: RoomId) -> String {
    format!("{HELD_PREFIX}{}", room.to_hex())
}

impl Core {
    /// Reads what members held of our chain when the node last ran, as receipts would have
    /// told it; before the rooms' members are gathered, so that these count among them.
    pub(super) fn load_held(&mut self) -> Result<(), CoreError> {
        let mine = short_id(&self.identity.id().0);
        for (key, plain) in self.sealed_settings(HELD_PREFIX)? {
            let corrupt = || CoreError::CorruptSetting(key.clone());
            let mut id = [0u8; 32];
            hex::decode_to_slice(&key[HELD_PREFIX.len()..], &mut id).map_err(|_| corrupt())?;
            let room = RoomId(id);
            if !self.rooms.contains_key(&room) {
                continue;
            }
            let plain = plain?;
            if plain.len() % PAIR != 0 {
                return Err(corrupt());
            }
            let receipts = self.receipts.entry(room).or_default();
            for pair in plain.chunks_exact(PAIR) {
                let member = UserId(pair[..32].try_into().expect("32 bytes"));
                let seq = u64::from_be_bytes(pair[32..].try_into().expect("8 bytes"));
                let held = &mut receipts.entry(member).or_default().1;
                let h = held.entry(mine).or_default();
                *h = (*h).max(seq);
            }
        }
        Ok(())
    }

    /// Stores what changed since the last call; returns how many rooms it wrote.
    pub fn save_held(&mut self) -> Result<usize, CoreError> {
        if self.held_dirty.is_empty() {
            return Ok(0);
        }
        let me = self.identity.id();
        let mine = short_id(&me.0);
        let mut settings = Vec::new();
        for room in std::mem::take(&mut self.held_dirty) {
            if !self.rooms.contains_key(&room) {
                continue;
            }
            let mut pairs: Vec<(u64, UserId)> = (self.receipts.get(&room).into_iter())
                .flatten()
                .filter(|(member, _)| **member != me)
                .filter_map(|(member, (_, held))| Some((*held.get(&mine)?, *member)))
                .filter(|(seq, _)| *seq > 0)
                .collect();
            pairs.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.0.cmp(&b.1.0)));
            pairs.truncate(MAX_KEPT);
            let mut plain = Vec::with_capacity(pairs.len() * PAIR);
            for (seq, member) in pairs {
                plain.extend_from_slice(&member.0);
                plain.extend_from_slice(&seq.to_be_bytes());
            }
            settings.push((key(room), plain));
        }
        self.put_sealed_settings(&settings, false)?;
        Ok(settings.len())
    }

    /// A room left: what its members held is forgotten with it.
    pub(super) fn forget_held(&mut self, room: RoomId) -> Result<(), CoreError> {
        self.held_dirty.remove(&room);
        self.receipts.remove(&room);
        self.journal.delete_setting(&key(room))?;
        Ok(())
    }
}
