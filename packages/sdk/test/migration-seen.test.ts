/**
 * Migration 7 moves seen_envelopes to a (relay timestamp, guid) index. A
 * database from before keeps every row, still refuses a second row for the
 * same (sender, device, timestamp), and a client opened on it still drops
 * envelopes those old rows (no relay timestamp) mark as processed.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { IdentityKeyPair } from '@signalapp/libsignal-client';
import Database from '@signalapp/sqlcipher';
import { afterAll, describe, expect, it } from 'vitest';
import { EnvelopeType } from '@parley/wire';
import { ParleyClient } from '../src/index.js';
import { createProfile, migrate } from '../src/db.js';
import { setMeta } from '../src/keys.js';
import { MIGRATIONS } from '../src/migrations.js';
import { tempDir } from './helpers.js';

const tmp = tempDir('parley-migration-');
afterAll(() => tmp.cleanup());

/** A database exactly as schema version 6 left it. */
function version6(db: Database): void {
  for (let v = 0; v < 6; v++) db.exec(MIGRATIONS[v]!);
  db.pragma('user_version = 6');
}

const insertOld = 'INSERT INTO seen_envelopes (server_guid, account, device, client_ts, seen_at) VALUES (?, ?, ?, ?, ?)';

describe('migration 7: seen_envelopes by (relay timestamp, guid)', () => {
  it('keeps the rows of an existing database and its uniqueness by sender', () => {
    const db = new Database(':memory:');
    version6(db);
    const account = randomUUID();
    const rows = [
      [new Uint8Array(randomBytes(16)), account, 1, 1000, 1],
      [new Uint8Array(randomBytes(16)), account, 1, 1001, 2],
      [new Uint8Array(randomBytes(16)), null, null, null, 3],
    ] as const;
    for (const r of rows) db.prepare(insertOld).run([...r]);

    migrate(db);
    expect(Number(db.pragma('user_version', { simple: true }))).toBe(MIGRATIONS.length);
    const after = db
      .prepare('SELECT server_ts, hex(server_guid) AS guid, account, device, client_ts, seen_at FROM seen_envelopes ORDER BY seen_at')
      .all();
    const hex = (b: Uint8Array) => Buffer.from(b).toString('hex').toUpperCase();
    expect(after).toEqual(rows.map(([g, a, d, c, s]) => ({ server_ts: null, guid: hex(g), account: a, device: d, client_ts: c, seen_at: s })));
    // Same sender, device and timestamp again: still one row.
    const insertNew = db.prepare(
      'INSERT OR IGNORE INTO seen_envelopes (server_ts, server_guid, account, device, client_ts, seen_at) VALUES (?, ?, ?, ?, ?, ?)',
    );
    expect(insertNew.run([5, new Uint8Array(randomBytes(16)), account, 1, 1000, 4]).changes).toBe(0);
    // The same (relay timestamp, guid) again: still one row.
    const guid = new Uint8Array(randomBytes(16));
    expect(insertNew.run([6, guid, null, null, null, 5]).changes).toBe(1);
    expect(insertNew.run([6, guid, null, null, null, 6]).changes).toBe(0);
    db.close();
  });

  it('a client opened on a migrated database still drops envelopes its old rows mark as processed', async () => {
    const dir = join(tmp.dir, 'old');
    const profile = await createProfile(dir, null);
    const db = profile.db;
    const me = { accountId: randomUUID(), deviceId: 1 };
    setMeta(db, 'account', { username: 'old_profile', ...me, serverUrl: 'http://127.0.0.1:9', password: 'x', registrationId: 7 });
    setMeta(db, 'identityKeyPair', IdentityKeyPair.generate().serialize());
    // Rows as a version-6 client wrote them: no relay timestamp.
    const oldGuid = new Uint8Array(randomBytes(16));
    const sender = { account: randomUUID(), device: 2 };
    db.prepare('INSERT INTO seen_envelopes (server_ts, server_guid, account, device, client_ts, seen_at) VALUES (NULL, ?, ?, ?, ?, ?)').run([
      oldGuid,
      sender.account,
      sender.device,
      4242,
      Date.now(),
    ]);
    profile.close();

    const client = await ParleyClient.open({ profileDir: dir, passphrase: null });
    try {
      const c = client as unknown as {
        seenGuid: (env: unknown) => boolean;
        seenTriple: (account: string, device: number, ts: number) => boolean;
      };
      const env = (guid: Uint8Array, source: typeof sender | null, clientTimestamp: number) => ({
        type: EnvelopeType.UnidentifiedSender,
        serverGuid: guid,
        serverTimestamp: 1_700_000_000_000,
        clientTimestamp,
        source,
        destination: { account: me.accountId, device: me.deviceId },
        content: new Uint8Array(0),
        urgent: false,
      });
      // Redelivered (same guid), whatever relay timestamp it now carries: seen.
      expect(c.seenGuid(env(oldGuid, null, 0))).toBe(true);
      expect(c.seenGuid(env(oldGuid, sender, 4242))).toBe(true);
      // A resent copy (new guid, same sender, device and timestamp): seen by the triple.
      const fresh = new Uint8Array(randomBytes(16));
      expect(c.seenGuid(env(fresh, sender, 4242))).toBe(false);
      expect(c.seenTriple(sender.account, sender.device, 4242)).toBe(true);
      // Something new: not seen.
      expect(c.seenGuid(env(new Uint8Array(randomBytes(16)), sender, 4243))).toBe(false);
      expect(c.seenTriple(sender.account, sender.device, 4243)).toBe(false);
    } finally {
      await client.close();
    }
  });
});
