//! `cargo test` runs the shipped smoke scenario and a short partition, and asserts what the
//! issue asks: full delivery to every online member and converged journals.

use std::path::Path;

use netsim::{BaselineSwarm, Options, Scenario, Transport};

fn scenario(name: &str) -> Scenario {
    Scenario::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scenarios")
            .join(name),
    )
    .unwrap()
}

/// The smoke scenario with node `n` killed 1 s into the load and restarted at 3 s.
fn smoke_with_restart(n: usize) -> Scenario {
    smoke_restarted(n, false)
}

/// As [`smoke_with_restart`], on an empty data dir with `new_machine`.
fn smoke_restarted(n: usize, new_machine: bool) -> Scenario {
    let mut s = scenario("smoke.toml");
    s.events = vec![
        netsim::scenario::EventSpec {
            at_s: 1.0,
            action: netsim::scenario::Action::Kill { nodes: vec![n] },
        },
        netsim::scenario::EventSpec {
            at_s: 3.0,
            action: netsim::scenario::Action::Restart {
                nodes: vec![n],
                new_machine,
            },
        },
    ];
    s
}

/// `s` run with plain gossipsub nodes.
async fn baseline(s: &Scenario) -> netsim::Report {
    let opts = Options {
        baseline: true,
        ..Default::default()
    };
    netsim::run(s, &opts).await.unwrap()
}

/// The baseline on cryptchat's own swarm (every protocol of a node, plain messages) carries
/// every message of the smoke scenario, on topics cryptchat's subscription filter takes.
#[tokio::test(flavor = "multi_thread")]
async fn the_baseline_on_cryptchats_swarm_delivers_everything() {
    cryptchat::install_crypto_provider();
    let s = scenario("smoke.toml");
    let opts = Options {
        baseline: true,
        baseline_swarm: BaselineSwarm::Cryptchat,
        ..Default::default()
    };
    let b = netsim::run(&s, &opts).await.unwrap();
    println!("{}", b.table(None));
    assert_eq!(b.mode, "baseline-cryptchat-swarm");
    assert!(b.messages_sent > 0);
    assert_eq!(b.rooms[0].delivery_ratio, 1.0, "{:?}", b.rooms);
    assert!(b.latency.count > 0);
}

/// A node that comes back on a new machine (an empty data dir, the same identity) and
/// goes on writing: its messages follow on from those it wrote before, so every member
/// gets them and every journal ends the same (a node that wrote at once would fork its
/// own chain, and members would refuse what it writes).
#[tokio::test(flavor = "multi_thread")]
async fn a_node_back_on_a_new_machine_writes_on_from_its_old_messages() {
    cryptchat::install_crypto_provider();
    let mut s = smoke_restarted(2, true);
    // Long enough after the restart for it to write several messages.
    s.load.duration_s = 8.0;
    let r = netsim::run(&s, &Options::default()).await.unwrap();
    println!("{}", r.table(None));
    assert!(r.complete(), "{r:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn smoke_delivers_everything() {
    cryptchat::install_crypto_provider();
    let s = scenario("smoke.toml");
    let r = netsim::run(&s, &Options::default()).await.unwrap();
    println!("{}", r.table(None));
    assert!(r.messages_sent > 0);
    assert!(r.complete(), "{r:#?}");
    assert!(r.latency.count > 0);
    assert!(r.bytes_per_delivered > 0.0);
}

/// Over QUIC (how runs past the descriptor limit go), with a node killed and restarted on
/// a new UDP port: everything is delivered, the restarted node catches up, and the
/// baseline runs over QUIC too.
#[tokio::test(flavor = "multi_thread")]
async fn smoke_over_quic_delivers_through_a_restart() {
    cryptchat::install_crypto_provider();
    let mut s = smoke_with_restart(2);
    s.transport = Transport::Quic;
    let r = netsim::run(&s, &Options::default()).await.unwrap();
    println!("{}", r.table(None));
    assert_eq!(r.transport, "quic");
    assert!(r.complete(), "{r:#?}");
    assert!(r.convergence_s.is_some());
    assert!(r.latency.count > 0);
    s.events.clear();
    let b = baseline(&s).await;
    assert_eq!(b.transport, "quic");
    assert_eq!(b.rooms[0].delivery_ratio, 1.0, "{:?}", b.rooms);
}

/// A runtime and a thread per node: the nodes still deliver everything, and a node stopped
/// and started again (its runtime dropped and a new one built) catches up.
#[tokio::test(flavor = "multi_thread")]
async fn runtime_per_node_delivers_through_a_restart() {
    cryptchat::install_crypto_provider();
    let s = smoke_with_restart(3);
    let opts = Options {
        runtime_per_node: true,
        ..Default::default()
    };
    let r = netsim::run(&s, &opts).await.unwrap();
    println!("{}", r.table(None));
    assert_eq!(r.runtime, "per-node");
    assert!(r.complete(), "{r:#?}");
    assert!(r.convergence_s.is_some());
    assert!(r.latency.count > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn short_partition_converges_after_heal() {
    cryptchat::install_crypto_provider();
    let mut s = scenario("partition.toml");
    // The shipped scenario, shrunk to test size: 8 nodes, a 6 s split.
    s.nodes = 8;
    s.bootstrap = vec![0, 4];
    s.groups.insert("left".into(), vec![0, 1, 2, 3]);
    s.groups.insert("right".into(), vec![4, 5, 6, 7]);
    s.load.duration_s = 10.0;
    s.load.rate = 1.0;
    s.events[0].at_s = 2.0;
    s.events[1].at_s = 8.0;
    let r = netsim::run(&s, &Options::default()).await.unwrap();
    println!("{}", r.table(None));
    assert!(r.complete(), "{r:#?}");
    assert!(r.convergence_s.is_some());
    // Without reconciliation, the same split loses messages: the baseline shows why the
    // journal exists. (It never converges, so do not wait long for it.)
    s.settle_s = 3.0;
    let b = baseline(&s).await;
    assert!(b.rooms[0].delivery_ratio < 1.0, "{:?}", b.rooms);
}

/// Links that lose a tenth of what they carry, with latency, jitter and a bandwidth cap:
/// gossip drops messages, and reconciliation must still deliver every one.
#[tokio::test(flavor = "multi_thread")]
async fn lossy_links_lose_nothing() {
    cryptchat::install_crypto_provider();
    let mut s = scenario("lossy.toml");
    // The shipped scenario, shrunk to test size.
    s.nodes = 6;
    s.load.duration_s = 8.0;
    let r = netsim::run(&s, &Options::default()).await.unwrap();
    println!("{}", r.table(None));
    assert!(r.messages_sent > 0);
    assert!(r.complete(), "{r:#?}");
    assert!(r.convergence_s.is_some());
}
