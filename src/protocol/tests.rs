//! Codec tests against the literal frames of shared/DESIGN.md and ProxyStore.

use super::relay::*;
use uuid::Uuid;

const A: &str = "0b02e3e1-3e68-41e9-9712-6aedce7b75db";
const B: &str = "fce0cb8b-0f0a-4378-9ead-6136be5877b7";
const REGISTRATION: &str = r#"{"name": "peer-A", "uuid": "0b02e3e1-3e68-41e9-9712-6aedce7b75db", "message_type": "relay_registration"}"#;
const RESPONSE: &str =
    r#"{"success": true, "message": null, "error": false, "message_type": "relay_response"}"#;
const OFFER: &str = r#"{"source_uuid": "0b02e3e1-3e68-41e9-9712-6aedce7b75db", "source_name": "peer-A", "peer_uuid": "fce0cb8b-0f0a-4378-9ead-6136be5877b7", "description_type": "offer", "description": "{\"sdp\": \"v=0\\r\\n...\", \"type\": \"offer\"}", "error": null, "message_type": "peer_connection"}"#;

fn uuid(s: &str) -> Uuid {
    Uuid::parse_str(s).unwrap()
}

fn offer() -> PeerConnection {
    PeerConnection {
        source_uuid: uuid(A),
        source_name: "peer-A".into(),
        peer_uuid: uuid(B),
        description_type: DescriptionType::Offer,
        description: "{\"sdp\": \"v=0\\r\\n...\", \"type\": \"offer\"}".into(),
        error: None,
    }
}

#[test]
fn literal_frames_round_trip_byte_for_byte() {
    let reg = RelayMessage::Registration(RelayRegistration {
        name: "peer-A".into(),
        uuid: uuid(A),
    });
    assert_eq!(decode(REGISTRATION).unwrap(), reg);
    assert_eq!(encode(&reg), REGISTRATION);

    let resp = RelayMessage::Response(RelayResponse::default());
    assert_eq!(decode(RESPONSE).unwrap(), resp);
    assert_eq!(encode(&resp), RESPONSE);

    let pc = RelayMessage::PeerConnection(offer());
    assert_eq!(decode(OFFER).unwrap(), pc);
    assert_eq!(encode(&pc), OFFER);
}

#[test]
fn error_echo_matches_proxystore_bytes() {
    let mut pc = offer();
    pc.error = Some("nope \u{e9}".into());
    let text = encode(&RelayMessage::PeerConnection(pc));
    assert!(text.ends_with(r#""error": "nope \u00e9", "message_type": "peer_connection"}"#));
}

#[test]
fn any_key_order_and_absent_optionals() {
    let reordered = r#"{"message_type": "relay_registration", "uuid": "0B02E3E1-3E68-41E9-9712-6AEDCE7B75DB", "name": "peer-A"}"#;
    assert_eq!(decode(reordered).unwrap(), decode(REGISTRATION).unwrap());

    let bare = r#"{"message_type":"relay_response"}"#;
    assert_eq!(
        decode(bare).unwrap(),
        RelayMessage::Response(RelayResponse::default())
    );
    let nulls = r#"{"message_type":"relay_response","success":null,"error":null,"message":null}"#;
    assert_eq!(
        decode(nulls).unwrap(),
        RelayMessage::Response(RelayResponse::default())
    );

    let no_error = r#"{"source_uuid":"{0b02e3e1-3e68-41e9-9712-6aedce7b75db}","source_name":"peer-A","peer_uuid":"urn:uuid:fce0cb8b0f0a43789ead6136be5877b7","description_type":"offer","description":"{\"sdp\": \"v=0\\r\\n...\", \"type\": \"offer\"}","message_type":"peer_connection"}"#;
    assert_eq!(
        decode(no_error).unwrap(),
        RelayMessage::PeerConnection(offer())
    );
}

#[test]
fn typed_errors_for_bad_frames() {
    assert!(matches!(decode("not json"), Err(DecodeError::NotJson(_))));
    assert_eq!(decode("[1, 2]"), Err(DecodeError::NotObject));
    assert_eq!(decode("\"text\""), Err(DecodeError::NotObject));
    assert_eq!(decode("42"), Err(DecodeError::NotObject));
    assert_eq!(decode("null"), Err(DecodeError::NotObject));
    assert_eq!(decode(r#"{"name": "x"}"#), Err(DecodeError::MissingType));
    assert_eq!(
        decode(r#"{"message_type": 3}"#),
        Err(DecodeError::MissingType)
    );
    assert_eq!(
        decode(r#"{"message_type": "hello"}"#),
        Err(DecodeError::UnknownType("hello".into()))
    );
    // The enum *value* (class name) is not what ProxyStore puts on the wire.
    assert_eq!(
        decode(
            r#"{"name": "a", "uuid": "0b02e3e1-3e68-41e9-9712-6aedce7b75db", "message_type": "RelayRegistrationRequest"}"#
        ),
        Err(DecodeError::UnknownType("RelayRegistrationRequest".into()))
    );
}

fn field_error(text: &str) -> String {
    match decode(text) {
        Err(DecodeError::InvalidField { detail, .. }) => detail,
        other => panic!("expected a field error for {text}, got {other:?}"),
    }
}

#[test]
fn field_errors_name_the_field() {
    assert!(field_error(
        r#"{"uuid": "0b02e3e1-3e68-41e9-9712-6aedce7b75db", "message_type": "relay_registration"}"#
    )
    .contains("name"));
    assert!(field_error(r#"{"name": "a", "uuid": "0b02e3e1-3e68-41e9-9712-6aedce7b75db", "extra": 1, "message_type": "relay_registration"}"#).contains("extra"));
    assert!(
        field_error(r#"{"name": "a", "uuid": "zzz", "message_type": "relay_registration"}"#)
            .contains("UUID")
    );
    assert!(
        field_error(r#"{"name": "a", "uuid": null, "message_type": "relay_registration"}"#)
            .contains("UUID")
    );
    assert!(field_error(r#"{"name": 5, "uuid": "0b02e3e1-3e68-41e9-9712-6aedce7b75db", "message_type": "relay_registration"}"#).contains("string"));
    let bad_type = OFFER.replace(
        "\"offer\", \"description\"",
        "\"pranswer\", \"description\"",
    );
    assert!(field_error(&bad_type).contains("pranswer"));
}

#[test]
fn non_ascii_names_survive_round_trip() {
    let reg = RelayMessage::Registration(RelayRegistration {
        name: "pëer-😀".into(),
        uuid: uuid(A),
    });
    let text = encode(&reg);
    assert!(text.is_ascii());
    assert!(text.contains(r#""p\u00eber-\ud83d\ude00""#));
    assert_eq!(decode(&text).unwrap(), reg);
}

/// Every truncation and every single-byte corruption of the literal frames
/// decodes to a value or a typed error (never a panic), and whatever decodes
/// re-encodes to a frame that decodes to the same value.
#[test]
fn mutated_frames_never_panic_and_round_trip() {
    let replacements = [b'"', b'{', b'}', b'\\', b'0', b'x', b' ', 0xff, b'\n'];
    let mut decoded = 0usize;
    for frame in [REGISTRATION, RESPONSE, OFFER] {
        let bytes = frame.as_bytes();
        let mut candidates: Vec<Vec<u8>> = (0..bytes.len()).map(|n| bytes[..n].to_vec()).collect();
        for i in 0..bytes.len() {
            for &r in &replacements {
                let mut mutated = bytes.to_vec();
                mutated[i] = r;
                candidates.push(mutated);
            }
        }
        for candidate in candidates {
            let Ok(text) = std::str::from_utf8(&candidate) else {
                continue;
            };
            if let Ok(message) = decode(text) {
                decoded += 1;
                let again = encode(&message);
                assert_eq!(decode(&again).as_ref(), Ok(&message), "{text}");
            }
        }
    }
    assert!(
        decoded > 0,
        "some harmless mutations (e.g. inside strings) must still decode"
    );
}

fn offer_with_description(literal: &str) -> String {
    OFFER.replace(
        r#""{\"sdp\": \"v=0\\r\\n...\", \"type\": \"offer\"}""#,
        literal,
    )
}

/// The relay keeps a description already in `json.dumps`'s form as it came
/// (no unescape, no escape) and forwards exactly ProxyStore's bytes.
#[test]
fn the_relay_forwards_a_dumps_form_description_as_it_came() {
    let Ok(RelayMessage::PeerConnection(kept)) = decode_relayed(OFFER) else {
        panic!("the offer did not decode");
    };
    assert_eq!(
        kept.description.as_json(),
        r#""{\"sdp\": \"v=0\\r\\n...\", \"type\": \"offer\"}""#
    );
    assert_eq!(kept.description.text(), offer().description);
    assert_eq!(encode_forwarded(&kept), OFFER);
}

/// Any other spelling of the same text is rewritten in ProxyStore's form:
/// the forwarded bytes equal decoding and encoding again.
#[test]
fn the_relay_rewrites_other_spellings_in_proxystore_form() {
    for (literal, text) in [
        (r#""\u0041\/b""#, "A/b"),
        (r#""\u00E9\u00e9""#, "éé"),
        ("\"raw é 日 \u{7f}\"", "raw é 日 \u{7f}"),
        (r#""\ud83d\ude00 \u0001""#, "😀 \u{1}"),
        (r#""tab\tand\/slash""#, "tab\tand/slash"),
    ] {
        let frame = offer_with_description(literal);
        let Ok(RelayMessage::PeerConnection(pc)) = decode(&frame) else {
            panic!("{frame} did not decode");
        };
        let Ok(RelayMessage::PeerConnection(kept)) = decode_relayed(&frame) else {
            panic!("{frame} did not decode for the relay");
        };
        assert_eq!(pc.description, text);
        assert_eq!(kept.description.text(), text);
        assert_eq!(
            encode_forwarded(&kept),
            encode_peer_connection(&pc),
            "{literal}"
        );
        assert_eq!(
            kept.description.as_json(),
            DescriptionLiteral::of_text(text).as_json()
        );
    }
}

/// What `decode` refuses, `decode_relayed` refuses with the same kind of error.
#[test]
fn the_relay_refuses_the_same_descriptions() {
    for literal in ["5", "null", "[\"a\"]", "{\"sdp\": 1}", r#""a\ud800b""#] {
        let frame = offer_with_description(literal);
        let plain = decode(&frame).unwrap_err();
        let relayed = decode_relayed(&frame).unwrap_err();
        assert_eq!(
            std::mem::discriminant(&plain),
            std::mem::discriminant(&relayed),
            "{literal}: {plain} / {relayed}"
        );
        if let DecodeError::InvalidField { kind, .. } = relayed {
            assert_eq!(kind, "peer_connection");
        }
    }
}
