/** In-memory token buckets behind the RateLimiter port. */
import type { RateLimitConfig } from './config.js';
import type { Clock, RateBucket, RateLimiter } from './ports.js';

interface Bucket {
  tokens: number;
  updatedAt: number;
}

const MAX_TRACKED = 100_000;

/** One process's buckets; fine for a single node, replace with a shared one when clustered. */
export class MemoryRateLimiter implements RateLimiter {
  readonly #buckets = new Map<string, Bucket>();

  constructor(
    private readonly limits: RateLimitConfig,
    private readonly clock: Clock,
  ) {}

  async take(bucket: RateBucket, key: string): Promise<{ kind: 'allowed' } | { kind: 'limited'; retryAfterMs: number }> {
    const { burst, perSecond } = this.limits[bucket];
    const now = this.clock.now();
    const id = `${bucket}:${key}`;
    let b = this.#buckets.get(id);
    if (!b) {
      if (this.#buckets.size >= MAX_TRACKED) this.#prune(now);
      b = { tokens: burst, updatedAt: now };
      this.#buckets.set(id, b);
    }
    const elapsed = Math.max(0, now - b.updatedAt) / 1000;
    b.tokens = Math.min(burst, b.tokens + elapsed * perSecond);
    b.updatedAt = now;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return { kind: 'allowed' };
    }
    const retryAfterMs = perSecond > 0 ? Math.ceil(((1 - b.tokens) / perSecond) * 1000) : 60_000;
    return { kind: 'limited', retryAfterMs };
  }

  /** Forget buckets that have refilled completely (they behave like new ones). */
  #prune(now: number): void {
    for (const [id, b] of this.#buckets) {
      const bucket = id.slice(0, id.indexOf(':')) as RateBucket;
      const { burst, perSecond } = this.limits[bucket];
      if (b.tokens + ((now - b.updatedAt) / 1000) * perSecond >= burst) this.#buckets.delete(id);
    }
  }
}
