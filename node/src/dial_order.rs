//! Which side of a pair dials over WebRTC-direct.
//!
//! Two nodes that dial each other over WebRTC-direct at the same moment both fail:
//! `libp2p-webrtc` 0.10 dials from its listening UDP socket and routes packets by source
//! address, so each side hands the other's handshake to its own outgoing attempt ("username
//! mismatch"), and the failed attempts stay behind (see `service::webrtc`). Room members find
//! each other in the DHT at about the same time, and Kademlia dials whoever a query names, so
//! such crossings are common. The rule here breaks the tie: the node with the lower peer id
//! dials at once; the other holds its WebRTC-direct dials to that peer back for
//! [`DEFER`], long enough for the first to connect, and dials itself only if that did not
//! happen. Bootstrap nodes and addresses the user dials are never held back.
//!
//! For the same reason two dials of ours to the same remote address must not overlap (Kademlia
//! and the room rendezvous both dial a member they learn of, and the remote keeps whichever
//! session it saw first while we keep the other): a second dial to an address with a dial in
//! flight is refused until the first ends.
//!
//! TCP and QUIC are not affected: they cope with simultaneous dials, so only the WebRTC-direct
//! transport is wrapped in [`OrderedDials`].

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use libp2p::core::transport::{DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::core::{Endpoint, Transport};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// How long the higher peer id waits for the lower one to dial.
pub const DEFER: Duration = Duration::from_secs(12);

/// After this long a pair is treated as new again (the next crossing is held back again).
const FORGET: Duration = Duration::from_secs(120);

/// The tie-breaking state of one node.
#[derive(Debug)]
pub struct DialOrder {
    local: PeerId,
    exempt: HashSet<PeerId>,
    /// When a WebRTC-direct dial to each peer was first held back.
    held: HashMap<PeerId, Instant>,
    /// Remote addresses with a dial of ours in flight, and whom they were dialled for.
    in_flight: HashMap<SocketAddr, Option<PeerId>>,
}

/// A [`DialOrder`] shared between the transport and the node's event loop.
pub type SharedDialOrder = Arc<Mutex<DialOrder>>;

impl DialOrder {
    pub fn new(local: PeerId) -> Self {
        DialOrder {
            local,
            exempt: HashSet::new(),
            held: HashMap::new(),
            in_flight: HashMap::new(),
        }
    }

    pub fn shared(local: PeerId) -> SharedDialOrder {
        Arc::new(Mutex::new(Self::new(local)))
    }

    /// Dials to `peer` are never held back (a bootstrap node, an address the user gave).
    pub fn exempt(&mut self, peer: PeerId) {
        self.exempt.insert(peer);
    }

    /// Whether a WebRTC-direct dial to `peer` may start at `now`.
    pub fn allow(&mut self, peer: PeerId, now: Instant) -> bool {
        if self.local.to_bytes() < peer.to_bytes() || self.exempt.contains(&peer) {
            return true;
        }
        self.held
            .retain(|_, since| now.saturating_duration_since(*since) < FORGET);
        let since = *self.held.entry(peer).or_insert(now);
        now.saturating_duration_since(since) >= DEFER
    }

    /// Records a dial to `addr` unless one is in flight already; returns whether it may go.
    pub fn start(&mut self, addr: SocketAddr, peer: Option<PeerId>) -> bool {
        if self.in_flight.contains_key(&addr) {
            return false;
        }
        self.in_flight.insert(addr, peer);
        true
    }

    /// The dial to `addr` ended.
    pub fn finish(&mut self, addr: &SocketAddr) {
        self.in_flight.remove(addr);
    }

    /// Whether dials to `peer` are being held back or refused at `now` (a failed dial to it
    /// says nothing about the link then).
    pub fn holding(&self, peer: &PeerId, now: Instant) -> bool {
        let held = self
            .held
            .get(peer)
            .is_some_and(|since| now.saturating_duration_since(*since) < DEFER);
        held || self.in_flight.values().any(|p| p.as_ref() == Some(peer))
    }
}

/// The peer an address names in its last `/p2p/` component: for a relayed address, the
/// target rather than the relay.
pub(crate) fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().fold(None, |found, p| match p {
        Protocol::P2p(id) => Some(id),
        _ => found,
    })
}

/// The remote IP and UDP port of a dial address.
fn socket_of(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut ip = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(IpAddr::V6(a)),
            Protocol::Udp(port) => return ip.map(|ip| SocketAddr::new(ip, port)),
            _ => {}
        }
    }
    None
}

/// Marks a dial as ended when its future completes or is dropped.
struct InFlight {
    order: SharedDialOrder,
    addr: SocketAddr,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut o) = self.order.lock() {
            o.finish(&self.addr);
        }
    }
}

/// A transport whose dials go through a [`DialOrder`]; everything else passes through.
pub struct OrderedDials<T> {
    inner: T,
    order: SharedDialOrder,
}

impl<T> OrderedDials<T> {
    pub fn new(inner: T, order: SharedDialOrder) -> Self {
        OrderedDials { inner, order }
    }
}

impl<T> Transport for OrderedDials<T>
where
    T: Transport<Error = std::io::Error> + Unpin,
    T::Dial: Send + 'static,
    T::Output: Send + 'static,
{
    type Output = T::Output;
    type Error = T::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = BoxFuture<'static, Result<T::Output, std::io::Error>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        // Hole punching has its own roles; only plain dials are ordered.
        let peer = peer_of(&addr);
        if opts.role == Endpoint::Dialer
            && let Some(peer) = peer
        {
            let allowed = self
                .order
                .lock()
                .map(|mut o| o.allow(peer, Instant::now()))
                .unwrap_or(true);
            if !allowed {
                return Err(TransportError::Other(std::io::Error::other(
                    "WebRTC-direct dial held back: the peer with the lower id dials first",
                )));
            }
        }
        let Some(remote) = socket_of(&addr) else {
            return self.inner.dial(addr, opts).map(|d| d.boxed());
        };
        let started = self
            .order
            .lock()
            .map(|mut o| o.start(remote, peer))
            .unwrap_or(true);
        if !started {
            return Err(TransportError::Other(std::io::Error::other(format!(
                "a WebRTC-direct dial to {remote} is in flight already"
            ))));
        }
        let guard = InFlight {
            order: self.order.clone(),
            addr: remote,
        };
        let dial = self.inner.dial(addr, opts)?;
        Ok(async move {
            let _guard = guard;
            dial.await
        }
        .boxed())
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (PeerId, PeerId) {
        let a = PeerId::random();
        let b = PeerId::random();
        if a.to_bytes() < b.to_bytes() {
            (a, b)
        } else {
            (b, a)
        }
    }

    #[test]
    fn the_lower_id_dials_at_once_the_higher_waits() {
        let (low, high) = pair();
        let t0 = Instant::now();
        let mut at_low = DialOrder::new(low);
        let mut at_high = DialOrder::new(high);
        assert!(at_low.allow(high, t0));
        assert!(!at_low.holding(&high, t0));

        assert!(!at_high.allow(low, t0));
        assert!(at_high.holding(&low, t0));
        assert!(!at_high.allow(low, t0 + DEFER / 2), "still within the wait");
        assert!(
            at_high.allow(low, t0 + DEFER),
            "the lower one did not connect"
        );
        assert!(!at_high.holding(&low, t0 + DEFER));
    }

    #[test]
    fn exempt_peers_are_never_held_back() {
        let (low, high) = pair();
        let mut at_high = DialOrder::new(high);
        at_high.exempt(low);
        assert!(at_high.allow(low, Instant::now()));
    }

    #[test]
    fn an_old_pair_is_held_back_again() {
        let (low, high) = pair();
        let t0 = Instant::now();
        let mut at_high = DialOrder::new(high);
        assert!(!at_high.allow(low, t0));
        assert!(at_high.allow(low, t0 + DEFER));
        let later = t0 + FORGET + Duration::from_secs(1);
        assert!(!at_high.allow(low, later), "a new crossing waits again");
    }

    #[test]
    fn one_dial_per_remote_address_at_a_time() {
        let (low, high) = pair();
        let mut order = DialOrder::new(low);
        let a: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:4001".parse().unwrap();
        let now = Instant::now();
        assert!(order.start(a, Some(high)));
        assert!(
            !order.start(a, Some(high)),
            "a second dial to the same address"
        );
        assert!(order.start(b, None), "another address");
        assert!(
            order.holding(&high, now),
            "a refused dial says nothing of the link"
        );
        order.finish(&a);
        assert!(!order.holding(&high, now));
        assert!(order.start(a, Some(high)));
    }

    #[test]
    fn the_remote_socket_is_read_from_the_address() {
        let addr: Multiaddr = "/ip4/10.0.0.2/udp/9092/webrtc-direct".parse().unwrap();
        assert_eq!(socket_of(&addr), Some("10.0.0.2:9092".parse().unwrap()));
        let addr: Multiaddr = "/ip6/::1/udp/7/webrtc-direct".parse().unwrap();
        assert_eq!(socket_of(&addr), Some("[::1]:7".parse().unwrap()));
        assert_eq!(
            socket_of(&"/dns4/example.org/udp/1/webrtc-direct".parse().unwrap()),
            None
        );
    }

    #[test]
    fn the_peer_is_read_from_the_last_p2p_component() {
        let (relay, target) = pair();
        let addr: Multiaddr =
            format!("/ip4/1.2.3.4/udp/1/webrtc-direct/p2p/{relay}/p2p-circuit/p2p/{target}")
                .parse()
                .unwrap();
        assert_eq!(peer_of(&addr), Some(target));
        assert_eq!(peer_of(&"/ip4/1.2.3.4/tcp/1".parse().unwrap()), None);
    }
}
