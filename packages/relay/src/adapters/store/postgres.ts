/**
 * The scale-out Store: PostgreSQL, shared by every relay node. It is the
 * source of truth; the bus only wakes nodes up.
 *
 * Durability: every connection runs with `synchronous_commit = on`, so a
 * statement that returned has its WAL flushed; a 2xx after `enqueue` survives
 * a crash of any relay node and of the database server.
 *
 * Queue order: each device has a row in `queue_heads` holding the last
 * sequence number handed out. An enqueue bumps that counter with an upsert,
 * which row-locks it until the transaction commits, so for one device the
 * sequence numbers become visible in the order they were assigned. A reader
 * that has seen seq N can therefore never later find a newly committed seq
 * below N (a global bigserial would allow that: concurrent transactions commit
 * out of order and a reader moving its cursor past a gap would skip an
 * envelope forever).
 *
 * Throughput: `enqueue` and `deleteEnvelope` go through batchers (see
 * batching.ts). While one group is on its way to the server, further sends
 * queue up and then go out together as ONE statement (data-modifying CTEs
 * over arrays): one round trip, one transaction and one WAL flush for the
 * whole group, and each caller is answered only after that flush. Acks are
 * grouped the same way into one DELETE, and queue reads into one SELECT (a
 * wake-up reaches every online destination device at once, and the cluster
 * poll all of them every two seconds: one query each would queue them all
 * for the pool's few connections, ahead of the sends and acks). These and
 * the other hot-path reads (credentials, device list) run as named prepared
 * statements, so the server parses and plans them once per connection.
 *
 * Account rows and device lists, read by every send, are cached in memory and
 * invalidated on every node through LISTEN/NOTIFY (postgres-cache.ts): each
 * write that changes them notifies inside its transaction, and each node
 * holds one extra connection (beyond `maxConnections`) that listens.
 */
import {
  type AccountId,
  type DeviceId,
  type EnvelopeType,
  type KeyCounts,
  type PreKey,
  type SignedPreKey,
  normalizeUsername,
} from '@parley/wire';
import type {
  AccountRecord,
  AddDeviceResult,
  ClaimResult,
  ClaimedDevice,
  DeleteRequest,
  DeleteResult,
  DeviceCredentials,
  DeviceDetails,
  DeviceSummary,
  EnqueueBatch,
  EnqueueResult,
  KeyUpload,
  NewAccount,
  NewDevice,
  ProvisioningCode,
  QueuedEnvelope,
  Store,
} from '../../ports.js';
import { Batcher, type BatcherOptions, DELETE_GROUP, ENQUEUE_GROUP } from '../../batching.js';
import { AccountCaches, CacheListener, type ListenerStatus, type PgListenClient, cacheChannel } from './postgres-cache.js';
import { POSTGRES_MIGRATIONS } from './postgres-migrations.js';

/** The small part of a `pg` query result this adapter reads. */
export interface PgResult {
  rows: Row[];
  rowCount: number | null;
}
/** The part of `pg.PoolClient` used here (kysely-style structural subset). */
export interface PgClient {
  query(text: string, values?: unknown[]): Promise<PgResult>;
  release(err?: Error | boolean): void;
}
/** A named (server-side prepared) statement. */
export interface PgNamedQuery {
  name: string;
  text: string;
  values: unknown[];
}
/** The part of `pg.Pool` used here. */
export interface PgPool {
  query(text: string, values?: unknown[]): Promise<PgResult>;
  query(query: PgNamedQuery): Promise<PgResult>;
  connect(): Promise<PgClient>;
  end(): Promise<void>;
}

type Row = Record<string, unknown>;

export interface PostgresStoreOptions {
  /** Most connections this node opens (default 10). */
  maxConnections?: number;
  /**
   * A schema to create and use instead of `public` (tests use one per store
   * for isolation). Must match `[a-z_][a-z0-9_]*`.
   */
  schema?: string;
}

/** Arbitrary, fixed key for the advisory lock that serializes migrations across nodes. */
const MIGRATION_LOCK_KEY = 7_200_817_001;

function bytesOf(row: Row, col: string): Uint8Array {
  const v = row[col];
  if (!(v instanceof Uint8Array)) throw new TypeError(`column ${col} is not bytea`);
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}
function numOf(row: Row, col: string): number {
  const v = row[col];
  // int8 and numeric come back as strings; everything stored here fits a double exactly.
  if (typeof v === 'string') return Number(v);
  if (typeof v !== 'number') throw new TypeError(`column ${col} is not a number`);
  return v;
}
function strOf(row: Row, col: string): string {
  const v = row[col];
  if (typeof v !== 'string') throw new TypeError(`column ${col} is not text`);
  return v;
}
/** A Buffer view without copying, the type `pg` binds as bytea. */
function buf(b: Uint8Array): Buffer {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

/**
 * Apply pending migrations inside one transaction per migration, holding an
 * advisory lock so nodes starting together do not race. Returns the version.
 */
export async function migratePostgres(pool: PgPool, schema?: string): Promise<number> {
  const client = await pool.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
    try {
      // Under the lock: IF NOT EXISTS alone is not safe against a concurrent CREATE.
      if (schema !== undefined) await client.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
      await client.query(
        'CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())',
      );
      const res = await client.query('SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations');
      let version = numOf(res.rows[0] ?? { v: 0 }, 'v');
      for (; version < POSTGRES_MIGRATIONS.length; version++) {
        const sql = POSTGRES_MIGRATIONS[version] as string;
        await client.query('BEGIN');
        try {
          await client.query(sql);
          await client.query('INSERT INTO schema_migrations (version) VALUES ($1)', [version + 1]);
          await client.query('COMMIT');
        } catch (err) {
          await client.query('ROLLBACK');
          throw err;
        }
      }
      return version;
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]);
    }
  } finally {
    client.release();
  }
}

/**
 * Connect to PostgreSQL (`postgres://user@host:port/db`), apply migrations
 * and return the store. Loads the `pg` driver on first use.
 * @throws when the server is unreachable or a migration fails.
 */
export async function openPostgresStore(url: string, opts: PostgresStoreOptions = {}): Promise<PostgresStore> {
  const { default: pg } = await import('pg');
  const schema = opts.schema;
  if (schema !== undefined && !/^[a-z_][a-z0-9_]*$/.test(schema)) throw new RangeError('schema: must match [a-z_][a-z0-9_]*');
  const settings = ['-c synchronous_commit=on'];
  if (schema !== undefined) settings.push(`-c search_path=${schema}`);
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.maxConnections ?? 10,
    options: settings.join(' '),
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
  });
  // An idle connection dropped by the server must not crash the process; the pool replaces it.
  pool.on('error', () => undefined);
  try {
    await migratePostgres(pool, schema);
  } catch (err) {
    await pool.end();
    throw err;
  }
  const store = new PostgresStore(pool, {
    channel: cacheChannel(schema),
    // Keepalive: a listener connection that dies silently is eventually noticed and caching stops; until then
    // CACHE_MAX_AGE_MS bounds what a missed notification can cost.
    listener: () =>
      new pg.Client({ connectionString: url, keepAlive: true, keepAliveInitialDelayMillis: 10_000, connectionTimeoutMillis: 10_000 }),
  });
  // The first attempt only: if it fails the store works uncached and keeps retrying in the background.
  await store.startListening();
  return store;
}

export interface PostgresCacheOptions {
  /** The notification channel shared by every node on the same schema (see `cacheChannel`). */
  channel?: string;
  /** A new, unconnected client for the LISTEN connection; without it nothing is cached. */
  listener?: () => PgListenClient;
}

/** Sent inside a write's transaction: delivered to every listening node once it commits. */
const NOTIFY_SQL = 'SELECT pg_notify($1, $2)';

const ENVELOPE_COLUMNS =
  'seq, guid, dest_account, dest_device, type, source_account, source_device, client_ts, server_ts, content, urgent';

/**
 * One statement for a whole group of sends. `$1..$6` are the idempotency keys
 * (unique within the group; `b` is the batch's index), `$7` the indexes of
 * batches without a key, `$8..$18` the envelopes with their batch index. A
 * batch proceeds when it has no key or its key was new. Only the envelopes of
 * proceeding batches bump their device's queue head, in a fixed order so
 * concurrent groups cannot deadlock, and get consecutive per-device sequence
 * numbers in group order. Returns the indexes of the batches that proceeded.
 */
const ENQUEUE_MANY_SQL = `
WITH keys AS (
  SELECT * FROM unnest($1::integer[], $2::text[], $3::integer[], $4::text[], $5::bytea[], $6::bigint[], $19::bigint[])
    AS k(b, sa, sd, dest, mid, created, cts)
), idem AS (
  INSERT INTO idempotency_keys (client_ts, message_id, destination, sender_account, sender_device, created_at)
  SELECT cts, mid, dest, sa, sd, created FROM keys
  ON CONFLICT DO NOTHING
  RETURNING client_ts, message_id, destination, sender_account, sender_device
), proceed AS (
  SELECT k.b FROM keys k
  JOIN idem i ON i.client_ts = k.cts AND i.message_id = k.mid AND i.destination = k.dest
    AND i.sender_account = k.sa AND i.sender_device = k.sd
  UNION ALL
  SELECT n.b FROM unnest($7::integer[]) AS n(b)
), input AS (
  SELECT t.* FROM unnest($8::integer[], $9::text[], $10::integer[], $11::bytea[], $12::integer[], $13::text[],
                         $14::integer[], $15::bigint[], $16::bigint[], $17::bytea[], $18::boolean[])
    WITH ORDINALITY AS t(b, da, dd, guid, type, sa, sd, cts, sts, content, urgent, ord)
  WHERE t.b IN (SELECT b FROM proceed)
), counts AS (
  SELECT da, dd, count(*)::bigint AS n FROM input GROUP BY da, dd
), heads AS (
  INSERT INTO queue_heads (account_id, device_id, last_seq)
  SELECT da, dd, n FROM counts ORDER BY da, dd
  ON CONFLICT (account_id, device_id) DO UPDATE SET last_seq = queue_heads.last_seq + excluded.last_seq
  RETURNING account_id, device_id, last_seq
), stored AS (
  INSERT INTO envelopes (dest_account, dest_device, seq, guid, type, source_account, source_device, client_ts, server_ts, content, urgent)
  SELECT i.da, i.dd,
         h.last_seq - c.n + row_number() OVER (PARTITION BY i.da, i.dd ORDER BY i.ord),
         i.guid, i.type, i.sa, i.sd, i.cts, i.sts, i.content, i.urgent
  FROM input i
  JOIN counts c ON c.da = i.da AND c.dd = i.dd
  JOIN heads h ON h.account_id = i.da AND h.device_id = i.dd
  RETURNING 1
)
SELECT b FROM proceed`;

/**
 * One statement for a group of acknowledgement deletes, by queue position
 * (the primary key); the guid must match too, since a device id that was
 * removed and linked again starts its sequence numbers over.
 */
const DELETE_MANY_SQL = `
DELETE FROM envelopes e USING unnest($1::text[], $2::integer[], $3::bigint[], $4::bytea[]) AS t(da, dd, seq, guid)
WHERE e.dest_account = t.da AND e.dest_device = t.dd AND e.seq = t.seq AND e.guid = t.guid
RETURNING e.dest_account, e.dest_device, e.seq, e.guid, e.type, e.source_account, e.source_device, e.client_ts`;

/** One device's queue page, as asked for by `fetchQueue`. */
export interface FetchRequest {
  account: AccountId;
  device: DeviceId;
  /** Only envelopes with a cursor (seq) greater than this. */
  after: number;
  limit: number;
}

/**
 * One statement for a group of queue reads: each request (numbered by
 * ordinality, 1-based) runs the single-device page query on its own through
 * the lateral join, so it gets exactly the rows it would have got alone, and
 * all of them from the same snapshot, taken after every request of the group
 * was made. Requests for the same device are independent of each other.
 */
const FETCH_MANY_SQL = `
SELECT r.ord, e.* FROM unnest($1::text[], $2::integer[], $3::bigint[], $4::integer[]) WITH ORDINALITY AS r(da, dd, after, lim, ord)
CROSS JOIN LATERAL (
  SELECT ${ENVELOPE_COLUMNS} FROM envelopes
  WHERE dest_account = r.da AND dest_device = r.dd AND seq > r.after ORDER BY seq LIMIT r.lim
) e`;

/**
 * Group caps for queue reads: 128 requests, or 4096 rows asked for (64 full
 * push windows), whichever comes first, which bounds the size of one result.
 * Two groups may run at once, so a large group (the poll) does not hold up
 * the next wake-ups for a whole round trip.
 */
const FETCH_GROUP: Pick<BatcherOptions<FetchRequest, unknown>, 'maxItems' | 'maxWeight' | 'concurrency'> = {
  maxItems: 128,
  maxWeight: 4096,
  concurrency: 2,
};

/** Group caps for reads that fill the account caches: 256 accounts, two groups at a time. */
const CACHE_MISS_GROUP = { maxItems: 256, concurrency: 2 } as const;

function queuedEnvelope(r: Row): QueuedEnvelope {
  const sa = r.source_account;
  return {
    cursor: numOf(r, 'seq'),
    guid: bytesOf(r, 'guid'),
    type: numOf(r, 'type') as EnvelopeType,
    source: typeof sa === 'string' ? { account: sa as AccountId, device: numOf(r, 'source_device') as DeviceId } : null,
    destination: { account: strOf(r, 'dest_account') as AccountId, device: numOf(r, 'dest_device') as DeviceId },
    clientTimestamp: numOf(r, 'client_ts'),
    serverTimestamp: numOf(r, 'server_ts'),
    content: bytesOf(r, 'content'),
    urgent: r.urgent === true,
  };
}

const TAKE_EC_SQL = `
DELETE FROM ec_prekeys WHERE (account_id, device_id, key_id) = (
  SELECT account_id, device_id, key_id FROM ec_prekeys WHERE account_id = $1 AND device_id = $2
  ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING key_id, public_key`;

const TAKE_KYBER_SQL = `
DELETE FROM kyber_prekeys WHERE (account_id, device_id, key_id) = (
  SELECT account_id, device_id, key_id FROM kyber_prekeys WHERE account_id = $1 AND device_id = $2
  ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING key_id, public_key, signature`;

const COUNTS_SQL = `
SELECT (SELECT count(*) FROM ec_prekeys WHERE account_id = $1 AND device_id = $2) AS ec,
       (SELECT count(*) FROM kyber_prekeys WHERE account_id = $1 AND device_id = $2) AS kyber`;

/** Store over a PostgreSQL pool. */
export class PostgresStore implements Store {
  readonly #pool: PgPool;
  #closed = false;
  // One group in flight at a time: groups commit in the order their sends arrived,
  // and the wait for one commit is what lets the next group fill up.
  readonly #enqueues = new Batcher<EnqueueBatch, EnqueueResult>({
    ...ENQUEUE_GROUP,
    weight: (b) => b.envelopes.length,
    run: (batches) => this.enqueueMany(batches),
  });
  readonly #deletes = new Batcher<DeleteRequest, DeleteResult>({
    ...DELETE_GROUP,
    run: (requests) => this.deleteEnvelopes(requests),
  });

  // Cache misses for the account row and device list that every send reads. After a start (or a
  // listener reconnect) every active account misses at once: one query each would queue a thousand
  // reads for the pool, ahead of the sends.
  readonly #accountReads = new Batcher<AccountId, AccountRecord | null>({
    ...CACHE_MISS_GROUP,
    run: (accounts) => this.#readAccounts(accounts),
  });
  readonly #deviceListReads = new Batcher<AccountId, readonly DeviceSummary[]>({
    ...CACHE_MISS_GROUP,
    run: (accounts) => this.#readDeviceLists(accounts),
  });
  // Reads need no order between groups; FETCH_GROUP says why two at a time.
  readonly #fetches = new Batcher<FetchRequest, QueuedEnvelope[]>({
    ...FETCH_GROUP,
    weight: (r) => r.limit,
    run: (requests) => this.fetchQueues(requests),
  });

  readonly #channel: string;
  /** Account rows and device lists; served only while the listener is up. */
  readonly #caches = new AccountCaches();
  readonly #listener: CacheListener | null;

  constructor(pool: PgPool, cache: PostgresCacheOptions = {}) {
    this.#pool = pool;
    this.#channel = cache.channel ?? cacheChannel(undefined);
    this.#listener = cache.listener ? new CacheListener(this.#caches, this.#channel, cache.listener) : null;
  }

  /** Try once to establish the cache listener; later attempts happen on their own. */
  async startListening(): Promise<void> {
    await this.#listener?.start();
  }

  /** Whether the caches are in use, and how often the listener connected and was lost (diagnostics and tests). */
  cacheStatus(): ListenerStatus {
    return this.#listener?.status() ?? { listening: false, connects: 0, losses: 0 };
  }

  /**
   * A transaction that changes what getAccount or listDevices return for
   * `account`: it notifies every node before committing, and this node drops
   * its own entries as soon as the outcome is known (committed, rolled back
   * or unknown), so a read that follows the write never sees the old value.
   */
  async #txChanging<T>(account: AccountId, fn: (c: PgClient) => Promise<T>): Promise<T> {
    try {
      return await this.#tx(async (c) => {
        const out = await fn(c);
        await c.query(NOTIFY_SQL, [this.#channel, account]);
        return out;
      });
    } finally {
      this.#caches.invalidate(account);
    }
  }

  /** Run `fn` in a transaction on one connection; rolls back when it throws. */
  async #tx<T>(fn: (c: PgClient) => Promise<T>): Promise<T> {
    const c = await this.#pool.connect();
    let broken = false;
    try {
      await c.query('BEGIN');
      const out = await fn(c);
      await c.query('COMMIT');
      return out;
    } catch (err) {
      try {
        await c.query('ROLLBACK');
      } catch {
        broken = true;
      }
      throw err;
    } finally {
      c.release(broken);
    }
  }

  async createAccount(a: NewAccount): Promise<{ kind: 'created' } | { kind: 'usernameTaken' }> {
    const username = normalizeUsername(a.username);
    const d = a.device;
    // Another node may have cached "no such account" for this id.
    return this.#txChanging(a.accountId, async (c) => {
      const res = await c.query(
        `INSERT INTO accounts (account_id, username, identity_key, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (username) DO NOTHING RETURNING account_id`,
        [a.accountId, username, buf(a.identityKey), a.createdAt],
      );
      if (res.rows.length === 0) return { kind: 'usernameTaken' as const };
      await c.query(
        `INSERT INTO devices (account_id, device_id, registration_id, password_salt, password_hash,
           signed_key_id, signed_key, signed_key_sig, kyber_lr_id, kyber_lr_key, kyber_lr_sig, created_at)
         VALUES ($1, 1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
        [
          a.accountId,
          d.registrationId,
          buf(d.passwordSalt),
          buf(d.passwordHash),
          d.signedPreKey.keyId,
          buf(d.signedPreKey.publicKey),
          buf(d.signedPreKey.signature),
          d.kyberLastResortKey.keyId,
          buf(d.kyberLastResortKey.publicKey),
          buf(d.kyberLastResortKey.signature),
          a.createdAt,
        ],
      );
      return { kind: 'created' as const };
    });
  }

  async getDeviceCredentials(account: AccountId, device: DeviceId): Promise<DeviceCredentials | null> {
    const res = await this.#pool.query({
      name: 'parley_credentials',
      text: 'SELECT password_salt, password_hash FROM devices WHERE account_id = $1 AND device_id = $2',
      values: [account, device],
    });
    const row = res.rows[0];
    return row ? { passwordSalt: bytesOf(row, 'password_salt'), passwordHash: bytesOf(row, 'password_hash') } : null;
  }

  async getAccount(account: AccountId): Promise<AccountRecord | null> {
    const cached = this.#caches.accounts.get(account);
    if (cached !== undefined) return cached;
    // Taken before the read is even queued: an invalidation during the wait also refuses the fill.
    const token = this.#caches.begin();
    const record = await this.#accountReads.submit(account);
    this.#caches.accounts.fill(account, token, record);
    return record;
  }

  /** The account rows of a group of cache misses, one statement; null for an unknown account. */
  async #readAccounts(accounts: readonly AccountId[]): Promise<Array<AccountRecord | null>> {
    const res = await this.#pool.query({
      name: 'parley_accounts',
      text: 'SELECT account_id, username, identity_key, access_key FROM accounts WHERE account_id = ANY($1::text[])',
      values: [[...new Set(accounts)]],
    });
    const found = new Map<string, AccountRecord>();
    for (const row of res.rows) {
      // Frozen: the same object is handed to every later caller.
      const record: AccountRecord = Object.freeze({
        accountId: strOf(row, 'account_id') as AccountId,
        username: strOf(row, 'username'),
        identityKey: bytesOf(row, 'identity_key'),
        accessKey: row.access_key === null || row.access_key === undefined ? null : bytesOf(row, 'access_key'),
      });
      found.set(record.accountId, record);
    }
    return accounts.map((a) => found.get(a) ?? null);
  }

  async setAccessKey(account: AccountId, accessKey: Uint8Array | null): Promise<void> {
    try {
      // One statement, one implicit transaction: the notification goes out with its commit.
      await this.#pool.query('WITH u AS (UPDATE accounts SET access_key = $1 WHERE account_id = $2) SELECT pg_notify($3, $2)', [
        accessKey ? buf(accessKey) : null,
        account,
        this.#channel,
      ]);
    } finally {
      this.#caches.invalidate(account);
    }
  }

  async lookupUsername(username: string): Promise<AccountId | null> {
    const res = await this.#pool.query('SELECT account_id FROM accounts WHERE username = $1', [normalizeUsername(username)]);
    const row = res.rows[0];
    return row ? (strOf(row, 'account_id') as AccountId) : null;
  }

  async listDevices(account: AccountId): Promise<DeviceSummary[]> {
    const cached = this.#caches.deviceLists.get(account);
    if (cached !== undefined) return cached as DeviceSummary[];
    const token = this.#caches.begin();
    const list = await this.#deviceListReads.submit(account);
    this.#caches.deviceLists.fill(account, token, list);
    return list as DeviceSummary[];
  }

  /** The device lists of a group of cache misses, one statement; empty for an unknown account. */
  async #readDeviceLists(accounts: readonly AccountId[]): Promise<Array<readonly DeviceSummary[]>> {
    const res = await this.#pool.query({
      name: 'parley_device_lists',
      text: 'SELECT account_id, device_id, registration_id FROM devices WHERE account_id = ANY($1::text[]) ORDER BY account_id, device_id',
      values: [[...new Set(accounts)]],
    });
    const found = new Map<string, DeviceSummary[]>();
    for (const r of res.rows) {
      const id = strOf(r, 'account_id');
      let list = found.get(id);
      if (!list) found.set(id, (list = []));
      list.push(Object.freeze({ deviceId: numOf(r, 'device_id') as DeviceId, registrationId: numOf(r, 'registration_id') }));
    }
    // Frozen: the same arrays are handed to every later caller.
    for (const list of found.values()) Object.freeze(list);
    const empty: readonly DeviceSummary[] = Object.freeze([]);
    return accounts.map((a) => found.get(a) ?? empty);
  }

  async storeKeys(account: AccountId, device: DeviceId, keys: KeyUpload): Promise<void> {
    await this.#tx(async (c) => {
      const s = keys.signedPreKey;
      if (s)
        await c.query(
          'UPDATE devices SET signed_key_id = $1, signed_key = $2, signed_key_sig = $3 WHERE account_id = $4 AND device_id = $5',
          [s.keyId, buf(s.publicKey), buf(s.signature), account, device],
        );
      const k = keys.kyberLastResortKey;
      if (k)
        await c.query(
          'UPDATE devices SET kyber_lr_id = $1, kyber_lr_key = $2, kyber_lr_sig = $3 WHERE account_id = $4 AND device_id = $5',
          [k.keyId, buf(k.publicKey), buf(k.signature), account, device],
        );
      if (keys.preKeys.length > 0)
        await c.query(
          `INSERT INTO ec_prekeys (account_id, device_id, key_id, public_key)
           SELECT $1, $2, t.id, t.pk FROM unnest($3::integer[], $4::bytea[]) AS t(id, pk)
           ON CONFLICT (account_id, device_id, key_id) DO UPDATE SET public_key = excluded.public_key`,
          [account, device, keys.preKeys.map((p) => p.keyId), keys.preKeys.map((p) => buf(p.publicKey))],
        );
      if (keys.kyberPreKeys.length > 0)
        await c.query(
          `INSERT INTO kyber_prekeys (account_id, device_id, key_id, public_key, signature)
           SELECT $1, $2, t.id, t.pk, t.sig FROM unnest($3::integer[], $4::bytea[], $5::bytea[]) AS t(id, pk, sig)
           ON CONFLICT (account_id, device_id, key_id) DO UPDATE SET public_key = excluded.public_key, signature = excluded.signature`,
          [
            account,
            device,
            keys.kyberPreKeys.map((p) => p.keyId),
            keys.kyberPreKeys.map((p) => buf(p.publicKey)),
            keys.kyberPreKeys.map((p) => buf(p.signature)),
          ],
        );
    });
  }

  async keyCounts(account: AccountId, device: DeviceId): Promise<KeyCounts> {
    const res = await this.#pool.query(COUNTS_SQL, [account, device]);
    const row = res.rows[0] ?? { ec: 0, kyber: 0 };
    return { ecCount: numOf(row, 'ec'), kyberCount: numOf(row, 'kyber') };
  }

  async claimBundle(account: AccountId, device: DeviceId | 'all'): Promise<ClaimResult> {
    return this.#tx(async (c): Promise<ClaimResult> => {
      const acct = (await c.query('SELECT identity_key FROM accounts WHERE account_id = $1', [account])).rows[0];
      if (!acct) return { kind: 'notFound' };
      const rows = (
        await c.query(
          `SELECT device_id, registration_id, signed_key_id, signed_key, signed_key_sig, kyber_lr_id, kyber_lr_key, kyber_lr_sig
           FROM devices WHERE account_id = $1 AND ($2::integer IS NULL OR device_id = $2) ORDER BY device_id`,
          [account, device === 'all' ? null : device],
        )
      ).rows;
      if (rows.length === 0) return { kind: 'notFound' };
      const devices: ClaimedDevice[] = [];
      for (const r of rows) {
        const id = numOf(r, 'device_id') as DeviceId;
        // FOR UPDATE SKIP LOCKED: concurrent claims each take a different key and never wait on each other.
        const ec = (await c.query(TAKE_EC_SQL, [account, id])).rows[0];
        const ky = (await c.query(TAKE_KYBER_SQL, [account, id])).rows[0];
        const counts = (await c.query(COUNTS_SQL, [account, id])).rows[0] ?? { ec: 0, kyber: 0 };
        const preKey: PreKey | null = ec ? { keyId: numOf(ec, 'key_id'), publicKey: bytesOf(ec, 'public_key') } : null;
        const kyberPreKey: SignedPreKey = ky
          ? { keyId: numOf(ky, 'key_id'), publicKey: bytesOf(ky, 'public_key'), signature: bytesOf(ky, 'signature') }
          : { keyId: numOf(r, 'kyber_lr_id'), publicKey: bytesOf(r, 'kyber_lr_key'), signature: bytesOf(r, 'kyber_lr_sig') };
        devices.push({
          deviceId: id,
          registrationId: numOf(r, 'registration_id'),
          preKey,
          signedPreKey: {
            keyId: numOf(r, 'signed_key_id'),
            publicKey: bytesOf(r, 'signed_key'),
            signature: bytesOf(r, 'signed_key_sig'),
          },
          kyberPreKey,
          remaining: { ecCount: numOf(counts, 'ec'), kyberCount: numOf(counts, 'kyber') },
        });
      }
      return { kind: 'bundle', identityKey: bytesOf(acct, 'identity_key'), devices };
    });
  }

  /** Joins the current group commit; resolves after the group's statement has committed. */
  async enqueue(batch: EnqueueBatch): Promise<EnqueueResult> {
    return this.#enqueues.submit(batch);
  }

  async enqueueMany(batches: readonly EnqueueBatch[]): Promise<EnqueueResult[]> {
    const results: Array<EnqueueResult | undefined> = batches.map(() => undefined);
    const k = {
      b: [] as number[],
      sa: [] as string[],
      sd: [] as number[],
      dest: [] as string[],
      mid: [] as Buffer[],
      at: [] as number[],
      cts: [] as number[],
    };
    const unkeyed: number[] = [];
    const e = {
      b: [] as number[],
      da: [] as string[],
      dd: [] as number[],
      guid: [] as Buffer[],
      type: [] as number[],
      sa: [] as Array<string | null>,
      sd: [] as Array<number | null>,
      cts: [] as number[],
      sts: [] as number[],
      content: [] as Buffer[],
      urgent: [] as boolean[],
    };
    const seen = new Set<string>();
    batches.forEach((batch, b) => {
      const key = batch.idempotencyKey;
      if (key) {
        // A key repeated within the group: the first one decides, the rest are repeats.
        const id = `${key.senderAccount}/${key.senderDevice}/${key.destination}/${Buffer.from(key.messageId).toString('hex')}/${key.timestamp}`;
        if (seen.has(id)) {
          results[b] = { kind: 'duplicate' };
          return;
        }
        seen.add(id);
        k.b.push(b);
        k.sa.push(key.senderAccount);
        k.sd.push(key.senderDevice);
        k.dest.push(key.destination);
        k.mid.push(buf(key.messageId));
        k.at.push(batch.now);
        k.cts.push(key.timestamp);
      } else unkeyed.push(b);
      for (const env of batch.envelopes) {
        e.b.push(b);
        e.da.push(env.destination.account);
        e.dd.push(env.destination.device);
        e.guid.push(buf(env.guid));
        e.type.push(env.type);
        e.sa.push(env.source?.account ?? null);
        e.sd.push(env.source?.device ?? null);
        e.cts.push(env.clientTimestamp);
        e.sts.push(env.serverTimestamp);
        e.content.push(buf(env.content));
        e.urgent.push(env.urgent);
      }
    });
    if (k.b.length > 0 || unkeyed.length > 0) {
      const res = await this.#pool.query({
        name: 'parley_enqueue_many',
        text: ENQUEUE_MANY_SQL,
        values: [k.b, k.sa, k.sd, k.dest, k.mid, k.at, unkeyed, e.b, e.da, e.dd, e.guid, e.type, e.sa, e.sd, e.cts, e.sts, e.content, e.urgent, k.cts],
      });
      const proceeded = new Set(res.rows.map((r) => numOf(r, 'b')));
      batches.forEach((_, b) => (results[b] ??= proceeded.has(b) ? { kind: 'stored' } : { kind: 'duplicate' }));
      // The statement committed durably (synchronous_commit on): committed and flushed are the same moment here.
      batches.forEach((batch, b) => results[b]?.kind === 'stored' && batch.onReadable?.());
    }
    return results.map((r) => r ?? { kind: 'duplicate' });
  }

  /** Joins the current group of queue reads; see FETCH_MANY_SQL for what each caller gets. */
  async fetchQueue(account: AccountId, device: DeviceId, after: number, limit: number): Promise<QueuedEnvelope[]> {
    // Checked here so that a request the statement would refuse fails alone rather than its whole group.
    if (!Number.isSafeInteger(after) || after < 0) throw new RangeError('after: must be a non-negative integer');
    if (!Number.isSafeInteger(limit) || limit < 0) throw new RangeError('limit: must be a non-negative integer');
    if (!Number.isInteger(device) || device < 0 || device > 0x7fff_ffff) throw new RangeError('device: out of range');
    return this.#fetches.submit({ account, device, after, limit });
  }

  /** Each request's page, in request order, read with one statement. */
  async fetchQueues(requests: readonly FetchRequest[]): Promise<QueuedEnvelope[][]> {
    if (requests.length === 0) return [];
    const res = await this.#pool.query({
      name: 'parley_fetch_queues',
      text: FETCH_MANY_SQL,
      values: [
        requests.map((r) => r.account),
        requests.map((r) => r.device),
        requests.map((r) => r.after),
        requests.map((r) => r.limit),
      ],
    });
    const pages: QueuedEnvelope[][] = requests.map(() => []);
    for (const r of res.rows) {
      const page = pages[numOf(r, 'ord') - 1];
      if (!page) throw new Error('queue read returned a row for no request');
      page.push(queuedEnvelope(r));
    }
    // The join promises no row order across its output; within a page it must be queue order.
    for (const page of pages) {
      if (page.some((e, i) => i > 0 && (page[i - 1] as QueuedEnvelope).cursor > e.cursor))
        page.sort((x, y) => x.cursor - y.cursor);
    }
    return pages;
  }

  /** Joins the current group of acknowledgement deletes. */
  async deleteEnvelope(request: DeleteRequest): Promise<DeleteResult> {
    return this.#deletes.submit(request);
  }

  async deleteEnvelopes(requests: readonly DeleteRequest[]): Promise<DeleteResult[]> {
    if (requests.length === 0) return [];
    const res = await this.#pool.query({
      name: 'parley_delete_many',
      text: DELETE_MANY_SQL,
      values: [
        requests.map((r) => r.account),
        requests.map((r) => r.device),
        requests.map((r) => r.cursor),
        requests.map((r) => buf(r.guid)),
      ],
    });
    const idOf = (account: string, device: number, seq: number) => `${account}/${device}/${seq}`;
    const deleted = new Map<string, { guid: Uint8Array; result: DeleteResult }>();
    for (const r of res.rows) {
      const sa = r.source_account;
      deleted.set(idOf(strOf(r, 'dest_account'), numOf(r, 'dest_device'), numOf(r, 'seq')), {
        guid: bytesOf(r, 'guid'),
        result: {
          kind: 'deleted',
          type: numOf(r, 'type') as EnvelopeType,
          source: typeof sa === 'string' ? { account: sa as AccountId, device: numOf(r, 'source_device') as DeviceId } : null,
          clientTimestamp: numOf(r, 'client_ts'),
        },
      });
    }
    // Each deleted row is reported once: to the first request that named it with its guid.
    return requests.map((req) => {
      const id = idOf(req.account, req.device, req.cursor);
      const hit = deleted.get(id);
      if (!hit || Buffer.compare(hit.guid, req.guid) !== 0) return { kind: 'notFound' };
      deleted.delete(id);
      return hit.result;
    });
  }

  async purge(before: number): Promise<{ envelopes: number; idempotencyKeys: number }> {
    return this.#tx(async (c) => {
      const e = await c.query('DELETE FROM envelopes WHERE server_ts < $1', [before]);
      const s = await c.query('DELETE FROM idempotency_keys WHERE created_at < $1', [before]);
      return { envelopes: e.rowCount ?? 0, idempotencyKeys: s.rowCount ?? 0 };
    });
  }

  async addDevice(req: NewDevice): Promise<AddDeviceResult> {
    return this.#txChanging(req.account, async (c): Promise<AddDeviceResult> => {
      // The account row lock serializes concurrent links of one account, so two never pick the same id.
      const acct = await c.query('SELECT 1 FROM accounts WHERE account_id = $1 FOR UPDATE', [req.account]);
      if (acct.rows.length === 0) return { kind: 'notFound' };
      const res = await c.query('SELECT device_id FROM devices WHERE account_id = $1', [req.account]);
      const taken = new Set(res.rows.map((r) => numOf(r, 'device_id')));
      if (taken.size >= req.maxDevices) return { kind: 'tooMany' };
      let id = 2;
      while (taken.has(id)) id++;
      if (id > 127) return { kind: 'tooMany' };
      // Whatever a removed device of this id left behind (an envelope committed while it was removed) is not the new device's.
      await c.query('DELETE FROM ec_prekeys WHERE account_id = $1 AND device_id = $2', [req.account, id]);
      await c.query('DELETE FROM kyber_prekeys WHERE account_id = $1 AND device_id = $2', [req.account, id]);
      await c.query('DELETE FROM envelopes WHERE dest_account = $1 AND dest_device = $2', [req.account, id]);
      await c.query(
        `INSERT INTO devices (account_id, device_id, registration_id, password_salt, password_hash,
           signed_key_id, signed_key, signed_key_sig, kyber_lr_id, kyber_lr_key, kyber_lr_sig, created_at, last_seen)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)`,
        [
          req.account,
          id,
          req.registrationId,
          buf(req.passwordSalt),
          buf(req.passwordHash),
          req.signedPreKey.keyId,
          buf(req.signedPreKey.publicKey),
          buf(req.signedPreKey.signature),
          req.kyberLastResortKey.keyId,
          buf(req.kyberLastResortKey.publicKey),
          buf(req.kyberLastResortKey.signature),
          req.createdAt,
        ],
      );
      return { kind: 'added', deviceId: id as DeviceId };
    });
  }

  async removeDevice(account: AccountId, device: DeviceId): Promise<boolean> {
    return this.#txChanging(account, async (c) => {
      const res = await c.query('DELETE FROM devices WHERE account_id = $1 AND device_id = $2', [account, device]);
      await c.query('DELETE FROM ec_prekeys WHERE account_id = $1 AND device_id = $2', [account, device]);
      await c.query('DELETE FROM kyber_prekeys WHERE account_id = $1 AND device_id = $2', [account, device]);
      await c.query('DELETE FROM envelopes WHERE dest_account = $1 AND dest_device = $2', [account, device]);
      return (res.rowCount ?? 0) > 0;
    });
  }

  async deviceDetails(account: AccountId): Promise<DeviceDetails[]> {
    const res = await this.#pool.query(
      'SELECT device_id, registration_id, created_at, GREATEST(last_seen, created_at) AS last_seen FROM devices WHERE account_id = $1 ORDER BY device_id',
      [account],
    );
    return res.rows.map((r) => ({
      deviceId: numOf(r, 'device_id') as DeviceId,
      registrationId: numOf(r, 'registration_id'),
      createdAt: numOf(r, 'created_at'),
      lastSeen: numOf(r, 'last_seen'),
    }));
  }

  async touchDevice(account: AccountId, device: DeviceId, now: number): Promise<void> {
    await this.#pool.query('UPDATE devices SET last_seen = $1 WHERE account_id = $2 AND device_id = $3', [now, account, device]);
  }

  async idleDevices(before: number, limit: number): Promise<Array<{ account: AccountId; device: DeviceId }>> {
    const res = await this.#pool.query(
      'SELECT account_id, device_id FROM devices WHERE device_id > 1 AND GREATEST(last_seen, created_at) < $1 ORDER BY last_seen LIMIT $2',
      [before, limit],
    );
    return res.rows.map((r) => ({ account: strOf(r, 'account_id') as AccountId, device: numOf(r, 'device_id') as DeviceId }));
  }

  async putProvisioningCode(code: ProvisioningCode): Promise<void> {
    await this.#pool.query('INSERT INTO provisioning_codes (code_hash, account_id, expires_at) VALUES ($1, $2, $3)', [
      buf(code.codeHash),
      code.account,
      code.expiresAt,
    ]);
  }

  async takeProvisioningCode(codeHash: Uint8Array, now: number): Promise<AccountId | null> {
    return this.#tx(async (c) => {
      const res = await c.query('DELETE FROM provisioning_codes WHERE code_hash = $1 RETURNING account_id, expires_at', [buf(codeHash)]);
      await c.query('DELETE FROM provisioning_codes WHERE expires_at <= $1', [now]);
      const row = res.rows[0];
      if (!row || numOf(row, 'expires_at') <= now) return null;
      return strOf(row, 'account_id') as AccountId;
    });
  }

  /** A server setting as this store's connections see it (diagnostics and tests). */
  async setting(name: 'synchronous_commit' | 'server_version'): Promise<string> {
    const res = await this.#pool.query(`SHOW ${name}`);
    return strOf(res.rows[0] ?? {}, name);
  }

  async ping(): Promise<void> {
    if (this.#closed) throw new Error('store closed');
    await this.#pool.query('SELECT 1');
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all([
      this.#enqueues.drain(),
      this.#deletes.drain(),
      this.#fetches.drain(),
      this.#accountReads.drain(),
      this.#deviceListReads.drain(),
      this.#listener?.close(),
    ]);
    await this.#pool.end();
  }
}
