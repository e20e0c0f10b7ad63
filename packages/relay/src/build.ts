/**
 * Assemble a relay from its ports: domain services, the shared router, the
 * Fastify HTTP edge and the WebSocket gateway. Tests use `app.inject()`;
 * `startRelay` wires real adapters and listens.
 */
import { randomUUID } from 'node:crypto';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply } from 'fastify';
import { pino, type Logger } from 'pino';
import { resolveAttachmentConfig } from './attachment-config.js';
import { type AttachmentsEdge, registerAttachments } from './attachments.js';
import type { BlobStore } from './blobstore.js';
import { type RelayConfig, resolveRateLimits } from './config.js';
import { type ErrorCode, ErrorCodes, RelayError } from './errors.js';
import { DEFAULT_DEVICE_IDLE_MS, DEFAULT_MAX_DEVICES, Devices, PROVISIONING_CODE_TTL_MS, defineDeviceRoutes } from './devices.js';
import { ANONYMOUS_SOCKET_PATH, Gateway, type GatewayOptions, defaultGatewayOptions } from './gateway.js';
import { type RelayMetrics, createMetrics } from './metrics.js';
import type { Bus, Clock, RateLimiter, Store } from './ports.js';
import { MemoryRateLimiter } from './ratelimit.js';
import { PROVISIONING_PATH, ProvisioningSockets } from './provisioning.js';
import { Relay } from './relay.js';
import { Router, describeBug } from './router.js';
import { parseBasicAuth } from './auth.js';
import { DEFAULT_SENDER_CERTIFICATE_TTL_MS, SealedSender, type ServerSigner, loadServerSigner } from './sealed.js';

/** Largest HTTP request body (docs/PROTOCOL.md). */
export const MAX_HTTP_BODY = 2 * 1024 * 1024;

export interface RelayBuildDeps {
  store: Store;
  bus: Bus;
  clock: Clock;
  config: RelayConfig;
  /** Defaults to in-memory token buckets from `config.rateLimits`. */
  limiter?: RateLimiter;
  /** Defaults to a pino logger from `config.logLevel` / `config.logDestination`. */
  logger?: Logger;
  gateway?: Partial<GatewayOptions>;
  /** Attachment blobs; without one the attachment routes answer 404. */
  blobs?: BlobStore;
  /** Sealed-sender signer; defaults to `loadServerSigner(config)` (generated into the data dir when none is configured). */
  signer?: ServerSigner;
}

/** A relay that is built but not listening. `close()` drains it and closes the store. */
export interface BuiltRelay {
  app: FastifyInstance;
  relay: Relay;
  gateway: Gateway;
  metrics: RelayMetrics;
  log: Logger;
  /** The attachment routes, when a BlobStore was given. */
  attachments: AttachmentsEdge | null;
  /** Device linking, listing, removal and idle expiry. */
  devices: Devices;
  /** Open provisioning sockets (linking). */
  provisioning: ProvisioningSockets;
  /** Run the purge job once now. */
  purge(): Promise<{ envelopes: number; idempotencyKeys: number }>;
  close(): Promise<void>;
}

/** A pino logger writing JSON to the configured destination. */
export function createLogger(config: RelayConfig): Logger {
  const dest = config.logDestination ?? 1;
  return pino(
    { level: config.logLevel ?? 'info', base: { service: 'parley-relay' } },
    pino.destination(typeof dest === 'number' ? { fd: dest, sync: true } : { dest, sync: true, mkdir: true }),
  );
}

function fastifyErrorCode(err: FastifyError): ErrorCode {
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return 'TOO_LARGE';
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return 'UNSUPPORTED_MEDIA_TYPE';
    default:
      break;
  }
  const status = err.statusCode ?? 500;
  if (status === 413) return 'TOO_LARGE';
  if (status === 415) return 'UNSUPPORTED_MEDIA_TYPE';
  if (status === 404) return 'NOT_FOUND';
  if (status >= 400 && status < 500) return 'BAD_REQUEST';
  return 'INTERNAL';
}

/** Build the relay around the given ports (see RelayBuildDeps). */
export function buildRelay(deps: RelayBuildDeps): BuiltRelay {
  const { store, bus, clock, config } = deps;
  const log = deps.logger ?? createLogger(config);
  const metrics = createMetrics();
  const limiter = deps.limiter ?? new MemoryRateLimiter(resolveRateLimits(config.rateLimits), clock);
  const relay = new Relay({ store, bus, clock, config, limiter, metrics, log });
  const sealed = new SealedSender({
    relay,
    store,
    bus,
    clock,
    metrics,
    signer: deps.signer ?? loadServerSigner(config, log),
    certificateTtlMs: config.senderCertificateTtlMs ?? DEFAULT_SENDER_CERTIFICATE_TTL_MS,
  });
  const router = new Router(relay, log, metrics, sealed);
  const provisioning = new ProvisioningSockets({
    bus,
    log,
    timeoutMs: PROVISIONING_CODE_TTL_MS,
    // The registration bucket's rates, in a bucket of its own per address.
    admit: (ip) =>
      relay.limitAsync('register', `provisioning:${ip}`).then(
        () => ({ kind: 'allowed' as const }),
        (err: unknown) => {
          if (RelayError.is(err, 'RATE_LIMITED')) return { kind: 'limited' as const, retryAfterSeconds: err.details.retryAfterSeconds ?? 1 };
          throw err;
        },
      ),
  });
  const devices = new Devices({
    relay,
    store,
    bus,
    clock,
    log,
    provisioning,
    ...(deps.blobs ? { blobs: deps.blobs } : {}),
    config: {
      maxDevices: config.maxDevices ?? DEFAULT_MAX_DEVICES,
      idleMs: config.deviceIdleMs ?? DEFAULT_DEVICE_IDLE_MS,
      codeTtlMs: PROVISIONING_CODE_TTL_MS,
    },
  });
  defineDeviceRoutes(router.define, devices);
  const gateway = new Gateway({
    relay,
    router,
    store,
    bus,
    clock,
    log,
    metrics,
    options: { ...defaultGatewayOptions, ...(deps.gateway ?? {}) },
  });

  const baseLogger: FastifyBaseLogger = log;
  const app = Fastify({
    loggerInstance: baseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    genReqId: () => randomUUID(),
    requestIdHeader: false,
    bodyLimit: MAX_HTTP_BODY,
    return503OnClosing: false,
  });
  let draining = false;

  // Every body reaches the router as raw bytes; the router decides how to parse it.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  const sendError = (reply: FastifyReply, code: ErrorCode, message: string) =>
    reply.code(ErrorCodes[code]).type('application/json').send(JSON.stringify({ code, message }));

  app.setErrorHandler((err: FastifyError, request, reply) => {
    const code = fastifyErrorCode(err);
    if (code === 'INTERNAL') request.log.error({ requestId: request.id, err: describeBug(err) }, 'unexpected error');
    metrics.errors.inc({ code });
    const message = code === 'INTERNAL' ? 'internal error' : code === 'TOO_LARGE' ? 'body too large' : 'malformed request';
    return sendError(reply, code, message);
  });
  app.setNotFoundHandler((_request, reply) => {
    metrics.errors.inc({ code: 'NOT_FOUND' });
    return sendError(reply, 'NOT_FOUND', 'no such route');
  });

  app.addHook('onRequest', async (request, reply) => {
    if (draining && request.url !== '/healthz') return sendError(reply, 'SHUTTING_DOWN', 'relay is shutting down');
  });

  app.get('/healthz', async (_req, reply) => reply.send({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    if (draining) return sendError(reply, 'SHUTTING_DOWN', 'relay is shutting down');
    try {
      await store.ping();
    } catch {
      return sendError(reply, 'INTERNAL', 'store unavailable');
    }
    return reply.send({ status: 'ready' });
  });
  app.get('/metrics', async (_req, reply) => {
    const text = await metrics.registry.metrics();
    return reply.type(metrics.registry.contentType).send(text);
  });

  app.route({
    method: ['GET', 'PUT', 'POST', 'DELETE'],
    url: '/*',
    handler: async (request, reply) => {
      const started = performance.now();
      const raw = request.body;
      const body = Buffer.isBuffer(raw) ? new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength) : new Uint8Array(0);
      const headers: Record<string, string | undefined> = {};
      for (const [k, v] of Object.entries(request.headers)) headers[k] = Array.isArray(v) ? v.join(',') : v;
      const { pattern, response } = await router.dispatch({
        verb: request.method,
        path: request.url.split('?')[0] ?? '',
        headers,
        body,
        ip: request.ip,
        device: null,
        requestId: request.id,
      });
      log.info(
        {
          requestId: request.id,
          method: request.method,
          route: pattern ?? 'unmatched',
          status: response.status,
          code: response.code,
          ms: Math.round(performance.now() - started),
        },
        'request',
      );
      reply.code(response.status);
      if (response.headers) reply.headers(response.headers);
      if (response.json === undefined) return reply.send();
      return reply.type('application/json').send(JSON.stringify(response.json));
    },
  });

  const attachments = deps.blobs
    ? registerAttachments(app, { relay, blobs: deps.blobs, clock, config: resolveAttachmentConfig(config.attachments), log, metrics })
    : null;

  app.server.on('upgrade', (req, socket, head: Buffer) => {
    const path = (req.url ?? '').split('?')[0];
    if (path === PROVISIONING_PATH) return provisioning.handleUpgrade(req, socket, head);
    gateway.handleUpgrade(req, socket, head);
    // The anonymous socket refuses credentials; they must not count as a sign of life either.
    if (path === ANONYMOUS_SOCKET_PATH) return;
    // Last-seen for idle expiry, for credentials that check out (the gateway authenticates on its own).
    void devices.touchIfValid(parseBasicAuth(req.headers.authorization)).catch(() => undefined);
  });

  let purging: Promise<unknown> = Promise.resolve();
  const purge = async () => {
    const res = await relay.purgeExpired();
    const idleDevices = await devices.expireIdle();
    log.info({ envelopes: res.envelopes, idempotencyKeys: res.idempotencyKeys, idleDevices }, 'purge');
    return res;
  };
  const purgeTimer = setInterval(() => {
    purging = purge().catch((err: unknown) => log.error({ err: describeBug(err) }, 'purge failed'));
  }, config.purgeIntervalMs);
  purgeTimer.unref();

  let closing: Promise<void> | null = null;
  const close = () => {
    closing ??= (async () => {
      draining = true;
      clearInterval(purgeTimer);
      await gateway.close();
      await provisioning.close();
      await app.close();
      await attachments?.close();
      await purging;
      await bus.close();
      await store.close();
      log.info('relay closed');
    })();
    return closing;
  };

  return { app, relay, gateway, metrics, log, attachments, devices, provisioning, purge, close };
}
