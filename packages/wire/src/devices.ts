/**
 * Multi-device: the provisioning protobufs (what the primary sends a new
 * device through the relay) and the JSON bodies of the device routes. See
 * docs/PROTOCOL.md, "Devices and linking".
 */
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { fail, WireError, WireErrorCode } from './errors.js';
import { ProvisionEnvelopeSchema, ProvisionMessageSchema } from './gen/parley/v1/provisioning_pb.js';
import { type AccountId, type DeviceId, accountIdFromBytes, accountIdToBytes, normalizeUsername, parseAccountId, parseDeviceId, parseRegistrationId } from './ids.js';
import { arr, b64, int, obj, toB64 } from './json.js';
import { Limits } from './limits.js';
import { KeySizes, type SignedPreKey, parsePassword } from './api.js';

export const ProvisioningSizes = {
  /** libsignal serialized EC private key. */
  privateKey: 32,
  profileKey: 32,
  archiveKey: 32,
  /** A provisioning address: 16 random bytes as unpadded base64url. */
  addressChars: 22,
  /** A provisioning code: 16 random bytes as unpadded base64url. */
  codeChars: 22,
  /** Largest encrypted provisioning envelope the relay forwards. */
  maxEnvelope: 4096,
  /** Longest archive id (attachment blob ids are 32 characters). */
  maxArchiveId: 64,
} as const;

const TOKEN = /^[A-Za-z0-9_-]{22}$/;

/** A provisioning socket address or code: 22 base64url characters. */
export function parseProvisioningToken(v: unknown, field: string): string {
  if (typeof v !== 'string' || !TOKEN.test(v)) fail(field, 'must be 16 bytes as unpadded base64url');
  return v;
}

// ---------------------------------------------------------------- protobuf

export interface ProvisionEnvelope {
  publicKey: Uint8Array;
  body: Uint8Array;
}

export function encodeProvisionEnvelope(e: ProvisionEnvelope): Uint8Array {
  return toBinary(ProvisionEnvelopeSchema, create(ProvisionEnvelopeSchema, e));
}

/** @throws WireError when the bytes are not a well-formed envelope. */
export function processProvisionEnvelope(bytes: Uint8Array): ProvisionEnvelope {
  if (bytes.length > ProvisioningSizes.maxEnvelope) throw new WireError(WireErrorCode.TooLarge, 'provisioning envelope too large');
  let raw;
  try {
    raw = fromBinary(ProvisionEnvelopeSchema, bytes);
  } catch {
    throw new WireError(WireErrorCode.Malformed, 'provisioning envelope: undecodable');
  }
  if (raw.publicKey.length !== KeySizes.ecPublicKey) fail('publicKey', `must be ${KeySizes.ecPublicKey} bytes`);
  if (raw.body.length < 28) fail('body', 'too short');
  return { publicKey: raw.publicKey, body: raw.body };
}

export interface ProvisionMessage {
  accountId: AccountId;
  username: string;
  identityKeyPublic: Uint8Array;
  identityKeyPrivate: Uint8Array;
  profileKey: Uint8Array;
  provisioningCode: string;
  /** Null when the primary offers no history archive. */
  archive: { id: string; key: Uint8Array } | null;
}

export function encodeProvisionMessage(m: ProvisionMessage): Uint8Array {
  return toBinary(
    ProvisionMessageSchema,
    create(ProvisionMessageSchema, {
      accountId: accountIdToBytes(m.accountId),
      username: m.username,
      identityKeyPublic: m.identityKeyPublic,
      identityKeyPrivate: m.identityKeyPrivate,
      profileKey: m.profileKey,
      provisioningCode: m.provisioningCode,
      archiveKey: m.archive?.key ?? new Uint8Array(0),
      archiveId: m.archive?.id ?? '',
    }),
  );
}

/** @throws WireError when a field is missing or has the wrong size. */
export function processProvisionMessage(bytes: Uint8Array): ProvisionMessage {
  let raw;
  try {
    raw = fromBinary(ProvisionMessageSchema, bytes);
  } catch {
    throw new WireError(WireErrorCode.Malformed, 'provision message: undecodable');
  }
  const exact = (b: Uint8Array, n: number, field: string) => {
    if (b.length !== n) fail(field, `must be ${n} bytes`);
    return b;
  };
  let archive: ProvisionMessage['archive'] = null;
  if (raw.archiveId !== '' || raw.archiveKey.length > 0) {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(raw.archiveId)) fail('archiveId', 'must be 1..64 base64url characters');
    archive = { id: raw.archiveId, key: exact(raw.archiveKey, ProvisioningSizes.archiveKey, 'archiveKey') };
  }
  return {
    accountId: accountIdFromBytes(raw.accountId),
    username: normalizeUsername(raw.username),
    identityKeyPublic: exact(raw.identityKeyPublic, KeySizes.ecPublicKey, 'identityKeyPublic'),
    identityKeyPrivate: exact(raw.identityKeyPrivate, ProvisioningSizes.privateKey, 'identityKeyPrivate'),
    profileKey: exact(raw.profileKey, ProvisioningSizes.profileKey, 'profileKey'),
    provisioningCode: parseProvisioningToken(raw.provisioningCode, 'provisioningCode'),
    archive,
  };
}

// ---------------------------------------------------------------- JSON bodies

function processSignedKey(v: unknown, field: string, keySize: number): SignedPreKey {
  const o = obj(v, field);
  return {
    keyId: int(o.keyId, `${field}.keyId`, 0, 0xffffff),
    publicKey: b64(o.publicKey, `${field}.publicKey`, { exact: keySize }),
    signature: b64(o.signature, `${field}.signature`, { exact: KeySizes.signature }),
  };
}
const encodeSignedKey = (k: SignedPreKey) => ({ keyId: k.keyId, publicKey: toB64(k.publicKey), signature: toB64(k.signature) });

/** `POST /v1/devices/link`: a new device registers with the code the primary sent it. */
export interface LinkDeviceRequest {
  provisioningCode: string;
  password: string;
  registrationId: number;
  signedPreKey: SignedPreKey;
  kyberLastResortKey: SignedPreKey;
}
export function processLinkDeviceRequest(v: unknown): LinkDeviceRequest {
  const o = obj(v, 'body');
  return {
    provisioningCode: parseProvisioningToken(o.provisioningCode, 'provisioningCode'),
    password: parsePassword(o.password),
    registrationId: parseRegistrationId(o.registrationId),
    signedPreKey: processSignedKey(o.signedPreKey, 'signedPreKey', KeySizes.ecPublicKey),
    kyberLastResortKey: processSignedKey(o.kyberLastResortKey, 'kyberLastResortKey', KeySizes.kyberPublicKey),
  };
}
export function encodeLinkDeviceRequest(r: LinkDeviceRequest) {
  return {
    provisioningCode: r.provisioningCode,
    password: r.password,
    registrationId: r.registrationId,
    signedPreKey: encodeSignedKey(r.signedPreKey),
    kyberLastResortKey: encodeSignedKey(r.kyberLastResortKey),
  };
}

export interface LinkDeviceResponse {
  accountId: AccountId;
  deviceId: DeviceId;
}
export function processLinkDeviceResponse(v: unknown): LinkDeviceResponse {
  const o = obj(v, 'body');
  const deviceId = parseDeviceId(o.deviceId);
  if (deviceId === 1) fail('deviceId', 'a linked device cannot be the primary');
  return { accountId: parseAccountId(o.accountId), deviceId };
}

/** `GET /v1/devices/provisioning/code`. */
export interface ProvisioningCodeResponse {
  code: string;
  expiresAt: number;
}
export function processProvisioningCodeResponse(v: unknown): ProvisioningCodeResponse {
  const o = obj(v, 'body');
  return { code: parseProvisioningToken(o.code, 'code'), expiresAt: int(o.expiresAt, 'expiresAt', 0, Number.MAX_SAFE_INTEGER) };
}

/** `GET /v1/devices`. */
export interface DeviceInfo {
  deviceId: DeviceId;
  registrationId: number;
  createdAt: number;
  lastSeen: number;
}
export interface DeviceListResponse {
  devices: DeviceInfo[];
}
export function processDeviceListResponse(v: unknown): DeviceListResponse {
  const o = obj(v, 'body');
  return {
    devices: arr(o.devices, 'devices', Limits.maxDeviceId).map((d, i) => {
      const x = obj(d, `devices[${i}]`);
      return {
        deviceId: parseDeviceId(x.deviceId, `devices[${i}].deviceId`),
        registrationId: parseRegistrationId(x.registrationId, `devices[${i}].registrationId`),
        createdAt: int(x.createdAt, `devices[${i}].createdAt`, 0, Number.MAX_SAFE_INTEGER),
        lastSeen: int(x.lastSeen, `devices[${i}].lastSeen`, 0, Number.MAX_SAFE_INTEGER),
      };
    }),
  };
}

/** The provisioning socket's first frame: `PUT /v1/address` with this JSON body. */
export interface ProvisioningAddress {
  address: string;
}
export function processProvisioningAddress(v: unknown): ProvisioningAddress {
  return { address: parseProvisioningToken(obj(v, 'body').address, 'address') };
}


/** `PUT /v1/devices/archive` answer: the id of the stored (encrypted) history archive. */
export interface ArchiveUploadResponse {
  id: string;
  expiresAt: number;
}
export function processArchiveUploadResponse(v: unknown): ArchiveUploadResponse {
  const o = obj(v, 'body');
  if (typeof o.id !== 'string' || !/^[A-Za-z0-9_-]{32}$/.test(o.id)) fail('id', 'must be 32 base64url characters');
  return { id: o.id, expiresAt: int(o.expiresAt, 'expiresAt', 0, Number.MAX_SAFE_INTEGER) };
}

/** `GET /v1/devices/archive/:id` answer: the encrypted archive. */
export function processArchiveDownloadResponse(v: unknown): Uint8Array {
  return b64(obj(v, 'body').archive, 'archive', { max: 2 * 1024 * 1024 });
}
