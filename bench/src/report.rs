//! Results: one [`Record`] per measured figure, each next to its baseline from the same
//! run and the ratio of the two, written as `results.json` (machine readable) and
//! `results.md` (tables). Pure formatting apart from the two file writes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::BenchError;

/// The figure a measurement is compared with, measured in the same run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// What it is (`direct`, `tcp-cubic`, `idle`, `setting`, ...).
    pub name: String,
    /// Its value, in the record's unit.
    pub value: f64,
}

/// One measured figure (read back from `results.json` to redraw the plot).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The scenario that measured it.
    pub scenario: String,
    /// What was measured (`throughput`, `rtt_p50`, ...).
    pub metric: String,
    /// The conditions (streams, direction, RTT, loss, ...).
    pub params: BTreeMap<String, Value>,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// The baseline, when the figure has one.
    pub baseline: Option<Baseline>,
    /// `value / baseline`.
    pub ratio: Option<f64>,
    /// Anything the reader should know (errors seen, tolerance verdicts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Record {
    /// A figure without baseline yet.
    pub fn new(scenario: &str, metric: &str, value: f64, unit: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            metric: metric.to_owned(),
            params: BTreeMap::new(),
            value,
            unit: unit.to_owned(),
            baseline: None,
            ratio: None,
            note: None,
        }
    }

    /// Adds a condition.
    pub fn param(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.params.insert(key.to_owned(), value.into());
        self
    }

    /// Sets the baseline and the ratio to it (none when the baseline is 0).
    pub fn baseline(mut self, name: &str, value: f64) -> Self {
        self.ratio = (value != 0.0).then(|| self.value / value);
        self.baseline = Some(Baseline {
            name: name.to_owned(),
            value,
        });
        self
    }

    /// Adds a note.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

/// A scenario that could not finish, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The scenario.
    pub scenario: String,
    /// The error.
    pub error: String,
    /// The conditions of the measurement that failed, when it was one of several.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, Value>,
}

impl Failure {
    /// A failure of `scenario` as a whole.
    pub fn new(scenario: &str, error: impl Into<String>) -> Self {
        Self {
            scenario: scenario.to_owned(),
            error: error.into(),
            params: BTreeMap::new(),
        }
    }

    /// Names the measurement that failed by its conditions.
    pub fn with_params(mut self, params: BTreeMap<String, Value>) -> Self {
        self.params = params;
        self
    }
}

/// Facts about the run, printed above the tables.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Meta {
    /// `quick` or `full`.
    pub mode: String,
    /// Seconds since the Unix epoch at start.
    pub started_unix: u64,
    /// The wovenetd binary measured.
    pub wovenetd: String,
    /// `git rev-parse --short HEAD`, when available.
    pub commit: Option<String>,
    /// `uname -r`-like kernel release.
    pub kernel: Option<String>,
    /// CPUs available.
    pub cpus: usize,
}

/// Everything a run produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Facts about the run.
    pub meta: Meta,
    /// The figures, in the order they were measured.
    pub records: Vec<Record>,
    /// Scenarios that failed.
    pub failures: Vec<Failure>,
}

impl Report {
    /// Adds a figure and prints it, so a long run shows progress.
    pub fn push(&mut self, r: Record) {
        eprintln!("  {}", line(&r));
        self.records.push(r);
    }

    /// Writes `results.json` and `results.md` into `dir` (created if needed).
    pub fn write(&self, dir: &Path) -> Result<(), BenchError> {
        let err = |e: &dyn std::fmt::Display| BenchError::Report(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
        let json = serde_json::to_string_pretty(self).map_err(|e| err(&e))?;
        std::fs::write(dir.join("results.json"), json + "\n").map_err(|e| err(&e))?;
        std::fs::write(dir.join("results.md"), self.markdown()).map_err(|e| err(&e))?;
        Ok(())
    }

    /// The markdown report: run facts, one table per scenario, a pivot of the WAN grid.
    pub fn markdown(&self) -> String {
        let mut md = String::from("# wovenet benchmark results\n\n");
        let m = &self.meta;
        let _ = writeln!(
            md,
            "Mode `{}`, wovenetd `{}`, commit `{}`, kernel `{}`, {} CPUs. Every figure is \
             shown next to its baseline from the same run; ratio = value / baseline.\n",
            m.mode,
            m.wovenetd,
            m.commit.as_deref().unwrap_or("?"),
            m.kernel.as_deref().unwrap_or("?"),
            m.cpus
        );
        let mut scenarios: Vec<&str> = Vec::new();
        for r in &self.records {
            if !scenarios.contains(&r.scenario.as_str()) {
                scenarios.push(&r.scenario);
            }
        }
        for s in scenarios {
            let _ = writeln!(md, "## {s}\n");
            if s == "wan" {
                md.push_str(&wan_pivot(&self.records, &self.failures));
                md.push('\n');
            }
            if s == "nat" {
                md.push_str(&nat_pivot(&self.records));
                md.push('\n');
            }
            md.push_str("| metric | parameters | value | baseline | ratio | note |\n");
            md.push_str("|---|---|---:|---:|---:|---|\n");
            for r in self.records.iter().filter(|r| r.scenario == s) {
                let baseline = r.baseline.as_ref().map_or("—".to_owned(), |b| {
                    format!("{} {} ({})", num(b.value), r.unit, b.name)
                });
                let _ = writeln!(
                    md,
                    "| {} | {} | {} {} | {} | {} | {} |",
                    r.metric,
                    params(&r.params),
                    num(r.value),
                    r.unit,
                    baseline,
                    r.ratio.map_or("—".to_owned(), |x| format!("{x:.2}×")),
                    r.note.as_deref().unwrap_or("")
                );
            }
            md.push('\n');
        }
        if !self.failures.is_empty() {
            md.push_str("## failures\n\n");
            for f in &self.failures {
                let first = f.error.lines().next().unwrap_or("");
                let _ = writeln!(md, "- `{}`: {}", f.scenario, first);
            }
            md.push('\n');
        }
        md
    }
}

/// One record as a progress line.
fn line(r: &Record) -> String {
    let mut s = format!(
        "{} {} [{}] = {} {}",
        r.scenario,
        r.metric,
        params(&r.params),
        num(r.value),
        r.unit
    );
    if let (Some(b), Some(x)) = (&r.baseline, r.ratio) {
        let _ = write!(s, " vs {} {} = {x:.2}×", b.name, num(b.value));
    }
    if let Some(n) = &r.note {
        let _ = write!(s, " ({n})");
    }
    s
}

/// `k=v, k=v` with strings unquoted.
fn params(p: &BTreeMap<String, Value>) -> String {
    p.iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            Value::Number(_) => format!("{k}={}", params_value(v)),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A number with about three significant digits, no exponent.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 || a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The WAN grid as one row per path and one column per transport (Mbit/s), plus the best
/// tunnel's ratio to plain TCP with each kernel congestion controller.
fn wan_pivot(records: &[Record], failures: &[Failure]) -> String {
    // A failed measurement takes part as a row with no value.
    let failed: Vec<Record> = failures
        .iter()
        .filter(|f| f.scenario == "wan" && !f.params.is_empty())
        .map(|f| Record {
            params: f.params.clone(),
            ..Record::new("wan", "throughput", f64::NAN, "Mbit/s")
        })
        .collect();
    let rows: Vec<&Record> = records
        .iter()
        .filter(|r| r.scenario == "wan" && r.metric == "throughput")
        .chain(&failed)
        .collect();
    let mut transports: Vec<String> = Vec::new();
    let mut paths: Vec<(String, String, String)> = Vec::new();
    let text = |r: &Record, k: &str| r.params.get(k).map_or(String::new(), params_value);
    for r in &rows {
        let t = text(r, "transport");
        if !transports.contains(&t) {
            transports.push(t);
        }
        let p = (text(r, "rtt_ms"), text(r, "loss_pct"), text(r, "cap_mbps"));
        if !paths.contains(&p) {
            paths.push(p);
        }
    }
    let mut md = String::from(
        "Throughput in Mbit/s, one upload stream (**failed**: the transfer broke, see the \
         failures; the ratios use the best tunnel that completed):\n\n\
         | RTT ms | loss % | cap Mbit/s |",
    );
    for t in &transports {
        let _ = write!(md, " {t} |");
    }
    md.push_str(" best tunnel / tcp-cubic | best tunnel / tcp-bbr |\n|---:|---:|---:|");
    md.push_str(&"---:|".repeat(transports.len() + 2));
    md.push('\n');
    for p in &paths {
        let _ = write!(md, "| {} | {} | {} |", p.0, p.1, p.2);
        let value = |t: &str| {
            rows.iter()
                .find(|r| {
                    text(r, "transport") == t
                        && (text(r, "rtt_ms"), text(r, "loss_pct"), text(r, "cap_mbps")) == *p
                })
                .map(|r| r.value)
        };
        for t in &transports {
            let cell = match value(t) {
                None => "—".to_owned(),
                Some(v) if v.is_nan() => "**failed**".to_owned(),
                Some(v) => num(v),
            };
            let _ = write!(md, " {cell} |");
        }
        let best = transports
            .iter()
            .filter(|t| t.starts_with("tunnel"))
            .filter_map(|t| value(t))
            .filter(|v| !v.is_nan())
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        for base in ["tcp-cubic", "tcp-bbr"] {
            let cell = match (best, value(base)) {
                (Some(b), Some(v)) if v > 0.0 => format!("{:.2}×", b / v),
                _ => "—".to_owned(),
            };
            let _ = write!(md, " {cell} |");
        }
        md.push('\n');
    }
    md
}

/// The `nat` scenario as one table per set (`wan` parameter: the emulated link, `none` for
/// the rig as it is), one row per figure and one column per path, with the punched and
/// relayed tunnels against the direct one (ratios, and the difference).
fn nat_pivot(records: &[Record]) -> String {
    let text = |r: &Record, k: &str| r.params.get(k).map_or(String::new(), params_value);
    let mut sets: Vec<String> = Vec::new();
    for r in records.iter().filter(|r| r.scenario == "nat") {
        let w = text(r, "wan");
        if !sets.contains(&w) {
            sets.push(w);
        }
    }
    let mut md = String::new();
    for w in &sets {
        let mine: Vec<Record> = records
            .iter()
            .filter(|r| r.scenario == "nat" && text(r, "wan") == *w)
            .cloned()
            .collect();
        let link = if w == "none" {
            "the rig as it is (no emulated link)".to_owned()
        } else {
            format!("across the emulated link `{w}`")
        };
        let _ = writeln!(md, "Behind NAT, {link}:\n");
        md.push_str(&nat_table(&mine));
        md.push('\n');
    }
    md
}

/// One set of [`nat_pivot`].
fn nat_table(records: &[Record]) -> String {
    let rows: [(&str, &str, Option<&str>); 5] = [
        ("time to first channel", "first_channel", None),
        ("throughput, upload", "throughput", Some("upload")),
        ("throughput, download", "throughput", Some("download")),
        ("latency p50", "rtt_p50", None),
        ("latency p99", "rtt_p99", None),
    ];
    let mut md = String::from(
        "| figure | unit | plain TCP | direct | punched | relayed | punched / direct | \
         relayed / direct | relayed − direct |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let text = |r: &Record, k: &str| r.params.get(k).map_or(String::new(), params_value);
    for (label, metric, direction) in rows {
        let find = |path: &str| {
            records.iter().find(|r| {
                r.scenario == "nat"
                    && r.metric == metric
                    && text(r, "path") == path
                    && direction.is_none_or(|d| text(r, "direction") == d)
            })
        };
        let (direct, punched, relayed) = (find("direct"), find("punched"), find("relayed"));
        let Some(unit) = [direct, punched, relayed]
            .into_iter()
            .flatten()
            .map(|r| r.unit.as_str())
            .next()
        else {
            continue;
        };
        let plain = direct
            .and_then(|r| r.baseline.as_ref())
            .filter(|b| b.name == "tcp")
            .map(|b| b.value);
        let value = |r: Option<&Record>| r.map(|r| r.value);
        let cell = |v: Option<f64>| v.map_or("—".to_owned(), num);
        let ratio = |v: Option<f64>, base: Option<f64>| match (v, base) {
            (Some(v), Some(b)) if b != 0.0 => format!("{:.2}×", v / b),
            _ => "—".to_owned(),
        };
        let (d, p, r) = (value(direct), value(punched), value(relayed));
        let diff = match (r, d) {
            (Some(r), Some(d)) => format!("{} {unit}", num(r - d)),
            _ => "—".to_owned(),
        };
        let _ = writeln!(
            md,
            "| {label} | {unit} | {} | {} | {} | {} | {} | {} | {diff} |",
            cell(plain),
            cell(d),
            cell(p),
            cell(r),
            ratio(p, d),
            ratio(r, d),
        );
    }
    md
}

fn params_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => n.as_f64().map_or(n.to_string(), num),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_carries_its_ratio_to_the_baseline() {
        let r = Record::new("loopback", "throughput", 800.0, "Mbit/s")
            .param("streams", 1)
            .baseline("direct", 1600.0);
        assert_eq!(r.ratio, Some(0.5));
        let zero = Record::new("x", "y", 1.0, "u").baseline("b", 0.0);
        assert_eq!(zero.ratio, None);
    }

    #[test]
    fn json_has_the_documented_fields() {
        let r = Record::new("latency", "rtt_p50", 42.0, "us")
            .param("size", 64)
            .baseline("direct", 21.0);
        let v = serde_json::to_value(&r).unwrap();
        for k in [
            "scenario", "metric", "params", "value", "unit", "baseline", "ratio",
        ] {
            assert!(v.get(k).is_some(), "{k} missing: {v}");
        }
        assert_eq!(v["baseline"]["value"], 21.0);
        assert_eq!(v["ratio"], 2.0);
        assert!(v.get("note").is_none());
    }

    #[test]
    fn markdown_puts_every_figure_next_to_its_baseline() {
        let mut rep = Report::default();
        rep.records.push(
            Record::new("loopback", "throughput", 950.0, "Mbit/s")
                .param("direction", "upload")
                .baseline("direct", 1900.0),
        );
        rep.failures.push(Failure::new("wan", "needs root\nmore"));
        let md = rep.markdown();
        assert!(md.contains("## loopback"), "{md}");
        assert!(
            md.contains(
                "| throughput | direction=upload | 950 Mbit/s | 1900 Mbit/s (direct) | 0.50× |"
            ),
            "{md}"
        );
        assert!(md.contains("- `wan`: needs root\n"), "{md}");
    }

    #[test]
    fn the_wan_pivot_has_a_row_per_path_and_the_best_tunnel_ratio() {
        let rec = |t: &str, v: f64| {
            Record::new("wan", "throughput", v, "Mbit/s")
                .param("rtt_ms", 100)
                .param("loss_pct", 1.0)
                .param("cap_mbps", "none")
                .param("transport", t)
        };
        let recs = vec![
            rec("tcp-cubic", 2.0),
            rec("tcp-bbr", 40.0),
            rec("tunnel-cubic", 20.0),
            rec("tunnel-bbr", 80.0),
        ];
        let md = wan_pivot(&recs, &[]);
        assert!(
            md.contains("| 100 | 1.00 | none | 2.00 | 40.0 | 20.0 | 80.0 | 40.00× | 2.00× |"),
            "{md}"
        );
        let failed = Failure::new("wan", "broke").with_params(rec("tunnel-bbr", 0.0).params);
        let md = wan_pivot(&recs[..3], &[failed]);
        assert!(
            md.contains("| 100 | 1.00 | none | 2.00 | 40.0 | 20.0 | **failed** | 10.00× | 0.50× |"),
            "{md}"
        );
    }

    #[test]
    fn the_nat_pivot_puts_the_paths_side_by_side_against_the_direct_tunnel() {
        let rec = |metric: &str, path: &str, v: f64, unit: &str| {
            Record::new("nat", metric, v, unit).param("path", path)
        };
        let up =
            |path: &str, v: f64| rec("throughput", path, v, "Mbit/s").param("direction", "upload");
        let recs = vec![
            rec("first_channel", "direct", 400.0, "ms"),
            rec("first_channel", "punched", 800.0, "ms"),
            up("direct", 1000.0).baseline("tcp", 4000.0),
            up("punched", 900.0).baseline("direct", 1000.0),
            up("relayed", 250.0).baseline("direct", 1000.0),
            rec("rtt_p50", "direct", 120.0, "µs"),
            rec("rtt_p50", "relayed", 300.0, "µs"),
        ];
        let wan: Vec<Record> = recs
            .iter()
            .map(|r| r.clone().param("wan", "20ms-100Mbit/s"))
            .collect();
        let rig: Vec<Record> = recs.into_iter().map(|r| r.param("wan", "none")).collect();
        let md = nat_pivot(&[rig, wan[..1].to_vec()].concat());
        assert!(
            md.contains("| time to first channel | ms | — | 400 | 800 | — | 2.00× | — | — |"),
            "{md}"
        );
        let (first, second) = md
            .split_once("across the emulated link `20ms-100Mbit/s`")
            .expect("a table per set");
        assert!(first.contains("the rig as it is"), "{md}");
        assert!(
            second.contains("| time to first channel | ms | — | 400 | — | — | — | — | — |"),
            "{md}"
        );
        assert!(!second.contains("throughput"), "{md}");
        assert!(
            md.contains(
                "| throughput, upload | Mbit/s | 4000 | 1000 | 900 | 250 | 0.90× | 0.25× | -750 Mbit/s |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| latency p50 | µs | — | 120 | — | 300 | — | 2.50× | 180 µs |"),
            "{md}"
        );
        assert!(!md.contains("download"), "no row without records: {md}");
        assert!(!md.contains("p99"), "{md}");
    }

    #[test]
    fn numbers_keep_about_three_significant_digits() {
        assert_eq!(num(12345.6), "12346");
        assert_eq!(num(42.42), "42.4");
        assert_eq!(num(4.242), "4.24");
        assert_eq!(num(0.04242), "0.042");
        assert_eq!(num(0.0), "0");
    }
}
