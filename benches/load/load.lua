-- wrk script for the graygate side-by-side load benchmark.
--
-- Cycles through 1,000 distinct user ids (x-user-id: 1000000 .. 1000999). The request
-- mix is fixed by the id list, so every proxy (and the direct-to-origin baseline) sees
-- exactly the same requests:
--   * ids 1000000..1000019 are on the whitelist (2 %)       -> canary
--   * every id whose index ends in 07 (i % 100 == 7) also sends x-canary: true (1 %)
--   * ~5 % of the rest land in the hashed per-mille bucket   -> canary
--   * everything else                                         -> blue
--
-- Script arguments (`wrk ... -s load.lua -- ARG ...`), all optional:
--   group-1000           a bare value: sent as x-user-group on every request (the
--                        rule-chain growth test); the same as group=group-1000
--   method=POST          the method (default GET)
--   path=/v1/chat        the request target (default /)
--   body=2048            a JSON body of exactly this many bytes, with
--                        content-type: application/json (an inference call's shape)
--   header=name:value    one more header on every request (repeatable)
--
-- All 1,000 requests are formatted once in init(); request() only hands them out, so
-- the per-request Lua cost is a table index (a 64 KiB body makes that 64 MiB of
-- formatted requests per wrk thread, built once).

local reqs = {}
local n = 0
local idx = 0

-- A JSON chat-completion body of exactly `size` bytes (the content string pads it).
local function json_body(size)
  local head = '{"model":"bench-model","stream":false,"max_tokens":256,' ..
               '"messages":[{"role":"user","content":"'
  local tail = '"}]}'
  local pad = size - #head - #tail
  if pad < 0 then
    error("body=" .. size .. " is below the " .. (#head + #tail) .. "-byte JSON frame")
  end
  local words = "the quick brown fox jumps over the lazy dog "
  local filler = string.rep(words, math.floor(pad / #words) + 1):sub(1, pad)
  return head .. filler .. tail
end

function init(args)
  local group, method, path, body = nil, "GET", "/", nil
  local extra = {}
  for _, arg in ipairs(args) do
    local key, value = arg:match("^([%w_]+)=(.*)$")
    if key == nil then
      group = arg
    elseif key == "group" then
      group = value
    elseif key == "method" then
      method = value
    elseif key == "path" then
      path = value
    elseif key == "body" then
      body = json_body(tonumber(value))
    elseif key == "header" then
      local name, v = value:match("^([^:]+):%s*(.*)$")
      extra[#extra + 1] = { name, v }
    else
      error("unknown script argument: " .. arg)
    end
  end
  for i = 0, 999 do
    local h = {}
    h["x-user-id"] = tostring(1000000 + i)
    if i % 100 == 7 then
      h["x-canary"] = "true"
    end
    if group ~= nil and group ~= "" then
      h["x-user-group"] = group
    end
    for _, kv in ipairs(extra) do
      h[kv[1]] = kv[2]
    end
    if body ~= nil then
      h["content-type"] = "application/json"
    end
    -- wrk.format adds Content-Length when there is a body
    reqs[#reqs + 1] = wrk.format(method, path, h, body)
  end
  n = #reqs
  -- start each wrk thread at a different place in the cycle
  idx = math.random(0, n - 1)
end

function request()
  idx = idx % n + 1
  return reqs[idx]
end
