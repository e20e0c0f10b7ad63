/**
 * One relay process for the cluster benchmark: the real `startRelay` with the
 * environment's store and bus (PARLEY_STORE, PARLEY_BUS), every rate limit
 * lifted so the load generator measures the relay rather than its token buckets.
 * Prints `{"port":N}` once listening; exits cleanly on SIGTERM.
 */
import { type RateLimitConfig, defaultRateLimits, relayConfigFromEnv, startRelay } from '@parley/relay';

// Every bucket, whatever the relay adds later: the load generator's clients all come from 127.0.0.x.
const open = { burst: 1e9, perSecond: 1e9 };
const rateLimits: RateLimitConfig = { ...defaultRateLimits };
for (const bucket of Object.keys(rateLimits) as Array<keyof RateLimitConfig>) rateLimits[bucket] = open;
const config = relayConfigFromEnv(process.env, { port: 0, logLevel: 'warn', rateLimits });
const relay = await startRelay(config);
process.stdout.write(`${JSON.stringify({ port: relay.port })}\n`);
process.once('SIGTERM', () => {
  void relay.close().then(() => process.exit(0));
});

// Exit when the benchmark that started this process has gone (no orphans after a kill).
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) process.exit(0);
}, 1000).unref();
