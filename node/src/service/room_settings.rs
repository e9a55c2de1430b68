//! State the service keeps per room across restarts: one sealed setting per room,
//! `PREFIX<room id>`, holding CBOR (see [`Core::put_sealed_settings`]). Such state only
//! saves work (what was put in the DHT, and when), so a value that cannot be read is
//! logged and left out: never a reason to refuse to start.

use serde::Serialize;
use serde::de::DeserializeOwned;

use std::time::{Duration, Instant};

use crate::core::Core;
use crate::room::RoomId;

/// A moment of this run as it is stored: ms since the Unix epoch (an `Instant` means
/// nothing to the next run).
pub(super) fn epoch_ms(at: Instant) -> u64 {
    crate::core::now_ms().saturating_sub(at.elapsed().as_millis() as u64)
}

/// A stored moment ([`epoch_ms`]) back as an `Instant` of this run; `None` if it is older
/// than this run's clock reaches back (as good as long ago).
pub(super) fn instant_at(ms: u64) -> Option<Instant> {
    let age = crate::core::now_ms().saturating_sub(ms);
    Instant::now().checked_sub(Duration::from_millis(age))
}

/// One kind of per-room state: its key prefix, and what it is, for the logs.
pub(super) struct RoomSettings {
    prefix: &'static str,
    what: &'static str,
}

impl RoomSettings {
    pub(super) const fn new(prefix: &'static str, what: &'static str) -> Self {
        RoomSettings { prefix, what }
    }

    fn key(&self, room: RoomId) -> String {
        format!("{}{}", self.prefix, room.to_hex())
    }

    /// Stores each room's value, in one transaction (not `durable`: see
    /// [`Core::put_sealed_settings`]).
    pub(super) fn save<T: Serialize>(
        &self,
        core: &Core,
        values: impl IntoIterator<Item = (RoomId, T)>,
        durable: bool,
    ) {
        let mut encoded = Vec::new();
        for (room, value) in values {
            match cbor4ii::serde::to_vec(Vec::new(), &value) {
                Ok(plain) => encoded.push((self.key(room), plain)),
                Err(e) => tracing::warn!(error = %e, what = self.what, "cannot encode"),
            }
        }
        if let Err(e) = core.put_sealed_settings(&encoded, durable) {
            tracing::warn!(error = %e, what = self.what, "could not store");
        }
    }

    /// The values stored for the rooms the node is in.
    pub(super) fn load<T: DeserializeOwned>(&self, core: &Core) -> Vec<(RoomId, T)> {
        let stored = match core.sealed_settings(self.prefix) {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, what = self.what, "cannot read");
                return Vec::new();
            }
        };
        let mut values = Vec::with_capacity(stored.len());
        for (key, plain) in stored {
            let mut id = [0u8; 32];
            let room = hex::decode_to_slice(&key[self.prefix.len()..], &mut id)
                .ok()
                .map(|()| RoomId(id));
            let value = (plain.ok()).and_then(|plain| cbor4ii::serde::from_slice(&plain).ok());
            match (room, value) {
                (Some(room), Some(value)) if core.room(&room).is_some() => {
                    values.push((room, value))
                }
                // A room left (the value outlived it by a crash): nothing to read.
                (Some(_), Some(_)) => {}
                _ => tracing::warn!(key, what = self.what, "a stored value cannot be read"),
            }
        }
        values
    }

    /// A room left: its value goes with it.
    pub(super) fn forget(&self, core: &Core, room: RoomId) {
        if let Err(e) = core.delete_sealed_setting(&self.key(room)) {
            tracing::warn!(error = %e, what = self.what, "could not drop a room's value");
        }
    }
}
