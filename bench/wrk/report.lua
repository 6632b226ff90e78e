-- wrk script for scripts/bench: sends what the environment asks for and prints one JSON line
-- of results that bench/bench.py reads.
--
--   WRK_METHOD, WRK_BODY   the request (default GET, no body); a body is sent as JSON
--   WRK_AUTH               sent as `Authorization: Bearer …` when set
--   WRK_DELAY_MS           pause before each request on a connection, to pace the load
--   WRK_COUNT_STATUS       when set, count every status code (costs a response callback)

local method = os.getenv("WRK_METHOD")
local body = os.getenv("WRK_BODY")
local auth = os.getenv("WRK_AUTH")
local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "")

if method then wrk.method = method end
if body then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end
if auth then wrk.headers["Authorization"] = "Bearer " .. auth end

if delay_ms then
  function delay() return delay_ms end
end

-- Each thread counts its own statuses; done() adds them up.
local threads = {}
function setup(thread) table.insert(threads, thread) end

if os.getenv("WRK_COUNT_STATUS") then
  statuses = {}
  function response(status, headers, body)
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
  end
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses")
    if s then
      for k, v in pairs(s) do counts[k] = (counts[k] or 0) + v end
    end
  end
  local parts = {}
  for k, v in pairs(counts) do table.insert(parts, string.format('"%s":%d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"mean_us":%.1f,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"statuses":{%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, e.connect, e.read, e.write, e.status, e.timeout, table.concat(parts, ",")))
end
