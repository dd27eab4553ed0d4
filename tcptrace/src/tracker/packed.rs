//! Socket addresses and keys as the table stores them: 18 bytes an address instead of
//! `SocketAddr`'s 32, and a key that hashes and compares without unpacking.
//!
//! Only the address, port and family are kept: both sources of addresses (the kernel's
//! events, `decode.rs`, and sock_diag, `diag/mod.rs`) build IPv6 ones with
//! `SocketAddr::new`, whose flow label and scope id are 0, which is what unpacking gives.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::connection::SocketKey;

/// An address and port; its family is kept by the owner (a bit of [`PackedKey::v6`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct PackedAddr {
    /// IPv4 in the first 4 bytes, the rest zero.
    ip: [u8; 16],
    pub(super) port: u16,
}

/// Bits of [`PackedKey::v6`].
pub(super) const LOCAL_V6: u8 = 1;
pub(super) const REMOTE_V6: u8 = 2;

impl PackedAddr {
    /// The packed address and whether it is IPv6.
    pub(super) fn pack(addr: SocketAddr) -> (Self, bool) {
        let mut ip = [0; 16];
        let v6 = match addr.ip() {
            IpAddr::V4(v4) => {
                ip[..4].copy_from_slice(&v4.octets());
                false
            }
            IpAddr::V6(v6) => {
                ip = v6.octets();
                true
            }
        };
        (
            Self {
                ip,
                port: addr.port(),
            },
            v6,
        )
    }

    pub(super) fn unpack(self, v6: bool) -> SocketAddr {
        let ip = if v6 {
            IpAddr::V6(Ipv6Addr::from(self.ip))
        } else {
            IpAddr::V4(Ipv4Addr::new(
                self.ip[0], self.ip[1], self.ip[2], self.ip[3],
            ))
        };
        SocketAddr::new(ip, self.port)
    }
}

/// A [`SocketKey`], packed: what the key indexes hash and compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct PackedKey {
    pub(super) netns: u32,
    pub(super) local: PackedAddr,
    pub(super) remote: PackedAddr,
    /// [`LOCAL_V6`] | [`REMOTE_V6`].
    pub(super) v6: u8,
}

impl PackedKey {
    pub(super) fn of(key: &SocketKey) -> Self {
        let (local, local_v6) = PackedAddr::pack(key.local);
        let (remote, remote_v6) = PackedAddr::pack(key.remote);
        Self {
            netns: key.netns,
            local,
            remote,
            v6: families(local_v6, remote_v6),
        }
    }

    pub(super) fn unpack(&self) -> SocketKey {
        SocketKey {
            netns: self.netns,
            local: self.local.unpack(self.v6 & LOCAL_V6 != 0),
            remote: self.remote.unpack(self.v6 & REMOTE_V6 != 0),
        }
    }
}

pub(super) fn families(local_v6: bool, remote_v6: bool) -> u8 {
    (if local_v6 { LOCAL_V6 } else { 0 }) | (if remote_v6 { REMOTE_V6 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_unpack_to_what_was_packed_v4_v6_and_mapped() {
        for (local, remote) in [
            ("127.0.0.1:40000", "127.0.0.1:8080"),
            ("[2001:db8::1]:443", "[2001:db8::2]:50000"),
            // A dual-stack socket's peer: an IPv4-mapped IPv6 address stays IPv6.
            ("[::ffff:10.0.0.1]:8080", "[::ffff:10.0.0.2]:1"),
            ("0.0.0.0:0", "[::]:0"),
        ] {
            let key = SocketKey {
                netns: 7,
                local: local.parse().unwrap(),
                remote: remote.parse().unwrap(),
            };
            let packed = PackedKey::of(&key);
            assert_eq!(packed.unpack(), key);
            assert_eq!(packed.unpack().local.to_string(), local);
        }
        let v4 = PackedKey::of(&SocketKey {
            netns: 7,
            local: "10.0.0.1:1".parse().unwrap(),
            remote: "10.0.0.2:2".parse().unwrap(),
        });
        let mapped = PackedKey::of(&SocketKey {
            netns: 7,
            local: "[::ffff:10.0.0.1]:1".parse().unwrap(),
            remote: "[::ffff:10.0.0.2]:2".parse().unwrap(),
        });
        assert_ne!(v4, mapped, "the family is part of the key");
        assert_eq!(std::mem::size_of::<PackedAddr>(), 18);
    }
}
