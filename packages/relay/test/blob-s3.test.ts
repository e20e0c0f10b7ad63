/** The S3 adapter passes the BlobStore conformance suite against a local s3rver. */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openS3BlobStore } from '../src/adapters/blobs/s3.js';
import type { S3BlobConfig } from '../src/attachment-config.js';
import { describeBlobStoreConformance, newBlobId } from './blob-conformance.js';
import { type LocalS3, startLocalS3 } from './s3-server.js';

let s3: LocalS3;
beforeAll(async () => {
  s3 = await startLocalS3();
}, 30_000);
afterAll(async () => {
  await s3?.stop();
});

const config = (): S3BlobConfig => ({
  kind: 's3',
  bucket: s3.bucket,
  endpoint: s3.endpoint,
  region: 'us-east-1',
  forcePathStyle: true,
  accessKeyId: s3.accessKeyId,
  secretAccessKey: s3.secretAccessKey,
  // Each store gets its own prefix, so tests sharing the bucket start empty.
  prefix: `t-${randomBytes(6).toString('hex')}/`,
});

// Small segments so multi-segment appends, resumes and reads are exercised.
describeBlobStoreConformance('s3 (s3rver)', async () => openS3BlobStore(config(), { segmentBytes: 256 * 1024 }), { bigBytes: 8 * 1024 * 1024 });

describe('s3 adapter specifics', () => {
  it('answers ping, and a missing bucket fails ping', async () => {
    const store = await openS3BlobStore(config());
    await store.ping();
    await store.close();
    const missing = await openS3BlobStore({ ...config(), bucket: 'no-such-bucket' });
    await expect(missing.ping()).rejects.toThrow();
    await missing.close();
  });

  it('keeps progress at segment granularity across an interrupted append', async () => {
    const store = await openS3BlobStore(config(), { segmentBytes: 1000 });
    const id = newBlobId();
    await store.create({ id, owner: 'o', length: 5000, createdAt: 1, expiresAt: 10 });
    const data = randomBytes(5000);
    async function* broken() {
      yield data.subarray(0, 2500);
      throw new Error('reset');
    }
    expect(await store.append(id, 0, broken())).toEqual({ kind: 'interrupted', offset: 2500 });
    expect(await store.append(id, 2500, (async function* () {
      yield data.subarray(2500);
    })())).toEqual({ kind: 'appended', offset: 5000 });
    const r = await store.read(id, 2);
    const parts: Buffer[] = [];
    for await (const c of r!.stream) parts.push(c as Buffer);
    expect(Buffer.concat(parts).equals(data)).toBe(true);
    await store.close();
  });
});
