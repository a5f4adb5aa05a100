-- wrk script: POST /predict with bodies rotated from the JSON-lines file named by BENCH_BODIES, and print
-- a one-line JSON summary (percentiles, non-2xx and 429/503 counts, every status seen, 429/503 answers without a
-- Retry-After header, across all threads) when done.
local threads = {}
local bodies = {}
for line in io.lines(os.getenv("BENCH_BODIES")) do bodies[#bodies + 1] = line end

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  index = (id * 7919) % #bodies
  non2xx = 0
  overload = 0
  no_retry_after = 0
  statuses = {}
end

function request()
  index = index % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[index])
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if status == 429 or status == 503 then
      overload = overload + 1
      if headers["retry-after"] == nil and headers["Retry-After"] == nil then
        no_retry_after = no_retry_after + 1
      end
    end
  end
end

function done(summary, latency, requests)
  local n, o, r, seen = 0, 0, 0, {}
  for _, t in ipairs(threads) do
    n = n + t:get("non2xx")
    o = o + t:get("overload")
    r = r + t:get("no_retry_after")
    for status, count in pairs(t:get("statuses")) do seen[status] = (seen[status] or 0) + count end
  end
  local parts = {}
  for status, count in pairs(seen) do parts[#parts + 1] = string.format('"%d": %d', status, count) end
  local e = summary.errors
  io.write(string.format(
    'JSON {"requests": %d, "seconds": %.3f, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"non_2xx": %d, "status_429_503": %d, "socket_errors": %d, "no_retry_after": %d, "statuses": {%s}, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, n, o, e.connect + e.read + e.write + e.timeout, r,
    table.concat(parts, ", "), e.connect, e.read, e.write, e.timeout))
end
