/**
 * Attachment encryption, in Signal's layout (see LIBSIGNAL-NOTES.md):
 *
 *   key    = 64 random bytes: AES-256 key (first 32) || HMAC-SHA256 key (last 32)
 *   blob   = IV (16) || AES-256-CBC(plaintext || zero padding to the size bucket, PKCS#7) || HMAC(IV || ciphertext) (32)
 *   digest = SHA-256(blob)
 *
 * The zero padding sits inside the encrypted part, so the blob's length
 * reveals only the size bucket; the real size travels in the end-to-end
 * encrypted pointer. Only Node's `crypto` primitives are used.
 *
 * Everything streams: memory stays bounded whatever the file size.
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export const IV_BYTES = 16;
export const MAC_BYTES = 32;
export const KEY_BYTES = 64;
const BLOCK = 16;
const MIN_BUCKET = 541;

/**
 * The padded plaintext size for `size` bytes: max(541, floor(1.05^ceil(log(size)/log(1.05)))),
 * never smaller than `size` itself (guards against floating-point rounding).
 */
export function paddedSize(size: number): number {
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError('size must be a non-negative safe integer');
  if (size <= MIN_BUCKET) return MIN_BUCKET;
  const bucket = Math.floor(Math.pow(1.05, Math.ceil(Math.log(size) / Math.log(1.05))));
  return Math.max(size, bucket, MIN_BUCKET);
}

/** Length of the encrypted blob for a plaintext of `size` bytes. */
export function encryptedSize(size: number): number {
  const padded = paddedSize(size);
  // PKCS#7 always adds 1..16 bytes.
  return IV_BYTES + (Math.floor(padded / BLOCK) + 1) * BLOCK + MAC_BYTES;
}

export function newAttachmentKey(): Uint8Array {
  return new Uint8Array(randomBytes(KEY_BYTES));
}

export function newIv(): Uint8Array {
  return new Uint8Array(randomBytes(IV_BYTES));
}

function splitKey(key: Uint8Array): { aes: Buffer; mac: Buffer } {
  if (key.length !== KEY_BYTES) throw new RangeError(`attachment key must be ${KEY_BYTES} bytes`);
  return { aes: Buffer.from(key.subarray(0, 32)), mac: Buffer.from(key.subarray(32)) };
}

/** Zeros after the plaintext up to `total` bytes, in bounded chunks. */
async function* zeros(count: number): AsyncGenerator<Buffer> {
  const chunk = Buffer.alloc(Math.min(count, 64 * 1024));
  let left = count;
  while (left > 0) {
    const n = Math.min(left, chunk.length);
    yield n === chunk.length ? chunk : chunk.subarray(0, n);
    left -= n;
  }
}

/** Plaintext of a file followed by zero padding to its bucket; fails if the file is not `size` bytes. */
async function* paddedPlaintext(path: string, size: number): AsyncGenerator<Buffer> {
  let seen = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 256 * 1024 })) {
    const b = chunk as Buffer;
    seen += b.length;
    if (seen > size) throw new Error('the file grew while it was being sent');
    yield b;
  }
  if (seen !== size) throw new Error('the file shrank while it was being sent');
  yield* zeros(paddedSize(size) - size);
}

export interface EncryptedStream {
  /** The blob bytes, in order; ends once the MAC has been emitted. */
  stream: Readable;
  /** Resolves with the SHA-256 of the whole blob once `stream` has ended. */
  digest: Promise<Uint8Array>;
  /** Total blob length (known in advance). */
  length: number;
}

/**
 * Encrypts the file at `path` (which must be `size` bytes) with `key` and `iv`.
 * The same key, IV and file always give the same blob, which is what lets an
 * interrupted upload resume: re-encrypt and skip what the relay already has.
 */
export function encryptFile(path: string, size: number, key: Uint8Array, iv: Uint8Array): EncryptedStream {
  if (iv.length !== IV_BYTES) throw new RangeError(`iv must be ${IV_BYTES} bytes`);
  const { aes, mac } = splitKey(key);
  const hmac = createHmac('sha256', mac);
  const sha = createHash('sha256');
  let resolveDigest!: (d: Uint8Array) => void;
  let rejectDigest!: (e: unknown) => void;
  const digest = new Promise<Uint8Array>((res, rej) => {
    resolveDigest = res;
    rejectDigest = rej;
  });
  digest.catch(() => undefined); // observed by the caller; avoid an unhandled rejection when unused

  async function* blob(): AsyncGenerator<Buffer> {
    const emit = (b: Buffer): Buffer => {
      hmac.update(b);
      sha.update(b);
      return b;
    };
    try {
      yield emit(Buffer.from(iv));
      const cipher = createCipheriv('aes-256-cbc', aes, Buffer.from(iv));
      for await (const chunk of paddedPlaintext(path, size)) {
        const out = cipher.update(chunk);
        if (out.length > 0) yield emit(out);
      }
      yield emit(cipher.final());
      const tag = hmac.digest();
      sha.update(tag);
      yield tag;
      resolveDigest(new Uint8Array(sha.digest()));
    } catch (err) {
      rejectDigest(err);
      throw err;
    }
  }
  return { stream: Readable.from(blob(), { objectMode: false }), digest, length: encryptedSize(size) };
}

/** Why a downloaded blob was refused. */
export type VerifyFailure = 'length' | 'mac' | 'digest' | 'decrypt';

export class AttachmentVerifyError extends Error {
  override readonly name = 'AttachmentVerifyError';
  constructor(readonly reason: VerifyFailure) {
    super(`attachment rejected: ${reason} check failed`);
  }
}

/**
 * Passes bytes through while computing the blob's HMAC (over everything but
 * the last 32 bytes) and SHA-256 (over everything), and counting them.
 */
class BlobChecker extends Transform {
  readonly #hmac: ReturnType<typeof createHmac>;
  readonly #sha = createHash('sha256');
  #tail: Buffer = Buffer.alloc(0);
  length = 0;
  constructor(macKey: Buffer) {
    super();
    this.#hmac = createHmac('sha256', macKey);
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.length += chunk.length;
    this.#sha.update(chunk);
    // Hold back the last MAC_BYTES seen so far: they may be the tag.
    const all = this.#tail.length === 0 ? chunk : Buffer.concat([this.#tail, chunk]);
    const keep = Math.min(MAC_BYTES, all.length);
    const body = all.subarray(0, all.length - keep);
    if (body.length > 0) this.#hmac.update(body);
    this.#tail = Buffer.from(all.subarray(all.length - keep));
    cb(null, chunk);
  }
  result(): { mac: Buffer; tag: Buffer; digest: Buffer } {
    return { mac: this.#hmac.digest(), tag: this.#tail, digest: this.#sha.digest() };
  }
}

/**
 * Streams `source` (a downloaded blob) into `cipherPath` while computing its
 * MAC and digest, then checks length, MAC and digest in constant time.
 * @throws AttachmentVerifyError when any check fails (the caller deletes `cipherPath`).
 */
export async function receiveAndVerify(
  source: AsyncIterable<Uint8Array> | Readable,
  cipherPath: string,
  expect: { key: Uint8Array; digest: Uint8Array; size: number },
): Promise<void> {
  const { mac } = splitKey(expect.key);
  const checker = new BlobChecker(mac);
  const want = encryptedSize(expect.size);
  let tooLong = false;
  // Stop reading as soon as the blob is longer than it can be (extension attack, or a huge answer).
  const limit = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      if (checker.length + chunk.length > want) {
        tooLong = true;
        cb(new AttachmentVerifyError('length'));
        return;
      }
      cb(null, chunk);
    },
  });
  try {
    await pipeline(source, limit, checker, createWriteStream(cipherPath, { mode: 0o600 }));
  } catch (err) {
    if (tooLong) throw new AttachmentVerifyError('length');
    throw err;
  }
  const r = checker.result();
  if (checker.length !== want) throw new AttachmentVerifyError('length');
  const macOk = r.tag.length === MAC_BYTES && timingSafeEqual(r.mac, r.tag);
  const digestOk = expect.digest.length === r.digest.length && timingSafeEqual(r.digest, Buffer.from(expect.digest));
  if (!macOk) throw new AttachmentVerifyError('mac');
  if (!digestOk) throw new AttachmentVerifyError('digest');
}

/**
 * Decrypts a verified blob file into `plainPath` (mode 0600), writing exactly
 * `size` bytes. Call only after `receiveAndVerify` succeeded.
 * @throws AttachmentVerifyError('decrypt') on bad padding (cannot happen for a blob whose MAC verified).
 */
export async function decryptVerifiedFile(cipherPath: string, plainPath: string, key: Uint8Array, size: number): Promise<void> {
  const { aes } = splitKey(key);
  const total = (await fsp.stat(cipherPath)).size;
  const fh = await fsp.open(cipherPath, 'r');
  let iv: Buffer;
  try {
    iv = Buffer.alloc(IV_BYTES);
    const { bytesRead } = await fh.read(iv, 0, IV_BYTES, 0);
    if (bytesRead !== IV_BYTES) throw new AttachmentVerifyError('length');
  } finally {
    await fh.close();
  }
  const decipher = createDecipheriv('aes-256-cbc', aes, iv);
  let written = 0;
  const trim = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      const take = Math.max(0, Math.min(chunk.length, size - written));
      written += take;
      cb(null, take > 0 ? chunk.subarray(0, take) : undefined);
    },
  });
  try {
    await pipeline(
      createReadStream(cipherPath, { start: IV_BYTES, end: total - MAC_BYTES - 1 }),
      decipher,
      trim,
      createWriteStream(plainPath, { mode: 0o600 }),
    );
  } catch (err) {
    if (err instanceof Error && /decrypt|bad/i.test(err.message)) throw new AttachmentVerifyError('decrypt');
    throw err;
  }
  if (written !== size) throw new AttachmentVerifyError('length');
}
