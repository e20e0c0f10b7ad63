/** Device passwords: salted SHA-256, compared in constant time; Basic auth parsing. */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { type AccountId, type DeviceId, WireError, parseAccountId, parseDeviceId, parsePassword } from '@parley/wire';

/** Hash a password with a fresh 16-byte salt. */
export function hashPassword(password: string): { salt: Uint8Array; hash: Uint8Array } {
  const salt = new Uint8Array(randomBytes(16));
  return { salt, hash: digest(salt, password) };
}

function digest(salt: Uint8Array, password: string): Uint8Array {
  return new Uint8Array(createHash('sha256').update(salt).update(password, 'utf8').digest());
}

/** True when `password` hashes to `hash` under `salt`; constant time in the password. */
export function checkPassword(password: string, salt: Uint8Array, hash: Uint8Array): boolean {
  const got = digest(salt, password);
  return got.length === hash.length && timingSafeEqual(got, hash);
}

/** Equal-time comparison of two secrets of any length (both are hashed first). */
export function secretEquals(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a, 'utf8').digest();
  const hb = createHash('sha256').update(b, 'utf8').digest();
  return timingSafeEqual(ha, hb);
}

export interface BasicCredentials {
  account: AccountId;
  device: DeviceId;
  password: string;
}

/** Parse `Basic base64(accountId.deviceId:password)`; null when absent or malformed. */
export function parseBasicAuth(header: string | undefined): BasicCredentials | null {
  if (!header || header.length > 512) return null;
  const m = /^Basic ([A-Za-z0-9+/=]+)$/i.exec(header.trim());
  if (!m?.[1]) return null;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return null;
  const user = decoded.slice(0, colon);
  const dot = user.lastIndexOf('.');
  if (dot < 0) return null;
  try {
    return {
      account: parseAccountId(user.slice(0, dot)),
      device: parseDeviceId(user.slice(dot + 1)),
      password: parsePassword(decoded.slice(colon + 1)),
    };
  } catch (err) {
    if (err instanceof WireError) return null;
    throw err;
  }
}

/** A salt/hash pair checked when the device does not exist, so both failures cost the same. */
export const decoyCredentials = hashPassword('decoy-password-never-matches-anything-at-all');
