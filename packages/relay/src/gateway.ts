/**
 * The relay's WebSockets. The device socket is authenticated at upgrade, one
 * per device, with request/response frames in both directions: the relay
 * pushes the device's queue in order with a bounded window of unacknowledged
 * envelopes, and a 2xx answer is the ack that deletes an envelope. The
 * anonymous socket carries no credentials and only the client's requests
 * (sealed-sender sends): the relay never pushes on it.
 */
import type { IncomingMessage } from 'node:http';
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { randomUUID } from 'node:crypto';
import { Limits, type Frame, WireError, WireErrorCode, decodeFrame, encodeRequest, encodeResponse } from '@parley/wire';
import type { Logger } from 'pino';
import { type RawData, WebSocket, WebSocketServer } from 'ws';
import { parseBasicAuth } from './auth.js';
import { RelayError } from './errors.js';
import type { RelayMetrics } from './metrics.js';
import { ONLINE_PREFIX, onlineEnvelope } from './online.js';
import { type BusSignal, type Bus, type Clock, type QueuedEnvelope, type Store, deviceKey } from './ports.js';
import { decodeAck, encodeOkEmptyResponse, encodePushFrame } from './push-frame.js';
import { type DeviceRef, type Relay, keysLow } from './relay.js';
import { type RouteResponse, type Router, describeBug, errorResponse } from './router.js';

/** Close codes used by the relay (docs/PROTOCOL.md). */
export const CloseCodes = { Replaced: 4409, GoingAway: 1001, Idle: 1000, ServerError: 1011 } as const;

export const DEVICE_SOCKET_PATH = '/v1/websocket';
export const ANONYMOUS_SOCKET_PATH = '/v1/websocket/anonymous';

export interface GatewayOptions {
  /** Most envelopes pushed and not yet acknowledged on one socket. */
  window: number;
  /** Sockets silent for longer than this are closed. */
  idleTimeoutMs: number;
  /** How often to look for idle sockets. */
  idleCheckMs: number;
  /**
   * How often every open session re-reads its queue even without a wake-up;
   * 0 turns it off. The in-process bus never loses a wake-up, so the embedded
   * relay leaves it off; a cluster turns it on so a wake-up lost on the
   * network only delays delivery.
   */
  pollIntervalMs: number;
}

export const defaultGatewayOptions: GatewayOptions = {
  window: 64,
  idleTimeoutMs: 90_000,
  idleCheckMs: 15_000,
  pollIntervalMs: 0,
};

/**
 * Orders sockets of one device by when they opened (then by a random id):
 * the newest wins. Across nodes this relies on roughly synchronized clocks;
 * a tie-break by id keeps both nodes agreeing on one winner.
 */
function newerToken(a: string, b: string): boolean {
  const [at = '', aid = ''] = a.split(':');
  const [bt = '', bid = ''] = b.split(':');
  const an = Number(at);
  const bn = Number(bt);
  return an !== bn ? an > bn : aid > bid;
}

interface GatewayDeps {
  relay: Relay;
  router: Router;
  store: Store;
  bus: Bus;
  clock: Clock;
  log: Logger;
  metrics: RelayMetrics;
  options: GatewayOptions;
}

const JSON_HEADERS = { 'content-type': 'application/json' };
const encoder = new TextEncoder();
/** Allow frames a bit over the limit so they get a 413 answer instead of a dropped socket. */
const MAX_PAYLOAD = 2 * 1024 * 1024;

export class Gateway {
  readonly #wss = new WebSocketServer({ noServer: true, maxPayload: MAX_PAYLOAD });
  readonly #sessions = new Map<string, Session>();
  readonly #anonymous = new Set<AnonymousSocket>();
  /** Socket tasks (upgrades, frames, pushes) not finished yet, and who waits for there to be none. */
  #pending = 0;
  #idleWaiters: Array<() => void> = [];
  readonly #timer: NodeJS.Timeout;
  readonly #pollTimer: NodeJS.Timeout | null = null;
  #draining = false;

  constructor(private readonly deps: GatewayDeps) {
    this.#timer = setInterval(() => this.sweepIdle(), deps.options.idleCheckMs);
    this.#timer.unref();
    if (deps.options.pollIntervalMs > 0) {
      this.#pollTimer = setInterval(() => this.pollAll(), deps.options.pollIntervalMs);
      this.#pollTimer.unref();
    }
  }

  /** Ask every open session to look at its queue (the safety net for lost wake-ups). */
  pollAll(): void {
    for (const s of this.#sessions.values()) s.poll();
  }

  /** Number of open device sessions. */
  get size(): number {
    return this.#sessions.size;
  }

  /** Number of open anonymous sockets. */
  get anonymousSize(): number {
    return this.#anonymous.size;
  }

  /** Handle an HTTP upgrade request for `GET /v1/websocket` or `GET /v1/websocket/anonymous`. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    const path = (req.url ?? '').split('?')[0];
    if (path !== DEVICE_SOCKET_PATH && path !== ANONYMOUS_SOCKET_PATH) return reject(socket, 404, 'NOT_FOUND', 'no such route');
    if (this.#draining) return reject(socket, 503, 'SHUTTING_DOWN', 'relay is shutting down');
    if (path === ANONYMOUS_SOCKET_PATH) return this.#upgradeAnonymous(req, socket, head);
    this.#track(
      this.deps.relay.authenticate(parseBasicAuth(req.headers.authorization)).then(
        (me) => {
          if (this.#draining) return reject(socket, 503, 'SHUTTING_DOWN', 'relay is shutting down');
          this.#wss.handleUpgrade(req, socket, head, (ws) => this.#open(ws, me));
        },
        (err: unknown) => this.#refuse(socket, err),
      ),
    );
  }

  /** No credentials (a client must not tie its identity to this socket), and a per-address limit on opening. */
  #upgradeAnonymous(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (req.headers.authorization !== undefined)
      return reject(socket, 400, 'BAD_REQUEST', 'the anonymous socket takes no credentials');
    const ip = req.socket.remoteAddress ?? '';
    this.#track(
      this.deps.relay.limitAsync('anonymousSocket', ip).then(
        () => {
          if (this.#draining) return reject(socket, 503, 'SHUTTING_DOWN', 'relay is shutting down');
          this.#wss.handleUpgrade(req, socket, head, (ws) => this.#openAnonymous(ws, ip));
        },
        (err: unknown) => this.#refuse(socket, err),
      ),
    );
  }

  /** Refuse an upgrade with the error's status and code (retry-after for a rate limit). */
  #refuse(socket: Duplex, err: unknown): void {
    if (RelayError.is(err)) return reject(socket, err.status, err.code, err.message, err.details.retryAfterSeconds);
    this.deps.log.error({ err: describeBug(err) }, 'upgrade failed');
    reject(socket, 500, 'INTERNAL', 'internal error');
  }

  #openAnonymous(ws: WebSocket, ip: string): void {
    const conn = new AnonymousSocket(ws, this.deps, (p) => this.#track(p), ip);
    this.#anonymous.add(conn);
    this.deps.metrics.openAnonymousSockets.inc();
    ws.on('close', () => {
      this.#anonymous.delete(conn);
      this.deps.metrics.openAnonymousSockets.dec();
    });
    conn.start();
  }

  #open(ws: WebSocket, me: DeviceRef): void {
    const key = deviceKey(me.account, me.device);
    const session = new Session(ws, me, this.deps, (p) => this.#track(p));
    const old = this.#sessions.get(key);
    this.#sessions.set(key, session);
    this.deps.metrics.openSockets.inc();
    if (old) old.close(CloseCodes.Replaced, 'replaced by a newer connection');
    ws.on('close', () => {
      session.dispose();
      if (this.#sessions.get(key) === session) this.#sessions.delete(key);
      this.deps.metrics.openSockets.dec();
    });
    session.start();
  }

  /** Count a task until it settles (one reaction per task: this runs for every frame). */
  #track<T>(p: Promise<T>): void {
    this.#pending++;
    void p.then(this.#taskDone, this.#taskFailed);
  }

  readonly #taskDone = (): void => {
    if (--this.#pending > 0) return;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const w of waiters) w();
  };

  readonly #taskFailed = (err: unknown): void => {
    this.deps.log.error({ err: describeBug(err) }, 'socket task failed');
    this.#taskDone();
  };

  /** Close sockets that have been silent for longer than the idle timeout. */
  sweepIdle(): void {
    const cutoff = this.deps.clock.now() - this.deps.options.idleTimeoutMs;
    for (const s of this.#sockets()) if (s.lastSeen < cutoff) s.close(CloseCodes.Idle, 'idle');
  }

  /** Stop accepting, close every socket with 1001 and wait for running handlers. */
  async close(): Promise<void> {
    this.#draining = true;
    clearInterval(this.#timer);
    if (this.#pollTimer) clearInterval(this.#pollTimer);
    const sockets = [...this.#sockets()];
    for (const s of sockets) s.close(CloseCodes.GoingAway, 'relay shutting down');
    while (this.#pending > 0) await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
    await Promise.all(sockets.map((s) => s.closed(1000)));
    await new Promise<void>((resolve) => this.#wss.close(() => resolve()));
  }

  *#sockets(): Iterable<Connection> {
    yield* this.#sessions.values();
    yield* this.#anonymous;
  }
}

function reject(socket: Duplex, status: number, code: string, message: string, retryAfterSeconds?: number): void {
  const body = JSON.stringify({ code, message });
  const retry = retryAfterSeconds === undefined ? '' : `retry-after: ${retryAfterSeconds}\r\n`;
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\ncontent-type: application/json\r\n${retry}` +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/** `200` with body `{}` and no headers of its own: the answer to a send, sent pre-encoded. */
function isOkEmpty(res: RouteResponse): boolean {
  if (res.status !== 200 || res.headers !== undefined || res.code !== undefined) return false;
  const json = res.json;
  if (typeof json !== 'object' || json === null || Object.getPrototypeOf(json) !== Object.prototype) return false;
  for (const _ in json) return false;
  return true;
}

function toBytes(data: RawData): Uint8Array {
  if (Array.isArray(data)) return new Uint8Array(Buffer.concat(data));
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** Requests read from sockets by this process (their log ids). */
let socketRequestCount = 0;
function withoutAuthorization(headers: Readonly<Record<string, string>>): Record<string, string> {
  const { authorization: _ignored, ...rest } = headers;
  return rest;
}

/** What a socket's requests are dispatched as. */
interface Caller {
  /** The authenticated device, or null on the anonymous socket. */
  device: DeviceRef | null;
  /** The client address handed to the router (rate limits per address). */
  ip: string;
  /** Metrics label. */
  kind: 'device' | 'anonymous';
}

/**
 * What both socket kinds share: binary frames in, request frames dispatched
 * through the router as `caller`, answers by id (id 0 for a frame without a
 * readable id), keepalives, idle bookkeeping and closing. Subclasses decide
 * what a response frame from the client means.
 */
abstract class Connection {
  lastSeen: number;
  /** Set once the socket is closing: frames that still arrive are ignored. */
  protected stopping = false;
  readonly #closedPromise: Promise<void>;
  readonly #caller: Caller;
  /** This socket kind's request counter, bound once (a label lookup per frame otherwise). */
  readonly #requests: { inc(): void };

  constructor(
    protected readonly ws: WebSocket,
    protected readonly deps: GatewayDeps,
    protected readonly track: (p: Promise<unknown>) => void,
    caller: Caller,
  ) {
    this.lastSeen = deps.clock.now();
    this.#caller = caller;
    this.#requests = deps.metrics.socketRequests.labels(caller.kind);
    this.#closedPromise = new Promise((resolve) => ws.once('close', () => resolve()));
  }

  /** Start reading frames. */
  protected listen(): void {
    this.ws.on('message', (data, isBinary) => this.#onMessage(data, isBinary));
    this.ws.on('pong', () => (this.lastSeen = this.deps.clock.now()));
    this.ws.on('error', () => this.ws.terminate());
  }

  /** Stop accepting frames and close the socket. */
  close(code: number, reason: string): void {
    this.stopping = true;
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.close(code, reason);
  }

  /** Resolves once the socket has closed; terminates it after `graceMs`. */
  async closed(graceMs: number): Promise<void> {
    const t = setTimeout(() => this.ws.terminate(), graceMs);
    await this.#closedPromise;
    clearTimeout(t);
  }

  /** The client answered request `id` (one the relay sent) with `status`. */
  protected abstract onResponse(id: bigint, status: number): Promise<void>;

  protected sendResponse(id: bigint, res: RouteResponse): void {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    if (isOkEmpty(res)) return this.ws.send(encodeOkEmptyResponse(id));
    const body = res.json === undefined ? new Uint8Array(0) : encoder.encode(JSON.stringify(res.json));
    const headers = { ...(res.json === undefined ? {} : JSON_HEADERS), ...(res.headers ?? {}) };
    this.ws.send(encodeResponse({ id, status: res.status, message: res.code ?? STATUS_CODES[res.status] ?? '', headers, body }));
  }

  #onMessage(data: RawData, isBinary: boolean): void {
    this.lastSeen = this.deps.clock.now();
    if (this.stopping) return;
    const bytes = toBytes(data);
    if (!isBinary)
      return this.sendResponse(0n, errorResponse(new RelayError('BAD_REQUEST', 'frames must be binary'), this.deps.log, ''));
    // Acks (every push gets one) are read without the generic decoder; anything else falls through to it.
    const ack = decodeAck(bytes);
    if (ack) return this.track(this.onResponse(ack.id, ack.status));
    let frame: Frame;
    try {
      frame = decodeFrame(bytes);
    } catch (err) {
      // Without a decodable frame there is no id to answer; id 0 marks "your last frame".
      const e = WireError.is(err) ? err : new WireError(WireErrorCode.Malformed, 'frame: undecodable');
      return this.sendResponse(0n, errorResponse(e, this.deps.log, ''));
    }
    if (frame.kind === 'response') return this.track(this.onResponse(frame.id, frame.status));
    this.track(this.#onRequest(frame));
  }

  async #onRequest(frame: Extract<Frame, { kind: 'request' }>): Promise<void> {
    if (frame.body.length > Limits.maxFrameBytes) {
      return this.sendResponse(frame.id, errorResponse(new RelayError('TOO_LARGE', 'body too large'), this.deps.log, ''));
    }
    const query = frame.path.indexOf('?');
    const path = query < 0 ? frame.path : frame.path.slice(0, query);
    this.#requests.inc();
    // The socket answers its own keepalives: over HTTP the route needs credentials, which the anonymous socket never has.
    if (frame.verb === 'GET' && path === '/v1/keepalive') return this.sendResponse(frame.id, { status: 200, json: {} });
    // Names the request in this process's logs only (as fastify's request ids do over HTTP).
    const requestId = `ws-${(++socketRequestCount).toString(36)}`;
    // Credentials only ever come from the upgrade; one inside a frame is ignored.
    const headers = frame.headers.authorization === undefined ? frame.headers : withoutAuthorization(frame.headers);
    const { pattern, response } = await this.deps.router.dispatch({
      verb: frame.verb,
      path,
      headers,
      body: frame.body,
      ip: this.#caller.ip,
      device: this.#caller.device,
      requestId,
    });
    if (this.deps.log.isLevelEnabled('debug'))
      this.deps.log.debug(
        { requestId, transport: this.#caller.kind === 'device' ? 'ws' : 'anonymous-ws', route: pattern, status: response.status, code: response.code },
        'request',
      );
    this.sendResponse(frame.id, response);
  }
}

/**
 * A socket without credentials for sealed-sender sends: requests run as
 * unauthenticated HTTP requests from the socket's address would. The relay
 * sends nothing on it but answers and keeps no per-account state for it.
 */
class AnonymousSocket extends Connection {
  constructor(ws: WebSocket, deps: GatewayDeps, track: (p: Promise<unknown>) => void, ip: string) {
    super(ws, deps, track, { device: null, ip, kind: 'anonymous' });
  }

  start(): void {
    this.listen();
  }

  /** The relay never sends requests here, so any response frame is stray and ignored. */
  protected override async onResponse(): Promise<void> {}
}

/** One device's socket: its push window, cursor and pending requests. */
class Session extends Connection {
  #cursor = 0;
  #nextId = 1n;
  readonly #inflight = new Map<bigint, QueuedEnvelope>();
  #pumping = false;
  #pumpAgain = false;
  #backlogFetched = false;
  /**
   * The last push stopped because the window was full (the queue may hold
   * more). Only then can an ack make something new pushable; otherwise new
   * envelopes arrive with their own wake-up (or the cluster's poll).
   */
  #windowFull = false;
  #emptySent = false;
  #disposed = false;
  #unsubscribe: (() => void) | null = null;
  /** `<opened ms>:<random>`: tells this socket apart from the device's other sockets on any node. */
  readonly #token: string;

  constructor(
    ws: WebSocket,
    private readonly me: DeviceRef,
    deps: GatewayDeps,
    track: (p: Promise<unknown>) => void,
  ) {
    super(ws, deps, track, { device: me, ip: '', kind: 'device' });
    this.#token = `${Date.now()}:${randomUUID()}`;
  }

  start(): void {
    const key = deviceKey(this.me.account, this.me.device);
    this.#unsubscribe = this.deps.bus.subscribe(key, (signal) => this.#onSignal(signal));
    // One socket per device across the cluster: an older socket on another node closes with 4409.
    this.deps.bus.publish(key, `replaced:${this.#token}`);
    this.listen();
    this.track(this.#notifyIfKeysLow());
    this.#pump();
  }

  dispose(): void {
    this.#disposed = true;
    this.stopping = true;
    this.#inflight.clear();
    this.#unsubscribe?.();
    this.#unsubscribe = null;
  }

  #onSignal(signal: BusSignal): void {
    if (this.#disposed) return;
    if (signal === 'keysLow') this.track(this.#notifyIfKeysLow());
    else if (signal === 'messages') this.#pump();
    else if (signal.startsWith(ONLINE_PREFIX)) this.#pushOnline(signal);
    else if (newerToken(signal.slice('replaced:'.length), this.#token))
      this.close(CloseCodes.Replaced, 'replaced by a newer connection');
  }

  /** Push an online-only envelope once; it is not tracked, so its ack deletes nothing and it is never pushed again. */
  #pushOnline(signal: string): void {
    const bytes = onlineEnvelope(signal);
    if (!bytes || this.stopping) return;
    this.#sendRequest('PUT', '/api/v1/message', bytes, { 'content-type': 'application/x-protobuf' });
    this.deps.metrics.deliveries.inc();
  }

  /** Re-read the queue (no-op while a push is running or the socket is closing). */
  poll(): void {
    if (!this.#disposed && !this.stopping) this.#pump();
  }

  #sendRequest(verb: string, path: string, body: Uint8Array, headers: Record<string, string> = {}): bigint {
    const id = this.#nextId++;
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(encodeRequest({ id, verb, path, headers, body }));
    return id;
  }

  async #notifyIfKeysLow(): Promise<void> {
    const counts = await this.deps.store.keyCounts(this.me.account, this.me.device);
    if (keysLow(counts) && !this.#disposed)
      this.#sendRequest('PUT', '/api/v1/keys/low', encoder.encode(JSON.stringify(counts)), JSON_HEADERS);
  }

  /** Push queued envelopes until the window is full or the queue is drained. */
  #pump(): void {
    if (this.#pumping) {
      this.#pumpAgain = true;
      return;
    }
    this.#pumping = true;
    this.track(
      this.#pumpLoop().catch((err: unknown) => {
        this.deps.log.error({ err: describeBug(err) }, 'queue push failed');
        this.close(CloseCodes.ServerError, 'internal error');
      }),
    );
  }

  async #pumpLoop(): Promise<void> {
    const { window } = this.deps.options;
    try {
      do {
        this.#pumpAgain = false;
        while (!this.#disposed && this.#inflight.size < window) {
          const want = window - this.#inflight.size;
          const page = await this.deps.store.fetchQueue(this.me.account, this.me.device, this.#cursor, want);
          if (this.#disposed) return;
          for (const e of page) {
            this.#cursor = e.cursor;
            const id = this.#nextId++;
            if (this.ws.readyState === WebSocket.OPEN)
              this.ws.send(
                encodePushFrame(id, {
                  type: e.type,
                  source: e.source,
                  destination: e.destination,
                  clientTimestamp: e.clientTimestamp,
                  serverTimestamp: e.serverTimestamp,
                  serverGuid: e.guid,
                  content: e.content,
                  urgent: e.urgent,
                }),
              );
            this.#inflight.set(id, e);
            this.deps.metrics.deliveries.inc();
          }
          if (page.length < want) {
            this.#backlogFetched = true;
            break;
          }
        }
      } while (this.#pumpAgain && !this.#disposed);
      this.#windowFull = this.#inflight.size >= window;
    } finally {
      // Cleared in the same tick as the last #pumpAgain check, so no wake-up is lost.
      this.#pumping = false;
    }
    this.#maybeQueueEmpty();
  }

  #maybeQueueEmpty(): void {
    if (this.#backlogFetched && !this.#emptySent && this.#inflight.size === 0 && !this.#disposed) {
      this.#emptySent = true;
      this.#sendRequest('PUT', '/api/v1/queue/empty', new Uint8Array(0));
    }
  }

  protected override async onResponse(id: bigint, status: number): Promise<void> {
    const env = this.#inflight.get(id);
    if (!env) return;
    try {
      if (status >= 200 && status < 300) await this.deps.relay.acknowledge(this.me, env);
    } finally {
      // A refused (or failed) ack leaves the envelope queued; it is pushed again on the next connection.
      this.#inflight.delete(id);
      if (!this.#disposed) {
        if (this.#windowFull || this.#pumping) this.#pump();
        else this.#maybeQueueEmpty();
      }
    }
  }
}
