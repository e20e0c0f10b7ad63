/**
 * Behaviour every BlobStore adapter must have. Each adapter's test file calls
 * `describeBlobStoreConformance(name, makeStore)` with a factory for a fresh store.
 */
import { createHash, randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import type { BlobStore, NewBlob } from '../src/blobstore.js';

const T0 = 1_700_000_000_000;
const DAY = 24 * 3600 * 1000;

export function newBlobId(): string {
  return randomBytes(24).toString('base64url');
}

function blob(length: number, over: Partial<NewBlob> = {}): NewBlob {
  return { id: newBlobId(), owner: 'owner-a', length, createdAt: T0, expiresAt: T0 + 30 * DAY, ...over };
}

async function* chunks(data: Buffer, size = 1000): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

async function* failingAfter(data: Buffer, at: number): AsyncGenerator<Uint8Array> {
  yield data.subarray(0, at);
  throw new Error('connection reset');
}

async function readAll(store: BlobStore, id: string, now = T0): Promise<Buffer | null> {
  const r = await store.read(id, now);
  if (!r) return null;
  const parts: Buffer[] = [];
  for await (const c of r.stream) parts.push(c as Buffer);
  const out = Buffer.concat(parts);
  expect(out.length).toBe(r.length);
  return out;
}

export function describeBlobStoreConformance(name: string, make: () => Promise<BlobStore>, opts: { bigBytes?: number } = {}): void {
  describe(`BlobStore conformance: ${name}`, () => {
    let store: BlobStore;
    const open: BlobStore[] = [];
    const fresh = async () => {
      store = await make();
      open.push(store);
      return store;
    };
    afterEach(async () => {
      for (const s of open.splice(0)) await s.close();
    });

    it('creates an empty blob and reports its metadata', async () => {
      await fresh();
      const b = blob(100);
      await store.create(b);
      expect(await store.info(b.id, T0)).toEqual({ ...b, offset: 0 });
      expect(await store.info(newBlobId(), T0)).toBeNull();
      await store.ping();
    });

    it('appends in several calls and reads the exact bytes back only when complete', async () => {
      await fresh();
      const data = randomBytes(10_000);
      const b = blob(data.length);
      await store.create(b);
      expect(await store.append(b.id, 0, chunks(data.subarray(0, 4000)))).toEqual({ kind: 'appended', offset: 4000 });
      expect(await store.read(b.id, T0)).toBeNull();
      expect((await store.info(b.id, T0))?.offset).toBe(4000);
      expect(await store.append(b.id, 4000, chunks(data.subarray(4000), 777))).toEqual({ kind: 'appended', offset: 10_000 });
      expect((await readAll(store, b.id))?.equals(data)).toBe(true);
    });

    it('stores a zero-length blob', async () => {
      await fresh();
      const b = blob(0);
      await store.create(b);
      expect(await store.append(b.id, 0, chunks(Buffer.alloc(0)))).toEqual({ kind: 'appended', offset: 0 });
      expect((await readAll(store, b.id))?.length).toBe(0);
    });

    it('refuses an append at the wrong offset and changes nothing', async () => {
      await fresh();
      const data = randomBytes(3000);
      const b = blob(data.length);
      await store.create(b);
      await store.append(b.id, 0, chunks(data.subarray(0, 1000)));
      expect(await store.append(b.id, 0, chunks(data))).toEqual({ kind: 'offsetMismatch', offset: 1000 });
      expect(await store.append(b.id, 2000, chunks(data))).toEqual({ kind: 'offsetMismatch', offset: 1000 });
      expect((await store.info(b.id, T0))?.offset).toBe(1000);
      await store.append(b.id, 1000, chunks(data.subarray(1000)));
      expect((await readAll(store, b.id))?.equals(data)).toBe(true);
    });

    it('refuses more bytes than declared and keeps nothing of that append', async () => {
      await fresh();
      const data = randomBytes(2000);
      const b = blob(1500);
      await store.create(b);
      await store.append(b.id, 0, chunks(data.subarray(0, 500)));
      expect(await store.append(b.id, 500, chunks(data.subarray(500)))).toEqual({ kind: 'tooLarge', offset: 500 });
      expect((await store.info(b.id, T0))?.offset).toBe(500);
      expect(await store.append(b.id, 500, chunks(data.subarray(500, 1500)))).toEqual({ kind: 'appended', offset: 1500 });
      expect((await readAll(store, b.id))?.equals(data.subarray(0, 1500))).toBe(true);
    });

    it('keeps what arrived before a source failure, so the upload resumes from there', async () => {
      await fresh();
      const data = randomBytes(5000);
      const b = blob(data.length);
      await store.create(b);
      expect(await store.append(b.id, 0, failingAfter(data, 1234))).toEqual({ kind: 'interrupted', offset: 1234 });
      expect((await store.info(b.id, T0))?.offset).toBe(1234);
      expect(await store.append(b.id, 1234, chunks(data.subarray(1234)))).toEqual({ kind: 'appended', offset: 5000 });
      expect((await readAll(store, b.id))?.equals(data)).toBe(true);
    });

    it('answers notFound for appends to unknown blobs', async () => {
      await fresh();
      expect(await store.append(newBlobId(), 0, chunks(randomBytes(10)))).toEqual({ kind: 'notFound' });
    });

    it('counts usage per owner over unexpired blobs, complete or not', async () => {
      await fresh();
      await store.create(blob(100, { owner: 'o1' }));
      await store.create(blob(250, { owner: 'o1', expiresAt: T0 + DAY }));
      await store.create(blob(999, { owner: 'o2' }));
      expect(await store.usage('o1', T0)).toBe(350);
      expect(await store.usage('o2', T0)).toBe(999);
      expect(await store.usage('nobody', T0)).toBe(0);
      expect(await store.usage('o1', T0 + 2 * DAY)).toBe(100);
    });

    it('hides expired blobs and purges them', async () => {
      await fresh();
      const data = randomBytes(300);
      const old = blob(300, { expiresAt: T0 + DAY });
      const young = blob(300, { expiresAt: T0 + 10 * DAY });
      for (const b of [old, young]) {
        await store.create(b);
        await store.append(b.id, 0, chunks(data));
      }
      expect(await store.read(old.id, T0 + 2 * DAY)).toBeNull();
      expect(await store.info(old.id, T0 + 2 * DAY)).toBeNull();
      expect(await store.purge(T0 + 2 * DAY)).toBe(1);
      expect(await store.info(old.id, T0)).toBeNull();
      expect((await readAll(store, young.id, T0 + 2 * DAY))?.equals(data)).toBe(true);
      expect(await store.purge(T0 + 2 * DAY)).toBe(0);
    });

    it('deletes a blob', async () => {
      await fresh();
      const b = blob(10);
      await store.create(b);
      await store.append(b.id, 0, chunks(randomBytes(10)));
      await store.delete(b.id);
      expect(await store.info(b.id, T0)).toBeNull();
      expect(await store.read(b.id, T0)).toBeNull();
      await store.delete(b.id); // idempotent
    });

    it('keeps blobs separate', async () => {
      await fresh();
      const a = randomBytes(700);
      const c = randomBytes(900);
      const ba = blob(a.length);
      const bc = blob(c.length);
      await store.create(ba);
      await store.create(bc);
      await store.append(ba.id, 0, chunks(a));
      await store.append(bc.id, 0, chunks(c));
      expect((await readAll(store, ba.id))?.equals(a)).toBe(true);
      expect((await readAll(store, bc.id))?.equals(c)).toBe(true);
    });

    const big = opts.bigBytes ?? 20 * 1024 * 1024;
    it(`streams a ${big >> 20} MiB blob in and out`, async () => {
      await fresh();
      const b = blob(big);
      await store.create(b);
      const piece = randomBytes(1024 * 1024);
      const hIn = createHash('sha256');
      async function* source(): AsyncGenerator<Uint8Array> {
        for (let i = 0; i < big; i += piece.length) {
          const part = piece.subarray(0, Math.min(piece.length, big - i));
          hIn.update(part);
          yield part;
        }
      }
      expect(await store.append(b.id, 0, source())).toEqual({ kind: 'appended', offset: big });
      const r = await store.read(b.id, T0);
      const hOut = createHash('sha256');
      let n = 0;
      for await (const c of r!.stream) {
        hOut.update(c as Buffer);
        n += (c as Buffer).length;
      }
      expect(n).toBe(big);
      expect(hOut.digest('hex')).toBe(hIn.digest('hex'));
    });
  });
}
