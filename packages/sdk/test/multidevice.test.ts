/**
 * Multi-device against a real relay: linking, fan-out to every device, sync
 * transcripts, removal, re-linking (410) and bundles the relay forged.
 */
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultRelayConfig, startRelay, type RunningRelay } from '@parley/relay';
import { ParleyClient, SdkError } from '../src/index.js';
import { startLinking } from '../src/linking.js';
import { collect, nextEvent, tempDir } from './helpers.js';

let relay: RunningRelay;
const tmp = tempDir('parley-md-');
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
  const c = await ParleyClient.register({ profileDir: join(tmp.dir, `p${n}`), serverUrl: relay.url, username: name, passphrase: null });
  open.push(c);
  return c;
}

/** Link a new device to `primary`'s account the way the CLI does: the new device shows a link, the primary approves it. */
async function link(primary: ParleyClient, onHistory?: (imported: number) => void): Promise<ParleyClient> {
  n++;
  let shown: (l: string) => void = () => undefined;
  const linkText = new Promise<string>((resolve) => (shown = resolve));
  const device = ParleyClient.link({
    profileDir: join(tmp.dir, `p${n}`),
    serverUrl: relay.url,
    passphrase: null,
    onLink: (l) => shown(l),
    ...(onHistory ? { onHistory } : {}),
  });
  await primary.linkDevice(await linkText);
  const c = await device;
  open.push(c);
  return c;
}

/** How many 410 STALE_DEVICES answers the relay has given (from its metrics). */
async function staleCount(): Promise<number> {
  const text = await (await fetch(`${relay.url}/metrics`)).text();
  const m = /parley_relay_errors_total\{code="STALE_DEVICES"\} (\d+)/.exec(text);
  return m ? Number(m[1]) : 0;
}

const bodies = (h: { direction: string; body: string }[]) => h.map((e) => `${e.direction}:${e.body}`).sort();

describe('multi-device', () => {
  it('links a device that shares the account identity and sees both sides of every conversation (3 + 2 devices, each message once)', async () => {
    const a1 = await register('md_alice');
    const b1 = await register('md_bob');
    await a1.connect();
    await b1.connect();
    const a2 = await link(a1);
    const a3 = await link(a1);
    const b2 = await link(b1);
    expect(a2.identity).toMatchObject({ accountId: a1.identity.accountId, username: 'md_alice', deviceId: 2 });
    expect(a3.identity.deviceId).toBe(3);
    expect(b2.identity).toMatchObject({ accountId: b1.identity.accountId, deviceId: 2 });
    expect((await a1.listDevices()).map((d) => d.deviceId)).toEqual([1, 2, 3]);
    for (const c of [a2, a3, b2]) await c.connect();

    const alice = [a1, a2, a3];
    const bob = [b1, b2];
    const messages = new Map<ParleyClient, string[]>();
    const sent = new Map<ParleyClient, string[]>();
    for (const c of [...alice, ...bob]) {
      const m: string[] = [];
      const s: string[] = [];
      c.on('message', (x) => m.push(x.body));
      c.on('sent', (x) => s.push(x.body));
      messages.set(c, m);
      sent.set(c, s);
    }
    const until = (c: ParleyClient, what: 'message' | 'sent', body: string) =>
      (what === 'message' ? messages : sent).get(c)?.includes(body)
        ? Promise.resolve()
        : nextEvent(c, what, (x) => x.body === body).then(() => undefined);

    // Each device sends once; every device of both accounts must show every message.
    const script: Array<[ParleyClient, string, string]> = [
      [a1, 'md_bob', 'from a1'],
      [b2, 'md_alice', 'from b2'],
      [a2, 'md_bob', 'from a2'],
      [b1, 'md_alice', 'from b1'],
      [a3, 'md_bob', 'from a3'],
    ];
    for (const [from, to, body] of script) {
      const mine = alice.includes(from) ? alice : bob;
      const theirs = alice.includes(from) ? bob : alice;
      await from.send(to, body);
      await Promise.all([...theirs.map((c) => until(c, 'message', body)), ...mine.map((c) => until(c, 'sent', body))]);
    }
    // A last message through every queue: anything duplicated would have arrived before it.
    await a1.send('md_bob', 'marker');
    await Promise.all([...bob.map((c) => until(c, 'message', 'marker')), ...alice.map((c) => until(c, 'sent', 'marker'))]);

    const fromAlice = ['from a1', 'from a2', 'from a3', 'marker'];
    const fromBob = ['from b1', 'from b2'];
    for (const c of alice) {
      expect(messages.get(c)?.slice().sort()).toEqual(fromBob);
      expect(sent.get(c)?.slice().sort()).toEqual(fromAlice);
      expect(bodies(await c.history('md_bob', 100))).toEqual([...fromAlice.map((b) => `out:${b}`), ...fromBob.map((b) => `in:${b}`)].sort());
    }
    for (const c of bob) {
      expect(messages.get(c)?.slice().sort()).toEqual(fromAlice);
      expect(sent.get(c)?.slice().sort()).toEqual(fromBob);
      expect(bodies(await c.history('md_alice', 100))).toEqual([...fromBob.map((b) => `out:${b}`), ...fromAlice.map((b) => `in:${b}`)].sort());
    }
  });

  it('a linked device sees the history from before it was linked', async () => {
    const a1 = await register('hist_alice');
    const b1 = await register('hist_bob');
    await a1.connect();
    await b1.connect();
    const atBob = nextEvent(b1, 'message', (m) => m.body === 'before one');
    await a1.send('hist_bob', 'before one');
    await atBob;
    const atAlice = nextEvent(a1, 'message', (m) => m.body === 'before two');
    const { timestamp } = await b1.send('hist_alice', 'before two');
    await atAlice;
    await a1.sendReadReceipt('hist_bob', [timestamp]);

    let imported = -1;
    const a2 = await link(a1, (k) => (imported = k));
    expect(imported).toBe(2);
    expect((await a2.history('hist_bob')).map((e) => [e.direction, e.body, e.status])).toEqual([
      ['out', 'before one', (await a1.history('hist_bob'))[0]?.status],
      ['in', 'before two', 'read'],
    ]);
    // And it carries on from there.
    await a2.connect();
    const after = nextEvent(a2, 'message', (m) => m.body === 'after');
    await b1.send('hist_alice', 'after');
    await after;
    expect((await a2.history('hist_bob')).map((e) => e.body)).toEqual(['before one', 'before two', 'after']);
  });

  it('the relay holds only ciphertext of the provisioning message and the history archive', async () => {
    const a1 = await register('canary_alice');
    const b1 = await register('canary_bob');
    await a1.connect();
    await b1.connect();
    const canary = `canary-${Math.random().toString(36).slice(2)}-history`;
    const got = nextEvent(b1, 'message', (m) => m.body === canary);
    await a1.send('canary_bob', canary);
    await got;
    // A device that is shown a link but never registers: the archive stays on the relay.
    const pending = await startLinking(relay.url);
    await a1.linkDevice(pending.link);
    const message = await pending.message;
    expect(message.accountId).toBe(a1.identity.accountId);
    expect(message.archive).not.toBeNull();
    const needles = [Buffer.from(canary), Buffer.from(message.identityKeyPrivate), Buffer.from(message.profileKey), Buffer.from(message.archive?.key ?? [])];
    const files = (function list(dir: string): string[] {
      return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? list(join(dir, e.name)) : [join(dir, e.name)]));
    })(join(tmp.dir, 'relay'));
    // The archive really is there (in the blob store) for the scan to look at.
    expect(files.filter((f) => f.includes(join('relay', 'blobs'))).length).toBeGreaterThan(0);
    const hits = files.flatMap((f) => {
      const bytes = readFileSync(f);
      return needles.filter((n) => bytes.includes(n)).map((n) => `${f}: ${needles.indexOf(n)}`);
    });
    expect(hits).toEqual([]);
  });

  it('a file sent from one device can be downloaded on the account\'s other devices', async () => {
    const a1 = await register('file_alice');
    const b1 = await register('file_bob');
    await a1.connect();
    await b1.connect();
    const a2 = await link(a1);
    await a2.connect();
    const path = join(tmp.dir, 'note.txt');
    const content = `file-${Math.random().toString(36)}`.repeat(50);
    writeFileSync(path, content);
    const synced = nextEvent(a2, 'sent', (s) => s.body === 'see file');
    const atBob = nextEvent(b1, 'message', (m) => m.body === 'see file');
    await a1.sendFile('file_bob', { path, text: 'see file' });
    await Promise.all([synced, atBob]);
    const pending = a2.pendingAttachments();
    expect(pending).toHaveLength(1);
    const saved = await a2.downloadAttachment(pending[0]?.messageId ?? '', 0, { dir: join(tmp.dir, 'a2-downloads') });
    expect(readFileSync(saved.path, 'utf8')).toBe(content);
  });

  it('a read receipt sent by one device marks the message read on the account\'s other devices', async () => {
    const a1 = await register('rr_alice');
    const b1 = await register('rr_bob');
    await a1.connect();
    await b1.connect();
    const a2 = await link(a1);
    await a2.connect();
    const onA1 = nextEvent(a1, 'message', (m) => m.body === 'read me');
    const onA2 = nextEvent(a2, 'message', (m) => m.body === 'read me');
    const { timestamp } = await b1.send('rr_alice', 'read me');
    await Promise.all([onA1, onA2]);
    const synced = nextEvent(a2, 'syncRead');
    const receipt = nextEvent(b1, 'receipt', (r) => r.type === 'read');
    await a1.sendReadReceipt('rr_bob', [timestamp]);
    expect((await synced)[0]).toEqual({ account: b1.identity.accountId, timestamps: [timestamp] });
    expect((await receipt)[0].timestamps).toEqual([timestamp]);
    expect(await a2.history('rr_bob')).toEqual([{ direction: 'in', timestamp, body: 'read me', status: 'read' }]);
  });

  it('a removed device gets nothing more; a re-linked device (new registration id) triggers 410 and still gets the next message', async () => {
    const a1 = await register('rm_alice');
    const b1 = await register('rm_bob');
    await a1.connect();
    await b1.connect();
    const a2 = await link(a1);
    await a2.connect();
    const first = nextEvent(a2, 'message', (m) => m.body === 'one');
    await b1.send('rm_alice', 'one');
    await first;

    // Remove device 2: its socket is closed and its credentials stop working.
    const gone = nextEvent(a2, 'connection', (s) => s === 'replaced' || s === 'closed');
    await a1.removeDevice(2);
    await gone;
    const a2Messages = collect(a2, 'message');
    const got = nextEvent(a1, 'message', (m) => m.body === 'two');
    await b1.send('rm_alice', 'two'); // 409 (extra device 2) and retry
    await got;
    expect((await a1.listDevices()).map((d) => d.deviceId)).toEqual([1]);
    // Nothing was queued for device 2 on the relay, and its credentials no longer open a socket.
    const { openSqliteStore } = await import('@parley/relay');
    const store = openSqliteStore(join(tmp.dir, 'relay'));
    try {
      expect(await store.fetchQueue(a1.identity.accountId as never, 2 as never, 0, 10)).toEqual([]);
    } finally {
      await store.close();
    }
    await expect(a2.connect()).rejects.toSatisfy((e) => SdkError.is(e, 'UNAUTHORIZED'));
    expect(a2Messages).toEqual([]);
    await a2.close();

    // Re-link: the new device gets id 2 again with a new registration id. Bob's session for device 2 is
    // gone after the 409 above, so force the stale case: link, then send with bob holding an old session.
    const a2b = await link(a1);
    expect(a2b.identity.deviceId).toBe(2);
    await a2b.connect();
    const three = nextEvent(a2b, 'message', (m) => m.body === 'three');
    await b1.send('rm_alice', 'three'); // 409 missing device 2, fetch, retry
    await three;

    // Remove and re-link once more while bob keeps his session with the previous device 2: that is a 410.
    await a1.removeDevice(2);
    await a2b.close();
    const a2c = await link(a1);
    expect(a2c.identity.deviceId).toBe(2);
    await a2c.connect();
    const staleBefore = await staleCount();
    const four = nextEvent(a2c, 'message', (m) => m.body === 'four');
    const a1four = nextEvent(a1, 'message', (m) => m.body === 'four');
    await b1.send('rm_alice', 'four');
    expect((await four)[0].body).toBe('four');
    await a1four;
    expect(await staleCount()).toBe(staleBefore + 1);
  });

  it('the client refuses to encrypt to a device whose bundle is not signed by the account identity key', async () => {
    const { IdentityKeyPair, KEMKeyPair, PrivateKey } = await import('@signalapp/libsignal-client');
    const { openSqliteStore } = await import('@parley/relay');
    const a1 = await register('forge_alice');
    const b1 = await register('forge_bob');
    // Play a malicious relay: write a device into alice's account directly in the relay's database,
    // with keys signed by an identity key of the relay's own choosing (the relay route would refuse them).
    const store = openSqliteStore(join(tmp.dir, 'relay'));
    try {
      const rogue = IdentityKeyPair.generate();
      const ec = PrivateKey.generate().getPublicKey().serialize();
      const kem = KEMKeyPair.generate().getPublicKey().serialize();
      const res = await store.addDevice({
        account: a1.identity.accountId as never,
        registrationId: 77,
        passwordSalt: new Uint8Array(16),
        passwordHash: new Uint8Array(32),
        signedPreKey: { keyId: 1, publicKey: ec, signature: rogue.privateKey.sign(ec) },
        kyberLastResortKey: { keyId: 2, publicKey: kem, signature: rogue.privateKey.sign(kem) },
        createdAt: Date.now(),
        maxDevices: 6,
      });
      expect(res.kind).toBe('added');
    } finally {
      await store.close();
    }
    await expect(b1.send('forge_alice', 'secret')).rejects.toSatisfy((e) => SdkError.is(e, 'BAD_BUNDLE'));
    // Nothing went to the relay for alice: her primary gets no message.
    expect(await b1.history('forge_alice')).toEqual([expect.objectContaining({ status: 'failed' })]);
  });
});
