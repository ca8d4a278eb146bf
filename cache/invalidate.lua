-- Invalidate in a constant number of commands, whatever the number of cached nodes: a fresh token
-- makes every fill prepared before now fail, and UNLINK drops the value (freed off the main thread).
-- KEYS: 1 cached value (nodes hash or tenant string), 2 its token, 3 stats hash.
-- ARGV: 1 fresh random token, 2 token TTL (s), 3 stats TTL (s), 4 stats group ('node' or 'tenant').
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
redis.call('UNLINK', KEYS[1])
redis.call('HINCRBY', KEYS[3], ARGV[4] .. '.invalidations', 1)
redis.call('EXPIRE', KEYS[3], ARGV[3])
return 1
