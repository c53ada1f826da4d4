//! The Apps tab: exposed apps, then remote apps with their listener state and traffic;
//! `a` adds, `d` removes (the form and confirmation are overlays).

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row};

use super::{Ctx, kv, table};
use crate::ctl::escape::visible_owned;
use crate::ctl::units;

/// Draws the apps table; returns the detail lines for the selected app.
pub fn render(cx: Ctx<'_>, frame: &mut Frame<'_>, area: Rect) -> Vec<Line<'static>> {
    let m = cx.model;
    let n = m.exposed.len();
    table(
        cx,
        frame,
        area,
        "apps".to_owned(),
        &["kind", "app", "socket", "state", "strm", "sent", "recv"],
        &[
            Constraint::Length(7),
            Constraint::Min(10),
            Constraint::Min(14),
            Constraint::Length(8),
            Constraint::Length(4),
            Constraint::Length(9),
            Constraint::Length(9),
        ],
        n + m.remote.len(),
        |i| {
            if let Some(a) = m.exposed.get(i) {
                let s = a.spec.clone().unwrap_or_default();
                let (open, sent, recv) = m.app_traffic(&s.name);
                Row::new(vec![
                    Cell::from("exposed"),
                    Cell::from(visible_owned(s.name)),
                    Cell::from(visible_owned(s.app_socket)),
                    Cell::from(Span::styled("serving", cx.theme.good())),
                    Cell::from(open.to_string()),
                    Cell::from(units::bytes(sent)),
                    Cell::from(units::bytes(recv)),
                ])
            } else {
                let r = &m.remote[i - n];
                let s = r.spec.clone().unwrap_or_default();
                let (open, sent, recv) = m.app_traffic(&s.app_name);
                let st = units::listener_state(r.listener_state);
                Row::new(vec![
                    Cell::from("remote"),
                    Cell::from(visible_owned(format!("{}/{}", s.site_name, s.app_name))),
                    Cell::from(visible_owned(s.local_socket)),
                    Cell::from(Span::styled(st.clone(), cx.theme.state(&st))),
                    Cell::from(open.to_string()),
                    Cell::from(units::bytes(sent)),
                    Cell::from(units::bytes(recv)),
                ])
            }
        },
    );
    let i = cx.view.selection();
    let t = cx.theme;
    if let Some(a) = m.exposed.get(i) {
        let s = a.spec.clone().unwrap_or_default();
        return vec![
            kv(t, "exposed app", s.name.clone()),
            kv(t, "mode", units::or_empty(&s.mode).to_owned()),
            kv(t, "appSocket", units::or_empty(&s.app_socket).to_owned()),
            kv(t, "portRange", s.port_range.join(", ")),
            kv(t, "addressRange", s.address_range.join(", ")),
            kv(
                t,
                "allowedSites",
                if s.allowed_sites.is_empty() {
                    "every site".to_owned()
                } else {
                    s.allowed_sites.join(", ")
                },
            ),
            kv(t, "not allowed", m.app_not_allowed(&s.name).to_string()),
            kv(t, "bandwidthLimit", bandwidth_limit(&s.bandwidth_limit)),
            kv(t, "added live", units::yes_no(a.live).to_owned()),
        ];
    }
    let Some(r) = m.remote.get(i.wrapping_sub(n)) else {
        return vec![Line::from("no app selected")];
    };
    let s = r.spec.clone().unwrap_or_default();
    vec![
        kv(t, "remote app", format!("{}/{}", s.site_name, s.app_name)),
        kv(t, "localSocket", s.local_socket),
        kv(t, "appSocket", units::or_empty(&s.app_socket).to_owned()),
        kv(t, "listener", units::listener_state(r.listener_state)),
        kv(
            t,
            "listening on",
            units::or_empty(&r.listen_addr).to_owned(),
        ),
        kv(t, "error", units::or_empty(&r.listener_error).to_owned()),
        kv(t, "bandwidthLimit", bandwidth_limit(&s.bandwidth_limit)),
        kv(t, "added live", units::yes_no(r.live).to_owned()),
    ]
}

/// The `bandwidthLimit` line: the rate each way (all streams together), or unlimited.
fn bandwidth_limit(rate: &str) -> String {
    if rate.is_empty() {
        "unlimited".to_owned()
    } else {
        format!(
            "{} each way, all streams together",
            visible_owned(rate.to_owned())
        )
    }
}
