//! The service's side of history reconciliation: when to exchange vectors, pulling missing
//! ranges, serving peers' pulls, and verifying batches off the swarm task. The protocol
//! logic itself lives in [`crate::sync`] and [`crate::core`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::gossipsub::TopicHash;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use tokio::sync::mpsc;

use super::{Event, Service};
use crate::core::{self, Rejection};
use crate::envelope::{Envelope, Payload};
use crate::room::RoomId;
use crate::sync::{
    self, ApplyError, ForkRef, Hello, HelloReply, Pacing, PeerViews, SyncRequest, SyncResponse,
};

/// Requests other than pulls a peer may make per window before it is told to slow down.
const RATE_LIMIT: u32 = 200;
/// Bytes of entries a peer may pull per window. Pulls have a budget of their own: a node
/// catching up asks for one batch after another (100,000 entries are some 200 pulls), and
/// counted as requests they stalled it for the rest of the window at about 10,000 entries a
/// second; counted in bytes they cost the server what they read and send, whatever their
/// number. About 46,000 typical entries a second, more than a two-core node verifies.
const PULL_BYTES: u64 = 256 * 1024 * 1024;
/// What a pull counts for at least, however little it returned (or if it was refused).
const PULL_MIN_COST: u64 = 64 * 1024;
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Consecutive vector retries with one peer before giving up until the next round.
const MAX_RETRIES: u32 = 3;
/// Room members each node exchanges vectors with per round, drawn at random. Gossip
/// carries the live traffic; reconciliation is the backstop, and random exchanges spread
/// what one node holds to all in a number of rounds that grows with the log of the room.
const SYNC_FANOUT: usize = 3;
/// After a vector exchange, the first pull waits this long: what the peer holds and we
/// lack is often still on its way through gossip, and pulling it too would fetch and
/// verify it twice.
const PULL_DELAY: Duration = Duration::from_millis(1000);

/// Member exchanges (one per room) under way at once at most.
const MAX_MEMBER_ASKS: usize = 32;

/// Threads that check one pulled batch's signatures at most.
const MAX_CHECK_THREADS: usize = 4;

/// Results coming back from blocking verification tasks.
pub(crate) enum Internal {
    Verified {
        peer: PeerId,
        room: RoomId,
        ok: Vec<(Envelope, Payload)>,
        bad: Vec<Rejection>,
        more: bool,
    },
    ForkChecked {
        peer: PeerId,
        room: RoomId,
        /// Both envelopes of a valid proof.
        conflicting: Option<Vec<(Envelope, Payload)>>,
    },
    /// Entries found in a mailbox, checked (see [`Service::store_from_mailbox`]).
    FromMailbox {
        room: RoomId,
        ok: Vec<(Envelope, Payload)>,
        bad: usize,
    },
    /// A flush on a blocking thread finished (see [`Service::flush`]).
    Flushed(Result<bool, crate::journal::JournalError>),
    /// A room's history, read on a blocking thread (see [`Service::read_history`]).
    History {
        room: RoomId,
        read: Result<Vec<crate::core::Opened>, crate::core::CoreError>,
        reply: super::Reply<Vec<crate::core::MessageView>>,
    },
    /// A room's members, named from its history on a blocking thread (see
    /// [`NodeHandle::members`]).
    Members {
        read: Result<Vec<crate::core::MemberView>, crate::core::CoreError>,
        reply: super::Reply<Vec<crate::core::MemberView>>,
    },
    /// A file looked up in a room's history on a blocking thread (see
    /// [`Service::find_then_fetch`]).
    FileFound {
        room: RoomId,
        found: Result<crate::files::FileRef, crate::core::CoreError>,
        waiter: super::files::Waiter,
    },
    /// A file's chunks dropped on a blocking thread (see [`NodeHandle::forget_file`]).
    Forgot {
        result: Result<(crate::files::FileRef, u64), crate::core::CoreError>,
        reply: super::Reply<super::files::Forgotten>,
    },
    /// A deleted message's file dropped on a blocking thread, if it was one (see
    /// [`Service::drop_withdrawn_file`]).
    Withdrawn(Result<Option<(crate::files::FileRef, u64)>, crate::core::CoreError>),
    /// Files left to fetch unasked, read from the rooms' histories (see
    /// [`Service::scan_for_files`]).
    FilesToFetch(Vec<(RoomId, crate::files::FileRef)>),
    /// A read on a blocking thread ended, after its result (see
    /// [`Service::read_off_loop`]).
    ReadEnded,
    /// The members hold another branch of our forked chain in a room: repair it, once
    /// the event that showed it is handled (see [`Service::own_settle`]).
    RepairOwn(RoomId),
}

enum Pending {
    /// Vectors for these rooms, in one request.
    Hellos(PeerId, Vec<RoomId>),
    Pull(PeerId, RoomId),
    Fork(RoomId, ForkRef),
    Members(RoomId),
    /// A member exchange asked through [`super::NodeHandle::ask_members`].
    MembersFor(super::Reply<Vec<(PeerId, Vec<libp2p::Multiaddr>)>>),
}

pub(crate) struct State {
    views: PeerViews<PeerId>,
    /// Which rooms exchange vectors in which round (quiet rooms less often).
    pacing: Pacing<RoomId>,
    /// Reconciliation rounds so far.
    round: u64,
    hello_in_flight: HashSet<(PeerId, RoomId)>,
    /// Vector exchanges to start, per peer (room -> send the whole vector): sent together
    /// by [`Service::send_hellos`] once the current event is handled.
    hellos_due: HashMap<PeerId, BTreeMap<RoomId, bool>>,
    pull_in_flight: HashSet<(PeerId, RoomId)>,
    /// Authors being pulled right now, and from whom: one peer at a time per author, so
    /// a node catching up does not fetch the same entries from every member at once.
    pulling: HashMap<(RoomId, crate::journal::Id), PeerId>,
    fork_in_flight: HashSet<(RoomId, ForkRef)>,
    /// Rooms with a member exchange under way (one at a time per room).
    members_in_flight: HashSet<RoomId>,
    requests: HashMap<OutboundRequestId, Pending>,
    /// Pulls to start once their delay is over (see [`PULL_DELAY`]).
    pulls_due: HashMap<(PeerId, RoomId), Instant>,
    retries: HashMap<(PeerId, RoomId), u32>,
    rate: HashMap<PeerId, Budget>,
    pub(super) tx: mpsc::UnboundedSender<Internal>,
}

impl State {
    pub(crate) fn new(tx: mpsc::UnboundedSender<Internal>) -> Self {
        State {
            views: PeerViews::default(),
            pacing: Pacing::default(),
            round: 0,
            hello_in_flight: HashSet::new(),
            hellos_due: HashMap::new(),
            pull_in_flight: HashSet::new(),
            pulling: HashMap::new(),
            fork_in_flight: HashSet::new(),
            members_in_flight: HashSet::new(),
            requests: HashMap::new(),
            pulls_due: HashMap::new(),
            retries: HashMap::new(),
            rate: HashMap::new(),
            tx,
        }
    }

    /// Whether a pull from `peer` gave us a branch of `author`'s chain in `room` that
    /// conflicts with ours.
    pub(crate) fn diverged(
        &self,
        peer: &PeerId,
        room: RoomId,
        author: &crate::journal::Id,
    ) -> bool {
        self.views.is_diverged(peer, room.0, author)
    }

    /// Whether `peer`'s last vector for `room` said it holds a proof of a fork of
    /// `author`'s chain.
    pub(crate) fn knows_fork(
        &self,
        peer: &PeerId,
        room: RoomId,
        author: &crate::journal::Id,
    ) -> bool {
        self.views.knows_fork(peer, room.0, author)
    }

    /// A peer's vector for a room, as last reconstructed.
    pub(crate) fn theirs(
        &self,
        peer: &PeerId,
        room: RoomId,
    ) -> Option<&BTreeMap<crate::journal::Id, crate::journal::Head>> {
        self.views.theirs(peer, room.0)
    }

    /// We dropped what we held of `room` (see [`super::own`]): start afresh with every
    /// peer.
    pub(crate) fn restart_room(&mut self, room: RoomId) {
        self.views.forget_room(room.0);
        self.pulling.retain(|(r, _), _| *r != room);
    }

    pub(crate) fn forget_peer(&mut self, peer: &PeerId) {
        self.views.forget_peer(peer);
        self.hello_in_flight.retain(|(p, _)| p != peer);
        self.hellos_due.remove(peer);
        self.pull_in_flight.retain(|(p, _)| p != peer);
        self.pulls_due.retain(|(p, _), _| p != peer);
        self.pulling.retain(|_, p| p != peer);
        self.retries.retain(|(p, _), _| p != peer);
        self.rate.remove(peer);
    }

    /// When the next delayed pull is due.
    pub(crate) fn next_pull(&self) -> Option<tokio::time::Instant> {
        self.pulls_due.values().min().map(|at| (*at).into())
    }

    /// Peers we are pulling history from right now.
    pub(crate) fn pulling_from(&self) -> HashSet<PeerId> {
        self.pulling.values().copied().collect()
    }

    /// The peer's budget for the current window.
    fn budget(&mut self, peer: PeerId) -> &mut Budget {
        let now = Instant::now();
        let b = self.rate.entry(peer).or_insert_with(|| Budget::new(now));
        if now.duration_since(b.since) > RATE_WINDOW {
            *b = Budget::new(now);
        }
        b
    }

    /// True if the peer may make this request now (see [`RATE_LIMIT`], [`PULL_BYTES`]).
    fn admit(&mut self, peer: PeerId, pull: bool) -> bool {
        let b = self.budget(peer);
        if pull {
            // Charged up front, so that pulls which return nothing (or are refused) count.
            let ok = b.pulled < PULL_BYTES;
            b.pulled = b.pulled.saturating_add(PULL_MIN_COST);
            ok
        } else {
            b.requests += 1;
            b.requests <= RATE_LIMIT
        }
    }

    /// Counts what a pull by `peer` returned, beyond its up-front charge, against its budget.
    fn charge_pull(&mut self, peer: PeerId, bytes: u64) {
        let b = self.budget(peer);
        b.pulled = b.pulled.saturating_add(bytes.saturating_sub(PULL_MIN_COST));
    }
}

/// What a peer has asked of us in the current rate window.
struct Budget {
    since: Instant,
    requests: u32,
    pulled: u64,
}

impl Budget {
    fn new(since: Instant) -> Self {
        Budget {
            since,
            requests: 0,
            pulled: 0,
        }
    }
}

impl Service {
    /// One reconciliation round: a vector exchange with a few connected members of every
    /// room that needs one, drawn at random. A room needs one when a member said it holds
    /// what we lack ([`core::Core::chase_claims`]), when something woke it ([`Service::news`]),
    /// or as a backstop, less and less often while nothing happens (see [`Pacing`]).
    pub(super) fn sync_all(&mut self) {
        let members = self.topic_peers();
        self.sync_among(&members);
    }

    /// [`Self::sync_all`], with the rooms' members known (`topic_peers`).
    pub(super) fn sync_among(&mut self, members: &HashMap<TopicHash, Vec<PeerId>>) {
        use rand::seq::IndexedRandom;
        let round = self.reconcile.round;
        self.reconcile.round += 1;
        let now = Instant::now();
        let ids: Vec<RoomId> = self.core.rooms().map(|r| r.id).collect();
        let mut rooms = Vec::new();
        for id in ids {
            // Chasing a claim wakes the room, so the backstop follows it up soon if the
            // members drawn this round lack it too.
            if self.core.chase_claims(id, now) {
                self.reconcile.pacing.wake(id);
            }
            if self.reconcile.pacing.due(id, round) {
                rooms.push(id);
            }
        }
        if rooms.is_empty() {
            return;
        }
        let mut rng = rand::rng();
        for room in rooms {
            let topic = libp2p::gossipsub::IdentTopic::new(room.topic()).hash();
            let Some(peers) = members.get(&topic) else {
                continue;
            };
            for peer in peers
                .sample(&mut rng, SYNC_FANOUT)
                .copied()
                .collect::<Vec<_>>()
            {
                self.start_hello(peer, room, false);
            }
        }
    }

    /// Something happened in `room` that reconciliation should follow up at once: a gap in
    /// an author's chain, a fork, a member appeared, entries came in by reconciliation.
    pub(super) fn news(&mut self, room: RoomId) {
        self.reconcile.pacing.wake(room);
    }

    /// We hold new entries in `room`: members hear of them in our next receipt. Entries
    /// that gossip brought (or that we wrote) wake no exchange by themselves: a member that
    /// gossip missed learns of them from the heads that receipts and later messages carry
    /// (see [`Service::sync_all`]), and a room where every message arrives has nothing to
    /// reconcile.
    pub(super) fn entries_added(&mut self, room: RoomId) {
        self.receipts_due.entry(room).or_insert(false);
        self.message_rate.record(room);
    }

    /// We left `room`.
    pub(super) fn forget_room(&mut self, room: RoomId) {
        self.reconcile.pacing.forget(&room);
    }

    /// Pulls from `peer` what it holds and we lack, after [`PULL_DELAY`].
    fn pull_later(&mut self, peer: PeerId, room: RoomId) {
        self.reconcile
            .pulls_due
            .entry((peer, room))
            .or_insert_with(|| Instant::now() + PULL_DELAY);
    }

    /// Starts the delayed pulls whose time has come.
    pub(super) fn run_due_pulls(&mut self) {
        let now = Instant::now();
        let due: Vec<(PeerId, RoomId)> = self
            .reconcile
            .pulls_due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| *k)
            .collect();
        for (peer, room) in due {
            self.reconcile.pulls_due.remove(&(peer, room));
            self.pull_missing(peer, room);
        }
    }

    /// Queues our vector for `room` to `peer` (unless an exchange is already under way):
    /// everything queued for one peer goes out together in [`Service::send_hellos`].
    pub(super) fn start_hello(&mut self, peer: PeerId, room: RoomId, force_full: bool) {
        if !self.swarm.is_connected(&peer) || self.reconcile.hello_in_flight.contains(&(peer, room))
        {
            return;
        }
        *self
            .reconcile
            .hellos_due
            .entry(peer)
            .or_default()
            .entry(room)
            .or_default() |= force_full;
    }

    /// Our vector for `room` as the next message to `peer` (whole, or what changed since
    /// the last one; see [`PeerViews::hello`]).
    fn our_hello(
        &mut self,
        peer: PeerId,
        room: RoomId,
        full: bool,
    ) -> Result<Hello, core::CoreError> {
        let mine = self.core.vector(room)?;
        let forks = self.core.fork_refs(room)?;
        let machine = self.machine_tag(&forks).map(serde_bytes::ByteBuf::from);
        let mut hello = self
            .reconcile
            .views
            .hello(&peer, room.0, &mine, forks, full);
        hello.machine = machine;
        Ok(hello)
    }

    /// Sends the queued vector exchanges, one request per peer per [`sync::batches`].
    pub(super) fn send_hellos(&mut self) {
        if self.reconcile.hellos_due.is_empty() {
            return;
        }
        let due = std::mem::take(&mut self.reconcile.hellos_due);
        for (peer, rooms) in due {
            if !self.swarm.is_connected(&peer) {
                continue;
            }
            let mut hellos: Vec<Hello> = Vec::with_capacity(rooms.len());
            for (room, force_full) in rooms {
                if !self.reconcile.hello_in_flight.insert((peer, room)) {
                    continue;
                }
                match self.our_hello(peer, room, force_full) {
                    Ok(hello) => hellos.push(hello),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the journal for sync");
                        self.reconcile.hello_in_flight.remove(&(peer, room));
                    }
                }
            }
            self.activity.exchanges_sent += hellos.len() as u64;
            for batch in sync::batches(hellos) {
                let rooms = batch.iter().map(|h| RoomId(h.room)).collect();
                let id = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_request(&peer, SyncRequest::Hellos(batch));
                self.reconcile
                    .requests
                    .insert(id, Pending::Hellos(peer, rooms));
            }
        }
    }

    /// Pulls what `peer` has and we lack, one bounded batch at a time.
    fn pull_missing(&mut self, peer: PeerId, room: RoomId) {
        // A request to a peer we are not connected to would dial it.
        if !self.swarm.is_connected(&peer) || self.reconcile.pull_in_flight.contains(&(peer, room))
        {
            return;
        }
        let mine = match self.core.vector(room) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the journal for sync");
                return;
            }
        };
        let pulling = &self.reconcile.pulling;
        let ranges: Vec<_> = self
            .reconcile
            .views
            .missing(&peer, room.0, &mine)
            .into_iter()
            .filter(|r| pulling.get(&(room, r.author)).is_none_or(|p| *p == peer))
            .collect();
        if ranges.is_empty() {
            return;
        }
        for r in &ranges {
            self.reconcile.pulling.insert((room, r.author), peer);
        }
        tracing::debug!(%peer, ranges = ranges.len(), "pulling missing entries");
        self.activity.pulls_sent += 1;
        self.reconcile.pull_in_flight.insert((peer, room));
        let id = self.swarm.behaviour_mut().sync.send_request(
            &peer,
            SyncRequest::Pull {
                room: room.0,
                ranges,
            },
        );
        self.reconcile
            .requests
            .insert(id, Pending::Pull(peer, room));
    }

    /// Asks for proofs of forks the peer knows and we do not.
    fn pull_fork_proofs(&mut self, peer: PeerId, room: RoomId, theirs: &[ForkRef]) {
        if !self.swarm.is_connected(&peer) {
            return;
        }
        let known = self.core.fork_refs(room).unwrap_or_default();
        for f in theirs.iter().take(16) {
            if known.contains(f) || !self.reconcile.fork_in_flight.insert((room, *f)) {
                continue;
            }
            let id = self.swarm.behaviour_mut().sync.send_request(
                &peer,
                SyncRequest::ForkProof {
                    room: room.0,
                    fork: *f,
                },
            );
            self.reconcile.requests.insert(id, Pending::Fork(room, *f));
        }
    }

    pub(super) fn on_sync_event(&mut self, ev: request_response::Event<SyncRequest, SyncResponse>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => self.on_sync_request(peer, request, channel),
                request_response::Message::Response {
                    request_id,
                    response,
                } if self.fetches.owns(&request_id) => {
                    self.on_chunk_answer(request_id, Some(response))
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => self.on_sync_response(peer, request_id, response),
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "sync request failed");
                if self.fetches.owns(&request_id) {
                    return self.on_chunk_answer(request_id, None);
                }
                self.activity.sync_failures += 1;
                // A member that could not answer (or predates member exchange): the DHT.
                match self.finish_request(request_id) {
                    Some(Pending::Members(room)) => self.lookup(room),
                    Some(Pending::MembersFor(reply)) => {
                        let _ = reply.send(Err(super::NodeError::Peer(error.to_string())));
                    }
                    _ => {}
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "sync request from peer failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Clears the in-flight mark of a finished request.
    fn finish_request(&mut self, id: OutboundRequestId) -> Option<Pending> {
        let p = self.reconcile.requests.remove(&id)?;
        match &p {
            Pending::Hellos(peer, rooms) => {
                for room in rooms {
                    self.reconcile.hello_in_flight.remove(&(*peer, *room));
                }
            }
            Pending::Pull(peer, room) => {
                self.reconcile.pull_in_flight.remove(&(*peer, *room));
                self.release_authors(*peer, *room);
            }
            Pending::Fork(room, fork) => {
                self.reconcile.fork_in_flight.remove(&(*room, *fork));
            }
            Pending::Members(room) => {
                self.reconcile.members_in_flight.remove(room);
            }
            Pending::MembersFor(_) => {}
        }
        Some(p)
    }

    fn respond(&mut self, channel: ResponseChannel<SyncResponse>, resp: SyncResponse) {
        if self
            .swarm
            .behaviour_mut()
            .sync
            .send_response(channel, resp)
            .is_err()
        {
            tracing::debug!("sync response dropped: the peer went away");
        }
    }

    fn on_sync_request(
        &mut self,
        peer: PeerId,
        request: SyncRequest,
        channel: ResponseChannel<SyncResponse>,
    ) {
        let pull = matches!(
            request,
            SyncRequest::Pull { .. } | SyncRequest::Chunk { .. }
        );
        if !self.reconcile.admit(peer, pull) {
            self.respond(channel, SyncResponse::Denied("too many requests".into()));
            return;
        }
        let resp = match request {
            SyncRequest::Hellos(hellos) => return self.on_hellos(peer, &hellos, channel),
            // Only members (those who know the room id) can ask, and only for rooms we are in.
            SyncRequest::Pull { room, .. }
            | SyncRequest::ForkProof { room, .. }
            | SyncRequest::Members { room }
            | SyncRequest::Chunk { room, .. }
                if self.core.room(&RoomId(room)).is_none() =>
            {
                SyncResponse::Denied("unknown room".into())
            }
            SyncRequest::Pull { room, ranges } => match self.core.serve_pull(RoomId(room), &ranges)
            {
                Ok((entries, more)) => {
                    let bytes = entries.iter().map(|e| e.len() as u64).sum();
                    self.reconcile.charge_pull(peer, bytes);
                    self.activity.pulls_served += 1;
                    self.activity.entries_served += entries.len() as u64;
                    SyncResponse::Entries {
                        entries: entries
                            .into_iter()
                            .map(serde_bytes::ByteBuf::from)
                            .collect(),
                        more,
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot serve a pull");
                    SyncResponse::Denied("journal unavailable".into())
                }
            },
            SyncRequest::Chunk { id, .. } => {
                let resp = self.serve_chunk(peer, &id);
                if let SyncResponse::Chunk(Some(bytes)) = &resp {
                    self.reconcile.charge_pull(peer, bytes.len() as u64);
                }
                resp
            }
            SyncRequest::Members { room } => {
                self.activity.member_asks_answered += 1;
                SyncResponse::Members(self.members_for(peer, RoomId(room)))
            }
            SyncRequest::ForkProof { room, fork } => {
                match self.core.serve_fork_proof(RoomId(room), fork) {
                    Ok(Some((first, second))) => SyncResponse::ForkProof {
                        first: first.into(),
                        second: second.into(),
                    },
                    _ => SyncResponse::Denied("no such fork".into()),
                }
            }
        };
        self.respond(channel, resp);
    }

    /// Answers a peer's vectors, room by room, then pulls what it holds and we lack.
    fn on_hellos(
        &mut self,
        peer: PeerId,
        hellos: &[Hello],
        channel: ResponseChannel<SyncResponse>,
    ) {
        if hellos.len() > sync::MAX_HELLOS {
            self.respond(channel, SyncResponse::Denied("too many rooms".into()));
            return;
        }
        let mut replies = Vec::with_capacity(hellos.len());
        let mut applied = Vec::new();
        for hello in hellos {
            let room = RoomId(hello.room);
            // Only members (those who know the room id) can ask, and only for rooms we are in.
            if self.core.room(&room).is_none() {
                replies.push(HelloReply::Denied(room.0, "unknown room".into()));
                continue;
            }
            let reply = match self.reconcile.views.apply(&peer, hello) {
                Ok(()) => match self.our_hello(peer, room, hello.want_full) {
                    Ok(ours) => HelloReply::Hello(ours),
                    Err(_) => HelloReply::Denied(room.0, "journal unavailable".into()),
                },
                Err(ApplyError::NeedFull) => HelloReply::Resend(room.0),
                Err(ApplyError::TooLarge) => HelloReply::Denied(room.0, "vector too large".into()),
            };
            if matches!(reply, HelloReply::Hello(_)) {
                self.activity.exchanges_answered += 1;
                applied.push((room, hello));
            }
            replies.push(reply);
        }
        self.respond(channel, SyncResponse::Hellos(replies));
        for (room, hello) in applied {
            let forks = &hello.forks;
            self.note_machine(peer, hello);
            self.own_heard(peer, room);
            self.pull_later(peer, room);
            self.pull_fork_proofs(peer, room, forks);
        }
    }

    /// Takes a peer's answers to our vectors, room by room.
    fn on_hello_replies(&mut self, peer: PeerId, asked: &[RoomId], replies: Vec<HelloReply>) {
        if replies.len() > asked.len() {
            return self.penalise(peer, "answered more rooms than asked");
        }
        for reply in replies {
            let room = RoomId(reply.room());
            if !asked.contains(&room) {
                return self.penalise(peer, "answered for another room");
            }
            match reply {
                HelloReply::Hello(hello) => match self.reconcile.views.apply(&peer, &hello) {
                    Ok(()) => {
                        self.reconcile.retries.remove(&(peer, room));
                        self.note_machine(peer, &hello);
                        self.own_heard(peer, room);
                        self.pull_later(peer, room);
                        self.pull_fork_proofs(peer, room, &hello.forks);
                    }
                    // Our view of theirs is stale: the next hello asks for their whole vector.
                    Err(ApplyError::NeedFull) => self.retry_hello(peer, room, false),
                    Err(ApplyError::TooLarge) => {}
                },
                HelloReply::Resend(_) => {
                    self.reconcile.views.reset_sent(&peer, room.0);
                    self.retry_hello(peer, room, true);
                }
                HelloReply::Denied(_, why) => {
                    tracing::debug!(%peer, %why, "vector exchange denied for a room");
                }
            }
        }
    }

    fn on_sync_response(&mut self, peer: PeerId, id: OutboundRequestId, resp: SyncResponse) {
        let Some(pending) = self.finish_request(id) else {
            return;
        };
        match (pending, resp) {
            (Pending::Hellos(_, rooms), SyncResponse::Hellos(replies)) => {
                self.on_hello_replies(peer, &rooms, replies);
            }
            (Pending::Pull(_, room), SyncResponse::Entries { entries, more }) => {
                self.verify_batch(peer, room, entries, more);
            }
            (Pending::Fork(room, _), SyncResponse::ForkProof { first, second }) => {
                self.verify_fork(peer, room, first.into_vec(), second.into_vec());
            }
            (Pending::Members(room), SyncResponse::Members(members)) => {
                self.on_members(room, members);
            }
            (Pending::Members(room), SyncResponse::Denied(why)) => {
                tracing::debug!(%peer, %why, "member exchange denied");
                self.lookup(room);
            }
            (Pending::MembersFor(reply), SyncResponse::Members(members)) => {
                let _ = reply.send(Ok(parse_members(members)));
            }
            (Pending::MembersFor(reply), SyncResponse::Denied(why)) => {
                let _ = reply.send(Err(super::NodeError::Peer(why)));
            }
            (_, SyncResponse::Denied(why)) => {
                tracing::debug!(%peer, %why, "sync request denied");
            }
            (_, _) => self.penalise(peer, "unexpected sync response"),
        }
    }

    /// Asks `peer` which members of `room` it is connected to, unless an exchange for the
    /// room is under way already. False if too many exchanges are (a node in hundreds of
    /// rooms, all short of members, would otherwise send hundreds of requests a round to
    /// the same few peers): the room then takes the DHT's path.
    pub(super) fn request_members(&mut self, peer: PeerId, room: RoomId) -> bool {
        if self.reconcile.members_in_flight.contains(&room) {
            return true;
        }
        if self.reconcile.members_in_flight.len() >= MAX_MEMBER_ASKS {
            return false;
        }
        self.reconcile.members_in_flight.insert(room);
        self.activity.member_asks += 1;
        let id = self
            .swarm
            .behaviour_mut()
            .sync
            .send_request(&peer, SyncRequest::Members { room: room.0 });
        self.reconcile.requests.insert(id, Pending::Members(room));
        true
    }

    /// The room members we are connected to, for `asker`: a random selection of those
    /// whose listen addresses we know, the asker left out.
    fn members_for(&self, asker: PeerId, room: RoomId) -> Vec<sync::Member> {
        use rand::seq::IndexedRandom;
        let known: Vec<(PeerId, &Vec<libp2p::Multiaddr>)> = self
            .room_peer_ids(room)
            .into_iter()
            .filter(|p| *p != asker)
            .filter_map(|p| self.listen_addrs_of(&p).map(|a| (p, a)))
            .collect();
        known
            .sample(&mut rand::rng(), crate::peers::EXCHANGE_MAX_MEMBERS)
            .map(|(p, addrs)| sync::Member {
                peer: serde_bytes::ByteBuf::from(p.to_bytes()),
                addrs: addrs
                    .iter()
                    .take(crate::peers::EXCHANGE_MAX_ADDRS)
                    .map(|a| serde_bytes::ByteBuf::from(a.to_vec()))
                    .collect(),
            })
            .collect()
    }

    /// Dials some of the members a peer named, as many as the room is short of; the DHT
    /// if it named no one new.
    fn on_members(&mut self, room: RoomId, members: Vec<sync::Member>) {
        if self.core.room(&room).is_none() {
            return;
        }
        let want = self.members_wanted(room);
        if want == 0 {
            return;
        }
        let offered = parse_members(members);
        let me = *self.swarm.local_peer_id();
        let dialling: HashSet<PeerId> = self
            .room_dials
            .get(&room)
            .map(|d| d.keys().copied().collect())
            .unwrap_or_default();
        let swarm = &self.swarm;
        let picked = crate::peers::pick_offered(
            offered,
            |p| *p == me || swarm.is_connected(p) || dialling.contains(p),
            want,
            &mut rand::rng(),
        );
        if picked.is_empty() {
            self.lookup(room);
            return;
        }
        // Someone new to reach: keep looking every round until they show up.
        self.lookups.remove(&room);
        for (peer, addrs) in picked {
            self.room_dials
                .entry(room)
                .or_default()
                .insert(peer, std::time::Instant::now());
            self.activity.members_dialled += 1;
            self.dial_peer(peer, addrs);
        }
    }

    /// [`Self::request_members`] for [`super::NodeHandle::ask_members`]: the parsed answer
    /// goes back to the caller, and nothing is dialled.
    pub(super) fn ask_members_for(
        &mut self,
        peer: PeerId,
        room: RoomId,
        reply: super::Reply<Vec<(PeerId, Vec<libp2p::Multiaddr>)>>,
    ) {
        if !self.swarm.is_connected(&peer) {
            let _ = reply.send(Err(super::NodeError::Peer("not connected".into())));
            return;
        }
        let id = self
            .swarm
            .behaviour_mut()
            .sync
            .send_request(&peer, SyncRequest::Members { room: room.0 });
        self.reconcile
            .requests
            .insert(id, Pending::MembersFor(reply));
    }

    /// Lets other peers serve the authors this peer was pulled for.
    fn release_authors(&mut self, peer: PeerId, room: RoomId) {
        self.reconcile
            .pulling
            .retain(|(r, _), p| !(*r == room && *p == peer));
    }

    fn retry_hello(&mut self, peer: PeerId, room: RoomId, force_full: bool) {
        let n = self.reconcile.retries.entry((peer, room)).or_default();
        *n += 1;
        if *n <= MAX_RETRIES {
            self.start_hello(peer, room, force_full);
        }
    }

    /// Verifies a pulled batch on a blocking thread; the result comes back as [`Internal`].
    fn verify_batch(
        &mut self,
        peer: PeerId,
        room: RoomId,
        entries: Vec<serde_bytes::ByteBuf>,
        more: bool,
    ) {
        let Some(r) = self.core.room(&room).cloned() else {
            return;
        };
        // Hold the pull slot until the batch is stored, so the next pull sees the new vector.
        self.reconcile.pull_in_flight.insert((peer, room));
        let me = self.core.identity().clone();
        let keys = self.core.author_keys().clone();
        let tx = self.reconcile.tx.clone();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_CHECK_THREADS);
        tokio::task::spawn_blocking(move || {
            let mut ok = Vec::with_capacity(entries.len());
            let mut bad = Vec::new();
            let entries: Vec<Vec<u8>> = entries.into_iter().map(|e| e.into_vec()).collect();
            for result in core::check_batch(&me, &r, &entries, &keys, threads) {
                match result {
                    Ok(v) => ok.push(v),
                    Err(why) => bad.push(why),
                }
            }
            let _ = tx.send(Internal::Verified {
                peer,
                room,
                ok,
                bad,
                more,
            });
        });
    }

    fn verify_fork(&mut self, peer: PeerId, room: RoomId, first: Vec<u8>, second: Vec<u8>) {
        let Some(r) = self.core.room(&room).cloned() else {
            return;
        };
        let me = self.core.identity().clone();
        let keys = self.core.author_keys().clone();
        let tx = self.reconcile.tx.clone();
        tokio::task::spawn_blocking(move || {
            let a = core::check(&me, &r, first, &keys);
            let b = core::check(&me, &r, second, &keys);
            // A proof is two valid envelopes by one author that cannot both be in its chain:
            // the same seq with different bytes, or a successor whose `prev` is not the hash
            // of the entry before it.
            let conflicting = match (a, b) {
                (Ok(a), Ok(b))
                    if a.0.author_id() == b.0.author_id()
                        && ((a.0.seq == b.0.seq && a.0.hash() != b.0.hash())
                            || (a.0.seq + 1 == b.0.seq && b.0.prev != a.0.hash())) =>
                {
                    // Storing both records the fork whichever of them we held before.
                    Some(vec![a, b])
                }
                _ => None,
            };
            let _ = tx.send(Internal::ForkChecked {
                peer,
                room,
                conflicting,
            });
        });
    }

    pub(super) fn on_internal(&mut self, msg: Internal) {
        match msg {
            Internal::Verified {
                peer,
                room,
                ok,
                bad,
                more,
            } => {
                self.reconcile.pull_in_flight.remove(&(peer, room));
                self.release_authors(peer, room);
                self.activity.entries_pulled += (ok.len() + bad.len()) as u64;
                let nothing_sent = ok.is_empty() && bad.is_empty();
                for why in bad.iter().filter(|w| **w != core::Rejection::UnknownAuthor) {
                    self.core.count_rejection(*why);
                }
                if !ok.is_empty() {
                    match self.core.store_batch(room, ok) {
                        Ok(report) => {
                            for author in &report.forked_authors {
                                self.reconcile.views.mark_diverged(&peer, room.0, *author);
                            }
                            if report.added > 0 {
                                // Others may lack them too.
                                self.entries_added(room);
                                self.news(room);
                            }
                            for m in report.appended {
                                self.emit(Event::Message(Box::new(m)));
                            }
                            // After them: a write this releases follows them for clients too.
                            self.own_stored(room, &report.forked_authors);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "could not store synchronised entries");
                            return;
                        }
                    }
                }
                if bad.iter().any(|w| *w != core::Rejection::UnknownAuthor) {
                    return self.penalise(peer, "sent entries that failed verification");
                }
                if nothing_sent {
                    // It advertised entries it does not serve: stop pulling from it until its
                    // next vector, and let other members serve those authors.
                    self.reconcile.views.forget_vector(&peer, room.0);
                    return;
                }
                // Whether or not the peer said `more`, recompute what is still missing.
                let _ = more;
                self.pull_missing(peer, room);
            }
            Internal::ForkChecked {
                peer,
                room,
                conflicting,
            } => match conflicting {
                Some(entries) => {
                    if let Err(e) = self.core.store_batch(room, entries) {
                        tracing::error!(error = %e, "could not store a fork proof");
                    }
                }
                None => self.penalise(peer, "sent an invalid fork proof"),
            },
            Internal::FromMailbox { room, ok, bad } => self.store_from_mailbox(room, ok, bad),
            Internal::Flushed(result) => self.flushed(result),
            Internal::ReadEnded => self.reading -= 1,
            Internal::RepairOwn(room) => self.repair_own(room),
            Internal::FilesToFetch(files) => self.found_files_to_fetch(files),
            Internal::History { room, read, reply } => {
                let views = read.and_then(|opened| self.core.views(room, opened));
                let _ = reply.send(views.map_err(Into::into));
            }
            Internal::Members { read, reply } => {
                let _ = reply.send(read.map_err(Into::into));
            }
            Internal::Forgot { result, reply } => self.forgot(result, reply),
            Internal::Withdrawn(result) => self.withdrawn(result),
            Internal::FileFound {
                room,
                found,
                waiter,
            } => {
                if matches!(waiter, super::files::Waiter::Auto) {
                    self.auto_fetch.looked_up();
                }
                match found {
                    Ok(file) => self.fetch_found(room, file, waiter),
                    Err(e) => waiter.fail(e.into()),
                }
            }
        }
    }

    /// A peer that sends garbage is disconnected; gossipsub's scoring handles the rest.
    pub(super) fn penalise(&mut self, peer: PeerId, why: &str) {
        tracing::warn!(%peer, why, "disconnecting misbehaving peer");
        self.reconcile.forget_peer(&peer);
        let _ = self.swarm.disconnect_peer_id(peer);
    }
}

/// A member exchange answer as peers and addresses: what does not parse is dropped, as are
/// entries past [`crate::peers::EXCHANGE_MAX_MEMBERS`], addresses past
/// [`crate::peers::EXCHANGE_MAX_ADDRS`], and members left with no address.
fn parse_members(members: Vec<sync::Member>) -> Vec<(PeerId, Vec<libp2p::Multiaddr>)> {
    members
        .into_iter()
        .take(crate::peers::EXCHANGE_MAX_MEMBERS)
        .filter_map(|m| {
            let peer = PeerId::from_bytes(&m.peer).ok()?;
            let addrs = m
                .addrs
                .into_iter()
                .take(crate::peers::EXCHANGE_MAX_ADDRS)
                .filter_map(|a| libp2p::Multiaddr::try_from(a.into_vec()).ok())
                .collect::<Vec<_>>();
            (!addrs.is_empty()).then_some((peer, addrs))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_answers_drop_what_does_not_parse_and_what_is_past_the_limits() {
        use serde_bytes::ByteBuf;
        let addr: libp2p::Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let good = PeerId::random();
        let member = |peer: Vec<u8>, addrs: Vec<Vec<u8>>| sync::Member {
            peer: ByteBuf::from(peer),
            addrs: addrs.into_iter().map(ByteBuf::from).collect(),
        };
        let list = vec![
            member(good.to_bytes(), vec![addr.to_vec(), b"garbage".to_vec()]),
            member(b"not a peer id".to_vec(), vec![addr.to_vec()]),
            // No address that parses: nothing to dial.
            member(PeerId::random().to_bytes(), vec![vec![0xff; 40]]),
            member(PeerId::random().to_bytes(), vec![addr.to_vec(); 10]),
        ];
        let parsed = parse_members(list);
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0], (good, vec![addr.clone()]));
        assert_eq!(parsed[1].1.len(), crate::peers::EXCHANGE_MAX_ADDRS);
        let long = (0..100)
            .map(|_| member(PeerId::random().to_bytes(), vec![addr.to_vec()]))
            .collect();
        assert_eq!(
            parse_members(long).len(),
            crate::peers::EXCHANGE_MAX_MEMBERS
        );
    }

    #[test]
    fn pulls_are_budgeted_in_bytes_and_other_requests_by_count() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut state = State::new(tx);
        let (peer, other) = (PeerId::random(), PeerId::random());
        for _ in 0..RATE_LIMIT {
            assert!(state.admit(peer, false));
        }
        assert!(!state.admit(peer, false), "past the request limit");
        // A node catching up: far more pulls than requests, until the bytes run out.
        let batch = 512 * 560;
        let mut pulls = 0u64;
        while state.admit(peer, true) {
            state.charge_pull(peer, batch);
            pulls += 1;
        }
        assert_eq!(pulls, PULL_BYTES.div_ceil(batch));
        assert!(pulls > u64::from(RATE_LIMIT));
        // Empty or refused pulls count too.
        let mut empty = 0u64;
        while state.admit(other, true) {
            empty += 1;
        }
        assert_eq!(empty, PULL_BYTES / PULL_MIN_COST);
        assert!(state.admit(other, false), "budgets are separate");
    }
}
