-- Shared by the bench scripts (bench/run.py prepends this file and the globals
-- the script needs: ids_file, threads, ...). Each wrk thread runs its own Lua
-- state; setup() runs in the main state once per thread, before init().

bench_threads = {}
local next_index = 0

setup = function(thread)
  thread:set("thread_index", next_index)
  next_index = next_index + 1
  table.insert(bench_threads, thread)
end

-- The ids in ids_file (one per line) that belong to this thread: thread k of n
-- takes lines k+1, k+1+n, k+1+2n, ... so no two threads share an id.
function thread_ids()
  local mine, line_no = {}, 0
  for line in io.lines(ids_file) do
    if line ~= "" then
      if line_no % threads == thread_index then
        mine[#mine + 1] = line
      end
      line_no = line_no + 1
    end
  end
  return mine
end

-- Print key=value pairs on one line; bench/wrk.py collects lines starting "BENCH ".
function bench_report(pairs_list)
  local parts = {}
  for _, kv in ipairs(pairs_list) do
    parts[#parts + 1] = kv[1] .. "=" .. tostring(kv[2])
  end
  io.write("BENCH " .. table.concat(parts, " ") .. "\n")
end
