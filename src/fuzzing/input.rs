//! [`Input`]: structured values taken from the front of a fuzzer's bytes.

/// A cursor over fuzz input that never fails: once the bytes run out, every
/// read returns zeros or empty values, so any input maps to some structure
/// and small mutations of the input make small changes to the structure.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// Whether every byte has been taken.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte (0 once empty).
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&first, rest)) => {
                self.data = rest;
                first
            }
            None => 0,
        }
    }

    /// The next `n` bytes, or fewer at the end.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    /// The next 4 bytes as a big-endian `u32` (zero-padded at the end).
    pub fn u32(&mut self) -> u32 {
        let mut out = [0u8; 4];
        let bytes = self.take(4);
        out[..bytes.len()].copy_from_slice(bytes);
        u32::from_be_bytes(out)
    }

    /// The next 16 bytes as a `u128` (zero-padded at the end).
    pub fn u128(&mut self) -> u128 {
        let mut out = [0u8; 16];
        let bytes = self.take(16);
        out[..bytes.len()].copy_from_slice(bytes);
        u128::from_be_bytes(out)
    }

    /// A string of at most `max_chars` characters: a length byte, then per
    /// character one byte (ASCII below 0x80, including controls) or, for a
    /// byte of 0x80 or more, three bytes naming any Unicode scalar value, so
    /// escapes, multi-byte and astral characters are all reachable.
    pub fn text(&mut self, max_chars: usize) -> String {
        let count = usize::from(self.byte()).min(max_chars);
        let mut out = String::with_capacity(count);
        for _ in 0..count {
            if self.is_empty() {
                break;
            }
            let first = self.byte();
            if first < 0x80 {
                out.push(char::from(first));
                continue;
            }
            let code = (u32::from(first & 0x7f) << 16
                | u32::from(self.byte()) << 8
                | u32::from(self.byte()))
                % 0x11_0000;
            out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_are_zero_or_empty() {
        let mut input = Input::new(&[1, 2, 3]);
        assert_eq!(input.u32(), 0x0102_0300);
        assert_eq!(input.byte(), 0);
        assert!(input.take(5).is_empty());
        assert_eq!(input.text(10), "");
    }

    #[test]
    fn text_reaches_every_kind_of_character() {
        // 3 chars: 'a', U+1F600 (0x80|0x01, 0xF6, 0x00), '\n'.
        let mut input = Input::new(&[3, b'a', 0x81, 0xF6, 0x00, b'\n']);
        assert_eq!(input.text(10), "a\u{1F600}\n");
    }
}
