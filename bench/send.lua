-- wrk script: closed-loop sends (POST messages) over many conversations, each
-- by one of its members, every body with a fresh client_msg_id; prints one
-- RESULT line. SENDS names a file of "conversation_id token" lines.
local pairs_file = os.getenv("SENDS")
local targets = {}
for line in io.lines(pairs_file) do
  local cid, token = line:match("^(%d+) (%S+)$")
  if cid then
    targets[#targets + 1] = {"/api/v1/conversations/" .. cid .. "/messages",
                             {["Authorization"] = "Bearer " .. token,
                              ["Content-Type"] = "application/json"}}
  end
end

-- wrk's pid: client_msg_ids stay unique across runs
local f = io.open("/proc/self/stat")
local run = f:read("*n")
f:close()

local threads = {}
setup = function(thread)
  thread:set("tid", #threads + 1)
  threads[#threads + 1] = thread
end

local n = 0
request = function()
  n = n + 1
  local t = targets[(n * 7919 + (tid or 0) * 104729) % #targets + 1]
  local body = string.format('{"body":"bench send %d","client_msg_id":"b%d-%d-%d"}',
                             n, run, tid or 0, n)
  return wrk.format("POST", t[1], t[2], body)
end

done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write +
                 summary.errors.timeout
  io.write(string.format("RESULT rps=%.0f p50_ms=%.2f p95_ms=%.2f p99_ms=%.2f errors=%d non2xx=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(95) / 1000, latency:percentile(99) / 1000, errors, summary.errors.status))
end
