-- wrk script: requests drawn from a file of paths (one per line); counts answers
-- by status and prints a JSON summary line after "BENCH-RESULT " (bench/load.py
-- reads it). The environment names the paths file (BENCH_PATHS) and the order:
-- BENCH_ORDER=walk: a random start per thread, then round and round the list;
-- BENCH_ORDER=once: thread k of BENCH_THREADS sends the k-th share of the list in
-- order, each path once; a path sent again after the share ran out is counted in
-- "repeats" (the all-new mix: there should be none).
local paths = {}
local threads = {}
local counter = 1

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local all = {}
  for line in io.lines(os.getenv("BENCH_PATHS")) do
    all[#all + 1] = line
  end
  if os.getenv("BENCH_ORDER") == "once" then
    local threads = tonumber(os.getenv("BENCH_THREADS"))
    local share = math.floor(#all / threads)
    for k = (id - 1) * share + 1, id * share do
      paths[#paths + 1] = all[k]
    end
    i = 0
    once = true
  else
    paths = all
    math.randomseed(1000 + id)
    i = math.random(#paths)
    once = false
  end
  sent, repeats = 0, 0
  s200, s400, s5xx, sother = 0, 0, 0, 0
end

function request()
  if once and sent >= #paths then repeats = repeats + 1 end
  i = i % #paths + 1
  sent = sent + 1
  return wrk.format("GET", paths[i])
end

function response(status, headers, body)
  if status == 200 then s200 = s200 + 1
  elseif status == 400 then s400 = s400 + 1
  elseif status >= 500 then s5xx = s5xx + 1
  else sother = sother + 1 end
end

local points = {1, 5, 10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 95, 97.5, 99, 99.5, 99.9, 99.99}

function done(summary, latency, requests)
  local counts = {s200 = 0, s400 = 0, s5xx = 0, sother = 0}
  local repeats = 0
  for _, t in ipairs(threads) do
    for k, _ in pairs(counts) do counts[k] = counts[k] + t:get(k) end
    repeats = repeats + t:get("repeats")
  end
  local pct = {}
  for _, p in ipairs(points) do
    pct[#pct + 1] = string.format('"%s": %d', p, latency:percentile(p))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH-RESULT {"duration_us": %d, "requests": %d, "bytes": %d, ' ..
    '"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, ' ..
    '"non_2xx_3xx": %d, "repeats": %d, ' ..
    '"status": {"200": %d, "400": %d, "5xx": %d, "other": %d}, ' ..
    '"latency_us": {"min": %d, "mean": %.1f, "stdev": %.1f, "max": %d, ' ..
    '"percentiles": {%s}}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.timeout, e.status, repeats,
    counts.s200, counts.s400, counts.s5xx, counts.sother,
    latency.min, latency.mean, latency.stdev, latency.max, table.concat(pct, ", ")))
end
