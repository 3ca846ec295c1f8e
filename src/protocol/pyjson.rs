//! JSON output byte-identical to Python's `json.dumps` with default options.
//!
//! ProxyStore encodes frames with `json.dumps(dataclasses.asdict(msg))`:
//! separators `", "` and `": "`, and `ensure_ascii=True`, so every non-ASCII
//! character is written as a `\uXXXX` escape (surrogate pairs above U+FFFF).
//! These helpers write exactly that, so Switchboard's frames equal ProxyStore's.

use std::fmt::Write;

/// Appends `value` as a JSON string literal the way `json.dumps` writes it.
///
/// Runs of printable ASCII other than `"` and `\\` are found eight bytes at
/// a time (`plain_run`) and copied in one go; everything else is escaped.
pub fn push_str(out: &mut String, value: &str) {
    out.reserve(value.len() + 2);
    out.push('"');
    let bytes = value.as_bytes();
    let mut start = 0;
    let mut index = 0;
    while index < bytes.len() {
        index += plain_run(&bytes[index..]);
        let Some(&byte) = bytes.get(index) else {
            break;
        };
        out.push_str(&value[start..index]);
        if byte < 0x80 {
            push_ascii_escape(out, byte);
            index += 1;
        } else {
            // A non-ASCII character: `index` is on a char boundary because
            // every byte before it in this run was ASCII or a whole char.
            let ch = value[index..].chars().next().unwrap_or('\u{fffd}');
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{unit:04x}");
            }
            index += ch.len_utf8();
        }
        start = index;
    }
    out.push_str(&value[start..]);
    out.push('"');
}

/// Whether `literal` (a JSON value's text, quotes included) is a string
/// literal exactly as [`push_str`] writes one: `"` … `"` around printable
/// ASCII (and DEL) with only the escapes `\"`, `\\`, `\n`, `\r`, `\t`,
/// `\b` and `\f`. Then decoding and writing it again gives the same bytes.
/// `false` for anything else (other values, `\u` escapes, `\/`, raw control
/// or non-ASCII bytes), which may still be a valid literal in another form.
pub fn is_dumps_literal(literal: &str) -> bool {
    let Some(inner) = literal
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    else {
        return false;
    };
    let bytes = inner.as_bytes();
    let mut index = 0;
    loop {
        index += plain_run(&bytes[index..]);
        match bytes.get(index) {
            None => return true,
            Some(b'\\') => match bytes.get(index + 1) {
                Some(b'"' | b'\\' | b'n' | b'r' | b't' | b'b' | b'f') => index += 2,
                _ => return false,
            },
            Some(_) => return false,
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Length of the run of [`is_plain`] bytes at the start of `bytes`.
///
/// Tests eight bytes per step with word-at-a-time arithmetic ("Bit
/// Twiddling Hacks", `hasless` / `haszero`, both exact as yes/no answers):
/// a word is skipped whole when no byte is below 0x20, none has the high
/// bit, and none equals `"` or `\\`; the word that fails is scanned bytewise.
fn plain_run(bytes: &[u8]) -> usize {
    let mut index = 0;
    while let Some(word) = bytes.get(index..index + 8) {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        let w = u64::from_le_bytes(eight);
        let special = below(w, 0x20)
            | (w & HIGHS)
            | below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1);
        if special != 0 {
            break;
        }
        index += 8;
    }
    while bytes.get(index).is_some_and(|&b| is_plain(b)) {
        index += 1;
    }
    index
}

/// Non-zero when some byte of `w` is below `n` (1 ≤ `n` ≤ 128).
fn below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(ONES * u64::from(n)) & !w & HIGHS
}

/// Printable ASCII (and DEL, which `json.dumps` leaves as is) except `"` and `\\`.
fn is_plain(byte: u8) -> bool {
    (0x20..=0x7f).contains(&byte) && byte != b'"' && byte != b'\\'
}

fn push_ascii_escape(out: &mut String, byte: u8) {
    match byte {
        b'"' => out.push_str("\\\""),
        b'\\' => out.push_str("\\\\"),
        b'\n' => out.push_str("\\n"),
        b'\r' => out.push_str("\\r"),
        b'\t' => out.push_str("\\t"),
        0x08 => out.push_str("\\b"),
        0x0c => out.push_str("\\f"),
        other => {
            let _ = write!(out, "\\u{other:04x}");
        }
    }
}

/// Appends an optional string: the literal or `null`.
pub fn push_opt_str(out: &mut String, value: Option<&str>) {
    match value {
        Some(text) => push_str(out, text),
        None => out.push_str("null"),
    }
}

/// Appends `true` or `false`.
pub fn push_bool(out: &mut String, value: bool) {
    out.push_str(if value { "true" } else { "false" });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(value: &str) -> String {
        let mut out = String::new();
        push_str(&mut out, value);
        out
    }

    /// The escaping of one character at a time: what `push_str` must equal.
    fn reference(value: &str) -> String {
        let mut out = String::from("\"");
        for ch in value.chars() {
            match ch {
                c if c.is_ascii() && is_plain(c as u8) => out.push(c),
                c if c.is_ascii() => push_ascii_escape(&mut out, c as u8),
                c => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        let _ = write!(out, "\\u{unit:04x}");
                    }
                }
            }
        }
        out.push('"');
        out
    }

    #[test]
    fn every_character_class_at_every_offset_of_a_word_matches_the_reference() {
        let specials = [
            "\u{0}", "\u{1f}", " ", "\"", "\\", "\u{7f}", "\n", "é", "日", "😀", "~", "!", "#",
            "[", "]",
        ];
        for len in 0..20 {
            for at in 0..=len {
                for special in specials {
                    let mut value: String = "abcdefghijklmnopqrstuvwxyz"[..len].into();
                    value.insert_str(at, special);
                    assert_eq!(enc(&value), reference(&value), "{value:?}");
                    value.push_str(special);
                    assert_eq!(enc(&value), reference(&value), "{value:?}");
                }
            }
        }
        let every_byte: String = (0u8..0x80).map(char::from).collect();
        assert_eq!(enc(&every_byte), reference(&every_byte));
        assert_eq!(enc(&every_byte.repeat(3)), reference(&every_byte.repeat(3)));
    }

    #[test]
    fn dumps_literals_are_exactly_what_push_str_writes() {
        let samples = [
            "",
            "plain",
            "a\"b\\c",
            "v=0\r\n",
            "\t\u{8}\u{c}",
            "\u{7f}",
            "{\"sdp\": \"v=0\\r\\n\"}",
        ];
        for text in samples {
            assert!(is_dumps_literal(&enc(text)), "{text:?}");
        }
        // Valid JSON, but not json.dumps's spelling: decoded and written again.
        for literal in [
            r#""\u0041""#,
            r#""\/""#,
            "\"é\"",
            r#""\u00e9""#,
            r#""\u0001""#,
            "\"\u{1}\"",
        ] {
            assert!(!is_dumps_literal(literal), "{literal}");
        }
        // Not a string literal at all, or cut short.
        for other in [
            "", "\"", "5", "null", "[\"a\"]", r#""a\""#, r#""\"#, r#""a"b""#,
        ] {
            assert!(!is_dumps_literal(other), "{other}");
        }
        // Every escapable ASCII byte, at every offset of a word.
        for byte in 0u8..0x80 {
            for len in 0..12 {
                let mut text: String = "abcdefghijkl"[..len].into();
                text.push(char::from(byte));
                let literal = enc(&text);
                let short = !literal.contains("\\u");
                assert_eq!(is_dumps_literal(&literal), short, "{literal}");
            }
        }
    }

    #[test]
    fn matches_python_json_dumps() {
        // Expected values are what CPython 3.11 `json.dumps` prints.
        assert_eq!(enc("plain"), r#""plain""#);
        assert_eq!(enc("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(enc("v=0\r\n"), r#""v=0\r\n""#);
        assert_eq!(enc("\t\u{8}\u{c}\u{1}\u{1f}"), r#""\t\b\f\u0001\u001f""#);
        assert_eq!(enc("\u{7f}"), "\"\u{7f}\"");
        assert_eq!(enc("héllo"), r#""h\u00e9llo""#);
        assert_eq!(enc("日本"), r#""\u65e5\u672c""#);
        assert_eq!(enc("😀"), r#""\ud83d\ude00""#);
    }
}
