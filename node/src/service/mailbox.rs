//! Mailboxes in the DHT (see [`crate::mailbox`]): putting ours when members have not
//! confirmed what we wrote, reading the room's authors' when we come back online.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use libp2p::kad;
use serde::{Deserialize, Serialize};

use super::Service;
use super::reconcile::Internal;
use crate::chunk_slices::Slices;
use crate::core;
use crate::files::ChunkId;
use crate::identity::UserId;
use crate::mailbox::{MAX_ENTRIES, MailboxKeys, Pages};
use crate::room::{RoomId, RoomKind};

/// Our entries a member is not known to hold go in our mailbox once the first of them is
/// this old: long enough for the members online to say they have them (receipts ride on
/// their messages or follow within seconds), so a room whose members are all there puts
/// nothing. A node that stops puts what is left at once.
pub const MAILBOX_AFTER: Duration = Duration::from_secs(30);
/// Every room's mailboxes are read again this often, for what was written while we were
/// online but out of reach of its author (a partition) and that no member we meet holds.
const READ_EVERY: Duration = Duration::from_secs(30 * 60);
/// A node alone (no connection) for this long reads every room's mailboxes when it
/// reaches someone again: it was offline, and what was written meanwhile may be there only.
const ALONE_FOR: Duration = Duration::from_secs(20);
/// Mailbox reads running at once; the rest wait their turn (they share the DHT's query
/// budget with rendezvous).
const READS_AT_ONCE: usize = 8;
/// Authors' mailboxes read per named room at most: those we hold the longest chains of.
/// A direct or group room's members are all read (at most
/// [`crate::room::MAX_GROUP_MEMBERS`]); a node in many busy named rooms would otherwise
/// start thousands of DHT queries each time it comes back.
const AUTHORS_PER_NAMED_ROOM: usize = 8;
/// A page of our mailbox that has not changed is put again after this long all the same:
/// DHT nodes keep a record 7 days from its last put, and the nodes near its key change.
pub(super) const PUT_AGAIN: Duration = Duration::from_secs(24 * 3600);
/// A stopping node waits this long at most for its last mailboxes to be stored.
pub const PUT_BEFORE_STOP: Duration = Duration::from_secs(5);

/// What the node did with mailboxes since it started, for `cryptchat status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MailboxStats {
    /// Mailboxes we put (each holding our entries a member lacked in one room), and of
    /// those the ones no DHT node took (tried again later).
    pub put: u64,
    pub unplaced: u64,
    /// Mailboxes of others we looked up, and found (a record, once per distinct value).
    pub read: u64,
    pub found: u64,
    /// Entries found in mailboxes that we did not hold.
    pub taken: u64,
}

/// One page of one author's mailbox in one room.
type Page = (RoomId, UserId, u8);

pub(crate) struct Mailboxes {
    /// How old our first unconfirmed entry gets before it goes in our mailbox (`None`:
    /// mailboxes are off, neither put nor read).
    after: Option<Duration>,
    /// Rooms we wrote in since our last put there, and when the first of those writes was.
    wrote: HashMap<RoomId, Instant>,
    /// Puts under way: pages, and slices of files' chunks.
    putting: HashMap<kad::QueryId, Put>,
    /// What each page of ours held when last put, and when: a page that did not change is
    /// not put again for a day.
    pub(super) pages: super::put_pages::PutPages,
    /// Pages to read, in order, and those reads under way with the values they found.
    due: VecDeque<Page>,
    queued: HashSet<Page>,
    reading: HashMap<kad::QueryId, (Page, HashSet<[u8; 32]>)>,
    read_all_at: Option<Instant>,
    alone_since: Option<Instant>,
    /// Small files we shared in this run (see [`crate::chunk_slices`]).
    pub(super) shared: super::slices::SharedFiles,
    /// Chunks of files we fetch being put together from the DHT, and the slice reads
    /// under way.
    pub(super) gathering: HashMap<ChunkId, Gathering>,
    pub(super) slice_reads: HashMap<kad::QueryId, (ChunkId, u8)>,
    pub(super) stats: MailboxStats,
}

/// A put of ours under way.
#[derive(Clone, Copy)]
pub(super) enum Put {
    Page(RoomId, u8),
    /// A slice of a chunk of the file (named by its list) shared in the room.
    File(RoomId, ChunkId),
}

/// A chunk being put together from its slices in the DHT, for a fetch of `file`.
pub(super) struct Gathering {
    pub file: ChunkId,
    pub slices: Slices,
    /// Slices asked for, and reads still running.
    pub asked: HashSet<u8>,
    pub running: usize,
}

impl Mailboxes {
    pub(crate) fn new(after: Option<Duration>) -> Self {
        Mailboxes {
            after,
            wrote: HashMap::new(),
            putting: HashMap::new(),
            pages: Default::default(),
            due: VecDeque::new(),
            queued: HashSet::new(),
            reading: HashMap::new(),
            read_all_at: None,
            alone_since: None,
            shared: Default::default(),
            gathering: HashMap::new(),
            slice_reads: HashMap::new(),
            stats: MailboxStats::default(),
        }
    }

    pub(crate) fn stats(&self) -> MailboxStats {
        self.stats
    }

    /// We wrote in `room`: a mailbox may be due there after [`MAILBOX_AFTER`].
    pub(crate) fn wrote(&mut self, room: RoomId) {
        if self.after.is_some() {
            self.wrote.entry(room).or_insert_with(Instant::now);
        }
    }

    pub(crate) fn putting(&self) -> bool {
        !self.putting.is_empty()
    }

    /// Whether mailboxes are on (neither put nor read with `run --no-mailbox`).
    pub(crate) fn enabled(&self) -> bool {
        self.after.is_some()
    }
}

impl Service {
    /// Puts our mailbox in each room where we wrote a while ago (or at all, with `now`)
    /// and a member is not known to hold all of it.
    pub(super) fn put_mailboxes(&mut self, now: bool) {
        let Some(after) = self.mailboxes.after else {
            return;
        };
        if !self.kad_ready {
            return;
        }
        let mut due: Vec<RoomId> = self
            .mailboxes
            .wrote
            .iter()
            .filter(|(_, at)| now || at.elapsed() >= after)
            .map(|(room, _)| *room)
            .collect();
        if now {
            // Stopping: files members did not fetch go too (see `SharedFiles`).
            let shared = self.rooms_with_shared_files();
            due.extend(
                shared
                    .into_iter()
                    .filter(|r| !self.mailboxes.wrote.contains_key(r)),
            );
        }
        for room in due {
            self.mailboxes.wrote.remove(&room);
            self.put_mailbox(room, (!now).then_some(after));
        }
    }

    /// Puts our entries in `room` from the first that a member is not known to hold, if
    /// there is one and it is at least `older_than` old; if it is younger (members are
    /// still confirming what we write), looks again once it is that old.
    fn put_mailbox(&mut self, room: RoomId, older_than: Option<Duration>) {
        let Some(r) = self.core.room(&room).cloned() else {
            return;
        };
        let me = self.core.identity().id();
        // In a named room, a member further behind than a mailbox holds (one who left, or
        // has been away long) would keep every mailbox on entries nobody else lacks: it
        // catches up from the room's members. A direct or group room's few members all
        // count.
        let at_least = match r.kind {
            RoomKind::Named => {
                let head = match self.core.journal().head(&room.0, &me.0) {
                    Ok(head) => head.map_or(0, |h| h.seq),
                    Err(e) => return tracing::warn!(error = %e, "cannot read our head"),
                };
                head.saturating_sub(MAX_ENTRIES as u64)
            }
            RoomKind::Direct | RoomKind::Group => 0,
        };
        let Some(held) = self.core.held_by_all(room, &me, at_least) else {
            return;
        };
        let stopping = older_than.is_none();
        let (pages, written, last) = match self.own_pages(room, held + 1) {
            Ok(Some(pages)) => pages,
            Ok(None) => return self.put_files(room, None, stopping),
            Err(e) => return tracing::warn!(error = %e, "cannot read our entries for a mailbox"),
        };
        if let Some(after) = older_than {
            let age = Duration::from_millis(crate::core::now_ms().saturating_sub(written));
            if age < after {
                let at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
                self.mailboxes.wrote.insert(room, at);
                return;
            }
        }
        let keys = MailboxKeys::new(&r, &me);
        let mut sent = 0;
        for page in 0..pages.len() as u8 {
            let digest = pages.digest(usize::from(page));
            if self.mailboxes.pages.fresh(room, page, &digest) {
                continue;
            }
            let value = match keys.seal(&pages, page) {
                Ok(value) => value,
                Err(e) => return tracing::warn!(error = %e, "cannot seal a mailbox"),
            };
            if let Err(e) = self.put_in_dht(keys.record(page), value, Put::Page(room, page)) {
                return tracing::warn!(error = %e, "cannot put a mailbox");
            }
            self.mailboxes.pages.putting(room, page, digest);
            sent += 1;
        }
        // The files whose messages it carries go with it.
        self.put_files(room, Some(held + 1..=last), stopping);
        if sent > 0 {
            self.mailboxes.stats.put += 1;
            tracing::debug!(
                room = %room.to_hex(),
                from = held + 1,
                entries = pages.entries(),
                pages = pages.len(),
                changed = sent,
                "mailbox put"
            );
        }
    }

    /// Puts a record of ours (quorum one), and notes what it was for.
    pub(super) fn put_in_dht(
        &mut self,
        key: [u8; 32],
        value: Vec<u8>,
        put: Put,
    ) -> Result<(), kad::store::Error> {
        let record = kad::Record::new(key.to_vec(), value);
        let id = (self.swarm.behaviour_mut().kad).put_record(record, kad::Quorum::One)?;
        self.mailboxes.putting.insert(id, put);
        Ok(())
    }

    /// Our entries in `room` from seq `from` on, laid out in a mailbox's pages as far as
    /// they fit, when the first was written, and the last one's seq; `None` if there are
    /// none.
    fn own_pages(
        &self,
        room: RoomId,
        mut from: u64,
    ) -> Result<Option<(Pages, u64, u64)>, core::CoreError> {
        let mut pages = Pages::default();
        let (mut first_written, mut last) = (None, 0);
        'fill: loop {
            let chunk = self.core.own_entries(room, from, MAX_ENTRIES)?;
            let Some((end, _)) = chunk.last() else {
                break;
            };
            from = end + 1;
            for (seq, envelope) in &chunk {
                if first_written.is_none() {
                    first_written = Some(
                        crate::envelope::Envelope::parse(envelope.clone(), self.core.author_keys())
                            .map_or(0, |e| e.timestamp_ms),
                    );
                }
                if !pages.push(envelope) {
                    break 'fill;
                }
                last = *seq;
            }
        }
        Ok((!pages.is_empty()).then(|| (pages, first_written.unwrap_or(0), last)))
    }

    /// Every room's mailboxes are to be read (the DHT came up, we were offline, or it is
    /// time again).
    pub(super) fn read_all_mailboxes(&mut self) {
        self.mailboxes.read_all_at = Some(Instant::now());
        let rooms: Vec<RoomId> = self.core.rooms().map(|r| r.id).collect();
        for room in rooms {
            self.read_mailboxes(room);
        }
    }

    /// The room's authors' mailboxes are to be read.
    pub(super) fn read_mailboxes(&mut self, room: RoomId) {
        if self.mailboxes.after.is_none() {
            return;
        }
        let Some(r) = self.core.room(&room).cloned() else {
            return;
        };
        let authors = match self.core.mailbox_authors(&r, AUTHORS_PER_NAMED_ROOM) {
            Ok(authors) => authors,
            Err(e) => return tracing::warn!(error = %e, "cannot list a room's authors"),
        };
        for author in authors {
            self.queue_mailbox_read((room, author, 0));
        }
        self.start_mailbox_reads();
    }

    fn queue_mailbox_read(&mut self, page: Page) {
        if self.mailboxes.queued.insert(page) {
            self.mailboxes.due.push_back(page);
        }
    }

    /// Starts the mailbox reads that wait, as far as the query budget allows.
    pub(super) fn start_mailbox_reads(&mut self) {
        while self.kad_ready && self.mailboxes.reading.len() < READS_AT_ONCE && !self.dht_busy() {
            let Some(page) = self.mailboxes.due.pop_front() else {
                return;
            };
            self.mailboxes.queued.remove(&page);
            let (room, author, n) = page;
            let Some(r) = self.core.room(&room) else {
                continue;
            };
            let key = MailboxKeys::new(r, &author).record(n);
            let id = (self.swarm.behaviour_mut().kad).get_record(kad::RecordKey::new(&key));
            self.mailboxes.stats.read += 1;
            self.mailboxes.reading.insert(id, (page, HashSet::new()));
        }
    }

    /// On each sync round: mailboxes due to be put, and the periodic read.
    pub(super) fn tick_mailboxes(&mut self) {
        self.put_mailboxes(false);
        if self
            .mailboxes
            .read_all_at
            .is_some_and(|at| at.elapsed() >= READ_EVERY)
        {
            self.read_all_mailboxes();
        }
        self.start_mailbox_reads();
    }

    /// A connection opened (`alone` false) or the last one closed (`alone` true).
    pub(super) fn mailboxes_connected(&mut self, alone: bool) {
        if alone {
            self.mailboxes.alone_since = Some(Instant::now());
        } else if let Some(since) = self.mailboxes.alone_since.take()
            && since.elapsed() >= ALONE_FOR
            && self.kad_ready
        {
            self.read_all_mailboxes();
        }
    }

    /// A DHT query ended or progressed: ours if it put or read a mailbox (`true`).
    pub(super) fn on_mailbox_query(
        &mut self,
        id: kad::QueryId,
        result: &kad::QueryResult,
        last: bool,
    ) -> bool {
        if let Some(&put) = self.mailboxes.putting.get(&id) {
            let failed = matches!(result, kad::QueryResult::PutRecord(Err(_)));
            if last {
                self.mailboxes.putting.remove(&id);
                match put {
                    Put::Page(room, page) => self.mailboxes.pages.put_ended(room, page, !failed),
                    Put::File(_, list) => self.mailboxes.shared.put_ended(&list),
                }
            }
            if let kad::QueryResult::PutRecord(Err(e)) = result {
                // No DHT node took it (we are alone, or the nodes near the key are gone):
                // try again after the usual wait, unless something new is waiting already.
                tracing::debug!(error = %e, "mailbox put did not reach the DHT");
                let room = match put {
                    Put::Page(room, _) => room,
                    Put::File(room, file) => {
                        self.file_unplaced(&file);
                        room
                    }
                };
                self.mailboxes.stats.unplaced += 1;
                self.mailboxes
                    .wrote
                    .entry(room)
                    .or_insert_with(Instant::now);
            }
            return true;
        }
        if self.mailboxes.slice_reads.contains_key(&id) {
            self.on_slice_query(id, result, last);
            return true;
        }
        if !self.mailboxes.reading.contains_key(&id) {
            return false;
        }
        if let kad::QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(found))) = result {
            self.found_mailbox(id, &found.record.value);
        }
        if last {
            self.mailboxes.reading.remove(&id);
            self.start_mailbox_reads();
        }
        true
    }

    fn found_mailbox(&mut self, id: kad::QueryId, value: &[u8]) {
        let Some((page, seen)) = self.mailboxes.reading.get_mut(&id) else {
            return;
        };
        // Every DHT node near the key answers, mostly with the same value.
        if !seen.insert(crate::crypto::sha256(&[value])) {
            return;
        }
        let (room, author, n) = *page;
        let Some(r) = self.core.room(&room).cloned() else {
            return;
        };
        let opened = match MailboxKeys::new(&r, &author).open(n, value) {
            Ok(opened) => opened,
            Err(e) => return tracing::debug!(error = %e, "mailbox record refused"),
        };
        self.mailboxes.stats.found += 1;
        // The first page says how many follow.
        for more in 1..opened.pages {
            self.queue_mailbox_read((room, author, more));
        }
        let entries = opened.entries;
        // Checked like entries a peer sends, on a blocking thread (signatures).
        let me = self.core.identity().clone();
        let keys = self.core.author_keys().clone();
        let tx = self.reconcile.tx.clone();
        tokio::task::spawn_blocking(move || {
            let (mut ok, mut bad) = (Vec::new(), 0usize);
            for result in core::check_batch(&me, &r, &entries, &keys, 1) {
                match result {
                    // Only the author's own entries: anything else under its key is not.
                    Ok(v) if v.0.author_id() == author => ok.push(v),
                    _ => bad += 1,
                }
            }
            let _ = tx.send(Internal::FromMailbox { room, ok, bad });
        });
    }

    /// Entries from a mailbox, checked: stored like pulled ones.
    pub(super) fn store_from_mailbox(
        &mut self,
        room: RoomId,
        ok: Vec<(crate::envelope::Envelope, crate::envelope::Payload)>,
        bad: usize,
    ) {
        if bad > 0 {
            tracing::debug!(room = %room.to_hex(), bad, "mailbox entries refused");
        }
        if ok.is_empty() {
            return;
        }
        match self.core.store_batch(room, ok) {
            Ok(report) => {
                // A later page may come before an earlier one: its entries wait for the gap.
                let taken = report.added + report.pending;
                self.mailboxes.stats.taken += taken as u64;
                if taken > 0 {
                    tracing::info!(room = %room.to_hex(), entries = taken, "caught up from a mailbox");
                }
                if report.added > 0 {
                    self.entries_added(room);
                    self.news(room);
                }
                for m in report.appended {
                    self.emit(super::Event::Message(Box::new(m)));
                }
                self.own_stored(room, &report.forked_authors);
            }
            Err(e) => tracing::error!(error = %e, "could not store entries from a mailbox"),
        }
    }

    /// Before the node stops: puts what members lack of what we wrote, and waits (a little)
    /// for it to be stored, so a message sent just before closing the laptop still arrives.
    pub(super) async fn put_mailboxes_before_stop(&mut self) {
        // Alone, no DHT node would take them: a stop is not held up by dials that cannot
        // succeed (the puts are lost either way; the next start's writes put them again).
        if self.connections.is_empty() {
            return;
        }
        let until = tokio::time::Instant::now() + PUT_BEFORE_STOP;
        // Connected, but no peer has told us its addresses yet (the node has just started,
        // or its links are slow): the DHT comes up within moments, and the puts wait for it
        // within the same budget rather than be dropped.
        let up = self.mailboxes.enabled();
        if !self.drive_until(until, |s| !up || s.kad_ready).await {
            return tracing::debug!("stopping before the DHT came up: no mailbox put");
        }
        self.put_mailboxes(true);
        if !self.drive_until(until, |s| !s.mailboxes.putting()).await {
            tracing::debug!("stopping before every mailbox was stored");
        }
    }

    /// Runs the swarm until `done` holds (true) or `until` comes (false).
    async fn drive_until(
        &mut self,
        until: tokio::time::Instant,
        done: impl Fn(&Service) -> bool,
    ) -> bool {
        while !done(self) {
            tokio::select! {
                ev = futures::StreamExt::select_next_some(&mut self.swarm) => self.on_swarm_event(ev),
                _ = tokio::time::sleep_until(until) => return false,
            }
        }
        true
    }
}
