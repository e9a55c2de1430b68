//! The ports the OS gave a node's TCP and QUIC listeners, kept for its next start.
//!
//! Peers remember where they reached a node (see [`crate::known_peers`]). A node that
//! listened on an OS-chosen port and comes back on another one cannot be found there again:
//! two users without a server, whose nodes both restarted, would each dial the other's old
//! port forever. So a listener asked for on port 0 first tries the port it had last time,
//! and takes a new one only if that is taken.
//!
//! libp2p's TCP listeners set `SO_REUSEPORT`, so binding a port another node of the same
//! user listens on would succeed, and the kernel would share incoming connections between
//! the two. [`free`] binds a plain socket first, which fails on such a port.
//!
//! WebRTC-direct listeners are left out: their port is renewed after failed handshakes by
//! design (see `service::webrtc`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use serde::{Deserialize, Serialize};

/// The ports kept, by the listen address asked for (`/ip4/0.0.0.0/tcp/0`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KeptPorts {
    ports: BTreeMap<String, u16>,
    #[serde(skip)]
    dirty: bool,
}

impl KeptPorts {
    /// Reads what [`KeptPorts::encode`] wrote (nothing if it cannot be read: the
    /// listeners then take new ports, as on a first start).
    pub fn decode(bytes: &[u8]) -> Self {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain data serialises")
    }

    /// What to listen on first for `asked`: the same address on the port it got last
    /// time, if it was asked for on port 0 over TCP or QUIC and got one.
    pub fn again(&self, asked: &Multiaddr) -> Option<Multiaddr> {
        if !keepable(asked) {
            return None;
        }
        let port = *self.ports.get(&asked.to_string())?;
        Some(
            asked
                .iter()
                .map(|p| match p {
                    Protocol::Tcp(0) => Protocol::Tcp(port),
                    Protocol::Udp(0) => Protocol::Udp(port),
                    p => p,
                })
                .collect(),
        )
    }

    /// The listener asked for on `asked` listens on `got`.
    pub fn got(&mut self, asked: &Multiaddr, got: &Multiaddr) {
        if !keepable(asked) {
            return;
        }
        let Some(port) = got.iter().find_map(|p| match p {
            Protocol::Tcp(port) | Protocol::Udp(port) => Some(port),
            _ => None,
        }) else {
            return;
        };
        if port != 0 && self.ports.insert(asked.to_string(), port) != Some(port) {
            self.dirty = true;
        }
    }

    /// Whether something changed since the last call: the caller then writes the ports.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// The write after [`KeptPorts::take_dirty`] failed: the next call says so again.
    pub fn unsaved(&mut self) {
        self.dirty = true;
    }
}

/// Whether a listener asked for on `asked` keeps its port: TCP or QUIC, on port 0.
pub fn keepable(asked: &Multiaddr) -> bool {
    let p: Vec<Protocol> = asked.iter().collect();
    matches!(
        p.as_slice(),
        [Protocol::Ip4(_) | Protocol::Ip6(_), Protocol::Tcp(0)]
            | [
                Protocol::Ip4(_) | Protocol::Ip6(_),
                Protocol::Udp(0),
                Protocol::QuicV1
            ]
    )
}

/// Whether nothing listens on `addr`'s port now (no process of any user), as far as
/// binding a plain socket there tells.
pub fn free(addr: &Multiaddr) -> bool {
    let mut ip: Option<IpAddr> = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(a.into()),
            Protocol::Ip6(a) => ip = Some(a.into()),
            Protocol::Tcp(port) => {
                return ip.is_some_and(|ip| {
                    std::net::TcpListener::bind(SocketAddr::new(ip, port)).is_ok()
                });
            }
            Protocol::Udp(port) => {
                return ip.is_some_and(|ip| {
                    std::net::UdpSocket::bind(SocketAddr::new(ip, port)).is_ok()
                });
            }
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_port_the_os_chose_is_asked_for_again_next_time() {
        let tcp = addr("/ip4/0.0.0.0/tcp/0");
        let quic = addr("/ip4/0.0.0.0/udp/0/quic-v1");
        let mut kept = KeptPorts::default();
        assert_eq!(kept.again(&tcp), None);
        kept.got(&tcp, &addr("/ip4/192.0.2.1/tcp/40123"));
        kept.got(&quic, &addr("/ip4/192.0.2.1/udp/40999/quic-v1"));
        assert!(kept.take_dirty());
        // Another interface of the same listener: the same port, nothing to write.
        kept.got(&tcp, &addr("/ip4/127.0.0.1/tcp/40123"));
        assert!(!kept.take_dirty());
        let back = KeptPorts::decode(&kept.encode());
        assert_eq!(back.again(&tcp), Some(addr("/ip4/0.0.0.0/tcp/40123")));
        assert_eq!(
            back.again(&quic),
            Some(addr("/ip4/0.0.0.0/udp/40999/quic-v1"))
        );
        // Another address asked for has nothing kept.
        assert_eq!(back.again(&addr("/ip4/127.0.0.1/tcp/0")), None);
        assert!(KeptPorts::decode(b"{broken").again(&tcp).is_none());
    }

    #[test]
    fn fixed_ports_and_webrtc_direct_are_not_kept() {
        for asked in [
            "/ip4/0.0.0.0/tcp/4001",
            "/ip4/0.0.0.0/udp/0/webrtc-direct",
            "/ip4/0.0.0.0/tcp/0/ws",
        ] {
            let asked = addr(asked);
            let mut kept = KeptPorts::default();
            kept.got(&asked, &addr("/ip4/192.0.2.1/tcp/40123"));
            assert!(!kept.take_dirty(), "{asked}");
            assert_eq!(kept.again(&asked), None);
        }
        assert!(keepable(&addr("/ip6/::/udp/0/quic-v1")));
    }

    #[test]
    fn a_port_in_use_is_not_free() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        assert!(!free(&addr(&format!("/ip4/127.0.0.1/tcp/{port}"))));
        drop(taken);
        assert!(free(&addr(&format!("/ip4/127.0.0.1/tcp/{port}"))));
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        assert!(!free(&addr(&format!("/ip4/127.0.0.1/udp/{port}/quic-v1"))));
    }
}
