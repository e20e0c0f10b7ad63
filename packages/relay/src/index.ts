/** Public API of @parley/relay. */
export {
  type RelayConfig,
  type RateLimitConfig,
  type BucketConfig,
  defaultRelayConfig,
  relayConfigFromEnv,
  defaultRateLimits,
} from './config.js';
export { type RunningRelay, startRelay } from './start.js';
export { type BuiltRelay, type RelayBuildDeps, buildRelay, createLogger } from './build.js';
export { RelayError, ErrorCodes, type ErrorCode, type ErrorDetails } from './errors.js';
export type * from './ports.js';
export { deviceKey, systemClock } from './ports.js';
export { Relay, LOW_KEY_THRESHOLD, type DeviceRef } from './relay.js';
export { MemoryRateLimiter } from './ratelimit.js';
export { CloseCodes, type GatewayOptions } from './gateway.js';
export { openSqliteStore, SqliteStore } from './adapters/store/sqlite.js';
export { LocalBus } from './adapters/bus/local.js';
export { storeKind, busKind, rateLimiterKind } from './config.js';
// Cluster adapters: these modules load their drivers (pg, NATS, ioredis) only when opened.
export { openPostgresStore, PostgresStore, migratePostgres, type PostgresStoreOptions } from './adapters/store/postgres.js';
export { openNatsBus, NatsBus, type NatsBusOptions } from './adapters/bus/nats.js';
export { openRedisRateLimiter, RedisRateLimiter, type RedisRateLimiterOptions } from './adapters/ratelimit/redis.js';
// Sealed sender: trust root and server certificate files (used by `parley relay trust-root` / `server-cert`).
export {
  type ServerSigner,
  type TrustRootFile,
  type ServerCertificateFile,
  createTrustRoot,
  createServerCertificate,
  parseTrustRoot,
  parseServerCertificate,
  loadServerSigner,
  writeSecretFile,
  DEFAULT_SENDER_CERTIFICATE_TTL_MS,
} from './sealed.js';
export type { BlobStore, BlobInfo, NewBlob, AppendResult } from './blobstore.js';
export { type AttachmentConfig, type BlobStoreConfig, type S3BlobConfig, defaultAttachmentConfig, attachmentConfigFromEnv } from './attachment-config.js';
export { FsBlobStore, openFsBlobStore } from './adapters/blobs/fs.js';
export { openBlobStore } from './adapters/blobs/open.js';
