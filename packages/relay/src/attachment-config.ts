/** Attachment settings: limits, expiry and where blobs live. */

const DAY_MS = 24 * 60 * 60 * 1000;
const MIB = 1024 * 1024;

/** S3-compatible storage (AWS S3, MinIO, Ceph RGW, Garage, s3rver, …). */
export interface S3BlobConfig {
  kind: 's3';
  bucket: string;
  /** e.g. `http://127.0.0.1:9000`; unset = AWS. */
  endpoint?: string;
  region: string;
  /** Path-style URLs (`endpoint/bucket/key`), needed by most self-hosted servers. */
  forcePathStyle: boolean;
  /** Unset = the AWS SDK's default credential chain (AWS_ACCESS_KEY_ID, …). */
  accessKeyId?: string;
  secretAccessKey?: string;
  /** Key prefix inside the bucket. */
  prefix: string;
}

export type BlobStoreConfig = { kind: 'fs'; dir?: string } | S3BlobConfig;

export interface AttachmentConfig {
  /** Where blobs live; `fs` defaults to `<dataDir>/blobs`. */
  store: BlobStoreConfig;
  /** Blobs expire this long after their upload slot was granted. */
  ttlMs: number;
  /** Largest blob (encrypted, padded) one upload slot may declare. */
  maxBytes: number;
  /** Bytes of unexpired blobs one account may hold. */
  quotaBytes: number;
  /** Token bucket in bytes per account, charged when a slot is granted. */
  rate: { burstBytes: number; bytesPerSecond: number };
  /** How often expired blobs are deleted. */
  purgeIntervalMs: number;
}

export const defaultAttachmentConfig: AttachmentConfig = {
  store: { kind: 'fs' },
  ttlMs: 30 * DAY_MS,
  maxBytes: 2 * 1024 * MIB,
  quotaBytes: 10 * 1024 * MIB,
  rate: { burstBytes: 4 * 1024 * MIB, bytesPerSecond: 10 * MIB },
  purgeIntervalMs: 60 * 60 * 1000,
};

export function resolveAttachmentConfig(partial: Partial<AttachmentConfig> | undefined): AttachmentConfig {
  return { ...defaultAttachmentConfig, ...(partial ?? {}) };
}

function positive(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const raw = env[name];
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new RangeError(`${name} must be a positive number`);
  return n;
}

/**
 * Attachment settings from the environment (see docs/OPERATIONS.md):
 * PARLEY_ATTACHMENT_TTL_DAYS, PARLEY_ATTACHMENT_MAX_MB, PARLEY_ATTACHMENT_QUOTA_MB,
 * PARLEY_ATTACHMENT_RATE_MB_PER_S, PARLEY_ATTACHMENT_BURST_MB, PARLEY_BLOB_STORE (`fs` or `s3`),
 * PARLEY_BLOB_DIR, PARLEY_S3_BUCKET, PARLEY_S3_ENDPOINT, PARLEY_S3_REGION,
 * PARLEY_S3_FORCE_PATH_STYLE, PARLEY_S3_ACCESS_KEY_ID, PARLEY_S3_SECRET_ACCESS_KEY, PARLEY_S3_PREFIX.
 * Returns only what is set. @throws RangeError on invalid values.
 */
export function attachmentConfigFromEnv(env: NodeJS.ProcessEnv): Partial<AttachmentConfig> | undefined {
  const out: Partial<AttachmentConfig> = {};
  const ttl = positive(env, 'PARLEY_ATTACHMENT_TTL_DAYS');
  if (ttl !== undefined) out.ttlMs = Math.round(ttl * DAY_MS);
  const max = positive(env, 'PARLEY_ATTACHMENT_MAX_MB');
  if (max !== undefined) out.maxBytes = Math.round(max * MIB);
  const quota = positive(env, 'PARLEY_ATTACHMENT_QUOTA_MB');
  if (quota !== undefined) out.quotaBytes = Math.round(quota * MIB);
  const rate = positive(env, 'PARLEY_ATTACHMENT_RATE_MB_PER_S');
  const burst = positive(env, 'PARLEY_ATTACHMENT_BURST_MB');
  if (rate !== undefined || burst !== undefined)
    out.rate = {
      bytesPerSecond: rate !== undefined ? Math.round(rate * MIB) : defaultAttachmentConfig.rate.bytesPerSecond,
      burstBytes: burst !== undefined ? Math.round(burst * MIB) : defaultAttachmentConfig.rate.burstBytes,
    };
  const kind = env.PARLEY_BLOB_STORE;
  if (kind === 's3') {
    const bucket = env.PARLEY_S3_BUCKET;
    if (!bucket) throw new RangeError('PARLEY_S3_BUCKET is required when PARLEY_BLOB_STORE=s3');
    const s3: S3BlobConfig = {
      kind: 's3',
      bucket,
      region: env.PARLEY_S3_REGION || 'us-east-1',
      forcePathStyle: env.PARLEY_S3_FORCE_PATH_STYLE !== '0' && env.PARLEY_S3_FORCE_PATH_STYLE !== 'false',
      prefix: env.PARLEY_S3_PREFIX ?? '',
    };
    if (env.PARLEY_S3_ENDPOINT) s3.endpoint = env.PARLEY_S3_ENDPOINT;
    if (env.PARLEY_S3_ACCESS_KEY_ID) s3.accessKeyId = env.PARLEY_S3_ACCESS_KEY_ID;
    if (env.PARLEY_S3_SECRET_ACCESS_KEY) s3.secretAccessKey = env.PARLEY_S3_SECRET_ACCESS_KEY;
    out.store = s3;
  } else if (kind === undefined || kind === '' || kind === 'fs') {
    if (env.PARLEY_BLOB_DIR) out.store = { kind: 'fs', dir: env.PARLEY_BLOB_DIR };
  } else throw new RangeError('PARLEY_BLOB_STORE must be "fs" or "s3"');
  return Object.keys(out).length > 0 ? out : undefined;
}
