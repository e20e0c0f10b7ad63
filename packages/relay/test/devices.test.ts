/** Device routes: provisioning codes, linking with the account-identity signature check, listing, removal, expiry, the provisioning socket. */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IdentityKeyPair } from '@signalapp/libsignal-client';
import {
  type AccountId,
  type DeviceId,
  type RequestFrame,
  decodeFrame,
  encodeKeyUploadRequest,
  encodeLinkDeviceRequest,
  encodeProvisionEnvelope,
} from '@parley/wire';
import WebSocket from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { type Harness, type TestAccount, basicAuth, makeHarness, newPassword, signedEc, signedKyber } from './helpers.js';
import { TestSocket } from './ws-client.js';
import { openFsBlobStore } from '../src/adapters/blobs/fs.js';

let h: Harness | undefined;
afterEach(async () => {
  await h?.built.close();
  h = undefined;
});

async function code(h: Harness, a: TestAccount): Promise<{ status: number; code: string }> {
  const res = await h.built.app.inject({ method: 'GET', url: '/v1/devices/provisioning/code', headers: { authorization: a.auth } });
  return { status: res.statusCode, code: res.statusCode === 200 ? res.json<{ code: string }>().code : '' };
}

async function link(h: Harness, provisioningCode: string, signer: IdentityKeyPair, registrationId = 500) {
  const password = newPassword();
  const res = await h.built.app.inject({
    method: 'POST',
    url: '/v1/devices/link',
    headers: { 'content-type': 'application/json' },
    payload: encodeLinkDeviceRequest({
      provisioningCode,
      password,
      registrationId,
      signedPreKey: signedEc(signer, 1),
      kyberLastResortKey: signedKyber(signer, 1),
    }),
  });
  const body = res.json<{ code?: string; accountId?: AccountId; deviceId?: DeviceId }>();
  return { status: res.statusCode, body, password };
}

describe('device routes', () => {
  it('links a device whose keys the account identity key signed; the code is single-use', async () => {
    h = await makeHarness();
    const alice = await h.register('alice');
    const { code: c } = await code(h, alice);
    const ok = await link(h, c, alice.identity);
    expect(ok.status).toBe(200);
    expect(ok.body).toEqual({ accountId: alice.accountId, deviceId: 2 });
    expect((await link(h, c, alice.identity)).body.code).toBe('INVALID_CODE');
    // The new device authenticates with its own password.
    const who = await h.built.app.inject({ method: 'GET', url: '/v1/accounts/whoami', headers: { authorization: basicAuth(alice.accountId, 2, ok.password) } });
    expect(who.json()).toMatchObject({ accountId: alice.accountId, deviceId: 2 });
    const list = await h.built.app.inject({ method: 'GET', url: '/v1/devices', headers: { authorization: alice.auth } });
    expect(list.json<{ devices: { deviceId: number; registrationId: number }[] }>().devices.map((d) => [d.deviceId, d.registrationId])).toEqual([
      [1, alice.registrationId],
      [2, 500],
    ]);
  });

  it('refuses keys not signed by the account identity key with 422 BAD_SIGNATURE (the relay cannot fabricate a device)', async () => {
    h = await makeHarness();
    const alice = await h.register('alice');
    const { code: c } = await code(h, alice);
    const forged = await link(h, c, IdentityKeyPair.generate());
    expect(forged.status).toBe(422);
    expect(forged.body.code).toBe('BAD_SIGNATURE');
    expect(await h.store.listDevices(alice.accountId)).toHaveLength(1);
  });

  it('a linked device can upload keys signed by the account identity key only', async () => {
    h = await makeHarness();
    const alice = await h.register('alice');
    const d2 = await link(h, (await code(h, alice)).code, alice.identity);
    const auth2 = basicAuth(alice.accountId, 2, d2.password);
    const upload = (signer: IdentityKeyPair) =>
      h!.built.app.inject({
        method: 'PUT',
        url: '/v1/keys',
        headers: { authorization: auth2, 'content-type': 'application/json' },
        payload: encodeKeyUploadRequest({ preKeys: [], kyberPreKeys: [signedKyber(signer, 10)], signedPreKey: signedEc(signer, 11), kyberLastResortKey: null }),
      });
    const forged = await upload(IdentityKeyPair.generate());
    expect(forged.statusCode).toBe(422);
    expect(forged.json<{ code: string }>().code).toBe('BAD_SIGNATURE');
    expect(await h.store.keyCounts(alice.accountId, 2 as DeviceId)).toEqual({ ecCount: 0, kyberCount: 0 });
    expect((await upload(alice.identity)).statusCode).toBe(204);
    expect(await h.store.keyCounts(alice.accountId, 2 as DeviceId)).toEqual({ ecCount: 0, kyberCount: 1 });
  });

  it('only the primary gets codes; unknown and expired codes are refused', async () => {
    h = await makeHarness();
    const alice = await h.register('alice');
    const { code: c } = await code(h, alice);
    const second = await link(h, c, alice.identity);
    const d2 = { ...alice, deviceId: 2 as DeviceId, auth: basicAuth(alice.accountId, 2, second.password) };
    expect((await code(h, d2)).status).toBe(403);
    expect((await link(h, randomBytes(16).toString('base64url'), alice.identity)).body.code).toBe('INVALID_CODE');
    const { code: old } = await code(h, alice);
    h.clock.advance(11 * 60 * 1000);
    expect((await link(h, old, alice.identity)).body.code).toBe('INVALID_CODE');
    const noAuth = await h.built.app.inject({ method: 'GET', url: '/v1/devices/provisioning/code' });
    expect(noAuth.statusCode).toBe(401);
  });

  it('enforces the maximum number of devices', async () => {
    h = await makeHarness({ maxDevices: 2 });
    const alice = await h.register('alice');
    expect((await link(h, (await code(h, alice)).code, alice.identity)).status).toBe(200);
    const third = await link(h, (await code(h, alice)).code, alice.identity);
    expect(third.status).toBe(409);
    expect(third.body.code).toBe('TOO_MANY_DEVICES');
  });

  it('removal: a device removes itself or the primary removes it; then sends to it are extra devices', async () => {
    h = await makeHarness();
    const alice = await h.register('alice');
    const bob = await h.register('bob');
    const d2 = await link(h, (await code(h, alice)).code, alice.identity, 501);
    const d3 = await link(h, (await code(h, alice)).code, alice.identity, 502);
    const auth2 = basicAuth(alice.accountId, 2, d2.password);
    const auth3 = basicAuth(alice.accountId, 3, d3.password);
    const del = (auth: string, id: number) => h!.built.app.inject({ method: 'DELETE', url: `/v1/devices/${id}`, headers: { authorization: auth } });
    expect((await del(auth2, 3)).statusCode).toBe(403);
    expect((await del(alice.auth, 1)).statusCode).toBe(403);
    expect((await del(auth3, 3)).statusCode).toBe(204);
    expect((await del(alice.auth, 2)).statusCode).toBe(204);
    expect((await del(alice.auth, 2)).statusCode).toBe(404);
    const who = await h.built.app.inject({ method: 'GET', url: '/v1/accounts/whoami', headers: { authorization: auth2 } });
    expect(who.statusCode).toBe(401);
    const res = await h.send(bob, alice.accountId, [
      { device: 1, registrationId: alice.registrationId },
      { device: 2, registrationId: 501 },
    ]);
    expect(res.status).toBe(409);
    expect(res.body).toMatchObject({ code: 'MISMATCHED_DEVICES', missingDevices: [], extraDevices: [2] });
  });

  it('expires linked devices that have been idle too long, never the primary', async () => {
    h = await makeHarness({ deviceIdleMs: 1000 });
    const alice = await h.register('alice');
    await link(h, (await code(h, alice)).code, alice.identity);
    h.clock.advance(500);
    expect(await h.built.devices.expireIdle()).toBe(0);
    h.clock.advance(600);
    expect(await h.built.devices.expireIdle()).toBe(1);
    expect((await h.store.listDevices(alice.accountId)).map((d) => d.deviceId)).toEqual([1]);
  });
});

describe('history archive', () => {
  it('the primary stores an archive; a device of the same account downloads it once; it expires', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'parley-archive-'));
    try {
      h = await makeHarness({}, { blobs: openFsBlobStore(dir) });
      const alice = await h.register('alice');
      const bob = await h.register('bob');
      const d2 = await link(h, (await code(h, alice)).code, alice.identity);
      const auth2 = basicAuth(alice.accountId, 2, d2.password);
      const put = (auth: string, body: Buffer) => h!.built.app.inject({ method: 'PUT', url: '/v1/devices/archive', headers: { authorization: auth }, payload: body });
      const get = (auth: string, id: string) => h!.built.app.inject({ method: 'GET', url: `/v1/devices/archive/${id}`, headers: { authorization: auth } });
      const blob = randomBytes(5000);
      expect((await put(auth2, blob)).statusCode).toBe(403);
      const res = await put(alice.auth, blob);
      expect(res.statusCode).toBe(200);
      const { id } = res.json<{ id: string }>();
      expect((await get(bob.auth, id)).statusCode).toBe(404);
      const got = await get(auth2, id);
      expect(got.statusCode).toBe(200);
      expect(Buffer.from(got.json<{ archive: string }>().archive, 'base64')).toEqual(blob);
      expect((await get(auth2, id)).statusCode).toBe(404);
      const late = (await put(alice.auth, blob)).json<{ id: string }>().id;
      h.clock.advance(61 * 60 * 1000);
      expect((await get(auth2, late)).statusCode).toBe(404);
    } finally {
      await h?.built.close();
      h = undefined;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('provisioning socket', () => {
  it('gets an address, receives exactly the forwarded envelope, then closes', async () => {
    h = await makeHarness();
    await h.built.app.listen({ host: '127.0.0.1', port: 0 });
    const addr = h.built.app.server.address();
    const port = typeof addr === 'object' && addr ? addr.port : 0;
    const alice = await h.register('alice');
    const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/provisioning`);
    const frames: RequestFrame[] = [];
    const closed = new Promise<number>((resolve) => ws.on('close', (c) => resolve(c)));
    const first = new Promise<void>((resolve) =>
      ws.on('message', (data: Buffer) => {
        const f = decodeFrame(new Uint8Array(data));
        if (f.kind === 'request') frames.push(f);
        resolve();
      }),
    );
    await first;
    expect(frames[0]?.path).toBe('/v1/address');
    const { address } = JSON.parse(new TextDecoder().decode(frames[0]?.body)) as { address: string };
    expect(address).toMatch(/^[A-Za-z0-9_-]{22}$/);
    const envelope = encodeProvisionEnvelope({ publicKey: IdentityKeyPair.generate().publicKey.serialize(), body: new Uint8Array(randomBytes(100)) });
    // Only the primary may forward, and only well-formed envelopes.
    const bad = await h.built.app.inject({ method: 'PUT', url: `/v1/provisioning/${address}`, headers: { authorization: alice.auth }, payload: Buffer.from('nope') });
    expect(bad.statusCode).toBe(400);
    const res = await h.built.app.inject({ method: 'PUT', url: `/v1/provisioning/${address}`, headers: { authorization: alice.auth }, payload: Buffer.from(envelope) });
    expect(res.statusCode).toBe(204);
    expect(await closed).toBe(1000);
    expect(frames.map((f) => f.path)).toEqual(['/v1/address', '/v1/message']);
    expect(frames[1]?.body).toEqual(envelope);
  });

  it('opening a device socket records its last-seen time (used for idle expiry)', async () => {
    h = await makeHarness();
    await h.built.app.listen({ host: '127.0.0.1', port: 0 });
    const addr = h.built.app.server.address();
    const port = typeof addr === 'object' && addr ? addr.port : 0;
    const alice = await h.register('alice');
    const d2 = await link(h, (await code(h, alice)).code, alice.identity);
    const linkedAt = h.clock.now();
    h.clock.advance(5000);
    const sock = await TestSocket.connect(`http://127.0.0.1:${port}`, basicAuth(alice.accountId, 2, d2.password));
    const lastSeen = async () => (await h!.store.deviceDetails(alice.accountId)).find((d) => d.deviceId === 2)?.lastSeen;
    while ((await lastSeen()) === linkedAt) await new Promise((r) => setTimeout(r, 20));
    expect(await lastSeen()).toBe(linkedAt + 5000);
    await sock.close();
    // Wrong credentials do not count as seen.
    h.clock.advance(5000);
    await expect(TestSocket.connect(`http://127.0.0.1:${port}`, basicAuth(alice.accountId, 2, newPassword()))).rejects.toThrow('status 401');
    expect(await lastSeen()).toBe(linkedAt + 5000);
  });

  it('provisioning sockets are rate limited per address', async () => {
    h = await makeHarness({ rateLimits: { register: { burst: 1, perSecond: 0.001 } } });
    await h.built.app.listen({ host: '127.0.0.1', port: 0 });
    const addr = h.built.app.server.address();
    const port = typeof addr === 'object' && addr ? addr.port : 0;
    const open = () =>
      new Promise<number>((resolve, reject) => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/provisioning`);
        ws.once('open', () => {
          ws.close();
          resolve(101);
        });
        ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        ws.once('error', reject);
      });
    expect(await open()).toBe(101);
    expect(await open()).toBe(429);
  });

  it('a removed device has its socket closed', async () => {
    h = await makeHarness();
    await h.built.app.listen({ host: '127.0.0.1', port: 0 });
    const addr = h.built.app.server.address();
    const port = typeof addr === 'object' && addr ? addr.port : 0;
    const alice = await h.register('alice');
    const d2 = await link(h, (await code(h, alice)).code, alice.identity);
    const sock = await TestSocket.connect(`http://127.0.0.1:${port}`, basicAuth(alice.accountId, 2, d2.password));
    const res = await h.built.app.inject({ method: 'DELETE', url: '/v1/devices/2', headers: { authorization: alice.auth } });
    expect(res.statusCode).toBe(204);
    expect((await sock.closed).code).toBe(4409);
  });
});
