//! The Sites tab: one row per peer (state, trust, identity, apps, dataChannels, last seen,
//! traffic), and identities refused for a site name as rows of their own right after it,
//! drawn in the `bad` style; the detail pane gives the whole identities, what the trust
//! state means, the `f` key (and the `wovenetctl` command) that forgets a pin, and the
//! peer's dataChannels. A peer whose name another running instance also announces shows
//! `conflict` as its state and, in the detail pane, the refused instances.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row};
use wovenet_proto::v1 as pb;

use super::{Ctx, kv, table};
use crate::console::model::refused;
use crate::ctl::escape::{visible, visible_owned};
use crate::ctl::{shell, units};

/// Fingerprint length; the identity column is this wide when the area allows.
const IDENTITY: u16 = 32;
/// Area width from which the identity column is whole: the table without it takes 80
/// columns, and names keep some room beyond their minimum of 10.
const WHOLE_FROM: u16 = 130;
/// Area width from which a shortened identity (marked `…`) is shown.
const SHORT_FROM: u16 = 100;

/// How the identity column fits in `width`: whole, shortened, or not at all (the detail
/// pane always has it whole).
fn identity_width(width: u16) -> Option<u16> {
    if width >= WHOLE_FROM {
        Some(IDENTITY)
    } else if width >= SHORT_FROM {
        Some(u16::try_from(units::SHORT_IDENTITY).unwrap_or(u16::MAX) + 1)
    } else {
        None
    }
}

/// Draws the peers table; returns the detail lines for the selected peer.
pub fn render(cx: Ctx<'_>, frame: &mut Frame<'_>, area: Rect) -> Vec<Line<'static>> {
    let peers = &cx.model.peers;
    let id_width = identity_width(area.width);
    let mut header = vec!["site", "state", "trust"];
    let mut widths = vec![
        Constraint::Min(10),
        Constraint::Length(10),
        Constraint::Length(11),
    ];
    if let Some(w) = id_width {
        header.push("identity");
        widths.push(Constraint::Length(w));
    }
    header.extend(["apps", "chans", "last seen", "sent", "recv"]);
    widths.extend([
        Constraint::Min(8),
        Constraint::Length(5),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
    ]);
    table(
        cx,
        frame,
        area,
        "peers".to_owned(),
        &header,
        &widths,
        peers.len(),
        |i| {
            let p = &peers[i];
            let st = if p.conflicting_instances.is_empty() {
                units::peer_state(p.state)
            } else {
                "conflict".to_owned()
            };
            let trust = units::trust_cell(p.trust);
            let mut cells = vec![
                Cell::from(visible_owned(p.name.clone())),
                Cell::from(Span::styled(st.clone(), cx.theme.state(&st))),
                Cell::from(Span::styled(trust.clone(), cx.theme.state(&trust))),
            ];
            if let Some(w) = id_width {
                cells.push(Cell::from(if w >= IDENTITY {
                    visible_owned(units::or_empty(&p.identity).to_owned())
                } else {
                    visible_owned(units::short_identity(&p.identity))
                }));
            }
            if refused(p) {
                // Nothing of it is used: no apps, channels or traffic to show.
                cells.extend(["-", "-"].map(Cell::from));
                cells.push(Cell::from(units::ago(p.last_seen.as_ref(), cx.now)));
                cells.extend(["-", "-"].map(Cell::from));
                return Row::new(cells).style(cx.theme.bad());
            }
            cells.extend([
                Cell::from(visible_owned(p.apps.join(","))),
                Cell::from(p.channels.to_string()),
                Cell::from(units::ago(p.last_seen.as_ref(), cx.now)),
                Cell::from(units::bytes(p.bytes_sent)),
                Cell::from(units::bytes(p.bytes_received)),
            ]);
            Row::new(cells)
        },
    );
    let Some(p) = peers.get(cx.view.selection()) else {
        return vec![Line::from("no peer selected")];
    };
    if refused(p) {
        return refused_detail(cx, p);
    }
    // Warnings come early: a small pane shows the first lines only.
    let mut lines = vec![
        kv(cx.theme, "site", p.name.clone()),
        kv(cx.theme, "state", units::peer_state(p.state)),
        kv(
            cx.theme,
            "identity",
            units::or_empty(&p.identity).to_owned(),
        ),
        kv(cx.theme, "trust", units::trust_cell(p.trust)),
    ];
    for other in &p.conflicting_instances {
        lines.push(Line::from(Span::styled(
            format!(
                "conflict: instance {} also runs as this site (refused); rename one",
                visible(other)
            ),
            cx.theme.state("conflict"),
        )));
    }
    match pb::TrustState::try_from(p.trust) {
        Ok(pb::TrustState::New) => lines.push(Line::from(Span::styled(
            "new: pinned on first sight during this run; compare it with what \
             `wovenetd identity` prints on that host",
            cx.theme.state("new"),
        ))),
        Ok(pb::TrustState::Unpinned) => lines.push(Line::from(Span::styled(
            "unpinned: trust.mode is open, identities are not checked",
            cx.theme.state("unpinned"),
        ))),
        _ => {}
    }
    lines.extend([
        kv(cx.theme, "instance", p.instance.clone()),
        kv(cx.theme, "apps", p.apps.join(", ")),
        kv(cx.theme, "streams", p.streams.to_string()),
    ]);
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

/// The detail of a refused identity: both identities whole, what the refusal means, and
/// how the operator accepts a reinstalled site (`f` here, or the `wovenetctl` command).
fn refused_detail(cx: Ctx<'_>, p: &pb::Peer) -> Vec<Line<'static>> {
    let t = cx.theme;
    let name = visible(&p.name).into_owned();
    let mut lines = vec![
        kv(t, "refused for", p.name.clone()),
        kv(t, "identity", units::or_empty(&p.identity).to_owned()),
        kv(t, "trust", units::trust_cell(p.trust)),
    ];
    let explain = match pb::TrustState::try_from(p.trust) {
        Ok(pb::TrustState::Conflict) => {
            lines.push(kv(
                t,
                "pinned",
                units::or_empty(&p.pinned_identity).to_owned(),
            ));
            vec![
                format!(
                    "{name} is pinned to another identity, so everything this one sends is \
                     refused."
                ),
                format!(
                    "If {name} was reinstalled and `wovenetd identity` there prints {}, press \
                     f to forget the pin: the next identity that announces {name} is pinned.",
                    visible(units::or_empty(&p.identity)),
                ),
                // On a line of its own, so that it wraps (and copies) in one piece.
                format!("Or run: {}", visible(&shell::forget_command("", &p.name))),
            ]
        }
        Ok(pb::TrustState::NotAllowed) => vec![format!(
            "trust.mode is strict and trust.sites does not list {name}: to admit it, add it \
             there with this identity and restart."
        )],
        _ => Vec::new(),
    };
    lines.push(kv(t, "refused msgs", p.refused_messages.to_string()));
    lines.push(kv(
        t,
        "last refused",
        units::ago(p.last_seen.as_ref(), cx.now),
    ));
    for e in explain {
        lines.push(Line::from(Span::styled(e, t.state("refused"))));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_column_is_whole_shortened_or_left_to_the_detail_pane() {
        assert_eq!(identity_width(80), None);
        assert_eq!(identity_width(99), None);
        assert_eq!(identity_width(100), Some(9));
        assert_eq!(identity_width(129), Some(9));
        assert_eq!(identity_width(130), Some(32));
    }
}
