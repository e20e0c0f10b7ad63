/**
 * In-memory caches of account rows and device lists for the PostgreSQL store,
 * shared by several relay nodes and kept honest with LISTEN/NOTIFY.
 *
 * Every write that changes an account row or a device list sends
 * `pg_notify(channel, accountId)` inside its transaction, so PostgreSQL hands
 * the notification to every listening node only after the commit. Each node
 * holds one connection that LISTENs and drops the named account's entries.
 *
 * Rules that keep a cached value from outliving the row it copies:
 * - Nothing is served or filled unless the listener is up. Losing it clears
 *   everything; caching resumes only once LISTEN has been re-established.
 * - A read records the generation when it starts and may fill the cache only
 *   if no invalidation of its account (and no listener change) happened while
 *   it ran: otherwise it may have read the row before a commit whose
 *   notification has already been handled, and would cache the old row.
 * - An entry is served for at most CACHE_MAX_AGE_MS, so a notification lost
 *   without the connection noticing still ends within that bound. Each entry
 *   gets a lifetime between 75 % and 100 % of it, drawn when it is filled:
 *   entries filled together (every active account after a restart, say) then
 *   do not all expire, and get read again, in the same moment.
 */
import { createHash } from 'node:crypto';
import type { AccountId } from '@parley/wire';
import type { AccountRecord, DeviceSummary } from '../../ports.js';

/** Longest an entry is served; bounds staleness if a notification is ever lost. */
export const CACHE_MAX_AGE_MS = 10_000;
/** Share of CACHE_MAX_AGE_MS by which an entry's lifetime is randomly shortened. */
const CACHE_AGE_JITTER = 0.25;
/** Most entries in each cache; past it that cache starts over. */
export const CACHE_MAX_ENTRIES = 100_000;
/**
 * Most accounts remembered as "invalidated since generation N". Past it the
 * list is dropped and every read in flight is refused instead: slightly fewer
 * fills, never a stale one.
 */
const INVALIDATED_MAX = 10_000;
/** Reconnect delays of the listener: doubling from the first to the last. */
const LISTEN_RETRY_MIN_MS = 100;
const LISTEN_RETRY_MAX_MS = 5_000;
/** PostgreSQL identifiers (and channel names) are at most 63 bytes. */
const MAX_IDENTIFIER = 63;

/**
 * The notification channel of a schema. Stores on different schemas never see
 * each other's notifications; a name too long for PostgreSQL is replaced by a
 * digest of the schema so it is neither truncated nor refused.
 */
export function cacheChannel(schema: string | undefined): string {
  if (schema === undefined) return 'parley_cache';
  const name = `parley_cache_${schema}`;
  if (name.length <= MAX_IDENTIFIER) return name;
  return `parley_cache_${createHash('sha256').update(schema).digest('hex').slice(0, 40)}`;
}

interface Entry<V> {
  value: V;
  /** Served until this time (the owner's clock). */
  until: number;
}

/** One cache of values per account; fills are checked against the shared generations. */
export class AccountSlot<V> {
  readonly #map = new Map<AccountId, Entry<V>>();
  readonly #owner: AccountCaches;

  constructor(owner: AccountCaches) {
    this.#owner = owner;
  }

  /** The cached value, or undefined when absent, too old, or the listener is down. */
  get(account: AccountId): V | undefined {
    if (!this.#owner.listening) return undefined;
    const e = this.#map.get(account);
    if (e === undefined) return undefined;
    if (this.#owner.now() > e.until) {
      this.#map.delete(account);
      return undefined;
    }
    return e.value;
  }

  /** Cache what a read that started at generation `token` found, unless that read may be stale. */
  fill(account: AccountId, token: number, value: V): void {
    if (!this.#owner.mayFill(account, token)) return;
    if (this.#map.size >= this.#owner.maxEntries) this.#map.clear();
    const o = this.#owner;
    this.#map.set(account, { value, until: o.now() + o.maxAgeMs * (1 - CACHE_AGE_JITTER * o.random()) });
  }

  get size(): number {
    return this.#map.size;
  }

  /** @internal */
  delete(account: AccountId): void {
    this.#map.delete(account);
  }

  /** @internal */
  clear(): void {
    this.#map.clear();
  }
}

export interface AccountCachesOptions {
  /** Monotonic milliseconds (tests pass a fake clock). */
  now?: () => number;
  maxAgeMs?: number;
  /** Uniform in [0, 1): how much of the jitter an entry gets (tests pass a fixed one). */
  random?: () => number;
  maxEntries?: number;
}

/** The account-row and device-list caches of one store, with their invalidation state. */
export class AccountCaches {
  readonly accounts: AccountSlot<AccountRecord | null>;
  readonly deviceLists: AccountSlot<readonly DeviceSummary[]>;
  readonly now: () => number;
  readonly maxAgeMs: number;
  readonly random: () => number;
  readonly maxEntries: number;
  #listening = false;
  /** Bumped by every invalidation and every listener change. */
  #gen = 0;
  /** Reads that started before this generation never fill. */
  #floor = 0;
  /** Generation of the latest invalidation of each account (only while it can matter, see INVALIDATED_MAX). */
  readonly #invalidated = new Map<AccountId, number>();

  constructor(opts: AccountCachesOptions = {}) {
    this.now = opts.now ?? (() => performance.now());
    this.maxAgeMs = opts.maxAgeMs ?? CACHE_MAX_AGE_MS;
    this.random = opts.random ?? Math.random;
    this.maxEntries = opts.maxEntries ?? CACHE_MAX_ENTRIES;
    this.accounts = new AccountSlot(this);
    this.deviceLists = new AccountSlot(this);
  }

  get listening(): boolean {
    return this.#listening;
  }

  /** Call before reading from PostgreSQL; pass the result to `fill`. */
  begin(): number {
    return this.#gen;
  }

  mayFill(account: AccountId, token: number): boolean {
    return this.#listening && token >= this.#floor && (this.#invalidated.get(account) ?? 0) <= token;
  }

  /** Drop both entries of an account (a notification, or this node's own write). */
  invalidate(account: AccountId): void {
    this.accounts.delete(account);
    this.deviceLists.delete(account);
    this.#gen++;
    if (this.#invalidated.size >= INVALIDATED_MAX) {
      this.#invalidated.clear();
      this.#floor = this.#gen;
    } else {
      this.#invalidated.set(account, this.#gen);
    }
  }

  /**
   * The listener came up or went down. Either way everything cached so far and
   * every read in flight is distrusted: while down, notifications may have been
   * missed; right after coming up, a read that started earlier may predate a
   * commit whose notification nobody heard.
   */
  setListening(on: boolean): void {
    this.#listening = on;
    this.accounts.clear();
    this.deviceLists.clear();
    this.#invalidated.clear();
    this.#gen++;
    this.#floor = this.#gen;
  }
}

/** The part of `pg.Client` the listener uses. */
export interface PgListenClient {
  connect(): Promise<unknown>;
  query(text: string): Promise<unknown>;
  on(event: 'notification', fn: (msg: { channel: string; payload?: string | undefined }) => void): unknown;
  on(event: 'error', fn: (err: Error) => void): unknown;
  on(event: 'end', fn: () => void): unknown;
  end(): Promise<void>;
}

export interface ListenerStatus {
  listening: boolean;
  /** Times LISTEN was established. */
  connects: number;
  /** Times an established or attempted listener connection failed. */
  losses: number;
}

/**
 * Keeps one LISTEN connection up for `caches`, reconnecting with backoff,
 * and turns its notifications into invalidations.
 */
export class CacheListener {
  readonly #caches: AccountCaches;
  readonly #channel: string;
  readonly #newClient: () => PgListenClient;
  /** The connection being set up or listening; `live` turns false once it is given up. */
  #current: { client: PgListenClient; live: boolean } | null = null;
  #attempt: Promise<void> | null = null;
  #timer: NodeJS.Timeout | null = null;
  #delay = LISTEN_RETRY_MIN_MS;
  #closed = false;
  #connects = 0;
  #losses = 0;

  constructor(caches: AccountCaches, channel: string, newClient: () => PgListenClient) {
    // LISTEN takes an identifier, not a parameter: only names that need no quoting rules.
    if (!/^[a-z0-9_]{1,63}$/.test(channel)) throw new RangeError('channel: must match [a-z0-9_]{1,63}');
    this.#caches = caches;
    this.#channel = channel;
    this.#newClient = newClient;
  }

  status(): ListenerStatus {
    return { listening: this.#caches.listening, connects: this.#connects, losses: this.#losses };
  }

  /** One attempt to listen; resolves either way (a failure schedules the next attempt). */
  start(): Promise<void> {
    this.#attempt ??= this.#connect().finally(() => (this.#attempt = null));
    return this.#attempt;
  }

  async #connect(): Promise<void> {
    if (this.#closed) return;
    const conn = { client: this.#newClient(), live: true };
    this.#current = conn;
    const lost = () => {
      if (!conn.live) return;
      conn.live = false;
      this.#losses++;
      if (this.#current === conn) this.#current = null;
      this.#caches.setListening(false);
      conn.client.end().catch(() => undefined);
      this.#retry();
    };
    conn.client.on('error', lost);
    conn.client.on('end', lost);
    conn.client.on('notification', (msg) => {
      if (conn.live && msg.channel === this.#channel && msg.payload) this.#caches.invalidate(msg.payload as AccountId);
    });
    try {
      await conn.client.connect();
      await conn.client.query(`LISTEN "${this.#channel}"`);
    } catch {
      lost();
      return;
    }
    // Lost meanwhile (already retrying) or closed meanwhile (close() ends it).
    if (!conn.live || this.#closed) return;
    this.#connects++;
    this.#delay = LISTEN_RETRY_MIN_MS;
    this.#caches.setListening(true);
  }

  #retry(): void {
    if (this.#closed || this.#timer) return;
    // Jitter keeps the nodes of a cluster from reconnecting in lockstep after a database restart.
    const wait = this.#delay * (0.5 + Math.random() / 2);
    this.#delay = Math.min(this.#delay * 2, LISTEN_RETRY_MAX_MS);
    this.#timer = setTimeout(() => {
      this.#timer = null;
      void this.start();
    }, wait);
    this.#timer.unref();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#caches.setListening(false);
    const conn = this.#current;
    this.#current = null;
    if (conn?.live) {
      // Not a loss: marked before its 'end' fires. Ending it also cuts short a connect in progress.
      conn.live = false;
      await conn.client.end().catch(() => undefined);
    }
    await this.#attempt;
  }
}
