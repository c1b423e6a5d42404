"""Every flag the chart passes to `gpu-autoscaler` must exist in the binary, so a renamed flag
fails here rather than as a crash-looping pod."""

from __future__ import annotations

import re
import subprocess

from conftest import documents, pod_spec, render

FLAG = re.compile(r"^(--[a-z0-9-]+)")


def help_flags(binary: str, subcommand: str) -> set[str]:
    out = subprocess.run([binary, subcommand, "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return set(re.findall(r"(--[a-z0-9-]+)", out.stdout))


def test_rendered_arguments_are_known_flags(binary: str) -> None:
    variants = [None, {"autoscaling": {"provider": "kube"}, "scaler": {"gpuResources": ["x.com/gpu"]},
                       "extender": {"spotRates": "configmap:default/rates"}},
                {"webhook": {"url": "https://127.0.0.1:9443/mutate"}, "agent": {"podResourcesDir": ""},
                 "autoscaling": {"predictive": {"timezone": "Europe/Berlin"}}}]
    checked = 0
    for values in variants:
        for obj in documents(render(values)):
            spec = pod_spec(obj)
            if spec is None:
                continue
            for c in spec["containers"]:
                if not c["image"].startswith("ghcr.io/gpu-autoscaler/"):
                    continue  # the upstream kube-scheduler
                args = c["args"]
                assert args[0].startswith("--log-format="), args
                sub = args[1]
                known = help_flags(binary, sub)
                for arg in args[2:]:
                    m = FLAG.match(arg)
                    assert m, f"{obj['metadata']['name']}: not a flag: {arg}"
                    assert m.group(1) in known, f"{sub} has no {m.group(1)} (chart: {arg})"
                    checked += 1
    assert checked > 30
