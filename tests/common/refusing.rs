//! An address where a TCP connect is refused for as long as the value lives.
//!
//! A port bound and released at once can be bound again by another test, or a
//! connect to it can pick it as its own source port and connect to itself
//! (TCP simultaneous open on loopback): either way the "refused" address then
//! answers. Holding the port bound without listening keeps it refusing.

use std::net::SocketAddr;

use socket2::{Domain, Socket, Type};

/// A socket bound to `127.0.0.1:0` that never listens; connects get RST.
pub struct Refusing {
    _socket: Socket,
    addr: SocketAddr,
}

impl Refusing {
    pub fn new() -> Refusing {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        socket.bind(&any.into()).expect("bind 127.0.0.1:0");
        let addr = socket
            .local_addr()
            .expect("local address")
            .as_socket()
            .expect("an IP address");
        Refusing {
            _socket: socket,
            addr,
        }
    }

    /// `127.0.0.1:port`, refusing while `self` lives.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}
