//! The baseline: plain gossipsub nodes on the same transports, gossipsub settings and fault
//! layer (latency, jitter, bandwidth and loss), with no crypto, journal or reconciliation.
//! What cryptchat costs is measured against this, in the same run.
//!
//! Two baselines, by the swarm they run ([`BaselineSwarm`]): `plain`, gossipsub and identify
//! only; and `cryptchat`, cryptchat's own swarm ([`cryptchat::net::build_swarm`]: Kademlia,
//! ping, relay, AutoNAT, DCUtR and the sync protocol beside gossipsub) carrying the same plain
//! messages. The first measures cryptchat against bare gossipsub; the second against the
//! libp2p node it runs on, so that what is left is cryptchat's own work (envelopes, journal,
//! receipts, reconciliation).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use cryptchat::faults::Faults;
use cryptchat::net;
use cryptchat::net::BehaviourEvent as NetEvent;
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, SwarmBuilder, allow_block_list, identify};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Which swarm baseline nodes run (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BaselineSwarm {
    /// Gossipsub and identify only.
    #[default]
    Plain,
    /// cryptchat's own swarm, every protocol in it, with plain messages on gossipsub.
    Cryptchat,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    identify: identify::Behaviour,
    gossipsub:
        gossipsub::Behaviour<gossipsub::IdentityTransform, gossipsub::AllowAllSubscriptionFilter>,
}

/// What the baseline's run loop needs of a swarm's behaviour.
trait Substrate: NetworkBehaviour {
    type Filter: gossipsub::TopicSubscriptionFilter + Send + 'static;
    /// A topic this swarm's subscription filter accepts, for a room name.
    fn topic(room: &str) -> IdentTopic;
    fn gossipsub(&self) -> &gossipsub::Behaviour<gossipsub::IdentityTransform, Self::Filter>;
    fn gossipsub_mut(
        &mut self,
    ) -> &mut gossipsub::Behaviour<gossipsub::IdentityTransform, Self::Filter>;
    fn blocked(&mut self) -> &mut allow_block_list::Behaviour<allow_block_list::BlockedPeers>;
    /// The gossipsub event among this behaviour's events, if it is one.
    fn gossip_event(ev: Self::ToSwarm) -> Option<gossipsub::Event>;
}

/// Both behaviours name their parts alike (`gossipsub`, `blocked`, a `Gossipsub` event);
/// they differ in the subscription filter and the topics it takes.
macro_rules! impl_substrate {
    ($behaviour:ty, $event:ident, $filter:ty, |$room:ident| $topic:expr) => {
        impl Substrate for $behaviour {
            type Filter = $filter;
            fn topic($room: &str) -> IdentTopic {
                $topic
            }
            fn gossipsub(&self) -> &gossipsub::Behaviour<gossipsub::IdentityTransform, $filter> {
                &self.gossipsub
            }
            fn gossipsub_mut(
                &mut self,
            ) -> &mut gossipsub::Behaviour<gossipsub::IdentityTransform, $filter> {
                &mut self.gossipsub
            }
            fn blocked(
                &mut self,
            ) -> &mut allow_block_list::Behaviour<allow_block_list::BlockedPeers> {
                &mut self.blocked
            }
            fn gossip_event(ev: $event) -> Option<gossipsub::Event> {
                match ev {
                    $event::Gossipsub(e) => Some(e),
                    _ => None,
                }
            }
        }
    };
}

impl_substrate!(
    Behaviour,
    BehaviourEvent,
    gossipsub::AllowAllSubscriptionFilter,
    |room| IdentTopic::new(room)
);

// Room topics carry cryptchat's prefix (its filter takes nothing else); the name stands in
// for the hash, which only cryptchat's nodes compute.
impl_substrate!(net::Behaviour, NetEvent, net::RoomTopics, |room| {
    IdentTopic::new(format!("{}{room}", cryptchat::room::TOPIC_PREFIX))
});

enum Cmd {
    Join(String),
    Send(String, Vec<u8>, oneshot::Sender<bool>),
    Held(String, oneshot::Sender<Vec<String>>),
    Block(Vec<PeerId>, bool),
    RoomPeers(String, oneshot::Sender<usize>),
    Connections(oneshot::Sender<usize>),
    Addr(oneshot::Sender<Option<Multiaddr>>),
    Stop(oneshot::Sender<()>),
}

/// A delivered message: (room, text).
pub type Delivery = (String, String);

#[derive(Clone)]
pub struct PlainNode {
    tx: mpsc::Sender<Cmd>,
    events: broadcast::Sender<Delivery>,
    pub peer_id: PeerId,
    pub faults: Faults,
}

impl PlainNode {
    /// Starts a node running `kind`'s swarm, listening on `listen` (loopback), that dials
    /// `dial`.
    pub async fn start(
        kind: BaselineSwarm,
        key: libp2p::identity::Keypair,
        listen: Multiaddr,
        dial: Vec<Multiaddr>,
        faults: Faults,
        heartbeat: Duration,
    ) -> anyhow::Result<PlainNode> {
        let peer_id = key.public().to_peer_id();
        let cert = cryptchat::net::WebRtcCertificate::generate(&mut rand::rng())?;
        let (tx, rx) = mpsc::channel(1024);
        let (events, _) = broadcast::channel(65536);
        let node = PlainNode {
            tx,
            events: events.clone(),
            peer_id,
            faults: faults.clone(),
        };
        if kind == BaselineSwarm::Cryptchat {
            let opts = net::SwarmOptions {
                mdns: false,
                heartbeat,
                faults: faults.clone(),
            };
            let order = cryptchat::dial_order::DialOrder::shared(peer_id);
            let mut swarm = net::build_swarm(key, cert, &opts, order)?;
            listen_and_dial(&mut swarm, listen, &dial)?;
            tokio::spawn(run(swarm, rx, events, dial, faults));
            return Ok(node);
        }
        let f = faults.clone();
        // Validation is manual only so that simulated loss drops a message where cryptchat
        // drops it: before it is forwarded.
        let gcfg = cryptchat::net::gossipsub_base(heartbeat)
            .validate_messages()
            .build()?;
        let mut swarm: Swarm<Behaviour> = SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(|k| cryptchat::net::direct_transports(k, cert, f, None))?
            .with_behaviour(|k| {
                Ok(Behaviour {
                    blocked: Default::default(),
                    identify: identify::Behaviour::new(identify::Config::new(
                        "/netsim-baseline/1".into(),
                        k.public(),
                    )),
                    // Like cryptchat's own filter: any number of topics per peer (the
                    // stock filter drops a peer's subscriptions past 100 rooms).
                    gossipsub: gossipsub::Behaviour::new_with_subscription_filter(
                        cryptchat::net::GOSSIP_AUTHENTICITY,
                        gcfg,
                        gossipsub::AllowAllSubscriptionFilter {},
                    )?,
                })
            })?
            .with_swarm_config(|c| c.with_idle_connection_timeout(cryptchat::net::IDLE_TIMEOUT))
            .build();
        listen_and_dial(&mut swarm, listen, &dial)?;
        tokio::spawn(run(swarm, rx, events, dial, faults));
        Ok(node)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Delivery> {
        self.events.subscribe()
    }

    pub async fn join(&self, room: &str) {
        let _ = self.tx.send(Cmd::Join(room.to_string())).await;
    }

    pub async fn send(&self, room: &str, text: &str) -> bool {
        let (tx, rx) = oneshot::channel();
        let _ = self
            .tx
            .send(Cmd::Send(room.into(), text.as_bytes().to_vec(), tx))
            .await;
        rx.await.unwrap_or(false)
    }

    pub async fn held(&self, room: &str) -> Vec<String> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Cmd::Held(room.into(), tx)).await;
        rx.await.unwrap_or_default()
    }

    pub async fn block(&self, peers: Vec<PeerId>, blocked: bool) {
        let _ = self.tx.send(Cmd::Block(peers, blocked)).await;
    }

    pub async fn room_peers(&self, room: &str) -> usize {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Cmd::RoomPeers(room.into(), tx)).await;
        rx.await.unwrap_or(0)
    }

    pub async fn connections(&self) -> usize {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Cmd::Connections(tx)).await;
        rx.await.unwrap_or(0)
    }

    pub async fn addr(&self) -> Option<Multiaddr> {
        for _ in 0..100 {
            let (tx, rx) = oneshot::channel();
            let _ = self.tx.send(Cmd::Addr(tx)).await;
            if let Ok(Some(a)) = rx.await {
                return Some(a);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Cmd::Stop(tx)).await;
        let _ = rx.await;
    }
}

/// Starts `swarm` listening on `listen` and dialling `dial` (failed dials are retried by the
/// run loop when a partition heals).
fn listen_and_dial<B: NetworkBehaviour>(
    swarm: &mut Swarm<B>,
    listen: Multiaddr,
    dial: &[Multiaddr],
) -> anyhow::Result<()> {
    swarm.listen_on(listen)?;
    for a in dial {
        let _ = swarm.dial(a.clone());
    }
    Ok(())
}

/// The node's one task: owns the swarm, answers commands. Rooms are keyed by topic.
async fn run<B: Substrate>(
    mut swarm: Swarm<B>,
    mut rx: mpsc::Receiver<Cmd>,
    events: broadcast::Sender<Delivery>,
    dial: Vec<Multiaddr>,
    faults: Faults,
) {
    let mut held: HashMap<String, Vec<String>> = HashMap::new();
    let mut seen: HashSet<gossipsub::MessageId> = HashSet::new();
    let mut addr = None;
    loop {
        tokio::select! {
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::NewListenAddr { address, .. } => addr = Some(address),
                SwarmEvent::Behaviour(ev) => {
                    let Some(gossipsub::Event::Message {
                        propagation_source, message_id, message,
                    }) = B::gossip_event(ev) else {
                        continue;
                    };
                    // Simulated loss, as in cryptchat's node: as if it never arrived.
                    let verdict = if faults.lose() {
                        MessageAcceptance::Ignore
                    } else {
                        MessageAcceptance::Accept
                    };
                    swarm.behaviour_mut().gossipsub_mut().report_message_validation_result(
                        &message_id,
                        &propagation_source,
                        verdict,
                    );
                    if verdict != MessageAcceptance::Accept || !seen.insert(message_id) {
                        continue;
                    }
                    let room = message.topic.as_str().to_string();
                    let text = String::from_utf8_lossy(&message.data).into_owned();
                    held.entry(room.clone()).or_default().push(text.clone());
                    let _ = events.send((room, text));
                }
                _ => {}
            },
            cmd = rx.recv() => match cmd {
                Some(Cmd::Join(room)) => {
                    let _ = swarm.behaviour_mut().gossipsub_mut().subscribe(&B::topic(&room));
                }
                Some(Cmd::Send(room, data, reply)) => {
                    let text = String::from_utf8_lossy(&data).into_owned();
                    let topic = B::topic(&room);
                    let key = topic.hash().into_string();
                    let ok = swarm.behaviour_mut().gossipsub_mut().publish(topic, data).is_ok();
                    held.entry(key).or_default().push(text);
                    let _ = reply.send(ok);
                }
                Some(Cmd::Held(room, reply)) => {
                    let key = B::topic(&room).hash().into_string();
                    let _ = reply.send(held.get(&key).cloned().unwrap_or_default());
                }
                Some(Cmd::Block(peers, blocked)) => {
                    for p in peers {
                        if blocked {
                            swarm.behaviour_mut().blocked().block_peer(p);
                        } else {
                            swarm.behaviour_mut().blocked().unblock_peer(p);
                        }
                    }
                    if !blocked {
                        for a in &dial {
                            let _ = swarm.dial(a.clone());
                        }
                    }
                }
                Some(Cmd::RoomPeers(room, reply)) => {
                    let hash = B::topic(&room).hash();
                    let n = swarm
                        .behaviour()
                        .gossipsub()
                        .all_peers()
                        .filter(|(_, t)| t.contains(&&hash))
                        .count();
                    let _ = reply.send(n);
                }
                Some(Cmd::Connections(reply)) => {
                    let _ = reply.send(swarm.connected_peers().count());
                }
                Some(Cmd::Addr(reply)) => {
                    let _ = reply.send(addr.clone());
                }
                Some(Cmd::Stop(reply)) => {
                    drop(swarm);
                    let _ = reply.send(());
                    return;
                }
                None => return,
            }
        }
    }
}
