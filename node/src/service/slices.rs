//! Small files in the DHT (see [`crate::chunk_slices`]): putting the chunks of a file we
//! shared along with the mailbox that carries its message, and fetching a file's missing
//! chunks from there when no member that holds them can be reached.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::RangeInclusive;
use std::time::Instant;

use libp2p::{PeerId, kad};

use super::Service;
use super::mailbox::{Gathering, PUT_AGAIN, Put};
use crate::chunk_slices::{self, Slices};
use crate::files::{self, ChunkId, FileRef};
use crate::room::RoomId;

/// Files remembered per room for the mailbox: the latest shared.
const FILES_PER_ROOM: usize = 64;
/// Chunks put together from the DHT at once, over every fetch.
const GATHER_AT_ONCE: usize = 8;

/// A sealed chunk (or list) and its name.
type Sealed = (ChunkId, Vec<u8>);

/// The small files we shared in this run, and which peers fetched them from us whole: a
/// file goes in the DHT with the mailbox that carries its message, or, when we stop, if
/// fewer peers fetched it than the room has other members (one who saw the message but
/// did not fetch the file would find no holder once we are gone).
#[derive(Default)]
pub(super) struct SharedFiles {
    files: HashMap<ChunkId, SharedFile>,
    /// Per room, its files' lists, oldest first.
    by_room: HashMap<RoomId, VecDeque<ChunkId>>,
    /// A chunk's (or list's) file.
    chunk_of: HashMap<ChunkId, ChunkId>,
}

struct SharedFile {
    room: RoomId,
    /// Our message that shares it.
    seq: u64,
    file: FileRef,
    /// Its list and chunks.
    chunks: Vec<ChunkId>,
    /// Peers we served chunks of it to, and which.
    fetched: HashMap<PeerId, HashSet<ChunkId>>,
    /// When its chunks were last put in the DHT.
    put_at: Option<Instant>,
}

impl SharedFiles {
    fn add(&mut self, room: RoomId, seq: u64, file: FileRef, chunks: Vec<ChunkId>) {
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
            fetched: HashMap::new(),
            put_at: None,
        };
        self.files.insert(shared.file.list, shared);
    }

    /// We served chunk `id` to `peer`.
    pub(super) fn served(&mut self, peer: PeerId, id: &ChunkId) {
        if let Some(f) = self.chunk_of.get(id).and_then(|l| self.files.get_mut(l)) {
            f.fetched.entry(peer).or_default().insert(*id);
        }
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
                let whole = (f.fetched.values())
                    .filter(|got| got.len() == f.chunks.len())
                    .count();
                carried.is_some_and(|c| c.contains(&f.seq)) || (stopping && whole < others)
            })
            .map(|f| (f.file.clone(), f.chunks.clone()))
            .collect()
    }

    fn mark_put(&mut self, list: &ChunkId, at: Option<Instant>) {
        if let Some(f) = self.files.get_mut(list) {
            f.put_at = at;
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
        let list = match self.core.journal().chunk(&file.list) {
            Ok(Some(list)) => list,
            _ => return,
        };
        let Ok(mut chunks) = files::open_list(&file, &list) else {
            return;
        };
        chunks.push(file.list);
        self.mailboxes.shared.add(room, seq, file, chunks);
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
            (self.mailboxes.shared).mark_put(&file.list, Some(Instant::now()));
            tracing::debug!(file = %file.id(), records, "file put in the DHT");
        }
    }

    /// A put of the file's chunks did not reach the DHT: put them again next time.
    pub(super) fn file_unplaced(&mut self, list: &ChunkId) {
        self.mailboxes.shared.mark_put(list, None);
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
        shared.mark_put(&[5; 32], Some(Instant::now()));
        assert!(shared.due(room, Some(&(5..=9)), true, 2).is_empty());
        shared.mark_put(&[5; 32], None);
        assert_eq!(lists(shared.due(room, Some(&(5..=9)), true, 2)), [5]);
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
