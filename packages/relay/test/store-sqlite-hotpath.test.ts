/**
 * The SQLite store's in-memory shortcuts (queue tails, device lists, account
 * rows, batched last-seen) and its off-thread WAL flush must answer exactly what the file
 * holds: also after another connection wrote to the same file, and after a
 * reopen (what a kill -9 leaves behind is the file, not the memory).
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { IdentityKeyPair } from '@signalapp/libsignal-client';
import { type AccountId, type DeviceId } from '@parley/wire';
import { afterAll, describe, expect, it } from 'vitest';
import { openSqliteStore } from '../src/adapters/store/sqlite.js';
import type { SqliteStore } from '../src/adapters/store/sqlite.js';
import { signedEc, signedKyber, tempDataDir } from './helpers.js';
import { envelopeFor, newAccountFor } from './store-fixtures.js';

const stores: SqliteStore[] = [];
const open = (dir: string) => {
  const s = openSqliteStore(dir);
  stores.push(s);
  return s;
};
afterAll(async () => {
  for (const s of stores) await s.close();
});

const text = (c: Uint8Array) => new TextDecoder().decode(c);
const D1 = 1 as DeviceId;

async function accountIn(store: SqliteStore, name: string): Promise<AccountId> {
  const a = newAccountFor(name);
  expect((await store.createAccount(a)).kind).toBe('created');
  return a.accountId;
}

async function send(store: SqliteStore, to: AccountId, body: string): Promise<void> {
  const res = await store.enqueue({ envelopes: [envelopeFor(to, body)], idempotencyKey: null, now: 1 });
  expect(res.kind).toBe('stored');
}

function newDevice(account: AccountId, registrationId: number) {
  const identity = IdentityKeyPair.generate();
  return {
    account,
    registrationId,
    passwordSalt: new Uint8Array(randomBytes(16)),
    passwordHash: new Uint8Array(randomBytes(32)),
    signedPreKey: signedEc(identity, 1),
    kyberLastResortKey: signedKyber(identity, 1),
    createdAt: 5,
    maxDevices: 6,
  };
}

describe('sqlite store hot path', () => {
  it('keeps a WAL file next to relay.db while open and hands out what was committed, in order, after reads reached the end', async () => {
    const dir = tempDataDir();
    const store = open(dir);
    const bob = await accountIn(store, 'tail.bob');
    expect(existsSync(join(dir, 'relay.db-wal'))).toBe(true);
    await send(store, bob, 'one');
    // Reaches the end of the queue: later commits are appended in memory.
    const first = await store.fetchQueue(bob, D1, 0, 10);
    expect(first.map((e) => text(e.content))).toEqual(['one']);
    await Promise.all(['two', 'three', 'four'].map((b) => send(store, bob, b)));
    const all = await store.fetchQueue(bob, D1, 0, 10);
    expect(all.map((e) => text(e.content))).toEqual(['one', 'two', 'three', 'four']);
    expect(all.map((e) => e.cursor)).toEqual([...all.map((e) => e.cursor)].sort((x, y) => x - y));
    // After a cursor, with a limit.
    const page = await store.fetchQueue(bob, D1, all[0]!.cursor, 2);
    expect(page.map((e) => text(e.content))).toEqual(['two', 'three']);
    // An acknowledged envelope is gone from memory too; an unknown one changes nothing.
    const del = await store.deleteEnvelopes([
      { account: bob, device: D1, cursor: all[1]!.cursor, guid: all[1]!.guid },
      { account: bob, device: D1, cursor: all[2]!.cursor, guid: new Uint8Array(16) },
    ]);
    expect(del.map((d) => d.kind)).toEqual(['deleted', 'notFound']);
    expect((await store.fetchQueue(bob, D1, 0, 10)).map((e) => text(e.content))).toEqual(['one', 'three', 'four']);
    // What memory answers is what the file holds: a fresh connection reads the same queue.
    const other = open(dir);
    const fromFile = await other.fetchQueue(bob, D1, 0, 10);
    expect(fromFile).toEqual(await store.fetchQueue(bob, D1, 0, 10));
  });

  it('commits acks with the sends of the same turn: the ack is answered once that one transaction has committed', async () => {
    const dir = tempDataDir();
    const store = open(dir);
    const bob = await accountIn(store, 'fold.bob');
    await send(store, bob, 'one');
    const [one] = await store.fetchQueue(bob, D1, 0, 10);
    // An ack and a send in the same turn of the event loop.
    const ack = store.deleteEnvelope({ account: bob, device: D1, cursor: one!.cursor, guid: one!.guid });
    const sent = send(store, bob, 'two');
    expect((await ack).kind).toBe('deleted');
    // Once the ack is answered, another connection sees both writes: they committed together.
    const other = open(dir);
    expect((await other.fetchQueue(bob, D1, 0, 10)).map((e) => text(e.content))).toEqual(['two']);
    await sent;
    // An ack whose guid does not match the envelope at its cursor deletes nothing, in memory or in the file.
    const [two] = await store.fetchQueue(bob, D1, 0, 10);
    expect(await store.deleteEnvelope({ account: bob, device: D1, cursor: two!.cursor, guid: one!.guid })).toEqual({
      kind: 'notFound',
    });
    expect((await store.fetchQueue(bob, D1, 0, 10)).map((e) => text(e.content))).toEqual(['two']);
    expect((await other.fetchQueue(bob, D1, 0, 10)).map((e) => text(e.content))).toEqual(['two']);
  });

  it('notices writes made by another connection to the same file (queue and device list)', async () => {
    const dir = tempDataDir();
    const relay = open(dir);
    const alice = await accountIn(relay, 'ext.alice');
    expect((await relay.fetchQueue(alice, D1, 0, 10)).length).toBe(0);
    expect((await relay.listDevices(alice)).map((d) => d.deviceId)).toEqual([1]);

    const admin = open(dir);
    await send(admin, alice, 'from elsewhere');
    const added = await admin.addDevice(newDevice(alice, 99));
    expect(added).toEqual({ kind: 'added', deviceId: 2 });

    expect((await relay.fetchQueue(alice, D1, 0, 10)).map((e) => text(e.content))).toEqual(['from elsewhere']);
    expect(await relay.listDevices(alice)).toEqual([
      { deviceId: 1, registrationId: 7 },
      { deviceId: 2, registrationId: 99 },
    ]);
    // And the other way round: the relay's own delete is seen by the other connection.
    const [e] = await relay.fetchQueue(alice, D1, 0, 10);
    await relay.deleteEnvelopes([{ account: alice, device: D1, cursor: e!.cursor, guid: e!.guid }]);
    expect(await admin.fetchQueue(alice, D1, 0, 10)).toEqual([]);
  });

  it('answers account rows (the access key every sealed send checks) as the file holds them, after own and external writes', async () => {
    const dir = tempDataDir();
    const relay = open(dir);
    const a = newAccountFor('acct.ghost');
    const ghost = a.accountId;
    // Looked up before it exists (a sealed send to an unknown id), then created: the miss is not remembered past the create.
    expect(await relay.getAccount(ghost)).toBeNull();
    expect((await relay.createAccount(a)).kind).toBe('created');
    expect((await relay.getAccount(ghost))?.accessKey).toBeNull();

    const k1 = new Uint8Array(randomBytes(16));
    await relay.setAccessKey(ghost, k1);
    expect((await relay.getAccount(ghost))?.accessKey).toEqual(k1);

    // Another connection changes the key: the relay's next read sees it.
    const admin = open(dir);
    const k2 = new Uint8Array(randomBytes(16));
    await admin.setAccessKey(ghost, k2);
    expect((await relay.getAccount(ghost))?.accessKey).toEqual(k2);
    await relay.setAccessKey(ghost, null);
    expect((await relay.getAccount(ghost))?.accessKey).toBeNull();
    expect((await admin.getAccount(ghost))?.accessKey).toBeNull();
  });

  it('drops a device queue and device list on remove and re-link (new registration id: the 410 case)', async () => {
    const dir = tempDataDir();
    const store = open(dir);
    const alice = await accountIn(store, 'relink.alice');
    expect((await store.addDevice(newDevice(alice, 50))).kind).toBe('added');
    const d2 = 2 as DeviceId;
    expect(await store.fetchQueue(alice, d2, 0, 10)).toEqual([]);
    expect((await store.listDevices(alice)).map((d) => d.registrationId)).toEqual([7, 50]);
    await store.enqueue({
      envelopes: [{ ...envelopeFor(alice, 'for the old device 2'), destination: { account: alice, device: d2 } }],
      idempotencyKey: null,
      now: 1,
    });
    expect((await store.fetchQueue(alice, d2, 0, 10)).length).toBe(1);

    expect(await store.removeDevice(alice, d2)).toBe(true);
    expect((await store.listDevices(alice)).map((d) => d.deviceId)).toEqual([1]);
    expect(await store.fetchQueue(alice, d2, 0, 10)).toEqual([]);

    expect(await store.addDevice(newDevice(alice, 51))).toEqual({ kind: 'added', deviceId: 2 });
    expect((await store.listDevices(alice)).map((d) => d.registrationId)).toEqual([7, 51]);
    expect(await store.fetchQueue(alice, d2, 0, 10)).toEqual([]);
  });

  it('writes batched last-seen times before anything reads them and before closing', async () => {
    const dir = tempDataDir();
    const store = openSqliteStore(dir);
    const alice = await accountIn(store, 'touch.alice');
    await store.touchDevice(alice, D1, 4242);
    expect((await store.deviceDetails(alice))[0]!.lastSeen).toBe(4242);
    await store.touchDevice(alice, D1, 5000);
    await store.close();
    const again = open(dir);
    expect((await again.deviceDetails(alice))[0]!.lastSeen).toBe(5000);
  });

  it('keeps every answered send across a reopen, including ones committed while an earlier flush was running', async () => {
    const dir = tempDataDir();
    const store = openSqliteStore(dir);
    const bob = await accountIn(store, 'reopen.bob');
    const bodies = Array.from({ length: 300 }, (_, i) => `m${i}`);
    // Many groups in flight at once: each answer must come after a flush that covers its own commit.
    const answered: string[] = [];
    await Promise.all(bodies.map((b) => send(store, bob, b).then(() => answered.push(b))));
    expect(answered.length).toBe(300);
    await store.close();
    const again = open(dir);
    const queued = await again.fetchQueue(bob, D1, 0, 1000);
    expect(queued.map((e) => text(e.content))).toEqual(bodies);
  });
});

describe('sqlite: envelopes readable while their group waits for the disk', () => {
  it('an ack that arrives before the commit cancels the insert; the idempotency key is still kept', async () => {
    const dir = tempDataDir();
    const s = open(dir);
    const bob = await accountIn(s, 'early.bob');
    const e = { ...envelopeFor(bob, 'early'), source: { account: bob, device: D1 } };
    const key = { senderAccount: bob, senderDevice: D1, destination: bob, messageId: new Uint8Array(randomBytes(16)), timestamp: 7 };
    let readable = 0;
    const sent = s.enqueue({ envelopes: [e], idempotencyKey: key, now: 1, onReadable: () => readable++ });
    // Submitted, not committed yet (the group starts on a later turn): a woken device already reads it.
    expect(readable).toBe(1);
    const [pushed] = await s.fetchQueue(bob, D1, 0, 10);
    expect(pushed && text(pushed.content)).toBe('early');
    const ack = await s.deleteEnvelope({ account: bob, device: D1, cursor: pushed!.cursor, guid: pushed!.guid });
    // The receipt needs what the row would have held.
    expect(ack).toEqual({ kind: 'deleted', type: e.type, source: e.source, clientTimestamp: e.clientTimestamp });
    expect(await s.deleteEnvelope({ account: bob, device: D1, cursor: pushed!.cursor, guid: pushed!.guid })).toEqual({ kind: 'notFound' });
    expect(await sent).toEqual({ kind: 'stored' });
    expect(await s.fetchQueue(bob, D1, 0, 10)).toEqual([]);
    // Nothing was written, but the key was: a retry is still a repeat, also after a reopen.
    await s.close();
    const again = open(dir);
    expect(await again.fetchQueue(bob, D1, 0, 10)).toEqual([]);
    expect(await again.enqueue({ envelopes: [envelopeFor(bob, 'retry')], idempotencyKey: key, now: 2 })).toEqual({ kind: 'duplicate' });
  });

  it('an ack naming a waiting cursor with another device or guid deletes nothing', async () => {
    const s = open(tempDataDir());
    const bob = await accountIn(s, 'early.guid');
    const sent = s.enqueue({ envelopes: [envelopeFor(bob, 'keep')], idempotencyKey: null, now: 1 });
    const [pushed] = await s.fetchQueue(bob, D1, 0, 10);
    expect(await s.deleteEnvelope({ account: bob, device: D1, cursor: pushed!.cursor, guid: new Uint8Array(16) })).toEqual({ kind: 'notFound' });
    expect(await s.deleteEnvelope({ account: bob, device: 2 as DeviceId, cursor: pushed!.cursor, guid: pushed!.guid })).toEqual({
      kind: 'notFound',
    });
    await sent;
    expect((await s.fetchQueue(bob, D1, 0, 10)).map((q) => text(q.content))).toEqual(['keep']);
  });

  it('keeps queue order when a tail is built from the file while newer envelopes wait', async () => {
    const dir = tempDataDir();
    const s = open(dir);
    const bob = await accountIn(s, 'early.order');
    await send(s, bob, 'one');
    // No tail yet for bob (nothing read): 'two' and 'three' wait for their group; the first read builds the tail.
    const waiting = [s.enqueue({ envelopes: [envelopeFor(bob, 'two')], idempotencyKey: null, now: 1 }), s.enqueue({ envelopes: [envelopeFor(bob, 'three')], idempotencyKey: null, now: 1 })];
    const first = await s.fetchQueue(bob, D1, 0, 2);
    expect(first.map((q) => text(q.content))).toEqual(['one', 'two']);
    const all = await s.fetchQueue(bob, D1, 0, 10);
    expect(all.map((q) => text(q.content))).toEqual(['one', 'two', 'three']);
    await Promise.all(waiting);
    await send(s, bob, 'four');
    const after = await s.fetchQueue(bob, D1, 0, 10);
    expect(after.map((q) => text(q.content))).toEqual(['one', 'two', 'three', 'four']);
    // The same cursors and order as the file holds.
    await s.close();
    const again = open(dir);
    expect(await again.fetchQueue(bob, D1, 0, 10)).toEqual(after);
  });

  it('a repeat or a failed group is no longer readable once its send has settled', async () => {
    const s = open(tempDataDir());
    const bob = await accountIn(s, 'early.fail');
    const key = { senderAccount: bob, senderDevice: D1, destination: bob, messageId: new Uint8Array(randomBytes(16)), timestamp: 9 };
    await s.enqueue({ envelopes: [envelopeFor(bob, 'original')], idempotencyKey: key, now: 1 });
    const repeat = s.enqueue({ envelopes: [envelopeFor(bob, 'repeat')], idempotencyKey: key, now: 2 });
    expect((await s.fetchQueue(bob, D1, 0, 10)).map((q) => text(q.content))).toEqual(['original', 'repeat']);
    expect(await repeat).toEqual({ kind: 'duplicate' });
    expect((await s.fetchQueue(bob, D1, 0, 10)).map((q) => text(q.content))).toEqual(['original']);
    // A group the database refuses (an envelope without a type): its envelopes leave the reads too.
    const broken = { ...envelopeFor(bob, 'broken'), type: null as unknown as ReturnType<typeof envelopeFor>['type'] };
    const failing = s.enqueue({ envelopes: [envelopeFor(bob, 'good'), broken], idempotencyKey: null, now: 3 });
    expect((await s.fetchQueue(bob, D1, 0, 10)).map((q) => text(q.content))).toEqual(['original', 'good', 'broken']);
    await expect(failing).rejects.toThrow();
    expect((await s.fetchQueue(bob, D1, 0, 10)).map((q) => text(q.content))).toEqual(['original']);
  });
});
