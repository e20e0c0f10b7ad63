/**
 * Recovery paths against a real relay: 409 and 410 answers, decryption-error
 * resend, and a crash between decrypt and commit.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProtocolAddress } from '@signalapp/libsignal-client';
import type { PreKeyBundleResponse } from '@parley/wire';
import { defaultRelayConfig, startRelay, type RunningRelay } from '@parley/relay';
import { ParleyClient } from '../src/index.js';
import type { Stores } from '../src/stores.js';
import { collect, nextEvent, tempDir } from './helpers.js';

/** The private parts these tests reach into to break state on purpose. */
interface Internals {
  stores: Stores;
  fetchBundles(account: string, device: number | '*'): Promise<PreKeyBundleResponse | null>;
  processBundles(res: PreKeyBundleResponse): Promise<void>;
}
const inside = (c: ParleyClient) => c as unknown as Internals;

let relay: RunningRelay;
const tmp = tempDir('parley-recovery-');
let n = 0;
const open: ParleyClient[] = [];

beforeAll(async () => {
  relay = await startRelay(defaultRelayConfig({ port: 0, dataDir: join(tmp.dir, 'relay'), logLevel: 'silent' }));
});
afterAll(async () => {
  await Promise.all(open.map((c) => c.close()));
  await relay.close();
  tmp.cleanup();
});

async function pair(): Promise<{ alice: ParleyClient; bob: ParleyClient; bobDir: string; names: { a: string; b: string } }> {
  n++;
  const names = { a: `alice_r${n}`, b: `bob_r${n}` };
  const bobDir = join(tmp.dir, `b${n}`);
  const alice = await ParleyClient.register({ profileDir: join(tmp.dir, `a${n}`), serverUrl: relay.url, username: names.a, passphrase: null });
  const bob = await ParleyClient.register({ profileDir: bobDir, serverUrl: relay.url, username: names.b, passphrase: null });
  open.push(alice, bob);
  await alice.connect();
  await bob.connect();
  return { alice, bob, bobDir, names };
}

async function exchange(from: ParleyClient, to: ParleyClient, toName: string, body: string): Promise<void> {
  const got = nextEvent(to, 'message', (m) => m.body === body);
  await from.send(toName, body);
  await got;
}

describe('send recovery', () => {
  it('409: drops an extra device and fetches a bundle for a missing one, then delivers', async () => {
    const { alice, bob, names } = await pair();
    await exchange(alice, bob, names.b, 'one');
    const bobId = bob.identity.accountId;
    const s = inside(alice).stores;
    // Alice believes Bob has only a device 2 (which does not exist) and not device 1.
    const record = s.session.getSync(bobId, 1);
    if (!record) throw new Error('no session');
    await s.session.saveSession(ProtocolAddress.new(bobId, 2), record);
    s.session.delete(bobId, 1);
    s.commit();

    const messages = collect(bob, 'message');
    await exchange(alice, bob, names.b, 'two');
    expect(messages.map(([m]) => m.body)).toEqual(['two']);
    expect(s.session.activeDevices(bobId)).toEqual([1]);
  });

  it('410: archives a stale session, fetches a fresh bundle, then delivers', async () => {
    const { alice, bob, names } = await pair();
    const bobId = bob.identity.accountId;
    const a = inside(alice);
    await alice.history(names.b); // resolves and caches the username
    const res = await a.fetchBundles(bobId, 1);
    const dev = res?.devices[0];
    if (!res || !dev) throw new Error('no bundle');
    dev.registrationId = (dev.registrationId % 16000) + 1; // what Alice believes is out of date
    await a.processBundles(res);
    expect(a.stores.session.getSync(bobId, 1)?.remoteRegistrationId()).toBe(dev.registrationId);

    const messages = collect(bob, 'message');
    await exchange(alice, bob, names.b, 'after stale');
    expect(messages.map(([m]) => m.body)).toEqual(['after stale']);
    expect(a.stores.session.getSync(bobId, 1)?.remoteRegistrationId()).not.toBe(dev.registrationId);
  });

  it('decryption error: the recipient asks for a resend and gets the message on a fresh session', async () => {
    const { alice, bob, names } = await pair();
    await exchange(alice, bob, names.b, 'one');
    await exchange(bob, alice, names.a, 'ack');
    // Bob loses his session with Alice; her next message cannot be decrypted.
    const b = inside(bob);
    b.stores.session.delete(alice.identity.accountId, 1);
    b.stores.commit();

    const messages = collect(bob, 'message');
    const got = nextEvent(bob, 'message', (m) => m.body === 'two');
    const { timestamp } = await alice.send(names.b, 'two');
    const [m] = await got;
    expect(m.timestamp).toBe(timestamp);
    expect(messages.map(([x]) => x.body)).toEqual(['two']);
    expect((await bob.history(names.a)).filter((h) => h.body === 'two')).toHaveLength(1);
  });
});

describe('receive atomicity', () => {
  it('a crash before the commit loses nothing: the message comes back on reconnect, once', async () => {
    const { alice, bob, bobDir, names } = await pair();
    await exchange(alice, bob, names.b, 'warm up');
    const s = inside(bob).stores;
    const db = s.db;
    const realCommit = s.commit.bind(s);
    let crashes = 0;
    // The transaction that carries the decrypted message fails after the insert, as if the process died there.
    s.commit = ((extra?: () => unknown) =>
      realCommit(() => {
        const r = extra?.();
        if (crashes === 0 && db.prepare("SELECT count(*) FROM messages WHERE body = 'survives'", { pluck: true }).get() !== 0) {
          crashes++;
          throw new Error('simulated crash before commit');
        }
        return r;
      })) as typeof s.commit;
    const seen = collect(bob, 'message');
    const failed = nextEvent(bob, 'error');
    await alice.send(names.b, 'survives');
    await failed; // Bob tried, and did not ack
    expect(crashes).toBe(1);
    expect(seen).toHaveLength(0);
    expect(db.prepare('SELECT count(*) FROM messages', { pluck: true }).get()).toBe(1);
    await bob.close();

    const bob2 = await ParleyClient.open({ profileDir: bobDir, passphrase: null });
    open.push(bob2);
    const messages = collect(bob2, 'message');
    const empty = nextEvent(bob2, 'queueEmpty');
    await bob2.connect();
    await empty;
    expect(messages.map(([m]) => m.body)).toEqual(['survives']);
    expect((await bob2.history(names.a)).map((h) => h.body)).toEqual(['warm up', 'survives']);
  });
});
