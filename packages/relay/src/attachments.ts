/**
 * Attachment routes: upload slots and resumable uploads (the core of tus 1.0:
 * creation, HEAD for the offset, PATCH to append) and downloads by blob id.
 *
 * These routes sit on Fastify directly rather than on the shared Router,
 * because upload bodies are streamed into the BlobStore instead of being
 * buffered (the Router takes whole bodies of at most 2 MiB).
 *
 * Binding: POST (the slot) and every HEAD/PATCH need Basic auth, and the
 * blob must belong to the authenticated account; anyone else gets 404, the
 * same as for an unknown id. GET needs no account, only the random id, and
 * serves complete blobs only.
 *
 * Logs and metrics carry no blob ids, accounts or sizes per user.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Transform } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Counter } from 'prom-client';
import type { Logger } from 'pino';
import { type AttachmentConfig } from './attachment-config.js';
import { parseBasicAuth } from './auth.js';
import type { BlobStore } from './blobstore.js';
import { type ErrorCode, ErrorCodes, RelayError } from './errors.js';
import type { RelayMetrics } from './metrics.js';
import type { Clock } from './ports.js';
import type { DeviceRef, Relay } from './relay.js';
import { describeBug } from './router.js';

export const TUS_VERSION = '1.0.0';
const BLOB_ID = /^[A-Za-z0-9_-]{32}$/;
const UPLOADS = '/v1/attachments/uploads';
const TUS_HEADERS = { 'tus-resumable': TUS_VERSION, 'cache-control': 'no-store' };

/** The owner key a BlobStore sees: a hash, so blob metadata holds no account ids. */
export function blobOwner(account: string): string {
  return createHash('sha256').update(`parley-blob-owner:${account}`).digest('base64url').slice(0, 32);
}

export function newBlobId(): string {
  return randomBytes(24).toString('base64url');
}

/** Token buckets measured in bytes, one per owner, in this process. */
export class ByteRateLimiter {
  readonly #buckets = new Map<string, { tokens: number; at: number }>();
  constructor(
    private readonly rate: { burstBytes: number; bytesPerSecond: number },
    private readonly clock: Clock,
  ) {}

  /** Charges `bytes`; returns the seconds to wait when the bucket cannot cover them (nothing is charged then). */
  take(key: string, bytes: number): { kind: 'allowed' } | { kind: 'limited'; retryAfterSeconds: number } {
    const now = this.clock.now();
    const { burstBytes, bytesPerSecond } = this.rate;
    let b = this.#buckets.get(key);
    if (!b) {
      if (this.#buckets.size > 100_000) this.#buckets.clear();
      b = { tokens: burstBytes, at: now };
      this.#buckets.set(key, b);
    }
    b.tokens = Math.min(burstBytes, b.tokens + (Math.max(0, now - b.at) / 1000) * bytesPerSecond);
    b.at = now;
    if (b.tokens >= bytes) {
      b.tokens -= bytes;
      return { kind: 'allowed' };
    }
    const wait = bytesPerSecond > 0 ? (bytes - b.tokens) / bytesPerSecond : 3600;
    return { kind: 'limited', retryAfterSeconds: Math.max(1, Math.ceil(wait)) };
  }
}

export interface AttachmentsDeps {
  relay: Relay;
  blobs: BlobStore;
  clock: Clock;
  config: AttachmentConfig;
  log: Logger;
  metrics: RelayMetrics;
}

export interface AttachmentsEdge {
  /** Delete expired blobs now. */
  purge(): Promise<number>;
  /** Stop the purge timer, wait for running uploads, close the BlobStore. */
  close(): Promise<void>;
}

function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function parseLength(value: string | undefined, field: string): number {
  if (value === undefined || !/^[0-9]{1,16}$/.test(value)) throw new RelayError('BAD_REQUEST', `${field}: must be a non-negative integer`);
  const n = Number(value);
  if (!Number.isSafeInteger(n)) throw new RelayError('BAD_REQUEST', `${field}: out of range`);
  return n;
}

/** Registers the attachment routes on `app` and starts the purge timer. */
export function registerAttachments(app: FastifyInstance, deps: AttachmentsDeps): AttachmentsEdge {
  const { relay, blobs, clock, config, log } = deps;
  const limiter = new ByteRateLimiter(config.rate, clock);
  const busy = new Set<string>();
  const running = new Set<Promise<unknown>>();
  const bytesIn = new Counter({ name: 'parley_relay_attachment_bytes_received_total', help: 'Attachment bytes stored', registers: [deps.metrics.registry] });
  const bytesOut = new Counter({ name: 'parley_relay_attachment_bytes_served_total', help: 'Attachment bytes served', registers: [deps.metrics.registry] });
  const uploads = new Counter({
    name: 'parley_relay_attachment_uploads_total',
    help: 'Upload requests by outcome',
    labelNames: ['result'],
    registers: [deps.metrics.registry],
  });

  // Upload bodies reach the handler as the raw request stream.
  app.addContentTypeParser('application/offset+octet-stream', (_req, _payload, done) => done(null, undefined));

  const fail = (reply: FastifyReply, code: ErrorCode, message: string, extra: Record<string, string> = {}) => {
    deps.metrics.errors.inc({ code });
    return reply
      .code(ErrorCodes[code])
      .headers({ ...TUS_HEADERS, ...extra })
      .type('application/json')
      .send(JSON.stringify({ code, message }));
  };

  /** Runs a handler with the same error mapping and one log line per request as the other routes. */
  const wrap =
    (pattern: string, fn: (req: FastifyRequest, reply: FastifyReply) => Promise<FastifyReply>) =>
    async (req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
      const started = performance.now();
      let code: ErrorCode | undefined;
      try {
        return await fn(req, reply);
      } catch (err) {
        if (err instanceof RelayError) {
          code = err.code;
          const extra: Record<string, string> = {};
          if (err.details.retryAfterSeconds !== undefined) extra['retry-after'] = String(err.details.retryAfterSeconds);
          return fail(reply, err.code, err.message, extra);
        }
        code = 'INTERNAL';
        log.error({ requestId: req.id, err: describeBug(err) }, 'unexpected error');
        return fail(reply, 'INTERNAL', 'internal error');
      } finally {
        log.info({ requestId: req.id, method: req.method, route: pattern, status: reply.statusCode, code, ms: Math.round(performance.now() - started) }, 'request');
      }
    };

  const authenticate = (req: FastifyRequest): Promise<DeviceRef> => relay.authenticate(parseBasicAuth(header(req, 'authorization')));

  const checkVersion = (req: FastifyRequest) => {
    if (header(req, 'tus-resumable') !== TUS_VERSION)
      throw new RelayError('UNSUPPORTED_VERSION', `Tus-Resumable must be ${TUS_VERSION}`);
  };

  /** The caller's own, unexpired upload, or NOT_FOUND (also for other accounts' blobs). */
  const ownUpload = async (req: FastifyRequest, me: DeviceRef) => {
    const id = (req.params as { id?: string }).id ?? '';
    if (!BLOB_ID.test(id)) throw new RelayError('NOT_FOUND', 'no such upload');
    const info = await blobs.info(id, clock.now());
    if (!info || info.owner !== blobOwner(me.account)) throw new RelayError('NOT_FOUND', 'no such upload');
    return info;
  };

  app.options(UPLOADS, async (_req, reply) =>
    reply
      .code(204)
      .headers({ ...TUS_HEADERS, 'tus-version': TUS_VERSION, 'tus-extension': 'creation', 'tus-max-size': String(config.maxBytes) })
      .send(),
  );

  app.post(
    UPLOADS,
    wrap(UPLOADS, async (req, reply) => {
      const me = await authenticate(req);
      checkVersion(req);
      if (header(req, 'upload-defer-length') !== undefined) throw new RelayError('BAD_REQUEST', 'Upload-Defer-Length is not supported');
      const length = parseLength(header(req, 'upload-length'), 'Upload-Length');
      if (length > config.maxBytes) throw new RelayError('TOO_LARGE', `an attachment is at most ${config.maxBytes} bytes`);
      const owner = blobOwner(me.account);
      const now = clock.now();
      if ((await blobs.usage(owner, now)) + length > config.quotaBytes)
        throw new RelayError('QUOTA_EXCEEDED', 'the account holds too many attachment bytes; wait until older ones expire');
      const charge = limiter.take(owner, length);
      if (charge.kind === 'limited') {
        deps.metrics.rateLimited.inc({ bucket: 'attachmentBytes' });
        throw new RelayError('RATE_LIMITED', 'too many attachment bytes', { retryAfterSeconds: charge.retryAfterSeconds });
      }
      const id = newBlobId();
      const expiresAt = now + config.ttlMs;
      await blobs.create({ id, owner, length, createdAt: now, expiresAt });
      const location = `${UPLOADS}/${id}`;
      return reply
        .code(201)
        .headers({ ...TUS_HEADERS, location, 'upload-offset': '0' })
        .type('application/json')
        .send(JSON.stringify({ id, location, expiresAt }));
    }),
  );

  app.head(
    `${UPLOADS}/:id`,
    wrap(`HEAD ${UPLOADS}/:id`, async (req, reply) => {
      const me = await authenticate(req);
      checkVersion(req);
      const info = await ownUpload(req, me);
      return reply
        .code(200)
        .headers({ ...TUS_HEADERS, 'upload-offset': String(info.offset), 'upload-length': String(info.length) })
        .send();
    }),
  );

  app.patch(
    `${UPLOADS}/:id`,
    wrap(`${UPLOADS}/:id`, async (req, reply) => {
      const me = await authenticate(req);
      checkVersion(req);
      const type = (header(req, 'content-type') ?? '').split(';')[0]?.trim().toLowerCase();
      if (type !== 'application/offset+octet-stream')
        throw new RelayError('UNSUPPORTED_MEDIA_TYPE', 'PATCH body must be application/offset+octet-stream');
      const offset = parseLength(header(req, 'upload-offset'), 'Upload-Offset');
      const info = await ownUpload(req, me);
      if (offset !== info.offset) throw new RelayError('OFFSET_MISMATCH', `Upload-Offset must be ${info.offset}`);
      const declared = header(req, 'content-length');
      if (declared !== undefined && parseLength(declared, 'Content-Length') > info.length - info.offset)
        throw new RelayError('TOO_LARGE', 'body is longer than the rest of the upload');
      if (busy.has(info.id)) throw new RelayError('UPLOAD_BUSY', 'another request is appending to this upload; retry after a moment');
      busy.add(info.id);
      const work = blobs.append(info.id, offset, req.raw);
      running.add(work);
      let res;
      try {
        res = await work;
      } finally {
        busy.delete(info.id);
        running.delete(work);
      }
      uploads.inc({ result: res.kind });
      switch (res.kind) {
        case 'appended':
        case 'interrupted':
          bytesIn.inc(res.offset - offset);
          return reply
            .code(204)
            .headers({ ...TUS_HEADERS, 'upload-offset': String(res.offset) })
            .send();
        case 'offsetMismatch':
          throw new RelayError('OFFSET_MISMATCH', `Upload-Offset must be ${res.offset}`);
        case 'tooLarge':
          throw new RelayError('TOO_LARGE', 'body is longer than the rest of the upload');
        case 'notFound':
          throw new RelayError('NOT_FOUND', 'no such upload');
      }
    }),
  );

  app.get(
    '/v1/attachments/:id',
    wrap('/v1/attachments/:id', async (req, reply) => {
      const id = (req.params as { id?: string }).id ?? '';
      if (!BLOB_ID.test(id)) throw new RelayError('NOT_FOUND', 'no such attachment');
      const found = await blobs.read(id, clock.now());
      if (!found) throw new RelayError('NOT_FOUND', 'no such attachment');
      // A blob shorter or longer on storage than recorded (damage, tampering) must not look
      // complete: the connection is cut instead of ending the body early.
      let sent = 0;
      const exact = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          sent += chunk.length;
          if (sent > found.length) cb(new Error('stored blob longer than recorded'));
          else cb(null, chunk);
        },
        flush(cb) {
          if (sent !== found.length) cb(new Error('stored blob shorter than recorded'));
          else {
            bytesOut.inc(sent);
            cb();
          }
        },
      });
      found.stream.on('error', (err) => exact.destroy(err));
      exact.on('error', () => {
        found.stream.destroy();
        reply.raw.destroy();
      });
      return reply
        .code(200)
        .headers({ 'content-length': String(found.length), 'cache-control': 'private, max-age=86400, immutable' })
        .type('application/octet-stream')
        .send(found.stream.pipe(exact));
    }),
  );

  const purge = async () => {
    const n = await blobs.purge(clock.now());
    log.info({ blobs: n }, 'purge attachments');
    return n;
  };
  let purging: Promise<unknown> = Promise.resolve();
  const timer = setInterval(() => {
    purging = purge().catch((err: unknown) => log.error({ err: describeBug(err) }, 'attachment purge failed'));
  }, config.purgeIntervalMs);
  timer.unref();

  let closing: Promise<void> | null = null;
  return {
    purge,
    close: () =>
      (closing ??= (async () => {
        clearInterval(timer);
        await purging;
        await Promise.allSettled([...running]);
        await blobs.close();
      })()),
  };
}
