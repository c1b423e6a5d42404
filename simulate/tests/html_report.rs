//! The HTML report has its charts and renders to a non-blank page in headless Chromium.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use gpu_autoscaler_simulate::{report, run_all};

fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for name in [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// (distinct colours, share of non-white pixels) of a PNG.
fn png_stats(path: &Path) -> (usize, f64) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bytes = &buf[..info.buffer_size()];
    let px = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => panic!("unexpected colour type {other:?}"),
    };
    let mut colours = std::collections::HashSet::new();
    let mut non_white = 0usize;
    let n = bytes.len() / px;
    for c in bytes.chunks_exact(px) {
        colours.insert((c[0], c[1], c[2]));
        if c[0] < 245 || c[1] < 245 || c[2] < 245 {
            non_white += 1;
        }
    }
    (colours.len(), non_white as f64 / n.max(1) as f64)
}

#[test]
fn html_report_has_the_charts_and_renders_in_headless_chromium() {
    let trace = bundled_slice(122.0, 122.3);
    let mut cfg = aws_config();
    cfg.settle_s = 1800;
    cfg.sample_s = 300;
    let rep = run_all(&trace, &cfg, &mut |_: &str, _: f64, _: i64| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    report::write(&rep, dir.path()).unwrap();
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert_eq!(
        html.matches(r#"class="chart fleet""#).count(),
        3,
        "one fleet chart per policy"
    );
    assert_eq!(html.matches(r#"class="chart cost""#).count(), 1);
    assert_eq!(html.matches(r#"class="chart totals""#).count(), 1);
    assert_eq!(html.matches(r#"class="chart waits""#).count(), 1);
    assert!(
        html.contains("gpu-autoscaler costs")
            && html.contains("reactive-on-demand")
            && html.contains("static-peak")
    );
    assert!(
        !html.contains("<script") && !html.contains("http://")
            || html.contains("http://www.w3.org/2000/svg")
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["results"].as_array().map(Vec::len), Some(3));

    let Some(chromium) = find_chromium() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "chromium is not installed (apt-get install -y chromium); CI=true requires the render check"
            );
        }
        eprintln!("SKIPPED render check: chromium not found (set CI=true to make this a failure)");
        return;
    };
    let profile = tempfile::tempdir().unwrap();
    let shot = dir.path().join("out.png");
    let url = format!("file://{}", dir.path().join("report.html").display());
    let out = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,2000",
            &url,
        ])
        .output()
        .unwrap();
    assert!(
        shot.is_file(),
        "no screenshot; chromium said: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (colours, non_white) = png_stats(&shot);
    assert!(colours >= 20, "only {colours} colours: blank page?");
    assert!(
        non_white >= 0.03,
        "only {:.1}% non-white pixels: blank page?",
        non_white * 100.0
    );
}
