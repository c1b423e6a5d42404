#!/usr/bin/env bash
# The project's one test command (README, .ci/run). Idempotent on fresh and warm machines:
#   1. installs what the tests need (Debian packages, the Kubernetes 1.20 control plane);
#   2. checks formatting and lints (clippy -D warnings);
#   3. builds the workspace (e2e tests run the real binary);
#   4. runs every test with cargo-nextest and prints its summary.
# Nothing is skipped: a missing tool is installed or the run fails.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
log() { printf '\n== %s\n' "$*" >&2; }
t0=$(date +%s)

log "system packages"
scripts/install-deps.sh

log "python tools (helm-python-sdk, pytest, moto)"
scripts/install-python-deps.sh

log "control plane (kube-apiserver, kube-scheduler 1.20.2, etcd)"
K8S_BIN=$(scripts/control-plane.sh | tail -n1)
export GPU_AUTOSCALER_K8S_BIN="$K8S_BIN"

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo build"
cargo build --workspace --all-targets --locked

log "tests"
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
status=0
cargo nextest run --workspace --locked --no-fail-fast --profile ci || status=$?
# Doc tests are not run by nextest.
cargo test --workspace --locked --doc || status=$?

echo "test command finished in $(( $(date +%s) - t0 )) s (exit $status)" >&2
exit $status
