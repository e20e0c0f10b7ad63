/**
 * The embedded Store: one SQLite file (`<dataDir>/relay.db`) in WAL mode with
 * synchronous=FULL, so a commit that returned survives a crash of the process
 * or the machine. The driver is synchronous, so every method runs to
 * completion without interleaving; multi-step operations still run inside a
 * transaction so they are all-or-nothing.
 *
 * Group commit: `enqueue` and `deleteEnvelope` go through batchers (see
 * batching.ts). Sends that arrive in the same turn of the event loop share one
 * transaction and therefore one fsync, and each caller is answered only after
 * that fsync. Acknowledgement deletes are grouped the same way but committed
 * with synchronous=NORMAL: their WAL frames reach the disk with the next
 * fsync'd commit (or checkpoint) instead of paying for their own. A machine
 * crash before that can undo a delete; the envelope is then pushed again and
 * the client drops it as a repeat, so nothing acknowledged to anyone is lost.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from '@signalapp/sqlcipher';
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
import { Batcher, DELETE_GROUP, ENQUEUE_GROUP } from '../../batching.js';
import { plainBytes } from '../../bytes.js';

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

/** Apply pending migrations; returns the resulting schema version. */
export function migrate(db: Database): number {
  db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
  const row = db.prepare('SELECT MAX(version) AS v FROM schema_version').get() as Row | undefined;
  let version = typeof row?.v === 'number' ? row.v : 0;
  for (; version < MIGRATIONS.length; version++) {
    const sql = MIGRATIONS[version] as string;
    const next = version + 1;
    db.transaction(() => {
      db.exec(sql);
      db.prepare('INSERT INTO schema_version (version) VALUES (?)').run([next]);
    })();
  }
  return version;
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
  readonly #enqueues = new Batcher<EnqueueBatch, EnqueueResult>({
    ...ENQUEUE_GROUP,
    weight: (b) => b.envelopes.length,
    run: (batches) => this.enqueueMany(batches),
  });
  readonly #deletes = new Batcher<DeleteRequest, DeleteResult>({
    ...DELETE_GROUP,
    run: (requests) => this.deleteEnvelopes(requests),
  });

  constructor(db: Database) {
    this.#db = db;
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.pragma('foreign_keys = ON');
    db.pragma('busy_timeout = 5000');
    migrate(db);
    const p = (sql: string) => db.prepare(sql);
    this.#s = {
      insertAccount: p('INSERT INTO accounts (account_id, username, identity_key, created_at) VALUES ($id, $username, $ik, $now)'),
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
      setSigned: p('UPDATE devices SET signed_key_id = ?, signed_key = ?, signed_key_sig = ? WHERE account_id = ? AND device_id = ?'),
      setLastResort: p('UPDATE devices SET kyber_lr_id = ?, kyber_lr_key = ?, kyber_lr_sig = ? WHERE account_id = ? AND device_id = ?'),
      putEc: p('INSERT OR REPLACE INTO ec_prekeys (account_id, device_id, key_id, public_key) VALUES (?, ?, ?, ?)'),
      putKyber: p('INSERT OR REPLACE INTO kyber_prekeys (account_id, device_id, key_id, public_key, signature) VALUES (?, ?, ?, ?, ?)'),
      countEc: p('SELECT COUNT(*) AS n FROM ec_prekeys WHERE account_id = ? AND device_id = ?'),
      countKyber: p('SELECT COUNT(*) AS n FROM kyber_prekeys WHERE account_id = ? AND device_id = ?'),
      takeEc: p(`DELETE FROM ec_prekeys WHERE rowid = (SELECT rowid FROM ec_prekeys WHERE account_id = ? AND device_id = ?
          ORDER BY key_id LIMIT 1) RETURNING key_id, public_key`),
      takeKyber: p(`DELETE FROM kyber_prekeys WHERE rowid = (SELECT rowid FROM kyber_prekeys WHERE account_id = ? AND device_id = ?
          ORDER BY key_id LIMIT 1) RETURNING key_id, public_key, signature`),
      insertSent: p(`INSERT INTO sent_messages (sender_account, sender_device, destination, message_id, created_at)
          VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`),
      insertEnvelope: p(`INSERT INTO envelopes (guid, dest_account, dest_device, type, source_account, source_device,
          client_ts, server_ts, content, urgent) VALUES ($guid, $da, $dd, $type, $sa, $sd, $cts, $sts, $content, $urgent)`),
      fetch: p(`SELECT seq, guid, dest_account, dest_device, type, source_account, source_device, client_ts, server_ts,
          content, urgent FROM envelopes WHERE dest_account = ? AND dest_device = ? AND seq > ? ORDER BY seq LIMIT ?`),
      deleteEnvelope: p(`DELETE FROM envelopes WHERE dest_account = ? AND dest_device = ? AND guid = ?
          RETURNING type, source_account, source_device, client_ts`),
      purgeEnvelopes: p('DELETE FROM envelopes WHERE server_ts < ?'),
      purgeSent: p('DELETE FROM sent_messages WHERE created_at < ?'),
      deviceDetails: p('SELECT device_id, registration_id, created_at, MAX(last_seen, created_at) AS last_seen FROM devices WHERE account_id = ? ORDER BY device_id'),
      touchDevice: p('UPDATE devices SET last_seen = ? WHERE account_id = ? AND device_id = ?'),
      idleDevices: p('SELECT account_id, device_id FROM devices WHERE device_id > 1 AND MAX(last_seen, created_at) < ? ORDER BY last_seen LIMIT ?'),
      deleteDevice: p('DELETE FROM devices WHERE account_id = ? AND device_id = ?'),
      deleteDeviceEc: p('DELETE FROM ec_prekeys WHERE account_id = ? AND device_id = ?'),
      deleteDeviceKyber: p('DELETE FROM kyber_prekeys WHERE account_id = ? AND device_id = ?'),
      deleteDeviceQueue: p('DELETE FROM envelopes WHERE dest_account = ? AND dest_device = ?'),
      putCode: p('INSERT INTO provisioning_codes (code_hash, account_id, expires_at) VALUES (?, ?, ?)'),
      takeCode: p('DELETE FROM provisioning_codes WHERE code_hash = ? RETURNING account_id, expires_at'),
      purgeCodes: p('DELETE FROM provisioning_codes WHERE expires_at <= ?'),
      ping: p('SELECT 1 AS x'),
      syncNormal: p('PRAGMA synchronous = NORMAL'),
      syncFull: p('PRAGMA synchronous = FULL'),
    };
  }

  async createAccount(a: NewAccount): Promise<{ kind: 'created' } | { kind: 'usernameTaken' }> {
    const username = normalizeUsername(a.username);
    return this.#db.transaction(() => {
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
    })();
  }

  async getDeviceCredentials(account: AccountId, device: DeviceId): Promise<DeviceCredentials | null> {
    const row = this.#s.credentials.get([account, device]) as Row | undefined;
    return row ? { passwordSalt: bytesOf(row, 'password_salt'), passwordHash: bytesOf(row, 'password_hash') } : null;
  }

  async getAccount(account: AccountId): Promise<AccountRecord | null> {
    const row = this.#s.account.get([account]) as Row | undefined;
    if (!row) return null;
    return {
      accountId: strOf(row, 'account_id') as AccountId,
      username: strOf(row, 'username'),
      identityKey: bytesOf(row, 'identity_key'),
      accessKey: row.access_key === null || row.access_key === undefined ? null : bytesOf(row, 'access_key'),
    };
  }

  async setAccessKey(account: AccountId, accessKey: Uint8Array | null): Promise<void> {
    this.#s.setAccessKey.run([accessKey ? blob(accessKey) : null, account]);
  }

  async lookupUsername(username: string): Promise<AccountId | null> {
    const row = this.#s.lookup.get([normalizeUsername(username)]) as Row | undefined;
    return row ? (strOf(row, 'account_id') as AccountId) : null;
  }

  async listDevices(account: AccountId): Promise<DeviceSummary[]> {
    return (this.#s.devices.all([account]) as Row[]).map((r) => ({
      deviceId: numOf(r, 'device_id') as DeviceId,
      registrationId: numOf(r, 'registration_id'),
    }));
  }

  async storeKeys(account: AccountId, device: DeviceId, keys: KeyUpload): Promise<void> {
    this.#db.transaction(() => {
      const s = keys.signedPreKey;
      if (s) this.#s.setSigned.run([s.keyId, blob(s.publicKey), blob(s.signature), account, device]);
      const k = keys.kyberLastResortKey;
      if (k) this.#s.setLastResort.run([k.keyId, blob(k.publicKey), blob(k.signature), account, device]);
      for (const pk of keys.preKeys) this.#s.putEc.run([account, device, pk.keyId, blob(pk.publicKey)]);
      for (const kk of keys.kyberPreKeys)
        this.#s.putKyber.run([account, device, kk.keyId, blob(kk.publicKey), blob(kk.signature)]);
    })();
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
    return this.#db.transaction((): ClaimResult => {
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
          signedPreKey: { keyId: numOf(r, 'signed_key_id'), publicKey: bytesOf(r, 'signed_key'), signature: bytesOf(r, 'signed_key_sig') },
          kyberPreKey,
          remaining: this.#counts(account, id),
        };
      });
      return { kind: 'bundle', identityKey: bytesOf(acct, 'identity_key'), devices };
    })();
  }

  /** Joins the current group commit; resolves after the group's transaction is fsync'd. */
  async enqueue(batch: EnqueueBatch): Promise<EnqueueResult> {
    return this.#enqueues.submit(batch);
  }

  async enqueueMany(batches: readonly EnqueueBatch[]): Promise<EnqueueResult[]> {
    return this.#db.transaction((): EnqueueResult[] => batches.map((b) => this.#enqueueOne(b)))();
  }

  /** One batch inside the caller's transaction. A key seen before (also earlier in the same group) is a duplicate. */
  #enqueueOne(batch: EnqueueBatch): EnqueueResult {
    const k = batch.idempotencyKey;
    if (k) {
      const res = this.#s.insertSent.run([k.senderAccount, k.senderDevice, k.destination, blob(k.messageId), batch.now]);
      if (res.changes === 0) return { kind: 'duplicate' };
    }
    for (const e of batch.envelopes) {
      this.#s.insertEnvelope.run({
        guid: blob(e.guid),
        da: e.destination.account,
        dd: e.destination.device,
        type: e.type,
        sa: e.source?.account ?? null,
        sd: e.source?.device ?? null,
        cts: e.clientTimestamp,
        sts: e.serverTimestamp,
        content: blob(e.content),
        urgent: e.urgent ? 1 : 0,
      });
    }
    return { kind: 'stored' };
  }

  async fetchQueue(account: AccountId, device: DeviceId, after: number, limit: number): Promise<QueuedEnvelope[]> {
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

  /** Joins the current group of acknowledgement deletes. */
  async deleteEnvelope(account: AccountId, device: DeviceId, guid: Uint8Array): Promise<DeleteResult> {
    return this.#deletes.submit({ account, device, guid });
  }

  async deleteEnvelopes(requests: readonly DeleteRequest[]): Promise<DeleteResult[]> {
    // No fsync of its own (see the file comment); FULL again before anything else commits.
    this.#s.syncNormal.run();
    try {
      return this.#db.transaction((): DeleteResult[] => requests.map((r) => this.#deleteOne(r)))();
    } finally {
      this.#s.syncFull.run();
    }
  }

  #deleteOne(req: DeleteRequest): DeleteResult {
    const r = this.#s.deleteEnvelope.get([req.account, req.device, blob(req.guid)]) as Row | undefined;
    if (!r) return { kind: 'notFound' };
    const sa = r.source_account;
    return {
      kind: 'deleted',
      type: numOf(r, 'type') as EnvelopeType,
      source: typeof sa === 'string' ? { account: sa as AccountId, device: numOf(r, 'source_device') as DeviceId } : null,
      clientTimestamp: numOf(r, 'client_ts'),
    };
  }

  async purge(before: number): Promise<{ envelopes: number; idempotencyKeys: number }> {
    return this.#db.transaction(() => ({
      envelopes: this.#s.purgeEnvelopes.run([before]).changes,
      idempotencyKeys: this.#s.purgeSent.run([before]).changes,
    }))();
  }

  async addDevice(req: NewDevice): Promise<AddDeviceResult> {
    return this.#db.transaction((): AddDeviceResult => {
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
    })();
  }

  async removeDevice(account: AccountId, device: DeviceId): Promise<boolean> {
    return this.#db.transaction((): boolean => {
      const gone = this.#s.deleteDevice.run([account, device]).changes > 0;
      this.#s.deleteDeviceEc.run([account, device]);
      this.#s.deleteDeviceKyber.run([account, device]);
      this.#s.deleteDeviceQueue.run([account, device]);
      return gone;
    })();
  }

  async deviceDetails(account: AccountId): Promise<DeviceDetails[]> {
    return (this.#s.deviceDetails.all([account]) as Row[]).map((r) => ({
      deviceId: numOf(r, 'device_id') as DeviceId,
      registrationId: numOf(r, 'registration_id'),
      createdAt: numOf(r, 'created_at'),
      lastSeen: numOf(r, 'last_seen'),
    }));
  }

  async touchDevice(account: AccountId, device: DeviceId, now: number): Promise<void> {
    this.#s.touchDevice.run([now, account, device]);
  }

  async idleDevices(before: number, limit: number): Promise<Array<{ account: AccountId; device: DeviceId }>> {
    return (this.#s.idleDevices.all([before, limit]) as Row[]).map((r) => ({
      account: strOf(r, 'account_id') as AccountId,
      device: numOf(r, 'device_id') as DeviceId,
    }));
  }

  async putProvisioningCode(code: ProvisioningCode): Promise<void> {
    this.#s.putCode.run([blob(code.codeHash), code.account, code.expiresAt]);
  }

  async takeProvisioningCode(codeHash: Uint8Array, now: number): Promise<AccountId | null> {
    return this.#db.transaction((): AccountId | null => {
      const row = this.#s.takeCode.get([blob(codeHash)]) as Row | undefined;
      this.#s.purgeCodes.run([now]);
      if (!row || numOf(row, 'expires_at') <= now) return null;
      return strOf(row, 'account_id') as AccountId;
    })();
  }

  async ping(): Promise<void> {
    if (this.#closed) throw new Error('store closed');
    this.#s.ping.get();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all([this.#enqueues.drain(), this.#deletes.drain()]);
    this.#db.close();
  }
}
