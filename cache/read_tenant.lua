-- One round trip for a tenant alone (deliveries need its settings, not a node).
-- KEYS: 1 tenant value, 2 tenant token, 3 stats hash.
-- ARGV: 1 fresh random token, 2 token TTL (s), 3 stats TTL (s).
-- Like read.lua: a miss with no token creates one, so the fill that follows presents a token
-- that existed.
local tenant = redis.call('GET', KEYS[1])
local token = redis.call('GET', KEYS[2])
if not tenant and not token then
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
  token = ARGV[1]
end
redis.call('HINCRBY', KEYS[3], tenant and 'tenant.hits' or 'tenant.misses', 1)
redis.call('EXPIRE', KEYS[3], ARGV[3])
return {tenant, token}
