import { describe, expect, it } from 'vitest';
import { busKind, rateLimiterKind, relayConfigFromEnv, storeKind } from '../src/config.js';

describe('cluster configuration', () => {
  it('reads PARLEY_STORE, PARLEY_BUS, PARLEY_RATE_LIMITER and PARLEY_POLL_INTERVAL_MS; flags win', () => {
    const env = {
      PARLEY_STORE: 'postgres://relay@db:5432/parley',
      PARLEY_BUS: 'nats://n1:4222,nats://n2:4222',
      PARLEY_RATE_LIMITER: 'redis://cache:6379',
      PARLEY_POLL_INTERVAL_MS: '1500',
    };
    const c = relayConfigFromEnv(env);
    expect([c.store, c.bus, c.rateLimiter, c.pollIntervalMs]).toEqual([
      env.PARLEY_STORE,
      env.PARLEY_BUS,
      env.PARLEY_RATE_LIMITER,
      1500,
    ]);
    expect(relayConfigFromEnv(env, { store: 'sqlite', bus: 'local' })).toMatchObject({ store: 'sqlite', bus: 'local' });
    const plain = relayConfigFromEnv({});
    expect([plain.store, plain.bus, plain.rateLimiter]).toEqual([undefined, undefined, undefined]);
  });

  it('names the kind of each adapter and rejects anything else without echoing the URL', () => {
    expect(storeKind(undefined)).toBe('sqlite');
    expect(storeKind('postgresql://x')).toBe('postgres');
    expect(busKind('local')).toBe('local');
    expect(busKind('nats://a:1, tls://b:2')).toBe('nats');
    expect(rateLimiterKind('rediss://h')).toBe('redis');
    const secret = 'mysql://root:hunter2@db/x';
    expect(() => relayConfigFromEnv({ PARLEY_STORE: secret })).toThrow(RangeError);
    try {
      relayConfigFromEnv({ PARLEY_STORE: secret });
    } catch (err) {
      expect((err as Error).message).not.toContain('hunter2');
    }
    expect(() => relayConfigFromEnv({ PARLEY_BUS: 'amqp://x' })).toThrow(/bus must be/);
    expect(() => relayConfigFromEnv({ PARLEY_RATE_LIMITER: 'memcached://x' })).toThrow(/rate limiter/);
    expect(() => relayConfigFromEnv({ PARLEY_POLL_INTERVAL_MS: '-1' })).toThrow(RangeError);
  });
});
