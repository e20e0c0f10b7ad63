/**
 * Behaviour every Store adapter must have. Each adapter's test file calls
 * `describeStoreConformance(name, makeStore)` with a factory for a fresh, empty store.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { type AccountId, type DeviceId, EnvelopeType } from '@parley/wire';
import { IdentityKeyPair } from '@signalapp/libsignal-client';
import { afterEach, describe, expect, it } from 'vitest';
import type { NewAccount, QueuedEnvelope, Store, StoredEnvelope } from '../src/ports.js';
import { oneTimeEc, signedEc, signedKyber } from './helpers.js';

const D1 = 1 as DeviceId;
const bytes = (n: number) => new Uint8Array(randomBytes(n));

function newAccount(username: string, createdAt = 1000): NewAccount {
  const identity = IdentityKeyPair.generate();
  return {
    accountId: randomUUID() as AccountId,
    username,
    identityKey: identity.publicKey.serialize(),
    createdAt,
    device: {
      registrationId: 42,
      passwordSalt: bytes(16),
      passwordHash: bytes(32),
      signedPreKey: signedEc(identity, 7),
      kyberLastResortKey: signedKyber(identity, 9999),
    },
  };
}

function envelope(to: AccountId, device: DeviceId, serverTimestamp: number, from: AccountId | null = null): StoredEnvelope {
  return {
    guid: bytes(16),
    type: from ? EnvelopeType.Ciphertext : EnvelopeType.UnidentifiedSender,
    source: from ? { account: from, device: D1 } : null,
    destination: { account: to, device },
    clientTimestamp: serverTimestamp - 5,
    serverTimestamp,
    content: bytes(40),
    urgent: true,
  };
}

export function describeStoreConformance(name: string, makeStore: () => Promise<Store>): void {
  describe(`Store conformance: ${name}`, () => {
    let store: Store | undefined;
    const open = async () => (store = await makeStore());
    afterEach(async () => {
      await store?.close();
      store = undefined;
    });

    it('creates an account with device 1 and finds it by id and username', async () => {
      const s = await open();
      const a = newAccount('alice');
      expect(await s.createAccount(a)).toEqual({ kind: 'created' });
      expect(await s.getAccount(a.accountId)).toEqual({ accountId: a.accountId, username: 'alice', identityKey: a.identityKey, accessKey: null });
      expect(await s.lookupUsername('alice')).toBe(a.accountId);
      expect(await s.lookupUsername('ALICE')).toBe(a.accountId);
      expect(await s.lookupUsername('bob')).toBeNull();
      expect(await s.listDevices(a.accountId)).toEqual([{ deviceId: 1, registrationId: 42 }]);
      expect(await s.getDeviceCredentials(a.accountId, D1)).toEqual({
        passwordSalt: a.device.passwordSalt,
        passwordHash: a.device.passwordHash,
      });
      expect(await s.getDeviceCredentials(a.accountId, 2 as DeviceId)).toBeNull();
      expect(await s.getAccount(randomUUID() as AccountId)).toBeNull();
      expect(await s.listDevices(randomUUID() as AccountId)).toEqual([]);
    });

    it('sets, replaces and clears an account access key (sealed sender)', async () => {
      const s = await open();
      const a = newAccount('ak.alice');
      const b = newAccount('ak.bob');
      await s.createAccount(a);
      await s.createAccount(b);
      const k1 = bytes(16);
      const k2 = bytes(16);
      await s.setAccessKey(a.accountId, k1);
      expect((await s.getAccount(a.accountId))?.accessKey).toEqual(k1);
      expect((await s.getAccount(b.accountId))?.accessKey).toBeNull();
      await s.setAccessKey(a.accountId, k2);
      expect((await s.getAccount(a.accountId))?.accessKey).toEqual(k2);
      await s.setAccessKey(a.accountId, null);
      expect((await s.getAccount(a.accountId))?.accessKey).toBeNull();
      // Setting a key on an unknown account changes nothing and does not throw.
      await s.setAccessKey(randomUUID() as AccountId, k1);
      expect(await s.getAccount(randomUUID() as AccountId)).toBeNull();
    });

    it('keeps usernames unique across case and NFKC variants', async () => {
      const s = await open();
      expect((await s.createAccount(newAccount('carol.x'))).kind).toBe('created');
      expect((await s.createAccount(newAccount('Carol.X'))).kind).toBe('usernameTaken');
      // Fullwidth letters normalize (NFKC) to the same ASCII username.
      expect((await s.createAccount(newAccount('ｃａｒｏｌ.x'))).kind).toBe('usernameTaken');
      expect((await s.createAccount(newAccount('carol.y'))).kind).toBe('created');
    });

    it('stores keys, counts one-time keys and replaces signed keys', async () => {
      const s = await open();
      const a = newAccount('dave');
      await s.createAccount(a);
      expect(await s.keyCounts(a.accountId, D1)).toEqual({ ecCount: 0, kyberCount: 0 });
      const id = IdentityKeyPair.generate();
      const signed = signedEc(id, 8);
      await s.storeKeys(a.accountId, D1, {
        preKeys: [oneTimeEc(1), oneTimeEc(2), oneTimeEc(3)],
        kyberPreKeys: [signedKyber(id, 1)],
        signedPreKey: signed,
        kyberLastResortKey: null,
      });
      await s.storeKeys(a.accountId, D1, { preKeys: [oneTimeEc(4)], kyberPreKeys: [], signedPreKey: null, kyberLastResortKey: null });
      expect(await s.keyCounts(a.accountId, D1)).toEqual({ ecCount: 4, kyberCount: 1 });
      const claim = await s.claimBundle(a.accountId, D1);
      if (claim.kind !== 'bundle') throw new Error('expected a bundle');
      expect(claim.identityKey).toEqual(a.identityKey);
      const d = claim.devices[0];
      expect(d?.signedPreKey).toEqual(signed);
      expect(d?.preKey?.keyId).toBe(1);
      expect(d?.kyberPreKey.keyId).toBe(1);
      expect(d?.remaining).toEqual({ ecCount: 3, kyberCount: 0 });
    });

    it('claims for unknown accounts or devices are notFound', async () => {
      const s = await open();
      const a = newAccount('erin');
      await s.createAccount(a);
      expect(await s.claimBundle(randomUUID() as AccountId, D1)).toEqual({ kind: 'notFound' });
      expect(await s.claimBundle(a.accountId, 5 as DeviceId)).toEqual({ kind: 'notFound' });
      const all = await s.claimBundle(a.accountId, 'all');
      expect(all.kind === 'bundle' && all.devices.map((d) => d.deviceId)).toEqual([1]);
    });

    it('hands out each one-time key at most once under 50 concurrent claims, then the last-resort key', async () => {
      const s = await open();
      const a = newAccount('frank');
      await s.createAccount(a);
      const id = IdentityKeyPair.generate();
      await s.storeKeys(a.accountId, D1, {
        preKeys: Array.from({ length: 20 }, (_, i) => oneTimeEc(i + 1)),
        kyberPreKeys: Array.from({ length: 20 }, (_, i) => signedKyber(id, i + 1)),
        signedPreKey: null,
        kyberLastResortKey: null,
      });
      const claims = await Promise.all(Array.from({ length: 50 }, () => s.claimBundle(a.accountId, D1)));
      const ec: number[] = [];
      const kyber: number[] = [];
      let lastResort = 0;
      let noEc = 0;
      for (const c of claims) {
        if (c.kind !== 'bundle') throw new Error('expected a bundle');
        const d = c.devices[0];
        if (!d) throw new Error('expected a device');
        if (d.preKey) ec.push(d.preKey.keyId);
        else noEc++;
        if (d.kyberPreKey.keyId === 9999) {
          lastResort++;
          expect(d.kyberPreKey).toEqual(a.device.kyberLastResortKey);
        } else kyber.push(d.kyberPreKey.keyId);
      }
      expect(new Set(ec).size).toBe(ec.length);
      expect(new Set(kyber).size).toBe(kyber.length);
      expect(ec.sort((x, y) => x - y)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
      expect(kyber.length).toBe(20);
      expect(noEc).toBe(30);
      expect(lastResort).toBe(30);
      expect(await s.keyCounts(a.accountId, D1)).toEqual({ ecCount: 0, kyberCount: 0 });
    });

    it('fetches a device queue in order, page by page after a cursor', async () => {
      const s = await open();
      const a = newAccount('gina');
      const b = newAccount('hank');
      await s.createAccount(a);
      await s.createAccount(b);
      const sent = Array.from({ length: 5 }, (_, i) => envelope(b.accountId, D1, 2000 + i, a.accountId));
      for (const e of sent) await s.enqueue({ envelopes: [e], idempotencyKey: null, now: e.serverTimestamp });
      await s.enqueue({ envelopes: [envelope(a.accountId, D1, 3000)], idempotencyKey: null, now: 3000 });
      const first = await s.fetchQueue(b.accountId, D1, 0, 3);
      expect(first.map((e) => e.guid)).toEqual(sent.slice(0, 3).map((e) => e.guid));
      const last = first[2];
      if (!last) throw new Error('expected three envelopes');
      const rest = await s.fetchQueue(b.accountId, D1, last.cursor, 10);
      expect(rest.map((e) => e.guid)).toEqual(sent.slice(3).map((e) => e.guid));
      const { cursor: _c, ...stored } = rest[0] ?? { cursor: 0 };
      expect(stored).toEqual(sent[3]);
      const sealed = await s.fetchQueue(a.accountId, D1, 0, 10);
      expect(sealed.map((e) => e.source)).toEqual([null]);
    });

    it('answers concurrent queue reads of different devices each with its own queue, in order', async () => {
      const s = await open();
      const from = newAccount('cq.from');
      await s.createAccount(from);
      const owners = [newAccount('cq.a'), newAccount('cq.b'), newAccount('cq.c'), newAccount('cq.empty')];
      for (const o of owners) await s.createAccount(o);
      // Interleaved sends, so one device's envelopes are not contiguous in the table.
      const sent = new Map<AccountId, StoredEnvelope[]>(owners.map((o) => [o.accountId, []]));
      for (let i = 0; i < 4; i++)
        for (const o of owners.slice(0, 3)) {
          const e = envelope(o.accountId, D1, 100 + i, from.accountId);
          sent.get(o.accountId)?.push(e);
          await s.enqueue({ envelopes: [e], idempotencyKey: null, now: e.serverTimestamp });
        }
      const pages = await Promise.all(owners.map((o) => s.fetchQueue(o.accountId, D1, 0, 10)));
      pages.forEach((page, i) => {
        const owner = owners[i]?.accountId as AccountId;
        expect(page.map((e) => e.guid)).toEqual((sent.get(owner) ?? []).map((e) => e.guid));
        expect(page.every((e) => e.destination.account === owner)).toBe(true);
        expect(page.map((e) => e.cursor)).toEqual([...page.map((e) => e.cursor)].sort((x, y) => x - y));
      });
      expect(pages[3]).toEqual([]);
      // Another device of the same account has its own, empty queue.
      expect(
        await Promise.all([
          s.fetchQueue(owners[0]?.accountId as AccountId, 2 as DeviceId, 0, 10),
          s.fetchQueue(owners[0]?.accountId as AccountId, D1, 0, 1),
        ]),
      ).toEqual([[], pages[0]?.slice(0, 1)]);
    });

    it('answers concurrent reads of the same device with different cursors and limits each as if it ran alone', async () => {
      const s = await open();
      const a = newAccount('cs.a');
      const b = newAccount('cs.b');
      await s.createAccount(a);
      await s.createAccount(b);
      const sent = Array.from({ length: 6 }, (_, i) => envelope(b.accountId, D1, 500 + i, a.accountId));
      for (const e of sent) await s.enqueue({ envelopes: [e], idempotencyKey: null, now: e.serverTimestamp });
      const all = await s.fetchQueue(b.accountId, D1, 0, 100);
      expect(all.map((e) => e.guid)).toEqual(sent.map((e) => e.guid));
      const cursor = (i: number) => (all[i] as QueuedEnvelope).cursor;
      const asks: Array<[after: number, limit: number]> = [
        [0, 2],
        [cursor(1), 3],
        [0, 100],
        [cursor(2), 100],
        [cursor(4), 1],
        [cursor(5), 10],
        [0, 2],
      ];
      const pages = await Promise.all(asks.map(([after, limit]) => s.fetchQueue(b.accountId, D1, after, limit)));
      const guids = (page: QueuedEnvelope[]) => page.map((e) => e.guid);
      expect(pages.map(guids)).toEqual([
        guids(all.slice(0, 2)),
        guids(all.slice(2, 5)),
        guids(all),
        guids(all.slice(3)),
        guids(all.slice(5, 6)),
        [],
        guids(all.slice(0, 2)),
      ]);
      // Each caller owns its result: changing one page leaves the others alone.
      (pages[0] as QueuedEnvelope[]).length = 0;
      expect(guids(pages[6] as QueuedEnvelope[])).toEqual(guids(all.slice(0, 2)));
      expect(pages[2]).toEqual(all);
    });

    it('round-trips an envelope with empty content (delivery receipts)', async () => {
      const s = await open();
      const a = newAccount('nora');
      await s.createAccount(a);
      const receipt = { ...envelope(a.accountId, D1, 70, a.accountId), type: EnvelopeType.ServerDeliveryReceipt, content: new Uint8Array(0) };
      await s.enqueue({ envelopes: [receipt], idempotencyKey: null, now: 70 });
      const [got] = await s.fetchQueue(a.accountId, D1, 0, 10);
      expect(got?.content).toEqual(new Uint8Array(0));
      expect(got?.type).toBe(EnvelopeType.ServerDeliveryReceipt);
    });

    it('stores a send once per idempotency key and all-or-nothing', async () => {
      const s = await open();
      const a = newAccount('ivan');
      const b = newAccount('jane');
      await s.createAccount(a);
      await s.createAccount(b);
      const key = { senderAccount: a.accountId, senderDevice: D1, destination: b.accountId, messageId: bytes(16), timestamp: 1_700_000_000_000 };
      const first = await s.enqueue({ envelopes: [envelope(b.accountId, D1, 10, a.accountId)], idempotencyKey: key, now: 10 });
      const again = await s.enqueue({ envelopes: [envelope(b.accountId, D1, 11, a.accountId)], idempotencyKey: key, now: 11 });
      expect(first).toEqual({ kind: 'stored' });
      expect(again).toEqual({ kind: 'duplicate' });
      expect(await s.fetchQueue(b.accountId, D1, 0, 10)).toHaveLength(1);
      // The key is the whole request: the same message id with another timestamp is another send.
      const later = await s.enqueue({
        envelopes: [envelope(b.accountId, D1, 11, a.accountId)],
        idempotencyKey: { ...key, timestamp: key.timestamp + 1 },
        now: 11,
      });
      expect(later).toEqual({ kind: 'stored' });
      expect(await s.fetchQueue(b.accountId, D1, 0, 10)).toHaveLength(2);
      // An envelope the store cannot hold (no type) makes the whole batch fail, and the idempotency key is not kept.
      const e = envelope(b.accountId, D1, 12, a.accountId);
      const key2 = { ...key, messageId: bytes(16) };
      const broken = { ...e, type: null as unknown as StoredEnvelope['type'] };
      await expect(s.enqueue({ envelopes: [e, broken], idempotencyKey: key2, now: 12 })).rejects.toThrow();
      expect(await s.fetchQueue(b.accountId, D1, 0, 10)).toHaveLength(2);
      expect(await s.enqueue({ envelopes: [envelope(b.accountId, D1, 13, a.accountId)], idempotencyKey: key2, now: 13 })).toEqual({
        kind: 'stored',
      });
    });

    it('onReadable: at most once per batch, before enqueue settles, with the envelopes readable; a repeat or a failed batch is gone once settled', async () => {
      const s = await open();
      const a = newAccount('oc.a');
      const b = newAccount('oc.b');
      await s.createAccount(a);
      await s.createAccount(b);
      const hex = (g: Uint8Array) => Buffer.from(g).toString('hex');
      const readable = () => s.fetchQueue(b.accountId, D1, 0, 10).then((q) => q.map((e) => hex(e.guid)));
      const key = { senderAccount: a.accountId, senderDevice: D1, destination: b.accountId, messageId: bytes(16), timestamp: 5 };
      const events: string[] = [];
      const readAtCall = new Map<string, Promise<string[]>>();
      const onReadable = (name: string) => () => {
        events.push(name);
        // What a woken device reads at this moment.
        readAtCall.set(name, readable());
      };
      const stored = envelope(b.accountId, D1, 1, a.accountId);
      const first = s.enqueue({ envelopes: [stored], idempotencyKey: key, now: 1, onReadable: onReadable('first') });
      const repeat = s.enqueue({ envelopes: [envelope(b.accountId, D1, 2, a.accountId)], idempotencyKey: key, now: 2, onReadable: onReadable('repeat') });
      void first.then(() => events.push('first settled'));
      expect(await first).toEqual({ kind: 'stored' });
      expect(await repeat).toEqual({ kind: 'duplicate' });
      expect(events.filter((e) => e === 'first')).toHaveLength(1);
      expect(events.indexOf('first')).toBeLessThan(events.indexOf('first settled'));
      expect(events.filter((e) => e === 'repeat').length).toBeLessThanOrEqual(1);
      expect(await readAtCall.get('first')).toContain(hex(stored.guid));
      expect(await readable()).toEqual([hex(stored.guid)]);
      const broken = { ...envelope(b.accountId, D1, 3, a.accountId), type: null as unknown as StoredEnvelope['type'] };
      await expect(s.enqueue({ envelopes: [broken], idempotencyKey: null, now: 3, onReadable: onReadable('failed') })).rejects.toThrow();
      expect(events.filter((e) => e === 'failed').length).toBeLessThanOrEqual(1);
      expect(await readable()).toEqual([hex(stored.guid)]);
    });

    it('deletes an acked envelope once and reports its source', async () => {
      const s = await open();
      const a = newAccount('kate');
      const b = newAccount('liam');
      await s.createAccount(a);
      await s.createAccount(b);
      const e = envelope(b.accountId, D1, 50, a.accountId);
      await s.enqueue({ envelopes: [e], idempotencyKey: null, now: 50 });
      const [q] = await s.fetchQueue(b.accountId, D1, 0, 10);
      const cursor = q?.cursor ?? -1;
      // Another device cannot delete it.
      expect(await s.deleteEnvelope({ account: a.accountId, device: D1, cursor, guid: e.guid })).toEqual({ kind: 'notFound' });
      expect(await s.deleteEnvelope({ account: b.accountId, device: D1, cursor, guid: e.guid })).toEqual({
        kind: 'deleted',
        type: EnvelopeType.Ciphertext,
        source: { account: a.accountId, device: 1 },
        clientTimestamp: 45,
      });
      expect(await s.deleteEnvelope({ account: b.accountId, device: D1, cursor, guid: e.guid })).toEqual({ kind: 'notFound' });
      expect(await s.fetchQueue(b.accountId, D1, 0, 10)).toEqual([]);
    });

    it('deletes by queue position only when the guid matches too', async () => {
      const s = await open();
      const a = newAccount('cur.ada');
      const b = newAccount('cur.ben');
      await s.createAccount(a);
      await s.createAccount(b);
      const es = [envelope(b.accountId, D1, 70, a.accountId), envelope(b.accountId, D1, 71, a.accountId)];
      await s.enqueue({ envelopes: es, idempotencyKey: null, now: 70 });
      const [q0, q1] = (await s.fetchQueue(b.accountId, D1, 0, 10)) as [QueuedEnvelope, QueuedEnvelope];
      const ack = (cursor: number, guid: Uint8Array) => s.deleteEnvelope({ account: b.accountId, device: D1, cursor, guid });
      // The right cursor with a wrong guid (another envelope's, or unknown), and the right guid at a wrong cursor: nothing.
      expect(await ack(q0.cursor, q1.guid)).toEqual({ kind: 'notFound' });
      expect(await ack(q0.cursor, bytes(16))).toEqual({ kind: 'notFound' });
      expect(await ack(q1.cursor, q0.guid)).toEqual({ kind: 'notFound' });
      expect((await s.fetchQueue(b.accountId, D1, 0, 10)).map((e) => e.cursor)).toEqual([q0.cursor, q1.cursor]);
      // A double ack, one after the other and in one group: deleted once.
      expect((await ack(q0.cursor, q0.guid)).kind).toBe('deleted');
      expect(await ack(q0.cursor, q0.guid)).toEqual({ kind: 'notFound' });
      const both = await Promise.all([ack(q1.cursor, q1.guid), ack(q1.cursor, q1.guid)]);
      expect(both.map((r) => r.kind)).toEqual(['deleted', 'notFound']);
      expect(await s.fetchQueue(b.accountId, D1, 0, 10)).toEqual([]);
    });

    it('an ack after its device was removed (and the id linked again) deletes nothing', async () => {
      const s = await open();
      const a = newAccount('cur.cleo');
      await s.createAccount(a);
      const identity = IdentityKeyPair.generate();
      const link = () =>
        s.addDevice({
          account: a.accountId,
          registrationId: 5,
          passwordSalt: bytes(16),
          passwordHash: bytes(32),
          signedPreKey: signedEc(identity, 3),
          kyberLastResortKey: signedKyber(identity, 4),
          createdAt: 2000,
          maxDevices: 3,
        });
      const D2 = 2 as DeviceId;
      expect(await link()).toEqual({ kind: 'added', deviceId: 2 });
      await s.enqueue({ envelopes: [envelope(a.accountId, D2, 80)], idempotencyKey: null, now: 80 });
      const [old] = (await s.fetchQueue(a.accountId, D2, 0, 10)) as [QueuedEnvelope];
      expect(await s.removeDevice(a.accountId, D2)).toBe(true);
      expect(await s.deleteEnvelope({ account: a.accountId, device: D2, cursor: old.cursor, guid: old.guid })).toEqual({
        kind: 'notFound',
      });
      // The id comes back with a new queue; the old device's ack, even at a cursor the new queue uses, touches nothing.
      expect(await link()).toEqual({ kind: 'added', deviceId: 2 });
      await s.enqueue({ envelopes: [envelope(a.accountId, D2, 81)], idempotencyKey: null, now: 81 });
      const [fresh] = (await s.fetchQueue(a.accountId, D2, 0, 10)) as [QueuedEnvelope];
      for (const cursor of [old.cursor, fresh.cursor])
        expect(await s.deleteEnvelope({ account: a.accountId, device: D2, cursor, guid: old.guid })).toEqual({
          kind: 'notFound',
        });
      expect((await s.fetchQueue(a.accountId, D2, 0, 10)).map((e) => e.guid)).toEqual([fresh.guid]);
    });

    it('purges envelopes and idempotency keys older than a cutoff', async () => {
      const s = await open();
      const a = newAccount('mona');
      await s.createAccount(a);
      const old = envelope(a.accountId, D1, 100);
      const fresh = envelope(a.accountId, D1, 900);
      const key = { senderAccount: a.accountId, senderDevice: D1, destination: a.accountId, messageId: bytes(16), timestamp: 1_700_000_000_000 };
      await s.enqueue({ envelopes: [old], idempotencyKey: key, now: 100 });
      await s.enqueue({ envelopes: [fresh], idempotencyKey: null, now: 900 });
      expect(await s.purge(500)).toEqual({ envelopes: 1, idempotencyKeys: 1 });
      expect((await s.fetchQueue(a.accountId, D1, 0, 10)).map((e) => e.guid)).toEqual([fresh.guid]);
      // The expired key no longer blocks a send with the same message id.
      expect((await s.enqueue({ envelopes: [envelope(a.accountId, D1, 950)], idempotencyKey: key, now: 950 })).kind).toBe('stored');
    });

    it('group commit: enqueueMany answers per batch, with idempotency inside the group and against earlier sends', async () => {
      const s = await open();
      const a = newAccount('gc.anna');
      const b = newAccount('gc.ben');
      await s.createAccount(a);
      await s.createAccount(b);
      const keyOf = () => ({ senderAccount: a.accountId, senderDevice: D1, destination: b.accountId, messageId: bytes(16), timestamp: 1_700_000_000_000 });
      const old = keyOf();
      const fresh = keyOf();
      expect(await s.enqueue({ envelopes: [envelope(b.accountId, D1, 1, a.accountId)], idempotencyKey: old, now: 1 })).toEqual({ kind: 'stored' });
      const sent = Array.from({ length: 6 }, (_, i) => envelope(b.accountId, D1, 10 + i, a.accountId));
      const res = await s.enqueueMany([
        { envelopes: [sent[0] as StoredEnvelope], idempotencyKey: fresh, now: 10 },
        { envelopes: [sent[1] as StoredEnvelope], idempotencyKey: old, now: 11 },
        { envelopes: [sent[2] as StoredEnvelope], idempotencyKey: { ...fresh }, now: 12 },
        { envelopes: [sent[3] as StoredEnvelope], idempotencyKey: null, now: 13 },
        { envelopes: [], idempotencyKey: keyOf(), now: 14 },
        { envelopes: [sent[4] as StoredEnvelope, sent[5] as StoredEnvelope], idempotencyKey: keyOf(), now: 15 },
      ]);
      expect(res.map((r) => r.kind)).toEqual(['stored', 'duplicate', 'duplicate', 'stored', 'stored', 'stored']);
      const queued = await s.fetchQueue(b.accountId, D1, 0, 20);
      expect(queued.slice(1).map((e) => e.guid)).toEqual([sent[0], sent[3], sent[4], sent[5]].map((e) => e?.guid));
      expect(await s.enqueueMany([])).toEqual([]);
    });

    it('group commit: concurrent sends from many devices are each stored exactly once, in per-sender order', async () => {
      const s = await open();
      const b = newAccount('gc.dest');
      await s.createAccount(b);
      const senders = Array.from({ length: 12 }, (_, i) => newAccount(`gc.s${i}`));
      for (const a of senders) await s.createAccount(a);
      const perSender = 6;
      const calls = senders.flatMap((a) =>
        Array.from({ length: perSender }, (_, i) => {
          const e = { ...envelope(b.accountId, D1, 100 + i, a.accountId), content: new TextEncoder().encode(`${a.accountId}:${i}`) };
          const key = { senderAccount: a.accountId, senderDevice: D1, destination: b.accountId, messageId: bytes(16), timestamp: 1_700_000_000_000 };
          return { e, key };
        }),
      );
      // Every send is issued twice at once with the same key: one stored, one duplicate.
      const results = await Promise.all(
        calls.flatMap(({ e, key }) => [
          s.enqueue({ envelopes: [e], idempotencyKey: key, now: 1 }),
          s.enqueue({ envelopes: [{ ...e, guid: bytes(16) }], idempotencyKey: { ...key }, now: 1 }),
        ]),
      );
      for (let i = 0; i < calls.length; i++) {
        expect([results[2 * i]?.kind, results[2 * i + 1]?.kind]).toEqual(['stored', 'duplicate']);
      }
      const queued = await s.fetchQueue(b.accountId, D1, 0, 1000);
      const texts = queued.map((e) => new TextDecoder().decode(e.content));
      expect(texts).toHaveLength(calls.length);
      expect(new Set(texts).size).toBe(calls.length);
      for (const a of senders) {
        const mine = texts.filter((t) => t.startsWith(`${a.accountId}:`)).map((t) => Number(t.split(':')[1]));
        expect(mine).toEqual(Array.from({ length: perSender }, (_, i) => i));
      }
    });

    it('group commit: when the transaction fails every caller of the group gets the error and nothing is stored', async () => {
      const s = await open();
      const a = newAccount('gc.fail.a');
      const b = newAccount('gc.fail.b');
      await s.createAccount(a);
      await s.createAccount(b);
      const keys = Array.from({ length: 5 }, () => ({ senderAccount: a.accountId, senderDevice: D1, destination: b.accountId, messageId: bytes(16), timestamp: 1_700_000_000_000 }));
      const good = keys.map((_, i) => envelope(b.accountId, D1, 20 + i, a.accountId));
      // The last batch holds an envelope without a type, which the database refuses: the whole group is rolled back.
      const bad = envelope(b.accountId, D1, 30, a.accountId);
      const broken = { ...bad, type: null as unknown as StoredEnvelope['type'] };
      const batches = keys.map((key, i) => ({ envelopes: i === 4 ? [bad, broken] : [good[i] as StoredEnvelope], idempotencyKey: key, now: 20 }));
      await expect(s.enqueueMany(batches)).rejects.toThrow();
      // The same through concurrent enqueue calls, which share one group.
      const settled = await Promise.allSettled(batches.map((batch) => s.enqueue(batch)));
      expect(settled.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected', 'rejected', 'rejected']);
      expect(await s.fetchQueue(b.accountId, D1, 0, 10)).toEqual([]);
      // No idempotency key was kept: the good sends go through afterwards.
      const retry = await Promise.all(batches.slice(0, 4).map((batch) => s.enqueue(batch)));
      expect(retry.map((r) => r.kind)).toEqual(['stored', 'stored', 'stored', 'stored']);
      expect(await s.fetchQueue(b.accountId, D1, 0, 10)).toHaveLength(4);
    });

    it('batched deletes: one result per request, each envelope deleted and reported once', async () => {
      const s = await open();
      const a = newAccount('bd.alma');
      const b = newAccount('bd.bert');
      await s.createAccount(a);
      await s.createAccount(b);
      const es = Array.from({ length: 4 }, (_, i) => envelope(b.accountId, D1, 60 + i, i % 2 === 0 ? a.accountId : null));
      await s.enqueue({ envelopes: es, idempotencyKey: null, now: 60 });
      const [e0, e1, e2, e3] = (await s.fetchQueue(b.accountId, D1, 0, 10)) as [
        QueuedEnvelope,
        QueuedEnvelope,
        QueuedEnvelope,
        QueuedEnvelope,
      ];
      const req = (who: AccountId, e: QueuedEnvelope, guid = e.guid) => ({ account: who, device: D1, cursor: e.cursor, guid });
      const res = await s.deleteEnvelopes([
        { ...req(b.accountId, e1), guid: e0.guid }, // e0's guid at e1's position
        req(b.accountId, e0),
        req(a.accountId, e1), // not a's envelope
        req(b.accountId, e1),
        req(b.accountId, e0), // named twice
        req(b.accountId, e2, bytes(16)),
      ]);
      expect(res).toEqual([
        { kind: 'notFound' },
        { kind: 'deleted', type: EnvelopeType.Ciphertext, source: { account: a.accountId, device: 1 }, clientTimestamp: 55 },
        { kind: 'notFound' },
        { kind: 'deleted', type: EnvelopeType.UnidentifiedSender, source: null, clientTimestamp: 56 },
        { kind: 'notFound' },
        { kind: 'notFound' },
      ]);
      // Concurrent single deletes share a group and keep the same rules.
      const single = await Promise.all([
        s.deleteEnvelope(req(b.accountId, e2)),
        s.deleteEnvelope(req(b.accountId, e2)),
        s.deleteEnvelope(req(b.accountId, e3)),
      ]);
      expect(single.map((r) => r.kind)).toEqual(['deleted', 'notFound', 'deleted']);
      expect(await s.fetchQueue(b.accountId, D1, 0, 10)).toEqual([]);
      expect(await s.deleteEnvelopes([])).toEqual([]);
    });

    it('adds linked devices with the lowest free id up to the limit, and removes them with their keys and queue', async () => {
      const s = await open();
      const a = newAccount('md.alice', 1000);
      await s.createAccount(a);
      const identity = IdentityKeyPair.generate();
      const linked = (registrationId: number, createdAt: number, maxDevices = 3) => ({
        account: a.accountId,
        registrationId,
        passwordSalt: bytes(16),
        passwordHash: bytes(32),
        signedPreKey: signedEc(identity, 3),
        kyberLastResortKey: signedKyber(identity, 4),
        createdAt,
        maxDevices,
      });
      expect(await s.addDevice(linked(100, 2000))).toEqual({ kind: 'added', deviceId: 2 });
      expect(await s.addDevice(linked(101, 3000))).toEqual({ kind: 'added', deviceId: 3 });
      expect(await s.addDevice(linked(102, 4000))).toEqual({ kind: 'tooMany' });
      expect(await s.addDevice({ ...linked(102, 4000), account: randomUUID() as AccountId })).toEqual({ kind: 'notFound' });
      expect(await s.listDevices(a.accountId)).toEqual([
        { deviceId: 1, registrationId: 42 },
        { deviceId: 2, registrationId: 100 },
        { deviceId: 3, registrationId: 101 },
      ]);
      expect(await s.deviceDetails(a.accountId)).toEqual([
        { deviceId: 1, registrationId: 42, createdAt: 1000, lastSeen: 1000 },
        { deviceId: 2, registrationId: 100, createdAt: 2000, lastSeen: 2000 },
        { deviceId: 3, registrationId: 101, createdAt: 3000, lastSeen: 3000 },
      ]);
      // Device 2 has keys and a queue; removing it deletes them, and its id is reused.
      const D2 = 2 as DeviceId;
      await s.storeKeys(a.accountId, D2, { preKeys: [oneTimeEc(1)], kyberPreKeys: [signedKyber(identity, 5)], signedPreKey: null, kyberLastResortKey: null });
      await s.enqueue({ envelopes: [envelope(a.accountId, D2, 5000)], idempotencyKey: null, now: 5000 });
      expect(await s.removeDevice(a.accountId, D2)).toBe(true);
      expect(await s.removeDevice(a.accountId, D2)).toBe(false);
      expect(await s.keyCounts(a.accountId, D2)).toEqual({ ecCount: 0, kyberCount: 0 });
      expect(await s.fetchQueue(a.accountId, D2, 0, 10)).toEqual([]);
      expect(await s.getDeviceCredentials(a.accountId, D2)).toBeNull();
      // An envelope committed for device 2 after its removal (a send racing the removal) is not handed to the next device 2.
      await s.enqueue({ envelopes: [envelope(a.accountId, D2, 5500)], idempotencyKey: null, now: 5500 });
      expect(await s.addDevice(linked(103, 6000))).toEqual({ kind: 'added', deviceId: 2 });
      expect(await s.fetchQueue(a.accountId, D2, 0, 10)).toEqual([]);
      expect((await s.listDevices(a.accountId)).map((d) => [d.deviceId, d.registrationId])).toEqual([
        [1, 42],
        [2, 103],
        [3, 101],
      ]);
    });

    it('concurrent links of one account get distinct device ids', async () => {
      const s = await open();
      const a = newAccount('md.race');
      await s.createAccount(a);
      const identity = IdentityKeyPair.generate();
      const res = await Promise.all(
        [1, 2, 3, 4].map((i) =>
          s.addDevice({
            account: a.accountId,
            registrationId: 200 + i,
            passwordSalt: bytes(16),
            passwordHash: bytes(32),
            signedPreKey: signedEc(identity, 1),
            kyberLastResortKey: signedKyber(identity, 2),
            createdAt: 10,
            maxDevices: 6,
          }),
        ),
      );
      const ids = res.map((r) => (r.kind === 'added' ? r.deviceId : 0)).sort((x, y) => x - y);
      expect(ids).toEqual([2, 3, 4, 5]);
    });

    it('tracks last-seen times and lists idle linked devices, never the primary', async () => {
      const s = await open();
      const a = newAccount('md.idle', 1000);
      await s.createAccount(a);
      const identity = IdentityKeyPair.generate();
      const add = (createdAt: number) =>
        s.addDevice({
          account: a.accountId,
          registrationId: 7,
          passwordSalt: bytes(16),
          passwordHash: bytes(32),
          signedPreKey: signedEc(identity, 1),
          kyberLastResortKey: signedKyber(identity, 2),
          createdAt,
          maxDevices: 6,
        });
      await add(1000);
      await add(1000);
      await s.touchDevice(a.accountId, 3 as DeviceId, 9000);
      const idle = await s.idleDevices(5000, 100);
      expect(idle.filter((d) => d.account === a.accountId)).toEqual([{ account: a.accountId, device: 2 }]);
      expect((await s.deviceDetails(a.accountId)).map((d) => d.lastSeen)).toEqual([1000, 1000, 9000]);
    });

    it('provisioning codes are single-use and expire', async () => {
      const s = await open();
      const a = newAccount('md.codes');
      await s.createAccount(a);
      const h1 = bytes(32);
      const h2 = bytes(32);
      await s.putProvisioningCode({ codeHash: h1, account: a.accountId, expiresAt: 2000 });
      await s.putProvisioningCode({ codeHash: h2, account: a.accountId, expiresAt: 2000 });
      expect(await s.takeProvisioningCode(h1, 1500)).toBe(a.accountId);
      expect(await s.takeProvisioningCode(h1, 1500)).toBeNull();
      expect(await s.takeProvisioningCode(bytes(32), 1500)).toBeNull();
      expect(await s.takeProvisioningCode(h2, 2000)).toBeNull();
    });

    it('answers ping while open', async () => {
      const s = await open();
      await expect(s.ping()).resolves.toBeUndefined();
    });
  });
}
