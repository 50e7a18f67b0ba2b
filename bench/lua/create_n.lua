-- POST /v1/Conversations with a fixed body, at most `limit` times per thread;
-- afterwards it sends GET /healthz (cheap, 200) until wrk's duration is over.
-- Used to build data quickly (e.g. 10,000 conversations of one user), not to
-- measure. Each thread creates up to `limit`. wrk calls request() once more than
-- it sends (the first call is not sent), so a run creates one fewer: run.py
-- checks the count afterwards and tops it up.

local post, health, sent = nil, nil, 0
sent_posts = 0  -- global: done() reads it with thread:get()

init = function(args)
  health = wrk.format("GET", "/healthz")
  post = wrk.format("POST", "/v1/Conversations", nil, body)
end

request = function()
  if sent < limit then
    sent = sent + 1
    sent_posts = sent
    return post
  end
  return health
end

done = function(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(bench_threads) do
    total = total + (thread:get("sent_posts") or 0)
  end
  bench_report({{"posts", total}})
end
