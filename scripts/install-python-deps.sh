#!/usr/bin/env bash
# Python packages for the Helm chart tests (tests/chart, run by tests/tests/chart_e2e.rs):
# helm-python-sdk (the Helm v4 engine, no helm binary), pytest, pyyaml; and moto[server] (the
# AWS emulator the clouds crate's AWS tests start as `moto_server`); in a venv under
# ~/.cache/gpu-autoscaler/venv. Idempotent: installs only what is missing.
set -euo pipefail
venv="${GPU_AUTOSCALER_VENV:-$HOME/.cache/gpu-autoscaler/venv}"
if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian ships venv separately.
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-venv
    python3 -m venv "$venv"
  fi
fi
if ! "$venv/bin/python" -c 'import helm_python, pytest, yaml' 2>/dev/null; then
  echo "installing helm-python-sdk pytest pyyaml into $venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    'helm-python-sdk>=0.2.2,<0.3' 'pytest>=8' 'pyyaml>=6'
fi
if [ ! -x "$venv/bin/moto_server" ]; then
  echo "installing moto[server] into $venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
fi
echo "$venv/bin/python"
