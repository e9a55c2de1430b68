//! Files on the event loop: sharing (the chunks are sealed and stored off the loop, the
//! message is composed on it), serving chunks to members, and fetching a file chunk by
//! chunk from the room's connected members (see [`crate::files`]).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::kad;
use libp2p::request_response::OutboundRequestId;
use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::NodeConfig;
use super::{Command, NodeError, NodeHandle, Reply, Service};
use crate::files::{self, Answer, ChunkId, Fetch, FileRef};
use crate::journal::Journal;
use crate::room::RoomId;
use crate::sync::{SyncRequest, SyncResponse};

/// Chunk requests in flight per fetch (each up to 256 KiB).
const WINDOW: usize = 8;
/// Sealed chunks stored per transaction while a file is shared.
const SHARE_BATCH: usize = 32;
/// A stuck fetch searches the DHT for the file's holders at most this often.
const HOLDER_LOOKUP_EVERY: Duration = Duration::from_secs(10);
/// A peer we served a chunk to keeps its connection this long (it may want the next one),
/// even past the connection budget.
const SERVING_GRACE: Duration = Duration::from_secs(30);

/// A fetched file, as reported to the client.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Fetched {
    pub id: String,
    pub name: String,
    pub size: u64,
    /// Where it was written.
    pub path: String,
    /// Chunks fetched (0 when this node held the whole file already), and of those the
    /// ones put together from the DHT (a small file whose author left it there, see
    /// [`crate::chunk_slices`]).
    pub chunks_fetched: u64,
    #[serde(default)]
    pub chunks_from_dht: u64,
}

/// A file whose copy this node dropped (`cryptchat forget`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Forgotten {
    pub id: String,
    pub name: String,
    /// Bytes of sealed chunks removed from the journal (0 if none of the file was held).
    pub freed: u64,
}

/// A fetch under way, as `status` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FetchProgress {
    pub id: String,
    pub name: String,
    pub size: u64,
    /// Chunks of the file held so far (0 until its chunk list arrives), of `chunks`.
    pub held: u64,
    pub chunks: u64,
    /// Chunk requests waiting for an answer.
    pub in_flight: usize,
    /// Clients waiting for it.
    pub waiting: usize,
}

/// Where a fetched file goes: the path the client chose, or the file's own name inside a
/// directory. An existing file is never overwritten.
#[derive(Clone, Debug)]
pub enum Target {
    Path(PathBuf),
    InDir(PathBuf),
}

impl Target {
    fn resolve(&self, name: &str) -> PathBuf {
        match self {
            Target::Path(p) => p.clone(),
            Target::InDir(d) => d.join(name),
        }
    }
}

/// A client waiting for a fetch: for the file written to a target, or for a reader of the
/// journal's chunks (a download through the API, which writes nothing); or the node itself,
/// fetching a file unasked (see [`AutoFetch`]), which only keeps the chunks.
pub(super) enum Waiter {
    Write(Target, Reply<Fetched>),
    Read(Reply<FileReader>),
    Auto,
}

impl Waiter {
    /// Tells the client why (if it still waits).
    pub(super) fn fail(self, error: NodeError) {
        match self {
            Waiter::Write(_, reply) => drop(reply.send(Err(error))),
            Waiter::Read(reply) => drop(reply.send(Err(error))),
            Waiter::Auto => tracing::debug!(error = %error, "a file fetched unasked failed"),
        }
    }
}

/// Fetches started by the node at once, lookups in the history included.
const AUTO_FETCH_JOBS: usize = 4;
/// Files waiting to be fetched unasked; past that, new ones are not (a member catching up
/// on a long history could otherwise queue thousands).
const AUTO_FETCH_QUEUE: usize = 1024;
/// File ids remembered as offered already (every message may be shown twice: when it
/// arrives, and when it is stored).
const AUTO_FETCH_SEEN: usize = 65_536;
/// Failed fetches kept for another try when a member appears; past that, the oldest go.
const AUTO_FETCH_FAILED: usize = 256;

/// Files other members share, no bigger than [`NodeConfig::auto_fetch`], fetched without
/// being asked: they are at hand when the user opens them, and the room keeps them while
/// their author is offline (each fetcher announces itself as a holder). A few at a time, in
/// the order they arrived. One that fails (no holder online) is tried again when a member
/// of its room appears (it may be the holder, back), as long as this node runs; at start,
/// the rooms' histories are read for what is left to fetch, so a restart loses nothing
/// but the order. Files the user forgot are left alone, and none is fetched past
/// [`NodeConfig::auto_fetch_total`].
pub(super) struct AutoFetch {
    max_size: u64,
    total: u64,
    /// Oldest first.
    due: std::collections::VecDeque<Due>,
    seen: std::collections::HashSet<String>,
    /// Lookups in the history under way for files taken from `due`.
    looking: usize,
    /// Fetches that failed, oldest first.
    failed: std::collections::VecDeque<(RoomId, FileRef)>,
    /// The rooms' histories are to be read for files left to fetch (see
    /// [`Service::scan_for_files`]).
    scan_due: bool,
    scanning: bool,
    /// A file was left for want of room under `total`: freeing some calls for a scan.
    held_back: bool,
}

/// A file waiting to be fetched unasked: known by its message only (to be looked up in the
/// room's history), or already looked up (a fetch that failed before).
enum Due {
    Find { room: String, id: String },
    Known(RoomId, FileRef),
}

impl AutoFetch {
    pub(super) fn new(max_size: u64, total: u64) -> Self {
        AutoFetch {
            max_size,
            total,
            due: Default::default(),
            seen: Default::default(),
            looking: 0,
            failed: Default::default(),
            scan_due: max_size > 0,
            scanning: false,
            held_back: false,
        }
    }

    /// Whether `file` is queued already.
    fn queued(&self, file: &FileRef) -> bool {
        let id = file.id();
        self.due.iter().any(|d| match d {
            Due::Find { id: queued, .. } => *queued == id,
            Due::Known(_, queued) => queued.list == file.list,
        })
    }

    /// A member of `room` appeared: the files whose fetch failed there go back in line.
    fn retry(&mut self, room: RoomId) {
        let (again, kept): (std::collections::VecDeque<_>, _) = std::mem::take(&mut self.failed)
            .into_iter()
            .partition(|(r, _)| *r == room);
        self.failed = kept;
        for (room, file) in again {
            if self.due.len() < AUTO_FETCH_QUEUE {
                self.due.push_back(Due::Known(room, file));
            }
        }
    }

    /// A message shown to the user: queued if it shares a file small enough, not ours.
    pub(super) fn offer(&mut self, m: &crate::core::MessageView) {
        let Some(file) = &m.file else {
            return;
        };
        if self.max_size == 0
            || m.mine
            || file.size > self.max_size
            || self.due.len() >= AUTO_FETCH_QUEUE
        {
            return;
        }
        if self.seen.len() >= AUTO_FETCH_SEEN {
            self.seen.clear();
        }
        if self.seen.insert(file.id.clone()) {
            self.due.push_back(Due::Find {
                room: m.room.clone(),
                id: file.id.clone(),
            });
        }
    }

    /// A lookup started by [`Service::start_auto_fetches`] has its answer.
    pub(super) fn looked_up(&mut self) {
        self.looking = self.looking.saturating_sub(1);
    }
}

struct Job {
    room: RoomId,
    fetch: Fetch<PeerId>,
    waiting: Vec<Waiter>,
    progress_at: Instant,
    /// When we last searched the DHT for the file's holders.
    looked_up_at: Option<Instant>,
    /// Chunks put together from the DHT.
    from_dht: u64,
}

/// The fetches under way, by file id, and their chunk requests; the files this node
/// announces as their holder.
pub(super) struct Fetches {
    jobs: HashMap<ChunkId, Job>,
    requests: HashMap<OutboundRequestId, (ChunkId, ChunkId, PeerId)>,
    /// DHT searches for holders under way: provider key -> file.
    lookups: HashMap<kad::RecordKey, ChunkId>,
    /// Peers we served a chunk to, and when we last did.
    serving: HashMap<PeerId, Instant>,
    /// Provider keys of files we hold whole, waiting for a free DHT query slot.
    announce_due: BTreeSet<[u8; 32]>,
    /// A fetch that no reachable member can serve fails after this long without progress.
    give_up: Duration,
    /// Files being written out or read by a client (alive while the `Weak` is): not to be
    /// forgotten under them.
    opened: Vec<(ChunkId, std::sync::Weak<()>)>,
}

impl Fetches {
    pub(super) fn new(give_up: Duration) -> Self {
        Fetches {
            jobs: HashMap::new(),
            requests: HashMap::new(),
            lookups: HashMap::new(),
            serving: HashMap::new(),
            announce_due: BTreeSet::new(),
            give_up,
            opened: Vec::new(),
        }
    }

    /// Whether `file` is being fetched, or written out or read by a client.
    fn busy_with(&mut self, file: impl Fn(&ChunkId) -> bool) -> Option<&'static str> {
        self.opened.retain(|(_, open)| open.strong_count() > 0);
        if self.jobs.keys().any(&file) {
            Some("fetched")
        } else if self.opened.iter().any(|(f, _)| file(f)) {
            Some("downloaded")
        } else {
            None
        }
    }

    pub(super) fn owns(&self, id: &OutboundRequestId) -> bool {
        self.requests.contains_key(id)
    }

    /// Whether the connection to `peer` carries a transfer: chunks we asked it for, or
    /// chunks we served it lately. Such a connection is kept past the budget, so a holder
    /// found through the DHT is not cut off mid-file.
    pub(super) fn transfers_with(&self, peer: &PeerId) -> bool {
        self.requests.values().any(|(_, _, p)| p == peer)
            || self
                .serving
                .get(peer)
                .is_some_and(|at| at.elapsed() < SERVING_GRACE)
    }

    /// The fetches under way, for `status`.
    pub(super) fn progress(&self) -> Vec<FetchProgress> {
        let mut out: Vec<FetchProgress> = self
            .jobs
            .iter()
            .map(|(list, job)| {
                let (held, chunks) = job.fetch.progress();
                let file = job.fetch.file();
                FetchProgress {
                    id: file.id(),
                    name: file.name.clone(),
                    size: file.size,
                    held,
                    chunks,
                    in_flight: self.requests.values().filter(|(f, _, _)| f == list).count(),
                    waiting: job.waiting.len(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// The file a DHT search for holders was about, if it was one.
    pub(super) fn lookup_of(&self, key: &kad::RecordKey) -> Option<ChunkId> {
        self.lookups.get(key).copied()
    }

    /// Queues the announcement of files this node holds whole.
    pub(super) fn announce_later(&mut self, keys: impl IntoIterator<Item = [u8; 32]>) {
        self.announce_due.extend(keys);
    }
}

/// A file shared in a room, as found there: enough to read it again without looking it up
/// in the room's history (see [`NodeHandle::read_known`]).
#[derive(Clone, Debug)]
pub struct KnownFile {
    pub(super) room: RoomId,
    pub(super) file: FileRef,
}

/// A file held whole in the journal, read a chunk at a time (see [`NodeHandle::read_file`]).
pub struct FileReader {
    pub name: String,
    pub size: u64,
    room: RoomId,
    file: FileRef,
    list: Vec<ChunkId>,
    journal: Arc<Journal>,
    /// Keeps the file from being forgotten while it is read.
    _open: Arc<()>,
}

impl FileReader {
    /// The file, to be read again later without a lookup.
    pub fn known(&self) -> KnownFile {
        KnownFile {
            room: self.room,
            file: self.file.clone(),
        }
    }

    /// Chunks to read, in order.
    pub fn chunks(&self) -> usize {
        self.list.len()
    }

    /// The plaintext of chunk `index` (blocking: it reads the journal).
    pub fn chunk(&self, index: usize) -> Result<Vec<u8>, NodeError> {
        let id = self
            .list
            .get(index)
            .ok_or_else(|| NodeError::FileInput(format!("no chunk {index} in the file")))?;
        let sealed = self.journal.chunk(id)?.ok_or_else(|| {
            NodeError::FileUnavailable(format!("chunk {index} of the file is no longer held"))
        })?;
        let index =
            u32::try_from(index).map_err(|_| NodeError::FileInput("too many chunks".into()))?;
        files::open_chunk(&self.file, index, &sealed)
            .map_err(|e| NodeError::FileInput(e.to_string()))
    }
}

impl NodeHandle {
    /// Drops this node's copy of a file shared in `room` (by id, or a prefix of at least 8
    /// hex digits): its chunks, and its announcement as a holder. The message stays, and
    /// the file can be fetched again from members who hold it. Refused while the file is
    /// being fetched or downloaded.
    pub async fn forget_file(&self, room: &str, id: &str) -> Result<Forgotten, NodeError> {
        let (room, id) = (room.to_string(), id.to_string());
        self.ask(|r| Command::Forget(room, id, r)).await
    }

    /// Gathers a file shared in `room` into the journal (fetching what is missing, as
    /// [`NodeHandle::fetch_file`] does) and opens it for reading, so a client can stream it
    /// without the node writing it anywhere.
    pub async fn read_file(&self, room: &str, id: &str) -> Result<FileReader, NodeError> {
        let (room, id) = (room.to_string(), id.to_string());
        self.ask(|r| Command::Fetch(room, id, Waiter::Read(r)))
            .await
    }

    /// [`NodeHandle::read_file`] for a file found before, without looking it up again (a
    /// download ticket's redemption). Fails if the room has been left since.
    pub async fn read_known(&self, known: KnownFile) -> Result<FileReader, NodeError> {
        self.ask(|r| Command::FetchKnown(known, Waiter::Read(r)))
            .await
    }

    /// A fresh directory for one upload through the API, inside the data dir (removed by
    /// the caller once the file is shared, and at the next start if it was not).
    pub fn upload_dir(&self) -> Result<PathBuf, NodeError> {
        let mut tag = [0u8; 8];
        rand::fill(&mut tag);
        let dir = self.uploads.join(hex::encode(tag));
        std::fs::create_dir_all(&dir).map_err(|e| NodeError::DataDir {
            path: dir.display().to_string(),
            why: e.to_string(),
        })?;
        Ok(dir)
    }
}

/// Seals the file at `path` and stores its chunks (run on a blocking thread).
pub(super) fn seal_and_store(journal: &Journal, path: &Path) -> Result<FileRef, NodeError> {
    let input = |why: String| NodeError::FileInput(format!("{}: {why}", path.display()));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| input("not a file name cryptchat can carry".into()))?
        .to_string();
    let file = std::fs::File::open(path).map_err(|e| input(e.to_string()))?;
    let meta = file.metadata().map_err(|e| input(e.to_string()))?;
    if !meta.is_file() {
        return Err(input("not a regular file".into()));
    }
    NodeError::unless_room(journal.path(), &name, crate::disk::stored_size(meta.len()))?;
    let mut batch: Vec<(ChunkId, Vec<u8>)> = Vec::with_capacity(SHARE_BATCH);
    let mut store_err = None;
    let sealed = files::seal_file(
        &name,
        meta.len(),
        std::io::BufReader::new(file),
        |id, bytes| {
            batch.push((id, bytes));
            if batch.len() >= SHARE_BATCH {
                journal.put_chunks(&batch, false).map_err(|e| {
                    let msg = e.to_string();
                    store_err = Some(e);
                    msg
                })?;
                batch.clear();
            }
            Ok(())
        },
    );
    if let Some(e) = store_err {
        return Err(e.into());
    }
    let file = sealed.map_err(|e| input(e.to_string()))?;
    journal.put_provided(&file.provider_key(), &file.list, false)?;
    // The last batch holds the list: durable, and with it everything before.
    journal.put_chunks(&batch, true)?;
    Ok(file)
}

/// Writes a fetched file from the journal's chunks, through a temporary file renamed into
/// place, so a reader never sees half a file (run on a blocking thread).
fn assemble(
    journal: &Journal,
    file: &FileRef,
    list: &[ChunkId],
    target: &Target,
    (fetched, from_dht): (u64, u64),
) -> Result<Fetched, NodeError> {
    let path = target.resolve(&file.name);
    let fail = |why: String| NodeError::FileInput(format!("{}: {why}", path.display()));
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if path.exists() {
        return Err(fail("exists already; choose another path with -o".into()));
    }
    let tmp = dir.join(format!(".{}.{}.part", file.name, &file.id()[..16]));
    let out = std::fs::File::create(&tmp).map_err(|e| fail(e.to_string()))?;
    let mut writer = std::io::BufWriter::new(out);
    let written = files::open_file(
        file,
        list,
        |id| journal.chunk(id).ok().flatten(),
        &mut writer,
    )
    .map_err(|e| fail(e.to_string()))
    .and_then(|()| {
        let out = writer.into_inner().map_err(|e| fail(e.to_string()))?;
        out.sync_all().map_err(|e| fail(e.to_string()))
    })
    .and_then(|()| {
        // No silent overwrite, even of a file that appeared while we wrote.
        std::fs::hard_link(&tmp, &path).map_err(|e| fail(e.to_string()))
    });
    let _ = std::fs::remove_file(&tmp);
    written?;
    Ok(Fetched {
        id: file.id(),
        name: file.name.clone(),
        size: file.size,
        path: path.display().to_string(),
        chunks_fetched: fetched,
        chunks_from_dht: from_dht,
    })
}

impl Service {
    /// Looks the file up in the room's history on a blocking thread (a long history would
    /// stall the swarm), then fetches it.
    pub(super) fn find_then_fetch(&mut self, room: &str, id: &str, waiter: Waiter) {
        let reader = match self.core.reader(room) {
            Ok(reader) => reader,
            Err(e) => {
                if matches!(waiter, Waiter::Auto) {
                    self.auto_fetch.looked_up();
                }
                return waiter.fail(e.into());
            }
        };
        let id = id.to_string();
        self.read_off_loop(reader, move |reader| {
            let room = reader.room_id();
            let found = reader.find_file(&id);
            super::reconcile::Internal::FileFound {
                room,
                found,
                waiter,
            }
        });
    }

    /// Drops our copy of a file, on a blocking thread (a durable commit, after a look
    /// through the room's history); [`Service::forgot`] finishes on the loop.
    pub(super) fn forget(&mut self, room: &str, id: &str, reply: Reply<Forgotten>) {
        let id = id.to_ascii_lowercase();
        let named = |file: &ChunkId| id.len() >= 8 && hex::encode(file).starts_with(&id);
        if let Some(what) = self.fetches.busy_with(named) {
            let why = format!("file {id} is being {what}: forget it once that has ended");
            return drop(reply.send(Err(NodeError::FileInput(why))));
        }
        let reader = match self.core.reader(room) {
            Ok(reader) => reader,
            Err(e) => return drop(reply.send(Err(e.into()))),
        };
        self.read_off_loop(reader, move |reader| super::reconcile::Internal::Forgot {
            result: reader.forget_file(&id),
            reply,
        });
    }

    /// A message was deleted (`m` is the deletion): if it shared a file, our copy goes, as
    /// with `forget` (see [`crate::core::RoomReader::drop_withdrawn_file`]).
    pub(super) fn drop_withdrawn_file(&mut self, m: &crate::core::MessageView) {
        let (Some(target), Ok(reader)) = (m.revises, self.core.reader(&m.room)) else {
            return;
        };
        let mut author = [0u8; 32];
        if hex::decode_to_slice(&m.author_id, &mut author).is_err() {
            return;
        }
        let author = crate::identity::UserId(author);
        self.read_off_loop(reader, move |reader| {
            super::reconcile::Internal::Withdrawn(reader.drop_withdrawn_file(author, target))
        });
    }

    /// A deleted message's file is dropped (if it was one): stop announcing it.
    pub(super) fn withdrawn(
        &mut self,
        result: Result<Option<(FileRef, u64)>, crate::core::CoreError>,
    ) {
        match result {
            Ok(Some((file, freed))) => {
                self.stop_holding(&file);
                tracing::info!(file = %file.id(), freed, "dropped a file its author withdrew");
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot drop a withdrawn file"),
        }
    }

    /// Our copy of `file` is gone: no more announcements of it, and room for files held
    /// back from fetching unasked.
    fn stop_holding(&mut self, file: &FileRef) {
        let key = file.provider_key();
        self.fetches.announce_due.remove(&key);
        self.swarm
            .behaviour_mut()
            .kad
            .stop_providing(&kad::RecordKey::new(&key));
        if std::mem::take(&mut self.auto_fetch.held_back) {
            self.auto_fetch.scan_due = true;
        }
    }

    /// Our copy of a file is gone: stop announcing it.
    pub(super) fn forgot(
        &mut self,
        result: Result<(FileRef, u64), crate::core::CoreError>,
        reply: Reply<Forgotten>,
    ) {
        let forgotten = result.map(|(file, freed)| {
            self.stop_holding(&file);
            tracing::info!(file = %file.id(), freed, "forgot a file");
            Forgotten {
                id: file.id(),
                name: file.name,
                freed,
            }
        });
        let _ = reply.send(forgotten.map_err(Into::into));
    }

    /// Reads every joined room's last [`AUTO_FETCH_QUEUE`] file messages, on a blocking
    /// thread, for files to fetch unasked that are neither held nor forgotten (see
    /// [`crate::core::RoomReader::files_to_fetch`]); [`Service::found_files_to_fetch`]
    /// queues them.
    fn scan_for_files(&mut self) {
        self.auto_fetch.scan_due = false;
        self.auto_fetch.scanning = true;
        let readers: Vec<_> = self
            .core
            .rooms()
            .filter_map(|r| self.core.reader(&r.name).ok())
            .collect();
        let max_size = self.auto_fetch.max_size;
        self.off_loop(move || {
            let mut files = Vec::new();
            for reader in readers {
                match reader.files_to_fetch(AUTO_FETCH_QUEUE, max_size) {
                    Ok(found) => files.extend(found.into_iter().map(|f| (reader.room_id(), f))),
                    Err(e) => tracing::warn!(error = %e, "could not look for files to fetch"),
                }
            }
            super::reconcile::Internal::FilesToFetch(files)
        });
    }

    /// Files left to fetch unasked, found by [`Service::scan_for_files`], go in line.
    pub(super) fn found_files_to_fetch(&mut self, files: Vec<(RoomId, FileRef)>) {
        self.auto_fetch.scanning = false;
        if !files.is_empty() {
            tracing::info!(files = files.len(), "files left to fetch unasked");
        }
        for (room, file) in files {
            let auto = &mut self.auto_fetch;
            if auto.due.len() >= AUTO_FETCH_QUEUE {
                break;
            }
            if !auto.queued(&file) && !self.fetches.jobs.contains_key(&file.list) {
                auto.seen.insert(file.id());
                auto.due.push_back(Due::Known(room, file));
            }
        }
        self.start_auto_fetches();
    }

    /// Whether fetching `file` unasked keeps the node's files within
    /// [`NodeConfig::auto_fetch_total`], fetches under way counted in full.
    pub(super) fn room_for(&mut self, file: &FileRef) -> bool {
        if self.fetches.jobs.contains_key(&file.list) {
            return true;
        }
        let held = match self.core.journal().chunk_bytes() {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell how much room files take up");
                return false;
            }
        };
        let coming: u64 = self
            .fetches
            .jobs
            .values()
            .map(|j| j.fetch.file().size)
            .sum();
        let fits = held.saturating_add(coming).saturating_add(file.size) <= self.auto_fetch.total;
        if !fits {
            tracing::debug!(file = %file.id(), held, "not fetched unasked: no room left");
            self.auto_fetch.held_back = true;
        }
        fits
    }

    /// Starts fetching queued files unasked, as far as [`AUTO_FETCH_JOBS`] allows (fetches
    /// asked for count too), and reads the histories for files left to fetch when due.
    /// Runs on the sync tick, so a file message shown before it is stored (gossip shows
    /// first) is in the journal by the time it is looked up.
    pub(super) fn start_auto_fetches(&mut self) {
        if self.auto_fetch.scan_due && !self.auto_fetch.scanning {
            self.scan_for_files();
        }
        while self.fetches.jobs.len() + self.auto_fetch.looking < AUTO_FETCH_JOBS {
            match self.auto_fetch.due.pop_front() {
                None => return,
                Some(Due::Find { room, id }) => {
                    if self.core.room_by_name(&room).is_err() {
                        continue;
                    }
                    tracing::debug!(file = %id, "fetching a file unasked");
                    self.auto_fetch.looking += 1;
                    self.find_then_fetch(&room, &id, Waiter::Auto);
                }
                Some(Due::Known(room, file)) => {
                    tracing::debug!(file = %file.id(), "fetching a file unasked, found before");
                    self.fetch_found(room, file, Waiter::Auto);
                }
            }
        }
    }

    /// Fetches a file found earlier in `room`'s history (just now, off the loop, or when a
    /// download ticket was issued), unless the room has been left since, or the fetch is
    /// unasked and the files' allowance has no room for it.
    pub(super) fn fetch_found(&mut self, room: RoomId, file: FileRef, waiter: Waiter) {
        if self.core.room(&room).is_none() {
            return waiter.fail(crate::core::CoreError::UnknownRoom(room.to_hex()).into());
        }
        if matches!(waiter, Waiter::Auto) && !self.room_for(&file) {
            return;
        }
        self.fetch(room, file, waiter);
    }

    /// Starts fetching a file (or joins the fetch of it already under way).
    pub(super) fn fetch(&mut self, room_id: RoomId, file: FileRef, waiter: Waiter) {
        // Say so before fetching, not after: nothing is written over an existing file.
        if let Waiter::Write(target, _) = &waiter {
            let path = target.resolve(&file.name);
            if path.exists() {
                let why = format!(
                    "{}: exists already; choose another path with -o",
                    path.display()
                );
                return waiter.fail(NodeError::FileInput(why));
            }
        }
        if let Some(job) = self.fetches.jobs.get_mut(&file.list) {
            job.waiting.push(waiter);
            return;
        }
        let journal = self.core.shared_journal();
        let list = match journal.chunk(&file.list) {
            Ok(list) => list,
            Err(e) => return waiter.fail(e.into()),
        };
        let fetch = Fetch::new(file.clone(), list.as_deref(), |c| {
            journal.has_chunk(c).unwrap_or(false)
        });
        let fetch = match fetch {
            Ok(f) => f,
            Err(e) => return waiter.fail(NodeError::FileInput(e.to_string())),
        };
        // The chunks missing go in the journal first. (The copy written to the path asked
        // for may be on a disk of its own: that write fails by itself, and the fetch with it.)
        let missing = match fetch.list() {
            Some(_) => (fetch.missing() as u64).saturating_mul(files::CHUNK_SIZE as u64),
            None => file.size,
        };
        if !fetch.is_done()
            && let Err(e) = NodeError::unless_room(
                journal.path(),
                &file.name,
                crate::disk::stored_size(missing.min(file.size)),
            )
        {
            tracing::info!(file = %file.id(), error = %e, "not fetched");
            return waiter.fail(e);
        }
        tracing::info!(file = %file.id(), chunks = file.chunks(), "fetching a file");
        self.fetches.jobs.insert(
            file.list,
            Job {
                room: room_id,
                fetch,
                waiting: vec![waiter],
                progress_at: Instant::now(),
                looked_up_at: None,
                from_dht: 0,
            },
        );
        self.pump(file.list);
    }

    /// Pumps every fetch of `room` (a member appeared: it may hold what we lack), and puts
    /// the room's failed automatic fetches back in line.
    pub(super) fn pump_room(&mut self, room: RoomId) {
        self.auto_fetch.retry(room);
        let files: Vec<ChunkId> = self
            .fetches
            .jobs
            .iter()
            .filter(|(_, job)| job.room == room)
            .map(|(f, _)| *f)
            .collect();
        for file in files {
            self.pump(file);
        }
    }

    /// Sends the chunk requests a fetch can make now; finishes it if nothing is missing.
    fn pump(&mut self, file: ChunkId) {
        let Some(job) = self.fetches.jobs.get(&file) else {
            return;
        };
        if job.fetch.is_done() {
            return self.finish_fetch(file);
        }
        let room = job.room;
        let peers = self.room_peer_ids(room);
        let Some(job) = self.fetches.jobs.get_mut(&file) else {
            return;
        };
        let requests = job.fetch.next_requests(&peers, WINDOW);
        let stuck = job.fetch.stuck(&peers);
        for (peer, chunk) in requests {
            let req = self.swarm.behaviour_mut().sync.send_request(
                &peer,
                SyncRequest::Chunk {
                    room: room.0,
                    id: chunk,
                },
            );
            self.fetches.requests.insert(req, (file, chunk, peer));
        }
        if stuck {
            self.find_holders(file);
        }
    }

    /// Searches the DHT for holders of a file no connected member can serve (at most every
    /// [`HOLDER_LOOKUP_EVERY`]); those found are dialled, and asked once they show up as
    /// members of the room (see `on_file_holders`).
    fn find_holders(&mut self, file: ChunkId) {
        if !self.kad_ready || self.dht_busy() {
            return;
        }
        let Some(job) = self.fetches.jobs.get_mut(&file) else {
            return;
        };
        if job
            .looked_up_at
            .is_some_and(|at| at.elapsed() < HOLDER_LOOKUP_EVERY)
        {
            return;
        }
        job.looked_up_at = Some(Instant::now());
        let key = kad::RecordKey::new(&job.fetch.file().provider_key());
        // A small file may also be in the DHT itself, put there with its author's mailbox.
        let wanted: Vec<ChunkId> = job.fetch.unasked().copied().collect();
        tracing::debug!(file = %hex::encode(file), "looking for the file's holders in the DHT");
        self.activity.file_lookups += 1;
        self.fetches.lookups.insert(key.clone(), file);
        self.swarm.behaviour_mut().kad.get_providers(key);
        self.find_slices(file, wanted);
    }

    /// Holders of a file we fetch, as the DHT names them: dial those we are not connected to.
    pub(super) fn on_file_holders(
        &mut self,
        file: ChunkId,
        holders: impl IntoIterator<Item = PeerId>,
    ) {
        if !self.fetches.jobs.contains_key(&file) {
            return;
        }
        let me = *self.swarm.local_peer_id();
        for peer in holders.into_iter().filter(|p| *p != me) {
            self.activity.file_holders_found += 1;
            if !self.swarm.is_connected(&peer) {
                tracing::debug!(%peer, file = %hex::encode(file), "dialling a holder of the file");
                self.dial_peer(peer, vec![]);
            }
        }
    }

    /// Announces `key` (a file we now hold whole) in the DHT, now or when a query slot
    /// frees up.
    pub(super) fn provide_file(&mut self, key: [u8; 32]) {
        self.fetches.announce_later([key]);
        self.announce_files();
    }

    /// Sends the file announcements that wait, as far as DHT query slots allow.
    pub(super) fn announce_files(&mut self) {
        while self.kad_ready && !self.dht_busy() {
            let Some(key) = self.fetches.announce_due.pop_first() else {
                return;
            };
            self.activity.file_announcements += 1;
            if let Err(e) = self
                .swarm
                .behaviour_mut()
                .kad
                .start_providing(kad::RecordKey::new(&key))
            {
                tracing::warn!(error = %e, "could not announce a file we hold");
            }
        }
    }

    /// Retries fetches whose peers all lacked something (members come and go, and fetch
    /// files too), and fails those that made no progress for [`NodeConfig::fetch_timeout`].
    pub(super) fn tick_fetches(&mut self) {
        let files: Vec<ChunkId> = self.fetches.jobs.keys().copied().collect();
        for file in files {
            let Some(job) = self.fetches.jobs.get(&file) else {
                continue;
            };
            let peers = self.room_peer_ids(job.room);
            if !job.fetch.stuck(&peers) {
                continue;
            }
            if job.progress_at.elapsed() >= self.fetches.give_up {
                let why = format!(
                    "no member of the room that could be reached holds the rest of file {} ({} \
                     of its chunks missing): try again when its author, or a member who fetched it, \
                     is online",
                    &hex::encode(file)[..16],
                    job.fetch.missing()
                );
                tracing::info!(file = %hex::encode(file), "fetch gave up");
                self.fail_fetch(file, || NodeError::FileUnavailable(why.clone()));
                continue;
            }
            if let Some(job) = self.fetches.jobs.get_mut(&file) {
                job.fetch.retry_all();
            }
            self.pump(file);
        }
    }

    /// A peer's answer to one of our chunk requests (`None`: it failed).
    pub(super) fn on_chunk_answer(&mut self, req: OutboundRequestId, resp: Option<SyncResponse>) {
        let Some((file, chunk, peer)) = self.fetches.requests.remove(&req) else {
            return;
        };
        let Some(job) = self.fetches.jobs.get_mut(&file) else {
            return;
        };
        let answer = match resp {
            Some(SyncResponse::Chunk(bytes)) => {
                job.fetch
                    .on_answer(&peer, chunk, bytes.map(serde_bytes::ByteBuf::into_vec))
            }
            Some(SyncResponse::Denied(why)) => {
                tracing::debug!(%peer, %why, "chunk request denied");
                job.fetch.on_failure(&peer, chunk);
                Ok(Answer::Nothing)
            }
            Some(_) => {
                job.fetch.on_failure(&peer, chunk);
                self.penalise(peer, "answered a chunk request with something else");
                return self.pump(file);
            }
            None => {
                job.fetch.on_failure(&peer, chunk);
                Ok(Answer::Nothing)
            }
        };
        self.take_answer(file, answer, Some(peer));
    }

    /// A chunk of `file` put together from the DHT (see `Service::find_slices`).
    pub(super) fn chunk_from_dht(&mut self, file: ChunkId, chunk: ChunkId, sealed: Vec<u8>) {
        let me = *self.swarm.local_peer_id();
        let Some(job) = self.fetches.jobs.get_mut(&file) else {
            return;
        };
        let answer = job.fetch.on_answer(&me, chunk, Some(sealed));
        let kept = matches!(answer, Ok(Answer::Keep(..)));
        if kept {
            job.from_dht += 1;
        }
        self.take_answer(file, answer, None);
        // Still stuck (no member serves it): the next chunks from the DHT too, at once.
        let Some(job) = self.fetches.jobs.get(&file).filter(|_| kept) else {
            return;
        };
        tracing::debug!(file = %hex::encode(file), "chunk fetched from the DHT");
        if job.fetch.stuck(&self.room_peer_ids(job.room)) {
            let wanted: Vec<ChunkId> = job.fetch.unasked().copied().collect();
            self.find_slices(file, wanted);
        }
    }

    /// Stores a chunk that checked out (from `peer`, or from the DHT), or deals with one
    /// that did not; then asks for more.
    fn take_answer(
        &mut self,
        file: ChunkId,
        answer: Result<Answer, files::FileError>,
        peer: Option<PeerId>,
    ) {
        match answer {
            Ok(Answer::Keep(id, bytes)) => {
                if let Some(job) = self.fetches.jobs.get_mut(&file) {
                    job.progress_at = Instant::now();
                }
                if let Err(e) = self.core.journal().put_chunks(&[(id, bytes)], false) {
                    tracing::error!(error = %e, "cannot store a fetched chunk");
                    let path = self.core.journal().path().display().to_string();
                    let why = e.to_string();
                    return self.fail_fetch(file, || NodeError::DataDir {
                        path: path.clone(),
                        why: why.clone(),
                    });
                }
            }
            Ok(Answer::Nothing) => {}
            Err(files::FileError::WrongChunk) => match peer {
                Some(peer) => self.penalise(peer, "sent a chunk that does not match its name"),
                // Anyone can put records under a slice's key: looked for again later.
                None => tracing::debug!("a chunk from the DHT does not match its name"),
            },
            Err(e) => {
                // The list decrypts to nonsense: its author shared a broken file.
                return self.fail_fetch(file, || NodeError::FileInput(e.to_string()));
            }
        }
        self.pump(file);
    }

    /// Ends a fetch with an error for every client waiting for it.
    fn fail_fetch(&mut self, file: ChunkId, error: impl Fn() -> NodeError) {
        self.fetches.requests.retain(|_, (f, _, _)| *f != file);
        self.fetches.lookups.retain(|_, f| *f != file);
        if let Some(job) = self.fetches.jobs.remove(&file) {
            if job.waiting.iter().any(|w| matches!(w, Waiter::Auto)) {
                let failed = &mut self.auto_fetch.failed;
                if failed.len() >= AUTO_FETCH_FAILED {
                    failed.pop_front();
                }
                failed.push_back((job.room, job.fetch.file().clone()));
            }
            for waiter in job.waiting {
                waiter.fail(error());
            }
        }
    }

    /// Every chunk is held: the file is written, or opened, for each client waiting for it.
    fn finish_fetch(&mut self, file: ChunkId) {
        let Some(job) = self.fetches.jobs.remove(&file) else {
            return;
        };
        self.fetches.lookups.retain(|_, f| *f != file);
        let list = job
            .fetch
            .list()
            .map(<[ChunkId]>::to_vec)
            .unwrap_or_default();
        let info = job.fetch.file().clone();
        let fetched = job.fetch.received();
        let job_from_dht = job.from_dht;
        let journal: Arc<Journal> = self.core.shared_journal();
        tracing::info!(file = %info.id(), fetched, "file fetched");
        // We hold it whole now (and did not before): others may fetch it from us.
        let key = info.provider_key();
        let newly_held = fetched > 0;
        if newly_held {
            self.provide_file(key);
        }
        // Held until the file is written out, and by each reader: `forget` waits for both.
        let open = Arc::new(());
        self.fetches.opened.push((file, Arc::downgrade(&open)));
        tokio::task::spawn_blocking(move || {
            // Recorded before the clients hear the file is here, so what they read next
            // (`files`: held) says so; made durable after they have it.
            let recorded = newly_held
                && journal
                    .put_provided(&key, &info.list, false)
                    .inspect_err(|e| tracing::warn!(error = %e, "cannot record a fetched file"))
                    .is_ok();
            for waiter in job.waiting {
                match waiter {
                    Waiter::Write(target, reply) => {
                        drop(reply.send(assemble(
                            &journal,
                            &info,
                            &list,
                            &target,
                            (fetched, job_from_dht),
                        )));
                    }
                    Waiter::Read(reply) => drop(reply.send(Ok(FileReader {
                        name: info.name.clone(),
                        size: info.size,
                        room: job.room,
                        file: info.clone(),
                        list: list.clone(),
                        journal: journal.clone(),
                        _open: open.clone(),
                    }))),
                    Waiter::Auto => {}
                }
            }
            // After the clients have their file: a durable commit.
            if recorded && let Err(e) = journal.flush() {
                tracing::warn!(error = %e, "cannot record a fetched file for announcement");
            }
        });
    }

    /// Answers a member's request for a chunk: the sealed bytes if we hold them.
    pub(super) fn serve_chunk(&mut self, peer: PeerId, id: &ChunkId) -> SyncResponse {
        match self.core.journal().chunk(id) {
            Ok(bytes) => {
                if bytes.is_some() {
                    self.activity.chunks_served += 1;
                    self.mailboxes.shared.served(peer, id);
                    let now = Instant::now();
                    self.fetches.serving.insert(peer, now);
                    self.fetches
                        .serving
                        .retain(|_, at| now.duration_since(*at) < SERVING_GRACE);
                }
                SyncResponse::Chunk(bytes.map(serde_bytes::ByteBuf::from))
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot serve a chunk");
                SyncResponse::Denied("journal unavailable".into())
            }
        }
    }
}
