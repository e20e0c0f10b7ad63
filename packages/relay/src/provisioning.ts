/**
 * Provisioning sockets: the one unauthenticated WebSocket. A device that is
 * about to be linked opens `GET /v1/provisioning`, is given a random address
 * in the first frame (`PUT /v1/address`, JSON `{address}`), and waits. The
 * primary uploads an encrypted ProvisionEnvelope to that address
 * (`PUT /v1/provisioning/:address`); the relay pushes it unread as
 * `PUT /v1/message` and closes the socket. One message per socket; sockets
 * close on their own after `timeoutMs`.
 *
 * Across a cluster the envelope travels on the bus as an `online:` signal
 * keyed by a hash of the address, so the node holding the socket gets it.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { encodeRequest } from '@parley/wire';
import type { Logger } from 'pino';
import { type WebSocket, WebSocketServer } from 'ws';
import { ONLINE_PREFIX, onlineEnvelope } from './online.js';
import type { Bus } from './ports.js';

export const PROVISIONING_PATH = '/v1/provisioning';
/** Close code when the envelope was delivered, and when the socket timed out. */
export const ProvisioningClose = { Delivered: 1000, Expired: 4408 } as const;

/** The bus key of a provisioning address (shaped like a device key, so every bus accepts it). */
export function provisioningBusKey(address: string): string {
  return `provisioning-${createHash('sha256').update(address, 'utf8').digest('hex').slice(0, 40)}.0`;
}

export interface ProvisioningOptions {
  bus: Bus;
  log: Logger;
  /** Rate limit per client address; resolves when allowed, else with the seconds to wait. */
  admit: (ip: string) => Promise<{ kind: 'allowed' } | { kind: 'limited'; retryAfterSeconds: number }>;
  /** How long a provisioning socket waits for its message. */
  timeoutMs: number;
}

const encoder = new TextEncoder();

function refuse(socket: Duplex, status: number, code: string, message: string, retryAfterSeconds?: number): void {
  const body = JSON.stringify({ code, message });
  const retry = retryAfterSeconds === undefined ? '' : `retry-after: ${retryAfterSeconds}\r\n`;
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\ncontent-type: application/json\r\n${retry}` +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

export class ProvisioningSockets {
  readonly #wss = new WebSocketServer({ noServer: true, maxPayload: 4096 });
  readonly #open = new Set<WebSocket>();
  #draining = false;

  constructor(private readonly opts: ProvisioningOptions) {}

  get size(): number {
    return this.#open.size;
  }

  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    if (this.#draining) return refuse(socket, 503, 'SHUTTING_DOWN', 'relay is shutting down');
    this.opts.admit(req.socket.remoteAddress ?? '').then(
      (r) => {
        if (r.kind === 'limited') return refuse(socket, 429, 'RATE_LIMITED', 'too many provisioning sockets', r.retryAfterSeconds);
        if (this.#draining) return refuse(socket, 503, 'SHUTTING_DOWN', 'relay is shutting down');
        this.#wss.handleUpgrade(req, socket, head, (ws) => this.#start(ws));
      },
      () => refuse(socket, 500, 'INTERNAL', 'internal error'),
    );
  }

  #start(ws: WebSocket): void {
    this.#open.add(ws);
    const address = randomBytes(16).toString('base64url');
    let nextId = 1n;
    const send = (path: string, body: Uint8Array, headers: Record<string, string>) => {
      if (ws.readyState === ws.OPEN) ws.send(encodeRequest({ id: nextId++, verb: 'PUT', path, headers, body }));
    };
    let done = false;
    const unsubscribe = this.opts.bus.subscribe(provisioningBusKey(address), (signal) => {
      if (done || !signal.startsWith(ONLINE_PREFIX)) return;
      const bytes = onlineEnvelope(signal);
      if (!bytes) return;
      done = true;
      send('/v1/message', bytes, { 'content-type': 'application/x-protobuf' });
      ws.close(ProvisioningClose.Delivered, 'delivered');
    });
    const timer = setTimeout(() => ws.close(ProvisioningClose.Expired, 'expired'), this.opts.timeoutMs);
    timer.unref();
    ws.on('error', () => ws.terminate());
    // The device only listens; anything it sends is ignored.
    ws.on('message', () => undefined);
    ws.on('close', () => {
      clearTimeout(timer);
      unsubscribe();
      this.#open.delete(ws);
    });
    // Hand out the address only once the bus has registered the subscription (NATS: a flush round trip), so a
    // primary that answers at once, through another node, cannot publish before anyone listens.
    const bus = this.opts.bus as Bus & { flush?: () => Promise<void> };
    const ready = typeof bus.flush === 'function' ? bus.flush().catch(() => undefined) : Promise.resolve();
    void ready.then(() => send('/v1/address', encoder.encode(JSON.stringify({ address })), { 'content-type': 'application/json' }));
  }

  /** Hand an encrypted envelope to whichever node holds the socket of `address` (nothing happens when none does). */
  forward(address: string, envelope: Uint8Array): void {
    this.opts.bus.publish(provisioningBusKey(address), `online:${Buffer.from(envelope).toString('base64')}`);
  }

  async close(): Promise<void> {
    this.#draining = true;
    const closing = [...this.#open].map(
      (ws) =>
        new Promise<void>((resolve) => {
          ws.once('close', () => resolve());
          ws.close(1001, 'relay shutting down');
          setTimeout(() => {
            ws.terminate();
            resolve();
          }, 1000).unref();
        }),
    );
    await Promise.all(closing);
    await new Promise<void>((resolve) => this.#wss.close(() => resolve()));
  }
}
