//! End-to-end: the node's web page, clicked through in a real browser (headless Chromium
//! driven by chromedriver) against real `cryptchat run` processes on loopback. What the page
//! does is checked where it lands: in the other node's history, in its files, on disk.
//!
//! Needs Chromium and chromedriver (Debian: `apt-get install chromium chromium-driver`).
//! Without them each test says it was skipped and passes, unless `CI` is set: there it fails
//! (.ci/run installs them).
//!
//! Run it with: `cargo test -p cryptchat --test e2e_web -- --nocapture`

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::browser::{self, Browser, Tools};
use common::{NodeProc, bytes, in_ci, listen_for, wait_until};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
const ENTER: &str = "\u{E007}";
const SHIFT: &str = "\u{E008}";
const UP: &str = "\u{E013}";

/// The browser and its driver; `None` (the test passes, saying so) when they are missing
/// outside CI.
fn tools_or_skip() -> Option<Tools> {
    match browser::tools() {
        Ok(t) => Some(t),
        Err(why) if in_ci() => panic!("CI is set and the web page tests need a browser: {why}"),
        Err(why) => {
            // Straight to stderr, so a plain `cargo test` shows it too.
            let _ = writeln!(std::io::stderr(), "skipped: {why}");
            None
        }
    }
}

/// Alice (with extra `run` arguments) and Bob in room `lobby`, connected to each other.
fn pair(dir: &Path, alice_args: &[&str]) -> (NodeProc, NodeProc) {
    let mut args = vec!["--listen".to_string(), listen_for("tcp")];
    args.extend(["--join".into(), "lobby".into()]);
    let mut first = args.clone();
    first.extend(alice_args.iter().map(|a| a.to_string()));
    let alice = NodeProc::start("alice", &dir.join("alice"), &first);
    args.extend(["--bootstrap".into(), alice.listen_addr("/tcp/")]);
    let bob = NodeProc::start("bob", &dir.join("bob"), &args);
    for n in [&alice, &bob] {
        wait_until(&format!("{} sees a room peer", n.user), T, || {
            n.room_peers("lobby") >= 1
        });
    }
    (alice, bob)
}

/// Opens the page at the address `cryptchat web` prints (token in the fragment) and waits
/// until it is connected to the node's event stream.
fn open(b: &Browser, node: &NodeProc) {
    let url = node.cli(&["web"]);
    b.goto(url.as_str().expect("cryptchat web prints a URL"));
    b.wait_for("#app", T);
    wait_until(&format!("{}'s status in the header", node.user), T, || {
        b.text("#status").starts_with(&node.user)
    });
    wait_until("the live event stream", T, || b.text("#live") == "live");
}

fn select_room(b: &Browser, room: &str) {
    b.click_on(&format!("#rooms button[data-room='{room}']"), T);
    wait_until(&format!("{room} selected"), T, || {
        b.text("#roomtitle") == room
    });
}

/// The page's messages, as a user reads them.
fn shown(b: &Browser) -> String {
    b.text("#messages")
}

/// The text of each message the page shows, in order.
fn message_texts(b: &Browser) -> Value {
    b.script(
        "return [...document.querySelectorAll('#messages .msg .text')].map((t) => t.textContent)",
    )
}

fn token(node: &NodeProc) -> String {
    std::fs::read_to_string(node.data_dir.join("api.token"))
        .unwrap()
        .trim()
        .to_string()
}

fn rooms(node: &NodeProc) -> Vec<Value> {
    node.cli(&["rooms"]).as_array().cloned().unwrap_or_default()
}

#[test]
fn the_web_page_chats_joins_and_adds_contacts_in_a_browser() {
    let Some(tools) = tools_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = pair(dir.path(), &[]);
    let b = Browser::start(&tools, &dir.path().join("downloads"));

    open(&b, &alice);
    // The token is taken out of the address bar (it stays in the tab's session storage).
    assert_eq!(b.script("return location.hash"), "");

    // Enter sends; Shift+Enter starts a new line; the box is cleared after sending.
    select_room(&b, "lobby");
    let text = b.wait_for("#sendtext", T);
    b.send_keys(&text, &format!("hello from a browser{ENTER}"));
    b.send_keys(
        &text,
        &format!("line one{SHIFT}{ENTER}{SHIFT}line two{ENTER}"),
    );
    wait_until("bob reads both messages", T, || {
        bob.texts("lobby") == ["hello from a browser", "line one\nline two"]
    });
    assert_eq!(
        b.script("return document.getElementById('sendtext').value"),
        ""
    );
    let page = shown(&b);
    assert!(page.contains("hello from a browser"), "{page}");
    // Bob's receipt comes back and the page says so (it refreshes delivery counts).
    wait_until("the page shows delivery to bob", T, || {
        b.script(
            "return [...document.querySelectorAll('#messages .msg.mine .delivery')]\
             .every((d) => d.textContent === 'delivered to 1 of 1')",
        ) == Value::Bool(true)
    });

    // Bob's message arrives live, and markup in it stays text.
    let evil = "<img src=x onerror=\"document.title='pwned'\"> from bob";
    bob.cli(&["send", "lobby", evil]);
    wait_until("bob's message on the page", T, || shown(&b).contains(evil));
    assert_eq!(
        b.script("return document.querySelectorAll('#messages img').length"),
        0
    );
    assert_eq!(b.script("return document.title"), "cryptchat");

    // The room's members: Alice (you) and Bob, by the name he gave, each with what she holds
    // of theirs.
    b.click_on("#membersbtn", T);
    wait_until("the member list", T, || {
        let list = b.text("#memberlist");
        list.contains("alice") && list.contains("2 messages · you") && list.contains("bob")
    });
    assert!(b.text("#memberlist").contains("· 1 message"));
    b.click_on("#membersbtn", T);
    assert!(b.find("#memberlist").is_some_and(|e| !b.displayed(&e)));

    // Edit a message in place (Enter saves), and delete one (after a confirmation): Bob's
    // node has the changes; Bob's own changes show live.
    let me = alice.status()["user_id"].as_str().unwrap().to_string();
    let msg = |seq: u32| format!("#messages .msg[data-msg='{me}:{seq}']");
    b.click_on(&format!("{} button.edit", msg(2)), T);
    let edit = b.wait_for(&format!("{} textarea.edittext", msg(2)), T);
    b.script("document.querySelector('textarea.edittext').value = ''");
    b.send_keys(&edit, &format!("two lines, edited{ENTER}"));
    wait_until("bob reads the edit", T, || {
        bob.texts("lobby") == ["hello from a browser", "two lines, edited", evil]
    });
    wait_until("the page shows the edit", T, || {
        b.text(&msg(2)).contains("two lines, edited") && b.text(&msg(2)).contains("(edited)")
    });
    b.send_keys(
        &b.wait_for("#sendtext", T),
        &format!("sent by mistake{ENTER}"),
    );
    // (Alice's #3 is her edit.)
    b.click_on(&format!("{} button.delete", msg(4)), T);
    b.accept_alert();
    wait_until("bob's node has the deletion", T, || {
        let h = bob.cli(&["history", "lobby"]);
        h.as_array()
            .unwrap()
            .iter()
            .any(|m| m["seq"] == 4 && m["deleted"] == true)
    });
    wait_until("the page says it was deleted", T, || {
        b.text(&msg(4)).contains("message deleted")
    });
    assert!(b.find(&format!("{} button", msg(4))).is_none());
    bob.cli(&["edit", "lobby", "1", "from bob, edited"]);
    wait_until("bob's edit on the page", T, || {
        shown(&b).contains("from bob, edited") && !shown(&b).contains(evil)
    });

    // Reply to Bob's message: the page says what is answered, Bob's node gets the reply with
    // its quote, and the page shows the quote above the reply.
    let bob_id = bob.status()["user_id"].as_str().unwrap().to_string();
    b.click_on(
        &format!("#messages .msg[data-msg='{bob_id}:1'] button.reply"),
        T,
    );
    wait_until("the reply bar", T, || {
        b.text("#replytext").contains("from bob, edited")
    });
    b.send_keys(&b.wait_for("#sendtext", T), &format!("a reply{ENTER}"));
    wait_until("bob's node has the reply", T, || {
        let h = bob.cli(&["history", "lobby"]);
        let last = h.as_array().unwrap().last().cloned().unwrap_or_default();
        last["text"] == "a reply"
            && last["reply_to"]["author_id"] == bob_id.as_str()
            && last["reply_to"]["seq"] == 1
            && last["reply_to"]["quote"] == "from bob, edited"
    });
    assert!(b.find("#replybar").is_some_and(|e| !b.displayed(&e)));
    wait_until("the quote above the reply", T, || {
        b.text("#messages .msg.mine:last-child blockquote.reply")
            .contains("from bob, edited")
    });
    // Up in the empty box edits the last of Alice's messages: the reply.
    b.send_keys(&b.wait_for("#sendtext", T), UP);
    let edit = b.wait_for("#messages .msg.mine:last-child textarea.edittext", T);
    b.script("document.querySelector('textarea.edittext').value = ''");
    b.send_keys(&edit, &format!("a reply, edited{ENTER}"));
    wait_until("bob reads the edited reply", T, || {
        bob.texts("lobby").last().map(String::as_str) == Some("a reply, edited")
    });

    // React to Bob's message from the picker; Bob's reaction to Alice's arrives live; the
    // chip takes Alice's back.
    let on_bob = format!("#messages .msg[data-msg='{bob_id}:1']");
    b.click_on(&format!("{on_bob} button.addreact"), T);
    b.click_on(&format!("{on_bob} button.pick[aria-label='React 👍']"), T);
    let reactions_on_bob = || {
        let h = bob.cli(&["history", "lobby"]);
        let m = h
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["author_id"] == bob_id.as_str() && m["seq"] == 1)
            .cloned();
        m.map(|m| m["reactions"].clone()).unwrap_or_default()
    };
    wait_until("bob's node has alice's reaction", T, || {
        reactions_on_bob() == serde_json::json!([{"emoji": "👍", "by": [me]}])
    });
    wait_until("the chip, pressed", T, || {
        b.find(&format!("{on_bob} button.chip[aria-pressed='true']"))
            .is_some_and(|c| b.text(&format!("{on_bob} button.chip")) == "👍 1" && b.displayed(&c))
    });
    bob.cli(&["react", "lobby", &format!("{}#1", &me[..8]), "🎉"]);
    wait_until("bob's reaction on alice's message", T, || {
        b.text(&format!("{} .reactions", msg(1))).contains("🎉 1")
    });
    b.click_on(&format!("{on_bob} button.chip"), T);
    wait_until("alice's reaction taken back", T, || {
        reactions_on_bob().is_null() && b.find(&format!("{on_bob} button.chip")).is_none()
    });

    // Join a room with a password, see it listed as such, then leave it.
    b.send_keys(&b.wait_for("#joinname", T), "garden");
    b.send_keys(&b.wait_for("#joinpw", T), "a long garden password 7");
    b.click_on("#joinform button", T);
    wait_until("garden selected", T, || b.text("#roomtitle") == "garden");
    // Rooms are listed by name, whatever their ids.
    let listed =
        "return [...document.querySelectorAll('#rooms button')].map((b) => b.dataset.room)";
    assert_eq!(b.script(listed), serde_json::json!(["garden", "lobby"]));
    assert!(
        b.text("#rooms button[data-room='garden']").contains("pw"),
        "the room list marks garden as password protected"
    );
    let garden = rooms(&alice)
        .into_iter()
        .find(|r| r["name"] == "garden")
        .expect("alice's node joined garden");
    assert_eq!(garden["has_password"], true);
    b.click_on("#leave", T);
    b.accept_alert();
    wait_until("alice's node left garden", T, || {
        !rooms(&alice).iter().any(|r| r["name"] == "garden")
    });
    wait_until("garden gone from the list", T, || {
        b.find("#rooms button[data-room='garden']").is_none()
    });
    assert_eq!(b.text("#roomtitle"), "No room selected");

    // A bad contact code is refused in the error bar; a good one adds a contact whose
    // direct room the page can talk in.
    b.send_keys(&b.wait_for("#cname", T), "mallory");
    b.send_keys(&b.wait_for("#ccode", T), "cc1:garbage");
    b.click_on("#contactform button", T);
    wait_until("the error bar", T, || {
        b.text("#errtext").contains("contact code")
    });
    b.click_on("#errclose", T);
    let alice_code = alice.status()["contact_code"].as_str().unwrap().to_string();
    let bob_code = bob.status()["contact_code"].as_str().unwrap().to_string();
    bob.cli(&["contact", "add", "alice", &alice_code]);
    let name = b.wait_for("#cname", T);
    b.script(
        "document.getElementById('cname').value = ''; document.getElementById('ccode').value = ''",
    );
    b.send_keys(&name, "bob");
    b.send_keys(&b.wait_for("#ccode", T), &bob_code);
    b.click_on("#contactform button", T);
    b.click_on("#contacts button[aria-label='Chat with bob']", T);
    wait_until("the direct room selected", T, || {
        b.text("#roomtitle") == "@bob"
    });
    wait_until("the direct room connected", T, || {
        alice.room_peers("@bob") >= 1
    });
    b.send_keys(
        &b.wait_for("#sendtext", T),
        &format!("just between us{ENTER}"),
    );
    wait_until("bob reads the direct message", T, || {
        bob.texts("@alice") == ["just between us"]
    });

    // Forget the token: back to the login form. A wrong token is refused there; the right
    // one brings back the node's rooms and history.
    b.click_on("#logout", T);
    let input = b.wait_for("#tokenin", T);
    b.send_keys(&input, &format!("not-the-token{ENTER}"));
    wait_until("the wrong token refused", T, || {
        b.text("#errtext").contains("wrong API token")
    });
    assert!(b.displayed(&b.wait_for("#login", T)));
    b.send_keys(&input, &format!("{}{ENTER}", token(&alice)));
    b.wait_for("#app", T);
    select_room(&b, "lobby");
    wait_until("lobby's history after logging in again", T, || {
        let page = shown(&b);
        page.contains("hello from a browser")
            && page.contains("two lines, edited")
            && page.contains("from bob, edited")
            && page.contains("message deleted")
    });

    // Direct rooms come after the others.
    assert_eq!(b.script(listed), serde_json::json!(["lobby", "@bob"]));

    // A message in another room is counted in that room's badge and in the tab's title,
    // until the room is opened.
    assert_eq!(b.script("return document.title"), "cryptchat");
    // With notifications on, it is also a desktop notification. (The browser's Notification
    // is replaced by one that records what the page shows: headless Chromium has no desktop.)
    b.script(
        "window.shownNotes = []; window.Notification = class { \
           constructor(title, opts) { window.shownNotes.push([title, opts.body]); } \
           static get permission() { return 'granted'; } \
           static requestPermission() { return Promise.resolve('granted'); } }",
    );
    assert_eq!(b.text("#notify"), "Notifications off");
    b.click_on("#notify", T);
    wait_until("notifications on", T, || {
        b.text("#notify") == "Notifications on"
    });
    bob.cli(&["dm", "alice", "are you there?"]);
    wait_until("the unread message in the title", T, || {
        b.script("return document.title") == "(1) cryptchat"
    });
    assert_eq!(b.text("#rooms button[data-room='@bob'] .unread"), "1");
    assert_eq!(
        b.script("return window.shownNotes"),
        serde_json::json!([["bob in @bob", "are you there?"]])
    );
    // An edit and a reaction there are not unread messages (nor notified).
    bob.cli(&["edit", "@alice", "1", "are you there, alice?"]);
    bob.cli(&["react", "@alice", "alice#1", "👍"]);
    wait_until("the edit and the reaction at alice's node", T, || {
        // (Through the API: `history` would read the room.)
        let (_, shown) = alice.post(
            "/history",
            &serde_json::json!({ "room": "@bob", "limit": 50 }),
        );
        shown.to_string().contains("are you there, alice?") && shown.to_string().contains("👍")
    });
    // The page reads the rooms 300 ms after an event: one in the open room comes after
    // those two, and its read settles the count.
    bob.cli(&["send", "lobby", "back in the lobby"]);
    wait_until("the lobby message on the page", T, || {
        shown(&b).contains("back in the lobby")
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(b.script("return document.title"), "(1) cryptchat");
    assert_eq!(b.text("#rooms button[data-room='@bob'] .unread"), "1");
    assert_eq!(
        rooms(&alice)
            .iter()
            .find(|r| r["name"] == "@bob")
            .map(|r| r["messages"].clone()),
        Some(serde_json::json!(2)),
        "alice's message and bob's"
    );
    assert_eq!(b.script("return window.shownNotes.length"), 1);
    select_room(&b, "@bob");
    wait_until("read once its room is open", T, || {
        b.script("return document.title") == "cryptchat"
    });
    assert!(b.find("#rooms button[data-room='@bob'] .unread").is_none());

    // An open member list follows the room as messages arrive.
    b.click_on("#membersbtn", T);
    wait_until("bob in the member list", T, || {
        b.text("#memberlist").contains("bob (contact)")
    });
    assert!(
        b.text("#memberlist").contains("· 1 message"),
        "{}",
        b.text("#memberlist")
    );
    bob.cli(&["dm", "alice", "still there, @alice?"]);
    wait_until("bob's count moves on", T, || {
        b.text("#memberlist").contains("· 2 messages")
    });
    // The open room's messages are no news while the tab is in front.
    assert_eq!(b.script("return window.shownNotes.length"), 1);
    // A message that names Alice stands out; the one before does not.
    wait_until("the mention marked", T, || {
        b.script("return [...document.querySelectorAll('#messages .msg.mention')].map((m) => m.textContent.includes('@alice'))")
            == serde_json::json!([true])
    });

    // A revision missed while the event stream was cut applies at the next history read.
    // (A reconnected stream reads the history again, as the 15 s refresh does: `refresh`.)
    b.script("st.abort.abort()");
    bob.cli(&["edit", "@alice", "1", "are you there? (edited)"]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(!shown(&b).contains("are you there? (edited)"));
    b.script("refresh()");
    wait_until("the edit shown after catching up", T, || {
        shown(&b).contains("are you there? (edited)")
    });
    b.script("st.abort = new AbortController(); streamEvents(st.abort)");

    // A group made on the page invites its members: Bob's node joins it.
    b.send_keys(&b.wait_for("#gname", T), "crew");
    b.click_on("#gmembers input[value='bob']", T);
    b.click_on("#groupform button", T);
    wait_until("the new group open on the page", T, || {
        b.text("#roomtitle").contains("crew")
    });
    wait_until("bob's node in the group", T, || {
        rooms(&bob)
            .iter()
            .any(|r| r["name"] == "crew" && r["kind"] == "group")
    });
    assert_eq!(b.text("#roomtitle"), "crew");

    // A contact added to the group from its header: the group goes on in a new room under
    // its name, and keeps its history under another (on Bob's node too). Carol's node need
    // not run: her invitation waits in her direct room with Alice.
    let carol = std::process::Command::new(common::BIN)
        .args(["--json", "id", "--username", "carol"])
        .env("CRYPTCHAT_PASSWORD", common::password_for("carol"))
        .output()
        .unwrap();
    let carol: Value = serde_json::from_slice(&carol.stdout).unwrap();
    b.script(
        "document.getElementById('cname').value = ''; document.getElementById('ccode').value = ''",
    );
    b.send_keys(&b.wait_for("#cname", T), "carol");
    b.send_keys(
        &b.wait_for("#ccode", T),
        carol["contact_code"].as_str().unwrap(),
    );
    b.click_on("#contactform button", T);
    wait_until("carol a contact", T, || {
        b.find("#contacts button[aria-label='Chat with carol']")
            .is_some()
    });
    select_room(&b, "crew");
    b.click_on("#invitebtn", T);
    b.click_on("#invitees input[value='carol']", T);
    b.click_on("#inviteform button", T);
    wait_until("the page says where the group went", T, || {
        b.text("#notice").contains("crew goes on in a new room")
    });
    wait_until("the earlier group listed", T, || {
        b.find("#rooms button[data-room='crew (earlier)']")
            .is_some()
    });
    assert_eq!(b.text("#roomtitle"), "crew");
    wait_until("bob's node follows", T, || {
        rooms(&bob).iter().any(|r| r["name"] == "crew (earlier)")
    });

    // A room joined on the page, and a contact invited to it from its header.
    b.send_keys(&b.wait_for("#joinname", T), &format!("attic{ENTER}"));
    wait_until("the new room open", T, || b.text("#roomtitle") == "attic");
    b.click_on("#invitebtn", T);
    b.click_on("#invitees input[value='bob']", T);
    b.click_on("#inviteform button", T);
    wait_until("bob's node in the room", T, || {
        rooms(&bob).iter().any(|r| r["name"] == "attic")
    });
    assert!(b.find("#inviteform").is_some_and(|f| !b.displayed(&f)));

    // What is unread stays so through a reload of the page; what was read, too.
    bob.cli(&["dm", "alice", "one more thing"]);
    wait_until("the new message unread", T, || {
        b.script("return document.title") == "(1) cryptchat"
    });
    let reload = || {
        let here = b.script("return location.href");
        b.goto(here.as_str().unwrap());
        b.wait_for("#app", T);
        wait_until("the page back, live", T, || b.text("#live") == "live");
        wait_until("the rooms listed", T, || {
            b.find("#rooms button[data-room='@bob']").is_some()
        });
    };
    reload();
    assert_eq!(b.script("return document.title"), "(1) cryptchat");
    assert_eq!(b.text("#rooms button[data-room='@bob'] .unread"), "1");
    select_room(&b, "@bob");
    wait_until("read once open", T, || {
        b.script("return document.title") == "cryptchat"
    });
    reload();
    assert_eq!(b.script("return document.title"), "cryptchat");
    select_room(&b, "@bob");

    // Ignoring Bob from the member list hides what he wrote, and what he writes next;
    // seeing him again brings it all back.
    b.click_on("#membersbtn", T);
    b.click_on("#memberlist button[aria-label='Ignore bob (contact)']", T);
    b.accept_alert();
    wait_until("bob's messages hidden, and him marked", T, || {
        !shown(&b).contains("one more thing") && b.text("#memberlist").contains("· ignored")
    });
    assert!(shown(&b).contains("just between us"), "alice's own stay");
    let bobs = || -> u64 {
        let members = alice.cli(&["members", "@bob"]);
        let bob = members
            .as_array()
            .unwrap()
            .iter()
            .find(|m| !m["me"].as_bool().unwrap());
        bob.unwrap()["messages"].as_u64().unwrap()
    };
    let before = bobs();
    bob.cli(&["dm", "alice", "psst, alice"]);
    wait_until("alice's node holds it", T, || bobs() == before + 1);
    std::thread::sleep(Duration::from_millis(1000));
    assert!(!shown(&b).contains("psst"), "{}", shown(&b));
    assert_eq!(b.script("return document.title"), "cryptchat");
    b.click_on(
        "#memberlist button[aria-label='Stop ignoring bob (contact)']",
        T,
    );
    wait_until("bob's messages back", T, || {
        shown(&b).contains("one more thing") && shown(&b).contains("psst, alice")
    });
    assert!(!b.text("#memberlist").contains("· ignored"));

    // Removing the contact leaves its direct room.
    b.click_on("#contacts button[aria-label='Remove bob']", T);
    b.accept_alert();
    wait_until("bob removed", T, || {
        b.find("#contacts button[aria-label='Remove bob']")
            .is_none()
            && b.find("#rooms button[data-room='@bob']").is_none()
    });
    assert_eq!(b.text("#roomtitle"), "No room selected");
    let contacts = alice.cli(&["contact", "list"]);
    let names: Vec<&str> = (contacts.as_array().unwrap().iter())
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["carol"], "carol, added to the group, stays");
}

#[test]
fn the_web_page_shares_and_downloads_files_in_a_browser() {
    // The page reloads the node's status after a share, a download or a forget, well
    // before its 15 s refresh would.
    const SOON: Duration = Duration::from_secs(5);
    let Some(tools) = tools_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    // Alice gives up quickly on a file nobody online holds.
    let (alice, mut bob) = pair(dir.path(), &["--fetch-timeout-s", "3"]);
    let downloads = dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let b = Browser::start(&tools, &downloads);
    open(&b, &alice);
    select_room(&b, "lobby");

    // "Share file…" opens a file picker; WebDriver fills the (hidden) file input directly.
    let notes = bytes(700 * 1024, 7);
    let notes_path = dir.path().join("notes from alice.bin");
    std::fs::write(&notes_path, &notes).unwrap();
    assert!(b.displayed(&b.wait_for("#attach", T)));
    let input = b.find("#fileinput").expect("the file input");
    b.send_keys(&input, notes_path.to_str().unwrap());
    wait_until("the shared file on alice's page", T, || {
        shown(&b).contains("[file] notes from alice.bin (700.0 KiB)")
    });
    wait_until("the sharing notice cleared", T, || {
        b.text("#notice").is_empty()
    });
    wait_until("the header counts the shared file", SOON, || {
        b.text("#status").ends_with(" · 700.2 KiB of files")
    });
    // Bob sees it and fetches it from alice, byte for byte.
    let mut id = String::new();
    wait_until("bob sees alice's file", T, || {
        if let Some(f) = bob.file("lobby", "notes from alice.bin") {
            id = f["id"].as_str().unwrap().to_string();
        }
        !id.is_empty()
    });
    let out = dir.path().join("bob-got.bin");
    bob.cli(&["fetch", "lobby", &id, "-o", out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == notes, "bob's copy differs");
    assert!(
        std::fs::read_dir(alice.data_dir.join("uploads"))
            .map(|d| d.count() == 0)
            .unwrap_or(true),
        "the upload's staging copy is removed"
    );

    // Bob shares a file; alice's page downloads it (her node fetches it from bob first).
    let photo = bytes(600 * 1024, 11);
    let photo_path = dir.path().join("photo.bin");
    std::fs::write(&photo_path, &photo).unwrap();
    let photo_id =
        bob.cli(&["share", "lobby", photo_path.to_str().unwrap()])["message"]["file"]["id"]
            .as_str()
            .unwrap()
            .to_string();
    let photo_text = || b.text(&format!("#messages [data-file='{photo_id}']"));
    b.wait_for("#messages button[aria-label='Download photo.bin']", T);
    assert!(photo_text().contains("photo.bin"), "{}", photo_text());
    assert!(!photo_text().contains("held here"));
    b.click_on("#messages button[aria-label='Download photo.bin']", T);
    let saved = downloads.join("photo.bin");
    wait_until("photo.bin saved by the browser", T, || {
        std::fs::read(&saved).is_ok_and(|got| got == photo)
    });
    // Nothing left half-written beside it, and the page's progress notice is gone.
    let names: Vec<String> = std::fs::read_dir(&downloads)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["photo.bin"]);
    wait_until("the fetch notice cleared", T, || {
        b.text("#notice").is_empty()
    });

    // Alice's node holds photo.bin now: the page says so, and forgets it when asked.
    let held = |name: &str| alice.holds("lobby", name);
    assert!(held("photo.bin"));
    // The header says how much her node holds of files (sealed): her notes and the photo.
    wait_until("the header counts photo.bin", SOON, || {
        b.text("#status").ends_with(" · 1.3 MiB of files")
    });
    let forget = "#messages button[aria-label='Forget photo.bin']";
    wait_until("the page offers to forget photo.bin", T, || {
        b.find(forget).is_some_and(|e| b.displayed(&e))
    });
    assert!(photo_text().contains("held here"), "{}", photo_text());
    b.click_on(forget, T);
    b.accept_alert();
    wait_until("the page says what was freed", T, || {
        b.text("#notice").contains("Forgot photo.bin")
    });
    assert!(!held("photo.bin"));
    assert!(b.find(forget).is_some_and(|e| !b.displayed(&e)));
    assert!(!photo_text().contains("held here"));
    wait_until("the header no longer counts photo.bin", SOON, || {
        b.text("#status").ends_with(" · 700.2 KiB of files")
    });

    // A file whose only holder has gone: the page says why, and saves nothing.
    let gone = bytes(300 * 1024, 13);
    let gone_path = dir.path().join("gone.bin");
    std::fs::write(&gone_path, &gone).unwrap();
    bob.cli(&["share", "lobby", gone_path.to_str().unwrap()]);
    b.wait_for("#messages button[aria-label='Download gone.bin']", T);
    bob.kill();
    b.click_on("#messages button[aria-label='Download gone.bin']", T);
    wait_until("the error bar says no one holds gone.bin", T, || {
        b.text("#errtext")
            .contains("no member of the room that could be reached holds")
    });
    wait_until("the fetch notice cleared", T, || {
        b.text("#notice").is_empty()
    });
    assert!(!downloads.join("gone.bin").exists());

    // A share the node refuses (a name it cannot carry: a control character) says why in
    // the error bar, however big the file: the refusal comes before the body is read.
    let odd = dir.path().join("tab\there.bin");
    std::fs::write(&odd, bytes(24 << 20, 17)).unwrap();
    b.send_keys(&input, odd.to_str().unwrap());
    wait_until("the error bar says why the name is refused", T, || {
        b.text("#errtext")
            .contains("not a file name cryptchat can carry")
    });
    wait_until("the sharing notice cleared", T, || {
        b.text("#notice").is_empty()
    });

    // A file dropped on the conversation is shared, and so is one pasted into the box.
    b.script(
        "const dt = new DataTransfer(); dt.items.add(new File(['dropped bytes'], 'dropped.txt'));\
         document.getElementById('chat').dispatchEvent(\
           new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }))",
    );
    b.script(
        "const dt = new DataTransfer(); dt.items.add(new File(['pasted bytes'], 'pasted.txt'));\
         document.getElementById('sendtext').dispatchEvent(\
           new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }))",
    );
    for name in ["dropped.txt", "pasted.txt"] {
        wait_until(&format!("{name} shared"), T, || {
            alice.file("lobby", name).is_some() && shown(&b).contains(&format!("[file] {name}"))
        });
    }
    assert_eq!(
        b.script("return document.getElementById('sendtext').value"),
        ""
    );
}

#[test]
fn the_web_page_reads_a_long_history_back_a_page_at_a_time_and_searches_it() {
    let Some(tools) = tools_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--listen".to_string(),
        listen_for("tcp"),
        "--join".into(),
        "lobby".into(),
    ];
    let alice = NodeProc::start("alice", &dir.path().join("alice"), &args);
    // The page reads 200 at a time: 260 leave an earlier page taller than the window.
    const N: usize = 260;
    for i in 1..=N {
        let (status, sent) = alice.post(
            "/send",
            &serde_json::json!({"room": "lobby", "text": format!("message {i}")}),
        );
        assert_eq!(status, 200, "{sent}");
    }
    let b = Browser::start(&tools, &dir.path().join("downloads"));
    open(&b, &alice);
    select_room(&b, "lobby");
    let texts = || message_texts(&b);
    let expect = |from: usize| {
        Value::from(
            (from..=N)
                .map(|i| format!("message {i}"))
                .collect::<Vec<_>>(),
        )
    };
    wait_until("the newest 200 shown", T, || texts() == expect(N - 199));
    // Scrolled to the newest; the button at the top offers what came before.
    assert_eq!(b.text("#earlier"), "Earlier messages");
    b.click_on("#earlier", T);
    wait_until("the whole history shown", T, || texts() == expect(1));
    assert!(
        b.find("#earlier").is_none(),
        "nothing is left before message 1"
    );
    // What was at the top of the view before the click is still in view after it.
    let in_view = b.script(
        "const box = document.getElementById('messages').getBoundingClientRect();
         const m = [...document.querySelectorAll('#messages .msg')][60].getBoundingClientRect();
         return m.top >= box.top && m.bottom <= box.bottom",
    );
    assert_eq!(
        in_view,
        Value::Bool(true),
        "message 61 scrolled out of view"
    );

    // A search shows the messages that contain it, whatever its case, until "Show all".
    let search = b.wait_for("#searchtext", T);
    b.send_keys(&search, &format!("MESSAGE 13{ENTER}"));
    let thirteens: Vec<String> = ["message 13".to_string()]
        .into_iter()
        .chain((130..=139).map(|i| format!("message {i}")))
        .collect();
    wait_until("the search's results", T, || {
        texts() == Value::from(thirteens.clone())
    });
    assert!(b.text("#searchinfo").contains("MESSAGE 13"));
    assert!(b.find("#earlier").is_none(), "11 results fit one page");
    b.click_on("#clearsearch", T);
    wait_until("the newest 200 again", T, || texts() == expect(N - 199));
    // A message that arrives while the conversation is being read (here, a copy of the
    // newest under another hash, handed to the page as the event stream would) goes after
    // what is read, not before it.
    b.script(
        "window.raced = false;
         api('POST', '/history', { room: 'lobby', limit: 1 }).then(async ([m]) => {
           clearMessages();
           const reading = loadHistory();
           appendMessage({ ...m, hash: 'f'.repeat(64), seq: m.seq + 1, text: 'arrived meanwhile' });
           await reading;
           window.raced = true;
         });",
    );
    wait_until("the conversation read again", T, || {
        b.script("return window.raced") == Value::Bool(true)
    });
    let t = texts();
    let t = t.as_array().unwrap();
    assert_eq!(t.len(), 201);
    assert_eq!(t[199], "message 260");
    assert_eq!(t[200], "arrived meanwhile");
    assert!(b.find("#searchinfo").is_some_and(|e| !b.displayed(&e)));
    b.send_keys(&search, &format!("no such words{ENTER}"));
    wait_until("the page says nothing matched", T, || {
        shown(&b).contains("No message contains “no such words”.")
    });
    // Sending from a search goes back to the conversation, which ends with what was sent.
    let text = b.wait_for("#sendtext", T);
    b.send_keys(&text, &format!("after the search{ENTER}"));
    wait_until("the conversation with the new message", T, || {
        let t = texts();
        let t = t.as_array().unwrap();
        t.len() == 200 && t.last() == Some(&Value::from("after the search"))
    });
    assert!(b.find("#searchinfo").is_some_and(|e| !b.displayed(&e)));
}

/// Arguments for a node of the fork tests: it listens on TCP and joins lobby; then `more`.
fn in_lobby(more: &[&str]) -> Vec<String> {
    let mut a = vec!["--listen".to_string(), listen_for("tcp")];
    a.extend(["--join".to_string(), "lobby".to_string()]);
    a.extend(more.iter().map(|s| s.to_string()));
    a
}

/// Bob in lobby, holding a message Alice wrote there from a machine that is gone now; and
/// his address.
fn bob_after_alices_old_machine(dir: &Path) -> (NodeProc, String) {
    let bob = NodeProc::start("bob", &dir.join("bob"), &in_lobby(&[]));
    let bob_addr = bob.listen_addr("/tcp/");
    let mut old = NodeProc::start(
        "alice",
        &dir.join("old"),
        &in_lobby(&["--bootstrap", &bob_addr]),
    );
    wait_until("old machine connected", T, || old.room_peers("lobby") >= 1);
    old.cli(&["send", "lobby", "from the old machine"]);
    wait_until("bob has it", T, || bob.texts("lobby").len() == 1);
    old.kill();
    (bob, bob_addr)
}

#[test]
fn the_web_page_takes_up_a_rooms_history_after_its_users_messages_forked() {
    let Some(tools) = tools_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (bob, bob_addr) = bob_after_alices_old_machine(dir.path());
    // Alice writes from a new machine that reaches nobody at first: its message forks her
    // chain. It leaves forks to her (by itself it would take up Bob's history at once: he
    // holds the other branch and is the only member in reach).
    let alice = NodeProc::start(
        "alice",
        &dir.path().join("new"),
        &in_lobby(&["--no-auto-repair"]),
    );
    alice.cli(&["send", "lobby", "written offline"]);
    alice.cli(&["dial", &bob_addr]);
    let own_chain = |n: &NodeProc| {
        let s = n.status();
        let rooms = s["rooms"].as_array().cloned().unwrap_or_default();
        let lobby = rooms.iter().find(|r| r["name"] == "lobby").cloned();
        lobby.map(|r| r["own_chain"].as_str().unwrap_or("").to_string())
    };
    wait_until("the fork found", T, || {
        own_chain(&alice).as_deref() == Some("forked")
    });

    let b = Browser::start(&tools, &dir.path().join("downloads"));
    open(&b, &alice);
    select_room(&b, "lobby");
    wait_until("the fork shown", T, || {
        b.find("#forkbar").is_some_and(|e| b.displayed(&e))
    });
    assert!(b.text("#forktext").contains("another machine"));
    b.click_on("#repairbtn", T);
    wait_until("bob gets the offline message", T, || {
        bob.texts("lobby") == ["from the old machine", "written offline"]
    });
    let mut page = String::new();
    let in_order = |page: &str| {
        page.find("from the old machine")
            .zip(page.find("written offline"))
            .is_some_and(|(old, new)| old < new)
    };
    let deadline = std::time::Instant::now() + T;
    while !in_order(&page) {
        assert!(
            std::time::Instant::now() < deadline,
            "the page never showed the room's history, then hers:\n{page}"
        );
        std::thread::sleep(Duration::from_millis(200));
        page = shown(&b);
    }
    assert!(b.find("#forkbar").is_some_and(|e| !b.displayed(&e)));
    // And writing from the page works again.
    let input = b.wait_for("#sendtext", T);
    b.send_keys(&input, &format!("back on track{ENTER}"));
    wait_until("bob gets the next one", T, || {
        bob.texts("lobby").last().map(String::as_str) == Some("back on track")
    });
}

#[test]
fn the_web_page_reads_a_room_afresh_when_its_node_settles_a_fork_by_itself() {
    let Some(tools) = tools_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (bob, bob_addr) = bob_after_alices_old_machine(dir.path());
    // A new machine writes before it reaches anyone, with the page open on it.
    let alice = NodeProc::start("alice", &dir.path().join("new"), &in_lobby(&[]));
    alice.cli(&["send", "lobby", "written offline"]);
    let b = Browser::start(&tools, &dir.path().join("downloads"));
    open(&b, &alice);
    select_room(&b, "lobby");
    let texts = || message_texts(&b);
    wait_until("the offline message shown", T, || {
        texts() == Value::from(vec!["written offline"])
    });
    // Bob holds the other message at that seq and is the only member in reach: the node
    // takes up his history and writes hers again after it, and the page says so and shows
    // the room as it is now, each message once.
    alice.cli(&["dial", &bob_addr]);
    wait_until("the page says what the node did", T, || {
        b.text("#notice").contains("took up the history")
    });
    wait_until("bob gets the offline message", T, || {
        bob.texts("lobby") == ["from the old machine", "written offline"]
    });
    wait_until("the room's history, then hers, once each", T, || {
        texts() == Value::from(vec!["from the old machine", "written offline"])
    });
    assert!(b.find("#forkbar").is_some_and(|e| !b.displayed(&e)));
    let input = b.wait_for("#sendtext", T);
    b.send_keys(&input, &format!("and on{ENTER}"));
    wait_until("bob gets the next one", T, || {
        bob.texts("lobby").last().map(String::as_str) == Some("and on")
    });
    assert_eq!(
        texts(),
        Value::from(vec!["from the old machine", "written offline", "and on"])
    );
}

#[test]
fn the_web_page_says_why_a_send_waits_and_sends_it_once() {
    let Some(tools) = tools_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let alice = NodeProc::start(
        "alice",
        &dir.path().join("alice"),
        &["--listen".to_string(), listen_for("tcp")],
    );
    let b = Browser::start(&tools, &dir.path().join("downloads"));
    open(&b, &alice);
    // In a room just joined, a first write waits until the node knows it holds what its
    // user wrote there before (here: seconds, as no member can be asked).
    b.send_keys(&b.wait_for("#joinname", T), &format!("attic{ENTER}"));
    wait_until("attic open", T, || b.text("#roomtitle") == "attic");
    let input = b.wait_for("#sendtext", T);
    b.send_keys(&input, &format!("only once{ENTER}"));
    wait_until("the page says why the send waits", T, || {
        b.find("#sendwait").is_some_and(|e| b.displayed(&e))
    });
    let said = b.text("#sendwait");
    assert!(
        said.contains("only once") && said.contains("confirms"),
        "the page says what waits and why: {said}"
    );
    // The box emptied at once: Enter again sends nothing twice, and the user writes on.
    assert_eq!(
        b.script("return document.getElementById('sendtext').value"),
        ""
    );
    b.send_keys(&input, ENTER);
    b.send_keys(&input, &format!("written meanwhile{ENTER}"));
    wait_until("both sent, in order", T, || alice.texts("attic").len() == 2);
    assert_eq!(alice.texts("attic"), ["only once", "written meanwhile"]);
    wait_until("the note gone", T, || {
        b.find("#sendwait").is_some_and(|e| !b.displayed(&e))
    });
    // The next one goes at once, and each was written once.
    b.send_keys(&input, &format!("then the next{ENTER}"));
    wait_until("the next one sent", T, || alice.texts("attic").len() == 3);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        alice.texts("attic"),
        ["only once", "written meanwhile", "then the next"]
    );
    assert!(shown(&b).contains("then the next"));
}
