//! Runs a scenario: starts the nodes, forms the rooms, drives the load and the faults on a
//! seeded schedule, then measures delivery, latency, traffic and convergence.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cryptchat::faults::Faults;
use cryptchat::identity::{Identity, KeySize};
use libp2p::{Multiaddr, PeerId};
use rand::RngExt;
use rand::seq::{IndexedRandom, SliceRandom};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tokio::sync::mpsc;

use crate::baseline::BaselineSwarm;
use crate::node::{Delivered, NodeSpec, SimNode};
use crate::report::{Report, RoomReport, Sample};
use crate::scenario::{Action, Scenario};
use crate::stats;

/// How to run.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Plain gossipsub nodes instead of cryptchat nodes.
    pub baseline: bool,
    /// The swarm those plain gossipsub nodes run.
    pub baseline_swarm: BaselineSwarm,
    /// Where node data dirs go (default: a temporary dir, removed afterwards).
    pub data_root: Option<PathBuf>,
    /// A runtime per node on a thread of its own, instead of every node's tasks on the
    /// caller's runtime (see [`SimNode::start`]).
    pub runtime_per_node: bool,
}

/// Derives the identities of a run: seeded, without argon2id (only RSA generation), in
/// parallel, so start-up is not dominated by key stretching.
pub async fn identities(n: usize, seed: u64) -> anyhow::Result<Vec<Arc<Identity>>> {
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        tasks.push(tokio::task::spawn_blocking(move || {
            let master = cryptchat::crypto::sha256(&[
                b"netsim identity",
                &seed.to_be_bytes(),
                &(i as u64).to_be_bytes(),
            ]);
            Identity::from_master(&format!("node{i}"), &master, KeySize::Rsa2048).map(Arc::new)
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// The peer key of node `i` on its `machine`th machine (0 until a restart on a new one), put
/// in `data_dir` where the node finds it. Chosen from the seed, as everything a run
/// schedules is: peer ids order dials and shape the DHT.
fn place_peer_key(
    data_dir: &std::path::Path,
    seed: u64,
    i: usize,
    machine: u64,
) -> anyhow::Result<libp2p::identity::Keypair> {
    let mut secret = cryptchat::crypto::sha256(&[
        b"netsim peer key",
        &seed.to_be_bytes(),
        &(i as u64).to_be_bytes(),
        &machine.to_be_bytes(),
    ]);
    let key = libp2p::identity::Keypair::ed25519_from_bytes(&mut secret[..])?;
    std::fs::create_dir_all(data_dir)?;
    cryptchat::net::store_peer_key(&data_dir.join(cryptchat::config::PEER_KEY_FILE), &key)?;
    Ok(key)
}

/// A message the run sent.
struct Sent {
    room: usize,
    sender: usize,
    at: Instant,
}

struct Sim<'a> {
    s: &'a Scenario,
    specs: Vec<NodeSpec>,
    nodes: Vec<Option<SimNode>>,
    boot_addrs: Vec<Multiaddr>,
    tx: mpsc::UnboundedSender<Delivered>,
    rng: ChaCha20Rng,
    baseline: bool,
    /// Time of the last heal, restart or rejoin: convergence is measured from it.
    last_disruption: Option<Instant>,
}

fn text_for(id: usize, size: usize) -> String {
    let mut t = format!("#{id} ");
    while t.len() < size {
        t.push('.');
    }
    t
}

/// Notes a delivery, counting repeats: a message's latency at a node is its first delivery
/// there.
fn record(deliveries: &mut HashMap<(usize, usize), Instant>, duplicates: &mut u64, d: Delivered) {
    let Some(id) = id_of(&d.text) else {
        return;
    };
    match deliveries.entry((id, d.node)) {
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(d.at);
        }
        std::collections::hash_map::Entry::Occupied(first) => {
            *duplicates += 1;
            tracing::debug!(
                node = d.node,
                message = id,
                after_ms = d.at.saturating_duration_since(*first.get()).as_millis() as u64,
                "delivered again"
            );
        }
    }
}

/// The last `window` connection counts (a second apart) are within 5% of each other.
fn settled(totals: &[usize], window: usize) -> bool {
    let Some(last) = totals
        .get(totals.len().saturating_sub(window)..)
        .filter(|l| l.len() == window && window > 0)
    else {
        return false;
    };
    let (lo, hi) = (last.iter().min().unwrap(), last.iter().max().unwrap());
    hi - lo <= (hi / 20).max(2)
}

fn id_of(text: &str) -> Option<usize> {
    text.strip_prefix('#')?.split(' ').next()?.parse().ok()
}

impl Sim<'_> {
    /// Bytes written on every node's links so far.
    fn written(&self) -> u64 {
        self.specs.iter().map(|sp| sp.faults.traffic().1).sum()
    }

    /// (substreams opened, writes) on every node's links so far.
    fn frames(&self) -> (u64, u64) {
        self.specs.iter().fold((0, 0), |(o, w), sp| {
            let (o2, w2) = sp.faults.frames();
            (o + o2, w + w2)
        })
    }

    async fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        let mut dial = self.boot_addrs.clone();
        if self.baseline {
            // Plain gossipsub has no rendezvous: give it a few random peers, as the DHT
            // gives cryptchat nodes a few room members.
            let started: Vec<usize> = (0..self.nodes.len())
                .filter(|&j| j != i && self.nodes[j].is_some())
                .collect();
            let picked: Vec<usize> = started.sample(&mut self.rng, 6).copied().collect();
            for j in picked {
                if let Some(a) = self.nodes[j].as_ref().unwrap().addr().await {
                    dial.push(a);
                }
            }
        }
        dial.retain(|a| {
            !a.iter().any(|p| {
                matches!(p, libp2p::multiaddr::Protocol::P2p(id) if id == self.specs[i].peer_key.public().to_peer_id())
            })
        });
        let node = SimNode::start(&self.specs[i], dial).await?;
        node.forward_deliveries(i, self.tx.clone());
        for room in &self.s.rooms {
            if self.s.members(room).contains(&i) {
                node.join(&room.name, room.password.clone()).await?;
            }
        }
        self.nodes[i] = Some(node);
        Ok(())
    }

    fn peer(&self, i: usize) -> PeerId {
        self.specs[i].peer_key.public().to_peer_id()
    }

    async fn apply(&mut self, action: &Action) -> anyhow::Result<()> {
        match action {
            Action::Partition { groups } => {
                let sets: Vec<Vec<usize>> = groups.iter().map(|g| self.s.group(g)).collect();
                for (gi, a) in sets.iter().enumerate() {
                    let others: Vec<PeerId> = sets
                        .iter()
                        .enumerate()
                        .filter(|(gj, _)| *gj != gi)
                        .flat_map(|(_, b)| b.iter().map(|&j| self.peer(j)))
                        .collect();
                    for &i in a {
                        if let Some(n) = &self.nodes[i] {
                            n.block(others.clone(), true).await;
                        }
                    }
                }
            }
            Action::Heal => {
                let all: Vec<PeerId> = (0..self.nodes.len()).map(|j| self.peer(j)).collect();
                for n in self.nodes.iter().flatten() {
                    n.block(all.clone(), false).await;
                }
                self.last_disruption = Some(Instant::now());
            }
            Action::Kill { nodes } => {
                for &i in nodes {
                    if let Some(n) = self.nodes[i].take() {
                        n.stop().await;
                    }
                }
            }
            Action::Restart { nodes, new_machine } => {
                for &i in nodes {
                    if self.nodes[i].is_none() {
                        if *new_machine {
                            let dir = self.specs[i].data_dir.clone();
                            std::fs::remove_dir_all(&dir)
                                .with_context(|| format!("emptying {}", dir.display()))?;
                            // A new machine is a new peer.
                            let spec = &mut self.specs[i];
                            spec.machine += 1;
                            spec.peer_key = place_peer_key(&dir, self.s.seed, i, spec.machine)?;
                        }
                        self.start_node(i).await?;
                    }
                }
                self.last_disruption = Some(Instant::now());
            }
            Action::Churn { .. } => unreachable!("expanded into kill and restart"),
            Action::Link { group, faults } => {
                let targets: Vec<usize> = match group {
                    Some(g) => self.s.group(g),
                    None => (0..self.nodes.len()).collect(),
                };
                for i in targets {
                    self.specs[i].faults.set(*faults);
                }
            }
        }
        Ok(())
    }
}

/// Expands churn into seeded kill and restart events; returns (at_s, action) sorted.
fn schedule_events(s: &Scenario, rng: &mut ChaCha20Rng) -> Vec<(f64, Action)> {
    let mut out = Vec::new();
    for e in &s.events {
        match &e.action {
            Action::Churn { share, down_s } => {
                let mut candidates: Vec<usize> =
                    (0..s.nodes).filter(|i| !s.bootstrap.contains(i)).collect();
                candidates.shuffle(rng);
                let k = ((candidates.len() as f64) * share).round() as usize;
                let picked: Vec<usize> = candidates.into_iter().take(k).collect();
                out.push((
                    e.at_s,
                    Action::Kill {
                        nodes: picked.clone(),
                    },
                ));
                out.push((
                    e.at_s + down_s,
                    Action::Restart {
                        nodes: picked,
                        new_machine: false,
                    },
                ));
            }
            other => out.push((e.at_s, other.clone())),
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// Runs the scenario and measures it.
pub async fn run(s: &Scenario, opts: &Options) -> anyhow::Result<Report> {
    s.validate()?;
    // In a simulation every node shares one disk, where in reality each has its own; on
    // tmpfs their durable commits do not queue behind each other's fsyncs.
    let shm = std::path::Path::new("/dev/shm");
    let tmp = if opts.data_root.is_none() && shm.is_dir() {
        tempfile::tempdir_in(shm).or_else(|_| tempfile::tempdir())?
    } else {
        tempfile::tempdir()?
    };
    let root = opts
        .data_root
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let mut rng = ChaCha20Rng::seed_from_u64(s.seed);
    stats::reset_peak_memory();
    let cpu_start = stats::cpu_time();
    let wall_start = Instant::now();

    tracing::info!(nodes = s.nodes, "deriving identities");
    let ids = identities(s.nodes, s.seed).await?;
    let unanswered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let specs: Vec<NodeSpec> = ids
        .into_iter()
        .enumerate()
        .map(|(i, identity)| {
            // The node's peer key lives in its data dir, as a real node's does; put there
            // now so that its peer id is known before it starts (partitions, dial lists).
            let data_dir = root.join(format!("node{i}"));
            let peer_key = place_peer_key(&data_dir, s.seed, i, 0)?;
            anyhow::Ok(NodeSpec {
                index: i,
                identity,
                peer_key,
                machine: 0,
                data_dir,
                faults: Faults::new(s.link),
                sync_interval: Duration::from_secs_f64(s.sync_interval_s),
                baseline: opts.baseline,
                baseline_swarm: opts.baseline_swarm,
                own_thread: opts.runtime_per_node,
                listen: s.transport.listen_addr(),
                unanswered: unanswered.clone(),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let rss_before = stats::memory_mib();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut sim = Sim {
        s,
        specs,
        nodes: vec![None; s.nodes],
        boot_addrs: vec![],
        tx,
        rng: rng.clone(),
        baseline: opts.baseline,
        last_disruption: None,
    };

    // Bootstrap nodes first, then the rest.
    for &b in &s.bootstrap {
        sim.start_node(b).await?;
        let addr = sim.nodes[b]
            .as_ref()
            .unwrap()
            .addr()
            .await
            .context("bootstrap address")?;
        sim.boot_addrs.push(addr);
    }
    for i in 0..s.nodes {
        if sim.nodes[i].is_none() {
            sim.start_node(i).await?;
        }
    }
    // Warm-up: every member sees members in each of its rooms and holds its own chain
    // there (a node's first write in a room waits for a member's vector: see
    // `cryptchat::own_chain`), and the network has settled (the connection count holds
    // still, once start-up dials and DHT lookups are over), so the load meets a network in
    // its steady state rather than one still booting.
    tracing::info!("waiting for the room meshes");
    let warm = Instant::now();
    let mut totals: Vec<usize> = Vec::new();
    // Long enough to see new connections outlive their grace and be trimmed.
    let settle_window = cryptchat::peers::Budget::default().grace.as_secs() as usize + 3;
    'warm: while warm.elapsed() < Duration::from_secs_f64(s.warmup_s) {
        let mut ready = true;
        'rooms: for room in &s.rooms {
            let members = s.members(room);
            let need = (members.len() - 1).min(2);
            for &i in &members {
                let node = sim.nodes[i].as_ref().unwrap();
                if node.room_peers(&room.name).await < need
                    || (need > 0 && !node.own_chain_held(&room.name).await)
                {
                    ready = false;
                    break 'rooms;
                }
            }
        }
        if ready {
            let mut total = 0;
            for n in sim.nodes.iter().flatten() {
                total += n.connections().await;
            }
            totals.push(total);
            if settled(&totals, settle_window) {
                break 'warm;
            }
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let setup = wall_start.elapsed();
    let mut degrees = Vec::new();
    for room in &s.rooms {
        for i in s.members(room) {
            degrees.push(sim.nodes[i].as_ref().unwrap().room_peers(&room.name).await as f64);
        }
    }
    let room_peers = crate::report::Percentiles::of(degrees);
    tracing::info!(?room_peers, "connected room members per node after warm-up");

    // Idle: nothing is sent; what the nodes do now is what staying in their rooms costs.
    let idle = if s.idle_s > 0.0 {
        tracing::info!(seconds = s.idle_s, "measuring the idle network");
        let rss_mib = stats::memory_mib();
        let cpu0 = stats::cpu_time();
        let bytes0 = sim.written();
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(s.idle_s)).await;
        let seconds = t.elapsed().as_secs_f64();
        Some(crate::report::Idle {
            seconds,
            memberships: s.memberships(),
            cpu_percent: (stats::cpu_time() - cpu0) / seconds * 100.0,
            bytes_per_s: (sim.written() - bytes0) as f64 / seconds,
            rss_before_mib: rss_before,
            rss_mib,
        })
    } else {
        None
    };

    // The load: each sender sends into each of its rooms at the given rate, with seeded
    // jitter so senders do not tick in lockstep.
    let mut sends: Vec<(f64, usize, usize)> = Vec::new();
    for (ri, room) in s.rooms.iter().enumerate() {
        let members = s.members(room);
        let senders: Vec<usize> = match &s.load.senders {
            Some(list) => members
                .iter()
                .copied()
                .filter(|m| list.contains(m))
                .collect(),
            None => members,
        };
        for sender in senders {
            let period = 1.0 / s.load.rate.max(1e-9);
            let mut t = rng.random_range(0.0..period);
            while t < s.load.duration_s {
                sends.push((t, ri, sender));
                t += period * rng.random_range(0.5..1.5);
            }
        }
    }
    sends.sort_by(|a, b| a.0.total_cmp(&b.0));
    let events = schedule_events(s, &mut rng);

    let t0 = Instant::now();
    // What the load costs, apart from start-up: traffic and CPU from here to convergence.
    let load_bytes0 = sim.written();
    let load_frames0 = sim.frames();
    let load_cpu0 = stats::cpu_time();
    let load_activity0 = activities(&sim).await;
    let mut sent: Vec<Sent> = Vec::with_capacity(sends.len());
    let mut deliveries: HashMap<(usize, usize), Instant> = HashMap::new();
    let mut duplicate_deliveries = 0u64;
    let mut ev_iter = events.into_iter().peekable();
    let mut send_iter = sends.into_iter().peekable();
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        let next_send = send_iter.peek().map(|x| x.0);
        let next_event = ev_iter.peek().map(|x| x.0);
        let next = match (next_send, next_event) {
            (None, None) => break,
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
        };
        let due = t0 + Duration::from_secs_f64(next);
        // Collect deliveries while waiting.
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => break,
                Some(d) = rx.recv() => {
                    record(&mut deliveries, &mut duplicate_deliveries, d);
                }
            }
        }
        if next_event == Some(next) {
            let (at, action) = ev_iter.next().unwrap();
            tracing::info!(at, ?action, "event");
            sim.apply(&action).await?;
        } else {
            let (_, ri, sender) = send_iter.next().unwrap();
            let Some(node) = sim.nodes[sender].clone() else {
                continue; // offline senders do not send
            };
            let id = sent.len();
            sent.push(Sent {
                room: ri,
                sender,
                at: Instant::now(),
            });
            let room = s.rooms[ri].name.clone();
            let text = text_for(id, s.load.size);
            in_flight.spawn(async move { node.send(&room, &text).await });
        }
    }
    while in_flight.join_next().await.is_some() {}
    let load_end = Instant::now();

    // Settle: wait until every online member holds every message of its rooms.
    let expected: Vec<u64> = (0..s.rooms.len())
        .map(|ri| sent.iter().filter(|m| m.room == ri).count() as u64)
        .collect();
    let settle_deadline = Instant::now() + Duration::from_secs_f64(s.settle_s);
    let mut converged_at = None;
    while Instant::now() < settle_deadline {
        while let Ok(d) = rx.try_recv() {
            record(&mut deliveries, &mut duplicate_deliveries, d);
        }
        let mut done = true;
        'check: for (ri, room) in s.rooms.iter().enumerate() {
            for i in s.members(room) {
                if let Some(n) = &sim.nodes[i]
                    && n.count(&room.name).await < expected[ri]
                {
                    done = false;
                    break 'check;
                }
            }
        }
        if done {
            converged_at = Some(Instant::now());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    while let Ok(d) = rx.try_recv() {
        record(&mut deliveries, &mut duplicate_deliveries, d);
    }
    let load_bytes = sim.written() - load_bytes0;
    let load_frames = sim.frames();
    let (load_opened, load_writes) = (
        load_frames.0 - load_frames0.0,
        load_frames.1 - load_frames0.1,
    );
    let load_cpu = stats::cpu_time() - load_cpu0;
    let load_activity = if opts.baseline {
        None
    } else {
        let now = activities(&sim).await;
        let mut sum = cryptchat::activity::Activity::default();
        for (a, b) in now.iter().zip(&load_activity0) {
            if let (Some(a), Some(b)) = (a, b) {
                sum.add(&a.since(b));
            }
        }
        Some(sum)
    };
    let load_window = t0.elapsed().as_secs_f64();

    // Measure.
    let mut rooms = Vec::new();
    let mut held_pairs = 0u64;
    for (ri, room) in s.rooms.iter().enumerate() {
        let members = s.members(room);
        let ids: HashSet<usize> = sent
            .iter()
            .enumerate()
            .filter(|(_, m)| m.room == ri)
            .map(|(id, _)| id)
            .collect();
        let mut want = 0u64;
        let mut have = 0u64;
        let mut orders = Vec::new();
        // Every member at once: each query is bounded, so a run whose nodes are saturated
        // still reports (after one timeout, not one per node).
        let online: Vec<&SimNode> = members
            .iter()
            .filter_map(|&i| sim.nodes[i].as_ref())
            .collect();
        let answers = futures::future::join_all(online.iter().map(|n| async {
            let held: HashSet<usize> = n
                .held(&room.name)
                .await
                .iter()
                .filter_map(|t| id_of(t))
                .collect();
            let order = if sim.baseline {
                None
            } else {
                Some(n.order(&room.name).await)
            };
            (held, order)
        }))
        .await;
        for (held, order) in answers {
            want += ids.len() as u64;
            have += ids.intersection(&held).count() as u64;
            orders.extend(order);
        }
        let online = online.len();
        held_pairs += have;
        let converged = !orders.is_empty() && orders.windows(2).all(|w| w[0] == w[1]);
        rooms.push(RoomReport {
            name: room.name.clone(),
            members: members.len(),
            online_members: online,
            messages: ids.len() as u64,
            delivery_ratio: if want == 0 {
                1.0
            } else {
                have as f64 / want as f64
            },
            journals_identical: converged || sim.baseline,
        });
    }
    let mut samples = Vec::new();
    for (&(id, node), &at) in &deliveries {
        let Some(m) = sent.get(id) else { continue };
        if node == m.sender {
            continue;
        }
        samples.push(Sample {
            sent_s: m.at.duration_since(t0).as_secs_f64(),
            latency_ms: at.saturating_duration_since(m.at).as_secs_f64() * 1000.0,
            node,
        });
    }
    let bytes_written = sim.written();
    let duplicates = duplicate_deliveries
        + futures::future::join_all(sim.nodes.iter().flatten().map(|n| n.duplicates()))
            .await
            .into_iter()
            .sum::<u64>();
    let mut per_node_delivery = vec![(0u64, 0u64); s.nodes];
    for (ri, room) in s.rooms.iter().enumerate() {
        for i in s.members(room) {
            if sim.nodes[i].is_none() {
                continue;
            }
            let ids = sent
                .iter()
                .enumerate()
                .filter(|(_, m)| m.room == ri && m.sender != i);
            for (id, _) in ids {
                per_node_delivery[i].1 += 1;
                if deliveries.contains_key(&(id, i)) {
                    per_node_delivery[i].0 += 1;
                }
            }
        }
    }
    let connections: Vec<f64> =
        futures::future::join_all(sim.nodes.iter().flatten().map(|n| n.connections()))
            .await
            .into_iter()
            .map(|c| c as f64)
            .collect();
    // Convergence counts from the last heal or restart, or from the end of the load.
    let convergence_from = sim.last_disruption.unwrap_or(load_end);
    // Counts over the (message, member) pairs delivered; 0 when nothing was.
    let per_delivery = |n: u64| {
        if held_pairs == 0 {
            0.0
        } else {
            n as f64 / held_pairs as f64
        }
    };
    let report = Report {
        scenario: s.name.clone(),
        mode: match (opts.baseline, opts.baseline_swarm) {
            (false, _) => "cryptchat",
            (true, BaselineSwarm::Plain) => "baseline",
            (true, BaselineSwarm::Cryptchat) => "baseline-cryptchat-swarm",
        }
        .into(),
        runtime: if opts.runtime_per_node {
            "per-node"
        } else {
            "shared"
        }
        .into(),
        transport: s.transport.name().into(),
        nodes: s.nodes,
        setup_s: setup.as_secs_f64(),
        room_peers,
        connections: crate::report::Percentiles::of(connections),
        messages_sent: sent.len() as u64,
        rooms,
        latency: crate::report::Percentiles::of(samples.iter().map(|x| x.latency_ms).collect()),
        duplicates,
        delivered: held_pairs,
        bytes_per_delivered: per_delivery(bytes_written),
        convergence_s: converged_at
            .map(|t| t.saturating_duration_since(convergence_from).as_secs_f64()),
        load_bytes_per_delivered: per_delivery(load_bytes),
        load_writes_per_delivered: per_delivery(load_writes),
        load_activity,
        load_streams_per_delivered: per_delivery(load_opened),
        cpu_s_per_node: (stats::cpu_time() - cpu_start) / s.nodes as f64,
        load_cores: load_cpu / load_window.max(1e-9),
        load_cpu_ms_per_delivered: load_cpu * 1000.0 / held_pairs.max(1) as f64,
        peak_rss_mib_per_node: stats::peak_memory_mib() / s.nodes as f64,
        wall_s: wall_start.elapsed().as_secs_f64(),
        idle,
        per_node_delivery: per_node_delivery
            .into_iter()
            .map(|(a, b)| if b == 0 { 1.0 } else { a as f64 / b as f64 })
            .collect(),
        samples,
        unanswered_queries: unanswered.load(std::sync::atomic::Ordering::Relaxed),
    };
    // A node too busy to stop in time is dropped with the run instead.
    let stops = futures::future::join_all(sim.nodes.iter().flatten().map(|n| n.stop()));
    if tokio::time::timeout(crate::node::QUERY_TIMEOUT, stops)
        .await
        .is_err()
    {
        tracing::warn!("some nodes did not stop in time");
    }
    Ok(report)
}

/// Every node's activity counters, by node index (None for nodes down or not answering).
async fn activities(sim: &Sim<'_>) -> Vec<Option<cryptchat::activity::Activity>> {
    futures::future::join_all(sim.nodes.iter().map(|n| async move {
        match n {
            Some(n) => n.activity().await,
            None => None,
        }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_needs_a_window_of_close_counts() {
        assert!(!settled(&[], 3));
        assert!(!settled(&[100, 100], 3));
        assert!(settled(&[100, 100, 100], 3));
        assert!(settled(&[400, 103, 100, 101], 3));
        assert!(!settled(&[400, 103, 100, 101], 4));
        assert!(!settled(&[130, 110, 100], 3));
        assert!(settled(&[4, 5, 6], 3), "small networks may move by two");
    }
}
