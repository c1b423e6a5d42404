-- wrk script: POSTs one AdmissionReview body to /mutate on every keep-alive connection.
--   BODY=path/to/review.json   the request body (default: webhook/testdata/review-gpu-pod.json)
--   DELAY_MS=n                 optional pause before each request on a connection, to hold a
--                              fixed rate: about connections * 1000 / n requests per second
--                              (wrk measures latency from the write, so the pause is excluded)
local path = os.getenv("BODY") or "webhook/testdata/review-gpu-pod.json"
local f = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

local delay_ms = tonumber(os.getenv("DELAY_MS") or "")
if delay_ms then
  function delay()
    return delay_ms
  end
end

function done(summary, latency, requests)
  io.write(string.format("requests=%d duration_s=%.2f rate=%.0f/s errors(status)=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    summary.errors.status))
  io.write(string.format("latency_us p50=%d p90=%d p99=%d p99.9=%d max=%d\n",
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
