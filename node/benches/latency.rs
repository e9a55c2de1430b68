//! Publish-to-deliver latency between two local cryptchat nodes, against bare gossipsub
//! between two swarms of the same kind, in the same run (issue 2).
//!
//! Run with `cargo bench -p cryptchat --bench latency`. Not a criterion benchmark: it starts
//! real nodes on 127.0.0.1 TCP, sends `N` messages one at a time (each waits until the other
//! node delivers it) and prints percentiles of the send-call-to-delivery time.
//!
//! Both setups drive their swarm from one task behind a command channel and report deliveries
//! on a broadcast channel, so the ratio isolates what cryptchat adds: envelope sealing and
//! verification, journal writes, message validation and its other behaviours.

mod pair;

use std::path::Path;
use std::time::{Duration, Instant};

use cryptchat::envelope::{Envelope, Kind, Payload, Position};
use cryptchat::net::{IDLE_TIMEOUT, SwarmOptions};
use cryptchat::room::Room;
use cryptchat::service::Event;
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm, SwarmBuilder, noise, tcp, yamux};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Measured messages per setup.
const N: usize = 200;
/// Unmeasured messages sent first (connection warm-up, allocator, first journal writes).
const WARMUP: usize = 20;
/// Message text length in bytes, the same for every setup.
const TEXT_LEN: usize = 100;
const ROOM: &str = "bench";
/// Give up on one delivery after this long.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A 100-byte ASCII text, unique per message so deliveries can be matched.
fn text(i: usize) -> String {
    let mut s = format!("latency probe {i:06} ");
    while s.len() < TEXT_LEN {
        s.push('x');
    }
    s
}

/// Timings of one setup: send-call-to-delivery, and send-call-to-return on the sender.
struct Run {
    label: String,
    payload: usize,
    deliver: Vec<Duration>,
    send_return: Vec<Duration>,
}

struct Stats {
    p50: Duration,
    p95: Duration,
    p99: Duration,
    mean: Duration,
    max: Duration,
}

fn stats(samples: &[Duration]) -> Stats {
    let mut v = samples.to_vec();
    v.sort();
    // Nearest-rank percentile.
    let pct = |p: f64| v[((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Stats {
        p50: pct(50.0),
        p95: pct(95.0),
        p99: pct(99.0),
        mean: v.iter().sum::<Duration>() / v.len() as u32,
        max: v[v.len() - 1],
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < SETUP_TIMEOUT {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

// ---------------------------------------------------------------------------------------
// cryptchat: two full nodes
// ---------------------------------------------------------------------------------------

/// Returns the run and the size in bytes of one message's envelope.
async fn run_cryptchat(dir: &Path) -> (Run, usize) {
    let (alice, bob) = pair::identities("latency").await;

    let envelope_size = Envelope::seal(
        &alice,
        &Room::named(ROOM, None).unwrap(),
        Kind::Text,
        Position {
            seq: 1,
            prev: [0; 32],
            lamport: 1,
            timestamp_ms: 1_700_000_000_000,
        },
        &Payload {
            from: alice.username().to_string(),
            text: Some(text(0)),
            ..Payload::default()
        },
    )
    .unwrap()
    .bytes()
    .len();

    let (a, b) = pair::two_in_room(alice, bob, dir, ROOM).await;
    // Let a couple of heartbeats pass so the mesh is grafted, as for the baseline.
    tokio::time::sleep(SwarmOptions::default().heartbeat * 2).await;

    let mut rx = b.subscribe();
    let mut run = Run {
        label: "cryptchat nodes".into(),
        payload: TEXT_LEN,
        deliver: Vec::with_capacity(N),
        send_return: Vec::with_capacity(N),
    };
    let mut deferred = 0;
    for i in 0..WARMUP + N {
        let t = text(i);
        let t0 = Instant::now();
        let sent = a.send(ROOM, &t).await.unwrap();
        let t_ret = t0.elapsed();
        if !sent.published {
            deferred += 1;
        }
        tokio::time::timeout(DELIVERY_TIMEOUT, async {
            loop {
                match rx.recv().await {
                    Ok(Event::Message(m)) if !m.mine && m.text.as_deref() == Some(t.as_str()) => {
                        break;
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => panic!("node b stopped"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("cryptchat message {i} not delivered"));
        if i >= WARMUP {
            run.deliver.push(t0.elapsed());
            run.send_return.push(t_ret);
        }
    }
    if deferred > 0 {
        eprintln!("note: {deferred} cryptchat sends were deferred to the outbox");
    }
    let _ = a.shutdown().await;
    let _ = b.shutdown().await;
    (run, envelope_size)
}

// ---------------------------------------------------------------------------------------
// Baseline: two bare gossipsub swarms, same transport stack, no application validation
// ---------------------------------------------------------------------------------------

type BareSwarm = Swarm<gossipsub::Behaviour>;

fn bare_swarm() -> BareSwarm {
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            // cryptchat's own gossipsub settings, without its validation.
            let cfg = cryptchat::net::gossipsub_base(SwarmOptions::default().heartbeat).build()?;
            Ok(gossipsub::Behaviour::new(
                cryptchat::net::GOSSIP_AUTHENTICITY,
                cfg,
            )?)
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
        .build()
}

enum BareCmd {
    Publish(Vec<u8>, oneshot::Sender<bool>),
    /// (peers subscribed to the topic, mesh peers)
    Peers(oneshot::Sender<(usize, usize)>),
    Addrs(oneshot::Sender<Vec<Multiaddr>>),
    Dial(Multiaddr),
}

/// A bare swarm run like a cryptchat node: one task, commands in, deliveries out.
struct BareHandle {
    tx: mpsc::Sender<BareCmd>,
    events: broadcast::Sender<Vec<u8>>,
}

impl BareHandle {
    async fn ask<T>(&self, f: impl FnOnce(oneshot::Sender<T>) -> BareCmd) -> T {
        let (tx, rx) = oneshot::channel();
        self.tx.send(f(tx)).await.unwrap();
        rx.await.unwrap()
    }
}

fn bare_node(topic: IdentTopic) -> BareHandle {
    let mut swarm = bare_swarm();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    swarm.behaviour_mut().subscribe(&topic).unwrap();
    let (tx, mut rx) = mpsc::channel::<BareCmd>(256);
    let (events, _) = broadcast::channel(1024);
    let ev_tx = events.clone();
    tokio::spawn(async move {
        let mut addrs = vec![];
        loop {
            tokio::select! {
                ev = swarm.select_next_some() => match ev {
                    SwarmEvent::NewListenAddr { address, .. } => {
                        let me = *swarm.local_peer_id();
                        addrs.push(address.with_p2p(me).unwrap());
                    }
                    SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. }) => {
                        let _ = ev_tx.send(message.data);
                    }
                    _ => {}
                },
                cmd = rx.recv() => match cmd {
                    Some(BareCmd::Publish(data, r)) => {
                        let ok = swarm.behaviour_mut().publish(topic.clone(), data).is_ok();
                        let _ = r.send(ok);
                    }
                    Some(BareCmd::Peers(r)) => {
                        let hash = topic.hash();
                        let g = swarm.behaviour();
                        let subscribed = g.all_peers().filter(|(_, t)| t.contains(&&hash)).count();
                        let _ = r.send((subscribed, g.mesh_peers(&hash).count()));
                    }
                    Some(BareCmd::Addrs(r)) => {
                        let _ = r.send(addrs.clone());
                    }
                    Some(BareCmd::Dial(addr)) => {
                        let _ = swarm.dial(addr);
                    }
                    None => break,
                },
            }
        }
    });
    BareHandle { tx, events }
}

/// Payloads are `TEXT_LEN` bytes, or padded to `pad_to` bytes when given.
async fn run_bare(label: &str, pad_to: Option<usize>) -> Run {
    let topic = IdentTopic::new(Room::named(ROOM, None).unwrap().id.topic());
    let a = bare_node(topic.clone());
    let b = bare_node(topic);
    let mut addr = None;
    wait_for("bare listen address", async || {
        addr = a.ask(BareCmd::Addrs).await.first().cloned();
        addr.is_some()
    })
    .await;
    b.tx.send(BareCmd::Dial(addr.unwrap())).await.unwrap();
    wait_for("bare topic peers", async || {
        a.ask(BareCmd::Peers).await.0 >= 1 && b.ask(BareCmd::Peers).await.0 >= 1
    })
    .await;
    tokio::time::sleep(SwarmOptions::default().heartbeat * 2).await;
    let (_, mesh) = a.ask(BareCmd::Peers).await;
    if mesh == 0 {
        eprintln!("note: bare mesh not grafted yet; relying on flood publishing");
    }

    let mut rx = b.events.subscribe();
    let payload = pad_to.unwrap_or(TEXT_LEN);
    let mut run = Run {
        label: label.into(),
        payload,
        deliver: Vec::with_capacity(N),
        send_return: Vec::with_capacity(N),
    };
    for i in 0..WARMUP + N {
        let mut data = text(i).into_bytes();
        data.resize(payload, b'x');
        let t0 = Instant::now();
        let ok = a.ask(|r| BareCmd::Publish(data.clone(), r)).await;
        let t_ret = t0.elapsed();
        assert!(ok, "bare publish {i} failed");
        tokio::time::timeout(DELIVERY_TIMEOUT, async {
            loop {
                match rx.recv().await {
                    Ok(d) if d == data => break,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => panic!("bare node b stopped"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("bare message {i} not delivered"));
        if i >= WARMUP {
            run.deliver.push(t0.elapsed());
            run.send_return.push(t_ret);
        }
    }
    run
}

// ---------------------------------------------------------------------------------------

fn print_table(runs: &[Run]) {
    println!();
    println!(
        "publish-to-deliver latency, N = {N} sequential messages (after {WARMUP} warm-up), ms"
    );
    println!(
        "{:<34} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>12}",
        "setup", "payload", "p50", "p95", "p99", "mean", "max", "send p50"
    );
    for r in runs {
        let s = stats(&r.deliver);
        let sr = stats(&r.send_return);
        println!(
            "{:<34} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>12}",
            r.label,
            format!("{} B", r.payload),
            ms(s.p50),
            ms(s.p95),
            ms(s.p99),
            ms(s.mean),
            ms(s.max),
            ms(sr.p50),
        );
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument (e.g. a filter) is ignored.
    cryptchat::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let (runs, envelope_size) = rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (cc, envelope_size) = run_cryptchat(dir.path()).await;
        let bare = run_bare("bare gossipsub", None).await;
        let bare_env = run_bare("bare gossipsub, envelope-sized", Some(envelope_size)).await;
        (vec![cc, bare, bare_env], envelope_size)
    });
    print_table(&runs);
    let cc = stats(&runs[0].deliver);
    let bare = stats(&runs[1].deliver);
    let bare_env = stats(&runs[2].deliver);
    println!();
    println!(
        "cryptchat message: {TEXT_LEN}-byte text in a {envelope_size}-byte envelope (named room)"
    );
    println!(
        "ratio cryptchat / bare gossipsub ({TEXT_LEN} B):       p50 {:.2}x   p99 {:.2}x",
        ratio(cc.p50, bare.p50),
        ratio(cc.p99, bare.p99)
    );
    println!(
        "ratio cryptchat / bare gossipsub ({envelope_size} B):       p50 {:.2}x   p99 {:.2}x",
        ratio(cc.p50, bare_env.p50),
        ratio(cc.p99, bare_env.p99)
    );
    println!("total wall time {:.1} s", started.elapsed().as_secs_f64());
}
