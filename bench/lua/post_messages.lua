-- POST /v1/Conversations/{id}/messages with a fixed body, cycling through the
-- conversations in ids_file. Every request is formatted once in init(); each
-- answer must be 201 (a durable append).

local requests, n, i = {}, 0, 0

init = function(args)
  for _, id in ipairs(thread_ids()) do
    n = n + 1
    requests[n] = wrk.format("POST", "/v1/Conversations/" .. id .. "/messages", nil, body)
  end
  assert(n > 0, "no ids for thread " .. thread_index .. " in " .. ids_file)
end

request = function()
  i = i % n + 1
  return requests[i]
end
