/**
 * The scale-out Bus over NATS core pub/sub.
 *
 * Routing: a node that holds a device's socket subscribes to
 * `<prefix>.<account>.<device>`; publishing a wake-up to that subject reaches
 * whichever node(s) hold the device, and nobody when the device is offline.
 * NATS's own subject interest is the presence map, so there is no registry
 * to keep consistent and nothing to expire when a node dies: its connection
 * drops and the server forgets its subscriptions.
 *
 * Wake-ups are hints. PostgreSQL holds the queues; a wake-up lost while NATS
 * is down or reconnecting only delays delivery until the gateway's periodic
 * poll, the resync after a NATS reconnect (every local subscriber is woken),
 * or the device's next connection.
 *
 * Subscribers on this node are called directly; the connection uses `noEcho`
 * so they are not called twice through the server.
 */
import type { Bus, BusSignal } from '../../ports.js';
import { MAX_ONLINE_SIGNAL_CHARS } from '../../online.js';

/** The subset of a NATS connection this adapter uses (structural, so the driver loads lazily). */
interface NatsSubscription {
  unsubscribe(): void;
}
interface NatsMsg {
  subject: string;
  data: Uint8Array;
}
export interface NatsConnectionLike {
  publish(subject: string, payload?: Uint8Array): void;
  subscribe(subject: string, opts: { callback: (err: Error | null, msg: NatsMsg) => void }): NatsSubscription;
  status(): AsyncIterable<{ type: string }>;
  flush(): Promise<void>;
  drain(): Promise<void>;
  close(): Promise<void>;
  isClosed(): boolean;
}

export interface NatsBusOptions {
  /** Subject prefix (default `parley.wake`); clusters sharing one NATS need different ones. */
  subjectPrefix?: string;
  /** Called on connection state changes, for logs and metrics (no user data). */
  onStatus?: (event: 'disconnect' | 'reconnect') => void;
}

const DEVICE_KEY = /^[A-Za-z0-9-]{1,64}\.[0-9]{1,5}$/;
const PREFIX = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** True for a signal this bus forwards; anything else arriving from the network is dropped. */
export function isBusSignal(s: string): s is BusSignal {
  return (
    s === 'messages' ||
    s === 'keysLow' ||
    (s.startsWith('replaced:') && s.length <= 100) ||
    (s.startsWith('online:') && s.length <= MAX_ONLINE_SIGNAL_CHARS)
  );
}

/**
 * Connect to NATS (`nats://host:port`, comma-separated for several servers)
 * and return the bus. Reconnects forever; loads the driver on first use.
 * @throws when no server answers the first connection attempt.
 */
export async function openNatsBus(url: string, opts: NatsBusOptions = {}): Promise<NatsBus> {
  const { connect } = await import('@nats-io/transport-node');
  const nc = await connect({
    servers: url.split(',').map((s) => s.trim()),
    noEcho: true,
    reconnect: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    reconnectJitter: 100,
    pingInterval: 5_000,
    maxPingOut: 2,
    name: 'parley-relay',
  });
  return new NatsBus(nc, opts);
}

export class NatsBus implements Bus {
  readonly #nc: NatsConnectionLike;
  readonly #prefix: string;
  readonly #subs = new Map<string, { fns: Set<(signal: BusSignal) => void>; sub: NatsSubscription }>();
  readonly #watching: Promise<void>;
  #closed = false;

  constructor(nc: NatsConnectionLike, opts: NatsBusOptions = {}) {
    this.#nc = nc;
    this.#prefix = opts.subjectPrefix ?? 'parley.wake';
    if (!PREFIX.test(this.#prefix)) throw new RangeError('subjectPrefix: dot-separated tokens of [A-Za-z0-9_-]');
    this.#watching = this.#watch(opts.onStatus);
  }

  /** After a reconnect, wake every local subscriber: wake-ups published during the gap are gone. */
  async #watch(onStatus: NatsBusOptions['onStatus']): Promise<void> {
    try {
      for await (const s of this.#nc.status()) {
        if (s.type === 'disconnect') onStatus?.('disconnect');
        if (s.type === 'reconnect') {
          onStatus?.('reconnect');
          for (const key of [...this.#subs.keys()]) this.#deliver(key, 'messages');
        }
      }
    } catch {
      // The status iterator ends (or fails) when the connection closes.
    }
  }

  #subject(deviceKey: string): string | null {
    return DEVICE_KEY.test(deviceKey) ? `${this.#prefix}.${deviceKey}` : null;
  }

  #deliver(deviceKey: string, signal: BusSignal): void {
    const entry = this.#subs.get(deviceKey);
    if (!entry) return;
    // Later tick, like LocalBus: publishers never run subscriber code inline.
    for (const fn of [...entry.fns]) queueMicrotask(() => fn(signal));
  }

  publish(deviceKey: string, signal: BusSignal = 'messages'): void {
    if (this.#closed) return;
    this.#deliver(deviceKey, signal);
    const subject = this.#subject(deviceKey);
    if (subject === null || this.#nc.isClosed()) return;
    try {
      this.#nc.publish(subject, encoder.encode(signal));
    } catch {
      // A wake-up is a hint; the poll and the next connection catch up.
    }
  }

  subscribe(deviceKey: string, fn: (signal: BusSignal) => void): () => void {
    let entry = this.#subs.get(deviceKey);
    if (!entry) {
      const subject = this.#subject(deviceKey);
      const sub: NatsSubscription =
        subject === null || this.#closed || this.#nc.isClosed()
          ? { unsubscribe: () => undefined }
          : this.#nc.subscribe(subject, {
              callback: (err, msg) => {
                if (err) return;
                const signal = decoder.decode(msg.data);
                if (isBusSignal(signal)) this.#deliver(deviceKey, signal);
              },
            });
      entry = { fns: new Set(), sub };
      this.#subs.set(deviceKey, entry);
    }
    const mine = entry;
    mine.fns.add(fn);
    return () => {
      if (!mine.fns.delete(fn) || mine.fns.size > 0) return;
      if (this.#subs.get(deviceKey) === mine) this.#subs.delete(deviceKey);
      try {
        mine.sub.unsubscribe();
      } catch {
        // Connection already closed: the server has dropped the interest anyway.
      }
    };
  }

  /** Resolves once the server has processed everything sent so far (tests use it). */
  async flush(): Promise<void> {
    await this.#nc.flush();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#subs.clear();
    // Drain can wait for a server that is gone; give it a moment, then just close.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.#nc.drain().catch(() => undefined),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, 2_000))),
    ]);
    clearTimeout(timer);
    if (!this.#nc.isClosed()) await this.#nc.close().catch(() => undefined);
    await this.#watching;
  }
}
