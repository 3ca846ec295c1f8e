//! JSON output byte-identical to Python's `json.dumps` with default options.
//!
//! ProxyStore encodes frames with `json.dumps(dataclasses.asdict(msg))`:
//! separators `", "` and `": "`, and `ensure_ascii=True`, so every non-ASCII
//! character is written as a `\uXXXX` escape (surrogate pairs above U+FFFF).
//! These helpers write exactly that, so Switchboard's frames equal ProxyStore's.

use std::fmt::Write;

/// Appends `value` as a JSON string literal the way `json.dumps` writes it.
///
/// Scans bytes: runs of printable ASCII other than `"` and `\\` are copied
/// in one go; everything else is escaped.
pub fn push_str(out: &mut String, value: &str) {
    out.reserve(value.len() + 2);
    out.push('"');
    let bytes = value.as_bytes();
    let mut start = 0;
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if is_plain(byte) {
            index += 1;
            continue;
        }
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
