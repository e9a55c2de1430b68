//! End-to-end: files shared in a room and fetched by real `cryptchat run` processes on
//! loopback, from whichever member holds them.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{NodeProc, bytes, listen_for, wait_until};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// The file message of `name` in the node's history, once it has arrived.
fn file_in_history(n: &NodeProc, room: &str, name: &str) -> Value {
    let mut found = None;
    wait_until(&format!("{} sees {name}", n.user), T, || {
        found = n.file(room, name);
        found.is_some()
    });
    found.unwrap()
}

/// A fetch of a file no member online holds: it fails, says why, and writes nothing.
fn fetch_finds_no_holder(n: &NodeProc, room: &str, id: &str, out: &Path) {
    let res = n.try_cli(&["fetch", room, id, "-o", out.to_str().unwrap()]);
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("no member of the room that could be reached"),
        "{err}"
    );
    assert!(!out.exists());
}

/// `run` arguments for a node in `lobby` on loopback TCP, then `more`.
fn lobby_args(more: &[&str]) -> Vec<String> {
    let mut args = vec!["--listen".to_string(), listen_for("tcp")];
    args.extend(
        ["--join", "lobby"]
            .iter()
            .chain(more)
            .map(|a| a.to_string()),
    );
    args
}

fn fetch(n: &NodeProc, room: &str, id: &str, out: &Path) -> Value {
    n.cli(&["fetch", room, id, "-o", out.to_str().unwrap()])
}

#[test]
fn a_shared_file_is_fetched_from_any_member_that_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = lobby_args(&[]);
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
    fetch_finds_no_holder(
        &bob,
        "lobby",
        &lonely_id,
        &dir.path().join("lonely-copy.txt"),
    );

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
    // Back in the network (she has no bootstrap node and a new port: she dials Bob), she
    // announces both files she holds in the DHT again.
    alice.cli(&["dial", &bob.listen_addr("/tcp/")]);
    wait_until("alice announces her files again", T, || {
        alice.status()["activity"]["file_announcements"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    });
}

/// With `--auto-fetch`, a member fetches the small files others share without being asked,
/// so they stay in the room while their author is offline. Bigger files, and members
/// without the flag, fetch nothing unasked; a fetch that failed is tried again when a member
/// appears. `files` says which files a node holds, and `forget` drops its copy of one.
/// A file fetched unasked is looked up in the history moments after its message is shown,
/// before the message is stored (received messages are stored up to 50 ms later, with
/// others): the lookup must find it all the same. A sync round every 0.1 s starts those
/// lookups soon after each message, so some would come before the store.
#[test]
fn files_fetched_unasked_right_after_their_message_is_shown_are_all_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = lobby_args(&[]);
    let alice = NodeProc::start("alice", &dir.path().join("alice"), &args);
    args.extend(["--bootstrap".into(), alice.listen_addr("/tcp/")]);
    args.extend(["--auto-fetch", "1M", "--sync-interval-s", "0.1"].map(String::from));
    let bob = NodeProc::start("bob", &dir.path().join("bob"), &args);
    wait_until("alice and bob meet in lobby", T, || {
        alice.room_peers("lobby") >= 1 && bob.room_peers("lobby") >= 1
    });
    let names: Vec<String> = (0..6).map(|i| format!("f{i}.bin")).collect();
    for (i, name) in names.iter().enumerate() {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes(10_000, 40 + i as u64)).unwrap();
        alice.cli(&["share", "lobby", path.to_str().unwrap()]);
        std::thread::sleep(Duration::from_millis(150));
    }
    for name in &names {
        file_in_history(&bob, "lobby", name);
        wait_until(&format!("bob holds {name}, unasked"), T, || {
            bob.holds("lobby", name)
        });
    }
}

#[test]
fn small_files_are_fetched_unasked_and_outlast_their_authors_absence_until_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = lobby_args(&["--sync-interval-s", "1"]);
    let mut alice = NodeProc::start("alice", &dir.path().join("alice"), &args);
    args.extend(["--bootstrap".into(), alice.listen_addr("/tcp/")]);
    let mut bob_args = args.clone();
    bob_args.extend(["--auto-fetch".into(), "1M".into()]);
    bob_args.extend(["--fetch-timeout-s".into(), "3".into()]);
    let bob = NodeProc::start("bob", &dir.path().join("bob"), &bob_args);
    let mut carol_args = args.clone();
    carol_args.extend(["--fetch-timeout-s".into(), "3".into()]);
    // Straight to Bob too: this test is about files, not about finding members.
    carol_args.extend(["--bootstrap".into(), bob.listen_addr("/tcp/")]);
    let carol = NodeProc::start("carol", &dir.path().join("carol"), &carol_args);
    for n in [&alice, &bob, &carol] {
        wait_until(&format!("{} sees 2 room peers", n.user), T, || {
            n.room_peers("lobby") >= 2
        });
    }
    let announced = |n: &NodeProc| {
        n.status()["activity"]["file_announcements"]
            .as_u64()
            .unwrap()
    };

    // The big one first: were it fetched too, it would be under way when the small one is done.
    let share = |name: &str, data: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, data).unwrap();
        alice.cli(&["share", "lobby", path.to_str().unwrap()])["message"]["file"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let big = bytes(1024 * 1024 + 1, 12);
    let big_id = share("big.bin", &big);
    let small = bytes(300_000, 11);
    let small_id = share("small.bin", &small);
    file_in_history(&carol, "lobby", "small.bin");
    file_in_history(&carol, "lobby", "big.bin");
    wait_until("bob holds the small file, unasked", T, || {
        announced(&bob) >= 1
    });
    // Time enough for more (five chunks on loopback take milliseconds): nothing comes.
    std::thread::sleep(Duration::from_secs(3));
    let status = bob.status();
    assert_eq!(status["activity"]["file_announcements"], 1, "{status}");
    assert_eq!(
        status["fetches"].as_array().map(Vec::len),
        Some(0),
        "{status}"
    );
    assert_eq!(announced(&carol), 0, "carol fetched something unasked");

    // A file shared while Bob cannot reach its only holder: his fetch gives up, and he
    // tries again, unasked, once she shows up.
    let alice_peer = alice.status()["peer_id"].as_str().unwrap().to_string();
    bob.cli(&["block", &alice_peer]);
    wait_until("bob cut off from alice", T, || bob.room_peers("lobby") == 1);
    let late = bytes(200_000, 14);
    share("late.bin", &late);
    file_in_history(&bob, "lobby", "late.bin");
    let fetching = || bob.status()["fetches"].as_array().unwrap().len();
    wait_until("bob's fetch of late.bin under way", T, || fetching() == 1);
    wait_until("bob's fetch of late.bin given up", T, || fetching() == 0);
    assert_eq!(announced(&bob), 1);
    bob.cli(&["block", "--unblock", &alice_peer]);
    bob.cli(&["dial", &alice.listen_addr("/tcp/")]);
    wait_until("bob holds late.bin, fetched again unasked", T, || {
        announced(&bob) == 2
    });
    assert!(bob.holds("lobby", "late.bin"));

    // Alice goes away: Carol fetches the small file from Bob; nobody holds the big one.
    alice.kill();
    wait_until("carol no longer sees alice", T, || {
        carol.room_peers("lobby") == 1
    });
    let copy = dir.path().join("small-from-bob.bin");
    let got = fetch(&carol, "lobby", &small_id, &copy);
    assert_eq!(got["chunks_fetched"], 3, "two chunks and the list: {got}");
    assert!(
        std::fs::read(&copy).unwrap() == small,
        "carol's copy differs"
    );
    fetch_finds_no_holder(&carol, "lobby", &big_id, &dir.path().join("big-copy.bin"));

    // Carol's list says which files she holds; she forgets the small one to free its space:
    // the message stays, and she can fetch it again from Bob.
    let held = |name: &str| carol.holds("lobby", name);
    assert!(held("small.bin") && !held("big.bin"));
    let gone = carol.cli(&["forget", "lobby", &small_id[..12]]);
    assert_eq!(gone["name"], "small.bin", "{gone}");
    assert!(
        gone["freed"].as_u64().unwrap() > small.len() as u64,
        "{gone}"
    );
    assert!(!held("small.bin"));
    let again = dir.path().join("small-again.bin");
    let got = fetch(&carol, "lobby", &small_id, &again);
    assert_eq!(got["chunks_fetched"], 3, "fetched again: {got}");
    assert!(std::fs::read(&again).unwrap() == small);
    assert!(held("small.bin"));
    // Forgetting a file not held frees nothing; an unknown one is an error.
    assert_eq!(carol.cli(&["forget", "lobby", &big_id])["freed"], 0);
    let out = carol.try_cli(&["forget", "lobby", "deadbeefdeadbeef"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no file"));
}

/// Fetching unasked picks up where it was at start: files shared before it was turned on
/// (or while the node was down) are fetched then, except one the user forgot, and no more
/// than `--auto-fetch-total` lets in; forgetting a file makes room for the next.
#[test]
fn fetching_unasked_resumes_at_start_within_its_allowance_and_leaves_forgotten_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = lobby_args(&["--sync-interval-s", "1"]);
    let alice = NodeProc::start("alice", &dir.path().join("alice"), &args);
    args.extend(["--bootstrap".into(), alice.listen_addr("/tcp/")]);
    let mut bob = NodeProc::start("bob", &dir.path().join("bob"), &args);
    let mut ids = Vec::new();
    for (i, name) in ["a.bin", "b.bin", "c.bin"].into_iter().enumerate() {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes(200_000, 30 + i as u64)).unwrap();
        let shared = alice.cli(&["share", "lobby", path.to_str().unwrap()]);
        ids.push(
            shared["message"]["file"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        file_in_history(&bob, "lobby", name);
    }
    let file_bytes = |n: &NodeProc| n.status()["file_bytes"].as_u64().unwrap();

    // Bob, not fetching unasked yet, fetches a.bin by hand and forgets it.
    fetch(&bob, "lobby", &ids[0], &dir.path().join("a-copy.bin"));
    assert!(file_bytes(&bob) > 200_000);
    bob.cli(&["forget", "lobby", &ids[0]]);
    assert_eq!(file_bytes(&bob), 0);

    // Restarted fetching unasked, with room for one file of the two left.
    bob.restart_with(&[
        "--auto-fetch".into(),
        "1M".into(),
        "--auto-fetch-total".into(),
        "300K".into(),
    ]);
    wait_until("bob holds b.bin, unasked", T, || {
        bob.holds("lobby", "b.bin")
    });
    // Time enough for more (a chunk on loopback takes milliseconds): nothing comes.
    std::thread::sleep(Duration::from_secs(3));
    assert!(!bob.holds("lobby", "a.bin"), "a forgotten file came back");
    assert!(!bob.holds("lobby", "c.bin"), "past the allowance");
    let held = file_bytes(&bob);
    assert!((200_000..=300 * 1024).contains(&held), "{held}");

    // Forgetting b.bin makes room for c.bin; a.bin, forgotten, still stays away.
    bob.cli(&["forget", "lobby", &ids[1]]);
    wait_until("bob holds c.bin, unasked", T, || {
        bob.holds("lobby", "c.bin")
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(!bob.holds("lobby", "a.bin") && !bob.holds("lobby", "b.bin"));
    // Fetched by hand, a forgotten file is held again (and no longer declined).
    fetch(&bob, "lobby", &ids[0], &dir.path().join("a-again.bin"));
    assert!(bob.holds("lobby", "a.bin"));
}

/// The local API's upload and download routes, as the web page uses them: a file uploaded
/// as a request body is shared like `cryptchat share`, and another node's client downloads
/// it as a response body, fetched from the uploader on the way. Bad names, unknown rooms
/// and unknown files get clear errors, and nothing of an upload is left behind.
/// A download's status, `Content-Disposition` and body.
fn file_response(mut r: ureq::http::Response<ureq::Body>) -> (u16, Option<String>, Vec<u8>) {
    let status = r.status().as_u16();
    let disposition = r
        .headers()
        .get("content-disposition")
        .map(|v| v.to_str().unwrap().to_string());
    let body = r
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap();
    (status, disposition, body)
}

#[test]
fn files_go_up_and_down_through_the_local_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = lobby_args(&[]);
    let alice = NodeProc::start("alice", &dir.path().join("alice"), &args);
    args.extend(["--bootstrap".into(), alice.listen_addr("/tcp/")]);
    let bob = NodeProc::start("bob", &dir.path().join("bob"), &args);
    for n in [&alice, &bob] {
        wait_until(&format!("{} sees a room peer", n.user), T, || {
            n.room_peers("lobby") >= 1
        });
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let upload = |n: &NodeProc, room: &str, name: &str, body: &[u8]| {
        let (base, auth) = n.api();
        let mut r = agent
            .post(format!("{base}/upload"))
            .query("room", room)
            .query("name", name)
            .header("Authorization", &auth)
            .send(body)
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        (status, body)
    };
    let download = |n: &NodeProc, room: &str, id: &str| {
        let (base, auth) = n.api();
        let r = agent
            .get(format!("{base}/download"))
            .query("room", room)
            .query("id", id)
            .header("Authorization", &auth)
            .call()
            .unwrap();
        file_response(r)
    };

    let data = bytes(2 * 256 * 1024 + 99, 11);
    let (status, sent) = upload(&alice, "lobby", "minutes (final).odt", &data);
    assert_eq!(status, 200, "{sent}");
    let id = sent["message"]["file"]["id"].as_str().unwrap().to_string();
    assert_eq!(sent["message"]["file"]["size"], data.len() as u64);
    // The upload was sealed into the journal and its plain copy removed.
    let uploads = alice.data_dir.join("uploads");
    assert!(
        std::fs::read_dir(&uploads).map_or(true, |mut d| d.next().is_none()),
        "an upload was left behind"
    );

    file_in_history(&bob, "lobby", "minutes (final).odt");
    let (status, disposition, body) = download(&bob, "lobby", &id[..10]);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(body == data, "bob's download differs");
    assert_eq!(
        disposition.as_deref(),
        Some("attachment; filename*=UTF-8''minutes%20%28final%29.odt")
    );
    // Alice's own copy comes from her journal; so does Bob's second one.
    assert!(download(&alice, "lobby", &id).2 == data);
    assert!(download(&bob, "lobby", &id).2 == data);

    // Refusals, each with its reason. They come before the body is read, so these requests
    // carry none: a client still sending one may see the connection closed instead (HTTP
    // has `Expect: 100-continue` for that).
    let (status, err) = upload(&alice, "lobby", "../escape.sh", b"");
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"].as_str().unwrap().contains("file name"),
        "{err}"
    );
    let (status, err) = upload(&alice, "nowhere", "a.txt", b"");
    assert_eq!(status, 404, "{err}");
    let (status, _, body) = download(&bob, "lobby", "00000000deadbeef");
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = download(&bob, "nowhere", &id);
    assert_eq!(status, 404);
    // Without the token nothing goes up.
    let (base, _) = alice.api();
    let r = agent
        .post(format!("{base}/upload"))
        .query("room", "lobby")
        .query("name", "sneaky.txt")
        .send_empty()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        alice.cli(&["files", "lobby"]).as_array().unwrap().len(),
        1,
        "only the one good upload was shared"
    );

    // A download ticket (what the web page uses so the browser saves straight to disk): asked
    // for with the token, then redeemed once without it.
    let ticket = |n: &NodeProc, auth: Option<&str>, id: &str| {
        let (base, token) = n.api();
        let mut req = agent.post(format!("{base}/download-ticket"));
        if let Some(a) = auth.or(Some(&token)).filter(|a| !a.is_empty()) {
            req = req.header("Authorization", a);
        }
        let mut r = req
            .send_json(serde_json::json!({ "room": "lobby", "id": id }))
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        (status, body)
    };
    let (status, t) = ticket(&bob, None, &id[..12]);
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["name"], "minutes (final).odt");
    assert_eq!(t["size"], data.len() as u64);
    let url = t["url"].as_str().unwrap();
    assert!(
        url.starts_with("/download/") && url.len() == "/download/".len() + 64,
        "{url}"
    );
    let root = bob.api().0.trim_end_matches("/v1").to_string();
    let redeem = |url: &str| file_response(agent.get(format!("{root}{url}")).call().unwrap());
    let (status, disposition, body) = redeem(url);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(body == data, "the ticketed download differs");
    assert_eq!(
        disposition.as_deref(),
        Some("attachment; filename*=UTF-8''minutes%20%28final%29.odt")
    );
    let (status, _, body) = redeem(url);
    assert_eq!(status, 404, "a ticket works once");
    assert!(String::from_utf8_lossy(&body).contains("download ticket"));
    let (status, _, _) = redeem(&format!("/download/{}", "0".repeat(64)));
    assert_eq!(status, 404);
    assert_eq!(
        ticket(&bob, Some(""), &id).0,
        401,
        "no ticket without the token"
    );
    assert_eq!(ticket(&bob, None, "00000000deadbeef").0, 404);

    // A file is not forgotten under a download: larger than what the sockets buffer, the
    // stream is still reading chunks while the client waits.
    let big = bytes(32 << 20, 12);
    let (status, sent) = upload(&alice, "lobby", "big.bin", &big);
    assert_eq!(status, 200, "{sent}");
    let big_id = sent["message"]["file"]["id"].as_str().unwrap().to_string();
    let (base, auth) = alice.api();
    let streaming = agent
        .get(format!("{base}/download"))
        .query("room", "lobby")
        .query("id", &big_id)
        .header("Authorization", &auth)
        .call()
        .unwrap();
    let refused = alice.try_cli(&["forget", "lobby", &big_id]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("being downloaded"), "{err}");
    let (status, _, body) = file_response(streaming);
    assert_eq!(status, 200);
    assert!(body == big, "the download differs");
    // Once it has ended, the file can go.
    let mut gone = Value::Null;
    wait_until("alice forgets big.bin after the download", T, || {
        let out = alice.try_cli(&["forget", "lobby", &big_id]);
        out.status.success() && {
            gone = serde_json::from_slice(&out.stdout).unwrap();
            true
        }
    });
    assert!(gone["freed"].as_u64().unwrap() > big.len() as u64, "{gone}");

    // A ticket names the room it was issued in: once Bob has left it, it serves nothing.
    let (status, t) = ticket(&bob, None, &id);
    assert_eq!(status, 200, "{t}");
    bob.cli(&["leave", "lobby"]);
    let (status, _, body) = redeem(t["url"].as_str().unwrap());
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("room"));
}

/// When its author deletes a file's message, the file is withdrawn: members who hold it
/// (here Bob, who fetched it unasked) drop their copies, as the author does, and it is gone
/// from `files` and cannot be fetched; a file shared since is untouched.
#[test]
fn a_deleted_file_message_withdraws_the_file_from_every_member() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = lobby_args(&[]);
    let alice = NodeProc::start("alice", &dir.path().join("alice"), &args);
    args.extend(["--bootstrap".into(), alice.listen_addr("/tcp/")]);
    args.extend(["--auto-fetch", "1M"].map(String::from));
    let bob = NodeProc::start("bob", &dir.path().join("bob"), &args);
    wait_until("alice and bob meet in lobby", T, || {
        alice.room_peers("lobby") >= 1 && bob.room_peers("lobby") >= 1
    });
    let share = |name: &str, seed| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes(50_000, seed)).unwrap();
        alice.cli(&["share", "lobby", path.to_str().unwrap()])["message"].clone()
    };
    let gone = share("draft.bin", 1);
    share("final.bin", 2);
    for name in ["draft.bin", "final.bin"] {
        file_in_history(&bob, "lobby", name);
        wait_until(&format!("bob holds {name}"), T, || bob.holds("lobby", name));
    }
    let held = |n: &NodeProc| n.status()["file_bytes"].as_u64().unwrap();
    let (alice_before, bob_before) = (held(&alice), held(&bob));
    assert!(bob_before > 100_000, "{bob_before}");

    let seq = gone["seq"].as_u64().unwrap().to_string();
    alice.cli(&["delete", "lobby", &seq]);
    for n in [&alice, &bob] {
        wait_until(&format!("{} drops the draft", n.user), T, || {
            n.file("lobby", "draft.bin").is_none() && held(n) < bob_before
        });
        assert!(n.holds("lobby", "final.bin"));
    }
    assert!(held(&alice) < alice_before && held(&alice) > 50_000);
    let id = gone["file"]["id"].as_str().unwrap();
    let res = bob.try_cli(&["fetch", "lobby", id, "-o", "/tmp/never-written.bin"]);
    assert!(!res.status.success());
    assert!(String::from_utf8_lossy(&res.stderr).contains("no file"));
    // The message says it was deleted, in its place.
    let h = bob.cli(&["history", "lobby"]);
    assert_eq!(h[0]["deleted"], true);
    assert!(h[0]["file"].is_null());
    // A file cannot be edited, only deleted.
    let res = alice.try_cli(&["edit", "lobby", "2", "new caption"]);
    assert!(String::from_utf8_lossy(&res.stderr).contains("is a file"));
}
