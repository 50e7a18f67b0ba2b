-- DELETE /v1/Conversations/{id}, each id exactly once. Deleting an id twice would
-- answer 404 and measure the error path instead, so the pool is sized by run.py
-- to outlast the run. If a thread runs out anyway it stops and done() reports
-- "exhausted": wrk keeps dividing by the full duration, so the rate would be too
-- low, and run.py fails the run rather than print it.

local requests, n, i = {}, 0, 0
exhausted = 0  -- global: done() reads it with thread:get()

init = function(args)
  for _, id in ipairs(thread_ids()) do
    n = n + 1
    requests[n] = wrk.format("DELETE", "/v1/Conversations/" .. id)
  end
end

request = function()
  i = i + 1
  if i > n then
    exhausted = 1
    wrk.thread:stop()
    return wrk.format("GET", "/healthz")
  end
  return requests[i]
end

done = function(summary, latency, requests_)
  local total_exhausted = 0  -- global: done() reads it with thread:get()
  for _, thread in ipairs(bench_threads) do
    total_exhausted = total_exhausted + (thread:get("exhausted") or 0)
  end
  bench_report({{"exhausted", total_exhausted}})
end
