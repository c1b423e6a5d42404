#!/usr/bin/env bash
# Load test of `gpu-autoscaler webhook` over TLS on loopback with Debian's wrk (apt-get install wrk).
# Usage, from the repository root:
#   cargo build --release -p gpu-autoscaler && webhook/benches/load/load.sh target/release/gpu-autoscaler
# or, reusing the optimised dependencies of `cargo bench` (same router and TLS code):
#   cargo build --profile bench -p gpu-autoscaler-webhook --example serve
#   webhook/benches/load/load.sh target/release/examples/serve
# Optional second argument: seconds per run (default 20).
# Prints: saturation throughput (several connection counts), latency at ~2,000 admissions/s,
# and the webhook's resident memory (idle, and peak VmHWM under load).
set -euo pipefail
BIN=${1:-target/release/gpu-autoscaler}
SECS=${2:-20}
LUA=webhook/benches/load/mutate.lua
export BODY=${BODY:-webhook/testdata/review-gpu-pod.json}
URL=https://127.0.0.1:18443/mutate
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT

if [ "$(basename "$BIN")" = serve ]; then
  "$BIN" 127.0.0.1:18443 127.0.0.1:18081 >"$dir/webhook.log" 2>&1 &
else
  "$BIN" certs --service webhook --namespace bench --extra-san 127.0.0.1 --out-dir "$dir" >/dev/null 2>&1
  RUST_LOG=warn "$BIN" webhook --listen 127.0.0.1:18443 --tls-cert "$dir/tls.crt" --tls-key "$dir/tls.key" \
    --probe-listen 127.0.0.1:18081 >"$dir/webhook.log" 2>&1 &
fi
pid=$!
for _ in $(seq 50); do curl -sf http://127.0.0.1:18081/readyz >/dev/null && break; sleep 0.1; done
rss() { awk -v k="$1" '$1==k":" {print $2" kB"}' "/proc/$pid/status"; }
echo "body: $(wc -c <"$BODY") bytes; cores: $(nproc); webhook pid $pid"
echo "RSS idle: $(rss VmRSS)"

# Warm-up, then saturation with a few connection counts (wrk takes one thread; the
# webhook's runtime gets both cores' worth of workers).
wrk -t1 -c8 -d3s -s "$LUA" "$URL" >/dev/null
for c in 8 32 64; do
  echo "== saturation: wrk -t1 -c$c -d${SECS}s"
  wrk -t1 -c"$c" -d"${SECS}s" -s "$LUA" "$URL" | grep -E "requests=|latency_us|Non-2xx|Socket errors"
  echo "RSS now: $(rss VmRSS), peak: $(rss VmHWM)"
done

echo "== fixed rate ~2,000/s: 24 connections x one request per 10 ms (plus the round trip)"
DELAY_MS=10 wrk -t1 -c24 -d"${SECS}s" -s "$LUA" "$URL" | grep -E "requests=|latency_us|Non-2xx|Socket errors"
echo "RSS now: $(rss VmRSS), peak: $(rss VmHWM)"

echo "== webhook's own view"
curl -s http://127.0.0.1:18081/metrics | grep -E '^gpu_autoscaler_webhook_requests_total'
