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
//! there are none: with live ones, the failed pair stays unreachable over WebRTC-direct until
//! one side is alone or restarts. (Closing the live connections first and then renewing was
//! tried: the connections made from the fresh socket came up but carried no gossipsub traffic
//! in three runs out of three.) See docs/protocol.md, "WebRTC-direct dialling".

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

/// The renewable WebRTC-direct listeners and when they were last renewed.
#[derive(Debug)]
pub struct Sockets {
    listeners: Vec<(ListenerId, Multiaddr)>,
    renewed: Option<Instant>,
}

impl Sockets {
    pub fn new(listeners: Vec<(ListenerId, Multiaddr)>) -> Self {
        Sockets {
            listeners,
            renewed: None,
        }
    }

    /// A WebRTC-direct dial failed; `in_use` says whether live WebRTC-direct connections use
    /// our sockets. Returns whether to renew them now.
    pub fn dial_failed(&self, in_use: bool) -> bool {
        self.dial_failed_at(Instant::now(), in_use)
    }

    fn dial_failed_at(&self, now: Instant, in_use: bool) -> bool {
        !in_use && self.due_at(now)
    }

    /// Whether a renewal may happen at `now`.
    fn due_at(&self, now: Instant) -> bool {
        !self.listeners.is_empty()
            && self
                .renewed
                .is_none_or(|at| now.saturating_duration_since(at) >= RENEW_SPACING)
    }

    /// Hands each listener to `reopen`, which closes it and listens on its address again,
    /// returning the new listener's id. A listener that cannot be opened again is dropped
    /// with a warning.
    pub fn renew(
        &mut self,
        reopen: impl FnMut(ListenerId, &Multiaddr) -> Result<ListenerId, String>,
    ) {
        self.renew_at(Instant::now(), reopen)
    }

    fn renew_at(
        &mut self,
        now: Instant,
        mut reopen: impl FnMut(ListenerId, &Multiaddr) -> Result<ListenerId, String>,
    ) {
        self.renewed = Some(now);
        let old = std::mem::take(&mut self.listeners);
        for (id, addr) in old {
            match reopen(id, &addr) {
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
        assert!(sockets.due_at(t0));

        let mut removed = Vec::new();
        let mut opened = Vec::new();
        sockets.renew_at(t0, |id, addr| {
            removed.push(id);
            opened.push(addr.clone());
            Ok(ListenerId::next())
        });
        assert_eq!(removed, vec![ia, ib]);
        assert_eq!(opened, vec![a.clone(), b.clone()]);
        let ids: Vec<ListenerId> = sockets.listeners.iter().map(|(id, _)| *id).collect();
        assert!(!ids.contains(&ia) && !ids.contains(&ib), "new ids are kept");

        // Not again within the spacing, then again after it.
        assert!(!sockets.due_at(t0 + RENEW_SPACING / 2));
        assert!(sockets.due_at(t0 + RENEW_SPACING));
    }

    #[test]
    fn a_listener_that_cannot_be_reopened_is_dropped() {
        let a = addr("/ip4/127.0.0.1/udp/0/webrtc-direct");
        let mut sockets = Sockets::new(vec![(ListenerId::next(), a)]);
        sockets.renew_at(Instant::now(), |_, _| Err("no port".into()));
        assert!(sockets.listeners.is_empty());
        assert!(
            !sockets.due_at(Instant::now() + RENEW_SPACING),
            "nothing left to renew"
        );
    }

    #[test]
    fn live_connections_keep_the_socket() {
        let a = addr("/ip4/127.0.0.1/udp/0/webrtc-direct");
        let mut sockets = Sockets::new(vec![(ListenerId::next(), a)]);
        let t0 = Instant::now();
        assert!(!sockets.dial_failed_at(t0, true));
        assert!(sockets.dial_failed_at(t0, false));
        sockets.renew_at(t0, |_, _| Ok(ListenerId::next()));
        assert!(
            !sockets.dial_failed_at(t0 + RENEW_SPACING / 2, false),
            "spaced out"
        );
        assert!(sockets.dial_failed_at(t0 + RENEW_SPACING, false));
    }

    #[test]
    fn nothing_to_renew_is_never_due() {
        assert!(!Sockets::new(vec![]).due_at(Instant::now()));
    }
}
