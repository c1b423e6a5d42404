"""The Grafana dashboard may only query metrics that our components register."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import CHART, REPO

DASHBOARD = CHART / "files" / "grafana-dashboard.json"
CRATES = ["agent", "api", "extender", "predictor", "scaler", "webhook", "cli", "certs"]

# prometheus-client registers a name and the text encoder derives the exposed series.
SUFFIXES = ("", "_total", "_bucket", "_sum", "_count", "_created")
REGISTER = re.compile(r'\.register(?:_with_unit)?\(\s*"([A-Za-z_:][A-Za-z0-9_:]*)"', re.S)
# A metric name in PromQL: an identifier not followed by "(" (a function) and not a label,
# keyword, or range/duration.
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
PROMQL_WORDS = {
    "sum", "avg", "max", "min", "count", "rate", "increase", "irate", "by", "without", "on",
    "ignoring", "group_left", "group_right", "histogram_quantile", "le", "and", "or", "unless",
    "offset", "bool", "topk", "bottomk", "abs", "clamp_min", "clamp_max", "delta", "deriv",
    "time", "vector", "scalar", "label_replace", "avg_over_time", "max_over_time",
}


def registered_metrics() -> set[str]:
    names: set[str] = set()
    for crate in CRATES:
        for path in (REPO / crate / "src").rglob("*.rs"):
            names.update(REGISTER.findall(path.read_text()))
    return names


def exposed_series(names: set[str]) -> set[str]:
    return {n + s for n in names for s in SUFFIXES}


def metric_names(expr: str) -> set[str]:
    """Metric names of a PromQL expression (labels, functions and keywords stripped)."""
    stripped = re.sub(r"\{[^}]*\}", "", expr)          # label matchers
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)      # ranges, $__rate_interval
    stripped = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", stripped)
    stripped = re.sub(r"\$\w+", "", stripped)           # Grafana variables
    found = set()
    for m in IDENT.finditer(stripped):
        word = m.group(0)
        rest = stripped[m.end():].lstrip()
        if word in PROMQL_WORDS or rest.startswith("("):
            continue
        found.add(word)
    return found


def dashboard_expressions() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def test_registry_scan_finds_the_reference_metrics() -> None:
    names = exposed_series(registered_metrics())
    for reference in ("gpu_autoscaler_scaling_actions_total", "gpu_autoscaler_node_count",
                      "gpu_autoscaler_desired_node_count", "gpu_autoscaler_cluster_utilization",
                      "gpu_autoscaler_spot_interruptions_total",
                      "gpu_autoscaler_estimated_monthly_cost_usd",
                      "gpu_autoscaler_predicted_utilization", "DCGM_FI_DEV_GPU_UTIL"):
        assert reference in names, f"{reference} is not registered anywhere"


def test_every_dashboard_metric_is_exported() -> None:
    exported = exposed_series(registered_metrics())
    exprs = dashboard_expressions()
    assert len(exprs) >= 15
    used = set()
    for title, expr in exprs:
        names = metric_names(expr)
        assert names, f"panel {title!r}: no metric in {expr!r}"
        unknown = names - exported
        assert not unknown, f"panel {title!r} queries unexported {sorted(unknown)}: {expr}"
        used |= names
    # Histogram parts only exist for histograms, counters' _total only for counters: check
    # the base name's kind through the suffix actually registered.
    assert any(n.endswith("_bucket") for n in used)


def test_reference_panels_are_present() -> None:
    titles = " | ".join(t for t, _ in dashboard_expressions()).lower()
    for needle in ("current vs desired", "gpu utilization", "spot interruption rate",
                   "cost by capacity type", "scaling action history", "predicted"):
        assert needle in titles, f"no panel for {needle!r}: {titles}"


def test_metric_name_extraction() -> None:
    assert metric_names(
        'sum by (le, direction) (rate(foo_bucket{a="b"}[$__rate_interval])) / bar') == {
            "foo_bucket", "bar"}
    assert metric_names("avg(DCGM_FI_DEV_GPU_UTIL) / 100") == {"DCGM_FI_DEV_GPU_UTIL"}
    assert Path(DASHBOARD).is_file()
