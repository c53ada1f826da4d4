//! Semantic styles: good, warning, bad, dim, selected, title. Colour carries meaning, but
//! every state is also spelled out in text, and with `NO_COLOR` set only modifiers remain.

use ratatui::style::{Color, Modifier, Style};

/// The palette in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    color: bool,
}

impl Theme {
    /// Colours unless `NO_COLOR` is set to a non-empty value (no-color.org).
    pub fn from_env() -> Self {
        Self::new(std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()))
    }

    /// A theme with or without colours.
    pub fn new(color: bool) -> Self {
        Self { color }
    }

    fn fg(self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }

    /// Healthy: connected, up, open.
    pub fn good(self) -> Style {
        self.fg(Color::Green)
    }

    /// In between: connecting, waiting.
    pub fn warn(self) -> Style {
        self.fg(Color::Yellow)
    }

    /// Broken: disconnected, failed, errors.
    pub fn bad(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    /// Secondary text.
    pub fn dim(self) -> Style {
        if self.color {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new()
        }
    }

    /// Highlighted row or tab.
    pub fn selected(self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    /// Headings and key names.
    pub fn title(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    /// Style for a lowercase state word from [`crate::ctl::units`], trust states and
    /// modes included: `pinned` is healthy; `new` (pinned on first sight: worth comparing
    /// with `wovenetd identity` on that host) and `unpinned` (not checked) are warnings
    /// (the header styles the trust mode `open` itself: here `open` is a listener's); a `refused` identity, a `conflict` and `not allowed` are bad (bold, so they
    /// stand out with `NO_COLOR` too).
    pub fn state(self, word: &str) -> Style {
        match word {
            "connected" | "up" | "open" | "pinned" => self.good(),
            "connecting" | "reconnecting" | "discovered" | "waiting" | "new" | "unpinned" => {
                self.warn()
            }
            "gone" | "failed" | "disconnected" | "conflict" | "refused" | "not allowed" => {
                self.bad()
            }
            _ => Style::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_words_have_meaningful_styles_and_bad_ones_stay_bold_without_colour() {
        let t = Theme::new(true);
        assert_eq!(t.state("pinned").fg, Some(Color::Green));
        assert_eq!(t.state("new").fg, Some(Color::Yellow));
        assert_eq!(t.state("unpinned").fg, Some(Color::Yellow));
        for word in ["refused", "conflict", "not allowed"] {
            assert_eq!(t.state(word).fg, Some(Color::Red), "{word}");
            let plain = Theme::new(false).state(word);
            assert_eq!(plain.fg, None, "{word}");
            assert!(plain.add_modifier.contains(Modifier::BOLD), "{word}");
        }
        assert_eq!(Theme::new(false).state("pinned"), Style::new());
    }
}
