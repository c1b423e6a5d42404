-- wrk script: one scheduling decision = POST /filter then POST /prioritize with the same body,
-- as kube-scheduler does. Each wrk connection alternates the two verbs, so
-- decisions/s = requests/s / 2.
-- Usage: BODY=/tmp/extender-bench/cache.json wrk -t2 -c8 -d20s --latency -s extender/benches/decision.lua http://127.0.0.1:18888
local f = assert(io.open(os.getenv("BODY") or "/tmp/extender-bench/cache.json", "rb"))
local body = f:read("*a")
f:close()
local counter = 0

request = function()
  counter = counter + 1
  local path = (counter % 2 == 1) and "/filter" or "/prioritize"
  return wrk.format("POST", path, { ["Content-Type"] = "application/json" }, body)
end

-- Non-2xx answers would mean a broken run; count them so the report can show zero.
response = function(status, headers, resp_body)
  if status ~= 200 then
    io.stderr:write("unexpected status " .. status .. "\n")
  end
end
