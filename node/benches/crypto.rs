//! Cost of every cryptographic step a message or an identity goes through (issue 2).
//!
//! Run with `cargo bench -p cryptchat --bench crypto`. Kept short for small machines:
//! 10 samples per benchmark, 1 s warm-up, flat sampling for the slow (~seconds) derivations.

use std::hint::black_box;
use std::time::Duration;

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use cryptchat::crypto;
use cryptchat::envelope::{Envelope, Kind, Payload, Position};
use cryptchat::identity::{Identity, KeySize};
use cryptchat::room::{Member, Room};

/// The same 100-byte message text as the latency benchmark.
const TEXT_LEN: usize = 100;

fn text() -> String {
    let mut s = String::from("benchmark message ");
    while s.len() < TEXT_LEN {
        s.push('x');
    }
    s
}

/// A distinct master secret per call, so every RSA key generation searches for fresh primes
/// (the search time varies a lot with the seed; a fixed seed would measure one lucky or
/// unlucky key over and over).
fn master(n: u64) -> [u8; 32] {
    crypto::sha256(&[b"cryptchat bench master", &n.to_be_bytes()])
}

/// Two fixed identities built from masters (skips argon2id, which is benchmarked apart).
fn identities() -> (Identity, Identity) {
    let mk = |name: &str, n| Identity::from_master(name, &master(n), KeySize::Rsa2048).unwrap();
    (mk("alice", 1), mk("bob", 2))
}

fn member(i: &Identity) -> Member {
    i.contact_code().into()
}

/// A typical entry: not the author's first, so it names the author by id only.
fn pos() -> Position {
    Position {
        seq: 2,
        prev: [0; 32],
        lamport: 1,
        timestamp_ms: 1_700_000_000_000,
    }
}

fn identity_derivation(c: &mut Criterion) {
    let mut g = c.benchmark_group("identity");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));

    // Full derivation: argon2id (64 MiB, t=3, p=4) + HKDF + RSA-2048 keygen + ed25519.
    let mut n = 0u64;
    g.bench_function("derive_unchecked/rsa2048", |b| {
        b.iter(|| {
            n += 1;
            let user = format!("bench-user-{n}");
            black_box(
                Identity::derive_unchecked(&user, "bench password only", KeySize::Rsa2048).unwrap(),
            )
        })
    });

    // argon2id alone, with the documented parameters.
    let salt = crypto::sha256(&[b"bench salt"]);
    g.bench_function("argon2id/64MiB_t3_p4", |b| {
        b.iter(|| black_box(crypto::argon2id(black_box(b"bench password only"), &salt).unwrap()))
    });

    // Everything after argon2id: HKDF, seeded RSA-2048 keygen, ed25519 key.
    let mut n = 1_000_000u64;
    g.bench_function("from_master/rsa2048_keygen", |b| {
        b.iter(|| {
            n += 1;
            black_box(Identity::from_master("bench", &master(n), KeySize::Rsa2048).unwrap())
        })
    });
    g.finish();
}

fn rsa(c: &mut Criterion) {
    let (alice, bob) = identities();
    let mut g = c.benchmark_group("rsa2048");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(1));

    // What an envelope signs is ~0.7 KiB; PSS hashes it first, so the size barely matters.
    let msg = vec![0x5au8; 700];
    g.bench_function("pss_sign", |b| {
        b.iter(|| black_box(alice.sign(black_box(&msg)).unwrap()))
    });
    let sig = alice.sign(&msg).unwrap();
    g.bench_function("pss_verify", |b| {
        b.iter(|| assert!(alice.public().verify(black_box(&msg), black_box(&sig))))
    });

    let key = [7u8; 32];
    g.bench_function("oaep_wrap", |b| {
        b.iter(|| black_box(bob.public().wrap_key(black_box(&key)).unwrap()))
    });
    let wrapped = bob.public().wrap_key(&key).unwrap();
    g.bench_function("oaep_unwrap", |b| {
        b.iter(|| black_box(bob.unwrap_key(black_box(&wrapped)).unwrap()))
    });
    g.finish();
}

fn aes_gcm(c: &mut Criterion) {
    let key = crypto::random_key().unwrap();
    let aad = [0u8; 400]; // about the size of an envelope header
    let mut g = c.benchmark_group("aes256gcm");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(1));
    for size in [1024usize, 16 * 1024] {
        let plain = vec![0x42u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("seal", size), &plain, |b, p| {
            b.iter(|| black_box(crypto::seal(&key, &aad, black_box(p)).unwrap()))
        });
        let (nonce, ct) = crypto::seal(&key, &aad, &plain).unwrap();
        g.bench_with_input(BenchmarkId::new("open", size), &ct, |b, ct| {
            b.iter(|| black_box(crypto::open(&key, &nonce, &aad, black_box(ct)).unwrap()))
        });
    }
    g.finish();
}

fn envelope(c: &mut Criterion) {
    let (alice, bob) = identities();
    let payload = Payload {
        from: alice.username().to_string(),
        text: Some(text()),
        ..Payload::default()
    };
    let rooms = [
        ("named", Room::named("bench", None).unwrap()),
        ("direct2", Room::direct(member(&alice), member(&bob))),
    ];
    let mut g = c.benchmark_group("envelope");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(1));
    // The receiver has met alice: her later entries name her by id only.
    let keys = cryptchat::authors::AuthorKeys::default();
    keys.insert(alice.public().clone());
    for (label, room) in &rooms {
        let env = Envelope::seal(&alice, room, Kind::Text, pos(), &payload).unwrap();
        let bytes = env.bytes().to_vec();
        eprintln!(
            "envelope/{label}: {} bytes for a {TEXT_LEN}-byte text",
            bytes.len()
        );
        // seal = JSON + (OAEP wraps) + AES-GCM + PSS sign + parse of the result (incl. verify).
        g.bench_function(BenchmarkId::new("seal", label), |b| {
            b.iter(|| black_box(Envelope::seal(&alice, room, Kind::Text, pos(), &payload).unwrap()))
        });
        // parse = framing checks + DER key decode + PSS verify + SHA-256 of the envelope.
        g.bench_function(BenchmarkId::new("parse", label), |b| {
            b.iter(|| black_box(Envelope::parse(black_box(bytes.clone()), &keys).unwrap()))
        });
        // open = (OAEP unwrap) + AES-GCM open + JSON, as the receiver.
        g.bench_function(BenchmarkId::new("open", label), |b| {
            b.iter(|| black_box(env.open(room, &bob).unwrap()))
        });
        // What a message costs end to end: sender seals, receiver parses and opens.
        g.bench_function(BenchmarkId::new("seal_parse_open", label), |b| {
            b.iter(|| {
                let e = Envelope::seal(&alice, room, Kind::Text, pos(), &payload).unwrap();
                let p = Envelope::parse(e.into_bytes(), &keys).unwrap();
                black_box(p.open(room, &bob).unwrap())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, identity_derivation, rsa, aes_gcm, envelope);
criterion_main!(benches);
