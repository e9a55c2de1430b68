//! Files: sealed in chunks under a key of their own, addressed by content, fetched chunk by
//! chunk from any member that holds them.
//!
//! Sharing a file seals it in [`CHUNK_SIZE`] pieces with a fresh random key (AES-256-GCM,
//! the chunk's index as nonce: each key seals one file, so nonces never repeat). Each sealed
//! chunk is named by its SHA-256; the list of those names is sealed the same way and named
//! too, and that name is the file's id. The room learns of the file through an ordinary
//! signed, encrypted message (kind `file`) that carries a [`FileRef`]: name, size, the list's
//! name and the key. So only those who can read the room can ask for the chunks by name or
//! read them, and every holder (the author, and every member who fetched the file) serves
//! them as opaque ciphertext. A chunk is kept only if its hash matches the name asked for,
//! so a peer can withhold a chunk but not change one.
//!
//! This module knows nothing of the network: [`seal_file`] and [`open_file`] transform
//! bytes, [`Fetch`] decides which chunk to ask which peer for next.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::Hash;
use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::crypto::{self, NONCE_LEN};

/// Plaintext bytes per chunk. Small enough for one request-response exchange on any
/// transport, large enough that the list of chunk names stays small.
pub const CHUNK_SIZE: usize = 256 * 1024;
/// AES-GCM's tag.
const TAG_LEN: usize = 16;
/// The largest sealed chunk (and chunk list) a node accepts.
pub const MAX_SEALED_CHUNK: usize = CHUNK_SIZE + TAG_LEN;
/// Chunks per file: the list of their 32-byte names fills one chunk.
pub const MAX_CHUNKS: u64 = (CHUNK_SIZE / 32) as u64;
/// The largest file: 2 GiB.
pub const MAX_FILE_SIZE: u64 = MAX_CHUNKS * CHUNK_SIZE as u64;
/// Longest file name carried, in bytes.
pub const MAX_NAME: usize = 255;
/// The index the chunk list is sealed under (file chunks use 0..MAX_CHUNKS).
const LIST_INDEX: u32 = u32::MAX;
/// Associated data of every chunk, so that no other sealed value can pass for one.
const AAD: &[u8] = b"cryptchat/file/v1";
/// Hash label of chunk names.
const NAME_LABEL: &str = "cryptchat/chunk/v1";
/// Domain of the DHT key under which holders of a file announce themselves.
const PROVIDER_LABEL: &str = "cryptchat/file-provider/v1";

/// A 32-byte content address.
pub type ChunkId = [u8; 32];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileError {
    #[error("file of {0} bytes is larger than the {MAX_FILE_SIZE}-byte limit")]
    TooLarge(u64),
    #[error("cannot read the file: {0}")]
    Read(String),
    #[error(
        "the file name is empty, longer than {MAX_NAME} bytes, or holds a path separator, a control or a bidirectional formatting character"
    )]
    BadName,
    #[error("a chunk does not match its name")]
    WrongChunk,
    #[error("the file's chunk list is malformed")]
    BadList,
    #[error("chunk {0} of the file does not decrypt: its author shared a corrupt file")]
    Corrupt(u32),
    #[error("the file's size does not match its chunks")]
    BadSize,
    #[error("sealing failed")]
    Crypto,
}

/// What a `file` message carries: everything a member needs to fetch and read the file.
/// Travels only inside the encrypted payload.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileRef {
    /// The file's name as its author gave it (no directories).
    pub name: String,
    pub size: u64,
    /// Name of the sealed chunk list; also the file's id.
    #[serde(with = "hex32")]
    pub list: ChunkId,
    /// The file's key.
    #[serde(with = "hex32")]
    pub key: [u8; 32],
}

impl FileRef {
    /// The file's id as users see it: the chunk list's name in hex.
    pub fn id(&self) -> String {
        hex::encode(self.list)
    }

    /// Chunks the file is made of.
    pub fn chunks(&self) -> u64 {
        self.size.div_ceil(CHUNK_SIZE as u64)
    }

    /// The DHT key under which the file's holders announce themselves. Derived from the
    /// file's key, so only those who can read the file can compute it: a DHT node that
    /// stores the record learns that some peer holds *something*, never which file, nor
    /// can it link the record to the chunks it may see served.
    pub fn provider_key(&self) -> [u8; 32] {
        crypto::sha256_framed(PROVIDER_LABEL, &[&self.key, &self.list])
    }

    /// Whether a received reference is well formed (size in bounds, a plain name).
    pub fn is_valid(&self) -> bool {
        self.size <= MAX_FILE_SIZE && valid_name(&self.name)
    }
}

/// A name with no directory part and no [deceptive](crate::chars::is_deceptive) characters,
/// within [`MAX_NAME`] bytes.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || crate::chars::is_deceptive(c))
}

/// The name of a sealed chunk.
pub fn chunk_id(sealed: &[u8]) -> ChunkId {
    crypto::sha256_framed(NAME_LABEL, &[sealed])
}

fn nonce(index: u32) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[NONCE_LEN - 4..].copy_from_slice(&index.to_be_bytes());
    n
}

/// Seals a file read from `reader`, handing each sealed chunk to `store` in order (so a
/// large file never sits in memory whole) and the chunk list last. `size` is the size the
/// caller expects; a file that grows or shrinks while read is an error.
pub fn seal_file(
    name: &str,
    size: u64,
    mut reader: impl Read,
    mut store: impl FnMut(ChunkId, Vec<u8>) -> Result<(), String>,
) -> Result<FileRef, FileError> {
    if !valid_name(name) {
        return Err(FileError::BadName);
    }
    if size > MAX_FILE_SIZE {
        return Err(FileError::TooLarge(size));
    }
    let key = crypto::random_key().map_err(|_| FileError::Crypto)?;
    let chunks = size.div_ceil(CHUNK_SIZE as u64);
    let mut list = Vec::with_capacity(chunks as usize * 32);
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut read_total = 0u64;
    for index in 0..chunks {
        let want = (size - read_total).min(CHUNK_SIZE as u64) as usize;
        reader
            .read_exact(&mut buf[..want])
            .map_err(|e| FileError::Read(format!("{e} (did the file shrink while read?)")))?;
        read_total += want as u64;
        let sealed = crypto::seal_with_nonce(&key, &nonce(index as u32), AAD, &buf[..want])
            .map_err(|_| FileError::Crypto)?;
        let id = chunk_id(&sealed);
        list.extend_from_slice(&id);
        store(id, sealed).map_err(FileError::Read)?;
    }
    let mut probe = [0u8; 1];
    if reader
        .read(&mut probe)
        .map_err(|e| FileError::Read(e.to_string()))?
        != 0
    {
        return Err(FileError::Read("the file grew while it was read".into()));
    }
    let sealed = crypto::seal_with_nonce(&key, &nonce(LIST_INDEX), AAD, &list)
        .map_err(|_| FileError::Crypto)?;
    let id = chunk_id(&sealed);
    store(id, sealed).map_err(FileError::Read)?;
    Ok(FileRef {
        name: name.to_string(),
        size,
        list: id,
        key: *key,
    })
}

/// Opens a fetched chunk list: the names of the file's chunks, in order.
pub fn open_list(file: &FileRef, sealed: &[u8]) -> Result<Vec<ChunkId>, FileError> {
    if !crypto::ct_eq(&chunk_id(sealed), &file.list) {
        return Err(FileError::WrongChunk);
    }
    let plain =
        crypto::open(&file.key, &nonce(LIST_INDEX), AAD, sealed).map_err(|_| FileError::BadList)?;
    if plain.len() % 32 != 0 || plain.len() as u64 / 32 != file.chunks() {
        return Err(FileError::BadList);
    }
    Ok(plain
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32-byte chunks"))
        .collect())
}

/// Opens chunk `index` of a file, checking its length against the file's size.
pub fn open_chunk(file: &FileRef, index: u32, sealed: &[u8]) -> Result<Vec<u8>, FileError> {
    let plain = crypto::open(&file.key, &nonce(index), AAD, sealed)
        .map_err(|_| FileError::Corrupt(index))?;
    let start = index as u64 * CHUNK_SIZE as u64;
    let expected = file.size.saturating_sub(start).min(CHUNK_SIZE as u64);
    if plain.len() as u64 != expected || index as u64 >= file.chunks() {
        return Err(FileError::BadSize);
    }
    Ok(plain.to_vec())
}

/// Writes a whole file from its chunks, each fetched by `chunk` (by name), into `out`.
pub fn open_file(
    file: &FileRef,
    list: &[ChunkId],
    mut chunk: impl FnMut(&ChunkId) -> Option<Vec<u8>>,
    mut out: impl std::io::Write,
) -> Result<(), FileError> {
    if list.len() as u64 != file.chunks() {
        return Err(FileError::BadList);
    }
    for (i, id) in list.iter().enumerate() {
        let sealed = chunk(id).ok_or(FileError::WrongChunk)?;
        if !crypto::ct_eq(&chunk_id(&sealed), id) {
            return Err(FileError::WrongChunk);
        }
        let plain = open_chunk(file, i as u32, &sealed)?;
        out.write_all(&plain)
            .map_err(|e| FileError::Read(e.to_string()))?;
    }
    Ok(())
}

/// What a fetch should do with an answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// A chunk that checks out: store it (and serve it from now on).
    Keep(ChunkId, Vec<u8>),
    /// Nothing to store (the peer lacked it, or it was not asked for).
    Nothing,
}

/// One file being fetched: which chunks are still missing, which are being asked for and
/// of whom, and which peers said they lack which chunk. Generic over the peer type so it
/// can be tested without a network.
#[derive(Debug)]
pub struct Fetch<P> {
    file: FileRef,
    /// The chunk names, once the list is held.
    list: Option<Vec<ChunkId>>,
    missing: BTreeSet<ChunkId>,
    in_flight: HashMap<ChunkId, P>,
    /// Peers that said they lack a chunk (or failed to answer), per chunk.
    tried: HashMap<ChunkId, HashSet<P>>,
    received: u64,
}

impl<P: Clone + Eq + Hash> Fetch<P> {
    /// Starts a fetch, with the sealed chunk list if this node holds it already; `held`
    /// says which chunks it holds.
    pub fn new(
        file: FileRef,
        list: Option<&[u8]>,
        held: impl Fn(&ChunkId) -> bool,
    ) -> Result<Self, FileError> {
        let mut f = Fetch {
            list: None,
            missing: BTreeSet::from([file.list]),
            in_flight: HashMap::new(),
            tried: HashMap::new(),
            received: 0,
            file,
        };
        if let Some(sealed) = list {
            f.take_list(sealed)?;
            f.missing.retain(|id| !held(id));
        }
        Ok(f)
    }

    fn take_list(&mut self, sealed: &[u8]) -> Result<(), FileError> {
        let list = open_list(&self.file, sealed)?;
        self.missing.remove(&self.file.list);
        self.missing.extend(list.iter().copied());
        self.list = Some(list);
        Ok(())
    }

    pub fn file(&self) -> &FileRef {
        &self.file
    }

    /// The chunk names, once known.
    pub fn list(&self) -> Option<&[ChunkId]> {
        self.list.as_deref()
    }

    pub fn is_done(&self) -> bool {
        self.list.is_some() && self.missing.is_empty()
    }

    /// Chunks still missing (the list counts as one until it arrives).
    pub fn missing(&self) -> usize {
        self.missing.len()
    }

    /// The missing chunks no peer is asked for now (the list alone, until it arrives).
    pub fn unasked(&self) -> impl Iterator<Item = &ChunkId> {
        self.missing
            .iter()
            .filter(|id| !self.in_flight.contains_key(*id))
    }

    /// Chunks of the file held so far, and how many it has (the list not counted; none
    /// are known to be held until the list is).
    pub fn progress(&self) -> (u64, u64) {
        let total = self.file.chunks();
        match self.list {
            Some(_) => (total.saturating_sub(self.missing.len() as u64), total),
            None => (0, total),
        }
    }

    /// Chunks received in this fetch.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Requests to send now: at most `window` chunks in flight, each to a peer among
    /// `peers` that has not said it lacks it, the least busy first.
    pub fn next_requests(&mut self, peers: &[P], window: usize) -> Vec<(P, ChunkId)> {
        let mut load: HashMap<&P, usize> = peers.iter().map(|p| (p, 0)).collect();
        for p in self.in_flight.values() {
            if let Some(n) = load.get_mut(p) {
                *n += 1;
            }
        }
        let mut out = Vec::new();
        for id in &self.missing {
            if self.in_flight.len() + out.len() >= window {
                break;
            }
            if self.in_flight.contains_key(id) {
                continue;
            }
            let tried = self.tried.get(id);
            let Some(peer) = peers
                .iter()
                .filter(|p| !tried.is_some_and(|t| t.contains(*p)))
                .min_by_key(|p| load[p])
            else {
                continue;
            };
            *load.get_mut(peer).expect("peer counted") += 1;
            out.push((peer.clone(), *id));
        }
        for (p, id) in &out {
            self.in_flight.insert(*id, p.clone());
        }
        out
    }

    /// Whether some missing chunk is neither in flight nor askable of any of `peers`: every
    /// one of them said it lacks it (or there are no peers).
    pub fn stuck(&self, peers: &[P]) -> bool {
        self.missing.iter().any(|id| {
            !self.in_flight.contains_key(id)
                && peers
                    .iter()
                    .all(|p| self.tried.get(id).is_some_and(|t| t.contains(p)))
        })
    }

    /// Forgets which peers lacked what, so they are asked again (members fetch files too,
    /// and new members connect).
    pub fn retry_all(&mut self) {
        self.tried.clear();
    }

    /// `peer` answered for `id`: with the sealed chunk, or without it (`None`).
    pub fn on_answer(
        &mut self,
        peer: &P,
        id: ChunkId,
        sealed: Option<Vec<u8>>,
    ) -> Result<Answer, FileError> {
        if self.in_flight.get(&id) == Some(peer) {
            self.in_flight.remove(&id);
        }
        let Some(sealed) = sealed else {
            self.tried.entry(id).or_default().insert(peer.clone());
            return Ok(Answer::Nothing);
        };
        if !self.missing.contains(&id) {
            return Ok(Answer::Nothing);
        }
        if sealed.len() > MAX_SEALED_CHUNK || !crypto::ct_eq(&chunk_id(&sealed), &id) {
            self.tried.entry(id).or_default().insert(peer.clone());
            return Err(FileError::WrongChunk);
        }
        if id == self.file.list && self.list.is_none() {
            self.take_list(&sealed)?;
        } else {
            self.missing.remove(&id);
        }
        self.received += 1;
        Ok(Answer::Keep(id, sealed))
    }

    /// `peer` did not answer for `id` (the request failed): ask someone else.
    pub fn on_failure(&mut self, peer: &P, id: ChunkId) {
        if self.in_flight.get(&id) == Some(peer) {
            self.in_flight.remove(&id);
        }
        self.tried.entry(id).or_default().insert(peer.clone());
    }
}

/// Serde for 32-byte values as hex strings (compact inside the JSON payload).
mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = <&str>::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(D::Error::custom)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap as Map;

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 7) as u8).collect()
    }

    fn seal(data: &[u8]) -> (FileRef, Map<ChunkId, Vec<u8>>, Vec<ChunkId>) {
        let mut store = Map::new();
        let mut order = Vec::new();
        let file = seal_file("notes.txt", data.len() as u64, data, |id, bytes| {
            order.push(id);
            store.insert(id, bytes);
            Ok(())
        })
        .unwrap();
        (file, store, order)
    }

    #[test]
    fn files_of_every_shape_round_trip() {
        for len in [
            0,
            1,
            CHUNK_SIZE - 1,
            CHUNK_SIZE,
            CHUNK_SIZE + 1,
            3 * CHUNK_SIZE + 5,
        ] {
            let data = sample(len);
            let (file, store, order) = seal(&data);
            assert_eq!(file.size, len as u64);
            assert_eq!(
                order.len() as u64,
                file.chunks() + 1,
                "chunks, then the list"
            );
            assert_eq!(*order.last().unwrap(), file.list);
            let list = open_list(&file, &store[&file.list]).unwrap();
            assert_eq!(list, order[..order.len() - 1]);
            let mut out = Vec::new();
            open_file(&file, &list, |id| store.get(id).cloned(), &mut out).unwrap();
            assert_eq!(out, data, "{len} bytes");
        }
    }

    #[test]
    fn the_provider_key_needs_the_file_key() {
        let (file, _, _) = seal(&sample(1000));
        let key = file.provider_key();
        assert_eq!(key, file.clone().provider_key(), "stable");
        assert_ne!(
            key, file.list,
            "not the id every holder serves chunks under"
        );
        let mut other = file.clone();
        other.key[0] ^= 1;
        assert_ne!(key, other.provider_key(), "the id alone does not give it");
        let mut other = file.clone();
        other.list[0] ^= 1;
        assert_ne!(key, other.provider_key());
    }

    #[test]
    fn the_same_bytes_shared_twice_are_two_files() {
        let data = sample(1000);
        let (a, _, _) = seal(&data);
        let (b, _, _) = seal(&data);
        assert_ne!(a.key, b.key);
        assert_ne!(a.list, b.list);
    }

    #[test]
    fn a_tampered_or_swapped_chunk_is_refused() {
        let data = sample(2 * CHUNK_SIZE + 10);
        let (file, mut store, order) = seal(&data);
        let list = open_list(&file, &store[&file.list]).unwrap();
        // A changed byte no longer matches the chunk's name.
        store.get_mut(&order[1]).unwrap()[5] ^= 1;
        let r = open_file(&file, &list, |id| store.get(id).cloned(), std::io::sink());
        assert_eq!(r, Err(FileError::WrongChunk));
        // Chunks in another order: names match, but each is sealed under its index.
        let (file, store, order) = seal(&data);
        let swapped = [order[1], order[0], order[2]];
        let r = open_file(
            &file,
            &swapped,
            |id| store.get(id).cloned(),
            std::io::sink(),
        );
        assert_eq!(r, Err(FileError::Corrupt(0)));
        // A list under another key, or with the wrong count, is refused.
        let mut other = file.clone();
        other.key[0] ^= 1;
        assert_eq!(
            open_list(&other, &store[&file.list]),
            Err(FileError::BadList)
        );
        let mut longer = file.clone();
        longer.size += CHUNK_SIZE as u64;
        assert_eq!(
            open_list(&longer, &store[&file.list]),
            Err(FileError::BadList)
        );
    }

    #[test]
    fn limits_and_names_are_checked() {
        let r = seal_file("big", MAX_FILE_SIZE + 1, std::io::empty(), |_, _| Ok(()));
        assert_eq!(r, Err(FileError::TooLarge(MAX_FILE_SIZE + 1)));
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a\\b",
            "a\nb",
            "invoice\u{202E}fdp.exe",
            &"x".repeat(MAX_NAME + 1),
        ] {
            let r = seal_file(bad, 0, std::io::empty(), |_, _| Ok(()));
            assert_eq!(r, Err(FileError::BadName), "{bad:?}");
        }
        assert!(valid_name("report (final).pdf"));
        // A file shorter or longer than announced is an error, not a truncated share.
        let r = seal_file("short", 10, &[1u8; 5][..], |_, _| Ok(()));
        assert!(matches!(r, Err(FileError::Read(_))));
        let r = seal_file("long", 5, &[1u8; 10][..], |_, _| Ok(()));
        assert!(matches!(r, Err(FileError::Read(_))));
    }

    #[test]
    fn a_reference_survives_json_and_is_validated() {
        let (file, _, _) = seal(&sample(10));
        let json = serde_json::to_string(&file).unwrap();
        assert!(json.contains(&hex::encode(file.list)));
        let back: FileRef = serde_json::from_str(&json).unwrap();
        assert_eq!(back, file);
        assert!(back.is_valid());
        let mut bad = file.clone();
        bad.name = "../etc/passwd".into();
        assert!(!bad.is_valid());
        bad.name = "ok".into();
        bad.size = MAX_FILE_SIZE + 1;
        assert!(!bad.is_valid());
    }

    #[test]
    fn a_fetch_spreads_requests_and_moves_on_from_peers_that_lack_a_chunk() {
        let data = sample(4 * CHUNK_SIZE);
        let (file, store, order) = seal(&data);
        let mut held: Map<ChunkId, Vec<u8>> = Map::new();
        let mut f: Fetch<u8> = Fetch::new(file.clone(), None, |_| false).unwrap();
        assert_eq!(f.missing(), 1, "only the list is known to be missing");
        assert_eq!(f.progress(), (0, 4));
        // The list first, from one of the peers.
        let reqs = f.next_requests(&[1, 2], 8);
        assert_eq!(reqs, vec![(1, file.list)]);
        assert_eq!(
            f.next_requests(&[1, 2], 8),
            vec![],
            "nothing else known yet"
        );
        // Peer 1 lacks it: ask peer 2.
        assert_eq!(f.on_answer(&1, file.list, None), Ok(Answer::Nothing));
        assert_eq!(f.next_requests(&[1, 2], 8), vec![(2, file.list)]);
        let a = f
            .on_answer(&2, file.list, store.get(&file.list).cloned())
            .unwrap();
        assert!(matches!(a, Answer::Keep(id, _) if id == file.list));
        assert_eq!(f.missing(), 4);
        assert_eq!(f.progress(), (0, 4), "the list is not a chunk of the file");
        // Four chunks, window of three: spread over both peers.
        let reqs = f.next_requests(&[1, 2], 3);
        assert_eq!(reqs.len(), 3);
        let to_1 = reqs.iter().filter(|(p, _)| *p == 1).count();
        assert!((1..=2).contains(&to_1), "{reqs:?}");
        // A peer answering with the wrong bytes is refused and not asked again for it.
        let (p, id) = reqs[0];
        let other = order[..4].iter().find(|c| **c != id).unwrap();
        let wrong = store[other].clone();
        assert!(
            f.on_answer(&p, id, Some(wrong)) == Err(FileError::WrongChunk),
            "another chunk's bytes"
        );
        for (p, id) in reqs.iter().skip(1) {
            if let Answer::Keep(id, bytes) = f.on_answer(p, *id, store.get(id).cloned()).unwrap() {
                held.insert(id, bytes);
            }
        }
        assert_eq!(f.progress(), (2, 4));
        let reqs = f.next_requests(&[1, 2], 3);
        assert!(
            reqs.contains(&(3 - p, id)),
            "the refused chunk goes to the other peer"
        );
        for (p, id) in reqs {
            if let Answer::Keep(id, bytes) = f.on_answer(&p, id, store.get(&id).cloned()).unwrap() {
                held.insert(id, bytes);
            }
        }
        assert!(f.is_done(), "missing {}", f.missing());
        assert_eq!(f.progress(), (4, 4));
        assert_eq!(f.received(), 5);
        let mut out = Vec::new();
        open_file(
            &file,
            f.list().unwrap(),
            |id| held.get(id).cloned(),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn a_fetch_knows_when_no_peer_holds_a_chunk_and_can_start_over() {
        let (file, store, _) = seal(&sample(10));
        let mut f: Fetch<u8> = Fetch::new(file.clone(), None, |_| false).unwrap();
        assert!(f.stuck(&[]), "no peers at all");
        assert!(!f.stuck(&[7]));
        let reqs = f.next_requests(&[7], 4);
        assert!(!f.stuck(&[7]), "in flight");
        f.on_failure(&7, reqs[0].1);
        assert!(f.stuck(&[7]));
        assert!(f.next_requests(&[7], 4).is_empty());
        f.retry_all();
        assert!(!f.stuck(&[7]));
        let (p, id) = f.next_requests(&[7], 4)[0];
        f.on_answer(&p, id, store.get(&id).cloned()).unwrap();
        // The file has one chunk; a fetch started where both are held is done at once.
        let list = store.get(&file.list).map(Vec::as_slice);
        let done: Fetch<u8> = Fetch::new(file.clone(), list, |id| store.contains_key(id)).unwrap();
        assert!(done.is_done());
        let half: Fetch<u8> = Fetch::new(file.clone(), list, |_| false).unwrap();
        assert_eq!(half.missing(), 1, "the list held, its one chunk not");
    }
}
