/**
 * Moving encrypted attachments to and from the relay.
 *
 * Upload: a small client for the core of the tus 1.0 resumable-upload
 * protocol (creation, HEAD for the offset, PATCH to append) as the relay
 * implements it (docs/PROTOCOL.md, "Attachments"). Bodies stream from the
 * encrypting pipeline straight into the socket, so memory stays bounded.
 * Because encryption is deterministic for a given key, IV and file, an
 * interrupted upload resumes by re-encrypting and skipping the bytes the
 * relay already has.
 *
 * Download: stream the blob to a temporary file while computing its MAC and
 * digest, verify both (constant time), decrypt into a second temporary file
 * and only then give it its final name. Any failure removes both files.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { type Attachment, type BlobId, parseBlobId } from '@parley/wire';
import { AttachmentVerifyError, decryptVerifiedFile, encryptFile, receiveAndVerify } from './attachment-crypto.js';
import { SdkError } from './errors.js';

export const TUS_VERSION = '1.0.0';
const MAX_UPLOAD_ATTEMPTS = 6;

export interface Progress {
  /** Blob bytes the relay has (or that have been sent to it). */
  done: number;
  total: number;
}

interface RawReply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

function agentFor(url: URL): typeof http | typeof https {
  return url.protocol === 'https:' ? https : http;
}

/** One HTTP request; `body` is streamed. Resolves with the (small) answer. */
function rawRequest(url: URL, method: string, headers: Record<string, string>, body?: Readable, timeoutMs = 30_000): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    const req = agentFor(url).request(url, { method, headers, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size <= 64 * 1024) chunks.push(c);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    if (body) {
      body.on('error', (err) => req.destroy(err));
      body.pipe(req);
    } else req.end();
  });
}

function relayCode(reply: RawReply): string | null {
  try {
    const o = JSON.parse(reply.body.toString('utf8')) as { code?: unknown };
    return typeof o.code === 'string' ? o.code : null;
  } catch {
    return null;
  }
}

function replyFailure(reply: RawReply, what: string): SdkError {
  const code = relayCode(reply);
  const retry = Number(reply.headers['retry-after']);
  const extra = Number.isFinite(retry) && retry >= 0 ? { retryAfter: retry } : {};
  if (reply.status === 429) return new SdkError('RATE_LIMITED', `${what}: relay answered 429`, { status: 429, ...extra });
  if (reply.status === 401) return new SdkError('UNAUTHORIZED', `${what}: relay answered 401`, { status: 401 });
  if (code === 'TOO_LARGE' || code === 'QUOTA_EXCEEDED')
    return new SdkError('ATTACHMENT_TOO_LARGE', `${what}: relay answered ${reply.status} ${code}`, { status: reply.status });
  return new SdkError('RELAY_ERROR', `${what}: relay answered ${reply.status}${code ? ` ${code}` : ''}`, { status: reply.status });
}

function unreachable(err: unknown, what: string): SdkError {
  return new SdkError('RELAY_UNREACHABLE', `${what}: cannot reach the relay`, { cause: err });
}

/** Drops the first `n` bytes of a stream. */
function skipBytes(n: number): Transform {
  let left = n;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      if (left >= chunk.length) {
        left -= chunk.length;
        cb();
        return;
      }
      const out = left > 0 ? chunk.subarray(left) : chunk;
      left = 0;
      cb(null, out);
    },
  });
}

function counter(onBytes: (n: number) => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      onBytes(chunk.length);
      cb(null, chunk);
    },
  });
}

export interface UploadSlot {
  blobId: BlobId;
  /** Absolute URL of the tus upload resource. */
  location: string;
}

/** `POST /v1/attachments/uploads`: asks the relay for an upload slot of `length` bytes. */
export async function createUpload(serverUrl: string, auth: string, length: number): Promise<UploadSlot> {
  const url = new URL('/v1/attachments/uploads', serverUrl);
  let reply: RawReply;
  try {
    reply = await rawRequest(url, 'POST', { authorization: auth, 'tus-resumable': TUS_VERSION, 'upload-length': String(length), 'content-length': '0' });
  } catch (err) {
    throw unreachable(err, 'attachment upload');
  }
  if (reply.status !== 201) throw replyFailure(reply, 'attachment upload');
  const loc = reply.headers.location;
  let blobId: BlobId;
  try {
    blobId = parseBlobId((JSON.parse(reply.body.toString('utf8')) as { id?: unknown }).id);
  } catch (err) {
    throw new SdkError('RELAY_ERROR', 'the relay sent a malformed upload answer', { cause: err });
  }
  if (typeof loc !== 'string') throw new SdkError('RELAY_ERROR', 'the relay sent no upload location');
  return { blobId, location: new URL(loc, serverUrl).toString() };
}

/** `HEAD <location>`: the relay's offset, or null when the upload is gone (expired, unknown). */
export async function uploadOffset(location: string, auth: string): Promise<number | null> {
  let reply: RawReply;
  try {
    reply = await rawRequest(new URL(location), 'HEAD', { authorization: auth, 'tus-resumable': TUS_VERSION });
  } catch (err) {
    throw unreachable(err, 'attachment upload');
  }
  if (reply.status === 404 || reply.status === 410) return null;
  if (reply.status !== 200 && reply.status !== 204) throw replyFailure(reply, 'attachment upload');
  const off = Number(reply.headers['upload-offset']);
  if (!Number.isSafeInteger(off) || off < 0) throw new SdkError('RELAY_ERROR', 'the relay sent a bad upload offset');
  return off;
}

export interface PushOptions {
  location: string;
  auth: string;
  file: { path: string; size: number };
  key: Uint8Array;
  iv: Uint8Array;
  onProgress?: (p: Progress) => void;
  /** Called once with the relay's offset when it is greater than 0 at the start (a resumed upload). */
  onResume?: (offset: number, total: number) => void;
  /** Waits between retries (injected by tests). */
  sleep?: (ms: number) => Promise<void>;
}

/**
 * Sends the encrypted file to an upload resource, resuming from the relay's
 * offset and retrying after network failures and offset conflicts.
 * Resolves with the blob's SHA-256 digest, or `null` when the upload resource
 * no longer exists (the caller starts a new one).
 */
export async function pushUpload(o: PushOptions): Promise<Uint8Array | null> {
  const sleep = o.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  let lastErr: unknown = null;
  let first = true;
  for (let attempt = 0; attempt < MAX_UPLOAD_ATTEMPTS; attempt++) {
    if (attempt > 0) await sleep(Math.min(8000, 250 * 2 ** attempt));
    let offset: number | null;
    try {
      offset = await uploadOffset(o.location, o.auth);
    } catch (err) {
      if (SdkError.is(err, 'RELAY_UNREACHABLE')) {
        lastErr = err;
        continue;
      }
      throw err;
    }
    if (offset === null) return null;
    const enc = encryptFile(o.file.path, o.file.size, o.key, o.iv);
    if (first && offset > 0) o.onResume?.(offset, enc.length);
    first = false;
    if (offset > enc.length) return null; // not our blob any more
    let sent = offset;
    o.onProgress?.({ done: sent, total: enc.length });
    if (offset === enc.length) {
      // The relay has everything; the stream still has to run to compute the digest.
      await pipeline(enc.stream, skipBytes(enc.length));
      return enc.digest;
    }
    const body = enc.stream.pipe(skipBytes(offset)).pipe(
      counter((n) => {
        sent += n;
        o.onProgress?.({ done: sent, total: enc.length });
      }),
    );
    enc.stream.on('error', (err) => body.destroy(err));
    let reply: RawReply;
    try {
      reply = await rawRequest(
        new URL(o.location),
        'PATCH',
        {
          authorization: o.auth,
          'tus-resumable': TUS_VERSION,
          'upload-offset': String(offset),
          'content-type': 'application/offset+octet-stream',
          'content-length': String(enc.length - offset),
        },
        body,
        120_000,
      );
    } catch (err) {
      enc.stream.destroy();
      if (err instanceof Error && /file (grew|shrank)/.test(err.message))
        throw new SdkError('INVALID_INPUT', 'the file changed while it was being sent', { cause: err });
      lastErr = err;
      continue; // network failure: ask for the offset again
    }
    if (reply.status === 204 || reply.status === 200) {
      const newOffset = Number(reply.headers['upload-offset']);
      if (newOffset === enc.length) return await enc.digest;
      lastErr = new Error('upload incomplete');
      continue;
    }
    if (reply.status === 409) {
      lastErr = replyFailure(reply, 'attachment upload');
      continue; // offset conflict or a stale PATCH still running on the relay: re-read the offset
    }
    if (reply.status === 404) return null;
    throw replyFailure(reply, 'attachment upload');
  }
  if (lastErr instanceof SdkError) throw lastErr;
  throw unreachable(lastErr, 'attachment upload');
}

// ---------------------------------------------------------------- download

/** A file name that is safe to create in the downloads folder. */
export function safeFileName(name: string, fallback: string): string {
  // eslint-disable-next-line no-control-regex
  let n = path.basename(name.replace(/\\/g, '/')).replace(/[\u0000-\u001f\u007f-\u009f/\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, '_');
  n = n.replace(/^\.+/, '').trim();
  if (Buffer.byteLength(n) > 200) n = n.slice(0, 100);
  return n === '' ? fallback : n;
}

/** Creates `dir/name` without ever replacing a file: `name`, `name (1)`, … */
async function linkUnique(src: string, dir: string, name: string): Promise<string> {
  const ext = path.extname(name);
  const stem = name.slice(0, name.length - ext.length);
  for (let i = 0; i < 1000; i++) {
    const candidate = path.join(dir, i === 0 ? name : `${stem} (${i})${ext}`);
    try {
      await fsp.link(src, candidate);
      return candidate;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  throw new SdkError('INVALID_INPUT', 'too many files with the same name in the downloads folder');
}

const TEMP = /^\.parley-[0-9a-f]{16}\.(blob|part)$/;

/**
 * Temporary files a killed process left behind. Only one process uses a
 * profile at a time (the profile lock), so any such file in its downloads
 * folder is stale.
 */
async function removeStaleTemp(dir: string): Promise<void> {
  for (const name of await fsp.readdir(dir).catch(() => [] as string[]))
    if (TEMP.test(name)) await fsp.rm(path.join(dir, name), { force: true });
}

export interface FetchOptions {
  serverUrl: string;
  attachment: Attachment;
  dir: string;
  /** Used when the pointer carries no file name. */
  fallbackName: string;
  onProgress?: (p: Progress) => void;
}

/** Streams the blob into a temp file, verifies it, decrypts it, and returns the final path. */
export async function fetchAttachment(o: FetchOptions): Promise<string> {
  const a = o.attachment;
  await fsp.mkdir(o.dir, { recursive: true, mode: 0o700 });
  await removeStaleTemp(o.dir);
  const tag = randomBytes(8).toString('hex');
  const cipherPath = path.join(o.dir, `.parley-${tag}.blob`);
  const plainPath = path.join(o.dir, `.parley-${tag}.part`);
  const cleanup = async () => {
    await fsp.rm(cipherPath, { force: true });
    await fsp.rm(plainPath, { force: true });
  };
  try {
    const url = new URL(`/v1/attachments/${a.blobId}`, o.serverUrl);
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = agentFor(url).get(url, { timeout: 120_000 }, resolve);
      req.on('timeout', () => req.destroy(new Error('download timed out')));
      req.on('error', reject);
    }).catch((err: unknown) => {
      throw unreachable(err, 'attachment download');
    });
    if (res.statusCode !== 200) {
      res.resume();
      if (res.statusCode === 404) throw new SdkError('ATTACHMENT_UNAVAILABLE', 'the attachment is no longer on the relay (expired or never completed)', { status: 404 });
      throw new SdkError('RELAY_ERROR', `attachment download: relay answered ${res.statusCode}`, { ...(res.statusCode ? { status: res.statusCode } : {}) });
    }
    const total = Number(res.headers['content-length'] ?? NaN);
    let done = 0;
    const source = o.onProgress
      ? res.pipe(
          counter((n) => {
            done += n;
            o.onProgress?.({ done, total: Number.isFinite(total) ? total : done });
          }),
        )
      : res;
    try {
      await receiveAndVerify(source, cipherPath, { key: a.key, digest: a.digest, size: a.size });
    } catch (err) {
      res.destroy();
      if (err instanceof AttachmentVerifyError) throw new SdkError('ATTACHMENT_INVALID', err.message, { cause: err });
      throw new SdkError('RELAY_UNREACHABLE', 'attachment download failed mid-transfer', { cause: err });
    }
    await decryptVerifiedFile(cipherPath, plainPath, a.key, a.size).catch((err: unknown) => {
      if (err instanceof AttachmentVerifyError) throw new SdkError('ATTACHMENT_INVALID', err.message, { cause: err });
      throw err;
    });
    return await linkUnique(plainPath, o.dir, safeFileName(a.fileName, o.fallbackName));
  } finally {
    await cleanup();
  }
}

/**
 * Verify and decrypt a blob that is already in memory or a stream, into `dir`.
 * Used by tests and by callers that fetch blobs themselves. Leaves no file on failure.
 */
export async function verifyAndDecryptTo(
  source: AsyncIterable<Uint8Array> | Readable,
  attachment: Pick<Attachment, 'key' | 'digest' | 'size'>,
  dir: string,
  name: string,
): Promise<string> {
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  const tag = randomBytes(8).toString('hex');
  const cipherPath = path.join(dir, `.parley-${tag}.blob`);
  const plainPath = path.join(dir, `.parley-${tag}.part`);
  try {
    await receiveAndVerify(source, cipherPath, attachment);
    await decryptVerifiedFile(cipherPath, plainPath, attachment.key, attachment.size);
    return await linkUnique(plainPath, dir, name);
  } finally {
    await fsp.rm(cipherPath, { force: true });
    await fsp.rm(plainPath, { force: true });
  }
}
