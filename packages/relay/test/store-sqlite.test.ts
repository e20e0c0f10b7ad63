import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from '@signalapp/sqlcipher';
import { afterAll, describe, expect, it } from 'vitest';
import { migrate, openSqliteStore } from '../src/adapters/store/sqlite.js';
import type { AccountId, DeviceId } from '@parley/wire';
import { describeStoreConformance } from './store-conformance.js';
import { envelopeFor } from './store-fixtures.js';

const D1 = 1 as DeviceId;

const dirs: string[] = [];
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'parley-relay-'));
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describeStoreConformance('sqlite (file)', async () => openSqliteStore(tempDir()));
describeStoreConformance('sqlite (memory)', async () => openSqliteStore(':memory:'));

describe('sqlite adapter specifics', () => {
  it('creates relay.db in WAL mode', async () => {
    const dir = tempDir();
    const store = openSqliteStore(dir);
    await store.ping();
    await store.close();
    expect(readdirSync(dir)).toContain('relay.db');
    const db = new Database(join(dir, 'relay.db'));
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    db.close();
  });

  it('runs numbered migrations once and records the version', () => {
    const db = new Database(':memory:');
    expect(migrate(db)).toBe(4);
    expect(migrate(db)).toBe(4);
    expect(db.prepare('SELECT version FROM schema_version').all()).toEqual([1, 2, 3, 4].map((version) => ({ version })));
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all();
    expect(tables.map((t) => t.name)).toEqual(
      expect.arrayContaining(['accounts', 'devices', 'ec_prekeys', 'kyber_prekeys', 'envelopes', 'idempotency_keys', 'provisioning_codes']),
    );
    expect(tables.map((t) => t.name)).not.toContain('sent_messages');
    db.close();
  });

  it('migration 4 keeps every queued envelope, its cursor, and the cursor sequence past deleted ones', async () => {
    const dir = tempDir();
    const path = join(dir, 'relay.db');
    const db = new Database(path);
    migrate(db, 3);
    const insert = db.prepare(`INSERT INTO envelopes (guid, dest_account, dest_device, type, source_account, source_device,
        client_ts, server_ts, content, urgent) VALUES (?, 'acct', 1, 6, NULL, NULL, 1, 1, ?, 1)`);
    for (let i = 1; i <= 5; i++) insert.run([new Uint8Array(16).fill(i), new Uint8Array([i])]);
    // The newest two were delivered: the sequence (5) is ahead of the highest row left (3).
    db.prepare('DELETE FROM envelopes WHERE seq > 3').run();
    db.prepare(`INSERT INTO sent_messages (sender_account, sender_device, destination, message_id, created_at)
        VALUES ('a', 1, 'b', x'00', 1)`).run();
    db.close();

    const store = openSqliteStore(dir);
    try {
      const queued = await store.fetchQueue('acct' as AccountId, D1, 0, 10);
      expect(queued.map((e) => [e.cursor, e.content[0]])).toEqual([
        [1, 1],
        [2, 2],
        [3, 3],
      ]);
      // A cursor is never handed out twice: the next envelope comes after the deleted 4 and 5.
      await store.enqueue({ envelopes: [envelopeFor('acct' as AccountId, 'nine')], idempotencyKey: null, now: 9 });
      const after = await store.fetchQueue('acct' as AccountId, D1, 3, 10);
      expect(after.map((e) => e.cursor)).toEqual([6]);
    } finally {
      await store.close();
    }
    const check = new Database(path);
    expect(check.prepare("SELECT COUNT(*) AS n FROM sqlite_master WHERE name = 'sent_messages'").get()).toEqual({ n: 0 });
    // No UNIQUE index on guids is left (nothing looks them up; acks go by cursor).
    const indexes = check.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'envelopes'").all();
    expect(indexes.map((r) => r.name).sort()).toEqual(['envelopes_age', 'envelopes_queue']);
    check.close();
  });

  it('keeps data across reopen', async () => {
    const dir = tempDir();
    const s1 = openSqliteStore(dir);
    const { IdentityKeyPair } = await import('@signalapp/libsignal-client');
    const { signedEc, signedKyber } = await import('./helpers.js');
    const id = IdentityKeyPair.generate();
    await s1.createAccount({
      accountId: '00000000-0000-4000-8000-000000000001' as never,
      username: 'persist',
      identityKey: id.publicKey.serialize(),
      createdAt: 1,
      device: {
        registrationId: 5,
        passwordSalt: new Uint8Array(16),
        passwordHash: new Uint8Array(32),
        signedPreKey: signedEc(id, 1),
        kyberLastResortKey: signedKyber(id, 1),
      },
    });
    await s1.close();
    const s2 = openSqliteStore(dir);
    expect(await s2.lookupUsername('persist')).toBe('00000000-0000-4000-8000-000000000001');
    await s2.close();
    expect(readFileSync(join(dir, 'relay.db')).length).toBeGreaterThan(0);
  });
});
