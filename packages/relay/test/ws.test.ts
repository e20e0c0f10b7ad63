import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  type AccountId,
  type DeviceId,
  EnvelopeType,
  encodeSendRequestBinary,
  processEnvelope,
} from '@parley/wire';
import { afterEach, describe, expect, it } from 'vitest';
import { defaultRelayConfig } from '../src/config.js';
import { startRelay } from '../src/start.js';
import { type Harness, type TestAccount, basicAuth, makeHarness, newPassword, registerOverHttp, tempDataDir } from './helpers.js';
import { TestSocket, jsonOf } from './ws-client.js';

const D1 = 1 as DeviceId;

function sendBody(to: TestAccount, content: Uint8Array, timestamp: number): Uint8Array {
  return encodeSendRequestBinary({
    messages: [{ type: EnvelopeType.Ciphertext, destinationDevice: D1, destinationRegistrationId: to.registrationId, content }],
    timestamp,
    urgent: true,
    messageId: new Uint8Array(randomBytes(16)),
  });
}

describe('relay over a real socket (listen(0))', () => {
  it('delivers a backlog, acks, queue/empty, 4409 on a second connection, redelivers unacked, and sends delivery receipts', async () => {
    const dataDir = tempDataDir();
    const relay = await startRelay(defaultRelayConfig({ dataDir, port: 0, logLevel: 'silent' }));
    try {
      const alice = await registerOverHttp(relay.url, 'alice', 1001);
      const bob = await registerOverHttp(relay.url, 'bob', 1002);
      const send = (content: Uint8Array, timestamp: number) =>
        fetch(`${relay.url}/v1/messages/${bob.accountId}`, {
          method: 'PUT',
          headers: { authorization: alice.auth, 'content-type': 'application/x-protobuf' },
          body: sendBody(bob, content, timestamp),
        });

      // A message waiting before Bob connects.
      const first = new Uint8Array(randomBytes(32));
      expect((await send(first, 111)).status).toBe(200);

      const s1 = await TestSocket.connect(relay.url, bob.auth);
      const low = await s1.nextRequest('/api/v1/keys/low');
      expect(jsonOf(low.body)).toEqual({ ecCount: 0, kyberCount: 0 });
      const push1 = await s1.nextRequest('/api/v1/message');
      const env1 = processEnvelope(push1.body);
      expect(env1).toMatchObject({
        type: EnvelopeType.Ciphertext,
        source: { account: alice.accountId, device: 1 },
        destination: { account: bob.accountId, device: 1 },
        clientTimestamp: 111,
        content: first,
      });
      s1.respond(push1.id);
      await s1.nextRequest('/api/v1/queue/empty');

      // A live message, pushed on wake-up and left unacknowledged.
      const second = new Uint8Array(randomBytes(32));
      expect((await send(second, 222)).status).toBe(200);
      const push2 = await s1.nextRequest('/api/v1/message');
      expect(processEnvelope(push2.body).content).toEqual(second);

      // A second connection replaces the first.
      const s2 = await TestSocket.connect(relay.url, bob.auth);
      expect((await s1.closed).code).toBe(4409);
      const again = await s2.nextRequest('/api/v1/message');
      const env2 = processEnvelope(again.body);
      expect(env2.content).toEqual(second);
      expect(env2.serverGuid).toEqual(processEnvelope(push2.body).serverGuid);
      s2.respond(again.id);
      await s2.nextRequest('/api/v1/queue/empty');
      expect((await s2.request('GET', '/v1/keepalive')).status).toBe(200);
      await s2.close();

      // Alice gets a server delivery receipt for each acknowledged message.
      const a = await TestSocket.connect(relay.url, alice.auth);
      const receipts: number[] = [];
      for (let i = 0; i < 2; i++) {
        const r = await a.nextRequest('/api/v1/message');
        const env = processEnvelope(r.body);
        expect(env.type).toBe(EnvelopeType.ServerDeliveryReceipt);
        expect(env.source).toEqual({ account: bob.accountId, device: 1 });
        expect(env.content).toHaveLength(0);
        receipts.push(env.clientTimestamp);
        a.respond(r.id);
      }
      expect(receipts).toEqual([111, 222]);
      await a.nextRequest('/api/v1/queue/empty');
      await a.close();
      await relay.close();
      // The database holds password hashes only, never the passwords.
      const files = readdirSync(dataDir).filter((f) => f.startsWith('relay.db'));
      expect(files).toContain('relay.db');
      const dump = Buffer.concat(files.map((f) => readFileSync(join(dataDir, f)))).toString('latin1');
      for (const secret of [alice.password, bob.password]) expect(dump).not.toContain(secret);
    } finally {
      await relay.close();
    }
  });
});

describe('WebSocket gateway', () => {
  let h: Harness;
  let url: string;
  const open = async (opts: Parameters<typeof makeHarness>[1] = {}) => {
    h = await makeHarness({}, opts);
    url = await h.built.app.listen({ host: '127.0.0.1', port: 0 });
  };
  afterEach(async () => {
    await h.built.close();
  });

  it('refuses the upgrade with 401 for wrong credentials and unknown accounts', async () => {
    await open();
    const alice = await h.register('alice');
    await expect(TestSocket.connect(url, basicAuth(alice.accountId, 1, newPassword()))).rejects.toThrow('status 401');
    await expect(TestSocket.connect(url, basicAuth('00000000-0000-4000-8000-000000000000', 1, alice.password))).rejects.toThrow('status 401');
    await expect(TestSocket.connect(url, 'Basic')).rejects.toThrow('status 401');
  });

  it('answers bad, huge and text frames with an error and keeps the socket open', async () => {
    await open();
    const alice = await h.register('alice');
    await h.uploadKeys(alice, 20, 20);
    const s = await TestSocket.connect(url, alice.auth);
    s.sendRaw(new Uint8Array([0xff, 0x01, 0x02]));
    let r = await s.next((f) => f.kind === 'response' && f.id === 0n);
    expect(r.kind === 'response' && r.status).toBe(400);
    s.sendRaw(new Uint8Array(300 * 1024).fill(7));
    r = await s.next((f) => f.kind === 'response' && f.id === 0n);
    expect(r.kind === 'response' && [r.status, jsonOf(r.body)]).toEqual([413, expect.objectContaining({ code: 'TOO_LARGE' })]);
    s.sendRaw('hello', false);
    r = await s.next((f) => f.kind === 'response' && f.id === 0n);
    expect(r.kind === 'response' && r.status).toBe(400);
    const unknown = await s.request('GET', '/v1/nothing');
    expect([unknown.status, jsonOf(unknown.body)]).toEqual([404, expect.objectContaining({ code: 'NOT_FOUND' })]);
    const badId = await s.request('GET', '/v1/keys/zzz/1');
    expect([badId.status, jsonOf(badId.body)]).toEqual([400, expect.objectContaining({ code: 'BAD_REQUEST' })]);
    const ok = await s.request('GET', '/v1/keepalive');
    expect(ok.status).toBe(200);
    const who = await s.request('GET', '/v1/accounts/whoami');
    expect(jsonOf(who.body)).toEqual({ accountId: alice.accountId, deviceId: 1, username: 'alice' });
    await s.close();
  });

  it('accepts sends over the socket with the same answers as HTTP', async () => {
    await open();
    const alice = await h.register('alice');
    const bob = await h.register('bob');
    const s = await TestSocket.connect(url, alice.auth);
    const body = sendBody(bob, new Uint8Array([1, 2, 3]), 5);
    const res = await s.request('PUT', `/v1/messages/${bob.accountId}`, body, { 'content-type': 'application/x-protobuf' });
    expect([res.status, jsonOf(res.body)]).toEqual([200, {}]);
    const stale = await s.request('PUT', `/v1/messages/${bob.accountId}`, sendBody({ ...bob, registrationId: 9 }, new Uint8Array([1]), 6), {
      'content-type': 'application/x-protobuf',
    });
    expect([stale.status, jsonOf(stale.body)]).toEqual([410, expect.objectContaining({ code: 'STALE_DEVICES', staleDevices: [1] })]);
    expect(await h.store.fetchQueue(bob.accountId, D1, 0, 10)).toHaveLength(1);
    await s.close();
  });

  it('pushes a backlog larger than the window in queue order, one window at a time', async () => {
    await open({ gateway: { window: 3 } });
    const alice = await h.register('alice');
    const bob = await h.register('bob');
    await h.uploadKeys(bob, 20, 20);
    for (let i = 0; i < 10; i++) {
      h.clock.advance(1);
      await h.send(alice, bob.accountId, [{ device: 1, registrationId: bob.registrationId, content: new Uint8Array([i]) }]);
    }
    const s = await TestSocket.connect(url, bob.auth);
    const seen: number[] = [];
    for (let i = 0; i < 10; i++) {
      const push = await s.nextRequest('/api/v1/message');
      // Never more than the window is outstanding.
      expect(s.pending().filter((f) => f.kind === 'request' && f.path === '/api/v1/message').length).toBeLessThanOrEqual(2);
      seen.push(processEnvelope(push.body).content[0] ?? -1);
      s.respond(push.id);
    }
    await s.nextRequest('/api/v1/queue/empty');
    expect(seen).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(await h.store.fetchQueue(bob.accountId, D1, 0, 100)).toEqual([]);
    await s.close();
  });

  it('keeps an envelope the client refused and pushes it again on the next connection', async () => {
    await open();
    const alice = await h.register('alice');
    const bob = await h.register('bob');
    await h.send(alice, bob.accountId, [{ device: 1, registrationId: bob.registrationId, content: new Uint8Array([42]) }]);
    const s1 = await TestSocket.connect(url, bob.auth);
    const push = await s1.nextRequest('/api/v1/message');
    s1.respond(push.id, 500);
    await s1.close();
    const s2 = await TestSocket.connect(url, bob.auth);
    const again = await s2.nextRequest('/api/v1/message');
    expect(processEnvelope(again.body).content).toEqual(new Uint8Array([42]));
    await s2.close();
  });

  it('tells a connected device when a bundle fetch leaves it low on one-time keys', async () => {
    await open();
    const alice = await h.register('alice');
    const bob = await h.register('bob');
    await h.uploadKeys(bob, 10, 12);
    const s = await TestSocket.connect(url, bob.auth);
    await s.nextRequest('/api/v1/queue/empty');
    const res = await h.built.app.inject({ method: 'GET', url: `/v1/keys/${bob.accountId}/1`, headers: { authorization: alice.auth } });
    expect(res.statusCode).toBe(200);
    const low = await s.nextRequest('/api/v1/keys/low');
    expect(jsonOf(low.body)).toEqual({ ecCount: 9, kyberCount: 11 });
    await s.close();
  });

  it('closes sockets that stay silent past the idle timeout', async () => {
    await open();
    const alice = await h.register('alice');
    const s = await TestSocket.connect(url, alice.auth);
    expect((await s.request('GET', '/v1/keepalive')).status).toBe(200);
    h.built.gateway.sweepIdle();
    expect(h.built.gateway.size).toBe(1);
    h.clock.advance(91_000);
    h.built.gateway.sweepIdle();
    expect((await s.closed).code).toBe(1000);
  });

  it('closes sockets with 1001 on shutdown and refuses requests while draining', async () => {
    await open();
    const alice = await h.register('alice');
    const s = await TestSocket.connect(url, alice.auth);
    const closing = h.built.close();
    const ready = await h.built.app.inject({ method: 'GET', url: '/readyz' });
    expect([ready.statusCode, ready.json()]).toEqual([503, expect.objectContaining({ code: 'SHUTTING_DOWN' })]);
    expect((await s.closed).code).toBe(1001);
    await closing;
    await expect(h.store.ping()).rejects.toThrow();
  });
});

export type { AccountId };
