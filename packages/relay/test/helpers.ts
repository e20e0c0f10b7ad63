/** Shared test fixtures: real libsignal keys, an in-memory relay, a manual clock. */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IdentityKeyPair, KEMKeyPair, PrivateKey } from '@signalapp/libsignal-client';
import {
  type AccountId,
  type DeviceId,
  type PreKey,
  type SignedPreKey,
  encodeKeyUploadRequest,
  encodeRegisterRequest,
  encodeSendRequestBinary,
  encodeSendRequestJson,
  processRegisterResponse,
  type SendRequest,
  EnvelopeType,
} from '@parley/wire';
import { pino } from 'pino';
import { LocalBus } from '../src/adapters/bus/local.js';
import { openSqliteStore } from '../src/adapters/store/sqlite.js';
import { type BuiltRelay, type RelayBuildDeps, buildRelay } from '../src/build.js';
import { type RelayConfig, defaultRelayConfig } from '../src/config.js';
import type { Clock, Store } from '../src/ports.js';

export class ManualClock implements Clock {
  constructor(public t = 1_700_000_000_000) {}
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    this.t += ms;
  }
}

export const silentLogger = () => pino({ level: process.env.RELAY_TEST_LOG ?? 'silent' });

export function signedEc(identity: IdentityKeyPair, keyId: number): SignedPreKey {
  const pub = PrivateKey.generate().getPublicKey().serialize();
  return { keyId, publicKey: pub, signature: identity.privateKey.sign(pub) };
}
export function oneTimeEc(keyId: number): PreKey {
  return { keyId, publicKey: PrivateKey.generate().getPublicKey().serialize() };
}
export function signedKyber(identity: IdentityKeyPair, keyId: number): SignedPreKey {
  const pub = KEMKeyPair.generate().getPublicKey().serialize();
  return { keyId, publicKey: pub, signature: identity.privateKey.sign(pub) };
}

export const newPassword = () => randomBytes(32).toString('base64url');

export interface TestAccount {
  accountId: AccountId;
  deviceId: DeviceId;
  username: string;
  password: string;
  registrationId: number;
  identity: IdentityKeyPair;
  auth: string;
}

export function basicAuth(accountId: string, deviceId: number, password: string): string {
  return `Basic ${Buffer.from(`${accountId}.${deviceId}:${password}`).toString('base64')}`;
}

/** Registers an account on a listening relay over real HTTP; throws unless it answers 200. */
export async function registerOverHttp(url: string, username: string, registrationId: number) {
  const identity = IdentityKeyPair.generate();
  const password = newPassword();
  const res = await fetch(`${url}/v1/accounts`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(registerBody(username, identity, password, registrationId)),
  });
  if (res.status !== 200) throw new Error(`registration answered ${res.status}`);
  const { accountId, deviceId } = processRegisterResponse(await res.json());
  return { accountId, deviceId, username, password, registrationId, identity, auth: basicAuth(accountId, deviceId, password) };
}

export function registerBody(username: string, identity: IdentityKeyPair, password: string, registrationId: number, inviteCode: string | null = null) {
  return encodeRegisterRequest({
    username,
    password,
    registrationId,
    identityKey: identity.publicKey.serialize(),
    signedPreKey: signedEc(identity, 1),
    kyberLastResortKey: signedKyber(identity, 1),
    inviteCode,
  });
}

export interface Harness {
  built: BuiltRelay;
  store: Store;
  clock: ManualClock;
  bus: LocalBus;
  register(username: string): Promise<TestAccount>;
  uploadKeys(a: TestAccount, ec: number, kyber: number, firstId?: number): Promise<void>;
  send(from: TestAccount, to: AccountId, messages: { device: number; registrationId: number; content?: Uint8Array }[], opts?: { messageId?: Uint8Array; json?: boolean }): Promise<{ status: number; body: Record<string, unknown> }>;
}

/** A relay over an in-memory SQLite store, driven with `inject()`. */
export async function makeHarness(config: Partial<RelayConfig> = {}, extra: Partial<RelayBuildDeps> = {}): Promise<Harness> {
  const store = openSqliteStore(':memory:');
  const clock = new ManualClock();
  const bus = new LocalBus();
  const built = buildRelay({ store, bus, clock, config: defaultRelayConfig({ dataDir: tempDataDir(), ...config }), logger: silentLogger(), ...extra });
  await built.app.ready();
  let regId = 100;
  const h: Harness = {
    built,
    store,
    clock,
    bus,
    async register(username) {
      const identity = IdentityKeyPair.generate();
      const password = newPassword();
      const registrationId = regId++;
      const res = await built.app.inject({
        method: 'POST',
        url: '/v1/accounts',
        headers: { 'content-type': 'application/json' },
        payload: registerBody(username, identity, password, registrationId),
      });
      if (res.statusCode !== 200) throw new Error(`register failed: ${res.statusCode} ${res.body}`);
      const { accountId } = res.json<{ accountId: AccountId }>();
      return { accountId, deviceId: 1 as DeviceId, username, password, registrationId, identity, auth: basicAuth(accountId, 1, password) };
    },
    async uploadKeys(a, ec, kyber, firstId = 1) {
      const body = encodeKeyUploadRequest({
        preKeys: Array.from({ length: ec }, (_, i) => oneTimeEc(firstId + i)),
        kyberPreKeys: Array.from({ length: kyber }, (_, i) => signedKyber(a.identity, firstId + i)),
        signedPreKey: null,
        kyberLastResortKey: null,
      });
      const res = await built.app.inject({ method: 'PUT', url: '/v1/keys', headers: { authorization: a.auth }, payload: body });
      if (res.statusCode !== 204) throw new Error(`upload failed: ${res.statusCode} ${res.body}`);
    },
    async send(from, to, messages, opts = {}) {
      const req: SendRequest = {
        messages: messages.map((m) => ({
          type: EnvelopeType.Ciphertext,
          destinationDevice: m.device as DeviceId,
          destinationRegistrationId: m.registrationId,
          content: m.content ?? new Uint8Array(randomBytes(64)),
        })),
        timestamp: clock.now(),
        urgent: true,
        messageId: opts.messageId ?? new Uint8Array(randomBytes(16)),
      };
      const res = await built.app.inject({
        method: 'PUT',
        url: `/v1/messages/${to}`,
        headers: {
          authorization: from.auth,
          'content-type': opts.json ? 'application/json' : 'application/x-protobuf',
        },
        payload: opts.json ? JSON.stringify(encodeSendRequestJson(req)) : Buffer.from(encodeSendRequestBinary(req)),
      });
      return { status: res.statusCode, body: res.body ? res.json<Record<string, unknown>>() : {} };
    },
  };
  return h;
}

const tempDirs: string[] = [];
process.on('exit', () => {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

/**
 * A fresh data directory under the system temp dir. Relays built in tests
 * write generated sealed-sender keys and blobs there, never into the
 * working directory's ./data (which parallel test files would share).
 */
export function tempDataDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'parley-relay-test-'));
  tempDirs.push(d);
  return d;
}

export function defaultTestConfig(overrides: Partial<RelayConfig> = {}): RelayConfig {
  return defaultRelayConfig({ logLevel: 'silent', dataDir: tempDataDir(), ...overrides });
}
