import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { POSTGRES_MIGRATIONS } from '../src/adapters/store/postgres-migrations.js';
import { migratePostgres, openPostgresStore } from '../src/adapters/store/postgres.js';
import { describeStoreConformance } from './store-conformance.js';
import { PG_URL, servicesAvailable, uniqueName } from './services.js';

const available = await servicesAvailable('postgres');
const schemas: string[] = [];
const fresh = () => {
  const s = uniqueName('t');
  schemas.push(s);
  return s;
};

afterAll(async () => {
  if (!available || schemas.length === 0) return;
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  for (const s of schemas) await admin.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
  await admin.end();
});

describe.skipIf(!available)('postgres', () => {
  describeStoreConformance('postgres', async () => openPostgresStore(PG_URL, { schema: fresh(), maxConnections: 8 }));

  describe('postgres adapter specifics', () => {
    it('runs numbered migrations once, records the version, and survives nodes migrating together', async () => {
      const schema = fresh();
      const stores = await Promise.all([1, 2, 3].map(() => openPostgresStore(PG_URL, { schema, maxConnections: 2 })));
      await Promise.all(stores.map((s) => s.close()));
      const pool = new pg.Pool({ connectionString: PG_URL, options: `-c search_path=${schema}` });
      try {
        expect(await migratePostgres(pool)).toBe(POSTGRES_MIGRATIONS.length);
        const versions = await pool.query('SELECT version FROM schema_migrations ORDER BY version');
        expect(versions.rows.map((r: { version: number }) => r.version)).toEqual(POSTGRES_MIGRATIONS.map((_, i) => i + 1));
        const tables = await pool.query(
          'SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name',
          [schema],
        );
        expect(tables.rows.map((r: { table_name: string }) => r.table_name)).toEqual(
          expect.arrayContaining([
            'accounts',
            'devices',
            'ec_prekeys',
            'kyber_prekeys',
            'envelopes',
            'queue_heads',
            'idempotency_keys',
          ]),
        );
      } finally {
        await pool.end();
      }
    });

    it('runs every connection with synchronous_commit on', async () => {
      const schema = fresh();
      const store = await openPostgresStore(PG_URL, { schema, maxConnections: 1 });
      try {
        expect(await store.setting('synchronous_commit')).toBe('on');
      } finally {
        await store.close();
      }
    });

    it('keeps per-device order and skips nothing under concurrent enqueues while a reader follows the cursor', async () => {
      const { newAccountFor, envelopeFor } = await import('./store-fixtures.js');
      const schema = fresh();
      const store = await openPostgresStore(PG_URL, { schema, maxConnections: 10 });
      try {
        const bob = newAccountFor('bob');
        await store.createAccount(bob);
        const senders = 8;
        const perSender = 40;
        const seen: string[] = [];
        let cursor = 0;
        let writing = true;
        const reader = (async () => {
          for (;;) {
            const stop = !writing;
            const page = await store.fetchQueue(bob.accountId, 1 as never, cursor, 50);
            for (const e of page) {
              cursor = e.cursor;
              seen.push(Buffer.from(e.content).toString());
            }
            if (stop && page.length === 0) return;
          }
        })();
        await Promise.all(
          Array.from({ length: senders }, async (_, s) => {
            for (let i = 0; i < perSender; i++) {
              await store.enqueue({ envelopes: [envelopeFor(bob.accountId, `${s}:${i}`)], idempotencyKey: null, now: 1 });
            }
          }),
        );
        writing = false;
        await reader;
        expect(seen).toHaveLength(senders * perSender);
        for (let s = 0; s < senders; s++) {
          const mine = seen.filter((x) => x.startsWith(`${s}:`)).map((x) => Number(x.split(':')[1]));
          expect(mine).toEqual(Array.from({ length: perSender }, (_, i) => i));
        }
      } finally {
        await store.close();
      }
    });
  });
});
