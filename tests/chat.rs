//! End-to-end: real `cryptchat run` processes on loopback, driven through the CLI.

mod common;

use std::time::Duration;

use common::{NodeProc, listen_for, password_for, three_nodes_chat, wait_until};

const T: Duration = Duration::from_secs(60);

#[test]
fn room_chat_over_tcp() {
    three_nodes_chat("tcp", T);
}

#[test]
fn room_chat_over_quic() {
    three_nodes_chat("quic", T);
}

fn tcp_pair(dir: &std::path::Path, room_args: &[&str]) -> (NodeProc, NodeProc) {
    let mut args = vec!["--listen".to_string(), listen_for("tcp")];
    args.extend(room_args.iter().map(|s| s.to_string()));
    let a = NodeProc::start("alice", &dir.join("alice"), &args);
    let mut b_args = args.clone();
    b_args.extend(["--bootstrap".into(), a.listen_addr("/tcp/")]);
    let b = NodeProc::start("bob", &dir.join("bob"), &b_args);
    (a, b)
}

/// A node of `user` listening on TCP, bootstrapping from `from`'s TCP address.
fn joining(dir: &std::path::Path, user: &str, from: &NodeProc) -> NodeProc {
    let args = [
        "--listen".into(),
        listen_for("tcp"),
        "--bootstrap".into(),
        from.listen_addr("/tcp/"),
    ];
    NodeProc::start(user, &dir.join(user), &args)
}

/// Alice and Bob in `lobby`, once each sees the other there.
fn lobby_pair(dir: &std::path::Path) -> (NodeProc, NodeProc) {
    let (a, b) = tcp_pair(dir, &["--join", "lobby"]);
    wait_until("alice and bob meet in lobby", T, || {
        a.room_peers("lobby") >= 1 && b.room_peers("lobby") >= 1
    });
    (a, b)
}

/// What `run` prints once the node is up.
const ALONE_HINT: &str = "this node waits for others to dial it";

#[test]
fn only_a_node_with_no_way_to_find_peers_says_it_waits_to_be_dialled() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = tcp_pair(dir.path(), &[]);
    wait_until("alice says she waits to be dialled", T, || {
        a.log().contains(ALONE_HINT)
    });
    // `run` prints its whole banner in one write.
    wait_until("bob says he is running", T, || {
        b.log().contains("is running")
    });
    assert!(
        !b.log().contains(ALONE_HINT),
        "bob has a bootstrap address:\n{}",
        b.log()
    );
}

#[test]
fn nodes_started_again_without_bootstrap_find_each_other_where_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = lobby_pair(dir.path());
    let a_addr = a.listen_addr("/tcp/");
    let b_addr = b.listen_addr("/tcp/");
    // Both stop: nobody is left who knows where they are, and neither is given an address.
    b.stop();
    a.stop();
    let only_listen = ["--listen".to_string(), listen_for("tcp")];
    a.restart_as(&only_listen);
    assert_eq!(
        a.listen_addr("/tcp/"),
        a_addr,
        "the OS-chosen port of the last start"
    );
    a.cli(&["send", "lobby", "written while bob was away"]);
    b.restart_as(&only_listen);
    assert_eq!(b.listen_addr("/tcp/"), b_addr);
    for n in [&a, &b] {
        let log = n.log_of_this_start();
        assert!(
            log.contains("dialling the peers this node knew before (1 kept)")
                && !log.contains(ALONE_HINT),
            "{log}"
        );
        assert_eq!(n.status()["known_peers"], 1);
    }
    wait_until("alice and bob meet again in lobby", T, || {
        a.room_peers("lobby") >= 1 && b.room_peers("lobby") >= 1
    });
    wait_until("bob reads what alice wrote while he was away", T, || {
        b.texts("lobby") == ["written while bob was away"]
    });
}

#[test]
fn wrong_room_password_sees_nothing_readable() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = tcp_pair(dir.path(), &[]);
    // Alice types the name and password with "é" as one character, Bob with "e" and a
    // combining accent (as macOS file names and some input methods do): one room.
    let (name, name_nfd) = ("caf\u{e9}", "cafe\u{301}");
    let right = dir.path().join("right.pw");
    let right_nfd = dir.path().join("right-nfd.pw");
    let wrong = dir.path().join("wrong.pw");
    std::fs::write(&right, "blue oc\u{e9}an lantern").unwrap();
    std::fs::write(&right_nfd, "blue oce\u{301}an lantern").unwrap();
    std::fs::write(&wrong, "red oc\u{e9}an lantern").unwrap();
    let c = joining(dir.path(), "carol", &a);
    a.cli(&[
        "join",
        name,
        "--room-password-file",
        right.to_str().unwrap(),
    ]);
    b.cli(&[
        "join",
        name_nfd,
        "--room-password-file",
        right_nfd.to_str().unwrap(),
    ]);
    c.cli(&[
        "join",
        name,
        "--room-password-file",
        wrong.to_str().unwrap(),
    ]);
    // The node names the room as it derives it: in its composed form.
    assert!(
        b.cli(&["rooms"])
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == name)
    );
    wait_until("alice and bob share the room", T, || {
        a.room_peers(name) >= 1 && b.room_peers(name) >= 1
    });
    a.cli(&["send", name_nfd, "the code is 4711"]);
    wait_until("bob reads it", T, || b.texts(name) == ["the code is 4711"]);
    // Carol is connected to both, but her password gives another room: nothing arrives.
    std::thread::sleep(Duration::from_secs(2));
    assert!(c.texts(name).is_empty());
    assert_eq!(c.room_peers(name), 0);
    assert_eq!(c.status()["counters"]["accepted"], 0);
}

#[test]
fn direct_message_reaches_its_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = tcp_pair(dir.path(), &[]);
    let a_code = a.status()["contact_code"].as_str().unwrap().to_string();
    let b_code = b.status()["contact_code"].as_str().unwrap().to_string();
    a.cli(&["contact", "add", "bob", &b_code]);
    b.cli(&["contact", "add", "alice", &a_code]);
    wait_until("direct room connected", T, || a.room_peers("@bob") >= 1);
    a.cli(&["dm", "bob", "just between us"]);
    wait_until("bob reads the DM", T, || {
        b.texts("@alice") == ["just between us"]
    });
    // A direct room is named after its contact, whatever case it is typed in.
    let h = b.cli(&["history", "@Alice"]);
    assert_eq!(h[0]["contact"], "alice");
    // A direct room's members: Bob himself first, then Alice by his name for her.
    let members = b.cli(&["members", "@alice"]);
    let members: Vec<(&str, Option<&str>, u64, bool)> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let name = m["name"].as_str().unwrap();
            (
                name,
                m["contact"].as_str(),
                m["messages"].as_u64().unwrap(),
                m["me"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        members,
        [("bob", None, 0, true), ("alice", Some("alice"), 1, false)]
    );
    let out = b.try_cli(&["members", "nowhere"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nowhere"));
    // A bad contact code is refused with a clear error.
    let out = a.try_cli(&["contact", "add", "mallory", "cc1:garbage"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("contact code"));

    // Alice removes Bob: the contact and the direct room go; adding him again brings the
    // room back with its history.
    let removed = a.cli(&["contact", "remove", "bob"]);
    assert_eq!(removed["room"], "@bob");
    assert!(a.cli(&["contact", "list"]).as_array().unwrap().is_empty());
    let rooms = a.cli(&["rooms"]);
    assert!(
        !rooms
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "@bob")
    );
    let out = a.try_cli(&["dm", "bob", "still there?"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown contact 'bob'"));
    let out = a.try_cli(&["contact", "remove", "bob"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown contact 'bob'"));
    let (status, _) = a.post("/contacts/remove", &serde_json::json!({"name": "bob"}));
    assert_eq!(status, 404);
    a.cli(&["contact", "add", "bob", &b_code]);
    assert_eq!(a.texts("@bob"), ["just between us"]);
}

/// A relay that stays up and is in none of their rooms (any DHT node would do), and Alice
/// and Bob, contacts, once Bob has read Alice's first direct message.
fn contacts_over_relay(dir: &std::path::Path) -> (NodeProc, NodeProc, NodeProc) {
    let relay = NodeProc::start(
        "relay",
        &dir.join("relay"),
        &["--listen".into(), listen_for("tcp")],
    );
    let (a, b) = (joining(dir, "alice", &relay), joining(dir, "bob", &relay));
    let code = |n: &NodeProc| n.status()["contact_code"].as_str().unwrap().to_string();
    a.cli(&["contact", "add", "bob", &code(&b)]);
    b.cli(&["contact", "add", "alice", &code(&a)]);
    wait_until("direct room connected", T, || a.room_peers("@bob") >= 1);
    a.cli(&["dm", "bob", "are you there?"]);
    wait_until("bob reads the DM", T, || {
        b.texts("@alice") == ["are you there?"]
    });
    (relay, a, b)
}

/// Mailboxes the node logged putting, over all its runs.
fn mailbox_puts(n: &NodeProc) -> usize {
    n.log().matches("mailbox put").count()
}

#[test]
fn a_direct_message_sent_just_before_its_author_stops_reaches_its_reader_later() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, mut a, mut b) = contacts_over_relay(dir.path());

    // Bob closes his laptop; Alice writes and closes hers right away. They are never
    // online together again.
    b.stop();
    a.cli(&["dm", "bob", "the keys are under the mat"]);
    a.stop();
    assert_eq!(
        mailbox_puts(&a),
        1,
        "alice's node put one mailbox as it stopped"
    );
    b.restart();
    wait_until("bob reads what alice wrote after he left", T, || {
        b.texts("@alice") == ["are you there?", "the keys are under the mat"]
    });
    assert_eq!(b.status()["mailboxes"]["taken"], 1);
    assert_eq!(relay.status()["dht"]["other_values"], 1);

    // Without mailboxes, the same leaves Bob waiting for Alice.
    b.stop();
    a.restart_with(&["--no-mailbox".into()]);
    wait_until("alice is back in the network", T, || {
        a.status()["connected_peers"].as_u64() >= Some(1)
    });
    a.cli(&["dm", "bob", "unseen until we meet"]);
    a.stop();
    assert_eq!(mailbox_puts(&a), 1);
    b.restart();
    wait_until("bob reads alice's mailbox again", T, || {
        b.status()["mailboxes"]["found"].as_u64() >= Some(1)
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(b.texts("@alice").len(), 2);
}

#[test]
fn a_direct_message_whose_author_was_killed_goes_in_a_mailbox_once_the_author_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, mut a, mut b) = contacts_over_relay(dir.path());

    // Bob goes; Alice's node dies right after she writes (no shutdown code runs).
    b.stop();
    a.cli(&["dm", "bob", "written just before a crash"]);
    a.kill();
    assert_eq!(mailbox_puts(&a), 0);
    // Back, her node finds Bob still lacks it: her next stop (or 30 s) puts a mailbox,
    // with nothing new written.
    a.restart();
    wait_until("alice's node is back in the DHT", T, || {
        a.status()["mailboxes"]["read"].as_u64() >= Some(1)
    });
    a.stop();
    assert_eq!(mailbox_puts(&a), 1, "alice's node put one mailbox");
    b.restart();
    wait_until("bob reads what alice wrote before her node died", T, || {
        b.texts("@alice") == ["are you there?", "written just before a crash"]
    });
    assert_eq!(b.status()["mailboxes"]["taken"], 1);
}

/// `cryptchat stop` stops a headless node as a signal would: what a contact lacks goes in
/// a mailbox first, the process exits cleanly, and a client watching learns it.
#[test]
fn stop_from_the_cli_puts_the_mailbox_and_ends_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, mut a, mut b) = contacts_over_relay(dir.path());
    b.stop();
    a.cli(&["dm", "bob", "off to bed"]);
    let mut watcher = a
        .client(&["watch"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It says so once it is connected.
    let mut said = std::io::BufReader::new(watcher.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut said, &mut line).unwrap();
    assert_eq!(line, "watching every room (Ctrl-C stops)\n");
    let stopped = a.cli(&["stop"]);
    assert_eq!(stopped["username"], "alice");
    a.wait_stopped();
    assert_eq!(
        mailbox_puts(&a),
        1,
        "alice's node put one mailbox as it stopped"
    );
    assert!(watcher.wait().unwrap().success());
    line.clear();
    std::io::BufRead::read_line(&mut said, &mut line).unwrap();
    assert_eq!(line, "the node stopped\n");
    // Nothing left to stop: said plainly.
    let again = a.try_cli(&["stop"]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("no cryptchat node is running"), "{err}");

    b.restart();
    wait_until("bob reads what alice wrote before she stopped", T, || {
        b.texts("@alice") == ["are you there?", "off to bed"]
    });
}

/// What a node shared is kept on disk: a small file shared just before the node died goes
/// in the DHT with the mailbox once the node is back, and a file put there is not put
/// again at the next restart.
#[test]
fn a_small_file_shared_just_before_its_authors_node_died_reaches_its_reader_later() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, mut a, mut b) = contacts_over_relay(dir.path());
    let file_puts = |n: &NodeProc| n.log().matches("file put in the DHT").count();

    // Bob goes; Alice sends him a photo (two chunks) and her node dies right after.
    b.stop();
    let photo = common::bytes(300_000, 11);
    let src = dir.path().join("photo.jpg");
    std::fs::write(&src, &photo).unwrap();
    let sent = a.cli(&["share", "@bob", src.to_str().unwrap()]);
    let id = sent["message"]["file"]["id"].as_str().unwrap().to_string();
    a.kill();
    assert_eq!((mailbox_puts(&a), file_puts(&a)), (0, 0));
    // Back, her node finds Bob still lacks the message, and puts the photo with it.
    a.restart();
    wait_until("alice's node is back in the DHT", T, || {
        a.status()["mailboxes"]["read"].as_u64() >= Some(1)
    });
    a.stop();
    assert_eq!((mailbox_puts(&a), file_puts(&a)), (1, 1));

    // Alice's node never runs while Bob's does: he gets the photo from the DHT.
    b.restart();
    wait_until("bob sees the photo's message", T, || {
        b.file("@alice", "photo.jpg").is_some()
    });
    let out = dir.path().join("got.jpg");
    let got = b.cli(&["fetch", "@alice", &id, "-o", out.to_str().unwrap()]);
    assert_eq!(
        (
            got["chunks_fetched"].as_u64(),
            got["chunks_from_dht"].as_u64()
        ),
        (Some(3), Some(3))
    );
    assert_eq!(std::fs::read(&out).unwrap(), photo);
    b.stop();

    // Nobody fetched it from Alice, and her node has not heard from Bob's since, but it
    // all went in the DHT a moment ago: her next stop puts neither the file nor the
    // mailbox again.
    a.restart();
    wait_until("alice's node is back in the DHT", T, || {
        a.status()["mailboxes"]["read"].as_u64() >= Some(1)
    });
    a.stop();
    assert_eq!((mailbox_puts(&a), file_puts(&a)), (1, 1));
}

#[test]
fn history_reads_back_page_by_page_and_searches_through_the_cli_and_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = lobby_pair(dir.path());
    // Both write, so the display order interleaves two authors' chains.
    for i in 1..=12 {
        let (node, text) = if i % 3 == 0 {
            (&b, "bob")
        } else {
            (&a, "alice")
        };
        node.cli(&["send", "lobby", &format!("{text} {i}")]);
    }
    wait_until("bob holds all 12", T, || b.texts("lobby").len() == 12);
    let texts = |v: &serde_json::Value| -> Vec<String> {
        let v = v.as_array().unwrap();
        v.iter()
            .map(|m| m["text"].as_str().unwrap().to_string())
            .collect()
    };
    let all = b.cli(&["history", "lobby", "--limit", "100"]);
    let full = texts(&all);
    assert_eq!(full.len(), 12);
    let all = all.as_array().unwrap();

    // The CLI pages back from the newest with --skip.
    let page = |skip: &str| texts(&b.cli(&["history", "lobby", "--limit", "5", "--skip", skip]));
    assert_eq!(page("0"), full[7..]);
    assert_eq!(page("5"), full[2..7]);
    assert_eq!(page("10"), full[..2]);
    assert!(page("12").is_empty());

    // The API pages back from a message shown, unmoved by messages written since.
    let oldest_shown = &all[7];
    let before = serde_json::json!({
        "lamport": oldest_shown["lamport"],
        "author_id": oldest_shown["author_id"],
        "seq": oldest_shown["seq"],
    });
    a.cli(&["send", "lobby", "alice 13"]);
    wait_until("bob holds the 13th", T, || b.texts("lobby").len() == 13);
    let ask = serde_json::json!({"room": "lobby", "limit": 5, "before": before});
    let (status, got) = b.post("/history", &ask);
    assert_eq!(status, 200, "{got}");
    assert_eq!(texts(&got), full[2..7]);
    let ask = serde_json::json!({"room": "lobby", "limit": 5, "before": before, "skip": 4});
    assert_eq!(texts(&b.post("/history", &ask).1), full[..3]);

    // A position that names no user is refused, clearly.
    let bad = serde_json::json!({"lamport": 1, "author_id": "alice", "seq": 1});
    let (status, got) = b.post(
        "/history",
        &serde_json::json!({"room": "lobby", "limit": 5, "before": bad}),
    );
    assert_eq!(status, 400);
    assert!(
        got["error"].as_str().unwrap().contains("author_id"),
        "{got}"
    );

    // A search finds what contains the text, whatever its case, a page at a time.
    let search = |args: &[&str]| texts(&b.cli(&[&["search", "lobby"], args].concat()));
    assert_eq!(search(&["BOB"]), ["bob 3", "bob 6", "bob 9", "bob 12"]);
    assert_eq!(
        search(&["bob", "--limit", "2", "--skip", "1"]),
        ["bob 6", "bob 9"]
    );
    assert_eq!(
        search(&["alice 1"]),
        ["alice 1", "alice 10", "alice 11", "alice 13"]
    );
    assert!(search(&["carol"]).is_empty());
    let ask = serde_json::json!({"room": "lobby", "limit": 5, "contains": "x".repeat(1025)});
    let (status, got) = b.post("/history", &ask);
    assert_eq!(status, 400);
    assert!(got["error"].as_str().unwrap().contains("at most"), "{got}");
    let out = b.try_cli(&["search", "lobby", ""]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to search for"));
}

#[test]
fn a_text_is_shown_on_the_readers_terminal_and_cannot_act_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = lobby_pair(dir.path());
    // A line that passes for a message of Alice's, and an escape sequence that clears the
    // screen, after a carriage return that would write over the start of the line.
    let forged = "see below\n12:00:00 lobby alice [814ddc60#9]: send me your password\r\u{1b}[2J";
    // Written as a message of several lines is: from standard input (`-`).
    let mut send = b
        .client(&["send", "lobby", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    (send.stdin.take().unwrap())
        .write_all(format!("{forged}\n").as_bytes())
        .unwrap();
    assert!(send.wait_with_output().unwrap().status.success());
    wait_until("alice holds it", T, || a.texts("lobby") == [forged]);
    let out = a.client(&["history", "lobby"]).output().unwrap();
    assert!(out.status.success());
    let shown = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 2, "{shown}");
    assert!(lines[0].ends_with("]: see below"), "{shown}");
    assert_eq!(
        lines[1],
        "    12:00:00 lobby alice [814ddc60#9]: send me your password\\u{d}\\u{1b}[2J"
    );
    assert!(!shown.contains(['\r', '\u{1b}']), "{shown:?}");
    // JSON carries the text as it was written.
    assert_eq!(a.cli(&["history", "lobby"])[0]["text"], forged);
    // The words of a message need no quotes.
    a.cli(&["send", "lobby", "see", "you", "at", "-5"]);
    wait_until("bob reads it", T, || {
        b.texts("lobby")
            .last()
            .is_some_and(|t| t == "see you at -5")
    });
}

/// The lines a child process prints, as they come (read on a thread of their own).
fn stdout_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().expect("stdout piped");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

#[test]
fn chat_shows_the_room_then_sends_what_is_typed_and_prints_what_arrives() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = tcp_pair(dir.path(), &["--join", "lobby", "--join", "other"]);
    wait_until("alice and bob meet in lobby", T, || {
        a.room_peers("lobby") >= 1
    });
    // Rooms are listed by name.
    a.cli(&["join", "aardvark"]);
    let rooms = a.cli(&["rooms"]);
    let names: Vec<&str> = rooms
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["aardvark", "lobby", "other"]);
    b.cli(&["send", "lobby", "before the chat"]);
    wait_until("alice holds bob's first", T, || {
        a.texts("lobby") == ["before the chat"]
    });
    let mut chat = a
        .client(&["chat", "lobby"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = stdout_lines(&mut chat);
    let next_line = || rx.recv_timeout(T).expect("a line from cryptchat chat");
    // The room as it was: Bob's message, by Bob (not a contact yet: his name is his own
    // word, marked `~`).
    let first = next_line();
    assert!(
        first.contains("lobby ~bob [") && first.ends_with(": before the chat"),
        "{first}"
    );
    // A line typed is sent; it comes back as the room shows it.
    let mut stdin = chat.stdin.take().unwrap();
    writeln!(stdin, "hello from the terminal").unwrap();
    wait_until("bob reads the typed line", T, || {
        b.texts("lobby")
            .contains(&"hello from the terminal".to_string())
    });
    let echoed = next_line();
    assert!(echoed.contains("hello from the terminal"), "{echoed}");
    // What others write arrives; other rooms stay out.
    b.cli(&["send", "other", "not for this chat"]);
    b.cli(&["send", "lobby", "a reply"]);
    let reply = next_line();
    assert!(
        reply.contains("lobby ~bob [") && reply.ends_with(": a reply"),
        "{reply}"
    );
    // Commands: reply to Bob's message by the AUTHOR#N shown beside it, edit Alice's own,
    // and `//` for a message that starts with a slash.
    let at = reply.split('[').nth(1).unwrap().split(']').next().unwrap();
    writeln!(stdin, "/reply {at} and a reply to that").unwrap();
    let line = next_line();
    assert!(
        line.contains(&format!(
            ": (reply to {at}: \"a reply\") and a reply to that  ["
        )),
        "{line}"
    );
    writeln!(stdin, "/edit 1 hello, edited from the terminal").unwrap();
    let line = next_line();
    assert!(
        line.contains(": (edited message #1) hello, edited from the terminal  ["),
        "{line}"
    );
    writeln!(stdin, "/unknown command").unwrap();
    writeln!(stdin, "//slash at the start").unwrap();
    let line = next_line();
    assert!(line.contains(": /slash at the start  ["), "{line}");
    wait_until("bob has all of it", T, || {
        let texts = b.texts("lobby");
        texts.contains(&"hello, edited from the terminal".to_string())
            && texts.contains(&"and a reply to that".to_string())
            && texts.contains(&"/slash at the start".to_string())
            && !texts.iter().any(|t| t.contains("unknown"))
    });
    // /invite writes an invitation to a contact; /ignore stops showing an author.
    let code = |n: &NodeProc| n.status()["contact_code"].as_str().unwrap().to_string();
    a.cli(&["contact", "add", "bob", &code(&b)]);
    b.cli(&["contact", "add", "alice", &code(&a)]);
    writeln!(stdin, "/invite bob").unwrap();
    wait_until("bob's invitation to the lobby", T, || {
        b.texts("@alice") == ["invites you to the room 'lobby'"]
    });
    assert_eq!(a.texts("@bob"), ["invited bob to the room 'lobby'"]);
    let bob = b.status()["user_id"].as_str().unwrap().to_string();
    writeln!(stdin, "/ignore {}", &bob[..8]).unwrap();
    wait_until("bob ignored", T, || {
        a.cli(&["ignored"]).as_array().is_some_and(|v| v.len() == 1)
    });
    b.cli(&["send", "lobby", "you will not see this"]);
    wait_until("alice's node holds it", T, || {
        a.cli(&["members", "lobby"])
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["ignored"] == true && m["messages"] == 3)
    });
    writeln!(stdin, "still here").unwrap();
    let line = next_line();
    assert!(line.contains(": still here  ["), "{line}");
    a.cli(&["ignore", "lobby", &bob[..8], "--undo"]);
    // Bob, a contact now, goes by Alice's name for him, with no `~`.
    b.cli(&["send", "lobby", "as a contact"]);
    let line = next_line();
    assert!(
        line.contains("lobby bob [") && line.ends_with(": as a contact"),
        "{line}"
    );
    // The end of input ends the chat.
    drop(stdin);
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = chat.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < T,
            "cryptchat chat did not end with its input"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    // An unknown room is refused before anything is shown.
    let out = a.try_cli(&["chat", "nowhere"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nowhere"));

    // `watch ROOM` follows that room only.
    let mut watch = a
        .client(&["watch", "other"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = stdout_lines(&mut watch);
    // Once one message of `other` shows, the watch is following.
    for i in 0.. {
        assert!(i < 30, "watch other never showed a message of other");
        b.cli(&["send", "other", &format!("ping {i}")]);
        if rx.recv_timeout(Duration::from_secs(2)).is_ok() {
            break;
        }
    }
    while rx.recv_timeout(Duration::from_millis(500)).is_ok() {}
    b.cli(&["send", "lobby", "not for the watch"]);
    b.cli(&["send", "other", "for the watch"]);
    let line = rx.recv_timeout(T).expect("a line from cryptchat watch");
    assert!(line.ends_with(": for the watch"), "{line}");
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn restart_keeps_history_and_wrong_password_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, mut b) = lobby_pair(dir.path());
    a.cli(&["send", "lobby", "one"]);
    b.cli(&["send", "lobby", "two"]);
    wait_until("both messages at bob", T, || b.texts("lobby").len() == 2);
    // SIGKILL: no graceful shutdown.
    b.restart();
    assert_eq!(b.texts("lobby").len(), 2);
    let out = b.run_with_password(&password_for("not bob"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("belongs to another identity"), "{err}");
    b.restart();
    assert_eq!(b.texts("lobby").len(), 2);
    b.cli(&["send", "lobby", "three"]);
    wait_until("alice gets the post-restart message", T, || {
        a.texts("lobby").len() == 3
    });
}

#[test]
fn weak_password_is_refused() {
    let out = std::process::Command::new(common::BIN)
        .args(["id", "--username", "alice"])
        .env("CRYPTCHAT_PASSWORD", "password1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("too weak"));
}

#[cfg(unix)]
#[test]
fn a_client_whose_output_is_cut_short_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    // As `cryptchat id --username alice | head -0`: the reader is gone before it prints.
    let mut child = std::process::Command::new(common::BIN)
        .args(["id", "--username", "alice"])
        .env("CRYPTCHAT_PASSWORD", password_for("alice"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.signal(), Some(13), "ended by SIGPIPE: {err}");
}

#[test]
fn client_commands_explain_a_missing_node() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["send", "lobby", "hi"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no cryptchat node is running"), "{err}");
    // `id` asks the running node, or derives the identity given a username.
    let out = std::process::Command::new(common::BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .arg("id")
        .env_remove("CRYPTCHAT_USERNAME")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no cryptchat node is running") && err.contains("--username"),
        "{err}"
    );
}

#[test]
fn a_second_node_on_a_data_dir_is_refused_before_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let a = NodeProc::start("alice", &dir.path().join("a"), &[]);
    let run = |password: Option<String>| {
        let mut cmd = std::process::Command::new(common::BIN);
        cmd.arg("--data-dir")
            .arg(&a.data_dir)
            .args(["run", "--username", "alice"])
            .env_remove("CRYPTCHAT_PASSWORD")
            .stdin(std::process::Stdio::null());
        if let Some(p) = password {
            cmd.env("CRYPTCHAT_PASSWORD", p);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // No password given, none asked: the running node is named at once.
    let err = run(None);
    assert!(
        err.contains("a node for alice") && err.contains("already running"),
        "{err}"
    );
    assert!(!err.contains("password"), "{err}");
    // A node whose API cannot be found still holds its journal.
    std::fs::remove_file(a.data_dir.join("api.json")).unwrap();
    let err = run(Some(password_for("alice")));
    assert!(err.contains("already in use"), "{err}");
}

#[test]
fn id_tells_the_running_nodes_identity_as_derived_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let a = NodeProc::start("alice", &dir.path().join("a"), &[]);
    let running = a.cli(&["id"]);
    let derive = |data_dir: &std::path::Path| -> serde_json::Value {
        let out = std::process::Command::new(common::BIN)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--json", "id", "--username", "alice"])
            .env("CRYPTCHAT_PASSWORD", password_for("alice"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(running["username"], "alice");
    assert!(
        running["contact_code"]
            .as_str()
            .unwrap()
            .starts_with("cc1:")
    );
    assert!(running["peer_id"].as_str().unwrap().starts_with("12D3KooW"));
    // On the node's data dir, all of it: the peer id is that data dir's.
    assert_eq!(derive(&a.data_dir), running);
    // Anywhere else the same identity, but no peer id: a data dir makes its own at its
    // first run, so one identity on two machines is two peers.
    let elsewhere = derive(&dir.path().join("elsewhere"));
    assert_eq!(elsewhere["user_id"], running["user_id"]);
    assert_eq!(elsewhere["contact_code"], running["contact_code"]);
    assert!(elsewhere["peer_id"].is_null(), "{elsewhere}");
    assert!(!dir.path().join("elsewhere").exists(), "id made nothing");
}

#[test]
fn the_node_counts_what_is_unread_until_the_room_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = lobby_pair(dir.path());
    let unread = |n: &NodeProc| {
        let rooms = n.cli(&["rooms"]);
        let lobby = rooms
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "lobby");
        lobby.unwrap()["unread"].as_u64().unwrap()
    };
    a.cli(&["send", "lobby", "mine"]);
    b.cli(&["send", "lobby", "one"]);
    b.cli(&["send", "lobby", "two"]);
    wait_until("both at alice", T, || unread(&a) == 2);
    // Reading the room's latest (history, chat, the web page) reads it, for every client.
    assert_eq!(a.texts("lobby"), ["mine", "one", "two"]);
    assert_eq!(unread(&a), 0);
    b.cli(&["send", "lobby", "three"]);
    wait_until("the next one unread", T, || unread(&a) == 1);
    // An earlier page is not the room read.
    a.cli(&["history", "lobby", "--skip", "1"]);
    assert_eq!(unread(&a), 1);
    let human = a.client(&["rooms"]).output().unwrap();
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(human.contains("4 messages, 1 unread"), "{human}");
    // Bob's own messages are not unread to him.
    wait_until("alice's one message unread at bob", T, || unread(&b) == 1);
    b.cli(&["send", "lobby", "four"]);
    assert_eq!(unread(&b), 1);
}

#[test]
fn dial_says_whom_it_reached_or_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let listen = ["--listen".to_string(), listen_for("tcp")];
    let a = NodeProc::start("alice", &dir.path().join("a"), &listen);
    let b = NodeProc::start("bob", &dir.path().join("b"), &listen);
    let bob = b.status()["peer_id"].as_str().unwrap().to_string();
    // An address without a peer id: the answer names who is there.
    let at = b.listen_addr("/tcp/");
    let plain = at.split("/p2p/").next().unwrap();
    assert_eq!(a.cli(&["dial", plain])["peer_id"], bob.as_str());
    // Nobody listening: the reason, not "dialling".
    let out = a.try_cli(&["dial", "/ip4/127.0.0.1/tcp/1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("could not connect to /ip4/127.0.0.1/tcp/1") && err.contains("refused"),
        "{err}"
    );
    // Someone else at the address than the peer id names.
    let alice = a.status()["peer_id"].as_str().unwrap().to_string();
    let out = a.try_cli(&["dial", &format!("{plain}/p2p/{alice}")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&bob), "names whom it found: {err}");
}

#[test]
fn unknown_room_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let a = NodeProc::start(
        "alice",
        &dir.path().join("a"),
        &["--listen".into(), listen_for("tcp")],
    );
    let out = a.try_cli(&["send", "nowhere", "hi"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown room 'nowhere'"));
}

/// A node started while its bootstrap node is down keeps trying: once the bootstrap node is
/// back (same identity, same address), the two meet without a restart of the first.
#[test]
fn a_node_reaches_a_bootstrap_node_that_starts_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let args: Vec<String> = [
        "--listen",
        &format!("/ip4/127.0.0.1/tcp/{port}"),
        "--join",
        "lobby",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut boot = NodeProc::start("boot", &dir.path().join("boot"), &args);
    let boot_addr = boot.listen_addr("/tcp/");
    boot.kill();

    let bob_args: Vec<String> = [
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--join",
        "lobby",
        "--bootstrap",
        &boot_addr,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let bob = NodeProc::start("bob", &dir.path().join("bob"), &bob_args);
    // Bob's first dial has failed by now.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(bob.room_peers("lobby"), 0);
    boot.restart();
    wait_until("bob reaches the late bootstrap node", T, || {
        bob.room_peers("lobby") >= 1
    });
    bob.cli(&["send", "lobby", "made it"]);
    wait_until("boot has bob's message", T, || {
        boot.texts("lobby") == vec!["made it".to_string()]
    });
}

/// Alice edits and deletes her messages: Bob, online, sees each change; Carol, who joins
/// later, gets the history from them with the changes applied. Only one's own messages can
/// be changed, and a deleted one no more.
#[test]
fn edits_and_deletions_reach_members_and_members_who_come_later() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = lobby_pair(dir.path());
    let sent = a.cli(&["send", "lobby", "helo all"]);
    assert_eq!(sent["message"]["seq"], 1);
    a.cli(&["send", "lobby", "the door code is 4711"]);
    b.cli(&["send", "lobby", "hi alice"]);
    wait_until("bob reads alice's two", T, || b.texts("lobby").len() == 3);

    let edit = a.cli(&["edit", "lobby", "1", "hello all"]);
    assert_eq!(edit["message"]["revises"], 1);
    a.cli(&["delete", "lobby", "2"]);
    let changed = |n: &NodeProc| {
        let h = n.cli(&["history", "lobby"]);
        let h = h.as_array().unwrap();
        h.len() == 3
            && h[0]["text"] == "hello all"
            && h[0]["edited_ms"].is_u64()
            && h[1]["deleted"] == true
            && h[1]["text"].is_null()
            && h[2]["text"] == "hi alice"
    };
    wait_until("bob sees the edit and the deletion", T, || changed(&b));
    assert!(changed(&a));
    // As a person reads it: the edit marked, the deletion said, Alice's own numbered.
    let human = |n: &NodeProc| {
        let out = n.client(&["history", "lobby"]).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let shown = human(&b);
    assert!(shown.contains("hello all (edited)"), "{shown}");
    assert!(shown.contains("(message deleted)"), "{shown}");
    assert!(!shown.contains("4711"), "{shown}");
    assert!(
        human(&a).contains("#1]: hello all (edited)"),
        "{}",
        human(&a)
    );
    // A search finds what a message says now.
    let found = b.cli(&["search", "lobby", "helo"]);
    assert_eq!(found.as_array().unwrap().len(), 0);
    let found = b.cli(&["search", "lobby", "4711"]);
    assert_eq!(found.as_array().unwrap().len(), 0);

    // Carol comes later and pulls the history: the same, with the changes applied.
    let c = NodeProc::start(
        "carol",
        &dir.path().join("carol"),
        &[
            "--listen".into(),
            listen_for("tcp"),
            "--join".into(),
            "lobby".into(),
            "--bootstrap".into(),
            a.listen_addr("/tcp/"),
        ],
    );
    wait_until("carol catches up with the changes applied", T, || {
        changed(&c)
    });

    // Refused, with a reason: others' messages, deleted ones, unknown ones.
    let refused = |n: &NodeProc, args: &[&str]| {
        let out = n.try_cli(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    // (Bob's only message is his #1; Alice's #2 is not his.)
    let why = refused(&b, &["edit", "lobby", "2", "mine now"]);
    assert!(why.contains("no message #2 of yours"), "{why}");
    let why = refused(&a, &["edit", "lobby", "2", "back"]);
    assert!(why.contains("deleted"), "{why}");
    let why = refused(&a, &["delete", "lobby", "99"]);
    assert!(why.contains("no message #99"), "{why}");
    let (status, _) = a.post(
        "/edit",
        &serde_json::json!({"room": "lobby", "seq": 99, "text": "x"}),
    );
    assert_eq!(status, 404);
    let (status, _) = a.post("/delete", &serde_json::json!({"room": "nowhere", "seq": 1}));
    assert_eq!(status, 404);
    let (status, _) = a.post(
        "/edit",
        &serde_json::json!({"room": "lobby", "seq": 1, "text": " "}),
    );
    assert_eq!(status, 400);
}

/// Bob replies to Alice's message by the AUTHOR#N that history shows beside it: Alice's
/// node shows the reply with a quote of what it answers. A reply to what is not there, or
/// was deleted, is refused with a reason.
#[test]
fn a_reply_names_the_message_it_answers_and_quotes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = lobby_pair(dir.path());
    a.cli(&["send", "lobby", "lunch at noon?"]);
    a.cli(&["send", "lobby", "or at one?"]);
    wait_until("bob reads both", T, || b.texts("lobby").len() == 2);
    // Bob reads the message's AUTHOR#N off his history, as a person would.
    let out = b.client(&["history", "lobby"]).output().unwrap();
    let shown = String::from_utf8(out.stdout).unwrap();
    let line = shown
        .lines()
        .find(|l| l.ends_with("lunch at noon?"))
        .unwrap();
    let at = line.split('[').nth(1).unwrap().split(']').next().unwrap();
    assert!(at.ends_with("#1"), "{line}");
    let sent = b.cli(&["reply", "lobby", at, "yes, noon"]);
    let alice_id = a.status()["user_id"].as_str().unwrap().to_string();
    let expected = serde_json::json!({"author_id": alice_id, "seq": 1, "quote": "lunch at noon?"});
    assert_eq!(sent["message"]["reply_to"], expected);
    wait_until("alice gets the reply", T, || {
        let h = a.cli(&["history", "lobby"]);
        h.as_array().unwrap().last().unwrap()["reply_to"] == expected
    });
    let out = a.client(&["history", "lobby"]).output().unwrap();
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(
        shown.contains(&format!("(reply to {at}: \"lunch at noon?\") yes, noon")),
        "{shown}"
    );

    a.cli(&["delete", "lobby", "2"]);
    let refused = |args: &[&str]| {
        let out = b.try_cli(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let deleted = format!("{}#2", &alice_id[..8]);
    wait_until("bob has the deletion", T, || {
        refused(&["reply", "lobby", &deleted, "too late"]).contains("was deleted")
    });
    assert!(refused(&["reply", "lobby", "deadbeef#1", "x"]).contains("no message deadbeef#1"));
    assert!(refused(&["reply", "lobby", "lunch", "x"]).contains("AUTHOR#N"));
    let (status, _) = b.post(
        "/send",
        &serde_json::json!({"room": "lobby", "text": "x", "reply_to": {"author": "deadbeef", "seq": 1}}),
    );
    assert_eq!(status, 404);
}

/// Bob and Alice react to Alice's message; Bob takes his back. Every node's history shows
/// the reactions that stand, on the message, and a bad reaction is refused.
#[test]
fn reactions_stand_on_the_message_until_taken_back() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = lobby_pair(dir.path());
    a.cli(&["send", "lobby", "release is out"]);
    wait_until("bob reads it", T, || b.texts("lobby").len() == 1);
    let alice = a.status()["user_id"].as_str().unwrap().to_string();
    let bob = b.status()["user_id"].as_str().unwrap().to_string();
    let at = format!("{}#1", &alice[..8]);
    let sent = b.cli(&["react", "lobby", &at, "🎉"]);
    assert_eq!(sent["message"]["react"]["emoji"], "🎉");
    b.cli(&["react", "lobby", &at, "👍"]);
    a.cli(&["react", "lobby", &at, "🎉"]);
    let reactions = |n: &NodeProc| n.cli(&["history", "lobby"])[0]["reactions"].clone();
    let both = serde_json::json!([
        {"emoji": "🎉", "by": [bob, alice]},
        {"emoji": "👍", "by": [bob]},
    ]);
    wait_until("alice's node shows both reactions", T, || {
        reactions(&a) == both
    });
    wait_until("bob's too", T, || reactions(&b) == both);
    // As a person reads it.
    let out = a.client(&["history", "lobby"]).output().unwrap();
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(shown.contains("release is out  [🎉 2, 👍 1]"), "{shown}");
    // Bob takes his 🎉 back.
    b.cli(&["react", "lobby", &at, "🎉", "--undo"]);
    // (Reactions come in the order the standing ones were given: Bob's 👍 before Alice's 🎉.)
    let after = serde_json::json!([
        {"emoji": "👍", "by": [bob]},
        {"emoji": "🎉", "by": [alice]},
    ]);
    wait_until("alice's node sees it taken back", T, || {
        reactions(&a) == after
    });
    assert_eq!(a.cli(&["history", "lobby"]).as_array().unwrap().len(), 1);
    let out = b.try_cli(&["react", "lobby", &at, "two words"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a reaction"));
    let (status, _) = b.post(
        "/react",
        &serde_json::json!({"room": "lobby", "author": &alice[..8], "seq": 9, "emoji": "👍"}),
    );
    assert_eq!(status, 404);
}

#[test]
fn a_group_invitation_reaches_a_member_offline_or_not_yet_a_contact() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = tcp_pair(dir.path(), &[]);
    let mut c = joining(dir.path(), "carol", &a);
    let code = |n: &NodeProc| n.status()["contact_code"].as_str().unwrap().to_string();
    a.cli(&["contact", "add", "bob", &code(&b)]);
    a.cli(&["contact", "add", "carol", &code(&c)]);
    c.cli(&["contact", "add", "alice", &code(&a)]);
    wait_until("alice's direct room with carol connected", T, || {
        a.room_peers("@carol") >= 1
    });
    // Carol is away when Alice creates the group, and Bob has not added Alice yet.
    c.kill();
    let group = a.cli(&["group", "team", "bob", "carol"]);
    assert_eq!(group["kind"], "group");
    let named = |n: &NodeProc, name: &str| {
        n.cli(&["rooms"])
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == name && r["id"] == group["id"])
    };
    b.cli(&["contact", "add", "alice", &code(&a)]);
    wait_until("bob in the group he was invited to", T, || {
        named(&b, "team")
    });
    let invitation = b.cli(&["history", "@alice"]);
    assert_eq!(
        invitation[0]["text"],
        "invites you to the group 'team' (alice, bob, carol)"
    );
    assert_eq!(invitation[0]["invite"]["name"], "team");
    wait_until("the group connected", T, || a.room_peers("team") >= 1);
    a.cli(&["send", "team", "welcome to the team"]);
    wait_until("bob reads the group", T, || {
        b.texts("team") == ["welcome to the team"]
    });

    // Back, Carol catches up with Alice: the invitation, then the group's history.
    c.restart();
    wait_until("carol in the group, with its history", T, || {
        named(&c, "team") && c.texts("team") == ["welcome to the team"]
    });
    c.cli(&["send", "team", "sorry I am late"]);
    wait_until("alice and bob read carol", T, || {
        a.texts("team").len() == 2 && b.texts("team").len() == 2
    });
    // Bob does not know Carol; the group names her by her username.
    let members = b.cli(&["members", "team"]);
    let mut names: Vec<&str> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["alice", "bob", "carol"]);

    // A group of someone who is not a contact cannot be made.
    let out = b.try_cli(&["group", "pals", "carol"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("carol"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_contact_added_to_a_group_joins_it_and_the_others_follow() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = tcp_pair(dir.path(), &[]);
    let c = joining(dir.path(), "carol", &a);
    let code = |n: &NodeProc| n.status()["contact_code"].as_str().unwrap().to_string();
    a.cli(&["contact", "add", "bob", &code(&b)]);
    a.cli(&["contact", "add", "carol", &code(&c)]);
    b.cli(&["contact", "add", "alice", &code(&a)]);
    c.cli(&["contact", "add", "alice", &code(&a)]);
    let team = a.cli(&["group", "team", "bob"]);
    let id_of = |n: &NodeProc, name: &str| {
        let rooms = n.cli(&["rooms"]);
        let room = rooms.as_array().unwrap().iter().find(|r| r["name"] == name);
        room.map(|r| r["id"].as_str().unwrap().to_string())
    };
    wait_until("bob in the group", T, || id_of(&b, "team").is_some());
    wait_until("the group connected", T, || a.room_peers("team") >= 1);
    b.cli(&["send", "team", "just us two"]);
    wait_until("alice reads bob", T, || a.texts("team") == ["just us two"]);

    // Alice adds Carol, whom Bob does not know.
    let out = a.client(&["invite", "team", "carol"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("invited carol"), "{said}");
    assert!(said.contains("team goes on in a new room"), "{said}");
    let next = id_of(&a, "team").unwrap();
    assert_ne!(next, team["id"].as_str().unwrap());
    wait_until("bob and carol in the new room", T, || {
        id_of(&b, "team").as_deref() == Some(next.as_str())
            && id_of(&c, "team").as_deref() == Some(next.as_str())
    });
    assert_eq!(
        id_of(&b, "team (earlier)").as_deref(),
        team["id"].as_str(),
        "the group keeps its history under another name"
    );
    assert_eq!(b.texts("team (earlier)")[0], "just us two");
    wait_until("the new room connected", T, || {
        c.room_peers("team") >= 1 && b.room_peers("team") >= 1
    });
    c.cli(&["send", "team", "hi, carol here"]);
    wait_until("all read carol", T, || {
        a.texts("team") == ["hi, carol here"] && b.texts("team") == ["hi, carol here"]
    });
}

#[test]
fn an_ignored_author_is_not_shown_nor_its_files_fetched_until_seen_again() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = lobby_pair(dir.path());
    let bob = b.status()["user_id"].as_str().unwrap().to_string();
    a.cli(&["send", "lobby", "hello"]);
    for text in ["buy now", "buy more"] {
        b.cli(&["send", "lobby", text]);
    }
    wait_until("alice reads bob", T, || a.texts("lobby").len() == 3);

    let ignored = a.cli(&["ignore", "lobby", &bob[..8]]);
    assert_eq!(ignored["user_id"], bob.as_str());
    assert_eq!(a.texts("lobby"), ["hello"]);
    assert_eq!(a.cli(&["ignored"])[0]["user_id"], bob.as_str());
    let rooms = a.cli(&["rooms"]);
    assert_eq!(rooms[0]["messages"], 1, "{rooms}");
    let members = a.cli(&["members", "lobby"]);
    assert_eq!(members[1]["user_id"], bob.as_str());
    assert_eq!(members[1]["ignored"], true);
    // What he sends now is not shown, and his file is not fetched unasked.
    let path = dir.path().join("offer.txt");
    std::fs::write(&path, b"a limited offer").unwrap();
    b.cli(&["share", "lobby", path.to_str().unwrap()]);
    b.cli(&["send", "lobby", "last chance"]);
    a.cli(&["send", "lobby", "quiet here"]);
    wait_until("alice's node holds bob's four", T, || {
        a.cli(&["members", "lobby"])[1]["messages"] == 4
    });
    // A file message not ignored is fetched at once (tests/files.rs); give it time.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(a.status()["file_bytes"], 0, "bob's file fetched unasked");
    assert_eq!(a.texts("lobby"), ["hello", "quiet here"]);
    assert!(a.cli(&["files", "lobby"]).as_array().unwrap().is_empty());
    assert!(
        a.cli(&["search", "lobby", "buy"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    let human = a.client(&["members", "lobby"]).output().unwrap();
    let human = String::from_utf8_lossy(&human.stdout).to_string();
    let bob_line = human.lines().find(|l| l.contains("(ignored)")).unwrap();
    assert!(bob_line.contains("  ~bob "), "not a contact: {human}");

    // What cannot be ignored is said so.
    let me = a.status()["user_id"].as_str().unwrap().to_string();
    let (status, body) = a.post(
        "/ignore",
        &serde_json::json!({"room": "lobby", "author": &me[..8]}),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = a.post(
        "/ignore",
        &serde_json::json!({"room": "lobby", "author": "0123456789"}),
    );
    assert_eq!(status, 404, "{body}");
    assert!(body.to_string().contains("no author"), "{body}");
    // Nor is there anything to repair in a room where Alice's messages are held.
    let (status, body) = a.post("/repair", &serde_json::json!({"room": "lobby"}));
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("nothing to repair"), "{body}");
    let status = a.status();
    let lobby = status["rooms"].as_array().unwrap().iter();
    let lobby: Vec<_> = lobby.filter(|r| r["name"] == "lobby").collect();
    assert_eq!(lobby[0]["own_chain"], "held");

    // Seen again: everything he wrote.
    a.cli(&["ignore", "lobby", &bob[..8], "--undo"]);
    assert_eq!(a.texts("lobby").len(), 5);
    assert_eq!(a.cli(&["rooms"])[0]["messages"], 6);
    assert!(a.cli(&["ignored"]).as_array().unwrap().is_empty());
    assert_eq!(a.cli(&["files", "lobby"])[0]["file"]["name"], "offer.txt");
}

#[test]
fn a_contact_invited_to_a_password_room_joins_it_and_reads_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = tcp_pair(dir.path(), &[]);
    let code = |n: &NodeProc| n.status()["contact_code"].as_str().unwrap().to_string();
    a.cli(&["contact", "add", "bob", &code(&b)]);
    b.cli(&["contact", "add", "alice", &code(&a)]);
    let pw = dir.path().join("den.pw");
    std::fs::write(&pw, "green harbour kettle 12").unwrap();
    a.cli(&["join", "den", "--room-password-file", pw.to_str().unwrap()]);
    a.cli(&["send", "den", "before bob came"]);
    wait_until("the direct room connected", T, || a.room_peers("@bob") >= 1);

    let sent = a.cli(&["invite", "den", "bob"]);
    assert_eq!(sent[0]["message"]["room"], "@bob");
    let human = a.client(&["invite", "den", "bob"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&human.stdout).trim(), "invited bob");
    wait_until("bob in the room, with its history", T, || {
        b.cli(&["rooms"])
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "den" && r["has_password"] == true)
            && b.texts("den") == ["before bob came"]
    });
    b.cli(&["send", "den", "thanks for the key"]);
    wait_until("alice reads bob in den", T, || a.texts("den").len() == 2);
    // The password itself never left Alice's node.
    let dm = b.cli(&["history", "@alice"]).to_string();
    assert!(!dm.contains("green harbour"), "{dm}");

    // Nor to a direct room, nor to a stranger.
    let (status, body) = a.post(
        "/invite",
        &serde_json::json!({"room": "@bob", "contacts": ["bob"]}),
    );
    assert_eq!(status, 400, "{body}");
    let (status, _) = a.post(
        "/invite",
        &serde_json::json!({"room": "den", "contacts": ["mallory"]}),
    );
    assert_eq!(status, 404);
}
