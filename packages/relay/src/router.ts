/**
 * One internal router shared by the HTTP routes and the WebSocket gateway:
 * verb + path pattern → handler. It authenticates, parses and validates
 * bodies with the wire `process*` functions, and maps every failure to the
 * `{code, message}` shape of docs/PROTOCOL.md.
 */
import {
  ACCESS_KEY_HEADER,
  Limits,
  WireError,
  WireErrorCode,
  encodePreKeyBundleResponse,
  encodeSenderCertificateResponse,
  encodeTrustRootResponse,
  parseAccessKeyHeader,
  processAccessKeyRequest,
  parseAccountId,
  parseDeviceId,
  processKeyUploadRequest,
  processRegisterRequest,
  processSendRequestBinary,
  processSendRequestJson,
} from '@parley/wire';
import type { Logger } from 'pino';
import { parseBasicAuth } from './auth.js';
import { type ErrorCode, ErrorCodes, RelayError } from './errors.js';
import type { RelayMetrics } from './metrics.js';
import type { DeviceRef, Relay } from './relay.js';
import { type SealedSender, parseMultiRecipientMeta } from './sealed.js';

/** A request as either transport hands it to the router. */
export interface RouteRequest {
  verb: string;
  /** Path without the query string. */
  path: string;
  /** Lower-case header names. */
  headers: Readonly<Record<string, string | undefined>>;
  body: Uint8Array;
  ip: string;
  /** Set when the transport already authenticated the device (the WebSocket). */
  device: DeviceRef | null;
  /** Opaque id for logs. */
  requestId: string;
}

/** What the router answers; exactly one of `json` / `bytes` or neither. */
export interface RouteResponse {
  status: number;
  json?: unknown;
  headers?: Record<string, string>;
  /** The error code, when the answer is an error. */
  code?: ErrorCode;
}

export interface Call {
  params: Record<string, string>;
  req: RouteRequest;
  /** The authenticated device; only null on unauthenticated routes (and `optional` ones called without credentials). */
  me: DeviceRef;
}

interface Route {
  verb: string;
  pattern: string;
  segments: string[];
  /** `optional`: authenticated when an `authorization` header is present (sealed-sender sends go without one). */
  auth: boolean | 'optional';
  handle(call: Call): Promise<RouteResponse>;
}

const ok = (json: unknown = {}): RouteResponse => ({ status: 200, json });

/** Adds a route; modules with their own routes (devices.ts) get this from the router. */
export type RouteDefiner = (verb: string, pattern: string, auth: boolean | 'optional', handle: (call: Call) => Promise<RouteResponse>) => void;

function parseJson(body: Uint8Array): unknown {
  if (body.length === 0) throw new RelayError('BAD_REQUEST', 'body: expected a JSON object');
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body));
  } catch {
    throw new RelayError('BAD_REQUEST', 'body: not valid JSON');
  }
}

/** Map any thrown value to an error answer; unexpected ones become INTERNAL and are logged. */
export function errorResponse(err: unknown, log: Logger, requestId: string): RouteResponse {
  if (err instanceof RelayError) {
    const json: Record<string, unknown> = { code: err.code, message: err.message };
    const { retryAfterSeconds, ...lists } = err.details;
    Object.assign(json, lists);
    const headers: Record<string, string> = {};
    if (retryAfterSeconds !== undefined) headers['retry-after'] = String(retryAfterSeconds);
    return { status: err.status, json, headers, code: err.code };
  }
  if (err instanceof WireError) {
    const code: ErrorCode = err.code === WireErrorCode.TooLarge ? 'TOO_LARGE' : 'BAD_REQUEST';
    return { status: ErrorCodes[code], json: { code, message: err.message }, code };
  }
  log.error({ requestId, err: describeBug(err) }, 'unexpected error');
  return { status: 500, json: { code: 'INTERNAL', message: 'internal error' }, code: 'INTERNAL' };
}

/** Name and stack frames of a bug, without the message (which could echo input). */
export function describeBug(err: unknown): { name: string; code?: string; stack?: string } {
  if (!(err instanceof Error)) return { name: typeof err };
  const code = (err as { code?: unknown }).code;
  return {
    name: err.name,
    ...(typeof code === 'string' ? { code } : {}),
    ...(err.stack ? { stack: err.stack.split('\n').slice(1).join('\n') } : {}),
  };
}

export class Router {
  readonly #routes: Route[] = [];

  constructor(
    private readonly relay: Relay,
    private readonly log: Logger,
    private readonly metrics: RelayMetrics,
    private readonly sealed: SealedSender,
  ) {
    this.#define();
  }

  #add(verb: string, pattern: string, auth: boolean | 'optional', handle: (call: Call) => Promise<RouteResponse>): void {
    this.#routes.push({ verb, pattern, segments: pattern.split('/').slice(1), auth, handle });
  }

  /** Add routes defined outside this file; they are matched after the built-in ones. */
  readonly define: RouteDefiner = (verb, pattern, auth, handle) => this.#add(verb, pattern, auth, handle);

  #define(): void {
    const r = this.relay;
    this.#add('POST', '/v1/accounts', false, async ({ req }) =>
      ok(await r.register(processRegisterRequest(parseJson(req.body)), req.ip)),
    );
    this.#add('GET', '/v1/accounts/whoami', true, async ({ me }) => ok(await r.whoami(me)));
    this.#add('GET', '/v1/accounts/username/:username', true, async ({ me, params }) =>
      ok(await r.lookupUsername(me, params.username ?? '')),
    );
    this.#add('PUT', '/v1/keys', true, async ({ me, req }) => {
      await r.uploadKeys(me, processKeyUploadRequest(parseJson(req.body)));
      return { status: 204 };
    });
    this.#add('GET', '/v1/keys/count', true, async ({ me }) => ok(await r.keyCounts(me)));
    this.#add('GET', '/v1/keys/:accountId/:deviceId', true, async ({ me, params }) => {
      const account = parseAccountId(params.accountId);
      const device = params.deviceId === '*' ? 'all' : parseDeviceId(params.deviceId);
      return ok(encodePreKeyBundleResponse(await r.fetchBundle(me, account, device)));
    });
    // Sealed sender (src/sealed.ts). The literal multi_recipient path must come before /v1/messages/:accountId.
    const s = this.sealed;
    this.#add('GET', '/v1/certificate/trust-root', false, async () => ok(encodeTrustRootResponse(s.trustRoot())));
    this.#add('GET', '/v1/certificate/delivery', true, async ({ me }) => ok(encodeSenderCertificateResponse(await s.issueCertificate(me))));
    this.#add('PUT', '/v1/accounts/access-key', true, async ({ me, req }) => {
      await s.setAccessKey(me, processAccessKeyRequest(parseJson(req.body)).accessKey);
      return { status: 204 };
    });
    this.#add('PUT', '/v1/messages/multi_recipient', false, async ({ req }) => {
      const meta = parseMultiRecipientMeta(req.headers);
      await s.sendMultiRecipient(parseAccessKeyHeader(req.headers[ACCESS_KEY_HEADER]), req.body, meta, req.ip);
      return ok({});
    });
    this.#add('PUT', '/v1/messages/:accountId', 'optional', async ({ me, params, req }) => {
      const destination = parseAccountId(params.accountId);
      const given = req.headers['content-type'] ?? '';
      const type = given === 'application/x-protobuf' ? given : (given.split(';')[0]?.trim().toLowerCase() ?? '');
      let send;
      if (type === 'application/x-protobuf') send = processSendRequestBinary(req.body);
      else if (type === 'application/json' || type === '') send = processSendRequestJson(parseJson(req.body));
      else throw new RelayError('UNSUPPORTED_MEDIA_TYPE', 'send body must be application/x-protobuf or application/json');
      if (!(me as DeviceRef | null)) {
        await s.sendUnidentified(destination, parseAccessKeyHeader(req.headers[ACCESS_KEY_HEADER]), send, req.ip);
        return ok({});
      }
      await r.send(me, destination, send);
      return ok({});
    });
    this.#add('GET', '/v1/keepalive', true, async () => ok({}));
    this.#add('GET', '/v1/websocket', true, async () => {
      throw new RelayError('BAD_REQUEST', 'websocket upgrade required');
    });
    this.#add('GET', '/v1/websocket/anonymous', false, async () => {
      throw new RelayError('BAD_REQUEST', 'websocket upgrade required');
    });
  }

  #match(verb: string, path: string): { route: Route; params: Record<string, string> } | null {
    if (path.length > Limits.maxPathBytes) return null;
    // parts[0] is whatever precedes the first '/' (segments leave it out).
    const parts = path.split('/');
    const n = parts.length - 1;
    for (const route of this.#routes) {
      if (route.verb !== verb || route.segments.length !== n) continue;
      const params: Record<string, string> = {};
      let matched = true;
      for (let i = 0; i < n && matched; i++) {
        const want = route.segments[i] as string;
        const got = parts[i + 1] as string;
        if (want.charCodeAt(0) === 58 /* ':' */) {
          if (got.length === 0) matched = false;
          else if (!got.includes('%')) params[want.slice(1)] = got;
          else {
            try {
              params[want.slice(1)] = decodeURIComponent(got);
            } catch {
              matched = false;
            }
          }
        } else if (want !== got) matched = false;
      }
      if (matched) return { route, params };
    }
    return null;
  }

  /** The route pattern a request would hit (for logs), or null. */
  patternOf(verb: string, path: string): string | null {
    return this.#match(verb, path)?.route.pattern ?? null;
  }

  /** Run a request to completion; never throws. */
  async dispatch(req: RouteRequest): Promise<{ pattern: string | null; response: RouteResponse }> {
    const found = this.#match(req.verb, req.path);
    let response: RouteResponse;
    try {
      if (!found) throw new RelayError('NOT_FOUND', 'no such route');
      let me = req.device;
      const auth = found.route.auth;
      const needsAuth =
        auth === true || (auth === 'optional' && (req.headers.authorization !== undefined || req.headers[ACCESS_KEY_HEADER] === undefined));
      if (needsAuth && !me) me = await this.relay.authenticate(parseBasicAuth(req.headers.authorization));
      response = await found.route.handle({ params: found.params, req, me: me as DeviceRef });
    } catch (err) {
      response = errorResponse(err, this.log, req.requestId);
    }
    if (response.code) this.metrics.errors.inc({ code: response.code });
    return { pattern: found?.route.pattern ?? null, response };
  }
}
