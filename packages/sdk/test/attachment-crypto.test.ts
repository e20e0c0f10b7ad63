/**
 * Attachment crypto: layout, padding buckets, round trips, and rejection of
 * every tampered blob (bit flips, truncation, extension) with no plaintext
 * left behind.
 */
import { createHash, createHmac, randomBytes, createDecipheriv } from 'node:crypto';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { encryptFile, encryptedSize, newAttachmentKey, newIv, paddedSize } from '../src/attachment-crypto.js';
import { safeFileName, verifyAndDecryptTo } from '../src/attachments.js';
import { tempDir } from './helpers.js';

const tmp = tempDir('parley-att-');
afterAll(() => tmp.cleanup());
let n = 0;
const fresh = (): string => join(tmp.dir, `d${n++}`);

async function encryptBytes(plain: Uint8Array): Promise<{ blob: Buffer; key: Uint8Array; digest: Uint8Array; iv: Uint8Array }> {
  const src = join(tmp.dir, `src-${n++}`);
  writeFileSync(src, plain);
  const key = newAttachmentKey();
  const iv = newIv();
  const enc = encryptFile(src, plain.length, key, iv);
  const chunks: Buffer[] = [];
  for await (const c of enc.stream) chunks.push(c as Buffer);
  const blob = Buffer.concat(chunks);
  expect(blob.length).toBe(enc.length);
  return { blob, key, digest: await enc.digest, iv };
}

function filesIn(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

describe('padding buckets', () => {
  it('follows max(541, floor(1.05^ceil(log(size)/log(1.05))))', () => {
    expect(paddedSize(0)).toBe(541);
    expect(paddedSize(1)).toBe(541);
    expect(paddedSize(541)).toBe(541);
    for (const size of [542, 1000, 5 * 1024 * 1024, 200 * 1024 * 1024, 1024 ** 3]) {
      const want = Math.max(541, Math.floor(1.05 ** Math.ceil(Math.log(size) / Math.log(1.05))));
      expect(paddedSize(size)).toBe(Math.max(want, size));
      expect(paddedSize(size)).toBeGreaterThanOrEqual(size);
      expect(paddedSize(size)).toBeLessThanOrEqual(Math.ceil(size * 1.05) + 1);
    }
  });

  it('never pads below the size, for every size up to 20000', () => {
    for (let s = 0; s <= 20_000; s++) expect(paddedSize(s)).toBeGreaterThanOrEqual(s);
  });

  it('gives many sizes the same blob length', () => {
    expect(encryptedSize(0)).toBe(encryptedSize(541));
    expect(encryptedSize(600)).toBe(encryptedSize(paddedSize(600)));
  });
});

describe('blob layout', () => {
  it('is IV || AES-256-CBC(padded plaintext) || HMAC-SHA256(IV || ciphertext), digest = SHA-256(blob)', async () => {
    const plain = randomBytes(3000);
    const { blob, key, digest, iv } = await encryptBytes(plain);
    expect(blob.subarray(0, 16)).toEqual(Buffer.from(iv));
    const mac = createHmac('sha256', Buffer.from(key.subarray(32))).update(blob.subarray(0, blob.length - 32)).digest();
    expect(blob.subarray(blob.length - 32)).toEqual(mac);
    expect(Buffer.from(digest)).toEqual(createHash('sha256').update(blob).digest());
    const d = createDecipheriv('aes-256-cbc', Buffer.from(key.subarray(0, 32)), Buffer.from(iv));
    const padded = Buffer.concat([d.update(blob.subarray(16, blob.length - 32)), d.final()]);
    expect(padded.length).toBe(paddedSize(plain.length));
    expect(padded.subarray(0, plain.length)).toEqual(plain);
    expect(padded.subarray(plain.length).every((b) => b === 0)).toBe(true);
  });

  it('is deterministic for the same key, IV and file (what resuming relies on)', async () => {
    const src = join(tmp.dir, 'det');
    writeFileSync(src, randomBytes(10_000));
    const key = newAttachmentKey();
    const iv = newIv();
    const read = async () => {
      const e = encryptFile(src, 10_000, key, iv);
      const parts: Buffer[] = [];
      for await (const c of e.stream) parts.push(c as Buffer);
      return Buffer.concat(parts);
    };
    expect((await read()).equals(await read())).toBe(true);
  });

  it('refuses a file whose size changed', async () => {
    const src = join(tmp.dir, 'changed');
    writeFileSync(src, randomBytes(100));
    const e = encryptFile(src, 200, newAttachmentKey(), newIv());
    await expect((async () => {
      for await (const _ of e.stream) void _;
    })()).rejects.toThrow(/shrank/);
  });
});

describe('round trips', () => {
  for (const size of [0, 1, 15, 16, 17, 541, 542, 100_000, 1024 * 1024 + 3]) {
    it(`${size} bytes`, async () => {
      const plain = randomBytes(size);
      const { blob, key, digest } = await encryptBytes(plain);
      const dir = fresh();
      const out = await verifyAndDecryptTo(Readable.from([blob]), { key, digest, size }, dir, 'file.bin');
      expect(readFileSync(out).equals(plain)).toBe(true);
      expect(filesIn(dir)).toEqual(['file.bin']);
    });
  }

  it('never overwrites an existing file', async () => {
    const plain = randomBytes(10);
    const { blob, key, digest } = await encryptBytes(plain);
    const dir = fresh();
    const a = await verifyAndDecryptTo(Readable.from([blob]), { key, digest, size: 10 }, dir, 'x.txt');
    const b = await verifyAndDecryptTo(Readable.from([blob]), { key, digest, size: 10 }, dir, 'x.txt');
    expect(a.endsWith('x.txt')).toBe(true);
    expect(b.endsWith('x (1).txt')).toBe(true);
  });
});

describe('tampering', () => {
  const SIZE = 2000;
  let fixture: { blob: Buffer; key: Uint8Array; digest: Uint8Array };
  const dir = fresh();

  async function rejected(blob: Buffer, attachment = fixture): Promise<void> {
    await expect(verifyAndDecryptTo(Readable.from([blob]), { key: attachment.key, digest: attachment.digest, size: SIZE }, dir, 'out.bin')).rejects.toThrow(
      /attachment rejected/,
    );
  }

  it('rejects 1,000 single-bit flips at random positions and leaves no file', async () => {
    fixture = await encryptBytes(randomBytes(SIZE));
    const bits = fixture.blob.length * 8;
    for (let i = 0; i < 1000; i++) {
      const bit = randomBytes(4).readUInt32BE() % bits;
      const copy = Buffer.from(fixture.blob);
      copy[bit >> 3]! ^= 1 << (bit & 7);
      await rejected(copy);
    }
    expect(filesIn(dir)).toEqual([]);
  });

  it('rejects every single-bit flip of the IV, the last cipher block and the MAC', async () => {
    const len = fixture.blob.length;
    const regions = [
      [0, 16],
      [len - 48, len],
    ] as const;
    for (const [from, to] of regions)
      for (let byte = from; byte < to; byte++)
        for (let b = 0; b < 8; b++) {
          const copy = Buffer.from(fixture.blob);
          copy[byte]! ^= 1 << b;
          await rejected(copy);
        }
    expect(filesIn(dir)).toEqual([]);
  });

  it('rejects truncation at many lengths, including empty', async () => {
    for (const cut of [0, 1, 16, 31, 32, 33, 100, fixture.blob.length - 32, fixture.blob.length - 1]) await rejected(fixture.blob.subarray(0, cut));
    expect(filesIn(dir)).toEqual([]);
  });

  it('rejects extension by one byte, one block, or a lot', async () => {
    for (const extra of [1, 16, 32, 1_000_000]) await rejected(Buffer.concat([fixture.blob, randomBytes(extra)]));
    expect(filesIn(dir)).toEqual([]);
  });

  it('rejects a wrong digest, a wrong key and a wrong size even for an intact blob', async () => {
    const badDigest = Buffer.from(fixture.digest);
    badDigest[0]! ^= 1;
    await rejected(fixture.blob, { ...fixture, digest: badDigest });
    const badKey = Buffer.from(fixture.key);
    badKey[40]! ^= 1;
    await rejected(fixture.blob, { ...fixture, key: badKey });
    await expect(
      verifyAndDecryptTo(Readable.from([fixture.blob]), { key: fixture.key, digest: fixture.digest, size: SIZE * 3 }, dir, 'x'),
    ).rejects.toThrow(/attachment rejected/);
    expect(filesIn(dir)).toEqual([]);
  });

  it('rejects a blob that is split into odd chunks the same way (streaming)', async () => {
    const copy = Buffer.from(fixture.blob);
    copy[copy.length - 1]! ^= 0x80;
    const chunks: Buffer[] = [];
    for (let i = 0; i < copy.length; i += 7) chunks.push(copy.subarray(i, i + 7));
    await rejected(Buffer.concat(chunks));
    const ok = await verifyAndDecryptTo(
      Readable.from(Array.from({ length: Math.ceil(fixture.blob.length / 7) }, (_, i) => fixture.blob.subarray(i * 7, i * 7 + 7))),
      { key: fixture.key, digest: fixture.digest, size: SIZE },
      dir,
      'chunked.bin',
    );
    expect(readFileSync(ok).length).toBe(SIZE);
  });
});

describe('file names from senders', () => {
  it('keeps only a base name without control characters', () => {
    expect(safeFileName('../../etc/passwd', 'f')).toBe('passwd');
    expect(safeFileName('..\\..\\x.txt', 'f')).toBe('x.txt');
    expect(safeFileName('a\u001b[31mb.txt', 'f')).toBe('a_[31mb.txt');
    expect(safeFileName('', 'fallback')).toBe('fallback');
    expect(safeFileName('...', 'fallback')).toBe('fallback');
    expect(safeFileName('.bashrc', 'f')).toBe('bashrc');
  });
});
