import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from '@signalapp/sqlcipher';
import { afterAll, describe, expect, it } from 'vitest';
import { migrate, openSqliteStore } from '../src/adapters/store/sqlite.js';
import { describeStoreConformance } from './store-conformance.js';

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
    expect(migrate(db)).toBe(3);
    expect(migrate(db)).toBe(3);
    expect(db.prepare('SELECT version FROM schema_version').all()).toEqual([{ version: 1 }, { version: 2 }, { version: 3 }]);
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all();
    expect(tables.map((t) => t.name)).toEqual(
      expect.arrayContaining(['accounts', 'devices', 'ec_prekeys', 'kyber_prekeys', 'envelopes', 'sent_messages', 'provisioning_codes']),
    );
    db.close();
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
