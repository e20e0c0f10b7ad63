/** Relay configuration: defaults, and reading it from the environment. */
import { type AttachmentConfig, attachmentConfigFromEnv } from './attachment-config.js';

/** One token bucket: `burst` tokens at most, refilled at `perSecond`. */
export interface BucketConfig {
  burst: number;
  perSecond: number;
}

/** Token buckets for each rate-limited action. */
export interface RateLimitConfig {
  /** Registrations per client IP. */
  register: BucketConfig;
  /** Sends per device. */
  send: BucketConfig;
  /** Pre-key bundle fetches per device. */
  bundle: BucketConfig;
  /** Username lookups per device. */
  lookup: BucketConfig;
  /** Sealed-sender (unauthenticated) sends per recipient account. */
  sealedRecipient: BucketConfig;
  /** Sealed-sender (unauthenticated) sends per client address. */
  sealedAddress: BucketConfig;
  /** Anonymous (sealed-sender) sockets opened per client address. */
  anonymousSocket: BucketConfig;
}

export interface RelayConfig {
  host: string;
  /** 0 picks an ephemeral port. */
  port: number;
  /** Holds relay.db. */
  dataDir: string;
  /** null = open registration. */
  inviteCodes: string[] | null;
  messageTtlMs: number;
  purgeIntervalMs: number;
  rateLimits?: Partial<RateLimitConfig>;
  logLevel?: string;
  /** File path or file descriptor; default 1 (stdout). */
  logDestination?: string | number;
  /** Attachment limits, expiry and blob storage (defaults in attachment-config.ts). */
  attachments?: Partial<AttachmentConfig>;
  /**
   * Where state lives: `sqlite` (default, `<dataDir>/relay.db`) or a
   * `postgres://` URL shared by every node of a cluster.
   */
  store?: string;
  /** How nodes wake each other: `local` (default, one process) or a `nats://` URL (comma-separated servers). */
  bus?: string;
  /** Where rate-limit buckets live: `memory` (default, per node) or a `redis://` URL shared by the cluster. */
  rateLimiter?: string;
  /**
   * How often each socket re-reads its queue without a wake-up (ms, 0 = never).
   * Defaults to 0 with the local bus and 2000 with NATS.
   */
  pollIntervalMs?: number;
  /**
   * Sealed sender: path of a server-certificate file made by `parley relay
   * server-cert`. Unset: one is generated (with its trust root) under
   * `<dataDir>/sealed-sender/` on first start — fine for one embedded relay.
   */
  serverCertificate?: string;
  /** Lifetime of issued sender certificates (ms); default 7 days. */
  senderCertificateTtlMs?: number;
  /** Most devices per account, the primary included (2..127); default 6. */
  maxDevices?: number;
  /** Linked devices that have not connected for this long are removed (ms); default 30 days. */
  deviceIdleMs?: number;
}

/** The kind of store a `store` setting names. @throws RangeError for anything else. */
export function storeKind(store: string | undefined): 'sqlite' | 'postgres' {
  if (store === undefined || store === '' || store === 'sqlite') return 'sqlite';
  if (/^postgres(ql)?:\/\//.test(store)) return 'postgres';
  throw new RangeError('store must be "sqlite" or a postgres:// URL');
}

/** The kind of bus a `bus` setting names. @throws RangeError for anything else. */
export function busKind(bus: string | undefined): 'local' | 'nats' {
  if (bus === undefined || bus === '' || bus === 'local') return 'local';
  if (bus.split(',').every((s) => /^(nats|tls):\/\/\S+$/.test(s.trim()))) return 'nats';
  throw new RangeError('bus must be "local" or nats:// URLs separated by commas');
}

/** The kind of rate limiter a `rateLimiter` setting names. @throws RangeError for anything else. */
export function rateLimiterKind(limiter: string | undefined): 'memory' | 'redis' {
  if (limiter === undefined || limiter === '' || limiter === 'memory') return 'memory';
  if (/^rediss?:\/\//.test(limiter)) return 'redis';
  throw new RangeError('rate limiter must be "memory" or a redis:// URL');
}

const DAY_MS = 24 * 60 * 60 * 1000;

export const defaultRateLimits: RateLimitConfig = {
  register: { burst: 20, perSecond: 0.5 },
  send: { burst: 200, perSecond: 50 },
  bundle: { burst: 100, perSecond: 10 },
  lookup: { burst: 100, perSecond: 10 },
  sealedRecipient: { burst: 200, perSecond: 20 },
  sealedAddress: { burst: 400, perSecond: 50 },
  // A client keeps one open while it sends and reopens it after an idle close: a few a minute is plenty.
  anonymousSocket: { burst: 30, perSecond: 0.5 },
};

/** The full rate-limit table with the configured overrides applied. */
export function resolveRateLimits(partial: Partial<RateLimitConfig> | undefined): RateLimitConfig {
  return { ...defaultRateLimits, ...(partial ?? {}) };
}

/** A complete config from defaults plus overrides. */
export function defaultRelayConfig(overrides: Partial<RelayConfig> = {}): RelayConfig {
  return {
    host: '127.0.0.1',
    port: 0,
    dataDir: './data',
    inviteCodes: null,
    messageTtlMs: 30 * DAY_MS,
    purgeIntervalMs: 60 * 60 * 1000,
    logLevel: 'info',
    logDestination: 1,
    ...overrides,
  };
}

/**
 * Read PARLEY_HOST, PARLEY_PORT, PARLEY_DATA_DIR, PARLEY_INVITE_CODES
 * (comma-separated), PARLEY_MESSAGE_TTL_DAYS, PARLEY_LOG_LEVEL, PARLEY_STORE,
 * PARLEY_BUS, PARLEY_RATE_LIMITER, PARLEY_POLL_INTERVAL_MS,
 * PARLEY_SERVER_CERT, PARLEY_MAX_DEVICES and PARLEY_DEVICE_IDLE_DAYS; explicit
 * overrides win over the environment.
 * @throws RangeError when a numeric variable is not a valid number.
 */
export function relayConfigFromEnv(env: NodeJS.ProcessEnv, overrides: Partial<RelayConfig> = {}): RelayConfig {
  const fromEnv: Partial<RelayConfig> = {};
  if (env.PARLEY_HOST) fromEnv.host = env.PARLEY_HOST;
  if (env.PARLEY_PORT !== undefined && env.PARLEY_PORT !== '') {
    const port = Number(env.PARLEY_PORT);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError('PARLEY_PORT must be an integer in 0..65535');
    fromEnv.port = port;
  }
  if (env.PARLEY_DATA_DIR) fromEnv.dataDir = env.PARLEY_DATA_DIR;
  if (env.PARLEY_INVITE_CODES !== undefined) {
    const codes = env.PARLEY_INVITE_CODES.split(',')
      .map((c) => c.trim())
      .filter((c) => c.length > 0);
    fromEnv.inviteCodes = codes.length > 0 ? codes : null;
  }
  if (env.PARLEY_MESSAGE_TTL_DAYS !== undefined && env.PARLEY_MESSAGE_TTL_DAYS !== '') {
    const days = Number(env.PARLEY_MESSAGE_TTL_DAYS);
    if (!Number.isFinite(days) || days <= 0) throw new RangeError('PARLEY_MESSAGE_TTL_DAYS must be a positive number');
    fromEnv.messageTtlMs = Math.round(days * DAY_MS);
  }
  if (env.PARLEY_LOG_LEVEL) fromEnv.logLevel = env.PARLEY_LOG_LEVEL;
  const attachments = attachmentConfigFromEnv(env);
  if (attachments) fromEnv.attachments = attachments;
  if (env.PARLEY_STORE) fromEnv.store = env.PARLEY_STORE;
  if (env.PARLEY_BUS) fromEnv.bus = env.PARLEY_BUS;
  if (env.PARLEY_RATE_LIMITER) fromEnv.rateLimiter = env.PARLEY_RATE_LIMITER;
  if (env.PARLEY_SERVER_CERT) fromEnv.serverCertificate = env.PARLEY_SERVER_CERT;
  if (env.PARLEY_POLL_INTERVAL_MS !== undefined && env.PARLEY_POLL_INTERVAL_MS !== '') {
    const ms = Number(env.PARLEY_POLL_INTERVAL_MS);
    if (!Number.isInteger(ms) || ms < 0) throw new RangeError('PARLEY_POLL_INTERVAL_MS must be a non-negative integer');
    fromEnv.pollIntervalMs = ms;
  }
  if (env.PARLEY_MAX_DEVICES !== undefined && env.PARLEY_MAX_DEVICES !== '') {
    const n = Number(env.PARLEY_MAX_DEVICES);
    if (!Number.isInteger(n) || n < 1 || n > 127) throw new RangeError('PARLEY_MAX_DEVICES must be an integer in 1..127');
    fromEnv.maxDevices = n;
  }
  if (env.PARLEY_DEVICE_IDLE_DAYS !== undefined && env.PARLEY_DEVICE_IDLE_DAYS !== '') {
    const days = Number(env.PARLEY_DEVICE_IDLE_DAYS);
    if (!Number.isFinite(days) || days <= 0) throw new RangeError('PARLEY_DEVICE_IDLE_DAYS must be a positive number');
    fromEnv.deviceIdleMs = Math.round(days * DAY_MS);
  }
  const config = defaultRelayConfig({ ...fromEnv, ...overrides });
  // Reject a malformed store/bus/limiter now, with a message that does not echo the URL (it may hold a password).
  storeKind(config.store);
  busKind(config.bus);
  rateLimiterKind(config.rateLimiter);
  return config;
}
