-- One round trip per lookup: the node, the tenant, both invalidation tokens, and hit/miss counts.
-- KEYS: 1 journey nodes hash, 2 journey token, 3 tenant value, 4 tenant token, 5 stats hash.
-- ARGV: 1 node id, 2 fresh random token, 3 token TTL (s), 4 stats TTL (s).
-- A miss with no token creates one, so every fill after a miss presents a token that existed:
-- a token lost to eviction, FLUSHALL or a restart then refuses the fill instead of admitting it.
local node = redis.call('HGET', KEYS[1], ARGV[1])
local journey_token = redis.call('GET', KEYS[2])
if not node and not journey_token then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
  journey_token = ARGV[2]
end
local tenant = redis.call('GET', KEYS[3])
local tenant_token = redis.call('GET', KEYS[4])
if not tenant and not tenant_token then
  redis.call('SET', KEYS[4], ARGV[2], 'EX', ARGV[3])
  tenant_token = ARGV[2]
end
redis.call('HINCRBY', KEYS[5], node and 'node.hits' or 'node.misses', 1)
redis.call('HINCRBY', KEYS[5], tenant and 'tenant.hits' or 'tenant.misses', 1)
redis.call('EXPIRE', KEYS[5], ARGV[4])
-- false (not nil) keeps the array's length: a nil would truncate the reply.
return {node, journey_token, tenant, tenant_token}
