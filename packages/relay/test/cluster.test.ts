/**
 * Cluster adapters in one process: relay nodes sharing a PostgreSQL schema,
 * each with its own NATS connection, over real sockets. The multi-process
 * tests (kill -9, NATS restart) live in test/cluster/ at the repository root.
 */
import { randomBytes } from 'node:crypto';
import { IdentityKeyPair } from '@signalapp/libsignal-client';
import { type AccountId, type DeviceId, EnvelopeType, processEnvelope, encodeSendRequestBinary } from '@parley/wire';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { LocalBus } from '../src/adapters/bus/local.js';
import { NatsBus, openNatsBus } from '../src/adapters/bus/nats.js';
import { RedisRateLimiter, openRedisRateLimiter } from '../src/adapters/ratelimit/redis.js';
import { openPostgresStore } from '../src/adapters/store/postgres.js';
import { type BuiltRelay, buildRelay } from '../src/build.js';
import { resolveRateLimits } from '../src/config.js';
import type { Bus, BusSignal } from '../src/ports.js';
import { systemClock } from '../src/ports.js';
import { basicAuth, defaultTestConfig, newPassword, registerBody, silentLogger } from './helpers.js';
import { NATS_URL, PG_URL, REDIS_URL, servicesAvailable, uniqueName } from './services.js';
import { TestSocket } from './ws-client.js';

const available = await servicesAvailable('postgres', 'nats', 'redis');
const schemas: string[] = [];
const running: Array<{ close(): Promise<void> }> = [];

afterEach(async () => {
  for (const r of running.splice(0).reverse()) await r.close();
});
afterAll(async () => {
  if (!available || schemas.length === 0) return;
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  for (const s of schemas) await admin.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
  await admin.end();
});

interface Node {
  built: BuiltRelay;
  url: string;
}

async function startNode(schema: string, opts: { bus?: Bus; pollIntervalMs?: number } = {}): Promise<Node> {
  const store = await openPostgresStore(PG_URL, { schema, maxConnections: 4 });
  const bus = opts.bus ?? (await openNatsBus(NATS_URL));
  const built = buildRelay({
    store,
    bus,
    clock: systemClock,
    config: defaultTestConfig(),
    logger: silentLogger(),
    gateway: { pollIntervalMs: opts.pollIntervalMs ?? 0 },
  });
  const url = await built.app.listen({ host: '127.0.0.1', port: 0 });
  running.push({ close: () => built.close() });
  return { built, url };
}

interface Account {
  accountId: AccountId;
  registrationId: number;
  auth: string;
}

async function register(node: Node, username: string): Promise<Account> {
  const identity = IdentityKeyPair.generate();
  const password = newPassword();
  const registrationId = 1000 + Math.floor(Math.random() * 1000);
  const res = await fetch(`${node.url}/v1/accounts`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(registerBody(username, identity, password, registrationId)),
  });
  expect(res.status).toBe(200);
  const { accountId } = (await res.json()) as { accountId: AccountId };
  return { accountId, registrationId, auth: basicAuth(accountId, 1, password) };
}

async function send(node: Node, from: Account, to: Account, content: Uint8Array): Promise<number> {
  const body = encodeSendRequestBinary({
    messages: [
      { type: EnvelopeType.Ciphertext, destinationDevice: 1 as DeviceId, destinationRegistrationId: to.registrationId, content },
    ],
    timestamp: Date.now(),
    urgent: true,
    messageId: new Uint8Array(randomBytes(16)),
  });
  const res = await fetch(`${node.url}/v1/messages/${to.accountId}`, {
    method: 'PUT',
    headers: { authorization: from.auth, 'content-type': 'application/x-protobuf' },
    body,
  });
  return res.status;
}

/** Connect, ack the initial queue/empty, and return the socket. */
async function connect(node: Node, a: Account): Promise<TestSocket> {
  const sock = await TestSocket.connect(node.url, a.auth);
  const empty = await sock.nextRequest('/api/v1/queue/empty');
  sock.respond(empty.id);
  return sock;
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), ms))]);
}

describe.skipIf(!available)('cluster adapters (PostgreSQL + NATS + Redis)', () => {
  it('NATS bus: a wake-up published on one node reaches the subscriber on another, once', async () => {
    const a = await openNatsBus(NATS_URL);
    const b = await openNatsBus(NATS_URL);
    running.push(a, b);
    const key = `${crypto.randomUUID()}.1`;
    const got: BusSignal[] = [];
    const localGot: BusSignal[] = [];
    const off = b.subscribe(key, (s) => got.push(s));
    a.subscribe(key, (s) => localGot.push(s));
    await b.flush();
    a.publish(key, 'messages');
    a.publish(key, 'keysLow');
    await a.flush();
    await b.flush();
    await new Promise((r) => setTimeout(r, 100));
    expect(got).toEqual(['messages', 'keysLow']);
    // The publisher's own subscribers hear it directly, not a second time through the server.
    expect(localGot).toEqual(['messages', 'keysLow']);
    off();
    await b.flush();
    a.publish(key, 'messages');
    await a.flush();
    await new Promise((r) => setTimeout(r, 100));
    expect(got).toHaveLength(2);
    // Keys that are not device keys never become subjects.
    expect(() => a.publish('a.*.>', 'messages')).not.toThrow();
    expect(NatsBus.name).toBe('NatsBus');
  });

  it('delivers a message sent through node A to the recipient connected to node B, woken through NATS', async () => {
    const schema = uniqueName('c');
    schemas.push(schema);
    const a = await startNode(schema);
    const b = await startNode(schema);
    const alice = await register(a, 'alice');
    const bob = await register(b, 'bob');
    const sock = await connect(b, bob);
    const content = new Uint8Array(randomBytes(32));
    expect(await send(a, alice, bob, content)).toBe(200);
    // No poll on these nodes: only the NATS wake-up can deliver within the timeout.
    const push = await within(sock.nextRequest('/api/v1/message'), 5_000, 'push on node B');
    const env = processEnvelope(push.body);
    expect(env.content).toEqual(content);
    expect(env.source?.account).toBe(alice.accountId);
    sock.respond(push.id);
    await sock.close();
  });

  it('a new socket on node B closes the same device’s socket on node A with 4409', async () => {
    const schema = uniqueName('c');
    schemas.push(schema);
    const a = await startNode(schema);
    const b = await startNode(schema);
    const carol = await register(a, 'carol');
    const first = await connect(a, carol);
    await new Promise((r) => setTimeout(r, 50));
    const second = await connect(b, carol);
    expect((await within(first.closed, 5_000, '4409 on node A')).code).toBe(4409);
    // The newer socket stays open and usable.
    const res = await second.request('GET', '/v1/keepalive');
    expect(res.status).toBe(200);
    await second.close();
  });

  it('with every wake-up lost, the periodic poll still delivers', async () => {
    const schema = uniqueName('c');
    schemas.push(schema);
    // Separate in-process buses: the nodes cannot wake each other at all.
    const a = await startNode(schema, { bus: new LocalBus(), pollIntervalMs: 200 });
    const b = await startNode(schema, { bus: new LocalBus(), pollIntervalMs: 200 });
    const dan = await register(a, 'dan');
    const eve = await register(b, 'eve');
    const sock = await connect(b, eve);
    expect(await send(a, dan, eve, new Uint8Array([1, 2, 3]))).toBe(200);
    const push = await within(sock.nextRequest('/api/v1/message'), 5_000, 'push by poll');
    expect(processEnvelope(push.body).content).toEqual(new Uint8Array([1, 2, 3]));
    sock.respond(push.id);
    await sock.close();
  });

  it('Redis rate limiter: one bucket shared by two nodes; fails open when Redis does not answer', async () => {
    const limits = resolveRateLimits({ send: { burst: 3, perSecond: 0.001 } });
    const keyPrefix = uniqueName('parley_rl_test');
    const n1 = await openRedisRateLimiter(REDIS_URL, limits, { keyPrefix });
    const n2 = await openRedisRateLimiter(REDIS_URL, limits, { keyPrefix });
    running.push(n1, n2);
    const key = `${crypto.randomUUID()}.1`;
    const results = [
      await n1.take('send', key),
      await n2.take('send', key),
      await n1.take('send', key),
      await n2.take('send', key),
    ];
    expect(results.slice(0, 3)).toEqual([{ kind: 'allowed' }, { kind: 'allowed' }, { kind: 'allowed' }]);
    const last = results[3];
    expect(last?.kind).toBe('limited');
    if (last?.kind === 'limited') expect(last.retryAfterMs).toBeGreaterThan(1000);
    // Another key has its own bucket.
    expect(await n2.take('send', `${crypto.randomUUID()}.1`)).toEqual({ kind: 'allowed' });

    const errors: unknown[] = [];
    const hung = new RedisRateLimiter(
      { eval: () => new Promise(() => undefined), quit: async () => 'OK', disconnect: () => undefined },
      limits,
      { timeoutMs: 50, onError: (e) => errors.push(e) },
    );
    expect(await hung.take('send', key)).toEqual({ kind: 'allowed' });
    expect(errors).toHaveLength(1);
  });
});
