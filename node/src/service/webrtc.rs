//! Fresh WebRTC-direct sockets after a failed WebRTC-direct dial.
//!
//! `libp2p-webrtc` 0.10 dials from its listener's UDP socket, so every attempt to reach a peer
//! comes from the same address, and both sides route packets by address to the ICE session
//! they first saw from it. A handshake that fails (its data channel took more than 10 s to
//! open, as on a loaded machine) is not closed by the library, so its stale session keeps
//! catching every later attempt between the same two addresses: the remote answers the new
//! attempt with "username mismatch" and the pair never connects again. Listening on a fresh
//! port drops our stale sessions with the old socket and makes the next attempt a new
//! address to the remote. Only listeners asked for on port 0 are renewed: a fixed port is
//! part of an address others were given.
//!
//! Renewing ends the WebRTC-direct connections on the old socket, so it happens only while
//! there are none. (Closing the live connections first and then renewing was tried: the
//! connections made from the fresh socket came up but carried no gossipsub traffic in three
//! runs out of three.) With live ones, the node opens one fresh socket beside the old one
//! instead and keeps both: the library dials from the listener that last reported anything,
//! which is the fresh one from the moment it is added, so the next attempt comes from an
//! address the remote has not seen, while the live connections stay on the old socket. That
//! happens once; a pair that fails again after it stays unreachable over WebRTC-direct until
//! one side is alone or restarts. See docs/protocol.md, "WebRTC-direct dialling".

use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;

/// At least this long between renewals: longer than the library's 10 s handshake timeout, so
/// an attempt that started on the fresh socket gets the chance to finish.
pub const RENEW_SPACING: Duration = Duration::from_secs(15);

/// Whether `addr` is a WebRTC-direct listen address on an ephemeral port.
pub fn renewable(addr: &Multiaddr) -> bool {
    let webrtc = addr.iter().any(|p| matches!(p, Protocol::WebRTCDirect));
    let ephemeral = addr.iter().any(|p| matches!(p, Protocol::Udp(0)));
    webrtc && ephemeral
}

/// What renewing needs of the swarm (a seam, so the rules are tested without one).
pub trait Listen {
    fn close(&mut self, id: ListenerId);
    /// Listens on `addr` again, on a fresh port, and returns the new listener's id.
    fn listen(&mut self, addr: &Multiaddr) -> Result<ListenerId, String>;
}

impl<B: libp2p::swarm::NetworkBehaviour> Listen for libp2p::Swarm<B> {
    fn close(&mut self, id: ListenerId) {
        self.remove_listener(id);
    }
    fn listen(&mut self, addr: &Multiaddr) -> Result<ListenerId, String> {
        self.listen_on(addr.clone()).map_err(|e| e.to_string())
    }
}

/// What to do about our sockets after a failed WebRTC-direct dial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Nothing: too soon since the last renewal, or nothing left to try.
    None,
    /// No live WebRTC-direct connection: close every renewable socket, listen on fresh ones.
    Replace,
    /// Live connections use the sockets: listen on a fresh one beside each, keep the old.
    Beside,
}

/// The renewable WebRTC-direct listeners and when they were last renewed.
#[derive(Debug)]
pub struct Sockets {
    /// The listeners asked for, each on its current socket.
    listeners: Vec<(ListenerId, Multiaddr)>,
    /// Fresh sockets opened beside listeners in use ([`Renewal::Beside`]).
    beside: Vec<ListenerId>,
    renewed: Option<Instant>,
}

impl Sockets {
    pub fn new(listeners: Vec<(ListenerId, Multiaddr)>) -> Self {
        Sockets {
            listeners,
            beside: Vec::new(),
            renewed: None,
        }
    }

    /// A WebRTC-direct dial failed; `in_use` says whether live WebRTC-direct connections use
    /// our sockets. Returns what to do now.
    pub fn dial_failed(&self, in_use: bool) -> Renewal {
        self.dial_failed_at(Instant::now(), in_use)
    }

    fn dial_failed_at(&self, now: Instant, in_use: bool) -> Renewal {
        if !self.due_at(now) {
            Renewal::None
        } else if !in_use {
            Renewal::Replace
        } else if self.beside.is_empty() {
            Renewal::Beside
        } else {
            Renewal::None
        }
    }

    /// Whether a renewal may happen at `now`.
    fn due_at(&self, now: Instant) -> bool {
        !self.listeners.is_empty()
            && self
                .renewed
                .is_none_or(|at| now.saturating_duration_since(at) >= RENEW_SPACING)
    }

    /// Carries out `how` on `swarm`'s listeners. A listener that cannot be opened again is
    /// dropped with a warning.
    pub fn renew(&mut self, how: Renewal, swarm: &mut impl Listen) {
        self.renew_at(Instant::now(), how, swarm)
    }

    fn renew_at(&mut self, now: Instant, how: Renewal, swarm: &mut impl Listen) {
        if how == Renewal::None {
            return;
        }
        self.renewed = Some(now);
        if how == Renewal::Beside {
            for (_, addr) in &self.listeners {
                match swarm.listen(addr) {
                    Ok(id) => {
                        tracing::info!(
                            %addr,
                            "a WebRTC-direct dial failed: listening on a fresh UDP port beside \
                             the one in use, so the next attempt is not taken for the failed one"
                        );
                        self.beside.push(id);
                    }
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "cannot listen on WebRTC-direct again")
                    }
                }
            }
            return;
        }
        for id in self.beside.drain(..) {
            swarm.close(id);
        }
        let old = std::mem::take(&mut self.listeners);
        for (id, addr) in old {
            swarm.close(id);
            match swarm.listen(&addr) {
                Ok(new) => {
                    tracing::info!(
                        %addr,
                        "a WebRTC-direct dial failed: listening on a fresh UDP port so the \
                         next attempt is not taken for the failed one"
                    );
                    self.listeners.push((new, addr));
                }
                Err(e) => tracing::warn!(%addr, error = %e, "cannot listen on WebRTC-direct again"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    /// A swarm's listeners, recorded; `fail` makes every listen fail.
    #[derive(Default)]
    struct Recorder {
        closed: Vec<ListenerId>,
        opened: Vec<Multiaddr>,
        fail: bool,
    }

    impl Listen for Recorder {
        fn close(&mut self, id: ListenerId) {
            self.closed.push(id);
        }
        fn listen(&mut self, addr: &Multiaddr) -> Result<ListenerId, String> {
            if self.fail {
                return Err("no port".into());
            }
            self.opened.push(addr.clone());
            Ok(ListenerId::next())
        }
    }

    /// Runs a renewal: (closed, listened on).
    fn run(sockets: &mut Sockets, at: Instant, how: Renewal) -> (Vec<ListenerId>, Vec<Multiaddr>) {
        let mut swarm = Recorder::default();
        sockets.renew_at(at, how, &mut swarm);
        (swarm.closed, swarm.opened)
    }

    #[test]
    fn only_ephemeral_webrtc_direct_listeners_are_renewable() {
        assert!(renewable(&addr("/ip4/0.0.0.0/udp/0/webrtc-direct")));
        assert!(renewable(&addr("/ip6/::/udp/0/webrtc-direct")));
        assert!(!renewable(&addr("/ip4/0.0.0.0/udp/9092/webrtc-direct")));
        assert!(!renewable(&addr("/ip4/0.0.0.0/udp/0/quic-v1")));
        assert!(!renewable(&addr("/ip4/0.0.0.0/tcp/0")));
    }

    #[test]
    fn renewal_replaces_every_listener_and_waits_its_spacing() {
        let a = addr("/ip4/127.0.0.1/udp/0/webrtc-direct");
        let b = addr("/ip6/::1/udp/0/webrtc-direct");
        let (ia, ib) = (ListenerId::next(), ListenerId::next());
        let mut sockets = Sockets::new(vec![(ia, a.clone()), (ib, b.clone())]);
        let t0 = Instant::now();
        assert_eq!(sockets.dial_failed_at(t0, false), Renewal::Replace);

        let (closed, opened) = run(&mut sockets, t0, Renewal::Replace);
        assert_eq!(closed, vec![ia, ib]);
        assert_eq!(opened, vec![a.clone(), b.clone()]);
        let ids: Vec<ListenerId> = sockets.listeners.iter().map(|(id, _)| *id).collect();
        assert!(!ids.contains(&ia) && !ids.contains(&ib), "new ids are kept");

        // Not again within the spacing, then again after it.
        assert_eq!(
            sockets.dial_failed_at(t0 + RENEW_SPACING / 2, false),
            Renewal::None
        );
        assert_eq!(
            sockets.dial_failed_at(t0 + RENEW_SPACING, false),
            Renewal::Replace
        );
    }

    #[test]
    fn a_listener_that_cannot_be_reopened_is_dropped() {
        let a = addr("/ip4/127.0.0.1/udp/0/webrtc-direct");
        let mut sockets = Sockets::new(vec![(ListenerId::next(), a)]);
        let mut failing = Recorder {
            fail: true,
            ..Default::default()
        };
        sockets.renew_at(Instant::now(), Renewal::Replace, &mut failing);
        assert!(sockets.listeners.is_empty());
        assert_eq!(
            sockets.dial_failed_at(Instant::now() + RENEW_SPACING, false),
            Renewal::None,
            "nothing left to renew"
        );
    }

    #[test]
    fn live_connections_get_one_fresh_socket_beside_theirs() {
        let a = addr("/ip4/127.0.0.1/udp/0/webrtc-direct");
        let ia = ListenerId::next();
        let mut sockets = Sockets::new(vec![(ia, a.clone())]);
        let t0 = Instant::now();
        assert_eq!(sockets.dial_failed_at(t0, true), Renewal::Beside);
        let (closed, opened) = run(&mut sockets, t0, Renewal::Beside);
        assert!(closed.is_empty(), "the socket in use stays open");
        assert_eq!(opened, vec![a.clone()]);
        assert_eq!(sockets.listeners, vec![(ia, a.clone())]);
        assert_eq!(sockets.beside.len(), 1);

        // Spaced out, and only once while connections are live.
        assert_eq!(
            sockets.dial_failed_at(t0 + RENEW_SPACING / 2, true),
            Renewal::None
        );
        assert_eq!(
            sockets.dial_failed_at(t0 + RENEW_SPACING, true),
            Renewal::None
        );

        // Alone again: every socket goes, the one beside included, and fresh ones come.
        let t1 = t0 + RENEW_SPACING;
        assert_eq!(sockets.dial_failed_at(t1, false), Renewal::Replace);
        let beside = sockets.beside.clone();
        let (closed, opened) = run(&mut sockets, t1, Renewal::Replace);
        assert_eq!(closed, [beside, vec![ia]].concat());
        assert_eq!(opened, vec![a]);
        assert!(sockets.beside.is_empty());
        assert_eq!(
            sockets.dial_failed_at(t1 + RENEW_SPACING, true),
            Renewal::Beside,
            "a fresh socket beside the new one may come again"
        );
    }

    #[test]
    fn nothing_to_renew_is_never_due() {
        let sockets = Sockets::new(vec![]);
        assert_eq!(sockets.dial_failed_at(Instant::now(), false), Renewal::None);
        assert_eq!(sockets.dial_failed_at(Instant::now(), true), Renewal::None);
    }
}
