/**
 * Delivery receipts for the backlog a client finds on connect wait for the
 * relay's queue/empty (or to fill up) instead of leaving each time the receive
 * queue runs dry between group commits: a short backlog is answered with one
 * receipt carrying every timestamp.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultRelayConfig, startRelay, type RunningRelay } from '@parley/relay';
import { ParleyClient } from '../src/index.js';
import { tempDir } from './helpers.js';

let relay: RunningRelay;
const tmp = tempDir('parley-receipts-backlog-');

beforeAll(async () => {
  relay = await startRelay(defaultRelayConfig({ port: 0, dataDir: join(tmp.dir, 'relay'), logLevel: 'silent' }));
});
afterAll(async () => {
  await relay.close();
  tmp.cleanup();
});

describe('delivery receipts for a backlog', () => {
  it('leave once the backlog is handled, in one receipt when it fits', async () => {
    const alice = await ParleyClient.register({ profileDir: join(tmp.dir, 'a'), serverUrl: relay.url, username: 'alice_rb', passphrase: null });
    const bob = await ParleyClient.register({ profileDir: join(tmp.dir, 'b'), serverUrl: relay.url, username: 'bob_rb', passphrase: null });
    try {
      await alice.connect();
      const count = 40;
      const timestamps: number[] = [];
      for (let i = 0; i < count; i++) timestamps.push((await alice.send('bob_rb', `m${i}`)).timestamp);

      const receipts: number[][] = [];
      const all = new Promise<void>((resolve) =>
        alice.on('receipt', (r) => {
          if (r.type !== 'delivery') return;
          receipts.push(r.timestamps);
          if (receipts.flat().length >= count) resolve();
        }),
      );
      let queueEmpty = false;
      bob.on('queueEmpty', () => (queueEmpty = true));
      await bob.connect();
      await all;
      expect(queueEmpty).toBe(true);
      expect([...receipts.flat()].sort((a, b) => a - b)).toEqual(timestamps);
      expect(receipts).toHaveLength(1);
    } finally {
      await alice.close();
      await bob.close();
    }
  });
});
