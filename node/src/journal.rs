//! The node's durable journal: every room's history as opaque envelope bytes, organised as
//! per-author append-only chains plus a version vector, in one redb file.
//!
//! The caller has already verified signatures and computed hashes; this module only enforces
//! chain structure (contiguity, `prev` links) so that sync can reason in version vectors.
//!
//! Conflict rule: the contiguous chain (hash-linked from seq 1) is authoritative and a stored
//! (author, seq) is never overwritten. Entries past a gap are provisional ("pending") until the
//! gap is filled. Any two signed entries that disagree about an author's history are kept as a
//! [`ForkProof`], and the author's head stops advancing at the point of disagreement.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    TableDefinition, WriteTransaction,
};

/// Room ids, author ids and hashes are all 32 bytes.
pub type Id = [u8; 32];

const ZERO: Id = [0; 32];

/// Bumped when the on-disk layout changes; a file with a newer version is refused rather than
/// misread.
///
/// 2: a room's counters also count its messages (see [`Journal::open_counting`]); a file of
/// version 1 is counted once when opened.
/// 3: a sealed chunk past [`CHUNK_HEAD`] bytes is kept in two parts (`chunk_tails`); a file of
/// version 2 holds every chunk whole in `chunks`, and is read as it is. An older build
/// would serve the first part alone, so it refuses the file.
const SCHEMA_VERSION: u32 = 3;
const SCHEMA_KEY: &[u8] = b"schema_version";

// All keys and values are raw bytes decoded here, so a corrupted value yields an error rather
// than a panic inside a typed redb decoder. Keys are big-endian so byte order is numeric order.
type Bytes = &'static [u8];
/// `schema_version` -> u32 BE; `chunk_tally` -> count||bytes (u64 BE each) of `chunks`.
const META: TableDefinition<Bytes, Bytes> = TableDefinition::new("meta");
/// room||author||seq -> prev||hash||lamport||envelope (contiguous entries only).
const ENTRIES: TableDefinition<Bytes, Bytes> = TableDefinition::new("entries");
/// Same layout as `entries`, for entries stored past a gap.
const PENDING: TableDefinition<Bytes, Bytes> = TableDefinition::new("pending");
/// room||author -> seq||hash of the contiguous head.
const HEADS: TableDefinition<Bytes, Bytes> = TableDefinition::new("heads");
/// room||lamport||author||seq -> empty; display order index of contiguous entries.
const ORDER: TableDefinition<Bytes, Bytes> = TableDefinition::new("order");
/// room||author||seq -> existing||conflicting||conflicting envelope. First proof per key wins.
const FORKS: TableDefinition<Bytes, Bytes> = TableDefinition::new("forks");
/// room -> count||pending||max_lamport, so those queries do not scan the room.
const ROOMS: TableDefinition<Bytes, Bytes> = TableDefinition::new("rooms");
/// Setting key (UTF-8) -> opaque value.
const SETTINGS: TableDefinition<Bytes, Bytes> = TableDefinition::new("settings");
/// Chunk name (SHA-256 of the sealed chunk) -> sealed chunk of a shared file (see
/// [`crate::files`]): ciphertext, served to any peer that names it.
/// A chunk of more than [`CHUNK_HEAD`] bytes keeps only its first [`CHUNK_HEAD`] here.
const CHUNKS: TableDefinition<Bytes, Bytes> = TableDefinition::new("chunks");
/// Chunk name -> what the sealed chunk holds past its first [`CHUNK_HEAD`] bytes.
const CHUNK_TAILS: TableDefinition<Bytes, Bytes> = TableDefinition::new("chunk_tails");
/// The most of a chunk kept in one value. redb gives a value that does not fit its page a
/// power of two of pages: a whole sealed chunk (256 KiB and a 16-byte tag) took 512 KiB,
/// and a file about 2.7 times its size on disk. Its first 262,016 bytes fill one 256 KiB
/// page (key and page header included), and the rest (144 bytes at most) shares a page
/// with others: about 1.2 times.
const CHUNK_HEAD: usize = 256 * 1024 - 128;
/// DHT provider key of a file this node holds whole -> the file's id (its list's name), so
/// a restarted node announces its files again (see [`crate::files::FileRef::provider_key`]).
const PROVIDES: TableDefinition<Bytes, Bytes> = TableDefinition::new("provides");
/// DHT provider key of a file the user dropped with `forget` -> empty: not fetched again
/// unasked (see [`Journal::forget_file`]); fetching it by hand clears the mark.
const DECLINED: TableDefinition<Bytes, Bytes> = TableDefinition::new("declined");
/// room||author||seq -> seq u64 BE of the author's latest entry that revises that one (an
/// edit or a deletion: see [`Journal::revision`]). Which entry revises which is inside the
/// ciphertext, so the caller names it when it appends ([`Note`]).
const REVISIONS: TableDefinition<Bytes, Bytes> = TableDefinition::new("revisions");
/// room||author||seq of a message||reactor||seq of the reactor's reaction -> empty: every
/// reaction entry, by the message it reacts to ([`Journal::notes`]).
const REACTIONS: TableDefinition<Bytes, Bytes> = TableDefinition::new("reactions");
const REACTION_KEY_LEN: usize = ENTRY_KEY_LEN + 40;

/// What the journal noted of an entry from later ones (see [`Journal::notes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notes {
    /// The seq of its author's latest entry that revises it.
    pub revision: Option<u64>,
    /// Its reactions: (reactor, seq of the reaction entry), ascending.
    pub reactions: Vec<(Id, u64)>,
}

/// What an entry says of another, noted when it is appended: the journal cannot read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// It revises (edits or deletes) its author's entry of this seq.
    Revises(u64),
    /// It is a reaction to the entry (author, seq) of the room.
    ReactsTo(Id, u64),
}
const TALLY_KEY: &[u8] = b"chunk_tally";

/// redb's page cache ceiling; its 1 GiB default is too much for a chat node on small devices.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

const ENTRY_KEY_LEN: usize = 72;
const HEAD_KEY_LEN: usize = 64;
const ORDER_KEY_LEN: usize = 80;
const REC_HEADER_LEN: usize = 72;
const HEAD_VALUE_LEN: usize = 40;
const ROOM_VALUE_LEN: usize = 32;
/// The room counters of schema 1, before `messages`.
const ROOM_VALUE_LEN_V1: usize = 24;
const FORK_HEADER_LEN: usize = 64;

/// Which stretch of a room's history to read, counted back from its newest entry in display
/// order: the newest `limit` entries older than `before` (than the newest entry without it),
/// after passing over the newest `skip` of those. `before` names a message the reader was
/// shown, so pages read one after another neither repeat nor miss an entry while new ones
/// arrive; `skip` counts from the end, for a reader that keeps no position (the CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: usize,
    pub skip: usize,
    pub before: Option<Position>,
}

impl Page {
    /// The newest `limit` entries.
    pub fn last(limit: usize) -> Self {
        Page {
            limit,
            skip: 0,
            before: None,
        }
    }
}

/// An entry's place in display order: ascending (lamport, author, seq).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub lamport: u64,
    pub author: Id,
    pub seq: u64,
}

/// Metadata of one entry; the envelope bytes carry the same data signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    pub room: Id,
    pub author: Id,
    /// Per-author sequence, starting at 1.
    pub seq: u64,
    /// Hash of the author's previous entry in this room (`[0; 32]` for seq 1).
    pub prev: Id,
    /// Hash of this entry's envelope bytes (computed by the caller).
    pub hash: Id,
    /// Lamport clock, for causal display order.
    pub lamport: u64,
}

/// What [`Journal::append`] did with an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored and contiguous; `advanced_to` is the author's new contiguous head seq (may jump
    /// forward when this entry filled a gap and pending entries became contiguous).
    Appended { advanced_to: u64 },
    /// Stored, but a gap precedes it (earlier seqs missing): kept in a pending area, not yet in
    /// the version vector / head; it becomes contiguous when the gap is filled.
    Pending,
    /// Same (author, seq) with the same hash is already stored (contiguous or pending).
    Duplicate,
    /// Same (author, seq) already stored with a DIFFERENT hash, or `prev` does not match the
    /// hash of the stored entry seq-1: a fork. Nothing is overwritten; the proof is kept (see
    /// [`Journal::forks`]).
    Fork,
}

/// An author's contiguous head in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: Id,
}

/// One stored entry with its opaque envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub meta: EntryMeta,
    pub envelope: Vec<u8>,
}

/// Evidence that `author` signed two different histories: `existing` and `conflicting` are two
/// different hashes for the author's entry `seq`.
///
/// `conflicting_envelope` is the signed evidence for `conflicting`: either that entry itself
/// (its hash is `conflicting`) or its successor (its `prev` is `conflicting`). `seq` is 0 when
/// an entry with seq 1 linked to a non-zero `prev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkProof {
    pub author: Id,
    pub seq: u64,
    pub existing: Id,
    pub conflicting: Id,
    pub conflicting_envelope: Vec<u8>,
}

/// Journal failures. Every variant about the file names it, so a user can find and move it.
///
/// Causes are part of the message rather than `source()`, so error chains do not print them
/// twice.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open journal file {}: {cause}", .path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "journal file {} is already in use (is another cryptchat node running on this data directory?)",
        .path.display()
    )]
    Locked { path: PathBuf },
    #[error(
        "journal file {} is corrupt or unreadable: {cause}; move it aside to start fresh (its data is kept there)",
        .path.display()
    )]
    Corrupt { path: PathBuf, cause: redb::Error },
    #[error(
        "journal file {} has schema version {found}, but this build only understands up to {supported}; upgrade cryptchat, or move the file aside to start fresh (its data is kept there)",
        .path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "journal entry in {} is corrupt: {detail}; move the file aside to start fresh (its data is kept there)",
        .path.display()
    )]
    CorruptEntry { path: PathBuf, detail: String },
    #[error("journal file {}: storage error: {cause}", .path.display())]
    Storage { path: PathBuf, cause: redb::Error },
    /// A write failed for want of the disk (see [`Journal::unwritable`]).
    #[error(
        "journal file {} can no longer be written ({cause}): free disk space (or mend the disk) and start the node again; what it stored before is kept",
        .path.display()
    )]
    Unwritable { path: PathBuf, cause: String },
    /// The caller passed something that cannot be a chain entry; nothing was written.
    #[error("invalid journal entry: {detail}")]
    InvalidEntry { detail: String },
}

/// Attaches the journal path to redb errors.
trait AtPath<T> {
    fn at(self, path: &Path) -> Result<T, JournalError>;
}

impl<T, E: Into<redb::Error>> AtPath<T> for Result<T, E> {
    fn at(self, path: &Path) -> Result<T, JournalError> {
        self.map_err(|e| JournalError::Storage {
            path: path.to_path_buf(),
            cause: e.into(),
        })
    }
}

/// How many chunks the `chunks` table holds and their bytes, as last written ((0, 0) if
/// never written).
fn read_tally(
    meta: &impl ReadableTable<Bytes, Bytes>,
    path: &Path,
) -> Result<(u64, u64), JournalError> {
    let Some(v) = meta.get(TALLY_KEY).at(path)? else {
        return Ok((0, 0));
    };
    let b: [u8; 16] = v
        .value()
        .try_into()
        .map_err(|_| corrupt(path, "the chunk tally is not 16 bytes"))?;
    let count = u64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
    let bytes = u64::from_be_bytes(b[8..].try_into().expect("8 bytes"));
    Ok((count, bytes))
}

fn write_tally(
    meta: &mut Table<'_, Bytes, Bytes>,
    path: &Path,
    (count, bytes): (u64, u64),
) -> Result<(), JournalError> {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&count.to_be_bytes());
    b[8..].copy_from_slice(&bytes.to_be_bytes());
    meta.insert(TALLY_KEY, &b[..]).at(path)?;
    Ok(())
}

fn corrupt(path: &Path, detail: impl Into<String>) -> JournalError {
    JournalError::CorruptEntry {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Short hex prefix of an id for messages and logs.
fn short(id: &Id) -> String {
    id[..4].iter().map(|b| format!("{b:02x}")).collect()
}

fn id_at(b: &[u8], at: usize) -> Option<Id> {
    b.get(at..at.checked_add(32)?)?.try_into().ok()
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn entry_key(room: &Id, author: &Id, seq: u64) -> [u8; ENTRY_KEY_LEN] {
    let mut k = [0; ENTRY_KEY_LEN];
    k[..32].copy_from_slice(room);
    k[32..64].copy_from_slice(author);
    k[64..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn head_key(room: &Id, author: &Id) -> [u8; HEAD_KEY_LEN] {
    let mut k = [0; HEAD_KEY_LEN];
    k[..32].copy_from_slice(room);
    k[32..].copy_from_slice(author);
    k
}

fn order_key(room: &Id, lamport: u64, author: &Id, seq: u64) -> [u8; ORDER_KEY_LEN] {
    let mut k = [0; ORDER_KEY_LEN];
    k[..32].copy_from_slice(room);
    k[32..40].copy_from_slice(&lamport.to_be_bytes());
    k[40..72].copy_from_slice(author);
    k[72..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Inclusive bounds covering every N-byte key that starts with `room`.
fn room_bounds<const N: usize>(room: &Id) -> ([u8; N], [u8; N]) {
    let mut lo = [0; N];
    let mut hi = [0xff; N];
    lo[..32].copy_from_slice(room);
    hi[..32].copy_from_slice(room);
    (lo, hi)
}

/// Decoded value of `entries` / `pending`; room, author and seq live in the key.
struct Rec {
    prev: Id,
    hash: Id,
    lamport: u64,
    envelope: Vec<u8>,
}

fn encode_rec(meta: &EntryMeta, envelope: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(REC_HEADER_LEN + envelope.len());
    v.extend_from_slice(&meta.prev);
    v.extend_from_slice(&meta.hash);
    v.extend_from_slice(&meta.lamport.to_be_bytes());
    v.extend_from_slice(envelope);
    v
}

fn decode_rec(path: &Path, key: &[u8], v: &[u8]) -> Result<Rec, JournalError> {
    let parsed = (|| {
        Some(Rec {
            prev: id_at(v, 0)?,
            hash: id_at(v, 32)?,
            lamport: u64_at(v, 64)?,
            envelope: v.get(REC_HEADER_LEN..)?.to_vec(),
        })
    })();
    parsed.ok_or_else(|| corrupt(path, format!("{}: value too short", describe_key(key))))
}

/// Human description of an entry key for corruption messages.
fn describe_key(key: &[u8]) -> String {
    match (id_at(key, 0), id_at(key, 32), u64_at(key, 64)) {
        (Some(room), Some(author), Some(seq)) => {
            format!("room {} author {} seq {seq}", short(&room), short(&author))
        }
        _ => format!("key of {} bytes", key.len()),
    }
}

fn decode_entry_key(path: &Path, key: &[u8]) -> Result<(Id, Id, u64), JournalError> {
    match (key.len(), id_at(key, 0), id_at(key, 32), u64_at(key, 64)) {
        (ENTRY_KEY_LEN, Some(room), Some(author), Some(seq)) => Ok((room, author, seq)),
        _ => Err(corrupt(
            path,
            format!("malformed key of {} bytes", key.len()),
        )),
    }
}

fn stored_entry(room: Id, author: Id, seq: u64, rec: Rec) -> StoredEntry {
    StoredEntry {
        meta: EntryMeta {
            room,
            author,
            seq,
            prev: rec.prev,
            hash: rec.hash,
            lamport: rec.lamport,
        },
        envelope: rec.envelope,
    }
}

fn reaction_key(room: &Id, author: &Id, seq: u64, reactor: &Id, at: u64) -> [u8; REACTION_KEY_LEN] {
    let mut k = [0u8; REACTION_KEY_LEN];
    k[..ENTRY_KEY_LEN].copy_from_slice(&entry_key(room, author, seq));
    k[ENTRY_KEY_LEN..ENTRY_KEY_LEN + 32].copy_from_slice(reactor);
    k[ENTRY_KEY_LEN + 32..].copy_from_slice(&at.to_be_bytes());
    k
}

fn decode_revision(path: &Path, key: &[u8], v: &[u8]) -> Result<u64, JournalError> {
    let b: [u8; 8] = v.try_into().map_err(|_| {
        corrupt(
            path,
            format!("{}: revision of {} bytes", describe_key(key), v.len()),
        )
    })?;
    Ok(u64::from_be_bytes(b))
}

fn encode_head(h: &Head) -> [u8; HEAD_VALUE_LEN] {
    let mut v = [0; HEAD_VALUE_LEN];
    v[..8].copy_from_slice(&h.seq.to_be_bytes());
    v[8..].copy_from_slice(&h.hash);
    v
}

fn decode_head(path: &Path, v: &[u8]) -> Result<Head, JournalError> {
    match (v.len(), u64_at(v, 0), id_at(v, 8)) {
        (HEAD_VALUE_LEN, Some(seq), Some(hash)) => Ok(Head { seq, hash }),
        _ => Err(corrupt(path, format!("head value of {} bytes", v.len()))),
    }
}

/// Per-room counters kept so count/pending/max-lamport queries are O(log n).
#[derive(Default, Clone, Copy)]
struct RoomStats {
    count: u64,
    pending: u64,
    max_lamport: u64,
    /// Contiguous entries the journal's [`IsMessage`] accepts.
    messages: u64,
}

fn encode_stats(s: &RoomStats) -> [u8; ROOM_VALUE_LEN] {
    let mut v = [0; ROOM_VALUE_LEN];
    v[..8].copy_from_slice(&s.count.to_be_bytes());
    v[8..16].copy_from_slice(&s.pending.to_be_bytes());
    v[16..24].copy_from_slice(&s.max_lamport.to_be_bytes());
    v[24..].copy_from_slice(&s.messages.to_be_bytes());
    v
}

fn decode_stats(path: &Path, v: &[u8]) -> Result<RoomStats, JournalError> {
    let fields = (u64_at(v, 0), u64_at(v, 8), u64_at(v, 16), u64_at(v, 24));
    match (v.len(), fields) {
        (ROOM_VALUE_LEN, (Some(count), Some(pending), Some(max_lamport), Some(messages))) => {
            Ok(RoomStats {
                count,
                pending,
                max_lamport,
                messages,
            })
        }
        _ => Err(corrupt(path, format!("room counters of {} bytes", v.len()))),
    }
}

/// Which entries count as messages in a room's [`Journal::messages`], given an entry's
/// envelope bytes: the journal cannot read envelopes, so whoever opens it says.
pub type IsMessage = fn(&[u8]) -> bool;

fn every_entry(_: &[u8]) -> bool {
    true
}

type RawTable<'t> = Table<'t, Bytes, Bytes>;

/// The chain tables of one write transaction, plus a room-counter cache flushed before commit.
struct Tx<'t> {
    path: &'t Path,
    entries: RawTable<'t>,
    pending: RawTable<'t>,
    heads: RawTable<'t>,
    order: RawTable<'t>,
    forks: RawTable<'t>,
    rooms: RawTable<'t>,
    revisions: RawTable<'t>,
    reactions: RawTable<'t>,
    stats: BTreeMap<Id, RoomStats>,
    is_message: IsMessage,
    changed: bool,
    /// Heads written, applied to the journal's vector cache once the commit succeeds.
    new_heads: Vec<(Id, Id, Head)>,
}

impl<'t> Tx<'t> {
    fn open(
        txn: &'t WriteTransaction,
        path: &'t Path,
        is_message: IsMessage,
    ) -> Result<Self, JournalError> {
        Ok(Self {
            path,
            entries: txn.open_table(ENTRIES).at(path)?,
            pending: txn.open_table(PENDING).at(path)?,
            heads: txn.open_table(HEADS).at(path)?,
            order: txn.open_table(ORDER).at(path)?,
            forks: txn.open_table(FORKS).at(path)?,
            rooms: txn.open_table(ROOMS).at(path)?,
            revisions: txn.open_table(REVISIONS).at(path)?,
            reactions: txn.open_table(REACTIONS).at(path)?,
            stats: BTreeMap::new(),
            is_message,
            changed: false,
            new_heads: Vec::new(),
        })
    }

    fn stats_mut(&mut self, room: &Id) -> Result<&mut RoomStats, JournalError> {
        match self.stats.entry(*room) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => {
                let loaded = match self.rooms.get(&room[..]).at(self.path)? {
                    Some(v) => decode_stats(self.path, v.value())?,
                    None => RoomStats::default(),
                };
                Ok(e.insert(loaded))
            }
        }
    }

    fn flush(&mut self) -> Result<(), JournalError> {
        for (room, s) in &self.stats {
            self.rooms
                .insert(&room[..], &encode_stats(s)[..])
                .at(self.path)?;
        }
        Ok(())
    }

    fn head(&self, room: &Id, author: &Id) -> Result<Option<Head>, JournalError> {
        match self.heads.get(&head_key(room, author)[..]).at(self.path)? {
            Some(v) => Ok(Some(decode_head(self.path, v.value())?)),
            None => Ok(None),
        }
    }

    fn get_rec(table: &RawTable<'_>, path: &Path, key: &[u8]) -> Result<Option<Rec>, JournalError> {
        match table.get(key).at(path)? {
            Some(v) => Ok(Some(decode_rec(path, key, v.value())?)),
            None => Ok(None),
        }
    }

    /// Notes that `meta`'s entry revises its author's entry `target`, unless a later one
    /// of the author's revises it already: the latest revision is the one shown.
    fn revise(&mut self, meta: &EntryMeta, target: u64) -> Result<(), JournalError> {
        if target == 0 || target >= meta.seq {
            return Err(JournalError::InvalidEntry {
                detail: format!(
                    "entry {} of author {} revises entry {target}: only earlier ones can be",
                    meta.seq,
                    short(&meta.author)
                ),
            });
        }
        let key = entry_key(&meta.room, &meta.author, target);
        let latest = match self.revisions.get(&key[..]).at(self.path)? {
            Some(v) => Some(decode_revision(self.path, &key, v.value())?),
            None => None,
        };
        if latest.is_none_or(|seq| seq < meta.seq) {
            self.revisions
                .insert(&key[..], &meta.seq.to_be_bytes()[..])
                .at(self.path)?;
            self.changed = true;
        }
        Ok(())
    }

    /// Keeps the first proof per (room, author, seq): enough to mark the author, and bounded.
    fn record_fork(
        &mut self,
        room: &Id,
        author: &Id,
        seq: u64,
        existing: &Id,
        conflicting: &Id,
        envelope: &[u8],
    ) -> Result<(), JournalError> {
        let key = entry_key(room, author, seq);
        if self.forks.get(&key[..]).at(self.path)?.is_some() {
            return Ok(());
        }
        tracing::warn!(
            room = %short(room),
            author = %short(author),
            seq,
            "fork detected: author signed two different histories"
        );
        let mut v = Vec::with_capacity(FORK_HEADER_LEN + envelope.len());
        v.extend_from_slice(existing);
        v.extend_from_slice(conflicting);
        v.extend_from_slice(envelope);
        self.forks.insert(&key[..], &v[..]).at(self.path)?;
        self.changed = true;
        Ok(())
    }

    /// Writes one entry into the contiguous tables (the caller has checked its `prev`).
    fn insert_contiguous(
        &mut self,
        room: &Id,
        author: &Id,
        seq: u64,
        value: &[u8],
        lamport: u64,
    ) -> Result<(), JournalError> {
        let key = entry_key(room, author, seq);
        self.entries.insert(&key[..], value).at(self.path)?;
        let okey = order_key(room, lamport, author, seq);
        self.order.insert(&okey[..], &[][..]).at(self.path)?;
        let message = value.get(REC_HEADER_LEN..).is_some_and(self.is_message);
        let s = self.stats_mut(room)?;
        s.count += 1;
        s.messages += u64::from(message);
        s.max_lamport = s.max_lamport.max(lamport);
        self.changed = true;
        Ok(())
    }

    /// [`Self::append`], noting what the entry revises once it is stored (in its chain or
    /// past a gap).
    fn append_noting(
        &mut self,
        meta: &EntryMeta,
        envelope: &[u8],
        note: Option<Note>,
    ) -> Result<AppendOutcome, JournalError> {
        let outcome = self.append(meta, envelope)?;
        if matches!(
            outcome,
            AppendOutcome::Appended { .. } | AppendOutcome::Pending
        ) {
            match note {
                Some(Note::Revises(target)) => self.revise(meta, target)?,
                Some(Note::ReactsTo(author, seq)) => {
                    let key = reaction_key(&meta.room, &author, seq, &meta.author, meta.seq);
                    self.reactions.insert(&key[..], &[][..]).at(self.path)?;
                    self.changed = true;
                }
                None => {}
            }
        }
        Ok(outcome)
    }

    fn append(&mut self, meta: &EntryMeta, envelope: &[u8]) -> Result<AppendOutcome, JournalError> {
        if meta.seq == 0 {
            return Err(JournalError::InvalidEntry {
                detail: format!(
                    "seq 0 from author {} in room {} (sequences start at 1)",
                    short(&meta.author),
                    short(&meta.room)
                ),
            });
        }
        let (room, author, seq) = (&meta.room, &meta.author, meta.seq);
        let head = self.head(room, author)?;
        let (head_seq, head_hash) = head.map_or((0, ZERO), |h| (h.seq, h.hash));
        let key = entry_key(room, author, seq);

        if seq <= head_seq {
            let stored = Self::get_rec(&self.entries, self.path, &key)?.ok_or_else(|| {
                corrupt(
                    self.path,
                    format!("{}: missing below the head", describe_key(&key)),
                )
            })?;
            if stored.hash == meta.hash {
                return Ok(AppendOutcome::Duplicate);
            }
            self.record_fork(room, author, seq, &stored.hash, &meta.hash, envelope)?;
            return Ok(AppendOutcome::Fork);
        }

        if seq == head_seq + 1 {
            if meta.prev != head_hash {
                self.record_fork(room, author, seq - 1, &head_hash, &meta.prev, envelope)?;
                return Ok(AppendOutcome::Fork);
            }
            // A pending entry never sits at head+1 (it is promoted or dropped), but the chain
            // wins if one does.
            if let Some(stale) = self.take_pending(&key)?
                && stale.hash != meta.hash
            {
                self.record_fork(room, author, seq, &meta.hash, &stale.hash, &stale.envelope)?;
            }
            self.insert_contiguous(room, author, seq, &encode_rec(meta, envelope), meta.lamport)?;
            let mut top = Head {
                seq,
                hash: meta.hash,
            };
            // Promote pending successors that now link up.
            while let Some(next) = top.seq.checked_add(1) {
                let nkey = entry_key(room, author, next);
                let Some(rec) = self.take_pending(&nkey)? else {
                    break;
                };
                if rec.prev != top.hash {
                    // Dropped from pending: the proof keeps its envelope.
                    self.record_fork(room, author, top.seq, &top.hash, &rec.prev, &rec.envelope)?;
                    break;
                }
                let value = encode_rec(
                    &EntryMeta {
                        room: *room,
                        author: *author,
                        seq: next,
                        prev: rec.prev,
                        hash: rec.hash,
                        lamport: rec.lamport,
                    },
                    &rec.envelope,
                );
                self.insert_contiguous(room, author, next, &value, rec.lamport)?;
                top = Head {
                    seq: next,
                    hash: rec.hash,
                };
            }
            self.heads
                .insert(&head_key(room, author)[..], &encode_head(&top)[..])
                .at(self.path)?;
            self.new_heads.push((*room, *author, top));
            return Ok(AppendOutcome::Appended {
                advanced_to: top.seq,
            });
        }

        // Past a gap: provisional. Check it against stored neighbours so a fork is caught early.
        if let Some(p) = Self::get_rec(&self.pending, self.path, &key)? {
            if p.hash == meta.hash {
                return Ok(AppendOutcome::Duplicate);
            }
            self.record_fork(room, author, seq, &p.hash, &meta.hash, envelope)?;
            return Ok(AppendOutcome::Fork);
        }
        let before = entry_key(room, author, seq - 1);
        if let Some(p) = Self::get_rec(&self.pending, self.path, &before)?
            && p.hash != meta.prev
        {
            self.record_fork(room, author, seq - 1, &p.hash, &meta.prev, envelope)?;
            return Ok(AppendOutcome::Fork);
        }
        if let Some(after_seq) = seq.checked_add(1)
            && let Some(p) = Self::get_rec(
                &self.pending,
                self.path,
                &entry_key(room, author, after_seq),
            )?
            && p.prev != meta.hash
        {
            self.record_fork(room, author, seq, &p.prev, &meta.hash, envelope)?;
            return Ok(AppendOutcome::Fork);
        }
        self.pending
            .insert(&key[..], &encode_rec(meta, envelope)[..])
            .at(self.path)?;
        let s = self.stats_mut(room)?;
        s.pending += 1;
        s.max_lamport = s.max_lamport.max(meta.lamport);
        self.changed = true;
        Ok(AppendOutcome::Pending)
    }

    /// Removes and returns a pending entry, keeping the pending counter in step.
    fn take_pending(&mut self, key: &[u8]) -> Result<Option<Rec>, JournalError> {
        let path = self.path;
        let Some(rec) = self
            .pending
            .remove(key)
            .at(path)?
            .map(|v| decode_rec(path, key, v.value()))
            .transpose()?
        else {
            return Ok(None);
        };
        let room = id_at(key, 0).ok_or_else(|| corrupt(path, "pending key"))?;
        let s = self.stats_mut(&room)?;
        s.pending = s.pending.saturating_sub(1);
        self.changed = true;
        Ok(Some(rec))
    }
}

/// A room's version vector, shared with callers without copying.
pub type Vector = Arc<BTreeMap<Id, Head>>;

/// The journal: one redb file. Cheap to share behind an `Arc`; redb serialises writers.
pub struct Journal {
    db: Database,
    path: PathBuf,
    /// Version vectors of the rooms read so far, kept in step with every commit: every
    /// received message, receipt and sync exchange needs its room's vector.
    vectors: Mutex<HashMap<Id, Vector>>,
    /// Deferred commits not on disk yet (see [`Journal::append_batch_deferred`]).
    unflushed: AtomicBool,
    is_message: IsMessage,
    /// Why writes stopped, once one failed for want of the disk (see [`Journal::unwritable`]).
    unwritable: OnceLock<String>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

impl Journal {
    /// Opens or creates the file. A corrupt, truncated or foreign file gives an error naming the
    /// path; the file is never deleted or replaced.
    ///
    /// Every open verifies page checksums (a full read of the file): redb's plain open trusts
    /// the file and may panic on one damaged outside redb.
    ///
    /// Every entry counts as a message in [`Journal::messages`]; see [`Journal::open_counting`].
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        Self::open_counting(path, every_entry)
    }

    /// [`Journal::open`], counting as messages the entries `is_message` accepts. Give the same
    /// function every time a file is opened: the counts are kept as entries arrive.
    pub fn open_counting(path: &Path, is_message: IsMessage) -> Result<Self, JournalError> {
        let owned = path.to_path_buf();
        // Surface a missing directory or permission problem as such, not as corruption. A new
        // file is the user's alone, as the data dir is.
        let mut file = std::fs::OpenOptions::new();
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
        file.read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|cause| JournalError::Io {
                path: owned.clone(),
                cause,
            })?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_check_integrity_on_open(true)
            .create(path);
        Self::with_database(db, owned, is_message)
    }

    /// [`Journal::open_counting`] over a database opened already (by a test, on a backend of
    /// its own).
    fn with_database(
        db: Result<Database, redb::DatabaseError>,
        owned: PathBuf,
        is_message: IsMessage,
    ) -> Result<Self, JournalError> {
        let db = db.map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen
            | redb::DatabaseError::LockProtocolMismatch => JournalError::Locked {
                path: owned.clone(),
            },
            other => JournalError::Corrupt {
                path: owned.clone(),
                cause: other.into(),
            },
        })?;
        let journal = Self {
            db,
            path: owned,
            vectors: Mutex::default(),
            unflushed: AtomicBool::new(false),
            is_message,
            unwritable: OnceLock::new(),
        };
        journal.init().map_err(|e| match e {
            JournalError::Storage { path, cause } => JournalError::Corrupt { path, cause },
            other => other,
        })?;
        tracing::debug!(path = %journal.path.display(), "journal opened");
        Ok(journal)
    }

    /// Checks the schema version and creates all tables, so reads never meet a missing table.
    fn init(&self) -> Result<(), JournalError> {
        let path = self.path.as_path();
        let txn = self.begin_write()?;
        {
            let mut meta = txn.open_table(META).at(path)?;
            let found = match meta.get(SCHEMA_KEY).at(path)? {
                Some(v) => {
                    let b: [u8; 4] = v.value().try_into().map_err(|_| {
                        corrupt(path, format!("schema version of {} bytes", v.value().len()))
                    })?;
                    Some(u32::from_be_bytes(b))
                }
                None => None,
            };
            let mut recount = false;
            match found {
                Some(SCHEMA_VERSION) | Some(2) => {}
                Some(1) => recount = true,
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(JournalError::NewerSchema {
                        path: path.to_path_buf(),
                        found: v,
                        supported: SCHEMA_VERSION,
                    });
                }
                Some(v) => return Err(corrupt(path, format!("unknown schema version {v}"))),
                None => {}
            }
            if found != Some(SCHEMA_VERSION) {
                meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes()[..])
                    .at(path)?;
            }
            for def in [
                ENTRIES,
                PENDING,
                HEADS,
                ORDER,
                FORKS,
                ROOMS,
                SETTINGS,
                CHUNKS,
                CHUNK_TAILS,
                PROVIDES,
                DECLINED,
                REVISIONS,
                REACTIONS,
            ] {
                txn.open_table(def).at(path)?;
            }
            if recount {
                self.count_messages(&txn)?;
            }
            // A file written before the tally existed, or by a build that did not keep it,
            // holds a different number of chunks than it says: count them once. So is a
            // tally that does not parse: it is derived, so it is rebuilt, not fatal.
            let chunks = txn.open_table(CHUNKS).at(path)?;
            let count = chunks.len().at(path)?;
            if read_tally(&meta, path).ok().map(|(n, _)| n) != Some(count) {
                let mut bytes = 0u64;
                for table in [chunks, txn.open_table(CHUNK_TAILS).at(path)?] {
                    for row in table.iter().at(path)? {
                        bytes += row.at(path)?.1.value().len() as u64;
                    }
                }
                write_tally(&mut meta, path, (count, bytes))?;
            }
        }
        txn.commit().at(path)
    }

    /// Schema 1 to 2: each room's counters gain the count of its messages, read off its
    /// entries once.
    fn count_messages(&self, txn: &WriteTransaction) -> Result<(), JournalError> {
        let path = self.path.as_path();
        let mut rooms = txn.open_table(ROOMS).at(path)?;
        let entries = txn.open_table(ENTRIES).at(path)?;
        let mut counted = Vec::new();
        for row in rooms.iter().at(path)? {
            let (k, v) = row.at(path)?;
            let (k, v) = (k.value(), v.value());
            let room = match (id_at(k, 0), k.len(), v.len()) {
                (Some(room), 32, ROOM_VALUE_LEN_V1) => room,
                _ => return Err(corrupt(path, format!("room counters of {} bytes", v.len()))),
            };
            let mut full = v.to_vec();
            full.extend_from_slice(&[0; 8]);
            let mut stats = decode_stats(path, &full)?;
            let (lo, hi) = room_bounds::<ENTRY_KEY_LEN>(&room);
            for item in entries.range(&lo[..]..=&hi[..]).at(path)? {
                let (_, v) = item.at(path)?;
                let message = v.value().get(REC_HEADER_LEN..).is_some_and(self.is_message);
                stats.messages += u64::from(message);
            }
            counted.push((room, stats));
        }
        for (room, stats) in counted {
            rooms
                .insert(&room[..], &encode_stats(&stats)[..])
                .at(path)?;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Peer data must survive a crash intact, hence immediate durability and two-phase commit
    /// (whose header is never at the mercy of a checksum, since peers choose what we write).
    fn begin_write(&self) -> Result<WriteTransaction, JournalError> {
        self.begin_write_with(true)
    }

    fn begin_write_with(&self, durable: bool) -> Result<WriteTransaction, JournalError> {
        if let Some(cause) = self.unwritable.get() {
            return Err(JournalError::Unwritable {
                path: self.path.clone(),
                cause: cause.clone(),
            });
        }
        let mut txn = (self.db.begin_write().at(&self.path)).map_err(|e| self.failed(e))?;
        if durable {
            txn.set_durability(Durability::Immediate).at(&self.path)?;
            txn.set_two_phase_commit(true);
        } else {
            txn.set_durability(Durability::None).at(&self.path)?;
        }
        Ok(txn)
    }

    /// Commits; a durable commit also makes every deferred commit before it durable. The
    /// flag changes while the transaction still holds redb's write lock, so no other commit
    /// slips in between.
    fn commit(&self, txn: WriteTransaction, durable: bool) -> Result<(), JournalError> {
        if durable {
            let was = self.unflushed.swap(false, Ordering::AcqRel);
            txn.commit()
                .at(&self.path)
                .inspect_err(|_| self.unflushed.store(was, Ordering::Release))
                .map_err(|e| self.failed(e))
        } else {
            txn.commit().at(&self.path).map_err(|e| self.failed(e))?;
            self.unflushed.store(true, Ordering::Release);
            Ok(())
        }
    }

    /// A write's error, noted if it is an I/O error. After one, redb refuses every write
    /// ("previous I/O error") until the file is opened again, which only a new start of the
    /// node does safely: reopened, the file goes back to its last durable commit, which the
    /// vectors and counts held in memory here and in the core have gone past.
    fn failed(&self, e: JournalError) -> JournalError {
        let cause = match &e {
            JournalError::Storage {
                cause: redb::Error::Io(io),
                ..
            } => io.to_string(),
            JournalError::Storage {
                cause: redb::Error::PreviousIo,
                ..
            } => "an earlier write failed".to_string(),
            _ => return e,
        };
        let cause = self.unwritable.get_or_init(|| cause).clone();
        tracing::error!(path = %self.path.display(), %cause, "the journal can no longer be written");
        JournalError::Unwritable {
            path: self.path.clone(),
            cause,
        }
    }

    /// Why the journal can no longer be written, once a write failed with an I/O error (the
    /// disk full, gone or failing): every write since has failed with
    /// [`JournalError::Unwritable`]. Reads still work. What was committed durably before is
    /// on disk, and a new start opens it.
    pub fn unwritable(&self) -> Option<&str> {
        self.unwritable.get().map(String::as_str)
    }

    /// Runs `f` over the chain tables in one write transaction; commits only if it changed
    /// something, so duplicates cost no fsync. A `setting` is stored along with a change.
    fn write_chain<T>(
        &self,
        durable: bool,
        setting: Option<(&str, &[u8])>,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let txn = self.begin_write_with(durable)?;
        let (out, changed, new_heads) = {
            let mut tx = Tx::open(&txn, &self.path, self.is_message)?;
            let out = f(&mut tx)?;
            tx.flush()?;
            (out, tx.changed, std::mem::take(&mut tx.new_heads))
        };
        if changed {
            if let Some((key, value)) = setting {
                txn.open_table(SETTINGS)
                    .at(&self.path)?
                    .insert(key.as_bytes(), value)
                    .at(&self.path)?;
            }
            // Locked across the commit, so a vector loaded meanwhile cannot be older.
            let mut vectors = self.cached_vectors();
            self.commit(txn, durable)?;
            for (room, author, head) in new_heads {
                if let Some(v) = vectors.get_mut(&room) {
                    Arc::make_mut(v).insert(author, head);
                }
            }
        } else {
            txn.abort().at(&self.path)?;
        }
        Ok(out)
    }

    fn cached_vectors(&self) -> std::sync::MutexGuard<'_, HashMap<Id, Vector>> {
        self.vectors.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one entry durably. See [`AppendOutcome`].
    pub fn append(&self, meta: &EntryMeta, envelope: &[u8]) -> Result<AppendOutcome, JournalError> {
        self.append_noting(meta, envelope, None)
    }

    /// [`Self::append`] for an entry that says something of another (see [`Note`]), noted in
    /// the same transaction ([`Self::revision`], [`Self::reactions`]).
    pub fn append_noting(
        &self,
        meta: &EntryMeta,
        envelope: &[u8],
        note: Option<Note>,
    ) -> Result<AppendOutcome, JournalError> {
        self.append_noting_with(meta, envelope, note, None)
    }

    /// [`Self::append_noting`] that also stores `setting` (key, opaque value) in the same
    /// commit, if the entry is stored: a value that goes with it, at no commit of its own.
    pub fn append_noting_with(
        &self,
        meta: &EntryMeta,
        envelope: &[u8],
        note: Option<Note>,
        setting: Option<(&str, &[u8])>,
    ) -> Result<AppendOutcome, JournalError> {
        self.write_chain(true, setting, |tx| tx.append_noting(meta, envelope, note))
    }

    /// Same as [`Self::append`] for many entries in one write transaction (batched catch-up);
    /// outcomes in input order. Later entries see earlier ones, so a run of seqs becomes
    /// contiguous together. An invalid entry fails the whole batch and nothing is written.
    pub fn append_batch(
        &self,
        entries: &[(EntryMeta, Vec<u8>)],
    ) -> Result<Vec<AppendOutcome>, JournalError> {
        let plain = entries
            .iter()
            .map(|(meta, env)| (meta, env.as_slice(), None));
        self.append_batch_with(true, plain)
    }

    /// [`Self::append_batch`] whose commit is visible at once but reaches the disk only at the
    /// next [`Self::flush`] or durable commit. For entries that other nodes hold too (received
    /// ones): a crash loses at most what came in since the last flush, and reconciliation
    /// brings it back, while each received message costs no disk sync of its own.
    pub fn append_batch_deferred(
        &self,
        entries: &[(EntryMeta, Vec<u8>)],
    ) -> Result<Vec<AppendOutcome>, JournalError> {
        let plain = entries
            .iter()
            .map(|(meta, env)| (meta, env.as_slice(), None));
        self.append_batch_with(false, plain)
    }

    /// [`Self::append_batch_deferred`] with, per entry, what it says of another, if
    /// anything (see [`Self::append_noting`]).
    pub fn append_batch_deferred_noting(
        &self,
        entries: &[(EntryMeta, Vec<u8>, Option<Note>)],
    ) -> Result<Vec<AppendOutcome>, JournalError> {
        let noted = entries
            .iter()
            .map(|(meta, env, note)| (meta, env.as_slice(), *note));
        self.append_batch_with(false, noted)
    }

    fn append_batch_with<'a>(
        &self,
        durable: bool,
        entries: impl ExactSizeIterator<Item = (&'a EntryMeta, &'a [u8], Option<Note>)>,
    ) -> Result<Vec<AppendOutcome>, JournalError> {
        if entries.len() == 0 {
            return Ok(Vec::new());
        }
        self.write_chain(durable, None, |tx| {
            entries
                .map(|(meta, envelope, note)| tx.append_noting(meta, envelope, note))
                .collect()
        })
    }

    /// The seq of the author's latest entry that revises its entry `seq` in the room (held
    /// contiguous or pending), if any.
    pub fn revision(&self, room: &Id, author: &Id, seq: u64) -> Result<Option<u64>, JournalError> {
        Ok(self.notes(room, &[(*author, seq)])?[0].revision)
    }

    /// How many of an author's contiguous entries in the room `keep` accepts (given each
    /// envelope, never copied out).
    pub fn count_chain_where(
        &self,
        room: &Id,
        author: &Id,
        mut keep: impl FnMut(&[u8]) -> bool,
    ) -> Result<u64, JournalError> {
        let path = self.path.as_path();
        let txn = self.db.begin_read().at(path)?;
        let entries = txn.open_table(ENTRIES).at(path)?;
        let (lo, hi) = (
            entry_key(room, author, 1),
            entry_key(room, author, u64::MAX),
        );
        let mut n = 0;
        for item in entries.range(&lo[..]..=&hi[..]).at(path)? {
            let (_, v) = item.at(path)?;
            if v.value().get(REC_HEADER_LEN..).is_some_and(&mut keep) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// What later entries say of each of the room's entries (author, seq), in one read, in
    /// input order: its latest revision, and its reactions.
    pub fn notes(&self, room: &Id, entries: &[(Id, u64)]) -> Result<Vec<Notes>, JournalError> {
        let path = self.path.as_path();
        let txn = self.db.begin_read().at(path)?;
        let revisions = txn.open_table(REVISIONS).at(path)?;
        let reactions = txn.open_table(REACTIONS).at(path)?;
        entries
            .iter()
            .map(|(author, seq)| {
                let key = entry_key(room, author, *seq);
                let revision = match revisions.get(&key[..]).at(path)? {
                    Some(v) => Some(decode_revision(path, &key, v.value())?),
                    None => None,
                };
                let lo = reaction_key(room, author, *seq, &[0; 32], 0);
                let hi = reaction_key(room, author, *seq, &[0xff; 32], u64::MAX);
                let mut given = Vec::new();
                for item in reactions.range(&lo[..]..=&hi[..]).at(path)? {
                    let (k, _) = item.at(path)?;
                    let k = k.value();
                    match (id_at(k, ENTRY_KEY_LEN), u64_at(k, ENTRY_KEY_LEN + 32)) {
                        (Some(reactor), Some(seq)) if k.len() == REACTION_KEY_LEN => {
                            given.push((reactor, seq));
                        }
                        _ => {
                            return Err(corrupt(
                                path,
                                format!("reaction key of {} bytes", k.len()),
                            ));
                        }
                    }
                }
                Ok(Notes {
                    revision,
                    reactions: given,
                })
            })
            .collect()
    }

    /// Whether deferred commits wait for a [`Self::flush`].
    pub fn has_unflushed(&self) -> bool {
        self.unflushed.load(Ordering::Acquire)
    }

    /// Makes deferred commits durable; returns whether there were any.
    pub fn flush(&self) -> Result<bool, JournalError> {
        if !self.has_unflushed() {
            return Ok(false);
        }
        self.commit(self.begin_write()?, true)?;
        Ok(true)
    }

    pub fn head(&self, room: &Id, author: &Id) -> Result<Option<Head>, JournalError> {
        if let Some(v) = self.cached_vectors().get(room) {
            return Ok(v.get(author).copied());
        }
        let path = self.path.as_path();
        let txn = self.db.begin_read().at(path)?;
        let heads = txn.open_table(HEADS).at(path)?;
        match heads.get(&head_key(room, author)[..]).at(path)? {
            Some(v) => Ok(Some(decode_head(path, v.value())?)),
            None => Ok(None),
        }
    }

    /// The room's version vector: author -> contiguous head.
    pub fn version_vector(&self, room: &Id) -> Result<BTreeMap<Id, Head>, JournalError> {
        Ok(self.vector(room)?.as_ref().clone())
    }

    /// The room's version vector, shared: no copy unless the caller makes one.
    pub fn vector(&self, room: &Id) -> Result<Vector, JournalError> {
        let mut vectors = self.cached_vectors();
        if let Some(v) = vectors.get(room) {
            return Ok(v.clone());
        }
        let v = Arc::new(self.read_vector(room)?);
        vectors.insert(*room, v.clone());
        Ok(v)
    }

    fn read_vector(&self, room: &Id) -> Result<BTreeMap<Id, Head>, JournalError> {
        let path = self.path.as_path();
        let txn = self.db.begin_read().at(path)?;
        let heads = txn.open_table(HEADS).at(path)?;
        let (lo, hi) = room_bounds::<HEAD_KEY_LEN>(room);
        let mut out = BTreeMap::new();
        for item in heads.range(&lo[..]..=&hi[..]).at(path)? {
            let (k, v) = item.at(path)?;
            let author = id_at(k.value(), 32)
                .ok_or_else(|| corrupt(path, format!("head key of {} bytes", k.value().len())))?;
            out.insert(author, decode_head(path, v.value())?);
        }
        Ok(out)
    }

    /// Contiguous entries of one author with `from <= seq <= to`, at most `limit`, ascending.
    pub fn range(
        &self,
        room: &Id,
        author: &Id,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<StoredEntry>, JournalError> {
        if from > to || limit == 0 {
            return Ok(Vec::new());
        }
        let path = self.path.as_path();
        let txn = self.db.begin_read().at(path)?;
        let entries = txn.open_table(ENTRIES).at(path)?;
        let (lo, hi) = (entry_key(room, author, from), entry_key(room, author, to));
        let mut out = Vec::new();
        for item in entries.range(&lo[..]..=&hi[..]).at(path)?.take(limit) {
            let (k, v) = item.at(path)?;
            let (r, a, seq) = decode_entry_key(path, k.value())?;
            out.push(stored_entry(
                r,
                a,
                seq,
                decode_rec(path, k.value(), v.value())?,
            ));
        }
        Ok(out)
    }

    /// One entry, contiguous or pending.
    pub fn get(
        &self,
        room: &Id,
        author: &Id,
        seq: u64,
    ) -> Result<Option<StoredEntry>, JournalError> {
        let path = self.path.as_path();
        let txn = self.db.begin_read().at(path)?;
        let key = entry_key(room, author, seq);
        for def in [ENTRIES, PENDING] {
            let table = txn.open_table(def).at(path)?;
            if let Some(v) = table.get(&key[..]).at(path)? {
                let rec = decode_rec(path, &key, v.value())?;
                return Ok(Some(stored_entry(*room, *author, seq, rec)));
            }
        }
        Ok(None)
    }

    /// The last `limit` contiguous entries of the room in display order: ascending
    /// (lamport, author, seq), a total order every node computes identically.
    pub fn history(&self, room: &Id, limit: usize) -> Result<Vec<StoredEntry>, JournalError> {
        self.history_where(room, Page::last(limit), |_| true)
    }

    /// A page of the room's entries whose envelope `keep` accepts, in display order (see
    /// [`Page`]). Entries it turns down are never copied out of the database, so looking for
    /// a rare kind of entry (files) in a long history holds only what it finds.
    pub fn history_where(
        &self,
        room: &Id,
        page: Page,
        keep: impl FnMut(&[u8]) -> bool,
    ) -> Result<Vec<StoredEntry>, JournalError> {
        self.history_of(room, page, |_| true, keep)
    }

    /// [`Self::history_where`], passing over the entries of authors `of` turns down without
    /// reading them.
    pub fn history_of(
        &self,
        room: &Id,
        page: Page,
        of: impl Fn(&Id) -> bool,
        mut keep: impl FnMut(&[u8]) -> bool,
    ) -> Result<Vec<StoredEntry>, JournalError> {
        if page.limit == 0 {
            return Ok(Vec::new());
        }
        let path = self.path.as_path();
        let txn = self.db.begin_read().at(path)?;
        let order = txn.open_table(ORDER).at(path)?;
        let entries = txn.open_table(ENTRIES).at(path)?;
        let (lo, hi) = room_bounds::<ORDER_KEY_LEN>(room);
        let before = page
            .before
            .map(|p| order_key(room, p.lamport, &p.author, p.seq));
        let range = match &before {
            Some(before) => order.range(&lo[..]..&before[..]),
            None => order.range(&lo[..]..=&hi[..]),
        };
        let mut skip = page.skip;
        let mut out = Vec::new();
        for item in range.at(path)?.rev() {
            let (k, _) = item.at(path)?;
            let k = k.value();
            let (Some(author), Some(seq), ORDER_KEY_LEN) = (id_at(k, 40), u64_at(k, 72), k.len())
            else {
                return Err(corrupt(path, format!("order key of {} bytes", k.len())));
            };
            if !of(&author) {
                continue;
            }
            let key = entry_key(room, &author, seq);
            let v = entries.get(&key[..]).at(path)?.ok_or_else(|| {
                corrupt(path, format!("{}: indexed but missing", describe_key(&key)))
            })?;
            // A value too short for its header is reported as corrupt below, kept or not.
            if v.value()
                .get(REC_HEADER_LEN..)
                .is_some_and(|env| !keep(env))
            {
                continue;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            out.push(stored_entry(
                *room,
                author,
                seq,
                decode_rec(path, &key, v.value())?,
            ));
            if out.len() == page.limit {
                break;
            }
        }
        out.reverse();
        Ok(out)
    }

    fn room_stats(&self, room: &Id) -> Result<RoomStats, JournalError> {
        let path = self.path.as_path();
        let txn = self.db.begin_read().at(path)?;
        let rooms = txn.open_table(ROOMS).at(path)?;
        match rooms.get(&room[..]).at(path)? {
            Some(v) => decode_stats(path, v.value()),
            None => Ok(RoomStats::default()),
        }
    }

    /// Number of contiguous entries in the room.
    pub fn count(&self, room: &Id) -> Result<u64, JournalError> {
        Ok(self.room_stats(room)?.count)
    }

    /// Number of the room's contiguous entries that count as messages (see
    /// [`Journal::open_counting`]).
    pub fn messages(&self, room: &Id) -> Result<u64, JournalError> {
        Ok(self.room_stats(room)?.messages)
    }

    /// Highest lamport among the room's stored entries, pending included (0 if none), so a new
    /// message orders after everything this node has seen.
    pub fn max_lamport(&self, room: &Id) -> Result<u64, JournalError> {
        Ok(self.room_stats(room)?.max_lamport)
    }

    /// Pending (non-contiguous) entry count for the room.
    pub fn pending_count(&self, room: &Id) -> Result<u64, JournalError> {
        Ok(self.room_stats(room)?.pending)
    }

    /// Fork proofs recorded in this room, ordered by (author, seq).
    pub fn forks(&self, room: &Id) -> Result<Vec<ForkProof>, JournalError> {
        let path = self.path.as_path();
        let txn = self.db.begin_read().at(path)?;
        let forks = txn.open_table(FORKS).at(path)?;
        let (lo, hi) = room_bounds::<ENTRY_KEY_LEN>(room);
        let mut out = Vec::new();
        for item in forks.range(&lo[..]..=&hi[..]).at(path)? {
            let (k, v) = item.at(path)?;
            let (_, author, seq) = decode_entry_key(path, k.value())?;
            let v = v.value();
            let (Some(existing), Some(conflicting), Some(env)) =
                (id_at(v, 0), id_at(v, 32), v.get(FORK_HEADER_LEN..))
            else {
                return Err(corrupt(
                    path,
                    format!(
                        "fork proof for {}: value too short",
                        describe_key(k.value())
                    ),
                ));
            };
            out.push(ForkProof {
                author,
                seq,
                existing,
                conflicting,
                conflicting_envelope: env.to_vec(),
            });
        }
        Ok(out)
    }

    /// Removes all entries, pending entries, heads, forks, revisions and counters of a room.
    pub fn purge_room(&self, room: &Id) -> Result<(), JournalError> {
        let path = self.path.as_path();
        let txn = self.begin_write()?;
        {
            let (lo, hi) = room_bounds::<ENTRY_KEY_LEN>(room);
            for def in [ENTRIES, PENDING, FORKS, REVISIONS] {
                let mut t = txn.open_table(def).at(path)?;
                t.retain_in(&lo[..]..=&hi[..], |_, _| false).at(path)?;
            }
            let (lo, hi) = room_bounds::<REACTION_KEY_LEN>(room);
            let mut reactions = txn.open_table(REACTIONS).at(path)?;
            reactions
                .retain_in(&lo[..]..=&hi[..], |_, _| false)
                .at(path)?;
            let (lo, hi) = room_bounds::<HEAD_KEY_LEN>(room);
            let mut heads = txn.open_table(HEADS).at(path)?;
            heads.retain_in(&lo[..]..=&hi[..], |_, _| false).at(path)?;
            let (lo, hi) = room_bounds::<ORDER_KEY_LEN>(room);
            let mut order = txn.open_table(ORDER).at(path)?;
            order.retain_in(&lo[..]..=&hi[..], |_, _| false).at(path)?;
            let mut rooms = txn.open_table(ROOMS).at(path)?;
            rooms.remove(&room[..]).at(path)?;
        }
        let mut vectors = self.cached_vectors();
        self.commit(txn, true)?;
        vectors.remove(room);
        Ok(())
    }

    /// Stores sealed file chunks under their names in one transaction. Durable only with
    /// `durable`: a chunk lost in a crash is fetched again.
    pub fn put_chunks(
        &self,
        chunks: &[([u8; 32], Vec<u8>)],
        durable: bool,
    ) -> Result<(), JournalError> {
        let path = self.path.as_path();
        let txn = self.begin_write_with(durable)?;
        {
            let mut meta = txn.open_table(META).at(path)?;
            let (mut count, mut held) = read_tally(&meta, path)?;
            let mut table = txn.open_table(CHUNKS).at(path)?;
            let mut tails = txn.open_table(CHUNK_TAILS).at(path)?;
            for (id, bytes) in chunks {
                let (head, tail) = bytes.split_at(bytes.len().min(CHUNK_HEAD));
                let old_tail = match tail.is_empty() {
                    true => tails.remove(&id[..]).at(path)?,
                    false => tails.insert(&id[..], tail).at(path)?,
                };
                let old_tail = old_tail.map_or(0, |v| v.value().len() as u64);
                match table.insert(&id[..], head).at(path)? {
                    Some(old) => {
                        held = held.saturating_sub(old.value().len() as u64 + old_tail);
                    }
                    None => count += 1,
                }
                held += bytes.len() as u64;
            }
            write_tally(&mut meta, path, (count, held))?;
        }
        self.commit(txn, durable)
    }

    /// The bytes of file chunks this node holds (sealed, as stored), without reading them.
    pub fn chunk_bytes(&self) -> Result<u64, JournalError> {
        let path = self.path.as_path();
        let txn = self.db.begin_read().at(path)?;
        let meta = txn.open_table(META).at(path)?;
        Ok(read_tally(&meta, path)?.1)
    }

    /// A sealed file chunk by name.
    pub fn chunk(&self, id: &[u8; 32]) -> Result<Option<Vec<u8>>, JournalError> {
        let path = self.path.as_path();
        let txn = self.db.begin_read().at(path)?;
        let table = txn.open_table(CHUNKS).at(path)?;
        let Some(head) = table.get(&id[..]).at(path)? else {
            return Ok(None);
        };
        let mut chunk = head.value().to_vec();
        if let Some(tail) = txn
            .open_table(CHUNK_TAILS)
            .at(path)?
            .get(&id[..])
            .at(path)?
        {
            chunk.extend_from_slice(tail.value());
        }
        Ok(Some(chunk))
    }

    /// Whether `table` has a row under `key`.
    fn contains(
        &self,
        table: TableDefinition<Bytes, Bytes>,
        key: &[u8],
    ) -> Result<bool, JournalError> {
        let path = self.path.as_path();
        let txn = self.db.begin_read().at(path)?;
        let table = txn.open_table(table).at(path)?;
        Ok(table.get(key).at(path)?.is_some())
    }

    /// Whether a chunk is held, without reading it.
    pub fn has_chunk(&self, id: &[u8; 32]) -> Result<bool, JournalError> {
        self.contains(CHUNKS, id)
    }

    /// Records that this node holds a whole file, under the file's DHT provider key.
    /// Durable only with `durable` (as [`Journal::put_chunks`]).
    pub fn put_provided(
        &self,
        key: &[u8; 32],
        file: &[u8; 32],
        durable: bool,
    ) -> Result<(), JournalError> {
        let path = self.path.as_path();
        let txn = self.begin_write_with(durable)?;
        txn.open_table(PROVIDES)
            .at(path)?
            .insert(&key[..], &file[..])
            .at(path)?;
        txn.open_table(DECLINED)
            .at(path)?
            .remove(&key[..])
            .at(path)?;
        self.commit(txn, durable)
    }

    /// Whether the user dropped the file under provider key `key` (and has not fetched it
    /// again since): the node does not fetch it unasked.
    pub fn is_declined(&self, key: &[u8; 32]) -> Result<bool, JournalError> {
        self.contains(DECLINED, key)
    }

    /// Whether this node holds the file under provider key `key` whole.
    pub fn is_provided(&self, key: &[u8; 32]) -> Result<bool, JournalError> {
        self.contains(PROVIDES, key)
    }

    /// Drops a file's chunks (`chunks`, its list among them) and the record that we hold
    /// it (`key`), and marks it declined (see [`Journal::is_declined`]), durably, in one
    /// transaction. Returns the bytes freed. Chunks are named by the hash of their
    /// ciphertext under the file's own key, so no other file uses them.
    pub fn forget_file(&self, key: &[u8; 32], chunks: &[[u8; 32]]) -> Result<u64, JournalError> {
        let path = self.path.as_path();
        let txn = self.begin_write_with(true)?;
        let mut freed = 0u64;
        {
            let mut meta = txn.open_table(META).at(path)?;
            let (mut count, held) = read_tally(&meta, path)?;
            let mut table = txn.open_table(CHUNKS).at(path)?;
            let mut tails = txn.open_table(CHUNK_TAILS).at(path)?;
            for id in chunks {
                if let Some(v) = table.remove(&id[..]).at(path)? {
                    freed += v.value().len() as u64;
                    count = count.saturating_sub(1);
                }
                if let Some(v) = tails.remove(&id[..]).at(path)? {
                    freed += v.value().len() as u64;
                }
            }
            write_tally(&mut meta, path, (count, held.saturating_sub(freed)))?;
            txn.open_table(PROVIDES)
                .at(path)?
                .remove(&key[..])
                .at(path)?;
            txn.open_table(DECLINED)
                .at(path)?
                .insert(&key[..], &[][..])
                .at(path)?;
        }
        self.commit(txn, true)?;
        Ok(freed)
    }

    /// The provider keys of every file this node holds whole.
    pub fn provided(&self) -> Result<Vec<[u8; 32]>, JournalError> {
        let path = self.path.as_path();
        let txn = self.db.begin_read().at(path)?;
        let table = txn.open_table(PROVIDES).at(path)?;
        let mut keys = Vec::new();
        for row in table.iter().at(path)? {
            let (k, _) = row.at(path)?;
            let key = <[u8; 32]>::try_from(k.value())
                .map_err(|_| corrupt(path, "a provider key is not 32 bytes"))?;
            keys.push(key);
        }
        Ok(keys)
    }

    /// Stores an opaque setting value (the caller encrypts it).
    pub fn put_setting(&self, key: &str, value: &[u8]) -> Result<(), JournalError> {
        self.put_setting_with(key, value, true)
    }

    /// As [`Journal::put_setting`]; not `durable`: without waiting for the disk, made
    /// durable by the next durable commit or [`Journal::flush`] (for a value that is cheap to
    /// lose in a crash).
    pub fn put_setting_with(
        &self,
        key: &str,
        value: &[u8],
        durable: bool,
    ) -> Result<(), JournalError> {
        self.put_settings_with(&[(key.to_owned(), value.to_vec())], durable)
    }

    /// Stores several settings in one transaction (see [`Journal::put_setting_with`]).
    pub fn put_settings_with(
        &self,
        settings: &[(String, Vec<u8>)],
        durable: bool,
    ) -> Result<(), JournalError> {
        if settings.is_empty() {
            return Ok(());
        }
        let path = self.path.as_path();
        let txn = self.begin_write_with(durable)?;
        {
            let mut table = txn.open_table(SETTINGS).at(path)?;
            for (key, value) in settings {
                table.insert(key.as_bytes(), &value[..]).at(path)?;
            }
        }
        self.commit(txn, durable)
    }

    pub fn get_setting(&self, key: &str) -> Result<Option<Vec<u8>>, JournalError> {
        let path = self.path.as_path();
        let txn = self.db.begin_read().at(path)?;
        let settings = txn.open_table(SETTINGS).at(path)?;
        Ok(settings
            .get(key.as_bytes())
            .at(path)?
            .map(|v| v.value().to_vec()))
    }

    /// Returns whether the key existed.
    pub fn delete_setting(&self, key: &str) -> Result<bool, JournalError> {
        let path = self.path.as_path();
        let txn = self.begin_write()?;
        let existed = txn
            .open_table(SETTINGS)
            .at(path)?
            .remove(key.as_bytes())
            .at(path)?
            .is_some();
        if existed {
            self.commit(txn, true)?;
        } else {
            txn.abort().at(path)?;
        }
        Ok(existed)
    }

    /// All settings whose key starts with `prefix`, sorted by key.
    pub fn settings_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, JournalError> {
        let path = self.path.as_path();
        let txn = self.db.begin_read().at(path)?;
        let settings = txn.open_table(SETTINGS).at(path)?;
        let mut out = Vec::new();
        for item in settings.range(prefix.as_bytes()..).at(path)? {
            let (k, v) = item.at(path)?;
            let k = k.value();
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            let key = std::str::from_utf8(k)
                .map_err(|_| corrupt(path, "setting key is not UTF-8"))?
                .to_owned();
            out.push((key, v.value().to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    const ROOM: Id = [7; 32];
    const OTHER_ROOM: Id = [8; 32];
    const ALICE: Id = [1; 32];
    const BOB: Id = [2; 32];
    const CAROL: Id = [3; 32];

    /// Stand-in for a real hash: distinct per (author, seq, branch tag).
    fn h(author: &Id, seq: u64, tag: u8) -> Id {
        if seq == 0 {
            return ZERO;
        }
        let mut out = [0; 32];
        out[..8].copy_from_slice(&seq.to_be_bytes());
        out[8] = tag;
        out[9..].copy_from_slice(&author[..23]);
        out
    }

    fn mk(
        room: &Id,
        author: &Id,
        seq: u64,
        prev: Id,
        tag: u8,
        lamport: u64,
    ) -> (EntryMeta, Vec<u8>) {
        let meta = EntryMeta {
            room: *room,
            author: *author,
            seq,
            prev,
            hash: h(author, seq, tag),
            lamport,
        };
        let env = format!("env {} {seq} {tag} {lamport}", author[0]).into_bytes();
        (meta, env)
    }

    /// Entry `seq` of the well-formed chain `tag` of an author.
    fn e(room: &Id, author: &Id, seq: u64, lamport: u64) -> (EntryMeta, Vec<u8>) {
        mk(room, author, seq, h(author, seq - 1, 0), 0, lamport)
    }

    fn tmp() -> (TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.redb");
        (dir, path)
    }

    fn open_tmp() -> (TempDir, Journal) {
        let (dir, path) = tmp();
        let j = Journal::open(&path).unwrap();
        (dir, j)
    }

    /// A disk in memory that outlives the databases opened on it, and refuses every write
    /// while it is `full`.
    #[derive(Debug, Clone, Default)]
    struct Disk {
        bytes: Arc<Mutex<Vec<u8>>>,
        full: Arc<AtomicBool>,
    }

    impl Disk {
        fn space(&self) -> std::io::Result<()> {
            match self.full.load(Ordering::Relaxed) {
                true => Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "No space left on device",
                )),
                false => Ok(()),
            }
        }

        fn open(&self) -> Result<Journal, JournalError> {
            let db = Database::builder().create_with_backend(self.clone());
            Journal::with_database(db, PathBuf::from("disk.redb"), every_entry)
        }
    }

    impl redb::StorageBackend for Disk {
        fn len(&self) -> std::io::Result<u64> {
            Ok(self.bytes.lock().unwrap().len() as u64)
        }

        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            let bytes = self.bytes.lock().unwrap();
            let range = offset as usize..offset as usize + out.len();
            let held = bytes.get(range).ok_or(std::io::ErrorKind::UnexpectedEof)?;
            out.copy_from_slice(held);
            Ok(())
        }

        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.space()?;
            self.bytes.lock().unwrap().resize(len as usize, 0);
            Ok(())
        }

        fn sync_data(&self) -> std::io::Result<()> {
            self.space()
        }

        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.space()?;
            let mut bytes = self.bytes.lock().unwrap();
            let end = offset as usize + data.len();
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[offset as usize..end].copy_from_slice(data);
            Ok(())
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_new_journal_file_is_the_users_alone() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, path) = tmp();
        drop(Journal::open(&path).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn once_the_disk_refuses_a_write_every_write_fails_with_its_cause_and_reads_go_on() {
        let disk = Disk::default();
        let j = disk.open().unwrap();
        let first = e(&ROOM, &ALICE, 1, 1);
        j.append(&first.0, &first.1).unwrap();
        assert_eq!(j.unwritable(), None);

        disk.full.store(true, Ordering::Relaxed);
        let second = e(&ROOM, &ALICE, 2, 2);
        let err = j.append(&second.0, &second.1).unwrap_err();
        assert!(matches!(err, JournalError::Unwritable { .. }), "{err}");
        assert!(err.to_string().contains("No space left on device"), "{err}");
        assert_eq!(j.unwritable(), Some("No space left on device"));
        // Space again: redb writes no more until the file is opened again, and says why.
        disk.full.store(false, Ordering::Relaxed);
        let err = j.append(&second.0, &second.1).unwrap_err();
        assert!(err.to_string().contains("No space left on device"), "{err}");
        let deferred = j.append_batch_deferred(std::slice::from_ref(&second));
        assert!(matches!(deferred, Err(JournalError::Unwritable { .. })));
        // Reads go on.
        assert_eq!(j.head(&ROOM, &ALICE).unwrap().map(|h| h.seq), Some(1));
        let held = j.get(&ROOM, &ALICE, 1).unwrap().map(|e| e.envelope);
        assert_eq!(held, Some(first.1.clone()));

        // A new start holds what was written before, and writes again.
        drop(j);
        let j = disk.open().unwrap();
        assert_eq!(j.unwritable(), None);
        assert_eq!(j.head(&ROOM, &ALICE).unwrap().map(|h| h.seq), Some(1));
        let appended = j.append(&second.0, &second.1).unwrap();
        assert_eq!(appended, AppendOutcome::Appended { advanced_to: 2 });
        assert_eq!(j.head(&ROOM, &ALICE).unwrap().map(|h| h.seq), Some(2));
    }

    #[test]
    fn the_latest_revision_of_an_entry_is_noted_with_it_and_survives_a_reopen() {
        let (dir, path) = tmp();
        let j = Journal::open(&path).unwrap();
        let revising = |x: (EntryMeta, Vec<u8>), target| (x.0, x.1, Some(Note::Revises(target)));
        j.append(&e(&ROOM, &ALICE, 1, 1).0, &e(&ROOM, &ALICE, 1, 1).1)
            .unwrap();
        // Entry 4 arrives ahead of the gap at 2: noted all the same (it is signed).
        let out = j
            .append_batch_deferred_noting(&[revising(e(&ROOM, &ALICE, 4, 4), 1)])
            .unwrap();
        assert_eq!(out, [AppendOutcome::Pending]);
        assert_eq!(j.revision(&ROOM, &ALICE, 1).unwrap(), Some(4));
        // An older revision arriving later does not hide the newer one.
        let x = e(&ROOM, &ALICE, 2, 2);
        j.append_batch_deferred_noting(&[(x.0, x.1, None), revising(e(&ROOM, &ALICE, 3, 3), 1)])
            .unwrap();
        assert_eq!(j.revision(&ROOM, &ALICE, 1).unwrap(), Some(4));
        let x = e(&ROOM, &ALICE, 5, 5);
        j.append_noting(&x.0, &x.1, Some(Note::Revises(1))).unwrap();
        assert_eq!(j.revision(&ROOM, &ALICE, 1).unwrap(), Some(5));
        // Keyed by author and room.
        assert_eq!(j.revision(&ROOM, &BOB, 1).unwrap(), None);
        assert_eq!(j.revision(&OTHER_ROOM, &ALICE, 1).unwrap(), None);
        assert_eq!(j.revision(&ROOM, &ALICE, 2).unwrap(), None);
        // A duplicate notes nothing new; a revision of itself or of a later entry is refused,
        // and the batch with it is not written.
        let x = e(&ROOM, &ALICE, 3, 3);
        j.append_noting(&x.0, &x.1, Some(Note::Revises(2))).unwrap();
        assert_eq!(j.revision(&ROOM, &ALICE, 2).unwrap(), None);
        for bad in [6, 7] {
            let x = e(&ROOM, &ALICE, 6, 6);
            let err = j
                .append_noting(&x.0, &x.1, Some(Note::Revises(bad)))
                .unwrap_err();
            assert!(err.to_string().contains("only earlier ones"), "{err}");
        }
        assert_eq!(j.head(&ROOM, &ALICE).unwrap().unwrap().seq, 5);
        j.flush().unwrap();
        drop(j);
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.revision(&ROOM, &ALICE, 1).unwrap(), Some(5));
        j.purge_room(&ROOM).unwrap();
        assert_eq!(j.revision(&ROOM, &ALICE, 1).unwrap(), None);
        drop(dir);
    }

    fn app(j: &Journal, x: &(EntryMeta, Vec<u8>)) -> AppendOutcome {
        j.append(&x.0, &x.1).unwrap()
    }

    fn seqs(v: &[StoredEntry]) -> Vec<u64> {
        v.iter().map(|s| s.meta.seq).collect()
    }

    #[test]
    fn append_duplicate_and_same_seq_fork() {
        let (_d, j) = open_tmp();
        let e1 = e(&ROOM, &ALICE, 1, 1);
        assert_eq!(app(&j, &e1), AppendOutcome::Appended { advanced_to: 1 });
        assert_eq!(app(&j, &e1), AppendOutcome::Duplicate);
        let e2 = e(&ROOM, &ALICE, 2, 2);
        assert_eq!(app(&j, &e2), AppendOutcome::Appended { advanced_to: 2 });

        // Same seq 1, different hash: fork, original kept.
        let evil = mk(&ROOM, &ALICE, 1, ZERO, 9, 1);
        assert_eq!(app(&j, &evil), AppendOutcome::Fork);
        let got = j.get(&ROOM, &ALICE, 1).unwrap().unwrap();
        assert_eq!(got.meta, e1.0);
        assert_eq!(got.envelope, e1.1);
        assert_eq!(
            j.forks(&ROOM).unwrap(),
            vec![ForkProof {
                author: ALICE,
                seq: 1,
                existing: e1.0.hash,
                conflicting: evil.0.hash,
                conflicting_envelope: evil.1.clone(),
            }]
        );
        // A second conflicting version keeps the first proof.
        let evil2 = mk(&ROOM, &ALICE, 1, ZERO, 10, 1);
        assert_eq!(app(&j, &evil2), AppendOutcome::Fork);
        assert_eq!(j.forks(&ROOM).unwrap().len(), 1);
        assert_eq!(
            j.head(&ROOM, &ALICE).unwrap(),
            Some(Head {
                seq: 2,
                hash: e2.0.hash
            })
        );
        assert_eq!(j.count(&ROOM).unwrap(), 2);
        assert!(j.forks(&OTHER_ROOM).unwrap().is_empty());
    }

    #[test]
    fn prev_mismatch_is_a_fork() {
        let (_d, j) = open_tmp();
        let e1 = e(&ROOM, &ALICE, 1, 1);
        app(&j, &e1);
        let bad_prev = [0xaa; 32];
        let bad = mk(&ROOM, &ALICE, 2, bad_prev, 0, 2);
        assert_eq!(app(&j, &bad), AppendOutcome::Fork);
        assert_eq!(j.head(&ROOM, &ALICE).unwrap().map(|h| h.seq), Some(1));
        assert!(j.get(&ROOM, &ALICE, 2).unwrap().is_none());
        let proofs = j.forks(&ROOM).unwrap();
        assert_eq!(proofs.len(), 1);
        assert_eq!(proofs[0].seq, 1);
        assert_eq!(proofs[0].existing, e1.0.hash);
        assert_eq!(proofs[0].conflicting, bad_prev);
        assert_eq!(proofs[0].conflicting_envelope, bad.1);

        // The chain can still continue correctly.
        assert_eq!(
            app(&j, &e(&ROOM, &ALICE, 2, 2)),
            AppendOutcome::Appended { advanced_to: 2 }
        );

        // seq 1 must link to zero.
        let bad_start = mk(&ROOM, &BOB, 1, [5; 32], 0, 1);
        assert_eq!(app(&j, &bad_start), AppendOutcome::Fork);
        assert_eq!(j.head(&ROOM, &BOB).unwrap(), None);
        assert!(
            j.forks(&ROOM)
                .unwrap()
                .iter()
                .any(|p| p.author == BOB && p.seq == 0)
        );
    }

    #[test]
    fn seq_zero_is_rejected() {
        let (_d, j) = open_tmp();
        let (mut meta, env) = e(&ROOM, &ALICE, 1, 1);
        meta.seq = 0;
        let err = j.append(&meta, &env).unwrap_err();
        assert!(matches!(err, JournalError::InvalidEntry { .. }), "{err}");
        assert_eq!(j.count(&ROOM).unwrap(), 0);
    }

    #[test]
    fn pending_then_fill() {
        let (_d, j) = open_tmp();
        assert_eq!(app(&j, &e(&ROOM, &ALICE, 3, 3)), AppendOutcome::Pending);
        assert_eq!(app(&j, &e(&ROOM, &ALICE, 3, 3)), AppendOutcome::Duplicate);
        assert_eq!(j.pending_count(&ROOM).unwrap(), 1);
        assert_eq!(j.head(&ROOM, &ALICE).unwrap(), None);
        assert!(j.version_vector(&ROOM).unwrap().is_empty());
        assert_eq!(j.count(&ROOM).unwrap(), 0);
        // Pending entries are readable by get, not by range/history.
        assert!(j.get(&ROOM, &ALICE, 3).unwrap().is_some());
        assert!(j.range(&ROOM, &ALICE, 1, 10, 10).unwrap().is_empty());
        assert!(j.history(&ROOM, 10).unwrap().is_empty());
        assert_eq!(j.max_lamport(&ROOM).unwrap(), 3);

        assert_eq!(
            app(&j, &e(&ROOM, &ALICE, 1, 1)),
            AppendOutcome::Appended { advanced_to: 1 }
        );
        assert_eq!(
            app(&j, &e(&ROOM, &ALICE, 2, 2)),
            AppendOutcome::Appended { advanced_to: 3 }
        );
        assert_eq!(j.pending_count(&ROOM).unwrap(), 0);
        assert_eq!(j.count(&ROOM).unwrap(), 3);
        assert_eq!(
            j.head(&ROOM, &ALICE).unwrap(),
            Some(Head {
                seq: 3,
                hash: h(&ALICE, 3, 0)
            })
        );
        assert_eq!(seqs(&j.history(&ROOM, 10).unwrap()), vec![1, 2, 3]);
    }

    #[test]
    fn long_gap_filled_in_reverse() {
        let (_d, j) = open_tmp();
        app(&j, &e(&ROOM, &ALICE, 1, 1));
        for seq in (3..=200).rev() {
            assert_eq!(
                app(&j, &e(&ROOM, &ALICE, seq, seq)),
                AppendOutcome::Pending,
                "seq {seq}"
            );
        }
        assert_eq!(j.pending_count(&ROOM).unwrap(), 198);
        assert_eq!(j.head(&ROOM, &ALICE).unwrap().map(|h| h.seq), Some(1));
        assert_eq!(
            app(&j, &e(&ROOM, &ALICE, 2, 2)),
            AppendOutcome::Appended { advanced_to: 200 }
        );
        assert_eq!(j.pending_count(&ROOM).unwrap(), 0);
        assert_eq!(j.count(&ROOM).unwrap(), 200);
        let all = j.range(&ROOM, &ALICE, 1, u64::MAX, usize::MAX).unwrap();
        assert_eq!(seqs(&all), (1..=200).collect::<Vec<_>>());
        for w in all.windows(2) {
            assert_eq!(w[1].meta.prev, w[0].meta.hash);
        }
        assert!(j.forks(&ROOM).unwrap().is_empty());
    }

    #[test]
    fn promotion_stops_at_prev_mismatch() {
        let (_d, j) = open_tmp();
        app(&j, &e(&ROOM, &ALICE, 1, 1));
        // Pending 3 from a different branch: it links to a seq 2 we will not receive.
        let other3 = mk(&ROOM, &ALICE, 3, h(&ALICE, 2, 9), 9, 3);
        assert_eq!(app(&j, &other3), AppendOutcome::Pending);
        assert_eq!(
            app(&j, &e(&ROOM, &ALICE, 2, 2)),
            AppendOutcome::Appended { advanced_to: 2 }
        );
        assert_eq!(j.pending_count(&ROOM).unwrap(), 0);
        let proofs = j.forks(&ROOM).unwrap();
        assert_eq!(proofs.len(), 1);
        assert_eq!(
            proofs[0],
            ForkProof {
                author: ALICE,
                seq: 2,
                existing: h(&ALICE, 2, 0),
                conflicting: h(&ALICE, 2, 9),
                conflicting_envelope: other3.1.clone(),
            }
        );
        // The matching seq 3 continues the chain.
        assert_eq!(
            app(&j, &e(&ROOM, &ALICE, 3, 3)),
            AppendOutcome::Appended { advanced_to: 3 }
        );
    }

    #[test]
    fn pending_neighbours_are_checked() {
        let (_d, j) = open_tmp();
        app(&j, &e(&ROOM, &ALICE, 1, 1));
        assert_eq!(app(&j, &e(&ROOM, &ALICE, 5, 5)), AppendOutcome::Pending);
        // Same seq, different hash.
        assert_eq!(
            app(&j, &mk(&ROOM, &ALICE, 5, h(&ALICE, 4, 0), 9, 5)),
            AppendOutcome::Fork
        );
        // seq 4 whose hash is not what pending 5 links to.
        assert_eq!(
            app(&j, &mk(&ROOM, &ALICE, 4, h(&ALICE, 3, 0), 9, 4)),
            AppendOutcome::Fork
        );
        // seq 6 that does not link to pending 5.
        assert_eq!(
            app(&j, &mk(&ROOM, &ALICE, 6, h(&ALICE, 5, 9), 0, 6)),
            AppendOutcome::Fork
        );
        assert_eq!(j.pending_count(&ROOM).unwrap(), 1);
        // Proofs at seq 5 and seq 4; the later seq-5 proof is not kept (first wins).
        let proofs = j.forks(&ROOM).unwrap();
        assert_eq!(proofs.iter().map(|p| p.seq).collect::<Vec<_>>(), vec![4, 5]);
        // The consistent ones are accepted.
        assert_eq!(app(&j, &e(&ROOM, &ALICE, 4, 4)), AppendOutcome::Pending);
        assert_eq!(app(&j, &e(&ROOM, &ALICE, 6, 6)), AppendOutcome::Pending);
        assert_eq!(app(&j, &e(&ROOM, &ALICE, 3, 3)), AppendOutcome::Pending);
        assert_eq!(
            app(&j, &e(&ROOM, &ALICE, 2, 2)),
            AppendOutcome::Appended { advanced_to: 6 }
        );
        assert_eq!(j.pending_count(&ROOM).unwrap(), 0);
    }

    #[test]
    fn version_vector_and_counters() {
        let (_d, j) = open_tmp();
        for seq in 1..=3 {
            app(&j, &e(&ROOM, &ALICE, seq, seq * 10));
        }
        app(&j, &e(&ROOM, &BOB, 1, 5));
        app(&j, &e(&ROOM, &CAROL, 2, 99)); // pending only
        app(&j, &e(&OTHER_ROOM, &ALICE, 1, 1000));
        let vv = j.version_vector(&ROOM).unwrap();
        let expect: BTreeMap<Id, Head> = [
            (
                ALICE,
                Head {
                    seq: 3,
                    hash: h(&ALICE, 3, 0),
                },
            ),
            (
                BOB,
                Head {
                    seq: 1,
                    hash: h(&BOB, 1, 0),
                },
            ),
        ]
        .into_iter()
        .collect();
        assert_eq!(vv, expect);
        assert_eq!(j.count(&ROOM).unwrap(), 4);
        assert_eq!(j.pending_count(&ROOM).unwrap(), 1);
        assert_eq!(j.max_lamport(&ROOM).unwrap(), 99);
        assert_eq!(j.max_lamport(&OTHER_ROOM).unwrap(), 1000);
        assert_eq!(j.max_lamport(&[0; 32]).unwrap(), 0);
        assert_eq!(j.count(&OTHER_ROOM).unwrap(), 1);
        assert_eq!(j.version_vector(&OTHER_ROOM).unwrap().len(), 1);
    }

    #[test]
    fn range_and_get() {
        let (_d, j) = open_tmp();
        for seq in 1..=10 {
            app(&j, &e(&ROOM, &ALICE, seq, seq));
        }
        app(&j, &e(&ROOM, &BOB, 1, 1));
        assert_eq!(
            seqs(&j.range(&ROOM, &ALICE, 3, 7, 100).unwrap()),
            vec![3, 4, 5, 6, 7]
        );
        assert_eq!(seqs(&j.range(&ROOM, &ALICE, 3, 7, 2).unwrap()), vec![3, 4]);
        assert_eq!(
            seqs(&j.range(&ROOM, &ALICE, 9, 100, 100).unwrap()),
            vec![9, 10]
        );
        assert!(j.range(&ROOM, &ALICE, 7, 3, 100).unwrap().is_empty());
        assert!(j.range(&ROOM, &ALICE, 1, 10, 0).unwrap().is_empty());
        assert_eq!(
            seqs(&j.range(&ROOM, &BOB, 0, u64::MAX, 100).unwrap()),
            vec![1]
        );
        let (meta, env) = e(&ROOM, &ALICE, 4, 4);
        assert_eq!(
            j.get(&ROOM, &ALICE, 4).unwrap(),
            Some(StoredEntry {
                meta,
                envelope: env
            })
        );
        assert_eq!(j.get(&ROOM, &ALICE, 11).unwrap(), None);
        assert_eq!(j.get(&OTHER_ROOM, &ALICE, 4).unwrap(), None);
    }

    /// Entries of three authors with colliding lamports, so the author tie-break matters.
    fn sample_entries() -> Vec<(EntryMeta, Vec<u8>)> {
        let mut v = Vec::new();
        for (i, author) in [ALICE, BOB, CAROL].iter().enumerate() {
            for seq in 1..=12u64 {
                v.push(e(&ROOM, author, seq, seq * 2 + (i as u64 % 2)));
            }
        }
        v
    }

    fn shuffle<T>(v: &mut [T], mut seed: u64) {
        for i in (1..v.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            v.swap(i, (seed % (i as u64 + 1)) as usize);
        }
    }

    #[test]
    fn history_order_is_independent_of_insertion_order() {
        let (_d1, j1) = open_tmp();
        let (_d2, j2) = open_tmp();
        let entries = sample_entries();
        for x in &entries {
            app(&j1, x);
        }
        let mut shuffled = entries.clone();
        shuffle(&mut shuffled, 0x9e37_79b9_7f4a_7c15);
        assert_ne!(shuffled, entries);
        for x in &shuffled {
            app(&j2, x);
        }
        let h1 = j1.history(&ROOM, 1000).unwrap();
        let h2 = j2.history(&ROOM, 1000).unwrap();
        assert_eq!(h1.len(), entries.len());
        assert_eq!(h1, h2);
        let keys: Vec<_> = h1
            .iter()
            .map(|s| (s.meta.lamport, s.meta.author, s.meta.seq))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(
            j1.version_vector(&ROOM).unwrap(),
            j2.version_vector(&ROOM).unwrap()
        );
    }

    #[test]
    fn history_limit_returns_the_last_entries() {
        let (_d, j) = open_tmp();
        for x in sample_entries() {
            app(&j, &x);
        }
        let all = j.history(&ROOM, usize::MAX).unwrap();
        let last5 = j.history(&ROOM, 5).unwrap();
        assert_eq!(last5, all[all.len() - 5..].to_vec());
        assert!(j.history(&ROOM, 0).unwrap().is_empty());
        assert!(j.history(&OTHER_ROOM, 5).unwrap().is_empty());
    }

    #[test]
    fn a_forgotten_file_leaves_no_chunk_and_no_record_behind() {
        let (_d, j) = open_tmp();
        let (key, other_key) = ([1u8; 32], [2u8; 32]);
        let (a, b, c) = ([10u8; 32], [11u8; 32], [12u8; 32]);
        j.put_chunks(
            &[(a, vec![1; 100]), (b, vec![2; 50]), (c, vec![3; 7])],
            true,
        )
        .unwrap();
        j.put_provided(&key, &a, true).unwrap();
        j.put_provided(&other_key, &c, true).unwrap();
        assert!(j.is_provided(&key).unwrap());
        // One chunk named is not held: it frees nothing, and is no error.
        assert_eq!(j.forget_file(&key, &[a, b, [13u8; 32]]).unwrap(), 150);
        assert!(!j.is_provided(&key).unwrap());
        assert!(!j.has_chunk(&a).unwrap() && !j.has_chunk(&b).unwrap());
        // The other file is untouched.
        assert!(j.has_chunk(&c).unwrap());
        assert_eq!(j.provided().unwrap(), vec![other_key]);
        assert_eq!(j.forget_file(&key, &[a]).unwrap(), 0);
    }

    #[test]
    fn a_forgotten_file_stays_declined_until_it_is_held_again() {
        let d = TempDir::new().unwrap();
        let path = d.path().join("j.redb");
        let (key, other_key, list) = ([1u8; 32], [2u8; 32], [10u8; 32]);
        {
            let j = Journal::open(&path).unwrap();
            j.put_chunks(&[(list, vec![1; 10])], true).unwrap();
            j.put_provided(&key, &list, true).unwrap();
            assert!(!j.is_declined(&key).unwrap());
            j.forget_file(&key, &[list]).unwrap();
            assert!(j.is_declined(&key).unwrap());
            assert!(!j.is_declined(&other_key).unwrap());
        }
        let j = Journal::open(&path).unwrap();
        assert!(j.is_declined(&key).unwrap(), "declined across a reopen");
        // Fetched again by hand: no longer declined.
        j.put_chunks(&[(list, vec![1; 10])], false).unwrap();
        j.put_provided(&key, &list, false).unwrap();
        assert!(!j.is_declined(&key).unwrap());
    }

    #[test]
    fn the_chunk_tally_follows_every_write_and_survives_a_reopen() {
        let d = TempDir::new().unwrap();
        let path = d.path().join("j.redb");
        {
            let j = Journal::open(&path).unwrap();
            assert_eq!(j.chunk_bytes().unwrap(), 0);
            j.put_chunks(&[([1; 32], vec![0; 1000]), ([2; 32], vec![0; 24])], false)
                .unwrap();
            assert_eq!(j.chunk_bytes().unwrap(), 1024);
            // Written again (a fetch that resumed): counted once, at its new length.
            j.put_chunks(&[([2; 32], vec![0; 30]), ([3; 32], vec![0; 5])], true)
                .unwrap();
            assert_eq!(j.chunk_bytes().unwrap(), 1035);
            // A chunk named but not held frees nothing.
            assert_eq!(j.forget_file(&[9; 32], &[[1; 32], [4; 32]]).unwrap(), 1000);
            assert_eq!(j.chunk_bytes().unwrap(), 35);
        }
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.chunk_bytes().unwrap(), 35);
    }

    #[test]
    fn a_file_without_a_true_chunk_tally_is_counted_on_open() {
        let d = TempDir::new().unwrap();
        let path = d.path().join("j.redb");
        {
            let j = Journal::open(&path).unwrap();
            j.put_chunks(&[([1; 32], vec![0; 700]), ([2; 32], vec![0; 11])], true)
                .unwrap();
            // As a build without the tally would leave it: chunks and no tally.
            let txn = j.begin_write().unwrap();
            txn.open_table(META).unwrap().remove(TALLY_KEY).unwrap();
            txn.commit().unwrap();
            assert_eq!(j.chunk_bytes().unwrap(), 0);
        }
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.chunk_bytes().unwrap(), 711);
        // A tally that does not parse is rebuilt the same way, not a reason to refuse the file.
        let txn = j.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(TALLY_KEY, &b"bad"[..])
            .unwrap();
        txn.commit().unwrap();
        assert!(
            j.chunk_bytes().is_err(),
            "a bad tally is an error, not a guess"
        );
        drop(j);
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.chunk_bytes().unwrap(), 711);
    }

    /// A filter keeping the entries of `all` with an odd seq (it knows them by their
    /// envelope), and those entries.
    fn odd_seqs(all: &[StoredEntry]) -> (impl Fn(&[u8]) -> bool + Copy + '_, Vec<StoredEntry>) {
        let odd = |e: &&StoredEntry| e.meta.seq % 2 == 1;
        let keep = move |env: &[u8]| all.iter().filter(odd).any(|e| e.envelope == env);
        (keep, all.iter().filter(odd).cloned().collect())
    }

    fn page(limit: usize, skip: usize, before: Option<Position>) -> Page {
        Page {
            limit,
            skip,
            before,
        }
    }

    fn position(e: &StoredEntry) -> Position {
        Position {
            lamport: e.meta.lamport,
            author: e.meta.author,
            seq: e.meta.seq,
        }
    }

    #[test]
    fn pages_read_back_from_a_position_cover_the_history_once_in_order() {
        let (_d, j) = open_tmp();
        for x in sample_entries() {
            app(&j, &x);
        }
        app(&j, &e(&OTHER_ROOM, &ALICE, 1, 100));
        let all = j.history(&ROOM, usize::MAX).unwrap();
        assert_eq!(all.len(), 36);
        // Pages of 5 from the newest back, each before the oldest of the one read last.
        let mut pages = Vec::new();
        let mut next = Page::last(5);
        loop {
            let got = j.history_where(&ROOM, next, |_| true).unwrap();
            let Some(first) = got.first() else { break };
            next.before = Some(position(first));
            pages.push(got);
        }
        assert_eq!(pages.len(), 8);
        assert!(pages[..7].iter().all(|p| p.len() == 5));
        assert_eq!(pages[7].len(), 1);
        let joined: Vec<StoredEntry> = pages.into_iter().rev().flatten().collect();
        assert_eq!(joined, all);

        // New entries after the position do not shift the page before it.
        let before = Some(position(&all[20]));
        let fixed = page(4, 0, before);
        let was = j.history_where(&ROOM, fixed, |_| true).unwrap();
        app(&j, &e(&ROOM, &ALICE, 13, 1_000));
        assert_eq!(j.history_where(&ROOM, fixed, |_| true).unwrap(), was);
        assert_eq!(was, all[16..20].to_vec());

        // `skip` passes over the newest entries the filter keeps, before `before` if given.
        let all = j.history(&ROOM, usize::MAX).unwrap();
        let (odd, kept) = odd_seqs(&all);
        let n = kept.len();
        let skipped = page(3, 2, None);
        let got = j.history_where(&ROOM, skipped, odd).unwrap();
        assert_eq!(got, kept[n - 5..n - 2].to_vec());
        let before = Some(position(&kept[n - 4]));
        let both = page(3, 1, before);
        let got = j.history_where(&ROOM, both, odd).unwrap();
        assert_eq!(got, kept[n - 8..n - 5].to_vec());
        // Past the start: what is left, then nothing.
        let far = page(10, n - 2, None);
        assert_eq!(
            j.history_where(&ROOM, far, odd).unwrap(),
            kept[..2].to_vec()
        );
        let past = page(10, n, None);
        assert!(j.history_where(&ROOM, past, odd).unwrap().is_empty());
        let first = Some(position(&all[0]));
        let none = page(10, 0, first);
        assert!(j.history_where(&ROOM, none, |_| true).unwrap().is_empty());
    }

    #[test]
    fn history_where_counts_only_the_entries_it_keeps() {
        let (_d, j) = open_tmp();
        for x in sample_entries() {
            app(&j, &x);
        }
        let all = j.history(&ROOM, usize::MAX).unwrap();
        let (odd, wanted) = odd_seqs(&all);
        assert!(wanted.len() >= 3 && wanted.len() < all.len());
        assert_eq!(
            j.history_where(&ROOM, Page::last(usize::MAX), odd).unwrap(),
            wanted
        );
        // The last two kept, however many others come after them.
        let last2 = j.history_where(&ROOM, Page::last(2), odd).unwrap();
        assert_eq!(last2, wanted[wanted.len() - 2..].to_vec());
        assert!(
            j.history_where(&ROOM, Page::last(5), |_| false)
                .unwrap()
                .is_empty()
        );
        // Passing over an author: the page fills with the others'.
        let not_bob = |a: &Id| *a != BOB;
        let others: Vec<StoredEntry> = all
            .iter()
            .filter(|e| e.meta.author != BOB)
            .cloned()
            .collect();
        assert!(others.len() >= 3 && others.len() < all.len());
        let last3 = j
            .history_of(&ROOM, Page::last(3), not_bob, |_| true)
            .unwrap();
        assert_eq!(last3, others[others.len() - 3..].to_vec());
    }

    #[test]
    fn batch_with_intra_batch_dependencies() {
        let (_d, j) = open_tmp();
        for seq in 1..=4 {
            app(&j, &e(&ROOM, &ALICE, seq, seq));
        }
        let batch = vec![
            e(&ROOM, &ALICE, 5, 5),
            e(&ROOM, &ALICE, 6, 6),
            e(&ROOM, &BOB, 3, 3),
            e(&ROOM, &BOB, 2, 2),
            e(&ROOM, &BOB, 1, 1),
            e(&ROOM, &BOB, 1, 1),
            mk(&ROOM, &ALICE, 6, h(&ALICE, 5, 0), 9, 6),
            e(&OTHER_ROOM, &CAROL, 1, 1),
        ];
        let out = j.append_batch(&batch).unwrap();
        assert_eq!(
            out,
            vec![
                AppendOutcome::Appended { advanced_to: 5 },
                AppendOutcome::Appended { advanced_to: 6 },
                AppendOutcome::Pending,
                AppendOutcome::Pending,
                AppendOutcome::Appended { advanced_to: 3 },
                AppendOutcome::Duplicate,
                AppendOutcome::Fork,
                AppendOutcome::Appended { advanced_to: 1 },
            ]
        );
        assert_eq!(j.count(&ROOM).unwrap(), 9);
        assert_eq!(j.pending_count(&ROOM).unwrap(), 0);
        assert_eq!(j.forks(&ROOM).unwrap().len(), 1);
        assert_eq!(j.count(&OTHER_ROOM).unwrap(), 1);
        assert_eq!(j.append_batch(&[]).unwrap(), vec![]);
    }

    #[test]
    fn batch_with_invalid_entry_writes_nothing() {
        let (_d, j) = open_tmp();
        let mut bad = e(&ROOM, &BOB, 1, 1);
        bad.0.seq = 0;
        let batch = vec![e(&ROOM, &ALICE, 1, 1), bad];
        assert!(j.append_batch(&batch).is_err());
        assert_eq!(j.count(&ROOM).unwrap(), 0);
        assert_eq!(j.head(&ROOM, &ALICE).unwrap(), None);
    }

    #[test]
    fn reopen_keeps_everything() {
        let (_d, path) = tmp();
        let (vv, hist, forks) = {
            let j = Journal::open(&path).unwrap();
            for x in sample_entries() {
                app(&j, &x);
            }
            app(&j, &e(&OTHER_ROOM, &ALICE, 3, 50)); // pending
            app(&j, &mk(&ROOM, &ALICE, 1, ZERO, 9, 1)); // fork
            j.put_setting("k", b"v").unwrap();
            (
                j.version_vector(&ROOM).unwrap(),
                j.history(&ROOM, 1000).unwrap(),
                j.forks(&ROOM).unwrap(),
            )
        };
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.path(), path.as_path());
        assert_eq!(j.version_vector(&ROOM).unwrap(), vv);
        assert_eq!(j.history(&ROOM, 1000).unwrap(), hist);
        assert_eq!(j.forks(&ROOM).unwrap(), forks);
        assert_eq!(j.count(&ROOM).unwrap(), 36);
        assert_eq!(j.pending_count(&OTHER_ROOM).unwrap(), 1);
        assert_eq!(j.max_lamport(&OTHER_ROOM).unwrap(), 50);
        assert_eq!(j.get_setting("k").unwrap(), Some(b"v".to_vec()));
        // Pending entries from before the reopen still get promoted.
        app(&j, &e(&OTHER_ROOM, &ALICE, 1, 1));
        assert_eq!(
            app(&j, &e(&OTHER_ROOM, &ALICE, 2, 2)),
            AppendOutcome::Appended { advanced_to: 3 }
        );
    }

    /// A deferred commit is visible at once, reaches the file only with a flush (or the next
    /// durable commit), and a flush with nothing deferred writes nothing. The file is read
    /// while the journal is still open: what a kill -9 would leave behind.
    #[test]
    fn deferred_commits_reach_the_disk_at_the_next_flush() {
        let (dir, j) = open_tmp();
        let on_disk = |name: &str| {
            let copy = dir.path().join(name);
            std::fs::copy(j.path(), &copy).unwrap();
            let c = Journal::open(&copy).unwrap();
            (c.count(&ROOM).unwrap(), c.count(&OTHER_ROOM).unwrap())
        };
        assert!(!j.flush().unwrap());
        j.append(&e(&ROOM, &ALICE, 1, 1).0, b"durable").unwrap();
        j.append_batch_deferred(&[e(&ROOM, &BOB, 1, 2), e(&ROOM, &BOB, 2, 3)])
            .unwrap();
        assert_eq!(j.count(&ROOM).unwrap(), 3, "visible before the flush");
        assert_eq!(on_disk("a.redb"), (1, 0), "not on disk before the flush");
        assert!(j.flush().unwrap());
        assert_eq!(on_disk("b.redb"), (3, 0));
        assert!(!j.flush().unwrap(), "nothing left to flush");
        // A durable commit carries earlier deferred ones with it.
        j.append_batch_deferred(&[e(&OTHER_ROOM, &BOB, 1, 1)])
            .unwrap();
        j.append(&e(&ROOM, &ALICE, 2, 4).0, b"durable").unwrap();
        assert_eq!(on_disk("c.redb"), (4, 1));
        assert!(!j.flush().unwrap());
    }

    /// The in-memory vectors must always equal what the file holds.
    #[test]
    fn cached_vectors_follow_every_write() {
        let (_d, j) = open_tmp();
        let check = |j: &Journal| {
            for room in [ROOM, OTHER_ROOM] {
                assert_eq!(*j.vector(&room).unwrap(), j.read_vector(&room).unwrap());
            }
        };
        check(&j); // both rooms cached while empty
        for x in sample_entries() {
            app(&j, &x);
            check(&j);
        }
        // A gap, then the entry that fills it: the head jumps over the promoted entry.
        app(&j, &e(&OTHER_ROOM, &ALICE, 2, 2));
        check(&j);
        assert_eq!(j.head(&OTHER_ROOM, &ALICE).unwrap(), None);
        app(&j, &e(&OTHER_ROOM, &ALICE, 1, 1));
        check(&j);
        assert_eq!(j.head(&OTHER_ROOM, &ALICE).unwrap().map(|h| h.seq), Some(2));
        // A fork and a duplicate change no head.
        app(&j, &mk(&OTHER_ROOM, &ALICE, 1, ZERO, 9, 1));
        app(&j, &e(&OTHER_ROOM, &ALICE, 2, 2));
        check(&j);
        // A batch, and a batch that fails as a whole.
        let batch: Vec<_> = (1..=5).map(|s| e(&OTHER_ROOM, &BOB, s, s)).collect();
        j.append_batch(&batch).unwrap();
        check(&j);
        let mut bad = e(&OTHER_ROOM, &BOB, 7, 7);
        bad.0.seq = 0;
        assert!(j.append_batch(&[e(&OTHER_ROOM, &BOB, 6, 6), bad]).is_err());
        check(&j);
        assert_eq!(j.head(&OTHER_ROOM, &BOB).unwrap().map(|h| h.seq), Some(5));
        j.purge_room(&ROOM).unwrap();
        check(&j);
        assert!(j.vector(&ROOM).unwrap().is_empty());
    }

    #[test]
    fn purge_room_removes_only_that_room() {
        let (_d, j) = open_tmp();
        for x in sample_entries() {
            app(&j, &x);
        }
        app(&j, &e(&ROOM, &ALICE, 20, 100)); // pending
        app(&j, &mk(&ROOM, &BOB, 1, ZERO, 9, 1)); // fork
        for seq in 1..=3 {
            app(&j, &e(&OTHER_ROOM, &ALICE, seq, seq));
        }
        app(&j, &e(&OTHER_ROOM, &BOB, 5, 5));
        j.purge_room(&ROOM).unwrap();

        assert_eq!(j.count(&ROOM).unwrap(), 0);
        assert_eq!(j.pending_count(&ROOM).unwrap(), 0);
        assert_eq!(j.max_lamport(&ROOM).unwrap(), 0);
        assert!(j.version_vector(&ROOM).unwrap().is_empty());
        assert!(j.history(&ROOM, 100).unwrap().is_empty());
        assert!(j.forks(&ROOM).unwrap().is_empty());
        assert!(j.get(&ROOM, &ALICE, 20).unwrap().is_none());
        assert!(j.get(&ROOM, &ALICE, 1).unwrap().is_none());

        assert_eq!(j.count(&OTHER_ROOM).unwrap(), 3);
        assert_eq!(j.pending_count(&OTHER_ROOM).unwrap(), 1);
        assert_eq!(seqs(&j.history(&OTHER_ROOM, 100).unwrap()), vec![1, 2, 3]);

        // The room starts over cleanly.
        assert_eq!(
            app(&j, &e(&ROOM, &ALICE, 1, 1)),
            AppendOutcome::Appended { advanced_to: 1 }
        );
        assert_eq!(j.count(&ROOM).unwrap(), 1);
    }

    #[test]
    fn file_chunks_are_kept_by_name_across_a_reopen() {
        let d = TempDir::new().unwrap();
        let path = d.path().join("j.redb");
        {
            let j = Journal::open(&path).unwrap();
            assert_eq!(j.chunk(&[1; 32]).unwrap(), None);
            j.put_chunks(&[([1; 32], vec![9; 1000]), ([2; 32], vec![])], false)
                .unwrap();
            // A durable commit carries the deferred one with it.
            j.put_chunks(&[([3; 32], b"list".to_vec())], true).unwrap();
        }
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.chunk(&[1; 32]).unwrap(), Some(vec![9; 1000]));
        assert_eq!(j.chunk(&[2; 32]).unwrap(), Some(vec![]));
        assert!(j.has_chunk(&[3; 32]).unwrap());
        assert!(!j.has_chunk(&[4; 32]).unwrap());
    }

    #[test]
    fn a_whole_sealed_chunk_is_kept_in_two_parts_that_take_one_page_and_read_as_one() {
        let d = TempDir::new().unwrap();
        let path = d.path().join("j.redb");
        let sealed = crate::files::MAX_SEALED_CHUNK;
        let chunk = |i: u8| (0..sealed).map(|b| (b as u8) ^ i).collect::<Vec<u8>>();
        let count = 200u8;
        {
            let j = Journal::open(&path).unwrap();
            for batch in 0..count / 20 {
                let chunks: Vec<_> = (batch * 20..(batch + 1) * 20)
                    .map(|i| ([i; 32], chunk(i)))
                    .collect();
                j.put_chunks(&chunks, true).unwrap();
            }
            assert_eq!(j.chunk(&[7; 32]).unwrap(), Some(chunk(7)));
            assert_eq!(j.chunk_bytes().unwrap(), count as u64 * sealed as u64);
            // Written again shorter (no tail left behind), then forgotten: all of it freed.
            j.put_chunks(&[([7; 32], vec![1; 10])], true).unwrap();
            assert_eq!(j.chunk(&[7; 32]).unwrap(), Some(vec![1; 10]));
            let freed = j.forget_file(&[0; 32], &[[7; 32], [8; 32]]).unwrap();
            assert_eq!(freed, 10 + sealed as u64);
            assert_eq!(j.chunk_bytes().unwrap(), (count as u64 - 2) * sealed as u64);
        }
        // A chunk takes one 256 KiB page: the file is not twice what it holds (a whole
        // chunk in one value took two pages, 2.7 times in all).
        let len = std::fs::metadata(&path).unwrap().len();
        let held = count as u64 * sealed as u64;
        assert!(len < held * 3 / 2, "{len} bytes on disk for {held}");
        // The tally, rebuilt on open, counts both parts.
        let j = Journal::open(&path).unwrap();
        let txn = j.begin_write().unwrap();
        txn.open_table(META).unwrap().remove(TALLY_KEY).unwrap();
        txn.commit().unwrap();
        drop(j);
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.chunk_bytes().unwrap(), (count as u64 - 2) * sealed as u64);
        assert_eq!(j.chunk(&[9; 32]).unwrap(), Some(chunk(9)));
        // A chunk a version 2 file holds whole, with no tail, reads as it is.
        let txn = j.begin_write().unwrap();
        (txn.open_table(CHUNKS).unwrap())
            .insert(&[250u8; 32][..], &chunk(250)[..])
            .unwrap();
        txn.commit().unwrap();
        assert_eq!(j.chunk(&[250; 32]).unwrap(), Some(chunk(250)));
    }

    #[test]
    fn provided_files_are_remembered_across_a_reopen() {
        let d = TempDir::new().unwrap();
        let path = d.path().join("j.redb");
        {
            let j = Journal::open(&path).unwrap();
            assert!(j.provided().unwrap().is_empty());
            j.put_provided(&[7; 32], &[1; 32], true).unwrap();
            // A deferred one, carried by the durable commit after it.
            j.put_provided(&[8; 32], &[2; 32], false).unwrap();
            j.put_provided(&[7; 32], &[1; 32], true).unwrap();
        }
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.provided().unwrap(), vec![[7; 32], [8; 32]]);
    }

    #[test]
    fn settings() {
        let (_d, j) = open_tmp();
        assert_eq!(j.get_setting("a").unwrap(), None);
        j.put_setting("a", b"1").unwrap();
        j.put_setting("ab", b"2").unwrap();
        j.put_setting("abc", b"").unwrap();
        j.put_setting("b", b"3").unwrap();
        j.put_setting("a", b"1'").unwrap();
        assert_eq!(j.get_setting("a").unwrap(), Some(b"1'".to_vec()));
        assert_eq!(j.get_setting("abc").unwrap(), Some(Vec::new()));
        assert_eq!(
            j.settings_with_prefix("a").unwrap(),
            vec![
                ("a".to_owned(), b"1'".to_vec()),
                ("ab".to_owned(), b"2".to_vec()),
                ("abc".to_owned(), Vec::new()),
            ]
        );
        assert_eq!(j.settings_with_prefix("").unwrap().len(), 4);
        assert!(j.settings_with_prefix("z").unwrap().is_empty());
        assert!(j.delete_setting("ab").unwrap());
        assert!(!j.delete_setting("ab").unwrap());
        assert_eq!(j.get_setting("ab").unwrap(), None);
        assert_eq!(j.settings_with_prefix("ab").unwrap().len(), 1);
    }

    #[test]
    fn garbage_file_is_an_error_naming_the_path() {
        let (_d, path) = tmp();
        let mut seed = 0x1234_5678_9abc_def1u64;
        let garbage: Vec<u8> = (0..64 * 1024)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect();
        for bytes in [&garbage[..], b"not a database at all"] {
            std::fs::write(&path, bytes).unwrap();
            let err = Journal::open(&path).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains("move it aside"), "{msg}");
            // The file is left as it was.
            assert_eq!(std::fs::read(&path).unwrap(), bytes);
        }
    }

    #[test]
    fn truncated_file_errors_or_opens_consistently() {
        let (dir, path) = tmp();
        {
            let j = Journal::open(&path).unwrap();
            for x in sample_entries() {
                app(&j, &x);
            }
            let big = vec![0x5a; 20_000];
            j.append(&e(&OTHER_ROOM, &ALICE, 1, 1).0, &big).unwrap();
        }
        let full = std::fs::read(&path).unwrap();
        let mut lens: Vec<usize> = vec![1, 100, 512, 4096, 4097, full.len() / 2, full.len() - 1];
        lens.extend((1..16).map(|i| full.len() * i / 16));
        for len in lens {
            let copy = dir.path().join(format!("trunc-{len}.redb"));
            std::fs::write(&copy, &full[..len]).unwrap();
            match Journal::open(&copy) {
                Err(err) => {
                    let msg = err.to_string();
                    assert!(msg.contains(&copy.display().to_string()), "{msg}");
                    assert_eq!(std::fs::read(&copy).unwrap(), &full[..len]);
                }
                Ok(j) => {
                    // Whatever survived must be self-consistent; errors are fine, panics not.
                    if let Ok(vv) = j.version_vector(&ROOM) {
                        for (author, head) in vv {
                            if let Ok(r) = j.range(&ROOM, &author, 1, head.seq, usize::MAX) {
                                assert_eq!(r.len() as u64, head.seq);
                            }
                        }
                    }
                    let _ = j.history(&ROOM, 1000);
                    let _ = j.count(&ROOM);
                }
            }
        }
    }

    #[test]
    fn flipped_bytes_never_panic() {
        let (dir, path) = tmp();
        {
            let j = Journal::open(&path).unwrap();
            for x in sample_entries() {
                app(&j, &x);
            }
        }
        let full = std::fs::read(&path).unwrap();
        for i in 0..64usize {
            let mut bytes = full.clone();
            let pos = i * 7919 % bytes.len();
            bytes[pos] ^= 0x41;
            let copy = dir.path().join(format!("flip-{pos}.redb"));
            std::fs::write(&copy, &bytes).unwrap();
            match Journal::open(&copy) {
                Err(err) => assert!(err.to_string().contains(&copy.display().to_string())),
                Ok(j) => {
                    let _ = j.history(&ROOM, 1000);
                    let _ = j.version_vector(&ROOM);
                    let _ = j.append(&e(&ROOM, &BOB, 13, 100).0, b"x");
                }
            }
        }
    }

    /// Test classifier: the test envelopes of odd seqs are messages.
    fn odd_seq(env: &[u8]) -> bool {
        std::str::from_utf8(env)
            .ok()
            .and_then(|s| s.split(' ').nth(2)?.parse::<u64>().ok())
            .is_some_and(|seq| seq % 2 == 1)
    }

    #[test]
    fn messages_count_what_the_opener_counts_as_entries_link_up() {
        let (dir, path) = tmp();
        let j = Journal::open_counting(&path, odd_seq).unwrap();
        app(&j, &e(&ROOM, &ALICE, 1, 1));
        app(&j, &e(&ROOM, &ALICE, 2, 2));
        assert_eq!(
            (j.count(&ROOM).unwrap(), j.messages(&ROOM).unwrap()),
            (2, 1)
        );
        // Past a gap: not counted until the gap is filled.
        app(&j, &e(&ROOM, &ALICE, 4, 4));
        app(&j, &e(&ROOM, &ALICE, 5, 5));
        assert_eq!(j.messages(&ROOM).unwrap(), 1);
        app(&j, &e(&ROOM, &ALICE, 3, 3));
        assert_eq!(
            (j.count(&ROOM).unwrap(), j.messages(&ROOM).unwrap()),
            (5, 3)
        );
        // Duplicates and forks count nothing.
        app(&j, &e(&ROOM, &ALICE, 5, 5));
        app(&j, &mk(&ROOM, &ALICE, 5, h(&ALICE, 4, 0), 9, 5));
        app(&j, &e(&ROOM, &BOB, 1, 6));
        app(&j, &e(&OTHER_ROOM, &ALICE, 1, 1));
        assert_eq!(j.messages(&ROOM).unwrap(), 4);
        assert_eq!(j.messages(&OTHER_ROOM).unwrap(), 1);
        drop(j);
        let j = Journal::open_counting(&path, odd_seq).unwrap();
        assert_eq!(j.messages(&ROOM).unwrap(), 4);
        j.purge_room(&ROOM).unwrap();
        assert_eq!(j.messages(&ROOM).unwrap(), 0);
        assert_eq!(j.messages(&OTHER_ROOM).unwrap(), 1);
        drop(j);
        // Opened plainly, every entry counts.
        let (_d2, j) = open_tmp();
        app(&j, &e(&ROOM, &ALICE, 1, 1));
        app(&j, &e(&ROOM, &ALICE, 2, 2));
        assert_eq!(j.messages(&ROOM).unwrap(), 2);
        drop(dir);
    }

    /// Rewrites a journal file as schema 1 left it: room counters without `messages`.
    fn downgrade_to_schema_1(path: &Path) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut rooms = txn.open_table(ROOMS).unwrap();
            let old: Vec<(Vec<u8>, Vec<u8>)> = rooms
                .iter()
                .unwrap()
                .map(|r| {
                    let (k, v) = r.unwrap();
                    (k.value().to_vec(), v.value()[..ROOM_VALUE_LEN_V1].to_vec())
                })
                .collect();
            for (k, v) in old {
                rooms.insert(&k[..], &v[..]).unwrap();
            }
            txn.open_table(META)
                .unwrap()
                .insert(SCHEMA_KEY, &1u32.to_be_bytes()[..])
                .unwrap();
        }
        txn.commit().unwrap();
    }

    #[test]
    fn a_schema_1_file_has_its_messages_counted_once_when_opened() {
        let (_d, path) = tmp();
        {
            let j = Journal::open(&path).unwrap();
            for seq in 1..=5 {
                app(&j, &e(&ROOM, &ALICE, seq, seq));
            }
            app(&j, &e(&ROOM, &BOB, 2, 9)); // pending: not a message yet
            app(&j, &e(&OTHER_ROOM, &BOB, 1, 1));
        }
        downgrade_to_schema_1(&path);
        let j = Journal::open_counting(&path, odd_seq).unwrap();
        assert_eq!(j.messages(&ROOM).unwrap(), 3);
        assert_eq!(j.messages(&OTHER_ROOM).unwrap(), 1);
        // The other counters are kept as they were.
        assert_eq!(j.count(&ROOM).unwrap(), 5);
        assert_eq!(j.pending_count(&ROOM).unwrap(), 1);
        assert_eq!(j.max_lamport(&ROOM).unwrap(), 9);
        // And counting goes on from there; the file is schema 2 now.
        app(&j, &e(&ROOM, &BOB, 1, 10));
        assert_eq!(j.messages(&ROOM).unwrap(), 4);
        drop(j);
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_read().unwrap();
            let meta = txn.open_table(META).unwrap();
            let v = meta.get(SCHEMA_KEY).unwrap().unwrap().value().to_vec();
            assert_eq!(v, SCHEMA_VERSION.to_be_bytes());
        }
        let j = Journal::open_counting(&path, odd_seq).unwrap();
        assert_eq!(j.messages(&ROOM).unwrap(), 4);
        drop(j);

        // A schema 1 file whose counters do not parse is corrupt, named, not a panic.
        downgrade_to_schema_1(&path);
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(ROOMS)
                .unwrap()
                .insert(&ROOM[..], &[1u8; 5][..])
                .unwrap();
            txn.commit().unwrap();
        }
        let err = Journal::open_counting(&path, odd_seq).unwrap_err();
        assert!(
            err.to_string().contains("room counters of 5 bytes"),
            "{err}"
        );
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let (_d, path) = tmp();
        drop(Journal::open(&path).unwrap());
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(SCHEMA_KEY, &99u32.to_be_bytes()[..])
                .unwrap();
            txn.commit().unwrap();
        }
        let err = Journal::open(&path).unwrap_err();
        assert!(
            matches!(
                err,
                JournalError::NewerSchema {
                    found: 99,
                    supported: SCHEMA_VERSION,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains(&path.display().to_string()));

        // A malformed version value is corruption, not a panic.
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(SCHEMA_KEY, &b"x"[..])
                .unwrap();
            txn.commit().unwrap();
        }
        let err = Journal::open(&path).unwrap_err();
        assert!(matches!(err, JournalError::CorruptEntry { .. }), "{err}");
    }

    #[test]
    fn corrupt_value_is_an_error_not_a_panic() {
        let (_d, path) = tmp();
        {
            let j = Journal::open(&path).unwrap();
            app(&j, &e(&ROOM, &ALICE, 1, 1));
        }
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(ENTRIES)
                .unwrap()
                .insert(&entry_key(&ROOM, &ALICE, 1)[..], &b"short"[..])
                .unwrap();
            txn.open_table(HEADS)
                .unwrap()
                .insert(&head_key(&ROOM, &BOB)[..], &b"bad"[..])
                .unwrap();
            txn.commit().unwrap();
        }
        let j = Journal::open(&path).unwrap();
        let err = j.get(&ROOM, &ALICE, 1).unwrap_err();
        assert!(err.to_string().contains("is corrupt"), "{err}");
        assert!(j.history(&ROOM, 10).is_err());
        assert!(j.version_vector(&ROOM).is_err());
        assert!(j.append(&e(&ROOM, &ALICE, 1, 1).0, b"x").is_err());
    }

    #[test]
    fn second_open_reports_the_lock() {
        let (_d, path) = tmp();
        let _j = Journal::open(&path).unwrap();
        let err = Journal::open(&path).unwrap_err();
        assert!(matches!(err, JournalError::Locked { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn missing_directory_is_an_io_error() {
        let (_d, path) = tmp();
        let path = path.with_file_name("missing").join("journal.redb");
        let err = Journal::open(&path).unwrap_err();
        assert!(matches!(err, JournalError::Io { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn error_is_send_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<JournalError>();
        check::<Journal>();
    }
}
