-- Write a tenant only if its token is still the one the reader saw (see fill_nodes.lua).
-- KEYS: 1 tenant value, 2 tenant token, 3 stats hash.
-- ARGV: 1 token the reader saw, 2 tenant TTL (s), 3 stats TTL (s), 4 tenant JSON.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  redis.call('HINCRBY', KEYS[3], 'tenant.stale_fill_refusals', 1)
  redis.call('EXPIRE', KEYS[3], ARGV[3])
  return 0
end
redis.call('SET', KEYS[1], ARGV[4], 'EX', ARGV[2])
redis.call('HINCRBY', KEYS[3], 'tenant.fills', 1)
redis.call('EXPIRE', KEYS[3], ARGV[3])
return 1
