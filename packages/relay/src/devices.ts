/**
 * Multi-device use cases: provisioning codes, linking a new device, listing
 * and removing devices, idle expiry, and forwarding provisioning envelopes.
 *
 * The relay cannot add a device of its own making that clients would accept:
 * a linked device's signed pre-key and Kyber last-resort key must verify
 * against the ACCOUNT identity key, whose private half only the account's
 * devices hold (they got it from the primary inside the end-to-end encrypted
 * provisioning message). Clients check the same signatures on every bundle.
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  type AccountId,
  type DeviceId,
  type DeviceListResponse,
  type LinkDeviceRequest,
  type LinkDeviceResponse,
  type ProvisioningCodeResponse,
  parseDeviceId,
  parseProvisioningToken,
  processLinkDeviceRequest,
  processProvisionEnvelope,
} from '@parley/wire';
import type { Logger } from 'pino';
import { type BasicCredentials, checkPassword, hashPassword } from './auth.js';
import type { BlobStore } from './blobstore.js';
import { RelayError } from './errors.js';
import { type Bus, type Clock, type Store, deviceKey } from './ports.js';
import type { ProvisioningSockets } from './provisioning.js';
import { type DeviceRef, type Relay, identityKeyOf, verifySigned } from './relay.js';
import type { RouteDefiner } from './router.js';

const DAY_MS = 24 * 3600 * 1000;
export const DEFAULT_MAX_DEVICES = 6;
export const DEFAULT_DEVICE_IDLE_MS = 30 * DAY_MS;
export const PROVISIONING_CODE_TTL_MS = 10 * 60 * 1000;
/** A history archive is kept this long at most (it is deleted as soon as it is downloaded). */
export const HISTORY_ARCHIVE_TTL_MS = 60 * 60 * 1000;
/** Largest history archive (the HTTP body limit is 2 MiB). */
export const MAX_HISTORY_ARCHIVE_BYTES = 2 * 1024 * 1024 - 1024;
const ARCHIVE_ID = /^[A-Za-z0-9_-]{32}$/;

/** A bus signal that closes every socket of a device (newer than any real socket token). */
export const REMOVED_SIGNAL = 'replaced:9999999999999:removed' as const;

export interface DevicesConfig {
  /** Most devices per account, the primary included (2..127). */
  maxDevices: number;
  /** Linked devices not seen for this long are removed. */
  idleMs: number;
  /** Lifetime of a provisioning code. */
  codeTtlMs: number;
}

export interface DevicesDeps {
  relay: Relay;
  store: Store;
  bus: Bus;
  clock: Clock;
  log: Logger;
  provisioning: ProvisioningSockets;
  config: DevicesConfig;
  /** Where history archives are kept; without one the archive routes answer 404. */
  blobs?: BlobStore;
}

/** The BlobStore owner of an account's history archives (a hash: blob metadata holds no account ids). */
function archiveOwner(account: AccountId): string {
  return createHash('sha256').update(`parley-history-archive:${account}`).digest('base64url').slice(0, 32);
}

function hashCode(code: string): Uint8Array {
  return new Uint8Array(createHash('sha256').update(code, 'utf8').digest());
}

export class Devices {
  constructor(private readonly deps: DevicesDeps) {}

  /** A single-use code the primary puts into the provisioning message. */
  async issueCode(me: DeviceRef): Promise<ProvisioningCodeResponse> {
    if (me.device !== 1) throw new RelayError('FORBIDDEN', 'only the primary device can link devices');
    const code = randomBytes(16).toString('base64url');
    const expiresAt = this.deps.clock.now() + this.deps.config.codeTtlMs;
    await this.deps.store.putProvisioningCode({ codeHash: hashCode(code), account: me.account, expiresAt });
    return { code, expiresAt };
  }

  /**
   * Register a linked device. The code is consumed first (so a failed attempt
   * cannot be retried with it); then both signed keys must verify against the
   * account identity key.
   * @throws RelayError INVALID_CODE, BAD_SIGNATURE, TOO_MANY_DEVICES, RATE_LIMITED
   */
  async link(req: LinkDeviceRequest, ip: string): Promise<LinkDeviceResponse> {
    await this.deps.relay.limit('register', `link:${ip}`);
    const now = this.deps.clock.now();
    const account = await this.deps.store.takeProvisioningCode(hashCode(req.provisioningCode), now);
    if (!account) throw new RelayError('INVALID_CODE', 'the provisioning code is unknown, used or expired');
    const acct = await this.deps.store.getAccount(account);
    if (!acct) throw new RelayError('INVALID_CODE', 'the provisioning code is unknown, used or expired');
    const identity = identityKeyOf(acct.identityKey);
    verifySigned(identity, req.signedPreKey, 'signedPreKey');
    verifySigned(identity, req.kyberLastResortKey, 'kyberLastResortKey');
    const { salt, hash } = hashPassword(req.password);
    const res = await this.deps.store.addDevice({
      account,
      registrationId: req.registrationId,
      passwordSalt: salt,
      passwordHash: hash,
      signedPreKey: req.signedPreKey,
      kyberLastResortKey: req.kyberLastResortKey,
      createdAt: now,
      maxDevices: this.deps.config.maxDevices,
    });
    if (res.kind === 'tooMany') throw new RelayError('TOO_MANY_DEVICES', 'the account has the most devices allowed');
    if (res.kind === 'notFound') throw new RelayError('INVALID_CODE', 'the provisioning code is unknown, used or expired');
    this.deps.log.info({ event: 'device_linked', device: res.deviceId }, 'device linked');
    return { accountId: account, deviceId: res.deviceId };
  }

  async list(me: DeviceRef): Promise<DeviceListResponse> {
    return { devices: await this.deps.store.deviceDetails(me.account) };
  }

  /**
   * A device removes itself, or the primary removes a linked device. Its keys
   * and queue go with it and its socket is closed.
   * @throws RelayError FORBIDDEN, NOT_FOUND
   */
  async remove(me: DeviceRef, device: DeviceId): Promise<void> {
    if (device === 1) throw new RelayError('FORBIDDEN', 'the primary device cannot be removed');
    if (me.device !== 1 && me.device !== device) throw new RelayError('FORBIDDEN', 'only the primary can remove another device');
    await this.#drop(me.account, device);
  }

  async #drop(account: AccountId, device: DeviceId): Promise<void> {
    const gone = await this.deps.store.removeDevice(account, device);
    if (!gone) throw new RelayError('NOT_FOUND', 'no such device');
    this.deps.bus.publish(deviceKey(account, device), REMOVED_SIGNAL);
  }

  /** Remove linked devices idle for longer than the configured period; returns how many. */
  async expireIdle(): Promise<number> {
    const cutoff = this.deps.clock.now() - this.deps.config.idleMs;
    let removed = 0;
    for (;;) {
      const idle = await this.deps.store.idleDevices(cutoff, 100);
      for (const d of idle) {
        try {
          await this.#drop(d.account, d.device);
          removed++;
        } catch (err) {
          if (!RelayError.is(err, 'NOT_FOUND')) throw err;
        }
      }
      if (idle.length < 100) return removed;
    }
  }

  /** Record a socket connect (for idle expiry). */
  async touch(me: DeviceRef): Promise<void> {
    await this.deps.store.touchDevice(me.account, me.device, this.deps.clock.now());
  }

  /** `touch` for a connecting socket's credentials, when they are right (failures are the gateway's to count). */
  async touchIfValid(creds: BasicCredentials | null): Promise<void> {
    if (!creds) return;
    const stored = await this.deps.store.getDeviceCredentials(creds.account, creds.device);
    if (stored && checkPassword(creds.password, stored.passwordSalt, stored.passwordHash)) await this.touch(creds);
  }

  /**
   * Keep an encrypted history archive for a device about to be linked (primary
   * only). The relay cannot read it: the key travels in the provisioning message.
   * @throws RelayError FORBIDDEN, NOT_FOUND (no blob store), TOO_LARGE, BAD_REQUEST
   */
  async putArchive(me: DeviceRef, body: Uint8Array): Promise<{ id: string; expiresAt: number }> {
    if (me.device !== 1) throw new RelayError('FORBIDDEN', 'only the primary device can link devices');
    const blobs = this.deps.blobs;
    if (!blobs) throw new RelayError('NOT_FOUND', 'history archives are not available on this relay');
    if (body.length === 0) throw new RelayError('BAD_REQUEST', 'body: the archive is empty');
    if (body.length > MAX_HISTORY_ARCHIVE_BYTES) throw new RelayError('TOO_LARGE', 'the archive is too large');
    const id = randomBytes(24).toString('base64url');
    const now = this.deps.clock.now();
    const expiresAt = now + HISTORY_ARCHIVE_TTL_MS;
    await blobs.create({ id, owner: archiveOwner(me.account), length: body.length, createdAt: now, expiresAt });
    const res = await blobs.append(
      id,
      0,
      (async function* () {
        yield body;
      })(),
    );
    if (res.kind !== 'appended' || res.offset !== body.length) {
      await blobs.delete(id);
      throw new Error('archive append failed');
    }
    return { id, expiresAt };
  }

  /**
   * Download a history archive of the caller's own account, once: it is deleted as it is served.
   * @throws RelayError NOT_FOUND (unknown, expired, another account's, already downloaded)
   */
  async takeArchive(me: DeviceRef, id: string): Promise<Uint8Array> {
    const blobs = this.deps.blobs;
    if (!blobs || !ARCHIVE_ID.test(id)) throw new RelayError('NOT_FOUND', 'no such archive');
    const now = this.deps.clock.now();
    const info = await blobs.info(id, now);
    if (!info || info.owner !== archiveOwner(me.account)) throw new RelayError('NOT_FOUND', 'no such archive');
    const found = await blobs.read(id, now);
    if (!found) throw new RelayError('NOT_FOUND', 'no such archive');
    const chunks: Buffer[] = [];
    for await (const chunk of found.stream) chunks.push(Buffer.from(chunk as Uint8Array));
    await blobs.delete(id);
    return new Uint8Array(Buffer.concat(chunks));
  }

  /** The primary hands an encrypted provisioning envelope to a waiting socket. The relay checks only its shape. */
  forward(me: DeviceRef, address: string, body: Uint8Array): void {
    if (me.device !== 1) throw new RelayError('FORBIDDEN', 'only the primary device can link devices');
    processProvisionEnvelope(body);
    this.deps.provisioning.forward(address, body);
  }
}

function parseJson(body: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body));
  } catch {
    throw new RelayError('BAD_REQUEST', 'body: not valid JSON');
  }
}

/** The device routes (docs/PROTOCOL.md, "Devices and linking"). */
export function defineDeviceRoutes(define: RouteDefiner, devices: Devices): void {
  define('GET', '/v1/devices', true, async ({ me }) => ({ status: 200, json: await devices.list(me) }));
  define('GET', '/v1/devices/provisioning/code', true, async ({ me }) => ({ status: 200, json: await devices.issueCode(me) }));
  define('POST', '/v1/devices/link', false, async ({ req }) => ({
    status: 200,
    json: await devices.link(processLinkDeviceRequest(parseJson(req.body)), req.ip),
  }));
  define('DELETE', '/v1/devices/:deviceId', true, async ({ me, params }) => {
    await devices.remove(me, parseDeviceId(params.deviceId));
    return { status: 204 };
  });
  define('PUT', '/v1/devices/archive', true, async ({ me, req }) => ({ status: 200, json: await devices.putArchive(me, req.body) }));
  define('GET', '/v1/devices/archive/:id', true, async ({ me, params }) => ({
    status: 200,
    json: { archive: Buffer.from(await devices.takeArchive(me, params.id ?? '')).toString('base64') },
  }));
  define('PUT', '/v1/provisioning/:address', true, async ({ me, params, req }) => {
    devices.forward(me, parseProvisioningToken(params.address, 'address'), req.body);
    return { status: 204 };
  });
}
