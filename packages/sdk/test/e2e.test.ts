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

      // Safety numbers agree; verifying with the wrong one fails.
      const sn = await alice.safetyNumber('bob_1');
      expect(sn).toMatch(/^[0-9]{60}$/);
      expect(await bob.safetyNumber('alice_1')).toBe(sn);
      const wrong = (sn[0] === '1' ? '2' : '1') + sn.slice(1);
      await expect(alice.verify('bob_1', wrong)).rejects.toSatisfy((e) => SdkError.is(e, 'SAFETY_NUMBER_MISMATCH'));
      await alice.verify('bob_1', sn.replace(/(.{5})/g, '$1 '));

      const typing = nextEvent(alice, 'typing');
      await bob.sendTyping('alice_1', true);
      expect((await typing)[0]).toEqual({ from: 'bob_1', fromAccount: bob.identity.accountId, started: true });

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

  it('refills one-time keys when the relay says they run low', async () => {
    const alice = await newClient('alice_4');
    const bob = await newClient('bob_4');
    try {
      await bob.connect();
      const a = alice as unknown as { fetchBundles(account: string, device: number): Promise<unknown>; call(v: string, p: string): Promise<{ body: Uint8Array }> };
      const b = bob as unknown as typeof a;
      const count = async () => JSON.parse(Buffer.from((await b.call('GET', '/v1/keys/count')).body).toString()) as { ecCount: number };
      expect((await count()).ecCount).toBe(100);
      for (let i = 0; i < 95; i++) await a.fetchBundles(bob.identity.accountId, 1);
      // Bob gets keys/low on his socket and uploads a new batch; wait for it (bounded).
      let ec = 0;
      for (let i = 0; i < 200 && ec < 10; i++) {
        ec = (await count()).ecCount;
        if (ec < 10) await new Promise((r) => setTimeout(r, 50));
      }
      expect(ec).toBeGreaterThanOrEqual(10);
      expect(ec).toBeLessThanOrEqual(100); // repeated notices do not overfill
    } finally {
      await alice.close();
      await bob.close();
    }
  });

  it('a passphrase profile needs its passphrase', async () => {
    const dir = join(tmp.dir, 'pp');
    const c = await ParleyClient.register({ profileDir: dir, serverUrl: relay.url, username: 'carol_pp', passphrase: 'pass phrase' });
    await c.close();
    await expect(ParleyClient.open({ profileDir: dir, passphrase: null })).rejects.toSatisfy((e) => SdkError.is(e, 'PASSPHRASE_REQUIRED'));
    await expect(ParleyClient.open({ profileDir: dir, passphrase: 'wrong' })).rejects.toSatisfy((e) => SdkError.is(e, 'BAD_PASSPHRASE'));
    const again = await ParleyClient.open({ profileDir: dir, passphrase: 'pass phrase' });
    expect(again.identity.username).toBe('carol_pp');
    await expect(ParleyClient.open({ profileDir: dir, passphrase: 'pass phrase' })).rejects.toSatisfy((e) => SdkError.is(e, 'PROFILE_LOCKED'));
    await again.close();
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
