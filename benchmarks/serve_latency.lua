-- wrk script of benchmarks/serve_latency.py: the query mix and a paced request rate.
--
-- Environment (set by serve_latency.py):
--   QUERIES_FILE  one URL path per line (/search?q=...&k=10)
--   MODE          "cold": the paths in file order, each once, then again from the top;
--                 "warm": paths drawn at random (seeded) from the file
--   DELAY_MS      mean pause of a connection between two requests (exponential, seeded);
--                 0 = no pause (closed loop: capacity)
--   SEED          seed of the draws
--   OUT_FILE      where done() writes the JSON summary
--
-- Plain wrk (Debian's 4.1) has no fixed-rate mode; with C connections each pausing a mean of
-- DELAY_MS between requests, the offered rate is C * 1000 / (DELAY_MS + latency). The caller
-- picks DELAY_MS from the target rate and reports the achieved rate, which falls short when
-- the server is slow (the Python open-loop generator is the cross-check for that case).

local paths = {}
local index = 0
local mode = os.getenv("MODE") or "cold"
local delay_ms = tonumber(os.getenv("DELAY_MS") or "0")

for line in io.lines(os.getenv("QUERIES_FILE")) do
  paths[#paths + 1] = line
end
math.randomseed(tonumber(os.getenv("SEED") or "0"))

request = function()
  local path
  if mode == "warm" then
    path = paths[math.random(#paths)]
  else
    index = index % #paths + 1
    path = paths[index]
  end
  return wrk.format("GET", path)
end

delay = function()
  if delay_ms <= 0 then
    return 0
  end
  return math.floor(-math.log(1 - math.random()) * delay_ms)
end

done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  local out = io.open(os.getenv("OUT_FILE"), "w")
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": %d, "p50_us": %d, "p99_us": %d, '
      .. '"max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, errors, latency:percentile(50),
    latency:percentile(99), latency.max, latency.mean))
  out:close()
end
