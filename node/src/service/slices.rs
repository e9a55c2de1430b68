//! Small files in the DHT (see [`crate::chunk_slices`]): putting the chunks of a file we
//! shared along with the mailbox that carries its message, and fetching a file's missing
//! chunks from there when no member that holds them can be reached.

use std::collections::HashSet;
use std::ops::RangeInclusive;
use std::time::Instant;

use libp2p::kad;

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

impl Service {
    /// We shared `file` in `room` at `seq`: small enough, it goes in the DHT with our
    /// mailbox if a member lacks that message when the mailbox is put.
    pub(super) fn shared_file(&mut self, room: RoomId, seq: u64, file: FileRef) {
        if !self.mailboxes.enabled() || file.size > chunk_slices::MAX_FILE {
            return;
        }
        let files = self.mailboxes.files.entry(room).or_default();
        if files.len() == FILES_PER_ROOM {
            files.pop_front();
        }
        files.push_back((seq, file));
    }

    /// Puts the chunks of the files we shared in `room` at `seqs` (those a mailbox carries
    /// the messages of), unless put within [`PUT_AGAIN`].
    pub(super) fn put_files(&mut self, room: RoomId, seqs: RangeInclusive<u64>) {
        let due: Vec<FileRef> = (self.mailboxes.files.get(&room).into_iter().flatten())
            .filter(|(seq, _)| seqs.contains(seq))
            .map(|(_, file)| file.clone())
            .filter(|file| {
                (self.mailboxes.put_files.get(&file.list))
                    .is_none_or(|at| at.elapsed() >= PUT_AGAIN)
            })
            .collect();
        for file in due {
            let chunks = match self.sealed_chunks(&file) {
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
                    let record = kad::Record::new(chunk_slices::key(name, i as u8).to_vec(), value);
                    match (self.swarm.behaviour_mut().kad).put_record(record, kad::Quorum::One) {
                        Ok(id) => self.mailboxes.put(id, Put::File(room, file.list)),
                        Err(e) => return tracing::warn!(error = %e, "cannot put a file's chunk"),
                    }
                    records += 1;
                }
            }
            self.mailboxes.put_files.insert(file.list, Instant::now());
            tracing::debug!(file = %file.id(), records, "file put in the DHT with the mailbox");
        }
    }

    /// The file's sealed list and chunks, as the journal holds them (`None`: not whole).
    fn sealed_chunks(
        &self,
        file: &FileRef,
    ) -> Result<Option<Vec<Sealed>>, crate::journal::JournalError> {
        let journal = self.core.journal();
        let Some(list) = journal.chunk(&file.list)? else {
            return Ok(None);
        };
        let Ok(names) = files::open_list(file, &list) else {
            return Ok(None);
        };
        let mut chunks = vec![(file.list, list)];
        for name in names {
            let Some(sealed) = journal.chunk(&name)? else {
                return Ok(None);
            };
            chunks.push((name, sealed));
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
