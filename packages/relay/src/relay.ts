/**
 * Domain services of the relay: registration, keys, bundles, sends and acks.
 * Inputs are already-validated wire domain types; expected failures are
 * thrown as RelayError with a stable code and mapped to HTTP at the edge.
 */
import { randomBytes, randomFillSync } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { PublicKey } from '@signalapp/libsignal-client';
import {
  type AccountId,
  type DeviceId,
  type KeyCounts,
  type KeyUploadRequest,
  type PreKeyBundleResponse,
  type RegisterRequest,
  type RegisterResponse,
  type SendRequest,
  type SignedPreKey,
  type WhoAmIResponse,
  EnvelopeType,
  accountIdFromBytes,
  plainBytes,
} from '@parley/wire';
import type { Logger } from 'pino';
import { type BasicCredentials, checkPassword, decoyCredentials, hashPassword, secretEquals } from './auth.js';
import type { RelayConfig } from './config.js';
import { RelayError } from './errors.js';
import type { RelayMetrics } from './metrics.js';
import { publishOnline, wakeOnReadable } from './online.js';
import {
  type Bus,
  type Clock,
  type DeviceSummary,
  type QueuedEnvelope,
  type RateBucket,
  type RateDecision,
  type RateLimiter,
  type StoredEnvelope,
  type Store,
  deviceKey,
} from './ports.js';

/** Random bytes for server guids, drawn 4 KiB at a time (one getrandom call per 256 guids instead of one each). */
const guidPool = Buffer.alloc(4096);
let guidOffset = guidPool.length;

/** A fresh random 16-byte server guid (its own copy, never a view of the pool). */
export function newGuid(): Uint8Array {
  if (guidOffset + 16 > guidPool.length) {
    randomFillSync(guidPool);
    guidOffset = 0;
  }
  const out = new Uint8Array(16);
  // Byte by byte: a subarray view per guid is garbage on every send.
  for (let i = 0; i < 16; i++) out[i] = guidPool[guidOffset + i] as number;
  guidPool.fill(0, guidOffset, guidOffset + 16);
  guidOffset += 16;
  return out;
}

/** Below this many one-time keys of either kind a device is told to refill. */
export const LOW_KEY_THRESHOLD = 10;

/** The device a request runs as. */
export interface DeviceRef {
  account: AccountId;
  device: DeviceId;
}

export interface RelayDeps {
  store: Store;
  bus: Bus;
  clock: Clock;
  config: RelayConfig;
  limiter: RateLimiter;
  metrics: RelayMetrics;
  log: Logger;
}

/** True when a device should be asked to upload more one-time keys. */
export function keysLow(c: KeyCounts): boolean {
  return c.ecCount < LOW_KEY_THRESHOLD || c.kyberCount < LOW_KEY_THRESHOLD;
}

export function verifySigned(identity: PublicKey, key: SignedPreKey, field: string): void {
  let ok: boolean;
  try {
    ok = identity.verify(plainBytes(key.publicKey), plainBytes(key.signature));
  } catch {
    ok = false;
  }
  if (!ok) throw new RelayError('BAD_SIGNATURE', `${field}: signature does not verify with the account identity key`);
}

export function identityKeyOf(bytes: Uint8Array): PublicKey {
  try {
    return PublicKey.deserialize(plainBytes(bytes));
  } catch {
    throw new RelayError('BAD_REQUEST', 'identityKey: not a valid public key');
  }
}

/** Which listed devices are missing, extra or stale against an account's device list. */
export function deviceProblems(
  devices: readonly DeviceSummary[],
  listed: ReadonlyArray<{ device: number; registrationId: number }>,
): { missingDevices: number[]; extraDevices: number[]; staleDevices: number[] } {
  const expected = new Map(devices.map((d) => [d.deviceId as number, d.registrationId]));
  const given = new Set(listed.map((l) => l.device));
  const byNumber = (a: number, b: number) => a - b;
  return {
    missingDevices: [...expected.keys()].filter((id) => !given.has(id)).sort(byNumber),
    extraDevices: [...given].filter((id) => !expected.has(id)).sort(byNumber),
    staleDevices: listed
      .filter((l) => expected.has(l.device) && expected.get(l.device) !== l.registrationId)
      .map((l) => l.device)
      .sort(byNumber),
  };
}

/** The common case, checked without building sets: each device once, with its current registration id. */
function listsExactly(devices: readonly DeviceSummary[], req: SendRequest): boolean {
  const msgs = req.messages;
  if (msgs.length !== devices.length) return false;
  for (let i = 0; i < msgs.length; i++) {
    const m = msgs[i] as SendRequest['messages'][number];
    let found = 0;
    for (const d of devices) if (d.deviceId === m.destinationDevice && d.registrationId === m.destinationRegistrationId) found++;
    if (found !== 1) return false;
    for (let j = 0; j < i; j++) if ((msgs[j] as SendRequest['messages'][number]).destinationDevice === m.destinationDevice) return false;
  }
  return true;
}

/**
 * The device-list rule every send obeys: exactly the account's devices, each
 * with its current registration id. Otherwise 409 MISMATCHED_DEVICES (missing
 * or extra ids) or 410 STALE_DEVICES, counted in the send metrics.
 */
export function assertDeviceList(devices: readonly DeviceSummary[], req: SendRequest, metrics: RelayMetrics): void {
  if (listsExactly(devices, req)) return;
  const p = deviceProblems(
    devices,
    req.messages.map((m) => ({ device: m.destinationDevice, registrationId: m.destinationRegistrationId })),
  );
  if (p.missingDevices.length > 0 || p.extraDevices.length > 0) {
    metrics.sends.inc({ result: 'mismatched' });
    throw new RelayError('MISMATCHED_DEVICES', 'the device list does not match the account', {
      missingDevices: p.missingDevices,
      extraDevices: p.extraDevices,
    });
  }
  if (p.staleDevices.length > 0) {
    metrics.sends.inc({ result: 'stale' });
    throw new RelayError('STALE_DEVICES', 'a registration id is outdated', { staleDevices: p.staleDevices });
  }
}

/** The relay's use cases, independent of HTTP and WebSocket. */
export class Relay {
  constructor(private readonly deps: RelayDeps) {}

  /** Check Basic credentials. @throws RelayError UNAUTHORIZED, the same for unknown devices and wrong passwords. */
  async authenticate(creds: BasicCredentials | null): Promise<DeviceRef> {
    if (creds) {
      const stored = await this.deps.store.getDeviceCredentials(creds.account, creds.device);
      const { salt, hash } = stored ? { salt: stored.passwordSalt, hash: stored.passwordHash } : decoyCredentials;
      const ok = checkPassword(creds.password, salt, hash);
      if (ok && stored) return { account: creds.account, device: creds.device };
    }
    this.deps.metrics.authFailures.inc();
    throw new RelayError('UNAUTHORIZED', 'missing or wrong credentials');
  }

  /**
   * Take a token or throw RATE_LIMITED. With an in-process limiter this
   * returns (or throws) synchronously; with a shared one it returns a promise.
   * Hot paths skip the `await` when nothing is returned (`const p = limit(); if (p) await p;`).
   */
  limit(bucket: RateBucket, key: string): Promise<void> | undefined {
    const r = this.deps.limiter.take(bucket, key);
    if (r instanceof Promise) return r.then((d) => this.#admit(bucket, d));
    this.#admit(bucket, r);
    return undefined;
  }

  /** Like `limit`, always as a promise (for callers that chain with `then`). */
  async limitAsync(bucket: RateBucket, key: string): Promise<void> {
    await this.limit(bucket, key);
  }

  #admit(bucket: RateBucket, r: RateDecision): void {
    if (r.kind === 'allowed') return;
    this.deps.metrics.rateLimited.inc({ bucket });
    throw new RelayError('RATE_LIMITED', `too many ${bucket} requests`, {
      retryAfterSeconds: Math.max(1, Math.ceil(r.retryAfterMs / 1000)),
    });
  }

  /** Create an account with its primary device. */
  async register(req: RegisterRequest, ip: string): Promise<RegisterResponse> {
    await this.limit('register', ip);
    const codes = this.deps.config.inviteCodes;
    if (codes !== null) {
      const given = req.inviteCode;
      // Compare against every code so timing does not reveal which one matched.
      let ok = false;
      for (const code of codes) if (given !== null && secretEquals(given, code)) ok = true;
      if (!ok) throw new RelayError('INVITE_REQUIRED', 'a valid invite code is required');
    }
    const identity = identityKeyOf(req.identityKey);
    verifySigned(identity, req.signedPreKey, 'signedPreKey');
    verifySigned(identity, req.kyberLastResortKey, 'kyberLastResortKey');
    const accountId = accountIdFromBytes(new Uint8Array(randomBytes(16)));
    const { salt, hash } = hashPassword(req.password);
    const res = await this.deps.store.createAccount({
      accountId,
      username: req.username,
      identityKey: req.identityKey,
      createdAt: this.deps.clock.now(),
      device: {
        registrationId: req.registrationId,
        passwordSalt: salt,
        passwordHash: hash,
        signedPreKey: req.signedPreKey,
        kyberLastResortKey: req.kyberLastResortKey,
      },
    });
    if (res.kind === 'usernameTaken') throw new RelayError('USERNAME_TAKEN', 'username is taken');
    return { accountId, deviceId: 1 as DeviceId };
  }

  async whoami(me: DeviceRef): Promise<WhoAmIResponse> {
    const acct = await this.deps.store.getAccount(me.account);
    if (!acct) throw new RelayError('NOT_FOUND', 'account not found');
    return { accountId: me.account, deviceId: me.device, username: acct.username };
  }

  async lookupUsername(me: DeviceRef, username: string): Promise<{ accountId: AccountId }> {
    await this.limit('lookup', deviceKey(me.account, me.device));
    const id = await this.deps.store.lookupUsername(username);
    if (!id) throw new RelayError('NOT_FOUND', 'username not found');
    return { accountId: id };
  }

  /** Verify every signed key against the account identity key, then store all or nothing. */
  async uploadKeys(me: DeviceRef, req: KeyUploadRequest): Promise<void> {
    const acct = await this.deps.store.getAccount(me.account);
    if (!acct) throw new RelayError('NOT_FOUND', 'account not found');
    const identity = identityKeyOf(acct.identityKey);
    if (req.signedPreKey) verifySigned(identity, req.signedPreKey, 'signedPreKey');
    if (req.kyberLastResortKey) verifySigned(identity, req.kyberLastResortKey, 'kyberLastResortKey');
    req.kyberPreKeys.forEach((k, i) => verifySigned(identity, k, `kyberPreKeys[${i}]`));
    await this.deps.store.storeKeys(me.account, me.device, req);
  }

  async keyCounts(me: DeviceRef): Promise<KeyCounts> {
    return this.deps.store.keyCounts(me.account, me.device);
  }

  /** Claim one-time keys of one or all devices of an account; tells devices running low. */
  async fetchBundle(me: DeviceRef, account: AccountId, device: DeviceId | 'all'): Promise<PreKeyBundleResponse> {
    await this.limit('bundle', deviceKey(me.account, me.device));
    const res = await this.deps.store.claimBundle(account, device);
    if (res.kind === 'notFound') throw new RelayError('NOT_FOUND', 'account or device not found');
    for (const d of res.devices) if (keysLow(d.remaining)) this.deps.bus.publish(deviceKey(account, d.deviceId), 'keysLow');
    return {
      accountId: account,
      identityKey: res.identityKey,
      devices: res.devices.map(({ remaining: _r, ...d }) => d),
    };
  }

  /**
   * Commit one envelope per destination device, then wake those devices.
   * @throws RelayError NOT_FOUND, MISMATCHED_DEVICES, STALE_DEVICES, RATE_LIMITED
   */
  async send(me: DeviceRef, destination: AccountId, req: SendRequest): Promise<{ kind: 'stored' | 'duplicate' }> {
    const limited = this.limit('send', deviceKey(me.account, me.device));
    if (limited) await limited;
    const devices = await this.deps.store.listDevices(destination);
    if (devices.length === 0) throw new RelayError('NOT_FOUND', 'destination account not found');
    // A sync copy to one's own account goes to every device but the sender.
    const self = destination === me.account;
    assertDeviceList(
      devices.filter((d) => !(self && d.deviceId === me.device)),
      req,
      this.deps.metrics,
    );
    const now = this.deps.clock.now();
    const envelopes: StoredEnvelope[] = req.messages.map((m) => ({
      guid: newGuid(),
      type: m.type,
      // A sealed-sender envelope names its sender only inside the ciphertext.
      source: m.type === EnvelopeType.UnidentifiedSender ? null : { account: me.account, device: me.device },
      destination: { account: destination, device: m.destinationDevice },
      clientTimestamp: req.timestamp,
      serverTimestamp: now,
      content: m.content,
      urgent: req.urgent,
    }));
    // Online-only (typing indicators): pushed to sockets open now, never stored.
    if (req.online) {
      publishOnline(this.deps.bus, envelopes);
      return { kind: 'stored' };
    }
    const started = performance.now();
    const res = await this.deps.store.enqueue({
      envelopes,
      idempotencyKey: { senderAccount: me.account, senderDevice: me.device, destination, messageId: req.messageId, timestamp: req.timestamp },
      now,
      onReadable: wakeOnReadable(this.deps.bus, envelopes),
    });
    this.deps.metrics.sendCommitSeconds.observe((performance.now() - started) / 1000);
    this.deps.metrics.sends.inc({ result: res.kind });
    return res;
  }

  /**
   * Delete an acknowledged envelope; for an identified sender, queue a server
   * delivery receipt (type 5) for the sending device.
   *
   * `pushed` is the envelope as the queue handed it out: it is deleted by its
   * queue position, and only if its guid still matches.
   *
   * Both writes are batched by the store: acks arriving together share one
   * transaction (with SQLite, the send group's), and their receipts join the
   * next group commit of sends. This resolves once the delete has committed,
   * not necessarily flushed to disk; that is safe because nobody is answered
   * on the strength of it (a crash can only undo it, the envelope is pushed
   * again and the client drops the repeat), and the receipt, committed after
   * it and answered only once flushed, can only survive a crash if the
   * delete does.
   */
  async acknowledge(me: DeviceRef, pushed: Pick<QueuedEnvelope, 'cursor' | 'guid'>): Promise<void> {
    const res = await this.deps.store.deleteEnvelope({
      account: me.account,
      device: me.device,
      cursor: pushed.cursor,
      guid: pushed.guid,
    });
    if (res.kind === 'notFound') return;
    this.deps.metrics.acks.inc();
    if (!res.source || res.type === EnvelopeType.ServerDeliveryReceipt) return;
    const now = this.deps.clock.now();
    const receipt: StoredEnvelope = {
      guid: newGuid(),
      type: EnvelopeType.ServerDeliveryReceipt,
      source: { account: me.account, device: me.device },
      destination: res.source,
      clientTimestamp: res.clientTimestamp,
      serverTimestamp: now,
      content: new Uint8Array(0),
      urgent: false,
    };
    await this.deps.store.enqueue({ envelopes: [receipt], idempotencyKey: null, now, onReadable: wakeOnReadable(this.deps.bus, [receipt]) });
  }

  /** Delete envelopes and idempotency keys older than the retention period. */
  async purgeExpired(): Promise<{ envelopes: number; idempotencyKeys: number }> {
    return this.deps.store.purge(this.deps.clock.now() - this.deps.config.messageTtlMs);
  }
}
