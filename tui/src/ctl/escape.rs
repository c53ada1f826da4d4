//! Strings from the daemon made safe to put on a terminal, for `-o table` and the console.
//!
//! Names, addresses and error texts may come from other sites. The daemon refuses names with
//! control or invisible characters, but other strings (a peer's close reason, a refusal
//! message) are free text, and a daemon of another version may not check at all. A line
//! feed would add a forged row, a bidi override (U+202E) would reorder a row, a zero-width
//! space would make two names look alike. [`visible`] shows each such character as
//! `\u{…}` instead. It is idempotent (its output contains none of them), so a string may pass
//! through it twice without changing again. JSON output does not use it: scripts get the
//! daemon's strings unchanged.

use std::borrow::Cow;
use std::fmt::Write as _;

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Whether `c` is shown as an escape: control characters (C0, DEL, C1, including line
/// feed and tab), Unicode format characters (category Cf: bidi embeddings, overrides,
/// isolates and marks, zero-width spaces and joiners, U+FEFF, soft hyphen, tags) and the
/// line and paragraph separators U+2028 and U+2029.
pub fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c.general_category(),
            GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
        )
}

/// `s` with every [`hidden`] character written as `\u{hex}`; borrowed when there is none.
pub fn visible(s: &str) -> Cow<'_, str> {
    if !s.chars().any(hidden) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if hidden(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`visible`] for an owned string: `s` itself when nothing needs escaping.
pub fn visible_owned(s: String) -> String {
    if let Cow::Owned(escaped) = visible(&s) {
        escaped
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for s in ["site-a", "café 东京", "x\",a=\"b", "back\\slash", ""] {
            assert!(matches!(visible(s), Cow::Borrowed(b) if b == s), "{s:?}");
        }
    }

    #[test]
    fn hidden_characters_are_escaped() {
        for (s, want) in [
            ("evil\nrow", "evil\\u{a}row"),
            ("tab\there", "tab\\u{9}here"),
            ("\u{1b}[31mred", "\\u{1b}[31mred"),
            ("abc\u{202e}fed", "abc\\u{202e}fed"),
            ("\u{2066}x\u{2069}", "\\u{2066}x\\u{2069}"),
            ("a\u{200b}", "a\\u{200b}"),
            ("\u{feff}bom", "\\u{feff}bom"),
            (
                "l\u{200e}r\u{200f}m\u{61c}",
                "l\\u{200e}r\\u{200f}m\\u{61c}",
            ),
            ("p\u{2028}q\u{2029}", "p\\u{2028}q\\u{2029}"),
            ("c1\u{85}", "c1\\u{85}"),
        ] {
            assert_eq!(visible(s), want, "{s:?}");
        }
    }

    #[test]
    fn escaping_twice_changes_nothing_more() {
        let once = visible("a\u{202e}\nb").into_owned();
        assert_eq!(visible(&once), once);
    }
}
