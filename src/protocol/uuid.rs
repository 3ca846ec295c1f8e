//! UUID parsing with the leniency of Python's `uuid.UUID(str)`.
//!
//! ProxyStore decodes every field whose name contains `uuid` with
//! `uuid.UUID(value)`, which accepts upper case, 32 bare hex digits, braces,
//! `urn:uuid:` and hyphens anywhere. [`parse_python_uuid`] accepts the same
//! spellings so that any frame ProxyStore accepts, Switchboard accepts too.
//! On the wire Switchboard always writes the canonical lowercase hyphenated form.

use uuid::Uuid;

/// Parses a UUID the way Python's `uuid.UUID(hex)` does.
///
/// The steps mirror CPython: remove every `urn:` and `uuid:`, strip `{`/`}`
/// from both ends, remove every `-`, then require exactly 32 hex digits.
/// (CPython's final `int(hex, 16)` also tolerates `_` separators, a sign or
/// a `0x` prefix in odd places; those are not UUIDs anyone writes and are
/// rejected here.)
pub fn parse_python_uuid(text: &str) -> Option<Uuid> {
    // The spelling every client sends (ProxyStore writes `str(uuid)`): 36
    // bytes, hyphens at 8/13/18/23, hex of either case. Python accepts all of
    // it, and so does the `uuid` crate, without the allocations below.
    let b = text.as_bytes();
    if b.len() == 36 && b[8] == b'-' && b[13] == b'-' && b[18] == b'-' && b[23] == b'-' {
        if let Ok(uuid) = Uuid::try_parse(text) {
            return Some(uuid);
        }
    }
    let stripped = text.replace("urn:", "").replace("uuid:", "");
    let trimmed = stripped.trim_matches(|c| c == '{' || c == '}');
    let mut digits = [0u8; 32];
    let mut count = 0usize;
    for byte in trimmed.bytes().filter(|b| *b != b'-') {
        if count == 32 || !byte.is_ascii_hexdigit() {
            return None;
        }
        digits[count] = byte;
        count += 1;
    }
    if count != 32 {
        return None;
    }
    let hex = std::str::from_utf8(&digits).ok()?;
    u128::from_str_radix(hex, 16).ok().map(Uuid::from_u128)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANON: &str = "0b02e3e1-3e68-41e9-9712-6aedce7b75db";

    #[test]
    fn accepts_every_python_spelling() {
        let want = Uuid::parse_str(CANON).unwrap();
        for spelling in [
            CANON,
            "0B02E3E1-3E68-41E9-9712-6AEDCE7B75DB",
            "0b02e3e13e6841e997126aedce7b75db",
            "{0b02e3e1-3e68-41e9-9712-6aedce7b75db}",
            "urn:uuid:0b02e3e1-3e68-41e9-9712-6aedce7b75db",
            "0b02-e3e1-3e68-41e9-9712-6aedce7b-75db",
        ] {
            assert_eq!(parse_python_uuid(spelling), Some(want), "{spelling}");
        }
    }

    #[test]
    fn rejects_what_python_rejects() {
        for bad in [
            "",
            "not-a-uuid",
            "0b02e3e1-3e68-41e9-9712-6aedce7b75d",
            "0b02e3e1-3e68-41e9-9712-6aedce7b75dbb",
            "0b02e3e1-3e68-41e9-9712-6aedce7b75dg",
            "é0b02e3e1-3e68-41e9-9712-6aedce7b75d",
        ] {
            assert_eq!(parse_python_uuid(bad), None, "{bad}");
        }
    }
}
