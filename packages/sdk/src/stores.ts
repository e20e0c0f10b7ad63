/**
 * libsignal's store interfaces over the profile database.
 *
 * Writes do not go to the database directly: they collect in a pending set
 * (which reads see first) until `commit()` writes them all in one SQLite
 * transaction, together with whatever else the caller adds (the plaintext
 * message of a decrypt, say). So a decrypt's ratchet advance and the message
 * it produced are durable together or not at all. `rollback()` forgets them.
 * Callers serialize all libsignal operations, so one pending set suffices.
 *
 * A second layer lets the receive pipeline commit many messages in one
 * transaction: `stage()` moves a finished operation's writes (and the SQL it
 * would have run in `commit`) to a staged set, which reads also see. The next
 * `commit()` writes staged and current together; `rollback()` drops only the
 * current operation, so a failed decrypt never loses another message's staged
 * state. Staged work is not durable until that commit; `onFlush` tells the
 * receive pipeline when it was written (ok) or lost with a failed commit.
 */
import {
  Direction,
  IdentityChange,
  IdentityKeyPair,
  IdentityKeyStore,
  KyberPreKeyRecord,
  KyberPreKeyStore,
  PreKeyRecord,
  PreKeyStore,
  PrivateKey,
  type ProtocolAddress,
  PublicKey,
  SenderKeyRecord,
  SenderKeyStore,
  SessionRecord,
  SessionStore,
  SignedPreKeyRecord,
  SignedPreKeyStore,
  type Uuid,
} from '@signalapp/libsignal-client';
import type { Db } from './db.js';

/** Trust state of a remote account's identity key. */
export const IdentityStatus = {
  /** Trusted on first use, never verified. */
  Default: 0,
  /** The user compared safety numbers. */
  Verified: 1,
  /** The key changed after the user verified it: sending is refused until re-verified. */
  Unverified: 2,
} as const;
export type IdentityStatus = (typeof IdentityStatus)[keyof typeof IdentityStatus];

export interface IdentityRow {
  key: Uint8Array;
  status: IdentityStatus;
}

interface Pending {
  value: unknown;
  apply: () => void;
}

export function ab(u: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(u);
}

/**
 * The id of a received message: the relay's timestamp (12 hex digits) and
 * then its guid. Ids of a burst grow with the relay's queue order, so their
 * rows append to the messages id index instead of each landing on a random
 * encrypted page (ids used to be the random guid alone). The same envelope,
 * redelivered, gets the same id.
 */
export function receivedMessageId(env: { serverTimestamp: number; serverGuid: Uint8Array }): string {
  const guid = Buffer.from(env.serverGuid.buffer, env.serverGuid.byteOffset, env.serverGuid.byteLength).toString('hex');
  return env.serverTimestamp.toString(16).padStart(12, '0') + guid;
}
function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0;
}
const CACHE_LIMIT = 4096;

function toBytes(v: unknown): Uint8Array<ArrayBuffer> {
  if (!(v instanceof Uint8Array)) throw new TypeError('expected a blob');
  return ab(v);
}

export class Stores {
  private readonly pending = new Map<string, Pending>();
  private pendingEvents: Array<() => void> = [];
  private readonly staged = new Map<string, Pending>();
  private stagedExtras: Array<() => void> = [];
  private stagedEvents: Array<() => void> = [];
  private stagedOps = 0;
  private flushWaiters: Array<{ resolve: () => void; reject: (err: unknown) => void }> = [];
  /** Called after every commit that wrote staged work (true) or lost it (false). */
  onFlush: ((ok: boolean) => void) | null = null;
  /**
   * Committed values of the rows read on every message (sessions, identities),
   * so a burst does not load and parse them again each time. Only this class
   * writes those tables and the profile lock keeps other processes out, so the
   * cache cannot go stale.
   */
  private readonly cache = new Map<string, unknown>();

  readonly session: SqlSessionStore;
  readonly identity: SqlIdentityStore;
  readonly preKey: SqlPreKeyStore;
  readonly signedPreKey: SqlSignedPreKeyStore;
  readonly kyberPreKey: SqlKyberPreKeyStore;
  readonly senderKey: SqlSenderKeyStore;

  constructor(
    readonly db: Db,
    local: { identityKeyPair: IdentityKeyPair; registrationId: number },
    onIdentityChange: (accountId: string) => void,
    readonly now: () => number = Date.now,
  ) {
    this.session = new SqlSessionStore(this);
    this.identity = new SqlIdentityStore(this, local.identityKeyPair, local.registrationId, onIdentityChange);
    this.preKey = new SqlPreKeyStore(this);
    this.signedPreKey = new SqlSignedPreKeyStore(this);
    this.kyberPreKey = new SqlKyberPreKeyStore(this);
    this.senderKey = new SqlSenderKeyStore(this);
  }

  /** @internal */
  read<T>(key: string, load: () => T): T {
    const p = this.pending.get(key) ?? this.staged.get(key);
    return p ? (p.value as T) : load();
  }
  /** @internal Like `read`, and keeps the committed value in memory (see `cache`). */
  readCached<T>(key: string, load: () => T): T {
    const p = this.pending.get(key) ?? this.staged.get(key);
    if (p) return p.value as T;
    if (this.cache.has(key)) return this.cache.get(key) as T;
    const v = load();
    if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
    this.cache.set(key, v);
    return v;
  }
  /** @internal */
  write(key: string, value: unknown, apply: () => void): void {
    // Deleting and re-inserting keeps insertion order equal to write order.
    this.pending.delete(key);
    this.pending.set(key, { value, apply });
  }
  /** @internal */
  pendingKeys(prefix: string): Array<[string, unknown]> {
    const all = new Map([...this.staged, ...this.pending]);
    return [...all.entries()].filter(([k]) => k.startsWith(prefix)).map(([k, p]) => [k, p.value]);
  }
  /** @internal True the first time `key` is passed during one commit (for writing a row once per transaction). */
  oncePerCommit(key: string): boolean {
    if (this.commitOnce.has(key)) return false;
    this.commitOnce.add(key);
    return true;
  }
  private readonly commitOnce = new Set<string>();
  /** @internal True when a staged write under `prefix` creates a row the database may not have yet. */
  stagesNewRow(prefix: string): boolean {
    for (const [k, w] of this.staged) if (k.startsWith(prefix) && w.value !== null && (this.cache.get(k) ?? null) === null) return true;
    return false;
  }
  /** @internal Runs after a successful commit. */
  afterCommit(fn: () => void): void {
    this.pendingEvents.push(fn);
  }

  get dirty(): boolean {
    return this.pending.size > 0;
  }

  /** How many staged operations wait for the next commit. */
  get stagedCount(): number {
    return this.stagedOps;
  }

  /**
   * Ends the current operation without writing it yet: its store writes and
   * `extra` (SQL for the same transaction) run in the next `commit()`, after
   * those staged before it. Reads see the staged writes meanwhile.
   */
  stage(extra?: () => void): void {
    for (const [k, w] of this.pending) {
      this.staged.delete(k);
      this.staged.set(k, w);
    }
    if (extra) this.stagedExtras.push(extra);
    this.stagedEvents.push(...this.pendingEvents);
    this.stagedOps++;
    this.pending.clear();
    this.pendingEvents = [];
  }

  /**
   * Resolves when the staged operations are written (by whichever `commit()`
   * comes next), rejects if that commit fails and loses them. Only meaningful
   * while something is staged.
   */
  whenFlushed(): Promise<void> {
    return new Promise((resolve, reject) => this.flushWaiters.push({ resolve, reject }));
  }

  /**
   * Writes every staged operation, then `extra` (if any) and every pending
   * store change, in one transaction. If anything throws, nothing is written
   * and both the pending and the staged sets are dropped. Deferred events run
   * only after the transaction committed.
   */
  commit<T>(extra?: () => T): T | undefined {
    let result: T | undefined;
    const flushed = this.stagedOps > 0;
    this.commitOnce.clear();
    try {
      this.db.transaction(() => {
        for (const e of this.stagedExtras) e();
        result = extra?.();
        // `extra` may itself queue store writes; they land in this transaction too.
        // A key written again by the current operation is applied once, with its newest value.
        for (const [k, w] of this.staged) if (!this.pending.has(k)) w.apply();
        for (const w of this.pending.values()) w.apply();
      })();
    } catch (err) {
      const waiters = this.flushWaiters;
      this.clearStaged();
      this.rollback();
      if (flushed) this.onFlush?.(false);
      for (const w of waiters) w.reject(err);
      throw err;
    }
    for (const m of [this.staged, this.pending])
      for (const [k, w] of m) if (this.cache.has(k)) this.cache.set(k, w.value);
    const events = [...this.stagedEvents, ...this.pendingEvents];
    const waiters = this.flushWaiters;
    this.clearStaged();
    this.pending.clear();
    this.pendingEvents = [];
    if (flushed) this.onFlush?.(true);
    for (const w of waiters) w.resolve();
    for (const e of events) e();
    return result;
  }

  /** Forgets the current operation's writes; staged operations are kept. */
  rollback(): void {
    this.pending.clear();
    this.pendingEvents = [];
  }

  private clearStaged(): void {
    this.flushWaiters = [];
    this.staged.clear();
    this.stagedExtras = [];
    this.stagedEvents = [];
    this.stagedOps = 0;
  }
}

// ---------------------------------------------------------------- sessions

export class SqlSessionStore extends SessionStore {
  constructor(private readonly s: Stores) {
    super();
  }
  // Records are kept as objects (never mutated once stored) and serialized only
  // when written, so a burst from one device parses and serializes its session once.
  private load(account: string, device: number): SessionRecord | null {
    return this.s.readCached(`s:${account}:${device}`, () => {
      const row = this.s.db.prepare('SELECT record FROM sessions WHERE account = ? AND device = ?').get([account, device]);
      return row ? SessionRecord.deserialize(toBytes(row.record)) : null;
    });
  }
  private put(account: string, device: number, record: SessionRecord | null): void {
    this.s.write(`s:${account}:${device}`, record, () => {
      if (record === null) this.s.db.prepare('DELETE FROM sessions WHERE account = ? AND device = ?').run([account, device]);
      else
        this.s.db
          .prepare('INSERT INTO sessions (account, device, record) VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET record = excluded.record')
          .run([account, device, record.serialize()]);
    });
  }

  override async saveSession(address: ProtocolAddress, record: SessionRecord): Promise<void> {
    this.put(address.name(), address.deviceId(), record);
  }
  override async getSession(address: ProtocolAddress): Promise<SessionRecord | null> {
    return this.getSync(address.name(), address.deviceId());
  }
  override async getExistingSessions(addresses: ProtocolAddress[]): Promise<SessionRecord[]> {
    return addresses.map((a) => {
      const r = this.getSync(a.name(), a.deviceId());
      if (!r) throw new Error('no session for a requested address');
      return r;
    });
  }

  /** The stored record; callers must not mutate it (copy it first, as `archive` does). */
  getSync(account: string, device: number): SessionRecord | null {
    return this.load(account, device);
  }
  delete(account: string, device: number): void {
    this.put(account, device, null);
  }
  /** Keeps the record but moves its current state to the archive, so the next send starts a new session. */
  archive(account: string, device: number): void {
    const stored = this.getSync(account, device);
    if (!stored) return;
    const r = SessionRecord.deserialize(stored.serialize());
    r.archiveCurrentState();
    this.put(account, device, r);
  }
  /** True when a received message created a session with `account` that is staged, not yet in the table. */
  stagedNew(account: string): boolean {
    return this.s.stagesNewRow(`s:${account}:`);
  }
  /** Devices of `account` with a session usable for sending. */
  activeDevices(account: string): number[] {
    const devices = new Set<number>(
      this.s.db
        .prepare('SELECT device FROM sessions WHERE account = ?', { pluck: true })
        .all([account])
        .map((d) => Number(d)),
    );
    for (const [k] of this.s.pendingKeys(`s:${account}:`)) devices.add(Number(k.split(':')[2]));
    return [...devices].filter((d) => this.getSync(account, d)?.hasCurrentState(new Date(this.s.now())) === true).sort((a, b) => a - b);
  }
}

// ---------------------------------------------------------------- identities

export class SqlIdentityStore extends IdentityKeyStore {
  constructor(
    private readonly s: Stores,
    private readonly pair: IdentityKeyPair,
    private readonly registrationId: number,
    private readonly onChange: (accountId: string) => void,
  ) {
    super();
  }

  override async getIdentityKey(): Promise<PrivateKey> {
    return this.pair.privateKey;
  }
  override async getIdentityKeyPair(): Promise<IdentityKeyPair> {
    return this.pair;
  }
  override async getLocalRegistrationId(): Promise<number> {
    return this.registrationId;
  }

  row(account: string): IdentityRow | null {
    return this.s.readCached(`i:${account}`, () => {
      const r = this.s.db.prepare('SELECT key, status FROM identities WHERE account = ?').get([account]);
      return r ? { key: toBytes(r.key), status: Number(r.status) as IdentityStatus } : null;
    });
  }
  setRow(account: string, row: IdentityRow): void {
    const key = ab(row.key);
    this.s.write(`i:${account}`, { key, status: row.status }, () => {
      this.s.db
        .prepare(
          'INSERT INTO identities (account, key, status, updated_at) VALUES (?, ?, ?, ?) ' +
            'ON CONFLICT DO UPDATE SET key = excluded.key, status = excluded.status, updated_at = excluded.updated_at',
        )
        .run([account, key, row.status, this.s.now()]);
    });
  }

  /**
   * Records a key the relay handed us that differs from the stored one.
   * Returns true when it was a change (and queues the identity-change event).
   */
  recordKey(account: string, key: Uint8Array): boolean {
    const existing = this.row(account);
    if (!existing) {
      this.setRow(account, { key, status: IdentityStatus.Default });
      return false;
    }
    if (bytesEqual(existing.key, key)) return false;
    // A verified contact's new key is not trusted for sending until re-verified.
    const status = existing.status === IdentityStatus.Default ? IdentityStatus.Default : IdentityStatus.Unverified;
    this.setRow(account, { key, status });
    this.s.afterCommit(() => this.onChange(account));
    return true;
  }

  override async saveIdentity(address: ProtocolAddress, key: PublicKey): Promise<IdentityChange> {
    return this.recordKey(address.name(), key.serialize()) ? IdentityChange.ReplacedExisting : IdentityChange.NewOrUnchanged;
  }

  override async isTrustedIdentity(address: ProtocolAddress, key: PublicKey, direction: Direction): Promise<boolean> {
    // Like Signal: incoming messages are always decrypted; trust decisions gate sending.
    if (direction === Direction.Receiving) return true;
    const existing = this.row(address.name());
    if (!existing) return true;
    if (!bytesEqual(existing.key, key.serialize())) return existing.status === IdentityStatus.Default;
    return existing.status !== IdentityStatus.Unverified;
  }

  /** True when `account`'s stored identity key is `key` (compared as bytes: no key object to parse per message). */
  isKey(account: string, key: PublicKey): boolean {
    const r = this.row(account);
    return r !== null && bytesEqual(r.key, key.serialize());
  }

  override async getIdentity(address: ProtocolAddress): Promise<PublicKey | null> {
    const r = this.row(address.name());
    return r ? PublicKey.deserialize(ab(r.key)) : null;
  }
}

// ---------------------------------------------------------------- pre-keys

export class SqlPreKeyStore extends PreKeyStore {
  constructor(private readonly s: Stores) {
    super();
  }
  override async savePreKey(id: number, record: PreKeyRecord): Promise<void> {
    const bytes = record.serialize();
    this.s.write(`pk:${id}`, bytes, () => {
      this.s.db.prepare('INSERT OR REPLACE INTO prekeys (id, record) VALUES (?, ?)').run([id, bytes]);
    });
  }
  override async getPreKey(id: number): Promise<PreKeyRecord> {
    const b = this.s.read(`pk:${id}`, () => {
      const r = this.s.db.prepare('SELECT record FROM prekeys WHERE id = ?').get([id]);
      return r ? toBytes(r.record) : null;
    });
    if (!b) throw new Error('pre-key not found');
    return PreKeyRecord.deserialize(ab(b));
  }
  override async removePreKey(id: number): Promise<void> {
    this.s.write(`pk:${id}`, null, () => {
      this.s.db.prepare('DELETE FROM prekeys WHERE id = ?').run([id]);
    });
  }
}

export class SqlSignedPreKeyStore extends SignedPreKeyStore {
  constructor(private readonly s: Stores) {
    super();
  }
  override async saveSignedPreKey(id: number, record: SignedPreKeyRecord): Promise<void> {
    const bytes = record.serialize();
    const createdAt = record.timestamp();
    this.s.write(`spk:${id}`, bytes, () => {
      this.s.db.prepare('INSERT OR REPLACE INTO signed_prekeys (id, record, created_at) VALUES (?, ?, ?)').run([id, bytes, createdAt]);
    });
  }
  override async getSignedPreKey(id: number): Promise<SignedPreKeyRecord> {
    const b = this.s.read(`spk:${id}`, () => {
      const r = this.s.db.prepare('SELECT record FROM signed_prekeys WHERE id = ?').get([id]);
      return r ? toBytes(r.record) : null;
    });
    if (!b) throw new Error('signed pre-key not found');
    return SignedPreKeyRecord.deserialize(ab(b));
  }
}

interface KyberRow {
  record: Uint8Array<ArrayBuffer>;
  lastResort: boolean;
}

export class SqlKyberPreKeyStore extends KyberPreKeyStore {
  constructor(private readonly s: Stores) {
    super();
  }
  private row(id: number): KyberRow | null {
    return this.s.read(`kpk:${id}`, () => {
      const r = this.s.db.prepare('SELECT record, last_resort FROM kyber_prekeys WHERE id = ?').get([id]);
      return r ? { record: toBytes(r.record), lastResort: Number(r.last_resort) === 1 } : null;
    });
  }
  save(id: number, record: KyberPreKeyRecord, lastResort: boolean): void {
    const bytes = record.serialize();
    const createdAt = record.timestamp();
    this.s.write(`kpk:${id}`, { record: bytes, lastResort }, () => {
      this.s.db
        .prepare('INSERT OR REPLACE INTO kyber_prekeys (id, record, last_resort, created_at) VALUES (?, ?, ?, ?)')
        .run([id, bytes, lastResort ? 1 : 0, createdAt]);
    });
  }
  override async saveKyberPreKey(id: number, record: KyberPreKeyRecord): Promise<void> {
    this.save(id, record, this.row(id)?.lastResort ?? false);
  }
  override async getKyberPreKey(id: number): Promise<KyberPreKeyRecord> {
    const r = this.row(id);
    if (!r) throw new Error('kyber pre-key not found');
    return KyberPreKeyRecord.deserialize(r.record);
  }
  override async markKyberPreKeyUsed(id: number, signedPreKeyId: number, baseKey: PublicKey): Promise<void> {
    const r = this.row(id);
    if (!r) throw new Error('kyber pre-key not found');
    if (!r.lastResort) {
      // One-time key: used once, then gone.
      this.s.write(`kpk:${id}`, null, () => {
        this.s.db.prepare('DELETE FROM kyber_prekeys WHERE id = ?').run([id]);
      });
      return;
    }
    // Last-resort key: the same (key, signed pre-key, base key) twice is a replay.
    const base = baseKey.serialize();
    const k = `ku:${id}:${signedPreKeyId}:${Buffer.from(base).toString('hex')}`;
    const seen = this.s.read(
      k,
      () =>
        this.s.db.prepare('SELECT 1 FROM kyber_used WHERE key_id = ? AND signed_id = ? AND base_key = ?').get([id, signedPreKeyId, base]) !==
        undefined,
    );
    if (seen) throw new Error('last-resort kyber pre-key reused with the same base key');
    this.s.write(k, true, () => {
      this.s.db.prepare('INSERT INTO kyber_used (key_id, signed_id, base_key, used_at) VALUES (?, ?, ?, ?)').run([id, signedPreKeyId, base, this.s.now()]);
    });
  }
}

// ---------------------------------------------------------------- sender keys

export class SqlSenderKeyStore extends SenderKeyStore {
  constructor(private readonly s: Stores) {
    super();
  }
  override async saveSenderKey(sender: ProtocolAddress, distributionId: Uuid, record: SenderKeyRecord): Promise<void> {
    const addr = sender.toString();
    const bytes = record.serialize();
    this.s.write(`sk:${addr}:${distributionId}`, bytes, () => {
      this.s.db.prepare('INSERT OR REPLACE INTO sender_keys (address, distribution_id, record) VALUES (?, ?, ?)').run([addr, distributionId, bytes]);
    });
  }
  override async getSenderKey(sender: ProtocolAddress, distributionId: Uuid): Promise<SenderKeyRecord | null> {
    const addr = sender.toString();
    const b = this.s.read(`sk:${addr}:${distributionId}`, () => {
      const r = this.s.db.prepare('SELECT record FROM sender_keys WHERE address = ? AND distribution_id = ?').get([addr, distributionId]);
      return r ? toBytes(r.record) : null;
    });
    return b ? SenderKeyRecord.deserialize(ab(b)) : null;
  }
}
