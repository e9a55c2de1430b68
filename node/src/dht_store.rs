//! The DHT's record store: the provider records a node announces for itself, kept apart
//! from those it holds for other peers.
//!
//! libp2p's `MemoryStore` keeps both in one table of at most 1,024 keys, and drops another
//! peer's expired record only when someone looks its key up. A node serving the DHT for a
//! while fills that table with other people's rooms and files and can then no longer
//! announce its own (`MaxProvidedKeys`), and a node in the most rooms allowed
//! ([`crate::core::MAX_ROOMS`]) has no room left for the files it holds. Here:
//! - our own records are bounded only by what this node joins and holds
//!   ([`Limits::own_keys`]), and nothing another peer sends can crowd them out;
//! - other peers' records are bounded in number ([`Limits::other_records`]), per key
//!   ([`Limits::providers_per_key`]) and in the addresses each carries; when the table is
//!   full, expired ones are swept out, and past that new ones are refused (as libp2p does
//!   with a full key, so a flood cannot push out records already held);
//! - value records are cryptchat's mailboxes ([`crate::mailbox`]): ours, one per room we
//!   write in, apart again; other peers' bounded in number, in size each and in bytes all
//!   together, refused past that like provider records (libp2p's default store would let
//!   any peer fill 64 MiB of memory with them, 65 KiB at a time).

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::kad::store::{Error, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use serde::{Deserialize, Serialize};

/// Expired records are swept out of a full table at most this often, so a peer sending
/// records into a table full of live ones does not make every one of them a full scan.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// How much the store holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Keys this node provides: its rooms and the files it holds whole.
    pub own_keys: usize,
    /// Other peers' provider records, all keys together.
    pub other_records: usize,
    /// Other peers' records per key (Kademlia's replication factor: a lookup needs no more).
    pub providers_per_key: usize,
    /// Addresses kept per record of another peer.
    pub addresses: usize,
    /// Our own value records (mailboxes: one per room we write in).
    pub own_values: usize,
    /// Other peers' value records.
    pub other_values: usize,
    /// Bytes of other peers' value records, all together.
    pub other_value_bytes: usize,
    /// Bytes of one value record.
    pub value_size: usize,
}

impl Default for Limits {
    /// Own keys: [`crate::core::MAX_ROOMS`] rooms and some 64,000 files. Other peers'
    /// records: a few hundred bytes each with their addresses, so at most some 7 MiB.
    fn default() -> Self {
        Limits {
            own_keys: 65_536,
            other_records: 16_384,
            providers_per_key: 20,
            addresses: 8,
            own_values: 4_096,
            other_values: 4_096,
            other_value_bytes: 32 * 1024 * 1024,
            value_size: crate::mailbox::MAX_RECORD,
        }
    }
}

/// What the store holds, for `cryptchat status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreStats {
    /// Keys this node announces (rooms and files).
    pub own_keys: usize,
    /// Keys of other peers' records held.
    pub other_keys: usize,
    /// Other peers' records held.
    pub other_records: usize,
    /// Other peers' records refused since start because the table was full of live ones.
    pub refused: u64,
    /// Value records (mailboxes) we published.
    pub own_values: usize,
    /// Other peers' value records held, and their bytes.
    pub other_values: usize,
    pub other_value_bytes: usize,
    /// Other peers' value records refused since start: too big, or the table full.
    pub values_refused: u64,
}

/// A [`RecordStore`] for provider records only (see the module doc).
#[derive(Debug)]
pub struct DhtStore {
    local: PeerId,
    limits: Limits,
    own: HashMap<RecordKey, ProviderRecord>,
    others: HashMap<RecordKey, Vec<ProviderRecord>>,
    /// Records in `others`, all keys together.
    other_records: usize,
    refused: u64,
    swept_at: Option<Instant>,
    own_values: HashMap<RecordKey, Record>,
    other_values: HashMap<RecordKey, Record>,
    other_value_bytes: usize,
    values_refused: u64,
    values_swept_at: Option<Instant>,
}

impl DhtStore {
    pub fn new(local: PeerId) -> Self {
        Self::with_limits(local, Limits::default())
    }

    pub fn with_limits(local: PeerId, limits: Limits) -> Self {
        DhtStore {
            local,
            limits,
            own: HashMap::new(),
            others: HashMap::new(),
            other_records: 0,
            refused: 0,
            swept_at: None,
            own_values: HashMap::new(),
            other_values: HashMap::new(),
            other_value_bytes: 0,
            values_refused: 0,
            values_swept_at: None,
        }
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            own_keys: self.own.len(),
            other_keys: self.others.len(),
            other_records: self.other_records,
            refused: self.refused,
            own_values: self.own_values.len(),
            other_values: self.other_values.len(),
            other_value_bytes: self.other_value_bytes,
            values_refused: self.values_refused,
        }
    }

    fn put_own_value(&mut self, record: Record) -> Result<()> {
        if self.own_values.len() >= self.limits.own_values
            && !self.own_values.contains_key(&record.key)
        {
            return Err(Error::MaxRecords);
        }
        self.own_values.insert(record.key.clone(), record);
        Ok(())
    }

    /// Another peer's value record: replaces what the key held (Kademlia has no notion of
    /// a newer value; a reader checks every entry anyway), within the limits.
    fn put_other_value(&mut self, record: Record) -> Result<()> {
        let size = record.value.len();
        if size > self.limits.value_size {
            self.values_refused += 1;
            return Err(Error::ValueTooLarge);
        }
        // What the key holds now, looked up again after a sweep (which may drop it).
        let held = |s: &Self| s.other_values.get(&record.key).map(|r| r.value.len());
        let fits = |s: &Self| match held(s) {
            Some(old) => s.other_value_bytes - old + size <= s.limits.other_value_bytes,
            None => {
                s.other_values.len() < s.limits.other_values
                    && s.other_value_bytes + size <= s.limits.other_value_bytes
            }
        };
        if !fits(self) {
            self.sweep_values(Instant::now());
            if !fits(self) {
                self.values_refused += 1;
                return Err(Error::MaxRecords);
            }
        }
        self.other_value_bytes = self.other_value_bytes - held(self).unwrap_or(0) + size;
        self.other_values.insert(record.key.clone(), record);
        Ok(())
    }

    /// Drops other peers' expired value records (at most every [`SWEEP_EVERY`]).
    fn sweep_values(&mut self, now: Instant) {
        if !sweep_due(&mut self.values_swept_at, now) {
            return;
        }
        self.other_values.retain(|_, r| !r.is_expired(now));
        self.other_value_bytes = self.other_values.values().map(|r| r.value.len()).sum();
    }

    fn add_own(&mut self, record: ProviderRecord) -> Result<()> {
        if self.own.len() >= self.limits.own_keys && !self.own.contains_key(&record.key) {
            return Err(Error::MaxProvidedKeys);
        }
        self.own.insert(record.key.clone(), record);
        Ok(())
    }

    fn add_other(&mut self, mut record: ProviderRecord) -> Result<()> {
        record.addresses.truncate(self.limits.addresses);
        let now = Instant::now();
        if let Some(list) = self.others.get_mut(&record.key) {
            if let Some(held) = list.iter_mut().find(|p| p.provider == record.provider) {
                *held = record;
                return Ok(());
            }
            if list.len() >= self.limits.providers_per_key {
                let before = list.len();
                list.retain(|p| !p.is_expired(now));
                self.other_records -= before - list.len();
                if list.len() >= self.limits.providers_per_key {
                    // Enough providers of this key already: like libp2p, keep those.
                    return Ok(());
                }
            }
        }
        if self.other_records >= self.limits.other_records {
            self.sweep(now);
            if self.other_records >= self.limits.other_records {
                self.refused += 1;
                return Err(Error::MaxProvidedKeys);
            }
        }
        self.others
            .entry(record.key.clone())
            .or_default()
            .push(record);
        self.other_records += 1;
        Ok(())
    }

    /// Drops other peers' expired records (at most every [`SWEEP_EVERY`]).
    fn sweep(&mut self, now: Instant) {
        if !sweep_due(&mut self.swept_at, now) {
            return;
        }
        self.others.retain(|_, list| {
            list.retain(|p| !p.is_expired(now));
            !list.is_empty()
        });
        self.other_records = self.others.values().map(Vec::len).sum();
    }
}

/// Whether a sweep last done at `last` may run again at `now` (then noted as done).
fn sweep_due(last: &mut Option<Instant>, now: Instant) -> bool {
    if last.is_some_and(|at| now.duration_since(at) < SWEEP_EVERY) {
        return false;
    }
    *last = Some(now);
    true
}

type ProvidedIter<'a> = std::iter::Map<
    std::collections::hash_map::Values<'a, RecordKey, ProviderRecord>,
    fn(&'a ProviderRecord) -> Cow<'a, ProviderRecord>,
>;

type RecordsIter<'a> = std::iter::Map<
    std::iter::Chain<
        std::collections::hash_map::Values<'a, RecordKey, Record>,
        std::collections::hash_map::Values<'a, RecordKey, Record>,
    >,
    fn(&'a Record) -> Cow<'a, Record>,
>;

impl RecordStore for DhtStore {
    type RecordsIter<'a> = RecordsIter<'a>;
    type ProvidedIter<'a> = ProvidedIter<'a>;

    /// Ours first: what we put is what we stand by.
    fn get(&self, key: &RecordKey) -> Option<Cow<'_, Record>> {
        self.own_values
            .get(key)
            .or_else(|| self.other_values.get(key))
            .map(Cow::Borrowed)
    }

    fn put(&mut self, record: Record) -> Result<()> {
        if record.publisher == Some(self.local) {
            self.put_own_value(record)
        } else {
            self.put_other_value(record)
        }
    }

    fn remove(&mut self, key: &RecordKey) {
        if let Some(r) = self.other_values.remove(key) {
            self.other_value_bytes -= r.value.len();
        } else {
            self.own_values.remove(key);
        }
    }

    /// What Kademlia publishes again (ours) and replicates (others').
    fn records(&self) -> Self::RecordsIter<'_> {
        self.own_values
            .values()
            .chain(self.other_values.values())
            .map(Cow::Borrowed)
    }

    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        if record.provider == self.local {
            self.add_own(record)
        } else {
            self.add_other(record)
        }
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        let others = self.others.get(key).into_iter().flatten();
        self.own
            .get(key)
            .into_iter()
            .chain(others)
            .cloned()
            .collect()
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.own.values().map(Cow::Borrowed)
    }

    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) {
        if *provider == self.local {
            self.own.remove(key);
            return;
        }
        let Some(list) = self.others.get_mut(key) else {
            return;
        };
        let before = list.len();
        list.retain(|p| p.provider != *provider);
        self.other_records -= before - list.len();
        if list.is_empty() {
            self.others.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> RecordKey {
        RecordKey::new(&i.to_be_bytes())
    }

    fn record(key: RecordKey, provider: PeerId, expires: Option<Instant>) -> ProviderRecord {
        let addr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        ProviderRecord {
            key,
            provider,
            expires,
            addresses: vec![addr; 3],
        }
    }

    fn small() -> Limits {
        Limits {
            own_keys: 50,
            other_records: 10,
            providers_per_key: 3,
            addresses: 2,
            own_values: 2,
            other_values: 3,
            other_value_bytes: 250,
            value_size: 100,
        }
    }

    #[test]
    fn a_full_table_of_others_records_leaves_our_own_announcements_alone() {
        let me = PeerId::random();
        let mut store = DhtStore::with_limits(me, small());
        let live = Some(Instant::now() + Duration::from_secs(3600));
        for i in 0..20 {
            let _ = store.add_provider(record(key(i), PeerId::random(), live));
        }
        assert_eq!(store.stats().other_records, 10);
        assert_eq!(store.stats().refused, 10);
        // Our own keys, even those others provide too, are all taken up to their limit.
        for i in 0..50 {
            store.add_provider(record(key(i), me, None)).unwrap();
        }
        assert!(matches!(
            store.add_provider(record(key(50), me, None)),
            Err(Error::MaxProvidedKeys)
        ));
        // Announcing a key again is not a new key.
        store.add_provider(record(key(3), me, None)).unwrap();
        assert_eq!(store.provided().count(), 50);
        let holders: Vec<PeerId> = store
            .providers(&key(3))
            .iter()
            .map(|p| p.provider)
            .collect();
        assert_eq!(holders.len(), 2);
        assert_eq!(holders[0], me);
        store.remove_provider(&key(3), &me);
        assert_eq!(store.provided().count(), 49);
        assert_eq!(store.providers(&key(3)).len(), 1);
    }

    #[test]
    fn expired_records_make_room_and_live_ones_are_never_pushed_out() {
        let mut store = DhtStore::with_limits(PeerId::random(), small());
        let now = Instant::now();
        for i in 0..10 {
            store
                .add_provider(record(key(i), PeerId::random(), Some(now)))
                .unwrap();
        }
        let live = Some(now + Duration::from_secs(3600));
        let newcomer = record(key(100), PeerId::random(), live);
        store.add_provider(newcomer.clone()).unwrap();
        assert_eq!(store.stats().other_records, 1);
        assert_eq!(store.stats().other_keys, 1);
        assert_eq!(store.providers(&key(100)), vec![newcomer]);
        for i in 0..9 {
            store
                .add_provider(record(key(200 + i), PeerId::random(), live))
                .unwrap();
        }
        assert!(
            store
                .add_provider(record(key(300), PeerId::random(), live))
                .is_err()
        );
        assert!(store.providers(&key(300)).is_empty());
        assert_eq!(store.stats().other_records, 10);
        // A provider already held refreshes its record in place, full table or not.
        let mut again = record(key(100), store.providers(&key(100))[0].provider, live);
        again.addresses.clear();
        store.add_provider(again).unwrap();
        assert!(store.providers(&key(100))[0].addresses.is_empty());
        assert_eq!(store.stats().other_records, 10);
    }

    #[test]
    fn a_key_keeps_a_bounded_number_of_providers_and_addresses() {
        let mut store = DhtStore::with_limits(PeerId::random(), small());
        let now = Instant::now();
        let live = Some(now + Duration::from_secs(3600));
        let first = PeerId::random();
        store
            .add_provider(record(key(1), first, Some(now)))
            .unwrap();
        for _ in 0..5 {
            store
                .add_provider(record(key(1), PeerId::random(), live))
                .unwrap();
        }
        let held = store.providers(&key(1));
        // Three per key; the expired one gave up its place to a live one.
        assert_eq!(held.len(), 3);
        assert!(held.iter().all(|p| p.provider != first));
        assert!(held.iter().all(|p| p.addresses.len() == 2));
        assert_eq!(store.stats().other_records, 3);
        for p in &held {
            store.remove_provider(&key(1), &p.provider);
        }
        assert_eq!(store.stats(), StoreStats::default());
    }

    fn value(key: RecordKey, publisher: PeerId, size: usize, expires: Option<Instant>) -> Record {
        Record {
            key,
            value: vec![1; size],
            publisher: Some(publisher),
            expires,
        }
    }

    #[test]
    fn value_records_are_bounded_in_size_number_and_bytes() {
        let me = PeerId::random();
        let mut store = DhtStore::with_limits(me, small());
        let now = Instant::now();
        let live = Some(now + Duration::from_secs(3600));
        let other = PeerId::random();
        assert!(matches!(
            store.put(value(key(1), other, 101, live)),
            Err(Error::ValueTooLarge)
        ));
        store.put(value(key(1), other, 100, live)).unwrap();
        store.put(value(key(2), other, 100, live)).unwrap();
        // 250 bytes in all: a third of 100 does not fit, one of 50 does.
        assert!(store.put(value(key(3), other, 100, live)).is_err());
        store.put(value(key(3), other, 50, live)).unwrap();
        // Three records at most, even small ones.
        assert!(store.put(value(key(4), other, 1, live)).is_err());
        // A key held is replaced in place, and its bytes counted anew.
        store.put(value(key(1), other, 40, live)).unwrap();
        assert_eq!(store.get(&key(1)).unwrap().value.len(), 40);
        let stats = store.stats();
        assert_eq!((stats.other_values, stats.other_value_bytes), (3, 190));
        assert_eq!(stats.values_refused, 3);
        // Ours are apart: a full table of others' leaves room for them.
        store.put(value(key(10), me, 100, None)).unwrap();
        store.put(value(key(11), me, 100, None)).unwrap();
        assert!(store.put(value(key(12), me, 100, None)).is_err());
        assert_eq!(store.records().count(), 5);
        // Ours come first for a key both hold.
        store.put(value(key(1), me, 7, None)).unwrap_err();
        store.remove(&key(11));
        store.put(value(key(1), me, 7, None)).unwrap();
        assert_eq!(store.get(&key(1)).unwrap().value.len(), 7);
        store.remove(&key(2));
        assert_eq!(store.stats().other_value_bytes, 90);
    }

    #[test]
    fn a_value_replacing_one_the_sweep_drops_stays_within_the_bytes() {
        let mut store = DhtStore::with_limits(PeerId::random(), small());
        let now = Instant::now();
        let live = Some(now + Duration::from_secs(3600));
        let other = PeerId::random();
        store.put(value(key(1), other, 50, Some(now))).unwrap();
        store.put(value(key(2), other, 100, live)).unwrap();
        store.put(value(key(3), other, 100, live)).unwrap();
        // 250 bytes, all taken. Key 1's 50 replaced by 100 would be 300: the sweep drops
        // key 1's expired value, and 100 more still do not fit.
        assert!(store.put(value(key(1), other, 100, live)).is_err());
        assert!(store.get(&key(1)).is_none());
        assert_eq!(store.stats().other_value_bytes, 200);
        store.put(value(key(1), other, 50, live)).unwrap();
        assert_eq!(store.stats().other_value_bytes, 250);
    }

    #[test]
    fn expired_value_records_make_room() {
        let mut store = DhtStore::with_limits(PeerId::random(), small());
        let now = Instant::now();
        for i in 0..3 {
            store
                .put(value(key(i), PeerId::random(), 10, Some(now)))
                .unwrap();
        }
        let live = Some(now + Duration::from_secs(3600));
        store
            .put(value(key(9), PeerId::random(), 10, live))
            .unwrap();
        assert_eq!(store.stats().other_values, 1);
        assert!(store.get(&key(9)).is_some());
    }
}
