//! Fault injection: latency, jitter, bandwidth caps and message loss on a node's links.
//!
//! Every connection, whatever its transport, passes through [`FaultyMuxer`], which delays
//! the bytes each substream reads according to the node's [`FaultConfig`]. A reliable stream
//! has no packet loss to model (TCP or QUIC would retransmit), so loss is applied where a
//! real network would lose a message for good: the service drops whole incoming gossip
//! messages with the configured probability. Partitions are the block list in the service.
//! The configuration can change at run time (netsim scenarios, `cryptchat faults`).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite};
use libp2p::PeerId;
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, Sleep};

/// What to do to this node's incoming traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultConfig {
    /// Added to every byte this node receives.
    #[serde(default)]
    pub latency_ms: u64,
    /// Up to this much more, drawn per read (order is kept).
    #[serde(default)]
    pub jitter_ms: u64,
    /// Probability (0..=1) of dropping an incoming gossip message.
    #[serde(default)]
    pub loss: f64,
    /// Receive bandwidth per connection in kilobits per second; 0 is unlimited.
    #[serde(default)]
    pub bandwidth_kbps: u64,
}

impl FaultConfig {
    fn delays(&self) -> bool {
        self.latency_ms > 0 || self.jitter_ms > 0 || self.bandwidth_kbps > 0
    }

    /// Checks the values are in range.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(format!("loss {} is not between 0 and 1", self.loss));
        }
        if self.latency_ms > 60_000 || self.jitter_ms > 60_000 {
            return Err("latency and jitter are capped at 60 s".into());
        }
        Ok(())
    }
}

/// A shared, changeable fault configuration, plus byte counters of the node's links.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    cfg: Arc<RwLock<FaultConfig>>,
    traffic: Arc<Traffic>,
}

/// Bytes through every substream of every connection (before transport overhead), and how
/// many writes and substreams carried them: per-frame costs (wake-ups, syscalls) follow
/// those counts more than the bytes.
#[derive(Debug, Default)]
pub struct Traffic {
    pub read: AtomicU64,
    pub written: AtomicU64,
    /// Successful writes on substreams (each becomes at least one muxer frame).
    pub writes: AtomicU64,
    /// Substreams this node opened.
    pub opened: AtomicU64,
}

impl Faults {
    pub fn new(cfg: FaultConfig) -> Self {
        Faults {
            cfg: Arc::new(RwLock::new(cfg)),
            traffic: Arc::default(),
        }
    }

    pub fn get(&self) -> FaultConfig {
        *self.cfg.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set(&self, cfg: FaultConfig) {
        *self.cfg.write().unwrap_or_else(|e| e.into_inner()) = cfg;
    }

    /// (bytes read, bytes written) so far.
    pub fn traffic(&self) -> (u64, u64) {
        (
            self.traffic.read.load(Ordering::Relaxed),
            self.traffic.written.load(Ordering::Relaxed),
        )
    }

    /// (substreams opened, writes) so far, on this node's side of its links.
    pub fn frames(&self) -> (u64, u64) {
        (
            self.traffic.opened.load(Ordering::Relaxed),
            self.traffic.writes.load(Ordering::Relaxed),
        )
    }

    /// Whether to drop the next incoming message.
    pub fn lose(&self) -> bool {
        let p = self.get().loss;
        p > 0.0 && rand::random_bool(p.min(1.0))
    }
}

/// Wraps a connection's muxer so every substream reads through the fault layer.
pub struct FaultyMuxer<M> {
    inner: M,
    faults: Faults,
    /// Shared by the connection's substreams: when the link is next free (bandwidth cap).
    link: Arc<Mutex<Instant>>,
}

impl<M> FaultyMuxer<M> {
    pub fn new(inner: M, _peer: PeerId, faults: Faults) -> Self {
        FaultyMuxer {
            inner,
            faults,
            link: Arc::new(Mutex::new(Instant::now())),
        }
    }

    fn wrap<S>(&self, s: S) -> FaultyStream<S> {
        FaultyStream {
            inner: s,
            faults: self.faults.clone(),
            link: self.link.clone(),
            queue: VecDeque::new(),
            last_due: Instant::now(),
            timer: None,
            eof: false,
        }
    }
}

impl<M> StreamMuxer for FaultyMuxer<M>
where
    M: StreamMuxer + Unpin,
    M::Substream: Unpin,
{
    type Substream = FaultyStream<M::Substream>;
    type Error = M::Error;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        Pin::new(&mut this.inner)
            .poll_inbound(cx)
            .map_ok(|s| this.wrap(s))
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner)
            .poll_outbound(cx)
            .map_ok(|s| this.wrap(s));
        if let Poll::Ready(Ok(_)) = &r {
            this.faults.traffic.opened.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll(cx)
    }
}

/// A substream whose reads are released only when the fault model says they arrive.
pub struct FaultyStream<S> {
    inner: S,
    faults: Faults,
    link: Arc<Mutex<Instant>>,
    /// Bytes read from the wire, with the time each chunk is due to the reader.
    queue: VecDeque<(Instant, Vec<u8>, usize)>,
    last_due: Instant,
    timer: Option<Pin<Box<Sleep>>>,
    eof: bool,
}

impl<S> FaultyStream<S> {
    /// When a chunk of `n` bytes read now should reach the reader.
    fn due(&mut self, cfg: &FaultConfig, n: usize) -> Instant {
        let now = Instant::now();
        let jitter = if cfg.jitter_ms > 0 {
            rand::random_range(0..=cfg.jitter_ms)
        } else {
            0
        };
        let mut due = now + Duration::from_millis(cfg.latency_ms + jitter);
        if cfg.bandwidth_kbps > 0 {
            let mut free = self.link.lock().unwrap_or_else(|e| e.into_inner());
            let start = (*free).max(now);
            let secs = (n as f64 * 8.0) / (cfg.bandwidth_kbps as f64 * 1000.0);
            *free = start + Duration::from_secs_f64(secs);
            due = due.max(*free);
        }
        // Bytes of one stream never overtake each other.
        due = due.max(self.last_due);
        self.last_due = due;
        due
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FaultyStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let cfg = this.faults.get();
        if !cfg.delays() && this.queue.is_empty() {
            let r = Pin::new(&mut this.inner).poll_read(cx, buf);
            if let Poll::Ready(Ok(n)) = &r {
                this.faults
                    .traffic
                    .read
                    .fetch_add(*n as u64, Ordering::Relaxed);
            }
            return r;
        }
        loop {
            // Take in whatever the wire has now, stamping it with its arrival time.
            while !this.eof && this.queue.len() < 1024 {
                let mut chunk = vec![0u8; 16 * 1024];
                match Pin::new(&mut this.inner).poll_read(cx, &mut chunk) {
                    Poll::Ready(Ok(0)) => this.eof = true,
                    Poll::Ready(Ok(n)) => {
                        chunk.truncate(n);
                        let due = this.due(&cfg, n);
                        this.queue.push_back((due, chunk, 0));
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
            let Some((due, chunk, off)) = this.queue.front_mut() else {
                return if this.eof {
                    Poll::Ready(Ok(0))
                } else {
                    Poll::Pending
                };
            };
            if *due <= Instant::now() {
                let n = (chunk.len() - *off).min(buf.len());
                buf[..n].copy_from_slice(&chunk[*off..*off + n]);
                *off += n;
                if *off == chunk.len() {
                    this.queue.pop_front();
                }
                this.timer = None;
                this.faults
                    .traffic
                    .read
                    .fetch_add(n as u64, Ordering::Relaxed);
                return Poll::Ready(Ok(n));
            }
            let due = *due;
            let timer = this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            if timer.deadline() != due {
                timer.as_mut().reset(due);
            }
            match timer.as_mut().poll(cx) {
                Poll::Ready(()) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FaultyStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            let traffic = &this.faults.traffic;
            traffic.written.fetch_add(*n as u64, Ordering::Relaxed);
            traffic.writes.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::{AsyncReadExt, Cursor};

    fn stream(cfg: FaultConfig, data: Vec<u8>) -> FaultyStream<Cursor<Vec<u8>>> {
        FaultyStream {
            inner: Cursor::new(data),
            faults: Faults::new(cfg),
            link: Arc::new(Mutex::new(Instant::now())),
            queue: VecDeque::new(),
            last_due: Instant::now(),
            timer: None,
            eof: false,
        }
    }

    // Virtual time (paused clock): these check the fault model, not the machine's speed.
    #[tokio::test(start_paused = true)]
    async fn latency_delays_reads_and_keeps_bytes_in_order() {
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let cfg = FaultConfig {
            latency_ms: 250,
            jitter_ms: 50,
            ..Default::default()
        };
        let mut s = stream(cfg, data.clone());
        let start = Instant::now();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data);
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(250), "{took:?}");
        assert!(took <= Duration::from_millis(301), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn bandwidth_cap_paces_reads() {
        let data = vec![7u8; 100 * 1024];
        let cfg = FaultConfig {
            bandwidth_kbps: 800, // 100 KB/s
            ..Default::default()
        };
        let mut s = stream(cfg, data.clone());
        let start = Instant::now();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), data.len());
        let took = start.elapsed().as_secs_f64();
        assert!((0.95..1.2).contains(&took), "{took}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_faults_is_a_pass_through() {
        let mut s = stream(FaultConfig::default(), b"hello".to_vec());
        let start = Instant::now();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(s.queue.is_empty());
    }

    #[tokio::test]
    async fn writes_are_counted_with_their_bytes() {
        use futures::io::AsyncWriteExt;
        let mut s = stream(FaultConfig::default(), Vec::new());
        s.write_all(b"hello").await.unwrap();
        s.write_all(b", world").await.unwrap();
        assert_eq!(s.faults.traffic(), (0, 12));
        assert_eq!(s.faults.frames(), (0, 2));
    }

    #[test]
    fn loss_probability_is_respected_and_validated() {
        let f = Faults::new(FaultConfig {
            loss: 0.3,
            ..Default::default()
        });
        let lost = (0..10_000).filter(|_| f.lose()).count();
        assert!((2500..3500).contains(&lost), "{lost}");
        assert!(!Faults::default().lose());
        assert!(
            FaultConfig {
                loss: 1.5,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }
}
