//! The Events tab: the live feed, newest first, one line each in `wovenetctl events` form.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Line;
use ratatui::widgets::Row;

use super::{Ctx, table};
use crate::ctl::text;

/// Draws the event list; returns the selected event in full.
pub fn render(cx: Ctx<'_>, frame: &mut Frame<'_>, area: Rect) -> Vec<Line<'static>> {
    let ev = &cx.model.events;
    table(
        cx,
        frame,
        area,
        "events, newest first".to_owned(),
        &["event"],
        &[Constraint::Percentage(100)],
        ev.len(),
        |i| Row::new(vec![text::event(&ev[i]).trim_end().to_owned()]),
    );
    match ev.get(cx.view.selection()) {
        Some(e) => vec![Line::from(text::event(e).trim_end().to_owned())],
        None => vec![Line::from("no event selected")],
    }
}
