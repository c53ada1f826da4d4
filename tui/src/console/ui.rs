//! Pure rendering: `render(model, view, theme, now, frame)` draws the header (link, site,
//! broker, NAT; then this site's identity and trust mode), tab bar, the current tab (with
//! its detail pane), the footer and any overlay. Nothing here mutates
//! state or does I/O; tables build only the rows that fit. Strings from the daemon are drawn
//! through [`visible`] (hidden characters escaped, one line per row).

pub mod apps;
pub mod events;
pub mod overlay;
pub mod sites;
pub mod streams;
pub mod tunnels;

use std::time::SystemTime;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table, Wrap};

use super::keymap;
use super::model::{Link, Model};
use super::theme::Theme;
use super::view::{Tab, ViewState, window};
use crate::ctl::escape::{visible, visible_owned};
use crate::ctl::units;

/// Everything a view needs, borrowed for one frame.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// The daemon mirror.
    pub model: &'a Model,
    /// The operator's place.
    pub view: &'a ViewState,
    /// Styles.
    pub theme: Theme,
    /// Wall clock for ages and uptime.
    pub now: SystemTime,
}

/// Draws one frame.
pub fn render(
    model: &Model,
    view: &ViewState,
    theme: Theme,
    now: SystemTime,
    frame: &mut Frame<'_>,
) {
    let cx = Ctx {
        model,
        view,
        theme,
        now,
    };
    let [header, tabs, body, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(
        Paragraph::new(vec![header_line(cx), identity_line(cx)]),
        header,
    );
    frame.render_widget(Paragraph::new(tab_line(cx)), tabs);
    let (main, detail) = if view.detail {
        let [m, d] = if body.width >= 120 {
            Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(body)
        } else {
            Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(body)
        };
        (m, Some(d))
    } else {
        (body, None)
    };
    let lines = match view.tab {
        Tab::Sites => sites::render(cx, frame, main),
        Tab::Tunnels => tunnels::render(cx, frame, main),
        Tab::Streams => streams::render(cx, frame, main),
        Tab::Apps => apps::render(cx, frame, main),
        Tab::Events => events::render(cx, frame, main),
    };
    if let Some(area) = detail {
        let p = Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" detail (Esc closes) "));
        frame.render_widget(p, area);
    }
    frame.render_widget(Paragraph::new(footer_line(cx)), footer);
    overlay::render(cx, frame);
}

fn header_line(cx: Ctx<'_>) -> Line<'static> {
    let t = cx.theme;
    // The daemon indicator comes first so it survives narrow terminals.
    let mut spans = vec![match &cx.model.link {
        Link::Connecting => Span::styled("… connecting", t.warn()),
        Link::Connected => Span::styled("● connected", t.good()),
        Link::Disconnected { retry_at, .. } => {
            let secs = retry_at
                .duration_since(cx.now)
                .map(|d| d.as_secs_f64().ceil() as u64)
                .unwrap_or(0);
            Span::styled(format!("✗ disconnected, retrying in {secs}s…"), t.bad())
        }
    }];
    spans.push(Span::raw("  "));
    match &cx.model.site {
        Some(s) => {
            spans.push(Span::styled(visible_owned(s.name.clone()), t.title()));
            spans.push(Span::raw(format!(" v{}", s.version)));
            let up = s
                .started_at
                .and_then(|ts| SystemTime::try_from(ts).ok())
                .and_then(|st| cx.now.duration_since(st).ok());
            if let Some(up) = up {
                spans.push(Span::raw(format!("  up {}", units::duration(up))));
            }
            let b = units::broker_state(s.broker_state);
            spans.push(Span::raw("  broker "));
            spans.push(Span::styled(b.clone(), t.state(&b)));
            if !s.broker_reason.is_empty() && b != "connected" {
                spans.push(Span::styled(
                    format!(" ({})", visible(&s.broker_reason)),
                    t.dim(),
                ));
            }
            // A socket behind NAT, and whether its NAT can be punched.
            if let Some(p) = s.sockets.iter().find(|d| d.mode == "hole-punching") {
                let nat = if p.nat_mapping.is_empty() {
                    "mapping not known yet"
                } else {
                    p.nat_mapping.as_str()
                };
                spans.push(Span::raw(format!("  behind NAT ({})", visible(nat))));
            }
            // Why a socket announces no address: the first failing detection.
            if let Some(d) = s.sockets.iter().find(|d| !d.detect_error.is_empty()) {
                spans.push(Span::styled(
                    format!("  address detection failed: {}", d.detect_error),
                    t.bad(),
                ));
            }
        }
        None => spans.push(Span::styled("wovenet (no site yet)", t.dim())),
    }
    Line::from(spans)
}

/// The header's second line: this site's identity, whole (it is what other sites pin and
/// list in `trust.sites`, read out to their operators), and `trust.mode`. Empty before the
/// first snapshot and for a daemon that predates identities.
fn identity_line(cx: Ctx<'_>) -> Line<'static> {
    let t = cx.theme;
    let Some(s) = &cx.model.site else {
        return Line::default();
    };
    let mut spans = Vec::new();
    if !s.identity.is_empty() {
        spans.push(Span::styled("identity ", t.dim()));
        spans.push(Span::raw(visible_owned(s.identity.clone())));
        spans.push(Span::raw("  "));
    }
    let mode = units::trust_mode(s.trust_mode);
    let style = match mode.as_str() {
        "pinned" | "strict" => t.good(),
        "open" => t.warn(),
        _ => return Line::from(spans),
    };
    spans.push(Span::styled("trust ", t.dim()));
    spans.push(Span::styled(mode.clone(), style));
    if mode == "open" {
        spans.push(Span::styled(" (identities are not checked)", t.warn()));
    }
    Line::from(spans)
}

fn tab_line(cx: Ctx<'_>) -> Line<'static> {
    let mut spans = Vec::new();
    for (i, tab) in Tab::ALL.iter().enumerate() {
        let label = format!(" {} {} ", i + 1, tab.title());
        if *tab == cx.view.tab {
            spans.push(Span::styled(label, cx.theme.selected()));
        } else {
            spans.push(Span::raw(label));
        }
    }
    Line::from(spans)
}

fn footer_line(cx: Ctx<'_>) -> Line<'static> {
    let t = cx.theme;
    if cx.view.filtering {
        return Line::from(vec![
            Span::styled("filter: ", t.title()),
            Span::raw(format!("{}▏", cx.view.filter)),
            Span::styled("  Enter/Esc done", t.dim()),
        ]);
    }
    if let Link::Disconnected { reason, .. } = &cx.model.link {
        return Line::from(Span::styled(format!("daemon: {reason}"), t.bad()));
    }
    if let Some(s) = &cx.view.status {
        let style = if s.starts_with("error") {
            t.bad()
        } else {
            t.good()
        };
        return Line::from(Span::styled(s.clone(), style));
    }
    let mut spans = Vec::new();
    for (key, help) in keymap::footer(cx.view.tab) {
        spans.push(Span::styled(key, t.title()));
        spans.push(Span::raw(format!(" {help}  ")));
    }
    Line::from(spans)
}

/// A bordered table showing only the rows that fit; returns nothing (rows are built by `row`).
#[allow(clippy::too_many_arguments)] // one call shape shared by five tabs; a struct adds nothing
pub(crate) fn table<'a>(
    cx: Ctx<'_>,
    frame: &mut Frame<'_>,
    area: Rect,
    title: String,
    header: &[&'static str],
    widths: &[Constraint],
    len: usize,
    row: impl Fn(usize) -> Row<'a>,
) {
    // Borders and the header row take three lines.
    let height = usize::from(area.height.saturating_sub(3));
    let sel = cx.view.selection();
    let (start, end) = window(len, sel, height);
    let rows: Vec<Row<'a>> = (start..end)
        .map(|i| {
            let r = row(i);
            if i == sel {
                r.style(cx.theme.selected())
            } else {
                r
            }
        })
        .collect();
    let title = if len == 0 {
        format!(" {title} ")
    } else {
        format!(" {title} {}/{len} ", sel.min(len - 1) + 1)
    };
    let t = Table::new(rows, widths.to_vec())
        .header(Row::new(header.to_vec()).style(cx.theme.title()))
        .block(Block::bordered().title(title));
    frame.render_widget(t, area);
    if len == 0 {
        let inner = Rect {
            x: area.x + 2,
            y: area.y + 2,
            width: area.width.saturating_sub(4),
            height: 1.min(area.height.saturating_sub(3)),
        };
        frame.render_widget(Paragraph::new("(none)").style(cx.theme.dim()), inner);
    }
}

/// Unicode block sparkline of the last `width` values, scaled to their maximum.
pub fn spark<'a>(
    values: impl DoubleEndedIterator<Item = &'a u64> + ExactSizeIterator,
    width: usize,
) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let tail: Vec<u64> = values.rev().take(width).copied().collect();
    let max = tail.iter().copied().max().unwrap_or(0);
    let mut s: String = tail
        .iter()
        .rev()
        .map(|v| {
            if max == 0 {
                BARS[0]
            } else {
                BARS[((*v as f64 / max as f64) * 7.0).round() as usize]
            }
        })
        .collect();
    while s.chars().count() < width {
        s.insert(0, ' ');
    }
    s
}

/// `key: value` detail line.
pub(crate) fn kv(theme: Theme, key: &str, value: String) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{key:>14}: "), theme.dim()),
        Span::raw(visible_owned(value)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use wovenet_proto::v1 as pb;

    fn text(line: &Line<'_>) -> String {
        line.spans.iter().map(|s| s.content.as_ref()).collect()
    }

    #[test]
    fn the_second_header_line_shows_the_whole_identity_and_the_trust_mode() {
        let mut model = Model::default();
        let view = ViewState::default();
        let cx = |model: &Model| {
            text(&identity_line(Ctx {
                model,
                view: &view,
                theme: Theme::new(false),
                now: SystemTime::UNIX_EPOCH,
            }))
        };
        assert_eq!(cx(&model), "");
        let mut site = pb::SiteInfo {
            name: "alpha".into(),
            identity: "a3stb5ycqzkxw2mhe7nvfgrl4pjduo6i".into(),
            trust_mode: pb::TrustMode::Pinned.into(),
            ..Default::default()
        };
        model.site = Some(site.clone());
        assert_eq!(
            cx(&model),
            "identity a3stb5ycqzkxw2mhe7nvfgrl4pjduo6i  trust pinned"
        );
        site.trust_mode = pb::TrustMode::Open.into();
        model.site = Some(site.clone());
        assert!(
            cx(&model).ends_with("trust open (identities are not checked)"),
            "{}",
            cx(&model)
        );
        // A daemon that predates identities.
        site.identity.clear();
        site.trust_mode = 0;
        model.site = Some(site);
        assert_eq!(cx(&model), "");
    }

    #[test]
    fn header_says_why_address_detection_failed() {
        let mut model = Model::default();
        let view = ViewState::default();
        let mut site = pb::SiteInfo {
            name: "alpha".into(),
            version: "0.1.0".into(),
            broker_state: pb::BrokerState::Connected as i32,
            sockets: vec![pb::TunnelSocket {
                listen: "0.0.0.0:4000".into(),
                auto_detect: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        model.site = Some(site.clone());
        fn cx<'a>(model: &'a Model, view: &'a ViewState) -> Ctx<'a> {
            Ctx {
                model,
                view,
                theme: Theme::new(false),
                now: SystemTime::UNIX_EPOCH,
            }
        }
        assert!(!text(&header_line(cx(&model, &view))).contains("detection"));
        assert!(!text(&header_line(cx(&model, &view))).contains("NAT"));
        let mut punched = site.clone();
        punched.sockets[0].mode = "hole-punching".into();
        punched.sockets[0].nat_mapping = "per-destination".into();
        model.site = Some(punched);
        assert!(
            text(&header_line(cx(&model, &view))).ends_with("  behind NAT (per-destination)"),
            "{}",
            text(&header_line(cx(&model, &view)))
        );
        site.sockets[0].detect_error = "'http://ip.test/' answered HTTP 500".into();
        model.site = Some(site);
        assert!(
            text(&header_line(cx(&model, &view)))
                .ends_with("  address detection failed: 'http://ip.test/' answered HTTP 500"),
            "{}",
            text(&header_line(cx(&model, &view)))
        );
    }
}
