/**
 * Talking to the relay: HTTP (node:http, keep-alive), the device WebSocket (request and
 * response frames with ids, in both directions) and the anonymous WebSocket for
 * sealed-sender requests (HTTP behind it). All return the same Reply shape;
 * `expectOk` turns a non-2xx reply into a coded SdkError.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import { WebSocket } from 'ws';
import { Limits, decodeFrame, encodeRequest, encodeResponse, processErrorBody, type ErrorBody, type RequestFrame } from '@parley/wire';
import { SdkError, type SdkErrorCode } from './errors.js';

export const REQUEST_TIMEOUT_MS = 10_000;
export const KEEPALIVE_MS = 30_000;
export const RECONNECT_BASE_MS = 500;
export const RECONNECT_CAP_MS = 30_000;
export const CLOSE_REPLACED = 4409;
/** The anonymous socket closes after this long without a request (well under the relay's 90 s, so it never needs keepalives). */
export const ANONYMOUS_IDLE_MS = 30_000;
/** After the anonymous socket failed to open, requests go over HTTP for this long before it is tried again. */
export const ANONYMOUS_RETRY_MS = 60_000;

export interface Credentials {
  accountId: string;
  deviceId: number;
  password: string;
}

export interface Reply {
  status: number;
  body: Uint8Array;
  headers: Record<string, string>;
}

export type Body = { json: unknown } | { binary: Uint8Array } | undefined;

export function basicAuth(c: Credentials): string {
  return 'Basic ' + Buffer.from(`${c.accountId}.${c.deviceId}:${c.password}`).toString('base64');
}

function encodeBody(body: Body): { bytes: Uint8Array | undefined; contentType: string | undefined } {
  if (body === undefined) return { bytes: undefined, contentType: undefined };
  if ('json' in body) return { bytes: Buffer.from(JSON.stringify(body.json)), contentType: 'application/json' };
  return { bytes: body.binary, contentType: 'application/x-protobuf' };
}

/** Parses a JSON reply body; a body that is not JSON is a relay error. */
export function replyJson(reply: Reply): unknown {
  try {
    return JSON.parse(Buffer.from(reply.body).toString('utf8')) as unknown;
  } catch (err) {
    throw new SdkError('RELAY_ERROR', 'the relay sent a malformed answer', { cause: err, status: reply.status });
  }
}

/** The validated error body of a non-2xx reply, or null when it has none. */
export function errorBody(reply: Reply): ErrorBody | null {
  try {
    return processErrorBody(JSON.parse(Buffer.from(reply.body).toString('utf8')));
  } catch {
    return null;
  }
}

const CODE_MAP: Record<string, SdkErrorCode> = {
  UNAUTHORIZED: 'UNAUTHORIZED',
  INVITE_REQUIRED: 'INVITE_REQUIRED',
  USERNAME_TAKEN: 'USERNAME_TAKEN',
  RATE_LIMITED: 'RATE_LIMITED',
  NOT_FOUND: 'USER_NOT_FOUND',
  FORBIDDEN: 'FORBIDDEN',
  BAD_REQUEST: 'INVALID_INPUT',
  TOO_LARGE: 'INVALID_INPUT',
};

export function replyError(reply: Reply): SdkError {
  const body = errorBody(reply);
  const code = (body && CODE_MAP[body.code]) ?? (reply.status === 401 ? 'UNAUTHORIZED' : 'RELAY_ERROR');
  const retry = Number(reply.headers['retry-after']);
  // The relay's code and message never carry user data (docs/PROTOCOL.md), so they may be shown.
  return new SdkError(code, `relay answered ${reply.status}${body ? ` ${body.code}` : ''}`, {
    status: reply.status,
    ...(Number.isFinite(retry) && retry >= 0 ? { retryAfter: retry } : {}),
  });
}

export function expectOk(reply: Reply): Reply {
  if (reply.status < 200 || reply.status > 299) throw replyError(reply);
  return reply;
}

// ---------------------------------------------------------------- HTTP

/** The error a request ends with when its deadline passes (the same name fetch's timeout signal uses). */
function timeoutError(ms: number): Error {
  const e = new Error(`no complete answer within ${ms} ms`);
  e.name = 'TimeoutError';
  return e;
}

/**
 * Requests over `node:http`/`node:https` with one keep-alive agent per
 * transport (fetch cost ~3x the CPU a request). The deadline covers the
 * whole exchange, answer body included; idle pooled sockets are unref'd by
 * the agent, so they never keep a process alive. No redirects are followed.
 */
export class HttpTransport {
  private agent: http.Agent | null = null;
  private closed = false;

  constructor(
    readonly serverUrl: string,
    private readonly creds: Credentials | null,
    private readonly timeoutMs = REQUEST_TIMEOUT_MS,
  ) {}

  private agentFor(url: URL): http.Agent | undefined {
    const secure = url.protocol === 'https:';
    if (url.protocol !== new URL(this.serverUrl).protocol) return undefined; // not the relay's scheme: the default agent
    if (this.closed) return undefined; // used after close(): no new pool to leak
    this.agent ??= secure ? new https.Agent({ keepAlive: true }) : new http.Agent({ keepAlive: true });
    return this.agent;
  }

  request(verb: string, path: string, body?: Body, extraHeaders: Record<string, string> = {}): Promise<Reply> {
    const { bytes, contentType } = encodeBody(body);
    const headers: Record<string, string> = { ...extraHeaders };
    if (contentType) headers['content-type'] = contentType;
    if (this.creds) headers.authorization = basicAuth(this.creds);
    if (bytes) headers['content-length'] = String(bytes.byteLength);
    else if (verb !== 'GET' && verb !== 'HEAD') headers['content-length'] = '0';
    return new Promise<Reply>((resolve, reject) => {
      let answered = false; // response headers arrived
      let done = false;
      const fail = (err: unknown): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        reject(
          answered
            ? new SdkError('RELAY_UNREACHABLE', 'the relay connection failed mid-answer', { cause: err })
            : new SdkError('RELAY_UNREACHABLE', 'cannot reach the relay', { cause: err }),
        );
      };
      let req: http.ClientRequest | null = null;
      const timer = setTimeout(() => {
        const err = timeoutError(this.timeoutMs);
        fail(err);
        req?.destroy(err);
      }, this.timeoutMs);
      timer.unref?.();
      try {
        const url = new URL(path, this.serverUrl);
        const mod = url.protocol === 'https:' ? https : url.protocol === 'http:' ? http : null;
        if (!mod) throw new TypeError('unsupported relay URL scheme');
        const agent = this.agentFor(url);
        req = mod.request(url, { method: verb, headers, ...(agent ? { agent } : {}) }, (res) => {
          answered = true;
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', fail);
          res.on('aborted', () => fail(new Error('answer aborted')));
          res.on('close', () => {
            if (!res.complete) fail(new Error('answer cut short'));
          });
          res.on('end', () => {
            if (done) return;
            done = true;
            clearTimeout(timer);
            const h: Record<string, string> = {};
            for (const [k, v] of Object.entries(res.headers)) {
              if (v !== undefined) h[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : v;
            }
            const data = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
            resolve({ status: res.statusCode ?? 0, body: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), headers: h });
          });
        });
        req.on('error', fail);
        req.end(bytes);
      } catch (err) {
        // bad URL or header value: reported the way fetch's rejection was
        fail(err);
        req?.destroy();
      }
    });
  }

  /** Drops the pooled sockets; later requests still work, without a pool. */
  close(): void {
    this.closed = true;
    this.agent?.destroy();
    this.agent = null;
  }
}

// ---------------------------------------------------------------- WebSocket

export type SocketState = 'connecting' | 'open' | 'closed' | 'replaced';

/** The answer to a relay request; `after` runs once the answer (the ack) has been handed to the socket. */
export interface RequestResult {
  status: number;
  body?: Uint8Array;
  after?: () => void;
}

export interface SocketOptions {
  serverUrl: string;
  creds: Credentials;
  /** Handles a request from the relay; the returned status is sent back (200 = ack). */
  onRequest: (req: RequestFrame) => Promise<RequestResult>;
  onState: (state: SocketState) => void;
  timeoutMs?: number;
  keepaliveMs?: number;
  random?: () => number;
}

interface Waiter {
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class RelaySocket {
  private ws: WebSocket | null = null;
  private open = false;
  private stopped = false;
  private attempt = 0;
  private nextId = 1n;
  private readonly waiters = new Map<bigint, Waiter>();
  private keepalive: NodeJS.Timeout | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private readonly timeoutMs: number;

  constructor(private readonly opts: SocketOptions) {
    this.timeoutMs = opts.timeoutMs ?? REQUEST_TIMEOUT_MS;
  }

  get isOpen(): boolean {
    return this.open;
  }

  /** Connects; rejects if this first attempt fails. Later drops reconnect by themselves. */
  start(): Promise<void> {
    this.stopped = false;
    return this.dial();
  }

  private url(): string {
    const u = new URL('/v1/websocket', this.opts.serverUrl);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    return u.toString();
  }

  private dial(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.opts.onState('connecting');
      const ws = new WebSocket(this.url(), {
        headers: { authorization: basicAuth(this.opts.creds) },
        handshakeTimeout: this.timeoutMs,
        maxPayload: 2 * 1024 * 1024,
      });
      this.ws = ws;
      let settled = false;
      ws.binaryType = 'nodebuffer';

      ws.on('unexpected-response', (_req, res) => {
        settled = true;
        const status = res.statusCode ?? 0;
        res.resume();
        ws.terminate();
        reject(
          status === 401
            ? new SdkError('UNAUTHORIZED', 'the relay refused the credentials', { status })
            : new SdkError('RELAY_ERROR', `relay answered ${status} to the upgrade`, { status }),
        );
      });
      ws.on('open', () => {
        if (this.ws !== ws) return;
        settled = true;
        this.open = true;
        this.attempt = 0;
        this.startKeepalive();
        this.opts.onState('open');
        resolve();
      });
      ws.on('message', (data: Buffer, isBinary: boolean) => {
        if (isBinary) this.onFrame(ws, data);
      });
      ws.on('error', (err) => {
        if (!settled) {
          settled = true;
          reject(new SdkError('RELAY_UNREACHABLE', 'cannot reach the relay', { cause: err }));
        }
      });
      ws.on('close', (code) => {
        if (this.ws !== ws) return;
        const wasOpen = this.open;
        this.open = false;
        this.ws = null;
        this.stopKeepalive();
        this.failWaiters();
        if (code === CLOSE_REPLACED) {
          this.stopped = true;
          this.opts.onState('replaced');
          return;
        }
        this.opts.onState('closed');
        // Reconnect only after a connection that once worked; a failed first dial is reported to start().
        if (!this.stopped && (wasOpen || this.attempt > 0)) this.scheduleReconnect();
      });
    });
  }

  private scheduleReconnect(): void {
    const ceiling = Math.min(RECONNECT_CAP_MS, RECONNECT_BASE_MS * 2 ** this.attempt);
    const delay = Math.floor((this.opts.random ?? Math.random)() * ceiling); // full jitter
    this.attempt++;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.stopped) return;
      this.dial().catch(() => {
        // the close handler schedules the next attempt
      });
    }, delay);
    this.reconnectTimer.unref?.();
  }

  private startKeepalive(): void {
    this.stopKeepalive();
    this.keepalive = setInterval(() => {
      this.request('GET', '/v1/keepalive').catch(() => {
        // A keepalive that gets no answer means the connection is dead: drop it and reconnect.
        this.ws?.terminate();
      });
    }, this.opts.keepaliveMs ?? KEEPALIVE_MS);
    this.keepalive.unref?.();
  }
  private stopKeepalive(): void {
    if (this.keepalive) clearInterval(this.keepalive);
    this.keepalive = null;
  }

  private failWaiters(): void {
    for (const [id, w] of this.waiters) {
      clearTimeout(w.timer);
      this.waiters.delete(id);
      w.reject(new SdkError('RELAY_UNREACHABLE', 'the relay connection closed'));
    }
  }

  private onFrame(ws: WebSocket, data: Buffer): void {
    let frame;
    try {
      frame = decodeFrame(data);
    } catch {
      return; // not a frame we understand; the relay will time it out
    }
    if (frame.kind === 'response') {
      const w = this.waiters.get(frame.id);
      if (!w) return;
      this.waiters.delete(frame.id);
      clearTimeout(w.timer);
      w.resolve({ status: frame.status, body: frame.body, headers: frame.headers });
      return;
    }
    const id = frame.id;
    this.opts
      .onRequest(frame)
      .catch((): RequestResult => ({ status: 500 }))
      .then((r) => {
        if (ws.readyState === WebSocket.OPEN) {
          this.corkUntilNextTick(ws);
          ws.send(encodeResponse({ id, status: r.status, message: r.status < 300 ? 'OK' : 'Error', headers: {}, body: r.body ?? new Uint8Array(0) }));
        }
        // The work is committed either way; an unacked envelope comes back and is dropped as a duplicate.
        r.after?.();
      })
      .catch(() => {
        // socket went away while answering: the relay redelivers
      });
  }

  private corked = false;
  /**
   * A group commit releases many acks in one turn; holding the TCP socket
   * corked until the turn ends writes them with one system call. `_socket`
   * is ws's own field; without it the acks are simply written one by one.
   */
  private corkUntilNextTick(ws: WebSocket): void {
    if (this.corked) return;
    const socket = (ws as unknown as { _socket?: { cork?: () => void; uncork?: () => void } })._socket;
    if (typeof socket?.cork !== 'function' || typeof socket.uncork !== 'function') return;
    this.corked = true;
    socket.cork();
    process.nextTick(() => {
      this.corked = false;
      socket.uncork?.();
    });
  }

  request(verb: string, path: string, body?: Body): Promise<Reply> {
    const ws = this.ws;
    if (!ws || !this.open) return Promise.reject(new SdkError('RELAY_UNREACHABLE', 'not connected'));
    const { bytes, contentType } = encodeBody(body);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(id);
        reject(new SdkError('RELAY_UNREACHABLE', 'the relay did not answer in time'));
      }, this.timeoutMs);
      this.waiters.set(id, { resolve, reject, timer });
      ws.send(
        encodeRequest({ id, verb, path, headers: contentType ? { 'content-type': contentType } : {}, body: bytes ?? new Uint8Array(0) }),
        (err) => {
          if (!err) return;
          clearTimeout(timer);
          this.waiters.delete(id);
          reject(new SdkError('RELAY_UNREACHABLE', 'could not send to the relay', { cause: err }));
        },
      );
    });
  }

  async close(): Promise<void> {
    this.stopped = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.stopKeepalive();
    const ws = this.ws;
    if (!ws) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        ws.terminate();
        resolve();
      }, 2000);
      ws.once('close', () => {
        clearTimeout(t);
        resolve();
      });
      ws.close(1000);
    });
  }
}

// ---------------------------------------------------------------- anonymous WebSocket

/** Bodies above this go over HTTP: a frame holds at most Limits.maxFrameBytes, path and headers included. */
const MAX_ANONYMOUS_BODY = Limits.maxFrameBytes - 8 * 1024;

export interface AnonymousOptions {
  timeoutMs?: number;
  /** Close the socket after this long without a request (default ANONYMOUS_IDLE_MS). */
  idleMs?: number;
  /** After a failed open, use HTTP for this long (default ANONYMOUS_RETRY_MS). */
  retryMs?: number;
}

interface AnonymousWaiter {
  ws: WebSocket;
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  /** Repeat the request over HTTP (the socket closed before answering). */
  overHttp: () => Promise<Reply>;
}

/**
 * Unauthenticated requests (sealed-sender sends, the trust root) over the
 * relay's anonymous WebSocket: one socket opened on first use, requests
 * multiplexed by id, closed after `idleMs` without use, so an idle client
 * holds no extra socket and sends no keepalives. The relay answers exactly
 * as it would over HTTP, and HTTP stands behind the socket: a request goes
 * over HTTP when the socket cannot open (for `retryMs`), when its body is too
 * big for a frame, or when the socket closes before answering it. Callers
 * must only send requests that are safe to repeat.
 */
export class AnonymousTransport {
  private readonly http: HttpTransport;
  private ws: WebSocket | null = null;
  private opening: Promise<WebSocket | null> | null = null;
  private nextId = 1n;
  private readonly waiters = new Map<bigint, AnonymousWaiter>();
  private idleTimer: NodeJS.Timeout | null = null;
  private failedAt = Number.NEGATIVE_INFINITY;
  private closed = false;
  private readonly timeoutMs: number;
  private readonly idleMs: number;
  private readonly retryMs: number;

  constructor(
    readonly serverUrl: string,
    opts: AnonymousOptions = {},
  ) {
    this.timeoutMs = opts.timeoutMs ?? REQUEST_TIMEOUT_MS;
    this.idleMs = opts.idleMs ?? ANONYMOUS_IDLE_MS;
    this.retryMs = opts.retryMs ?? ANONYMOUS_RETRY_MS;
    this.http = new HttpTransport(serverUrl, null, this.timeoutMs);
  }

  /** Whether the socket is open right now. */
  get isOpen(): boolean {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  async request(verb: string, path: string, body?: Body, extraHeaders: Record<string, string> = {}): Promise<Reply> {
    const overHttp = () => this.http.request(verb, path, body, extraHeaders);
    const { bytes, contentType } = encodeBody(body);
    const payload = bytes ?? new Uint8Array(0);
    if (this.closed || payload.byteLength > MAX_ANONYMOUS_BODY) return overHttp();
    const ws = await this.socket();
    if (!ws || ws.readyState !== WebSocket.OPEN) return overHttp();
    // The same headers HTTP would send, minus the transport's own (length, connection).
    const headers: Record<string, string> = { ...extraHeaders };
    if (contentType) headers['content-type'] = contentType;
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(id);
        reject(new SdkError('RELAY_UNREACHABLE', 'the relay did not answer in time'));
        // A socket that stops answering is dead: drop it (its other requests go over HTTP); the next request opens a new one.
        ws.terminate();
      }, this.timeoutMs);
      timer.unref?.();
      this.waiters.set(id, { ws, resolve, reject, timer, overHttp });
      this.busy(ws);
      ws.send(encodeRequest({ id, verb, path, headers, body: payload }), (err) => {
        if (err) this.retryOverHttp(id);
      });
    });
  }

  /** Closes the socket; later requests go over HTTP. */
  async close(): Promise<void> {
    this.closed = true;
    this.clearIdle();
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState !== WebSocket.CLOSED) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          ws.terminate();
          resolve();
        }, 2000);
        t.unref?.();
        ws.once('close', () => {
          clearTimeout(t);
          resolve();
        });
        ws.close(1000);
      });
    }
    this.http.close();
  }

  /** The open socket, a new one, or null when it cannot open (then HTTP for a while). */
  private socket(): Promise<WebSocket | null> {
    if (this.ws?.readyState === WebSocket.OPEN) return Promise.resolve(this.ws);
    if (Date.now() - this.failedAt < this.retryMs) return Promise.resolve(null);
    this.opening ??= this.dial().finally(() => (this.opening = null));
    return this.opening;
  }

  private dial(): Promise<WebSocket | null> {
    const url = new URL('/v1/websocket/anonymous', this.serverUrl);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    return new Promise((resolve) => {
      const ws = new WebSocket(url, { handshakeTimeout: this.timeoutMs, maxPayload: 2 * 1024 * 1024 });
      ws.binaryType = 'nodebuffer';
      let settled = false;
      const failed = (): void => {
        if (settled) return;
        settled = true;
        this.failedAt = Date.now();
        ws.terminate();
        resolve(null);
      };
      // Refused (an old relay, a proxy without WebSockets, a rate limit, shutting down): HTTP answers instead.
      ws.on('unexpected-response', (_req, res) => {
        res.resume();
        failed();
      });
      ws.on('error', failed);
      ws.on('open', () => {
        settled = true;
        if (this.closed) {
          ws.close(1000);
          return resolve(null);
        }
        this.ws = ws;
        resolve(ws);
      });
      ws.on('message', (data: Buffer, isBinary: boolean) => {
        if (isBinary) this.onFrame(ws, data);
      });
      ws.on('close', () => {
        failed();
        if (this.ws === ws) {
          this.ws = null;
          this.clearIdle();
        }
        for (const [id, w] of this.waiters) if (w.ws === ws) this.retryOverHttp(id);
      });
    });
  }

  private onFrame(ws: WebSocket, data: Buffer): void {
    let frame;
    try {
      frame = decodeFrame(data);
    } catch {
      return; // not a frame we understand; its request times out
    }
    // The relay sends nothing but answers here; an id-0 answer (to a frame it could not read) matches no request.
    if (frame.kind !== 'response') return;
    const w = this.waiters.get(frame.id);
    if (!w) return;
    this.waiters.delete(frame.id);
    clearTimeout(w.timer);
    this.idleSoon(ws);
    w.resolve({ status: frame.status, body: frame.body, headers: frame.headers });
  }

  private retryOverHttp(id: bigint): void {
    const w = this.waiters.get(id);
    if (!w) return;
    this.waiters.delete(id);
    clearTimeout(w.timer);
    w.overHttp().then(w.resolve, w.reject);
  }

  /** A request is in flight: keep the process alive for it and hold off the idle close. */
  private busy(ws: WebSocket): void {
    this.clearIdle();
    setRef(ws, true);
  }

  /** No answer outstanding: let the process exit if nothing else runs, and close after `idleMs`. */
  private idleSoon(ws: WebSocket): void {
    if (this.waiters.size > 0 || this.ws !== ws) return;
    setRef(ws, false);
    this.clearIdle();
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      if (this.ws !== ws || this.waiters.size > 0) return;
      this.ws = null;
      ws.close(1000);
    }, this.idleMs);
    this.idleTimer.unref?.();
  }

  private clearIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }
}

/**
 * Like the HTTP agent's pooled sockets, an idle anonymous socket must not
 * keep the process alive. `_socket` is ws's own field; without it the socket
 * simply stays referenced until the idle close.
 */
function setRef(ws: WebSocket, on: boolean): void {
  const socket = (ws as unknown as { _socket?: { ref?: () => void; unref?: () => void } })._socket;
  if (on) socket?.ref?.();
  else socket?.unref?.();
}
