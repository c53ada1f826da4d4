//! Everything that can change the console's state: operator intents (from the keymap),
//! messages from the daemon feed, RPC results and the clock tick. Data only.

use wovenet_proto::v1 as pb;

use super::form::Request;
use super::view::Tab;

/// One state change.
#[derive(Debug, Clone)]
pub enum Action {
    /// Back out of the form, filter, confirmation, detail or help.
    Back,
    /// y/n answer to a pending removal.
    Confirm(bool),
    /// The streams filter or the form received a character.
    Char(char),
    /// Delete a character in the filter or form.
    Backspace,
    /// Streams: cycle sort order.
    CycleSort,
    /// Streams: start typing a filter.
    Filter,
    /// Toggle the help overlay.
    Help,
    /// Move the selection down.
    Down,
    /// Move the selection up.
    Up,
    /// Jump to the first row.
    Top,
    /// Jump to the last row.
    Bottom,
    /// Open or close the detail pane (or submit the form).
    Enter,
    /// A message from the daemon feed.
    Feed(Feed),
    /// Form: next field.
    NextField,
    /// Form: previous field.
    PrevField,
    /// Next tab.
    NextTab,
    /// Open the add-app form (Apps tab).
    OpenAddApp,
    /// Previous tab.
    PrevTab,
    /// Quit the console.
    Quit,
    /// Ask to remove the selected app (Apps tab).
    RemoveSelected,
    /// Ask to forget the identity pinned for the selected peer's name (Sites tab).
    ForgetSelected,
    /// The terminal was resized.
    Redraw,
    /// An RPC finished: what was asked, and the daemon's message on failure.
    RpcDone(Request, Result<String, String>),
    /// Show a tab.
    SwitchTab(Tab),
    /// One-second clock for ages and uptime.
    Tick,
}

/// What the daemon feed task reports.
#[derive(Debug, Clone)]
pub enum Feed {
    /// The watch stream's first message.
    Snapshot(Box<pb::Snapshot>),
    /// One event.
    Event(Box<pb::Event>),
    /// One stats sample.
    Stats(Box<pb::WatchStatsResponse>),
    /// A fresh `GetSite` (broker state has no event of its own).
    Site(Box<pb::SiteInfo>),
    /// A fresh `ListPeers`: identities, trust and refused identities have no events.
    Peers(Vec<pb::Peer>),
    /// The daemon went away (or never answered); the next attempt is in `retry_in`.
    Lost {
        /// Why.
        reason: String,
        /// Delay before the next attempt.
        retry_in: std::time::Duration,
    },
}
