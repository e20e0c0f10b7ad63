/**
 * The history archive a primary device hands a device it links, so the new
 * device is not empty: the most recent messages and the contacts they name,
 * as JSON, encrypted with AES-256-GCM under a random 32-byte key that travels
 * only inside the (end-to-end encrypted) provisioning message. The relay keeps
 * the ciphertext for at most an hour and deletes it once downloaded.
 *
 * Attachments are not carried (their pointers stay on the old devices).
 * Group states are (groups.ts), so the new device knows the groups the
 * account is in; group messages themselves stay on the old devices.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { Limits, normalizeUsername, parseAccountId } from '@parley/wire';
import type { Db } from './db.js';
import { SdkError } from './errors.js';
import { type ArchivedGroup, exportGroups, importGroups, validArchivedGroup } from './groups.js';

/** How many of the most recent messages an archive carries. */
export const HISTORY_ARCHIVE_MESSAGES = 1000;
const AAD = Buffer.from('Parley history archive v1');
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
export const ARCHIVE_KEY_BYTES = 32;

interface ArchivedMessage {
  id: string;
  account: string;
  device: number;
  direction: 'in' | 'out';
  timestamp: number;
  serverTimestamp: number;
  body: string;
  status: string;
  username: string | null;
}

interface Archive {
  version: 1;
  contacts: Array<{ username: string; account: string }>;
  messages: ArchivedMessage[];
  /** Absent in archives from before groups. */
  groups?: ArchivedGroup[];
}

/** The plaintext archive of the most recent messages in `db`. */
export function exportHistory(db: Db, limit = HISTORY_ARCHIVE_MESSAGES): Uint8Array {
  const rows = db
    .prepare('SELECT id, account, device, direction, timestamp, server_timestamp, body, status, username FROM messages WHERE group_id IS NULL ORDER BY timestamp DESC, rowid DESC LIMIT ?')
    .all([limit]);
  const messages: ArchivedMessage[] = rows.map((r) => ({
    id: String(r.id),
    account: String(r.account),
    device: Number(r.device),
    direction: r.direction === 'in' ? 'in' : 'out',
    timestamp: Number(r.timestamp),
    serverTimestamp: Number(r.server_timestamp),
    body: String(r.body),
    // A message still pending or failed here was not sent from the new device either.
    status: String(r.status),
    username: typeof r.username === 'string' ? r.username : null,
  }));
  const accounts = new Set(messages.map((m) => m.account));
  const contacts = db
    .prepare('SELECT username, account FROM contacts')
    .all()
    .map((r) => ({ username: String(r.username), account: String(r.account) }))
    .filter((c) => accounts.has(c.account));
  const archive: Archive = { version: 1, contacts, messages: messages.reverse(), groups: exportGroups(db) };
  return new Uint8Array(Buffer.from(JSON.stringify(archive), 'utf8'));
}

export function encryptArchive(key: Uint8Array, plaintext: Uint8Array): Uint8Array {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(AAD);
  return new Uint8Array(Buffer.concat([nonce, cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]));
}

/** @throws SdkError LINK_FAILED when the archive does not verify under `key`. */
export function decryptArchive(key: Uint8Array, blob: Uint8Array): Uint8Array {
  try {
    if (blob.length < NONCE_BYTES + TAG_BYTES) throw new RangeError('archive too short');
    const decipher = createDecipheriv('aes-256-gcm', key, blob.subarray(0, NONCE_BYTES));
    decipher.setAAD(AAD);
    decipher.setAuthTag(blob.subarray(blob.length - TAG_BYTES));
    return new Uint8Array(Buffer.concat([decipher.update(blob.subarray(NONCE_BYTES, blob.length - TAG_BYTES)), decipher.final()]));
  } catch (err) {
    throw new SdkError('LINK_FAILED', 'the history archive did not verify', { cause: err });
  }
}

function check(cond: boolean): void {
  if (!cond) throw new SdkError('LINK_FAILED', 'the history archive is malformed');
}

function validMessage(v: unknown): ArchivedMessage {
  check(typeof v === 'object' && v !== null);
  const m = v as Record<string, unknown>;
  check(typeof m.id === 'string' && m.id.length <= 80);
  parseAccountId(m.account);
  check(typeof m.device === 'number' && Number.isInteger(m.device) && m.device >= 1 && m.device <= 127);
  check(m.direction === 'in' || m.direction === 'out');
  check(typeof m.timestamp === 'number' && Number.isSafeInteger(m.timestamp) && m.timestamp >= 0);
  check(typeof m.serverTimestamp === 'number' && Number.isSafeInteger(m.serverTimestamp) && m.serverTimestamp >= 0);
  check(typeof m.body === 'string' && Buffer.byteLength(m.body) <= Limits.maxBodyTextBytes);
  check(typeof m.status === 'string' && /^[a-z]{1,16}$/.test(m.status));
  check(m.username === null || typeof m.username === 'string');
  return {
    ...(m as unknown as ArchivedMessage),
    username: m.username === null ? null : normalizeUsername(m.username),
  };
}

/**
 * Validate a decrypted archive and add its messages and contacts to `db`
 * (messages already present are kept as they are). Returns how many messages were added.
 * @throws SdkError LINK_FAILED when the archive is malformed (nothing is added).
 */
export function importHistory(db: Db, plaintext: Uint8Array): number {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(plaintext).toString('utf8'));
  } catch (err) {
    throw new SdkError('LINK_FAILED', 'the history archive is malformed', { cause: err });
  }
  let archive: Archive;
  try {
    check(typeof parsed === 'object' && parsed !== null);
    const a = parsed as Record<string, unknown>;
    check(a.version === 1 && Array.isArray(a.messages) && Array.isArray(a.contacts));
    check((a.messages as unknown[]).length <= HISTORY_ARCHIVE_MESSAGES && (a.contacts as unknown[]).length <= HISTORY_ARCHIVE_MESSAGES);
    archive = {
      version: 1,
      messages: (a.messages as unknown[]).map(validMessage),
      contacts: (a.contacts as unknown[]).map((c) => {
        check(typeof c === 'object' && c !== null);
        const x = c as Record<string, unknown>;
        return { username: normalizeUsername(x.username), account: parseAccountId(x.account) };
      }),
    };
    if (a.groups !== undefined) {
      check(Array.isArray(a.groups) && (a.groups as unknown[]).length <= HISTORY_ARCHIVE_MESSAGES);
      archive.groups = (a.groups as unknown[]).map(validArchivedGroup);
    }
  } catch (err) {
    if (err instanceof SdkError) throw err;
    throw new SdkError('LINK_FAILED', 'the history archive is malformed', { cause: err });
  }
  const insert = db.prepare(
    'INSERT OR IGNORE INTO messages (id, account, device, direction, timestamp, server_timestamp, body, status, username) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
  );
  const contact = db.prepare('INSERT OR IGNORE INTO contacts (username, account, updated_at) VALUES (?, ?, ?)');
  let added = 0;
  db.transaction(() => {
    const now = Date.now();
    for (const c of archive.contacts) contact.run([c.username, c.account, now]);
    for (const m of archive.messages)
      added += insert.run([m.id, m.account, m.device, m.direction, m.timestamp, m.serverTimestamp, m.body, m.status, m.username]).changes;
    importGroups(db, archive.groups ?? []);
  })();
  return added;
}
