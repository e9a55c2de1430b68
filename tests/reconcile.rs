//! Journal reconciliation between real in-process nodes: offline catch-up, partitions, forks.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::inproc::{
    befriend, entries, first_addr, has_file, identity, node, room_peers, texts, wait_for,
};
use cryptchat::envelope::{Envelope, Kind, Payload, Position};
use cryptchat::identity::Identity;
use cryptchat::room::Room;
use cryptchat::service::NodeHandle;

const T: Duration = Duration::from_secs(90);

/// Alice (the bootstrap), Bob and Carol, all in "lobby" and connected to each other.
struct Trio {
    ids: [Arc<Identity>; 3],
    nodes: [NodeHandle; 3],
    boot: Vec<String>,
}

async fn lobby_trio(dir: &std::path::Path) -> Trio {
    let ids = [identity("alice"), identity("bob"), identity("carol")];
    let a = node(ids[0].clone(), &dir.join("a"), &[]).await;
    let boot = vec![first_addr(&a).await];
    let b = node(ids[1].clone(), &dir.join("b"), &boot).await;
    let c = node(ids[2].clone(), &dir.join("c"), &boot).await;
    let nodes = [a, b, c];
    for n in &nodes {
        n.join("lobby", None).await.unwrap();
    }
    for n in &nodes {
        wait_for("mesh", T, async || room_peers(n, "lobby").await >= 2).await;
    }
    Trio { ids, nodes, boot }
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_node_catches_up_on_1000_messages() {
    let dir = tempfile::tempdir().unwrap();
    let Trio {
        ids: [_, _, ic],
        nodes: [a, b, c],
        boot,
    } = lobby_trio(dir.path()).await;
    a.send("lobby", "before").await.unwrap();
    wait_for("carol online", T, async || {
        texts(&c, "lobby").await.len() == 1
    })
    .await;

    c.shutdown().await.unwrap();
    for i in 0..1000 {
        let n = if i % 2 == 0 { &a } else { &b };
        n.send("lobby", &format!("offline message {i}"))
            .await
            .unwrap();
    }
    wait_for("bob has everything", T, async || {
        texts(&b, "lobby").await.len() == 1001
    })
    .await;

    let back = Instant::now();
    let c = node(ic, &dir.path().join("c"), &boot).await;
    wait_for("carol caught up", T, async || {
        texts(&c, "lobby").await.len() == 1001
    })
    .await;
    eprintln!("carol caught up on 1000 messages in {:?}", back.elapsed());
    // Her counters say how: she pulled what she missed (gossip does not replay history),
    // and the others served it.
    let activity = c.status().await.unwrap().activity;
    assert!(
        activity.pulls_sent > 0 && activity.exchanges_sent > 0,
        "{activity:?}"
    );
    assert!(activity.entries_pulled >= 1000, "{activity:?}");
    let served = a.status().await.unwrap().activity.entries_served
        + b.status().await.unwrap().activity.entries_served;
    assert!(served >= 1000, "served {served}");
    let reference = entries(&a, "lobby").await;
    assert_eq!(entries(&b, "lobby").await, reference);
    assert_eq!(entries(&c, "lobby").await, reference);
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_that_keep_chatting_converge_after_heal() {
    let dir = tempfile::tempdir().unwrap();
    let Trio {
        nodes: [a, b, c], ..
    } = lobby_trio(dir.path()).await;

    // Split {alice, bob} | {carol}.
    a.block(vec![c.peer_id()], true).await.unwrap();
    b.block(vec![c.peer_id()], true).await.unwrap();
    c.block(vec![a.peer_id(), b.peer_id()], true).await.unwrap();
    wait_for("carol isolated", T, async || {
        c.status().await.unwrap().connected_peers == 0
    })
    .await;
    for i in 0..20 {
        a.send("lobby", &format!("left a{i}")).await.unwrap();
        b.send("lobby", &format!("left b{i}")).await.unwrap();
        c.send("lobby", &format!("right c{i}")).await.unwrap();
    }
    wait_for("left side in sync", T, async || {
        texts(&b, "lobby").await.len() == 40 && texts(&a, "lobby").await.len() == 40
    })
    .await;
    assert_eq!(texts(&c, "lobby").await.len(), 20, "the partition held");

    // Heal.
    a.block(vec![c.peer_id()], false).await.unwrap();
    b.block(vec![c.peer_id()], false).await.unwrap();
    c.block(vec![a.peer_id(), b.peer_id()], false)
        .await
        .unwrap();
    wait_for("all journals converge", T, async || {
        let ea = entries(&a, "lobby").await;
        ea.len() == 60 && entries(&b, "lobby").await == ea && entries(&c, "lobby").await == ea
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_is_detected_and_reported_on_every_honest_node() {
    let dir = tempfile::tempdir().unwrap();
    let (ia, ib, ic, im) = (
        identity("alice"),
        identity("bob"),
        identity("carol"),
        identity("mallory"),
    );
    let a = node(ia, &dir.path().join("a"), &[]).await;
    let boot = vec![first_addr(&a).await];
    let b = node(ib.clone(), &dir.path().join("b"), &boot).await;
    let c = node(ic.clone(), &dir.path().join("c"), &boot).await;
    let m = node(im.clone(), &dir.path().join("m"), &boot).await;
    // Mallory talks to Alice only; Bob and Carol learn of the fork through reconciliation.
    m.block(vec![b.peer_id(), c.peer_id()], true).await.unwrap();
    b.block(vec![m.peer_id()], true).await.unwrap();
    c.block(vec![m.peer_id()], true).await.unwrap();
    for n in [&a, &b, &c, &m] {
        n.join("lobby", None).await.unwrap();
    }
    wait_for("mesh", T, async || {
        room_peers(&a, "lobby").await >= 3 && room_peers(&m, "lobby").await >= 1
    })
    .await;
    let room = Room::named("lobby", None).unwrap();
    let pos = Position {
        seq: 1,
        prev: [0; 32],
        lamport: 1,
        timestamp_ms: 1,
    };
    let say = |t: &str| Payload {
        from: "mallory".into(),
        text: Some(t.into()),
        ..Payload::default()
    };
    let one = Envelope::seal(&im, &room, Kind::Text, pos, &say("I pay you")).unwrap();
    let two = Envelope::seal(&im, &room, Kind::Text, pos, &say("I owe you nothing")).unwrap();
    m.publish_raw("lobby", one.into_bytes()).await.unwrap();
    wait_for("first version everywhere", T, async || {
        texts(&c, "lobby").await.len() == 1
    })
    .await;
    m.publish_raw("lobby", two.into_bytes()).await.unwrap();
    let mallory = im.id().to_hex();
    for n in [&a, &b, &c] {
        wait_for("fork reported", T, async || {
            let rooms = n.rooms().await.unwrap();
            rooms[0]
                .forks
                .iter()
                .any(|f| f.author_id == mallory && f.seq == 1)
        })
        .await;
    }
    // Sync keeps working for everyone else.
    b.send("lobby", "after the fork").await.unwrap();
    wait_for("later message", T, async || {
        texts(&c, "lobby")
            .await
            .contains(&"after the fork".to_string())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn senders_see_who_received_their_messages() {
    let dir = tempfile::tempdir().unwrap();
    let Trio {
        ids: [_, _, ic],
        nodes: [a, b, c],
        boot,
    } = lobby_trio(dir.path()).await;
    b.send("lobby", "bob was here").await.unwrap();
    c.send("lobby", "carol too").await.unwrap();
    a.send("lobby", "did you get this?").await.unwrap();
    wait_for("delivered to 2 of 2", T, async || {
        let h = a.history("lobby", 10).await.unwrap();
        h.iter()
            .find(|m| m.mine)
            .is_some_and(|m| m.delivered_to == 2 && m.known_members == 2)
    })
    .await;
    // Receipts are not messages: nobody's journal grew because of them.
    for n in [&a, &b, &c] {
        assert_eq!(n.rooms().await.unwrap()[0].messages, 3);
    }
    // Carol goes offline; Alice's next message is delivered to 1 of 2 until she is back.
    c.shutdown().await.unwrap();
    a.send("lobby", "carol?").await.unwrap();
    wait_for("delivered to bob only", T, async || {
        let h = a.history("lobby", 10).await.unwrap();
        h.last()
            .is_some_and(|m| m.text.as_deref() == Some("carol?") && m.delivered_to == 1)
    })
    .await;
    let c = node(ic, &dir.path().join("c"), &boot).await;
    wait_for("delivered to both after carol returns", T, async || {
        let h = a.history("lobby", 10).await.unwrap();
        h.last().is_some_and(|m| m.delivered_to == 2)
    })
    .await;
    drop(c);
}

/// The first message of a new room of ten. Every member is connected to at least the
/// connection budget's target of members (8) and cannot tell yet whether the room holds ten
/// or a thousand, so each spreads its first receipt over 30 s (docs/protocol.md, "Delivery
/// receipts") instead of all answering within the second, as they would in a room of
/// hundreds too. The trade-off a user sees: "delivered to 9 of 9" comes over those 30 s,
/// and it does come.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_rooms_first_receipts_spread_out_and_all_arrive() {
    const N: usize = 10;
    let target = cryptchat::peers::Budget::default().target;
    let dir = tempfile::tempdir().unwrap();
    let author = node(identity("member0"), &dir.path().join("n0"), &[]).await;
    let boot = vec![first_addr(&author).await];
    let mut nodes = vec![author];
    for i in 1..N {
        let dir = dir.path().join(format!("n{i}"));
        nodes.push(node(identity(&format!("member{i}")), &dir, &boot).await);
    }
    for n in &nodes {
        n.join("lobby", None).await.unwrap();
    }
    for n in &nodes {
        wait_for("the budget's target of members", T, async || {
            room_peers(n, "lobby").await >= target
        })
        .await;
    }
    nodes[0].send("lobby", "first").await.unwrap();
    for n in &nodes {
        wait_for("everyone has it", T, async || {
            texts(n, "lobby").await.len() == 1
        })
        .await;
    }
    let all_have_it = Instant::now();
    let mut timeline = Vec::new();
    wait_for("every member's receipt", T, async || {
        let m = nodes[0].history("lobby", 1).await.unwrap().remove(0);
        if timeline.last().is_none_or(|(_, d)| *d != m.delivered_to) {
            timeline.push((all_have_it.elapsed(), m.delivered_to));
        }
        m.delivered_to == N as u32 - 1
    })
    .await;
    eprintln!("delivered_to over time: {timeline:?}");
    // Nine draws within 30 s all falling in the first two seconds: about (2/30)^9.
    assert!(
        all_have_it.elapsed() > Duration::from_secs(2),
        "{timeline:?}"
    );
}

/// The seqs of `author`'s messages in "lobby" on `n`, in display order.
async fn own_seqs(n: &NodeHandle, author: &str) -> Vec<u64> {
    n.history("lobby", 1_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.author_id == author)
        .map(|m| m.seq)
        .collect()
}

/// Bob (the bootstrap, whose address is returned) in "lobby", and Alice's identity, which
/// wrote `n` messages there ("old machine 1".."old machine n") from a data dir of its own,
/// stopped since.
async fn alice_wrote_elsewhere(
    dir: &std::path::Path,
    n: usize,
) -> (Arc<Identity>, NodeHandle, Vec<String>) {
    let (ia, ib) = (identity("alice"), identity("bob"));
    let b = node(ib, &dir.join("b"), &[]).await;
    let boot = vec![first_addr(&b).await];
    let old = node(ia.clone(), &dir.join("old"), &boot).await;
    for x in [&b, &old] {
        x.join("lobby", None).await.unwrap();
    }
    wait_for("mesh", T, async || room_peers(&old, "lobby").await >= 1).await;
    for i in 1..=n {
        old.send("lobby", &format!("old machine {i}"))
            .await
            .unwrap();
    }
    wait_for("bob has them", T, async || {
        texts(&b, "lobby").await.len() == n
    })
    .await;
    old.shutdown().await.unwrap();
    (ia, b, boot)
}

/// The text of `author`'s message at `seq` in "lobby" on `n`, if `n` holds it.
async fn text_at(n: &NodeHandle, author: &str, seq: u64) -> Option<String> {
    n.history("lobby", 1_000)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.author_id == author && m.seq == seq)
        .and_then(|m| m.text)
}

async fn own_chain(n: &NodeHandle) -> String {
    let s = n.status().await.unwrap();
    s.rooms
        .into_iter()
        .find(|r| r.name == "lobby")
        .map(|r| r.own_chain)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_machine_takes_up_its_users_chain_before_it_writes() {
    // Alice writes from one data dir, then from a new one (another machine): what she
    // writes there must follow on from her earlier messages, not fork her chain.
    let dir = tempfile::tempdir().unwrap();
    let (ia, b, boot) = alice_wrote_elsewhere(dir.path(), 3).await;

    // The new machine writes at once, before it has found anyone.
    let new = node(ia.clone(), &dir.path().join("new"), &boot).await;
    new.join("lobby", None).await.unwrap();
    let sent = new.send("lobby", "new machine").await.unwrap();
    assert_eq!(sent.message.seq, 4, "the write waited for the old messages");
    assert_eq!(own_chain(&new).await, "held");
    let alice = ia.id().to_hex();
    wait_for("bob has the new message", T, async || {
        texts(&b, "lobby").await.len() == 4
    })
    .await;
    assert_eq!(own_seqs(&b, &alice).await, vec![1, 2, 3, 4]);
    assert_eq!(own_seqs(&new, &alice).await, vec![1, 2, 3, 4]);
    assert!(b.rooms().await.unwrap()[0].forks.is_empty());
    assert_eq!(
        b.status().await.unwrap().counters.rejected.get("fork"),
        None
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_forked_its_chain_offline_takes_up_the_rooms_history_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (ia, b, boot) = alice_wrote_elsewhere(dir.path(), 2).await;

    // A new machine with no way to reach anyone: it writes once nobody could be found,
    // which forks Alice's chain (nothing can tell it otherwise).
    let new = node(ia.clone(), &dir.path().join("new"), &[]).await;
    new.join("lobby", None).await.unwrap();
    let started = Instant::now();
    let offline = new.send("lobby", "offline").await.unwrap();
    assert_eq!(offline.message.seq, 1);
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "it looked for members first"
    );
    // Online again: the pull of Alice's chain from Bob proves the fork, and Bob, the one
    // member in reach, holds the other branch. The node takes up the room's history and
    // writes its offline message again after Alice's earlier ones, where Bob accepts it.
    new.dial(boot[0].parse().unwrap()).await.unwrap();
    let alice = ia.id().to_hex();
    wait_for("bob has the offline message", T, async || {
        texts(&b, "lobby").await.contains(&"offline".to_string())
    })
    .await;
    assert_eq!(own_seqs(&b, &alice).await, vec![1, 2, 3]);
    wait_for("history back", T, async || {
        texts(&new, "lobby").await == ["old machine 1", "old machine 2", "offline"]
            && own_chain(&new).await == "held"
    })
    .await;
    let after = new.send("lobby", "after the repair").await.unwrap();
    assert_eq!(after.message.seq, 4);
    wait_for("bob has it", T, async || {
        texts(&b, "lobby").await.len() == 4
    })
    .await;
    assert!(new.repair("lobby").await.is_err(), "nothing left to repair");
    // Other rooms are not held up.
    new.join("elsewhere", None).await.unwrap();
    assert_eq!(new.send("elsewhere", "fine").await.unwrap().message.seq, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn members_that_hold_different_branches_of_its_chain_leave_a_fork_to_the_user() {
    // Alice's new machine wrote offline, and Carol took that message before the new
    // machine reached Bob, who holds what Alice wrote at that seq on her old machine. The
    // members disagree on Alice's chain, so the node cannot tell which branch is the
    // room's: it stops writing there and says why, rather than pick one.
    let dir = tempfile::tempdir().unwrap();
    let (ia, b, boot) = alice_wrote_elsewhere(dir.path(), 2).await;
    let carol = node(identity("carol"), &dir.path().join("carol"), &[]).await;
    let new = node(ia.clone(), &dir.path().join("new"), &[]).await;
    for x in [&carol, &new] {
        x.join("lobby", None).await.unwrap();
    }
    assert_eq!(new.send("lobby", "offline").await.unwrap().message.seq, 1);
    new.dial(first_addr(&carol).await.parse().unwrap())
        .await
        .unwrap();
    wait_for("carol has it", T, async || {
        texts(&carol, "lobby").await == ["offline"]
    })
    .await;
    new.dial(boot[0].parse().unwrap()).await.unwrap();
    wait_for("fork found", T, async || {
        ["settling", "forked"].contains(&own_chain(&new).await.as_str())
    })
    .await;
    // A write waits while the node asks both members again, round after round, and is
    // refused once the wait is over, with the fork unsettled.
    let refused = new.send("lobby", "lost?").await.unwrap_err();
    assert_eq!(own_chain(&new).await, "forked");
    assert!(
        matches!(
            refused,
            cryptchat::service::NodeError::OwnFork { seq: 1, .. }
        ),
        "{refused}"
    );
    assert!(refused.to_string().contains("lobby"), "{refused}");
    assert!(!texts(&b, "lobby").await.contains(&"lost?".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_cut_off_while_another_machine_wrote_takes_that_up_before_writing() {
    // Alice's laptop runs on while it is cut off (asleep, say), and meanwhile she writes
    // from her desk. Back in reach, what the laptop writes follows on from the desk's.
    let dir = tempfile::tempdir().unwrap();
    let (ia, ib) = (identity("alice"), identity("bob"));
    let b = node(ib.clone(), &dir.path().join("b"), &[]).await;
    let boot = vec![first_addr(&b).await];
    let laptop = node(ia.clone(), &dir.path().join("laptop"), &boot).await;
    for x in [&b, &laptop] {
        x.join("lobby", None).await.unwrap();
    }
    wait_for("mesh", T, async || room_peers(&laptop, "lobby").await >= 1).await;
    let first = laptop.send("lobby", "laptop 1").await.unwrap();
    assert_eq!(first.message.seq, 1);
    wait_for("bob has it", T, async || {
        texts(&b, "lobby").await.len() == 1
    })
    .await;

    // The desk's peer key is made before it starts, so that the laptop can be cut off
    // from it too (one identity on two machines is two peers).
    let desk_dir = dir.path().join("desk");
    std::fs::create_dir_all(&desk_dir).unwrap();
    let desk_key =
        cryptchat::net::load_or_create_peer_key(&desk_dir.join(cryptchat::config::PEER_KEY_FILE))
            .unwrap();
    let desk_peer = desk_key.public().to_peer_id();
    laptop
        .block(vec![b.peer_id(), desk_peer], true)
        .await
        .unwrap();
    wait_for("laptop cut off", T, async || {
        laptop.status().await.unwrap().connected_peers == 0
    })
    .await;
    // Its sync rounds (every 2 s here) notice that no member is within reach.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let desk = node(ia.clone(), &desk_dir, &boot).await;
    assert_eq!(desk.peer_id(), desk_peer);
    desk.join("lobby", None).await.unwrap();
    assert_eq!(desk.send("lobby", "desk 2").await.unwrap().message.seq, 2);
    wait_for("bob has it", T, async || {
        texts(&b, "lobby").await.len() == 2
    })
    .await;
    desk.shutdown().await.unwrap();

    laptop.block(vec![b.peer_id()], false).await.unwrap();
    wait_for("laptop back", T, async || {
        room_peers(&laptop, "lobby").await >= 1
    })
    .await;
    let again = laptop.send("lobby", "laptop again").await.unwrap();
    assert_eq!(again.message.seq, 3, "it took up the desk's message first");
    let alice = ia.id().to_hex();
    wait_for("bob has it", T, async || {
        texts(&b, "lobby").await.len() == 3
    })
    .await;
    assert_eq!(own_seqs(&b, &alice).await, vec![1, 2, 3]);
    assert!(b.rooms().await.unwrap()[0].forks.is_empty());
    assert_eq!(
        texts(&laptop, "lobby").await,
        ["laptop 1", "desk 2", "laptop again"]
    );
}

/// Bob, and Alice running on her desk and her laptop at once, all three in "lobby" and each
/// machine in the room with the other.
struct TwoMachines {
    alice: Arc<Identity>,
    bob: NodeHandle,
    desk: NodeHandle,
    laptop: NodeHandle,
}

async fn two_machines(dir: &std::path::Path) -> TwoMachines {
    let (ia, ib) = (identity("alice"), identity("bob"));
    let bob = node(ib, &dir.join("b"), &[]).await;
    let boot = vec![first_addr(&bob).await];
    let desk = node(ia.clone(), &dir.join("desk"), &boot).await;
    let laptop = node(ia.clone(), &dir.join("laptop"), &boot).await;
    for x in [&bob, &desk, &laptop] {
        x.join("lobby", None).await.unwrap();
    }
    wait_for("each machine in the room with the other", T, async || {
        room_peers(&desk, "lobby").await >= 2 && room_peers(&laptop, "lobby").await >= 2
    })
    .await;
    TwoMachines {
        alice: ia,
        bob,
        desk,
        laptop,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_identity_on_two_machines_at_once_is_two_peers_that_hear_each_other() {
    // Alice leaves her desk's node running and starts her laptop's: two peers (each data
    // dir has its own peer key), connected to each other, each taking the other's messages
    // as hers, so that what each writes follows on from the other's.
    let dir = tempfile::tempdir().unwrap();
    let TwoMachines {
        alice: ia,
        bob: b,
        desk,
        laptop,
    } = two_machines(dir.path()).await;
    assert_ne!(desk.peer_id(), laptop.peer_id());
    let desk_id = desk.peer_id().to_string();
    assert!(
        laptop
            .peers()
            .await
            .unwrap()
            .iter()
            .any(|p| p.peer_id == desk_id),
        "the two machines are connected to each other"
    );
    let mut written = Vec::new();
    for i in 1..=6u64 {
        let (from, to) = if i % 2 == 1 {
            (&desk, &laptop)
        } else {
            (&laptop, &desk)
        };
        let text = format!("message {i}");
        let sent = from.send("lobby", &text).await.unwrap();
        assert_eq!(
            sent.message.seq, i,
            "it follows on from the other machine's"
        );
        written.push(text.clone());
        wait_for("the other machine has it", T, async || {
            texts(to, "lobby").await.contains(&text)
        })
        .await;
    }
    wait_for("bob has every message", T, async || {
        texts(&b, "lobby").await == written
    })
    .await;
    let alice = ia.id().to_hex();
    assert_eq!(own_seqs(&b, &alice).await, vec![1, 2, 3, 4, 5, 6]);
    assert!(b.rooms().await.unwrap()[0].forks.is_empty());
    for x in [&desk, &laptop] {
        assert_eq!(texts(x, "lobby").await, written);
        let room = x.rooms().await.unwrap().remove(0);
        assert_eq!(room.unread, 0, "her own messages are read on both machines");
        assert!(room.forks.is_empty());
    }
}

/// Both machines write in "lobby" at the same moment until two of their messages take
/// one seq (a fork of the user's chain): every text written (named after `tag`), and that
/// seq. `before`: how many messages the room holds already.
async fn write_at_the_same_moment(
    desk: &NodeHandle,
    laptop: &NodeHandle,
    tag: &str,
    before: usize,
) -> (Vec<String>, u64) {
    // Writes at the same moment make a fork nearly always; try again until one does.
    let mut written = Vec::new();
    for round in 0..10 {
        let (d, l) = (format!("desk {tag}{round}"), format!("laptop {tag}{round}"));
        let (sd, sl) = tokio::join!(desk.send("lobby", &d), laptop.send("lobby", &l));
        let (sd, sl) = (sd.unwrap(), sl.unwrap());
        written.extend([d, l]);
        if sd.message.seq == sl.message.seq {
            return (written, sd.message.seq);
        }
        let all = before + written.len();
        wait_for("each has the other's", T, async || {
            texts(desk, "lobby").await.len() == all && texts(laptop, "lobby").await.len() == all
        })
        .await;
    }
    panic!("no two writes at once took the same seq in ten tries");
}

/// Waits until each of `nodes` holds every message of `written`, all in one order, and
/// each of `machines` writes in "lobby" again.
async fn settled(nodes: &[&NodeHandle], machines: &[&NodeHandle], written: &[String]) {
    let mut all = written.to_vec();
    all.sort();
    wait_for("every message everywhere, in one order", T, async || {
        let first = texts(nodes[0], "lobby").await;
        let mut same = true;
        for n in &nodes[1..] {
            same &= texts(n, "lobby").await == first;
        }
        let mut sorted = first.clone();
        sorted.sort();
        same && sorted == all
    })
    .await;
    wait_for("both machines write again", T, async || {
        let mut held = true;
        for m in machines {
            held &= own_chain(m).await == "held";
        }
        held
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_machines_writing_at_the_same_moment_settle_it_by_themselves_and_lose_nothing() {
    // Both of Alice's machines write at once: two messages at one seq, a fork of her chain.
    // Bob keeps whichever reached him first. The machine whose message he refused takes up
    // his history and writes its message again after it; the other writes on. Nothing is
    // lost and Alice has nothing to do (before, both machines refused writes until she
    // repaired them, one after the other in the right order).
    let dir = tempfile::tempdir().unwrap();
    let TwoMachines {
        alice: ia,
        bob: b,
        desk,
        laptop,
    } = two_machines(dir.path()).await;
    let (mut written, seq) = write_at_the_same_moment(&desk, &laptop, "a", 0).await;
    // Both write on at once: whether or not a machine has found the fork yet, the write
    // goes through (it waits while the fork settles, rather than being refused).
    let (more_d, more_l) = tokio::join!(
        desk.send("lobby", "desk more"),
        laptop.send("lobby", "laptop more")
    );
    more_d.unwrap();
    more_l.unwrap();
    written.extend(["desk more".to_string(), "laptop more".to_string()]);
    settled(&[&b, &desk, &laptop], &[&desk, &laptop], &written).await;
    let alice = ia.id().to_hex();
    assert_eq!(
        own_seqs(&b, &alice).await,
        (1..=written.len() as u64).collect::<Vec<_>>()
    );
    // It was a fork: Bob holds the proof that Alice's key signed two entries at that seq.
    let forks = b.rooms().await.unwrap().remove(0).forks;
    assert!(
        forks.iter().any(|f| f.author_id == alice && f.seq == seq),
        "{forks:?}"
    );
    // Again: a second fork settles as well as the first, whose proof stays.
    let (again, _) = write_at_the_same_moment(&desk, &laptop, "b", written.len()).await;
    written.extend(again);
    settled(&[&b, &desk, &laptop], &[&desk, &laptop], &written).await;
    // Both write on, after everything, and Bob takes it.
    for (x, text) in [(&desk, "desk after"), (&laptop, "laptop after")] {
        let sent = x.send("lobby", text).await.unwrap();
        written.push(text.to_string());
        assert_eq!(sent.message.seq, written.len() as u64, "{text}");
        wait_for("bob has it", T, async || {
            texts(&b, "lobby").await.last().map(String::as_str) == Some(text)
        })
        .await;
    }
    settled(&[&b, &desk, &laptop], &[&desk, &laptop], &written).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_machines_alone_in_a_room_settle_a_fork_by_their_peer_ids() {
    // With nobody else in the room to tell whose branch is the room's, the machine with
    // the lower peer id writes on and the other gives way: both know both peer ids.
    let dir = tempfile::tempdir().unwrap();
    let TwoMachines {
        alice: ia,
        bob: b,
        desk,
        laptop,
    } = two_machines(dir.path()).await;
    b.leave("lobby").await.unwrap();
    wait_for("only the two machines in the room", T, async || {
        room_peers(&desk, "lobby").await == 1 && room_peers(&laptop, "lobby").await == 1
    })
    .await;
    let (written, seq) = write_at_the_same_moment(&desk, &laptop, "", 0).await;
    settled(&[&desk, &laptop], &[&desk, &laptop], &written).await;
    let alice = ia.id().to_hex();
    let first = if desk.peer_id() < laptop.peer_id() {
        "desk"
    } else {
        "laptop"
    };
    let kept = text_at(&desk, &alice, seq).await.unwrap();
    assert!(kept.starts_with(first), "{kept} at {seq}, {first} goes on");
    // Bob, back, takes up the one history.
    b.join("lobby", None).await.unwrap();
    settled(&[&b, &desk, &laptop], &[&desk, &laptop], &written).await;
    assert_eq!(
        own_seqs(&b, &alice).await,
        (1..=written.len() as u64).collect::<Vec<_>>()
    );
}

/// A node of `id` in `dir` whose unconfirmed messages go in a mailbox after `after`.
async fn node_with_mailbox(
    id: &Arc<Identity>,
    dir: &std::path::Path,
    boot: &[String],
    after: Option<Duration>,
) -> NodeHandle {
    let mut cfg = common::inproc::config(dir, boot);
    cfg.mailbox_after = after;
    cryptchat::service::start(id.clone(), cfg).await.unwrap()
}

async fn mailboxes(n: &NodeHandle) -> cryptchat::service::MailboxStats {
    n.status().await.unwrap().mailboxes
}

#[tokio::test(flavor = "multi_thread")]
async fn group_messages_reach_members_through_the_dht_after_their_author_went_offline() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // A node in no room of theirs, that stays up: what any DHT node is for them.
    let relay = node(identity("relay"), &dir.join("relay"), &[]).await;
    let boot = vec![first_addr(&relay).await];
    let [alice, bob, carol] = [identity("alice"), identity("bob"), identity("carol")];
    let after = Some(Duration::from_secs(5));
    let a = node_with_mailbox(&alice, &dir.join("a"), &boot, after).await;
    let mut b = node_with_mailbox(&bob, &dir.join("b"), &boot, after).await;
    let mut c = node_with_mailbox(&carol, &dir.join("c"), &boot, after).await;
    befriend(&a, &b).await;
    befriend(&a, &c).await;
    a.create_group("plans", vec!["bob".into(), "carol".into()])
        .await
        .unwrap();
    for n in [&b, &c] {
        wait_for("the group's members meet", T, async || {
            room_peers(n, "plans").await >= 2
        })
        .await;
    }

    // Everyone online: the members confirm what Alice writes, one message a second for
    // longer than her mailbox wait, and nothing goes in the DHT (at any moment her latest
    // message is still on its way to someone, but none is left unconfirmed for long).
    for i in 0..12 {
        a.send("plans", &format!("everyone here? {i}"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    wait_for("both members confirm the messages", T, async || {
        let h = a.history("plans", 20).await.unwrap();
        h.last().is_some_and(|m| m.delivered_to == 2)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        mailboxes(&a).await.put,
        0,
        "a mailbox with nobody missing anything"
    );

    // Bob and Carol go offline; Alice writes, her node puts a mailbox by itself, and she
    // goes offline too before either of them is back.
    b.shutdown().await.unwrap();
    c.shutdown().await.unwrap();
    let away = ["meet at noon", "bring the slides"];
    for text in away {
        a.send("plans", text).await.unwrap();
    }
    wait_for("alice's node puts her mailbox", T, async || {
        mailboxes(&a).await.put >= 1
    })
    .await;
    a.shutdown().await.unwrap();
    drop(a);

    b = node_with_mailbox(&bob, &dir.join("b"), &boot, after).await;
    c = node_with_mailbox(&carol, &dir.join("c"), &boot, after).await;
    for n in [&b, &c] {
        wait_for("what alice wrote while they were away", T, async || {
            texts(n, "plans").await.ends_with(&away.map(String::from))
        })
        .await;
        let taken = mailboxes(n).await;
        assert!(taken.found >= 1 && taken.taken >= 2, "{taken:?}");
    }
    // What they read was stored by the one node that stayed up, which is in none of
    // their rooms and could not read it.
    let dht = relay.status().await.unwrap().dht;
    assert!(dht.other_values >= 1, "{dht:?}");
    assert!(relay.rooms().await.unwrap().is_empty());
}

/// A relay in none of their rooms, and the nodes of Alice and Bob (mailboxes 2 s after a
/// write), contacts whose direct room is connected.
async fn contacts_with_mailboxes(dir: &std::path::Path) -> (NodeHandle, [NodeHandle; 2]) {
    let relay = node(identity("relay"), &dir.join("relay"), &[]).await;
    let pair = contacts_through(dir, &relay).await;
    (relay, pair)
}

/// Alice's and Bob's nodes as in [`contacts_with_mailboxes`], bootstrapping from `relay`.
async fn contacts_through(dir: &std::path::Path, relay: &NodeHandle) -> [NodeHandle; 2] {
    std::fs::write(dir.join("boot"), first_addr(relay).await).unwrap();
    let (a, b) = (restart(dir, "alice").await, restart(dir, "bob").await);
    befriend(&a, &b).await;
    wait_for("the direct room connects", T, async || {
        room_peers(&a, "@bob").await >= 1
    })
    .await;
    [a, b]
}

/// Starts (again) the node of `who` of [`contacts_with_mailboxes`].
async fn restart(dir: &std::path::Path, who: &str) -> NodeHandle {
    let boot = std::fs::read_to_string(dir.join("boot")).unwrap();
    let after = Some(Duration::from_secs(2));
    node_with_mailbox(&identity(who), &dir.join(who), &[boot], after).await
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_restart_a_mailbox_starts_where_the_reader_stood_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // The relay stays up (any DHT node would do).
    let (_relay, [a, b]) = contacts_with_mailboxes(dir).await;
    // More than one mailbox holds, all read and confirmed by Bob.
    let long: Vec<String> = (0..5)
        .map(|i| format!("{i} {}", "x".repeat(15_000)))
        .collect();
    for text in &long {
        a.dm("bob", text).await.unwrap();
    }
    let delivered = async |n: &NodeHandle| -> Vec<u32> {
        let h = n.history("@bob", 20).await.unwrap();
        h.iter().map(|m| m.delivered_to).collect()
    };
    wait_for("bob confirms the five", T, async || {
        delivered(&a).await == [1; 5]
    })
    .await;
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
    drop((a, b));

    // Alice's node starts again and remembers what Bob holds: the delivery marks stay, and
    // the mailbox it puts for her next message (by itself, Bob being away) starts after
    // the five, not at her first message.
    let a = restart(dir, "alice").await;
    assert_eq!(delivered(&a).await, [1; 5]);
    a.dm("bob", "after the restart").await.unwrap();
    wait_for("alice's node puts her mailbox", T, async || {
        mailboxes(&a).await.put >= 1
    })
    .await;
    a.shutdown().await.unwrap();
    drop(a);
    let b = restart(dir, "bob").await;
    wait_for(
        "bob reads what alice wrote after her restart",
        T,
        async || texts(&b, "@alice").await.last().map(String::as_str) == Some("after the restart"),
    )
    .await;
    assert_eq!(texts(&b, "@alice").await.len(), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mailbox_longer_than_one_record_reaches_its_reader_whole() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (relay, [a, b]) = contacts_with_mailboxes(dir).await;
    b.shutdown().await.unwrap();
    drop(b);
    // While Bob is away, Alice writes what takes three records (about 150 KiB), and goes.
    let long: Vec<String> = (0..10)
        .map(|i| format!("{i} {}", "y".repeat(15_000)))
        .collect();
    for text in &long {
        a.dm("bob", text).await.unwrap();
    }
    a.shutdown().await.unwrap();
    drop(a);
    let b = restart(dir, "bob").await;
    wait_for("bob reads all ten", T, async || {
        texts(&b, "@alice").await == long
    })
    .await;
    let read = mailboxes(&b).await;
    assert!(read.found >= 3 && read.taken == 10, "{read:?}");
    assert!(relay.status().await.unwrap().dht.other_values >= 3);
}

/// A node stopped moments after it started, connected but before any peer told it its
/// addresses (a slow link), still puts what a member lacks in its mailbox: the stop waits
/// for the DHT to come up, within the time it gives its puts.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_stopped_before_its_dht_came_up_still_puts_its_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (relay, [a, b]) = contacts_with_mailboxes(dir).await;
    b.shutdown().await.unwrap();
    drop(b);
    // Alice writes to Bob while he is away, and her node stops cut off from everyone: it
    // puts nothing then.
    a.dm("bob", "written while bob is away").await.unwrap();
    let relay_id = relay.status().await.unwrap().peer_id.parse().unwrap();
    a.block(vec![relay_id], true).await.unwrap();
    wait_for("alice is alone", T, async || {
        a.status().await.unwrap().connected_peers == 0
    })
    .await;
    a.shutdown().await.unwrap();
    drop(a);
    assert_eq!(relay.status().await.unwrap().dht.other_values, 0);

    // Her node starts again on a link that delays every byte it receives by 400 ms (the
    // relay's identify answer, which brings the DHT up, comes that long after the
    // connection), and is stopped as soon as it is connected.
    let boot = std::fs::read_to_string(dir.join("boot")).unwrap();
    let mut cfg = common::inproc::config(&dir.join("alice"), &[boot]);
    cfg.mailbox_after = Some(Duration::from_secs(2));
    cfg.swarm.faults.set(cryptchat::faults::FaultConfig {
        latency_ms: 400,
        ..Default::default()
    });
    let a = cryptchat::service::start(identity("alice"), cfg)
        .await
        .unwrap();
    wait_for("alice is connected", T, async || {
        a.status().await.unwrap().connected_peers >= 1
    })
    .await;
    a.shutdown().await.unwrap();
    drop(a);
    assert!(relay.status().await.unwrap().dht.other_values >= 1);

    let b = restart(dir, "bob").await;
    wait_for("bob reads it from the mailbox", T, async || {
        texts(&b, "@alice").await == ["written while bob is away"]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_small_file_sent_to_a_contact_who_is_away_is_fetched_from_the_dht() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (relay, [a, b]) = contacts_with_mailboxes(dir).await;
    b.shutdown().await.unwrap();
    drop(b);
    // Alice sends Bob a photo (three chunks) while he is away, and goes too.
    let photo = common::bytes(600_000, 7);
    let src = dir.join("photo.jpg");
    std::fs::write(&src, &photo).unwrap();
    let sent = a.share_file("@bob", src).await.unwrap();
    let id = sent.message.file.as_ref().unwrap().id.clone();
    a.shutdown().await.unwrap();
    drop(a);
    // The mailbox, the list, and the three chunks in slices (5, 5 and 2 of 60 KiB): on
    // the relay, which is in none of their rooms.
    let held = relay.status().await.unwrap().dht.other_values;
    assert!(held >= 1 + 1 + 5 + 5 + 2, "{held} records");

    let b = restart(dir, "bob").await;
    wait_for("the photo's message reaches bob", T, async || {
        has_file(&b, "@alice", &id).await
    })
    .await;
    let out = dir.join("fetched.jpg");
    let target = cryptchat::service::Target::Path(out.clone());
    let fetched = b.fetch_file("@alice", &id, target).await.unwrap();
    assert_eq!(fetched.size, photo.len() as u64);
    assert_eq!((fetched.chunks_fetched, fetched.chunks_from_dht), (4, 4));
    assert_eq!(std::fs::read(&out).unwrap(), photo);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_a_member_saw_but_did_not_fetch_goes_in_the_dht_as_its_author_stops() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (relay, [a, b]) = contacts_with_mailboxes(dir).await;
    let share = async |name: &str, len: usize| {
        let src = dir.join(name);
        std::fs::write(&src, common::bytes(len, len as u64)).unwrap();
        let sent = a.share_file("@bob", src).await.unwrap();
        let id = sent.message.file.as_ref().unwrap().id.clone();
        wait_for(
            "bob has the file's message, and alice knows",
            T,
            async || {
                let history = a.history("@bob", 10).await.unwrap();
                history.last().is_some_and(|m| m.delivered_to == 1)
            },
        )
        .await;
        id
    };
    let fetch = async |id: &str, name: &str| {
        let target = cryptchat::service::Target::Path(dir.join(name));
        b.fetch_file("@alice", id, target).await.unwrap()
    };
    // Bob fetches the first file while Alice is there; the second he only sees.
    let first = share("slides.pdf", 300_000).await;
    assert_eq!(fetch(&first, "slides-got.pdf").await.chunks_from_dht, 0);
    let second = share("photo.jpg", 100_000).await;
    a.shutdown().await.unwrap();
    drop(a);
    // What went in the DHT as Alice stopped: the second file (its list, and its one chunk
    // in two slices), not the first, and no mailbox (Bob holds every message).
    assert_eq!(relay.status().await.unwrap().dht.other_values, 3);
    let got = fetch(&second, "photo-got.jpg").await;
    assert_eq!((got.chunks_fetched, got.chunks_from_dht), (2, 2));
    let photo = std::fs::read(dir.join("photo-got.jpg")).unwrap();
    assert_eq!(photo, common::bytes(100_000, 100_000));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mailbox_that_found_no_dht_node_is_put_once_one_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // The relay listens on a port it gets back when it restarts.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let relay_id = identity("relay");
    let start_relay = async || {
        let mut cfg = common::inproc::config(&dir.join("relay"), &[]);
        cfg.listen = vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()];
        cryptchat::service::start(relay_id.clone(), cfg)
            .await
            .unwrap()
    };
    let mut relay = start_relay().await;
    let [a, mut b] = contacts_through(dir, &relay).await;

    // Bob and the relay go; Alice, alone, writes: her mailbox finds no DHT node.
    b.shutdown().await.unwrap();
    relay.shutdown().await.unwrap();
    drop(relay);
    wait_for("alice is alone", T, async || {
        a.status().await.unwrap().connected_peers == 0
    })
    .await;
    a.dm("bob", "written while alone").await.unwrap();
    wait_for(
        "alice's node finds no DHT node for her mailbox",
        T,
        async || mailboxes(&a).await.unplaced >= 1,
    )
    .await;

    // The relay comes back: Alice's node reaches it and puts the mailbox again, there.
    relay = start_relay().await;
    wait_for("the relay stores alice's mailbox", T, async || {
        relay.status().await.unwrap().dht.other_values >= 1
    })
    .await;
    a.shutdown().await.unwrap();
    drop(a);
    b = restart(dir, "bob").await;
    wait_for("bob reads what alice wrote while alone", T, async || {
        texts(&b, "@alice").await == ["written while alone"]
    })
    .await;
}
