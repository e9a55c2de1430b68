//! `Core` tested without a network: envelopes handed from one node's core to another's.

use super::*;
use crate::identity::KeySize;
use crate::journal::Page;
use std::sync::OnceLock;
use std::time::Instant;

fn identities() -> &'static [Arc<Identity>; 3] {
    static IDS: OnceLock<[Arc<Identity>; 3]> = OnceLock::new();
    IDS.get_or_init(|| {
        ["alice", "bob", "carol"].map(|u| {
            Arc::new(
                Identity::derive_unchecked(u, &format!("{u} test password"), KeySize::Rsa2048)
                    .unwrap(),
            )
        })
    })
}

fn core(dir: &tempfile::TempDir, i: usize) -> Core {
    let id = identities()[i].clone();
    let j = Core::open_journal(&dir.path().join(format!("j{i}.redb"))).unwrap();
    Core::open(id, j).unwrap()
}

/// What `to` makes of a message composed elsewhere: accepted, its view.
fn accepted(to: &mut Core, (_, env, _): &Composed) -> MessageView {
    match to.receive(&env.room.topic(), env.bytes().to_vec()).unwrap() {
        Incoming::Accepted(v, _) => *v,
        other => panic!("{other:?}"),
    }
}

/// Alice's and Bob's cores, each the other's contact (as "bob" and "alice").
fn contacts_pair(dir: &tempfile::TempDir) -> (Core, Core) {
    let (mut a, mut b) = (core(dir, 0), core(dir, 1));
    a.add_contact("bob", &identities()[1].contact_code().encode())
        .unwrap();
    b.add_contact("alice", &identities()[0].contact_code().encode())
        .unwrap();
    (a, b)
}

/// Alice's and Bob's cores, both in the named room "lobby".
fn three_in_lobby(dir: &tempfile::TempDir) -> (Core, Core, Core) {
    let (mut a, mut b, mut c) = (core(dir, 0), core(dir, 1), core(dir, 2));
    for x in [&mut a, &mut b, &mut c] {
        x.join(Room::named("lobby", None).unwrap()).unwrap();
    }
    (a, b, c)
}

/// Delivered-to counts of the lobby's history, oldest first.
fn delivered(x: &Core) -> Vec<u32> {
    x.history("lobby", 10)
        .unwrap()
        .iter()
        .map(|m| m.delivered_to)
        .collect()
}

fn two_in_lobby(dir: &tempfile::TempDir) -> (Core, Core, RoomId) {
    let lobby = Room::named("lobby", None).unwrap();
    let (mut a, mut b) = (core(dir, 0), core(dir, 1));
    a.join(lobby.clone()).unwrap();
    b.join(lobby.clone()).unwrap();
    (a, b, lobby.id)
}

#[test]
fn joins_past_the_room_limit_are_refused_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = core(&dir, 0);
    a.room_limit = 3;
    for i in 0..3 {
        a.join(Room::named(&format!("r{i}"), None).unwrap())
            .unwrap();
    }
    let err = a
        .join(Room::named("one too many", None).unwrap())
        .unwrap_err();
    assert!(matches!(err, CoreError::TooManyRooms(3)), "{err}");
    // Rejoining a room already joined is still fine, and nothing was lost.
    let (_, new) = a.join(Room::named("r1", None).unwrap()).unwrap();
    assert!(!new);
    assert_eq!(a.rooms().count(), 3);
    a.leave("r0").unwrap();
    a.join(Room::named("one too many", None).unwrap()).unwrap();
}

#[test]
fn receipts_carry_what_changed_and_only_grow() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, mut c) = three_in_lobby(&dir);
    let mut rid = None;
    for i in 0..3 {
        let (r, env, _) = a.compose("lobby", &format!("m{i}")).unwrap();
        assert!(matches!(
            b.receive(&r.topic(), env.bytes().to_vec()).unwrap(),
            Incoming::Accepted(..)
        ));
        rid = Some(r);
    }
    let rid = rid.unwrap();
    let receipt = |x: &mut Core, full| {
        x.compose_receipt(rid, full)
            .unwrap()
            .map(|env| env.into_bytes())
    };
    // Bob holds a's three: his receipt says so, and Alice counts him.
    let first = receipt(&mut b, false).expect("bob has news");
    assert_eq!(delivered(&a), vec![0, 0, 0]);
    assert!(matches!(
        a.receive(&rid.topic(), first.clone()).unwrap(),
        Incoming::Receipt
    ));
    assert_eq!(delivered(&a), vec![1, 1, 1]);
    // Nothing moved: nothing to say, unless asked for everything.
    assert!(receipt(&mut b, false).is_none());
    std::thread::sleep(std::time::Duration::from_millis(2));
    let full = receipt(&mut b, true).expect("a full receipt");
    // A replayed receipt is recognised, and an older one cannot take anything back.
    assert!(matches!(
        a.receive(&rid.topic(), first).unwrap(),
        Incoming::Duplicate
    ));
    assert!(matches!(
        a.receive(&rid.topic(), full).unwrap(),
        Incoming::Receipt
    ));
    assert_eq!(delivered(&a), vec![1, 1, 1]);
    // Carol has none of it: she counts as a member only once she says something.
    assert!(receipt(&mut c, false).is_none());
    let (_, env, _) = a.compose("lobby", "m3").unwrap();
    b.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    let delta = receipt(&mut b, false).expect("bob has news");
    let parsed = check(&a.identity, a.room(&rid).unwrap(), delta.clone(), &a.keys)
        .unwrap()
        .1;
    assert_eq!(
        parsed.receipt.as_ref().map(Heads::len),
        Some(1),
        "only the moved head"
    );
    a.receive(&rid.topic(), delta).unwrap();
    assert_eq!(delivered(&a), vec![1, 1, 1, 1]);
}

#[test]
fn a_message_carries_its_authors_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, mut c) = three_in_lobby(&dir);
    let (rid, _, _) = a.compose("lobby", "m0").unwrap();
    for i in 1..3 {
        a.compose("lobby", &format!("m{i}")).unwrap();
    }
    for seq in 1..=3 {
        let entry = a.journal.get(&rid.0, &a.identity.id().0, seq).unwrap();
        b.receive(&rid.topic(), entry.unwrap().envelope).unwrap();
    }
    // What a message of Bob's says he holds, as Alice reads it.
    let heads_in = |a: &Core, env: &Envelope| {
        check(
            &a.identity,
            a.room(&rid).unwrap(),
            env.bytes().to_vec(),
            &a.keys,
        )
        .unwrap()
        .1
        .receipt
    };
    // Bob answers: his message says he holds Alice's three, and she counts him.
    let (_, reply, _) = b.compose("lobby", "got them").unwrap();
    let heads = heads_in(&a, &reply);
    assert_eq!(heads.as_ref().map(Heads::len), Some(1), "alice's head only");
    assert_eq!(delivered(&a), vec![0, 0, 0]);
    assert!(matches!(
        a.receive(&rid.topic(), reply.bytes().to_vec()).unwrap(),
        Incoming::Accepted(..)
    ));
    assert_eq!(delivered(&a), vec![1, 1, 1, 1], "and she holds his");
    // Said once: neither his next receipt nor his next message repeats it.
    assert!(b.compose_receipt(rid, false).unwrap().is_none());
    let (_, again, _) = b.compose("lobby", "still here").unwrap();
    assert_eq!(heads_in(&a, &again), None);
    // Heads pulled through reconciliation count as well: Carol gets Bob's message in a
    // batch and learns he holds Alice's chain.
    for seq in 1..=3 {
        let entry = a.journal.get(&rid.0, &a.identity.id().0, seq).unwrap();
        c.receive(&rid.topic(), entry.unwrap().envelope).unwrap();
    }
    let verified = check(
        &c.identity,
        c.room(&rid).unwrap(),
        reply.bytes().to_vec(),
        &c.keys,
    )
    .unwrap();
    c.store_batch(rid, vec![verified]).unwrap();
    assert_eq!(delivered(&c)[..3], [2, 2, 2], "bob and carol herself");
}

#[test]
fn what_a_message_cannot_carry_goes_first_in_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, mut c) = three_in_lobby(&dir);
    let (rid, env, _) = a.compose("lobby", "a1").unwrap();
    b.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
    let (_, env, _) = c.compose("lobby", "c1").unwrap();
    b.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
    b.piggyback_max = 1;
    let short = |x: &Core| short_id(&x.identity.id().0);
    let carried = |b: &mut Core| -> Vec<(ShortId, u64)> {
        let (_, env, _) = b.compose("lobby", "reply").unwrap();
        check(
            &b.identity,
            b.room(&rid).unwrap(),
            env.into_bytes(),
            &b.keys,
        )
        .unwrap()
        .1
        .receipt
        .map_or(Vec::new(), |h| h.0)
    };
    let first = carried(&mut b);
    assert_eq!(first.len(), 1, "one head fits");
    // Whoever was told moves on again, yet the other author, never told, goes first.
    let (told, other) = if first[0].0 == short(&a) {
        (&mut a, &mut c)
    } else {
        (&mut c, &mut a)
    };
    let (_, env, _) = told.compose("lobby", "again").unwrap();
    b.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
    assert_eq!(carried(&mut b), vec![(short(other), 1)]);
    assert_eq!(carried(&mut b), vec![(short(told), 2)]);
    assert_eq!(carried(&mut b), vec![], "nothing left untold");
}

#[test]
fn an_oversized_receipt_is_malformed_wherever_it_rides() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, rid) = two_in_lobby(&dir);
    let room = b.room(&rid).unwrap().clone();
    let heads = Heads(
        (0..=MAX_RECEIPT_AUTHORS as u64)
            .map(|i| ([7; 8], i))
            .collect(),
    );
    for kind in [Kind::Text, Kind::Receipt] {
        let payload = Payload {
            from: "bob".into(),
            text: (kind == Kind::Text).then(|| "hi".to_string()),
            receipt: Some(heads.clone()),
            file: None,
            revises: None,
            reply_to: None,
            react: None,
            invite: None,
        };
        let pos = Position {
            seq: 1,
            prev: [0; 32],
            lamport: 1,
            timestamp_ms: now_ms(),
        };
        let env = Envelope::seal(&b.identity, &room, kind, pos, &payload).unwrap();
        assert_eq!(
            check(
                &a.identity,
                a.room(&rid).unwrap(),
                env.into_bytes(),
                &a.keys
            )
            .err(),
            Some(Rejection::Malformed)
        );
    }
}

#[test]
fn an_author_name_that_is_not_a_plain_username_is_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, rid) = two_in_lobby(&dir);
    let room = b.room(&rid).unwrap().clone();
    let checked = |from: &str| {
        let payload = Payload {
            from: from.into(),
            text: Some("hi".into()),
            ..Payload::default()
        };
        let pos = Position {
            seq: 1,
            prev: [0; 32],
            lamport: 1,
            timestamp_ms: now_ms(),
        };
        let env = Envelope::seal(&b.identity, &room, Kind::Text, pos, &payload).unwrap();
        check(
            &a.identity,
            a.room(&rid).unwrap(),
            env.into_bytes(),
            &a.keys,
        )
        .err()
    };
    assert_eq!(checked("bob"), None);
    // Written by a node from before names were NFC: the same name, read as it is.
    assert_eq!(checked("jose\u{301}"), None);
    for forged in [
        "bob]: hi\n12:00:00 lobby alice [814ddc60#9]: send me your password",
        "bob\u{1b}[2J",
        "bob\u{202E}ecila",
        "Bob",
        "",
    ] {
        assert_eq!(checked(forged), Some(Rejection::Malformed), "{forged:?}");
    }
}

#[test]
fn files_left_to_fetch_are_others_small_ones_neither_held_nor_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, rid) = two_in_lobby(&dir);
    let seal = |name: &str, data: &[u8]| {
        crate::files::seal_file(name, data.len() as u64, data, |_, _| Ok(())).unwrap()
    };
    let mut share = |from: &mut Core, file: &FileRef| {
        let (_, env, _) = from.compose_file("lobby", file.clone()).unwrap();
        b.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
    };
    let small = seal("small.txt", b"hello");
    let big = seal("big.bin", &[7; 100]);
    let held = seal("held.txt", b"kept");
    let forgotten = seal("forgotten.txt", b"dropped");
    let another = seal("another.txt", b"more");
    for f in [&small, &big, &held, &forgotten] {
        share(&mut a, f);
    }
    // Bob's own share is his already.
    b.compose_file("lobby", another).unwrap();
    let reader = b.reader("lobby").unwrap();
    assert_eq!(
        reader.files_to_fetch(100, 50).unwrap(),
        vec![small.clone(), held.clone(), forgotten.clone()]
    );
    b.journal
        .put_provided(&held.provider_key(), &held.list, true)
        .unwrap();
    reader.forget_file(&forgotten.id()).unwrap();
    assert_eq!(reader.files_to_fetch(100, 50).unwrap(), vec![small.clone()]);
    assert_eq!(reader.files_to_fetch(100, 100).unwrap(), vec![small, big]);
    // Only the last file messages are looked at: here, Bob's own.
    assert!(reader.files_to_fetch(1, 100).unwrap().is_empty());
}

#[test]
fn a_search_finds_texts_and_file_names_whatever_their_case_a_page_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, rid) = two_in_lobby(&dir);
    let mut say = |from: &mut Core, text: &str| {
        let (_, env, _) = from.compose("lobby", text).unwrap();
        b.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
    };
    say(&mut a, "Lunch at noon?");
    say(&mut a, "the LUNCH menu is up");
    say(&mut a, "nothing to see");
    say(&mut a, "Über-lunch plans");
    let menu = crate::files::seal_file("Lunch-Menu.pdf", 5, &b"hello"[..], |_, _| Ok(())).unwrap();
    let (_, env, _) = a.compose_file("lobby", menu).unwrap();
    b.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
    b.compose("lobby", "lunch? yes").unwrap();

    let reader = b.reader("lobby").unwrap();
    let found = |contains: &str, page: Page| -> Vec<String> {
        let q = Query {
            page,
            only: None,
            contains: Some(contains.into()),
        };
        let shown = |o: Opened| o.payload.text.or(o.payload.file.map(|f| f.name)).unwrap();
        reader.query(&q).unwrap().into_iter().map(shown).collect()
    };
    let all = [
        "Lunch at noon?",
        "the LUNCH menu is up",
        "Über-lunch plans",
        "Lunch-Menu.pdf",
        "lunch? yes",
    ];
    assert_eq!(found("lunch", Page::last(10)), all);
    assert_eq!(found("LUNCH", Page::last(10)), all);
    assert_eq!(found("über", Page::last(10)), ["Über-lunch plans"]);
    assert_eq!(
        found("MENU", Page::last(10)),
        ["the LUNCH menu is up", "Lunch-Menu.pdf"]
    );
    assert!(found("dinner", Page::last(10)).is_empty());
    // Pages count matches only: the two before the last two.
    let page = Page {
        limit: 2,
        skip: 2,
        before: None,
    };
    assert_eq!(found("lunch", page), all[1..3]);
    // With a kind, files only.
    let q = Query {
        only: Some(Kind::File),
        contains: Some("menu".into()),
        ..Query::last(10)
    };
    assert_eq!(reader.query(&q).unwrap().len(), 1);
}

#[test]
fn a_file_message_is_shown_found_by_its_id_and_refused_when_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, rid) = two_in_lobby(&dir);
    let file = crate::files::seal_file("plan.txt", 5, &b"hello"[..], |_, _| Ok(())).unwrap();
    let (_, env, view) = a.compose_file("lobby", file.clone()).unwrap();
    assert_eq!(view.kind, Kind::File);
    assert_eq!(view.file.as_ref().map(|f| f.id.clone()), Some(file.id()));
    b.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
    let shown = b.history("lobby", 10).unwrap();
    assert_eq!(shown[0].file.as_ref().unwrap().name, "plan.txt");
    // Found by a prefix of its id, with the key members need.
    let reader = b.reader("lobby").unwrap();
    let found = reader.find_file(&file.id()[..8]).unwrap();
    assert_eq!((reader.room_id(), &found), (rid, &file));
    assert!(matches!(
        reader.find_file("0123456789abcdef"),
        Err(CoreError::UnknownFile(..))
    ));
    for short in [&file.id()[..4], "not-hex-at-all"] {
        let err = reader.find_file(short).unwrap_err();
        assert!(matches!(err, CoreError::BadFileId(_)), "{err}");
        assert!(err.to_string().contains("8 or more"), "{err}");
    }
    // A file message without a file, or with a name that is a path, is malformed.
    let room = a.room(&rid).unwrap().clone();
    let mut bad = file.clone();
    bad.name = "../../.bashrc".into();
    for file in [None, Some(bad)] {
        let payload = Payload {
            from: "alice".into(),
            text: None,
            receipt: None,
            file,
            revises: None,
            reply_to: None,
            react: None,
            invite: None,
        };
        let pos = Position {
            seq: 2,
            prev: env.hash(),
            lamport: 2,
            timestamp_ms: now_ms(),
        };
        let env = Envelope::seal(&a.identity, &room, Kind::File, pos, &payload).unwrap();
        assert_eq!(
            check(
                &b.identity,
                b.room(&rid).unwrap(),
                env.into_bytes(),
                &b.keys
            )
            .err(),
            Some(Rejection::Malformed)
        );
    }
}

#[test]
fn what_members_claim_to_hold_is_chased_once_it_has_settled() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, mut c) = three_in_lobby(&dir);
    let (rid, m1, _) = a.compose("lobby", "m1").unwrap();
    let (_, m2, _) = a.compose("lobby", "m2").unwrap();
    for env in [&m1, &m2] {
        b.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
    }
    // Gossip lost m2 on its way to Carol; she has nothing to chase yet.
    c.receive(&rid.topic(), m1.bytes().to_vec()).unwrap();
    assert!(!c.chase_claims(rid, Instant::now()));
    // Bob's message carries what he holds, Alice's m2 among it.
    let before = Instant::now();
    let (_, from_bob, _) = b.compose("lobby", "hi").unwrap();
    c.receive(&rid.topic(), from_bob.bytes().to_vec()).unwrap();
    // Heard just now: as likely m2 still on its way as lost.
    assert!(!c.chase_claims(rid, before));
    assert!(c.chase_claims(rid, Instant::now() + c.claims.settle(rid)));
    // Chased once; the backstop rounds take it from there.
    assert!(!c.chase_claims(rid, Instant::now()));
    // Once she holds it, the claim is gone.
    c.receive(&rid.topic(), m2.bytes().to_vec()).unwrap();
    assert!(!c.chase_claims(rid, Instant::now()));
    assert_eq!(c.claims.outstanding(rid), 0);
    // A member claiming more (here in a receipt) is chased again.
    let (_, m3, _) = a.compose("lobby", "m3").unwrap();
    b.receive(&rid.topic(), m3.bytes().to_vec()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    let receipt = b.compose_receipt(rid, false).unwrap().unwrap().into_bytes();
    assert!(matches!(
        c.receive(&rid.topic(), receipt).unwrap(),
        Incoming::Receipt
    ));
    assert!(c.chase_claims(rid, Instant::now() + c.claims.settle(rid)));
    // What a member claims of a chain we hold in full is nothing to chase.
    assert!(!b.chase_claims(rid, Instant::now()));
}

#[test]
fn receipts_carry_the_key_only_where_a_reader_may_lack_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, mut c) = three_in_lobby(&dir);
    let (rid, env, _) = a.compose("lobby", "hi").unwrap();
    b.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
    let carries_key = |x: &Core, bytes: &[u8]| {
        check(&x.identity, x.room(&rid).unwrap(), bytes.to_vec(), &x.keys)
            .unwrap()
            .0
            .carries_key
    };
    // Bob has never written here: nobody may know his key yet.
    let lurker = b.compose_receipt(rid, false).unwrap().unwrap().into_bytes();
    assert!(carries_key(&a, &lurker));
    // Once he has, Alice knows it from his first entry, and his receipts leave it out.
    let (_, first, _) = b.compose("lobby", "hello").unwrap();
    assert!(matches!(
        a.receive(&rid.topic(), first.bytes().to_vec()).unwrap(),
        Incoming::Accepted(..)
    ));
    // (His message carried his receipt; he has news again once Alice writes more.)
    let (_, more, _) = a.compose("lobby", "more").unwrap();
    b.receive(&rid.topic(), more.bytes().to_vec()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    let delta = b.compose_receipt(rid, false).unwrap().unwrap().into_bytes();
    assert!(!carries_key(&a, &delta));
    assert!(matches!(
        a.receive(&rid.topic(), delta.clone()).unwrap(),
        Incoming::Receipt
    ));
    // Carol never got that entry: she cannot check the receipt, and does not pass it on.
    assert!(matches!(
        c.receive(&rid.topic(), delta).unwrap(),
        Incoming::UnknownAuthor
    ));
    // A whole receipt (sent to newcomers) carries the key again.
    std::thread::sleep(std::time::Duration::from_millis(2));
    let full = b.compose_receipt(rid, true).unwrap().unwrap().into_bytes();
    assert!(matches!(
        c.receive(&rid.topic(), full).unwrap(),
        Incoming::Receipt
    ));
    // It says Bob holds what Carol lacks: her next reconciliation round goes after it,
    // once (a claim is chased once, until a member claims more).
    let now = Instant::now() + c.claims.settle(rid);
    assert!(c.chase_claims(rid, now));
    assert!(!c.chase_claims(rid, now));
}

#[test]
fn message_flows_between_cores_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, _) = two_in_lobby(&dir);
    let (rid, env, view) = a.compose("lobby", "hello bob").unwrap();
    assert!(view.mine);
    let got = b.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
    let Incoming::Accepted(v, _) = got else {
        panic!("not accepted: {got:?}")
    };
    assert_eq!(v.text.as_deref(), Some("hello bob"));
    assert_eq!(v.author, "alice");
    assert!(matches!(
        b.receive(&rid.topic(), env.bytes().to_vec()).unwrap(),
        Incoming::Duplicate
    ));
    drop(b);
    let b = core(&dir, 1);
    let h = b.history("lobby", 10).unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].text.as_deref(), Some("hello bob"));
}

#[test]
fn a_named_room_knows_its_writers_and_receipt_senders_and_remembers_its_writers() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, mut c) = three_in_lobby(&dir);
    let rid = Room::named("lobby", None).unwrap().id;
    assert_eq!(c.member_count(rid), 1, "only herself yet");
    let (_, env, _) = a.compose("lobby", "hi").unwrap();
    for x in [&mut b, &mut c] {
        x.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
    }
    assert_eq!(c.member_count(rid), 2);
    // Bob never writes, but says what he holds.
    let receipt = b.compose_receipt(rid, true).unwrap().unwrap().into_bytes();
    assert!(matches!(
        c.receive(&rid.topic(), receipt).unwrap(),
        Incoming::Receipt
    ));
    assert_eq!(c.member_count(rid), 3);
    // A second message from a known member counts nobody twice.
    let (_, env, _) = a.compose("lobby", "again").unwrap();
    let Incoming::Accepted(v, _) = c.receive(&rid.topic(), env.bytes().to_vec()).unwrap() else {
        panic!("accepted")
    };
    assert_eq!(
        (v.delivered_to, v.known_members),
        (1, 2),
        "she holds it; Bob's receipt came before it"
    );
    // Receipts are not stored: after a restart, the writers and ourselves.
    drop(c);
    let c = core(&dir, 2);
    assert_eq!(c.member_count(rid), 2);
    assert_eq!(c.member_count(RoomId([9; 32])), 0, "not a room of ours");
}

/// Six writers, each heard once and each new to her: the room is bigger than the seven
/// members she knows, as far as pacing goes; heard again and again, they are all she
/// hears, and the room is what she knows.
#[test]
fn whom_a_member_hears_sizes_the_room_beyond_the_members_it_knows() {
    let dir = tempfile::tempdir().unwrap();
    let lobby = Room::named("lobby", None).unwrap();
    let rid = lobby.id;
    let mut c = core(&dir, 2);
    c.join(lobby.clone()).unwrap();
    let mut writers: Vec<Core> = (0..6u8)
        .map(|i| {
            let master = crypto::sha256(&[b"census test", &[i]]);
            let id = Identity::from_master(&format!("w{i}"), &master, KeySize::Rsa2048);
            let j = Core::open_journal(&dir.path().join(format!("w{i}.redb"))).unwrap();
            let mut x = Core::open(Arc::new(id.unwrap()), j).unwrap();
            x.join(lobby.clone()).unwrap();
            x
        })
        .collect();
    assert_eq!(c.room_size(rid), 1);
    for w in &mut writers {
        let (_, env, _) = w.compose("lobby", "hi").unwrap();
        c.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
    }
    assert_eq!(c.member_count(rid), 7);
    assert!(c.room_size(rid) > 7, "{}", c.room_size(rid));
    for round in 0..25 {
        for w in &mut writers {
            let (_, env, _) = w.compose("lobby", &format!("again {round}")).unwrap();
            c.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
        }
    }
    assert_eq!(c.member_count(rid), 7);
    assert_eq!(c.room_size(rid), 7);
}

#[test]
fn tampered_and_foreign_envelopes_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, _) = two_in_lobby(&dir);
    let (rid, env, _) = a.compose("lobby", "hi").unwrap();
    let mut bytes = env.bytes().to_vec();
    let n = bytes.len();
    bytes[n - 300] ^= 1;
    assert!(matches!(
        b.receive(&rid.topic(), bytes).unwrap(),
        Incoming::Rejected(Rejection::BadSignature)
    ));
    assert!(matches!(
        b.receive(&rid.topic(), vec![1, 2, 3]).unwrap(),
        Incoming::Rejected(Rejection::Malformed)
    ));
    // An envelope for another room, replayed on this room's topic.
    a.join(Room::named("other", None).unwrap()).unwrap();
    let (_, other, _) = a.compose("other", "x").unwrap();
    assert!(matches!(
        b.receive(&rid.topic(), other.bytes().to_vec()).unwrap(),
        Incoming::Rejected(Rejection::WrongRoom)
    ));
    assert_eq!(b.counters().rejected.values().sum::<u64>(), 3);
    assert!(b.history("lobby", 10).unwrap().is_empty());
}

/// `a`'s next four messages in the lobby: "one" to "four".
fn four_in_lobby(a: &mut Core) -> Vec<Envelope> {
    ["one", "two", "three", "four"]
        .iter()
        .map(|t| a.compose("lobby", t).unwrap().1)
        .collect()
}

/// Entries that came ahead of a gap are shown when the gap fills: the entry that fills
/// it carries their views, in order, so a client following new messages sees them all.
#[test]
fn filling_a_gap_releases_the_entries_held_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, rid) = two_in_lobby(&dir);
    let envs = four_in_lobby(&mut a);
    let receive = |b: &mut Core, i: usize| b.receive(&rid.topic(), envs[i].bytes().to_vec());
    assert!(matches!(receive(&mut b, 0).unwrap(), Incoming::Accepted(_, r) if r.is_empty()));
    assert!(matches!(receive(&mut b, 3).unwrap(), Incoming::Pending));
    assert!(matches!(receive(&mut b, 2).unwrap(), Incoming::Pending));
    let Incoming::Accepted(v, released) = receive(&mut b, 1).unwrap() else {
        panic!("the gap-filler is accepted")
    };
    assert_eq!(v.text.as_deref(), Some("two"));
    let texts: Vec<_> = released.iter().map(|m| m.text.as_deref()).collect();
    assert_eq!(texts, vec![Some("three"), Some("four")]);
    assert_eq!(b.history("lobby", 10).unwrap().len(), 4);
}

/// Admits `env` as gossip does: the entry to store, and its view if shown at once.
fn admit_entry(
    c: &mut Core,
    rid: RoomId,
    env: &Envelope,
) -> ((RoomId, Envelope, Payload), Option<MessageView>) {
    let Admitted::Entry(entry) = c.admit(&rid.topic(), env.bytes().to_vec()) else {
        panic!("a valid entry is admitted")
    };
    let view = c.preview(entry.0, &entry.1, &entry.2);
    (*entry, view)
}

/// An entry that comes next in its author's chain is shown when admitted, the same view
/// it would have had once stored, and storing it shows nothing more; one after a gap
/// waits for the store, and is shown (once) when the gap fills.
#[test]
fn entries_next_in_their_chain_are_shown_before_they_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, rid) = two_in_lobby(&dir);
    let envs = four_in_lobby(&mut a);

    let (first, shown) = admit_entry(&mut b, rid, &envs[0]);
    let shown = shown.expect("next in the chain: shown at once");
    assert_eq!(shown.text.as_deref(), Some("one"));
    assert_eq!(shown.seq, 1);
    // Two follows one although one is not stored yet; four is after a gap.
    let (second, shown2) = admit_entry(&mut b, rid, &envs[1]);
    assert_eq!(shown2.unwrap().text.as_deref(), Some("two"));
    let (fourth, none) = admit_entry(&mut b, rid, &envs[3]);
    assert!(none.is_none());
    assert_eq!(b.shown_unstored(), 2);
    assert!(
        b.history("lobby", 10).unwrap().is_empty(),
        "nothing stored yet"
    );

    let out = b.commit(vec![first, second, fourth]).unwrap();
    assert!(
        matches!(&out[0], Incoming::Shown(r) if r.is_empty()),
        "{out:?}"
    );
    assert!(
        matches!(&out[1], Incoming::Shown(r) if r.is_empty()),
        "{out:?}"
    );
    assert!(matches!(out[2], Incoming::Pending));
    assert_eq!(b.shown_unstored(), 0);
    // The stored view is the one shown.
    let stored = b.history("lobby", 10).unwrap();
    assert_eq!(stored[0], shown);

    // Three fills the gap: shown at once, and four comes with its store.
    let (third, shown3) = admit_entry(&mut b, rid, &envs[2]);
    assert_eq!(shown3.unwrap().text.as_deref(), Some("three"));
    let out = b.commit(vec![third]).unwrap();
    let Incoming::Shown(released) = &out[0] else {
        panic!("{out:?}")
    };
    let texts: Vec<_> = released.iter().map(|m| m.text.as_deref()).collect();
    assert_eq!(texts, vec![Some("four")]);
    assert_eq!(b.history("lobby", 10).unwrap().len(), 4);
}

/// A message shown on arrival that reconciliation stores first is not shown again by
/// reconciliation, and the gossip copy stored after it is a duplicate; a repeat of a
/// message shown is not shown again either.
#[test]
fn a_shown_entry_is_shown_once_whichever_path_stores_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, rid) = two_in_lobby(&dir);
    let (_, env, _) = a.compose("lobby", "hello").unwrap();
    let (entry, shown) = admit_entry(&mut b, rid, &env);
    assert!(shown.is_some());
    let (_, again) = admit_entry(&mut b, rid, &env);
    assert!(again.is_none(), "a repeat is not shown twice");

    let payload = entry.2.clone();
    let report = b
        .store_batch(rid, vec![(entry.1.clone(), payload)])
        .unwrap();
    assert_eq!(report.added, 1);
    assert!(report.appended.is_empty(), "shown already");
    assert!(matches!(
        b.commit(vec![entry]).unwrap()[0],
        Incoming::Duplicate
    ));
    assert_eq!(b.shown_unstored(), 0);
    assert_eq!(b.history("lobby", 10).unwrap().len(), 1);

    // The next message goes on from the journal.
    let (_, env2, _) = a.compose("lobby", "again").unwrap();
    assert!(admit_entry(&mut b, rid, &env2).1.is_some());
}

/// A batch stored at once sizes the room as the same messages one at a time would: an
/// author new to the room is a known sender from its second message on (counting it
/// as new each time made a writer of several messages in one batch look like several
/// members never met).
#[test]
fn a_batch_counts_its_senders_as_one_message_at_a_time_would() {
    let writers = tempfile::tempdir().unwrap();
    let (mut alice, _, mut carol) = three_in_lobby(&writers);
    let rid = Room::named("lobby", None).unwrap().id;
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut one, mut batched) = (core(&d1, 1), core(&d2, 1));
    let hello = carol.compose("lobby", "hello").unwrap().1;
    let envs: Vec<Envelope> = (0..4)
        .map(|i| alice.compose("lobby", &format!("m{i}")).unwrap().1)
        .collect();
    for x in [&mut one, &mut batched] {
        x.join(Room::named("lobby", None).unwrap()).unwrap();
        x.receive(&rid.topic(), hello.bytes().to_vec()).unwrap();
    }
    for env in &envs {
        one.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
    }
    let entries: Vec<_> = envs
        .iter()
        .map(
            |env| match batched.admit(&rid.topic(), env.bytes().to_vec()) {
                Admitted::Entry(e) => *e,
                Admitted::Done(i) => panic!("{i:?}"),
            },
        )
        .collect();
    let out = batched.commit(entries).unwrap();
    assert!(
        out.iter().all(|i| matches!(i, Incoming::Accepted(..))),
        "{out:?}"
    );
    for x in [&one, &batched] {
        assert_eq!(x.member_count(rid), 3);
        assert_eq!(
            x.room_size(rid),
            3,
            "a writer of four messages is one member"
        );
    }
}

/// A new room's size is unknown, however big, until more members are known than we
/// are connected to or a known sender is heard again: what paces its first receipts
/// (`receipt::first_spacing`).
#[test]
fn a_rooms_size_is_known_once_a_sender_is_heard_again() {
    let writers = tempfile::tempdir().unwrap();
    let (mut alice, _, mut carol) = three_in_lobby(&writers);
    let rid = Room::named("lobby", None).unwrap().id;
    let d = tempfile::tempdir().unwrap();
    let mut x = core(&d, 1);
    x.join(Room::named("lobby", None).unwrap()).unwrap();
    assert!(!x.room_size_known(rid, 11), "nobody heard yet");
    for env in [
        alice.compose("lobby", "a1").unwrap().1,
        carol.compose("lobby", "c1").unwrap().1,
    ] {
        x.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
    }
    assert!(
        !x.room_size_known(rid, 11),
        "two new senders fit a room of any size"
    );
    assert!(
        x.room_size_known(rid, 2),
        "three members known, more than the two we are connected to"
    );
    let again = alice.compose("lobby", "a2").unwrap().1;
    x.receive(&rid.topic(), again.bytes().to_vec()).unwrap();
    assert!(x.room_size_known(rid, 11), "alice heard again");
}

/// A pulled batch checked on several threads gives what one thread gives, in order,
/// although the slice holding the author's key may be checked last.
#[test]
fn batches_checked_in_parallel_match_one_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, b, rid) = two_in_lobby(&dir);
    let mut batch: Vec<Vec<u8>> = (0..200)
        .map(|i| a.compose("lobby", &format!("m{i}")).unwrap().1.into_bytes())
        .collect();
    // One tampered entry in the third slice.
    let last = batch[130].len() - 1;
    batch[130][last] ^= 1;
    let room = b.room(&rid).unwrap();
    let outcome = |threads: usize| -> Vec<Result<u64, Rejection>> {
        // A reader that has not met the author: only entry 1 carries the key.
        let keys = AuthorKeys::default();
        check_batch(&b.identity, room, &batch, &keys, threads)
            .into_iter()
            .map(|r| r.map(|(env, _)| env.seq))
            .collect()
    };
    let one = outcome(1);
    assert_eq!(one[0], Ok(1));
    assert_eq!(one[199], Ok(200));
    assert_eq!(one[130], Err(Rejection::BadSignature));
    assert_eq!(one.iter().filter(|r| r.is_err()).count(), 1);
    for threads in [2, 3, 4, 64] {
        assert_eq!(outcome(threads), one, "{threads} threads");
    }
}

/// An author's key arrives with its first entry of a room: a later entry that comes
/// first waits (not counted as invalid), is accepted once the first is in, and a
/// restarted node knows the key again from its journal.
#[test]
fn author_keys_come_with_first_entries_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, rid) = two_in_lobby(&dir);
    let (_, first, _) = a.compose("lobby", "one").unwrap();
    let (_, second, _) = a.compose("lobby", "two").unwrap();
    assert!(first.carries_key && !second.carries_key);

    assert!(matches!(
        b.receive(&rid.topic(), second.bytes().to_vec()).unwrap(),
        Incoming::UnknownAuthor
    ));
    assert_eq!(b.counters().rejected.values().sum::<u64>(), 0);
    assert!(matches!(
        b.receive(&rid.topic(), first.bytes().to_vec()).unwrap(),
        Incoming::Accepted(..)
    ));
    assert!(matches!(
        b.receive(&rid.topic(), second.bytes().to_vec()).unwrap(),
        Incoming::Accepted(..)
    ));
    b.flush().unwrap();
    drop(b);

    let mut b = core(&dir, 1);
    assert!(b.author_keys().get(&identities()[0].id()).is_some());
    assert_eq!(b.history("lobby", 10).unwrap().len(), 2);
    let (_, third, _) = a.compose("lobby", "three").unwrap();
    assert!(matches!(
        b.receive(&rid.topic(), third.bytes().to_vec()).unwrap(),
        Incoming::Accepted(..)
    ));
}

#[test]
fn members_are_named_by_their_last_message_and_counted_by_what_we_hold() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, mut c) = three_in_lobby(&dir);
    let rid = Room::named("lobby", None).unwrap().id;
    for text in ["one", "two"] {
        let (_, env, _) = a.compose("lobby", text).unwrap();
        b.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
        c.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
    }
    // Carol says what she holds, and writes nothing.
    let receipt = c.compose_receipt(rid, true).unwrap().unwrap();
    b.receive(&rid.topic(), receipt.into_bytes()).unwrap();
    let named = |b: &Core| {
        let (reader, list) = b.members("lobby").unwrap();
        reader.name_members(list).unwrap()
    };
    let list = named(&b);
    let got: Vec<(Option<String>, Option<String>, u64, bool)> = list
        .iter()
        .map(|m| (m.name.clone(), m.contact.clone(), m.messages, m.me))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some("bob".into()), None, 0, true),
            (Some("alice".into()), None, 2, false),
            (None, None, 0, false),
        ]
    );
    assert_eq!(list[1].user_id, identities()[0].id().to_hex());
    assert_eq!(list[2].user_id, identities()[2].id().to_hex());
    // Her edits and reactions are not messages.
    let alice = identities()[0].id().to_hex();
    let edit = a.compose_revision("lobby", 1, Some("one!")).unwrap().1;
    let reaction = a
        .compose_reaction("lobby", &alice, 2, "👍", false)
        .unwrap()
        .1;
    for env in [edit, reaction] {
        b.receive(&rid.topic(), env.into_bytes()).unwrap();
    }
    let list = named(&b);
    assert_eq!(
        (list[1].name.as_deref(), list[1].messages),
        (Some("alice"), 2)
    );
    // Nor are they in the room's count, what readers count as unread.
    let lobby = |x: &Core| x.room_view(x.room_by_name("lobby").unwrap()).unwrap();
    assert_eq!(lobby(&b).messages, 2);
    assert_eq!(b.journal.count(&rid.0).unwrap(), 4);
    b.flush().unwrap();
    drop(b);
    let mut b = core(&dir, 1);
    assert_eq!(lobby(&b).messages, 2, "the count is kept on disk");
    // A contact shows by our name for it.
    b.add_contact("ally", &identities()[0].contact_code().encode())
        .unwrap();
    assert_eq!(named(&b)[1].contact.as_deref(), Some("ally"));
    assert!(matches!(
        b.members("nowhere"),
        Err(CoreError::UnknownRoom(_))
    ));
}

#[test]
fn direct_messages_reach_only_the_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = core(&dir, 0);
    let mut b = core(&dir, 1);
    let mut c = core(&dir, 2);
    let b_code = identities()[1].contact_code().encode();
    let a_code = identities()[0].contact_code().encode();
    a.add_contact("bob", &b_code).unwrap();
    b.add_contact("Jos\u{e9}", &a_code).unwrap();
    b.remove_contact("JOSE\u{301}").unwrap();
    b.add_contact("alice", &a_code).unwrap();
    // A contact is named in any case or accent form, and so is its direct room.
    assert_eq!(
        a.direct_room("@Bob"),
        a.room_by_name("@BOB").ok().map(|r| r.id)
    );
    assert!(a.direct_room("Bob").is_some());
    let (rid, env, _) = a.compose("@bob", "secret").unwrap();
    let Incoming::Accepted(v, _) = b.receive(&rid.topic(), env.bytes().to_vec()).unwrap() else {
        panic!("bob should read it")
    };
    assert_eq!(v.contact.as_deref(), Some("alice"));
    // Carol knows both public keys, so she can build the room exactly, but cannot read.
    let mut forged = Room::direct(
        identities()[0].contact_code().into(),
        identities()[1].contact_code().into(),
    );
    assert_eq!(forged.id, rid);
    forged.name = "spy".into();
    c.join(forged.clone()).unwrap();
    assert!(matches!(
        c.receive(&rid.topic(), env.bytes().to_vec()).unwrap(),
        Incoming::Rejected(Rejection::Undecryptable)
    ));
    // A room whose member list lacks the author refuses its entries outright.
    let mut wrong_members = Room::direct(
        identities()[2].contact_code().into(),
        identities()[1].contact_code().into(),
    );
    wrong_members.id = rid;
    assert_eq!(
        check(
            &identities()[2],
            &wrong_members,
            env.bytes().to_vec(),
            &AuthorKeys::default()
        )
        .err(),
        Some(Rejection::NotAMember)
    );
}

#[test]
fn group_rooms_are_shared_by_their_members_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut cores: Vec<Core> = (0..3).map(|i| core(&dir, i)).collect();
    let names = ["alice", "bob", "carol"];
    for (i, c) in cores.iter_mut().enumerate() {
        for (j, name) in names.iter().enumerate() {
            if i != j {
                c.add_contact(name, &identities()[j].contact_code().encode())
                    .unwrap();
            }
        }
    }
    let views: Vec<RoomView> = cores
        .iter_mut()
        .enumerate()
        .map(|(i, c)| {
            let others: Vec<String> = names
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, n)| n.to_string())
                .collect();
            c.create_group("team", &others).unwrap().0
        })
        .collect();
    assert!(
        views.windows(2).all(|w| w[0].id == w[1].id),
        "same group id"
    );
    let (rid, env, _) = cores[0].compose("team", "standup at 10").unwrap();
    for c in &mut cores[1..] {
        let Incoming::Accepted(v, _) = c.receive(&rid.topic(), env.bytes().to_vec()).unwrap()
        else {
            panic!("members read group messages")
        };
        assert_eq!(v.text.as_deref(), Some("standup at 10"));
        assert_eq!(v.known_members, 2);
    }
    // A group needs known contacts.
    assert!(matches!(
        cores[0].create_group("x", &["mallory".into()]),
        Err(CoreError::UnknownContact(_))
    ));
}

#[test]
fn a_group_invites_its_members_whose_nodes_join_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, mut c) = (core(&dir, 0), core(&dir, 1), core(&dir, 2));
    let code = |i: usize| identities()[i].contact_code().encode();
    // Alice knows both; Bob and Carol know Alice only (Bob calls her "ally").
    a.add_contact("bob", &code(1)).unwrap();
    a.add_contact("carol", &code(2)).unwrap();
    b.add_contact("ally", &code(0)).unwrap();
    c.add_contact("alice", &code(0)).unwrap();
    // Carol has a room named "team" already.
    c.join(Room::named("team", None).unwrap()).unwrap();

    let (group, invites) = a
        .create_group("team", &["bob".into(), "@carol".into()])
        .unwrap();
    let rooms: Vec<&str> = invites.iter().map(|(_, _, v)| v.room.as_str()).collect();
    assert_eq!(rooms, ["@bob", "@carol"]);
    let (_, env, view) = &invites[0];
    assert!(view.mine && view.invite.is_some());
    // Its words are written for the invitee; its author reads whom it went to.
    assert_eq!(
        view.text.as_deref(),
        Some("invited bob to the group 'team' (alice, bob, carol)")
    );
    let mine = a.history("@bob", 10).unwrap();
    assert_eq!(mine[0].text, view.text, "in history too");
    assert_eq!(a.join_invited(view).unwrap().map(|r| r.name), None, "ours");
    // Its text says what it invites to: it cannot be edited (it can be deleted).
    let err = a
        .compose_revision("@bob", view.seq, Some("come to the party"))
        .unwrap_err();
    assert!(
        matches!(err, CoreError::NotEditable(_, "it is an invitation")),
        "{err}"
    );

    let Incoming::Accepted(seen, _) = b.receive(&env.room.topic(), env.bytes().to_vec()).unwrap()
    else {
        panic!("bob reads the invitation")
    };
    assert_eq!(
        seen.text.as_deref(),
        Some("invites you to the group 'team' (alice, bob, carol)")
    );
    let joined = b.join_invited(&seen).unwrap().expect("bob joins");
    assert_eq!(
        (joined.name.as_str(), joined.id.to_hex()),
        ("team", group.id.clone())
    );
    let mut members = b.room_view(&joined).unwrap().members;
    members.sort();
    assert_eq!(
        members,
        ["ally", "bob", "carol"],
        "contacts by our names for them"
    );
    assert!(b.join_invited(&seen).unwrap().is_none(), "joined once");
    // An edit of it written all the same (by another client) changes nothing; its
    // deletion leaves no invitation behind.
    let (seq, original) = (seen.seq, seen.text.clone());
    for text in [Some("come to the party"), None] {
        let revision = Payload {
            text: text.map(str::to_string),
            revises: Some(seq),
            ..Payload::default()
        };
        let (rid, env, _) = a.compose_entry("@bob", Kind::Revision, revision).unwrap();
        b.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
        let shown = b.history("@ally", 10).unwrap();
        let invitation = shown.iter().find(|m| m.seq == seq).unwrap();
        match text {
            Some(_) => assert_eq!(
                (
                    &invitation.text,
                    invitation.edited_ms,
                    invitation.invite.is_some()
                ),
                (&original, None, true)
            ),
            None => assert!(invitation.deleted && invitation.invite.is_none()),
        }
    }

    let (_, env, _) = &invites[1];
    let Incoming::Accepted(seen, _) = c.receive(&env.room.topic(), env.bytes().to_vec()).unwrap()
    else {
        panic!("carol reads the invitation")
    };
    let joined = c.join_invited(&seen).unwrap().expect("carol joins");
    assert_eq!(joined.name, "team (alice)", "her own 'team' keeps its name");
    assert_eq!(joined.id.to_hex(), group.id);
    drop(c);
    let mut c = core(&dir, 2);
    assert!(c.room_by_name("team (alice)").is_ok(), "kept on disk");

    // All three read the group.
    let (rid, env, _) = a.compose("team", "welcome").unwrap();
    let Incoming::Accepted(v, _) = b.receive(&rid.topic(), env.bytes().to_vec()).unwrap() else {
        panic!("bob reads the group")
    };
    assert_eq!(v.room, "team");
    let Incoming::Accepted(v, _) = c.receive(&rid.topic(), env.bytes().to_vec()).unwrap() else {
        panic!("carol reads the group")
    };
    assert_eq!(v.room, "team (alice)");
    // A group needs known contacts; nothing is written without them.
    assert!(matches!(
        a.create_group("x", &["bob".into(), "mallory".into()]),
        Err(CoreError::UnknownContact(_))
    ));
    assert!(a.room_by_name("x").is_err());
}

#[test]
fn malformed_invitations_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = contacts_pair(&dir);
    let code = |i: usize| identities()[i].contact_code().encode();
    a.join(Room::named("lobby", None).unwrap()).unwrap();
    b.join(Room::named("lobby", None).unwrap()).unwrap();
    let direct = a.room_by_name("@bob").unwrap().id;
    let lobby = a.room_by_name("lobby").unwrap().id;
    let invite = |name: &str, members: &[String]| crate::envelope::Invite {
        name: name.into(),
        members: members.to_vec(),
        shared: None,
    };
    let shared = |name: &str, id: &str, key: &str, password| crate::envelope::Invite {
        name: name.into(),
        members: Vec::new(),
        shared: Some(crate::envelope::SharedRoom {
            id: id.into(),
            key: key.into(),
            password,
        }),
    };
    let den = crate::envelope::Invite::named(&Room::named("den", None).unwrap()).unwrap();
    let den_keys = den.shared.clone().unwrap();
    let good = invite("team", &[code(0), code(1), code(2)]);
    let payload = |text: Option<&str>, invite: crate::envelope::Invite| Payload {
        from: "alice".into(),
        text: text.map(str::to_string),
        invite: Some(invite),
        ..Payload::default()
    };
    // Well formed: to a group, and to a named room.
    for ok in [good.clone(), den.clone()] {
        let passes = rejection_of(&a, &b, direct, Kind::Text, 1, &payload(Some("hi"), ok));
        assert_eq!(passes, None);
    }
    let cases = [
        (
            lobby,
            Kind::Text,
            payload(Some("hi"), good.clone()),
            "in a named room",
        ),
        (direct, Kind::Text, payload(None, good.clone()), "no text"),
        (
            direct,
            Kind::Reaction,
            payload(None, good.clone()),
            "not a text",
        ),
        (
            direct,
            Kind::Text,
            payload(Some("hi"), invite("team", &[code(0), code(2)])),
            "not to us",
        ),
        (
            direct,
            Kind::Text,
            payload(Some("hi"), invite("team", &[code(1), code(2)])),
            "not from its author's group",
        ),
        (
            direct,
            Kind::Text,
            payload(
                Some("hi"),
                invite("team", &[code(0), "cc1:nonsense".into()]),
            ),
            "a bad code",
        ),
        (
            direct,
            Kind::Text,
            payload(Some("hi"), invite(" ", &[code(0), code(1)])),
            "no name",
        ),
        (
            direct,
            Kind::Text,
            payload(
                Some("hi"),
                shared("den", &den_keys.id, &"ab".repeat(32), false),
            ),
            "not the key the name gives",
        ),
        (
            direct,
            Kind::Text,
            payload(
                Some("hi"),
                shared("lounge", &den_keys.id, &den_keys.key, false),
            ),
            "not the id the name gives",
        ),
        (
            direct,
            Kind::Text,
            payload(Some("hi"), shared("den", "xyz", &den_keys.key, true)),
            "a bad id",
        ),
        (
            direct,
            Kind::Text,
            payload(
                Some("hi"),
                crate::envelope::Invite {
                    members: vec![code(0), code(1)],
                    ..den.clone()
                },
            ),
            "a group and a named room at once",
        ),
        (
            direct,
            Kind::Text,
            payload(
                Some("hi"),
                invite(
                    "team",
                    &vec![code(0); 40]
                        .into_iter()
                        .chain([code(1)])
                        .collect::<Vec<_>>(),
                ),
            ),
            "too many",
        ),
    ];
    for (rid, kind, payload, why) in cases {
        assert_eq!(
            rejection_of(&a, &b, rid, kind, 1, &payload),
            Some(Rejection::Malformed),
            "{why}"
        );
    }
}

#[test]
fn a_runaway_lamport_clock_cannot_stop_a_room() {
    let dir = tempfile::tempdir().unwrap();
    let (_alice, mut b, _) = two_in_lobby(&dir);
    let room = Room::named("lobby", None).unwrap();
    let pos = Position {
        seq: 1,
        prev: [0; 32],
        lamport: crate::envelope::MAX_LAMPORT - 1,
        timestamp_ms: 0,
    };
    let payload = Payload {
        from: "alice".into(),
        text: Some("far future".into()),
        receipt: None,
        file: None,
        revises: None,
        reply_to: None,
        react: None,
        invite: None,
    };
    let env = Envelope::seal(&identities()[0], &room, Kind::Text, pos, &payload).unwrap();
    assert!(matches!(
        b.receive(&room.id.topic(), env.bytes().to_vec()).unwrap(),
        Incoming::Accepted(..)
    ));
    let (_, next, _) = b.compose("lobby", "still talking").unwrap();
    assert_eq!(next.lamport, crate::envelope::MAX_LAMPORT - 1);
}

#[test]
fn another_identity_cannot_open_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    drop(core(&dir, 0));
    let j = Core::open_journal(&dir.path().join("j0.redb")).unwrap();
    let err = Core::open(identities()[1].clone(), j).err().unwrap();
    assert!(matches!(err, CoreError::WrongIdentity(_)), "{err}");
}

#[test]
fn rooms_and_contacts_persist_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = core(&dir, 0);
    a.join(Room::named("secret room", Some("room pw")).unwrap())
        .unwrap();
    a.add_contact("bob", &identities()[1].contact_code().encode())
        .unwrap();
    drop(a);
    let raw = std::fs::read(dir.path().join("j0.redb")).unwrap();
    assert!(!raw.windows(11).any(|w| w == b"secret room"));
    assert!(
        !raw.windows(3).any(|w| w == b"bob"),
        "contact names are sealed"
    );
    let a = core(&dir, 0);
    assert!(a.room_by_name("secret room").is_ok());
    assert!(a.room_by_name("@bob").is_ok());
    assert_eq!(a.contacts().len(), 1);
}

/// The texts of a room's history as `x` shows it, deleted messages as "(deleted)".
fn texts(x: &Core) -> Vec<String> {
    x.history("lobby", 100)
        .unwrap()
        .into_iter()
        .map(|m| match (m.deleted, m.text, m.file) {
            (true, ..) => "(deleted)".to_string(),
            (_, Some(t), _) if m.edited_ms.is_some() => format!("{t} (edited)"),
            (_, Some(t), _) => t,
            (_, None, Some(f)) => f.name,
            _ => "?".to_string(),
        })
        .collect()
}

#[test]
fn edits_and_deletions_reach_members_and_history_shows_the_latest() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, rid) = two_in_lobby(&dir);
    let mut send = |env: Envelope| b.receive(&rid.topic(), env.into_bytes()).unwrap();
    for t in ["hello", "lunch at noon?", "bye"] {
        let (_, env, _) = a.compose("lobby", t).unwrap();
        send(env);
    }
    let (_, env, view) = a.compose_revision("lobby", 1, Some("hello, all")).unwrap();
    assert_eq!(
        (view.kind, view.revises, view.deleted),
        (Kind::Revision, Some(1), false)
    );
    match send(env) {
        Incoming::Accepted(v, _) => {
            assert_eq!(v.revises, Some(1));
            assert_eq!(v.text.as_deref(), Some("hello, all"));
        }
        other => panic!("the edit was not accepted: {other:?}"),
    }
    let (_, env, _) = a
        .compose_revision("lobby", 1, Some("hello, everyone"))
        .unwrap();
    send(env);
    let (_, env, view) = a.compose_revision("lobby", 2, None).unwrap();
    assert!(view.deleted);
    send(env);
    let expected = ["hello, everyone (edited)", "(deleted)", "bye"];
    assert_eq!(texts(&b), expected);
    assert_eq!(texts(&a), expected);
    // Revisions are not listed, and do not take a place in a page.
    let last = b.history("lobby", 1).unwrap();
    assert_eq!(last[0].text.as_deref(), Some("bye"));
    // A search looks in what a message says now.
    let reader = b.reader("lobby").unwrap();
    let search = |s: &str| {
        let q = Query {
            contains: Some(s.into()),
            ..Query::last(10)
        };
        reader.query(&q).unwrap().len()
    };
    assert_eq!(
        (search("everyone"), search("all"), search("lunch")),
        (1, 0, 0)
    );

    // Only our own messages, as they are now, can be revised, and text only edited.
    let refused = |r: Result<_, CoreError>| r.map(|_| ()).unwrap_err().to_string();
    assert!(refused(a.compose_revision("lobby", 2, Some("again"))).contains("deleted"));
    assert!(refused(a.compose_revision("lobby", 2, None)).contains("deleted"));
    assert!(refused(a.compose_revision("lobby", 99, None)).contains("no message #99"));
    // Entry 4 is a revision itself.
    assert!(refused(a.compose_revision("lobby", 4, None)).contains("no message #4"));
    // So is a reaction: it is taken back with `react --undo`, not edited or deleted.
    let me = a.identity.id().to_hex();
    let (_, _, reaction) = a
        .compose_reaction("lobby", &me[..8], 3, "👍", false)
        .unwrap();
    for text in [Some("👎"), None] {
        let err = refused(a.compose_revision("lobby", reaction.seq, text));
        assert!(
            err.contains(&format!("no message #{}", reaction.seq)),
            "{err}"
        );
    }
    assert!(refused(b.compose_revision("lobby", 1, Some("mine now"))).contains("no message #1"));
    assert!(matches!(
        a.compose_revision("lobby", 3, Some("  ")),
        Err(CoreError::EmptyMessage)
    ));
    let file = crate::files::seal_file("notes.txt", 5, &b"notes"[..], |_, _| Ok(())).unwrap();
    let (_, _, shared) = a.compose_file("lobby", file).unwrap();
    assert!(refused(a.compose_revision("lobby", shared.seq, Some("x"))).contains("is a file"));
    a.compose_revision("lobby", shared.seq, None).unwrap();
    assert!(
        a.reader("lobby")
            .unwrap()
            .find_file(&shared.file.unwrap().id)
            .is_err()
    );
    assert_eq!(texts(&a).last().map(String::as_str), Some("(deleted)"));
}

#[test]
fn a_revision_that_arrives_before_its_message_applies_once_both_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, _) = two_in_lobby(&dir);
    let mut envs = vec![];
    for t in ["one", "two"] {
        envs.push(a.compose("lobby", t).unwrap().1);
    }
    envs.push(
        a.compose_revision("lobby", 2, Some("two, edited"))
            .unwrap()
            .1,
    );
    envs.push(a.compose_revision("lobby", 1, None).unwrap().1);
    let room = b.reader("lobby").unwrap().room_id();
    // (Seq 1 carries Alice's key: checked first.)
    let mut v: Vec<Option<(Envelope, Payload)>> = envs
        .iter()
        .map(|e| {
            let bytes = e.bytes().to_vec();
            Some(check(&b.identity, b.room(&room).unwrap(), bytes, &b.keys).unwrap())
        })
        .collect();
    let mut take = |i: usize| v[i].take().unwrap();
    let (first, gap, edit, deletion) = (take(0), take(1), take(2), take(3));
    b.store_batch(room, vec![first]).unwrap();
    // The revisions come next, held behind the gap at seq 2.
    let held = b.store_batch(room, vec![edit, deletion]).unwrap();
    assert_eq!(held.pending, 2);
    // Signed by the author, the deletion applies at once in history.
    assert_eq!(texts(&b), ["(deleted)"]);
    let report = b.store_batch(room, vec![gap]).unwrap();
    // The message and both revisions come out in order, for live views to apply.
    let revises: Vec<_> = report.appended.iter().map(|m| m.revises).collect();
    assert_eq!(revises, [None, Some(2), Some(1)]);
    assert_eq!(texts(&b), ["(deleted)", "two, edited (edited)"]);
}

#[test]
fn malformed_revisions_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, b, rid) = two_in_lobby(&dir);
    a.compose("lobby", "hello").unwrap();
    let cases = [
        (Kind::Revision, None, 2),    // names no message
        (Kind::Revision, Some(2), 2), // names itself
        (Kind::Revision, Some(0), 2), // names no seq
        (Kind::Revision, Some(5), 2), // names a later one
        (Kind::Text, Some(1), 2),     // a message that says it revises
    ];
    for (kind, revises, seq) in cases {
        let payload = Payload {
            from: "alice".into(),
            text: Some("sneaky".into()),
            revises,
            ..Payload::default()
        };
        assert_eq!(
            rejection_of(&a, &b, rid, kind, seq, &payload),
            Some(Rejection::Malformed),
            "{kind:?} revising {revises:?}"
        );
    }
}

#[test]
fn a_reply_quotes_the_message_it_answers_named_by_author_and_seq() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, rid) = two_in_lobby(&dir);
    let long = format!("lunch at noon? {}", "é".repeat(300));
    for t in [long.as_str(), "or one?", "never mind"] {
        let (_, env, _) = a.compose("lobby", t).unwrap();
        b.receive(&rid.topic(), env.into_bytes()).unwrap();
    }
    let (_, env, _) = a.compose_revision("lobby", 3, None).unwrap();
    b.receive(&rid.topic(), env.into_bytes()).unwrap();
    let alice = a.identity.id().to_hex();
    let (_, env, view) = b.compose_reply("lobby", "yes!", &alice[..8], 1).unwrap();
    let to = view.reply_to.expect("a reply");
    assert_eq!((to.author_id.as_str(), to.seq), (alice.as_str(), 1));
    assert!(to.quote.len() <= crate::envelope::MAX_QUOTE && to.quote.ends_with('…'));
    assert!(long.starts_with(to.quote.trim_end_matches('…')));
    // Alice gets it as sent, and so does her history.
    assert!(matches!(
        a.receive(&rid.topic(), env.into_bytes()).unwrap(),
        Incoming::Accepted(..)
    ));
    let last = a.history("lobby", 1).unwrap().pop().unwrap();
    assert_eq!(last.reply_to.as_deref(), Some(&*to));
    // A contact's name does for the author; a short quote is whole.
    let code = a.identity.contact_code().encode();
    b.add_contact("alice", &code).unwrap();
    let (_, _, view) = b.compose_reply("lobby", "which one?", "alice", 2).unwrap();
    assert_eq!(view.reply_to.unwrap().quote, "or one?");

    let refused = |r: Result<_, CoreError>| r.map(|_| ()).unwrap_err().to_string();
    assert!(refused(b.compose_reply("lobby", "x", &alice[..8], 9)).contains("no message"));
    assert!(refused(b.compose_reply("lobby", "x", &alice[..7], 1)).contains("no message"));
    assert!(refused(b.compose_reply("lobby", "x", "carol", 1)).contains("no message"));
    // Named back as the user named it, a contact by its name.
    let err = refused(b.compose_reply("lobby", "x", "alice", 9));
    assert!(err.contains("no message alice#9 in room 'lobby'"), "{err}");
    let err = refused(b.compose_reaction("lobby", "alice", 9, "👍", false));
    assert!(err.contains("no message alice#9"), "{err}");
    assert!(refused(b.compose_reply("lobby", "x", &alice, 3)).contains("was deleted"));
    // Entry 4 is Alice's deletion, not a message.
    assert!(refused(b.compose_reply("lobby", "x", &alice, 4)).contains("no message"));
    assert!(matches!(
        b.compose_reply("lobby", " ", &alice, 1),
        Err(CoreError::EmptyMessage)
    ));
}

#[test]
fn malformed_replies_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, rid) = two_in_lobby(&dir);
    let id = a.identity.id().to_hex();
    let to = |author_id: &str, seq, quote: &str| crate::envelope::ReplyTo {
        author_id: author_id.to_string(),
        seq,
        quote: quote.to_string(),
    };
    let file = crate::files::seal_file("a.txt", 1, &b"a"[..], |_, _| Ok(())).unwrap();
    let cases = [
        (Kind::Text, to(&id[..63], 1, "short id")),
        (Kind::Text, to(&id.to_uppercase(), 1, "upper case")),
        (Kind::Text, to(&id, 0, "seq 0")),
        (
            Kind::Text,
            to(&id, 1, &"q".repeat(crate::envelope::MAX_QUOTE + 1)),
        ),
        (Kind::File, to(&id, 1, "a file that replies")),
    ];
    for (kind, reply_to) in cases {
        let payload = Payload {
            from: "alice".into(),
            text: (kind == Kind::Text).then(|| "hi".to_string()),
            file: (kind == Kind::File).then(|| file.clone()),
            reply_to: Some(reply_to.clone()),
            ..Payload::default()
        };
        assert_eq!(
            rejection_of(&a, &b, rid, kind, 1, &payload),
            Some(Rejection::Malformed),
            "{kind:?} {reply_to:?}"
        );
    }
}

#[test]
fn a_removed_contact_stays_removed_after_a_restart_and_its_room_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = core(&dir, 0);
    let bob = identities()[1].contact_code().encode();
    a.add_contact("bob", &bob).unwrap();
    a.add_contact("carol", &identities()[2].contact_code().encode())
        .unwrap();
    a.compose("@bob", "hi bob").unwrap();
    // A contact written by an earlier version, under its name.
    let dave = Identity::derive_unchecked("dave", "dave test password", KeySize::Rsa2048)
        .unwrap()
        .contact_code()
        .encode();
    let legacy = format!("{CONTACT_PREFIX}dave");
    let blob = a
        .seal(&legacy, &serde_json::to_vec(&("dave", &dave)).unwrap())
        .unwrap();
    a.journal.put_setting(&legacy, &blob).unwrap();
    drop(a);
    let mut a = core(&dir, 0);
    let names = |a: &Core| a.contacts().into_iter().map(|c| c.name).collect::<Vec<_>>();
    assert_eq!(names(&a), ["bob", "carol", "dave"]);

    let (removed, room) = a.remove_contact("@bob").unwrap();
    assert_eq!(
        (removed.name.as_str(), removed.room.as_str()),
        ("bob", "@bob")
    );
    assert_eq!(room.map(|r| r.name), Some("@bob".to_string()));
    assert!(a.room_by_name("@bob").is_err());
    assert!(matches!(
        a.remove_contact("bob"),
        Err(CoreError::UnknownContact(_))
    ));
    // Dave has no direct room here: removing him leaves none.
    assert!(a.remove_contact("dave").unwrap().1.is_none());
    drop(a);
    let mut a = core(&dir, 0);
    assert_eq!(names(&a), ["carol"]);
    assert!(a.room_by_name("@bob").is_err() && a.room_by_name("@carol").is_ok());
    // Adding Bob again shows the history kept on disk.
    a.add_contact("bob", &bob).unwrap();
    let history = a.history("@bob", 10).unwrap();
    assert_eq!(history[0].text.as_deref(), Some("hi bob"));
}

#[test]
fn reactions_stand_until_taken_back_and_show_on_the_message_they_react_to() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, mut c) = three_in_lobby(&dir);
    let rid = a.reader("lobby").unwrap().room_id();
    let (_, env, _) = a.compose("lobby", "lunch at noon?").unwrap();
    for x in [&mut b, &mut c] {
        x.receive(&rid.topic(), env.bytes().to_vec()).unwrap();
    }
    let alice = a.identity.id().to_hex();
    let (bob, carol) = (b.identity.id().to_hex(), c.identity.id().to_hex());
    for (who, emoji) in [(0, "👍"), (1, "👍"), (1, "🎉"), (0, "🎉")] {
        let x = if who == 0 { &mut b } else { &mut c };
        let (_, env, view) = x
            .compose_reaction("lobby", &alice[..8], 1, emoji, false)
            .unwrap();
        assert_eq!(view.kind, Kind::Reaction);
        assert_eq!(view.react.as_ref().map(|r| r.emoji.as_str()), Some(emoji));
        a.receive(&rid.topic(), env.into_bytes()).unwrap();
    }
    // Bob takes his 🎉 back; a second 👍 of Carol's counts once.
    let (_, env, _) = b.compose_reaction("lobby", &alice, 1, "🎉", true).unwrap();
    a.receive(&rid.topic(), env.into_bytes()).unwrap();
    let (_, env, _) = c.compose_reaction("lobby", &alice, 1, "👍", false).unwrap();
    a.receive(&rid.topic(), env.into_bytes()).unwrap();
    let shown = a.history("lobby", 10).unwrap();
    assert_eq!(shown.len(), 1, "reactions are not listed as messages");
    let reactions: Vec<(&str, Vec<&str>)> = shown[0]
        .reactions
        .iter()
        .map(|r| (r.emoji.as_str(), r.by.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(
        reactions,
        [
            ("👍", vec![bob.as_str(), carol.as_str()]),
            ("🎉", vec![carol.as_str()])
        ]
    );
    // Reacting to what is not there, or with something that is not a reaction, is refused.
    let refused = |r: Result<_, CoreError>| r.map(|_| ()).unwrap_err().to_string();
    assert!(refused(b.compose_reaction("lobby", &alice, 7, "👍", false)).contains("no message"));
    assert!(
        refused(b.compose_reaction("lobby", &alice, 1, "two words", false))
            .contains("not a reaction")
    );
    assert!(refused(b.compose_reaction("lobby", &alice, 1, "", false)).contains("not a reaction"));
    let long = "x".repeat(crate::envelope::MAX_REACTION + 1);
    assert!(
        refused(b.compose_reaction("lobby", &alice, 1, &long, false)).contains("not a reaction")
    );
    // A deleted message keeps no reactions.
    let (_, env, _) = a.compose_revision("lobby", 1, None).unwrap();
    drop(env);
    assert!(a.history("lobby", 10).unwrap()[0].reactions.is_empty());
}

#[test]
fn malformed_reactions_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, rid) = two_in_lobby(&dir);
    let id = a.identity.id().to_hex();
    let react = |emoji: &str| crate::envelope::React {
        author_id: id.clone(),
        seq: 1,
        emoji: emoji.to_string(),
        undo: false,
    };
    let cases = [
        (Kind::Reaction, None, None),                      // reacts to nothing
        (Kind::Reaction, Some(react("a b")), None),        // not a reaction
        (Kind::Reaction, Some(react("👍")), Some("text")), // carries a text
        (Kind::Text, Some(react("👍")), Some("text")),     // a text that reacts
    ];
    for (kind, react, text) in cases {
        let payload = Payload {
            from: "alice".into(),
            text: text.map(str::to_string),
            react: react.clone(),
            ..Payload::default()
        };
        assert_eq!(
            rejection_of(&a, &b, rid, kind, 1, &payload),
            Some(Rejection::Malformed),
            "{kind:?} {react:?} {text:?}"
        );
    }
}

/// How Bob's node takes an envelope of `kind` that Alice seals with `payload` at `seq`
/// (its lamport the same): the rejection, if any.
fn rejection_of(
    a: &Core,
    b: &Core,
    rid: RoomId,
    kind: Kind,
    seq: u64,
    payload: &Payload,
) -> Option<Rejection> {
    let pos = Position {
        seq,
        prev: [0; 32],
        lamport: seq,
        timestamp_ms: now_ms(),
    };
    let room = a.room(&rid).unwrap();
    let env = Envelope::seal(&a.identity, room, kind, pos, payload).unwrap();
    b.keys.insert(a.identity.public().clone());
    check(
        &b.identity,
        b.room(&rid).unwrap(),
        env.into_bytes(),
        &b.keys,
    )
    .err()
}

#[test]
fn an_ignored_author_is_neither_shown_nor_counted_nor_found_until_seen_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, rid) = two_in_lobby(&dir);
    let alice = a.identity.id().to_hex();
    let bob = b.identity.id().to_hex();
    let to_alice = |a: &mut Core, env: Envelope| {
        a.receive(&rid.topic(), env.into_bytes()).unwrap();
    };
    let (_, env, _) = a.compose("lobby", "hello").unwrap();
    b.receive(&rid.topic(), env.into_bytes()).unwrap();
    for text in ["buy now", "buy more", "buy it all"] {
        let env = b.compose("lobby", text).unwrap().1;
        to_alice(&mut a, env);
    }
    let env = b
        .compose_reaction("lobby", &alice, 1, "👍", false)
        .unwrap()
        .1;
    to_alice(&mut a, env);
    a.compose("lobby", "anyone?").unwrap();
    let texts = |a: &Core, limit| -> Vec<String> {
        a.history("lobby", limit)
            .unwrap()
            .into_iter()
            .filter_map(|m| m.text)
            .collect()
    };
    let lobby = |a: &Core| a.room_view(a.room_by_name("lobby").unwrap()).unwrap();
    assert_eq!(texts(&a, 10).len(), 5);
    assert_eq!(lobby(&a).messages, 5);

    let view = a.ignore("lobby", &bob[..8], false).unwrap();
    assert_eq!(view.user_id, bob);
    assert_eq!(texts(&a, 10), ["hello", "anyone?"]);
    assert_eq!(texts(&a, 1), ["anyone?"]);
    assert_eq!(
        texts(&a, 2),
        ["hello", "anyone?"],
        "the page fills with others'"
    );
    assert!(a.history("lobby", 10).unwrap()[0].reactions.is_empty());
    let q = Query {
        contains: Some("buy".into()),
        ..Query::last(10)
    };
    assert!(a.reader("lobby").unwrap().query(&q).unwrap().is_empty());
    assert_eq!(lobby(&a).messages, 2);
    let (reader, members) = a.members("lobby").unwrap();
    let members = reader.name_members(members).unwrap();
    drop(reader);
    let flagged: Vec<(bool, bool)> = members.iter().map(|m| (m.me, m.ignored)).collect();
    assert_eq!(flagged, [(true, false), (false, true)]);
    assert!(a.is_ignored(&bob) && !a.is_ignored(&alice));

    // Across a restart, and in every room.
    drop(a);
    let mut a = core(&dir, 0);
    assert_eq!(a.ignored().len(), 1);
    assert_eq!(texts(&a, 10), ["hello", "anyone?"]);
    // What cannot be ignored.
    assert!(matches!(
        a.ignore("lobby", &alice[..8], false),
        Err(CoreError::IgnoreSelf)
    ));
    for who in ["0000000000", "ab", "nobody"] {
        let err = a.ignore("lobby", who, false).unwrap_err();
        assert!(matches!(err, CoreError::NoAuthor(..)), "{who}: {err}");
    }
    assert!(matches!(
        a.ignore("nowhere", &bob[..8], false),
        Err(CoreError::UnknownRoom(_))
    ));
    // Seen again: all of it. (Named by the short form members are shown with.)
    let short = format!("{}-{}-{}", &bob[..4], &bob[4..8], &bob[8..12]);
    a.ignore("lobby", &short, true).unwrap();
    assert!(a.ignored().is_empty());
    assert_eq!(texts(&a, 10).len(), 5);
    assert_eq!(lobby(&a).messages, 5);
    assert_eq!(a.history("lobby", 10).unwrap()[0].reactions.len(), 1);
}

#[test]
fn an_invitation_from_a_room_joined_under_another_name_leads_to_the_same_room() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = contacts_pair(&dir);
    // Bob has rooms of his own named "den" and "team": Alice's join as "NAME (alice)".
    b.join(Room::named("den", Some("bob's own den password")).unwrap())
        .unwrap();
    b.join(Room::named("team", None).unwrap()).unwrap();
    let den = a.join(Room::named("den", None).unwrap()).unwrap().0.id;
    let seen = accepted(&mut b, &a.invite("den", &["bob".into()]).unwrap()[0]);
    assert_eq!(b.join_invited(&seen).unwrap().unwrap().name, "den (alice)");
    let (team, invites) = a.create_group("team", &["bob".into()]).unwrap();
    let seen = accepted(&mut b, &invites[0]);
    assert_eq!(b.join_invited(&seen).unwrap().unwrap().name, "team (alice)");
    // Alice leaves both, and Bob invites her back by his names for them.
    a.leave("den").unwrap();
    a.leave("team").unwrap();
    for (his, ours, id) in [
        ("den (alice)", "den", den.to_hex()),
        ("team (alice)", "team", team.id),
    ] {
        let invites = b.invite(his, &["alice".into()]).unwrap();
        let seen = accepted(&mut a, &invites[0]);
        let back = a.join_invited(&seen).unwrap().expect("alice joins");
        assert_eq!((back.name.as_str(), back.id.to_hex()), (ours, id));
        let text = seen.text.unwrap();
        assert!(text.contains(&format!("'{ours}'")), "{text}");
    }
}

#[test]
fn at_names_are_direct_rooms_only() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, _) = contacts_pair(&dir);
    // No room of any other kind may take a direct room's name: a message to a contact
    // would go there.
    for name in ["@bob", "@carol", " @x"] {
        let err = Room::named(name, None).map(|_| ()).unwrap_err();
        assert!(matches!(err, RoomError::ReservedName), "{name}: {err}");
        assert!(Room::named(name, Some("a long room password 77")).is_err());
    }
    let me: Member = identities()[0].contact_code().into();
    let bob: Member = identities()[1].contact_code().into();
    assert!(matches!(
        Room::group("@team", vec![me, bob]),
        Err(RoomError::ReservedName)
    ));
    assert!(Room::named("bob@home", None).is_ok(), "only at the start");
    // A direct room is left with its contact, not on its own.
    let err = a.leave("@bob").map(|_| ()).unwrap_err();
    assert!(matches!(err, CoreError::DirectRoom(_)), "{err}");
    assert!(err.to_string().contains("contact remove"), "{err}");
    assert!(a.room_by_name("@bob").is_ok());
    // One key has one contact name, so one direct room.
    let err = a
        .add_contact("robert", &identities()[1].contact_code().encode())
        .unwrap_err();
    assert!(
        matches!(&err, CoreError::SameContact(n) if n == "bob"),
        "{err}"
    );
    assert!(a.room_by_name("@robert").is_err());
    // Adding the same contact again changes nothing.
    a.add_contact("bob", &identities()[1].contact_code().encode())
        .unwrap();
    let (_, left) = a.remove_contact("bob").unwrap();
    assert_eq!(left.map(|r| r.name), Some("@bob".to_string()));
}

#[test]
fn members_added_to_a_group_go_on_in_its_successor() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, mut c) = (core(&dir, 0), core(&dir, 1), core(&dir, 2));
    let code = |i: usize| identities()[i].contact_code().encode();
    // Alice knows Bob and Carol; Bob and Carol know only Alice.
    a.add_contact("bob", &code(1)).unwrap();
    a.add_contact("carol", &code(2)).unwrap();
    b.add_contact("alice", &code(0)).unwrap();
    c.add_contact("alice", &code(0)).unwrap();
    let (team, invites) = a.create_group("team", &["bob".into()]).unwrap();
    let seen = accepted(&mut b, &invites[0]);
    b.join_invited(&seen).unwrap().expect("bob joins");
    let hello = a.compose("team", "just us two").unwrap();
    accepted(&mut b, &hello);

    // Alice adds Carol: a new room takes the group's name; the old one keeps its history.
    let invited = a.invite_contacts("team", &["carol".into()]).unwrap();
    let next = invited.joined.expect("a successor");
    assert_ne!(next.id, team.id);
    assert_eq!(next.name, "team");
    let mut members = next.members.clone();
    members.sort();
    assert_eq!(members, ["alice", "bob", "carol"]);
    let rooms: Vec<&str> = (invited.composed.iter())
        .map(|(_, _, v)| v.room.as_str())
        .collect();
    assert_eq!(rooms, ["team (earlier)", "@carol"]);
    assert_eq!(
        a.room_by_name("team (earlier)").unwrap().id.to_hex(),
        team.id
    );
    // Bob's node reads the notice in the group and follows it; Carol's, her invitation.
    let notice = accepted(&mut b, &invited.composed[0]);
    assert!(notice.text.as_deref().unwrap().starts_with("adds carol"));
    let joined = b.join_invited(&notice).unwrap().expect("bob follows");
    assert_eq!(
        (joined.name.as_str(), joined.id.to_hex()),
        ("team", next.id.clone())
    );
    let earlier = b.room_by_name("team (earlier)").unwrap().clone();
    assert_eq!(earlier.id.to_hex(), team.id);
    assert_eq!(b.history("team (earlier)", 10).unwrap().len(), 2);
    let seen = accepted(&mut c, &invited.composed[1]);
    let joined = c.join_invited(&seen).unwrap().expect("carol joins");
    assert_eq!(
        (joined.name.as_str(), joined.id.to_hex()),
        ("team", next.id.clone())
    );
    // All three read what is written there now.
    let all = a.compose("team", "welcome carol").unwrap();
    for x in [&mut b, &mut c] {
        assert_eq!(accepted(x, &all).text.as_deref(), Some("welcome carol"));
    }
    // Kept across a restart.
    drop(b);
    let b = core(&dir, 1);
    assert_eq!(b.room_by_name("team").unwrap().id.to_hex(), next.id);
    assert_eq!(
        b.room_by_name("team (earlier)").unwrap().id.to_hex(),
        team.id
    );
    // A node that cannot join one more room renames nothing.
    let mut full = core(&tempfile::tempdir().unwrap(), 1);
    full.add_contact("alice", &code(0)).unwrap();
    let seen = accepted(&mut full, &invites[0]);
    full.join_invited(&seen).unwrap().unwrap();
    accepted(&mut full, &hello);
    full.room_limit = full.rooms().count();
    let notice = accepted(&mut full, &invited.composed[0]);
    assert!(matches!(
        full.join_invited(&notice),
        Err(CoreError::TooManyRooms(_))
    ));
    assert_eq!(full.room_by_name("team").unwrap().id.to_hex(), team.id);
    // Adding her again makes nothing new: an invitation to the group as it is.
    let again = a.invite_contacts("team", &["carol".into()]).unwrap();
    assert!(again.joined.is_none());
    assert_eq!(again.composed.len(), 1);
    // Only a successor may be announced in a group: one of more members, the same name.
    let me: Member = identities()[0].contact_code().into();
    let bob: Member = identities()[1].contact_code().into();
    let carol: Member = identities()[2].contact_code().into();
    let old = a.room_by_name("team (earlier)").unwrap().clone();
    let not_successors = [
        Room::group("team", vec![me.clone(), carol.clone()]).unwrap(),
        Room::group("other", vec![me.clone(), bob.clone(), carol.clone()]).unwrap(),
    ];
    for not in not_successors {
        assert!(!super::groups::is_successor(&old, &not), "{not:?}");
    }
    assert!(super::groups::is_successor(
        &old,
        &Room::group("team", vec![me, bob, carol]).unwrap()
    ));
}

#[test]
fn members_added_by_two_members_at_once_make_two_successors_named_apart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = (core(&dir, 0), core(&dir, 1));
    let code = |i: usize| identities()[i].contact_code().encode();
    let dave = Identity::derive_unchecked("dave", "dave test password", KeySize::Rsa2048).unwrap();
    a.add_contact("bob", &code(1)).unwrap();
    a.add_contact("carol", &code(2)).unwrap();
    b.add_contact("alice", &code(0)).unwrap();
    b.add_contact("dave", &dave.contact_code().encode())
        .unwrap();
    let (team, invites) = a.create_group("team", &["bob".into()]).unwrap();
    let seen = accepted(&mut b, &invites[0]);
    b.join_invited(&seen).unwrap().unwrap();
    // At once, Alice adds Carol and Bob adds Dave; then each hears of the other's.
    let by_alice = a.invite_contacts("team", &["carol".into()]).unwrap();
    let by_bob = b.invite_contacts("team", &["dave".into()]).unwrap();
    let (with_carol, with_dave) = (by_alice.joined.unwrap().id, by_bob.joined.unwrap().id);
    let seen = accepted(&mut a, &by_bob.composed[0]);
    assert_eq!(a.join_invited(&seen).unwrap().unwrap().name, "team 2");
    let seen = accepted(&mut b, &by_alice.composed[0]);
    assert_eq!(b.join_invited(&seen).unwrap().unwrap().name, "team 2");
    let id = |x: &Core, name: &str| x.room_by_name(name).unwrap().id.to_hex();
    assert_eq!(
        [id(&a, "team"), id(&a, "team 2"), id(&a, "team (earlier)")],
        [with_carol.clone(), with_dave.clone(), team.id.clone()]
    );
    assert_eq!(
        [id(&b, "team"), id(&b, "team 2"), id(&b, "team (earlier)")],
        [with_dave, with_carol, team.id]
    );
}

#[test]
fn a_named_room_invitation_joins_the_contact_password_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = contacts_pair(&dir);
    let code = |i: usize| identities()[i].contact_code().encode();
    for (name, password) in [("den", Some("a long room password 77")), ("lobby", None)] {
        let (room, _) = a.join(Room::named(name, password).unwrap()).unwrap();
        let id = room.id;
        let invites = a.invite(name, &["@bob".into()]).unwrap();
        let (_, env, view) = &invites[0];
        assert_eq!(view.room, "@bob");
        let shared = view.invite.as_ref().unwrap().shared.clone().unwrap();
        assert_eq!(shared.password, password.is_some());
        let text = view.text.as_deref().unwrap();
        assert!(
            text.starts_with(&format!("invited bob to the room '{name}'")),
            "{text}"
        );
        assert!(
            !text.contains("long room password"),
            "the password stays home"
        );
        let Incoming::Accepted(seen, _) =
            b.receive(&env.room.topic(), env.bytes().to_vec()).unwrap()
        else {
            panic!("bob reads the invitation to {name}")
        };
        let words = seen.text.as_deref().unwrap();
        assert!(
            words.starts_with(&format!("invites you to the room '{name}'")),
            "{words}"
        );
        let joined = b.join_invited(&seen).unwrap().expect("bob joins");
        assert_eq!((joined.name.as_str(), joined.id), (name, id));
        assert_eq!(joined.has_password, password.is_some());
        let (rid, env, _) = a.compose(name, "in here").unwrap();
        let Incoming::Accepted(v, _) = b.receive(&rid.topic(), env.bytes().to_vec()).unwrap()
        else {
            panic!("bob reads {name}")
        };
        assert_eq!(v.text.as_deref(), Some("in here"));
    }
    // Not to a direct room; not to a group a contact is not in; not to a stranger.
    let refused = |r: Result<Vec<Composed>, CoreError>| r.map(|_| ()).unwrap_err().to_string();
    assert!(refused(a.invite("@bob", &["bob".into()])).contains("direct room"));
    a.add_contact("carol", &code(2)).unwrap();
    a.create_group("team", &["bob".into()]).unwrap();
    assert!(refused(a.invite("team", &["carol".into()])).contains("new group"));
    assert!(refused(a.invite("den", &["mallory".into()])).contains("unknown contact"));
    // A group's members can be invited again.
    assert_eq!(a.invite("team", &["bob".into()]).unwrap().len(), 1);
}

#[test]
fn repair_drops_the_room_and_writes_again_what_members_lack_as_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let lobby = Room::named("lobby", None).unwrap();
    let mut a = core(&dir, 0);
    a.join(lobby.clone()).unwrap();
    let common = a.compose("lobby", "before the fork").unwrap().1;
    // The same identity on another machine (another journal) holds the first message,
    // then writes its own second one.
    let mut elsewhere = Core::open(
        identities()[0].clone(),
        Core::open_journal(&dir.path().join("elsewhere.redb")).unwrap(),
    )
    .unwrap();
    elsewhere.join(lobby.clone()).unwrap();
    let entry = |x: &Core, env: &Envelope| {
        check(
            &x.identity,
            x.room(&lobby.id).unwrap(),
            env.bytes().to_vec(),
            &x.keys,
        )
        .unwrap()
    };
    let first = entry(&elsewhere, &common);
    elsewhere.store_batch(lobby.id, vec![first]).unwrap();
    let theirs = elsewhere.compose("lobby", "from elsewhere").unwrap().1;

    a.compose("lobby", "one").unwrap();
    a.compose("lobby", "two").unwrap();
    a.compose_revision("lobby", 3, Some("two, edited")).unwrap();
    a.compose("lobby", "three").unwrap();
    a.compose_revision("lobby", 5, None).unwrap();
    let me = identities()[0].id().to_hex();
    a.compose_reaction("lobby", &me[..8], 2, "👍", false)
        .unwrap();
    let conflicting = entry(&a, &theirs);
    let report = a.store_batch(lobby.id, vec![conflicting]).unwrap();
    assert_eq!(report.forked_authors, vec![identities()[0].id().0]);

    let (room, ours) = a.repair("lobby").unwrap();
    assert_eq!(room, lobby.id);
    let resend: Vec<_> = ours.iter().map(|o| o.resend.clone()).collect();
    use repair::Resend::Text;
    assert_eq!(
        resend,
        [
            Some(Text("before the fork".into())),
            Some(Text("one".into())),
            Some(Text("two, edited".into())),
            None,
            None,
            None,
            None
        ]
    );
    // Nothing of the room is left to conflict: reconciliation brings it back.
    assert!(a.vector(lobby.id).unwrap().is_empty());
    assert!(a.fork_refs(lobby.id).unwrap().is_empty());
    assert!(a.history("lobby", 10).unwrap().is_empty());
    assert!(a.rooms().any(|r| r.id == lobby.id), "still a member");
    // The members' branch comes back: what they hold of ours is not written again.
    let back = vec![entry(&a, &common), entry(&a, &theirs)];
    a.store_batch(lobby.id, back).unwrap();
    assert_eq!(
        a.lacking(lobby.id, ours).unwrap(),
        [Text("one".into()), Text("two, edited".into())]
    );
}

#[test]
fn own_messages_written_on_another_machine_arrive_read() {
    let dir = tempfile::tempdir().unwrap();
    let (mut laptop, mut bob, rid) = two_in_lobby(&dir);
    // The same user on a second machine: same identity, its own journal.
    let other = tempfile::tempdir().unwrap();
    let mut desk = core(&other, 0);
    desk.join(Room::named("lobby", None).unwrap()).unwrap();
    let unread = |x: &Core| {
        let room = x.room_by_name("lobby").unwrap().clone();
        x.room_view(&room).unwrap().unread
    };
    let (_, hello, _) = bob.compose("lobby", "hello").unwrap();
    for machine in [&mut desk, &mut laptop] {
        machine
            .receive(&rid.topic(), hello.bytes().to_vec())
            .unwrap();
    }
    assert_eq!(unread(&desk), 1);
    // By gossip.
    let (_, mine, _) = laptop.compose("lobby", "from the laptop").unwrap();
    let got = desk.receive(&rid.topic(), mine.bytes().to_vec()).unwrap();
    assert!(matches!(got, Incoming::Accepted(..)), "{got:?}");
    assert_eq!(unread(&desk), 1, "bob's hello only");
    // By a catch-up, out of order (the later entry waits for the earlier one), with a
    // reaction that is no message.
    let later = [
        laptop.compose("lobby", "two").unwrap().1,
        laptop
            .compose_reaction("lobby", &identities()[1].id().to_hex(), 1, "👍", false)
            .unwrap()
            .1,
        laptop.compose("lobby", "three").unwrap().1,
    ];
    let verified = |x: &Core, env: &Envelope| {
        check(
            &x.identity,
            x.room(&rid).unwrap(),
            env.bytes().to_vec(),
            &x.keys,
        )
        .unwrap()
    };
    let tail: Vec<_> = later[1..].iter().map(|e| verified(&desk, e)).collect();
    assert_eq!(desk.store_batch(rid, tail).unwrap().pending, 2);
    let head = verified(&desk, &later[0]);
    assert_eq!(desk.store_batch(rid, vec![head]).unwrap().added, 1);
    let room = desk.room_by_name("lobby").unwrap().clone();
    assert_eq!(desk.room_view(&room).unwrap().messages, 4);
    assert_eq!(unread(&desk), 1, "still bob's hello only");
    // And the mark holds across a restart.
    desk.flush().unwrap();
    drop(desk);
    assert_eq!(unread(&core(&other, 0)), 1);
}

#[test]
fn unread_counts_others_messages_since_the_room_was_read_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, _) = two_in_lobby(&dir);
    let unread = |x: &Core| {
        let room = x.room_by_name("lobby").unwrap().clone();
        x.room_view(&room).unwrap().unread
    };
    for text in ["one", "two"] {
        accepted(&mut a, &b.compose("lobby", text).unwrap());
    }
    assert_eq!(unread(&a), 2);
    // What we write ourselves is not unread, and does not read the rest.
    accepted(&mut b, &a.compose("lobby", "mine").unwrap());
    assert_eq!(unread(&a), 2);
    // A reaction is not a message to read.
    accepted(
        &mut a,
        &b.compose_reaction("lobby", &identities()[0].id().to_hex(), 1, "👍", false)
            .unwrap(),
    );
    assert_eq!(unread(&a), 2);
    assert_eq!(a.mark_read("lobby").unwrap().unread, 0);
    accepted(&mut a, &b.compose("lobby", "three").unwrap());
    assert_eq!(unread(&a), 1);
    assert_eq!(b.mark_read("lobby").unwrap().unread, 0);
    // Across a restart (marks need no durable commit of their own: the flush takes them).
    a.flush().unwrap();
    drop(a);
    let mut a = core(&dir, 0);
    assert_eq!(unread(&a), 1);
    // A room left and joined again: what it holds then is read.
    a.leave("lobby").unwrap();
    a.join(Room::named("lobby", None).unwrap()).unwrap();
    assert_eq!(unread(&a), 0);
    assert!(matches!(
        a.mark_read("nowhere"),
        Err(CoreError::UnknownRoom(_))
    ));
}

#[test]
fn a_mailbox_starts_where_the_member_furthest_behind_stands() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, mut c) = three_in_lobby(&dir);
    let me = a.identity.id();
    let mut rid = None;
    let mut sent = Vec::new();
    for i in 0..4 {
        let (r, env, _) = a.compose("lobby", &format!("m{i}")).unwrap();
        rid = Some(r);
        sent.push(env.bytes().to_vec());
    }
    let rid = rid.unwrap();
    // Nobody else known yet: no mailbox.
    assert_eq!(a.held_by_all(rid, &me, 0), None);
    // Bob holds all four, Carol the first two; each says so in a receipt.
    for bytes in &sent {
        b.receive(&rid.topic(), bytes.clone()).unwrap();
    }
    for bytes in &sent[..2] {
        c.receive(&rid.topic(), bytes.clone()).unwrap();
    }
    for x in [&mut b, &mut c] {
        let receipt = x.compose_receipt(rid, true).unwrap().unwrap();
        a.receive(&rid.topic(), receipt.into_bytes()).unwrap();
    }
    assert_eq!(a.held_by_all(rid, &me, 0), Some(2));
    // A member further behind than we look is left out.
    assert_eq!(a.held_by_all(rid, &me, 3), Some(4));
    assert_eq!(a.held_by_all(rid, &me, 5), None);
    // Our entries from the first one Carol lacks.
    let envelopes =
        |v: Vec<(u64, Vec<u8>)>| -> Vec<Vec<u8>> { v.into_iter().map(|e| e.1).collect() };
    let entries = a.own_entries(rid, 3, 100).unwrap();
    assert_eq!(entries[0].0, 3);
    assert_eq!(envelopes(entries), sent[2..]);
    assert_eq!(envelopes(a.own_entries(rid, 3, 1).unwrap()), sent[2..3]);
    // Whose mailboxes Bob reads: the authors he holds, not himself.
    let lobby = b.room(&rid).unwrap().clone();
    assert_eq!(b.mailbox_authors(&lobby, 8).unwrap(), vec![me]);
    assert!(b.mailbox_authors(&lobby, 0).unwrap().is_empty());
}

#[test]
fn what_members_hold_of_our_messages_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, mut c) = three_in_lobby(&dir);
    let me = a.identity.id();
    let sent: Vec<Composed> = (0..3)
        .map(|i| a.compose("lobby", &format!("m{i}")).unwrap())
        .collect();
    let rid = sent[0].0;
    // Bob holds all three, Carol the first; they say so.
    for m in &sent {
        accepted(&mut b, m);
    }
    accepted(&mut c, &sent[0]);
    for x in [&mut b, &mut c] {
        let receipt = x.compose_receipt(rid, true).unwrap().unwrap();
        a.receive(&rid.topic(), receipt.into_bytes()).unwrap();
    }
    assert_eq!(a.held_by_all(rid, &me, 0), Some(1));
    assert_eq!(delivered(&a), [2, 1, 1]);
    assert_eq!(a.save_held().unwrap(), 1);
    assert_eq!(a.save_held().unwrap(), 0, "nothing changed since");

    // Stopped and started again, Alice's node knows what it knew.
    a.flush().unwrap();
    drop(a);
    let mut a = core(&dir, 0);
    assert_eq!(a.held_by_all(rid, &me, 0), Some(1));
    assert_eq!(a.held_by_all(rid, &me, 2), Some(3));
    assert_eq!(delivered(&a), [2, 1, 1]);
    assert_eq!(a.member_count(rid), 3);

    // Carol catches up later: that is stored too; a room left forgets it.
    accepted(&mut c, &sent[1]);
    accepted(&mut c, &sent[2]);
    let receipt = c.compose_receipt(rid, false).unwrap().unwrap();
    a.receive(&rid.topic(), receipt.into_bytes()).unwrap();
    assert_eq!(a.save_held().unwrap(), 1);
    drop(a);
    let mut a = core(&dir, 0);
    assert_eq!(a.held_by_all(rid, &me, 0), Some(3));
    a.leave("lobby").unwrap();
    a.join(Room::named("lobby", None).unwrap()).unwrap();
    drop(a);
    let a = core(&dir, 0);
    assert_eq!(a.held_by_all(rid, &me, 0), None);
}

#[test]
fn a_direct_rooms_entries_stored_last_page_first_all_show() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = contacts_pair(&dir);
    let sent: Vec<Composed> = (0..10)
        .map(|i| a.compose("@bob", &format!("m{i}")).unwrap())
        .collect();
    let room = b.room_by_name("@alice").unwrap().id;
    let checked = |b: &Core, range: std::ops::Range<usize>| -> Vec<(Envelope, Payload)> {
        sent[range]
            .iter()
            .map(|(_, env, _)| {
                let bytes = env.bytes().to_vec();
                check(&b.identity, b.room(&room).unwrap(), bytes, &b.keys).unwrap()
            })
            .collect()
    };
    // As a mailbox's pages may come: the last first, the first last.
    let last = checked(&b, 8..10);
    assert_eq!(b.store_batch(room, last).unwrap().pending, 2);
    let middle = checked(&b, 4..8);
    assert_eq!(b.store_batch(room, middle).unwrap().pending, 4);
    let first = checked(&b, 0..4);
    let report = b.store_batch(room, first).unwrap();
    assert_eq!(report.added, 4);
    assert_eq!(report.appended.len(), 10);
    let shown: Vec<String> = (b.history("@alice", 20).unwrap().into_iter())
        .filter_map(|m| m.text)
        .collect();
    assert_eq!(shown, (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>());
}

#[test]
fn sealed_settings_come_back_opened_and_a_damaged_one_hides_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let a = core(&dir, 0);
    let values = [
        ("state/one".to_string(), b"first".to_vec()),
        ("state/two".to_string(), b"second".to_vec()),
        ("other/three".to_string(), b"third".to_vec()),
    ];
    a.put_sealed_settings(&values, true).unwrap();
    // Sealed at rest, under the key it was stored with.
    let raw = a.journal.get_setting("state/one").unwrap().unwrap();
    assert!(!raw.windows(5).any(|w| w == b"first"));
    a.journal.put_setting("state/two", &raw).unwrap();

    let read = a.sealed_settings("state/").unwrap();
    assert_eq!(read.len(), 2);
    assert_eq!(read[0].0, "state/one");
    assert_eq!(read[0].1.as_ref().unwrap().as_slice(), b"first");
    assert!(matches!(read[1].1, Err(CoreError::CorruptSetting(ref k)) if k == "state/two"));

    a.delete_sealed_setting("state/one").unwrap();
    assert_eq!(a.sealed_settings("state/").unwrap().len(), 1);
}
