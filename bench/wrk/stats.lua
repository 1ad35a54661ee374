-- Prints one machine-readable line at the end of a wrk run (wrk --latency stops at p99).
--
-- Arguments after `--`, all optional:
--   tokens=FILE   every request carries the next token from FILE (one per line)
--   from=N        use lines N+1 … N+count of FILE (default: from the start…
--   count=N       …to the end)
--   threads=N     wrk's -t, so that each thread takes its own share of the token lines
--   pause=MS      each connection waits MS milliseconds between requests: a fixed, lower load,
--                 for latency below saturation
-- `reused` counts requests that carried a token this run had already sent (its slice ran out):
-- 0 on a clean cold run.
--
-- Every request is built once, in `init`, never per request: wrk shares the proxy's two cores, so
-- what it spends per request is taken from the proxy under test. Building `"Bearer " .. token` and
-- formatting the request each time made LuaJIT hash and intern two fresh ~1 KB strings per request
-- into a string table holding the thread's tokens: with 100,000 tokens that walked cold memory and
-- cost wrk about 6 µs a request more than with 10, which the accounts case then charged to the
-- proxy. Likewise `delay` is defined only when a pause is asked for (any `delay` function sends
-- every request through a timer and two epoll_ctl calls), and without tokens wrk's own static
-- request is used.
local threads = {}
sent, ntokens = 0, 0
local prebuilt = {}
local idx = 0
local pause_ms = 0

setup = function(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

init = function(args)
  local o = {}
  for _, a in ipairs(args) do
    local k, v = a:match("^(%w+)=(.*)$")
    if k then o[k] = v end
  end
  pause_ms = tonumber(o.pause or "0")
  if pause_ms == 0 then delay = nil end
  if o.tokens then
    local from, count, nthreads = tonumber(o.from or "0"), tonumber(o.count or "0"), tonumber(o.threads or "1")
    if count == 0 then
      for _ in io.lines(o.tokens) do count = count + 1 end
      count = count - from
    end
    local share = math.max(1, math.floor(count / nthreads))
    local first = from + (id % nthreads) * share
    local n = 0
    for line in io.lines(o.tokens) do
      n = n + 1
      if n > first + share then break end
      if n > first then
        prebuilt[#prebuilt + 1] = wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. line })
      end
    end
    ntokens = #prebuilt
  end
  if ntokens == 0 then request = nil end
end

delay = function()
  return pause_ms
end

request = function()
  sent = sent + 1
  idx = idx % ntokens + 1
  return prebuilt[idx]
end

done = function(summary, latency, requests)
  local e = summary.errors
  local reused = 0
  for _, t in ipairs(threads) do
    local ntok = t:get("ntokens") or 0
    if ntok > 0 then reused = reused + math.max(0, (t:get("sent") or 0) - ntok) end
  end
  io.write(string.format("VGSTATS requests=%d duration_us=%d p50=%d p99=%d p999=%d errors=%d non2xx=%d reused=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), e.connect + e.read + e.write + e.timeout, e.status, reused))
end
