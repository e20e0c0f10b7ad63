/**
 * The anonymous (sealed-sender) WebSocket over a real listening relay: no
 * credentials at upgrade, requests dispatched as unauthenticated HTTP ones
 * from the socket's address, nothing ever pushed on it.
 */
import { randomBytes } from 'node:crypto';
import { type DeviceId, EnvelopeType, type SendRequest, encodeSendRequestBinary, processEnvelope } from '@parley/wire';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { RelayConfig } from '../src/config.js';
import { type Harness, type TestAccount, makeHarness } from './helpers.js';
import { multiRecipientBody, xor } from './sealed-fixtures.js';
import { TestSocket, jsonOf } from './ws-client.js';

const D1 = 1 as DeviceId;
const PROTOBUF = { 'content-type': 'application/x-protobuf' };
const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64');

let h: Harness;
let url: string;
const open = async (config: Partial<RelayConfig> = {}) => {
  h = await makeHarness(config);
  url = await h.built.app.listen({ host: '127.0.0.1', port: 0 });
};
afterEach(async () => {
  await h.built.close();
});

async function withAccessKey(a: TestAccount): Promise<Uint8Array> {
  const key = new Uint8Array(randomBytes(16));
  const res = await h.built.app.inject({
    method: 'PUT',
    url: '/v1/accounts/access-key',
    headers: { authorization: a.auth, 'content-type': 'application/json' },
    payload: { accessKey: b64(key) },
  });
  expect(res.statusCode).toBe(204);
  return key;
}

function sealedBody(to: TestAccount, content: Uint8Array = new Uint8Array(randomBytes(80))): Uint8Array {
  const req: SendRequest = {
    messages: [
      { type: EnvelopeType.UnidentifiedSender, destinationDevice: D1, destinationRegistrationId: to.registrationId, content },
    ],
    timestamp: h.clock.now(),
    urgent: true,
    messageId: new Uint8Array(randomBytes(16)),
  };
  return encodeSendRequestBinary(req);
}

/** The same request over plain HTTP, without credentials. */
async function overHttp(verb: 'GET' | 'PUT', path: string, body: Uint8Array, headers: Record<string, string>) {
  const res = await h.built.app.inject({ method: verb, url: path, headers, payload: Buffer.from(body) });
  return { status: res.statusCode, json: res.body ? res.json<unknown>() : undefined };
}

async function metric(name: string): Promise<string> {
  const text = await h.built.metrics.registry.metrics();
  return text.split('\n').find((l) => l.startsWith(name)) ?? '';
}

describe('the anonymous socket', () => {
  it('delivers a sealed send to the recipient without a source and answers as HTTP does', async () => {
    await open();
    const bob = await h.register('bob');
    const key = await withAccessKey(bob);
    const device = await TestSocket.connect(url, bob.auth);
    await device.nextRequest('/api/v1/queue/empty');

    const anon = await TestSocket.connectAnonymous(url);
    expect(h.built.gateway.anonymousSize).toBe(1);
    expect(h.built.gateway.size).toBe(1);
    expect(await metric('parley_relay_open_anonymous_sockets')).toBe('parley_relay_open_anonymous_sockets 1');

    const content = new Uint8Array(randomBytes(40));
    const res = await anon.request('PUT', `/v1/messages/${bob.accountId}`, sealedBody(bob, content), {
      ...PROTOBUF,
      'unidentified-access-key': b64(key),
    });
    expect([res.status, jsonOf(res.body)]).toEqual([200, {}]);
    const push = await device.nextRequest('/api/v1/message');
    const env = processEnvelope(push.body);
    expect(env).toMatchObject({ type: EnvelopeType.UnidentifiedSender, source: null, content });
    device.respond(push.id);

    // The trust root (an unauthenticated route) gives the same answer as over HTTP.
    const root = await anon.request('GET', '/v1/certificate/trust-root');
    expect([root.status, jsonOf(root.body)]).toEqual([
      200,
      (await overHttp('GET', '/v1/certificate/trust-root', new Uint8Array(0), {})).json,
    ]);
    expect((await anon.request('GET', '/v1/keepalive')).status).toBe(200);
    expect(await metric('parley_relay_socket_requests_total{socket="anonymous"}')).toBe(
      'parley_relay_socket_requests_total{socket="anonymous"} 3',
    );

    // Nothing was pushed: every frame the anonymous socket got was an answer to one of its requests.
    expect(anon.pending()).toEqual([]);
    await anon.close();
    await device.close();
  });

  it('answers a wrong or missing access key with the same 401 as HTTP and queues nothing', async () => {
    await open();
    const bob = await h.register('bob');
    await withAccessKey(bob);
    const anon = await TestSocket.connectAnonymous(url);
    const path = `/v1/messages/${bob.accountId}`;
    const wrong = { ...PROTOBUF, 'unidentified-access-key': b64(new Uint8Array(randomBytes(16))) };
    for (const headers of [wrong, PROTOBUF]) {
      const body = sealedBody(bob);
      const ws = await anon.request('PUT', path, body, headers);
      const http = await overHttp('PUT', path, body, headers);
      expect([ws.status, jsonOf(ws.body)]).toEqual([http.status, http.json]);
      expect(http.status).toBe(401);
      expect(http.json).toEqual(expect.objectContaining({ code: 'UNAUTHORIZED' }));
    }
    expect(await h.store.fetchQueue(bob.accountId, D1, 0, 10)).toEqual([]);
    await anon.close();
  });

  it('answers authenticated routes with 401, ignoring credentials inside frames', async () => {
    await open();
    const alice = await h.register('alice');
    const bob = await h.register('bob');
    const anon = await TestSocket.connectAnonymous(url);
    for (const [verb, path] of [
      ['GET', '/v1/accounts/whoami'],
      ['GET', '/v1/keys/count'],
      ['GET', '/v1/certificate/delivery'],
    ] as const) {
      const res = await anon.request(verb, path, new Uint8Array(0), { authorization: alice.auth });
      expect([res.status, jsonOf(res.body)]).toEqual([401, expect.objectContaining({ code: 'UNAUTHORIZED' })]);
    }
    // An identified send needs credentials, which a frame cannot carry.
    const send = await anon.request('PUT', `/v1/messages/${bob.accountId}`, sealedBody(bob), {
      ...PROTOBUF,
      authorization: alice.auth,
    });
    expect([send.status, jsonOf(send.body)]).toEqual([401, expect.objectContaining({ code: 'UNAUTHORIZED' })]);
    expect(await h.store.fetchQueue(bob.accountId, D1, 0, 10)).toEqual([]);
    await anon.close();
  });

  it('refuses an upgrade that carries credentials with 400', async () => {
    await open();
    const alice = await h.register('alice');
    const refused = await TestSocket.refusal(url, '/v1/websocket/anonymous', { authorization: alice.auth });
    expect([refused.status, refused.json]).toEqual([400, expect.objectContaining({ code: 'BAD_REQUEST' })]);
    expect(h.built.gateway.anonymousSize).toBe(0);
  });

  it('answers bad frames with id 0 and stays usable', async () => {
    await open();
    const anon = await TestSocket.connectAnonymous(url);
    anon.sendRaw(new Uint8Array([0xff, 0x01, 0x02]));
    let r = await anon.next((f) => f.kind === 'response' && f.id === 0n);
    expect(r.kind === 'response' && [r.status, jsonOf(r.body)]).toEqual([400, expect.objectContaining({ code: 'BAD_REQUEST' })]);
    anon.sendRaw('hello', false);
    r = await anon.next((f) => f.kind === 'response' && f.id === 0n);
    expect(r.kind === 'response' && r.status).toBe(400);
    // Over the frame limit: the frame cannot be read, so the answer has id 0.
    anon.sendRaw(new Uint8Array(300 * 1024).fill(7));
    r = await anon.next((f) => f.kind === 'response' && f.id === 0n);
    expect(r.kind === 'response' && [r.status, jsonOf(r.body)]).toEqual([413, expect.objectContaining({ code: 'TOO_LARGE' })]);
    expect((await anon.request('GET', '/v1/certificate/trust-root')).status).toBe(200);
    await anon.close();
  });

  it('carries multi-recipient uploads', async () => {
    await open();
    const alice = await h.register('alice');
    const bob = await h.register('bob');
    const carol = await h.register('carol');
    const kb = await withAccessKey(bob);
    const kc = await withAccessKey(carol);
    const body = await multiRecipientBody(h, alice, [bob, carol]);
    const anon = await TestSocket.connectAnonymous(url);
    const res = await anon.request('PUT', '/v1/messages/multi_recipient', body, {
      'content-type': 'application/vnd.parley.multi-recipient',
      'x-parley-timestamp': String(h.clock.now()),
      'unidentified-access-key': b64(xor([kb, kc])),
    });
    expect([res.status, jsonOf(res.body)]).toEqual([200, {}]);
    for (const r of [bob, carol]) {
      const q = await h.store.fetchQueue(r.accountId, D1, 0, 10);
      expect(q.map((e) => [e.type, e.source])).toEqual([[EnvelopeType.UnidentifiedSender, null]]);
    }
    await anon.close();
  });

  it('limits opening per address (429 with retry-after) and sealed sends per address as over HTTP', async () => {
    await open({ rateLimits: { anonymousSocket: { burst: 2, perSecond: 0 }, sealedAddress: { burst: 1, perSecond: 0 } } });
    const bob = await h.register('bob');
    const key = await withAccessKey(bob);
    const a = await TestSocket.connectAnonymous(url);
    const b = await TestSocket.connectAnonymous(url);
    const refused = await TestSocket.refusal(url, '/v1/websocket/anonymous');
    expect([refused.status, refused.json]).toEqual([429, expect.objectContaining({ code: 'RATE_LIMITED' })]);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);

    const headers = { ...PROTOBUF, 'unidentified-access-key': b64(key) };
    expect((await a.request('PUT', `/v1/messages/${bob.accountId}`, sealedBody(bob), headers)).status).toBe(200);
    // The second socket shares the address, so it shares the per-address sealed-send bucket.
    const limited = await b.request('PUT', `/v1/messages/${bob.accountId}`, sealedBody(bob), headers);
    expect([limited.status, jsonOf(limited.body)]).toEqual([429, expect.objectContaining({ code: 'RATE_LIMITED' })]);
    expect(Number(limited.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    await a.close();
    await b.close();
  });

  it('closes when idle past the timeout and with 1001 on shutdown', async () => {
    await open();
    const idle = await TestSocket.connectAnonymous(url);
    const busy = await TestSocket.connectAnonymous(url);
    h.clock.advance(60_000);
    expect((await busy.request('GET', '/v1/keepalive')).status).toBe(200);
    h.clock.advance(31_000);
    h.built.gateway.sweepIdle();
    expect((await idle.closed).code).toBe(1000);
    await vi.waitFor(() => expect(h.built.gateway.anonymousSize).toBe(1));
    const closing = h.built.close();
    expect((await busy.closed).code).toBe(1001);
    await closing;
    expect(await metric('parley_relay_open_anonymous_sockets')).toBe('parley_relay_open_anonymous_sockets 0');
  });
});
