-- Write a journey's nodes only if its token is still the one the reader saw before reading the
-- database; an invalidation in between changed the token, so the reader's rows may be stale.
-- KEYS: 1 journey nodes hash, 2 journey token, 3 stats hash.
-- ARGV: 1 token the reader saw, 2 node TTL (s), 3 stats TTL (s), 4.. node id, node JSON, ...
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  redis.call('HINCRBY', KEYS[3], 'node.stale_fill_refusals', 1)
  redis.call('EXPIRE', KEYS[3], ARGV[3])
  return 0
end
-- unpack() is bounded by Lua's C stack (about 8000 values): write in slices of 500 pairs.
for first = 4, #ARGV, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, first, math.min(first + 999, #ARGV)))
end
-- The TTL starts at the first fill and is never extended, so the whole journey expires together
-- at most one node TTL after it was first cached, even if later misses keep adding nodes.
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
redis.call('HINCRBY', KEYS[3], 'node.fills', 1)
redis.call('EXPIRE', KEYS[3], ARGV[3])
return 1
