//! The PROXY protocol version 2 header (HAProxy's specification, section
//! 2.2): sent first on a connection so the receiving service learns the
//! original client address. Only what a sender needs: `PROXY` command, TCP
//! over IPv4 or IPv6. IPv4-mapped IPv6 addresses count as IPv4 (an IPv4
//! client of a dual-stack listener is announced as `TCP4`); mixed families
//! are sent as IPv6, the IPv4 side mapped.

use std::net::{IpAddr, SocketAddr};

use crate::addr::canonical;

/// The 12-byte signature every v2 header starts with.
pub const SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// Version 2, command PROXY.
const VERSION_PROXY: u8 = 0x21;
/// AF_INET, SOCK_STREAM.
const TCP4: u8 = 0x11;
/// AF_INET6, SOCK_STREAM.
const TCP6: u8 = 0x21;

fn v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
        IpAddr::V6(ip) => ip.octets(),
    }
}

/// The header announcing a TCP connection from `source` to `destination`
/// (both taken in [`crate::addr::canonical`] form).
pub fn header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (source, destination) = (canonical(source), canonical(destination));
    let mut out = SIGNATURE.to_vec();
    out.push(VERSION_PROXY);
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            out.push(TCP4);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
        }
        (src, dst) => {
            out.push(TCP6);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(src));
            out.extend_from_slice(&v6(dst));
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_is_byte_exact() {
        let h = header(
            "192.0.2.1:56324".parse().unwrap(),
            "198.51.100.7:443".parse().unwrap(),
        );
        let mut expected = SIGNATURE.to_vec();
        expected.extend_from_slice(&[0x21, 0x11, 0x00, 0x0C]);
        expected.extend_from_slice(&[192, 0, 2, 1, 198, 51, 100, 7]);
        expected.extend_from_slice(&[0xDC, 0x04, 0x01, 0xBB]);
        assert_eq!(h, expected);
        assert_eq!(h.len(), 16 + 12);
    }

    #[test]
    fn ipv6_and_mixed_headers() {
        let h = header(
            "[2001:db8::1]:1000".parse().unwrap(),
            "[::1]:2000".parse().unwrap(),
        );
        assert_eq!(&h[12..16], &[0x21, 0x21, 0x00, 0x24]);
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(h[16], 0x20);
        assert_eq!(&h[48..52], &[0x03, 0xE8, 0x07, 0xD0]);
        let mapped = header(
            "[::ffff:127.0.0.1]:1000".parse().unwrap(),
            "[::ffff:127.0.0.1]:2000".parse().unwrap(),
        );
        assert_eq!(
            mapped,
            header(
                "127.0.0.1:1000".parse().unwrap(),
                "127.0.0.1:2000".parse().unwrap()
            ),
            "IPv4-mapped addresses are announced as TCP4"
        );
        assert_eq!(&mapped[12..16], &[0x21, 0x11, 0x00, 0x0C]);
        let mixed = header("192.0.2.1:1".parse().unwrap(), "[::1]:2".parse().unwrap());
        assert_eq!(mixed[13], 0x21);
        assert_eq!(
            &mixed[16..32],
            &"::ffff:192.0.2.1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
    }
}
