/**
 * BlobStore on any S3-compatible service, using only PutObject, GetObject,
 * DeleteObject(s) and ListObjectsV2, so it works with AWS, MinIO, Ceph,
 * Garage and test servers alike (no multipart-upload features needed).
 *
 * Layout under the configured prefix:
 *
 *   meta/<id>                                  JSON: owner, length, offset, times, segment sizes
 *   data/<id>/<segment number, 6 digits>       the blob's bytes, in order
 *   owner/<owner>/<expiresAt, 15 digits>/<length>/<id>   empty; `usage` lists these
 *   expiry/<expiresAt, 15 digits>/<id>         empty; `purge` lists these in time order
 *
 * An append buffers at most one segment (8 MiB by default) in memory and
 * writes it as its own object, then rewrites the meta object, so progress
 * survives a dropped connection or a relay crash at segment granularity; the
 * bytes of a segment that had not been written yet are simply sent again by
 * the resuming client. Appends to one blob are serialized by the caller
 * (per node; concurrent appends from two nodes to one blob are not guarded).
 *
 * The AWS SDK loads lazily, only when this adapter is opened.
 */
import { Readable } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import type { S3BlobConfig } from '../../attachment-config.js';
import { type AppendResult, type BlobInfo, type BlobStore, BlobTooLargeError, type NewBlob, limitBytes } from '../../blobstore.js';

type S3Module = typeof import('@aws-sdk/client-s3');

interface Meta {
  owner: string;
  length: number;
  offset: number;
  createdAt: number;
  expiresAt: number;
  /** Sizes of data/<id>/000000, 000001, … */
  segments: number[];
}

const ID = /^[A-Za-z0-9_-]{1,64}$/;
const OWNER = /^[A-Za-z0-9_.-]{1,128}$/;
const pad = (n: number, w: number) => String(n).padStart(w, '0');

export interface S3BlobStoreOptions {
  /** Largest segment held in memory per append (default 8 MiB). */
  segmentBytes?: number;
}

function isNotFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.$metadata?.httpStatusCode === 404;
}

export class S3BlobStore implements BlobStore {
  readonly #segmentBytes: number;

  constructor(
    private readonly s3: S3Module,
    private readonly client: S3Client,
    private readonly config: S3BlobConfig,
    opts: S3BlobStoreOptions = {},
  ) {
    this.#segmentBytes = opts.segmentBytes ?? 8 * 1024 * 1024;
  }

  #key(...parts: string[]): string {
    return `${this.config.prefix}${parts.join('/')}`;
  }

  #checkId(id: string): void {
    if (!ID.test(id)) throw new RangeError('bad blob id');
  }

  async #put(key: string, body: Uint8Array | string): Promise<void> {
    await this.client.send(new this.s3.PutObjectCommand({ Bucket: this.config.bucket, Key: key, Body: body, ContentLength: Buffer.byteLength(body) }));
  }

  async #del(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      if (batch.length === 1) {
        await this.client.send(new this.s3.DeleteObjectCommand({ Bucket: this.config.bucket, Key: batch[0] }));
        continue;
      }
      await this.client.send(
        new this.s3.DeleteObjectsCommand({ Bucket: this.config.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }),
      );
    }
  }

  async *#list(prefix: string): AsyncGenerator<string> {
    let token: string | undefined;
    do {
      const res = await this.client.send(
        new this.s3.ListObjectsV2Command({ Bucket: this.config.bucket, Prefix: prefix, ...(token ? { ContinuationToken: token } : {}) }),
      );
      for (const o of res.Contents ?? []) if (o.Key) yield o.Key;
      token = res.IsTruncated ? res.NextContinuationToken : undefined;
    } while (token);
  }

  async #meta(id: string): Promise<Meta | null> {
    this.#checkId(id);
    try {
      const res = await this.client.send(new this.s3.GetObjectCommand({ Bucket: this.config.bucket, Key: this.#key('meta', id) }));
      const text = (await res.Body?.transformToString('utf8')) ?? '';
      return JSON.parse(text) as Meta;
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  #writeMeta(id: string, m: Meta): Promise<void> {
    return this.#put(this.#key('meta', id), JSON.stringify(m));
  }

  #indexKeys(id: string, m: Pick<Meta, 'owner' | 'expiresAt' | 'length'>): string[] {
    return [this.#key('owner', m.owner, pad(m.expiresAt, 15), String(m.length), id), this.#key('expiry', pad(m.expiresAt, 15), id)];
  }

  async create(b: NewBlob): Promise<void> {
    this.#checkId(b.id);
    if (!OWNER.test(b.owner)) throw new RangeError('bad owner key');
    const m: Meta = { owner: b.owner, length: b.length, offset: 0, createdAt: b.createdAt, expiresAt: b.expiresAt, segments: [] };
    // Index entries first: a crash in between leaves an entry that purge cleans up.
    for (const k of this.#indexKeys(b.id, m)) await this.#put(k, '');
    await this.#writeMeta(b.id, m);
  }

  async info(id: string, now: number): Promise<BlobInfo | null> {
    const m = await this.#meta(id);
    if (!m || m.expiresAt <= now) return null;
    return { id, owner: m.owner, length: m.length, offset: m.offset, createdAt: m.createdAt, expiresAt: m.expiresAt };
  }

  async append(id: string, expectedOffset: number, source: AsyncIterable<Uint8Array>): Promise<AppendResult> {
    const m = await this.#meta(id);
    if (!m) return { kind: 'notFound' };
    if (m.offset !== expectedOffset) return { kind: 'offsetMismatch', offset: m.offset };
    const start = m.offset;
    const firstSegment = m.segments.length;
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    const flush = async () => {
      if (pendingBytes === 0) return;
      const body = Buffer.concat(pending, pendingBytes);
      pending = [];
      pendingBytes = 0;
      await this.#put(this.#key('data', id, pad(m.segments.length, 6)), body);
      m.segments.push(body.length);
      m.offset += body.length;
      await this.#writeMeta(id, m);
    };
    try {
      for await (const chunk of limitBytes(source, m.length - start)) {
        let c = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
        while (c.length > 0) {
          const take = Math.min(c.length, this.#segmentBytes - pendingBytes);
          pending.push(Buffer.from(c.subarray(0, take)));
          pendingBytes += take;
          c = c.subarray(take);
          if (pendingBytes === this.#segmentBytes) await flush();
        }
      }
      await flush();
      return { kind: 'appended', offset: m.offset };
    } catch (err) {
      if (err instanceof BlobTooLargeError) {
        // Undo every segment written by this call.
        const keys = m.segments.slice(firstSegment).map((_, i) => this.#key('data', id, pad(firstSegment + i, 6)));
        m.segments = m.segments.slice(0, firstSegment);
        m.offset = start;
        await this.#writeMeta(id, m);
        if (keys.length > 0) await this.#del(keys);
        return { kind: 'tooLarge', offset: start };
      }
      // The source failed: keep what arrived, including the partial segment.
      await flush();
      return { kind: 'interrupted', offset: m.offset };
    }
  }

  async read(id: string, now: number): Promise<{ length: number; stream: Readable } | null> {
    const m = await this.#meta(id);
    if (!m || m.expiresAt <= now || m.offset !== m.length) return null;
    const getSegment = (i: number) =>
      this.client.send(new this.s3.GetObjectCommand({ Bucket: this.config.bucket, Key: this.#key('data', id, pad(i, 6)) }));
    async function* body(): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < m!.segments.length; i++) {
        const res = await getSegment(i);
        const stream = res.Body as unknown as AsyncIterable<Uint8Array> | undefined;
        if (!stream) throw new Error('segment without body');
        for await (const c of stream) yield c;
      }
    }
    return { length: m.length, stream: Readable.from(body(), { objectMode: false }) };
  }

  async usage(owner: string, now: number): Promise<number> {
    if (!OWNER.test(owner)) return 0;
    const prefix = this.#key('owner', owner, '');
    let total = 0;
    for await (const key of this.#list(prefix)) {
      const [exp, len] = key.slice(prefix.length).split('/');
      if (Number(exp) > now) total += Number(len);
    }
    return total;
  }

  async purge(now: number): Promise<number> {
    const prefix = this.#key('expiry', '');
    const expired: string[] = [];
    for await (const key of this.#list(prefix)) {
      const [exp, id] = key.slice(prefix.length).split('/');
      if (Number(exp) > now) break; // keys are listed in time order
      if (id && ID.test(id)) expired.push(id);
    }
    for (const id of expired) await this.delete(id);
    return expired.length;
  }

  async delete(id: string): Promise<void> {
    const m = await this.#meta(id);
    const keys: string[] = [];
    for await (const k of this.#list(this.#key('data', id, ''))) keys.push(k);
    if (m) keys.push(...this.#indexKeys(id, m));
    keys.push(this.#key('meta', id));
    await this.#del(keys);
    if (!m) {
      // Index entries of a blob whose meta never got written (crash during create).
      const stale: string[] = [];
      for await (const k of this.#list(this.#key('expiry', ''))) if (k.endsWith(`/${id}`)) stale.push(k);
      if (stale.length > 0) await this.#del(stale);
    }
  }

  async ping(): Promise<void> {
    await this.client.send(new this.s3.HeadBucketCommand({ Bucket: this.config.bucket }));
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}

/** Connects to the configured bucket (loading the AWS SDK now). */
export async function openS3BlobStore(config: S3BlobConfig, opts: S3BlobStoreOptions = {}): Promise<S3BlobStore> {
  const s3 = await import('@aws-sdk/client-s3');
  const client = new s3.S3Client({
    region: config.region,
    forcePathStyle: config.forcePathStyle,
    // Only the checksums S3 requires: many S3-compatible servers reject the newer default trailers.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    ...(config.endpoint ? { endpoint: config.endpoint } : {}),
    ...(config.accessKeyId && config.secretAccessKey
      ? { credentials: { accessKeyId: config.accessKeyId, secretAccessKey: config.secretAccessKey } }
      : {}),
  });
  return new S3BlobStore(s3, client, config, opts);
}
