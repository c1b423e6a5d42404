"""Offline checks of the chart: lint, render of the reference examples, schema rejections, and
the security and webhook properties of every rendered object."""

from __future__ import annotations

import json
from typing import Any

import helm_python as helm
import pytest

from conftest import (CHART, NAMESPACE, RELEASE, by_kind, documents, one, pod_spec,
                      reference_values, render)

EXAMPLES = ["aws", "gcp", "azure", "predictive", "cert-manager", "troubleshooting"]


def all_values() -> list[tuple[str, dict[str, Any] | None]]:
    return [("default", None)] + [(name, reference_values(name)) for name in EXAMPLES]


@pytest.mark.parametrize("name,values", all_values(), ids=lambda v: v if isinstance(v, str) else "")
def test_lint_is_clean(name: str, values: dict[str, Any] | None) -> None:
    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], f"{name}: {report}"


@pytest.mark.parametrize("name,values", all_values(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_pod_is_hardened(name: str, values: dict[str, Any] | None) -> None:
    docs = documents(render(values))
    workloads = [d for d in docs if pod_spec(d) is not None]
    assert len(workloads) >= 5, f"{name}: expected all components, got {len(workloads)}"
    for obj in workloads:
        what = f"{name}: {obj['kind']} {obj['metadata']['name']}"
        spec = pod_spec(obj)
        assert spec is not None
        psc = spec.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True, what
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", what
        assert not spec.get("hostPID") and not spec.get("hostIPC"), what
        for c in spec["containers"] + spec.get("initContainers", []):
            cwhat = f"{what} container {c['name']}"
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, cwhat
            assert sc.get("readOnlyRootFilesystem") is True, cwhat
            assert sc.get("runAsNonRoot") is True, cwhat
            assert not sc.get("privileged"), cwhat
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], cwhat
            assert "add" not in sc.get("capabilities", {}), cwhat
            assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", cwhat
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(kind, {})), f"{cwhat}: {kind}"
            if obj["kind"] != "Job":
                assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", cwhat
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", cwhat
        for v in spec.get("volumes", []):
            if "hostPath" in v:
                mounts = [m for c in spec["containers"] for m in c.get("volumeMounts", [])
                          if m["name"] == v["name"]]
                assert mounts and all(m.get("readOnly") for m in mounts), f"{what}: {v}"


@pytest.mark.parametrize("name,values", all_values(), ids=lambda v: v if isinstance(v, str) else "")
def test_rbac_is_least_privilege(name: str, values: dict[str, Any] | None) -> None:
    docs = documents(render(values))
    for obj in by_kind(docs, "ClusterRole") + by_kind(docs, "Role"):
        for rule in obj["rules"]:
            what = f"{name}: {obj['kind']} {obj['metadata']['name']} {rule}"
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(key, []), what
            assert "nonResourceURLs" not in rule, what
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), what
            if "secrets" in rule["resources"]:
                # Only the cert hook touches Secrets, and reads only its own.
                assert obj["metadata"]["name"].endswith("-certs"), what
                assert set(rule["verbs"]) <= {"create"} or rule.get("resourceNames"), what
    for obj in by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding"):
        assert obj["roleRef"]["name"] not in ("cluster-admin", "admin", "edit"), obj
    # Each component has its own ServiceAccount.
    accounts = {d["metadata"]["name"] for d in by_kind(docs, "ServiceAccount")}
    for obj in docs:
        spec = pod_spec(obj)
        if spec is not None and obj["kind"] != "Job":
            assert spec["serviceAccountName"] in accounts, obj["metadata"]["name"]
    users = [pod_spec(d)["serviceAccountName"] for d in docs
             if pod_spec(d) is not None and d["kind"] != "Job"]
    assert len(users) == len(set(users)), f"{name}: a ServiceAccount is shared: {users}"


def rules_of(docs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for kind in ("ClusterRole", "Role") for d in by_kind(docs, kind)
            if d["metadata"]["name"] == name for r in d["rules"]]


def verbs(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    return {v for r in rules if group in r["apiGroups"] and resource in r["resources"]
            for v in r["verbs"]}


def test_scaler_rbac_follows_the_provider() -> None:
    cloud = documents(render())
    rules = rules_of(cloud, f"{RELEASE}-scaler")
    assert verbs(rules, "", "pods/eviction") == {"create"}
    assert verbs(rules, "", "nodes") == {"get", "list", "watch", "patch", "update"}
    assert verbs(rules, "gpu-autoscaler.io", "autoscalingpolicies/status") == {"update", "patch"}
    assert verbs(rules, "coordination.k8s.io", "leases") == {"create", "get", "update"}
    # Its own state (interruption history, predictor profile), by name only.
    assert verbs(rules, "", "configmaps") == {"create", "get", "update", "patch"}
    named = {n for r in rules if "configmaps" in r["resources"] for n in r.get("resourceNames", [])}
    assert named == {f"gpu-autoscaler-interruptions-{RELEASE}", f"gpu-autoscaler-predictor-{RELEASE}"}, named
    kube = documents(render({"autoscaling": {"provider": "kube"}}))
    rules = rules_of(kube, f"{RELEASE}-scaler")
    assert {"create", "delete"} <= verbs(rules, "", "nodes")
    named = {n for r in rules if "configmaps" in r["resources"] for n in r.get("resourceNames", [])}
    assert f"{RELEASE}-kube-provider" in named, named
    agent = rules_of(cloud, f"{RELEASE}-agent")
    assert verbs(agent, "", "nodes") == {"get", "patch"}
    assert verbs(agent, "", "events") == {"create"}
    extender = rules_of(cloud, f"{RELEASE}-extender")
    assert verbs(extender, "", "nodes") == {"list", "watch"}
    assert verbs(extender, "", "pods") == {"list", "watch"}


def test_webhook_configurations_as_specified() -> None:
    docs = documents(render({"webhook": {"excludeNamespaces": ["monitoring"]}}))
    mutating = one(docs, "MutatingWebhookConfiguration", f"{RELEASE}-mutating")
    (hook,) = mutating["webhooks"]
    assert hook["rules"] == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                              "resources": ["pods"], "scope": "Namespaced"}]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["timeoutSeconds"] == 3
    assert hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1", "v1beta1"]
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["clientConfig"]["service"] == {"name": f"{RELEASE}-webhook", "namespace": NAMESPACE,
                                               "path": "/mutate", "port": 443}
    ns_exprs = hook["namespaceSelector"]["matchExpressions"]
    assert {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
            "values": ["kube-system", NAMESPACE, "monitoring"]} in ns_exprs
    assert hook["objectSelector"]["matchExpressions"] == [
        {"key": "gpu-autoscaler.io/ignore", "operator": "NotIn", "values": ["true"]}]
    validating = one(docs, "ValidatingWebhookConfiguration", f"{RELEASE}-validating")
    (vhook,) = validating["webhooks"]
    assert vhook["clientConfig"]["service"]["path"] == "/validate-policy"
    assert vhook["rules"][0]["resources"] == ["autoscalingpolicies"]
    assert vhook["rules"][0]["apiGroups"] == ["gpu-autoscaler.io"]
    assert vhook["failurePolicy"] == "Ignore" and vhook["timeoutSeconds"] == 3
    assert vhook["sideEffects"] == "None"
    assert vhook["admissionReviewVersions"] == ["v1", "v1beta1"]
    # The webhook itself excludes the same namespaces (Kubernetes 1.20 has no name label).
    cm = one(docs, "ConfigMap", f"{RELEASE}-webhook")
    import yaml
    config = yaml.safe_load(cm["data"]["webhook.yaml"])
    assert config["excludedNamespaces"] == ["kube-system", NAMESPACE, "monitoring"]
    assert config["schedulerName"] == "gpu-autoscaler"


def test_webhook_url_switches_client_config() -> None:
    docs = documents(render({"webhook": {"url": "https://127.0.0.1:9443/mutate"}}))
    (m,) = one(docs, "MutatingWebhookConfiguration", f"{RELEASE}-mutating")["webhooks"]
    (v,) = one(docs, "ValidatingWebhookConfiguration", f"{RELEASE}-validating")["webhooks"]
    assert m["clientConfig"] == {"url": "https://127.0.0.1:9443/mutate"}
    assert v["clientConfig"] == {"url": "https://127.0.0.1:9443/validate-policy"}
    # The serving certificate must name the URL's host.
    post = one(docs, "Job", f"{RELEASE}-certs-post")
    assert "--extra-san=127.0.0.1" in post["spec"]["template"]["spec"]["containers"][0]["args"]


def test_cert_jobs_and_their_rbac_are_hooks() -> None:
    docs = documents(render())
    pre = one(docs, "Job", f"{RELEASE}-certs-pre")
    post = one(docs, "Job", f"{RELEASE}-certs-post")
    assert pre["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert post["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    pre_args = pre["spec"]["template"]["spec"]["containers"][0]["args"]
    post_args = post["spec"]["template"]["spec"]["containers"][0]["args"]
    assert pre_args[1] == "certs" and post_args[1] == "certs"
    for args in (pre_args, post_args):
        assert f"--service={RELEASE}-webhook" in args
        assert f"--namespace={NAMESPACE}" in args
        assert f"--secret={RELEASE}-webhook-tls" in args
    assert f"--patch-webhook={RELEASE}-mutating" in post_args
    assert f"--patch-validating-webhook={RELEASE}-validating" in post_args
    hooks = [d for d in docs if "helm.sh/hook" in d["metadata"].get("annotations", {})]
    assert {d["kind"] for d in hooks} == {"Job", "ServiceAccount", "Role", "RoleBinding",
                                         "ClusterRole", "ClusterRoleBinding"}
    for d in hooks:
        policy = d["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
        assert "hook-succeeded" in policy and "before-hook-creation" in policy, d["metadata"]
    cluster_role = one(docs, "ClusterRole", f"{RELEASE}-certs")
    for rule in cluster_role["rules"]:
        assert set(rule["verbs"]) == {"get", "patch"}
        assert len(rule["resourceNames"]) == 1


def test_cert_manager_replaces_the_jobs() -> None:
    docs = documents(render(reference_values("cert-manager")))
    assert by_kind(docs, "Job") == []
    cert = one(docs, "Certificate", f"{RELEASE}-webhook")
    assert cert["spec"]["secretName"] == f"{RELEASE}-webhook-tls"
    assert f"{RELEASE}-webhook.{NAMESPACE}.svc" in cert["spec"]["dnsNames"]
    assert one(docs, "Issuer", f"{RELEASE}-selfsigned")["spec"] == {"selfSigned": {}}
    for kind, name in (("MutatingWebhookConfiguration", "mutating"),
                       ("ValidatingWebhookConfiguration", "validating")):
        obj = one(docs, kind, f"{RELEASE}-{name}")
        assert obj["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == \
            f"{NAMESPACE}/{RELEASE}-webhook"


def test_reference_values_become_the_policy() -> None:
    docs = documents(render(reference_values("aws")))
    spec = one(docs, "AutoscalingPolicy", RELEASE)["spec"]
    assert spec["provider"] == "aws"
    assert (spec["scaleUpThreshold"], spec["scaleDownThreshold"]) == (0.8, 0.2)
    assert spec["scaleUpCooldownSeconds"] == 180
    assert spec["scaleDownCooldownSeconds"] == 600
    assert spec["pendingPodTimeoutSeconds"] == 120
    assert (spec["minNodes"], spec["maxNodes"]) == (0, 100)
    assert spec["spotInstancePercentage"] == 0.6
    assert spec["enableSpotInstances"] and spec["enableMultiTierScaling"]
    assert spec["enablePredictiveScaling"] is False
    assert spec["multiTier"] == {"spotPercentage": 0.6, "onDemandPercentage": 0.35,
                                 "reservedPercentage": 0.05}
    assert [p["name"] for p in spec["nodePools"]] == ["spot-pool", "on-demand-pool"]
    assert spec["nodePools"][0]["instanceTypes"] == ["p3.2xlarge", "p3.8xlarge"]
    assert spec["aws"] == {"region": "us-west-2", "autoScalingGroups": {
        "spot-pool": "gpu-spot-asg", "on-demand-pool": "gpu-on-demand-asg"}}
    sa = one(docs, "ServiceAccount", f"{RELEASE}-scaler")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == \
        "arn:aws:iam::123456789012:role/gpu-autoscaler"
    scaler = one(docs, "Deployment", f"{RELEASE}-scaler")
    args = scaler["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--provider=aws" in args and f"--policy={RELEASE}" in args

    gcp = documents(render(reference_values("gcp")))
    assert one(gcp, "AutoscalingPolicy", RELEASE)["spec"]["gcp"]["projectID"] == "my-project"
    assert one(gcp, "ServiceAccount", f"{RELEASE}-scaler")["metadata"]["annotations"][
        "iam.gke.io/gcp-service-account"] == "gpu-autoscaler@my-project.iam.gserviceaccount.com"

    azure = documents(render(reference_values("azure")))
    assert one(azure, "AutoscalingPolicy", RELEASE)["spec"]["azure"]["vmScaleSets"] == {
        "spot-pool": "gpu-spot-vmss", "on-demand-pool": "gpu-on-demand-vmss"}
    azure_scaler = one(azure, "Deployment", f"{RELEASE}-scaler")
    assert azure_scaler["spec"]["template"]["metadata"]["labels"][
        "azure.workload.identity/use"] == "true"
    assert one(azure, "ServiceAccount", f"{RELEASE}-scaler")["metadata"]["annotations"][
        "azure.workload.identity/client-id"] == "00000000-0000-0000-0000-000000000001"

    predictive = documents(render(reference_values("predictive")))
    pspec = one(predictive, "AutoscalingPolicy", RELEASE)["spec"]
    assert pspec["enablePredictiveScaling"] is True
    assert pspec["predictive"] == {"lookbackDays": 7, "horizonMinutes": 30,
                                   "confidenceThreshold": 0.7, "preWarmThreshold": 0.7}


@pytest.mark.parametrize("text,seconds", [("3m", 180), ("90s", 90), ("1h30m", 5400), (45, 45)])
def test_durations_become_seconds(text: Any, seconds: int) -> None:
    docs = documents(render({"autoscaling": {"scaleUp": {"cooldown": text}}}))
    assert one(docs, "AutoscalingPolicy", RELEASE)["spec"]["scaleUpCooldownSeconds"] == seconds


def test_bring_your_own_policy() -> None:
    docs = documents(render({"policy": {"create": False, "name": "production-autoscaling"}}))
    assert by_kind(docs, "AutoscalingPolicy") == []
    scaler = one(docs, "Deployment", f"{RELEASE}-scaler")
    assert "--policy=production-autoscaling" in scaler["spec"]["template"]["spec"]["containers"][0]["args"]


def test_workload_shapes() -> None:
    docs = documents(render())
    webhook = one(docs, "Deployment", f"{RELEASE}-webhook")
    assert webhook["spec"]["replicas"] == 2
    assert "podAntiAffinity" in webhook["spec"]["template"]["spec"]["affinity"]
    pdb = one(docs, "PodDisruptionBudget", f"{RELEASE}-webhook")
    assert pdb["apiVersion"] == "policy/v1"  # offline render: a current cluster
    scaler = one(docs, "Deployment", f"{RELEASE}-scaler")
    assert scaler["spec"]["replicas"] == 2
    sargs = scaler["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--lease-name={RELEASE}-scaler" in sargs
    env = {e["name"] for e in scaler["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {"POD_NAME", "POD_NAMESPACE"} <= env
    agent = one(docs, "DaemonSet", f"{RELEASE}-agent")
    spec = agent["spec"]["template"]["spec"]
    node_env = [e for e in spec["containers"][0]["env"] if e["name"] == "NODE_NAME"]
    assert node_env[0]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    tolerated = {t["key"] for t in spec["tolerations"]}
    assert {"gpu-autoscaler.io/capacity-type", "gpu-autoscaler.io/spot-interruption",
            "nvidia.com/gpu"} <= tolerated
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    keys = {e["key"] for t in terms for e in t["matchExpressions"]}
    assert "nvidia.com/gpu.present" in keys and "gpu-autoscaler.io/capacity-type" in keys
    hostpaths = [v for v in spec["volumes"] if "hostPath" in v]
    assert hostpaths[0]["hostPath"]["path"] == "/var/lib/kubelet/pod-resources"
    # The second scheduler: upstream image, our extender, its own RBAC.
    sched = one(docs, "Deployment", f"{RELEASE}-scheduler")
    container = sched["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("registry.k8s.io/kube-scheduler:v1.")
    import yaml
    config = yaml.safe_load(one(docs, "ConfigMap", f"{RELEASE}-scheduler")["data"]["config.yaml"])
    assert config["apiVersion"] == "kubescheduler.config.k8s.io/v1"
    assert config["profiles"] == [{"schedulerName": "gpu-autoscaler"}]
    (ext,) = config["extenders"]
    assert ext["urlPrefix"] == f"http://{RELEASE}-extender.{NAMESPACE}.svc:8888"
    assert ext["managedResources"] == [{"name": "nvidia.com/gpu", "ignoredByScheduler": False}]
    assert ext["ignorable"] is True and ext["nodeCacheCapable"] is True
    bound = {d["roleRef"]["name"] for d in by_kind(docs, "ClusterRoleBinding")
             if d["subjects"][0]["name"] == f"{RELEASE}-scheduler"}
    assert bound == {"system:kube-scheduler", "system:volume-scheduler"}
    extender = one(docs, "Deployment", f"{RELEASE}-extender")
    assert "--node-cache" in extender["spec"]["template"]["spec"]["containers"][0]["args"]


def test_service_monitors_and_dashboard() -> None:
    docs = documents(render({"metrics": {"serviceMonitor": {"enabled": True}}}))
    monitors = {d["metadata"]["name"] for d in by_kind(docs, "ServiceMonitor")}
    assert monitors == {f"{RELEASE}-{c}" for c in ("webhook", "extender", "scaler", "agent")}
    services = by_kind(docs, "Service")
    for sm in by_kind(docs, "ServiceMonitor"):
        sel = sm["spec"]["selector"]["matchLabels"]
        port = sm["spec"]["endpoints"][0]["port"]
        matching = [s for s in services
                    if sel.items() <= s["metadata"]["labels"].items()
                    and port in {p["name"] for p in s["spec"]["ports"]}]
        assert matching, f"ServiceMonitor {sm['metadata']['name']} selects no Service port {port}"
    (cm,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["gpu-autoscaler.json"])
    assert dashboard["uid"] == "gpu-autoscaler"


# --- schema and cross-field rejections -------------------------------------------------------

INVALID = [
    ({"autoscaling": {"scaleUp": {"threshold": 1.5}}}, "threshold"),
    ({"autoscaling": {"provider": "openstack"}}, "provider"),
    ({"autoscaling": {"scaleUp": {"cooldown": "3 minutes"}}}, "cooldown"),
    ({"autoscaling": {"limits": {"maxNodes": -1}}}, "maxNodes"),
    ({"autoscaling": {"scaleUp": {"treshold": 0.8}}}, "treshold"),
    ({"autoscaling": {"nodePools": [{"name": "p", "maxSize": 3, "instanceTypes": ["x"],
                                     "capacityType": "cheap"}]}}, "capacityType"),
    ({"autoscaling": {"nodePools": [{"name": "p", "maxSize": 3}]}}, "instanceTypes"),
    ({"autoscaling": {"predictive": {"lookbackDays": 60}}}, "lookbackDays"),
    ({"autoscaling": {"predictive": {"timezone": "Europe/Berlin --leader=x"}}}, "timezone"),
    ({"webhook": {"url": "http://127.0.0.1/mutate"}}, "url"),
    ({"scaler": {"replicas": 0}}, "replicas"),
    ({"cloudIdentity": {"aws": {"roleArn": "gpu-autoscaler"}}}, "roleArn"),
]

CROSS_FIELD = [
    ({"autoscaling": {"scaleDown": {"threshold": 0.9}}},
     "autoscaling.scaleDown.threshold (0.9) must be below autoscaling.scaleUp.threshold (0.8)"),
    ({"autoscaling": {"limits": {"minNodes": 5, "maxNodes": 3}}},
     "autoscaling.limits.minNodes (5) must not exceed autoscaling.limits.maxNodes (3)"),
    ({"autoscaling": {"multiTier": {"spotPercentage": 0.9}}}, "must add up to 1"),
    ({"autoscaling": {"aws": {"autoScalingGroups": {"ghost": "asg"}}}},
     'autoscaling.aws.autoScalingGroups: key "ghost" names no entry of autoscaling.nodePools'),
    ({"autoscaling": {"provider": "gcp"}}, "autoscaling.gcp.projectID is required"),
    ({"policy": {"create": False}}, "policy.name is required"),
]


@pytest.mark.parametrize("values,needle", INVALID, ids=[n for _, n in INVALID])
def test_schema_rejects_invalid_values(values: dict[str, Any], needle: str) -> None:
    with pytest.raises(helm.HelmError) as err:
        load_and_validate(values)
    message = str(err.value)
    assert needle in message, message
    # The schema error names the offending value's path.
    assert "at '/" in message, message


def load_and_validate(values: dict[str, Any]) -> None:
    from conftest import load_chart
    chart = load_chart()
    chart.validate_schema(values)
    # Rendering validates as well (this is what install does).
    chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


@pytest.mark.parametrize("values,needle", CROSS_FIELD, ids=[n[:30] for _, n in CROSS_FIELD])
def test_cross_field_rules_fail_with_a_clear_message(values: dict[str, Any], needle: str) -> None:
    with pytest.raises(helm.HelmError) as err:
        render(values)
    assert needle in str(err.value), str(err.value)
