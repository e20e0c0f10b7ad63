/**
 * External services the cluster tests need (PostgreSQL, NATS, Redis). In CI
 * (`CI=true`) a missing service is a failure; on a developer machine the
 * tests that need it are skipped with a printed reason.
 */
import { connect } from 'node:net';

export const PG_URL = process.env.PARLEY_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';
export const NATS_URL = process.env.PARLEY_TEST_NATS ?? 'nats://127.0.0.1:4222';
export const REDIS_URL = process.env.PARLEY_TEST_REDIS ?? 'redis://127.0.0.1:6379';

/** True when a TCP connection to the URL's host and port succeeds within `timeoutMs`. */
export function reachable(url: string, defaultPort: number, timeoutMs = 1500): Promise<boolean> {
  const u = new URL(url);
  const port = u.port === '' ? defaultPort : Number(u.port);
  return new Promise((resolve) => {
    const sock = connect({ host: u.hostname, port });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

const DEFAULT_PORTS: Record<string, number> = { postgres: 5432, nats: 4222, redis: 6379 };

/**
 * Checks every named service. Returns true when all answer; otherwise throws
 * under CI and returns false (after a console warning) elsewhere.
 */
export async function servicesAvailable(...names: Array<'postgres' | 'nats' | 'redis'>): Promise<boolean> {
  const urls = { postgres: PG_URL, nats: NATS_URL, redis: REDIS_URL };
  const missing: string[] = [];
  for (const name of names) if (!(await reachable(urls[name], DEFAULT_PORTS[name] ?? 0))) missing.push(`${name} (${urls[name]})`);
  if (missing.length === 0) return true;
  const msg = `unreachable service: ${missing.join(', ')}`;
  if (process.env.CI === 'true') throw new Error(`${msg} — CI requires it`);
  console.warn(`skipping cluster tests: ${msg}`);
  return false;
}

/** A name safe as a PostgreSQL identifier, unique enough for one test run. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${process.pid}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
}
