//! The Sites tab: one row per peer (state, apps, dataChannels, last seen, traffic);
//! the detail pane lists that peer's dataChannels and apps. A peer whose name another
//! running instance also announces shows `conflict` as its state and, in the detail
//! pane, the refused instances.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row};

use super::{Ctx, kv, table};
use crate::ctl::escape::visible_owned;
use crate::ctl::units;

/// Draws the peers table; returns the detail lines for the selected peer.
pub fn render(cx: Ctx<'_>, frame: &mut Frame<'_>, area: Rect) -> Vec<Line<'static>> {
    let peers = &cx.model.peers;
    table(
        cx,
        frame,
        area,
        "peers".to_owned(),
        &[
            "site",
            "state",
            "apps",
            "chans",
            "last seen",
            "sent",
            "recv",
        ],
        &[
            Constraint::Min(10),
            Constraint::Length(11),
            Constraint::Min(8),
            Constraint::Length(5),
            Constraint::Length(9),
            Constraint::Length(10),
            Constraint::Length(10),
        ],
        peers.len(),
        |i| {
            let p = &peers[i];
            let st = if p.conflicting_instances.is_empty() {
                units::peer_state(p.state)
            } else {
                "conflict".to_owned()
            };
            Row::new(vec![
                Cell::from(visible_owned(p.name.clone())),
                Cell::from(Span::styled(st.clone(), cx.theme.state(&st))),
                Cell::from(visible_owned(p.apps.join(","))),
                Cell::from(p.channels.to_string()),
                Cell::from(units::ago(p.last_seen.as_ref(), cx.now)),
                Cell::from(units::bytes(p.bytes_sent)),
                Cell::from(units::bytes(p.bytes_received)),
            ])
        },
    );
    let Some(p) = peers.get(cx.view.selection()) else {
        return vec![Line::from("no peer selected")];
    };
    let mut lines = vec![
        kv(cx.theme, "site", p.name.clone()),
        kv(cx.theme, "instance", p.instance.clone()),
        kv(cx.theme, "state", units::peer_state(p.state)),
        kv(cx.theme, "apps", p.apps.join(", ")),
        kv(cx.theme, "streams", p.streams.to_string()),
    ];
    for other in &p.conflicting_instances {
        lines.push(Line::from(Span::styled(
            format!("conflict: instance {other} also runs as this site (refused); rename one"),
            cx.theme.state("conflict"),
        )));
    }
    lines.push(Line::from(Span::styled("dataChannels", cx.theme.title())));
    for c in cx.model.channels.iter().filter(|c| c.peer == p.name) {
        lines.push(Line::from(format!(
            "  #{} {} {} rtt {}",
            c.id,
            units::channel_state(c.state),
            units::direction(c.direction),
            units::proto_duration(c.rtt.as_ref())
        )));
    }
    lines
}
