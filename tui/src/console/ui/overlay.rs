//! Overlays drawn over the tab: the `?` help (generated from the keymap), the add-app form
//! with the daemon's error inline, and the y/n confirmation of an app removal or of
//! forgetting a peer's pinned identity.

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use super::Ctx;
use crate::console::form::Kind;
use crate::console::keymap::BINDINGS;
use crate::console::view::Confirm;
use crate::ctl::escape::visible;

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let [v] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [h] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(v);
    h
}

/// Draws whichever overlay is open (confirmation above form above help).
pub fn render(cx: Ctx<'_>, frame: &mut Frame<'_>) {
    let t = cx.theme;
    let area = frame.area();
    if cx.view.help {
        let mut lines: Vec<Line<'_>> = BINDINGS
            .iter()
            .map(|b| {
                Line::from(vec![
                    Span::styled(format!("{:>8}  ", b.key), t.title()),
                    Span::raw(b.help),
                ])
            })
            .collect();
        lines.push(Line::from(vec![
            Span::styled("  Ctrl-C  ", t.title()),
            Span::raw("quit"),
        ]));
        let r = centered(area, 40, lines.len() as u16 + 2);
        frame.render_widget(Clear, r);
        frame.render_widget(
            Paragraph::new(lines).block(Block::bordered().title(" keys (? closes) ")),
            r,
        );
    }
    if let Some(f) = &cx.view.form {
        let kind = match f.kind {
            Kind::Exposed => "exposed",
            Kind::Remote => "remote",
        };
        let mut lines = vec![Line::from(vec![
            Span::styled(if f.focus == 0 { "> " } else { "  " }, t.title()),
            Span::styled(format!("{:>14}: ", "kind"), t.dim()),
            Span::raw(format!("[{kind}]  (space switches)")),
        ])];
        for (i, (label, value)) in f.fields().into_iter().enumerate() {
            let focused = f.focus == i + 1;
            lines.push(Line::from(vec![
                Span::styled(if focused { "> " } else { "  " }, t.title()),
                Span::styled(format!("{label:>14}: "), t.dim()),
                Span::raw(format!("{value}{}", if focused { "▏" } else { "" })),
            ]));
        }
        lines.push(Line::from(""));
        if f.submitting {
            lines.push(Line::styled("adding…", t.warn()));
        } else if let Some(e) = &f.error {
            lines.push(Line::styled(format!("error: {e}"), t.bad()));
        } else {
            lines.push(Line::styled(
                "lists are comma-separated; empty: defaults (allowedSites: all sites, protocol: tcp)",
                t.dim(),
            ));
        }
        lines.push(Line::styled("Tab/↑↓ field  Enter add  Esc cancel", t.dim()));
        let r = centered(area, 72, lines.len() as u16 + 4);
        frame.render_widget(Clear, r);
        frame.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .block(Block::bordered().title(" add app ")),
            r,
        );
    }
    if let Some(c) = &cx.view.confirm {
        let (lines, width) = match c {
            Confirm::RemoveExposed(n) => (removal(cx, &format!("exposed app '{n}'")), 60),
            Confirm::RemoveRemote { site, app, local } => (
                removal(cx, &format!("remote app '{site}/{app}' on '{local}'")),
                60,
            ),
            Confirm::ForgetPeer {
                site,
                pinned,
                refused,
            } => (forget(cx, site, pinned, refused), 78),
        };
        // Room for wrapped lines on a narrow terminal.
        let height = lines.len() as u16 + 2 + u16::from(area.width < width);
        let r = centered(area, width, height);
        frame.render_widget(Clear, r);
        frame.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .block(Block::bordered().title(" confirm ")),
            r,
        );
    }
}

fn removal(cx: Ctx<'_>, what: &str) -> Vec<Line<'static>> {
    vec![
        Line::from(format!("remove {}?", visible(what))),
        Line::styled("y remove   n/Esc keep", cx.theme.title()),
    ]
}

/// Forgetting a pin: which identity is dropped, what happens next, and which identity
/// will probably be pinned instead (whichever announces the name first is).
fn forget(cx: Ctx<'_>, site: &str, pinned: &str, refused: &str) -> Vec<Line<'static>> {
    let t = cx.theme;
    let site = visible(site);
    let mut lines = vec![Line::from(format!(
        "forget the identity pinned for site '{site}'?"
    ))];
    if !pinned.is_empty() {
        lines.push(Line::from(vec![
            Span::styled("  pinned now: ", t.dim()),
            Span::raw(visible(pinned).into_owned()),
        ]));
    }
    if !refused.is_empty() {
        lines.push(Line::from(vec![
            Span::styled("  refused:    ", t.dim()),
            Span::raw(visible(refused).into_owned()),
        ]));
    }
    lines.push(Line::from(format!(
        "Its dataChannels close; the next identity that announces '{site}' is pinned."
    )));
    lines.push(Line::styled("y forget   n/Esc keep", t.title()));
    lines
}
