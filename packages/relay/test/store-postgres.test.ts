import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { IdentityKeyPair } from '@signalapp/libsignal-client';
import type { AccountId, DeviceId } from '@parley/wire';
import { afterAll, describe, expect, it } from 'vitest';
import { AccountCaches, CACHE_MAX_AGE_MS, cacheChannel } from '../src/adapters/store/postgres-cache.js';
import { POSTGRES_MIGRATIONS } from '../src/adapters/store/postgres-migrations.js';
import {
  type PgNamedQuery,
  type PgPool,
  PostgresStore,
  migratePostgres,
  openPostgresStore,
} from '../src/adapters/store/postgres.js';
import type { AccountRecord, DeviceSummary, NewDevice } from '../src/ports.js';
import { describeStoreConformance } from './store-conformance.js';
import { envelopeFor, newAccountFor } from './store-fixtures.js';
import { signedEc, signedKyber } from './helpers.js';
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

describe.skipIf(!available)('postgres grouped reads', () => {
  /** A store over a real pool that counts each named statement it runs. */
  async function countingStore(): Promise<{ store: PostgresStore; runs: Map<string, number> }> {
    const schema = fresh();
    const pool = new pg.Pool({ connectionString: PG_URL, max: 4, options: `-c search_path=${schema}` });
    pool.on('error', () => undefined);
    await migratePostgres(pool, schema);
    const runs = new Map<string, number>();
    const counted: PgPool = {
      query: (q: string | PgNamedQuery, values?: unknown[]) => {
        if (typeof q === 'string') return pool.query(q, values);
        runs.set(q.name, (runs.get(q.name) ?? 0) + 1);
        return pool.query(q);
      },
      connect: () => pool.connect(),
      end: () => pool.end(),
    };
    return { store: new PostgresStore(counted), runs };
  }

  it('reads the queues of devices woken together with one statement, each caller getting its own page', async () => {
    const { store, runs } = await countingStore();
    try {
      const owners = Array.from({ length: 40 }, (_, i) => newAccountFor(`qr${i}`));
      for (const o of owners) await store.createAccount(o);
      for (const [i, o] of owners.entries())
        for (let k = 0; k <= i % 3; k++)
          await store.enqueue({ envelopes: [envelopeFor(o.accountId, `${i}:${k}`)], idempotencyKey: null, now: 1 });
      runs.clear();
      const pages = await Promise.all(owners.map((o, i) => store.fetchQueue(o.accountId, 1 as DeviceId, 0, 1 + (i % 2))));
      expect(runs.get('parley_fetch_queues')).toBe(1);
      pages.forEach((page, i) => {
        const want = Math.min(1 + (i % 3), 1 + (i % 2));
        expect(page.map((e) => Buffer.from(e.content).toString())).toEqual(Array.from({ length: want }, (_, k) => `${i}:${k}`));
      });
    } finally {
      await store.close();
    }
  });

  it('reads the account rows and device lists of concurrent cache misses with one statement each', async () => {
    // Without a listener the store never caches, so every call below is a miss.
    const { store, runs } = await countingStore();
    try {
      const owners = Array.from({ length: 30 }, (_, i) => newAccountFor(`cm${i}`));
      for (const o of owners) await store.createAccount(o);
      const linked = owners[3]?.accountId as AccountId;
      expect(await store.addDevice(linkRequest(linked))).toEqual({ kind: 'added', deviceId: 2 });
      const unknown = 'no-such-account' as AccountId;
      const ids = [...owners.map((o) => o.accountId), unknown, owners[0]?.accountId as AccountId];
      runs.clear();
      const [accounts, lists] = await Promise.all([
        Promise.all(ids.map((id) => store.getAccount(id))),
        Promise.all(ids.map((id) => store.listDevices(id))),
      ]);
      expect(runs.get('parley_accounts')).toBe(1);
      expect(runs.get('parley_device_lists')).toBe(1);
      expect(accounts.map((a) => a?.accountId ?? null)).toEqual([...owners.map((o) => o.accountId), null, owners[0]?.accountId]);
      expect(accounts.map((a) => a?.username ?? null)).toEqual([...owners.map((o) => o.username), null, owners[0]?.username]);
      expect(accounts[5]?.identityKey).toEqual(owners[5]?.identityKey);
      expect(lists.map(idsOf)).toEqual(ids.map((id) => (id === unknown ? [] : id === linked ? [1, 2] : [1])));
      expect(lists[3]?.map((d) => d.registrationId)).toEqual([owners[3]?.device.registrationId, 9]);
    } finally {
      await store.close();
    }
  });

  it('fails a malformed read alone, not the reads grouped with it', async () => {
    const { store } = await countingStore();
    try {
      const o = newAccountFor('qr.bad');
      await store.createAccount(o);
      await store.enqueue({ envelopes: [envelopeFor(o.accountId, 'x')], idempotencyKey: null, now: 1 });
      const [good, negative, fractional] = await Promise.allSettled([
        store.fetchQueue(o.accountId, 1 as DeviceId, 0, 5),
        store.fetchQueue(o.accountId, 1 as DeviceId, 0, -1),
        store.fetchQueue(o.accountId, 1 as DeviceId, 0.5, 5),
      ]);
      expect(good.status === 'fulfilled' && good.value.map((e) => Buffer.from(e.content).toString())).toEqual(['x']);
      expect(negative.status === 'rejected' && negative.reason).toBeInstanceOf(RangeError);
      expect(fractional.status === 'rejected' && fractional.reason).toBeInstanceOf(RangeError);
    } finally {
      await store.close();
    }
  });
});

const A1 = 'a1' as AccountId;
const A2 = 'a2' as AccountId;
const rec = (accessKey: number): AccountRecord => ({
  accountId: A1,
  username: 'u',
  identityKey: new Uint8Array(1),
  accessKey: new Uint8Array([accessKey]),
});

describe('PostgreSQL account cache rules (no database)', () => {
  const up = (opts: ConstructorParameters<typeof AccountCaches>[0] = {}) => {
    const c = new AccountCaches(opts);
    c.setListening(true);
    return c;
  };

  it('serves what was filled and drops an account on invalidation, both caches at once', () => {
    const c = up();
    c.accounts.fill(A1, c.begin(), rec(1));
    c.deviceLists.fill(A1, c.begin(), [{ deviceId: 1 as DeviceId, registrationId: 5 }]);
    c.accounts.fill(A2, c.begin(), null);
    expect(c.accounts.get(A1)?.accessKey).toEqual(new Uint8Array([1]));
    expect(c.accounts.get(A2)).toBeNull();
    c.invalidate(A1);
    expect(c.accounts.get(A1)).toBeUndefined();
    expect(c.deviceLists.get(A1)).toBeUndefined();
    expect(c.accounts.get(A2)).toBeNull();
  });

  it('refuses the fill of a read that overlapped an invalidation of its account, not of others', () => {
    const c = up();
    const t1 = c.begin();
    const t2 = c.begin();
    // A commit's notification arrives while both reads are on their way; the read of A1 may hold the old row.
    c.invalidate(A1);
    c.accounts.fill(A1, t1, rec(1));
    c.accounts.fill(A2, t2, null);
    expect(c.accounts.get(A1)).toBeUndefined();
    expect(c.accounts.get(A2)).toBeNull();
    // A read that starts after the invalidation fills normally.
    c.accounts.fill(A1, c.begin(), rec(2));
    expect(c.accounts.get(A1)?.accessKey).toEqual(new Uint8Array([2]));
  });

  it('still refuses overlapping fills after the invalidation list overflowed', () => {
    const c = up();
    const t = c.begin();
    c.invalidate(A1);
    for (let i = 0; i < 20_000; i++) c.invalidate(`x${i}` as AccountId);
    c.accounts.fill(A1, t, rec(1));
    expect(c.accounts.get(A1)).toBeUndefined();
  });

  it('neither serves nor fills while not listening, and forgets everything on each listener change', () => {
    const c = new AccountCaches();
    c.accounts.fill(A1, c.begin(), rec(1));
    expect(c.accounts.get(A1)).toBeUndefined();
    const before = c.begin();
    c.setListening(true);
    // A read that started before LISTEN was in place may have missed a notification.
    c.accounts.fill(A1, before, rec(1));
    expect(c.accounts.get(A1)).toBeUndefined();
    c.accounts.fill(A1, c.begin(), rec(2));
    expect(c.accounts.size).toBe(1);
    const during = c.begin();
    c.setListening(false);
    expect(c.accounts.size).toBe(0);
    expect(c.accounts.get(A1)).toBeUndefined();
    c.setListening(true);
    c.accounts.fill(A1, during, rec(3));
    expect(c.accounts.get(A1)).toBeUndefined();
  });

  it('stops serving an entry once it is older than the maximum age', () => {
    let now = 1_000;
    const c = up({ now: () => now, random: () => 0 });
    c.accounts.fill(A1, c.begin(), rec(1));
    now += CACHE_MAX_AGE_MS;
    expect(c.accounts.get(A1)?.accessKey).toEqual(new Uint8Array([1]));
    now += 1;
    expect(c.accounts.get(A1)).toBeUndefined();
    expect(c.accounts.size).toBe(0);
  });

  it('spreads the expiry of entries filled together over the last quarter of the maximum age', () => {
    let now = 1_000;
    const draws = [0, 0.5, 0.999];
    const c = up({ now: () => now, random: () => draws.shift() ?? 0 });
    const ids = ['a', 'b', 'c'] as AccountId[];
    for (const id of ids) c.deviceLists.fill(id, c.begin(), []);
    const served = () => ids.filter((id) => c.deviceLists.get(id) !== undefined);
    now += CACHE_MAX_AGE_MS * 0.75;
    expect(served()).toEqual(ids);
    now += CACHE_MAX_AGE_MS * 0.01;
    expect(served()).toEqual(['a', 'b']);
    now += CACHE_MAX_AGE_MS * 0.13;
    expect(served()).toEqual(['a']);
    now += CACHE_MAX_AGE_MS * 0.12;
    expect(served()).toEqual([]);
  });

  it('bounds each cache: past the cap it starts over', () => {
    const c = up({ maxEntries: 3 });
    for (const id of ['a', 'b', 'c', 'd']) c.deviceLists.fill(id as AccountId, c.begin(), []);
    expect(c.deviceLists.size).toBe(1);
    expect(c.deviceLists.get('d' as AccountId)).toEqual([]);
  });

  it('gives each schema its own notification channel, within PostgreSQL identifier length', () => {
    const long = 'a'.repeat(70);
    const names = [
      cacheChannel(undefined),
      cacheChannel('t_1'),
      cacheChannel('t_2'),
      cacheChannel(long),
      cacheChannel(`${long}b`),
    ];
    expect(new Set(names).size).toBe(names.length);
    for (const n of names) expect(n).toMatch(/^[a-z0-9_]{1,63}$/);
  });
});

/** Re-read until `ok` holds or `ms` passed; returns the last value for the caller's assertion. */
async function eventually<T>(read: () => Promise<T>, ok: (v: T) => boolean, ms = 5_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await read();
    if (ok(v) || Date.now() > until) return v;
    await new Promise((r) => setTimeout(r, 10));
  }
}

const keyOf = (v: AccountRecord | null) => (v?.accessKey ? Buffer.from(v.accessKey).toString('hex') : null);
const idsOf = (v: DeviceSummary[]) => v.map((d) => d.deviceId);
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

function linkRequest(account: AccountId): NewDevice {
  const identity = IdentityKeyPair.generate();
  return {
    account,
    registrationId: 9,
    passwordSalt: new Uint8Array(randomBytes(16)),
    passwordHash: new Uint8Array(randomBytes(32)),
    signedPreKey: signedEc(identity, 3),
    kyberLastResortKey: signedKyber(identity, 4),
    createdAt: 2,
    maxDevices: 5,
  };
}

describe.skipIf(!available)('postgres account and device caches across nodes', () => {
  const admin = () => {
    const pool = new pg.Pool({ connectionString: PG_URL, max: 2 });
    pool.on('error', () => undefined);
    return pool;
  };

  it('a node sees access-key and device changes made on another node, and its own at once', async () => {
    const schema = fresh();
    const a = await openPostgresStore(PG_URL, { schema, maxConnections: 2 });
    const b = await openPostgresStore(PG_URL, { schema, maxConnections: 2 });
    const sql = admin();
    try {
      expect(b.cacheStatus().listening).toBe(true);
      const bob = newAccountFor('bob');
      // B caches "no such account" first: creating it on A must end that.
      expect(await b.getAccount(bob.accountId)).toBeNull();
      expect(await b.listDevices(bob.accountId)).toEqual([]);
      await a.createAccount(bob);
      expect(
        (
          await eventually(
            () => b.getAccount(bob.accountId),
            (v) => v !== null,
          )
        )?.username,
      ).toBe('bob');
      expect(
        idsOf(
          await eventually(
            () => b.listDevices(bob.accountId),
            (v) => v.length > 0,
          ),
        ),
      ).toEqual([1]);

      // B now answers from memory: a change made behind the stores' back (no notification) is not seen.
      const k1 = new Uint8Array(randomBytes(16));
      await sql.query(`UPDATE ${schema}.accounts SET access_key = $1 WHERE account_id = $2`, [Buffer.from(k1), bob.accountId]);
      expect(await b.getAccount(bob.accountId)).toMatchObject({ accessKey: null });

      // A change through node A reaches B's cache.
      const k2 = new Uint8Array(randomBytes(16));
      await a.setAccessKey(bob.accountId, k2);
      expect(
        keyOf(
          await eventually(
            () => b.getAccount(bob.accountId),
            (v) => keyOf(v) === hex(k2),
          ),
        ),
      ).toBe(hex(k2));
      await a.setAccessKey(bob.accountId, null);
      expect(
        keyOf(
          await eventually(
            () => b.getAccount(bob.accountId),
            (v) => keyOf(v) === null,
          ),
        ),
      ).toBeNull();

      const added = await a.addDevice(linkRequest(bob.accountId));
      expect(added).toEqual({ kind: 'added', deviceId: 2 });
      expect(
        idsOf(
          await eventually(
            () => b.listDevices(bob.accountId),
            (v) => v.length === 2,
          ),
        ),
      ).toEqual([1, 2]);
      expect(await a.removeDevice(bob.accountId, 2 as DeviceId)).toBe(true);
      expect(
        idsOf(
          await eventually(
            () => b.listDevices(bob.accountId),
            (v) => v.length === 1,
          ),
        ),
      ).toEqual([1]);

      // The writing node never needs the notification for its own writes.
      const k3 = new Uint8Array(randomBytes(16));
      expect(await b.getAccount(bob.accountId)).toMatchObject({ accessKey: null });
      await b.setAccessKey(bob.accountId, k3);
      expect(keyOf(await b.getAccount(bob.accountId))).toBe(hex(k3));
      expect(await b.addDevice(linkRequest(bob.accountId))).toEqual({ kind: 'added', deviceId: 2 });
      expect(idsOf(await b.listDevices(bob.accountId))).toEqual([1, 2]);
      expect(await b.removeDevice(bob.accountId, 2 as DeviceId)).toBe(true);
      expect(idsOf(await b.listDevices(bob.accountId))).toEqual([1]);
    } finally {
      await Promise.all([a.close(), b.close(), sql.end()]);
    }
  });

  it('does not answer from its cache once its listener is lost, and caches again after reconnecting', async () => {
    const schema = fresh();
    const other = await openPostgresStore(PG_URL, { schema, maxConnections: 1 });
    // This node's listener reconnects only when the test lets it: while `reachable` is false it gets a dead address.
    let reachable = true;
    const pool = new pg.Pool({ connectionString: PG_URL, max: 2, options: `-c search_path=${schema}` });
    const store = new PostgresStore(pool, {
      channel: cacheChannel(schema),
      listener: () =>
        new pg.Client({
          connectionString: reachable ? PG_URL : 'postgres://postgres@127.0.0.1:1/test',
          connectionTimeoutMillis: 1_000,
        }),
    });
    await store.startListening();
    const sql = admin();
    try {
      expect(store.cacheStatus()).toMatchObject({ listening: true, connects: 1 });
      const bob = newAccountFor('bob');
      await store.createAccount(bob);
      expect(await store.getAccount(bob.accountId)).toMatchObject({ accessKey: null });
      expect(idsOf(await store.listDevices(bob.accountId))).toEqual([1]);

      const listeners = await sql.query('SELECT pid FROM pg_stat_activity WHERE query = $1', [
        `LISTEN "${cacheChannel(schema)}"`,
      ]);
      // Both nodes listen on this schema's channel and look alike there: end both (`other` reconnects by itself).
      expect(listeners.rows).toHaveLength(2);
      reachable = false;
      for (const r of listeners.rows as Array<{ pid: number }>) await sql.query('SELECT pg_terminate_backend($1)', [r.pid]);
      expect(
        await eventually(
          async () => store.cacheStatus(),
          (s) => s.losses > 0,
        ),
      ).toMatchObject({ listening: false });

      // Changed behind the store's back while nothing can notify it: only not trusting the cache helps.
      const k = new Uint8Array(randomBytes(16));
      await sql.query(`UPDATE ${schema}.accounts SET access_key = $1 WHERE account_id = $2`, [Buffer.from(k), bob.accountId]);
      await sql.query(`DELETE FROM ${schema}.devices WHERE account_id = $1`, [bob.accountId]);
      expect(keyOf(await store.getAccount(bob.accountId))).toBe(hex(k));
      expect(await store.listDevices(bob.accountId)).toEqual([]);
      expect(store.cacheStatus()).toMatchObject({ listening: false, connects: 1 });

      // Back up (after its backoff): it caches again, and notifications reach it again.
      reachable = true;
      expect(
        await eventually(
          async () => store.cacheStatus(),
          (s) => s.listening,
          15_000,
        ),
      ).toMatchObject({ listening: true, connects: 2 });
      await eventually(
        async () => other.cacheStatus(),
        (s) => s.listening,
        15_000,
      );
      expect(keyOf(await store.getAccount(bob.accountId))).toBe(hex(k));
      await other.setAccessKey(bob.accountId, null);
      expect(
        keyOf(
          await eventually(
            () => store.getAccount(bob.accountId),
            (v) => keyOf(v) === null,
          ),
        ),
      ).toBeNull();
    } finally {
      await Promise.all([store.close(), other.close(), sql.end()]);
    }
  });

  it('never caches without a listener', async () => {
    const schema = fresh();
    const migrated = await openPostgresStore(PG_URL, { schema, maxConnections: 1 });
    await migrated.close();
    const pool = new pg.Pool({ connectionString: PG_URL, max: 2, options: `-c search_path=${schema}` });
    // A listener that can never connect (nothing listens on port 1).
    const store = new PostgresStore(pool, {
      channel: cacheChannel(schema),
      listener: () => new pg.Client({ connectionString: 'postgres://postgres@127.0.0.1:1/test', connectionTimeoutMillis: 1_000 }),
    });
    await store.startListening();
    const sql = admin();
    try {
      expect(store.cacheStatus()).toMatchObject({ listening: false, connects: 0 });
      const bob = newAccountFor('bob');
      await store.createAccount(bob);
      expect(await store.getAccount(bob.accountId)).toMatchObject({ accessKey: null });
      const k = new Uint8Array(randomBytes(16));
      await sql.query(`UPDATE ${schema}.accounts SET access_key = $1 WHERE account_id = $2`, [Buffer.from(k), bob.accountId]);
      expect(keyOf(await store.getAccount(bob.accountId))).toBe(hex(k));
    } finally {
      await Promise.all([store.close(), sql.end()]);
    }
  });

  it('ends its listener connection on close', async () => {
    const schema = fresh();
    const store = await openPostgresStore(PG_URL, { schema, maxConnections: 1 });
    const sql = admin();
    try {
      const query = `LISTEN "${cacheChannel(schema)}"`;
      const count = async () => (await sql.query('SELECT pid FROM pg_stat_activity WHERE query = $1', [query])).rows.length;
      expect(await count()).toBe(1);
      await store.close();
      expect(await eventually(count, (n) => n === 0)).toBe(0);
      expect(store.cacheStatus().listening).toBe(false);
    } finally {
      await sql.end();
    }
  });
});
