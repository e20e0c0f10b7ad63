/**
 * Three relay processes sharing PostgreSQL and NATS; clients connect to
 * different nodes, so every message crosses nodes. The poll is set to a
 * minute: prompt delivery proves the NATS wake-up routed it.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/net.js';
import { killAll } from '../helpers/procs.js';
import { makeTempDir, removeTempDirs } from '../helpers/tmp.js';
import { type ClientRecord, ClusterNode, NATS_URL, createDatabase, eventually, newClient, servicesAvailable } from './harness.js';

const available = await servicesAvailable('postgres', 'nats');

describe.skipIf(!available)('three relay nodes', () => {
  const nodes: ClusterNode[] = [];
  const clients: ClientRecord[] = [];
  let db: { url: string; drop: () => Promise<void> } | null = null;

  beforeAll(async () => {
    db = await createDatabase();
    const tmp = makeTempDir('cluster3');
    for (const name of ['n1', 'n2', 'n3']) {
      const node = new ClusterNode(name, await freePort(), {
        dataDir: tmp,
        logDir: tmp,
        store: db.url,
        bus: NATS_URL,
        pollIntervalMs: 60_000,
      });
      nodes.push(node);
    }
    await Promise.all(nodes.map((n) => n.start()));
    for (let i = 0; i < 6; i++) {
      const node = nodes[i % 3] as ClusterNode;
      clients.push(await newClient(join(tmp, `c${i}`), node.url, `user_${i}`));
    }
  });

  afterAll(async () => {
    for (const c of clients) await c.client.close().catch(() => undefined);
    for (const n of nodes) await n.stop().catch(() => undefined);
    await killAll();
    await db?.drop();
    removeTempDirs();
  });

  it('delivers every message across nodes, in order, once', async () => {
    const perPair = 5;
    // Everyone sends to the two clients on the other nodes (i+1, i+2 mod 6 sit on different nodes).
    await Promise.all(
      clients.map(async (c, i) => {
        for (const d of [1, 2]) {
          const to = clients[(i + d) % clients.length] as ClientRecord;
          for (let n = 1; n <= perPair; n++) await c.client.send(to.username, `${c.username}:${d * 100 + n}`);
        }
      }),
    );
    await eventually(() => clients.every((c) => c.received.length === 2 * perPair), 20_000, 'every message to arrive');
    for (const [i, c] of clients.entries()) {
      for (const d of [1, 2]) {
        const from = clients[(i - d + clients.length) % clients.length] as ClientRecord;
        expect(c.received.filter((b) => b.startsWith(`${from.username}:`))).toEqual(
          Array.from({ length: perPair }, (_, k) => `${from.username}:${d * 100 + k + 1}`),
        );
      }
      expect(c.replaced).toBe(0);
    }
  });
});
