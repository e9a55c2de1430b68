//! End-to-end across containers: the top-level docker-compose.yml network (a bootstrap node
//! and four peers, each in its own container with its own address), messages in two rooms, a
//! partition made with `docker network disconnect`, messages on both sides, a reconnect, and
//! full delivery and convergence everywhere afterwards.
//!
//! Needs a Docker engine and Docker Compose (v2 `docker compose` or v1 `docker-compose`).
//! Without an engine the test says it was skipped and passes, unless `CI` is set: there it
//! fails. The image `cryptchat:local` is built with scripts/docker-image.sh when it is missing
//! (or always, with CRYPTCHAT_DOCKER_REBUILD=1). Everything the test starts (containers,
//! networks, volumes, under the compose project `cryptchat-test-<pid>`) is removed at the end,
//! also when it fails.
//!
//! Run it with: `cargo test -p cryptchat --test e2e_docker -- --nocapture`

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::in_ci;
use serde_json::Value;

const IMAGE: &str = "cryptchat:local";
const PEERS: usize = 4;
const ROOMS: [&str; 2] = ["lobby", "ops"];
/// The compose file's network (its key under `networks:`).
const NETWORK: &str = "chat";
/// Peers cut off during the partition (compose indexes of the `peer` service).
const CUT_OFF: [usize; 2] = [3, 4];
/// Injected on every node's incoming links through the compose file's LATENCY_MS/JITTER_MS:
/// the containers talk over a real bridge, with the node's own fault layer on top.
const LATENCY_MS: &str = "20";
const JITTER_MS: &str = "10";

/// How long the partition lasts at least.
const PARTITION_HOLD: Duration = Duration::from_secs(30);
const START_TIMEOUT: Duration = Duration::from_secs(300);
const MESH_TIMEOUT: Duration = Duration::from_secs(120);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(90);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(240);

/// Writes straight to stderr: unlike `eprintln!`, this is shown even when the test harness
/// captures output (so "skipped" and the report are visible in a plain `cargo test`).
macro_rules! say {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("node/ has a parent")
        .to_path_buf()
}

/// Skips the test (it passes) with a clear reason, except in CI where Docker is required.
fn skip(reason: &str) {
    if in_ci() {
        panic!(
            "CI is set and this test requires Docker, but {reason}; \
             .ci/run starts dockerd when it is installed"
        );
    }
    say!("skipped: {reason}");
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).trim().to_string()
}

fn docker(args: &[&str]) -> Output {
    run(Command::new("docker").args(args))
}

/// Runs docker and returns its stdout; panics with stderr on failure.
fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Finds a Docker engine and a compose tool; None (after saying why) when the test cannot run.
fn compose_tool() -> Option<Vec<String>> {
    match Command::new("docker")
        .arg("info")
        .stdin(Stdio::null())
        .output()
    {
        Err(e) => {
            skip(&format!("no Docker engine (the docker command: {e})"));
            return None;
        }
        Ok(out) if !out.status.success() => {
            let why = text(&out.stderr);
            let why = why.lines().last().unwrap_or("docker info failed");
            skip(&format!("no Docker engine (docker info: {why})"));
            return None;
        }
        Ok(_) => {}
    }
    let works = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works("docker", &["compose", "version"]) {
        Some(vec!["docker".into(), "compose".into()])
    } else if works("docker-compose", &["version"]) {
        Some(vec!["docker-compose".into()])
    } else {
        skip("no Docker Compose (neither `docker compose` nor `docker-compose` works)");
        None
    }
}

/// Builds the image with scripts/docker-image.sh when it is missing (or when asked to).
fn ensure_image() {
    let rebuild = std::env::var_os("CRYPTCHAT_DOCKER_REBUILD").is_some();
    let present = docker(&["image", "inspect", "--format", "{{.Created}}", IMAGE]);
    if present.status.success() && !rebuild {
        say!(
            "using image {IMAGE} built {} (rebuild: scripts/docker-image.sh)",
            text(&present.stdout)
        );
        return;
    }
    say!("building {IMAGE} with scripts/docker-image.sh (static release build: a few minutes)");
    let root = repo_root();
    let status = Command::new("bash")
        .arg(root.join("scripts/docker-image.sh"))
        .current_dir(&root)
        .stdin(Stdio::null())
        .status()
        .expect("run scripts/docker-image.sh");
    assert!(
        status.success(),
        "scripts/docker-image.sh failed ({status}): run it by hand to see why"
    );
}

/// One container of the compose network.
#[derive(Clone, Debug)]
struct Node {
    service: &'static str,
    /// Compose's container number (1 for the bootstrap).
    index: usize,
    container: String,
    /// Short name for the report: "bootstrap", "peer-1", ...
    name: String,
}

/// The compose project; `docker compose down -v --remove-orphans` when dropped, also when the
/// test panics (after printing the end of every container's log).
struct Compose {
    tool: Vec<String>,
    project: String,
    root: PathBuf,
}

impl Compose {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.tool[0]);
        c.args(&self.tool[1..])
            .arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(self.root.join("docker-compose.yml"))
            .current_dir(&self.root)
            // Not whatever the caller's environment holds (a weak one is refused).
            .env(
                "CRYPTCHAT_PASSWORD",
                "cobalt meadow lantern 4417 quietly drifting",
            )
            .env("LATENCY_MS", LATENCY_MS)
            .env("JITTER_MS", JITTER_MS)
            .env("LOSS", "0")
            .env("BANDWIDTH_KBPS", "0")
            .stdin(Stdio::null());
        c
    }

    fn compose(&self, args: &[&str]) -> Output {
        run(self.command().args(args))
    }

    fn up(&self, peers: usize) {
        let scale = format!("peer={peers}");
        let out = self.compose(&["up", "-d", "--no-build", "--scale", &scale]);
        assert!(
            out.status.success(),
            "compose up failed: {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }

    /// The project's containers, bootstrap first, then peers by index.
    fn nodes(&self) -> Vec<Node> {
        let label = format!("label=com.docker.compose.project={}", self.project);
        let lines = docker_ok(&[
            "ps",
            "-a",
            "--filter",
            &label,
            "--format",
            "{{.ID}} {{.Label \"com.docker.compose.service\"}} \
             {{.Label \"com.docker.compose.container-number\"}}",
        ]);
        let mut nodes: Vec<Node> = lines
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (id, service, number) = (f.next()?, f.next()?, f.next()?);
                let index: usize = number.parse().ok()?;
                let (service, name) = match service {
                    "bootstrap" => ("bootstrap", "bootstrap".to_string()),
                    "peer" => ("peer", format!("peer-{index}")),
                    _ => return None,
                };
                Some(Node {
                    service,
                    index,
                    container: id.to_string(),
                    name,
                })
            })
            .collect();
        nodes.sort_by_key(|n| (n.service != "bootstrap", n.index));
        nodes
    }

    fn network(&self) -> String {
        let project = format!("label=com.docker.compose.project={}", self.project);
        let net = format!("label=com.docker.compose.network={NETWORK}");
        let id = docker_ok(&[
            "network",
            "ls",
            "-q",
            "--no-trunc",
            "--filter",
            &project,
            "--filter",
            &net,
        ]);
        assert!(
            !id.is_empty() && !id.contains('\n'),
            "expected one network for {}: {id:?}",
            self.project
        );
        id
    }

    /// `compose exec -T [--index N] SERVICE /cryptchat --data-dir /data --json ARGS...`
    fn try_cli(&self, node: &Node, args: &[&str]) -> Result<Value, String> {
        let index = node.index.to_string();
        let mut c = self.command();
        c.args(["exec", "-T"]);
        if node.service == "peer" {
            c.args(["--index", &index]);
        }
        c.args([node.service, "/cryptchat", "--data-dir", "/data", "--json"])
            .args(args);
        let out = run(&mut c);
        if !out.status.success() {
            return Err(format!(
                "{} {args:?}: {}{}",
                node.name,
                text(&out.stderr),
                text(&out.stdout)
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "{} {args:?}: bad JSON ({e}): {}",
                node.name,
                text(&out.stdout)
            )
        })
    }

    fn cli(&self, node: &Node, args: &[&str]) -> Value {
        self.try_cli(node, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The container's address on `network`.
    fn ip(&self, node: &Node, network: &str) -> String {
        let format = format!(
            "{{{{range $id, $n := .NetworkSettings.Networks}}}}\
             {{{{if eq $n.NetworkID \"{network}\"}}}}{{{{$n.IPAddress}}}}{{{{end}}}}{{{{end}}}}"
        );
        docker_ok(&["inspect", "--format", &format, &node.container])
    }

    fn health(&self, node: &Node) -> String {
        let out = docker(&[
            "inspect",
            "--format",
            "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
            &node.container,
        ]);
        text(&out.stdout)
    }

    fn logs(&self, node: &Node, tail: usize) -> String {
        let out = docker(&["logs", "--tail", &tail.to_string(), &node.container]);
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for n in self.nodes() {
                say!(
                    "--- {} ({}) log, last lines ---\n{}",
                    n.name,
                    self.health(&n),
                    self.logs(&n, 40)
                );
            }
        }
        say!("tearing down compose project {}", self.project);
        let out = self.compose(&["down", "-v", "--remove-orphans", "--timeout", "2"]);
        if !out.status.success() {
            say!("compose down failed: {}", text(&out.stderr));
        }
        // Whatever compose left behind (it should be nothing): remove it by label.
        let label = format!("label=com.docker.compose.project={}", self.project);
        for (list, rm) in [
            (
                vec!["ps", "-aq", "--filter", label.as_str()],
                vec!["rm", "-f", "-v"],
            ),
            (
                vec!["network", "ls", "-q", "--filter", label.as_str()],
                vec!["network", "rm"],
            ),
            (
                vec!["volume", "ls", "-q", "--filter", label.as_str()],
                vec!["volume", "rm", "-f"],
            ),
        ] {
            let ids = text(&docker(&list).stdout);
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                say!("removing leftovers: docker {rm:?} {ids:?}");
                let mut args = rm.clone();
                args.extend(ids);
                let _ = docker(&args);
            }
        }
    }
}

/// Polls `f` until it returns true; panics with `what` after `timeout`. Returns the time taken.
fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A message's identity: (author_id, seq).
type MsgId = (String, u64);

/// Every node's history of `room` as (author_id, seq, text), in display order, read in
/// parallel. A node that does not answer has an empty history this round.
fn histories(net: &Compose, nodes: &[Node], room: &str) -> Vec<Vec<(MsgId, String)>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|n| {
                s.spawn(move || {
                    let h = match net.try_cli(n, &["history", room, "--limit", "10000"]) {
                        Ok(h) => h,
                        Err(e) => {
                            say!("  (history on {}: {e})", n.name);
                            return vec![];
                        }
                    };
                    h.as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|m| {
                                    let text = m["text"].as_str()?;
                                    Some((
                                        (m["author_id"].as_str()?.to_string(), m["seq"].as_u64()?),
                                        text.to_string(),
                                    ))
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Messages sent so far, per room: id -> text.
#[derive(Default)]
struct Sent(BTreeMap<&'static str, BTreeMap<MsgId, String>>);

impl Sent {
    fn send(&mut self, net: &Compose, node: &Node, room: &'static str, text: &str) -> MsgId {
        let v = net.cli(node, &["send", room, text]);
        let m = &v["message"];
        let id = (
            m["author_id"].as_str().expect("author_id").to_string(),
            m["seq"].as_u64().expect("seq"),
        );
        self.record(room, id.clone(), text);
        id
    }

    fn record(&mut self, room: &'static str, id: MsgId, text: &str) {
        self.0.entry(room).or_default().insert(id, text.to_string());
    }

    fn ids(&self, room: &str) -> BTreeSet<MsgId> {
        self.0
            .get(room)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// Delivery of `expected` in `room` on `nodes`: (held, wanted) over all nodes.
fn delivery(
    net: &Compose,
    nodes: &[Node],
    room: &str,
    expected: &BTreeSet<MsgId>,
) -> (usize, usize, Vec<Vec<(MsgId, String)>>) {
    let hs = histories(net, nodes, room);
    let held = hs
        .iter()
        .map(|h| h.iter().filter(|(id, _)| expected.contains(id)).count())
        .sum();
    (held, expected.len() * nodes.len(), hs)
}

/// Waits until every node of `nodes` holds every message of `expected` (per room); prints the
/// delivery ratio per room, every 10 s while it waits. Returns the time it took; on timeout,
/// panics with what each node holds.
fn wait_delivered(
    net: &Compose,
    nodes: &[Node],
    expected: &BTreeMap<&'static str, BTreeSet<MsgId>>,
    what: &str,
    timeout: Duration,
) -> Duration {
    let start = Instant::now();
    let mut last_said = Instant::now();
    loop {
        let mut all = true;
        let mut line = Vec::new();
        let mut per_node = Vec::new();
        for room in ROOMS {
            let want = &expected[room];
            let (held, wanted, hs) = delivery(net, nodes, room, want);
            all &= held == wanted;
            line.push(format!(
                "{room} {held}/{wanted} ({:.0}%)",
                100.0 * held as f64 / wanted.max(1) as f64
            ));
            let counts: Vec<String> = nodes
                .iter()
                .zip(&hs)
                .map(|(n, h)| {
                    let got = h.iter().filter(|(id, _)| want.contains(id)).count();
                    format!("{} {got}/{}", n.name, want.len())
                })
                .collect();
            per_node.push(format!("{room}: {}", counts.join(", ")));
        }
        let line = line.join(", ");
        let took = start.elapsed();
        if all {
            say!("{what}: {line} in {:.1} s", took.as_secs_f64());
            return took;
        }
        if took > timeout {
            panic!(
                "timed out after {timeout:?} waiting for: {what}\n{}",
                per_node.join("\n")
            );
        }
        if last_said.elapsed() >= Duration::from_secs(10) {
            say!("  ... {what} after {:.0} s: {line}", took.as_secs_f64());
            last_said = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// How the cut-off peers come back after the partition.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Heal {
    /// Each gets its old address back (the network was cut, the hosts stayed): the nodes'
    /// connections resume. Docker hands out the lowest free address, so reconnecting in
    /// ascending order of the old addresses gives each its own again. Should an address change
    /// anyway, the peer is told to `cryptchat dial /dns4/bootstrap/tcp/4001`.
    SameAddresses,
    /// The peers swap addresses (reconnected in descending order), and nothing else is done:
    /// every node must notice by itself that its old connections are dead and reconnect.
    SwappedAddresses,
}

#[test]
fn compose_network_delivers_and_converges_after_a_partition() {
    scenario(Heal::SameAddresses, CONVERGE_TIMEOUT);
}

/// After a partition, peers come back on swapped addresses: nodes must notice their dead
/// connections (failed pings close them) and find each other again.
#[test]
fn compose_network_converges_after_peers_change_addresses() {
    scenario(Heal::SwappedAddresses, Duration::from_secs(120));
}

fn scenario(heal: Heal, converge_timeout: Duration) {
    let Some(tool) = compose_tool() else {
        return;
    };
    say!("compose tool: {}", tool.join(" "));
    ensure_image();
    let started = Instant::now();
    let suffix = match heal {
        Heal::SameAddresses => "",
        Heal::SwappedAddresses => "-moved",
    };
    let net = Compose {
        tool,
        project: format!("cryptchat-test-{}{suffix}", std::process::id()),
        root: repo_root(),
    };
    say!(
        "starting {} (bootstrap + {PEERS} peers, latency {LATENCY_MS} ms, jitter {JITTER_MS} ms)",
        net.project
    );
    net.up(PEERS);
    let nodes = net.nodes();
    assert_eq!(nodes.len(), PEERS + 1, "containers: {nodes:?}");

    // 1. Every container healthy: its local API answers (the compose healthcheck).
    let took = wait_until("every container healthy", START_TIMEOUT, || {
        let mut healthy = true;
        for n in &nodes {
            let h = net.health(n);
            assert!(
                !h.starts_with("exited") && !h.starts_with("dead"),
                "{} stopped ({h}):\n{}",
                n.name,
                net.logs(n, 40)
            );
            healthy &= h == "running healthy";
        }
        healthy
    });
    say!(
        "all {} containers healthy in {:.1} s",
        nodes.len(),
        took.as_secs_f64()
    );
    let names: Vec<String> = nodes
        .iter()
        .map(|n| {
            let s = net.cli(n, &["status"]);
            format!(
                "{}={} ({})",
                n.name,
                s["username"].as_str().unwrap_or("?"),
                &s["peer_id"].as_str().unwrap_or("?")
            )
        })
        .collect();
    say!("nodes: {}", names.join(", "));
    let f = net.cli(&nodes[1], &["faults"]);
    assert_eq!(f["latency_ms"], 20, "faults from LATENCY_MS: {f}");

    // 2. Peers know only the bootstrap's DNS name: the DHT rendezvous must connect everyone
    //    with everyone in both rooms.
    let took = wait_until("a full mesh in both rooms", MESH_TIMEOUT, || {
        nodes.iter().all(|n| {
            let Ok(s) = net.try_cli(n, &["status"]) else {
                return false;
            };
            ROOMS.iter().all(|room| {
                s["rooms"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["name"] == *room)
                    .and_then(|r| r["peers"].as_u64())
                    .unwrap_or(0)
                    >= PEERS as u64
            })
        })
    });
    say!(
        "full mesh (every node sees {PEERS} room peers in each room) in {:.1} s",
        took.as_secs_f64()
    );

    // 3. Everyone writes in both rooms; everyone reads everything.
    let mut sent = Sent::default();
    for n in &nodes {
        for room in ROOMS {
            sent.send(&net, n, room, &format!("{room}: hello from {}", n.name));
        }
    }
    let expected: BTreeMap<_, _> = ROOMS.iter().map(|r| (*r, sent.ids(r))).collect();
    let first_delivery = wait_delivered(
        &net,
        &nodes,
        &expected,
        "connected delivery",
        DELIVERY_TIMEOUT,
    );

    // 4. Partition: peers 3 and 4 are disconnected from the compose network.
    let network = net.network();
    let (side_b, side_a): (Vec<Node>, Vec<Node>) = nodes
        .iter()
        .cloned()
        .partition(|n| n.service == "peer" && CUT_OFF.contains(&n.index));
    let ips_before: Vec<String> = side_b.iter().map(|n| net.ip(n, &network)).collect();
    let cut_at = Instant::now();
    for n in &side_b {
        docker_ok(&["network", "disconnect", &network, &n.container]);
    }
    say!(
        "partition: {} cut off from {} by docker network disconnect (for {}s at least)",
        side_b
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        side_a
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        PARTITION_HOLD.as_secs()
    );
    let before: BTreeMap<&'static str, BTreeSet<MsgId>> =
        ROOMS.iter().map(|r| (*r, sent.ids(r))).collect();
    let mut sent_a = Sent::default();
    let mut sent_b = Sent::default();
    for room in ROOMS {
        for (i, n) in side_a.iter().chain(&side_b).enumerate() {
            let side = if i < side_a.len() {
                &mut sent_a
            } else {
                &mut sent_b
            };
            for k in 1..=2 {
                let t = format!("{room}: {} during the partition #{k}", n.name);
                let id = side.send(&net, n, room, &t);
                sent.record(room, id, &t);
            }
        }
    }
    // The majority side still works: its own messages reach all of it.
    let expected_a: BTreeMap<_, _> = ROOMS
        .iter()
        .map(|r| (*r, before[r].union(&sent_a.ids(r)).cloned().collect()))
        .collect();
    let side_a_delivery = wait_delivered(
        &net,
        &side_a,
        &expected_a,
        "delivery inside the connected side",
        DELIVERY_TIMEOUT,
    );
    // ... and nothing crossed the partition.
    for room in ROOMS {
        let (held, _, _) = delivery(&net, &side_a, room, &sent_b.ids(room));
        assert_eq!(held, 0, "{room}: messages crossed the partition");
    }
    say!("nothing crossed the partition");
    // Long enough for retransmissions to back off and for periodic sync rounds to fail.
    let held_for = cut_at.elapsed();
    if held_for < PARTITION_HOLD {
        std::thread::sleep(PARTITION_HOLD - held_for);
    }

    // 5. Heal: reconnect, under the service name as DNS alias (as compose had it).
    let mut order: Vec<(std::net::Ipv4Addr, &Node)> = side_b
        .iter()
        .zip(&ips_before)
        .map(|(n, ip)| (ip.parse().expect("an IPv4 address"), n))
        .collect();
    order.sort_by_key(|(ip, _)| *ip);
    if heal == Heal::SwappedAddresses {
        order.reverse();
    }
    let healed = Instant::now();
    for (_, n) in &order {
        docker_ok(&[
            "network",
            "connect",
            "--alias",
            n.service,
            &network,
            &n.container,
        ]);
    }
    say!("partition healed (docker network connect)");
    for (n, before) in side_b.iter().zip(&ips_before) {
        let after = net.ip(n, &network);
        if &after == before {
            say!("{} is back on {after}", n.name);
        } else if heal == Heal::SwappedAddresses {
            say!("{} is back on {after} instead of {before}", n.name);
        } else {
            say!(
                "{} came back on {after} instead of {before}: \
                 explicit reconnection with `cryptchat dial /dns4/bootstrap/tcp/4001`",
                n.name
            );
            // The dial answers once connected; the network may take a moment to carry it.
            wait_until("reconnected to the bootstrap node", MESH_TIMEOUT, || {
                net.try_cli(n, &["dial", "/dns4/bootstrap/tcp/4001"])
                    .is_ok()
            });
        }
    }
    let all: BTreeMap<_, _> = ROOMS.iter().map(|r| (*r, sent.ids(r))).collect();
    let converge = wait_delivered(
        &net,
        &nodes,
        &all,
        "delivery after the partition",
        converge_timeout,
    );
    let since_heal = healed.elapsed();

    // Convergence: the same messages in the same (author_id, seq) order on every node.
    let mut order_report = Vec::new();
    for room in ROOMS {
        let hs = histories(&net, &nodes, room);
        let order: Vec<&MsgId> = hs[0].iter().map(|(id, _)| id).collect();
        for (n, h) in nodes.iter().zip(&hs) {
            let mine: Vec<&MsgId> = h.iter().map(|(id, _)| id).collect();
            assert_eq!(
                mine, order,
                "{room}: {} orders its history differently from {}",
                n.name, nodes[0].name
            );
            for (id, t) in h {
                if let Some(want) = sent.0[room].get(id) {
                    assert_eq!(t, want, "{room}: {} has another text for {id:?}", n.name);
                }
            }
        }
        order_report.push(format!("{room}: {} messages", order.len()));
    }

    say!(
        "== report ({} containers, project {})",
        nodes.len(),
        net.project
    );
    for room in ROOMS {
        let (held, wanted, _) = delivery(&net, &nodes, room, &all[room]);
        say!(
            "{room}: delivery {held}/{wanted} = {:.0}%, same order on every node",
            100.0 * held as f64 / wanted as f64
        );
    }
    say!(
        "time to deliver while connected: {:.1} s",
        first_delivery.as_secs_f64()
    );
    say!(
        "time to deliver inside the connected side: {:.1} s",
        side_a_delivery.as_secs_f64()
    );
    say!(
        "time to converge after the partition healed: {:.1} s (since reconnect: {:.1} s)",
        converge.as_secs_f64(),
        since_heal.as_secs_f64()
    );
    say!("histories: {}", order_report.join(", "));
    say!("total: {:.1} s", started.elapsed().as_secs_f64());
}
