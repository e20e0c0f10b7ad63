/**
 * SeenFilter (seen-filter.ts) lets the receive pipeline skip the
 * seen_envelopes table for envelopes that were certainly never processed. A
 * "certainly not" for a key that is in the table would let a duplicate
 * through, so: no key already in the table, or added since, is ever answered
 * "certainly not", also after the filter fills up and is rebuilt.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import Database from '@signalapp/sqlcipher';
import { describe, expect, it } from 'vitest';
import { migrate } from '../src/db.js';
import { SeenFilter } from '../src/seen-filter.js';
import { receivedMessageId } from '../src/stores.js';

function freshDb(): Database {
  const db = new Database(':memory:');
  migrate(db);
  return db;
}

interface Row {
  guid: Uint8Array<ArrayBuffer>;
  account: string;
  device: number;
  ts: number;
}
function row(i: number): Row {
  return { guid: new Uint8Array(randomBytes(16)), account: randomUUID(), device: 1 + (i % 3), ts: 1_700_000_000_000 + i };
}
function insert(db: Database, r: Row, triple = true): void {
  db.prepare('INSERT INTO seen_envelopes (server_guid, account, device, client_ts, seen_at) VALUES (?, ?, ?, ?, ?)').run([
    r.guid,
    triple ? r.account : null,
    triple ? r.device : null,
    triple ? r.ts : null,
    Date.now(),
  ]);
}

describe('SeenFilter', () => {
  it('never answers "certainly not" for rows already in the table, and rarely "maybe" for others', () => {
    const db = freshDb();
    const old = Array.from({ length: 3000 }, (_, i) => row(i));
    db.transaction(() => old.forEach((r, i) => insert(db, r, i % 2 === 0)))();
    const f = new SeenFilter(db);
    old.forEach((r, i) => {
      expect(f.mayHaveGuid(r.guid)).toBe(true);
      if (i % 2 === 0) expect(f.mayHaveTriple(r.account, r.device, r.ts)).toBe(true);
    });
    let maybes = 0;
    for (let i = 0; i < 5000; i++) {
      const r = row(10_000 + i);
      if (f.mayHaveGuid(r.guid)) maybes++;
      if (f.mayHaveTriple(r.account, r.device, r.ts)) maybes++;
    }
    expect(maybes).toBeLessThan(100); // false "maybe"s only cost a query; they must stay rare
    db.close();
  });

  it('keeps every key added since, also across the rebuild when it fills up', () => {
    const db = freshDb();
    const f = new SeenFilter(db);
    const added: Row[] = [];
    // Far more than the first filter's capacity, so it is rebuilt from the table on the way.
    for (let i = 0; i < 8000; i++) {
      const r = row(i);
      f.add(r.guid, { account: r.account, device: r.device, ts: r.ts });
      insert(db, r);
      added.push(r);
      if (i % 997 === 0) for (const a of added) expect(f.mayHaveTriple(a.account, a.device, a.ts)).toBe(true);
    }
    for (const r of added) {
      expect(f.mayHaveGuid(r.guid)).toBe(true);
      expect(f.mayHaveTriple(r.account, r.device, r.ts)).toBe(true);
    }
    // Another filter over the same table (the next time the profile is opened) knows them too.
    const reopened = new SeenFilter(db);
    for (const r of added) expect(reopened.mayHaveGuid(r.guid) && reopened.mayHaveTriple(r.account, r.device, r.ts)).toBe(true);
    db.close();
  });

  it('also knows the received messages kept in `messages` within its window', () => {
    const db = freshDb();
    const now = 1_700_000_000_000;
    const day = 24 * 3600 * 1000;
    const kept = Array.from({ length: 500 }, (_, i) => ({ ...row(i), serverTs: now - (i % 10) * day }));
    db.transaction(() => {
      for (const r of kept)
        db.prepare(
          "INSERT INTO messages (id, account, device, direction, timestamp, server_timestamp, body, status) VALUES (?, ?, ?, 'in', ?, ?, 'x', 'received')",
        ).run([receivedMessageId({ serverTimestamp: r.serverTs, serverGuid: r.guid }), r.account, r.device, r.ts, r.serverTs]);
    })();
    const f = new SeenFilter(db, 30 * day, () => now);
    for (const r of kept) {
      expect(f.mayHaveGuid(r.guid)).toBe(true);
      expect(f.mayHaveTriple(r.account, r.device, r.ts)).toBe(true);
    }
    let maybes = 0;
    for (let i = 0; i < 2000; i++) if (f.mayHaveGuid(row(10_000 + i).guid)) maybes++;
    expect(maybes).toBeLessThan(20);
    db.close();
  });
});
