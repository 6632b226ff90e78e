-- wrk script for scripts/bench: sends what the environment asks for and prints one JSON line
-- of results that bench/bench.py reads.
--
--   WRK_METHOD, WRK_BODY   the request (default GET, no body); a body is sent as JSON unless
--                          WRK_CONTENT_TYPE says otherwise
--   WRK_AUTH               sent as `Authorization: Bearer …` when set
--   WRK_AUTHORIZATION      the whole Authorization header (e.g. `Basic …`), instead of WRK_AUTH
--   WRK_DELAY_MS           pause before each request on a connection, to pace the load
--   WRK_COUNT_STATUS       when set, count every status code (costs a response callback)
--   WRK_TIME_BY_STATUS     when set, also p50/p99 of the answers of each status code
--   WRK_REFRESH_TOKENS     a file of refresh tokens, one a line: each thread POSTs
--                          `{"refreshToken": …}` with its own token and goes on with the one each
--                          200 answer returns (the token rotates on every use), so a chain is
--                          never replayed
--
-- WRK_TIME_BY_STATUS and WRK_REFRESH_TOKENS keep state per thread, so they need one connection
-- per thread (`-t N -c N`): wrk does not say which connection an answer came on.

local method = os.getenv("WRK_METHOD")
local body = os.getenv("WRK_BODY")
local auth = os.getenv("WRK_AUTH")
local authorization = os.getenv("WRK_AUTHORIZATION")
local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "")
local tokens_file = os.getenv("WRK_REFRESH_TOKENS")
local time_by_status = os.getenv("WRK_TIME_BY_STATUS")

if method then wrk.method = method end
if body then
  wrk.body = body
  wrk.headers["Content-Type"] = os.getenv("WRK_CONTENT_TYPE") or "application/json"
end
if tokens_file then
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end
if auth then wrk.headers["Authorization"] = "Bearer " .. auth end
if authorization then wrk.headers["Authorization"] = authorization end

if delay_ms then
  function delay() return delay_ms end
end

-- Each thread counts its own statuses; done() adds them up.
local threads = {}
local tokens = nil
function setup(thread)
  table.insert(threads, thread)
  if tokens_file then
    if not tokens then
      tokens = {}
      for line in io.lines(tokens_file) do
        if line ~= "" then table.insert(tokens, line) end
      end
    end
    local token = tokens[#threads]
    if not token then
      error(string.format("%s holds %d refresh tokens, fewer than the threads", tokens_file,
                          #tokens))
    end
    thread:set("refresh_token", token)
  end
end

-- A monotonic clock in µs for WRK_TIME_BY_STATUS (wrk runs LuaJIT, whose ffi calls libc).
local now_us = nil
if time_by_status then
  local ffi = require("ffi")
  ffi.cdef [[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clock_id, bench_timespec *tp);
  ]]
  local ts = ffi.new("bench_timespec")
  now_us = function()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
  end
end

if tokens_file or time_by_status then
  local static = nil
  function request()
    if now_us then started = now_us() end
    if tokens_file then
      return wrk.format(nil, nil, nil, '{"refreshToken":"' .. refresh_token .. '"}')
    end
    static = static or wrk.format()
    return static
  end
end

if os.getenv("WRK_COUNT_STATUS") or tokens_file or time_by_status then
  statuses = {}
  function response(status, headers, body)
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
    if now_us and started then
      -- One flat global list per status: wrk's thread:get cannot copy nested tables.
      local name = "latencies_" .. key
      local list = _G[name]
      if not list then
        list = {}
        _G[name] = list
      end
      list[#list + 1] = now_us() - started
      started = nil
    end
    if tokens_file and status == 200 then
      -- Any other answer keeps the token: a retry within AUTH_REFRESH_GRACE gets the same new
      -- token, never a reuse that ends the session.
      local next_token = body:match('"refreshToken"%s*:%s*"([^"]+)"')
      if next_token then refresh_token = next_token end
    end
  end
end

local function percentile(sorted, p)
  if #sorted == 0 then return 0 end
  local index = math.max(1, math.min(#sorted, math.floor(p / 100 * #sorted + 0.5)))
  return sorted[index]
end

function done(summary, latency, requests)
  local counts, timed = {}, {}
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses")
    if s then
      for k, v in pairs(s) do
        counts[k] = (counts[k] or 0) + v
        local list = time_by_status and thread:get("latencies_" .. k)
        if list then
          timed[k] = timed[k] or {}
          for _, value in ipairs(list) do table.insert(timed[k], value) end
        end
      end
    end
  end
  local parts = {}
  for k, v in pairs(counts) do table.insert(parts, string.format('"%s":%d', k, v)) end
  local by_status = {}
  for k, list in pairs(timed) do
    table.sort(list)
    table.insert(by_status, string.format('"%s":{"p50_us":%d,"p99_us":%d}', k,
                                          percentile(list, 50), percentile(list, 99)))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"mean_us":%.1f,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"statuses":{%s},' ..
    '"by_status":{%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, e.connect, e.read, e.write, e.status, e.timeout, table.concat(parts, ","),
    table.concat(by_status, ",")))
end
