//! End-to-end: files shared in a room and fetched by real `cryptchat run` processes on
//! loopback, from whichever member holds them.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{NodeProc, listen_for, wait_until};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// Pseudo-random bytes (xorshift), so that no chunk compresses or repeats another.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
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

/// The file message of `name` in the node's history, once it has arrived.
fn file_in_history(n: &NodeProc, room: &str, name: &str) -> Value {
    let mut found = Value::Null;
    wait_until(&format!("{} sees {name}", n.user), T, || {
        let files = n.cli(&["files", room]);
        if let Some(f) = files
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["file"]["name"] == name)
        {
            found = f["file"].clone();
        }
        !found.is_null()
    });
    found
}

fn fetch(n: &NodeProc, room: &str, id: &str, out: &Path) -> Value {
    n.cli(&["fetch", room, id, "-o", out.to_str().unwrap()])
}

#[test]
fn a_shared_file_is_fetched_from_any_member_that_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--listen".to_string(), listen_for("tcp")];
    args.extend(["--join".into(), "lobby".into()]);
    let mut alice = NodeProc::start("alice", &dir.path().join("alice"), &args);
    args.extend(["--bootstrap".into(), alice.listen_addr("/tcp/")]);
    // Bob gives up quickly on a file nobody online holds.
    let mut bob_args = args.clone();
    bob_args.extend(["--fetch-timeout-s".into(), "3".into()]);
    let bob = NodeProc::start("bob", &dir.path().join("bob"), &bob_args);
    let carol = NodeProc::start("carol", &dir.path().join("carol"), &args);
    for n in [&alice, &bob, &carol] {
        wait_until(&format!("{} sees 2 room peers", n.user), T, || {
            n.room_peers("lobby") >= 2
        });
    }

    // Three chunks and a bit: 256 KiB chunks, the last one short.
    let data = bytes(3 * 256 * 1024 + 4321, 7);
    let src = dir.path().join("holiday photos.bin");
    std::fs::write(&src, &data).unwrap();
    let sent = alice.cli(&["share", "lobby", src.to_str().unwrap()]);
    let id = sent["message"]["file"]["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 64, "{sent}");
    assert_eq!(sent["message"]["kind"], "file");
    assert_eq!(sent["message"]["file"]["size"], data.len() as u64);
    // The key never leaves the node in a view.
    assert!(!sent.to_string().contains("key"), "{sent}");

    // A second file that only Alice will ever hold.
    let lonely = dir.path().join("lonely.txt");
    std::fs::write(&lonely, b"only alice has me").unwrap();
    let lonely_id =
        alice.cli(&["share", "lobby", lonely.to_str().unwrap()])["message"]["file"]["id"]
            .as_str()
            .unwrap()
            .to_string();

    // Bob sees both in the room's history, and fetches the first by a prefix of its id.
    let seen = file_in_history(&bob, "lobby", "holiday photos.bin");
    assert_eq!(seen["id"], id.as_str());
    file_in_history(&bob, "lobby", "lonely.txt");
    let bob_dir = dir.path().join("bob-downloads");
    std::fs::create_dir(&bob_dir).unwrap();
    let got = fetch(&bob, "lobby", &id[..12], &bob_dir);
    assert_eq!(got["chunks_fetched"], 5, "four chunks and the list: {got}");
    let bob_copy = bob_dir.join("holiday photos.bin");
    assert_eq!(got["path"], bob_copy.to_str().unwrap());
    assert!(
        std::fs::read(&bob_copy).unwrap() == data,
        "bob's copy differs"
    );
    // No file is overwritten: a second fetch to the same place fails and says why.
    let again = bob.try_cli(&["fetch", "lobby", &id, "-o", bob_copy.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("exists already"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(std::fs::read(&bob_copy).unwrap() == data);

    // Alice goes away: Carol fetches the file from Bob, the only holder left.
    alice.kill();
    wait_until("carol no longer sees alice", T, || {
        carol.room_peers("lobby") == 1
    });
    file_in_history(&carol, "lobby", "holiday photos.bin");
    let carol_copy = dir.path().join("from-bob.bin");
    let got = fetch(&carol, "lobby", &id, &carol_copy);
    assert_eq!(got["chunks_fetched"], 5, "{got}");
    assert!(
        std::fs::read(&carol_copy).unwrap() == data,
        "carol's copy differs"
    );

    // Nobody online holds the second file: Bob's fetch fails with a clear error, and
    // writes nothing.
    let lonely_out = dir.path().join("lonely-copy.txt");
    let out = bob.try_cli(&[
        "fetch",
        "lobby",
        &lonely_id,
        "-o",
        lonely_out.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no connected member"), "{err}");
    assert!(!lonely_out.exists());

    // An unknown id, and a path that is not a file, are refused up front.
    let out = bob.try_cli(&["fetch", "lobby", "deadbeefdeadbeef"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no file"));
    let out = bob.try_cli(&["share", "lobby", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
    let out = bob.try_cli(&["share", "nowhere", src.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown room"));

    // Alice comes back: her own file, and her chunks, survived the kill.
    alice.restart();
    let mine = dir.path().join("alice-again.bin");
    let got = fetch(&alice, "lobby", &id, &mine);
    assert_eq!(got["chunks_fetched"], 0, "{got}");
    assert!(std::fs::read(&mine).unwrap() == data);
}
