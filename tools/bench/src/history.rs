//! The whole topology's recorded history — events/s end to end and p99 at half load, one
//! entry per recorded run — and its chart: `docs/bench-history.json` and
//! `docs/bench-history.svg`, shown in docs/benchmarks.md.
//!
//! `habitat bench --history docs/bench-history.json` appends the run and redraws the chart;
//! `habitat bench chart` redraws it from the file. The chart is plain SVG written here
//! (two panels sharing the run axis), so it is the same bytes for the same history.

use std::{fmt::Write as _, path::Path};

use anyhow::{Context as _, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

/// One recorded run of the whole topology.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
pub struct Entry {
    /// The commit measured (short hash).
    pub commit: String,
    /// The day it was measured, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// The command that measured it.
    pub command: String,
    /// Events/s end to end of the first run (exactly-once, one instance each).
    pub events_per_second: f64,
    /// p99 ms (to the commit of a row's transaction) at half that load, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
}

#[derive(Clone, Debug, Args)]
pub struct ChartArgs {
    /// The history to draw.
    #[arg(long, default_value = "docs/bench-history.json")]
    pub history: std::path::PathBuf,
    /// Where to write the chart (default: the history's path with `.svg`).
    #[arg(long)]
    pub output: Option<std::path::PathBuf>,
}

pub fn load(path: &Path) -> Result<Vec<Entry>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a bench history", path.display()))
}

/// Appends `entry` to the history at `path` and redraws its chart beside it.
pub fn record(path: &Path, entry: Entry) -> Result<()> {
    let mut entries = load(path)?;
    entries.push(entry);
    std::fs::write(path, serde_json::to_string_pretty(&entries)? + "\n")?;
    draw(path, &path.with_extension("svg"))
}

/// Writes the chart of the history at `history` to `output`.
pub fn draw(history: &Path, output: &Path) -> Result<()> {
    let entries = load(history)?;
    std::fs::write(output, chart(&entries))
        .with_context(|| format!("write {}", output.display()))?;
    println!("{} runs drawn into {}", entries.len(), output.display());
    Ok(())
}

pub fn run_chart(args: &ChartArgs) -> Result<()> {
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| args.history.with_extension("svg"));
    draw(&args.history, &output)
}

const WIDTH: f64 = 760.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const PANEL: f64 = 150.0;
const TOP: f64 = 40.0;
const GAP: f64 = 50.0;

/// A round upper bound for an axis: 1, 2, 2.5 or 5 times a power of ten, at or above `max`.
fn axis_max(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|step| step * power)
        .find(|bound| *bound >= max)
        .unwrap_or(10.0 * power)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One panel: a title, four grid lines with their values, the points joined where known.
fn panel(
    out: &mut String,
    top: f64,
    title: &str,
    unit: &str,
    values: &[Option<f64>],
    x: &dyn Fn(usize) -> f64,
) {
    let max = axis_max(values.iter().flatten().copied().fold(0.0, f64::max));
    let y = |v: f64| top + PANEL - v / max * PANEL;
    _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{:.1}" font-size="14" font-weight="bold">{}</text>"#,
        top - 12.0,
        escape(title)
    );
    for step in 0..=4 {
        let value = max * f64::from(step) / 4.0;
        _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#ddd"/><text x="{2:.1}" y="{3:.1}" font-size="11" text-anchor="end">{4} {unit}</text>"##,
            y(value),
            WIDTH - RIGHT,
            LEFT - 6.0,
            y(value) + 4.0,
            thousands(value)
        );
    }
    let points: Vec<(f64, f64)> = values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| (x(i), y(v))))
        .collect();
    if points.len() > 1 {
        let path: Vec<String> = points
            .iter()
            .map(|(px, py)| format!("{px:.1},{py:.1}"))
            .collect();
        _ = writeln!(
            out,
            r##"<polyline points="{}" fill="none" stroke="#2b6cb0" stroke-width="2"/>"##,
            path.join(" ")
        );
    }
    for ((px, py), value) in points.iter().zip(values.iter().flatten()) {
        _ = writeln!(
            out,
            r##"<circle class="point" cx="{px:.1}" cy="{py:.1}" r="3.5" fill="#2b6cb0"><title>{}</title></circle>"##,
            thousands(*value)
        );
    }
}

/// A number with thousands separators, no decimals.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.round());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The chart of a history: events/s above, p99 at half load below, one column per run
/// labelled by its commit.
pub fn chart(entries: &[Entry]) -> String {
    let height = TOP + PANEL + GAP + PANEL + 70.0;
    let span = WIDTH - LEFT - RIGHT;
    let x = move |i: usize| {
        if entries.len() <= 1 {
            LEFT + span / 2.0
        } else {
            LEFT + span * i as f64 / (entries.len() - 1) as f64
        }
    };
    let mut out = String::new();
    _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">"#
    );
    _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let rates: Vec<Option<f64>> = entries.iter().map(|e| Some(e.events_per_second)).collect();
    let p99: Vec<Option<f64>> = entries.iter().map(|e| e.p99_ms).collect();
    panel(
        &mut out,
        TOP,
        "Whole topology: events/s end to end (higher is better)",
        "",
        &rates,
        &x,
    );
    let lower = TOP + PANEL + GAP;
    panel(
        &mut out,
        lower,
        "p99 latency at half load, ms (lower is better)",
        "ms",
        &p99,
        &x,
    );
    for (i, entry) in entries.iter().enumerate() {
        _ = writeln!(
            out,
            r#"<text x="{0:.1}" y="{1:.1}" font-size="10" text-anchor="end" transform="rotate(-35 {0:.1} {1:.1})">{2}</text>"#,
            x(i),
            lower + PANEL + 16.0,
            escape(&entry.commit)
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(commit: &str, rate: f64, p99: Option<f64>) -> Entry {
        Entry {
            commit: commit.to_owned(),
            date: None,
            command: "./habitat bench --quick".to_owned(),
            events_per_second: rate,
            p99_ms: p99,
        }
    }

    #[test]
    fn a_point_per_run_and_a_label_per_commit() {
        let svg = chart(&[
            entry("aaa1111", 8_520.0, None),
            entry("bbb2222", 12_367.0, Some(841.0)),
            entry("ccc3333", 23_581.0, Some(631.0)),
        ]);
        // Three rates and two p99s.
        assert_eq!(svg.matches(r#"class="point""#).count(), 5);
        assert!(svg.contains("<title>23,581</title>") && svg.contains("<title>631</title>"));
        for commit in ["aaa1111", "bbb2222", "ccc3333"] {
            assert!(svg.contains(&format!(">{commit}</text>")), "{commit}");
        }
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // The rate axis is rounded up to 25,000.
        assert!(svg.contains(">25,000 </text>"), "{svg}");
    }

    #[test]
    fn axes_round_up() {
        assert_eq!(axis_max(23_581.0), 25_000.0);
        assert_eq!(axis_max(841.0), 1_000.0);
        assert_eq!(axis_max(120.0), 200.0);
        assert_eq!(axis_max(0.0), 1.0);
    }

    /// The chart in docs/ is the committed history drawn: redraw it with
    /// `habitat bench chart` after editing the history.
    #[test]
    fn the_committed_chart_is_the_committed_history_drawn() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
        let entries = load(&docs.join("bench-history.json")).expect("history");
        assert!(entries.len() >= 5, "the recorded history");
        let committed = std::fs::read_to_string(docs.join("bench-history.svg")).expect("chart");
        assert!(
            committed == chart(&entries),
            "docs/bench-history.svg is stale: run `./habitat bench chart`"
        );
    }
}
