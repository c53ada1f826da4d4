//! What the operator is looking at: tab, per-tab selection, detail pane, streams sort and
//! filter, the add-app form, a pending confirmation, the help overlay and a status line.
//! Survives reconnects untouched (selections are only clamped). No I/O.

use super::form::Form;

/// The five tabs, in key order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tab {
    /// Peers.
    #[default]
    Sites,
    /// Data channels.
    Tunnels,
    /// Open streams.
    Streams,
    /// Exposed and remote apps.
    Apps,
    /// The event feed.
    Events,
}

impl Tab {
    /// All tabs in order.
    pub const ALL: [Self; 5] = [
        Self::Sites,
        Self::Tunnels,
        Self::Streams,
        Self::Apps,
        Self::Events,
    ];

    /// Position in [`Tab::ALL`].
    pub fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|t| *t == self)
            .unwrap_or_default()
    }

    /// Title shown in the tab bar.
    pub fn title(self) -> &'static str {
        match self {
            Self::Sites => "Sites",
            Self::Tunnels => "Tunnels",
            Self::Streams => "Streams",
            Self::Apps => "Apps",
            Self::Events => "Events",
        }
    }
}

/// How the Streams tab is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamSort {
    /// Oldest first (the daemon's order).
    #[default]
    Age,
    /// Most bytes first.
    Bytes,
    /// By app name.
    App,
    /// By peer.
    Peer,
}

impl StreamSort {
    /// The next order in the cycle.
    pub fn next(self) -> Self {
        match self {
            Self::Age => Self::Bytes,
            Self::Bytes => Self::App,
            Self::App => Self::Peer,
            Self::Peer => Self::Age,
        }
    }

    /// Name shown in the table title.
    pub fn label(self) -> &'static str {
        match self {
            Self::Age => "age",
            Self::Bytes => "bytes",
            Self::App => "app",
            Self::Peer => "peer",
        }
    }
}

/// A removal waiting for y/n.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirm {
    /// Remove the exposed app of this name.
    RemoveExposed(String),
    /// Remove the remote app `site`/`app` on `local`.
    RemoveRemote {
        /// Peer site.
        site: String,
        /// App name there.
        app: String,
        /// Local socket.
        local: String,
    },
    /// Forget the identity pinned for a site name.
    ForgetPeer {
        /// The site name.
        site: String,
        /// The identity pinned for it, as far as the console knows (empty: not known).
        pinned: String,
        /// The refused identity that would probably be pinned next (empty: none).
        refused: String,
    },
}

/// The operator's place in the console.
#[derive(Debug, Clone, Default)]
pub struct ViewState {
    /// Current tab.
    pub tab: Tab,
    /// Selected row per tab.
    pub selected: [usize; 5],
    /// Whether the detail pane is open.
    pub detail: bool,
    /// Help overlay shown.
    pub help: bool,
    /// Streams order.
    pub sort: StreamSort,
    /// Streams filter (substring of app, peer or client).
    pub filter: String,
    /// Typing into the filter.
    pub filtering: bool,
    /// The add-app form, when open.
    pub form: Option<Form>,
    /// A removal or forget awaiting y/n.
    pub confirm: Option<Confirm>,
    /// Last outcome line (e.g. an RPC result).
    pub status: Option<String>,
}

impl ViewState {
    /// Selected row of the current tab.
    pub fn selection(&self) -> usize {
        self.selected[self.tab.index()]
    }
}

/// The `[start, end)` rows of `len` to build so `selected` is visible in `height` rows.
pub fn window(len: usize, selected: usize, height: usize) -> (usize, usize) {
    if height == 0 || len == 0 {
        return (0, 0);
    }
    let selected = selected.min(len - 1);
    let start = (selected + 1).saturating_sub(height);
    (start, (start + height).min(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_keeps_the_selection_visible_and_never_exceeds_height() {
        assert_eq!(window(0, 0, 10), (0, 0));
        assert_eq!(window(5, 2, 10), (0, 5));
        assert_eq!(window(5000, 0, 10), (0, 10));
        assert_eq!(window(5000, 4999, 10), (4990, 5000));
        assert_eq!(window(5000, 25, 10), (16, 26));
        for sel in 0..50 {
            let (s, e) = window(40, sel, 7);
            assert!(e - s <= 7);
            assert!(s <= sel.min(39) && sel.min(39) < e);
        }
    }
}
