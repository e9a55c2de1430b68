//! Small files in the DHT (see [`crate::chunk_slices`]): putting the chunks of a file we
//! shared along with the mailbox that carries its message, and fetching a file's missing
//! chunks from there when no member that holds them can be reached.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::RangeInclusive;
use std::time::Instant;

use libp2p::{PeerId, kad};
use serde::{Deserialize, Serialize};

use super::Service;
use super::mailbox::{Gathering, PUT_AGAIN, Put};
use super::room_settings::{RoomSettings, epoch_ms, instant_at};
use crate::chunk_slices::{self, Slices};
use crate::files::{self, ChunkId, FileRef};
use crate::room::RoomId;

/// Files remembered per room for the mailbox: the latest shared.
const FILES_PER_ROOM: usize = 64;
/// Chunks put together from the DHT at once, over every fetch.
const GATHER_AT_ONCE: usize = 8;

/// A sealed chunk (or list) and its name.
type Sealed = (ChunkId, Vec<u8>);

/// Where a room's shared files are kept across restarts (sealed: the files' keys are in it).
const SETTINGS: RoomSettings = RoomSettings::new("shared-files/", "the files we shared");

/// The small files we shared (the latest [`FILES_PER_ROOM`] per room), and which peers
/// fetched them from us whole: a file goes in the DHT with the mailbox that carries its
/// message, or, when we stop, if fewer peers fetched it than the room has other members
/// (one who saw the message but did not fetch the file would find no holder once we are
/// gone). Kept across restarts, so that a node killed before its mailbox went out puts
/// the files with it when it runs again, and one restarted does not put again what it
/// put a moment ago.
#[derive(Default)]
pub(super) struct SharedFiles {
    files: HashMap<ChunkId, SharedFile>,
    /// Per room, its files' lists, oldest first.
    by_room: HashMap<RoomId, VecDeque<ChunkId>>,
    /// A chunk's (or list's) file.
    chunk_of: HashMap<ChunkId, ChunkId>,
    /// Rooms whose files changed since they were last stored.
    dirty: HashSet<RoomId>,
}

struct SharedFile {
    room: RoomId,
    /// Our message that shares it.
    seq: u64,
    file: FileRef,
    /// Its list and chunks.
    chunks: Vec<ChunkId>,
    /// Peers that fetched it whole in earlier runs of the node.
    whole_before: WholeBefore,
    /// Peers we served chunks of it to in this run, and which.
    fetched: HashMap<PeerId, HashSet<ChunkId>>,
    /// When its chunks were last put in the DHT, and how many of those puts are still
    /// under way (the put time is stored only once the DHT took them all).
    put_at: Option<Instant>,
    running: usize,
}

/// Peers named per file as having fetched it whole, across restarts; past these they are
/// only counted (a room has few members that fetch a file before its author stops).
const NAMED_PEERS: usize = 32;

/// Peers that fetched a file whole in earlier runs: by peer id, so that one fetching it
/// again (after `cryptchat forget`) counts once, and a count of the others.
#[derive(Default)]
struct WholeBefore {
    named: HashSet<PeerId>,
    unnamed: u32,
}

impl SharedFile {
    /// Peers that fetched all of it from us, in this run or an earlier one.
    fn whole(&self) -> usize {
        let before = &self.whole_before;
        before.named.len() + before.unnamed as usize + self.whole_now().count()
    }

    /// Peers that fetched all of it in this run, and not in an earlier one.
    fn whole_now(&self) -> impl Iterator<Item = &PeerId> {
        (self.fetched.iter())
            .filter(|(peer, got)| {
                got.len() == self.chunks.len() && !self.whole_before.named.contains(peer)
            })
            .map(|(peer, _)| peer)
    }
}

/// A shared file as stored.
#[derive(Serialize, Deserialize)]
struct Stored {
    seq: u64,
    file: FileRef,
    /// Peers that fetched it whole beyond those in `whole_by` (an earlier version stored
    /// them all here).
    whole: u32,
    /// Peers that fetched it whole (their peer ids, at most [`NAMED_PEERS`]).
    #[serde(default)]
    whole_by: Vec<serde_bytes::ByteBuf>,
    /// When its chunks were last put in the DHT (ms since the Unix epoch).
    put_ms: Option<u64>,
}

impl SharedFiles {
    fn add(&mut self, room: RoomId, seq: u64, file: FileRef, chunks: Vec<ChunkId>) {
        self.insert(room, seq, file, chunks, WholeBefore::default(), None);
    }

    fn insert(
        &mut self,
        room: RoomId,
        seq: u64,
        file: FileRef,
        chunks: Vec<ChunkId>,
        whole_before: WholeBefore,
        put_at: Option<Instant>,
    ) {
        self.dirty.insert(room);
        let order = self.by_room.entry(room).or_default();
        if order.len() == FILES_PER_ROOM
            && let Some(old) = order.pop_front()
            && let Some(gone) = self.files.remove(&old)
        {
            for c in &gone.chunks {
                self.chunk_of.remove(c);
            }
        }
        order.push_back(file.list);
        for c in &chunks {
            self.chunk_of.insert(*c, file.list);
        }
        let shared = SharedFile {
            room,
            seq,
            file,
            chunks,
            whole_before,
            fetched: HashMap::new(),
            put_at,
            running: 0,
        };
        self.files.insert(shared.file.list, shared);
    }

    /// We served chunk `id` to `peer`.
    pub(super) fn served(&mut self, peer: PeerId, id: &ChunkId) {
        if let Some(f) = self.chunk_of.get(id).and_then(|l| self.files.get_mut(l)) {
            let got = f.fetched.entry(peer).or_default();
            if got.insert(*id) && got.len() == f.chunks.len() {
                self.dirty.insert(f.room);
            }
        }
    }

    /// The room is left: its files are not put any more.
    fn forget_room(&mut self, room: RoomId) {
        for list in self.by_room.remove(&room).into_iter().flatten() {
            if let Some(gone) = self.files.remove(&list) {
                for c in &gone.chunks {
                    self.chunk_of.remove(c);
                }
            }
        }
        self.dirty.remove(&room);
    }

    /// The room's files as stored, oldest first.
    fn stored(&self, room: RoomId) -> Vec<Stored> {
        let lists = self.by_room.get(&room).into_iter().flatten();
        lists
            .filter_map(|l| self.files.get(l))
            .map(|f| {
                let peers = f.whole_before.named.iter().chain(f.whole_now());
                let whole_by: Vec<_> = (peers.take(NAMED_PEERS))
                    .map(|p| serde_bytes::ByteBuf::from(p.to_bytes()))
                    .collect();
                let unnamed = f.whole().saturating_sub(whole_by.len());
                Stored {
                    seq: f.seq,
                    file: f.file.clone(),
                    whole: u32::try_from(unnamed).unwrap_or(u32::MAX),
                    whole_by,
                    put_ms: (f.put_at).filter(|_| f.running == 0).map(epoch_ms),
                }
            })
            .collect()
    }

    /// Takes back a file as [`SharedFiles::stored`] gave it, with its list and chunks.
    fn restore(&mut self, room: RoomId, stored: Stored, chunks: Vec<ChunkId>) {
        let put_at = stored.put_ms.and_then(instant_at);
        let mut whole = WholeBefore {
            named: HashSet::new(),
            unnamed: stored.whole,
        };
        for bytes in stored.whole_by {
            match PeerId::from_bytes(&bytes) {
                Ok(peer) => _ = whole.named.insert(peer),
                Err(_) => whole.unnamed = whole.unnamed.saturating_add(1),
            }
        }
        let (seq, file) = (stored.seq, stored.file);
        self.insert(room, seq, file, chunks, whole, put_at);
    }

    /// Rooms with files we shared.
    fn rooms(&self) -> impl Iterator<Item = RoomId> + '_ {
        self.by_room.keys().copied()
    }

    /// The room's files to put now: those whose message is in `carried`, and with
    /// `stopping` those fewer than `others` peers fetched whole; none put within
    /// [`PUT_AGAIN`].
    fn due(
        &self,
        room: RoomId,
        carried: Option<&RangeInclusive<u64>>,
        stopping: bool,
        others: usize,
    ) -> Vec<(FileRef, Vec<ChunkId>)> {
        let lists = self.by_room.get(&room).into_iter().flatten();
        lists
            .filter_map(|l| self.files.get(l))
            .filter(|f| f.room == room && f.put_at.is_none_or(|at| at.elapsed() >= PUT_AGAIN))
            .filter(|f| {
                carried.is_some_and(|c| c.contains(&f.seq)) || (stopping && f.whole() < others)
            })
            .map(|f| (f.file.clone(), f.chunks.clone()))
            .collect()
    }

    /// `records` puts of the file's chunks started.
    fn putting(&mut self, list: &ChunkId, records: usize) {
        if let Some(f) = self.files.get_mut(list) {
            f.put_at = Some(Instant::now());
            f.running += records;
        }
    }

    /// One put of the file's chunks ended (whether the DHT took it is told by
    /// [`SharedFiles::unplaced`]).
    pub(super) fn put_ended(&mut self, list: &ChunkId) {
        if let Some(f) = self.files.get_mut(list) {
            f.running = f.running.saturating_sub(1);
            if f.running == 0 {
                self.dirty.insert(f.room);
            }
        }
    }

    /// A put of the file's chunks did not reach the DHT: it is put again next time.
    fn unplaced(&mut self, list: &ChunkId) {
        if let Some(f) = self.files.get_mut(list) {
            f.put_at = None;
            self.dirty.insert(f.room);
        }
    }
}

impl Service {
    /// We shared `file` in `room` at `seq`: small enough, it may go in the DHT (see
    /// [`SharedFiles`]).
    pub(super) fn shared_file(&mut self, room: RoomId, seq: u64, file: FileRef) {
        if !self.mailboxes.enabled() || file.size > chunk_slices::MAX_FILE {
            return;
        }
        let Some(chunks) = self.list_and_chunks(&file) else {
            return;
        };
        self.mailboxes.shared.add(room, seq, file, chunks);
        // On disk before anything else happens: a node killed right after still puts the
        // file with its mailbox when it runs again.
        self.save_shared(true);
    }

    /// The names of a file's chunks and of its list, read from the list this node holds
    /// (`None` if it holds none, or cannot read it).
    fn list_and_chunks(&self, file: &FileRef) -> Option<Vec<ChunkId>> {
        let list = self.core.journal().chunk(&file.list).ok()??;
        let mut chunks = files::open_list(file, &list).ok()?;
        chunks.push(file.list);
        Some(chunks)
    }

    /// Stores the shared files of the rooms where they changed (see [`SharedFiles`]);
    /// not `durable`: a change lost in a crash only has a file put once more.
    pub(super) fn save_shared(&mut self, durable: bool) {
        let shared = &mut self.mailboxes.shared;
        let rooms = std::mem::take(&mut shared.dirty);
        let values = rooms.into_iter().map(|room| (room, shared.stored(room)));
        SETTINGS.save(&self.core, values, durable);
    }

    /// Reads the files we shared before this start (those still held whole; files whose
    /// list cannot be read are only not put).
    pub(super) fn load_shared(&mut self) {
        for (room, files) in SETTINGS.load::<Vec<Stored>>(&self.core) {
            for stored in files {
                // None: forgotten since (`cryptchat forget`).
                if let Some(chunks) = self.list_and_chunks(&stored.file) {
                    self.mailboxes.shared.restore(room, stored, chunks);
                }
            }
        }
        // As read: nothing to write back.
        self.mailboxes.shared.dirty.clear();
    }

    /// A room left: its files are not put in the DHT any more.
    pub(super) fn forget_shared(&mut self, room: RoomId) {
        self.mailboxes.shared.forget_room(room);
        SETTINGS.forget(&self.core, room);
    }

    /// Rooms whose files may have to be put as we stop.
    pub(super) fn rooms_with_shared_files(&self) -> Vec<RoomId> {
        self.mailboxes.shared.rooms().collect()
    }

    /// Puts the chunks of the files we shared in `room` that are due (see
    /// [`SharedFiles::due`]).
    pub(super) fn put_files(
        &mut self,
        room: RoomId,
        carried: Option<RangeInclusive<u64>>,
        stopping: bool,
    ) {
        let others = self.core.member_count(room).saturating_sub(1);
        let due = (self.mailboxes.shared).due(room, carried.as_ref(), stopping, others);
        for (file, names) in due {
            let chunks = match self.sealed_chunks(&names) {
                Ok(Some(chunks)) => chunks,
                // Forgotten since (`cryptchat forget`): nothing to put.
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read a file's chunks for the DHT");
                    continue;
                }
            };
            let mut records = 0;
            for (name, sealed) in &chunks {
                for (i, value) in chunk_slices::cut(sealed).into_iter().enumerate() {
                    let key = chunk_slices::key(name, i as u8);
                    if let Err(e) = self.put_in_dht(key, value, Put::File(room, file.list)) {
                        return tracing::warn!(error = %e, "cannot put a file's chunk");
                    }
                    records += 1;
                }
            }
            (self.mailboxes.shared).putting(&file.list, records);
            tracing::debug!(file = %file.id(), records, "file put in the DHT");
        }
    }

    /// A put of the file's chunks did not reach the DHT: put them again next time.
    pub(super) fn file_unplaced(&mut self, list: &ChunkId) {
        self.mailboxes.shared.unplaced(list);
    }

    /// A file's sealed chunks and list (`names`), as the journal holds them (`None`: not
    /// whole).
    fn sealed_chunks(
        &self,
        names: &[ChunkId],
    ) -> Result<Option<Vec<Sealed>>, crate::journal::JournalError> {
        let journal = self.core.journal();
        let mut chunks = Vec::with_capacity(names.len());
        for name in names {
            let Some(sealed) = journal.chunk(name)? else {
                return Ok(None);
            };
            chunks.push((*name, sealed));
        }
        Ok(Some(chunks))
    }

    /// Looks in the DHT for the chunks of `file` that a fetch lacks and no connected member
    /// serves (its list first, until it is known), a few at a time.
    pub(super) fn find_slices(&mut self, file: ChunkId, wanted: Vec<ChunkId>) {
        if !self.mailboxes.enabled() || !self.kad_ready {
            return;
        }
        for chunk in wanted {
            if self.mailboxes.gathering.len() >= GATHER_AT_ONCE || self.dht_busy() {
                return;
            }
            if self.mailboxes.gathering.contains_key(&chunk) {
                continue;
            }
            let gathering = Gathering {
                file,
                slices: Slices::default(),
                asked: HashSet::new(),
                running: 0,
            };
            self.mailboxes.gathering.insert(chunk, gathering);
            // The first slice says how many there are.
            self.read_slice(chunk, 0);
        }
    }

    fn read_slice(&mut self, chunk: ChunkId, index: u8) {
        let Some(g) = self.mailboxes.gathering.get_mut(&chunk) else {
            return;
        };
        if !g.asked.insert(index) {
            return;
        }
        g.running += 1;
        let key = kad::RecordKey::new(&chunk_slices::key(&chunk, index));
        let id = self.swarm.behaviour_mut().kad.get_record(key);
        self.mailboxes.slice_reads.insert(id, (chunk, index));
    }

    /// A slice read found a record, or ended.
    pub(super) fn on_slice_query(
        &mut self,
        id: kad::QueryId,
        result: &kad::QueryResult,
        last: bool,
    ) {
        let Some(&(chunk, index)) = self.mailboxes.slice_reads.get(&id) else {
            return;
        };
        if last {
            self.mailboxes.slice_reads.remove(&id);
        }
        let Some(g) = self.mailboxes.gathering.get_mut(&chunk) else {
            return;
        };
        if last {
            g.running -= 1;
        }
        if let kad::QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(found))) = result {
            match g.slices.add(index, &found.record.value) {
                Ok(count) => {
                    for more in 0..count {
                        self.read_slice(chunk, more);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "chunk slice refused"),
            }
        }
        let Some(g) = self.mailboxes.gathering.get(&chunk) else {
            return;
        };
        if let Some(sealed) = g.slices.assembled() {
            let file = g.file;
            self.mailboxes.gathering.remove(&chunk);
            self.chunk_from_dht(file, chunk, sealed);
        } else if g.running == 0 {
            // Not all there (or not at all): looked for again when the fetch next is stuck.
            self.mailboxes.gathering.remove(&chunk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(n: u8) -> FileRef {
        FileRef {
            name: format!("f{n}"),
            size: 1000,
            list: [n; 32],
            key: [0; 32],
        }
    }

    #[test]
    fn a_file_is_due_if_its_message_goes_or_if_too_few_fetched_it_whole() {
        let (room, other_room) = (RoomId([1; 32]), RoomId([2; 32]));
        let mut shared = SharedFiles::default();
        let chunks = vec![[10; 32], [11; 32], [5; 32]];
        shared.add(room, 7, file(5), chunks.clone());
        let lists = |v: Vec<(FileRef, Vec<ChunkId>)>| {
            v.into_iter().map(|(f, _)| f.list[0]).collect::<Vec<_>>()
        };
        let (alice, bob) = (PeerId::random(), PeerId::random());

        // Carried by the mailbox: due; not carried and not stopping: not.
        assert_eq!(lists(shared.due(room, Some(&(5..=9)), false, 1)), [5]);
        assert!(shared.due(room, Some(&(8..=9)), false, 1).is_empty());
        assert!(shared.due(other_room, Some(&(5..=9)), true, 1).is_empty());
        // Stopping: due until as many peers as other members fetched all of it.
        assert_eq!(lists(shared.due(room, None, true, 1)), [5]);
        for c in &chunks[..2] {
            shared.served(alice, c);
        }
        shared.served(alice, &[99; 32]);
        assert_eq!(
            lists(shared.due(room, None, true, 1)),
            [5],
            "one chunk short"
        );
        shared.served(alice, &chunks[2]);
        assert!(shared.due(room, None, true, 1).is_empty());
        shared.served(bob, &chunks[0]);
        assert_eq!(lists(shared.due(room, None, true, 2)), [5]);

        // Put: not again for a while, unless the put found no DHT node.
        shared.putting(&[5; 32], 2);
        assert!(shared.due(room, Some(&(5..=9)), true, 2).is_empty());
        shared.unplaced(&[5; 32]);
        assert_eq!(lists(shared.due(room, Some(&(5..=9)), true, 2)), [5]);
    }

    #[test]
    fn shared_files_come_back_from_the_disk_as_they_were() {
        let (room, other_room) = (RoomId([1; 32]), RoomId([2; 32]));
        let mut shared = SharedFiles::default();
        let five = vec![[10; 32], [5; 32]];
        shared.add(room, 7, file(5), five.clone());
        shared.add(room, 8, file(6), vec![[6; 32]]);
        shared.add(room, 9, file(7), vec![[7; 32]]);
        shared.add(other_room, 1, file(8), vec![[8; 32]]);
        assert_eq!(shared.dirty.len(), 2, "both rooms are to be stored");
        shared.dirty.clear();
        // Alice fetches file 5 whole; file 6 goes in the DHT; file 7 stays as it was.
        let alice = PeerId::random();
        shared.served(alice, &five[0]);
        assert!(shared.dirty.is_empty(), "not whole yet: nothing to store");
        shared.served(alice, &five[1]);
        assert!(shared.dirty.contains(&room));
        shared.putting(&[6; 32], 2);
        shared.putting(&[7; 32], 1);
        shared.put_ended(&[6; 32]);
        // Until the DHT took all of a file, its put is not kept: a node that stops with
        // the put under way puts it again when it next runs.
        assert!(shared.stored(room).iter().all(|f| f.put_ms.is_none()));
        shared.dirty.clear();
        shared.put_ended(&[6; 32]);
        assert!(shared.dirty.contains(&room), "all taken: to be stored");

        let bytes = cbor4ii::serde::to_vec(Vec::new(), &shared.stored(room)).unwrap();
        let stored: Vec<Stored> = cbor4ii::serde::from_slice(&bytes).unwrap();
        let mut back = SharedFiles::default();
        for s in stored {
            let chunks = match s.file.list[0] {
                5 => five.clone(),
                n => vec![[n; 32]],
            };
            back.restore(room, s, chunks);
        }
        let lists = |v: Vec<(FileRef, Vec<ChunkId>)>| {
            v.into_iter().map(|(f, _)| f.list[0]).collect::<Vec<_>>()
        };
        // One other member: file 5 was fetched, file 6 put a moment ago, file 7 is due.
        assert_eq!(lists(back.due(room, None, true, 1)), [7]);
        // Two: file 5 too; file 6 goes with a mailbox again only a day after its put.
        assert_eq!(lists(back.due(room, None, true, 2)), [5, 7]);
        assert_eq!(lists(back.due(room, Some(&(1..=9)), false, 2)), [5, 7]);
        assert_eq!(back.files[&[5; 32]].chunks, five);
        assert!(back.due(other_room, None, true, 1).is_empty());
        // Alice fetching file 5 again (she forgot her copy) still counts once; Bob counts.
        for c in &five {
            back.served(alice, c);
        }
        assert_eq!(lists(back.due(room, None, true, 2)), [5, 7]);
        let bob = PeerId::random();
        for c in &five {
            back.served(bob, c);
        }
        assert_eq!(lists(back.due(room, None, true, 2)), [7]);
        let stored = back.stored(room);
        assert_eq!((stored[0].whole, stored[0].whole_by.len()), (0, 2));

        // What an earlier version stored (a count, no peer ids) still reads.
        #[derive(Serialize)]
        struct Earlier {
            seq: u64,
            file: FileRef,
            whole: u32,
            put_ms: Option<u64>,
        }
        let earlier = Earlier {
            seq: 9,
            file: file(9),
            whole: 2,
            put_ms: None,
        };
        let bytes = cbor4ii::serde::to_vec(Vec::new(), &[earlier]).unwrap();
        let stored: Vec<Stored> = cbor4ii::serde::from_slice(&bytes).unwrap();
        let mut old = SharedFiles::default();
        old.restore(room, stored.into_iter().next().unwrap(), vec![[9; 32]]);
        assert!(old.due(room, None, true, 2).is_empty());
        assert_eq!(lists(old.due(room, None, true, 3)), [9]);

        // A room left takes its files with it.
        back.forget_room(room);
        assert!(back.due(room, Some(&(1..=9)), true, 2).is_empty());
        assert!(back.chunk_of.is_empty() && back.files.is_empty());
    }

    #[test]
    fn a_room_remembers_its_latest_files() {
        let room = RoomId([1; 32]);
        let mut shared = SharedFiles::default();
        for n in 0..=FILES_PER_ROOM as u8 {
            shared.add(room, u64::from(n), file(n), vec![[n; 32]]);
        }
        let due = shared.due(room, None, true, 1);
        assert_eq!(due.len(), FILES_PER_ROOM);
        assert_eq!(due[0].0.list, [1; 32], "the oldest went");
        assert_eq!(shared.chunk_of.len(), FILES_PER_ROOM);
    }
}
