//! The public keys of the authors a node has met.
//!
//! An envelope names its author by id (the SHA-256 of the author's DER public key) and
//! carries the key itself only where a reader may not know it yet: in the author's first
//! entry of a room, and in every receipt. A later entry of that author in that room is
//! stored only after the first (chains are contiguous), so its reader mostly holds the key
//! by then; entries that come ahead of the first (a mailbox's later page) are checked with
//! the keys a direct or group room's member list names. A key is bound to its id by the
//! hash, so learning it from any envelope or member list is safe.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::identity::{PublicIdentity, UserId};

/// Shared between the event loop and the blocking tasks that verify sync batches.
#[derive(Clone, Default)]
pub struct AuthorKeys(Arc<RwLock<HashMap<UserId, PublicIdentity>>>);

impl AuthorKeys {
    pub fn get(&self, id: &UserId) -> Option<PublicIdentity> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Records a key; returns whether it was new.
    pub fn insert(&self, key: PublicIdentity) -> bool {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        map.insert(key.id(), key).is_none()
    }

    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for AuthorKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorKeys")
            .field("known", &self.len())
            .finish()
    }
}
