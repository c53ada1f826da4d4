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

    /// Style for a lowercase state word from [`crate::ctl::units`].
    pub fn state(self, word: &str) -> Style {
        match word {
            "connected" | "up" | "open" => self.good(),
            "connecting" | "reconnecting" | "discovered" | "waiting" => self.warn(),
            "gone" | "failed" | "disconnected" | "conflict" => self.bad(),
            _ => Style::new(),
        }
    }
}
