/**
 * Two (or three) clients against a real relay over real sockets.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultRelayConfig, startRelay, type RunningRelay } from '@parley/relay';
import { ParleyClient, SdkError } from '../src/index.js';
import { collect, nextEvent, tempDir } from './helpers.js';

let relay: RunningRelay;
const tmp = tempDir('parley-e2e-');
let n = 0;

beforeAll(async () => {
  relay = await startRelay(defaultRelayConfig({ port: 0, dataDir: join(tmp.dir, 'relay'), logLevel: 'silent' }));
});
afterAll(async () => {
  await relay.close();
  tmp.cleanup();
});

async function newClient(name: string): Promise<ParleyClient> {
  n++;
  return ParleyClient.register({ profileDir: join(tmp.dir, `p${n}`), serverUrl: relay.url, username: name, passphrase: null });
}

describe('against a real relay', () => {
  it('registers, sends, receives, and gets delivery and read receipts', async () => {
    const alice = await newClient('alice_1');
    const bob = await newClient('bob_1');
    try {
      await alice.connect();
      await bob.connect();
      const got = nextEvent(bob, 'message');
      const serverReceipt = nextEvent(alice, 'serverReceipt');
      const delivery = nextEvent(alice, 'receipt', (r) => r.type === 'delivery');
      const { timestamp } = await alice.send('bob_1', 'hello bob');
      const [m] = await got;
      expect(m.body).toBe('hello bob');
      expect(m.from).toBe('alice_1');
      expect(m.fromAccount).toBe(alice.identity.accountId);
      expect(m.timestamp).toBe(timestamp);
      expect((await serverReceipt)[0].timestamp).toBe(timestamp);
      const [d] = await delivery;
      expect(d.timestamps).toEqual([timestamp]);
      expect(d.from).toBe('bob_1');

      const read = nextEvent(alice, 'receipt', (r) => r.type === 'read');
      await bob.sendReadReceipt('alice_1', [timestamp]);
      expect((await read)[0].timestamps).toEqual([timestamp]);
      expect(await alice.history('bob_1')).toEqual([{ direction: 'out', timestamp, body: 'hello bob', status: 'read' }]);
      expect(await bob.history('alice_1')).toEqual([{ direction: 'in', timestamp, body: 'hello bob', status: 'read' }]);

      // And back, over the established session.
      const reply = nextEvent(alice, 'message');
      await bob.send('alice_1', 'hi alice');
      expect((await reply)[0].body).toBe('hi alice');
    } finally {
      await alice.close();
      await bob.close();
    }
  });

  it('delivers messages sent while the recipient was offline, once each, in order', async () => {
    const alice = await newClient('alice_2');
    const bob = await newClient('bob_2');
    const bobDir = join(tmp.dir, `p${n}`);
    try {
      await alice.connect();
      const sent: number[] = [];
      for (const body of ['one', 'two', 'three']) sent.push((await alice.send('bob_2', body)).timestamp);
      await bob.close();

      const bob2 = await ParleyClient.open({ profileDir: bobDir, passphrase: null });
      try {
        const messages = collect(bob2, 'message');
        const empty = nextEvent(bob2, 'queueEmpty');
        await bob2.connect();
        await empty;
        expect(messages.map(([m]) => m.body)).toEqual(['one', 'two', 'three']);
        expect((await bob2.history('alice_2')).map((h) => h.timestamp)).toEqual(sent);
      } finally {
        await bob2.close();
      }
    } finally {
      await alice.close();
      await bob.close();
    }
  });

  it('maps relay errors to codes', async () => {
    const alice = await newClient('alice_3');
    try {
      await expect(alice.send('nobody_here', 'x')).rejects.toSatisfy((e) => SdkError.is(e, 'USER_NOT_FOUND'));
      await expect(newClient('alice_3')).rejects.toSatisfy((e) => SdkError.is(e, 'USERNAME_TAKEN'));
      await expect(alice.send('Not A Name!', 'x')).rejects.toSatisfy((e) => SdkError.is(e, 'INVALID_INPUT'));
    } finally {
      await alice.close();
    }
  });
});
