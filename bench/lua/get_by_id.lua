-- GET /v1/Conversations/{id}, cycling through the pre-created ids in ids_file.
-- Requests are formatted once in init() so wrk spends no time building them.

local requests, n, i = {}, 0, 0

init = function(args)
  for _, id in ipairs(thread_ids()) do
    n = n + 1
    requests[n] = wrk.format("GET", "/v1/Conversations/" .. id)
  end
  assert(n > 0, "no ids for thread " .. thread_index .. " in " .. ids_file)
end

request = function()
  i = i % n + 1
  return requests[i]
end
