/**
 * A RateLimiter shared by every relay node: the same token buckets as
 * MemoryRateLimiter, kept in Redis and updated by one Lua script so a take is
 * atomic across nodes. Time comes from the Redis server (`TIME`), so nodes
 * with skewed clocks still agree.
 *
 * Keys are `parley:rl:<bucket>:<hash>`, where the hash is a truncated SHA-256
 * of the caller's key: Redis never sees IP addresses or account ids. Each key
 * expires once its bucket would be full again, so idle buckets cost nothing.
 *
 * When Redis does not answer within `timeoutMs` the limiter lets the request
 * through (fail open) and reports it through `onError`: a rate-limit outage
 * must not become a messaging outage.
 */
import { createHash } from 'node:crypto';
import type { RateLimitConfig } from '../../config.js';
import type { RateBucket, RateLimiter } from '../../ports.js';

/** KEYS[1] bucket key; ARGV burst, perSecond. Returns {allowed 0|1, retryAfterMs}. */
const TAKE_SCRIPT = `
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 't', 'u')
local tokens = tonumber(b[1])
local updated = tonumber(b[2])
if tokens == nil or updated == nil then
  tokens = burst
  updated = now
end
local elapsed = math.max(0, now - updated) / 1000
tokens = math.min(burst, tokens + elapsed * rate)
local allowed = 0
local retry = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
elseif rate > 0 then
  retry = math.ceil((1 - tokens) / rate * 1000)
else
  retry = 60000
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'u', tostring(now))
local ttl = 60000
if rate > 0 then ttl = math.ceil(burst / rate * 1000) + 1000 end
redis.call('PEXPIRE', KEYS[1], ttl)
return {allowed, retry}
`;

/** The part of an ioredis client used here. */
interface RedisLike {
  eval(script: string, numKeys: number, ...args: Array<string | number>): Promise<unknown>;
  quit(): Promise<unknown>;
  disconnect(): void;
}

export interface RedisRateLimiterOptions {
  /** Give up on Redis after this long and allow the request (default 250 ms). */
  timeoutMs?: number;
  /** Called when Redis failed and a request was let through. */
  onError?: (err: unknown) => void;
  /** Key prefix (default `parley:rl`); tests use their own. */
  keyPrefix?: string;
}

export class RedisRateLimiter implements RateLimiter {
  readonly #prefix: string;

  constructor(
    private readonly redis: RedisLike,
    private readonly limits: RateLimitConfig,
    private readonly opts: RedisRateLimiterOptions = {},
  ) {
    this.#prefix = opts.keyPrefix ?? 'parley:rl';
  }

  async take(bucket: RateBucket, key: string): Promise<{ kind: 'allowed' } | { kind: 'limited'; retryAfterMs: number }> {
    const { burst, perSecond } = this.limits[bucket];
    const hashed = createHash('sha256').update(key).digest('base64url').slice(0, 22);
    let timer: NodeJS.Timeout | undefined;
    try {
      const res = await Promise.race([
        this.redis.eval(TAKE_SCRIPT, 1, `${this.#prefix}:${bucket}:${hashed}`, burst, perSecond),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error('rate limiter: redis timed out')), this.opts.timeoutMs ?? 250);
        }),
      ]);
      if (!Array.isArray(res) || typeof res[0] !== 'number' || typeof res[1] !== 'number')
        throw new Error('rate limiter: bad reply');
      return res[0] === 1 ? { kind: 'allowed' } : { kind: 'limited', retryAfterMs: res[1] };
    } catch (err) {
      this.opts.onError?.(err);
      return { kind: 'allowed' };
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    try {
      await this.redis.quit();
    } catch {
      this.redis.disconnect();
    }
  }
}

/**
 * Connect to Redis (`redis://host:port/db`) and return the limiter. Loads the
 * driver on first use.
 * @throws when Redis does not answer a first PING.
 */
export async function openRedisRateLimiter(
  url: string,
  limits: RateLimitConfig,
  opts: RedisRateLimiterOptions = {},
): Promise<RedisRateLimiter> {
  const { Redis } = await import('ioredis');
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, enableOfflineQueue: true, connectTimeout: 5_000 });
  // Connection errors surface as failed takes (and fail open); do not crash on the emitter.
  redis.on('error', () => undefined);
  try {
    await redis.connect();
    await redis.ping();
  } catch (err) {
    redis.disconnect();
    throw err;
  }
  return new RedisRateLimiter(redis, limits, opts);
}
