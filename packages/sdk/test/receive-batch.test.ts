/**
 * The receive pipeline's group commit against a real relay and real SQLite:
 * a burst of offline messages arrives in order, once each, in fewer commits
 * than messages, and is answered with fewer delivery receipts than messages;
 * a receiving process killed with SIGKILL mid-burst loses and duplicates
 * nothing once it is reopened.
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import Database from '@signalapp/sqlcipher';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultRelayConfig, startRelay, type RunningRelay } from '@parley/relay';
import { EnvelopeType } from '@parley/wire';
import { ParleyClient } from '../src/index.js';
import type { Stores } from '../src/stores.js';
import { collect, nextEvent, tempDir } from './helpers.js';

let relay: RunningRelay;
const tmp = tempDir('parley-receive-batch-');
let n = 0;

beforeAll(async () => {
  // Bursts of hundreds of sends from one device: lift the send buckets (rate limiting is tested elsewhere).
  const lots = { burst: 10_000, perSecond: 10_000 };
  relay = await startRelay(
    defaultRelayConfig({
      port: 0,
      dataDir: join(tmp.dir, 'relay'),
      logLevel: 'silent',
      rateLimits: { send: lots, sealedRecipient: lots, sealedAddress: lots },
    }),
  );
});
afterAll(async () => {
  await relay.close();
  tmp.cleanup();
});

async function newClient(name: string): Promise<{ client: ParleyClient; dir: string }> {
  n++;
  const dir = join(tmp.dir, `p${n}`);
  return {
    client: await ParleyClient.register({ profileDir: dir, serverUrl: relay.url, username: name, passphrase: null }),
    dir,
  };
}

/** Sends `count` numbered messages one at a time; returns their bodies and timestamps in order. */
async function burst(
  from: ParleyClient,
  to: string,
  count: number,
  tag: string,
): Promise<{ bodies: string[]; timestamps: number[] }> {
  const bodies: string[] = [];
  const timestamps: number[] = [];
  for (let i = 0; i < count; i++) {
    const body = `${tag} ${i}`;
    bodies.push(body);
    timestamps.push((await from.send(to, body)).timestamp);
  }
  return { bodies, timestamps };
}

describe('receive pipeline group commit', () => {
  it('a burst of offline messages arrives in order once each, in fewer commits and fewer delivery receipts than messages', async () => {
    const count = 220;
    const { client: alice, dir: aliceDir } = await newClient('alice_gc1');
    const { client: bob, dir: bobDir } = await newClient('bob_gc1');
    const { bodies, timestamps } = await burst(alice, 'bob_gc1', count, 'burst');
    await alice.close(); // offline while Bob's receipts are queued for her

    const stores = (bob as unknown as { stores: Stores }).stores;
    const realCommit = stores.commit.bind(stores);
    let commits = 0;
    let committedMessages = 0;
    stores.commit = ((extra?: () => unknown) => {
      commits++;
      committedMessages += stores.stagedCount;
      return realCommit(extra);
    }) as typeof stores.commit;

    const messages = collect(bob, 'message');
    const errors = collect(bob, 'error');
    const all = new Promise<void>((resolve) =>
      bob.on('message', () => {
        if (messages.length === count) resolve();
      }),
    );
    await bob.connect();
    await all;
    await bob.close(); // waits for the receive queue and sends the receipts still gathering
    expect(errors).toEqual([]);
    expect(messages.map(([m]) => m.body)).toEqual(bodies);
    expect(new Set(messages.map(([m]) => m.id)).size).toBe(count);
    // Every message went through a staged group commit, and those were far fewer than the messages. Delivery
    // receipts sent mid-burst stage their ratchet state into the same commits, so these count a few more operations.
    expect(committedMessages).toBeGreaterThanOrEqual(count);
    expect(commits).toBeLessThan(count / 2);
    // Bob's receipts waiting for Alice are sealed: the relay holds no sender for any of them. (The relay's own
    // server delivery receipts for her identified messages wait there too.)
    const relayDb = new Database(join(tmp.dir, 'relay', 'relay.db'));
    try {
      const held = relayDb
        .prepare('SELECT type, source_account FROM envelopes WHERE dest_account = ? AND type <> ?')
        .all<{ type: number; source_account: string | null }>([alice.identity.accountId, EnvelopeType.ServerDeliveryReceipt]);
      expect(held.length).toBeGreaterThan(0);
      expect(held.length).toBeLessThan(count);
      for (const r of held) expect(r).toEqual({ type: EnvelopeType.UnidentifiedSender, source_account: null });
    } finally {
      relayDb.close();
    }

    const bob2 = await ParleyClient.open({ profileDir: bobDir, passphrase: null });
    try {
      expect((await bob2.history('alice_gc1', 1000)).map((h) => h.body)).toEqual(bodies);
    } finally {
      await bob2.close();
    }

    const alice2 = await ParleyClient.open({ profileDir: aliceDir, passphrase: null });
    try {
      const receipts: number[][] = [];
      const covered = new Promise<void>((resolve) =>
        alice2.on('receipt', (r) => {
          if (r.type !== 'delivery') return;
          receipts.push(r.timestamps);
          if (receipts.flat().length >= count) resolve();
        }),
      );
      await alice2.connect();
      await covered;
      const acknowledged = receipts.flat();
      expect([...acknowledged].sort((a, b) => a - b)).toEqual(timestamps);
      expect(receipts.length).toBeLessThan(count);
      expect(receipts.length).toBeGreaterThanOrEqual(Math.ceil(count / 100)); // at most 100 timestamps a receipt
      expect(new Set((await alice2.history('bob_gc1', 1000)).map((h) => h.status))).toEqual(new Set(['delivered']));
    } finally {
      await alice2.close();
    }
  }, 180_000);

  // The child stops (blocks its thread) at the named point of a group commit of at least 10 messages and is
  // killed there: after decrypting and staging, before the commit; or after the commit, before the acks go out.
  it.each(['before-commit', 'after-commit'])(
    'a receiving process killed with SIGKILL %s, mid-burst, loses nothing and shows nothing twice once reopened',
    async (point) => {
      const count = 200;
      const tag = point === 'before-commit' ? 'gc2' : 'gc3';
      const { client: alice } = await newClient(`alice_${tag}`);
      const { client: bobSetup, dir: bobDir } = await newClient(`bob_${tag}`);
      await bobSetup.close();
      const { bodies } = await burst(alice, `bob_${tag}`, count, 'crash');
      await alice.close();

      const sdk = fileURLToPath(new URL('../dist/index.js', import.meta.url));
      const script = join(tmp.dir, `receiver-${tag}.mjs`);
      writeFileSync(
        script,
        `const { ParleyClient } = await import(${JSON.stringify(sdk)});
const [profileDir, point] = process.argv.slice(2);
const bob = await ParleyClient.open({ profileDir, passphrase: null });
const stores = bob['stores'];
const commit = stores.commit.bind(stores);
let seen = 0;
const stop = () => {
  process.stdout.write('stopped\\n');
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60000);
};
stores.commit = (extra) => {
  const batch = stores.stagedCount;
  if (point === 'before-commit' && batch >= 10 && seen > 0) stop();
  const r = commit(extra);
  if (point === 'after-commit' && batch >= 10 && seen > 0) stop();
  return r;
};
bob.on('message', (m) => {
  seen++;
  process.stdout.write('m ' + m.body + '\\n');
});
await bob.connect();
setInterval(() => {}, 1000);
`,
      );
      const child = spawn(process.execPath, [script, bobDir, point], { stdio: ['ignore', 'pipe', 'inherit'] });
      const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
      const before: string[] = [];
      let stopped = false;
      for await (const line of createInterface({ input: child.stdout })) {
        if (line.startsWith('m ')) before.push(line.slice(2));
        if (line === 'stopped' && !stopped) {
          stopped = true;
          child.kill('SIGKILL');
        }
      }
      expect(await exited).toBe('SIGKILL');
      expect(stopped).toBe(true);
      expect(before.length).toBeGreaterThan(0);
      expect(before.length).toBeLessThan(count - 10); // the kill landed mid-burst, with a batch unreported

      const bob = await ParleyClient.open({ profileDir: bobDir, passphrase: null });
      try {
        const after = collect(bob, 'message');
        const empty = nextEvent(bob, 'queueEmpty', () => true, 60_000);
        await bob.connect();
        await empty;
        const shown = [...before, ...after.map(([m]) => m.body)];
        // Nothing shown twice, and in sending order. Messages committed just before the kill but not
        // reported yet are in the history and are not reported again.
        expect(new Set(shown).size).toBe(shown.length);
        const index = shown.map((b) => bodies.indexOf(b));
        expect(index.every((v, i) => v >= 0 && (i === 0 || v > index[i - 1]!))).toBe(true);
        if (point === 'before-commit') expect(shown).toEqual(bodies); // nothing was committed unreported
        // Every message is stored exactly once, in order.
        expect((await bob.history(`alice_${tag}`, 1000)).map((h) => h.body)).toEqual(bodies);
      } finally {
        await bob.close();
      }
    },
    180_000,
  );
});
