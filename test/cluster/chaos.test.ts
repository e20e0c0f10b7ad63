/**
 * kill -9 under load: three relay nodes behind a TCP load balancer, clients
 * sending steadily; every couple of seconds a random node is killed and
 * started again, for ten cycles, while clients reconnect through the
 * balancer to surviving nodes. Every acknowledged message must arrive exactly
 * once as the user sees it, and in each sender's order.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/net.js';
import { killAll } from '../helpers/procs.js';
import { makeTempDir, removeTempDirs } from '../helpers/tmp.js';
import { sleep } from '../helpers/wait.js';
import {
  Balancer,
  type ClientRecord,
  ClusterNode,
  NATS_URL,
  checkDelivery,
  createDatabase,
  eventually,
  newClient,
  servicesAvailable,
} from './harness.js';
import { startLoad } from './load.js';

const available = await servicesAvailable('postgres', 'nats');
const CYCLES = Number(process.env.PARLEY_CHAOS_CYCLES ?? 10);

describe('the delivery check', () => {
  it('flags a missing, a duplicated and a reordered message', () => {
    const rec = (received: string[]) => ({ received }) as unknown as ClientRecord;
    const acked = new Map([['a', [1, 2, 3].map((n) => ({ to: 'b', n }))]]);
    expect(checkDelivery(acked, new Map([['b', rec(['a:1', 'a:2', 'a:3'])]]))).toEqual({
      missing: [],
      duplicates: [],
      outOfOrder: [],
    });
    expect(checkDelivery(acked, new Map([['b', rec(['a:1', 'a:3', 'a:3', 'a:2'])]]))).toEqual({
      missing: [],
      duplicates: ['a:3@undefined'],
      outOfOrder: ['a:3@undefined', 'a:2@undefined'],
    });
    expect(checkDelivery(acked, new Map([['b', rec(['a:1', 'a:3'])]])).missing).toEqual(['a:2->b']);
  });
});

describe.skipIf(!available)('kill -9 of random nodes under load', () => {
  const nodes: ClusterNode[] = [];
  const clients: ClientRecord[] = [];
  let balancer: Balancer | null = null;
  let db: { url: string; drop: () => Promise<void> } | null = null;

  beforeAll(async () => {
    db = await createDatabase();
    const tmp = makeTempDir('chaos');
    for (const name of ['n1', 'n2', 'n3'])
      nodes.push(
        new ClusterNode(name, await freePort(), {
          dataDir: tmp,
          logDir: tmp,
          store: db.url,
          bus: NATS_URL,
          pollIntervalMs: 1_000,
        }),
      );
    await Promise.all(nodes.map((n) => n.start()));
    balancer = await Balancer.start(nodes.map((n) => n.port));
    for (let i = 0; i < 6; i++) clients.push(await newClient(join(tmp, `c${i}`), balancer.url, `chaos_${i}`));
  });

  afterAll(async () => {
    for (const c of clients) await c.client.close().catch(() => undefined);
    for (const n of nodes) await n.stop().catch(() => undefined);
    await balancer?.close();
    await killAll();
    await db?.drop();
    removeTempDirs();
  });

  it(
    `delivers every acknowledged message exactly once, in order, across ${CYCLES} kill -9 cycles`,
    { timeout: 240_000 },
    async () => {
      const load = startLoad(clients, 120);
      try {
        await sleep(1_500);
        for (let cycle = 0; cycle < CYCLES; cycle++) {
          // Kill the node holding the most client connections (ties broken at
          // random): a random pick can hit a node the clients already left, and
          // then the cycle tests nothing.
          const shuffled = [...nodes].sort(() => Math.random() - 0.5);
          const victim = shuffled.reduce((a, b) =>
            (balancer?.connectionsTo(b.port) ?? 0) > (balancer?.connectionsTo(a.port) ?? 0) ? b : a,
          );
          await victim.kill9();
          // The balancer skips a refusing backend; clients on the victim reconnect elsewhere.
          await sleep(800 + Math.random() * 700);
          await victim.start();
          await sleep(700 + Math.random() * 700);
        }
        await sleep(1_000);
      } finally {
        await load.stop();
      }
      const total = [...load.acked.values()].reduce((n, s) => n + s.length, 0);
      const receivers = new Map(clients.map((c) => [c.username, c]));
      await eventually(
        () => checkDelivery(load.acked, receivers).missing.length === 0,
        60_000,
        'every acknowledged message to arrive',
      ).catch(() => undefined);
      const result = checkDelivery(load.acked, receivers);
      console.log(
        `chaos: ${CYCLES} kill -9 cycles, ${total} acknowledged sends, ${load.failed()} failed sends, ` +
          `${clients.reduce((n, c) => n + c.received.length, 0)} messages shown, ${clients.reduce((n, c) => n + c.drops, 0)} client reconnects`,
      );
      expect(total).toBeGreaterThan(100);
      // The kills really moved clients between nodes.
      expect(clients.reduce((n, c) => n + c.drops, 0)).toBeGreaterThanOrEqual(CYCLES);
      expect(result.missing).toEqual([]);
      expect(result.duplicates).toEqual([]);
      expect(result.outOfOrder).toEqual([]);
      expect(clients.map((c) => c.replaced)).toEqual(clients.map(() => 0));
    },
  );
});
