import { fail } from './errors.js';

/** An account id: 16 random bytes, shown as a lowercase UUID string. */
export type AccountId = string & { readonly __brand: 'AccountId' };
/** 1 is the primary device; linked devices get 2..127. */
export type DeviceId = number & { readonly __brand: 'DeviceId' };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function parseAccountId(value: unknown, field = 'accountId'): AccountId {
  if (typeof value !== 'string' || !UUID.test(value)) fail(field, 'not a lowercase UUID');
  return value as AccountId;
}

/**
 * The last few conversions: every envelope names its source and destination,
 * and a burst names the same two accounts again and again.
 */
const recentIds: Array<{ bytes: Uint8Array; id: AccountId }> = [];
const RECENT_IDS = 4;

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function accountIdFromBytes(bytes: Uint8Array, field = 'accountId'): AccountId {
  if (bytes.length !== 16) fail(field, 'must be 16 bytes');
  for (const r of recentIds) if (sameBytes(r.bytes, bytes)) return r.id;
  const hex = Buffer.from(bytes.buffer, bytes.byteOffset, 16).toString('hex');
  const id = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}` as AccountId;
  // A copy: the caller may reuse or change its buffer.
  if (recentIds.length >= RECENT_IDS) recentIds.pop();
  recentIds.unshift({ bytes: Uint8Array.from(bytes), id });
  return id;
}

export function accountIdToBytes(id: AccountId): Uint8Array {
  const out = new Uint8Array(16);
  putAccountId(out, 0, id);
  return out;
}

/** '0'-'9' and 'a'-'f' as 0-15. */
const nibble = (c: number) => (c <= 57 ? c - 48 : c - 87);

/**
 * Write the 16 bytes of account id `id` (a lowercase UUID, as every AccountId
 * is once parsed) at `out[pos]`, without a temporary string or buffer (the
 * relay writes two per push); returns the position after them.
 */
export function putAccountId(out: Uint8Array, pos: number, id: AccountId): number {
  for (let i = 0, j = 0; i < 16; i++, j += 2) {
    if (id.charCodeAt(j) === 45 /* '-' */) j++;
    out[pos++] = (nibble(id.charCodeAt(j)) << 4) | nibble(id.charCodeAt(j + 1));
  }
  return pos;
}

export function parseDeviceId(value: unknown, field = 'deviceId'): DeviceId {
  const n = typeof value === 'string' && /^[0-9]{1,3}$/.test(value) ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 127) fail(field, 'must be an integer in 1..127');
  return n as DeviceId;
}

/** Registration ids are 14-bit in libsignal (1..16380). */
export function parseRegistrationId(value: unknown, field = 'registrationId'): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 0x3fff)
    fail(field, 'must be an integer in 1..16383');
  return value;
}

/**
 * Usernames are case-folded and NFKC-normalized, then must match
 * [a-z0-9_.]{3,32}. The same function runs on the client and the relay so both
 * agree on uniqueness.
 */
export function normalizeUsername(value: unknown, field = 'username'): string {
  if (typeof value !== 'string' || value.length > 128) fail(field, 'must be a string of at most 32 characters');
  // Every received message carries its sender's claimed username: remember the last valid one.
  if (lastUsername !== null && value === lastUsername.value) return lastUsername.normalized;
  const n = value.normalize('NFKC').toLowerCase();
  if (!/^[a-z0-9_.]{3,32}$/.test(n)) fail(field, 'must be 3 to 32 of a-z, 0-9, "_" or "."');
  lastUsername = { value, normalized: n };
  return n;
}
let lastUsername: { value: string; normalized: string } | null = null;
