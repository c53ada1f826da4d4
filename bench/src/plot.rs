//! The plot of the `wan` scenario: throughput against loss rate, one panel per (RTT, rate
//! cap), one line per transport, as SVG. [`panels`] turns records into series (pure),
//! [`render`] draws them into a string (pure); only [`load`] and [`write`] touch files.
//!
//! Text goes into the SVG as `<text>` elements laid out by the viewer, so drawing needs
//! no system fonts (plotters' `ttf` feature, fontconfig and freetype stay out). This
//! module must not measure anything: it only reads records.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::Value;

use crate::report::Record;

/// The plot's file name, written next to `results.json`.
pub const FILE_NAME: &str = "throughput_vs_loss.svg";

/// Transports in the order their lines are drawn and listed in the legend; others follow
/// by name.
const TRANSPORT_ORDER: [&str; 4] = ["tunnel-bbr", "tunnel-cubic", "tcp-cubic", "tcp-bbr"];

/// Pixels per panel; the image grows with the grid.
const PANEL_SIZE: (u32, u32) = (560, 380);
/// Pixels above the panels for the title.
const TITLE_HEIGHT: u32 = 50;

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

/// One transport's line: (loss %, Mbit/s) points in increasing loss.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// `tunnel-bbr`, `tcp-cubic`, ...
    pub transport: String,
    /// (loss % per direction, throughput in Mbit/s), sorted by loss.
    pub points: Vec<(f64, f64)>,
}

/// One panel: every transport on one RTT and rate cap.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Round-trip time in ms.
    pub rtt_ms: u64,
    /// Rate cap in Mbit/s; `None` for uncapped.
    pub cap_mbps: Option<u64>,
    /// One line per transport, in [`TRANSPORT_ORDER`].
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

/// The `wan` throughput records as panels ordered by RTT then cap (uncapped first), each
/// with one series per transport. Records missing a parameter, and values that are not
/// positive and finite (a log axis cannot show them), are left out; when the same point
/// was measured twice the later record wins.
pub fn panels(records: &[Record]) -> Vec<Panel> {
    // (rtt, cap) → transport → loss bits → (loss, value); the bits key keeps one point
    // per loss rate without needing Ord on f64.
    type Lines = BTreeMap<String, BTreeMap<u64, (f64, f64)>>;
    let mut grid: BTreeMap<(u64, Option<u64>), Lines> = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r.scenario == "wan" && r.metric == "throughput")
    {
        let (Some(rtt), Some(loss), Some(cap), Some(transport)) = (
            r.params.get("rtt_ms").and_then(as_u64),
            r.params.get("loss_pct").and_then(Value::as_f64),
            r.params.get("cap_mbps").and_then(as_cap),
            r.params.get("transport").and_then(Value::as_str),
        ) else {
            continue;
        };
        if !(r.value.is_finite() && r.value > 0.0 && loss.is_finite()) {
            continue;
        }
        grid.entry((rtt, cap))
            .or_default()
            .entry(transport.to_owned())
            .or_default()
            .insert(loss.to_bits(), (loss, r.value));
    }
    grid.into_iter()
        .map(|((rtt_ms, cap_mbps), lines)| {
            let mut series: Vec<Series> = lines
                .into_iter()
                .map(|(transport, points)| {
                    let mut points: Vec<(f64, f64)> = points.into_values().collect();
                    points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    Series { transport, points }
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

/// Draws `panels` as one SVG document: a row per RTT, a column per cap, a shared
/// logarithmic throughput axis (so panels compare at a glance) and a linear loss axis.
pub fn render(panels: &[Panel]) -> Result<String, PlotError> {
    if panels.iter().all(|p| p.series.is_empty()) {
        return Err(PlotError::NoWanRecords);
    }
    let mut rtts: Vec<u64> = panels.iter().map(|p| p.rtt_ms).collect();
    rtts.dedup();
    let mut caps: Vec<Option<u64>> = panels.iter().map(|p| p.cap_mbps).collect();
    caps.sort_unstable();
    caps.dedup();
    let points = || {
        panels
            .iter()
            .flat_map(|p| &p.series)
            .flat_map(|s| &s.points)
    };
    let (lo, hi) = points().fold((f64::MAX, f64::MIN), |(lo, hi), &(_, v)| {
        (lo.min(v), hi.max(v))
    });
    // A little air around the extremes; a decade at least so the axis has ticks.
    let (y0, mut y1) = (lo / 1.5, hi * 1.5);
    if y1 < y0 * 10.0 {
        y1 = y0 * 10.0;
    }
    let max_loss = points().fold(0.0_f64, |m, &(l, _)| m.max(l)).max(1.0);
    let (x0, x1) = (-0.04 * max_loss, 1.04 * max_loss);

    let width = PANEL_SIZE.0 * u32::try_from(caps.len()).unwrap_or(1);
    let height = TITLE_HEIGHT + PANEL_SIZE.1 * u32::try_from(rtts.len()).unwrap_or(1);
    let draw = |e: &dyn std::fmt::Display| PlotError::Draw(e.to_string());
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
        let areas = root.split_evenly((rtts.len(), caps.len()));
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
                for (i, s) in panel.series.iter().enumerate() {
                    let c = colour(&s.transport, i);
                    chart
                        .draw_series(
                            LineSeries::new(s.points.iter().copied(), c.stroke_width(2))
                                .point_size(3),
                        )
                        .map_err(|e| draw(&e))?
                        .label(s.transport.as_str())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                        });
                }
                // Plain TCP collapses as loss grows, so the lower left stays empty.
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::LowerLeft)
                    .background_style(WHITE.mix(0.85))
                    .border_style(RGBColor(180, 180, 180))
                    .label_font(("sans-serif", 13))
                    .draw()
                    .map_err(|e| draw(&e))?;
            }
        }
        root.present().map_err(|e| draw(&e))?;
    }
    Ok(svg)
}

/// The records of a saved `results.json`. A record that does not read back (JSON has no
/// NaN, so a NaN figure was saved as `null`) is skipped rather than losing the plot.
pub fn load(path: &Path) -> Result<Vec<Record>, PlotError> {
    #[derive(serde::Deserialize)]
    struct Saved {
        records: Vec<Value>,
    }
    let text = std::fs::read_to_string(path).map_err(|source| PlotError::Io {
        path: path.to_owned(),
        source,
    })?;
    let saved: Saved = serde_json::from_str(&text).map_err(|source| PlotError::Parse {
        path: path.to_owned(),
        source,
    })?;
    Ok(saved
        .records
        .into_iter()
        .filter_map(|r| serde_json::from_value(r).ok())
        .collect())
}

/// Draws the `wan` records into `path`. `Ok(false)` (nothing written) when there are none.
pub fn write(records: &[Record], path: &Path) -> Result<bool, PlotError> {
    let svg = match render(&panels(records)) {
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

    #[test]
    fn records_become_one_panel_per_rtt_and_cap_with_a_line_per_transport() {
        let p = panels(&fixture());
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
        let p = panels(&records);
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].series,
            [Series {
                transport: "tunnel-bbr".into(),
                points: vec![(1.0, 60.0)]
            }]
        );
        assert!(panels(&records[..1]).is_empty());
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
        let svg = render(&panels(&fixture())).unwrap();
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
            4,
            "one legend each"
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
        assert!(!write(&[], &path).unwrap());
        assert!(!path.exists());
        assert!(write(&fixture(), &path).unwrap());
        assert!(std::fs::read_to_string(&path).unwrap().contains("</svg>"));
    }

    #[test]
    fn a_saved_results_json_loads_back_into_the_same_panels() {
        let dir = tempfile::tempdir().unwrap();
        let report = Report {
            records: fixture(),
            ..Report::default()
        };
        report.write(dir.path()).unwrap();
        let loaded = load(&dir.path().join("results.json")).unwrap();
        assert_eq!(panels(&loaded), panels(&fixture()));
        let mut json: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("results.json")).unwrap(),
        )
        .unwrap();
        json["records"][0]["value"] = Value::Null;
        let nulled = dir.path().join("nulled.json");
        std::fs::write(&nulled, json.to_string()).unwrap();
        assert_eq!(load(&nulled).unwrap().len(), fixture().len() - 1);
        let bad = dir.path().join("results.md");
        assert!(matches!(load(&bad), Err(PlotError::Parse { .. })));
        assert!(matches!(
            load(&dir.path().join("missing.json")),
            Err(PlotError::Io { .. })
        ));
    }
}
