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
import { hashPassword } from './auth.js';
import { RelayError } from './errors.js';
import { type Bus, type Clock, type Store, deviceKey } from './ports.js';
import type { ProvisioningSockets } from './provisioning.js';
import { type DeviceRef, type Relay, identityKeyOf, verifySigned } from './relay.js';
import type { RouteDefiner } from './router.js';

const DAY_MS = 24 * 3600 * 1000;
export const DEFAULT_MAX_DEVICES = 6;
export const DEFAULT_DEVICE_IDLE_MS = 30 * DAY_MS;
export const PROVISIONING_CODE_TTL_MS = 10 * 60 * 1000;

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
    await this.deps.relay.limit('register', ip);
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
  define('PUT', '/v1/provisioning/:address', true, async ({ me, params, req }) => {
    devices.forward(me, parseProvisioningToken(params.address, 'address'), req.body);
    return { status: 204 };
  });
}
