//! Characters that deceive a reader. Names (usernames, room and file names, reactions)
//! may not hold them; clients show them escaped where a text holds them.
//!
//! Control characters are acted on by a terminal: an escape sequence recolours, moves the
//! cursor or rewrites what is on screen, and a carriage return writes over the start of the
//! line, so a message could pass for another. Bidirectional formatting characters reorder
//! what follows them, so that a name or a file name reads as another ("Trojan Source",
//! CVE-2021-42574; `invoice\u{202E}fdp.exe` reads `invoiceexe.pdf`).
//!
//! One text can also be written as different characters: "é" is one character (U+00E9) or
//! "e" and a combining accent (U+0301), as keyboards, input methods and file systems
//! choose. What derives a key (usernames, passwords, room names and room passwords) is
//! taken in its [canonical](canonical) form first, so that it is the same on every machine.

use std::borrow::Cow;

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

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

/// `s` in Unicode normalization form C (canonical composition), the form most text is
/// already in, which is then borrowed as it is.
pub fn canonical(s: &str) -> Cow<'_, str> {
    match is_nfc_quick(s.chars()) {
        IsNormalized::Yes => Cow::Borrowed(s),
        _ => Cow::Owned(s.nfc().collect()),
    }
}

/// `s` [canonical](canonical) and in lower case: what compares names and searched text
/// whatever their case and however their accents were typed.
pub fn folded(s: &str) -> String {
    canonical(&canonical(s).to_lowercase()).into_owned()
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

    #[test]
    fn one_text_typed_two_ways_is_one_canonical_text() {
        let composed = "caf\u{e9} cr\u{e8}me";
        let decomposed = "cafe\u{301} cre\u{300}me";
        assert_ne!(composed, decomposed);
        assert_eq!(canonical(decomposed), composed);
        assert!(matches!(canonical(composed), Cow::Borrowed(_)));
        assert_eq!(folded("CAFE\u{301}"), composed[..5]);
        // Hangul typed as jamo is the syllable.
        assert_eq!(canonical("\u{1100}\u{1161}"), "\u{AC00}");
        // Compatibility forms stay what they are: "ﬁ" is not "fi".
        assert_eq!(canonical("\u{FB01}"), "\u{FB01}");
    }
}
