//! End-to-end: crashes and damaged files, with real processes.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{NodeProc, listen_for, wait_until};
use cryptchat::api::SendRequest;
use cryptchat::client::Client;
use cryptchat::service::Sent;

const T: Duration = Duration::from_secs(90);

fn pair(dir: &std::path::Path) -> (NodeProc, NodeProc) {
    let args = vec![
        "--listen".to_string(),
        listen_for("tcp"),
        "--join".into(),
        "lobby".into(),
    ];
    let a = NodeProc::start("alice", &dir.join("alice"), &args);
    let mut b_args = args.clone();
    b_args.extend(["--bootstrap".into(), a.listen_addr("/tcp/")]);
    let b = NodeProc::start("bob", &dir.join("bob"), &b_args);
    wait_until("connected", T, || a.room_peers("lobby") >= 1);
    (a, b)
}

/// Sends up to `n` messages through `node`'s API; records each one the node acknowledged.
fn burst(dir: std::path::PathBuf, who: &'static str, n: usize, acked: Arc<Mutex<Vec<String>>>) {
    let Ok(client) = Client::for_data_dir(&dir) else {
        return;
    };
    for i in 0..n {
        let text = format!("{who} {i}");
        let req = SendRequest::new("lobby", text.clone());
        match client.post::<_, Sent>("/send", &req) {
            Ok(_) => acked.lock().unwrap().push(text),
            Err(_) => return,
        }
    }
}

#[test]
fn kill_9_mid_burst_loses_nothing_committed_and_resyncs() {
    let dir = tempfile::tempdir().unwrap();
    let (a, mut b) = pair(dir.path());
    let acked_a = Arc::new(Mutex::new(Vec::new()));
    let acked_b = Arc::new(Mutex::new(Vec::new()));
    let ta = {
        let (d, acked) = (a.data_dir.clone(), acked_a.clone());
        std::thread::spawn(move || burst(d, "alice", 300, acked))
    };
    let tb = {
        let (d, acked) = (b.data_dir.clone(), acked_b.clone());
        std::thread::spawn(move || burst(d, "bob", 100_000, acked))
    };
    // Kill Bob while both are sending and Bob is also receiving Alice's burst.
    wait_until("bob is mid-burst", T, || {
        acked_b.lock().unwrap().len() >= 60
    });
    b.kill();
    tb.join().unwrap();
    let acked_b = acked_b.lock().unwrap().clone();

    b.restart();
    let after_restart = b.texts("lobby");
    for t in &acked_b {
        assert!(after_restart.contains(t), "bob lost his acknowledged '{t}'");
    }
    ta.join().unwrap();
    let acked_a = acked_a.lock().unwrap().clone();
    assert_eq!(acked_a.len(), 300);
    // Reconciliation fills in what Bob missed while down, and Alice gets all of Bob's.
    wait_until("journals converge", T, || {
        let (ta, tb) = (a.texts("lobby"), b.texts("lobby"));
        acked_a.iter().all(|t| tb.contains(t)) && acked_b.iter().all(|t| ta.contains(t))
    });
    // And both show the same entries in the same order.
    let order = |n: &NodeProc| -> Vec<(String, u64)> {
        n.cli(&["history", "lobby", "--limit", "100000"])
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["author_id"].as_str().unwrap().to_string(),
                    m["seq"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    wait_until("same history on both", T, || order(&a) == order(&b));
}

#[test]
fn corrupt_journal_is_a_clear_error_and_the_file_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let args = vec![
        "--listen".to_string(),
        listen_for("tcp"),
        "--join".into(),
        "lobby".into(),
    ];
    let mut a = NodeProc::start("alice", &dir.path().join("alice"), &args);
    a.cli(&["send", "lobby", "precious"]);
    a.kill();
    let path = a.data_dir.join("journal.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    bytes.truncate(len / 2);
    std::fs::write(&path, &bytes).unwrap();

    let out = a.run_with_password(&common::password_for("alice"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("journal.redb"), "{err}");
    assert!(err.contains("corrupt"), "{err}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        (len / 2) as u64,
        "file untouched"
    );
}

/// A file system of `size` (as `mount -o size=` takes it) at `at`, unmounted when dropped;
/// `None` where mounting is not allowed (it needs root).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .ok()?;
        out.status.success().then(|| Tmpfs(at.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let out = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .output();
    }
}

#[test]
fn a_full_disk_stops_the_node_with_a_clear_error_and_a_new_start_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&dir.path().join("disk"), "3m") else {
        eprintln!("skipped: mounting a small tmpfs (a disk to fill) needs root here");
        return;
    };
    // Only the journal is on the small disk (through a link), so the node's log is kept.
    let data_dir = dir.path().join("alice");
    std::fs::create_dir_all(&data_dir).unwrap();
    std::os::unix::fs::symlink(disk.0.join("journal.redb"), data_dir.join("journal.redb")).unwrap();
    let args = vec![
        "--listen".to_string(),
        listen_for("tcp"),
        "--join".into(),
        "lobby".into(),
    ];
    let mut a = NodeProc::start("alice", &data_dir, &args);
    // A file that would leave the disk less than its spare (64 MiB) is refused beforehand,
    // and the node goes on; `status` says why.
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, common::bytes(100_000, 1)).unwrap();
    let out = a.try_cli(&["share", "lobby", notes.to_str().unwrap()]);
    let refused = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        refused.contains("not enough disk space for notes.txt"),
        "{refused}"
    );
    let told = a.status();
    assert!(told["disk_free"].as_u64().unwrap() < 3 << 20);
    assert_eq!(told["disk_low"], true);
    let status = a.client(&["status"]).output().unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("nearly full, files are refused"),
        "{status}"
    );
    wait_until("the log says the disk is nearly full", T, || {
        a.log().contains("the journal's disk is nearly full")
    });
    // So is a file to fetch: Bob shares it, and Alice's node does not take it in.
    let mut b_args = args.clone();
    b_args.extend(["--bootstrap".into(), a.listen_addr("/tcp/")]);
    let mut b = NodeProc::start("bob", &dir.path().join("bob"), &b_args);
    b.cli(&["share", "lobby", notes.to_str().unwrap()]);
    assert_eq!(b.status()["disk_low"], false, "bob's disk has room");
    wait_until("alice sees bob's file", T, || {
        a.file("lobby", "notes.txt").is_some()
    });
    let id = a.file("lobby", "notes.txt").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let into = dir.path().join("fetched");
    std::fs::create_dir_all(&into).unwrap();
    let out = a.try_cli(&["fetch", "lobby", &id, "-o", into.to_str().unwrap()]);
    let refused = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        refused.contains("not enough disk space for notes.txt"),
        "{refused}"
    );
    b.stop();
    let filler = "x".repeat(16_000);
    let mut sent = 0u64;
    let refused = loop {
        let out = a.try_cli(&["send", "lobby", &format!("{} {filler}", sent + 1)]);
        if !out.status.success() {
            break String::from_utf8_lossy(&out.stderr).to_string();
        }
        sent += 1;
        assert!(sent < 1000, "3 MiB never filled up");
    };
    assert!(sent > 10, "{sent} sent before the disk was full: {refused}");
    assert!(refused.contains("No space left on device"), "{refused}");
    assert!(refused.contains("start the node again"), "{refused}");
    // The node stops by itself, and says why.
    let status = a.wait_exit(T);
    assert!(!status.success(), "{status}");
    let log = a.log();
    assert!(
        log.contains("the node stopped: journal file") && log.contains("No space left on device"),
        "{log}"
    );

    // With room again, a new start holds every message the node said it stored, and writes
    // on after them.
    disk.resize("16m");
    a.restart();
    let texts = a.texts("lobby");
    assert_eq!(texts.len() as u64, sent);
    assert!(texts[sent as usize - 1].starts_with(&format!("{sent} x")));
    let next = a.cli(&["send", "lobby", "after the disk was full"]);
    assert_eq!(next["message"]["seq"], sent + 1);
    a.stop();
}
