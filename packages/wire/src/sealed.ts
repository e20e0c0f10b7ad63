/**
 * Sealed sender: the JSON bodies of the certificate and access-key routes,
 * the `unidentified-access-key` header and the per-recipient device lists a
 * multi-recipient send answers with. See docs/PROTOCOL.md, "Sealed sender".
 */
import { fail } from './errors.js';
import { type AccountId, parseAccountId, parseDeviceId } from './ids.js';
import { arr, b64, int, obj, toB64 } from './json.js';
import { Limits } from './limits.js';

export const SealedSizes = {
  /** An unidentified-access key: the first 16 bytes of AES-256-GCM(profile key, zero IV, 16 zero bytes). */
  accessKey: 16,
  /** A serialized libsignal EC public key (the trust root). */
  publicKey: 33,
  /** Upper bound for a serialized libsignal SenderCertificate. */
  maxCertificate: 2048,
} as const;

/** The header an unauthenticated (sealed) send carries instead of Basic credentials. */
export const ACCESS_KEY_HEADER = 'unidentified-access-key';

/** Header of a multi-recipient send: the client timestamp (ms). */
export const MULTI_TIMESTAMP_HEADER = 'x-parley-timestamp';
/** Header of a multi-recipient send: `true` for online-only delivery (never stored). */
export const MULTI_ONLINE_HEADER = 'x-parley-online';
/** Header of a multi-recipient send: `true` for urgent messages. */
export const MULTI_URGENT_HEADER = 'x-parley-urgent';
/** Content type of a multi-recipient body (a libsignal SealedSenderMultiRecipientMessage). */
export const MULTI_RECIPIENT_CONTENT_TYPE = 'application/vnd.parley.multi-recipient';

/** Decode the access-key header (standard base64 of 16 bytes); null when absent or malformed. */
export function parseAccessKeyHeader(v: string | undefined): Uint8Array | null {
  if (v === undefined || v.length > 64) return null;
  const t = v.trim();
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(t)) return null;
  const bytes = new Uint8Array(Buffer.from(t, 'base64'));
  return bytes.length === SealedSizes.accessKey ? bytes : null;
}

export function encodeAccessKeyHeader(key: Uint8Array): string {
  return toB64(key);
}

/** `GET /v1/certificate/trust-root`: the key every sender certificate must chain to. */
export interface TrustRootResponse {
  trustRoot: Uint8Array;
  /** Id of the server certificate the relay signs with now (rotation). */
  serverCertificateId: number;
}
export function processTrustRootResponse(v: unknown): TrustRootResponse {
  const o = obj(v, 'body');
  return {
    trustRoot: b64(o.trustRoot, 'trustRoot', { exact: SealedSizes.publicKey }),
    serverCertificateId: int(o.serverCertificateId, 'serverCertificateId', 0, 0xffffffff),
  };
}
export function encodeTrustRootResponse(r: TrustRootResponse) {
  return { trustRoot: toB64(r.trustRoot), serverCertificateId: r.serverCertificateId };
}

/** `GET /v1/certificate/delivery`: a sender certificate for the calling device. */
export interface SenderCertificateResponse {
  certificate: Uint8Array;
  /** Expiry, ms since epoch (also inside the certificate). */
  expires: number;
}
export function processSenderCertificateResponse(v: unknown): SenderCertificateResponse {
  const o = obj(v, 'body');
  return {
    certificate: b64(o.certificate, 'certificate', { max: SealedSizes.maxCertificate }),
    expires: int(o.expires, 'expires', 0, Number.MAX_SAFE_INTEGER),
  };
}
export function encodeSenderCertificateResponse(r: SenderCertificateResponse) {
  return { certificate: toB64(r.certificate), expires: r.expires };
}

/** `PUT /v1/accounts/access-key`: publish (or with null, withdraw) the account's access key. */
export interface AccessKeyRequest {
  accessKey: Uint8Array | null;
}
export function processAccessKeyRequest(v: unknown): AccessKeyRequest {
  const o = obj(v, 'body');
  if (o.accessKey === null) return { accessKey: null };
  return { accessKey: b64(o.accessKey, 'accessKey', { exact: SealedSizes.accessKey }) };
}
export function encodeAccessKeyRequest(r: AccessKeyRequest) {
  return { accessKey: r.accessKey === null ? null : toB64(r.accessKey) };
}

/** One recipient's device problems in a 409/410 answer to a multi-recipient send. */
export interface RecipientDeviceMismatch {
  accountId: AccountId;
  missingDevices?: number[];
  extraDevices?: number[];
  staleDevices?: number[];
}
export function processRecipientMismatches(v: unknown): RecipientDeviceMismatch[] {
  const devices = (x: unknown, f: string) =>
    x === undefined ? undefined : arr(x, f, Limits.maxDeviceId).map((d, i) => parseDeviceId(d, `${f}[${i}]`) as number);
  return arr(v, 'recipients', 10_000).map((x, i) => {
    const o = obj(x, `recipients[${i}]`);
    const out: RecipientDeviceMismatch = { accountId: parseAccountId(o.accountId, `recipients[${i}].accountId`) };
    const missing = devices(o.missingDevices, `recipients[${i}].missingDevices`);
    const extra = devices(o.extraDevices, `recipients[${i}].extraDevices`);
    const stale = devices(o.staleDevices, `recipients[${i}].staleDevices`);
    if (missing) out.missingDevices = missing;
    if (extra) out.extraDevices = extra;
    if (stale) out.staleDevices = stale;
    if (!missing && !extra && !stale) fail(`recipients[${i}]`, 'lists no devices');
    return out;
  });
}
