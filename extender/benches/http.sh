#!/usr/bin/env bash
# HTTP load test of the extender on loopback: starts examples/bench_server over a synthetic
# 5,000-node cluster, runs wrk RUNS times with CONNS connections and prints one row per run:
# requests/s, decisions/s (= requests/s / 2, see decision.lua), p50, p99, and the server's own
# CPU time per request (utime + stime from /proc over the run).
#
#   cargo build --release -p gpu-autoscaler-extender --examples
#   extender/benches/http.sh                       # node-cache mode, 3 runs, 8 connections
#   RUNS=5 CONNS=4 extender/benches/http.sh
#   MODE=full CONNS=2 extender/benches/http.sh     # full NodeList (15 MB requests)
#
# Needs wrk. BIN overrides the server binary (to compare builds).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release/examples/bench_server}
RUNS=${RUNS:-3}
CONNS=${CONNS:-8}
DUR=${DUR:-10}
MODE=${MODE:-cache}
NODES=${NODES:-5000}
ADDR=127.0.0.1:18888
OUT=/tmp/extender-bench

"$BIN" --nodes "$NODES" --listen "$ADDR" --out "$OUT" >/tmp/extender-bench-server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  [ -f "$OUT/$MODE.json" ] && grep -q listening /tmp/extender-bench-server.log && break
  sleep 0.2
done

cpu() { awk '{print $14 + $15}' "/proc/$SERVER/stat"; }
hz=$(getconf CLK_TCK)
for _ in $(seq "$RUNS"); do
  before=$(cpu)
  report=$(BODY="$OUT/$MODE.json" wrk -t1 -c"$CONNS" -d"${DUR}s" --latency \
    -s extender/benches/decision.lua "http://$ADDR")
  after=$(cpu)
  python3 - "$report" "$before" "$after" "$hz" "$MODE" "$CONNS" <<'PY'
import re, sys
report, before, after, hz, mode, conns = sys.argv[1:]
n = int(re.search(r"(\d+) requests in", report).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", report).group(1))
p50 = re.search(r"50%\s+(\S+)", report).group(1)
p99 = re.search(r"99%\s+(\S+)", report).group(1)
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", report)
cpu_ms = (float(after) - float(before)) / float(hz) * 1000 / n
load = open("/proc/loadavg").read().split()[0]
print(f"mode={mode} conns={conns} load={load} requests/s={rps:.0f} decisions/s={rps/2:.0f} "
      f"p50={p50} p99={p99} server_cpu_per_request={cpu_ms:.3f}ms "
      f"non_2xx={bad.group(1) if bad else 0}")
PY
done
