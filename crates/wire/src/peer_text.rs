//! Strings from a peer made safe to log or echo back.
//!
//! A peer controls the names, run ids, task ids and leave reasons it sends. Written into a log
//! line or an error message as they are, a control character can forge log lines or drive a
//! terminal, and a megabyte-long "reason" fills the log. Every such string goes through
//! [`peer_text`] first: at most [`MAX_PEER_TEXT_CHARS`] characters, control characters shown as
//! escapes, and a note of how much was cut.

/// Characters of a peer's string kept in a log line or an error message.
pub const MAX_PEER_TEXT_CHARS: usize = 96;

/// `text` bounded to [`MAX_PEER_TEXT_CHARS`] characters with every control character escaped
/// (`\n`, `\u{1b}`, …); a longer string ends in `…(+N bytes)`, N the bytes left out.
pub fn peer_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(4 * MAX_PEER_TEXT_CHARS + 16));
    let mut kept_bytes = 0;
    for (count, c) in text.chars().enumerate() {
        if count == MAX_PEER_TEXT_CHARS {
            break;
        }
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
        kept_bytes += c.len_utf8();
    }
    if kept_bytes < text.len() {
        out.push_str(&format!("…(+{} bytes)", text.len() - kept_bytes));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_short_text_is_unchanged() {
        assert_eq!(peer_text("client-07"), "client-07");
        assert_eq!(peer_text(""), "");
        assert_eq!(peer_text("réseau ü"), "réseau ü");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            peer_text("bye\nINFO forged line\r\u{1b}[2J\0"),
            "bye\\nINFO forged line\\r\\u{1b}[2J\\0"
        );
    }

    #[test]
    fn long_text_is_cut_with_the_bytes_left_out() {
        let long = "x".repeat(1_000_000);
        let shown = peer_text(&long);
        assert_eq!(
            shown,
            format!("{}…(+{} bytes)", "x".repeat(96), 1_000_000 - 96)
        );
        // Multi-byte characters: 96 "é" (2 bytes each) kept of 100; 4 × 2 bytes cut.
        let accents = "é".repeat(100);
        assert_eq!(
            peer_text(&accents),
            format!("{}…(+8 bytes)", "é".repeat(96))
        );
        // Exactly the limit: nothing cut, no note.
        assert_eq!(peer_text(&"y".repeat(96)), "y".repeat(96));
    }
}
