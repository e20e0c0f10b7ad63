/**
 * NATS killed (-9) and restarted mid-run: wake-ups published while it is down
 * are lost, and the poll plus the resync after reconnect must still deliver
 * everything. Uses a nats-server of its own on a free port, never the
 * machine's service.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/net.js';
import { killAll } from '../helpers/procs.js';
import { makeTempDir, removeTempDirs } from '../helpers/tmp.js';
import { sleep } from '../helpers/wait.js';
import {
  type ClientRecord,
  ClusterNode,
  OwnNats,
  checkDelivery,
  createDatabase,
  eventually,
  newClient,
  servicesAvailable,
} from './harness.js';
import { startLoad } from './load.js';

const NATS_BIN = process.env.PARLEY_NATS_SERVER ?? '/usr/sbin/nats-server';
let available = await servicesAvailable('postgres');
if (available && !existsSync(NATS_BIN)) {
  if (process.env.CI === 'true') throw new Error(`${NATS_BIN} not found — CI requires it`);
  console.warn(`skipping NATS restart test: ${NATS_BIN} not found`);
  available = false;
}

describe.skipIf(!available)('NATS killed and restarted mid-run', () => {
  const nodes: ClusterNode[] = [];
  const clients: ClientRecord[] = [];
  let nats: OwnNats | null = null;
  let db: { url: string; drop: () => Promise<void> } | null = null;

  beforeAll(async () => {
    db = await createDatabase();
    nats = new OwnNats(await freePort());
    await nats.start();
    const tmp = makeTempDir('natsrestart');
    for (const name of ['n1', 'n2', 'n3'])
      nodes.push(
        new ClusterNode(name, await freePort(), {
          dataDir: tmp,
          logDir: tmp,
          store: db.url,
          bus: nats.url,
          pollIntervalMs: 1_000,
        }),
      );
    await Promise.all(nodes.map((n) => n.start()));
    // Clients pinned to nodes round-robin: the ring's neighbours sit on different nodes.
    for (let i = 0; i < 6; i++)
      clients.push(await newClient(join(tmp, `c${i}`), (nodes[i % 3] as ClusterNode).url, `natsr_${i}`));
  });

  afterAll(async () => {
    for (const c of clients) await c.client.close().catch(() => undefined);
    for (const n of nodes) await n.stop().catch(() => undefined);
    await nats?.kill9();
    await killAll();
    await db?.drop();
    removeTempDirs();
  });

  it('loses no message and keeps order while NATS is down and after it returns', { timeout: 120_000 }, async () => {
    const own = nats as OwnNats;
    const load = startLoad(clients, 100);
    try {
      await sleep(2_000);
      await own.kill9();
      await sleep(3_000);
      await own.start();
      await sleep(2_000);
      // And once more, to cover a second reconnect.
      await own.kill9();
      await sleep(1_500);
      await own.start();
      await sleep(2_000);
    } finally {
      await load.stop();
    }
    const receivers = new Map(clients.map((c) => [c.username, c]));
    await eventually(() => checkDelivery(load.acked, receivers).missing.length === 0, 30_000, 'every acknowledged message').catch(
      () => undefined,
    );
    const total = [...load.acked.values()].reduce((n, s) => n + s.length, 0);
    const result = checkDelivery(load.acked, receivers);
    console.log(`nats restart: ${total} acknowledged sends, ${load.failed()} failed sends`);
    expect(total).toBeGreaterThan(100);
    expect(result).toEqual({ missing: [], duplicates: [], outOfOrder: [] });
    // Every node survived the outage.
    expect(nodes.map((n) => n.alive)).toEqual([true, true, true]);
  });
});
