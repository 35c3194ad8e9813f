-- wrk script: POST the JSON bodies of a file (one per line) in turn, then print one JSON line of
-- figures. Usage: wrk -t1 -c8 -d10s -s bench/wrk_post.lua URL -- BODIES_FILE PATH
local bodies, path, n = {}, "/", 0

function init(args)
  path = args[2]
  for line in io.lines(args[1]) do
    bodies[#bodies + 1] = line
  end
end

function request()
  n = n % #bodies + 1
  return wrk.format("POST", path, { ["Content-Type"] = "application/json" }, bodies[n])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, "errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.status + e.timeout))
end
