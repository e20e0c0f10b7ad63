/**
 * The JSON bodies of the relay's HTTP API (also carried as WebSocket request
 * bodies). Each `process*` function validates an untrusted parsed JSON value
 * and returns a domain type; each `encode*` function builds the JSON value.
 * Byte fields travel as standard base64.
 */
import { fail } from './errors.js';
import { type AccountId, type DeviceId, normalizeUsername, parseAccountId, parseDeviceId, parseRegistrationId } from './ids.js';
import { arr, b64, bool, int, obj, str, toB64 } from './json.js';
import { Limits } from './limits.js';

export const KeySizes = {
  /** libsignal serialized EC public key: 0x05 || 32 bytes. */
  ecPublicKey: 33,
  /** libsignal serialized Kyber1024 public key: 0x08 || 1568 bytes. */
  kyberPublicKey: 1569,
  signature: 64,
} as const;

const MAX_KEY_ID = 0xffffff;

export interface PreKey {
  keyId: number;
  publicKey: Uint8Array;
}
export interface SignedPreKey extends PreKey {
  signature: Uint8Array;
}

function processPreKey(v: unknown, field: string): PreKey {
  const o = obj(v, field);
  return {
    keyId: int(o.keyId, `${field}.keyId`, 0, MAX_KEY_ID),
    publicKey: b64(o.publicKey, `${field}.publicKey`, { exact: KeySizes.ecPublicKey }),
  };
}
function processSignedKey(v: unknown, field: string, keySize: number): SignedPreKey {
  const o = obj(v, field);
  return {
    keyId: int(o.keyId, `${field}.keyId`, 0, MAX_KEY_ID),
    publicKey: b64(o.publicKey, `${field}.publicKey`, { exact: keySize }),
    signature: b64(o.signature, `${field}.signature`, { exact: KeySizes.signature }),
  };
}
function encodePreKey(k: PreKey) {
  return { keyId: k.keyId, publicKey: toB64(k.publicKey) };
}
function encodeSignedKey(k: SignedPreKey) {
  return { keyId: k.keyId, publicKey: toB64(k.publicKey), signature: toB64(k.signature) };
}

// ---------------------------------------------------------------- register

/** The device password: 32 random bytes as unpadded base64url (43 chars). */
export function parsePassword(v: unknown, field = 'password'): string {
  if (typeof v !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(v)) fail(field, 'must be 32 bytes as unpadded base64url');
  return v;
}

export interface RegisterRequest {
  username: string;
  password: string;
  registrationId: number;
  identityKey: Uint8Array;
  signedPreKey: SignedPreKey;
  kyberLastResortKey: SignedPreKey;
  inviteCode: string | null;
}

export function processRegisterRequest(v: unknown): RegisterRequest {
  const o = obj(v, 'body');
  return {
    username: normalizeUsername(o.username),
    password: parsePassword(o.password),
    registrationId: parseRegistrationId(o.registrationId),
    identityKey: b64(o.identityKey, 'identityKey', { exact: KeySizes.ecPublicKey }),
    signedPreKey: processSignedKey(o.signedPreKey, 'signedPreKey', KeySizes.ecPublicKey),
    kyberLastResortKey: processSignedKey(o.kyberLastResortKey, 'kyberLastResortKey', KeySizes.kyberPublicKey),
    inviteCode: o.inviteCode === undefined || o.inviteCode === null ? null : str(o.inviteCode, 'inviteCode', 128),
  };
}
export function encodeRegisterRequest(r: RegisterRequest) {
  return {
    username: r.username,
    password: r.password,
    registrationId: r.registrationId,
    identityKey: toB64(r.identityKey),
    signedPreKey: encodeSignedKey(r.signedPreKey),
    kyberLastResortKey: encodeSignedKey(r.kyberLastResortKey),
    ...(r.inviteCode === null ? {} : { inviteCode: r.inviteCode }),
  };
}

export interface RegisterResponse {
  accountId: AccountId;
  deviceId: DeviceId;
}
export function processRegisterResponse(v: unknown): RegisterResponse {
  const o = obj(v, 'body');
  return { accountId: parseAccountId(o.accountId), deviceId: parseDeviceId(o.deviceId) };
}

export interface WhoAmIResponse {
  accountId: AccountId;
  deviceId: DeviceId;
  username: string;
}
export function processWhoAmIResponse(v: unknown): WhoAmIResponse {
  const o = obj(v, 'body');
  return { accountId: parseAccountId(o.accountId), deviceId: parseDeviceId(o.deviceId), username: normalizeUsername(o.username) };
}

export interface LookupResponse {
  accountId: AccountId;
}
export function processLookupResponse(v: unknown): LookupResponse {
  return { accountId: parseAccountId(obj(v, 'body').accountId) };
}

// ---------------------------------------------------------------- keys

export interface KeyUploadRequest {
  preKeys: PreKey[];
  kyberPreKeys: SignedPreKey[];
  signedPreKey: SignedPreKey | null;
  kyberLastResortKey: SignedPreKey | null;
}

export function processKeyUploadRequest(v: unknown): KeyUploadRequest {
  const o = obj(v, 'body');
  const opt = <T>(x: unknown, f: (x: unknown) => T): T | null => (x === undefined || x === null ? null : f(x));
  return {
    preKeys: arr(o.preKeys ?? [], 'preKeys', Limits.maxPreKeysPerUpload).map((k, i) => processPreKey(k, `preKeys[${i}]`)),
    kyberPreKeys: arr(o.kyberPreKeys ?? [], 'kyberPreKeys', Limits.maxPreKeysPerUpload).map((k, i) =>
      processSignedKey(k, `kyberPreKeys[${i}]`, KeySizes.kyberPublicKey),
    ),
    signedPreKey: opt(o.signedPreKey, (x) => processSignedKey(x, 'signedPreKey', KeySizes.ecPublicKey)),
    kyberLastResortKey: opt(o.kyberLastResortKey, (x) => processSignedKey(x, 'kyberLastResortKey', KeySizes.kyberPublicKey)),
  };
}
export function encodeKeyUploadRequest(r: KeyUploadRequest) {
  return {
    preKeys: r.preKeys.map(encodePreKey),
    kyberPreKeys: r.kyberPreKeys.map(encodeSignedKey),
    ...(r.signedPreKey ? { signedPreKey: encodeSignedKey(r.signedPreKey) } : {}),
    ...(r.kyberLastResortKey ? { kyberLastResortKey: encodeSignedKey(r.kyberLastResortKey) } : {}),
  };
}

export interface KeyCounts {
  ecCount: number;
  kyberCount: number;
}
export function processKeyCounts(v: unknown): KeyCounts {
  const o = obj(v, 'body');
  return { ecCount: int(o.ecCount, 'ecCount', 0, 1e6), kyberCount: int(o.kyberCount, 'kyberCount', 0, 1e6) };
}

export interface DeviceBundle {
  deviceId: DeviceId;
  registrationId: number;
  /** Absent when the device's one-time EC keys ran out. */
  preKey: PreKey | null;
  signedPreKey: SignedPreKey;
  /** A one-time Kyber key, or the last-resort key when those ran out. */
  kyberPreKey: SignedPreKey;
}
export interface PreKeyBundleResponse {
  accountId: AccountId;
  identityKey: Uint8Array;
  devices: DeviceBundle[];
}
export function processPreKeyBundleResponse(v: unknown): PreKeyBundleResponse {
  const o = obj(v, 'body');
  return {
    accountId: parseAccountId(o.accountId),
    identityKey: b64(o.identityKey, 'identityKey', { exact: KeySizes.ecPublicKey }),
    devices: arr(o.devices, 'devices', Limits.maxDeviceId).map((d, i) => {
      const x = obj(d, `devices[${i}]`);
      return {
        deviceId: parseDeviceId(x.deviceId, `devices[${i}].deviceId`),
        registrationId: parseRegistrationId(x.registrationId, `devices[${i}].registrationId`),
        preKey: x.preKey === undefined || x.preKey === null ? null : processPreKey(x.preKey, `devices[${i}].preKey`),
        signedPreKey: processSignedKey(x.signedPreKey, `devices[${i}].signedPreKey`, KeySizes.ecPublicKey),
        kyberPreKey: processSignedKey(x.kyberPreKey, `devices[${i}].kyberPreKey`, KeySizes.kyberPublicKey),
      };
    }),
  };
}
export function encodePreKeyBundleResponse(r: PreKeyBundleResponse) {
  return {
    accountId: r.accountId,
    identityKey: toB64(r.identityKey),
    devices: r.devices.map((d) => ({
      deviceId: d.deviceId,
      registrationId: d.registrationId,
      preKey: d.preKey ? encodePreKey(d.preKey) : null,
      signedPreKey: encodeSignedKey(d.signedPreKey),
      kyberPreKey: encodeSignedKey(d.kyberPreKey),
    })),
  };
}

// ---------------------------------------------------------------- errors

/** Every non-2xx answer carries this body. `code` is stable; see docs/PROTOCOL.md. */
export interface ErrorBody {
  code: string;
  message: string;
  missingDevices?: number[];
  extraDevices?: number[];
  staleDevices?: number[];
}

export function processErrorBody(v: unknown): ErrorBody {
  const o = obj(v, 'body');
  const devices = (x: unknown, f: string) =>
    x === undefined ? undefined : arr(x, f, Limits.maxDeviceId).map((d, i) => parseDeviceId(d, `${f}[${i}]`) as number);
  const body: ErrorBody = { code: str(o.code, 'code', 64), message: str(o.message ?? '', 'message', 1024) };
  const missing = devices(o.missingDevices, 'missingDevices');
  const extra = devices(o.extraDevices, 'extraDevices');
  const stale = devices(o.staleDevices, 'staleDevices');
  if (missing) body.missingDevices = missing;
  if (extra) body.extraDevices = extra;
  if (stale) body.staleDevices = stale;
  return body;
}

export function processBool(v: unknown, field: string): boolean {
  return bool(v, field);
}
