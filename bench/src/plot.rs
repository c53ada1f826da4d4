//! The plot of the `wan` scenario: throughput against loss rate, one panel per (RTT, rate
//! cap), one line per transport, as SVG. [`panels`] turns records into series (pure),
//! [`render`] draws them into a string (pure); only [`load`] and [`write()`] touch files.
//!
//! Text goes into the SVG as `<text>` elements laid out by the viewer, so drawing needs
//! no system fonts (plotters' `ttf` feature, fontconfig and freetype stay out). This
//! module must not measure anything: it only reads records.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::Value;

use crate::report::{Failure, Record};

/// The plot's file name, written next to `results.json`.
pub const FILE_NAME: &str = "throughput_vs_loss.svg";

/// Transports in the order their lines are drawn and listed in the legend; others follow
/// by name.
const TRANSPORT_ORDER: [&str; 4] = ["tunnel-bbr", "tunnel-cubic", "tcp-cubic", "tcp-bbr"];

/// Pixels per panel; the image grows with the grid.
const PANEL_SIZE: (u32, u32) = (560, 380);
/// Pixels above the panels for the title.
const TITLE_HEIGHT: u32 = 50;
/// Pixels per row of the shared legend, and per entry in a row.
const LEGEND_ROW: i32 = 26;
const LEGEND_ENTRY: i32 = 140;

/// Why the plot could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The records hold no usable `wan` throughput figure.
    #[error("no wan throughput records to plot")]
    NoWanRecords,
    /// The results file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The results file is not a `results.json` of this suite.
    #[error("{path}: not a results.json: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What did not parse.
        #[source]
        source: serde_json::Error,
    },
    /// plotters refused to draw.
    #[error("cannot draw the plot: {0}")]
    Draw(String),
}

/// One transport's line: (loss %, Mbit/s) points in increasing loss, and the loss rates
/// where its transfer broke.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// `tunnel-bbr`, `tcp-cubic`, ...
    pub transport: String,
    /// (loss % per direction, throughput in Mbit/s), sorted by loss.
    pub points: Vec<(f64, f64)>,
    /// Loss rates (%) where the measurement failed, sorted: drawn as crosses on the
    /// bottom of the panel, so a broken transport is not mistaken for a missing one.
    pub failed: Vec<f64>,
}

/// One panel: every transport on one RTT and rate cap.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Round-trip time in ms.
    pub rtt_ms: u64,
    /// Rate cap in Mbit/s; `None` for uncapped.
    pub cap_mbps: Option<u64>,
    /// One line per transport: tunnel-bbr, tunnel-cubic, tcp-cubic, tcp-bbr, then others.
    pub series: Vec<Series>,
}

impl Panel {
    /// The panel's caption, e.g. `RTT 100 ms, cap 100 Mbit/s`.
    pub fn title(&self) -> String {
        let cap = self
            .cap_mbps
            .map_or("uncapped".to_owned(), |c| format!("cap {c} Mbit/s"));
        format!("RTT {} ms, {cap}", self.rtt_ms)
    }
}

/// The `wan` throughput records (and the failed `wan` measurements) as panels ordered by
/// RTT then cap (uncapped first), each with one series per transport. Records missing a
/// parameter, and values that are not positive and finite (a log axis cannot show them),
/// are left out; when the same point was measured twice the later record wins.
pub fn panels(records: &[Record], failures: &[Failure]) -> Vec<Panel> {
    /// Points keyed by the loss's bits: one per loss rate without needing Ord on f64.
    #[derive(Default)]
    struct Line {
        points: BTreeMap<u64, (f64, f64)>,
        failed: BTreeMap<u64, f64>,
    }
    type Grid = BTreeMap<(u64, Option<u64>), BTreeMap<String, Line>>;
    /// The line a measurement belongs to, and its loss rate.
    fn line<'g>(
        grid: &'g mut Grid,
        params: &BTreeMap<String, Value>,
    ) -> Option<(&'g mut Line, f64)> {
        let rtt = params.get("rtt_ms").and_then(as_u64)?;
        let loss = params.get("loss_pct").and_then(Value::as_f64)?;
        let cap = params.get("cap_mbps").and_then(as_cap)?;
        let transport = params.get("transport").and_then(Value::as_str)?;
        if !loss.is_finite() {
            return None;
        }
        let line = grid
            .entry((rtt, cap))
            .or_default()
            .entry(transport.to_owned())
            .or_default();
        Some((line, loss))
    }
    let mut grid = Grid::new();
    for r in records
        .iter()
        .filter(|r| r.scenario == "wan" && r.metric == "throughput")
        .filter(|r| r.value.is_finite() && r.value > 0.0)
    {
        if let Some((l, loss)) = line(&mut grid, &r.params) {
            l.points.insert(loss.to_bits(), (loss, r.value));
        }
    }
    for f in failures.iter().filter(|f| f.scenario == "wan") {
        if let Some((l, loss)) = line(&mut grid, &f.params) {
            l.failed.insert(loss.to_bits(), loss);
        }
    }
    grid.into_iter()
        .map(|((rtt_ms, cap_mbps), lines)| {
            let mut series: Vec<Series> = lines
                .into_iter()
                .map(|(transport, line)| {
                    let mut points: Vec<(f64, f64)> = line.points.into_values().collect();
                    points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    let mut failed: Vec<f64> = line.failed.into_values().collect();
                    failed.sort_by(f64::total_cmp);
                    Series {
                        transport,
                        points,
                        failed,
                    }
                })
                .collect();
            series.sort_by_key(|s| (rank(&s.transport), s.transport.clone()));
            Panel {
                rtt_ms,
                cap_mbps,
                series,
            }
        })
        .collect()
}

/// An integral number, also when written as a float.
fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0)
            .map(|f| f as u64)
    })
}

/// `cap_mbps` as the wan scenario writes it (`"none"` or `"100"`), or a number; 0 is
/// uncapped, as on the command line.
fn as_cap(v: &Value) -> Option<Option<u64>> {
    let cap = match v {
        Value::String(s) if s == "none" => return Some(None),
        Value::String(s) => s.parse().ok()?,
        other => as_u64(other)?,
    };
    Some((cap > 0).then_some(cap))
}

fn rank(transport: &str) -> usize {
    TRANSPORT_ORDER
        .iter()
        .position(|t| *t == transport)
        .unwrap_or(TRANSPORT_ORDER.len())
}

/// An axis tick: at most two decimals, no trailing zeros (`0.5`, `10`, `100`).
fn tick(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

/// The colour of a transport's line: tunnels in cool colours, plain TCP in warm ones.
fn colour(transport: &str, i: usize) -> RGBColor {
    match transport {
        "tunnel-bbr" => RGBColor(31, 119, 180),
        "tunnel-cubic" => RGBColor(44, 160, 44),
        "tcp-cubic" => RGBColor(214, 39, 40),
        "tcp-bbr" => RGBColor(255, 127, 14),
        _ => {
            let c = Palette99::pick(i).to_rgba();
            RGBColor(c.0, c.1, c.2)
        }
    }
}

/// Draws `panels` as one SVG document: a shared legend under the title, then a row per
/// RTT and a column per cap, with a shared logarithmic throughput axis (so panels compare
/// at a glance) and a linear loss axis.
pub fn render(panels: &[Panel]) -> Result<String, PlotError> {
    let series = || panels.iter().flat_map(|p| &p.series);
    if series().all(|s| s.points.is_empty() && s.failed.is_empty()) {
        return Err(PlotError::NoWanRecords);
    }
    let mut rtts: Vec<u64> = panels.iter().map(|p| p.rtt_ms).collect();
    rtts.dedup();
    let mut caps: Vec<Option<u64>> = panels.iter().map(|p| p.cap_mbps).collect();
    caps.sort_unstable();
    caps.dedup();
    let mut transports: Vec<&str> = Vec::new();
    for s in series() {
        if !transports.contains(&s.transport.as_str()) {
            transports.push(&s.transport);
        }
    }
    transports.sort_by_key(|t| (rank(t), *t));
    let any_failed = series().any(|s| !s.failed.is_empty());

    let values = || series().flat_map(|s| &s.points).map(|p| p.1);
    let (lo, hi) = values().fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (1.0, 100.0) };
    // Air around the extremes (and room for the failure crosses at the bottom); a decade
    // at least so the axis has ticks.
    let (y0, mut y1) = (lo / 2.0, hi * 1.5);
    if y1 < y0 * 10.0 {
        y1 = y0 * 10.0;
    }
    let y_failed = y0 * (y1 / y0).powf(0.03);
    let losses =
        series().flat_map(|s| s.points.iter().map(|p| p.0).chain(s.failed.iter().copied()));
    let max_loss = losses.fold(0.0_f64, f64::max).max(1.0);
    let (x0, x1) = (-0.04 * max_loss, 1.04 * max_loss);

    let width = PANEL_SIZE.0 * u32::try_from(caps.len()).unwrap_or(1);
    let legend_slots = legend_layout(transports.len() + usize::from(any_failed), width);
    let legend_height = legend_slots.last().map_or(0, |(_, y)| *y + LEGEND_ROW);
    let height = TITLE_HEIGHT
        + u32::try_from(legend_height).unwrap_or(0)
        + PANEL_SIZE.1 * u32::try_from(rtts.len()).unwrap_or(1);
    let draw = |e: &dyn std::fmt::Display| PlotError::Draw(e.to_string());
    let colours: Vec<RGBColor> = transports
        .iter()
        .enumerate()
        .map(|(i, t)| colour(t, i))
        .collect();
    let colour_of = |t: &str| {
        transports
            .iter()
            .position(|x| *x == t)
            .map_or(BLACK, |i| colours[i])
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw(&e))?;
        let root = root
            .titled(
                "wovenet: one upload stream across the emulated WAN",
                ("sans-serif", 24),
            )
            .map_err(|e| draw(&e))?;
        let (legend, body) = root.split_vertically(legend_height);

        // One legend for every panel: the panels' own would hide data in one or another.
        let font = ("sans-serif", 15).into_font();
        for (i, (x, y)) in legend_slots.iter().enumerate() {
            let (x, y) = (*x, *y + LEGEND_ROW / 2);
            match transports.get(i) {
                Some(t) => {
                    let c = colours[i].stroke_width(3);
                    legend
                        .draw(&PathElement::new(vec![(x, y), (x + 24, y)], c))
                        .map_err(|e| draw(&e))?;
                    legend
                        .draw(&Text::new(t.to_string(), (x + 30, y - 8), font.clone()))
                        .map_err(|e| draw(&e))?;
                }
                None => {
                    legend
                        .draw(&Cross::new((x + 12, y), 5, BLACK.stroke_width(2)))
                        .map_err(|e| draw(&e))?;
                    legend
                        .draw(&Text::new("transfer broke", (x + 30, y - 8), font.clone()))
                        .map_err(|e| draw(&e))?;
                }
            }
        }

        let areas = body.split_evenly((rtts.len(), caps.len()));
        for (row, rtt) in rtts.iter().enumerate() {
            for (col, cap) in caps.iter().enumerate() {
                let area = &areas[row * caps.len() + col];
                let Some(panel) = panels
                    .iter()
                    .find(|p| p.rtt_ms == *rtt && p.cap_mbps == *cap)
                else {
                    continue;
                };
                let mut chart = ChartBuilder::on(area)
                    .caption(panel.title(), ("sans-serif", 18))
                    .margin(12)
                    .x_label_area_size(44)
                    .y_label_area_size(64)
                    .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
                    .map_err(|e| draw(&e))?;
                chart
                    .configure_mesh()
                    .x_desc("loss per direction, %")
                    .y_desc("throughput, Mbit/s (log)")
                    .x_label_formatter(&|v| tick(*v))
                    .y_label_formatter(&|v| tick(*v))
                    .light_line_style(RGBColor(235, 235, 235))
                    .draw()
                    .map_err(|e| draw(&e))?;
                // Tunnels last, on top: they are what the plot is about.
                for s in panel.series.iter().rev() {
                    let c = colour_of(&s.transport);
                    chart
                        .draw_series(
                            LineSeries::new(s.points.iter().copied(), c.stroke_width(2))
                                .point_size(3),
                        )
                        .map_err(|e| draw(&e))?;
                    chart
                        .draw_series(
                            s.failed
                                .iter()
                                .map(|l| Cross::new((*l, y_failed), 5, c.stroke_width(2))),
                        )
                        .map_err(|e| draw(&e))?;
                }
            }
        }
        root.present().map_err(|e| draw(&e))?;
    }
    Ok(svg)
}

/// Top-left corners of `n` legend entries, filling rows of `width` pixels left to right.
fn legend_layout(n: usize, width: u32) -> Vec<(i32, i32)> {
    let per_row = ((i32::try_from(width).unwrap_or(i32::MAX) - 20) / LEGEND_ENTRY).max(1);
    (0..i32::try_from(n).unwrap_or(0))
        .map(|i| {
            (
                20 + (i % per_row) * LEGEND_ENTRY,
                (i / per_row) * LEGEND_ROW,
            )
        })
        .collect()
}

/// The records and failures of a saved `results.json`. An entry that does not read back
/// (JSON has no NaN, so a NaN figure was saved as `null`) is skipped rather than losing
/// the plot.
pub fn load(path: &Path) -> Result<(Vec<Record>, Vec<Failure>), PlotError> {
    #[derive(serde::Deserialize)]
    struct Saved {
        records: Vec<Value>,
        #[serde(default)]
        failures: Vec<Value>,
    }
    fn readable<T: serde::de::DeserializeOwned>(v: Vec<Value>) -> Vec<T> {
        v.into_iter()
            .filter_map(|x| serde_json::from_value(x).ok())
            .collect()
    }
    let text = std::fs::read_to_string(path).map_err(|source| PlotError::Io {
        path: path.to_owned(),
        source,
    })?;
    let saved: Saved = serde_json::from_str(&text).map_err(|source| PlotError::Parse {
        path: path.to_owned(),
        source,
    })?;
    Ok((readable(saved.records), readable(saved.failures)))
}

/// Draws the `wan` records and failures into `path`. `Ok(false)` (nothing written) when
/// there are none.
pub fn write(records: &[Record], failures: &[Failure], path: &Path) -> Result<bool, PlotError> {
    let svg = match render(&panels(records, failures)) {
        Ok(svg) => svg,
        Err(PlotError::NoWanRecords) => return Ok(false),
        Err(e) => return Err(e),
    };
    std::fs::write(path, svg).map_err(|source| PlotError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Report;

    fn rec(rtt: u64, cap: &str, loss: f64, transport: &str, mbps: f64) -> Record {
        Record::new("wan", "throughput", mbps, "Mbit/s")
            .param("rtt_ms", rtt)
            .param("loss_pct", loss)
            .param("cap_mbps", cap)
            .param("transport", transport)
            .param("measured_rtt_ms", Value::Null)
    }

    fn fixture() -> Vec<Record> {
        let mut v = Vec::new();
        for (rtt, cap) in [(100, "100"), (20, "none"), (100, "none"), (20, "100")] {
            for loss in [5.0, 0.0, 1.0] {
                v.push(rec(rtt, cap, loss, "tcp-cubic", 90.0 / (1.0 + 20.0 * loss)));
                v.push(rec(rtt, cap, loss, "tunnel-cubic", 80.0 / (1.0 + loss)));
                v.push(rec(rtt, cap, loss, "tunnel-bbr", 95.0 - loss));
                v.push(rec(rtt, cap, loss, "tcp-bbr", 90.0 - 2.0 * loss));
            }
        }
        v
    }

    /// A broken measurement as the wan scenario reports it.
    fn broke(rtt: u64, cap: &str, loss: f64, transport: &str) -> Failure {
        Failure::new("wan", "broke").with_params(rec(rtt, cap, loss, transport, 0.0).params)
    }

    #[test]
    fn records_become_one_panel_per_rtt_and_cap_with_a_line_per_transport() {
        let p = panels(&fixture(), &[]);
        let keys: Vec<_> = p.iter().map(|p| (p.rtt_ms, p.cap_mbps)).collect();
        assert_eq!(
            keys,
            [(20, None), (20, Some(100)), (100, None), (100, Some(100))]
        );
        for panel in &p {
            let names: Vec<_> = panel.series.iter().map(|s| s.transport.as_str()).collect();
            assert_eq!(names, TRANSPORT_ORDER);
        }
        let cubic = &p[3].series[2];
        assert_eq!(cubic.transport, "tcp-cubic");
        assert_eq!(
            cubic.points,
            [(0.0, 90.0), (1.0, 90.0 / 21.0), (5.0, 90.0 / 101.0)]
        );
        assert!(
            p.iter()
                .flat_map(|p| &p.series)
                .all(|s| s.failed.is_empty())
        );
        assert_eq!(p[1].title(), "RTT 20 ms, cap 100 Mbit/s");
        assert_eq!(p[0].title(), "RTT 20 ms, uncapped");
    }

    #[test]
    fn other_scenarios_broken_values_and_incomplete_records_are_left_out() {
        let mut incomplete = rec(20, "none", 1.0, "tcp-cubic", 5.0);
        incomplete.params.remove("loss_pct");
        let records = vec![
            Record::new("loopback", "throughput", 900.0, "Mbit/s").param("transport", "x"),
            rec(20, "none", 0.0, "tunnel-bbr", 0.0),
            rec(20, "none", 0.5, "tunnel-bbr", f64::NAN),
            incomplete,
            rec(20, "none", 1.0, "tunnel-bbr", 50.0),
            // A re-measured point replaces the earlier one.
            rec(20, "none", 1.0, "tunnel-bbr", 60.0),
        ];
        let p = panels(&records, &[Failure::new("wan", "path broke")]);
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].series,
            [Series {
                transport: "tunnel-bbr".into(),
                points: vec![(1.0, 60.0)],
                failed: vec![],
            }]
        );
        assert!(panels(&records[..1], &[]).is_empty());
    }

    #[test]
    fn failed_measurements_mark_their_loss_rate_on_the_transport_line() {
        let records = vec![rec(100, "100", 0.0, "tunnel-bbr", 90.0)];
        let failures = vec![
            broke(100, "100", 5.0, "tunnel-bbr"),
            broke(100, "100", 1.0, "tunnel-bbr"),
            broke(200, "none", 1.0, "tcp-cubic"),
            Failure::new("loopback", "x")
                .with_params(rec(100, "100", 2.0, "tunnel-bbr", 0.0).params),
        ];
        let p = panels(&records, &failures);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].series[0].points, [(0.0, 90.0)]);
        assert_eq!(p[0].series[0].failed, [1.0, 5.0]);
        // A transport that only broke still gets its (empty) line and its crosses.
        assert_eq!((p[1].rtt_ms, p[1].cap_mbps), (200, None));
        assert!(p[1].series[0].points.is_empty());
        assert_eq!(p[1].series[0].failed, [1.0]);
        let svg = render(&p).unwrap();
        assert!(svg.contains("transfer broke"));
        assert!(
            !render(&panels(&records, &[]))
                .unwrap()
                .contains("transfer broke")
        );
    }

    #[test]
    fn the_legend_wraps_to_the_image_width() {
        assert_eq!(legend_layout(0, 560), []);
        let one_column = legend_layout(5, 560);
        assert_eq!(one_column[..4], [(20, 0), (160, 0), (300, 0), (20, 26)]);
        assert_eq!(one_column[4], (160, 26));
        assert!(legend_layout(5, 1120).iter().all(|(_, y)| *y == 0));
    }

    #[test]
    fn ticks_drop_trailing_zeros() {
        assert_eq!(tick(0.5), "0.5");
        assert_eq!(tick(10.0), "10");
        assert_eq!(tick(1.25), "1.25");
        assert_eq!(tick(-0.0), "0");
        assert_eq!(tick(0.0), "0");
    }

    #[test]
    fn caps_are_read_as_written_by_the_scenario_or_as_numbers() {
        assert_eq!(as_cap(&Value::from("none")), Some(None));
        assert_eq!(as_cap(&Value::from("100")), Some(Some(100)));
        assert_eq!(as_cap(&Value::from(100)), Some(Some(100)));
        assert_eq!(as_cap(&Value::from(0)), Some(None));
        assert_eq!(as_cap(&Value::from("fast")), None);
        assert_eq!(as_u64(&Value::from(20.0)), Some(20));
        assert_eq!(as_u64(&Value::from(20.5)), None);
    }

    #[test]
    fn the_svg_names_every_panel_axis_and_transport() {
        let svg = render(&panels(&fixture(), &[])).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        // The text of every <text> element.
        let texts: Vec<&str> = svg
            .split("<text")
            .skip(1)
            .filter_map(|t| t.split_once('>')?.1.split_once("</text>"))
            .map(|(t, _)| t.trim())
            .collect();
        for label in [
            "wovenet: one upload stream across the emulated WAN",
            "RTT 20 ms, uncapped",
            "RTT 20 ms, cap 100 Mbit/s",
            "RTT 100 ms, uncapped",
            "RTT 100 ms, cap 100 Mbit/s",
            "loss per direction, %",
            "throughput, Mbit/s (log)",
            "tunnel-bbr",
            "tunnel-cubic",
            "tcp-cubic",
            "tcp-bbr",
            // Log axis: decade ticks between the smallest (~0.9) and largest (95) values.
            "1",
            "10",
            "100",
            // Loss axis.
            "0",
            "5",
        ] {
            assert!(texts.contains(&label), "{label} missing");
        }
        assert_eq!(
            texts.iter().filter(|t| **t == "tcp-bbr").count(),
            1,
            "one legend for all panels"
        );
        assert!(
            svg.matches("<polyline").count() >= 16,
            "one line per series"
        );
    }

    #[test]
    fn nothing_to_plot_writes_nothing() {
        assert!(matches!(render(&[]), Err(PlotError::NoWanRecords)));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        assert!(!write(&[], &[], &path).unwrap());
        assert!(!path.exists());
        assert!(write(&fixture(), &[], &path).unwrap());
        assert!(std::fs::read_to_string(&path).unwrap().contains("</svg>"));
    }

    #[test]
    fn a_saved_results_json_loads_back_into_the_same_panels() {
        let dir = tempfile::tempdir().unwrap();
        let failures = vec![
            broke(20, "none", 2.0, "tunnel-bbr"),
            Failure::new("memory", "needs root"),
        ];
        let report = Report {
            records: fixture(),
            failures: failures.clone(),
            ..Report::default()
        };
        report.write(dir.path()).unwrap();
        let (records, loaded_failures) = load(&dir.path().join("results.json")).unwrap();
        assert_eq!(loaded_failures, failures);
        assert_eq!(
            panels(&records, &loaded_failures),
            panels(&fixture(), &failures)
        );
        let mut json: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("results.json")).unwrap(),
        )
        .unwrap();
        json["records"][0]["value"] = Value::Null;
        let nulled = dir.path().join("nulled.json");
        std::fs::write(&nulled, json.to_string()).unwrap();
        assert_eq!(load(&nulled).unwrap().0.len(), fixture().len() - 1);
        let bad = dir.path().join("results.md");
        assert!(matches!(load(&bad), Err(PlotError::Parse { .. })));
        assert!(matches!(
            load(&dir.path().join("missing.json")),
            Err(PlotError::Io { .. })
        ));
    }
}
