-- wrk script: one scheduling decision = POST /filter then POST /prioritize with the same body,
-- as kube-scheduler does. Each wrk connection alternates the two verbs, so
-- decisions/s = requests/s / 2.
-- Usage: BODY=/tmp/extender-bench/cache.json wrk -t1 -c8 -d20s --latency -s extender/benches/decision.lua http://127.0.0.1:18888
--
-- The load generator shares the machine with the server, so it must stay cheap:
-- - both requests are formatted once; `request` returns the same two strings (formatting
--   per call copied the 86 KB body into a new Lua string every time);
-- - no `response` callback: defining one makes wrk copy every 100-250 KB answer into a Lua
--   string. wrk itself reports "Non-2xx or 3xx responses: N" when any answer is not 2xx,
--   and a run without that line had none.
local f = assert(io.open(os.getenv("BODY") or "/tmp/extender-bench/cache.json", "rb"))
local body = f:read("*a")
f:close()
local headers = { ["Content-Type"] = "application/json" }
local filter = wrk.format("POST", "/filter", headers, body)
local prioritize = wrk.format("POST", "/prioritize", headers, body)
local counter = 0

request = function()
  counter = counter + 1
  if counter % 2 == 1 then
    return filter
  end
  return prioritize
end
