import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { IdentityKeyPair } from '@signalapp/libsignal-client';
import { type AccountId, type DeviceId, EnvelopeType, encodeKeyUploadRequest, encodeSendRequestBinary } from '@parley/wire';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { Store } from '../src/ports.js';
import {
  type Harness,
  basicAuth,
  defaultTestConfig,
  makeHarness,
  newPassword,
  oneTimeEc,
  registerBody,
  signedEc,
  signedKyber,
} from './helpers.js';

let h: Harness;
afterEach(async () => {
  await h.built.close();
});

const D1 = 1 as DeviceId;
const json = { 'content-type': 'application/json' };

describe('registration', () => {
  it('registers, answers whoami, and refuses a taken username in any case', async () => {
    h = await makeHarness();
    const alice = await h.register('Alice');
    expect(alice.accountId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    const who = await h.built.app.inject({ method: 'GET', url: '/v1/accounts/whoami', headers: { authorization: alice.auth } });
    expect(who.statusCode).toBe(200);
    expect(who.json()).toEqual({ accountId: alice.accountId, deviceId: 1, username: 'alice' });
    const again = await h.built.app.inject({
      method: 'POST',
      url: '/v1/accounts',
      headers: json,
      payload: registerBody('ALICE', IdentityKeyPair.generate(), newPassword(), 7),
    });
    expect(again.statusCode).toBe(409);
    expect(again.json()).toMatchObject({ code: 'USERNAME_TAKEN' });
  });

  it('refuses a registration whose keys are not signed by the identity key, storing nothing', async () => {
    h = await makeHarness();
    const identity = IdentityKeyPair.generate();
    const body = registerBody('mallory', identity, newPassword(), 9);
    body.kyberLastResortKey = { ...body.kyberLastResortKey, signature: Buffer.from(IdentityKeyPair.generate().privateKey.sign(new Uint8Array([1]))).toString('base64') };
    const res = await h.built.app.inject({ method: 'POST', url: '/v1/accounts', headers: json, payload: body });
    expect(res.statusCode).toBe(422);
    expect(res.json()).toMatchObject({ code: 'BAD_SIGNATURE' });
    expect(await h.store.lookupUsername('mallory')).toBeNull();
  });

  it('answers 400 for malformed bodies', async () => {
    h = await makeHarness();
    for (const payload of ['{not json', '[]', JSON.stringify({ username: 'ok_name' })]) {
      const res = await h.built.app.inject({ method: 'POST', url: '/v1/accounts', headers: json, payload });
      expect(res.statusCode).toBe(400);
      expect(res.json()).toMatchObject({ code: 'BAD_REQUEST' });
    }
  });

  it('requires a valid invite code in invite mode', async () => {
    h = await makeHarness({ inviteCodes: ['let-me-in', 'second-code'] });
    const post = (inviteCode: string | null, username: string) =>
      h.built.app.inject({
        method: 'POST',
        url: '/v1/accounts',
        headers: json,
        payload: registerBody(username, IdentityKeyPair.generate(), newPassword(), 11, inviteCode),
      });
    for (const code of [null, 'let-me-i', 'wrong']) {
      const res = await post(code, 'nina');
      expect(res.statusCode).toBe(403);
      expect(res.json()).toMatchObject({ code: 'INVITE_REQUIRED' });
    }
    expect(await h.store.lookupUsername('nina')).toBeNull();
    expect((await post('second-code', 'nina')).statusCode).toBe(200);
  });

  it('rate-limits registrations per IP with Retry-After', async () => {
    h = await makeHarness({ rateLimits: { register: { burst: 2, perSecond: 0.1 } } });
    await h.register('user1');
    await h.register('user2');
    const res = await h.built.app.inject({
      method: 'POST',
      url: '/v1/accounts',
      headers: json,
      payload: registerBody('user3', IdentityKeyPair.generate(), newPassword(), 12),
    });
    expect(res.statusCode).toBe(429);
    expect(res.json()).toMatchObject({ code: 'RATE_LIMITED' });
    expect(res.headers['retry-after']).toBe('10');
    expect(await h.store.lookupUsername('user3')).toBeNull();
  });
});

describe('authentication', () => {
  it('answers 401 identically for a wrong password and an unknown account', async () => {
    h = await makeHarness();
    const alice = await h.register('alice');
    const wrong = await h.built.app.inject({
      method: 'GET',
      url: '/v1/accounts/whoami',
      headers: { authorization: basicAuth(alice.accountId, 1, newPassword()) },
    });
    const unknown = await h.built.app.inject({
      method: 'GET',
      url: '/v1/accounts/whoami',
      headers: { authorization: basicAuth('00000000-0000-4000-8000-000000000000', 1, alice.password) },
    });
    const otherDevice = await h.built.app.inject({
      method: 'GET',
      url: '/v1/accounts/whoami',
      headers: { authorization: basicAuth(alice.accountId, 2, alice.password) },
    });
    for (const res of [wrong, unknown, otherDevice]) {
      expect(res.statusCode).toBe(401);
      expect(res.body).toBe(JSON.stringify({ code: 'UNAUTHORIZED', message: 'missing or wrong credentials' }));
    }
  });

  it('requires auth on every route outside the allowlist', async () => {
    h = await makeHarness();
    const alice = await h.register('alice');
    const routes: [string, string][] = [
      ['GET', '/v1/accounts/whoami'],
      ['GET', '/v1/accounts/username/alice'],
      ['PUT', '/v1/keys'],
      ['GET', '/v1/keys/count'],
      ['GET', `/v1/keys/${alice.accountId}/1`],
      ['PUT', `/v1/messages/${alice.accountId}`],
      ['GET', '/v1/websocket'],
      ['GET', '/v1/keepalive'],
    ];
    for (const [method, url] of routes) {
      for (const authorization of [undefined, 'Bearer x', 'Basic !!!', basicAuth(alice.accountId, 1, 'short')]) {
        const res = await h.built.app.inject({ method: method as 'GET', url, headers: authorization ? { authorization } : {} });
        expect(res.statusCode, `${method} ${url}`).toBe(401);
        expect(res.json()).toMatchObject({ code: 'UNAUTHORIZED' });
      }
    }
    for (const url of ['/healthz', '/readyz', '/metrics']) expect((await h.built.app.inject({ method: 'GET', url })).statusCode).toBe(200);
  });
});

describe('usernames', () => {
  it('looks up a username (normalized) and answers 404 for unknown ones', async () => {
    h = await makeHarness();
    const alice = await h.register('alice');
    const bob = await h.register('bob');
    const found = await h.built.app.inject({ method: 'GET', url: '/v1/accounts/username/ALICE', headers: { authorization: bob.auth } });
    expect(found.json()).toEqual({ accountId: alice.accountId });
    const missing = await h.built.app.inject({ method: 'GET', url: '/v1/accounts/username/nobody', headers: { authorization: bob.auth } });
    expect(missing.statusCode).toBe(404);
    expect(missing.json()).toMatchObject({ code: 'NOT_FOUND' });
    const bad = await h.built.app.inject({ method: 'GET', url: '/v1/accounts/username/a', headers: { authorization: bob.auth } });
    expect(bad.statusCode).toBe(400);
  });

  it('rate-limits lookups per device', async () => {
    h = await makeHarness({ rateLimits: { lookup: { burst: 1, perSecond: 1 } } });
    const alice = await h.register('alice');
    const get = () => h.built.app.inject({ method: 'GET', url: '/v1/accounts/username/alice', headers: { authorization: alice.auth } });
    expect((await get()).statusCode).toBe(200);
    const limited = await get();
    expect(limited.statusCode).toBe(429);
    expect(limited.headers['retry-after']).toBe('1');
    h.clock.advance(1000);
    expect((await get()).statusCode).toBe(200);
  });
});

describe('keys', () => {
  it('uploads keys, counts them and serves a bundle that consumes one of each', async () => {
    h = await makeHarness();
    const alice = await h.register('alice');
    const bob = await h.register('bob');
    await h.uploadKeys(alice, 3, 2);
    const count = await h.built.app.inject({ method: 'GET', url: '/v1/keys/count', headers: { authorization: alice.auth } });
    expect(count.json()).toEqual({ ecCount: 3, kyberCount: 2 });
    const bundle = await h.built.app.inject({ method: 'GET', url: `/v1/keys/${alice.accountId}/*`, headers: { authorization: bob.auth } });
    expect(bundle.statusCode).toBe(200);
    const b = bundle.json<{ identityKey: string; devices: { deviceId: number; registrationId: number; preKey: { keyId: number } | null; kyberPreKey: { keyId: number } }[] }>();
    expect(b.identityKey).toBe(Buffer.from(alice.identity.publicKey.serialize()).toString('base64'));
    expect(b.devices).toHaveLength(1);
    expect(b.devices[0]).toMatchObject({ deviceId: 1, registrationId: alice.registrationId, preKey: { keyId: 1 }, kyberPreKey: { keyId: 1 } });
    expect(await h.store.keyCounts(alice.accountId, D1)).toEqual({ ecCount: 2, kyberCount: 1 });
  });

  it('answers 404 for unknown accounts or devices and 400 for malformed ids', async () => {
    h = await makeHarness();
    const alice = await h.register('alice');
    const get = (url: string) => h.built.app.inject({ method: 'GET', url, headers: { authorization: alice.auth } });
    expect((await get('/v1/keys/00000000-0000-4000-8000-000000000000/1')).statusCode).toBe(404);
    expect((await get(`/v1/keys/${alice.accountId}/2`)).json()).toMatchObject({ code: 'NOT_FOUND' });
    expect((await get(`/v1/keys/${alice.accountId}/0`)).json()).toMatchObject({ code: 'BAD_REQUEST' });
    expect((await get('/v1/keys/not-a-uuid/1')).json()).toMatchObject({ code: 'BAD_REQUEST' });
  });

  it('refuses an upload with one bad Kyber signature and stores none of it (422)', async () => {
    h = await makeHarness();
    const alice = await h.register('alice');
    const stranger = IdentityKeyPair.generate();
    const newSigned = signedEc(alice.identity, 50);
    const body = encodeKeyUploadRequest({
      preKeys: [oneTimeEc(1), oneTimeEc(2)],
      kyberPreKeys: [signedKyber(alice.identity, 1), signedKyber(stranger, 2)],
      signedPreKey: newSigned,
      kyberLastResortKey: null,
    });
    const res = await h.built.app.inject({ method: 'PUT', url: '/v1/keys', headers: { authorization: alice.auth }, payload: body });
    expect(res.statusCode).toBe(422);
    expect(res.json()).toMatchObject({ code: 'BAD_SIGNATURE' });
    expect(await h.store.keyCounts(alice.accountId, D1)).toEqual({ ecCount: 0, kyberCount: 0 });
    const claim = await h.store.claimBundle(alice.accountId, D1);
    expect(claim.kind === 'bundle' && claim.devices[0]?.signedPreKey.keyId).toBe(1);
  });

  it('refuses a signed pre-key signed by another identity (422)', async () => {
    h = await makeHarness();
    const alice = await h.register('alice');
    const body = encodeKeyUploadRequest({
      preKeys: [],
      kyberPreKeys: [],
      signedPreKey: signedEc(IdentityKeyPair.generate(), 2),
      kyberLastResortKey: null,
    });
    const res = await h.built.app.inject({ method: 'PUT', url: '/v1/keys', headers: { authorization: alice.auth }, payload: body });
    expect(res.statusCode).toBe(422);
  });

  it('rate-limits bundle fetches per device', async () => {
    h = await makeHarness({ rateLimits: { bundle: { burst: 1, perSecond: 0.5 } } });
    const alice = await h.register('alice');
    const get = () => h.built.app.inject({ method: 'GET', url: `/v1/keys/${alice.accountId}/1`, headers: { authorization: alice.auth } });
    expect((await get()).statusCode).toBe(200);
    const res = await get();
    expect(res.statusCode).toBe(429);
    expect(res.headers['retry-after']).toBe('2');
  });
});

describe('send', () => {
  it('stores a protobuf or JSON send for the destination device and answers 200 {}', async () => {
    h = await makeHarness();
    const alice = await h.register('alice');
    const bob = await h.register('bob');
    const content = new Uint8Array(randomBytes(100));
    const r1 = await h.send(alice, bob.accountId, [{ device: 1, registrationId: bob.registrationId, content }]);
    expect(r1).toEqual({ status: 200, body: {} });
    const r2 = await h.send(alice, bob.accountId, [{ device: 1, registrationId: bob.registrationId }], { json: true });
    expect(r2.status).toBe(200);
    const queue = await h.store.fetchQueue(bob.accountId, D1, 0, 10);
    expect(queue).toHaveLength(2);
    expect(queue[0]).toMatchObject({
      type: EnvelopeType.Ciphertext,
      source: { account: alice.accountId, device: 1 },
      destination: { account: bob.accountId, device: 1 },
      content,
      serverTimestamp: h.clock.now(),
    });
  });

  it('answers 409 MISMATCHED_DEVICES and stores nothing', async () => {
    h = await makeHarness();
    const alice = await h.register('alice');
    const bob = await h.register('bob');
    const wrong = await h.send(alice, bob.accountId, [{ device: 2, registrationId: 5 }]);
    expect(wrong).toEqual({
      status: 409,
      body: { code: 'MISMATCHED_DEVICES', message: expect.any(String) as string, missingDevices: [1], extraDevices: [2] },
    });
    // To one's own account the sending device is excluded, so listing it is "extra".
    const self = await h.send(alice, alice.accountId, [{ device: 1, registrationId: alice.registrationId }]);
    expect(self.status).toBe(409);
    expect(self.body).toMatchObject({ missingDevices: [], extraDevices: [1] });
    expect(await h.store.fetchQueue(bob.accountId, D1, 0, 10)).toEqual([]);
    expect(await h.store.fetchQueue(alice.accountId, D1, 0, 10)).toEqual([]);
  });

  it('answers 410 STALE_DEVICES and stores nothing; a retry with the same id then succeeds', async () => {
    h = await makeHarness();
    const alice = await h.register('alice');
    const bob = await h.register('bob');
    const messageId = new Uint8Array(randomBytes(16));
    const stale = await h.send(alice, bob.accountId, [{ device: 1, registrationId: bob.registrationId + 1 }], { messageId });
    expect(stale.status).toBe(410);
    expect(stale.body).toMatchObject({ code: 'STALE_DEVICES', staleDevices: [1] });
    expect(await h.store.fetchQueue(bob.accountId, D1, 0, 10)).toEqual([]);
    const retry = await h.send(alice, bob.accountId, [{ device: 1, registrationId: bob.registrationId }], { messageId });
    expect(retry.status).toBe(200);
    expect(await h.store.fetchQueue(bob.accountId, D1, 0, 10)).toHaveLength(1);
  });

  it('is idempotent by message id', async () => {
    h = await makeHarness();
    const alice = await h.register('alice');
    const bob = await h.register('bob');
    const messageId = new Uint8Array(randomBytes(16));
    for (let i = 0; i < 3; i++) {
      const res = await h.send(alice, bob.accountId, [{ device: 1, registrationId: bob.registrationId }], { messageId });
      expect(res).toEqual({ status: 200, body: {} });
    }
    expect(await h.store.fetchQueue(bob.accountId, D1, 0, 10)).toHaveLength(1);
  });

  it('answers 404 for an unknown destination, 415 for other media types, 413 for oversized content', async () => {
    h = await makeHarness();
    const alice = await h.register('alice');
    const bob = await h.register('bob');
    expect((await h.send(alice, '00000000-0000-4000-8000-000000000000' as AccountId, [{ device: 1, registrationId: 1 }])).status).toBe(404);
    const text = await h.built.app.inject({
      method: 'PUT',
      url: `/v1/messages/${bob.accountId}`,
      headers: { authorization: alice.auth, 'content-type': 'text/plain' },
      payload: 'hello',
    });
    expect(text.statusCode).toBe(415);
    expect(text.json()).toMatchObject({ code: 'UNSUPPORTED_MEDIA_TYPE' });
    const big = await h.send(alice, bob.accountId, [{ device: 1, registrationId: bob.registrationId, content: new Uint8Array(96 * 1024 + 1) }]);
    expect(big.status).toBe(413);
    expect(big.body).toMatchObject({ code: 'TOO_LARGE' });
    const huge = await h.built.app.inject({
      method: 'PUT',
      url: `/v1/messages/${bob.accountId}`,
      headers: { authorization: alice.auth, 'content-type': 'application/x-protobuf' },
      payload: Buffer.alloc(2 * 1024 * 1024 + 1),
    });
    expect(huge.statusCode).toBe(413);
    expect(huge.json()).toMatchObject({ code: 'TOO_LARGE' });
    const garbage = await h.built.app.inject({
      method: 'PUT',
      url: `/v1/messages/${bob.accountId}`,
      headers: { authorization: alice.auth, 'content-type': 'application/x-protobuf' },
      payload: Buffer.from([0xff, 0xff, 0xff]),
    });
    expect(garbage.statusCode).toBe(400);
    expect(await h.store.fetchQueue(bob.accountId, D1, 0, 10)).toEqual([]);
  });

  it('accepts 100 quick sends with the default limits', async () => {
    h = await makeHarness();
    const alice = await h.register('alice');
    const bob = await h.register('bob');
    const results = await Promise.all(
      Array.from({ length: 100 }, () => h.send(alice, bob.accountId, [{ device: 1, registrationId: bob.registrationId }])),
    );
    expect(results.every((r) => r.status === 200)).toBe(true);
    expect(await h.store.fetchQueue(bob.accountId, D1, 0, 1000)).toHaveLength(100);
  });

  it('answers 429 with Retry-After when the send bucket is empty and stores nothing', async () => {
    h = await makeHarness({ rateLimits: { send: { burst: 2, perSecond: 1 } } });
    const alice = await h.register('alice');
    const bob = await h.register('bob');
    const to = [{ device: 1, registrationId: bob.registrationId }];
    expect((await h.send(alice, bob.accountId, to)).status).toBe(200);
    expect((await h.send(alice, bob.accountId, to)).status).toBe(200);
    const res = await h.built.app.inject({
      method: 'PUT',
      url: `/v1/messages/${bob.accountId}`,
      headers: { authorization: alice.auth, 'content-type': 'application/x-protobuf' },
      payload: Buffer.from(
        encodeSendRequestBinary({
          messages: [{ type: EnvelopeType.Ciphertext, destinationDevice: D1, destinationRegistrationId: bob.registrationId, content: new Uint8Array([1]) }],
          timestamp: 1,
          urgent: true,
          messageId: new Uint8Array(16),
        }),
      ),
    });
    expect(res.statusCode).toBe(429);
    expect(res.headers['retry-after']).toBe('1');
    expect(res.json()).toMatchObject({ code: 'RATE_LIMITED' });
    expect(await h.store.fetchQueue(bob.accountId, D1, 0, 10)).toHaveLength(2);
    h.clock.advance(1000);
    expect((await h.send(alice, bob.accountId, to)).status).toBe(200);
  });
});

describe('operations', () => {
  it('purges envelopes older than the retention period', async () => {
    h = await makeHarness({ messageTtlMs: 1000 });
    const alice = await h.register('alice');
    const bob = await h.register('bob');
    await h.send(alice, bob.accountId, [{ device: 1, registrationId: bob.registrationId }]);
    h.clock.advance(600);
    await h.send(alice, bob.accountId, [{ device: 1, registrationId: bob.registrationId }]);
    h.clock.advance(600);
    expect(await h.built.purge()).toMatchObject({ envelopes: 1 });
    expect(await h.store.fetchQueue(bob.accountId, D1, 0, 10)).toHaveLength(1);
  });

  it('answers unknown routes and verbs with 404 NOT_FOUND', async () => {
    h = await makeHarness();
    for (const [method, url] of [['GET', '/nope'], ['PATCH', '/v1/keys'], ['DELETE', '/v1/accounts']] as const) {
      const res = await h.built.app.inject({ method, url });
      expect(res.statusCode).toBe(404);
      expect(res.json()).toMatchObject({ code: 'NOT_FOUND' });
    }
  });

  it('exposes metrics without per-user labels', async () => {
    h = await makeHarness();
    const alice = await h.register('alice');
    const bob = await h.register('bob');
    await h.send(alice, bob.accountId, [{ device: 1, registrationId: bob.registrationId }]);
    await h.built.app.inject({ method: 'GET', url: '/v1/accounts/whoami' });
    const res = await h.built.app.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(200);
    expect(res.body).toContain('parley_relay_sends_total{result="stored"} 1');
    expect(res.body).toContain('parley_relay_auth_failures_total 1');
    expect(res.body).toContain('parley_relay_send_commit_seconds_count 1');
    expect(res.body).not.toContain(alice.accountId);
    expect(res.body).not.toContain(bob.accountId);
  });

  it('turns an unexpected failure into 500 INTERNAL and logs only a request id', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(chunk.toString());
        cb();
      },
    });
    const logger = pino({ level: 'debug' }, sink);
    const { openSqliteStore } = await import('../src/adapters/store/sqlite.js');
    const real = openSqliteStore(':memory:');
    const broken = new Proxy(real, {
      get(target, prop: keyof Store) {
        if (prop === 'lookupUsername') return () => Promise.reject(new Error('secret-canary-username'));
        const v: unknown = Reflect.get(target, prop);
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    }) as Store;
    const { buildRelay } = await import('../src/build.js');
    const { LocalBus } = await import('../src/adapters/bus/local.js');
    const built = buildRelay({ store: broken, bus: new LocalBus(), clock: { now: () => 1 }, config: defaultTestConfig(), logger });
    h = { built } as Harness;
    const identity = IdentityKeyPair.generate();
    const password = newPassword();
    const reg = await built.app.inject({ method: 'POST', url: '/v1/accounts', headers: json, payload: registerBody('canaryuser', identity, password, 3) });
    const { accountId } = reg.json<{ accountId: string }>();
    const auth = basicAuth(accountId, 1, password);
    const res = await built.app.inject({ method: 'GET', url: '/v1/accounts/username/canaryuser', headers: { authorization: auth } });
    expect(res.statusCode).toBe(500);
    expect(res.json()).toEqual({ code: 'INTERNAL', message: 'internal error' });
    const log = lines.join('');
    expect(log).toContain('"requestId"');
    expect(log).toContain('/v1/accounts/username/:username');
    for (const secret of ['secret-canary-username', 'canaryuser', password, accountId, auth.slice(6), Buffer.from(identity.publicKey.serialize()).toString('base64')])
      expect(log).not.toContain(secret);
  });
});

describe('privacy of logs and storage', () => {
  it('never logs usernames, passwords, account ids, keys or content, at debug level', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(chunk.toString());
        cb();
      },
    });
    h = await makeHarness({}, { logger: pino({ level: 'debug' }, sink) });
    const alice = await h.register('canary.alice');
    const bob = await h.register('canary.bob');
    await h.uploadKeys(bob, 2, 2);
    const content = Buffer.from('canary-ciphertext-bytes-0123456789');
    await h.built.app.inject({ method: 'GET', url: '/v1/accounts/username/canary.bob', headers: { authorization: alice.auth } });
    await h.built.app.inject({ method: 'GET', url: `/v1/keys/${bob.accountId}/1`, headers: { authorization: alice.auth } });
    expect((await h.send(alice, bob.accountId, [{ device: 1, registrationId: bob.registrationId, content }])).status).toBe(200);
    await h.built.app.inject({ method: 'GET', url: '/v1/accounts/whoami', headers: { authorization: basicAuth(bob.accountId, 1, alice.password) } });
    const log = lines.join('');
    expect(log).toContain('/v1/keys/:accountId/:deviceId');
    expect(log).toContain('/v1/messages/:accountId');
    const secrets = [
      'canary.alice',
      'canary.bob',
      alice.password,
      bob.password,
      alice.accountId,
      bob.accountId,
      alice.auth.slice(6),
      content.toString(),
      content.toString('base64'),
      Buffer.from(bob.identity.publicKey.serialize()).toString('base64'),
    ];
    for (const secret of secrets) expect(log).not.toContain(secret);
  });

  it('stores sealed-sender envelopes without a source', async () => {
    h = await makeHarness();
    const alice = await h.register('alice');
    const bob = await h.register('bob');
    const res = await h.built.app.inject({
      method: 'PUT',
      url: `/v1/messages/${bob.accountId}`,
      headers: { authorization: alice.auth, 'content-type': 'application/x-protobuf' },
      payload: Buffer.from(
        encodeSendRequestBinary({
          messages: [{ type: EnvelopeType.UnidentifiedSender, destinationDevice: D1, destinationRegistrationId: bob.registrationId, content: new Uint8Array([9]) }],
          timestamp: 3,
          urgent: false,
          messageId: new Uint8Array(randomBytes(16)),
        }),
      ),
    });
    expect(res.statusCode).toBe(200);
    const [env] = await h.store.fetchQueue(bob.accountId, D1, 0, 10);
    expect(env?.source).toBeNull();
    expect(env?.type).toBe(EnvelopeType.UnidentifiedSender);
  });
});
