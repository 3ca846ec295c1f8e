//! Unit tests of the tunnel codec: round trips, garbage, truncation, oversize, MACs.

use super::*;

fn samples() -> Vec<Frame> {
    let v4: SocketAddr = "203.0.113.7:40000".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
    vec![
        Frame::Hello {
            role: Role::Control,
            service: "web-1".into(),
            session: 0,
            transport: Transport::Tcp,
        },
        Frame::Hello {
            role: Role::Data,
            service: "a.b_c".into(),
            session: u64::MAX,
            transport: Transport::Udp,
        },
        Frame::Challenge { nonce: [7; 32] },
        Frame::Proof { mac: [9; 32] },
        Frame::Accepted { session: 42 },
        Frame::Error {
            code: ErrorCode::AuthFailed,
            reason: "authentication failed for service \"web\"".into(),
        },
        Frame::Error {
            code: ErrorCode::Busy,
            reason: String::new(),
        },
        Frame::Ping { seq: 1 },
        Frame::Pong { seq: 2 },
        Frame::ConnectionOpen {
            conn: 3,
            client: v4,
        },
        Frame::ConnectionDrop { conn: 3 },
        Frame::Start {
            conn: 4,
            client: v6,
            server: v4,
        },
        Frame::StartUdp {
            conn: 5,
            client: v4,
            server: v6,
        },
        Frame::Error {
            code: ErrorCode::WrongTransport,
            reason: "service \"dns\" is UDP".into(),
        },
        Frame::Started { conn: 4 },
    ]
}

fn split(bytes: &[u8]) -> (&[u8], &[u8]) {
    let len = body_len([bytes[0], bytes[1]]).unwrap();
    assert_eq!(len, bytes.len() - LEN_BYTES);
    bytes.split_at(LEN_BYTES)
}

#[test]
fn every_frame_round_trips() {
    for frame in samples() {
        let bytes = encode(&frame);
        let (_, body) = split(&bytes);
        assert_eq!(decode(body).unwrap(), frame);
    }
}

#[test]
fn every_truncation_is_an_error() {
    for frame in samples() {
        let bytes = encode(&frame);
        let (_, body) = split(&bytes);
        for cut in 0..body.len() {
            assert!(decode(&body[..cut]).is_err(), "{frame:?} cut at {cut}");
        }
    }
}

#[test]
fn trailing_bytes_are_an_error() {
    let bytes = encode(&Frame::Ping { seq: 5 });
    let mut body = bytes[LEN_BYTES..].to_vec();
    body.push(0);
    assert_eq!(decode(&body), Err(FrameError::Trailing(1)));
}

#[test]
fn length_prefix_limits() {
    assert_eq!(body_len([0, 0]), Err(FrameError::Empty));
    assert_eq!(body_len([0xff, 0xff]), Err(FrameError::Oversized(65535)));
    let over = (MAX_FRAME_BYTES + 1) as u16;
    assert_eq!(
        body_len(over.to_be_bytes()),
        Err(FrameError::Oversized(MAX_FRAME_BYTES + 1))
    );
    assert_eq!(
        body_len((MAX_FRAME_BYTES as u16).to_be_bytes()),
        Ok(MAX_FRAME_BYTES)
    );
    assert!(matches!(
        decode(&vec![kind::PING; MAX_FRAME_BYTES + 1]),
        Err(FrameError::Oversized(_))
    ));
}

#[test]
fn garbage_never_panics() {
    // A deterministic pseudo-random walk over short byte strings and the
    // one-byte mutations of every sample frame.
    let mut state: u32 = 0x1234_5678;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    for _ in 0..20_000 {
        let len = (next() % 64) as usize;
        let body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let _ = decode(&body);
    }
    for frame in samples() {
        let body = encode(&frame)[LEN_BYTES..].to_vec();
        for i in 0..body.len() {
            for value in [0u8, 1, 0x7f, 0xff] {
                let mut mutated = body.clone();
                mutated[i] = value;
                let _ = decode(&mutated);
            }
        }
    }
}

#[test]
fn tls_records_are_told_apart_from_oversized_frames() {
    // An alert (what a TLS relay answers a plain agent) and a ClientHello
    // (what a TLS agent sends a plain relay): 0x1503 = 5379, 0x1603 = 5635.
    assert_eq!(body_len([0x15, 0x03]), Err(FrameError::TlsRecord(21)));
    assert_eq!(body_len([0x16, 0x03]), Err(FrameError::TlsRecord(22)));
    for content_type in 20..=24u8 {
        assert_eq!(
            body_len([content_type, 3]),
            Err(FrameError::TlsRecord(content_type))
        );
    }
    // Not 3.x, or not a record type: just an oversized frame.
    assert_eq!(body_len([0x16, 0x04]), Err(FrameError::Oversized(0x1604)));
    assert_eq!(body_len([0x19, 0x03]), Err(FrameError::Oversized(0x1903)));
    // No valid length looks like a record.
    for len in 1..=MAX_FRAME_BYTES as u16 {
        assert_eq!(body_len(len.to_be_bytes()), Ok(usize::from(len)));
    }
}

#[test]
fn a_plain_hello_is_recognised_by_its_first_bytes() {
    let hello = encode(&Frame::Hello {
        role: Role::Data,
        service: "web".into(),
        session: 7,
        transport: Transport::Tcp,
    });
    assert!(looks_like_hello(&hello));
    assert!(looks_like_hello(&hello[..7]));
    assert!(!looks_like_hello(&hello[..6]));
    assert!(!looks_like_hello(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00
    ]));
    assert!(!looks_like_hello(&encode(&Frame::Ping { seq: 1 })));
}

#[test]
fn http_request_is_not_a_hello() {
    let request = b"GET / HTTP/1.1\r\n";
    // As a length prefix, "GE" announces 18245 bytes: refused before reading.
    assert!(matches!(
        body_len([request[0], request[1]]),
        Err(FrameError::Oversized(_))
    ));
    let mut body = vec![kind::HELLO];
    body.extend_from_slice(b"XXXX\x01\x01");
    assert_eq!(decode(&body), Err(FrameError::BadMagic));
}

#[test]
fn hello_checks_version_role_and_name() {
    let good = encode(&Frame::Hello {
        role: Role::Control,
        service: "svc".into(),
        session: 0,
        transport: Transport::Tcp,
    });
    let body = &good[LEN_BYTES..];
    let mut v = body.to_vec();
    v[5] = 99;
    assert_eq!(decode(&v), Err(FrameError::Version(99)));
    let mut r = body.to_vec();
    r[6] = 3;
    assert_eq!(decode(&r), Err(FrameError::BadValue("role", 3)));
    let mut n = body.to_vec();
    let last = n.len() - 2;
    n[last] = b' ';
    assert_eq!(decode(&n), Err(FrameError::BadServiceName));
    let mut t = body.to_vec();
    let last = t.len() - 1;
    t[last] = 9;
    assert_eq!(decode(&t), Err(FrameError::BadValue("transport", 9)));
    assert!(!valid_service_name(""));
    assert!(!valid_service_name(&"x".repeat(MAX_SERVICE_NAME + 1)));
    assert!(valid_service_name(&"x".repeat(MAX_SERVICE_NAME)));
}

#[test]
fn long_reasons_are_cut_on_a_char_boundary() {
    let frame = Frame::Error {
        code: ErrorCode::Protocol,
        reason: "é".repeat(MAX_REASON_BYTES),
    };
    let bytes = encode(&frame);
    assert!(bytes.len() - LEN_BYTES <= MAX_FRAME_BYTES);
    match decode(&bytes[LEN_BYTES..]).unwrap() {
        Frame::Error { reason, .. } => assert_eq!(reason.len(), MAX_REASON_BYTES),
        other => panic!("{other:?}"),
    }
}

#[test]
fn proof_binds_token_role_service_session_and_nonce() {
    let nonce = [1; NONCE_BYTES];
    let mac = proof(b"secret", Role::Data, "svc", 7, &nonce);
    assert!(verify(b"secret", Role::Data, "svc", 7, &nonce, &mac));
    assert!(!verify(b"Secret", Role::Data, "svc", 7, &nonce, &mac));
    assert!(!verify(b"secret", Role::Control, "svc", 7, &nonce, &mac));
    assert!(!verify(b"secret", Role::Data, "svd", 7, &nonce, &mac));
    assert!(!verify(b"secret", Role::Data, "svc", 8, &nonce, &mac));
    assert!(!verify(
        b"secret",
        Role::Data,
        "svc",
        7,
        &[2; NONCE_BYTES],
        &mac
    ));
}

#[test]
fn fatal_error_codes() {
    assert!(ErrorCode::AuthFailed.is_fatal());
    assert!(!ErrorCode::UnknownService.is_fatal());
    assert!(!ErrorCode::ShuttingDown.is_fatal());
}

#[test]
fn datagram_records_round_trip_in_order_and_keep_partial_ones() {
    let datagrams: Vec<Vec<u8>> = vec![vec![], b"a".to_vec(), vec![7; MAX_DATAGRAM], vec![1, 2, 3]];
    let mut wire = Vec::new();
    for d in &datagrams {
        assert!(encode_datagram(&mut wire, d));
    }
    assert!(!encode_datagram(&mut wire, &vec![0; MAX_DATAGRAM + 1]));
    let mut records = DatagramRecords::new(&wire);
    let got: Vec<Vec<u8>> = records.by_ref().map(|d| d.unwrap().to_vec()).collect();
    assert_eq!(got, datagrams);
    assert_eq!(records.consumed(), wire.len());
    // A cut record is left for later.
    let cut = &wire[..wire.len() - 1];
    let mut records = DatagramRecords::new(cut);
    assert_eq!(records.by_ref().count(), 3);
    assert_eq!(records.consumed(), wire.len() - 5);
    // A length beyond the limit is an error.
    let bad = ((MAX_DATAGRAM + 1) as u16).to_be_bytes();
    assert_eq!(
        DatagramRecords::new(&bad).next(),
        Some(Err(OversizedDatagram(MAX_DATAGRAM + 1)))
    );
}
