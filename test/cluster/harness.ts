/**
 * Multi-process cluster fixtures: a throwaway PostgreSQL database, relay
 * processes in cluster mode, a TCP load balancer in front of them, and SDK
 * clients. Every process started here is tracked and killed in afterAll.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { type Server, type Socket, connect, createServer } from 'node:net';
import { join } from 'node:path';
import pg from 'pg';
import { ParleyClient } from '@parley/sdk';
import { exited, isRunning, track } from '../helpers/procs.js';
import { type RelayProcess, startRelayProcess } from '../helpers/relay.js';
import { sleep, withTimeout } from '../helpers/wait.js';

export { NATS_URL, PG_URL, servicesAvailable, uniqueName } from '../../packages/relay/test/services.js';
import { PG_URL, uniqueName } from '../../packages/relay/test/services.js';

/** Create an empty database; returns its URL and a function that drops it. */
export async function createDatabase(): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = uniqueName('parley_cluster');
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(PG_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const c = new pg.Client({ connectionString: PG_URL });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

/**
 * A TCP load balancer: each new connection goes to the next backend in turn;
 * a backend that refuses is skipped. When a backend dies its connections
 * drop, and clients reconnect through the balancer to a surviving node.
 */
export class Balancer {
  #backends: number[] = [];
  #next = 0;
  readonly #open = new Set<Socket>();
  /** Open upstream connections per backend port. */
  readonly #perBackend = new Map<number, number>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(backends: number[]): Promise<Balancer> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const addr = server.address();
    if (addr === null || typeof addr === 'string') throw new Error('balancer has no port');
    const b = new Balancer(server, addr.port);
    b.setBackends(backends);
    server.on('connection', (client) => b.#route(client));
    return b;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  setBackends(ports: number[]): void {
    this.#backends = [...ports];
  }

  /** How many client connections are open to the backend on `port` right now. */
  connectionsTo(port: number): number {
    return this.#perBackend.get(port) ?? 0;
  }

  #route(client: Socket): void {
    this.#open.add(client);
    client.pause();
    client.on('error', () => client.destroy());
    client.once('close', () => this.#open.delete(client));
    const order = this.#backends.map((_, i) => this.#backends[(this.#next + i) % this.#backends.length] as number);
    this.#next++;
    const attempt = (i: number): void => {
      const port = order[i];
      if (port === undefined || client.destroyed) return void client.destroy();
      const upstream = connect({ host: '127.0.0.1', port });
      let connected = false;
      upstream.once('connect', () => {
        connected = true;
        this.#open.add(upstream);
        this.#perBackend.set(port, this.connectionsTo(port) + 1);
        upstream.once('close', () => {
          this.#open.delete(upstream);
          this.#perBackend.set(port, this.connectionsTo(port) - 1);
          client.destroy();
        });
        client.once('close', () => upstream.destroy());
        upstream.pipe(client);
        client.pipe(upstream);
        client.resume();
      });
      upstream.on('error', () => {
        if (!connected) attempt(i + 1);
        upstream.destroy();
      });
    };
    attempt(0);
  }

  async close(): Promise<void> {
    for (const s of this.#open) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

export interface ClusterNodeOptions {
  dataDir: string;
  logDir: string;
  store: string;
  bus: string;
  pollIntervalMs: number;
}

/** One relay node in cluster mode; `restart()` starts a new process on the same port. */
export class ClusterNode {
  #proc: RelayProcess | null = null;
  #incarnation = 0;

  constructor(
    readonly name: string,
    readonly port: number,
    private readonly opts: ClusterNodeOptions,
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get alive(): boolean {
    return this.#proc !== null && isRunning(this.#proc.child);
  }

  async start(): Promise<void> {
    this.#incarnation++;
    this.#proc = await startRelayProcess({
      dataDir: join(this.opts.dataDir, this.name),
      logFile: join(this.opts.logDir, `${this.name}-${this.#incarnation}.log`),
      port: this.port,
      env: {
        PARLEY_STORE: this.opts.store,
        PARLEY_BUS: this.opts.bus,
        PARLEY_POLL_INTERVAL_MS: String(this.opts.pollIntervalMs),
        PARLEY_LOG_LEVEL: 'info',
      },
    });
  }

  async kill9(): Promise<void> {
    await this.#proc?.kill9();
  }

  async stop(): Promise<void> {
    if (this.alive) await this.#proc?.stop();
  }
}

/** A `nats-server` of our own (never the system one), so a test may kill -9 it. */
export class OwnNats {
  #child: ChildProcess | null = null;

  constructor(readonly port: number) {}

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const bin = process.env.PARLEY_NATS_SERVER ?? '/usr/sbin/nats-server';
    const child = track(spawn(bin, ['-a', '127.0.0.1', '-p', String(this.port)], { stdio: 'ignore' }));
    this.#child = child;
    // Ready when the port accepts connections.
    await withTimeout(
      (async () => {
        for (;;) {
          if (!isRunning(child)) throw new Error('nats-server exited at start');
          const ok = await new Promise<boolean>((resolve) => {
            const s = connect({ host: '127.0.0.1', port: this.port });
            s.once('connect', () => (s.destroy(), resolve(true)));
            s.once('error', () => (s.destroy(), resolve(false)));
          });
          if (ok) return;
          await sleep(50);
        }
      })(),
      10_000,
      'nats-server to listen',
    );
  }

  async kill9(): Promise<void> {
    const c = this.#child;
    if (c && isRunning(c)) {
      c.kill('SIGKILL');
      await exited(c);
    }
  }
}

/** What one client saw: message bodies in arrival order, and states. */
export interface ClientRecord {
  client: ParleyClient;
  username: string;
  received: string[];
  replaced: number;
  /** Connections that closed (the client then reconnects by itself). */
  drops: number;
  errors: number;
}

export async function newClient(profileDir: string, serverUrl: string, username: string): Promise<ClientRecord> {
  const client = await ParleyClient.register({ profileDir, serverUrl, username, passphrase: null });
  const rec: ClientRecord = { client, username, received: [], replaced: 0, drops: 0, errors: 0 };
  client.on('message', (m) => void rec.received.push(m.body));
  client.on('connection', (s) => {
    if (s === 'replaced') rec.replaced++;
    if (s === 'closed') rec.drops++;
  });
  client.on('error', () => void rec.errors++);
  await client.connect();
  return rec;
}

/**
 * Checks the delivery guarantees for bodies of the form `<sender>:<n>`:
 * every acknowledged send arrived exactly once, nothing arrived twice, and
 * each sender's messages arrived in the order they were sent.
 */
export function checkDelivery(
  acked: Map<string, { to: string; n: number }[]>,
  receivers: Map<string, ClientRecord>,
): { missing: string[]; duplicates: string[]; outOfOrder: string[] } {
  const missing: string[] = [];
  const duplicates: string[] = [];
  const outOfOrder: string[] = [];
  for (const [sender, sends] of acked) {
    for (const s of sends) {
      const got = receivers.get(s.to)?.received.filter((b) => b === `${sender}:${s.n}`).length ?? 0;
      if (got === 0) missing.push(`${sender}:${s.n}->${s.to}`);
    }
  }
  for (const rec of receivers.values()) {
    const seen = new Set<string>();
    const last = new Map<string, number>();
    for (const body of rec.received) {
      if (seen.has(body)) duplicates.push(`${body}@${rec.username}`);
      seen.add(body);
      const [sender = '', nText = ''] = body.split(':');
      const n = Number(nText);
      if ((last.get(sender) ?? 0) >= n) outOfOrder.push(`${body}@${rec.username}`);
      last.set(sender, n);
    }
  }
  return { missing, duplicates, outOfOrder };
}

/** Resolves once `done()` holds, polling; fails after `ms`. */
export async function eventually(done: () => boolean, ms: number, what: string): Promise<void> {
  await withTimeout(
    (async () => {
      while (!done()) await sleep(100);
    })(),
    ms,
    what,
  );
}
