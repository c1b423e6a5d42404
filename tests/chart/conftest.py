"""Shared helpers for the chart tests: rendering with the Helm v4 engine (PyPI helm-python-sdk),
parsing manifests, and a small Kubernetes API client for the install tests.

The install tests need a kube-apiserver: the Rust test tests/tests/chart_e2e.rs starts one
(testkit ControlPlane) and runs pytest with GPU_AUTOSCALER_KUBECONFIG and GPU_AUTOSCALER_BIN set.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "gpu-autoscaler"
RELEASE = "gpu-autoscaler"
NAMESPACE = "gpu-autoscaler-system"


def load_chart() -> helm.Chart:
    return helm.Chart.load(str(CHART))


def render(values: dict[str, Any] | None = None, *, name: str = RELEASE,
           namespace: str = NAMESPACE) -> dict[str, str]:
    """Template path -> rendered text, offline (like `helm template`)."""
    return load_chart().render(values, name=name, namespace=namespace, is_install=True)


def documents(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object of a render, NOTES.txt excluded."""
    docs: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("__template", path)
                docs.append(doc)
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d.get("kind") == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj.get("kind") in ("Deployment", "DaemonSet", "StatefulSet", "Job"):
        return obj["spec"]["template"]["spec"]
    return None


def reference_values(name: str) -> dict[str, Any]:
    return yaml.safe_load((Path(__file__).parent / "values" / f"{name}.yaml").read_text())


# --- a minimal Kubernetes client for the install tests ---------------------------------------


class Kube:
    """Bearer-token client built from the harness kubeconfig; enough for get/list/create/patch."""

    def __init__(self, kubeconfig: str):
        cfg = yaml.safe_load(Path(kubeconfig).read_text())
        cluster = cfg["clusters"][0]["cluster"]
        user = cfg["users"][0]["user"]
        self.server = cluster["server"].rstrip("/")
        self.token = user.get("token")
        self.ctx = ssl.create_default_context()
        if "certificate-authority-data" in cluster:
            self.ctx.load_verify_locations(
                cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        elif "certificate-authority" in cluster:
            self.ctx.load_verify_locations(cafile=cluster["certificate-authority"])
        self.kubeconfig = kubeconfig
        self.raw = cfg

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json") -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as resp:
                payload = resp.read()
                return resp.status, json.loads(payload) if payload else None
        except urllib.error.HTTPError as e:
            payload = e.read()
            try:
                return e.code, json.loads(payload)
            except ValueError:
                return e.code, payload.decode(errors="replace")

    def get(self, path: str) -> Any:
        code, body = self.request("GET", path)
        assert code == 200, f"GET {path}: {code} {body}"
        return body

    def exists(self, path: str) -> bool:
        code, _ = self.request("GET", path)
        return code == 200

    def impersonating_kubeconfig(self, user: str) -> str:
        """A kubeconfig acting as `user` (e.g. a ServiceAccount), to exercise the chart's RBAC."""
        cfg = json.loads(json.dumps(self.raw))
        cfg["users"][0]["user"]["as"] = user
        fd, path = tempfile.mkstemp(prefix="kubeconfig-as-", suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(cfg, f)
        return path


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    path = os.environ.get("GPU_AUTOSCALER_KUBECONFIG")
    if not path:
        pytest.skip("GPU_AUTOSCALER_KUBECONFIG not set: install tests run from "
                    "`cargo nextest run -p gpu-autoscaler-testkit --test chart_e2e`")
    return path


@pytest.fixture(scope="session")
def binary() -> str:
    path = os.environ.get("GPU_AUTOSCALER_BIN", str(REPO / "target" / "debug" / "gpu-autoscaler"))
    assert Path(path).is_file(), f"{path} missing: run `cargo build -p gpu-autoscaler` first"
    return path


@pytest.fixture(scope="session")
def kube(kubeconfig: str) -> Kube:
    return Kube(kubeconfig)
