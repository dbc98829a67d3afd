-- wrk script for the graygate side-by-side load benchmark.
--
-- Cycles through 1,000 distinct user ids (x-user-id: 1000000 .. 1000999). The request
-- mix is fixed by the id list, so every proxy (and the direct-to-origin baseline) sees
-- exactly the same requests:
--   * ids 1000000..1000019 are on the whitelist (2 %)       -> canary
--   * every id whose index ends in 07 (i % 100 == 7) also sends x-canary: true (1 %)
--   * ~5 % of the rest land in the hashed per-mille bucket   -> canary
--   * everything else                                         -> blue
-- Optional first script argument (`wrk ... -s load.lua -- group-1000`): a value sent
-- as x-user-group on every request, for the rule-chain growth test.
--
-- All 1,000 requests are formatted once in init(); request() only hands them out, so
-- the per-request Lua cost is a table index.

local reqs = {}
local n = 0
local idx = 0

function init(args)
  local group = args[1]
  for i = 0, 999 do
    local h = {}
    h["x-user-id"] = tostring(1000000 + i)
    if i % 100 == 7 then
      h["x-canary"] = "true"
    end
    if group ~= nil and group ~= "" then
      h["x-user-group"] = group
    end
    reqs[#reqs + 1] = wrk.format("GET", "/", h)
  end
  n = #reqs
  -- start each wrk thread at a different place in the cycle
  idx = math.random(0, n - 1)
end

function request()
  idx = idx % n + 1
  return reqs[idx]
end
