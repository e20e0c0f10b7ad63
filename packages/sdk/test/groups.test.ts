/**
 * Groups against a real relay over real sockets: creation, Sender Key
 * messages in one multi-recipient sealed upload, linked devices, membership
 * changes with sender-key rotation, and bad input.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultRelayConfig, startRelay, type RunningRelay } from '@parley/relay';
import { type IncomingMessage, ParleyClient, SdkError } from '../src/index.js';
import { collect, nextEvent, tempDir } from './helpers.js';

let relay: RunningRelay;
const tmp = tempDir('parley-groups-');
let n = 0;
const open: ParleyClient[] = [];

beforeAll(async () => {
  relay = await startRelay(defaultRelayConfig({ port: 0, dataDir: join(tmp.dir, 'relay'), logLevel: 'silent' }));
});
afterAll(async () => {
  await Promise.allSettled(open.map((c) => c.close()));
  await relay.close();
  tmp.cleanup();
});

async function register(name: string): Promise<ParleyClient> {
  n++;
  const c = await ParleyClient.register({
    profileDir: join(tmp.dir, `p${n}`),
    serverUrl: relay.url,
    username: name,
    passphrase: null,
  });
  open.push(c);
  return c;
}

async function link(primary: ParleyClient): Promise<ParleyClient> {
  n++;
  let shown: (l: string) => void = () => undefined;
  const linkText = new Promise<string>((resolve) => (shown = resolve));
  const device = ParleyClient.link({
    profileDir: join(tmp.dir, `p${n}`),
    serverUrl: relay.url,
    passphrase: null,
    onLink: (l) => shown(l),
  });
  await primary.linkDevice(await linkText);
  const c = await device;
  open.push(c);
  return c;
}

/** The message uploads (HTTP PUT /v1/messages/...) made while `fn` runs. Clients here send messages over HTTP only when sealed. */
async function watchSends(fn: () => Promise<unknown>): Promise<Array<{ path: string; status: number; authenticated: boolean }>> {
  const seen: Array<{ path: string; status: number; authenticated: boolean }> = [];
  const real = globalThis.fetch;
  globalThis.fetch = async (input, init) => {
    const res = await real(input, init);
    const url = new URL(input instanceof Request ? input.url : String(input));
    if (init?.method === 'PUT' && url.pathname.startsWith('/v1/messages/')) {
      const h = new Headers(init.headers);
      seen.push({ path: url.pathname, status: res.status, authenticated: h.has('authorization') });
    }
    return res;
  };
  try {
    await fn();
  } finally {
    globalThis.fetch = real;
  }
  return seen;
}

const groupMessage = (groupId: string, body: string) => (m: IncomingMessage) => m.group?.id === groupId && m.body === body;

describe('groups', () => {
  it('a group message reaches every member device exactly once, and the sender’s other device as a transcript', async () => {
    const a1 = await register('g1_alice');
    const bob = await register('g1_bob');
    const carol = await register('g1_carol');
    for (const c of [a1, bob, carol]) await c.connect();
    const a2 = await link(a1);
    await a2.connect();

    const received = new Map<ParleyClient, IncomingMessage[]>();
    for (const c of [a1, a2, bob, carol])
      received.set(
        c,
        collect(c, 'message').map(([m]) => m),
      );
    const msgs = new Map<ParleyClient, IncomingMessage[]>([...[a1, a2, bob, carol]].map((c) => [c, [] as IncomingMessage[]]));
    for (const c of [a1, a2, bob, carol]) c.on('message', (m) => msgs.get(c)?.push(m));

    const joined = [bob, carol, a2].map((c) => nextEvent(c, 'groupUpdate'));
    const info = await a1.createGroup('Climbing 🧗', ['g1_bob', 'g1_carol']);
    expect(info).toMatchObject({ title: 'Climbing 🧗', revision: 1, admin: true, active: true });
    expect(info.id).toMatch(/^[0-9a-f]{32}$/);
    expect(info.members.map((m) => [m.username, m.admin])).toEqual([
      ['g1_alice', true],
      ['g1_bob', false],
      ['g1_carol', false],
    ]);
    const updates = await Promise.all(joined);
    for (const [u] of updates) {
      expect(u.group.id).toBe(info.id);
      expect(u.byAccount).toBe(a1.identity.accountId);
    }
    expect(bob.groupInfo(info.id)).toMatchObject({ title: 'Climbing 🧗', revision: 1, admin: false, active: true });
    expect(a2.groupInfo('Climbing 🧗')).toMatchObject({ id: info.id, admin: true });

    // Alice (device 1) sends: bob and carol get it once; her device 2 gets a transcript.
    const transcript = nextEvent(a2, 'sent', (s) => s.group?.id === info.id && s.body === 'first');
    const gotB = nextEvent(bob, 'message', groupMessage(info.id, 'first'));
    const gotC = nextEvent(carol, 'message', groupMessage(info.id, 'first'));
    const { timestamp } = await a1.sendGroup(info.id.slice(0, 8), 'first');
    const [[mb], [mc]] = await Promise.all([gotB, gotC]);
    await transcript;
    for (const m of [mb, mc]) {
      expect(m).toMatchObject({
        from: 'g1_alice',
        fromAccount: a1.identity.accountId,
        fromDevice: 1,
        timestamp,
        body: 'first',
        group: { id: info.id, title: 'Climbing 🧗' },
      });
    }

    // Bob sends: both of alice's devices and carol get it.
    const got = [a1, a2, carol].map((c) => nextEvent(c, 'message', groupMessage(info.id, 'second')));
    await bob.sendGroup('Climbing 🧗', 'second');
    for (const [m] of await Promise.all(got)) expect(m).toMatchObject({ from: 'g1_bob', body: 'second', group: { id: info.id } });

    const third = [a1, a2, bob].map((c) => nextEvent(c, 'message', groupMessage(info.id, 'third')));
    await carol.sendGroup(info.id, 'third');
    await Promise.all(third);
    // Carol's sender key is out and she knows every member's profile key (alice's from the signed
    // state, bob's from his group message): the next message is exactly one multi-recipient upload.
    // Once everyone has it, every earlier message has been processed.
    const last = [a1, a2, bob].map((c) => nextEvent(c, 'message', groupMessage(info.id, 'fourth')));
    const sends = await watchSends(() => carol.sendGroup(info.id, 'fourth'));
    expect(sends).toEqual([{ path: '/v1/messages/multi_recipient', status: 200, authenticated: false }]);
    await Promise.all(last);
    const count = (c: ParleyClient, body: string) => (msgs.get(c) ?? []).filter((m) => m.body === body).length;
    expect([count(bob, 'first'), count(carol, 'first'), count(a1, 'first'), count(a2, 'first')]).toEqual([1, 1, 0, 0]);
    expect([count(a1, 'second'), count(a2, 'second'), count(carol, 'second'), count(bob, 'second')]).toEqual([1, 1, 1, 0]);
    for (const body of ['third', 'fourth'])
      expect([count(a1, body), count(a2, body), count(bob, body), count(carol, body)]).toEqual([1, 1, 1, 0]);
    expect(a1.listGroups().map((g) => g.id)).toEqual([info.id]);
    // Group messages stay out of 1:1 history.
    expect(await a1.history('g1_bob')).toEqual([]);
  });
});

void SdkError;
