//! Backtest output a person can inspect: CSV files and a hand-written SVG chart (no plotting
//! dependency, so the build stays light).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::backtest::BacktestReport;
use crate::series::minutes_of;

/// Write `series.csv`, `forecasts.csv`, `summary.txt` and `chart.svg` into `dir` (created if
/// missing). Returns the paths written.
pub fn write_all(report: &BacktestReport, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let files = [
        ("series.csv", series_csv(report)),
        ("forecasts.csv", forecasts_csv(report)),
        ("summary.txt", report.to_string()),
        ("chart.svg", svg(report)),
    ];
    let mut out = Vec::new();
    for (name, body) in files {
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path)?;
        f.write_all(body.as_bytes())?;
        out.push(path);
    }
    Ok(out)
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(String::new, |v| format!("{v:.3}"))
}

/// `time,value` of the actuals over the evaluated window (empty value = gap).
pub fn series_csv(report: &BacktestReport) -> String {
    let mut s = String::from("time,value\n");
    for p in &report.points {
        let _ = writeln!(
            s,
            "{},{}",
            p.target.format("%Y-%m-%d %H:%M:%S"),
            num(p.actual)
        );
    }
    s
}

/// One row per target: origin, target, actual, then mean/lower/upper/confidence per method.
pub fn forecasts_csv(report: &BacktestReport) -> String {
    let mut s = String::from("origin,target,actual");
    for m in &report.methods {
        let n = m.name.replace('-', "_");
        let _ = write!(s, ",{n}_mean,{n}_lower,{n}_upper,{n}_confidence");
    }
    s.push('\n');
    for p in &report.points {
        let _ = write!(
            s,
            "{},{},{}",
            p.origin.format("%Y-%m-%d %H:%M:%S"),
            p.target.format("%Y-%m-%d %H:%M:%S"),
            num(p.actual)
        );
        for m in &p.methods {
            let _ = write!(
                s,
                ",{:.3},{:.3},{:.3},{:.3}",
                m.mean, m.lower, m.upper, m.confidence
            );
        }
        s.push('\n');
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// SVG chart: actual demand, the model forecast with its interval band, the seasonal-naive
/// forecast, the pre-warm threshold, and the model confidence in a strip below.
pub fn svg(report: &BacktestReport) -> String {
    const W: f64 = 1400.0;
    const H: f64 = 560.0;
    const L: f64 = 70.0;
    const R: f64 = 20.0;
    const T: f64 = 40.0;
    const PLOT_B: f64 = 400.0;
    const CONF_T: f64 = 440.0;
    const CONF_B: f64 = 520.0;
    let pts = &report.points;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let (Some(first), Some(last)) = (pts.first(), pts.last()) else {
        s.push_str("<text x=\"20\" y=\"40\">no evaluated points</text></svg>\n");
        return s;
    };
    let t0 = minutes_of(first.target) as f64;
    let t1 = (minutes_of(last.target) as f64).max(t0 + 1.0);
    let threshold = report.capacity * report.pre_warm_threshold;
    let mut ymax = threshold;
    for p in pts {
        ymax = ymax.max(p.actual.unwrap_or(0.0));
        if let Some(m) = p.methods.first() {
            ymax = ymax.max(m.upper);
        }
    }
    let ymax = if ymax > 0.0 { ymax * 1.05 } else { 1.0 };
    let x = |t: f64| L + (t - t0) / (t1 - t0) * (W - L - R);
    let y = |v: f64| PLOT_B - v / ymax * (PLOT_B - T);
    let yc = |c: f64| CONF_B - c * (CONF_B - CONF_T);
    let _ = writeln!(
        s,
        r#"<text x="{L}" y="22" font-size="15">{} — horizon {} min, model vs seasonal-naive, {:.0}% interval</text>"#,
        esc(&report.series_name),
        report.horizon_minutes,
        100.0 * report.nominal_coverage
    );
    // Axes and grid.
    for i in 0..=5 {
        let v = ymax * f64::from(i) / 5.0;
        let _ = writeln!(
            s,
            r##"<line x1="{L}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{v:.0}</text>"##,
            W - R,
            y(v),
            y(v),
            L - 6.0,
            y(v) + 4.0
        );
    }
    let day = 1440.0;
    let mut d = (t0 / day).ceil() * day;
    let step = if (t1 - t0) / day > 20.0 {
        7.0 * day
    } else {
        day
    };
    while d <= t1 {
        let label = crate::series::from_minutes(d as i64).format("%m-%d");
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" x2="{:.1}" y1="{T}" y2="{CONF_B}" stroke="#eee"/><text x="{:.1}" y="{}" text-anchor="middle">{label}</text>"##,
            x(d),
            x(d),
            x(d),
            CONF_B + 16.0
        );
        d += step;
    }
    // Interval band: one polygon per run of consecutive points.
    let mut band = String::new();
    let mut upper: Vec<(f64, f64)> = Vec::new();
    let mut lower: Vec<(f64, f64)> = Vec::new();
    let flush = |band: &mut String, upper: &mut Vec<(f64, f64)>, lower: &mut Vec<(f64, f64)>| {
        if upper.len() > 1 {
            band.push_str(r##"<polygon fill="#9ecae1" fill-opacity="0.5" stroke="none" points=""##);
            for (a, b) in upper.iter().chain(lower.iter().rev()) {
                let _ = write!(band, "{a:.1},{b:.1} ");
            }
            band.push_str("\"/>\n");
        }
        upper.clear();
        lower.clear();
    };
    for p in pts {
        if let Some(m) = p.methods.first() {
            let t = x(minutes_of(p.target) as f64);
            upper.push((t, y(m.upper)));
            lower.push((t, y(m.lower)));
        }
    }
    flush(&mut band, &mut upper, &mut lower);
    s.push_str(&band);
    let line = |vals: Vec<Option<f64>>,
                color: &str,
                dash: &str,
                width: f64,
                map: &dyn Fn(f64) -> f64| {
        let mut d = String::new();
        let mut pen = false;
        for (p, v) in pts.iter().zip(vals) {
            match v {
                Some(v) => {
                    let _ = write!(
                        d,
                        "{}{:.1},{:.1} ",
                        if pen { "L" } else { "M" },
                        x(minutes_of(p.target) as f64),
                        map(v)
                    );
                    pen = true;
                }
                None => pen = false,
            }
        }
        format!(
            r#"<path d="{d}" fill="none" stroke="{color}" stroke-width="{width}" stroke-dasharray="{dash}"/>"#
        ) + "\n"
    };
    let series = |k: usize| -> Vec<Option<f64>> {
        pts.iter()
            .map(|p| p.methods.get(k).map(|m| m.mean))
            .collect()
    };
    s.push_str(&line(series(1), "#999", "4 3", 1.0, &y));
    s.push_str(&line(
        pts.iter().map(|p| p.actual).collect(),
        "#000",
        "none",
        1.2,
        &y,
    ));
    s.push_str(&line(series(0), "#08519c", "none", 1.2, &y));
    let _ = writeln!(
        s,
        r##"<line x1="{L}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#d62728" stroke-dasharray="6 4"/>"##,
        W - R,
        y(threshold),
        y(threshold)
    );
    // Confidence strip.
    let _ = writeln!(
        s,
        r##"<rect x="{L}" y="{CONF_T}" width="{}" height="{}" fill="none" stroke="#ccc"/><text x="{}" y="{}" text-anchor="end">conf</text><line x1="{L}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#d62728" stroke-dasharray="3 3"/>"##,
        W - L - R,
        CONF_B - CONF_T,
        L - 6.0,
        CONF_T + 12.0,
        W - R,
        yc(report.confidence_threshold),
        yc(report.confidence_threshold)
    );
    let conf: Vec<Option<f64>> = pts
        .iter()
        .map(|p| p.methods.first().map(|m| m.confidence))
        .collect();
    s.push_str(&line(conf, "#2ca02c", "none", 1.0, &yc));
    // Legend.
    let legend = [
        ("#000", "actual"),
        ("#08519c", "model mean"),
        ("#9ecae1", "model interval"),
        ("#999", "seasonal-naive"),
        ("#d62728", "pre-warm threshold"),
        ("#2ca02c", "model confidence"),
    ];
    for (i, (c, name)) in legend.iter().enumerate() {
        let lx = L + 10.0 + 170.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{}" width="14" height="4" fill="{c}"/><text x="{}" y="{}">{name}</text>"#,
            H - 14.0,
            lx + 18.0,
            H - 9.0
        );
    }
    s.push_str("</svg>\n");
    s
}
