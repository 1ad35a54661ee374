-- Prints one machine-readable line at the end of a wrk run (wrk --latency stops at p99).
-- With a file argument (`-- tokens.txt`), every request carries the next token from the file:
-- the cold path, where no token has been seen before.
local tokens = {}
local idx = 0

init = function(args)
  if args[1] then
    for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
    idx = math.random(#tokens)
  end
end

request = function()
  if #tokens > 0 then
    idx = idx % #tokens + 1
    return wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. tokens[idx] })
  end
  return wrk.format()
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("VGSTATS requests=%d duration_us=%d p50=%d p99=%d p999=%d errors=%d non2xx=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), e.connect + e.read + e.write + e.timeout, e.status))
end
