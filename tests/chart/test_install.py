"""Install, upgrade and uninstall the chart with the Helm v4 engine against a real
kube-apiserver (1.20, started by tests/tests/chart_e2e.rs).

The test cluster runs no kubelet and no controller-manager, so nothing would ever run the
cert hook Jobs. A background thread plays the Job controller for exactly those Jobs: it runs the
Job's own command (`gpu-autoscaler certs ...`, from the rendered Job) locally, acting as the
Job's ServiceAccount through impersonation so the chart's RBAC is what lets it work, and then
marks the Job Complete or Failed for Helm to see. The webhook itself runs locally too, reached
through `webhook.url`.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import helm_python as helm
import pytest
import yaml

from conftest import CHART, Kube

RELEASE = "gpu-autoscaler"
NS = "gpu-autoscaler-e2e"
HELM_TIMEOUT = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check, timeout: float = 30.0, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class HookJobRunner(threading.Thread):
    """Runs the chart's cert hook Jobs locally and reports their outcome on the Job status."""

    def __init__(self, kube: Kube, binary: str):
        super().__init__(daemon=True)
        self.kube, self.binary = kube, binary
        self.stop = threading.Event()
        self.done: dict[str, int] = {}  # Job uid -> exit code
        self.logs: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            code, body = self.kube.request("GET", f"/apis/batch/v1/namespaces/{NS}/jobs")
            if code == 200:
                for job in body["items"]:
                    uid = job["metadata"]["uid"]
                    if uid not in self.done and job["metadata"]["name"].startswith(f"{RELEASE}-certs-"):
                        self.done[uid] = self.execute(job)
            time.sleep(0.2)

    def execute(self, job: dict[str, Any]) -> int:
        pod = job["spec"]["template"]["spec"]
        account = f"system:serviceaccount:{NS}:{pod['serviceAccountName']}"
        kubeconfig = self.kube.impersonating_kubeconfig(account)
        args = pod["containers"][0]["args"]
        try:
            proc = subprocess.run([self.binary, *args], env={**os.environ, "KUBECONFIG": kubeconfig},
                                  capture_output=True, text=True, timeout=60)
            rc, output = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            rc, output = 124, str(e)
        finally:
            os.unlink(kubeconfig)
        self.logs.append(f"$ gpu-autoscaler {' '.join(args)}\n(rc={rc})\n{output}")
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        condition = "Complete" if rc == 0 else "Failed"
        status = {"startTime": now, "conditions": [{
            "type": condition, "status": "True", "lastProbeTime": now, "lastTransitionTime": now,
            "reason": "LocalRun", "message": f"gpu-autoscaler certs exited {rc}"}]}
        if rc == 0:
            status.update(succeeded=1, completionTime=now)
        else:
            status.update(failed=1)
        code, body = self.kube.request(
            "PATCH", f"/apis/batch/v1/namespaces/{NS}/jobs/{job['metadata']['name']}/status",
            {"status": status}, content_type="application/merge-patch+json")
        assert code == 200, f"marking the Job {condition}: {code} {body}"
        return rc


@pytest.fixture(scope="module")
def env(kube: Kube, kubeconfig: str, binary: str) -> Iterator[dict[str, Any]]:
    runner = HookJobRunner(kube, binary)
    runner.start()
    port = free_port()
    cfg = helm.Config(kubeconfig_path=kubeconfig, namespace=NS)
    state: dict[str, Any] = {"runner": runner, "port": port, "helm": cfg,
                             "values": {
                                 "autoscaling": {"provider": "kube",
                                                 "nodePools": [{"name": "spot-pool", "maxSize": 4,
                                                                "instanceTypes": ["p3.2xlarge"],
                                                                "capacityType": "spot"}]},
                                 "webhook": {"url": f"https://127.0.0.1:{port}/mutate"},
                                 "metrics": {"serviceMonitor": {"enabled": False}},
                             }}
    yield state
    runner.stop.set()
    proc = state.get("webhook_proc")
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=10)


def cluster_scoped_objects(kube: Kube) -> set[str]:
    """Cluster-scoped objects a release could own, by kind/name."""
    found = set()
    for path, kind in (("/apis/rbac.authorization.k8s.io/v1/clusterroles", "ClusterRole"),
                       ("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", "ClusterRoleBinding"),
                       ("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
                        "MutatingWebhookConfiguration"),
                       ("/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
                        "ValidatingWebhookConfiguration"),
                       ("/apis/gpu-autoscaler.io/v1alpha1/autoscalingpolicies", "AutoscalingPolicy"),
                       ("/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                        "CustomResourceDefinition")):
        code, body = kube.request("GET", path)
        if code != 200:
            continue
        for item in body["items"]:
            meta = item["metadata"]
            if meta["name"].startswith(RELEASE) or meta["name"].endswith("gpu-autoscaler.io"):
                found.add(f"{kind}/{meta['name']}")
    return found


def release_status(release: dict[str, Any]) -> str:
    """The release's status; the SDK answers with Helm's release (info.status) or a summary."""
    info = release.get("info") or release.get("release", {}).get("info") or {}
    return info.get("status") or release.get("status") or f"unknown: {sorted(release)}"


def release_manifest_docs(release: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(release["manifest"]) if d]


def test_1_install_accepts_every_object(env: dict[str, Any], kube: Kube) -> None:
    env["before"] = cluster_scoped_objects(kube)
    try:
        release = env["helm"].install(str(CHART), RELEASE, env["values"], namespace=NS,
                                      create_namespace=True, timeout=HELM_TIMEOUT)
    except helm.HelmError as e:
        raise AssertionError(f"install failed: {e}\n" + "\n".join(env["runner"].logs)) from e
    assert release_status(release) == "deployed", {k: v for k, v in release.items() if k != "manifest"}
    docs = release_manifest_docs(release)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "DaemonSet", "Service", "ClusterRole", "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration", "AutoscalingPolicy", "PodDisruptionBudget"} <= kinds
    # Every object of the manifest exists in the apiserver.
    for d in docs:
        assert object_exists(kube, d), f"{d['kind']} {d['metadata']['name']} missing after install"
    # Kubernetes 1.20 has no policy/v1: the PDB version follows the cluster.
    pdb = [d for d in docs if d["kind"] == "PodDisruptionBudget"][0]
    assert pdb["apiVersion"] == "policy/v1beta1"
    sched_cfg = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-scheduler")][0]
    assert yaml.safe_load(sched_cfg["data"]["config.yaml"])["apiVersion"] == \
        "kubescheduler.config.k8s.io/v1beta1"
    # Both hook Jobs ran (pre and post) and succeeded.
    assert sorted(env["runner"].done.values()) == [0, 0], "\n".join(env["runner"].logs)
    env["release"] = release


def object_exists(kube: Kube, d: dict[str, Any]) -> bool:
    group_version = d["apiVersion"]
    base = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
    plural = {"PodDisruptionBudget": "poddisruptionbudgets", "ServiceAccount": "serviceaccounts",
              "ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings",
              "Role": "roles", "RoleBinding": "rolebindings", "ConfigMap": "configmaps",
              "Service": "services", "Deployment": "deployments", "DaemonSet": "daemonsets",
              "MutatingWebhookConfiguration": "mutatingwebhookconfigurations",
              "ValidatingWebhookConfiguration": "validatingwebhookconfigurations",
              "AutoscalingPolicy": "autoscalingpolicies"}[d["kind"]]
    namespace = d["metadata"].get("namespace")
    path = f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"
    return kube.exists(f"{path}/{d['metadata']['name']}")


def test_2_crds_are_established(env: dict[str, Any], kube: Kube) -> None:
    crd = kube.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                   "autoscalingpolicies.gpu-autoscaler.io")
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions.get("Established") == "True", conditions
    policy = kube.get(f"/apis/gpu-autoscaler.io/v1alpha1/autoscalingpolicies/{RELEASE}")
    assert policy["spec"]["scaleUpCooldownSeconds"] == 180
    assert policy["spec"]["nodePools"][0]["name"] == "spot-pool"


def test_3_cert_hooks_filled_ca_bundle(env: dict[str, Any], kube: Kube) -> None:
    secret = kube.get(f"/api/v1/namespaces/{NS}/secrets/{RELEASE}-webhook-tls")
    assert secret["type"] == "kubernetes.io/tls"
    ca = secret["data"]["ca.crt"]
    for kind in ("mutating", "validating"):
        cfg = kube.get(f"/apis/admissionregistration.k8s.io/v1/{kind}webhookconfigurations/{RELEASE}-{kind}")
        (hook,) = cfg["webhooks"]
        assert hook["clientConfig"]["caBundle"] == ca, f"{kind}: caBundle not the Secret's CA"
        assert hook["clientConfig"]["url"].startswith(f"https://127.0.0.1:{env['port']}/")
        assert hook["failurePolicy"] == "Ignore" and hook["timeoutSeconds"] == 3
        assert hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1", "v1beta1"]
    # The hook's ServiceAccount and RBAC are gone once the hooks succeeded.
    assert not kube.exists(f"/api/v1/namespaces/{NS}/serviceaccounts/{RELEASE}-certs")
    assert not kube.exists(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{RELEASE}-certs")
    assert not kube.exists(f"/apis/batch/v1/namespaces/{NS}/jobs/{RELEASE}-certs-post")
    env["tls"] = {k: base64.b64decode(v) for k, v in secret["data"].items()}


def test_4_gpu_pod_is_mutated_by_the_local_webhook(env: dict[str, Any], kube: Kube,
                                                   binary: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="chart-webhook-"))
    for name in ("tls.crt", "tls.key"):
        (work / name).write_bytes(env["tls"][name])
    (work / "tls.key").chmod(0o600)
    # The webhook's configuration exactly as the chart renders it.
    cm = kube.get(f"/api/v1/namespaces/{NS}/configmaps/{RELEASE}-webhook")
    (work / "webhook.yaml").write_text(cm["data"]["webhook.yaml"])
    probe = free_port()
    proc = subprocess.Popen([binary, "webhook", f"--listen=127.0.0.1:{env['port']}",
                             f"--tls-cert={work / 'tls.crt'}", f"--tls-key={work / 'tls.key'}",
                             f"--config={work / 'webhook.yaml'}", f"--probe-listen=127.0.0.1:{probe}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env["webhook_proc"] = proc

    def ready() -> bool:
        try:
            import urllib.request
            with urllib.request.urlopen(f"http://127.0.0.1:{probe}/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False
    wait_for("webhook /readyz", ready)

    code, _ = kube.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                         "metadata": {"name": "team-a"}})
    assert code in (201, 409)

    def gpu_pod(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": labels or {"gpu-autoscaler.io/workload-type": "batch"}},
                "spec": {"containers": [{"name": "c", "image": "cuda:12",
                                         "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}

    code, pod = kube.request("POST", "/api/v1/namespaces/team-a/pods", gpu_pod("train"))
    assert code == 201, pod
    annotations = pod["metadata"].get("annotations", {})
    assert annotations.get("gpu-autoscaler.io/eviction-priority") == "low", pod["metadata"]
    assert annotations.get("gpu-autoscaler.io/tier-preference") == "spot,on-demand"
    assert {"key": "gpu-autoscaler.io/capacity-type", "operator": "Equal", "value": "spot",
            "effect": "NoSchedule"} in pod["spec"]["tolerations"]
    assert pod["spec"]["schedulerName"] == "gpu-autoscaler"
    # The opt-out label and the release namespace are left alone.
    code, pod = kube.request("POST", "/api/v1/namespaces/team-a/pods",
                             gpu_pod("opted-out", {"gpu-autoscaler.io/ignore": "true"}))
    assert code == 201 and "gpu-autoscaler.io/eviction-priority" not in pod["metadata"].get("annotations", {})
    code, pod = kube.request("POST", f"/api/v1/namespaces/{NS}/pods", gpu_pod("own"))
    assert code == 201 and "gpu-autoscaler.io/eviction-priority" not in pod["metadata"].get("annotations", {})
    # The validating webhook rejects a policy that the schema alone would accept.
    code, body = kube.request("POST", "/apis/gpu-autoscaler.io/v1alpha1/autoscalingpolicies", {
        "apiVersion": "gpu-autoscaler.io/v1alpha1", "kind": "AutoscalingPolicy",
        "metadata": {"name": "inverted"}, "spec": {"minNodes": 5, "maxNodes": 3}})
    assert code == 422 and "spec.minNodes" in json.dumps(body), (code, body)


def test_5_upgrade_keeps_ca_bundle_and_updates_policy(env: dict[str, Any], kube: Kube) -> None:
    before = kube.get(f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{RELEASE}-mutating")
    values = json.loads(json.dumps(env["values"]))
    values["autoscaling"]["scaleUp"] = {"threshold": 0.7, "cooldown": "5m"}
    values["scaler"] = {"replicas": 3}
    try:
        release = env["helm"].upgrade(str(CHART), RELEASE, values, namespace=NS, timeout=HELM_TIMEOUT)
    except helm.HelmError as e:
        raise AssertionError(f"upgrade failed: {e}\n" + "\n".join(env["runner"].logs)) from e
    assert release_status(release) == "deployed", {k: v for k, v in release.items() if k != "manifest"}
    assert len(env["runner"].done) == 4 and set(env["runner"].done.values()) == {0}
    after = kube.get(f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{RELEASE}-mutating")
    assert after["webhooks"][0]["clientConfig"]["caBundle"] == \
        before["webhooks"][0]["clientConfig"]["caBundle"], "the CA must survive an upgrade"
    policy = kube.get(f"/apis/gpu-autoscaler.io/v1alpha1/autoscalingpolicies/{RELEASE}")
    assert policy["spec"]["scaleUpThreshold"] == 0.7
    assert policy["spec"]["scaleUpCooldownSeconds"] == 300
    scaler = kube.get(f"/apis/apps/v1/namespaces/{NS}/deployments/{RELEASE}-scaler")
    assert scaler["spec"]["replicas"] == 3
    # A GPU pod is still mutated after the upgrade.
    code, pod = kube.request("POST", "/api/v1/namespaces/team-a/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "after-upgrade"},
        "spec": {"containers": [{"name": "c", "image": "cuda:12",
                                 "resources": {"limits": {"nvidia.com/gpu": "2"}}}]}})
    assert code == 201 and "gpu-autoscaler.io/eviction-priority" in pod["metadata"]["annotations"]


def test_6_uninstall_leaves_only_the_crds(env: dict[str, Any], kube: Kube) -> None:
    env["helm"].uninstall(RELEASE, timeout=HELM_TIMEOUT)
    left = cluster_scoped_objects(kube) - env["before"]
    assert left == {"CustomResourceDefinition/autoscalingpolicies.gpu-autoscaler.io"}, left
    code, body = kube.request("GET", f"/api/v1/namespaces/{NS}/serviceaccounts")
    assert code == 200
    ours = [i["metadata"]["name"] for i in body["items"] if i["metadata"]["name"].startswith(RELEASE)]
    assert ours == [], ours
    code, body = kube.request("GET", "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/rolebindings")
    assert not [i for i in body["items"] if i["metadata"]["name"].startswith(RELEASE)]
