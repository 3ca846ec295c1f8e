//! The TCP tunnel's wire protocol between the relay and host agents: plain
//! data and a size-checked codec, no I/O.
//!
//! Every frame is `u16 length (big-endian) | u8 kind | payload`, where
//! `length` counts the kind byte and the payload and is at most
//! [`MAX_FRAME_BYTES`]. Integers are big-endian; strings are `u8 length |
//! UTF-8`; socket addresses are `u8 family (4 or 6) | address | u16 port`.
//!
//! Handshake, on both the control and the data connections:
//!
//! ```text
//! agent -> relay   Hello { role, service, session }   (starts with MAGIC)
//! relay -> agent   Challenge { nonce }
//! agent -> relay   Proof { mac }      HMAC-SHA256(token, context | nonce)
//! relay -> agent   Accepted { session } or Error { code, reason }
//! ```
//!
//! After that, the control connection carries `Ping`/`Pong`,
//! `ConnectionOpen` and `ConnectionDrop`. A pooled data connection carries
//! `Ping`/`Pong` until the relay assigns it a client with `Start` (sent right
//! after a `Ping`, whose `Pong` tells the relay the agent is alive); the agent
//! answers `Started` once its local service is connected (in the same write
//! as the service's first bytes if they come within a few milliseconds),
//! and from then on the connection is raw bytes in both directions.
//!
//! UDP services (protocol version 3): `Hello` ends with the transport the
//! agent serves (`u8`: 1 TCP, 2 UDP); the relay refuses an agent whose
//! transport is not its service's with `Error { WrongTransport }`, which
//! the agent treats as fatal. The relay starts a pooled connection for a
//! UDP session (one client address) with `StartUdp` instead of `Start`
//! (same fields), and an agent refuses the kind it does not serve, so TCP
//! bytes and datagrams are never mixed up. After `Started`, each direction
//! of a UDP session carries datagram records, `u16 length | datagram`
//! ([`encode_datagram`], [`DatagramRecords`]), length 0 to [`MAX_DATAGRAM`],
//! in the order they were received; the session ends when either side
//! closes the connection (the relay does so after the session's idle timeout).

mod frame;

pub use frame::*;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// TLS record content types 20–24 (RFC 8446 §5.1, RFC 6520): with the
/// version's first byte (3) they read as lengths 5123–6403, never valid.
const TLS_CONTENT_TYPES: std::ops::RangeInclusive<u8> = 20..=24;

/// Whether `bytes` start like a plain `Hello` (length, kind, [`MAGIC`]).
pub fn looks_like_hello(bytes: &[u8]) -> bool {
    let magic = LEN_BYTES + 1..LEN_BYTES + 1 + MAGIC.len();
    bytes.len() >= magic.end && bytes[LEN_BYTES] == kind::HELLO && bytes[magic] == MAGIC
}

/// Whether `name` is a valid service name: 1 to [`MAX_SERVICE_NAME`] bytes of `[A-Za-z0-9._-]`.
pub fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SERVICE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Reads a length prefix (a TLS record header is told apart); returns the body length.
pub fn body_len(prefix: [u8; LEN_BYTES]) -> Result<usize, FrameError> {
    let len = usize::from(u16::from_be_bytes(prefix));
    match len {
        0 => Err(FrameError::Empty),
        _ if TLS_CONTENT_TYPES.contains(&prefix[0]) && prefix[1] == 3 => {
            Err(FrameError::TlsRecord(prefix[0]))
        }
        n if n > MAX_FRAME_BYTES => Err(FrameError::Oversized(n)),
        n => Ok(n),
    }
}

mod kind {
    pub const HELLO: u8 = 1;
    pub const CHALLENGE: u8 = 2;
    pub const PROOF: u8 = 3;
    pub const ACCEPTED: u8 = 4;
    pub const ERROR: u8 = 5;
    pub const PING: u8 = 6;
    pub const PONG: u8 = 7;
    pub const OPEN: u8 = 8;
    pub const DROP: u8 = 9;
    pub const START: u8 = 10;
    pub const STARTED: u8 = 11;
    pub const START_UDP: u8 = 12;
}

/// Encodes `frame` with its length prefix.
///
/// Frames built from valid values always fit: service names are checked by
/// the caller ([`valid_service_name`]) and reasons are cut to [`MAX_REASON_BYTES`].
pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut out = vec![0, 0];
    match frame {
        Frame::Hello {
            role,
            service,
            session,
            transport,
        } => {
            out.push(kind::HELLO);
            out.extend_from_slice(&MAGIC);
            out.push(VERSION);
            out.push(match role {
                Role::Control => 1,
                Role::Data => 2,
            });
            out.extend_from_slice(&session.to_be_bytes());
            put_str(&mut out, service, MAX_SERVICE_NAME);
            out.push(match transport {
                Transport::Tcp => 1,
                Transport::Udp => 2,
            });
        }
        Frame::Challenge { nonce } => {
            out.push(kind::CHALLENGE);
            out.extend_from_slice(nonce);
        }
        Frame::Proof { mac } => {
            out.push(kind::PROOF);
            out.extend_from_slice(mac);
        }
        Frame::Accepted { session } => put_u64(&mut out, kind::ACCEPTED, *session),
        Frame::Error { code, reason } => {
            out.push(kind::ERROR);
            out.push(code.to_byte());
            put_long_str(&mut out, reason);
        }
        Frame::Ping { seq } => put_u64(&mut out, kind::PING, *seq),
        Frame::Pong { seq } => put_u64(&mut out, kind::PONG, *seq),
        Frame::ConnectionOpen { conn, client } => {
            put_u64(&mut out, kind::OPEN, *conn);
            put_addr(&mut out, client);
        }
        Frame::ConnectionDrop { conn } => put_u64(&mut out, kind::DROP, *conn),
        Frame::Start {
            conn,
            client,
            server,
        } => {
            put_u64(&mut out, kind::START, *conn);
            put_addr(&mut out, client);
            put_addr(&mut out, server);
        }
        Frame::StartUdp {
            conn,
            client,
            server,
        } => {
            put_u64(&mut out, kind::START_UDP, *conn);
            put_addr(&mut out, client);
            put_addr(&mut out, server);
        }
        Frame::Started { conn } => put_u64(&mut out, kind::STARTED, *conn),
    }
    let len = u16::try_from(out.len() - LEN_BYTES).unwrap_or(u16::MAX);
    out[..LEN_BYTES].copy_from_slice(&len.to_be_bytes());
    out
}

fn put_u64(out: &mut Vec<u8>, kind: u8, value: u64) {
    out.push(kind);
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_str(out: &mut Vec<u8>, text: &str, max: usize) {
    let bytes = &text.as_bytes()[..text.len().min(max)];
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

fn put_long_str(out: &mut Vec<u8>, text: &str) {
    let end = crate::protocol::floor_char_boundary(text, MAX_REASON_BYTES);
    out.extend_from_slice(&(end as u16).to_be_bytes());
    out.extend_from_slice(&text.as_bytes()[..end]);
}

fn put_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Decodes one frame body (the bytes after the length prefix).
pub fn decode(body: &[u8]) -> Result<Frame, FrameError> {
    if body.len() > MAX_FRAME_BYTES {
        return Err(FrameError::Oversized(body.len()));
    }
    let (&kind, rest) = body.split_first().ok_or(FrameError::Empty)?;
    let mut r = Reader(rest);
    let frame = match kind {
        kind::HELLO => decode_hello(&mut r)?,
        kind::CHALLENGE => Frame::Challenge { nonce: r.array()? },
        kind::PROOF => Frame::Proof { mac: r.array()? },
        kind::ACCEPTED => Frame::Accepted { session: r.u64()? },
        kind::ERROR => {
            let code = ErrorCode::from_byte(r.u8()?)?;
            let len = usize::from(u16::from_be_bytes(r.array()?));
            let reason = std::str::from_utf8(r.take(len)?).map_err(|_| FrameError::NotUtf8)?;
            Frame::Error {
                code,
                reason: reason.to_owned(),
            }
        }
        kind::PING => Frame::Ping { seq: r.u64()? },
        kind::PONG => Frame::Pong { seq: r.u64()? },
        kind::OPEN => Frame::ConnectionOpen {
            conn: r.u64()?,
            client: r.addr()?,
        },
        kind::DROP => Frame::ConnectionDrop { conn: r.u64()? },
        kind::START => Frame::Start {
            conn: r.u64()?,
            client: r.addr()?,
            server: r.addr()?,
        },
        kind::START_UDP => Frame::StartUdp {
            conn: r.u64()?,
            client: r.addr()?,
            server: r.addr()?,
        },
        kind::STARTED => Frame::Started { conn: r.u64()? },
        other => return Err(FrameError::UnknownKind(other)),
    };
    match r.0.len() {
        0 => Ok(frame),
        n => Err(FrameError::Trailing(n)),
    }
}

fn decode_hello(r: &mut Reader<'_>) -> Result<Frame, FrameError> {
    if r.array::<4>()? != MAGIC {
        return Err(FrameError::BadMagic);
    }
    match r.u8()? {
        VERSION => {}
        other => return Err(FrameError::Version(other)),
    }
    let role = match r.u8()? {
        1 => Role::Control,
        2 => Role::Data,
        other => return Err(FrameError::BadValue("role", other)),
    };
    let session = r.u64()?;
    let len = usize::from(r.u8()?);
    let service = std::str::from_utf8(r.take(len)?).map_err(|_| FrameError::NotUtf8)?;
    if !valid_service_name(service) {
        return Err(FrameError::BadServiceName);
    }
    let transport = match r.u8()? {
        1 => Transport::Tcp,
        2 => Transport::Udp,
        other => return Err(FrameError::BadValue("transport", other)),
    };
    Ok(Frame::Hello {
        role,
        service: service.to_owned(),
        session,
        transport,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.0.len() < n {
            return Err(FrameError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn addr(&mut self) -> Result<SocketAddr, FrameError> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            other => return Err(FrameError::BadValue("address family", other)),
        };
        let port = u16::from_be_bytes(self.array()?);
        Ok(SocketAddr::new(ip, port))
    }
}

/// Appends one datagram record (`u16 length | datagram`) to `out`; false
/// (and nothing appended) when the datagram exceeds [`MAX_DATAGRAM`].
pub fn encode_datagram(out: &mut Vec<u8>, datagram: &[u8]) -> bool {
    if datagram.len() > MAX_DATAGRAM {
        return false;
    }
    out.extend_from_slice(&(datagram.len() as u16).to_be_bytes());
    out.extend_from_slice(datagram);
    true
}

/// A datagram record announcing more than [`MAX_DATAGRAM`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("datagram record of {0} bytes exceeds the limit of {MAX_DATAGRAM}")]
pub struct OversizedDatagram(pub usize);

/// The complete datagram records at the start of a buffer, in order.
///
/// Iterating yields each datagram; [`DatagramRecords::consumed`] then says
/// how many bytes the complete records took (the rest is a partial record).
#[derive(Debug)]
pub struct DatagramRecords<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> DatagramRecords<'a> {
    /// Records of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        DatagramRecords { buf, at: 0 }
    }

    /// Bytes taken by the records yielded so far.
    pub fn consumed(&self) -> usize {
        self.at
    }
}

impl<'a> Iterator for DatagramRecords<'a> {
    type Item = Result<&'a [u8], OversizedDatagram>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.buf[self.at..];
        let prefix: [u8; DATAGRAM_LEN_BYTES] = rest.get(..DATAGRAM_LEN_BYTES)?.try_into().ok()?;
        let len = usize::from(u16::from_be_bytes(prefix));
        if len > MAX_DATAGRAM {
            return Some(Err(OversizedDatagram(len)));
        }
        let datagram = rest.get(DATAGRAM_LEN_BYTES..DATAGRAM_LEN_BYTES + len)?;
        self.at += DATAGRAM_LEN_BYTES + len;
        Some(Ok(datagram))
    }
}

/// Domain separation for the handshake MAC.
const MAC_CONTEXT: &[u8] = b"switchboard-tunnel-v1";

fn mac_for(token: &[u8], role: Role, service: &str, session: u64, nonce: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(token)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(MAC_CONTEXT);
    mac.update(&[match role {
        Role::Control => 1,
        Role::Data => 2,
    }]);
    mac.update(&session.to_be_bytes());
    mac.update(&[service.len() as u8]);
    mac.update(service.as_bytes());
    mac.update(nonce);
    mac
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;
use hmac::Mac;

/// The agent's proof: HMAC-SHA256 keyed with the service token over the
/// handshake context (role, session, service) and the relay's nonce.
pub fn proof(
    token: &[u8],
    role: Role,
    service: &str,
    session: u64,
    nonce: &[u8; NONCE_BYTES],
) -> [u8; MAC_BYTES] {
    mac_for(token, role, service, session, nonce)
        .finalize()
        .into_bytes()
        .into()
}

/// Checks an agent's proof in constant time.
pub fn verify(
    token: &[u8],
    role: Role,
    service: &str,
    session: u64,
    nonce: &[u8; NONCE_BYTES],
    mac: &[u8; MAC_BYTES],
) -> bool {
    mac_for(token, role, service, session, nonce)
        .verify_slice(mac)
        .is_ok()
}

#[cfg(test)]
mod tests;
