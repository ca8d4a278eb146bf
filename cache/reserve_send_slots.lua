-- Reserve send slots for one tenant, cluster-wide: GCRA with its theoretical arrival time
-- (TAT) in one key. Slots are `interval` apart; at most `count` are reserved, and none further
-- ahead than `horizon`. Atomic, so every process of every host shares the one pace.
-- KEYS: 1 the tenant's pace key.
-- ARGV: 1 interval between sends (ms), 2 slots wanted, 3 horizon (ms).
-- Returns {slot offsets from now (ms), ..., then the offset of the next free slot (ms)}.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local interval = tonumber(ARGV[1])
local wanted = tonumber(ARGV[2])
local horizon = now + tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
local reply = {}
while #reply < wanted and tat <= horizon do
  reply[#reply + 1] = tostring(tat - now)
  tat = tat + interval
end
-- The key outlives the pace it holds by a minute, then goes.
redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil(tat - now) + 60000)
reply[#reply + 1] = tostring(tat - now)
return reply
