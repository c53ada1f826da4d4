//! The Tunnels tab: every dataChannel with its transport (quic or tcp), state, RTT, loss, throughput sparklines over
//! the last minute, open streams and reconnects; the detail pane shows the full stats.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row};

use super::{Ctx, kv, spark, table};
use crate::ctl::escape::visible_owned;
use crate::ctl::units;
use wovenet_proto::v1 as pb;

/// Width of the throughput sparklines in the table.
const SPARK: usize = 12;

fn loss(c: &pb::Channel) -> String {
    if c.sent_packets == 0 {
        return units::EMPTY.to_owned();
    }
    format!(
        "{:.1}%",
        c.lost_packets as f64 * 100.0 / c.sent_packets as f64
    )
}

/// Draws the channels table; returns the detail lines for the selected channel.
pub fn render(cx: Ctx<'_>, frame: &mut Frame<'_>, area: Rect) -> Vec<Line<'static>> {
    let chans = &cx.model.channels;
    let empty = Default::default();
    table(
        cx,
        frame,
        area,
        "dataChannels".to_owned(),
        &[
            "peer", "id", "via", "state", "rtt", "loss", "tx/min", "rx/min", "strm",
        ],
        &[
            Constraint::Min(8),
            Constraint::Length(4),
            Constraint::Length(4),
            Constraint::Length(10),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(SPARK as u16),
            Constraint::Length(SPARK as u16),
            Constraint::Length(4),
        ],
        chans.len(),
        |i| {
            let c = &chans[i];
            let h = cx.model.history.get(&c.id).unwrap_or(&empty);
            let st = units::channel_state(c.state);
            Row::new(vec![
                Cell::from(visible_owned(c.peer.clone())),
                Cell::from(c.id.to_string()),
                Cell::from(units::channel_transport(c.transport)),
                Cell::from(Span::styled(st.clone(), cx.theme.state(&st))),
                Cell::from(units::proto_duration(c.rtt.as_ref())),
                Cell::from(loss(c)),
                Cell::from(Span::styled(spark(h.tx.iter(), SPARK), cx.theme.good())),
                Cell::from(Span::styled(spark(h.rx.iter(), SPARK), cx.theme.good())),
                Cell::from(c.open_streams.to_string()),
            ])
        },
    );
    let Some(c) = chans.get(cx.view.selection()) else {
        return vec![Line::from("no dataChannel selected")];
    };
    let h = cx.model.history.get(&c.id).unwrap_or(&empty);
    let (tx, rx) = cx.model.rates.get(&c.id).copied().unwrap_or_default();
    let t = cx.theme;
    vec![
        kv(
            t,
            "channel",
            format!(
                "#{} to {} ({})",
                c.id,
                visible_owned(c.peer.clone()),
                units::channel_state(c.state)
            ),
        ),
        kv(t, "rtt", units::proto_duration(c.rtt.as_ref())),
        kv(
            t,
            "lost/sent",
            format!("{}/{} ({})", c.lost_packets, c.sent_packets, loss(c)),
        ),
        kv(
            t,
            "sent",
            format!("{} ({})", units::bytes(c.bytes_sent), units::rate(tx)),
        ),
        kv(
            t,
            "received",
            format!("{} ({})", units::bytes(c.bytes_received), units::rate(rx)),
        ),
        kv(t, "tx 60s", spark(h.tx.iter(), 30)),
        kv(t, "rx 60s", spark(h.rx.iter(), 30)),
        kv(t, "rtt 60s", spark(h.rtt.iter(), 30)),
        kv(t, "open streams", c.open_streams.to_string()),
        kv(t, "reconnects", c.reconnect_attempts.to_string()),
        kv(t, "last error", units::or_empty(&c.last_error).to_owned()),
        kv(t, "cwnd", units::bytes(c.cwnd)),
        kv(t, "direction", units::direction(c.direction)),
        kv(t, "route", units::channel_route(c.route)),
        kv(t, "transport", units::channel_transport(c.transport)),
        kv(t, "local", c.local_addr.clone()),
        kv(t, "remote", c.remote_addr.clone()),
        kv(t, "age", units::proto_duration(c.age.as_ref())),
    ]
}
