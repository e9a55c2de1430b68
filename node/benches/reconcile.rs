//! Journal and reconciliation figures (issue 3), each next to its baseline in the same run:
//!
//! 1. durable append throughput of the journal against redb alone doing the same writes;
//! 2. catch-up of many missing entries between two local nodes against the cost of
//!    verifying the same entries' signatures alone (the limit catch-up can approach);
//! 3. bytes exchanged per reconciliation round as the number of authors grows.
//!
//! Run with `cargo bench -p cryptchat --bench reconcile` (CATCHUP_ENTRIES=N to change the
//! catch-up size; default 100000).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptchat::core;
use cryptchat::crypto;
use cryptchat::envelope::{Envelope, Kind, Payload, Position};
use cryptchat::identity::{Identity, KeySize};
use cryptchat::journal::{EntryMeta, Head, Journal};
use cryptchat::room::Room;
use cryptchat::service::{self, NodeConfig};
use cryptchat::sync::{PeerViews, SyncRequest, encoded_len};
use redb::{Database, Durability, ReadableDatabase, TableDefinition};

const BLOB: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blob");

fn fake_entries(n: usize, size: usize) -> Vec<(EntryMeta, Vec<u8>)> {
    let mut prev = [0u8; 32];
    (1..=n as u64)
        .map(|seq| {
            let body = vec![(seq % 251) as u8; size];
            let hash = crypto::sha256(&[&body, &seq.to_be_bytes()]);
            let meta = EntryMeta {
                room: [1; 32],
                author: [2; 32],
                seq,
                prev,
                hash,
                lamport: seq,
            };
            prev = hash;
            (meta, body)
        })
        .collect()
}

fn append_throughput() {
    const N: usize = 2_000;
    const BATCH: usize = 512;
    let entries = fake_entries(N, 700);
    let dir = tempfile::tempdir().unwrap();

    // Journal, one durable transaction per entry (what a live message costs).
    let j = Journal::open(&dir.path().join("j.redb")).unwrap();
    let t = Instant::now();
    for (m, e) in &entries {
        j.append(m, e).unwrap();
    }
    let journal_single = N as f64 / t.elapsed().as_secs_f64();

    // redb alone: the same bytes under the same key, one durable two-phase commit each.
    let db = Database::create(dir.path().join("r.redb")).unwrap();
    let t = Instant::now();
    for (m, e) in &entries {
        let mut w = db.begin_write().unwrap();
        w.set_durability(Durability::Immediate).unwrap();
        w.set_two_phase_commit(true);
        {
            let mut tbl = w.open_table(BLOB).unwrap();
            let mut key = m.room.to_vec();
            key.extend_from_slice(&m.author);
            key.extend_from_slice(&m.seq.to_be_bytes());
            tbl.insert(&key[..], &e[..]).unwrap();
        }
        w.commit().unwrap();
    }
    let redb_single = N as f64 / t.elapsed().as_secs_f64();

    // Batched (catch-up): BATCH entries per transaction.
    let j2 = Journal::open(&dir.path().join("j2.redb")).unwrap();
    let t = Instant::now();
    for chunk in entries.chunks(BATCH) {
        j2.append_batch(chunk).unwrap();
    }
    let journal_batch = N as f64 / t.elapsed().as_secs_f64();
    let db2 = Database::create(dir.path().join("r2.redb")).unwrap();
    let t = Instant::now();
    for chunk in entries.chunks(BATCH) {
        let mut w = db2.begin_write().unwrap();
        w.set_durability(Durability::Immediate).unwrap();
        w.set_two_phase_commit(true);
        {
            let mut tbl = w.open_table(BLOB).unwrap();
            for (m, e) in chunk {
                let mut key = m.room.to_vec();
                key.extend_from_slice(&m.author);
                key.extend_from_slice(&m.seq.to_be_bytes());
                tbl.insert(&key[..], &e[..]).unwrap();
            }
        }
        w.commit().unwrap();
    }
    let redb_batch = N as f64 / t.elapsed().as_secs_f64();
    let _ = db.begin_read();
    println!("## durable appends ({N} entries of 700 bytes)");
    println!("| mode | journal entries/s | redb alone entries/s | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| one transaction per entry | {journal_single:.0} | {redb_single:.0} | {:.2} |",
        journal_single / redb_single
    );
    println!(
        "| {BATCH} entries per transaction | {journal_batch:.0} | {redb_batch:.0} | {:.2} |",
        journal_batch / redb_batch
    );
}

fn vector(n: usize, seq: u64) -> BTreeMap<[u8; 32], Head> {
    (0..n)
        .map(|i| {
            let mut a = [0u8; 32];
            a[..8].copy_from_slice(&(i as u64).to_be_bytes());
            (
                crypto::sha256(&[&a]),
                Head {
                    seq,
                    hash: crypto::sha256(&[&a, &seq.to_be_bytes()]),
                },
            )
        })
        .collect()
}

fn round_sizes() {
    println!("\n## bytes per reconciliation round (CBOR on the wire, one direction)");
    println!("| authors | first exchange (full vector) | nothing changed | one author changed |");
    println!("|---|---|---|---|");
    for n in [10, 100, 1000] {
        let mut views: PeerViews<u8> = PeerViews::default();
        let v = vector(n, 10);
        let full = encoded_len(&SyncRequest::Hellos(vec![views.hello(
            &0,
            [0; 32],
            &v,
            vec![],
            false,
        )]));
        let idle = encoded_len(&SyncRequest::Hellos(vec![views.hello(
            &0,
            [0; 32],
            &v,
            vec![],
            false,
        )]));
        let mut v2 = v.clone();
        let first = *v2.keys().next().unwrap();
        v2.insert(
            first,
            Head {
                seq: 11,
                hash: [9; 32],
            },
        );
        let one = encoded_len(&SyncRequest::Hellos(vec![views.hello(
            &0,
            [0; 32],
            &v2,
            vec![],
            false,
        )]));
        println!("| {n} | {full} | {idle} | {one} |");
    }
}

async fn catch_up(n: usize) {
    cryptchat::install_crypto_provider();
    let mk = |u: &str| {
        Arc::new(
            Identity::derive_unchecked(u, &format!("{u} bench password"), KeySize::Rsa2048)
                .unwrap(),
        )
    };
    let (alice, bob) = (mk("alice"), mk("bob"));
    let room = Room::named("catch-up", None).unwrap();
    eprintln!("sealing {n} envelopes (signing is the slow part)...");
    let t = Instant::now();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Several authors, each sealed on its own thread: chains are per author.
    let per = n.div_ceil(threads);
    let authors: Vec<Arc<Identity>> = (0..threads).map(|i| mk(&format!("author{i}"))).collect();
    let handles: Vec<_> = authors
        .iter()
        .cloned()
        .map(|a| {
            let room = room.clone();
            std::thread::spawn(move || {
                let mut prev = [0u8; 32];
                let mut out = Vec::with_capacity(per);
                for seq in 1..=per as u64 {
                    let payload = Payload {
                        from: a.username().into(),
                        text: Some(format!(
                            "catch-up entry {seq} ........................................"
                        )),
                        ..Payload::default()
                    };
                    let pos = Position {
                        seq,
                        prev,
                        lamport: seq,
                        timestamp_ms: 0,
                    };
                    let env = Envelope::seal(&a, &room, Kind::Text, pos, &payload).unwrap();
                    prev = env.hash();
                    out.push(env);
                }
                out
            })
        })
        .collect();
    let envs: Vec<Envelope> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let total = envs.len();
    eprintln!("sealed in {:?}", t.elapsed());

    // Baseline: verifying (and opening) the same entries, on one thread.
    let bytes: Vec<Vec<u8>> = envs.iter().map(|e| e.bytes().to_vec()).collect();
    let keys = cryptchat::authors::AuthorKeys::default();
    let t = Instant::now();
    for b in &bytes {
        core::check(&bob, &room, b.clone(), &keys).unwrap();
    }
    let verify_rate = total as f64 / t.elapsed().as_secs_f64();

    // Alice's node holds everything; Bob starts empty and catches up.
    let dir = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(&dir.path().join("a").join("journal.redb")).unwrap_or_else(|_| {
            std::fs::create_dir_all(dir.path().join("a")).unwrap();
            Journal::open(&dir.path().join("a").join("journal.redb")).unwrap()
        });
        let batch: Vec<_> = envs
            .iter()
            .map(|e| (e.meta(), e.bytes().to_vec()))
            .collect();
        for c in batch.chunks(4096) {
            j.append_batch(c).unwrap();
        }
    }
    let start = |id: Arc<Identity>, sub: &str, boot: Vec<String>| {
        let mut cfg = NodeConfig::new(dir.path().join(sub));
        cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        cfg.bootstrap = boot.iter().map(|a| a.parse().unwrap()).collect();
        cfg.sync_interval = Duration::from_secs(1);
        service::start(id, cfg)
    };
    let a = start(alice, "a", vec![]).await.unwrap();
    a.join("catch-up", None).await.unwrap();
    let addr = loop {
        if let Some(x) = a.status().await.unwrap().listen_addrs.first().cloned() {
            break x;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let b = start(bob, "b", vec![addr]).await.unwrap();
    let t = Instant::now();
    b.join("catch-up", None).await.unwrap();
    loop {
        let held = b.rooms().await.unwrap()[0].messages;
        if held as usize >= total {
            break;
        }
        if t.elapsed() > Duration::from_secs(1800) {
            panic!("catch-up stalled at {held}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = t.elapsed().as_secs_f64();
    let rate = total as f64 / took;
    println!("\n## catch-up of {total} missing entries between two local nodes");
    println!("| catch-up time | catch-up entries/s | verify-only entries/s (1 thread) | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| {took:.1} s | {rate:.0} | {verify_rate:.0} | {:.2} |",
        rate / verify_rate
    );
}

fn main() {
    append_throughput();
    round_sizes();
    let n = std::env::var("CATCHUP_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(catch_up(n));
}
