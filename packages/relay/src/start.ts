/**
 * Start a relay with the adapters its config names: by default the embedded
 * ones (SQLite store, in-process bus, in-memory rate limits); in a cluster
 * PostgreSQL, NATS and Redis. Cluster drivers load only when named.
 */
import { LocalBus } from './adapters/bus/local.js';
import { openSqliteStore } from './adapters/store/sqlite.js';
import { openBlobStore } from './adapters/blobs/open.js';
import type { BlobStore } from './blobstore.js';
import { buildRelay } from './build.js';
import { type RelayConfig, busKind, rateLimiterKind, resolveRateLimits, storeKind } from './config.js';
import type { Bus, RateLimiter, Store } from './ports.js';
import { systemClock } from './ports.js';

/** A listening relay. `close()` drains it (see BuiltRelay.close). */
export interface RunningRelay {
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Poll interval used with a network bus when the config does not set one. */
export const DEFAULT_CLUSTER_POLL_MS = 2_000;

async function openStore(config: RelayConfig): Promise<Store> {
  if (storeKind(config.store) === 'sqlite') return openSqliteStore(config.dataDir);
  const { openPostgresStore } = await import('./adapters/store/postgres.js');
  return openPostgresStore(config.store as string);
}

async function openBus(config: RelayConfig): Promise<Bus> {
  if (busKind(config.bus) === 'local') return new LocalBus();
  const { openNatsBus } = await import('./adapters/bus/nats.js');
  return openNatsBus(config.bus as string);
}

/** Open the configured store, bus and rate limiter, build the relay and listen on `host:port`. */
export async function startRelay(config: RelayConfig): Promise<RunningRelay> {
  const kinds = { store: storeKind(config.store), bus: busKind(config.bus), rateLimiter: rateLimiterKind(config.rateLimiter) };
  const closers: Array<() => Promise<void>> = [];
  const cleanup = async () => {
    for (const c of closers.reverse()) await c().catch(() => undefined);
  };
  let store: Store;
  let bus: Bus;
  let limiter: (RateLimiter & { close(): Promise<void> }) | undefined;
  let blobs: BlobStore;
  try {
    store = await openStore(config);
    closers.push(() => store.close());
    bus = await openBus(config);
    closers.push(() => bus.close());
    if (kinds.rateLimiter === 'redis') {
      const { openRedisRateLimiter } = await import('./adapters/ratelimit/redis.js');
      limiter = await openRedisRateLimiter(config.rateLimiter as string, resolveRateLimits(config.rateLimits));
      closers.push(() => limiter?.close() ?? Promise.resolve());
    }
    blobs = await openBlobStore(config);
    closers.push(() => blobs.close());
  } catch (err) {
    await cleanup();
    throw err;
  }
  const pollIntervalMs = config.pollIntervalMs ?? (kinds.bus === 'local' ? 0 : DEFAULT_CLUSTER_POLL_MS);
  const built = buildRelay({
    store,
    bus,
    clock: systemClock,
    config,
    blobs,
    ...(limiter ? { limiter } : {}),
    gateway: { pollIntervalMs },
  });
  const close = async () => {
    await built.close();
    await limiter?.close();
  };
  try {
    await built.app.listen({ host: config.host, port: config.port });
  } catch (err) {
    await close();
    throw err;
  }
  const addr = built.app.server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : config.port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  const url = `http://${host}:${port}`;
  // Kinds only: the URLs may carry passwords.
  built.log.info({ url, ...kinds }, 'relay listening');
  return { url, port, close };
}
