//! File transfer between two local cryptchat nodes, against a raw TCP copy of the same
//! bytes into a file, in the same run.
//!
//! Run with `cargo bench -p cryptchat --bench files`. Not a criterion benchmark: it starts
//! two real nodes on 127.0.0.1 TCP in one room; Alice shares a file of `SIZE_MIB` random
//! bytes (sealed and stored in her journal), Bob fetches it (every chunk over the sync
//! protocol, checked, stored in his journal, then the file decrypted and written). The
//! baseline sends the same bytes over one plain loopback TCP connection into a file, synced
//! like the fetched one. Each is run `RUNS` times (a new file each time, so Bob holds none
//! of it), and the medians are printed with the ratio.

mod pair;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptchat::service::Target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SIZE_MIB: usize = 64;
const RUNS: usize = 3;
const ROOM: &str = "bench";
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn mib_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

/// One raw TCP copy of `data` on loopback into a file, synced: the baseline.
async fn tcp_copy(data: Arc<Vec<u8>>, out: &Path) -> Duration {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let out = out.to_path_buf();
    let start = Instant::now();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut file = tokio::fs::File::create(&out).await.unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = sock.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n]).await.unwrap();
        }
        file.sync_all().await.unwrap();
    });
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(&data).await.unwrap();
    sock.shutdown().await.unwrap();
    drop(sock);
    server.await.unwrap();
    start.elapsed()
}

#[tokio::main]
async fn main() {
    cryptchat::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = pair::identities("files").await;
    let (a, b) = pair::two_in_room(alice, bob, dir.path(), ROOM).await;

    let size = SIZE_MIB * 1024 * 1024;
    // What the files take on disk: each journal's growth, against the files' own bytes.
    let journal_len = |who: &str| {
        std::fs::metadata(dir.path().join(who).join("journal.redb"))
            .unwrap()
            .len()
    };
    let disk_before = (journal_len("a"), journal_len("b"));
    let (mut share, mut fetch, mut tcp) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..RUNS {
        let data = Arc::new(random_bytes(size, run as u64 + 1));
        let src = dir.path().join(format!("file-{run}.bin"));
        std::fs::write(&src, &*data).unwrap();

        let t = Instant::now();
        let sent = a.share_file(ROOM, src.clone()).await.unwrap();
        share.push(t.elapsed());
        let id = sent.message.file.as_ref().unwrap().id.clone();

        let out = dir.path().join(format!("fetched-{run}.bin"));
        // Bob must have heard of the file before he can fetch it; the fetch alone is timed.
        let start = Instant::now();
        loop {
            let h = b.history(ROOM, 5).await.unwrap();
            if h.iter()
                .any(|m| m.file.as_ref().is_some_and(|f| f.id == id))
            {
                break;
            }
            assert!(
                start.elapsed() < SETUP_TIMEOUT,
                "bob never heard of the file"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let t = Instant::now();
        let got = b
            .fetch_file(ROOM, &id, Target::Path(out.clone()))
            .await
            .unwrap();
        fetch.push(t.elapsed());
        assert_eq!(got.size as usize, size);
        assert!(
            std::fs::read(&out).unwrap() == *data,
            "the fetched copy differs"
        );

        let copy = dir.path().join(format!("tcp-{run}.bin"));
        tcp.push(tcp_copy(data.clone(), &copy).await);
        assert!(std::fs::read(&copy).unwrap() == *data);
        for p in [&src, &out, &copy] {
            let _ = std::fs::remove_file(p);
        }
    }
    let disk = |grown: u64| grown as f64 / (RUNS * size) as f64;
    let shared_disk = disk(journal_len("a") - disk_before.0);
    let fetched_disk = disk(journal_len("b") - disk_before.1);
    let (share, fetch, tcp) = (median(share), median(fetch), median(tcp));
    println!("file transfer, {SIZE_MIB} MiB, median of {RUNS} runs, loopback TCP");
    println!("| what | time | throughput | ratio to raw TCP copy |");
    println!("|---|---|---|---|");
    println!(
        "| raw TCP copy into a file (baseline) | {:.0} ms | {:.0} MiB/s | 1.00x |",
        tcp.as_secs_f64() * 1e3,
        mib_s(size, tcp)
    );
    println!(
        "| cryptchat fetch (chunks checked and stored, file decrypted and written) | {:.0} ms | {:.0} MiB/s | {:.2}x |",
        fetch.as_secs_f64() * 1e3,
        mib_s(size, fetch),
        fetch.as_secs_f64() / tcp.as_secs_f64()
    );
    println!(
        "| cryptchat share (file sealed and stored, message sent) | {:.0} ms | {:.0} MiB/s | {:.2}x |",
        share.as_secs_f64() * 1e3,
        mib_s(size, share),
        share.as_secs_f64() / tcp.as_secs_f64()
    );
    println!();
    println!(
        "disk: journal growth for {RUNS} files of {SIZE_MIB} MiB, against their bytes (a copy: 1.00x)"
    );
    println!("| sharer's journal | fetcher's journal |");
    println!("|---|---|");
    println!("| {shared_disk:.2}x | {fetched_disk:.2}x |");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
