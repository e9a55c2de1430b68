//! Reading and searching a room's history, each next to its baseline in the same run:
//!
//! 1. the journal alone walking the room's display-order index and copying every entry out
//!    (no verification, no decryption): what any read costs at least;
//! 2. reading the whole room as a client gets it: every entry verified and opened;
//! 3. a search that matches nothing, which must open every entry to look inside;
//! 4. a page of 50 search results against a page of 50 messages;
//! 5. reading all and a page again once every tenth message has been edited: each message
//!    is looked up among revisions, and an edited one opens its edit too.
//!
//! Run with `cargo bench -p cryptchat --bench history` (HISTORY_ENTRIES=N to change the
//! room's size; default 5000). One author, a named room, 100-byte texts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptchat::core::{Core, Query};
use cryptchat::crypto;
use cryptchat::identity::{Identity, KeySize};
use cryptchat::journal::{Journal, Page};
use cryptchat::room::Room;

/// The fastest of three runs of `f`, and what it returned.
fn best_of_3<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = None;
    for _ in 0..3 {
        let t = Instant::now();
        let out = f();
        let took = t.elapsed();
        if best.as_ref().is_none_or(|(b, _)| took < *b) {
            best = Some((took, out));
        }
    }
    best.expect("three runs")
}

fn main() {
    let n: usize = std::env::var("HISTORY_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let dir = tempfile::tempdir().unwrap();
    let master = crypto::sha256(&[b"cryptchat history bench"]);
    let id = Arc::new(Identity::from_master("alice", &master, KeySize::Rsa2048).unwrap());
    let journal = Journal::open(&dir.path().join("j.redb")).unwrap();
    let mut core = Core::open(id, journal).unwrap();
    let room = Room::named("lobby", None).unwrap();
    let room_id = room.id;
    core.join(room).unwrap();
    let t = Instant::now();
    for i in 1..=n {
        let text = format!("message {i:>6} {}", "x".repeat(85));
        core.compose("lobby", &text).unwrap();
    }
    core.flush().unwrap();
    eprintln!("{n} messages written in {:.1} s", t.elapsed().as_secs_f64());

    let journal = core.shared_journal();
    let reader = core.reader("lobby").unwrap();
    let search = |contains: &str, limit: usize| Query {
        contains: Some(contains.into()),
        ..Query::last(limit)
    };

    let (raw, got) = best_of_3(|| journal.history(&room_id.0, usize::MAX).unwrap().len());
    assert_eq!(got, n);
    let (read, got) = best_of_3(|| reader.read(Page::last(usize::MAX), None).unwrap().len());
    assert_eq!(got, n);
    let (miss, got) = best_of_3(|| reader.query(&search("no such words", 50)).unwrap().len());
    assert_eq!(got, 0);
    let (page, got) = best_of_3(|| reader.read(Page::last(50), None).unwrap().len());
    assert_eq!(got, 50);
    let (hits, got) = best_of_3(|| reader.query(&search("MESSAGE", 50)).unwrap().len());
    assert_eq!(got, 50);

    for seq in (1..=n as u64).step_by(10) {
        let text = format!("edited {seq:>6} {}", "y".repeat(85));
        core.compose_revision("lobby", seq, Some(&text)).unwrap();
    }
    core.flush().unwrap();
    let edited = n.div_ceil(10);
    let reader = core.reader("lobby").unwrap();
    let (read_edited, got) = best_of_3(|| reader.read(Page::last(usize::MAX), None).unwrap().len());
    assert_eq!(got, n);
    let (page_edited, got) = best_of_3(|| reader.read(Page::last(50), None).unwrap());
    assert_eq!(got.len(), 50);
    assert_eq!(got.iter().filter(|o| o.revised.is_some()).count(), 5);

    let per = |d: Duration, k: usize| d.as_secs_f64() * 1e6 / k as f64;
    let ratio = |d: Duration, base: Duration| d.as_secs_f64() / base.as_secs_f64();
    println!("| what | time | per entry | against the journal alone | against reading |");
    println!("|---|---|---|---|---|");
    let row = |what: &str, d: Duration, k: usize| {
        println!(
            "| {what} | {:.1} ms | {:.1} µs | {:.1}x | {:.2}x |",
            d.as_secs_f64() * 1e3,
            per(d, k),
            ratio(d, raw),
            ratio(d, read)
        );
    };
    row(&format!("journal alone, all {n} entries"), raw, n);
    row(&format!("read all {n} (verified, opened)"), read, n);
    row(&format!("search matching none of {n}"), miss, n);
    let (p, h) = (per(page, 50), per(hits, 50));
    println!(
        "| read a page of 50 | {:.2} ms | {p:.1} µs | | |\n| search, a page of 50 matches | {:.2} ms | {h:.1} µs | | {:.2}x the page |",
        page.as_secs_f64() * 1e3,
        hits.as_secs_f64() * 1e3,
        h / p
    );
    println!(
        "| read all {n}, {edited} of them edited | {:.1} ms | {:.1} µs | {:.1}x | {:.2}x |",
        read_edited.as_secs_f64() * 1e3,
        per(read_edited, n),
        ratio(read_edited, raw),
        ratio(read_edited, read)
    );
    println!(
        "| read a page of 50, 5 of them edited | {:.2} ms | {:.1} µs | | {:.2}x the page |",
        page_edited.as_secs_f64() * 1e3,
        per(page_edited, 50),
        per(page_edited, 50) / p
    );
}
