/**
 * The embedded Store: one SQLite file (`<dataDir>/relay.db`) in WAL mode.
 * The driver is synchronous, so every method runs to completion without
 * interleaving; multi-step operations still run inside a transaction so they
 * are all-or-nothing.
 *
 * Durability without blocking the event loop: the connection runs with
 * synchronous=NORMAL, so a COMMIT only appends its frames to the WAL file
 * (page cache) and never calls fsync itself. Every write that someone is
 * answered on is then followed by an fdatasync of the WAL file on libuv's
 * threadpool (WalSync below), and the caller is answered only once an
 * fdatasync that STARTED after its commit has finished. While one fdatasync
 * runs, the next groups commit and wait for the next one, so one fsync covers
 * many commits and the event loop keeps serving sockets. The reasoning that
 * this survives kill -9 and an OS crash is in docs/ARCHITECTURE.md.
 *
 * Group commit: `enqueue` and `deleteEnvelope` go through ONE batcher (see
 * batching.ts), so the sends and the acknowledgement deletes that arrive in
 * the same turn of the event loop, or while the previous group waits for its
 * flush, share one transaction: one COMMIT and one fdatasync per cycle.
 * Sends are answered once that fdatasync has finished; deletes as soon as
 * the transaction has committed (their frames reach the disk with that same
 * fdatasync, or with the next flushed commit when a group holds only
 * deletes). A machine crash before that can undo a delete; the envelope is
 * then pushed again and the client drops it as a repeat, so nothing
 * acknowledged to anyone is lost. The delivery receipt an ack causes is
 * enqueued in a later group, so it can only survive a crash if the delete
 * does (WAL frames are recovered as a prefix). When a group's transaction
 * fails, its acks fail with its sends: those envelopes stay queued and are
 * pushed again on the device's next connection, as after any failed ack.
 */
import {
  closeSync,
  existsSync,
  fdatasync,
  fstatSync,
  fsyncSync,
  mkdirSync,
  openSync,
  constants as fsConstants,
  stat,
} from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Worker } from 'node:worker_threads';
import Database from '@signalapp/sqlcipher';
import {
  type AccountId,
  type DeviceId,
  type EnvelopeType,
  type KeyCounts,
  type PreKey,
  type SignedPreKey,
  normalizeUsername,
  plainBytes,
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
import { Batcher } from '../../batching.js';

/** Numbered migrations; version N is `MIGRATIONS[N - 1]`. Never edit a shipped one. */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE accounts (
    account_id   TEXT PRIMARY KEY,
    username     TEXT NOT NULL UNIQUE,
    identity_key BLOB NOT NULL,
    created_at   INTEGER NOT NULL
  );
  CREATE TABLE devices (
    account_id        TEXT NOT NULL REFERENCES accounts(account_id),
    device_id         INTEGER NOT NULL,
    registration_id   INTEGER NOT NULL,
    password_salt     BLOB NOT NULL,
    password_hash     BLOB NOT NULL,
    signed_key_id     INTEGER NOT NULL,
    signed_key        BLOB NOT NULL,
    signed_key_sig    BLOB NOT NULL,
    kyber_lr_id       INTEGER NOT NULL,
    kyber_lr_key      BLOB NOT NULL,
    kyber_lr_sig      BLOB NOT NULL,
    created_at        INTEGER NOT NULL,
    PRIMARY KEY (account_id, device_id)
  );
  CREATE TABLE ec_prekeys (
    account_id TEXT NOT NULL,
    device_id  INTEGER NOT NULL,
    key_id     INTEGER NOT NULL,
    public_key BLOB NOT NULL,
    PRIMARY KEY (account_id, device_id, key_id)
  );
  CREATE TABLE kyber_prekeys (
    account_id TEXT NOT NULL,
    device_id  INTEGER NOT NULL,
    key_id     INTEGER NOT NULL,
    public_key BLOB NOT NULL,
    signature  BLOB NOT NULL,
    PRIMARY KEY (account_id, device_id, key_id)
  );
  CREATE TABLE envelopes (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    guid           BLOB NOT NULL UNIQUE,
    dest_account   TEXT NOT NULL,
    dest_device    INTEGER NOT NULL,
    type           INTEGER NOT NULL,
    source_account TEXT,
    source_device  INTEGER,
    client_ts      INTEGER NOT NULL,
    server_ts      INTEGER NOT NULL,
    content        BLOB,
    urgent         INTEGER NOT NULL
  );
  CREATE INDEX envelopes_queue ON envelopes (dest_account, dest_device, seq);
  CREATE INDEX envelopes_age ON envelopes (server_ts);
  CREATE TABLE sent_messages (
    sender_account TEXT NOT NULL,
    sender_device  INTEGER NOT NULL,
    destination    TEXT NOT NULL,
    message_id     BLOB NOT NULL,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (sender_account, sender_device, destination, message_id)
  );
  CREATE INDEX sent_messages_age ON sent_messages (created_at);
  `,
  // 2: sealed sender: the key senders present instead of credentials.
  `
  ALTER TABLE accounts ADD COLUMN access_key BLOB;
  `,
  // 3: multi-device: when each device last connected, and single-use provisioning codes (hashes only).
  `
  ALTER TABLE devices ADD COLUMN last_seen INTEGER NOT NULL DEFAULT 0;
  UPDATE devices SET last_seen = created_at;
  CREATE INDEX devices_last_seen ON devices (last_seen);
  CREATE TABLE provisioning_codes (
    code_hash  BLOB PRIMARY KEY,
    account_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL
  );
  `,
  // 4: writes that append. Idempotency keys live in a table clustered by the send's client timestamp, so the
  // keys of one group commit land on the last few pages of one B-tree instead of a random page each (the old
  // table's index grew with every send kept and made a send cost three times as much). Keys of the old form
  // (no timestamp) can never match a new key and are dropped: a retry of a send made before the upgrade may be
  // stored twice, and the receiving client drops the repeat. Envelope guids lose their UNIQUE index: they are
  // random server-made 128-bit values that nothing looks up (acks find an envelope by its cursor and compare
  // the guid). The envelopes table is rebuilt for that, keeping every cursor and the cursor sequence.
  `
  CREATE TABLE idempotency_keys (
    client_ts      INTEGER NOT NULL,
    message_id     BLOB NOT NULL,
    destination    TEXT NOT NULL,
    sender_account TEXT NOT NULL,
    sender_device  INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (client_ts, message_id, destination, sender_account, sender_device)
  ) WITHOUT ROWID;
  CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);
  DROP TABLE sent_messages;
  CREATE TABLE envelopes_v4 (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    guid           BLOB NOT NULL,
    dest_account   TEXT NOT NULL,
    dest_device    INTEGER NOT NULL,
    type           INTEGER NOT NULL,
    source_account TEXT,
    source_device  INTEGER,
    client_ts      INTEGER NOT NULL,
    server_ts      INTEGER NOT NULL,
    content        BLOB,
    urgent         INTEGER NOT NULL
  );
  INSERT INTO envelopes_v4 (seq, guid, dest_account, dest_device, type, source_account, source_device, client_ts, server_ts,
      content, urgent)
    SELECT seq, guid, dest_account, dest_device, type, source_account, source_device, client_ts, server_ts, content, urgent
    FROM envelopes ORDER BY seq;
  DELETE FROM sqlite_sequence WHERE name = 'envelopes_v4';
  INSERT INTO sqlite_sequence (name, seq) SELECT 'envelopes_v4', seq FROM sqlite_sequence WHERE name = 'envelopes';
  DROP TABLE envelopes;
  ALTER TABLE envelopes_v4 RENAME TO envelopes;
  CREATE INDEX envelopes_queue ON envelopes (dest_account, dest_device, seq);
  CREATE INDEX envelopes_age ON envelopes (server_ts);
  `,
];

type Row = Record<string, unknown>;
const blob = plainBytes;
function bytesOf(row: Row, col: string): Uint8Array {
  const v = row[col];
  if (!(v instanceof Uint8Array)) throw new TypeError(`column ${col} is not a blob`);
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}
function numOf(row: Row, col: string): number {
  const v = row[col];
  if (typeof v !== 'number') throw new TypeError(`column ${col} is not a number`);
  return v;
}
function strOf(row: Row, col: string): string {
  const v = row[col];
  if (typeof v !== 'string') throw new TypeError(`column ${col} is not text`);
  return v;
}

/** Apply pending migrations (up to `target`, for tests of a migration); returns the resulting schema version. */
export function migrate(db: Database, target = MIGRATIONS.length): number {
  db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
  const row = db.prepare('SELECT MAX(version) AS v FROM schema_version').get() as Row | undefined;
  let version = typeof row?.v === 'number' ? row.v : 0;
  for (; version < Math.min(target, MIGRATIONS.length); version++) {
    const sql = MIGRATIONS[version] as string;
    const next = version + 1;
    db.transaction(() => {
      db.exec(sql);
      db.prepare('INSERT INTO schema_version (version) VALUES (?)').run([next]);
    })();
  }
  return version;
}

/**
 * fdatasync of the WAL file on libuv's threadpool, shared by everyone waiting.
 *
 * `sync()` resolves after an fdatasync that started after the call: if none
 * is running one starts now; if one is running, the caller waits for the next
 * one, which starts when the running one ends and serves everybody who asked
 * meanwhile. The fd is opened on `<db>-wal`, the same inode SQLite appends
 * to: SQLite only rewrites that file in place (WAL restart after a
 * checkpoint) and unlinks it only when the last connection closes, which is
 * this store's own close. Every CHECK_INODE_EVERY syncs a tripwire compares
 * the path's inode with the fd's and poisons the store if they ever differ.
 * A failed fdatasync poisons the store: later pages may never reach the disk
 * (the kernel can drop them after reporting the error once), so every later
 * durable write fails instead of answering 2xx on a promise it cannot keep.
 */
const CHECK_INODE_EVERY = 256;

class WalSync {
  readonly #path: string;
  readonly #fd: number;
  readonly #ino: number;
  #running: Promise<void> | null = null;
  #next: Promise<void> | null = null;
  #failed: Error | null = null;
  #closed = false;
  #syncs = 0;

  constructor(walPath: string) {
    this.#path = walPath;
    this.#fd = openSync(walPath, fsConstants.O_RDWR);
    this.#ino = fstatSync(this.#fd).ino;
    // The WAL file's directory entry must survive a machine crash too.
    syncDirectory(dirname(walPath));
  }

  /** Resolves (never rejects) once the flush running or queued now has ended (at once when there is none). */
  async afterCurrent(): Promise<void> {
    await (this.#next ?? this.#running)?.catch(() => undefined);
  }

  /** Resolves (never rejects) once no flush is running or queued. */
  async whenIdle(): Promise<void> {
    while (this.#next || this.#running) await this.afterCurrent();
  }

  get failed(): Error | null {
    return this.#failed;
  }

  sync(): Promise<void> {
    if (this.#failed) return Promise.reject(this.#failed);
    if (this.#closed) return Promise.reject(new Error('store closed'));
    if (this.#next) return this.#next;
    if (this.#running) {
      const after = this.#running.catch(() => undefined);
      this.#next = after.then(() => {
        this.#next = null;
        return this.#start();
      });
      return this.#next;
    }
    return this.#start();
  }

  #start(): Promise<void> {
    if (this.#failed) return Promise.reject(this.#failed);
    const run = this.#flush().catch((err: unknown) => {
      this.#failed = err instanceof Error ? err : new Error('WAL fsync failed');
      throw this.#failed;
    });
    this.#running = run;
    void run.then(
      () => this.#done(run),
      () => this.#done(run),
    );
    return run;
  }

  #done(run: Promise<void>): void {
    if (this.#running === run) this.#running = null;
  }

  async #flush(): Promise<void> {
    const fd = this.#fd;
    await new Promise<void>((resolve, reject) => fdatasync(fd, (err) => (err ? reject(err) : resolve())));
    // Every CHECK_INODE_EVERY syncs, confirm the path still names the file the fd is open on.
    if (++this.#syncs % CHECK_INODE_EVERY !== 0) return;
    const st = await new Promise<number>((resolve, reject) => stat(this.#path, (err, s) => (err ? reject(err) : resolve(s.ino))));
    // Never expected (see above). If it happens, commits answered since the last check may sit in a file
    // nobody synced: fail every later write loudly rather than keep answering on a broken promise.
    if (st !== this.#ino) throw new Error('the WAL file was replaced while the store had it open');
  }

  /** Wait for running syncs, then close the fd. */
  async close(): Promise<void> {
    await this.whenIdle();
    this.#closed = true;
    closeSync(this.#fd);
  }
}

/** Most envelopes kept in memory for one device queue; a longer queue is read from SQLite. */
const TAIL_MAX_ENVELOPES = 256;
/** Most content bytes kept in memory over all queues; past it every tail is dropped. */
const TAIL_MAX_BYTES = 32 * 1024 * 1024;
/** Most device queues with a tail in memory; past it every tail is dropped. */
const TAIL_MAX_DEVICES = 100_000;
/** Most accounts whose device list is cached; past it the cache starts over. */
const DEVICE_LISTS_MAX = 100_000;
/** Most account rows (found or not) cached; past it the cache starts over. */
const ACCOUNTS_MAX = 100_000;
/** Last-seen times (touchDevice) are written at most this often, all in one transaction. */
const TOUCH_FLUSH_MS = 1000;

interface Tail {
  /** The tail holds EVERY queued envelope of the device with a cursor greater than `base`, in queue order. */
  base: number;
  entries: QueuedEnvelope[];
}

/**
 * The end of device queues that are being read, kept in memory so an online
 * device is handed the envelopes of the commit that woke it without a SELECT.
 *
 * A tail is created when `fetchQueue` reaches the end of a queue (fewer rows
 * than asked): then it is known to hold every envelope after `base`. From
 * then on every committed insert for that device is appended (cursors grow in
 * commit order: one writer, AUTOINCREMENT), every committed delete removes
 * its envelope, and removing or re-adding the device, a purge, a write by
 * another connection (PRAGMA data_version) or a cap drops the tail, after
 * which the queue is read from SQLite again. So `fetchQueue` answers exactly
 * what the SELECT would, in the same order.
 */
class QueueTails {
  readonly #tails = new Map<string, Tail>();
  #bytes = 0;

  static key(account: AccountId, device: DeviceId): string {
    return `${account}.${device}`;
  }

  /** Envelopes after `after` (at most `limit`), or null when the tail does not cover `after`. */
  read(key: string, after: number, limit: number): QueuedEnvelope[] | null {
    const t = this.#tails.get(key);
    if (!t || after < t.base) return null;
    // Binary search for the first entry after `after` (entries are in cursor order).
    const e = t.entries;
    let lo = 0;
    let hi = e.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((e[mid] as QueuedEnvelope).cursor <= after) lo = mid + 1;
      else hi = mid;
    }
    return e.slice(lo, lo + limit);
  }

  /** A read that reached the end of the queue: `rows` are all envelopes after `after`. */
  complete(key: string, after: number, rows: QueuedEnvelope[]): void {
    if (rows.length > TAIL_MAX_ENVELOPES) return;
    this.drop(key);
    if (this.#tails.size >= TAIL_MAX_DEVICES) this.clear();
    this.#tails.set(key, { base: after, entries: rows.slice() });
    for (const r of rows) this.#bytes += r.content.length;
    if (this.#bytes > TAIL_MAX_BYTES) this.clear();
  }

  /** A submitted insert (the newest cursor of its device); `key` is its device's. */
  append(key: string, e: QueuedEnvelope): void {
    const t = this.#tails.get(key);
    if (!t) return;
    if (t.entries.length >= TAIL_MAX_ENVELOPES) return this.drop(key);
    t.entries.push(e);
    this.#bytes += e.content.length;
    if (this.#bytes > TAIL_MAX_BYTES) this.clear();
  }

  /** A committed delete of the envelope at `cursor` (cursors are never reused: AUTOINCREMENT). */
  remove(key: string, cursor: number): void {
    const t = this.#tails.get(key);
    if (!t) return;
    const e = t.entries;
    // Acks mostly come in queue order: look at the head first, else binary search.
    let i = 0;
    if (e[0]?.cursor !== cursor) {
      let hi = e.length;
      while (i < hi) {
        const mid = (i + hi) >>> 1;
        if ((e[mid] as QueuedEnvelope).cursor < cursor) i = mid + 1;
        else hi = mid;
      }
      if (e[i]?.cursor !== cursor) return;
    }
    const [x] = e.splice(i, 1) as [QueuedEnvelope];
    this.#bytes -= x.content.length;
  }

  drop(key: string): void {
    const t = this.#tails.get(key);
    if (!t) return;
    for (const x of t.entries) this.#bytes -= x.content.length;
    this.#tails.delete(key);
  }

  clear(): void {
    this.#tails.clear();
    this.#bytes = 0;
  }
}

/**
 * Group caps for the writes (sends and acks) on SQLite, in rows. Larger than
 * PostgreSQL's ENQUEUE_GROUP: a group is what arrived during one flush, so with
 * a slow disk it must be big for the throughput to hold. A full group (about
 * 1,024 sends and their acks) is not cheap: under load it took 50-80 ms on
 * the relay thread (docs/BENCHMARKS.md, "Where the embedded relay's time
 * goes now"), which is what bounds p99 at saturation.
 */
const SQLITE_WRITE_GROUP = { maxItems: 2048, maxWeight: 4096 } as const;

/** One write of a group commit: a send (`enqueue`) or an acknowledgement delete. */
type Write = { kind: 'send'; batch: EnqueueBatch; staged: Waiting[] } | { kind: 'ack'; request: DeleteRequest };

/**
 * A submitted envelope whose group has not committed yet. It already has its
 * cursor and is readable (queue tails, fetchQueue), so an online device is
 * pushed it while the group waits for the disk; an ack that arrives before
 * the commit cancels its insert.
 */
interface Waiting {
  env: QueuedEnvelope;
  /** QueueTails.key of its device. */
  key: string;
  cancelled: boolean;
}
type WriteResult = EnqueueResult | DeleteResult;

/** How often the checkpoint worker copies the WAL into the database file. */
const CHECKPOINT_INTERVAL_MS = 100;
/**
 * The relay connection's own automatic checkpoint, in pages of WAL. It runs
 * inside a COMMIT on the event loop; with the worker doing the copying it only
 * finishes a small remainder (and lets the WAL start over from its beginning,
 * which a PASSIVE checkpoint racing a busy writer rarely can).
 */
const MAIN_AUTOCHECKPOINT_PAGES = 4000;

/** The worker's code (eval'd, so it runs the same from src/ under the tests and from dist/). */
const CHECKPOINTER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const mod = require(workerData.driver);
const Database = mod.default ?? mod;
const db = new Database(workerData.path);
db.pragma('synchronous = NORMAL');
db.pragma('wal_autocheckpoint = 0');
const timer = setInterval(() => {
  try { db.pragma('wal_checkpoint(PASSIVE)'); } catch { /* busy or failing: the relay's own checkpoint still runs */ }
}, workerData.intervalMs);
parentPort.on('message', (m) => {
  if (m !== 'close') return;
  clearInterval(timer);
  db.close();
  parentPort.close();
});
`;

/**
 * A worker thread with its own connection that runs PRAGMA
 * wal_checkpoint(PASSIVE) every CHECKPOINT_INTERVAL_MS: the copying of WAL
 * frames into relay.db and the two fsyncs of each checkpoint (WAL before,
 * database after, as SQLite's own checkpoint does under synchronous=NORMAL)
 * happen off the event loop. PASSIVE neither waits for nor blocks the relay's
 * writer.
 */
function startCheckpointer(path: string): Worker {
  const driver = createRequire(import.meta.url).resolve('@signalapp/sqlcipher');
  const w = new Worker(CHECKPOINTER_SOURCE, { eval: true, workerData: { path, driver, intervalMs: CHECKPOINT_INTERVAL_MS } });
  w.unref();
  w.on('error', () => undefined);
  return w;
}

/**
 * A Uint8Array of `b` that does not keep a much larger buffer alive in a
 * queue tail (a multi-recipient upload is split into views of one body).
 */
function ownBytes(b: Uint8Array): Uint8Array {
  if (b.buffer.byteLength > 2 * b.byteLength + 8192) return new Uint8Array(b);
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** fsync a directory so a file created in it survives a machine crash. */
function syncDirectory(dir: string): void {
  const fd = openSync(dir, fsConstants.O_RDONLY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Open (creating if needed) `<dataDir>/relay.db`. Use `':memory:'` as dataDir for a throwaway store. */
export function openSqliteStore(dataDir: string): SqliteStore {
  let path = ':memory:';
  if (dataDir !== ':memory:') {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    path = join(dataDir, 'relay.db');
  }
  return new SqliteStore(new Database(path));
}

/** Store over SQLite. Prepared statements are compiled once, in the constructor. */
export class SqliteStore implements Store {
  readonly #db: Database;
  readonly #s;
  #closed = false;
  /** Null for `:memory:` (nothing to flush) or when WAL is unavailable (then synchronous=FULL stays on). */
  readonly #wal: WalSync | null = null;
  readonly #checkpointer: Worker | null = null;
  readonly #tails = new QueueTails();
  /** Deletes of the running transaction, applied to the tails only once it commits. */
  #pendingDeletes: Array<{ key: string; cursor: number }> = [];
  /**
   * The last cursor handed out. Cursors are assigned when a send is submitted,
   * not by the insert, so an envelope can be pushed before its group commits.
   * Groups commit in submission order, so cursors still grow in commit order;
   * the inserts name them explicitly (AUTOINCREMENT keeps sqlite_sequence at
   * the largest, so a cursor is never reused, also across restarts).
   */
  #lastSeq = 0;
  /** Submitted envelopes whose group has not committed yet, by cursor (in cursor order). */
  readonly #waiting = new Map<number, Waiting>();
  /** `PRAGMA data_version` when the in-memory caches were last known to match the file. */
  #dataVersion = 0;
  #externalChecked = false;
  /**
   * Device list per account, for the check every send makes. This store is
   * the only writer of the file (other connections are noticed through
   * data_version), and every write that changes a device list drops the entry.
   */
  readonly #deviceLists = new Map<AccountId, readonly DeviceSummary[]>();
  /**
   * Account rows (null: no such account), read by every sealed send's access
   * check. Same rules as the device lists: createAccount and setAccessKey drop
   * the entry, other connections' writes drop everything.
   */
  readonly #accounts = new Map<AccountId, AccountRecord | null>();
  /** Last-seen times not written yet: one transaction per TOUCH_FLUSH_MS instead of one write per connect. */
  readonly #touches = new Map<string, { account: AccountId; device: DeviceId; now: number }>();
  #touchTimer: NodeJS.Timeout | null = null;
  readonly #writes = new Batcher<Write, WriteResult>({
    // One group at a time: it commits, then waits for its flush while the next group gathers everything that
    // arrives meanwhile. A send can only be answered after a flush that started after its commit, so
    // committing it earlier would not answer it sooner; one commit per flush keeps the WAL writes few.
    // Acks ride in the same transaction and are answered at its commit (see the file comment).
    ...SQLITE_WRITE_GROUP,
    weight: (w) => (w.kind === 'send' ? w.batch.envelopes.length : 1),
    run: (writes, settle) => this.#commitGroup(writes, settle),
  });

  constructor(db: Database) {
    this.#db = db;
    const mode = db.pragma('journal_mode = WAL', { simple: true });
    db.pragma('synchronous = FULL');
    db.pragma('foreign_keys = ON');
    db.pragma('busy_timeout = 5000');
    migrate(db);
    // A file database in WAL mode (the -wal file exists once a transaction has run, as migrate's did):
    // commits stop fsyncing on the event loop and WalSync flushes them from the threadpool instead.
    const main = (db.prepare('PRAGMA database_list').all() as Row[]).find((r) => r.name === 'main');
    const file = typeof main?.file === 'string' ? main.file : '';
    if (mode === 'wal' && file !== '' && existsSync(`${file}-wal`)) {
      this.#wal = new WalSync(`${file}-wal`);
      db.pragma('synchronous = NORMAL');
      this.#checkpointer = startCheckpointer(file);
      db.pragma(`wal_autocheckpoint = ${MAIN_AUTOCHECKPOINT_PAGES}`);
    }
    const p = (sql: string) => db.prepare(sql);
    this.#s = {
      insertAccount: p(
        'INSERT INTO accounts (account_id, username, identity_key, created_at) VALUES ($id, $username, $ik, $now)',
      ),
      usernameExists: p('SELECT 1 AS x FROM accounts WHERE username = ?'),
      insertDevice: p(`INSERT INTO devices (account_id, device_id, registration_id, password_salt, password_hash,
          signed_key_id, signed_key, signed_key_sig, kyber_lr_id, kyber_lr_key, kyber_lr_sig, created_at)
        VALUES ($a, $d, $reg, $salt, $hash, $sid, $skey, $ssig, $kid, $kkey, $ksig, $now)`),
      credentials: p('SELECT password_salt, password_hash FROM devices WHERE account_id = ? AND device_id = ?'),
      account: p('SELECT account_id, username, identity_key, access_key FROM accounts WHERE account_id = ?'),
      setAccessKey: p('UPDATE accounts SET access_key = ? WHERE account_id = ?'),
      lookup: p('SELECT account_id FROM accounts WHERE username = ?'),
      devices: p('SELECT device_id, registration_id FROM devices WHERE account_id = ? ORDER BY device_id'),
      deviceRows: p(`SELECT device_id, registration_id, signed_key_id, signed_key, signed_key_sig,
          kyber_lr_id, kyber_lr_key, kyber_lr_sig FROM devices WHERE account_id = ? ORDER BY device_id`),
      setSigned: p(
        'UPDATE devices SET signed_key_id = ?, signed_key = ?, signed_key_sig = ? WHERE account_id = ? AND device_id = ?',
      ),
      setLastResort: p(
        'UPDATE devices SET kyber_lr_id = ?, kyber_lr_key = ?, kyber_lr_sig = ? WHERE account_id = ? AND device_id = ?',
      ),
      putEc: p('INSERT OR REPLACE INTO ec_prekeys (account_id, device_id, key_id, public_key) VALUES (?, ?, ?, ?)'),
      putKyber: p(
        'INSERT OR REPLACE INTO kyber_prekeys (account_id, device_id, key_id, public_key, signature) VALUES (?, ?, ?, ?, ?)',
      ),
      countEc: p('SELECT COUNT(*) AS n FROM ec_prekeys WHERE account_id = ? AND device_id = ?'),
      countKyber: p('SELECT COUNT(*) AS n FROM kyber_prekeys WHERE account_id = ? AND device_id = ?'),
      takeEc: p(`DELETE FROM ec_prekeys WHERE rowid = (SELECT rowid FROM ec_prekeys WHERE account_id = ? AND device_id = ?
          ORDER BY key_id LIMIT 1) RETURNING key_id, public_key`),
      takeKyber:
        p(`DELETE FROM kyber_prekeys WHERE rowid = (SELECT rowid FROM kyber_prekeys WHERE account_id = ? AND device_id = ?
          ORDER BY key_id LIMIT 1) RETURNING key_id, public_key, signature`),
      insertKey: p(`INSERT INTO idempotency_keys (client_ts, message_id, destination, sender_account, sender_device, created_at)
          VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`),
      insertEnvelope: p(`INSERT INTO envelopes (seq, guid, dest_account, dest_device, type, source_account, source_device,
          client_ts, server_ts, content, urgent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
      sequence: db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'envelopes'", { pluck: true }),
      fetch: p(`SELECT seq, guid, dest_account, dest_device, type, source_account, source_device, client_ts, server_ts,
          content, urgent FROM envelopes WHERE dest_account = ? AND dest_device = ? AND seq > ? ORDER BY seq LIMIT ?`),
      deleteEnvelope: p(`DELETE FROM envelopes WHERE seq = ? AND dest_account = ? AND dest_device = ? AND guid = ?
          RETURNING type, source_account, source_device, client_ts`),
      purgeEnvelopes: p('DELETE FROM envelopes WHERE server_ts < ?'),
      purgeKeys: p('DELETE FROM idempotency_keys WHERE created_at < ?'),
      deviceDetails: p(
        'SELECT device_id, registration_id, created_at, MAX(last_seen, created_at) AS last_seen FROM devices WHERE account_id = ? ORDER BY device_id',
      ),
      touchDevice: p('UPDATE devices SET last_seen = ? WHERE account_id = ? AND device_id = ?'),
      idleDevices: p(
        'SELECT account_id, device_id FROM devices WHERE device_id > 1 AND MAX(last_seen, created_at) < ? ORDER BY last_seen LIMIT ?',
      ),
      deleteDevice: p('DELETE FROM devices WHERE account_id = ? AND device_id = ?'),
      deleteDeviceEc: p('DELETE FROM ec_prekeys WHERE account_id = ? AND device_id = ?'),
      deleteDeviceKyber: p('DELETE FROM kyber_prekeys WHERE account_id = ? AND device_id = ?'),
      deleteDeviceQueue: p('DELETE FROM envelopes WHERE dest_account = ? AND dest_device = ?'),
      putCode: p('INSERT INTO provisioning_codes (code_hash, account_id, expires_at) VALUES (?, ?, ?)'),
      takeCode: p('DELETE FROM provisioning_codes WHERE code_hash = ? RETURNING account_id, expires_at'),
      purgeCodes: p('DELETE FROM provisioning_codes WHERE expires_at <= ?'),
      ping: p('SELECT 1 AS x'),
      dataVersion: db.prepare('PRAGMA data_version', { pluck: true }),
    };
    this.#dataVersion = this.#readDataVersion();
    this.#lastSeq = this.#readSequence();
  }

  /** The largest cursor ever used in the file (0 before the first envelope). */
  #readSequence(): number {
    const v = this.#s.sequence.get();
    return typeof v === 'number' ? v : 0;
  }

  /** Resolves once every commit made before this call is on disk (no-op without a WAL file). */
  async #flushed(): Promise<void> {
    if (this.#wal) await this.#wal.sync();
  }

  /** Run `fn` (a write) and resolve with its result once that write is on disk. */
  async #durable<T>(fn: () => T): Promise<T> {
    if (this.#wal?.failed) throw this.#wal.failed;
    const out = fn();
    await this.#flushed();
    return out;
  }

  #readDataVersion(): number {
    const v = this.#s.dataVersion.get();
    if (typeof v !== 'number') throw new TypeError('data_version is not a number');
    return v;
  }

  /**
   * Drop every in-memory cache when another connection (another process, a
   * test) wrote to the file. Checked at most once per turn of the event loop
   * (the flag is cleared by setImmediate): a request that another process
   * sends after its commit reaches this process through a socket, and is read
   * in a later turn than any check made before that commit.
   */
  #checkExternalWrites(): void {
    if (this.#externalChecked) return;
    this.#externalChecked = true;
    setImmediate(() => (this.#externalChecked = false));
    const v = this.#readDataVersion();
    if (v === this.#dataVersion) return;
    this.#dataVersion = v;
    this.#lastSeq = Math.max(this.#lastSeq, this.#readSequence());
    this.#tails.clear();
    this.#deviceLists.clear();
    this.#accounts.clear();
  }

  async createAccount(a: NewAccount): Promise<{ kind: 'created' } | { kind: 'usernameTaken' }> {
    const username = normalizeUsername(a.username);
    this.#deviceLists.delete(a.accountId);
    this.#accounts.delete(a.accountId);
    return this.#durable(
      this.#db.transaction(() => {
        if (this.#s.usernameExists.get([username])) return { kind: 'usernameTaken' as const };
        this.#s.insertAccount.run({ id: a.accountId, username, ik: blob(a.identityKey), now: a.createdAt });
        const d = a.device;
        this.#s.insertDevice.run({
          a: a.accountId,
          d: 1,
          reg: d.registrationId,
          salt: blob(d.passwordSalt),
          hash: blob(d.passwordHash),
          sid: d.signedPreKey.keyId,
          skey: blob(d.signedPreKey.publicKey),
          ssig: blob(d.signedPreKey.signature),
          kid: d.kyberLastResortKey.keyId,
          kkey: blob(d.kyberLastResortKey.publicKey),
          ksig: blob(d.kyberLastResortKey.signature),
          now: a.createdAt,
        });
        return { kind: 'created' as const };
      }),
    );
  }

  async getDeviceCredentials(account: AccountId, device: DeviceId): Promise<DeviceCredentials | null> {
    const row = this.#s.credentials.get([account, device]) as Row | undefined;
    return row ? { passwordSalt: bytesOf(row, 'password_salt'), passwordHash: bytesOf(row, 'password_hash') } : null;
  }

  async getAccount(account: AccountId): Promise<AccountRecord | null> {
    this.#checkExternalWrites();
    const cached = this.#accounts.get(account);
    if (cached !== undefined) return cached;
    const row = this.#s.account.get([account]) as Row | undefined;
    const record: AccountRecord | null = row
      ? Object.freeze({
          accountId: strOf(row, 'account_id') as AccountId,
          username: strOf(row, 'username'),
          identityKey: bytesOf(row, 'identity_key'),
          accessKey: row.access_key === null || row.access_key === undefined ? null : bytesOf(row, 'access_key'),
        })
      : null;
    if (this.#accounts.size >= ACCOUNTS_MAX) this.#accounts.clear();
    this.#accounts.set(account, record);
    return record;
  }

  async setAccessKey(account: AccountId, accessKey: Uint8Array | null): Promise<void> {
    await this.#durable(() => {
      this.#s.setAccessKey.run([accessKey ? blob(accessKey) : null, account]);
      this.#accounts.delete(account);
    });
  }

  async lookupUsername(username: string): Promise<AccountId | null> {
    const row = this.#s.lookup.get([normalizeUsername(username)]) as Row | undefined;
    return row ? (strOf(row, 'account_id') as AccountId) : null;
  }

  async listDevices(account: AccountId): Promise<DeviceSummary[]> {
    this.#checkExternalWrites();
    const cached = this.#deviceLists.get(account);
    if (cached) return cached as DeviceSummary[];
    const list = Object.freeze(
      (this.#s.devices.all([account]) as Row[]).map((r) =>
        Object.freeze({ deviceId: numOf(r, 'device_id') as DeviceId, registrationId: numOf(r, 'registration_id') }),
      ),
    );
    if (this.#deviceLists.size >= DEVICE_LISTS_MAX) this.#deviceLists.clear();
    this.#deviceLists.set(account, list);
    return list as DeviceSummary[];
  }

  async storeKeys(account: AccountId, device: DeviceId, keys: KeyUpload): Promise<void> {
    await this.#durable(
      this.#db.transaction(() => {
        const s = keys.signedPreKey;
        if (s) this.#s.setSigned.run([s.keyId, blob(s.publicKey), blob(s.signature), account, device]);
        const k = keys.kyberLastResortKey;
        if (k) this.#s.setLastResort.run([k.keyId, blob(k.publicKey), blob(k.signature), account, device]);
        for (const pk of keys.preKeys) this.#s.putEc.run([account, device, pk.keyId, blob(pk.publicKey)]);
        for (const kk of keys.kyberPreKeys)
          this.#s.putKyber.run([account, device, kk.keyId, blob(kk.publicKey), blob(kk.signature)]);
      }),
    );
  }

  #counts(account: AccountId, device: DeviceId): KeyCounts {
    const ec = this.#s.countEc.get([account, device]) as Row;
    const ky = this.#s.countKyber.get([account, device]) as Row;
    return { ecCount: numOf(ec, 'n'), kyberCount: numOf(ky, 'n') };
  }

  async keyCounts(account: AccountId, device: DeviceId): Promise<KeyCounts> {
    return this.#counts(account, device);
  }

  async claimBundle(account: AccountId, device: DeviceId | 'all'): Promise<ClaimResult> {
    // Durable before answering: a claim lost in a crash could hand the same one-time key out twice.
    return this.#durable(
      this.#db.transaction((): ClaimResult => {
        const acct = this.#s.account.get([account]) as Row | undefined;
        if (!acct) return { kind: 'notFound' };
        const rows = (this.#s.deviceRows.all([account]) as Row[]).filter(
          (r) => device === 'all' || numOf(r, 'device_id') === device,
        );
        if (rows.length === 0) return { kind: 'notFound' };
        const devices = rows.map((r): ClaimedDevice => {
          const id = numOf(r, 'device_id') as DeviceId;
          const ec = this.#s.takeEc.get([account, id]) as Row | undefined;
          const ky = this.#s.takeKyber.get([account, id]) as Row | undefined;
          const preKey: PreKey | null = ec ? { keyId: numOf(ec, 'key_id'), publicKey: bytesOf(ec, 'public_key') } : null;
          const kyberPreKey: SignedPreKey = ky
            ? { keyId: numOf(ky, 'key_id'), publicKey: bytesOf(ky, 'public_key'), signature: bytesOf(ky, 'signature') }
            : { keyId: numOf(r, 'kyber_lr_id'), publicKey: bytesOf(r, 'kyber_lr_key'), signature: bytesOf(r, 'kyber_lr_sig') };
          return {
            deviceId: id,
            registrationId: numOf(r, 'registration_id'),
            preKey,
            signedPreKey: {
              keyId: numOf(r, 'signed_key_id'),
              publicKey: bytesOf(r, 'signed_key'),
              signature: bytesOf(r, 'signed_key_sig'),
            },
            kyberPreKey,
            remaining: this.#counts(account, id),
          };
        });
        return { kind: 'bundle', identityKey: bytesOf(acct, 'identity_key'), devices };
      }),
    );
  }

  /**
   * Readable at once (see Waiting), then joins the current group commit;
   * resolves after the group's transaction is on disk.
   */
  async enqueue(batch: EnqueueBatch): Promise<EnqueueResult> {
    const write = this.#stage(batch);
    const r = await this.#writes.submit(write);
    if (r.kind === 'stored' || r.kind === 'duplicate') return r;
    throw new Error('a send was answered with a delete result');
  }

  async enqueueMany(batches: readonly EnqueueBatch[]): Promise<EnqueueResult[]> {
    // Groups commit in cursor order: let every earlier submission commit first, then stage and commit in one go.
    await this.#writes.drain();
    const out = await this.#commitGroup(
      batches.map((batch) => this.#stage(batch)),
      () => undefined,
    );
    return out as EnqueueResult[];
  }

  /** Give the batch's envelopes their cursors and make them readable; its group commits them later. */
  #stage(batch: EnqueueBatch): Write & { kind: 'send' } {
    if (this.#closed) throw new Error('store closed');
    this.#checkExternalWrites();
    const staged = batch.envelopes.map((e): Waiting => {
      // Field by field: an object spread here was ~3 % of the relay thread under load.
      const env: QueuedEnvelope = {
        cursor: ++this.#lastSeq,
        guid: new Uint8Array(e.guid.buffer, e.guid.byteOffset, e.guid.byteLength),
        type: e.type,
        source: e.source,
        destination: e.destination,
        clientTimestamp: e.clientTimestamp,
        serverTimestamp: e.serverTimestamp,
        content: ownBytes(e.content),
        urgent: e.urgent,
      };
      const w = { env, key: QueueTails.key(e.destination.account, e.destination.device), cancelled: false };
      this.#waiting.set(env.cursor, w);
      this.#tails.append(w.key, env);
      return w;
    });
    batch.onReadable?.();
    return { kind: 'send', batch, staged };
  }

  /**
   * After the group's transaction: its envelopes stop waiting, and a repeat's
   * or a failed group's leave the tails. Stored ones are in their tail already
   * (appended when submitted, or merged into a tail built since), or their
   * device has no tail.
   */
  #settleStaged(writes: readonly Write[], out: readonly WriteResult[] | null): void {
    writes.forEach((w, i) => {
      if (w.kind !== 'send') return;
      const stored = out?.[i]?.kind === 'stored';
      for (const s of w.staged) {
        this.#waiting.delete(s.env.cursor);
        if (!stored) this.#tails.remove(s.key, s.env.cursor);
      }
    });
  }

  /** The envelopes of a device still waiting for their group, after `after` (cursor order). */
  #waitingFor(key: string, after: number): QueuedEnvelope[] {
    const out: QueuedEnvelope[] = [];
    for (const w of this.#waiting.values()) if (w.key === key && !w.cancelled && w.env.cursor > after) out.push(w.env);
    return out;
  }

  /** An ack of an envelope whose group has not committed: it is never written. */
  #cancel(w: Waiting, req: DeleteRequest): DeleteResult {
    const e = w.env;
    const same = e.destination.account === req.account && e.destination.device === req.device && Buffer.compare(e.guid, req.guid) === 0;
    if (w.cancelled || !same) return { kind: 'notFound' };
    w.cancelled = true;
    this.#tails.remove(w.key, e.cursor);
    return { kind: 'deleted', type: e.type, source: e.source, clientTimestamp: e.clientTimestamp };
  }

  /**
   * One transaction for a group of sends and acks, in order. Acks are settled
   * at the commit; the group then waits for a flush when it holds a send, and
   * resolves (answering the sends) once that flush has finished.
   */
  async #commitGroup(writes: readonly Write[], settle: (index: number, result: WriteResult) => void): Promise<WriteResult[]> {
    let out: WriteResult[];
    let sends = 0;
    try {
      if (this.#wal?.failed) throw this.#wal.failed;
      this.#checkExternalWrites();
      this.#pendingDeletes = [];
      out = this.#db.transaction((): WriteResult[] =>
        writes.map((w) => {
          if (w.kind === 'ack') return this.#deleteOne(w.request);
          sends++;
          return this.#enqueueOne(w.batch, w.staged);
        }),
      )();
      for (const d of this.#pendingDeletes) this.#tails.remove(d.key, d.cursor);
      this.#settleStaged(writes, out);
    } catch (err) {
      this.#settleStaged(writes, null);
      throw err;
    } finally {
      this.#pendingDeletes = [];
    }
    if (sends === 0) return out;
    if (sends < writes.length) writes.forEach((w, i) => w.kind === 'ack' && settle(i, out[i] as WriteResult));
    await this.#flushed();
    return out;
  }

  /** One batch inside the caller's transaction. A key seen before (also earlier in the same group) is a duplicate. */
  #enqueueOne(batch: EnqueueBatch, staged: readonly Waiting[]): EnqueueResult {
    const k = batch.idempotencyKey;
    if (k) {
      const res = this.#s.insertKey.run([k.timestamp, blob(k.messageId), k.destination, k.senderAccount, k.senderDevice, batch.now]);
      if (res.changes === 0) return { kind: 'duplicate' };
    }
    for (const { env: e, cancelled } of staged) {
      // Acknowledged while it waited: delivered, nothing to keep.
      if (cancelled) continue;
      this.#s.insertEnvelope.run([
        e.cursor,
        blob(e.guid),
        e.destination.account,
        e.destination.device,
        e.type,
        e.source?.account ?? null,
        e.source?.device ?? null,
        e.clientTimestamp,
        e.serverTimestamp,
        blob(e.content),
        e.urgent ? 1 : 0,
      ]);
    }
    return { kind: 'stored' };
  }

  async fetchQueue(account: AccountId, device: DeviceId, after: number, limit: number): Promise<QueuedEnvelope[]> {
    this.#checkExternalWrites();
    const key = QueueTails.key(account, device);
    const cached = this.#tails.read(key, after, limit);
    if (cached) return cached;
    const rows = this.#selectQueue(account, device, after, limit);
    if (rows.length === limit) return rows;
    // The end of what has committed: the envelopes still waiting for their group come after it (larger cursors).
    const all = rows.concat(this.#waitingFor(key, rows.at(-1)?.cursor ?? after));
    this.#tails.complete(key, after, all);
    return all.slice(0, limit);
  }

  #selectQueue(account: AccountId, device: DeviceId, after: number, limit: number): QueuedEnvelope[] {
    return (this.#s.fetch.all([account, device, after, limit]) as Row[]).map((r) => {
      const sa = r.source_account;
      return {
        cursor: numOf(r, 'seq'),
        guid: bytesOf(r, 'guid'),
        type: numOf(r, 'type') as EnvelopeType,
        source: typeof sa === 'string' ? { account: sa as AccountId, device: numOf(r, 'source_device') as DeviceId } : null,
        destination: { account: strOf(r, 'dest_account') as AccountId, device: numOf(r, 'dest_device') as DeviceId },
        clientTimestamp: numOf(r, 'client_ts'),
        serverTimestamp: numOf(r, 'server_ts'),
        // The driver binds an empty blob as NULL (delivery receipts have no content).
        content: r.content === null ? new Uint8Array(0) : bytesOf(r, 'content'),
        urgent: numOf(r, 'urgent') === 1,
      };
    });
  }

  /** Joins the current group commit (with the sends); resolves once the group's transaction has committed. */
  async deleteEnvelope(request: DeleteRequest): Promise<DeleteResult> {
    const waiting = this.#waiting.get(request.cursor);
    if (waiting) return this.#cancel(waiting, request);
    const r = await this.#writes.submit({ kind: 'ack', request });
    if (r.kind === 'deleted' || r.kind === 'notFound') return r;
    throw new Error('an ack was answered with a send result');
  }

  async deleteEnvelopes(requests: readonly DeleteRequest[]): Promise<DeleteResult[]> {
    // No flush of its own (see the file comment): it reaches the disk with the next durable write.
    const results: Array<DeleteResult | undefined> = requests.map((r) => {
      const waiting = this.#waiting.get(r.cursor);
      return waiting ? this.#cancel(waiting, r) : undefined;
    });
    const rest = requests.filter((_, i) => results[i] === undefined);
    const out = rest.length
      ? await this.#commitGroup(
          rest.map((request): Write => ({ kind: 'ack', request })),
          () => undefined,
        )
      : [];
    let j = 0;
    return results.map((r) => r ?? (out[j++] as DeleteResult));
  }

  /** Deletes by queue position (the rowid); the device and guid must match too. */
  #deleteOne(req: DeleteRequest): DeleteResult {
    const r = this.#s.deleteEnvelope.get([req.cursor, req.account, req.device, blob(req.guid)]) as Row | undefined;
    if (!r) return { kind: 'notFound' };
    this.#pendingDeletes.push({ key: QueueTails.key(req.account, req.device), cursor: req.cursor });
    const sa = r.source_account;
    return {
      kind: 'deleted',
      type: numOf(r, 'type') as EnvelopeType,
      source: typeof sa === 'string' ? { account: sa as AccountId, device: numOf(r, 'source_device') as DeviceId } : null,
      clientTimestamp: numOf(r, 'client_ts'),
    };
  }

  async purge(before: number): Promise<{ envelopes: number; idempotencyKeys: number }> {
    this.#tails.clear();
    return this.#durable(
      this.#db.transaction(() => ({
        envelopes: this.#s.purgeEnvelopes.run([before]).changes,
        idempotencyKeys: this.#s.purgeKeys.run([before]).changes,
      })),
    );
  }

  async addDevice(req: NewDevice): Promise<AddDeviceResult> {
    this.#deviceLists.delete(req.account);
    this.#writeTouches();
    // The new device's queue starts empty (whatever a removed device of the same id left is deleted).
    for (let id = 2; id <= 127; id++) this.#tails.drop(QueueTails.key(req.account, id as DeviceId));
    return this.#durable(
      this.#db.transaction((): AddDeviceResult => {
        if (!this.#s.account.get([req.account])) return { kind: 'notFound' };
        const taken = new Set((this.#s.devices.all([req.account]) as Row[]).map((r) => numOf(r, 'device_id')));
        if (taken.size >= req.maxDevices) return { kind: 'tooMany' };
        let id = 2;
        while (taken.has(id)) id++;
        if (id > 127) return { kind: 'tooMany' };
        // Whatever a removed device of this id left behind (an envelope committed while it was removed) is not the new device's.
        this.#s.deleteDeviceEc.run([req.account, id]);
        this.#s.deleteDeviceKyber.run([req.account, id]);
        this.#s.deleteDeviceQueue.run([req.account, id]);
        this.#s.insertDevice.run({
          a: req.account,
          d: id,
          reg: req.registrationId,
          salt: blob(req.passwordSalt),
          hash: blob(req.passwordHash),
          sid: req.signedPreKey.keyId,
          skey: blob(req.signedPreKey.publicKey),
          ssig: blob(req.signedPreKey.signature),
          kid: req.kyberLastResortKey.keyId,
          kkey: blob(req.kyberLastResortKey.publicKey),
          ksig: blob(req.kyberLastResortKey.signature),
          now: req.createdAt,
        });
        this.#s.touchDevice.run([req.createdAt, req.account, id]);
        return { kind: 'added', deviceId: id as DeviceId };
      }),
    );
  }

  async removeDevice(account: AccountId, device: DeviceId): Promise<boolean> {
    this.#deviceLists.delete(account);
    this.#writeTouches();
    this.#tails.drop(QueueTails.key(account, device));
    return this.#durable(
      this.#db.transaction((): boolean => {
        const gone = this.#s.deleteDevice.run([account, device]).changes > 0;
        this.#s.deleteDeviceEc.run([account, device]);
        this.#s.deleteDeviceKyber.run([account, device]);
        this.#s.deleteDeviceQueue.run([account, device]);
        return gone;
      }),
    );
  }

  async deviceDetails(account: AccountId): Promise<DeviceDetails[]> {
    this.#writeTouches();
    return (this.#s.deviceDetails.all([account]) as Row[]).map((r) => ({
      deviceId: numOf(r, 'device_id') as DeviceId,
      registrationId: numOf(r, 'registration_id'),
      createdAt: numOf(r, 'created_at'),
      lastSeen: numOf(r, 'last_seen'),
    }));
  }

  /**
   * Remembered now, written with the others within TOUCH_FLUSH_MS (and before
   * anything reads last-seen times). Not flushed to disk on its own: a crash
   * can only make a device look idle since its previous connect.
   */
  async touchDevice(account: AccountId, device: DeviceId, now: number): Promise<void> {
    if (this.#closed) throw new Error('store closed');
    this.#touches.set(QueueTails.key(account, device), { account, device, now });
    if (!this.#touchTimer) {
      this.#touchTimer = setTimeout(() => {
        try {
          this.#writeTouches();
        } catch {
          // Last-seen is advisory (idle expiry); a failed write must not take the relay down.
        }
      }, TOUCH_FLUSH_MS);
      this.#touchTimer.unref();
    }
  }

  #writeTouches(): void {
    if (this.#touchTimer) clearTimeout(this.#touchTimer);
    this.#touchTimer = null;
    if (this.#touches.size === 0 || this.#closed) return;
    const touches = [...this.#touches.values()];
    this.#touches.clear();
    this.#db.transaction(() => {
      for (const t of touches) this.#s.touchDevice.run([t.now, t.account, t.device]);
    })();
  }

  async idleDevices(before: number, limit: number): Promise<Array<{ account: AccountId; device: DeviceId }>> {
    this.#writeTouches();
    return (this.#s.idleDevices.all([before, limit]) as Row[]).map((r) => ({
      account: strOf(r, 'account_id') as AccountId,
      device: numOf(r, 'device_id') as DeviceId,
    }));
  }

  async putProvisioningCode(code: ProvisioningCode): Promise<void> {
    await this.#durable(() => this.#s.putCode.run([blob(code.codeHash), code.account, code.expiresAt]));
  }

  async takeProvisioningCode(codeHash: Uint8Array, now: number): Promise<AccountId | null> {
    return this.#durable(
      this.#db.transaction((): AccountId | null => {
        const row = this.#s.takeCode.get([blob(codeHash)]) as Row | undefined;
        this.#s.purgeCodes.run([now]);
        if (!row || numOf(row, 'expires_at') <= now) return null;
        return strOf(row, 'account_id') as AccountId;
      }),
    );
  }

  async ping(): Promise<void> {
    if (this.#closed) throw new Error('store closed');
    if (this.#wal?.failed) throw this.#wal.failed;
    this.#s.ping.get();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#writeTouches();
    this.#closed = true;
    await this.#writes.drain();
    // Acknowledgement deletes not flushed yet reach the disk now (a clean stop leaves nothing to redeliver).
    await this.#flushed().catch(() => undefined);
    await this.#wal?.close();
    const worker = this.#checkpointer;
    if (worker) {
      const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
      // Keep the process alive until the worker has closed its connection (it is unref'd otherwise).
      worker.ref();
      worker.postMessage('close');
      await exited;
    }
    this.#db.close();
  }
}
