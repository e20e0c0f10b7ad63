/**
 * The relay process for the group benchmark: the real `startRelay` on the
 * embedded default (SQLite in PARLEY_DATA_DIR), every rate limit lifted — one
 * sender fanning out a thousand sealed 1:1 messages from 127.0.0.1 would
 * otherwise wait on the per-address sealed-sender bucket, which measures the
 * limiter rather than the relay. Prints `{"port":N}` once listening; exits
 * cleanly on SIGTERM and by itself when the benchmark process goes away.
 */
import { relayConfigFromEnv, startRelay } from '@parley/relay';

const open = { burst: 1e9, perSecond: 1e9 };
const relay = await startRelay(
  relayConfigFromEnv(process.env, {
    port: 0,
    logLevel: 'warn',
    rateLimits: { register: open, send: open, bundle: open, lookup: open, sealedRecipient: open, sealedAddress: open },
  }),
);
process.stdout.write(`${JSON.stringify({ port: relay.port })}\n`);
process.once('SIGTERM', () => {
  void relay.close().then(() => process.exit(0));
});
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) process.exit(0);
}, 1000).unref();
