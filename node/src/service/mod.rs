//! The node service: one task owns the swarm and the protocol state and is driven by
//! commands over a channel. `NodeHandle` is the only way in; the local API and tests use it.
//!
//! This module starts the task and runs its event loop; what the loop does is split by
//! what it handles: `handle` (the commands), `incoming` (messages arriving by gossip, and
//! storing them), `reconcile` (history reconciliation), `rendezvous` (finding a room's
//! members), `connections` (dialling, the connection budget, bans), `receipts`, `files`
//! and `webrtc` (its listeners).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use libp2p::core::ConnectedPoint;
use libp2p::core::transport::ListenerId;
use libp2p::gossipsub::{self, IdentTopic, PublishError};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, autonat, identify, kad, mdns, ping, relay};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

mod connections;
mod files;
mod handle;
mod incoming;
mod mailbox;
mod own;
mod put_pages;
mod receipts;
mod reconcile;
mod rendezvous;
mod room_settings;
mod slices;
mod webrtc;

pub use files::{FetchProgress, Fetched, FileReader, Forgotten, KnownFile, Target};
pub use handle::NodeHandle;
use handle::{Command, Reply};
use incoming::{FLUSH_INTERVAL, GROUP_COMMIT_MAX};
pub use mailbox::MailboxStats;
use receipts::RECEIPT_INTERVAL;

use crate::config;
use crate::core::{Core, CoreError, Counters, MessageView, Query, Rejection, RoomView};
use crate::identity::Identity;
use crate::journal::JournalError;
use crate::net::{self, Behaviour, BehaviourEvent, NetError, SwarmOptions};
use crate::own_chain::Standing;
use crate::room::{Room, RoomId, RoomKind};

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
    /// A fork of the user's own messages in a room is settled by the node when the
    /// members in reach agree on a branch (see [`crate::own_fork`]); off, it always waits
    /// for `repair`: a user who wants to look at every message written with their
    /// identity elsewhere before the node takes it up.
    pub settle_forks: bool,
    /// Our messages a member has not confirmed go in a mailbox in the DHT after this long
    /// (and when the node stops), and the node reads its rooms' authors' mailboxes when it
    /// comes back online (see [`crate::mailbox`]); `None`: neither.
    pub mailbox_after: Option<Duration>,
    /// Listeners asked for on port 0 over TCP or QUIC take the port they had at the last
    /// start if it is free (see [`crate::listen_ports`]), so that peers that knew the node
    /// find it there again.
    pub keep_ports: bool,
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
            settle_forks: true,
            mailbox_after: Some(mailbox::MAILBOX_AFTER),
            keep_ports: false,
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
    /// A peer the user asked for could not be reached.
    #[error("could not connect to {addr}: {why}")]
    Dial { addr: String, why: String },
    /// A file that cannot be shared or written, or a shared file that is malformed.
    #[error("{0}")]
    FileInput(String),
    /// No connected member could serve a file's chunks.
    #[error("{0}")]
    FileUnavailable(String),
    /// A file would leave the journal's disk less than [`crate::disk::SPARE`] free.
    #[error(
        "not enough disk space for {what}: it takes about {}, and the disk of the data dir has {} free ({} are kept spare for messages); free some, or drop copies of files with `cryptchat forget`",
        crate::disk::human_size(*.needed), crate::disk::human_size(*.free), crate::disk::human_size(crate::disk::SPARE)
    )]
    DiskFull {
        what: String,
        needed: u64,
        free: u64,
    },
    /// Our own chain in the room forked (see [`crate::own_chain`]): what we wrote would be
    /// refused by members holding the other branch.
    #[error(
        "your messages in '{room}' from this node conflict with ones your identity wrote \
         elsewhere (another machine or data dir) at #{seq}: members holding those refuse \
         what this node writes there, so it writes nothing more in that room. `cryptchat \
         repair {room}` takes up the members' history and writes yours after it"
    )]
    OwnFork { room: String, seq: u64 },
}

impl NodeError {
    /// Refuses what would take `needed` bytes on the disk of `journal` beyond its spare.
    pub(crate) fn unless_room(
        journal: &std::path::Path,
        what: &str,
        needed: u64,
    ) -> Result<(), NodeError> {
        crate::disk::fits(journal, needed).map_err(|free| NodeError::DiskFull {
            what: what.to_string(),
            needed,
            free,
        })
    }
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
    Message(Box<MessageView>),
    Rejected {
        room_id: String,
        reason: Rejection,
    },
    PeerConnected {
        peer_id: String,
    },
    PeerDisconnected {
        peer_id: String,
    },
    /// The node dropped its copy of a room to take up the members' history (our own
    /// messages there forked; see [`crate::own_fork`]), and writes again after it the
    /// `messages` of ours only the dropped copy held: clients read the room afresh.
    Repaired {
        room_id: String,
        room: String,
        messages: usize,
    },
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
    /// Peers kept from this and earlier runs, dialled when the node has no connection
    /// (see [`crate::known_peers`]).
    #[serde(default)]
    pub known_peers: usize,
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
    /// Bytes free on the disk of the journal, where that can be told (files that would leave
    /// less than [`crate::disk::SPARE`] are refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_free: Option<u64>,
    /// `disk_free` is under the spare: files are refused.
    #[serde(default)]
    pub disk_low: bool,
    /// What the node did with mailboxes (see [`crate::mailbox`]).
    #[serde(default)]
    pub mailboxes: mailbox::MailboxStats,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoomStatus {
    pub name: String,
    /// Peers subscribed to the room's topic that we are connected to.
    pub peers: usize,
    /// Own messages waiting for a peer to publish to.
    pub unpublished: usize,
    /// Whether this node holds its user's own messages in the room as far as members know
    /// them (see [`crate::own_chain`]): "held", "unconfirmed" (no member has told yet),
    /// "catching up" (pulling them; writes wait), "settling" (they forked from ones written
    /// elsewhere and the node is finding out which go on; writes wait) or "forked" (writes
    /// are refused).
    #[serde(default)]
    pub own_chain: String,
}

/// What `repair` did (see [`crate::core::Core::repair`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Repaired {
    pub room: String,
    /// Our messages (texts and files) this node held in the room: those the members lack
    /// are written again once the room's history is back.
    pub messages: usize,
}

/// What `send` reports back.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sent {
    pub message: MessageView,
    /// False when no room member was reachable yet: the message is stored and is published
    /// as soon as one is.
    pub published: bool,
}

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

/// Ping failures in a row (as reported: libp2p's handler keeps quiet about the first)
/// after which a connection counts as dead. With pings every 5 s and 10 s timeouts, a dead
/// link is closed within about 40 s, and a peer that answers late now and then is kept.
const PING_FAILURES_TO_CLOSE: u32 = 2;
/// How often a node logs its [`crate::activity::Activity`] (at debug).
const ACTIVITY_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Every this many sync rounds, every room re-sends its whole receipt, for members that
/// missed a change (receipts are best-effort gossip). A peer that subscribes to one of our
/// rooms gets a whole receipt sooner.
const RECEIPT_REFRESH_ROUNDS: u64 = 60;

/// Opens the journal, builds the swarm, starts listening and dialling, and spawns the task
/// that runs the node.
pub async fn start(identity: Arc<Identity>, cfg: NodeConfig) -> Result<NodeHandle, NodeError> {
    config::ensure_data_dir(&cfg.data_dir).map_err(|e| NodeError::DataDir {
        path: cfg.data_dir.display().to_string(),
        why: e.to_string(),
    })?;
    let journal = Core::open_journal(&cfg.data_dir.join(config::JOURNAL_FILE))?;
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
    let keypair = net::load_or_create_peer_key(&cfg.data_dir.join(config::PEER_KEY_FILE))?;
    let peer_id = keypair.public().to_peer_id();
    let dial_order = crate::dial_order::DialOrder::shared(peer_id);
    if let Ok(mut order) = dial_order.lock() {
        for peer in cfg.bootstrap.iter().filter_map(crate::dial_order::peer_of) {
            order.exempt(peer);
        }
    }
    let known_peers = connections::load_known_peers(&core);
    let kept_ports = match cfg.keep_ports {
        true => connections::load_kept_ports(&core),
        false => Default::default(),
    };
    let mut swarm = net::build_swarm(keypair, cert, &cfg.swarm, dial_order.clone())?;
    let mut webrtc_listeners = Vec::new();
    let mut keeping = HashMap::new();
    for addr in &cfg.listen {
        // The port of the last start, if it is free; else what was asked for.
        let again = kept_ports
            .again(addr)
            .filter(crate::listen_ports::free)
            .and_then(|again| swarm.listen_on(again).ok());
        let id = match again {
            Some(id) => id,
            None => swarm
                .listen_on(addr.clone())
                .map_err(|e| NodeError::Listen {
                    addr: addr.to_string(),
                    why: e.to_string(),
                })?,
        };
        if cfg.keep_ports && crate::listen_ports::keepable(addr) {
            keeping.insert(id, addr.clone());
        }
        if webrtc::renewable(addr) {
            webrtc_listeners.push((id, addr.clone()));
        }
    }
    let (tx, rx) = mpsc::channel(256);
    let (internal_tx, internal_rx) = mpsc::unbounded_channel();
    let (events, _) = broadcast::channel(4096);
    let failure = Arc::new(std::sync::OnceLock::new());
    let mut service = Service {
        swarm,
        core,
        rx,
        failure: failure.clone(),
        events: events.clone(),
        listen_addrs: vec![],
        connections: HashMap::new(),
        outbox: HashMap::new(),
        bootstrap: cfg.bootstrap.clone(),
        known_peers,
        kept_ports,
        keeping,
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
        disk_low: false,
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
        own: crate::own_chain::OwnChains::new(cfg.settle_forks),
        held: Default::default(),
        resend: HashMap::new(),
        own_machines: HashSet::new(),
        own_forks: HashMap::new(),
        dials: HashMap::new(),
        mailboxes: mailbox::Mailboxes::new(cfg.mailbox_after),
    };
    // What we wrote before this start may still lack a member (the node was killed before
    // its mailbox went out, or the member has been away since): looked at once the DHT is
    // up and online members have had the usual time to say what they hold.
    let rooms: Vec<RoomId> = service.core.rooms().map(|r| r.id).collect();
    for &id in &rooms {
        service.mailboxes.wrote(id);
    }
    // The files that go with those mailboxes (or are due as we stop), and which of their
    // pages are in the DHT already.
    service.load_shared();
    service.load_put_pages();
    for id in rooms {
        service.subscribe(id);
    }
    service.dial_bootstrap();
    tokio::spawn(service.run());
    Ok(NodeHandle {
        tx,
        events,
        identity,
        peer_id,
        faults: cfg.swarm.faults.clone(),
        journal,
        uploads,
        failure,
    })
}

struct Service {
    swarm: Swarm<Behaviour>,
    core: Core,
    rx: mpsc::Receiver<Command>,
    /// Why the node stopped by itself, if it did (see [`NodeHandle::failure`]).
    failure: Arc<std::sync::OnceLock<String>>,
    events: broadcast::Sender<Event>,
    listen_addrs: Vec<Multiaddr>,
    /// Open connections per peer, and when the first of them was established.
    connections: HashMap<PeerId, (std::time::Instant, Vec<(ConnectionId, Multiaddr)>)>,
    /// Own envelopes not yet published because no member was reachable.
    outbox: HashMap<RoomId, Vec<Vec<u8>>>,
    bootstrap: Vec<Multiaddr>,
    /// The peers this node was connected to, kept across restarts: dialled with the
    /// bootstrap nodes whenever the node has no connection.
    known_peers: crate::known_peers::KnownPeers,
    /// The ports of this start's TCP and QUIC listeners asked for on port 0, for the next
    /// (see [`NodeConfig::keep_ports`]), and what each of those listeners was asked for.
    kept_ports: crate::listen_ports::KeptPorts,
    keeping: HashMap<ListenerId, Multiaddr>,
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
    /// The journal's disk was under [`crate::disk::SPARE`] free at the last look: said once
    /// in the log when it gets there, and once when it is out of it.
    disk_low: bool,
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
    /// Whether we hold our own chain in each room (see [`crate::own_chain`]).
    own: crate::own_chain::OwnChains<RoomId>,
    /// Commands that write in a room waiting until we do, in the order they came.
    held: std::collections::VecDeque<own::Held>,
    /// Per repaired room, our entries as they were, until its history is back (see
    /// [`Service::repair`]).
    resend: HashMap<RoomId, Vec<crate::core::repair::Ours>>,
    /// Peers that showed they run our identity too (see [`crate::own_fork`]).
    own_machines: HashSet<PeerId>,
    /// Rooms where our chain forked: what the node did about it, and when.
    own_forks: HashMap<RoomId, own::ForkSeen>,
    /// Dials the user asked for, answered when the connection is up or has failed.
    dials: HashMap<libp2p::swarm::ConnectionId, (Multiaddr, handle::Reply<PeerId>)>,
    /// Our mailboxes and the ones we read (see [`crate::mailbox`]).
    mailboxes: mailbox::Mailboxes,
}

/// Why a dial failed, in a line: libp2p nests each transport's error in several layers
/// that repeat one another; the innermost says what happened.
fn dial_failure(e: &libp2p::swarm::DialError) -> String {
    match e {
        libp2p::swarm::DialError::Transport(errors) => {
            let mut whys: Vec<String> = errors
                .iter()
                .map(|(_, e)| {
                    let mut inner: &dyn std::error::Error = e;
                    while let Some(next) = inner.source() {
                        inner = next;
                    }
                    inner.to_string()
                })
                .collect();
            whys.dedup();
            whys.join("; ")
        }
        other => other.to_string(),
    }
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
            let held_recheck = self.held_recheck();
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
                    // Who is in which room, once for the round.
                    let members = self.topic_peers();
                    self.own_cut_off(&members);
                    self.own_forks_ask();
                    self.sync_among(&members);
                    self.tick_mailboxes();
                    self.look_at_disk();
                    self.save_held();
                    self.save_shared(false);
                    self.save_put_pages();
                    self.save_peers_and_ports();
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
                _ = sleep_until_opt(held_recheck) => self.release_held(),
                cmd = self.rx.recv() => match cmd {
                    Some(Command::Shutdown(reply)) => {
                        stopped = Some(reply);
                        self.put_mailboxes_before_stop().await;
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
            if self.journal_failed() {
                self.put_mailboxes_before_stop().await;
                break;
            }
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
        self.save_held();
        self.save_shared(false);
        self.save_put_pages();
        self.save_peers_and_ports();
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

    /// Whether the journal can no longer be written (the disk full, gone or failing; see
    /// [`crate::journal::Journal::unwritable`]): then the node stops, as `stop` would, and says why. A node
    /// that went on could store nothing it receives, nor write, and would never recover by
    /// itself: the file is opened again by a new start, once there is room.
    fn journal_failed(&mut self) -> bool {
        let Some(cause) = self.core.journal().unwritable() else {
            return false;
        };
        let why = crate::journal::JournalError::Unwritable {
            path: self.core.journal().path().to_path_buf(),
            cause: cause.to_string(),
        };
        tracing::error!(error = %why, "the node stops");
        let _ = self.failure.set(why.to_string());
        true
    }

    fn look_at_disk(&mut self) {
        let Some(free) = crate::disk::available(self.core.journal().path()) else {
            return;
        };
        let low = free < crate::disk::SPARE;
        if low && !self.disk_low {
            tracing::warn!(
                free = %crate::disk::human_size(free),
                "the journal's disk is nearly full: files are refused, and the node stops if it fills up"
            );
        } else if !low && self.disk_low {
            tracing::info!(free = %crate::disk::human_size(free), "the journal's disk has room again");
        }
        self.disk_low = low;
    }

    fn subscribe(&mut self, id: RoomId) {
        self.open_own(id);
        let topic = IdentTopic::new(id.topic());
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.subscribe(&topic) {
            tracing::warn!(error = %e, "gossipsub subscribe failed");
        }
        self.rendezvous(id, true, false);
    }

    fn emit(&mut self, ev: Event) {
        if let Event::Message(m) = &ev {
            if m.deleted && m.revises.is_some() {
                self.drop_withdrawn_file(m);
            }
            // Nothing of an ignored author reaches clients, the disk or the room list.
            if self.core.is_ignored(&m.author_id) {
                return;
            }
            self.auto_fetch.offer(m);
            if m.invite.is_some() {
                self.join_invited(m);
            }
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
        let disk_free = crate::disk::available(self.core.journal().path());
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
            known_peers: self.known_peers.len(),
            rooms: self
                .core
                .rooms()
                .map(|r| RoomStatus {
                    name: r.name.clone(),
                    peers: self.room_peers(r.id),
                    unpublished: self.outbox.get(&r.id).map_or(0, Vec::len),
                    own_chain: match self.own.standing(&r.id) {
                        None | Some(Standing::Confirmed | Standing::CutOff) => "held",
                        Some(Standing::Unknown { .. }) => "unconfirmed",
                        Some(Standing::Behind { .. }) => "catching up",
                        Some(Standing::Forked { .. })
                            if self.own.settling(&r.id, std::time::Instant::now()) =>
                        {
                            "settling"
                        }
                        Some(Standing::Forked { .. }) => "forked",
                    }
                    .to_string(),
                })
                .collect(),
            counters: self.core.counters().clone(),
            activity: self.activity,
            nat: self.nat.clone(),
            fetches: self.fetches.progress(),
            dht,
            file_bytes: self.core.journal().chunk_bytes()?,
            disk_free,
            disk_low: disk_free.is_some_and(|free| free < crate::disk::SPARE),
            mailboxes: self.mailboxes.stats(),
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

    /// Joins the room a contact invited us to (see [`Core::join_invited`]).
    fn join_invited(&mut self, m: &MessageView) {
        match self.core.join_invited(m) {
            Ok(Some(room)) => {
                let id = hex::encode(&room.id.0[..4]);
                tracing::info!(room = %id, "joined a room on a contact's invitation");
                self.subscribe(room.id);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not join the room of an invitation"),
        }
    }

    fn join(&mut self, room: Room) -> Result<RoomView, NodeError> {
        let (room, new) = self.core.join(room)?;
        let (id, room) = (room.id, room.clone());
        if new {
            self.subscribe(id);
            // Invited to a group or a room: what its members wrote while none is online.
            self.read_mailboxes(id);
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
        self.mailboxes.wrote(id);
        // The message carried our receipt (see `Core::compose`); what did not fit rides
        // first on our next message, or goes in the next receipt.
        let (_, spacing) = self.receipt_pace(id);
        self.space_receipt(id, spacing);
        let published = self.publish(id, env.into_bytes());
        self.emit(Event::Message(Box::new(message.clone())));
        Ok(Sent { message, published })
    }

    fn on_command(&mut self, cmd: Command) {
        // Messages shown but not yet stored are stored first: whatever the command reads
        // (history, counts, what to sync) holds every message a client has seen.
        self.commit_unstored();
        // A write waits until we hold our own chain in its room (see `crate::own_chain`).
        if let Some(cmd) = self.gate(cmd) {
            self.run_command(cmd);
        }
    }

    fn run_command(&mut self, cmd: Command) {
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
                let res = self.core.leave(&name).map_err(NodeError::from);
                let res = res.and_then(|room| {
                    self.left(&room);
                    Ok(self.core.room_view(&room)?)
                });
                let _ = r.send(res);
            }
            Command::MarkRead(name, r) => {
                let _ = r.send(self.core.mark_read(&name).map_err(NodeError::from));
            }
            Command::RemoveContact(name, r) => {
                let res = self.core.remove_contact(&name).map(|(contact, room)| {
                    if let Some(room) = room {
                        self.left(&room);
                    }
                    contact
                });
                let _ = r.send(res.map_err(NodeError::from));
            }
            Command::Rooms(r) => {
                let rooms: Vec<Room> = self.core.rooms().cloned().collect();
                let res: Result<Vec<_>, _> = rooms
                    .iter()
                    .map(|room| self.core.room_view(room).map_err(NodeError::from))
                    .collect();
                // As people look for them: by name, direct rooms after the others.
                let res = res.map(|mut views| {
                    views.sort_by(|x, y| {
                        let direct = |v: &crate::core::RoomView| v.kind == RoomKind::Direct;
                        (direct(x), &x.name).cmp(&(direct(y), &y.name))
                    });
                    views
                });
                let _ = r.send(res);
            }
            Command::Send(room, text, r) => {
                let composed = blocking(|| self.core.compose(&room, &text));
                let _ = r.send(self.send_composed(composed));
            }
            Command::Reply(room, text, (author, seq), r) => {
                let composed = blocking(|| self.core.compose_reply(&room, &text, &author, seq));
                let _ = r.send(self.send_composed(composed));
            }
            Command::React(room, (author, seq), emoji, undo, r) => {
                let composed = blocking(|| {
                    self.core
                        .compose_reaction(&room, &author, seq, &emoji, undo)
                });
                let _ = r.send(self.send_composed(composed));
            }
            Command::Revise(room, seq, text, r) => {
                let composed = blocking(|| self.core.compose_revision(&room, seq, text.as_deref()));
                let _ = r.send(self.send_composed(composed));
            }
            Command::ShareFile(room, file, r) => {
                let key = file.provider_key();
                let composed = blocking(|| self.core.compose_file(&room, file.clone()));
                let at = composed.as_ref().ok().map(|(id, env, _)| (*id, env.seq));
                let sent = self.send_composed(composed);
                if sent.is_ok() {
                    self.provide_file(key);
                    if let Some((id, seq)) = at {
                        self.shared_file(id, seq, file);
                    }
                }
                let _ = r.send(sent);
            }
            Command::Fetch(room, id, waiter) => self.find_then_fetch(&room, &id, waiter),
            Command::FetchKnown(known, waiter) => self.fetch_found(known.room, known.file, waiter),
            Command::Forget(room, id, r) => self.forget(&room, &id, r),
            Command::History(room, query, r) => self.read_history(&room, query, r),
            Command::Members(room, r) => self.read_members(&room, r),
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
            Command::Ignore(room, author, undo, r) => {
                let res = self.core.ignore(&room, &author, undo);
                let _ = r.send(res.map_err(NodeError::from));
            }
            Command::Ignored(r) => {
                let _ = r.send(Ok(self.core.ignored()));
            }
            Command::Repair(room, r) => {
                let _ = r.send(self.repair(&room));
            }
            Command::Resend(room, r) => {
                let res = self.resend_lacking(&room);
                if let Err(e) = &res {
                    tracing::error!(error = %e, "our messages past a fork were not written again");
                }
                let _ = r.send(res);
            }
            Command::Contacts(r) => {
                let _ = r.send(Ok(self.core.contacts()));
            }
            Command::CreateGroup(name, members, r) => {
                let res = blocking(|| self.core.create_group(&name, &members));
                let res = res.map_err(NodeError::from).map(|(room, invites)| {
                    if let Some(id) = crate::room::RoomId::from_topic(&room.topic) {
                        self.subscribe(id);
                    }
                    for invite in invites {
                        // Written already: a member offline gets it by reconciliation.
                        let _ = self.send_composed(Ok(invite));
                    }
                    room
                });
                let _ = r.send(res);
            }
            Command::Invite(room, contacts, r) => {
                let res = blocking(|| self.core.invite_contacts(&room, &contacts));
                let res = res.map_err(NodeError::from).and_then(|invited| {
                    // A group grown into its successor: in it from now on.
                    if let Some(id) = invited.joined.and_then(|v| RoomId::from_topic(&v.topic)) {
                        self.subscribe(id);
                    }
                    invited
                        .composed
                        .into_iter()
                        .map(|invite| self.send_composed(Ok(invite)))
                        .collect()
                });
                let _ = r.send(res);
            }
            Command::Dial(addr, r) => {
                // The user asked for this peer: no waiting for it to dial first.
                if let (Some(peer), Ok(mut order)) =
                    (crate::dial_order::peer_of(&addr), self.dial_order.lock())
                {
                    order.exempt(peer);
                }
                let opts = libp2p::swarm::dial_opts::DialOpts::from(addr.clone());
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.dials.insert(id, (addr, r));
                    }
                    Err(e) => {
                        let _ = r.send(Err(NodeError::Dial {
                            addr: addr.to_string(),
                            why: e.to_string(),
                        }));
                    }
                }
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

    /// The core has left `room`: off its topic, out of the DHT under it, and nothing of it
    /// kept in the service.
    fn left(&mut self, room: &Room) {
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
        self.forget_shared(room.id);
        self.forget_put_pages(room.id);
        self.own.forget(&room.id);
        self.own_forks.remove(&room.id);
        self.resend.remove(&room.id);
        // Writes held for it fail as writes in a room we are not in.
        self.release_held();
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                if let Some(asked) = self.keeping.get(&listener_id) {
                    self.kept_ports.got(asked, &address);
                }
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
                if let Some((_, r)) = self.dials.remove(&connection_id) {
                    let _ = r.send(Ok(peer_id));
                }
                self.activity.connections_opened += 1;
                if let ConnectedPoint::Dialer { address, .. } = &endpoint {
                    self.activity.connections_dialled += 1;
                    self.known_peers
                        .reached(peer_id, address, crate::core::now_ms() / 1000);
                }
                let (_, conns) = self
                    .connections
                    .entry(peer_id)
                    .or_insert_with(|| (std::time::Instant::now(), Vec::new()));
                let first = conns.is_empty();
                conns.push((connection_id, addr));
                if first && self.connections.len() == 1 {
                    self.mailboxes_connected(false);
                }
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
                            self.mailboxes_connected(true);
                            self.dial_bootstrap();
                        }
                        self.emit(Event::PeerDisconnected {
                            peer_id: peer_id.to_string(),
                        });
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id,
                connection_id,
                error,
            } => {
                tracing::debug!(?peer_id, %error, "outgoing connection failed");
                if let Some((addr, r)) = self.dials.remove(&connection_id) {
                    let _ = r.send(Err(NodeError::Dial {
                        addr: addr.to_string(),
                        why: dial_failure(&error),
                    }));
                }
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
                    self.known_peers.failed(&peer);
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
                    self.known_peers.heard(
                        peer_id,
                        &info.listen_addrs,
                        crate::core::now_ms() / 1000,
                    );
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
                        self.read_all_mailboxes();
                    }
                }
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            }) => {
                if step.last {
                    self.activity.dht_queries += 1;
                    if matches!(result, kad::QueryResult::Bootstrap(_)) {
                        self.activity.dht_bootstraps += 1;
                    }
                }
                if !self.on_mailbox_query(id, &result, step.last) {
                    self.on_kad_result(result);
                }
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

    /// Reads a room's history on a blocking thread (see [`crate::core::RoomReader`]); the
    /// views are made here once it is read.
    fn read_history(&mut self, room: &str, query: Query, reply: Reply<Vec<MessageView>>) {
        let reader = match self.core.reader(room) {
            Ok(reader) => reader,
            Err(e) => return drop(reply.send(Err(e.into()))),
        };
        self.read_off_loop(reader, move |reader| {
            let room = reader.room_id();
            let read = reader.query(&query);
            reconcile::Internal::History { room, read, reply }
        });
    }

    /// Names a room's known members from its history on a blocking thread (a big room's
    /// members each cost an entry opened).
    fn read_members(&mut self, room: &str, reply: Reply<Vec<crate::core::MemberView>>) {
        let (reader, members) = match self.core.members(room) {
            Ok(found) => found,
            Err(e) => return drop(reply.send(Err(e.into()))),
        };
        self.read_off_loop(reader, move |reader| {
            let read = reader.name_members(members);
            reconcile::Internal::Members { read, reply }
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
    /// Received messages waiting to be stored are stored first, so that the read finds
    /// every message shown: a file fetched unasked is looked up in the history a moment
    /// after its message is shown, often before `STORE_DELAY` is up.
    pub(super) fn off_loop(&mut self, read: impl FnOnce() -> reconcile::Internal + Send + 'static) {
        self.commit_unstored();
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
}
