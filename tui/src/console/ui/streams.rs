//! The Streams tab: open streams and UDP flows (app, kind, peer, direction, client, bytes,
//! age; datagrams in the detail), sorted by `s`
//! and filtered by `/`; only the visible rows are built, so thousands stay cheap.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Line;
use ratatui::widgets::Row;

use super::{Ctx, kv, table};
use crate::console::update::visible_streams;
use crate::ctl::escape::visible_owned;
use crate::ctl::units;

/// Draws the streams table; returns the detail lines for the selected stream.
pub fn render(cx: Ctx<'_>, frame: &mut Frame<'_>, area: Rect) -> Vec<Line<'static>> {
    let streams = visible_streams(cx.model, cx.view);
    let mut title = format!("streams by {}", cx.view.sort.label());
    if !cx.view.filter.is_empty() {
        title.push_str(&format!(" matching '{}'", cx.view.filter));
    }
    table(
        cx,
        frame,
        area,
        title,
        &[
            "id", "app", "kind", "peer", "dir", "client", "sent", "recv", "age",
        ],
        &[
            Constraint::Length(5),
            Constraint::Min(6),
            Constraint::Length(4),
            Constraint::Min(6),
            Constraint::Length(8),
            Constraint::Min(10),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(6),
        ],
        streams.len(),
        |i| {
            let s = streams[i];
            Row::new(vec![
                s.id.to_string(),
                visible_owned(s.app.clone()),
                units::stream_kind(&s.kind),
                visible_owned(s.peer.clone()),
                units::stream_direction(s.direction),
                visible_owned(s.client_addr.clone()),
                units::bytes(s.bytes_sent),
                units::bytes(s.bytes_received),
                units::proto_duration(s.age.as_ref()),
            ])
        },
    );
    let Some(s) = streams.get(cx.view.selection()) else {
        return vec![Line::from("no stream selected")];
    };
    let t = cx.theme;
    vec![
        kv(t, "stream", format!("#{}", s.id)),
        kv(t, "app", s.app.clone()),
        kv(t, "peer", s.peer.clone()),
        kv(t, "direction", units::stream_direction(s.direction)),
        kv(t, "client", s.client_addr.clone()),
        kv(t, "sent", units::bytes(s.bytes_sent)),
        kv(t, "received", units::bytes(s.bytes_received)),
        kv(t, "kind", units::stream_kind(&s.kind)),
        kv(
            t,
            "datagrams",
            format!(
                "{} sent, {} received",
                s.datagrams_sent, s.datagrams_received
            ),
        ),
        kv(t, "age", units::proto_duration(s.age.as_ref())),
    ]
}
