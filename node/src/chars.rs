//! Characters that deceive a reader. Names (usernames, room and file names, reactions)
//! may not hold them; clients show them escaped where a text holds them.
//!
//! Control characters are acted on by a terminal: an escape sequence recolours, moves the
//! cursor or rewrites what is on screen, and a carriage return writes over the start of the
//! line, so a message could pass for another. Bidirectional formatting characters reorder
//! what follows them, so that a name or a file name reads as another ("Trojan Source",
//! CVE-2021-42574; `invoice\u{202E}fdp.exe` reads `invoiceexe.pdf`).

/// Whether `c` is a control character or a bidirectional formatting character.
pub fn is_deceptive(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// Whether `s` holds no [deceptive](is_deceptive) character.
pub fn is_plain(s: &str) -> bool {
    !s.chars().any(is_deceptive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_overrides_deceive_and_the_rest_does_not() {
        for c in [
            '\n', '\r', '\t', '\u{1b}', '\u{7f}', '\u{9b}', '\u{202E}', '\u{2066}',
        ] {
            assert!(is_deceptive(c), "{c:?}");
        }
        // Joiners and variation selectors make emoji and scripts, and stay.
        assert!(is_plain("café 👩\u{200D}💻 ❤\u{FE0F} שלום"));
        assert!(!is_plain("invoice\u{202E}fdp.exe"));
    }
}
