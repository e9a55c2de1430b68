//! Harness for end-to-end tests: starts real `cryptchat` processes on loopback, each with its
//! own data dir, and drives them through the CLI exactly as a user would.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod browser;
pub mod inproc;

pub const BIN: &str = env!("CARGO_BIN_EXE_cryptchat");

/// A strong password per test user (the node refuses weak ones).
pub fn password_for(user: &str) -> String {
    format!("{user} walks the quiet harbour at dawn 2031")
}

/// Polls `f` until it returns true; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {timeout:?} waiting for: {what}");
}

/// Whether this is a CI run (`CI` set, and not to "0" or "false"): there, tests that need
/// an outside tool (Docker, a browser) fail without it instead of saying they were skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Pseudo-random bytes (xorshift), so that no chunk compresses or repeats another.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A running `cryptchat run` process. Killed on drop.
pub struct NodeProc {
    pub user: String,
    pub data_dir: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
}

impl NodeProc {
    /// Starts `cryptchat run` for `user` in `data_dir` with extra `run` arguments.
    pub fn start(user: &str, data_dir: &Path, args: &[String]) -> NodeProc {
        let mut n = NodeProc {
            user: user.to_string(),
            data_dir: data_dir.to_path_buf(),
            child: None,
            args: args.to_vec(),
        };
        n.spawn(&password_for(user));
        n.wait_ready();
        n
    }

    fn spawn(&mut self, password: &str) {
        std::fs::create_dir_all(&self.data_dir).unwrap();
        let _ = std::fs::remove_file(self.data_dir.join("api.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.join("node.log"))
            .unwrap();
        let child = Command::new(BIN)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("run")
            .arg("--username")
            .arg(&self.user)
            .args(&self.args)
            .env("CRYPTCHAT_PASSWORD", password)
            .env("RUST_LOG", "info,cryptchat=debug,libp2p=warn,webrtc=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start cryptchat");
        self.child = Some(child);
    }

    /// Waits until the node answers on its local API.
    pub fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if self.data_dir.join("api.json").exists() && self.try_cli(&["status"]).status.success()
            {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "node {} exited early ({status}):\n{}",
                    self.user,
                    self.log()
                );
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!("node {} did not start:\n{}", self.user, self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("node.log")).unwrap_or_default()
    }

    /// Runs a client subcommand against this node.
    pub fn try_cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--json")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run cryptchat client")
    }

    /// A client subcommand for this node, to start as the caller needs (no `--json`).
    pub fn client(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--data-dir").arg(&self.data_dir).args(args);
        c
    }

    /// Runs a client subcommand that must succeed; returns its JSON output.
    pub fn cli(&self, args: &[&str]) -> Value {
        let out = self.try_cli(args);
        assert!(
            out.status.success(),
            "cryptchat {args:?} failed for {}: {}\n--- node log ---\n{}",
            self.user,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    pub fn status(&self) -> Value {
        self.cli(&["status"])
    }

    /// The node's local API: its base URL (`http://ADDR/v1`) and the Authorization header.
    pub fn api(&self) -> (String, String) {
        let info = std::fs::read_to_string(self.data_dir.join("api.json")).unwrap();
        let info: Value = serde_json::from_str(&info).unwrap();
        let token = std::fs::read_to_string(self.data_dir.join("api.token")).unwrap();
        (
            format!("http://{}/v1", info["addr"].as_str().unwrap()),
            format!("Bearer {}", token.trim()),
        )
    }

    /// POSTs `body` as JSON to the local API (`path` such as "/history"): the status and
    /// the JSON answer (`Null` if the answer is not JSON).
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (base, auth) = self.api();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent
            .post(format!("{base}{path}"))
            .header("Authorization", &auth)
            .send_json(body)
            .unwrap();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The first listen address (with /p2p/) whose text contains `needle`, e.g. "/tcp/",
    /// "/quic-v1", "/webrtc-direct".
    pub fn listen_addr(&self, needle: &str) -> String {
        let mut found = None;
        wait_until("a listen address", Duration::from_secs(10), || {
            let s = self.status();
            found = s["listen_addrs"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|a| a.as_str())
                .find(|a| a.contains(needle) && a.contains("127.0.0.1"))
                .map(str::to_string);
            found.is_some()
        });
        found.unwrap()
    }

    /// Number of peers subscribed to `room` that this node is connected to.
    pub fn room_peers(&self, room: &str) -> u64 {
        self.status()["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == room)
            .and_then(|r| r["peers"].as_u64())
            .unwrap_or(0)
    }

    /// The file named `name` as `cryptchat files` lists it (id, name, size, held), if its
    /// message has arrived.
    pub fn file(&self, room: &str, name: &str) -> Option<Value> {
        let files = self.cli(&["files", room]);
        let m = files
            .as_array()?
            .iter()
            .find(|m| m["file"]["name"] == name)?;
        Some(m["file"].clone())
    }

    /// Whether the node holds the whole file named `name` (whose message has arrived).
    pub fn holds(&self, room: &str, name: &str) -> bool {
        let file = self.file(room, name);
        let file = file.unwrap_or_else(|| panic!("{} has no file {name}", self.user));
        file["held"].as_bool().unwrap()
    }

    /// Texts of the room's history, in display order.
    pub fn texts(&self, room: &str) -> Vec<String> {
        self.cli(&["history", room, "--limit", "1000"])
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["text"].as_str().map(str::to_string))
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the node as Ctrl-C or `systemctl stop` would (SIGTERM), and waits for it to
    /// exit cleanly.
    pub fn stop(&mut self) {
        let Some(c) = &self.child else {
            return;
        };
        let sent = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        self.wait_stopped();
    }

    /// Waits for the process to exit (told to stop by a signal or `cryptchat stop`), and
    /// asserts that it exited cleanly.
    pub fn wait_stopped(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let start = Instant::now();
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                assert!(status.success(), "{} stopped with {status}", self.user);
                return;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = c.kill();
                let _ = c.wait();
                panic!("{} did not stop:\n{}", self.user, self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit by itself; returns how it ended.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("a running node");
        let start = Instant::now();
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > timeout {
                // Not left running after the test.
                let _ = c.kill();
                let _ = c.wait();
                panic!("{} did not stop:\n{}", self.user, self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Restarts the process on the same data dir with the same arguments.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn(&password_for(&self.user.clone()));
        self.wait_ready();
    }

    /// Restarts the process on the same data dir with `args` instead of the `run`
    /// arguments it had.
    pub fn restart_as(&mut self, args: &[String]) {
        self.args = args.to_vec();
        self.restart();
    }

    /// What the node logged since it last started.
    pub fn log_of_this_start(&self) -> String {
        let log = self.log();
        let from = log.rfind("cryptchat node for").unwrap_or(0);
        log[from..].to_string()
    }

    /// Restarts the process on the same data dir with `more` arguments after the others.
    pub fn restart_with(&mut self, more: &[String]) {
        self.args.extend_from_slice(more);
        self.restart();
    }

    /// Starts the same data dir with a different password; returns the process output.
    pub fn run_with_password(&mut self, password: &str) -> Output {
        self.kill();
        Command::new(BIN)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("run")
            .arg("--username")
            .arg(&self.user)
            .args(&self.args)
            .env("CRYPTCHAT_PASSWORD", password)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
        // A failed test deletes its temporary dir: keep the end of each node's log in the
        // test output, where CI shows it.
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(150).collect();
            eprintln!("--- last lines of {}'s log ---", self.user);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Loopback listen address for one transport.
pub fn listen_for(transport: &str) -> String {
    match transport {
        "tcp" => "/ip4/127.0.0.1/tcp/0",
        "quic" => "/ip4/127.0.0.1/udp/0/quic-v1",
        "webrtc-direct" => "/ip4/127.0.0.1/udp/0/webrtc-direct",
        other => panic!("unknown transport {other}"),
    }
    .to_string()
}

/// The address fragment that identifies a transport in a multiaddr.
pub fn needle_for(transport: &str) -> &'static str {
    match transport {
        "tcp" => "/tcp/",
        "quic" => "/quic-v1",
        "webrtc-direct" => "/webrtc-direct",
        other => panic!("unknown transport {other}"),
    }
}

/// Three nodes, one as bootstrap; the other two know only the bootstrap's address, find each
/// other through the room's DHT rendezvous, and everyone reads everyone's messages.
pub fn three_nodes_chat(transport: &str, timeout: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let listen = vec!["--listen".to_string(), listen_for(transport)];
    let mut args = listen.clone();
    args.extend(["--join".into(), "lobby".into()]);
    let boot = NodeProc::start("boot", &dir.path().join("boot"), &args);
    let boot_addr = boot.listen_addr(needle_for(transport));

    let mut peer_args = args.clone();
    peer_args.extend(["--bootstrap".into(), boot_addr]);
    let b = NodeProc::start("bob", &dir.path().join("bob"), &peer_args);
    let c = NodeProc::start("carol", &dir.path().join("carol"), &peer_args);
    let nodes = [&boot, &b, &c];

    // Bob and Carol were given no address of each other: the DHT rendezvous must connect
    // them, so each ends up with two room peers.
    for n in nodes {
        wait_until(&format!("{} sees 2 room peers", n.user), timeout, || {
            n.room_peers("lobby") >= 2
        });
    }
    for n in nodes {
        n.cli(&["send", "lobby", &format!("hello from {}", n.user)]);
    }
    let mut expected: Vec<String> = ["boot", "bob", "carol"]
        .iter()
        .map(|u| format!("hello from {u}"))
        .collect();
    expected.sort();
    for n in nodes {
        wait_until(&format!("{} has all messages", n.user), timeout, || {
            let mut got = n.texts("lobby");
            got.sort();
            got == expected
        });
    }
    // Same display order everywhere.
    let order = boot.texts("lobby");
    assert_eq!(b.texts("lobby"), order);
    assert_eq!(c.texts("lobby"), order);
    // Every connection really runs over the transport under test.
    for n in nodes {
        let peers = n.cli(&["peers"]);
        let peers = peers.as_array().unwrap();
        assert!(peers.len() >= 2, "{} has {} peers", n.user, peers.len());
        for p in peers {
            for t in p["transports"].as_array().unwrap() {
                assert_eq!(t, transport, "{}: {p}", n.user);
            }
        }
    }
}
