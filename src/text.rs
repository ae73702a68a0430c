//! Small text helpers shared by every part: clipping user input for error
//! messages, and writing JSON text without building a `serde_json::Value`.

/// Shortens user text for an error message.
pub fn clip(text: &str) -> String {
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text.to_owned()
    }
}

/// Writes `{"name":value,...}` from names and JSON value text.
pub fn json_object<'a>(fields: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::with_capacity(128);
    out.push('{');
    for (i, (name, value)) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, name);
        out.push(':');
        out.push_str(value);
    }
    out.push('}');
    out
}

/// Appends `s` as a JSON string literal.
pub fn push_json_string(out: &mut String, s: &str) {
    write_json_string(out, s);
}

/// Writes `s` as a JSON string literal to any text sink: [`push_json_string`]
/// for a `String`, and where the text is compared as it is written rather
/// than held (the archive reader's check of a line's spelling).
pub fn write_json_string<W: std::fmt::Write + ?Sized>(out: &mut W, s: &str) {
    let _ = out.write_char('"');
    // The runs of characters that need no escape are written whole.
    let mut run = 0;
    for (i, c) in s.char_indices() {
        let escaped = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            // Any other control character, by its code.
            c if (c as u32) < 0x20 => None,
            _ => continue,
        };
        let _ = out.write_str(&s[run..i]);
        let _ = match escaped {
            Some(e) => out.write_str(e),
            None => write!(out, "\\u{:04x}", c as u32),
        };
        run = i + c.len_utf8();
    }
    let _ = out.write_str(&s[run..]);
    let _ = out.write_char('"');
}

/// Lower-case hex of bytes (a hash, a key), for messages and digests.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes exactly `out.len()` bytes of hex (either case); `None` for
/// anything else.
pub fn unhex_into(text: &str, out: &mut [u8]) -> Option<()> {
    if text.len() != out.len() * 2 {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_what_json_requires() {
        let mut s = String::new();
        push_json_string(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
        let back: String = serde_json::from_str(&s).unwrap();
        assert_eq!(back, "a\"b\\c\nd\u{1}é");
    }

    #[test]
    fn clip_keeps_sixty_characters() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(70);
        assert_eq!(clip(&long).chars().count(), 61);
        assert!(clip(&long).ends_with('…'));
    }
}
