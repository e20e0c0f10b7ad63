/**
 * Group commit: the Batcher on its own, then through the relay (sends over
 * HTTP, acks over a real socket). Speed is the benchmark's business; these
 * tests only check that batching keeps every answer honest.
 */
import { randomBytes } from 'node:crypto';
import Database from '@signalapp/sqlcipher';
import { IdentityKeyPair } from '@signalapp/libsignal-client';
import { type DeviceId, EnvelopeType, encodeSendRequestBinary, processEnvelope, processRegisterResponse } from '@parley/wire';
import { describe, expect, it } from 'vitest';
import { LocalBus } from '../src/adapters/bus/local.js';
import { SqliteStore } from '../src/adapters/store/sqlite.js';
import { Batcher } from '../src/batching.js';
import { buildRelay } from '../src/build.js';
import { defaultRelayConfig } from '../src/config.js';
import { startRelay } from '../src/start.js';
import {
  ManualClock,
  basicAuth,
  defaultTestConfig,
  makeHarness,
  newPassword,
  registerBody,
  registerOverHttp,
  silentLogger,
  tempDataDir,
} from './helpers.js';
import { TestSocket } from './ws-client.js';

const D1 = 1 as DeviceId;

describe('Batcher', () => {
  it('runs the items submitted in one turn as one group and answers each caller with its own result', async () => {
    const groups: number[][] = [];
    const b = new Batcher<number, string>({
      maxItems: 100,
      run: async (items) => {
        groups.push(items);
        return items.map((i) => `r${i}`);
      },
    });
    const out = await Promise.all([1, 2, 3, 4].map((i) => b.submit(i)));
    expect(out).toEqual(['r1', 'r2', 'r3', 'r4']);
    expect(groups).toEqual([[1, 2, 3, 4]]);
  });

  it('answers an item that run settles early at once, and it keeps that answer when run then fails', async () => {
    let finish: (() => void) | undefined;
    const b = new Batcher<number, string>({
      maxItems: 100,
      run: async (items, settle) => {
        settle(0, 'early');
        await new Promise<void>((resolve) => (finish = resolve));
        throw new Error('failed after the early answer');
      },
    });
    const first = b.submit(1);
    const second = b.submit(2);
    expect(await first).toBe('early');
    finish?.();
    await expect(second).rejects.toThrow('failed after the early answer');
    await expect(first).resolves.toBe('early');
  });

  it('respects the item and weight caps, and an over-heavy item runs alone', async () => {
    const groups: number[][] = [];
    const b = new Batcher<number, number>({
      maxItems: 3,
      maxWeight: 10,
      weight: (n) => n,
      run: async (items) => {
        groups.push(items);
        return items;
      },
    });
    await Promise.all([1, 1, 1, 1, 6, 5, 20, 2].map((n) => b.submit(n)));
    expect(groups).toEqual([[1, 1, 1], [1, 6], [5], [20], [2]]);
  });

  it('queues items while a group is running and sends them together when it finishes', async () => {
    const groups: number[][] = [];
    let release: () => void = () => undefined;
    const b = new Batcher<number, number>({
      maxItems: 100,
      run: async (items) => {
        groups.push(items);
        if (groups.length === 1) await new Promise<void>((r) => (release = r));
        return items;
      },
    });
    const first = b.submit(1);
    await new Promise((r) => setImmediate(r));
    expect(groups).toEqual([[1]]);
    const later = [2, 3, 4].map((n) => b.submit(n));
    await new Promise((r) => setImmediate(r));
    expect(groups).toEqual([[1]]);
    release();
    expect(await Promise.all([first, ...later])).toEqual([1, 2, 3, 4]);
    expect(groups).toEqual([[1], [2, 3, 4]]);
  });

  it('rejects every caller of a failed group, keeps serving later groups, and drains', async () => {
    let fail = true;
    const b = new Batcher<number, number>({
      maxItems: 100,
      run: async (items) => {
        if (fail) throw new Error('commit failed');
        return items;
      },
    });
    const settled = await Promise.allSettled([1, 2, 3].map((n) => b.submit(n)));
    expect(settled.map((s) => s.status)).toEqual(['rejected', 'rejected', 'rejected']);
    fail = false;
    const p = b.submit(9);
    await b.drain();
    expect(await p).toBe(9);
  });

  it('rejects when run answers the wrong number of results', async () => {
    const b = new Batcher<number, number>({ maxItems: 10, run: async () => [1] });
    const settled = await Promise.allSettled([b.submit(1), b.submit(2)]);
    expect(settled.map((s) => s.status)).toEqual(['rejected', 'rejected']);
  });
});

describe('group commit through the relay', () => {
  it('concurrent sends from many devices are all answered 200 and queued exactly once', async () => {
    const h = await makeHarness();
    try {
      const bob = await h.register('gc.bob');
      const senders = await Promise.all(Array.from({ length: 10 }, (_, i) => h.register(`gc.sender${i}`)));
      const messageIds = senders.map(() => Array.from({ length: 5 }, () => new Uint8Array(randomBytes(16))));
      // Each send is also retried at once with the same message id: the retry is a duplicate, still 200.
      const results = await Promise.all(
        senders.flatMap((s, i) =>
          (messageIds[i] ?? []).flatMap((messageId) => [
            h.send(s, bob.accountId, [{ device: 1, registrationId: bob.registrationId }], { messageId }),
            h.send(s, bob.accountId, [{ device: 1, registrationId: bob.registrationId }], { messageId }),
          ]),
        ),
      );
      expect(results.every((r) => r.status === 200)).toBe(true);
      const queued = await h.store.fetchQueue(bob.accountId, D1, 0, 1000);
      expect(queued).toHaveLength(50);
      expect(new Set(queued.map((e) => Buffer.from(e.guid).toString('hex'))).size).toBe(50);
      for (const s of senders) expect(queued.filter((e) => e.source?.account === s.accountId)).toHaveLength(5);
    } finally {
      await h.built.close();
    }
  });

  it('a failing group transaction answers every waiting send with 500 and stores nothing', async () => {
    // The failure is injected in the database: while `failing` holds a row, every envelope insert aborts its transaction.
    const db = new Database(':memory:');
    const store = new SqliteStore(db);
    db.exec(`CREATE TEMP TABLE failing (x INTEGER);
      CREATE TEMP TRIGGER inject_failure BEFORE INSERT ON envelopes WHEN EXISTS (SELECT 1 FROM failing)
      BEGIN SELECT RAISE(ABORT, 'injected commit failure'); END;`);
    const setFailing = (on: boolean) => db.exec(on ? 'INSERT INTO failing VALUES (1)' : 'DELETE FROM failing');
    const built = buildRelay({ store, bus: new LocalBus(), clock: new ManualClock(), config: defaultTestConfig(), logger: silentLogger() });
    await built.app.ready();
    try {
      const register = async (username: string, registrationId: number) => {
        const identity = IdentityKeyPair.generate();
        const password = newPassword();
        const res = await built.app.inject({
          method: 'POST',
          url: '/v1/accounts',
          headers: { 'content-type': 'application/json' },
          payload: registerBody(username, identity, password, registrationId),
        });
        const { accountId } = processRegisterResponse(res.json());
        return { accountId, registrationId, auth: basicAuth(accountId, 1, password) };
      };
      const bob = await register('flaky.bob', 7);
      const senders = await Promise.all([1, 2, 3, 4, 5].map((i) => register(`flaky.s${i}`, 10 + i)));
      const send = (auth: string) =>
        built.app.inject({
          method: 'PUT',
          url: `/v1/messages/${bob.accountId}`,
          headers: { authorization: auth, 'content-type': 'application/x-protobuf' },
          payload: Buffer.from(
            encodeSendRequestBinary({
              messages: [{ type: EnvelopeType.Ciphertext, destinationDevice: D1, destinationRegistrationId: bob.registrationId, content: new Uint8Array(8) }],
              timestamp: 1,
              urgent: true,
              messageId: new Uint8Array(randomBytes(16)),
            }),
          ),
        });
      setFailing(true);
      const res = await Promise.all(senders.map((s) => send(s.auth)));
      expect(res.map((r) => r.statusCode)).toEqual([500, 500, 500, 500, 500]);
      expect(res.every((r) => (r.json<{ code: string }>().code === 'INTERNAL'))).toBe(true);
      expect(await store.fetchQueue(bob.accountId, D1, 0, 10)).toEqual([]);
      setFailing(false);
      expect((await send(senders[0]?.auth ?? '')).statusCode).toBe(200);
      expect(await store.fetchQueue(bob.accountId, D1, 0, 10)).toHaveLength(1);
    } finally {
      await built.close();
    }
  });

  describe('over a real socket', () => {
    it('acks that arrive together (some twice) each delete their envelope and cause exactly one delivery receipt', async () => {
      const dataDir = tempDataDir();
      const relay = await startRelay(defaultRelayConfig({ dataDir, port: 0, logLevel: 'silent' }));
      try {
        const alice = await registerOverHttp(relay.url, 'ack.alice', 2001);
        const bob = await registerOverHttp(relay.url, 'ack.bob', 2002);
        const n = 20;
        const sent = await Promise.all(
          Array.from({ length: n }, (_, i) =>
            fetch(`${relay.url}/v1/messages/${bob.accountId}`, {
              method: 'PUT',
              headers: { authorization: alice.auth, 'content-type': 'application/x-protobuf' },
              body: encodeSendRequestBinary({
                messages: [{ type: EnvelopeType.Ciphertext, destinationDevice: D1, destinationRegistrationId: bob.registrationId, content: new Uint8Array(16) }],
                timestamp: 5000 + i,
                urgent: true,
                messageId: new Uint8Array(randomBytes(16)),
              }),
            }),
          ),
        );
        expect(sent.map((r) => r.status)).toEqual(Array.from({ length: n }, () => 200));

        const b = await TestSocket.connect(relay.url, bob.auth);
        const pushes = [];
        for (let i = 0; i < n; i++) pushes.push(await b.nextRequest('/api/v1/message'));
        // All acks in one go, each sent twice: the repeat must not delete or receipt anything again.
        for (const p of pushes) {
          b.respond(p.id);
          b.respond(p.id);
        }
        await b.nextRequest('/api/v1/queue/empty');

        const a = await TestSocket.connect(relay.url, alice.auth);
        const receipts: number[] = [];
        for (let i = 0; i < n; i++) {
          const r = await a.nextRequest('/api/v1/message');
          const env = processEnvelope(r.body);
          expect(env.type).toBe(EnvelopeType.ServerDeliveryReceipt);
          expect(env.source).toEqual({ account: bob.accountId, device: 1 });
          receipts.push(env.clientTimestamp);
          a.respond(r.id);
        }
        await a.nextRequest('/api/v1/queue/empty');
        expect(receipts.sort((x, y) => x - y)).toEqual(Array.from({ length: n }, (_, i) => 5000 + i));
        expect(a.pending().filter((f) => f.kind === 'request' && f.path === '/api/v1/message')).toEqual([]);
        await Promise.all([a.close(), b.close()]);

        // Reconnecting redelivers nothing: every ack's delete stuck.
        const b2 = await TestSocket.connect(relay.url, bob.auth);
        await b2.nextRequest('/api/v1/queue/empty');
        expect(b2.pending().filter((f) => f.kind === 'request' && f.path === '/api/v1/message')).toEqual([]);
        await b2.close();
      } finally {
        await relay.close();
      }
    });
  });
});
