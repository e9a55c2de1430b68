//! Files on the event loop: sharing (the chunks are sealed and stored off the loop, the
//! message is composed on it), serving chunks to members, and fetching a file chunk by
//! chunk from the room's connected members (see [`crate::files`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::request_response::OutboundRequestId;
use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::NodeConfig;
use super::{NodeError, Reply, Service};
use crate::files::{self, Answer, ChunkId, Fetch, FileRef};
use crate::journal::Journal;
use crate::room::RoomId;
use crate::sync::{SyncRequest, SyncResponse};

/// Chunk requests in flight per fetch (each up to 256 KiB).
const WINDOW: usize = 8;
/// Sealed chunks stored per transaction while a file is shared.
const SHARE_BATCH: usize = 32;

/// A fetched file, as reported to the client.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Fetched {
    pub id: String,
    pub name: String,
    pub size: u64,
    /// Where it was written.
    pub path: String,
    /// Chunks fetched from peers (0 when this node held the whole file already).
    pub chunks_fetched: u64,
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

struct Job {
    room: RoomId,
    fetch: Fetch<PeerId>,
    waiting: Vec<(Target, Reply<Fetched>)>,
    progress_at: Instant,
}

/// The fetches under way, by file id, and their chunk requests.
pub(super) struct Fetches {
    jobs: HashMap<ChunkId, Job>,
    requests: HashMap<OutboundRequestId, (ChunkId, ChunkId, PeerId)>,
    /// A fetch that no connected member can serve fails after this long without progress.
    give_up: Duration,
}

impl Fetches {
    pub(super) fn new(give_up: Duration) -> Self {
        Fetches {
            jobs: HashMap::new(),
            requests: HashMap::new(),
            give_up,
        }
    }

    pub(super) fn owns(&self, id: &OutboundRequestId) -> bool {
        self.requests.contains_key(id)
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
    // The last batch holds the list: durable, and with it every batch before.
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
    fetched: u64,
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
    })
}

impl Service {
    /// Starts fetching a file (or joins the fetch of it already under way).
    pub(super) fn fetch(&mut self, room: &str, id: &str, target: Target, reply: Reply<Fetched>) {
        let (room_id, file) = match self.core.find_file(room, id) {
            Ok(found) => found,
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                return;
            }
        };
        // Say so before fetching, not after: nothing is written over an existing file.
        let path = target.resolve(&file.name);
        if path.exists() {
            let why = format!(
                "{}: exists already; choose another path with -o",
                path.display()
            );
            let _ = reply.send(Err(NodeError::FileInput(why)));
            return;
        }
        if let Some(job) = self.fetches.jobs.get_mut(&file.list) {
            job.waiting.push((target, reply));
            return;
        }
        let journal = self.core.shared_journal();
        let list = match journal.chunk(&file.list) {
            Ok(list) => list,
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                return;
            }
        };
        let fetch = Fetch::new(file.clone(), list.as_deref(), |c| {
            journal.has_chunk(c).unwrap_or(false)
        });
        let fetch = match fetch {
            Ok(f) => f,
            Err(e) => {
                let _ = reply.send(Err(NodeError::FileInput(e.to_string())));
                return;
            }
        };
        tracing::info!(file = %file.id(), chunks = file.chunks(), "fetching a file");
        self.fetches.jobs.insert(
            file.list,
            Job {
                room: room_id,
                fetch,
                waiting: vec![(target, reply)],
                progress_at: Instant::now(),
            },
        );
        self.pump(file.list);
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
        for (peer, chunk) in job.fetch.next_requests(&peers, WINDOW) {
            let req = self.swarm.behaviour_mut().sync.send_request(
                &peer,
                SyncRequest::Chunk {
                    room: room.0,
                    id: chunk,
                },
            );
            self.fetches.requests.insert(req, (file, chunk, peer));
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
                    "no connected member of the room holds the rest of file {} ({} of its \
                     chunks missing): try again when its author, or a member who fetched it, \
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
        match answer {
            Ok(Answer::Keep(id, bytes)) => {
                job.progress_at = Instant::now();
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
            Err(files::FileError::WrongChunk) => {
                self.penalise(peer, "sent a chunk that does not match its name");
            }
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
        if let Some(job) = self.fetches.jobs.remove(&file) {
            for (_, reply) in job.waiting {
                let _ = reply.send(Err(error()));
            }
        }
    }

    /// Every chunk is held: the file is written for each client waiting for it.
    fn finish_fetch(&mut self, file: ChunkId) {
        let Some(job) = self.fetches.jobs.remove(&file) else {
            return;
        };
        let list = job
            .fetch
            .list()
            .map(<[ChunkId]>::to_vec)
            .unwrap_or_default();
        let info = job.fetch.file().clone();
        let fetched = job.fetch.received();
        let journal: Arc<Journal> = self.core.shared_journal();
        tracing::info!(file = %info.id(), fetched, "file fetched");
        tokio::task::spawn_blocking(move || {
            for (target, reply) in job.waiting {
                let _ = reply.send(assemble(&journal, &info, &list, &target, fetched));
            }
        });
    }

    /// Answers a member's request for a chunk: the sealed bytes if we hold them.
    pub(super) fn serve_chunk(&mut self, id: &ChunkId) -> SyncResponse {
        match self.core.journal().chunk(id) {
            Ok(bytes) => SyncResponse::Chunk(bytes.map(serde_bytes::ByteBuf::from)),
            Err(e) => {
                tracing::error!(error = %e, "cannot serve a chunk");
                SyncResponse::Denied("journal unavailable".into())
            }
        }
    }
}
