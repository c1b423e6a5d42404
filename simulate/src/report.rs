//! Output: the terminal table, the JSON file and the self-contained `report.html` with inline
//! SVG charts (no scripts, no external assets).

use std::fmt::Write as _;
use std::path::Path;

use crate::SimError;
use crate::run::{PolicyResult, Report, Sample};

const POLICY_COLORS: [&str; 3] = ["#1a9850", "#2c7fb8", "#e6550d"];
const RESERVED: &str = "#756bb1";
const ON_DEMAND: &str = "#3182bd";
const SPOT: &str = "#74c476";

fn money(x: f64) -> String {
    if x.abs() >= 1e6 {
        format!("${:.2}M", x / 1e6)
    } else if x.abs() >= 1e3 {
        format!("${:.1}k", x / 1e3)
    } else {
        format!("${x:.2}")
    }
}

fn dur(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else if s < 2.0 * 86400.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} d", s / 86400.0)
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// The rows of the comparison table: (label, one value per policy).
fn rows(report: &Report) -> Vec<(&'static str, Vec<String>)> {
    let r = &report.results;
    let col = |f: &dyn Fn(&PolicyResult) -> String| r.iter().map(f).collect::<Vec<_>>();
    vec![
        ("total cost", col(&|p| money(p.metrics.total_cost_usd))),
        (
            "cost per served GPU-hour",
            col(&|p| money(p.metrics.cost_per_served_gpu_hour)),
        ),
        (
            "served GPU-hours",
            col(&|p| format!("{:.0}", p.metrics.served_gpu_hours)),
        ),
        (
            "idle GPU-hours",
            col(&|p| format!("{:.0}", p.metrics.idle_gpu_hours)),
        ),
        ("wait p50", col(&|p| dur(p.metrics.wait_p50_s))),
        ("wait p95", col(&|p| dur(p.metrics.wait_p95_s))),
        ("wait max", col(&|p| dur(p.metrics.wait_max_s))),
        (
            "pending GPU-minutes",
            col(&|p| format!("{:.0}", p.metrics.pending_gpu_minutes)),
        ),
        (
            "pods completed / unfinished",
            col(&|p| {
                format!(
                    "{} / {}",
                    p.metrics.pods_completed, p.metrics.pods_unfinished
                )
            }),
        ),
        (
            "spot interruptions",
            col(&|p| p.metrics.spot_interruptions.to_string()),
        ),
        (
            "evicted by priority (low/med/high)",
            col(&|p| {
                let e = &p.metrics.evicted_by_priority;
                let g = |k: &str| e.get(k).copied().unwrap_or(0);
                format!("{}/{}/{}", g("low"), g("medium"), g("high"))
            }),
        ),
        (
            "killed at reclaim",
            col(&|p| p.metrics.killed_at_reclaim.to_string()),
        ),
        (
            "GPU-hours lost (interruptions)",
            col(&|p| {
                format!(
                    "{:.1} ({})",
                    p.metrics.lost_gpu_hours_interruption,
                    pct(p.metrics.lost_fraction)
                )
            }),
        ),
        (
            "GPU-hours lost (scale-down restarts)",
            col(&|p| format!("{:.1}", p.metrics.lost_gpu_hours_scale_down)),
        ),
        (
            "service pods restarted (no work lost)",
            col(&|p| p.metrics.service_restarts.to_string()),
        ),
        (
            "peak nodes (reserved/on-demand/spot)",
            col(&|p| {
                let n = &p.metrics.peak_nodes;
                let g = |k: &str| n.get(k).copied().unwrap_or(0);
                format!("{}/{}/{}", g("reserved"), g("on-demand"), g("spot"))
            }),
        ),
        (
            "spot share (node-hours)",
            col(&|p| pct(p.metrics.spot_share_node_hours)),
        ),
    ]
}

/// The terminal table.
pub fn table(report: &Report) -> String {
    let mut header = vec!["".to_string()];
    header.extend(report.results.iter().map(|r| r.name.clone()));
    let mut lines: Vec<Vec<String>> = vec![header];
    for (label, vals) in rows(report) {
        let mut l = vec![label.to_string()];
        l.extend(vals);
        lines.push(l);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        for (c, cell) in l.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            if c == 0 {
                let _ = write!(out, "{cell}{}", " ".repeat(pad));
            } else {
                let _ = write!(out, "  {}{cell}", " ".repeat(pad));
            }
        }
        out.push('\n');
        if i == 0 {
            out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
            out.push('\n');
        }
    }
    if let Some(g) = &report.goal {
        let _ = writeln!(
            out,
            "\ngoal: cost {} vs reactive on-demand (target ≥50% lower: {}), p95 wait {} vs {} (no worse: {}), lost {} (<1%: {})",
            change(g.cost_reduction_vs_reactive),
            yes(g.cost_goal_met),
            dur(g.p95_wait_s),
            dur(g.reactive_p95_wait_s),
            yes(g.wait_goal_met),
            pct(g.lost_fraction),
            yes(g.lost_goal_met)
        );
    }
    out
}

/// "31.7% lower" / "15.2% higher".
fn change(reduction: f64) -> String {
    if reduction >= 0.0 {
        format!("{} lower", pct(reduction))
    } else {
        format!("{} higher", pct(-reduction))
    }
}

fn yes(b: bool) -> &'static str {
    if b { "met" } else { "NOT met" }
}

/// Writes `report.json` and `report.html` into `dir`.
pub fn write(report: &Report, dir: &Path) -> Result<(), SimError> {
    let err = |p: &Path, e: &dyn std::fmt::Display| SimError::Output {
        path: p.display().to_string(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| err(dir, &e))?;
    let json = serde_json::to_string_pretty(report).map_err(|e| err(dir, &e))?;
    let jp = dir.join("report.json");
    std::fs::write(&jp, json).map_err(|e| err(&jp, &e))?;
    let hp = dir.join("report.html");
    std::fs::write(&hp, html(report)).map_err(|e| err(&hp, &e))?;
    Ok(())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// At most `max` evenly spaced samples, keeping the last.
fn thin(series: &[Sample], max: usize) -> Vec<&Sample> {
    if series.len() <= max {
        return series.iter().collect();
    }
    let step = series.len().div_ceil(max);
    let mut v: Vec<&Sample> = series.iter().step_by(step).collect();
    if let Some(last) = series.last()
        && v.last().is_none_or(|l| l.t != last.t)
    {
        v.push(last);
    }
    v
}

struct Frame {
    w: f64,
    h: f64,
    left: f64,
    bottom: f64,
    x0: f64,
    x1: f64,
    y1: f64,
}

impl Frame {
    fn x(&self, t: f64) -> f64 {
        self.left + (t - self.x0) / (self.x1 - self.x0).max(1e-9) * (self.w - self.left - 10.0)
    }
    fn y(&self, v: f64) -> f64 {
        let top = 10.0;
        (self.h - self.bottom) - v / self.y1.max(1e-9) * (self.h - self.bottom - top)
    }
    fn axes(&self, out: &mut String, y_label: &str, fmt_y: &dyn Fn(f64) -> String) {
        let (l, b) = (self.left, self.h - self.bottom);
        let _ = write!(
            out,
            r##"<line x1="{l}" y1="10" x2="{l}" y2="{b}" stroke="#444"/><line x1="{l}" y1="{b}" x2="{}" y2="{b}" stroke="#444"/>"##,
            self.w - 10.0
        );
        for i in 0..=4 {
            let v = self.y1 * f64::from(i) / 4.0;
            let y = self.y(v);
            let _ = write!(
                out,
                r##"<line x1="{l}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
                self.w - 10.0,
                l - 4.0,
                y + 4.0,
                esc(&fmt_y(v))
            );
        }
        for i in 0..=6 {
            let t = self.x0 + (self.x1 - self.x0) * f64::from(i) / 6.0;
            let anchor = if i == 6 { "end" } else { "middle" };
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="{anchor}">day {:.0}</text>"##,
                self.x(t),
                b + 15.0,
                t / 86400.0
            );
        }
        let _ = write!(
            out,
            r##"<text x="12" y="{:.1}" font-size="11" transform="rotate(-90 12 {:.1})" text-anchor="middle">{}</text>"##,
            (self.h - self.bottom) / 2.0,
            (self.h - self.bottom) / 2.0,
            esc(y_label)
        );
    }
}

fn fleet_chart(r: &PolicyResult, y1: f64, x0: f64, x1: f64) -> String {
    let f = Frame {
        w: 1100.0,
        h: 230.0,
        left: 60.0,
        bottom: 25.0,
        x0,
        x1,
        y1,
    };
    let pts = thin(&r.series, 1500);
    let mut out = format!(
        r#"<svg class="chart fleet" xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" role="img" aria-label="fleet vs demand, {}">"#,
        f.w,
        f.h,
        esc(&r.name)
    );
    f.axes(&mut out, "GPUs", &|v| format!("{v:.0}"));
    // Stacked step areas: reserved at the bottom, then on-demand, then spot.
    let layers = [
        ("reserved", RESERVED),
        ("on-demand", ON_DEMAND),
        ("spot", SPOT),
    ];
    let mut base: Vec<f64> = vec![0.0; pts.len()];
    for (ct, color) in layers {
        let top: Vec<f64> = pts
            .iter()
            .zip(&base)
            .map(|(s, b)| b + s.gauges.gpus.get(ct).copied().unwrap_or(0) as f64)
            .collect();
        if top.iter().zip(&base).all(|(t, b)| t == b) {
            continue;
        }
        let mut d = String::new();
        for (i, s) in pts.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1} ",
                if i == 0 { "M" } else { "L" },
                f.x(s.t as f64),
                f.y(top[i])
            );
        }
        for (i, s) in pts.iter().enumerate().rev() {
            let _ = write!(d, "L{:.1},{:.1} ", f.x(s.t as f64), f.y(base[i]));
        }
        let _ = write!(
            out,
            r#"<path d="{d}Z" fill="{color}" fill-opacity="0.85" stroke="none"><title>{ct}</title></path>"#
        );
        base = top;
    }
    let mut d = String::new();
    for (i, s) in pts.iter().enumerate() {
        let v = (s.gauges.allocated_gpus + s.gauges.pending_gpus) as f64;
        let _ = write!(
            d,
            "{}{:.1},{:.1} ",
            if i == 0 { "M" } else { "L" },
            f.x(s.t as f64),
            f.y(v)
        );
    }
    let _ = write!(
        out,
        r##"<path d="{d}" fill="none" stroke="#000" stroke-width="1.2"><title>demand (GPUs requested)</title></path>"##
    );
    out.push_str("</svg>");
    out
}

fn cost_chart(report: &Report, x0: f64, x1: f64) -> String {
    let y1 = report
        .results
        .iter()
        .flat_map(|r| r.series.iter().map(|s| s.gauges.cost))
        .fold(0.0, f64::max)
        * 1.05;
    let f = Frame {
        w: 1100.0,
        h: 300.0,
        left: 70.0,
        bottom: 25.0,
        x0,
        x1,
        y1,
    };
    let mut out = format!(
        r#"<svg class="chart cost" xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" role="img" aria-label="cumulative cost">"#,
        f.w, f.h
    );
    f.axes(&mut out, "cumulative cost (USD)", &money);
    for (i, r) in report.results.iter().enumerate() {
        let mut d = String::new();
        for (j, s) in thin(&r.series, 1500).iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1} ",
                if j == 0 { "M" } else { "L" },
                f.x(s.t as f64),
                f.y(s.gauges.cost)
            );
        }
        let _ = write!(
            out,
            r#"<path d="{d}" fill="none" stroke="{}" stroke-width="2.5"><title>{}</title></path>"#,
            POLICY_COLORS[i % 3],
            esc(&r.name)
        );
    }
    out.push_str("</svg>");
    out
}

/// Total cost per policy as horizontal bars: the answer at a glance.
fn totals_chart(report: &Report) -> String {
    let max = report
        .results
        .iter()
        .map(|r| r.metrics.total_cost_usd)
        .fold(0.0, f64::max)
        .max(1e-9);
    let (w, bar_h, gap, left) = (1100.0, 26.0, 10.0, 170.0);
    let h = report.results.len() as f64 * (bar_h + gap) + gap;
    let mut out = format!(
        r#"<svg class="chart totals" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="total cost per policy">"#
    );
    for (i, r) in report.results.iter().enumerate() {
        let y = gap + i as f64 * (bar_h + gap);
        let bw = (w - left - 280.0) * r.metrics.total_cost_usd / max;
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="13" text-anchor="end">{}</text><rect x="{left}" y="{y:.1}" width="{:.1}" height="{bar_h}" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="13">{} · {}/served GPU-h</text>"#,
            left - 8.0,
            y + bar_h * 0.7,
            esc(&r.name),
            bw.max(1.0),
            POLICY_COLORS[i % 3],
            left + bw + 8.0,
            y + bar_h * 0.7,
            money(r.metrics.total_cost_usd),
            money(r.metrics.cost_per_served_gpu_hour)
        );
    }
    out.push_str("</svg>");
    out
}

fn wait_chart(report: &Report) -> String {
    let Some(first) = report.results.first() else {
        return String::new();
    };
    let buckets: Vec<&String> = first.wait_histogram.iter().map(|(l, _)| l).collect();
    let shares: Vec<Vec<f64>> = report
        .results
        .iter()
        .map(|r| {
            let total = r
                .wait_histogram
                .iter()
                .map(|(_, c)| *c)
                .sum::<usize>()
                .max(1) as f64;
            r.wait_histogram
                .iter()
                .map(|(_, c)| *c as f64 / total)
                .collect()
        })
        .collect();
    let (w, h, left, bottom) = (1100.0, 260.0, 60.0, 30.0);
    let y1 = 1.0;
    let plot_h = h - bottom - 10.0;
    let group_w = (w - left - 10.0) / buckets.len() as f64;
    let bar_w = group_w * 0.8 / report.results.len().max(1) as f64;
    let mut out = format!(
        r#"<svg class="chart waits" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="waiting time distribution">"#
    );
    for i in 0..=4 {
        let v = y1 * f64::from(i) / 4.0;
        let y = h - bottom - v * plot_h;
        let _ = write!(
            out,
            r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{:.0}%</text>"##,
            w - 10.0,
            left - 4.0,
            y + 4.0,
            v * 100.0
        );
    }
    for (b, label) in buckets.iter().enumerate() {
        let gx = left + group_w * b as f64 + group_w * 0.1;
        for (p, s) in shares.iter().enumerate() {
            let v = s.get(b).copied().unwrap_or(0.0);
            let bh = v * plot_h;
            let _ = write!(
                out,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {:.1}%</title></rect>"#,
                gx + bar_w * p as f64,
                h - bottom - bh,
                bar_w,
                bh.max(0.5),
                POLICY_COLORS[p % 3],
                esc(&report.results[p].name),
                v * 100.0
            );
        }
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
            left + group_w * (b as f64 + 0.5),
            h - bottom + 18.0,
            esc(label)
        );
    }
    let _ = write!(
        out,
        r##"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#444"/>"##,
        h - bottom,
        w - 10.0,
        h - bottom
    );
    out.push_str("</svg>");
    out
}

fn legend(items: &[(&str, &str)]) -> String {
    let mut s = String::from(r#"<div class="legend">"#);
    for (label, color) in items {
        let _ = write!(
            s,
            r#"<span><i style="background:{color}"></i>{}</span>"#,
            esc(label)
        );
    }
    s.push_str("</div>");
    s
}

/// The self-contained HTML report.
pub fn html(report: &Report) -> String {
    let x0 = report.window_start_s as f64;
    let x1 = report.window_end_s as f64;
    let y1 = report
        .results
        .iter()
        .flat_map(|r| {
            r.series.iter().map(|s| {
                let fleet: u64 = s.gauges.gpus.values().sum();
                fleet.max(s.gauges.allocated_gpus + s.gauges.pending_gpus) as f64
            })
        })
        .fold(1.0, f64::max)
        * 1.05;
    let mut out = String::from(
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>gpu-autoscaler simulate report</title><style>
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;background:#fff;max-width:1140px}
h1{font-size:22px;margin:0 0 6px}h2{font-size:17px;margin:26px 0 6px}h3{font-size:14px;margin:12px 0 2px}
.headline{font-size:18px;padding:12px 16px;border-radius:8px;background:#eef6ee;border:1px solid #b7dcb7;margin:12px 0}
.headline.miss{background:#fff4e5;border-color:#f0c27b}
table{border-collapse:collapse;font-size:13px;margin-top:8px}td,th{border-bottom:1px solid #e3e3e3;padding:4px 10px;text-align:right}
td:first-child,th:first-child{text-align:left}.legend span{margin-right:16px;font-size:13px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:5px;vertical-align:-1px;border-radius:2px}
.note{color:#555;font-size:12px}svg{display:block}
</style></head><body>"#,
    );
    out.push_str("<h1>gpu-autoscaler simulate</h1>");
    let _ = write!(
        out,
        r#"<div class="note">Trace: {} ({} GPU pods over {:.1} days) · cloud {} {} · policy {} · seed {}</div>"#,
        esc(&report.trace.source),
        report.trace.gpu_pods,
        report.trace.span_days,
        report.config.cloud,
        esc(&report.config.region),
        esc(&report.config.policy_source),
        report.config.seed
    );
    if let Some(g) = &report.goal {
        let all = g.cost_goal_met && g.wait_goal_met && g.lost_goal_met;
        let _ = write!(
            out,
            r#"<div class="headline{}"><b>gpu-autoscaler costs {} than reactive on-demand</b> (goal ≥50% lower: {}) · p95 wait {} vs {} ({}) · {} of GPU-hours lost to interruptions (goal &lt;1%: {})</div>"#,
            if all { "" } else { " miss" },
            change(g.cost_reduction_vs_reactive),
            yes(g.cost_goal_met),
            dur(g.p95_wait_s),
            dur(g.reactive_p95_wait_s),
            if g.wait_goal_met { "no worse" } else { "worse" },
            pct(g.lost_fraction),
            yes(g.lost_goal_met)
        );
    }
    let policies: Vec<(&str, &str)> = report
        .results
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), POLICY_COLORS[i % 3]))
        .collect();

    out.push_str("<h2>Total cost</h2>");
    out.push_str(&totals_chart(report));

    out.push_str("<h2>Cumulative cost</h2>");
    out.push_str(&legend(&policies));
    out.push_str(&cost_chart(report, x0, x1));

    out.push_str("<h2>Fleet GPUs by capacity type vs demand</h2>");
    out.push_str(&legend(&[
        ("reserved", RESERVED),
        ("on-demand", ON_DEMAND),
        ("spot", SPOT),
        ("demand (GPUs requested by running + pending pods)", "#000"),
    ]));
    for r in &report.results {
        let _ = write!(out, "<h3>{}</h3>", esc(&r.name));
        out.push_str(&fleet_chart(r, y1, x0, x1));
    }

    out.push_str("<h2>Waiting time distribution (share of pods)</h2>");
    out.push_str(&legend(&policies));
    out.push_str(&wait_chart(report));

    out.push_str("<h2>Figures</h2><table><tr><th></th>");
    for r in &report.results {
        let _ = write!(out, "<th>{}</th>", esc(&r.name));
    }
    out.push_str("</tr>");
    for (label, vals) in rows(report) {
        let _ = write!(out, "<tr><td>{}</td>", esc(label));
        for v in vals {
            let _ = write!(out, "<td>{}</td>", esc(&v));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    let _ = write!(
        out,
        r#"<p class="note">Models: run time = deletion − scheduled time of the trace; never-scheduled pods run deletion − creation; a fractional GPU share takes a whole GPU. Interrupted or moved batch/training pods lose the work since their last checkpoint ({}); latency-sensitive services lose no work but wait again. Spot reclaim drawn per node from the Spot Advisor bucket midpoint, notice {} s. Boot {} s + GPU-ready {} s. Reserved capacity is billed as a commitment (peak reserved nodes × window). Waits include re-waits after interruptions; pods still waiting at the end count with their wait so far. See docs/simulate.md.</p>"#,
        report.config.checkpoint_s.map_or(
            "no checkpoints: all work of the run".to_string(),
            |c| format!("every {c} s")
        ),
        report.config.notice_s,
        report.config.boot_s,
        report.config.gpu_ready_s
    );
    out.push_str("</body></html>\n");
    out
}
