/** In-memory token buckets behind the RateLimiter port. */
import type { RateLimitConfig } from './config.js';
import type { Clock, RateBucket, RateDecision, RateLimiter } from './ports.js';

interface Bucket {
  tokens: number;
  updatedAt: number;
}

const MAX_TRACKED = 100_000;
const ALLOWED: RateDecision = Object.freeze({ kind: 'allowed' });

/** One process's buckets; fine for a single node, replace with a shared one when clustered. */
export class MemoryRateLimiter implements RateLimiter {
  /** Per bucket kind, the buckets by key (a map per kind: no `kind:key` string built per take). */
  readonly #buckets = new Map<RateBucket, Map<string, Bucket>>();
  #tracked = 0;

  constructor(
    private readonly limits: RateLimitConfig,
    private readonly clock: Clock,
  ) {}

  take(bucket: RateBucket, key: string): RateDecision {
    const { burst, perSecond } = this.limits[bucket];
    const now = this.clock.now();
    let keys = this.#buckets.get(bucket);
    if (!keys) this.#buckets.set(bucket, (keys = new Map<string, Bucket>()));
    let b = keys.get(key);
    if (!b) {
      if (this.#tracked >= MAX_TRACKED) this.#prune(now);
      b = { tokens: burst, updatedAt: now };
      keys.set(key, b);
      this.#tracked++;
    }
    const elapsed = Math.max(0, now - b.updatedAt) / 1000;
    b.tokens = Math.min(burst, b.tokens + elapsed * perSecond);
    b.updatedAt = now;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return ALLOWED;
    }
    const retryAfterMs = perSecond > 0 ? Math.ceil(((1 - b.tokens) / perSecond) * 1000) : 60_000;
    return { kind: 'limited', retryAfterMs };
  }

  /** Forget buckets that have refilled completely (they behave like new ones). */
  #prune(now: number): void {
    for (const [bucket, keys] of this.#buckets) {
      const { burst, perSecond } = this.limits[bucket];
      for (const [key, b] of keys) {
        if (b.tokens + ((now - b.updatedAt) / 1000) * perSecond < burst) continue;
        keys.delete(key);
        this.#tracked--;
      }
    }
  }
}
