/**
 * A Bloom filter over the keys of processed envelopes, so the duplicate
 * checks of an envelope that was never processed (nearly every envelope)
 * skip the database. It answers "certainly not seen" or "maybe": only "maybe"
 * goes to the tables, so an answer is never wrong, only sometimes slower.
 * Keys are the server guid and the (sender, device, client timestamp) triple,
 * in two filters. They come from `seen_envelopes` and from the received
 * messages of the last `keepMs` (a text message is kept in `messages` under
 * an id made of its relay timestamp and guid, with its sender, device and
 * timestamp, and has no seen row of its own; see client.ts). Every row the
 * client inserts has its keys added first (an insert whose transaction then
 * fails leaves a harmless "maybe"); rows pruned later stay "maybe" until the
 * filter is rebuilt.
 */
import type { Db } from './db.js';

/** Bits per expected key; with HASHES probes this keeps false "maybe"s near 0.05 % until the filter is full. */
const BITS_PER_KEY = 20;
const HASHES = 7;
const MIN_BITS = 1 << 16;

class Bloom {
  readonly words: Uint32Array;
  private readonly mask: number;
  count = 0;

  constructor(bits: number) {
    this.words = new Uint32Array(bits >>> 5);
    this.mask = bits - 1;
  }

  /** Capacity, in keys, before false "maybe"s become frequent. */
  get capacity(): number {
    return (this.words.length * 32) / BITS_PER_KEY;
  }

  add(h1: number, h2: number): void {
    for (let i = 0; i < HASHES; i++) {
      const bit = (h1 + Math.imul(i, h2)) & this.mask;
      this.words[bit >>> 5]! |= 1 << (bit & 31);
    }
    this.count++;
  }

  has(h1: number, h2: number): boolean {
    for (let i = 0; i < HASHES; i++) {
      const bit = (h1 + Math.imul(i, h2)) & this.mask;
      if ((this.words[bit >>> 5]! & (1 << (bit & 31))) === 0) return false;
    }
    return true;
  }
}

/** Two 32-bit FNV-1a hashes (different offsets) of a string; the second is odd so the probes cover the filter. */
function hashString(s: string): [number, number] {
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ 0x5bd1e995;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x01000193);
  }
  return [a >>> 0, (b | 1) >>> 0];
}

function hashBytes(b: Uint8Array): [number, number] {
  // A relay-chosen guid may be anything; hash it rather than trust its bytes to be random.
  return hashString(Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1'));
}

/** A receivedMessageId: 12 hex digits of relay timestamp, then the 16-byte guid in hex. */
const RECEIVED_ID = /^[0-9a-f]{44}$/;

function tripleKey(account: string, device: number, ts: number): string {
  return `${account}:${device}:${ts}`;
}

function sizeFor(keys: number): number {
  let bits = MIN_BITS;
  while (bits < keys * 2 * BITS_PER_KEY) bits *= 2; // room to grow to twice today's rows
  return bits;
}

export class SeenFilter {
  private guids: Bloom | null = null;
  private triples: Bloom | null = null;

  constructor(
    private readonly db: Db,
    private readonly keepMs: number = Number.POSITIVE_INFINITY,
    private readonly now: () => number = Date.now,
  ) {}

  /** Loads every key of the tables (once, and again when a filter fills up). */
  private load(): { guids: Bloom; triples: Bloom } {
    if (this.guids && this.triples && this.guids.count < this.guids.capacity && this.triples.count < this.triples.capacity)
      return { guids: this.guids, triples: this.triples };
    const rows = this.db.prepare('SELECT server_guid, account, device, client_ts FROM seen_envelopes').all();
    // Ids of received messages start with the relay timestamp in 12 hex digits (receivedMessageId), so a range of the key finds the recent ones.
    const since = Math.max(0, this.now() - this.keepMs);
    const from = Number.isFinite(since) ? Math.floor(since).toString(16).padStart(12, '0') : '';
    const kept = this.db
      .prepare("SELECT id, account, device, timestamp FROM messages WHERE id >= ? AND direction = 'in'")
      .all([from]);
    const guids = new Bloom(sizeFor(rows.length + kept.length));
    const triples = new Bloom(sizeFor(rows.length + kept.length));
    for (const r of rows) {
      if (r.server_guid instanceof Uint8Array) guids.add(...hashBytes(r.server_guid));
      if (typeof r.account === 'string' && r.device !== null && r.client_ts !== null)
        triples.add(...hashString(tripleKey(r.account, Number(r.device), Number(r.client_ts))));
    }
    for (const r of kept) {
      if (typeof r.id !== 'string' || !RECEIVED_ID.test(r.id)) continue;
      guids.add(...hashBytes(Buffer.from(r.id.slice(12), 'hex')));
      if (typeof r.account === 'string') triples.add(...hashString(tripleKey(r.account, Number(r.device), Number(r.timestamp))));
    }
    this.guids = guids;
    this.triples = triples;
    return { guids, triples };
  }

  /** False only when no row has this server guid. */
  mayHaveGuid(guid: Uint8Array): boolean {
    return this.load().guids.has(...hashBytes(guid));
  }

  /** False only when no row has this (sender, device, timestamp). */
  mayHaveTriple(account: string, device: number, ts: number): boolean {
    return this.load().triples.has(...hashString(tripleKey(account, device, ts)));
  }

  /** Call before inserting a row with these keys. */
  add(guid: Uint8Array, triple: { account: string; device: number; ts: number } | null): void {
    const f = this.load();
    f.guids.add(...hashBytes(guid));
    if (triple) f.triples.add(...hashString(tripleKey(triple.account, triple.device, triple.ts)));
  }
}
