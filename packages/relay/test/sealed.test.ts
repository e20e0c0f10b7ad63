/**
 * Sealed sender on the relay: trust root and certificates, access keys
 * (401 parity), unauthenticated single and multi-recipient sends, online-only
 * delivery, and the key files the CLI writes.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { PrivateKey, PublicKey, SenderCertificate } from '@signalapp/libsignal-client';
import { type AccountId, type DeviceId, EnvelopeType, type SendRequest, encodeSendRequestBinary } from '@parley/wire';
import { afterEach, describe, expect, it } from 'vitest';
import type { BusSignal } from '../src/ports.js';
import { createServerCertificate, createTrustRoot, loadServerSigner, parseServerCertificate } from '../src/sealed.js';
import { defaultRelayConfig } from '../src/config.js';
import { type Harness, type TestAccount, makeHarness, silentLogger } from './helpers.js';
import { multiRecipientBody, xor } from './sealed-fixtures.js';

const execFileP = promisify(execFile);

let h: Harness;
afterEach(async () => {
  await h.built.close();
});

const D1 = 1 as DeviceId;
const accessKey = () => new Uint8Array(randomBytes(16));
const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64');

async function setAccessKey(a: TestAccount, key: Uint8Array | null): Promise<void> {
  const res = await h.built.app.inject({
    method: 'PUT',
    url: '/v1/accounts/access-key',
    headers: { authorization: a.auth, 'content-type': 'application/json' },
    payload: { accessKey: key === null ? null : b64(key) },
  });
  expect(res.statusCode).toBe(204);
}

function sealedRequest(
  messages: Array<{ device: number; registrationId: number }>,
  extra: Partial<SendRequest> = {},
): SendRequest {
  return {
    messages: messages.map((m) => ({
      type: EnvelopeType.UnidentifiedSender,
      destinationDevice: m.device as DeviceId,
      destinationRegistrationId: m.registrationId,
      content: new Uint8Array(randomBytes(80)),
    })),
    timestamp: h.clock.now(),
    urgent: true,
    messageId: new Uint8Array(randomBytes(16)),
    ...extra,
  };
}

async function sendSealed(to: string, key: Uint8Array | null, req: SendRequest, extraHeaders: Record<string, string> = {}) {
  const res = await h.built.app.inject({
    method: 'PUT',
    url: `/v1/messages/${to}`,
    headers: {
      'content-type': 'application/x-protobuf',
      ...(key ? { 'unidentified-access-key': b64(key) } : {}),
      ...extraHeaders,
    },
    payload: Buffer.from(encodeSendRequestBinary(req)),
  });
  return { status: res.statusCode, body: res.body, json: res.body ? res.json<Record<string, unknown>>() : {} };
}

describe('certificates', () => {
  it('serves the trust root without auth and issues 7-day sender certificates that chain to it', async () => {
    h = await makeHarness();
    const alice = await h.register('alice');
    const root = await h.built.app.inject({ method: 'GET', url: '/v1/certificate/trust-root' });
    expect(root.statusCode).toBe(200);
    const { trustRoot, serverCertificateId } = root.json<{ trustRoot: string; serverCertificateId: number }>();
    expect(serverCertificateId).toBe(1);
    const rootKey = PublicKey.deserialize(new Uint8Array(Buffer.from(trustRoot, 'base64')));

    const anon = await h.built.app.inject({ method: 'GET', url: '/v1/certificate/delivery' });
    expect(anon.statusCode).toBe(401);
    const res = await h.built.app.inject({
      method: 'GET',
      url: '/v1/certificate/delivery',
      headers: { authorization: alice.auth },
    });
    expect(res.statusCode).toBe(200);
    const body = res.json<{ certificate: string; expires: number }>();
    expect(body.expires).toBe(h.clock.now() + 7 * 24 * 3600 * 1000);
    const cert = SenderCertificate.deserialize(new Uint8Array(Buffer.from(body.certificate, 'base64')));
    expect(cert.senderUuid()).toBe(alice.accountId);
    expect(cert.senderDeviceId()).toBe(1);
    expect(cert.key().serialize()).toEqual(alice.identity.publicKey.serialize());
    expect(cert.expiration()).toBe(body.expires);
    expect(cert.validate(rootKey, h.clock.now())).toBe(true);
    expect(cert.validate(rootKey, body.expires + 1)).toBe(false);
    expect(cert.validate(PrivateKey.generate().getPublicKey(), h.clock.now())).toBe(false);
  });

  it('uses a configured server certificate; trust-root and server-cert files check each other', () => {
    const root = JSON.stringify(createTrustRoot());
    const file = createServerCertificate(root, 7);
    const signer = parseServerCertificate(JSON.stringify(file));
    expect(signer.keyId).toBe(7);
    expect(b64(signer.trustRoot.serialize())).toBe(file.trustRoot);
    // A certificate claiming another trust root is refused.
    const other = createTrustRoot();
    expect(() => parseServerCertificate(JSON.stringify({ ...file, trustRoot: other.publicKey }))).toThrow(RangeError);
    expect(() => createServerCertificate(root, 0)).toThrow(RangeError);
    expect(() => parseServerCertificate('{"kind":"something-else"}')).toThrow(RangeError);
  });

  it('generates the trust root and server certificate once into the data dir (0600) and reuses them', () => {
    const dir = mkdtempSync(join(tmpdir(), 'parley-sealed-'));
    try {
      const config = defaultRelayConfig({ dataDir: dir });
      const a = loadServerSigner(config, silentLogger());
      const b = loadServerSigner(config, silentLogger());
      expect(a.trustRoot.serialize()).toEqual(b.trustRoot.serialize());
      for (const f of ['trust-root.json', 'server-cert.json'])
        expect(statSync(join(dir, 'sealed-sender', f)).mode & 0o777).toBe(0o600);
      expect(JSON.parse(readFileSync(join(dir, 'sealed-sender', 'server-cert.json'), 'utf8'))).toMatchObject({
        kind: 'parley-server-certificate',
        keyId: 1,
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('relays starting together on one fresh data dir all come up with the same generated trust root', async () => {
    // Each child loads the signer from the built relay package and prints the trust root it got.
    const script = [
      "import { loadServerSigner, defaultRelayConfig } from '@parley/relay';",
      "import { pino } from 'pino';",
      "const s = loadServerSigner(defaultRelayConfig({ dataDir: process.argv[1] }), pino({ level: 'silent' }));",
      "process.stdout.write(Buffer.from(s.trustRoot.serialize()).toString('hex'));",
    ].join('\n');
    const cwd = fileURLToPath(new URL('..', import.meta.url));
    for (let round = 0; round < 3; round++) {
      const dir = mkdtempSync(join(tmpdir(), 'parley-sealed-race-'));
      try {
        const roots = await Promise.all(
          Array.from({ length: 6 }, () => execFileP(process.execPath, ['--input-type=module', '-e', script, dir], { cwd })),
        );
        expect(new Set(roots.map((r) => r.stdout)).size).toBe(1);
        expect(roots[0]?.stdout).toMatch(/^05[0-9a-f]{64}$/);
        // Nothing half-made is left behind: just the pair, no temporary folders.
        expect(readdirSync(dir)).toEqual(['sealed-sender']);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  });
});

describe('unauthenticated sends with an access key', () => {
  it('stores a sealed envelope without a source for the right key', async () => {
    h = await makeHarness();
    const bob = await h.register('bob');
    const key = accessKey();
    await setAccessKey(bob, key);
    const res = await sendSealed(bob.accountId, key, sealedRequest([{ device: 1, registrationId: bob.registrationId }]));
    expect(res.status).toBe(200);
    const queued = await h.store.fetchQueue(bob.accountId, D1, 0, 10);
    expect(queued).toHaveLength(1);
    expect(queued[0]?.source).toBeNull();
    expect(queued[0]?.type).toBe(EnvelopeType.UnidentifiedSender);
  });

  it('answers 401 with the same body for a wrong key, no key set, an unknown account and a missing header', async () => {
    h = await makeHarness();
    const bob = await h.register('bob');
    const carol = await h.register('carol'); // has never published a key
    const key = accessKey();
    await setAccessKey(bob, key);
    const req = () => sealedRequest([{ device: 1, registrationId: bob.registrationId }]);
    const wrong = await sendSealed(bob.accountId, accessKey(), req());
    const unset = await sendSealed(
      carol.accountId,
      accessKey(),
      sealedRequest([{ device: 1, registrationId: carol.registrationId }]),
    );
    const unknown = await sendSealed(randomUUID(), accessKey(), req());
    const missing = await sendSealed(bob.accountId, null, req());
    const malformed = await sendSealed(bob.accountId, null, req(), { 'unidentified-access-key': 'not base64!' });
    for (const r of [wrong, unset, unknown, missing, malformed]) {
      expect(r.status).toBe(401);
      expect(r.body).toBe(wrong.body);
    }
    expect(wrong.json).toEqual({ code: 'UNAUTHORIZED', message: 'missing or wrong credentials' });
    expect(await h.store.fetchQueue(bob.accountId, D1, 0, 10)).toEqual([]);
    // A withdrawn key no longer works.
    await setAccessKey(bob, null);
    expect((await sendSealed(bob.accountId, key, req())).status).toBe(401);
  });

  it('accepts only sealed envelopes and answers 409/410 for wrong device lists', async () => {
    h = await makeHarness();
    const bob = await h.register('bob');
    const key = accessKey();
    await setAccessKey(bob, key);
    const plain = sealedRequest([{ device: 1, registrationId: bob.registrationId }]);
    const first = plain.messages[0];
    if (first) first.type = EnvelopeType.Ciphertext;
    expect((await sendSealed(bob.accountId, key, plain)).status).toBe(400);
    const extra = await sendSealed(
      bob.accountId,
      key,
      sealedRequest([
        { device: 1, registrationId: bob.registrationId },
        { device: 2, registrationId: 5 },
      ]),
    );
    expect(extra.status).toBe(409);
    expect(extra.json).toMatchObject({ code: 'MISMATCHED_DEVICES', missingDevices: [], extraDevices: [2] });
    const stale = await sendSealed(bob.accountId, key, sealedRequest([{ device: 1, registrationId: bob.registrationId + 1 }]));
    expect(stale.status).toBe(410);
    expect(stale.json).toMatchObject({ code: 'STALE_DEVICES', staleDevices: [1] });
  });

  it('is idempotent by message id without recording a sender', async () => {
    h = await makeHarness();
    const bob = await h.register('bob');
    const key = accessKey();
    await setAccessKey(bob, key);
    const req = sealedRequest([{ device: 1, registrationId: bob.registrationId }]);
    expect((await sendSealed(bob.accountId, key, req)).status).toBe(200);
    expect((await sendSealed(bob.accountId, key, req)).status).toBe(200);
    expect(await h.store.fetchQueue(bob.accountId, D1, 0, 10)).toHaveLength(1);
  });

  it('rate-limits unauthenticated sends per recipient', async () => {
    h = await makeHarness({ rateLimits: { sealedRecipient: { burst: 2, perSecond: 0 } } });
    const bob = await h.register('bob');
    const key = accessKey();
    await setAccessKey(bob, key);
    const send = () => sendSealed(bob.accountId, key, sealedRequest([{ device: 1, registrationId: bob.registrationId }]));
    expect((await send()).status).toBe(200);
    expect((await send()).status).toBe(200);
    const limited = await send();
    expect(limited.status).toBe(429);
    expect(limited.json).toMatchObject({ code: 'RATE_LIMITED' });
  });

  it('rate-limits unauthenticated sends per client address, before looking at the key', async () => {
    h = await makeHarness({ rateLimits: { sealedAddress: { burst: 1, perSecond: 0 } } });
    const bob = await h.register('bob');
    const req = () => sealedRequest([{ device: 1, registrationId: bob.registrationId }]);
    expect((await sendSealed(bob.accountId, accessKey(), req())).status).toBe(401);
    expect((await sendSealed(bob.accountId, accessKey(), req())).status).toBe(429);
  });
});

describe('online-only sends', () => {
  it('never stores; only a subscribed (connected) device gets the envelope', async () => {
    h = await makeHarness();
    const alice = await h.register('alice');
    const bob = await h.register('bob');
    const key = accessKey();
    await setAccessKey(bob, key);
    const signals: BusSignal[] = [];
    const off = h.bus.subscribe(`${bob.accountId}.1`, (s) => signals.push(s));
    const sealed = await sendSealed(
      bob.accountId,
      key,
      sealedRequest([{ device: 1, registrationId: bob.registrationId }], { online: true }),
    );
    expect(sealed.status).toBe(200);
    // An identified online send behaves the same.
    const identified = await h.built.app.inject({
      method: 'PUT',
      url: `/v1/messages/${bob.accountId}`,
      headers: { authorization: alice.auth, 'content-type': 'application/x-protobuf' },
      payload: Buffer.from(
        encodeSendRequestBinary({ ...sealedRequest([{ device: 1, registrationId: bob.registrationId }]), online: true }),
      ),
    });
    expect(identified.statusCode).toBe(200);
    await new Promise((r) => setTimeout(r, 10));
    off();
    expect(signals.filter((s) => s.startsWith('online:'))).toHaveLength(2);
    expect(signals).not.toContain('messages');
    expect(await h.store.fetchQueue(bob.accountId, D1, 0, 10)).toEqual([]);
  });
});

// ---------------------------------------------------------------- multi-recipient

async function sendMulti(body: Uint8Array, key: Uint8Array | null, headers: Record<string, string> = {}) {
  const res = await h.built.app.inject({
    method: 'PUT',
    url: '/v1/messages/multi_recipient',
    headers: {
      'content-type': 'application/vnd.parley.multi-recipient',
      'x-parley-timestamp': String(h.clock.now()),
      ...(key ? { 'unidentified-access-key': b64(key) } : {}),
      ...headers,
    },
    payload: Buffer.from(body),
  });
  return { status: res.statusCode, body: res.body, json: res.body ? res.json<Record<string, unknown>>() : {} };
}

describe('multi-recipient sealed sends', () => {
  it('splits one upload into one sourceless envelope per recipient device, in one commit', async () => {
    h = await makeHarness();
    const alice = await h.register('alice');
    const bob = await h.register('bob');
    const carol = await h.register('carol');
    const kb = accessKey();
    const kc = accessKey();
    await setAccessKey(bob, kb);
    await setAccessKey(carol, kc);
    const body = await multiRecipientBody(h, alice, [bob, carol]);
    const res = await sendMulti(body, xor([kb, kc]));
    expect(res.status).toBe(200);
    for (const r of [bob, carol]) {
      const q = await h.store.fetchQueue(r.accountId, D1, 0, 10);
      expect(q).toHaveLength(1);
      expect(q[0]?.source).toBeNull();
      expect(q[0]?.type).toBe(EnvelopeType.UnidentifiedSender);
      expect(q[0]?.clientTimestamp).toBe(h.clock.now());
    }
    expect(await h.store.fetchQueue(alice.accountId, D1, 0, 10)).toEqual([]);
  });

  it('answers 401 for a wrong combined key or an unknown recipient, identically', async () => {
    h = await makeHarness();
    const alice = await h.register('alice');
    const bob = await h.register('bob');
    const carol = await h.register('carol');
    const kb = accessKey();
    const kc = accessKey();
    await setAccessKey(bob, kb);
    await setAccessKey(carol, kc);
    const body = await multiRecipientBody(h, alice, [bob, carol]);
    const onlyBob = await sendMulti(body, kb);
    const none = await sendMulti(body, null);
    expect(onlyBob.status).toBe(401);
    expect(none.body).toBe(onlyBob.body);
    expect(await h.store.fetchQueue(bob.accountId, D1, 0, 10)).toEqual([]);
    expect((await sendMulti(new Uint8Array([1, 2, 3]), kb)).status).toBe(400);
    expect((await sendMulti(body, xor([kb, kc]), { 'x-parley-timestamp': 'soon' })).status).toBe(400);
  });

  it('lists devices per recipient: 409 for a missing device, 410 for a stale registration id, and stores nothing', async () => {
    h = await makeHarness();
    const alice = await h.register('alice');
    const bob = await h.register('bob');
    const carol = await h.register('carol');
    const kb = accessKey();
    const kc = accessKey();
    await setAccessKey(bob, kb);
    await setAccessKey(carol, kc);
    const staleBody = await multiRecipientBody(h, alice, [bob, carol], { [carol.accountId]: 1 });
    const stale = await sendMulti(staleBody, xor([kb, kc]));
    expect(stale.status).toBe(410);
    expect(stale.json).toMatchObject({ code: 'STALE_DEVICES', recipients: [{ accountId: carol.accountId, staleDevices: [1] }] });

    // A device Bob's account gains after the sender built its sessions: 409 naming Bob's missing device.
    const body = await multiRecipientBody(h, alice, [bob, carol]);
    const devicesOf = h.store.listDevices.bind(h.store);
    h.store.listDevices = async (account: AccountId) => {
      const list = await devicesOf(account);
      return account === bob.accountId ? [...list, { deviceId: 2 as DeviceId, registrationId: 77 }] : list;
    };
    const missing = await sendMulti(body, xor([kb, kc]));
    expect(missing.status).toBe(409);
    expect(missing.json).toMatchObject({
      code: 'MISMATCHED_DEVICES',
      recipients: [{ accountId: bob.accountId, missingDevices: [2], extraDevices: [] }],
    });
    h.store.listDevices = devicesOf;
    expect(await h.store.fetchQueue(bob.accountId, D1, 0, 10)).toEqual([]);
    expect(await h.store.fetchQueue(carol.accountId, D1, 0, 10)).toEqual([]);
  });
});
