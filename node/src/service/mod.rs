//! The node service: one task owns the swarm and the protocol state and is driven by
//! commands over a channel. `NodeHandle` is the only way in; the local API and tests use it.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use libp2p::core::ConnectedPoint;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, PublishError};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, autonat, identify, kad, mdns, ping, relay};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

mod files;
mod reconcile;
mod webrtc;

pub use files::{FetchProgress, Fetched, FileReader, Forgotten, KnownFile, Target};

use crate::config;
use crate::core::{
    Admitted, ContactView, Core, CoreError, Counters, Incoming, MessageView, Rejection, RoomView,
};
use crate::envelope::Kind;
use crate::identity::Identity;
use crate::journal::{Journal, JournalError, Page};
use crate::net::{self, Behaviour, BehaviourEvent, NetError, SwarmOptions};
use crate::room::{Room, RoomId};

/// How a node is started.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub swarm: SwarmOptions,
    /// How often rooms look for members in the DHT once the node has settled.
    pub rendezvous_interval: Duration,
    /// How often the node reconciles each room's history with its connected members.
    pub sync_interval: Duration,
    /// How many members each room keeps connected.
    pub budget: crate::peers::Budget,
    /// A file fetch that no connected member can move forward fails after this long.
    pub fetch_timeout: Duration,
    /// Files others share of at most this many bytes are fetched unasked (0: none), so
    /// they are at hand when opened and stay available while their author is offline.
    pub auto_fetch: u64,
    /// Files are fetched unasked only while the node's file chunks, with the fetches under
    /// way, stay within this many bytes: a busy room cannot fill the disk.
    pub auto_fetch_total: u64,
}

impl NodeConfig {
    /// Listens on every transport on all interfaces, with OS-chosen ports.
    pub fn default_listen() -> Vec<Multiaddr> {
        [
            "/ip4/0.0.0.0/tcp/0",
            "/ip4/0.0.0.0/udp/0/quic-v1",
            "/ip4/0.0.0.0/udp/0/webrtc-direct",
        ]
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect()
    }

    pub fn new(data_dir: PathBuf) -> Self {
        NodeConfig {
            data_dir,
            listen: Self::default_listen(),
            bootstrap: vec![],
            swarm: SwarmOptions::default(),
            rendezvous_interval: Duration::from_secs(30),
            sync_interval: Duration::from_secs(5),
            budget: crate::peers::Budget::default(),
            fetch_timeout: Duration::from_secs(60),
            auto_fetch: 0,
            auto_fetch_total: 1 << 30,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("cannot listen on {addr}: {why}")]
    Listen { addr: String, why: String },
    #[error("data dir {path}: {why}")]
    DataDir { path: String, why: String },
    #[error("the node has stopped")]
    Stopped,
    #[error("the peer did not answer: {0}")]
    Peer(String),
    /// A file that cannot be shared or written, or a shared file that is malformed.
    #[error("{0}")]
    FileInput(String),
    /// No connected member could serve a file's chunks.
    #[error("{0}")]
    FileUnavailable(String),
}

impl From<JournalError> for NodeError {
    fn from(e: JournalError) -> Self {
        NodeError::Core(CoreError::Journal(e))
    }
}

/// Something the node tells its clients as it happens.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Message(MessageView),
    Rejected { room_id: String, reason: Rejection },
    PeerConnected { peer_id: String },
    PeerDisconnected { peer_id: String },
}

/// A connected peer and the addresses of its connections.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerView {
    pub peer_id: String,
    pub addrs: Vec<String>,
    /// "tcp", "quic", "webrtc-direct", "relay" or "other", per connection.
    pub transports: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub username: String,
    pub user_id: String,
    /// What others paste into `cryptchat contact add`.
    pub contact_code: String,
    pub peer_id: String,
    pub listen_addrs: Vec<String>,
    pub connected_peers: usize,
    pub rooms: Vec<RoomStatus>,
    pub counters: Counters,
    /// What the node's networking did since it started.
    #[serde(default)]
    pub activity: crate::activity::Activity,
    pub nat: String,
    /// Files being fetched, and how far each has come.
    #[serde(default)]
    pub fetches: Vec<FetchProgress>,
    /// What the node's DHT store holds (see [`crate::dht_store`]).
    #[serde(default)]
    pub dht: crate::dht_store::StoreStats,
    /// Bytes of file chunks the node holds (sealed): its own shares and what it fetched.
    #[serde(default)]
    pub file_bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoomStatus {
    pub name: String,
    /// Peers subscribed to the room's topic that we are connected to.
    pub peers: usize,
    /// Own messages waiting for a peer to publish to.
    pub unpublished: usize,
}

/// What `send` reports back.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sent {
    pub message: MessageView,
    /// False when no room member was reachable yet: the message is stored and is published
    /// as soon as one is.
    pub published: bool,
}

/// Swarm events handled back to back before the event loop looks at anything else; also
/// the most received entries waiting to be stored: past that many they are stored at once.
const GROUP_COMMIT_MAX: usize = 256;
/// Received entries are stored at most this long after the first of them arrived, all in
/// one transaction (each costs about 0.1 ms of CPU, whatever its size). Those that come
/// next in their author's chain, nearly all, are shown when verified, before they are
/// stored (`Core::preview`), so this delays no message; it keeps the writes of a room's
/// members out of the way of the message that caused them while it spreads (a room of 40
/// on two cores: p99 ~18 ms against ~22 ms when every message waited for its write).
/// Commands store what waits first, so what a client reads holds every message shown.
const STORE_DELAY: Duration = Duration::from_millis(50);
/// Received entries reach the disk at most this long after they are stored: a crash loses
/// no more than that, and reconciliation fetches it again from the members who hold it.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Runs disk-bound work (durable journal commits) without stalling the runtime's other
/// tasks: on a multi-threaded runtime the worker hands its other tasks to another thread.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// A node whose event loop is this late holds up every connection it has (once their
/// buffered events fill up, they stop reading).
const LATE: Duration = Duration::from_millis(100);

/// Logs how late a timer was handled, past [`LATE`] (at debug, under the `cryptchat::slow`
/// target): the node's task was busy with earlier events or waited for the runtime.
fn lag_report(due: tokio::time::Instant) {
    let lag = due.elapsed();
    if lag >= LATE {
        tracing::debug!(target: "cryptchat::slow", ms = lag.as_millis() as u64, "timer fired late");
    }
}

/// A timer ticking every `period` from a random point of its first period. Nodes started
/// together (a compose file, a simulation, a restart after an outage) would otherwise run
/// their periodic work (vector exchanges, receipts, disk syncs) at the same moments, and
/// those bursts, not the steady load, set a busy room's worst latencies.
fn staggered(period: Duration) -> tokio::time::Interval {
    use rand::RngExt;
    let first = tokio::time::Instant::now() + period.mul_f64(rand::rng().random_range(0.0..1.0));
    let mut timer = tokio::time::interval_at(first, period);
    // A late tick (a busy moment) is not made up for by a burst of ticks.
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer
}

/// Sleeps until `at`, or forever without a deadline.
async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A rendezvous dial counts towards its room's budget this long before the peer shows up
/// as a member (connection, identify, subscription).
const DIAL_PENDING: Duration = Duration::from_secs(15);
/// Each room is announced in the DHT again every this many rendezvous rounds at least
/// (provider records live in other nodes' memory, which restarts lose)...
const ANNOUNCE_MIN_ROUNDS: u32 = 10;
/// ...and at most, whatever the room's size (see [`crate::peers::announce_every`]).
const ANNOUNCE_MAX_ROUNDS: u32 = 120;
/// A room whose member count holds still asks the DHT at least this many rendezvous rounds
/// apart (see [`crate::peers::Pacing`]).
const LOOKUP_MAX_EVERY: u32 = 8;
/// DHT queries (announcements and lookups) a node runs at once at most; see
/// [`Service::rendezvous`].
const MAX_DHT_QUERIES: usize = 64;
/// Ping failures in a row (as reported: libp2p's handler keeps quiet about the first)
/// after which a connection counts as dead. With pings every 5 s and 10 s timeouts, a dead
/// link is closed within about 40 s, and a peer that answers late now and then is kept.
const PING_FAILURES_TO_CLOSE: u32 = 2;
/// Invalid messages a peer may relay per window before it is cut off.
const STRIKE_LIMIT: u32 = 20;
/// Receipts go out at most this often per room.
const RECEIPT_INTERVAL: Duration = Duration::from_secs(1);
/// How often a node logs its [`crate::activity::Activity`] (at debug).
const ACTIVITY_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Every this many sync rounds, every room re-sends its whole receipt, for members that
/// missed a change (receipts are best-effort gossip). A peer that subscribes to one of our
/// rooms gets a whole receipt sooner.
const RECEIPT_REFRESH_ROUNDS: u64 = 60;
const STRIKE_WINDOW: Duration = Duration::from_secs(60);
const BAN_TIME: Duration = Duration::from_secs(300);

type Reply<T> = oneshot::Sender<Result<T, NodeError>>;

enum Command {
    Status(Reply<Status>),
    Peers(Reply<Vec<PeerView>>),
    Join(Room, Reply<RoomView>),
    Leave(String, Reply<RoomView>),
    Rooms(Reply<Vec<RoomView>>),
    Send(String, String, Reply<Sent>),
    /// A room's last entries, of one kind only with `Some`.
    History(String, Page, Option<Kind>, Reply<Vec<MessageView>>),
    AddContact(String, String, Reply<ContactView>),
    Contacts(Reply<Vec<ContactView>>),
    CreateGroup(String, Vec<String>, Reply<RoomView>),
    Dial(Multiaddr, Reply<()>),
    Block(Vec<PeerId>, bool, Reply<()>),
    SyncNow(Reply<()>),
    PublishRaw(String, Vec<u8>, Reply<()>),
    AskMembers(PeerId, String, Reply<Vec<(PeerId, Vec<Multiaddr>)>>),
    ShareFile(String, crate::files::FileRef, Reply<Sent>),
    Fetch(String, String, files::Waiter),
    /// A file found before (see [`FileReader::known`]): no lookup in the history.
    FetchKnown(files::KnownFile, files::Waiter),
    Forget(String, String, Reply<files::Forgotten>),
    Shutdown(Reply<()>),
}

/// Cloneable handle to a running node.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
    identity: Arc<Identity>,
    faults: crate::faults::Faults,
    /// The event loop's journal: a file's chunks are sealed and stored off the loop. Weak,
    /// so that a stopped node closes its journal even while handles remain.
    journal: std::sync::Weak<Journal>,
    /// Where files uploaded through the API wait while they are sealed.
    uploads: PathBuf,
}

impl NodeHandle {
    async fn ask<T>(&self, f: impl FnOnce(Reply<T>) -> Command) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(f(tx)).await.map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub async fn status(&self) -> Result<Status, NodeError> {
        self.ask(Command::Status).await
    }

    pub async fn peers(&self) -> Result<Vec<PeerView>, NodeError> {
        self.ask(Command::Peers).await
    }

    /// Joins a named room. The password's argon2id runs off the swarm task.
    pub async fn join(&self, name: &str, password: Option<String>) -> Result<RoomView, NodeError> {
        let name = name.to_string();
        let room = tokio::task::spawn_blocking(move || Room::named(&name, password.as_deref()))
            .await
            .map_err(|_| NodeError::Stopped)?
            .map_err(CoreError::from)?;
        self.ask(|r| Command::Join(room, r)).await
    }

    /// Joins a room built by the caller (direct, group, or any [`Room`]).
    pub async fn join_room(&self, room: Room) -> Result<RoomView, NodeError> {
        self.ask(|r| Command::Join(room, r)).await
    }

    pub async fn leave(&self, name: &str) -> Result<RoomView, NodeError> {
        self.ask(|r| Command::Leave(name.to_string(), r)).await
    }

    pub async fn rooms(&self) -> Result<Vec<RoomView>, NodeError> {
        self.ask(Command::Rooms).await
    }

    pub async fn send(&self, room: &str, text: &str) -> Result<Sent, NodeError> {
        self.ask(|r| Command::Send(room.to_string(), text.to_string(), r))
            .await
    }

    /// A room's last `limit` messages, in display order.
    pub async fn history(&self, room: &str, limit: usize) -> Result<Vec<MessageView>, NodeError> {
        self.history_page(room, Page::last(limit), None).await
    }

    /// A room's last `limit` file messages (only those are loaded and opened).
    pub async fn files(&self, room: &str, limit: usize) -> Result<Vec<MessageView>, NodeError> {
        self.history_page(room, Page::last(limit), Some(Kind::File))
            .await
    }

    /// A page of a room's messages (of kind `only`, if given), in display order: what a
    /// reader scrolling back through a long history asks for.
    pub async fn history_page(
        &self,
        room: &str,
        page: Page,
        only: Option<Kind>,
    ) -> Result<Vec<MessageView>, NodeError> {
        self.ask(|r| Command::History(room.to_string(), page, only, r))
            .await
    }

    pub async fn add_contact(&self, name: &str, code: &str) -> Result<ContactView, NodeError> {
        self.ask(|r| Command::AddContact(name.to_string(), code.to_string(), r))
            .await
    }

    pub async fn contacts(&self) -> Result<Vec<ContactView>, NodeError> {
        self.ask(Command::Contacts).await
    }

    pub async fn create_group(
        &self,
        name: &str,
        members: Vec<String>,
    ) -> Result<RoomView, NodeError> {
        self.ask(|r| Command::CreateGroup(name.to_string(), members, r))
            .await
    }

    /// Sends a direct message to a contact.
    pub async fn dm(&self, contact: &str, text: &str) -> Result<Sent, NodeError> {
        self.send(&format!("@{}", contact.trim_start_matches('@')), text)
            .await
    }

    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NodeError> {
        self.ask(|r| Command::Dial(addr, r)).await
    }

    /// Cuts off (or, with `blocked = false`, lets back) these peers: the fault injection
    /// behind simulated partitions.
    pub async fn block(&self, peers: Vec<PeerId>, blocked: bool) -> Result<(), NodeError> {
        self.ask(|r| Command::Block(peers, blocked, r)).await
    }

    /// The fault model applied to this node's links.
    pub fn faults(&self) -> &crate::faults::Faults {
        &self.faults
    }

    /// Starts a reconciliation round with every connected member of every room now.
    pub async fn sync_now(&self) -> Result<(), NodeError> {
        self.ask(Command::SyncNow).await
    }

    /// Publishes raw bytes on a room's topic, bypassing the envelope code: for tests that
    /// check how peers treat forged or malformed messages.
    pub async fn publish_raw(&self, room: &str, bytes: Vec<u8>) -> Result<(), NodeError> {
        self.ask(|r| Command::PublishRaw(room.to_string(), bytes, r))
            .await
    }

    /// Asks a connected peer which members of a room it is connected to (member exchange,
    /// as the node does by itself when a room is short of members), and returns the answer
    /// as parsed: for tests of what a member hands on.
    pub async fn ask_members(
        &self,
        peer: PeerId,
        room: &str,
    ) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, NodeError> {
        self.ask(|r| Command::AskMembers(peer, room.to_string(), r))
            .await
    }

    /// Shares the file at `path` in `room`: seals and stores its chunks (on a blocking
    /// thread), then sends the message that tells members how to fetch it.
    pub async fn share_file(&self, room: &str, path: PathBuf) -> Result<Sent, NodeError> {
        // An unknown room is refused before a large file is sealed for nothing.
        if !self.rooms().await?.iter().any(|r| r.name == room) {
            return Err(CoreError::UnknownRoom(room.to_string()).into());
        }
        let journal = self.journal.upgrade().ok_or(NodeError::Stopped)?;
        let file = tokio::task::spawn_blocking(move || files::seal_and_store(&journal, &path))
            .await
            .map_err(|_| NodeError::Stopped)??;
        let room = room.to_string();
        self.ask(|r| Command::ShareFile(room, file, r)).await
    }

    /// Fetches a file shared in `room` (by id, or a prefix of at least 8 hex digits) from
    /// the room's connected members, and writes it to `target`.
    pub async fn fetch_file(
        &self,
        room: &str,
        id: &str,
        target: Target,
    ) -> Result<Fetched, NodeError> {
        let (room, id) = (room.to_string(), id.to_string());
        self.ask(|r| Command::Fetch(room, id, files::Waiter::Write(target, r)))
            .await
    }

    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.ask(Command::Shutdown).await
    }
}

/// Opens the journal, builds the swarm, starts listening and dialling, and spawns the task
/// that runs the node.
pub async fn start(identity: Arc<Identity>, cfg: NodeConfig) -> Result<NodeHandle, NodeError> {
    config::ensure_data_dir(&cfg.data_dir).map_err(|e| NodeError::DataDir {
        path: cfg.data_dir.display().to_string(),
        why: e.to_string(),
    })?;
    let journal = Journal::open(&cfg.data_dir.join(config::JOURNAL_FILE))?;
    // Uploads cut short by a crash or a stop are shared by no one: clear them.
    let uploads = cfg.data_dir.join(config::UPLOADS_DIR);
    if let Err(e) = std::fs::remove_dir_all(&uploads)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(error = %e, dir = %uploads.display(), "cannot clear unfinished uploads");
    }
    let core = Core::open(identity.clone(), journal)?;
    let journal = Arc::downgrade(&core.shared_journal());
    let cert = net::load_or_create_certificate(&cfg.data_dir.join(config::CERT_FILE))?;
    let keypair = identity.peer_keypair();
    let dial_order = crate::dial_order::DialOrder::shared(keypair.public().to_peer_id());
    if let Ok(mut order) = dial_order.lock() {
        for peer in cfg.bootstrap.iter().filter_map(crate::dial_order::peer_of) {
            order.exempt(peer);
        }
    }
    let mut swarm = net::build_swarm(keypair, cert, &cfg.swarm, dial_order.clone())?;
    let mut webrtc_listeners = Vec::new();
    for addr in &cfg.listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| NodeError::Listen {
                addr: addr.to_string(),
                why: e.to_string(),
            })?;
        if webrtc::renewable(addr) {
            webrtc_listeners.push((id, addr.clone()));
        }
    }
    let (tx, rx) = mpsc::channel(256);
    let (internal_tx, internal_rx) = mpsc::unbounded_channel();
    let (events, _) = broadcast::channel(4096);
    let mut service = Service {
        swarm,
        core,
        rx,
        events: events.clone(),
        listen_addrs: vec![],
        connections: HashMap::new(),
        outbox: HashMap::new(),
        bootstrap: cfg.bootstrap.clone(),
        nat: "unknown".into(),
        kad_ready: false,
        rendezvous_rounds: 0,
        announced: HashMap::new(),
        rendezvous_interval: cfg.rendezvous_interval,
        sync_interval: cfg.sync_interval,
        budget: cfg.budget,
        rank_salt: rand::random(),
        room_dials: HashMap::new(),
        lookups: HashMap::new(),
        peer_addrs: HashMap::new(),
        exchanged_at: HashMap::new(),
        announce_due: HashSet::new(),
        relayed: HashMap::new(),
        reconcile: reconcile::State::new(internal_tx),
        strikes: HashMap::new(),
        receipts_due: HashMap::new(),
        unstored: Vec::new(),
        commit_at: None,
        next_receipt: HashMap::new(),
        first_receipt: HashMap::new(),
        receipts_heard: Default::default(),
        message_rate: Default::default(),
        activity: Default::default(),
        activity_logged: Default::default(),
        faults: cfg.swarm.faults.clone(),
        banned: HashMap::new(),
        internal_rx,
        flushing: false,
        reading: 0,
        ping_failures: HashMap::new(),
        webrtc: webrtc::Sockets::new(webrtc_listeners),
        dial_order,
        fetches: files::Fetches::new(cfg.fetch_timeout),
        auto_fetch: files::AutoFetch::new(cfg.auto_fetch, cfg.auto_fetch_total),
    };
    let topics: Vec<RoomId> = service.core.rooms().map(|r| r.id).collect();
    for id in topics {
        service.subscribe(id);
    }
    service.dial_bootstrap();
    tokio::spawn(service.run());
    Ok(NodeHandle {
        tx,
        events,
        identity,
        faults: cfg.swarm.faults.clone(),
        journal,
        uploads,
    })
}

struct Service {
    swarm: Swarm<Behaviour>,
    core: Core,
    rx: mpsc::Receiver<Command>,
    events: broadcast::Sender<Event>,
    listen_addrs: Vec<Multiaddr>,
    /// Open connections per peer, and when the first of them was established.
    connections: HashMap<PeerId, (std::time::Instant, Vec<(ConnectionId, Multiaddr)>)>,
    /// Own envelopes not yet published because no member was reachable.
    outbox: HashMap<RoomId, Vec<Vec<u8>>>,
    bootstrap: Vec<Multiaddr>,
    nat: String,
    /// Kademlia has learnt at least one peer: provider records can be placed.
    kad_ready: bool,
    rendezvous_interval: Duration,
    sync_interval: Duration,
    budget: crate::peers::Budget,
    /// Salt of the order in which surplus connections are closed (see [`crate::peers`]).
    rank_salt: u64,
    /// Members dialled because the DHT named them, per room, not yet counted as members.
    room_dials: HashMap<RoomId, HashMap<PeerId, std::time::Instant>>,
    /// Per-room pacing of DHT lookups for members.
    lookups: HashMap<RoomId, crate::peers::Pacing>,
    /// Members connected or dialled per room when we last asked for a member exchange.
    exchanged_at: HashMap<RoomId, usize>,
    /// Listen addresses connected peers told us (identify): what member exchange hands on.
    peer_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// Rooms whose announcement waits for the DHT to have room for another query.
    announce_due: HashSet<RoomId>,
    /// Rendezvous rounds so far.
    rendezvous_rounds: u64,
    /// Per room, the round of our last announcement and the random factor (0.5..1.5)
    /// that stretches the wait for the next one (see [`Service::announce_is_due`]).
    announced: HashMap<RoomId, (u64, f64)>,
    /// Reservations and circuits our relay serves, per peer: their connections stay open.
    relayed: HashMap<PeerId, u32>,
    reconcile: reconcile::State,
    /// Invalid messages per relaying peer in the current window.
    strikes: HashMap<PeerId, (std::time::Instant, u32)>,
    faults: crate::faults::Faults,
    /// When each room may send our next receipt.
    next_receipt: HashMap<RoomId, tokio::time::Instant>,
    /// Rooms whose first receipt after a quiet spell waits: since when, and the random
    /// part of the window it waits (the window follows what we learn of the room).
    first_receipt: HashMap<RoomId, (tokio::time::Instant, f64)>,
    /// Receipts other members sent lately, per room.
    receipts_heard: crate::receipt::Heard<RoomId>,
    /// Messages per second per room: what paces receipts in big rooms.
    message_rate: crate::receipt::MessageRate<RoomId>,
    /// When the received entries waiting in `unstored` must be stored.
    commit_at: Option<tokio::time::Instant>,
    /// Verified gossip messages waiting for the next group commit, with who relayed them.
    unstored: Vec<(
        PeerId,
        (RoomId, crate::envelope::Envelope, crate::envelope::Payload),
    )>,
    /// Rooms whose delivery receipt should go out at the next receipt tick, and whether it
    /// should carry our whole vector rather than what changed.
    receipts_due: HashMap<RoomId, bool>,
    /// Peers cut off for misbehaviour, until the given time.
    banned: HashMap<PeerId, std::time::Instant>,
    internal_rx: mpsc::UnboundedReceiver<reconcile::Internal>,
    /// A flush runs on a blocking thread (at most one at a time).
    flushing: bool,
    /// History reads in flight on blocking threads (each holds the journal).
    reading: usize,
    /// What the networking did (see [`crate::activity`]), and its last logged value.
    activity: crate::activity::Activity,
    activity_logged: crate::activity::Activity,
    /// Ping failures in a row per connection (see [`PING_FAILURES_TO_CLOSE`]).
    ping_failures: HashMap<libp2p::swarm::ConnectionId, u32>,
    /// Our WebRTC-direct listeners, renewed after a failed WebRTC-direct dial.
    webrtc: webrtc::Sockets,
    /// Which side of a pair dials over WebRTC-direct (shared with the transport).
    dial_order: crate::dial_order::SharedDialOrder,
    /// Files being fetched.
    fetches: files::Fetches,
    /// Files to fetch unasked (see [`NodeConfig::auto_fetch`]).
    auto_fetch: files::AutoFetch,
}

fn transport_of(addr: &Multiaddr) -> &'static str {
    let mut kind = "other";
    for p in addr.iter() {
        match p {
            Protocol::P2pCircuit => return "relay",
            Protocol::WebRTCDirect => return "webrtc-direct",
            Protocol::QuicV1 => kind = "quic",
            Protocol::Tcp(_) if kind == "other" => kind = "tcp",
            _ => {}
        }
    }
    kind
}

impl Service {
    async fn run(mut self) {
        // Rendezvous often while the node settles, then at the configured interval.
        let mut fast = tokio::time::interval(Duration::from_secs(2));
        let mut slow = staggered(self.rendezvous_interval);
        let settle_until = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut sync_tick = staggered(self.sync_interval);
        let mut stopped = None;
        let mut receipt_tick = staggered(RECEIPT_INTERVAL);
        let mut flush_tick = staggered(FLUSH_INTERVAL);
        let mut activity_tick = staggered(ACTIVITY_LOG_INTERVAL);
        let mut rounds = 0u64;
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => {
                    self.on_swarm_event(ev);
                    // Take whatever else is ready now, then store the burst at once.
                    for _ in 1..GROUP_COMMIT_MAX {
                        match self.swarm.next().now_or_never() {
                            Some(Some(ev)) => self.on_swarm_event(ev),
                            _ => break,
                        }
                    }
                    self.commit_soon();
                }
                _ = sleep_until_opt(self.commit_at) => self.commit_unstored(),
                Some(msg) = self.internal_rx.recv() => self.on_internal(msg),
                _ = sync_tick.tick() => {
                    self.tick_fetches();
                    self.start_auto_fetches();
                    self.redial_if_alone();
                    self.expire_bans();
                    self.trim_connections();
                    self.sync_all();
                    // Now and then everyone re-announces what it holds, for new members.
                    rounds += 1;
                    if rounds.is_multiple_of(RECEIPT_REFRESH_ROUNDS) {
                        self.receipts_due.extend(self.core.rooms().map(|r| (r.id, true)));
                    }
                }
                _ = receipt_tick.tick() => self.send_receipts(),
                _ = activity_tick.tick() => {
                    self.activity_logged = self.activity.log_since(&self.activity_logged);
                    self.log_tables();
                }
                due = flush_tick.tick() => {
                    lag_report(due);
                    self.flush();
                }
                _ = sleep_until_opt(self.reconcile.next_pull()) => self.run_due_pulls(),
                cmd = self.rx.recv() => match cmd {
                    Some(Command::Shutdown(reply)) => {
                        stopped = Some(reply);
                        break;
                    }
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                _ = fast.tick(), if tokio::time::Instant::now() < settle_until => {
                    self.redial_if_alone();
                    self.rendezvous_all(false);
                    self.flush_outbox_all();
                }
                _ = slow.tick() => {
                    self.rendezvous_rounds += 1;
                    self.rendezvous_round();
                    self.announce_files();
                    self.flush_outbox_all();
                }
            }
            // Whatever the event called for, one vector exchange per peer carries it.
            self.send_hellos();
        }
        // A flush or a read in flight holds the journal: let them finish, so that the
        // database is closed when we say we stopped.
        while self.flushing || self.reading > 0 {
            match self.internal_rx.recv().await {
                Some(msg) => self.on_internal(msg),
                None => break,
            }
        }
        // What was verified but not yet stored goes to disk.
        self.commit_unstored();
        if let Err(e) = blocking(|| self.core.flush()) {
            tracing::error!(error = %e, "could not flush the journal");
        }
        // Close the journal and the listeners before saying we stopped, so the data dir can
        // be opened again right away.
        drop(self);
        tracing::info!("node stopped");
        if let Some(reply) = stopped {
            let _ = reply.send(Ok(()));
        }
    }

    fn subscribe(&mut self, id: RoomId) {
        let topic = IdentTopic::new(id.topic());
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.subscribe(&topic) {
            tracing::warn!(error = %e, "gossipsub subscribe failed");
        }
        self.rendezvous(id, true, false);
    }

    /// Announces ourselves as a member of the room in the DHT (with `announce`), and looks
    /// for other members if the room has fewer connected than the budget's target (with
    /// `paced`, less and less often while that number holds still).
    fn rendezvous(&mut self, id: RoomId, announce: bool, paced: bool) {
        if !self.kad_ready {
            return;
        }
        let key = kad::RecordKey::new(&id.0);
        // Every announcement and lookup is a DHT query, and libp2p keeps its queries in a
        // table that never shrinks, some 20 KiB each: a node joining 1,000 rooms at once
        // would start 2,000 and keep their memory for good. What does not fit waits for a
        // later rendezvous round.
        let busy = self.dht_busy();
        if announce || self.announce_due.contains(&id) {
            if busy {
                self.announce_due.insert(id);
            } else {
                self.announce_due.remove(&id);
                self.activity.announcements += 1;
                if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(key.clone()) {
                    tracing::warn!(error = %e, "could not announce room membership");
                }
                self.announced_now(id);
            }
        }
        let have = self.room_peers_or_dialled(id);
        let short = have < self.budget.target
            && (!paced
                || self
                    .lookups
                    .entry(id)
                    .or_default()
                    .due(have, LOOKUP_MAX_EVERY));
        if !short {
            return;
        }
        // Ask a connected member first; the DHT when there is none, when it answers with no
        // one new, and when the last exchange left the count where it was (the member asked
        // may have named peers that were gone, or lied): then the DHT gets its turn once.
        let stale = self.exchanged_at.remove(&id) == Some(have);
        if !stale && self.ask_members(id) {
            self.exchanged_at.insert(id, have);
        } else {
            // `lookup` checks the DHT's query table itself (after any announcement above).
            self.lookup(id);
        }
    }

    /// Whether the DHT runs as many queries as we allow (see [`MAX_DHT_QUERIES`]).
    fn dht_busy(&mut self) -> bool {
        self.swarm.behaviour_mut().kad.iter_queries().count() >= MAX_DHT_QUERIES
    }

    /// Looks the room's members up in the DHT (unless too many queries run already).
    fn lookup(&mut self, id: RoomId) {
        if self.dht_busy() {
            return;
        }
        tracing::debug!(
            have = self.room_peers(id),
            "looking for room members in the DHT"
        );
        self.activity.lookups += 1;
        self.swarm
            .behaviour_mut()
            .kad
            .get_providers(kad::RecordKey::new(&id.0));
    }

    /// Member exchange ([`crate::peers::pick_offered`]): asks a random connected room member
    /// which members it is connected to. False if we have no connected member to ask, or
    /// too many exchanges are under way.
    fn ask_members(&mut self, id: RoomId) -> bool {
        use rand::seq::IndexedRandom;
        let Some(peer) = self.room_peer_ids(id).choose(&mut rand::rng()).copied() else {
            return false;
        };
        self.request_members(peer, id)
    }

    /// Whether Kademlia's routing table takes `peer`: it is in it already, or its bucket is
    /// not full. libp2p-kad answers an insertion into a full bucket by dialling the bucket's
    /// oldest disconnected entry to see whether it is still alive, and the connection budget
    /// keeps most entries disconnected, so feeding every identify into the table dialled
    /// someone for nearly every new connection, and each such connection was an insertion
    /// on the other side (measured at 500 nodes: 8,500-18,600 dials a minute that no query
    /// asked for). A full table keeps the peers it has; the entries that stop answering
    /// are dropped as queries fail to reach them, which makes room again.
    fn kad_has_room(&mut self, peer: &PeerId) -> bool {
        match self.swarm.behaviour_mut().kad.kbucket(*peer) {
            Some(bucket) => {
                bucket.num_entries() < kad::K_VALUE.get()
                    || bucket.iter().any(|e| e.node.key.preimage() == peer)
            }
            // Ourselves.
            None => false,
        }
    }

    /// Where a connected peer listens, as it told us (identify), for member exchange.
    fn listen_addrs_of(&self, peer: &PeerId) -> Option<&Vec<Multiaddr>> {
        self.peer_addrs.get(peer).filter(|a| !a.is_empty())
    }

    /// Connected members of a room, plus members dialled for it that have not shown up yet.
    fn room_peers_or_dialled(&mut self, id: RoomId) -> usize {
        let members: HashSet<PeerId> = self.room_peer_ids(id).into_iter().collect();
        let dials = self.room_dials.entry(id).or_default();
        dials.retain(|p, at| at.elapsed() < DIAL_PENDING && !members.contains(p));
        members.len() + dials.len()
    }

    /// A member dialled for a room will not show up through that dial (it failed, or was
    /// refused): it no longer counts towards any room's target.
    fn forget_room_dials(&mut self, peer: &PeerId) {
        for dials in self.room_dials.values_mut() {
            dials.remove(peer);
        }
    }

    /// Closes connections beyond the budget (see [`crate::peers`]).
    fn trim_connections(&mut self) {
        let gossipsub = &self.swarm.behaviour().gossipsub;
        let mesh: HashSet<PeerId> = gossipsub.all_mesh_peers().copied().collect();
        let topics: HashMap<PeerId, Vec<gossipsub::TopicHash>> = gossipsub
            .all_peers()
            .map(|(p, t)| (*p, t.into_iter().cloned().collect()))
            .collect();
        let ours: HashMap<gossipsub::TopicHash, RoomId> = self
            .core
            .rooms()
            .map(|r| (IdentTopic::new(r.id.topic()).hash(), r.id))
            .collect();
        let pulling = self.reconcile.pulling_from();
        // Bootstrap nodes double as our relays when we are behind NAT.
        let relays: HashSet<PeerId> = self
            .bootstrap
            .iter()
            .flat_map(|a| a.iter())
            .filter_map(|p| match p {
                Protocol::P2p(id) => Some(id),
                _ => None,
            })
            .collect();
        let connected: Vec<crate::peers::Connected<PeerId, RoomId>> = self
            .connections
            .iter()
            .map(|(peer, (since, _))| crate::peers::Connected {
                peer: *peer,
                rooms: topics
                    .get(peer)
                    .map(|ts| ts.iter().filter_map(|t| ours.get(t).copied()).collect())
                    .unwrap_or_default(),
                protected: mesh.contains(peer)
                    || pulling.contains(peer)
                    || relays.contains(peer)
                    || self.relayed.contains_key(peer)
                    || self.fetches.transfers_with(peer)
                    || since.elapsed() < self.budget.grace,
                rank: u64::from_be_bytes(
                    crate::crypto::sha256(&[&self.rank_salt.to_be_bytes(), &peer.to_bytes()])[..8]
                        .try_into()
                        .expect("8 bytes"),
                ),
            })
            .collect();
        let surplus = crate::peers::excess(&connected, self.budget);
        if !surplus.is_empty() {
            tracing::debug!(
                closing = surplus.len(),
                connected = connected.len(),
                "closing connections beyond the room budget"
            );
        }
        for peer in surplus {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// With no connection at all, dials the bootstrap nodes again: the first dial can fail
    /// (a bootstrap node not up yet, a lost handshake), and nothing else would ever bring
    /// the node into the network. Every few seconds while settling, then every sync round.
    fn redial_if_alone(&mut self) {
        if !self.connections.is_empty() {
            return;
        }
        self.dial_bootstrap();
    }

    /// Dials every bootstrap node not connected or being dialled already. A second dial
    /// while the first is still in its handshake would only compete with it (over
    /// WebRTC-direct both come from the same UDP port, and the remote keeps the first).
    fn dial_bootstrap(&mut self) {
        let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
        for addr in self.bootstrap.clone() {
            match crate::dial_order::peer_of(&addr) {
                Some(peer) => by_peer.entry(peer).or_default().push(addr),
                None => self.dial_addr(addr),
            }
        }
        for (peer, addrs) in by_peer {
            if let Err(e) = self.dial_unless_dialling(peer, addrs) {
                tracing::trace!(%peer, error = %e, "bootstrap node not dialled again");
            }
        }
    }

    /// One rendezvous round: every room looks for members (paced), and the rooms whose
    /// turn has come are announced again.
    fn rendezvous_round(&mut self) {
        let ids: Vec<RoomId> = self.core.rooms().map(|r| r.id).collect();
        for id in ids {
            let due = self.announce_is_due(id);
            self.rendezvous(id, due, true);
        }
    }

    /// Whether our announcement of `room` is due again: [`crate::peers::announce_every`]
    /// rounds after the last, stretched by a factor drawn at each announcement so that
    /// members who joined together spread out. Decided afresh every round, so a room that
    /// loses its connected members shortens its wait at once.
    fn announce_is_due(&mut self, room: RoomId) -> bool {
        let Some(&(last, stretch)) = self.announced.get(&room) else {
            return true;
        };
        // Never sooner than the minimum: spares the counting below in most rounds.
        let soonest = (f64::from(ANNOUNCE_MIN_ROUNDS) * stretch).round().max(1.0) as u64;
        if self.rendezvous_rounds < last + soonest {
            return false;
        }
        let well_connected = self.room_peers(room) >= self.budget.target;
        let every = crate::peers::announce_every(
            self.core.room_size(room),
            well_connected,
            ANNOUNCE_MIN_ROUNDS,
            ANNOUNCE_MAX_ROUNDS,
        );
        let wait = (f64::from(every) * stretch).round().max(1.0) as u64;
        self.rendezvous_rounds >= last + wait
    }

    /// Notes that `room` was just announced.
    fn announced_now(&mut self, room: RoomId) {
        use rand::RngExt;
        let stretch = rand::rng().random_range(0.5..1.5);
        self.announced
            .insert(room, (self.rendezvous_rounds, stretch));
    }

    /// Looks for members of every room short of its target now (unpaced), and announces
    /// every room with `announce`.
    fn rendezvous_all(&mut self, announce: bool) {
        let ids: Vec<RoomId> = self.core.rooms().map(|r| r.id).collect();
        for id in ids {
            self.rendezvous(id, announce, false);
        }
    }

    fn dial_addr(&mut self, addr: Multiaddr) {
        if let Err(e) = self.swarm.dial(addr.clone()) {
            tracing::warn!(%addr, error = %e, "dial failed");
        }
    }

    /// Dials `peer` at `addrs` unless it is connected or being dialled already.
    fn dial_unless_dialling(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    ) -> Result<(), libp2p::swarm::DialError> {
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        self.swarm.dial(opts)
    }

    fn dial_peer(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if peer == *self.swarm.local_peer_id() || self.swarm.is_connected(&peer) {
            return;
        }
        match self.dial_unless_dialling(peer, addrs) {
            Ok(()) => {}
            // Nobody knows where it is: the DHT walks to its neighbourhood, which does.
            Err(libp2p::swarm::DialError::NoAddresses) => {
                tracing::debug!(%peer, "no address for a room member; asking the DHT");
                self.activity.address_walks += 1;
                self.swarm.behaviour_mut().kad.get_closest_peers(peer);
            }
            // Blocked: it will not show up, so it stops counting towards any room's target.
            Err(e @ libp2p::swarm::DialError::Denied { .. }) => {
                tracing::trace!(%peer, error = %e, "room member not dialled");
                self.forget_room_dials(&peer);
            }
            // Already being dialled (DHT answers name the same members many times over): a
            // walk would find nothing the dial in flight does not.
            Err(e) => tracing::trace!(%peer, error = %e, "room member not dialled"),
        }
    }

    fn emit(&mut self, ev: Event) {
        if let Event::Message(m) = &ev {
            self.auto_fetch.offer(m);
        }
        let _ = self.events.send(ev);
    }

    fn publish(&mut self, room: RoomId, bytes: Vec<u8>) -> bool {
        let topic = IdentTopic::new(room.topic());
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic, bytes.clone())
        {
            Ok(_) | Err(PublishError::Duplicate) => true,
            Err(e) => {
                tracing::debug!(error = %e, "publish deferred");
                let q = self.outbox.entry(room).or_default();
                if !q.contains(&bytes) {
                    q.push(bytes);
                }
                false
            }
        }
    }

    fn flush_outbox(&mut self, room: RoomId) {
        let Some(queue) = self.outbox.remove(&room) else {
            return;
        };
        for bytes in queue {
            self.publish(room, bytes);
        }
    }

    fn flush_outbox_all(&mut self) {
        let rooms: Vec<RoomId> = self.outbox.keys().copied().collect();
        for r in rooms {
            self.flush_outbox(r);
        }
    }

    /// Connected peers subscribed to the room's topic.
    fn room_peer_ids(&self, room: RoomId) -> Vec<PeerId> {
        let hash = IdentTopic::new(room.topic()).hash();
        self.swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(_, topics)| topics.contains(&&hash))
            .map(|(p, _)| *p)
            .collect()
    }

    /// [`Self::room_peer_ids`] for every topic at once: one pass over gossipsub's peers
    /// (each of which lists all its topics) rather than one per room.
    fn topic_peers(&self) -> HashMap<gossipsub::TopicHash, Vec<PeerId>> {
        let mut members: HashMap<gossipsub::TopicHash, Vec<PeerId>> = HashMap::new();
        for (peer, topics) in self.swarm.behaviour().gossipsub.all_peers() {
            for t in topics {
                members.entry(t.clone()).or_default().push(*peer);
            }
        }
        members
    }

    fn room_peers(&self, id: RoomId) -> usize {
        self.room_peer_ids(id).len()
    }

    fn status(&mut self) -> Result<Status, NodeError> {
        let dht = self.swarm.behaviour_mut().kad.store_mut().stats();
        let me = self.core.identity();
        let peer_id = *self.swarm.local_peer_id();
        Ok(Status {
            username: me.username().to_string(),
            user_id: me.id().to_hex(),
            contact_code: me.contact_code().encode(),
            peer_id: peer_id.to_string(),
            listen_addrs: self
                .listen_addrs
                .iter()
                .map(|a| {
                    a.clone()
                        .with_p2p(peer_id)
                        .unwrap_or_else(|a| a)
                        .to_string()
                })
                .collect(),
            connected_peers: self.swarm.connected_peers().count(),
            rooms: self
                .core
                .rooms()
                .map(|r| RoomStatus {
                    name: r.name.clone(),
                    peers: self.room_peers(r.id),
                    unpublished: self.outbox.get(&r.id).map_or(0, Vec::len),
                })
                .collect(),
            counters: self.core.counters().clone(),
            activity: self.activity,
            nat: self.nat.clone(),
            fetches: self.fetches.progress(),
            dht,
            file_bytes: self.core.journal().chunk_bytes()?,
        })
    }

    fn peers(&self) -> Vec<PeerView> {
        let mut v: Vec<PeerView> = self
            .connections
            .iter()
            .map(|(p, (_, conns))| PeerView {
                peer_id: p.to_string(),
                addrs: conns.iter().map(|(_, a)| a.to_string()).collect(),
                transports: conns
                    .iter()
                    .map(|(_, a)| transport_of(a).to_string())
                    .collect(),
            })
            .collect();
        v.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        v
    }

    fn join(&mut self, room: Room) -> Result<RoomView, NodeError> {
        let (room, new) = self.core.join(room)?;
        let (id, room) = (room.id, room.clone());
        if new {
            self.subscribe(id);
        }
        Ok(self.core.room_view(&room)?)
    }

    /// Publishes a message we wrote (already in the journal) and shows it to clients.
    fn send_composed(
        &mut self,
        composed: Result<(RoomId, crate::envelope::Envelope, MessageView), CoreError>,
    ) -> Result<Sent, NodeError> {
        let (id, env, message) = composed?;
        self.entries_added(id);
        // The message carried our receipt (see `Core::compose`); what did not fit rides
        // first on our next message, or goes in the next receipt.
        let (_, spacing) = self.receipt_pace(id);
        self.space_receipt(id, spacing);
        let published = self.publish(id, env.into_bytes());
        self.emit(Event::Message(message.clone()));
        Ok(Sent { message, published })
    }

    fn on_command(&mut self, cmd: Command) {
        // Messages shown but not yet stored are stored first: whatever the command reads
        // (history, counts, what to sync) holds every message a client has seen.
        self.commit_unstored();
        match cmd {
            Command::Status(r) => {
                let _ = r.send(self.status());
            }
            Command::Peers(r) => {
                let _ = r.send(Ok(self.peers()));
            }
            Command::Join(room, r) => {
                let _ = r.send(self.join(room));
            }
            Command::Leave(name, r) => {
                let res = self
                    .core
                    .leave(&name)
                    .map_err(NodeError::from)
                    .and_then(|room| {
                        let topic = IdentTopic::new(room.id.topic());
                        self.swarm.behaviour_mut().gossipsub.unsubscribe(&topic);
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .stop_providing(&kad::RecordKey::new(&room.id.0));
                        self.outbox.remove(&room.id);
                        self.lookups.remove(&room.id);
                        self.exchanged_at.remove(&room.id);
                        self.announce_due.remove(&room.id);
                        self.announced.remove(&room.id);
                        self.forget_room(room.id);
                        Ok(self.core.room_view(&room)?)
                    });
                let _ = r.send(res);
            }
            Command::Rooms(r) => {
                let rooms: Vec<Room> = self.core.rooms().cloned().collect();
                let res = rooms
                    .iter()
                    .map(|room| self.core.room_view(room).map_err(NodeError::from))
                    .collect();
                let _ = r.send(res);
            }
            Command::Send(room, text, r) => {
                let composed = blocking(|| self.core.compose(&room, &text));
                let _ = r.send(self.send_composed(composed));
            }
            Command::ShareFile(room, file, r) => {
                let key = file.provider_key();
                let composed = blocking(|| self.core.compose_file(&room, file));
                let sent = self.send_composed(composed);
                if sent.is_ok() {
                    self.provide_file(key);
                }
                let _ = r.send(sent);
            }
            Command::Fetch(room, id, waiter) => self.find_then_fetch(&room, &id, waiter),
            Command::FetchKnown(known, waiter) => self.fetch_found(known.room, known.file, waiter),
            Command::Forget(room, id, r) => self.forget(&room, &id, r),
            Command::History(room, page, only, r) => self.read_history(&room, page, only, r),
            Command::AddContact(name, code, r) => {
                let res = self.core.add_contact(&name, &code);
                if let Ok(c) = &res
                    && let Ok(room) = self.core.room_by_name(&c.room)
                {
                    let id = room.id;
                    self.subscribe(id);
                }
                let _ = r.send(res.map_err(NodeError::from));
            }
            Command::Contacts(r) => {
                let _ = r.send(Ok(self.core.contacts()));
            }
            Command::CreateGroup(name, members, r) => {
                let res = self.core.create_group(&name, &members);
                if let Ok(room) = &res
                    && let Some(id) = crate::room::RoomId::from_topic(&room.topic)
                {
                    self.subscribe(id);
                }
                let _ = r.send(res.map_err(NodeError::from));
            }
            Command::Dial(addr, r) => {
                // The user asked for this peer: no waiting for it to dial first.
                if let (Some(peer), Ok(mut order)) =
                    (crate::dial_order::peer_of(&addr), self.dial_order.lock())
                {
                    order.exempt(peer);
                }
                let res = self
                    .swarm
                    .dial(addr.clone())
                    .map_err(|e| NodeError::Listen {
                        addr: addr.to_string(),
                        why: e.to_string(),
                    });
                let _ = r.send(res);
            }
            Command::Block(peers, blocked, r) => {
                for p in peers {
                    let list = &mut self.swarm.behaviour_mut().blocked;
                    if blocked {
                        list.block_peer(p);
                    } else {
                        list.unblock_peer(p);
                    }
                }
                if !blocked {
                    // Reconnect through the bootstrap nodes and the DHT.
                    self.dial_bootstrap();
                    self.rendezvous_all(false);
                }
                let _ = r.send(Ok(()));
            }
            Command::SyncNow(r) => {
                self.sync_all();
                let _ = r.send(Ok(()));
            }
            Command::PublishRaw(room, bytes, r) => {
                let res = self.core.room_by_name(&room).map(|r| r.id);
                let res = match res {
                    Ok(id) => {
                        self.publish(id, bytes);
                        Ok(())
                    }
                    Err(e) => Err(e.into()),
                };
                let _ = r.send(res);
            }
            Command::AskMembers(peer, room, r) => match self.core.room_by_name(&room) {
                Ok(room) => {
                    let room = room.id;
                    self.ask_members_for(peer, room, r);
                }
                Err(e) => {
                    let _ = r.send(Err(e.into()));
                }
            },
            Command::Shutdown(_) => unreachable!("handled in run"),
        }
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(addr = %address.clone().with_p2p(*self.swarm.local_peer_id()).unwrap_or_else(|a| a), "listening");
                self.listen_addrs.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| a != &address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let addr = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => address.clone(),
                    ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr.clone(),
                };
                tracing::debug!(%peer_id, %addr, "connected");
                self.activity.connections_opened += 1;
                if endpoint.is_dialer() {
                    self.activity.connections_dialled += 1;
                }
                let (_, conns) = self
                    .connections
                    .entry(peer_id)
                    .or_insert_with(|| (std::time::Instant::now(), Vec::new()));
                let first = conns.is_empty();
                conns.push((connection_id, addr));
                if first {
                    self.emit(Event::PeerConnected {
                        peer_id: peer_id.to_string(),
                    });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            } => {
                // No cause: we closed it (budget, pings, a misbehaving peer).
                tracing::debug!(%peer_id, ?cause, "connection closed");
                self.ping_failures.remove(&connection_id);
                self.activity.connections_closed += 1;
                if let Some((_, conns)) = self.connections.get_mut(&peer_id) {
                    conns.retain(|(c, _)| *c != connection_id);
                    if conns.is_empty() {
                        self.connections.remove(&peer_id);
                        self.relayed.remove(&peer_id);
                        self.peer_addrs.remove(&peer_id);
                        self.reconcile.forget_peer(&peer_id);
                        if self.connections.is_empty() {
                            // Alone now: go back to the bootstrap nodes to find the network.
                            self.dial_bootstrap();
                        }
                        self.emit(Event::PeerDisconnected {
                            peer_id: peer_id.to_string(),
                        });
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, %error, "outgoing connection failed");
                // A dial we held back or refused ourselves says nothing about the link.
                let held_back = |p: PeerId| {
                    self.dial_order
                        .lock()
                        .is_ok_and(|o| o.holding(&p, std::time::Instant::now()))
                };
                let held = peer_id.is_some_and(held_back);
                if let libp2p::swarm::DialError::Transport(errors) = &error
                    && errors
                        .iter()
                        .any(|(a, _)| transport_of(a) == "webrtc-direct")
                    && !held
                {
                    self.webrtc_dial_failed();
                }
                // A member we dialled for a room will not show up through this dial: the
                // room looks again at its next round instead of waiting out
                // `DIAL_PENDING`. A dial held back stays counted: the other side is
                // expected to dial us.
                if let Some(peer) = peer_id
                    && !held
                    && !self.swarm.is_connected(&peer)
                {
                    self.forget_room_dials(&peer);
                }
            }
            SwarmEvent::ListenerClosed { addresses, .. } => {
                self.listen_addrs.retain(|a| !addresses.contains(a));
            }
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Gossipsub(ev) => self.on_gossipsub(ev),
            BehaviourEvent::Sync(ev) => self.on_sync_event(ev),
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if self.swarm.is_connected(&peer_id) {
                    let addrs = info
                        .listen_addrs
                        .iter()
                        .take(crate::peers::EXCHANGE_MAX_ADDRS)
                        .cloned()
                        .collect();
                    self.peer_addrs.insert(peer_id, addrs);
                }
                let speaks_kad = info.protocols.contains(&net::KAD_PROTOCOL);
                if speaks_kad {
                    // Kademlia does not learn addresses by itself: feed it what identify saw,
                    // if its bucket has room (see `kad_has_room`).
                    if self.kad_has_room(&peer_id) {
                        for addr in info.listen_addrs {
                            self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                        }
                    }
                    if !self.kad_ready {
                        self.kad_ready = true;
                        let _ = self.swarm.behaviour_mut().kad.bootstrap();
                        self.rendezvous_all(true);
                        // The files we hold, announced again after a restart.
                        match self.core.journal().provided() {
                            Ok(keys) => self.fetches.announce_later(keys),
                            Err(e) => tracing::warn!(error = %e, "cannot list the files we hold"),
                        }
                        self.announce_files();
                    }
                }
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed { result, step, .. }) => {
                if step.last {
                    self.activity.dht_queries += 1;
                    if matches!(result, kad::QueryResult::Bootstrap(_)) {
                        self.activity.dht_bootstraps += 1;
                    }
                }
                self.on_kad_result(result);
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(list)) => {
                for (peer, addr) in list {
                    if self.kad_has_room(&peer) {
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .add_address(&peer, addr.clone());
                    }
                    self.dial_peer(peer, vec![addr]);
                }
            }
            BehaviourEvent::Ping(ping::Event {
                connection,
                result: Ok(_),
                ..
            }) => {
                self.ping_failures.remove(&connection);
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(error),
            }) => {
                // A connection that stops answering pings is dead (the peer moved or
                // vanished): close it, so gossip and sync stop using it and we re-dial.
                // But a slow answer is not a dead peer: a node busy for a few seconds
                // would otherwise lose its connections all at once, and re-making them
                // (lookups, handshakes) keeps everyone busy for longer.
                let failures = self.ping_failures.entry(connection).or_default();
                *failures += 1;
                if *failures >= PING_FAILURES_TO_CLOSE {
                    tracing::debug!(%peer, %error, "pings failed: closing the connection");
                    self.ping_failures.remove(&connection);
                    self.swarm.close_connection(connection);
                } else {
                    tracing::debug!(%peer, %error, "ping failed");
                }
            }
            BehaviourEvent::Relay(ev) => self.on_relay_event(ev),
            BehaviourEvent::Autonat(autonat::Event::StatusChanged { new, .. }) => {
                self.nat = format!("{new:?}");
                tracing::info!(nat = %self.nat, "reachability changed");
                if matches!(new, autonat::NatStatus::Private) {
                    self.listen_via_relays();
                }
            }
            _ => {}
        }
    }

    /// Counts what our relay serves per peer, so trimming never cuts a relayed peer off.
    fn on_relay_event(&mut self, ev: relay::Event) {
        let mut change = |peer: PeerId, up: bool| {
            let n = self.relayed.entry(peer).or_default();
            if up {
                *n += 1;
            } else {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.relayed.remove(&peer);
                }
            }
        };
        match ev {
            relay::Event::ReservationReqAccepted {
                src_peer_id,
                renewed: false,
            } => change(src_peer_id, true),
            relay::Event::ReservationClosed { src_peer_id }
            | relay::Event::ReservationTimedOut { src_peer_id } => change(src_peer_id, false),
            relay::Event::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            } => {
                change(src_peer_id, true);
                change(dst_peer_id, true);
            }
            relay::Event::CircuitClosed {
                src_peer_id,
                dst_peer_id,
                ..
            } => {
                change(src_peer_id, false);
                change(dst_peer_id, false);
            }
            _ => {}
        }
    }

    /// After a failed WebRTC-direct dial, listens on fresh UDP ports (instead of the old ones,
    /// or beside them) when [`webrtc`] says so.
    fn webrtc_dial_failed(&mut self) {
        let in_use = self
            .connections
            .values()
            .flat_map(|(_, conns)| conns)
            .any(|(_, addr)| transport_of(addr) == "webrtc-direct");
        // `renew` does nothing for `Renewal::None`.
        let how = self.webrtc.dial_failed(in_use);
        self.webrtc.renew(how, &mut self.swarm);
    }

    /// Behind NAT: reserve a slot on each bootstrap node's relay so others can reach us
    /// (DCUtR then upgrades relayed connections to direct ones where it can).
    fn listen_via_relays(&mut self) {
        let relays: HashSet<Multiaddr> = self
            .bootstrap
            .iter()
            .filter(|a| a.iter().any(|p| matches!(p, Protocol::P2p(_))))
            .cloned()
            .collect();
        for r in relays {
            let addr = r.with(Protocol::P2pCircuit);
            if let Err(e) = self.swarm.listen_on(addr.clone()) {
                tracing::warn!(%addr, error = %e, "cannot listen via relay");
            }
        }
    }

    /// Publishes a delivery receipt in every room that received something since the last one.
    /// Each member's receipts are spaced by the room's size, so a room carries a few
    /// receipts a second in total however many members it has (every receipt costs each
    /// member a signature check), and the spacing is drawn at random around that so that
    /// members who started together do not all send at once.
    fn send_receipts(&mut self) {
        use rand::RngExt;
        let now = tokio::time::Instant::now();
        self.receipts_heard.roll();
        self.message_rate.tick();
        let due: Vec<(RoomId, bool)> = self.receipts_due.iter().map(|(r, f)| (*r, *f)).collect();
        for (room, full) in due {
            // After a quiet spell our last receipt no longer paces the next one, and every
            // member that got the same message would answer at once: wait a random part of
            // the spacing first (or of a longer window while the room's size is unknown),
            // worked out again each tick as what we hear tells us more of the room.
            let at = match (self.next_receipt.get(&room), self.first_receipt.get(&room)) {
                (Some(t), None) if now < *t + RECEIPT_INTERVAL => *t,
                _ => {
                    let (since, draw) = *self
                        .first_receipt
                        .entry(room)
                        .or_insert_with(|| (now, rand::rng().random_range(0.0..1.0)));
                    let (_, spacing) = self.receipt_pace(room);
                    let neighbours = self.room_peers(room);
                    let window = crate::receipt::first_spacing(
                        spacing,
                        neighbours,
                        self.budget.target,
                        self.core.room_size_known(room, neighbours + 1),
                    );
                    let t = since + Duration::from_secs_f64(window * draw);
                    self.next_receipt.insert(room, t);
                    t
                }
            };
            if now < at {
                continue;
            }
            // The room carries its share of receipts already: ours waits another spacing
            // (by then we know more members, so the spacing is longer).
            let (budget, spacing) = self.receipt_pace(room);
            if f64::from(self.receipts_heard.recent(&room)) >= budget {
                self.space_receipt(room, spacing);
                continue;
            }
            self.receipts_due.remove(&room);
            self.space_receipt(room, spacing);
            match self.core.compose_receipt(room, full) {
                Ok(Some(env)) => {
                    let topic = IdentTopic::new(room.topic());
                    // Best effort: a receipt that finds no peer is simply not needed yet.
                    if self
                        .swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(topic, env.into_bytes())
                        .is_ok()
                    {
                        self.activity.receipts_sent += 1;
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "could not build a receipt"),
            }
        }
    }

    /// Our next receipt in `room` waits a spacing (drawn at random around `spacing`, from
    /// [`Service::receipt_pace`]) from now: we just told the room what we hold.
    fn space_receipt(&mut self, room: RoomId, spacing: f64) {
        use rand::RngExt;
        self.first_receipt.remove(&room);
        let next = spacing * rand::rng().random_range(0.5..1.5);
        self.next_receipt.insert(
            room,
            tokio::time::Instant::now() + Duration::from_secs_f64(next),
        );
    }

    /// Receipts per second the whole room aims at ([`crate::receipt::budget`]), and the
    /// seconds between two of ours that keep it there ([`crate::receipt::spacing`]), from
    /// the room's size as whom we hear shows it ([`Core::room_size`]): the members we
    /// know are a small part of a big room for minutes, and paced as if they were all,
    /// its members sent several times its budget.
    fn receipt_pace(&self, room: RoomId) -> (f64, f64) {
        let members = self.core.room_size(room);
        let budget = crate::receipt::budget(members, self.message_rate.per_s(&room));
        (budget, crate::receipt::spacing(members, budget))
    }

    /// Logs (at debug, next to the activity counts) how many peers the DHT routing table
    /// and the connections hold, and what the DHT store holds: Kademlia bootstraps on its
    /// own whenever a peer enters a table of fewer than 20, each bootstrap a walk that
    /// dials hundreds of peers at 500 nodes, so how full the tables are says whether those
    /// can still be running.
    fn log_tables(&mut self) {
        let routing: usize = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|b| b.num_entries())
            .sum();
        let store = self.swarm.behaviour_mut().kad.store_mut().stats();
        tracing::debug!(
            target: "cryptchat::activity",
            routing_table = routing,
            connected_peers = self.swarm.connected_peers().count(),
            dht_own_keys = store.own_keys,
            dht_other_records = store.other_records,
            dht_refused = store.refused,
            "tables"
        );
    }

    /// Makes the entries stored since the last flush durable, on a blocking thread: a
    /// durable commit waits for the disk (two syncs), and the event loop keeps going
    /// meanwhile. Handing the runtime worker over with `block_in_place` instead cost a
    /// thread switch per flush, every second on every node holding new entries.
    fn flush(&mut self) {
        if self.flushing {
            return;
        }
        let journal = self.core.shared_journal();
        if !journal.has_unflushed() {
            return;
        }
        self.flushing = true;
        let tx = self.reconcile.tx.clone();
        tokio::task::spawn_blocking(move || {
            let result = journal.flush();
            // Let go of the journal first: a node shutting down waits for this message, then
            // closes the database.
            drop(journal);
            let _ = tx.send(reconcile::Internal::Flushed(result));
        });
    }

    /// Reads a room's history on a blocking thread (see [`crate::core::RoomReader`]); the
    /// views are made here once it is read.
    fn read_history(
        &mut self,
        room: &str,
        page: Page,
        only: Option<Kind>,
        reply: Reply<Vec<MessageView>>,
    ) {
        let reader = match self.core.reader(room) {
            Ok(reader) => reader,
            Err(e) => return drop(reply.send(Err(e.into()))),
        };
        self.read_off_loop(reader, move |reader| {
            let room = reader.room_id();
            let read = reader.read(page, only);
            reconcile::Internal::History { room, read, reply }
        });
    }

    /// [`Service::off_loop`] for a read of one room's history.
    pub(super) fn read_off_loop(
        &mut self,
        reader: crate::core::RoomReader,
        read: impl FnOnce(crate::core::RoomReader) -> reconcile::Internal + Send + 'static,
    ) {
        self.off_loop(move || read(reader));
    }

    /// Runs `read` on a blocking thread and hands what it returns to the event loop. `read`
    /// owns its readers, so the journal is let go before the event loop hears of it; the
    /// read is counted as ended even if it panics, so that a stopping node, which waits for
    /// reads in flight before it closes the journal, never waits for one that cannot end.
    pub(super) fn off_loop(&mut self, read: impl FnOnce() -> reconcile::Internal + Send + 'static) {
        struct Ends(mpsc::UnboundedSender<reconcile::Internal>);
        impl Drop for Ends {
            fn drop(&mut self) {
                let _ = self.0.send(reconcile::Internal::ReadEnded);
            }
        }
        self.reading += 1;
        let tx = self.reconcile.tx.clone();
        tokio::task::spawn_blocking(move || {
            let _ends = Ends(tx.clone());
            let _ = tx.send(read());
        });
    }

    fn flushed(&mut self, result: Result<bool, crate::journal::JournalError>) {
        self.flushing = false;
        if let Err(e) = result {
            tracing::error!(error = %e, "could not flush the journal");
        }
    }

    /// Schedules the store of the received entries waiting, `STORE_DELAY` after the first
    /// of them came; stores them now if there are many.
    fn commit_soon(&mut self) {
        if self.unstored.len() >= GROUP_COMMIT_MAX {
            self.commit_unstored();
        } else if !self.unstored.is_empty() && self.commit_at.is_none() {
            self.commit_at = Some(tokio::time::Instant::now() + STORE_DELAY);
        }
    }

    /// Stores every verified gossip message waiting in one transaction, then tells the
    /// node's clients about those not shown yet (see `Core::preview`).
    fn commit_unstored(&mut self) {
        self.commit_at = None;
        let items = std::mem::take(&mut self.unstored);
        if items.is_empty() {
            return;
        }
        let (sources, entries): (Vec<_>, Vec<_>) = items.into_iter().unzip();
        let rooms: Vec<RoomId> = entries.iter().map(|(room, _, _)| *room).collect();
        // No disk sync here (that is the flush), so no need to leave the runtime.
        match self.core.commit(entries) {
            Ok(results) => {
                for ((source, room), incoming) in sources.into_iter().zip(rooms).zip(results) {
                    self.on_stored(source, room, incoming);
                }
            }
            // Nothing is lost: the entries come back through reconciliation.
            Err(e) => tracing::error!(error = %e, "could not store incoming messages"),
        }
    }

    /// What a received entry's outcome in the journal calls for.
    fn on_stored(&mut self, source: PeerId, room: RoomId, incoming: Incoming) {
        match incoming {
            Incoming::Accepted(view, released) => {
                self.entries_added(room);
                self.emit(Event::Message(*view));
                for view in released {
                    self.emit(Event::Message(view));
                }
            }
            Incoming::Shown(released) => {
                self.entries_added(room);
                for view in released {
                    self.emit(Event::Message(view));
                }
            }
            // A gap in an author's chain: whoever relayed this likely has the rest.
            Incoming::Pending => {
                self.news(room);
                self.start_hello(source, room, false);
            }
            // The author signed two histories; whoever relayed it is not to blame, and the
            // proof spreads to every member through reconciliation.
            Incoming::Rejected(reason) => {
                self.news(room);
                self.emit(Event::Rejected {
                    room_id: room.to_hex(),
                    reason,
                });
            }
            Incoming::Duplicate
            | Incoming::NotOurs
            | Incoming::Receipt
            | Incoming::UnknownAuthor => {}
        }
    }

    /// Gives gossipsub the verdict on a message that needs no journal write: forwarded if
    /// valid (receipts), dropped if useless, and its relayer blamed if invalid.
    fn settle(
        &mut self,
        message_id: gossipsub::MessageId,
        source: PeerId,
        room: Option<RoomId>,
        incoming: Incoming,
    ) {
        let verdict = match incoming {
            // What it says the member holds and we lack, the next round goes after
            // (`Service::sync_all`).
            Incoming::Receipt => {
                self.activity.receipts_heard += 1;
                if let Some(room) = room {
                    self.receipts_heard.record(room);
                }
                MessageAcceptance::Accept
            }
            // Unverifiable here yet: not forwarded, and the relayer, which holds the
            // author's chain, is asked for it from the start.
            Incoming::UnknownAuthor => {
                if let Some(room) = room {
                    self.start_hello(source, room, false);
                }
                MessageAcceptance::Ignore
            }
            Incoming::Rejected(reason) => {
                tracing::info!(peer = %source, ?reason, "rejected message");
                self.strike(source);
                self.emit(Event::Rejected {
                    room_id: room.map(|r| r.to_hex()).unwrap_or_default(),
                    reason,
                });
                MessageAcceptance::Reject
            }
            _ => MessageAcceptance::Ignore,
        };
        self.verdict(&message_id, &source, verdict);
    }

    /// Tells gossipsub whether to forward a message it is holding for validation.
    fn verdict(&mut self, id: &gossipsub::MessageId, source: &PeerId, verdict: MessageAcceptance) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, source, verdict);
    }

    /// Counts an invalid message relayed by `peer`; past the limit the peer is cut off for a
    /// while (gossipsub's own scoring has no per-topic penalties configured).
    fn strike(&mut self, peer: PeerId) {
        let now = std::time::Instant::now();
        let e = self.strikes.entry(peer).or_insert((now, 0));
        if now.duration_since(e.0) > STRIKE_WINDOW {
            *e = (now, 0);
        }
        e.1 += 1;
        if e.1 >= STRIKE_LIMIT {
            tracing::warn!(%peer, "too many invalid messages: cutting the peer off for a while");
            self.strikes.remove(&peer);
            self.swarm.behaviour_mut().blocked.block_peer(peer);
            self.banned.insert(peer, now + BAN_TIME);
        }
    }

    /// Lifts bans whose time is up.
    fn expire_bans(&mut self) {
        let now = std::time::Instant::now();
        let expired: Vec<PeerId> = self
            .banned
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in expired {
            self.banned.remove(&p);
            self.swarm.behaviour_mut().blocked.unblock_peer(p);
        }
    }

    /// What a finished (or progressing) DHT query found.
    fn on_kad_result(&mut self, result: kad::QueryResult) {
        match result {
            kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                key,
                providers,
            })) => {
                if let Some(file) = self.fetches.lookup_of(&key) {
                    return self.on_file_holders(file, providers);
                }
                // Not a room of ours: one we left, or a search for a file's holders that
                // has ended.
                let Ok(room) = <[u8; 32]>::try_from(key.as_ref()).map(RoomId) else {
                    return;
                };
                if self.core.room(&room).is_none() {
                    return;
                }
                // Enough members connected (or being dialled) already: gossipsub
                // spreads the rest. Answers arrive from many DHT nodes at once, so
                // dials in flight count too.
                let want = self
                    .budget
                    .target
                    .saturating_sub(self.room_peers_or_dialled(room));
                let me = *self.swarm.local_peer_id();
                let fresh: Vec<PeerId> = providers
                    .into_iter()
                    .filter(|p| *p != me && !self.swarm.is_connected(p))
                    .take(want)
                    .collect();
                // Someone to reach: keep looking every round until they show up, in
                // case the dial fails (pacing is for lookups that find nobody new).
                if !fresh.is_empty() {
                    self.lookups.remove(&room);
                }
                for p in fresh {
                    self.room_dials
                        .entry(room)
                        .or_default()
                        .insert(p, std::time::Instant::now());
                    self.dial_peer(p, vec![]);
                }
            }
            kad::QueryResult::GetClosestPeers(Ok(ok)) => {
                // We looked up one room member whose address we lacked: dial it, and
                // only it (the rest of the answer is just its DHT neighbourhood).
                let Ok(wanted) = PeerId::from_bytes(&ok.key) else {
                    return;
                };
                if let Some(info) = ok.peers.into_iter().find(|p| p.peer_id == wanted)
                    && !info.addrs.is_empty()
                {
                    self.dial_peer(info.peer_id, info.addrs);
                }
            }
            _ => {}
        }
    }

    fn on_gossipsub(&mut self, ev: gossipsub::Event) {
        match ev {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let topic = message.topic.as_str().to_string();
                if self.faults.lose() {
                    // Simulated loss: as if the message never arrived (sync recovers it).
                    self.verdict(&message_id, &propagation_source, MessageAcceptance::Ignore);
                    return;
                }
                self.activity.gossip_in += 1;
                match self.core.admit(&topic, message.data) {
                    Admitted::Entry(entry) => {
                        // Verified: forward it now, so propagation never waits for a disk,
                        // and show it now if it comes next in its author's chain (nearly
                        // always). It is stored a little later with others in one
                        // transaction (`STORE_DELAY`). (Its author stored it before
                        // publishing, so a crash here loses nothing reconciliation cannot
                        // bring back.)
                        self.verdict(&message_id, &propagation_source, MessageAcceptance::Accept);
                        let (room, env, payload) = &*entry;
                        if let Some(view) = self.core.preview(*room, env, payload) {
                            self.emit(Event::Message(view));
                        }
                        self.unstored.push((propagation_source, *entry));
                    }
                    Admitted::Done(incoming) => {
                        let room = RoomId::from_topic(&topic);
                        self.settle(message_id, propagation_source, room, incoming);
                    }
                }
            }
            gossipsub::Event::Subscribed { peer_id, topic } => {
                if let Some(id) = RoomId::from_topic(topic.as_str()) {
                    self.flush_outbox(id);
                    // It may hold a file we are fetching (a holder the DHT named, say).
                    self.pump_room(id);
                    // A member appeared: reconcile with it right away, and tell it what we
                    // hold (receipts are deltas; it has seen none of ours). One exchange
                    // serves both ways (the answer carries the other vector, and each side
                    // pulls what it lacks), so a member that holds nothing leaves it to one
                    // that does: in a room that has not spoken yet, every connection (and a
                    // DHT walk opens dozens) cost an exchange each way for nothing.
                    // Nor does it wake the room's periodic exchanges.
                    if self.core.room(&id).is_some() {
                        let holds_something = self.core.vector(id).map_or(true, |v| !v.is_empty());
                        if holds_something {
                            self.news(id);
                            self.start_hello(peer_id, id, false);
                            self.receipts_due.insert(id, true);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}
