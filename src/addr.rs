//! How the relay reports a peer's address: always in canonical form.
//!
//! A socket bound to an IPv6 address (`[::]`, the dual-stack wildcard)
//! sees IPv4 clients as IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`).
//! Every address the relay reports (PROXY headers, `ConnectionOpen`,
//! `Start`, `/tunnels`, `/clients`, log lines) goes through [`canonical`]
//! first, so an IPv4 client is reported as IPv4 whatever the listener.

use std::fmt;
use std::net::SocketAddr;

/// `addr` with an IPv4-mapped IPv6 address turned into the IPv4 address it
/// maps (`[::ffff:192.0.2.1]:80` → `192.0.2.1:80`, RFC 4291 §2.5.5.2);
/// every other address unchanged (`::1` stays IPv6).
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// How a log line shows a peer address that may be unknown: the canonical
/// address, or `unknown` — never Rust's `Some(…)`/`None` wrapper.
pub fn shown(addr: Option<SocketAddr>) -> Shown {
    Shown(addr.map(canonical))
}

/// [`shown`]'s result: formats with `{}`.
#[derive(Clone, Copy, Debug)]
pub struct Shown(Option<SocketAddr>);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{canonical, shown};
    use std::net::SocketAddr;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn mapped_ipv4_becomes_ipv4_and_the_rest_stays() {
        assert_eq!(
            canonical(addr("[::ffff:127.0.0.1]:80")),
            addr("127.0.0.1:80")
        );
        assert_eq!(canonical(addr("[::ffff:192.0.2.1]:1")), addr("192.0.2.1:1"));
        for same in ["127.0.0.1:9", "[::1]:9", "[2001:db8::1]:9", "[::]:9"] {
            assert_eq!(canonical(addr(same)), addr(same));
        }
        // IPv4-compatible (deprecated, ::a.b.c.d) addresses are not IPv4-mapped.
        assert_eq!(canonical(addr("[::7f00:1]:9")), addr("[::7f00:1]:9"));
    }

    #[test]
    fn shown_prints_the_address_or_unknown() {
        assert_eq!(
            shown(Some(addr("127.0.0.1:80"))).to_string(),
            "127.0.0.1:80"
        );
        assert_eq!(
            shown(Some(addr("[::ffff:10.0.0.1]:5"))).to_string(),
            "10.0.0.1:5"
        );
        assert_eq!(shown(Some(addr("[::1]:9"))).to_string(), "[::1]:9");
        assert_eq!(shown(None).to_string(), "unknown");
    }
}
