-- POST /v1/Conversations with a fixed body; every conversationId returned with
-- 201 is appended to <out_prefix><thread>.ids so later scenarios (delete) get a
-- pool of ids that certainly exist. The request itself is static (wrk.method,
-- wrk.body), so the only per-request Lua work is reading the response.

wrk.method = "POST"
wrk.body = body

local out = nil
created, unparsed = 0, 0  -- globals: done() reads them with thread:get()

init = function(args)
  out = assert(io.open(out_prefix .. thread_index .. ".ids", "a"))
  out:setvbuf("line")
end

response = function(status, headers, response_body)
  if status == 201 then
    local id = response_body:match('"conversationId"%s*:%s*"([^"]+)"')
    if id then
      out:write(id, "\n")
      created = created + 1
    else
      unparsed = unparsed + 1
    end
  end
end

done = function(summary, latency, requests)
  local total_created, total_unparsed = 0, 0
  for _, thread in ipairs(bench_threads) do
    total_created = total_created + (thread:get("created") or 0)
    total_unparsed = total_unparsed + (thread:get("unparsed") or 0)
  end
  bench_report({{"created", total_created}, {"unparsed", total_unparsed}})
end
