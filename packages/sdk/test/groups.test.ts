/**
 * Groups against a real relay over real sockets: creation, Sender Key
 * messages in one multi-recipient sealed upload, linked devices, membership
 * changes with sender-key rotation, and bad input.
 */
import { join } from 'node:path';
import {
  ContentHint,
  ErrorCode,
  type IdentityKeyPair,
  LibSignalErrorBase,
  ProtocolAddress,
  SenderKeyMessage,
  type SenderCertificate,
  UnidentifiedSenderMessageContent,
  groupDecrypt,
  groupEncrypt,
  sealedSenderDecryptToUsmc,
  sealedSenderMultiRecipientEncrypt,
} from '@signalapp/libsignal-client';
import SealedSenderMultiRecipientMessage from '@signalapp/libsignal-client/dist/SealedSenderMultiRecipientMessage.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultRelayConfig, startRelay, type RunningRelay } from '@parley/relay';
import {
  type AccountId,
  type Content,
  type GroupState,
  type GroupUpdate,
  decodeGroupState,
  encodeContent,
  encodeGroupState,
  groupIdFromHex,
  groupSignatureInput,
  padPlaintext,
} from '@parley/wire';
import type { Db } from '../src/db.js';
import { contactAccessKey } from '../src/sealed.js';
import { type GroupAlertReason, type GroupInfo, type IncomingMessage, ParleyClient, SdkError } from '../src/index.js';
import type { Serial } from '../src/serial.js';
import type { Stores } from '../src/stores.js';
import type { HttpTransport } from '../src/transport.js';
import { collect, nextEvent, tempDir } from './helpers.js';

let relay: RunningRelay;
const tmp = tempDir('parley-groups-');
let n = 0;
const open: ParleyClient[] = [];

beforeAll(async () => {
  // Every other limit stays at its default; this file registers more accounts from one address than a person would.
  relay = await startRelay(
    defaultRelayConfig({
      port: 0,
      dataDir: join(tmp.dir, 'relay'),
      logLevel: 'silent',
      rateLimits: { register: { burst: 200, perSecond: 10 } },
    }),
  );
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

type Upload = { path: string; status: number; authenticated: boolean };
/**
 * The message uploads (`PUT /v1/messages/...`) `sender` makes while `fn` runs: over HTTP (sealed
 * sends, without credentials) and over its authenticated socket.
 */
async function watchSends(sender: ParleyClient, fn: () => Promise<unknown>): Promise<Upload[]> {
  const seen: Upload[] = [];
  // Its two HTTP transports: `anon` (sealed sends, no credentials) and `http` (with credentials).
  type Transport = {
    request: (verb: string, path: string, body?: unknown, headers?: Record<string, string>) => Promise<{ status: number }>;
  };
  const transports = sender as unknown as { anon: Transport; http: Transport };
  const realHttp = { anon: transports.anon.request, http: transports.http.request };
  for (const which of ['anon', 'http'] as const) {
    const t = transports[which];
    const realReq = realHttp[which].bind(t);
    t.request = async (verb, path, body, headers) => {
      const res = await realReq(verb, path, body, headers);
      if (verb === 'PUT' && path.startsWith('/v1/messages/'))
        seen.push({ path, status: res.status, authenticated: which === 'http' });
      return res;
    };
  }
  const socket = (
    sender as unknown as { socket: { request: (verb: string, path: string, body?: unknown) => Promise<{ status: number }> } }
  ).socket;
  const realRequest = socket.request.bind(socket);
  socket.request = async (verb, path, body) => {
    const res = await realRequest(verb, path, body);
    if (verb === 'PUT' && path.startsWith('/v1/messages/')) seen.push({ path, status: res.status, authenticated: true });
    return res;
  };
  try {
    await fn();
  } finally {
    transports.anon.request = realHttp.anon;
    transports.http.request = realHttp.http;
    socket.request = realRequest;
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
    // Alice knows neither profile key yet: no multi-recipient upload; each member gets the sealed
    // message over her authenticated route (her sender key went out with the group's creation).
    let timestamp = 0;
    const firstSends = await watchSends(a1, async () => ({ timestamp } = await a1.sendGroup(info.id.slice(0, 8), 'first')));
    expect(firstSends.map((x) => [x.path, x.status, x.authenticated]).sort()).toEqual(
      [bob, carol].map((c) => [`/v1/messages/${c.identity.accountId}`, 200, true]).sort(),
    );
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
    const sends = await watchSends(carol, () => carol.sendGroup(info.id, 'fourth'));
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

describe('groups and linked devices', () => {
  it('a device linked later knows the groups, gets the sender keys it lacks (409 on the upload) and can send', async () => {
    const alice = await register('gd_alice');
    const b1 = await register('gd_bob');
    for (const c of [alice, b1]) await c.connect();
    const created = nextEvent(b1, 'groupUpdate');
    const info = await alice.createGroup('Later', ['gd_bob']);
    await created;
    await groupSend(alice, info.id, 'before the new device', [b1]);
    await groupSend(b1, info.id, 'hi', [alice]);

    const b2 = await link(b1);
    await b2.connect();
    expect(b2.groupInfo(info.id)).toMatchObject({ title: 'Later', revision: 1, active: true, admin: false });
    expect(await b2.history('gd_alice')).toEqual([]); // group messages are not 1:1 history

    // Alice still lists bob's old device set: the upload gets a 409, she fetches the new device and sends it her sender key.
    const sends = await watchSends(alice, () => groupSend(alice, info.id, 'after the new device', [b1, b2]));
    expect(sends.filter((x) => x.path === '/v1/messages/multi_recipient').map((x) => x.status)).toEqual([409, 200]);
    await groupSend(b2, info.id, 'from the new device', [alice]);
    const transcript = nextEvent(b1, 'sent', (x) => x.body === 'from the new device, again' && x.group?.id === info.id);
    await groupSend(b2, info.id, 'from the new device, again', [alice]);
    await transcript;
  });

  it('after a rotation, a member device the sender did not know yet is found by the sender-key upload itself', async () => {
    const alice = await register('gk_alice');
    const b1 = await register('gk_bob');
    const carol = await register('gk_carol');
    for (const c of [alice, b1, carol]) await c.connect();
    const created = Promise.all([b1, carol].map((c) => nextEvent(c, 'groupUpdate')));
    const info = await alice.createGroup('Rotate', ['gk_bob', 'gk_carol']);
    await created;
    await groupSend(b1, info.id, 'hi', [alice, carol]); // alice learns bob's profile key
    const b2 = await link(b1);
    await b2.connect();

    // The removal is sent as a group message under alice's new sender key. That key goes to bob's
    // known device set [1]: 409; the ordinary 1:1 send then fetches device 2 and reaches both, so
    // the group upload lists both devices at once.
    const removed = updated([b1, b2], info.id, (u) => u.removed.includes(carol.identity.accountId));
    const sends = await watchSends(alice, () => alice.removeGroupMember(info.id, 'gk_carol'));
    await removed;
    const toBob = sends.filter((x) => x.path === `/v1/messages/${b1.identity.accountId}`).map((x) => x.status);
    expect(toBob[0]).toBe(409);
    expect(toBob.at(-1)).toBe(200);
    expect(sends.filter((x) => x.path === '/v1/messages/multi_recipient').map((x) => x.status)).toEqual([200]);
    await groupSend(alice, info.id, 'rotated', [b1, b2]);
  });
});

// ---------------------------------------------------------------- attacks and membership changes

/**
 * The parts of a client a modified (attacker's) client or a libsignal-level
 * check needs. `sendContent` is the client's real end-to-end encrypted 1:1
 * pipeline; an attacker's client can put anything it likes into it.
 */
interface Internals {
  sendContent(
    account: string,
    content: Content,
    timestamp: number,
    opts: { log: boolean; urgent: boolean; sealed?: boolean },
  ): Promise<number[]>;
  identityKeyPair: IdentityKeyPair;
  stores: Stores;
  crypto: Serial;
  anon: HttpTransport;
  db: Db;
  senderCertificate(): Promise<SenderCertificate | null>;
}
const internals = (c: ParleyClient) => c as unknown as Internals;

/** Records the multi-recipient uploads `c` makes: exactly the bytes the relay sees. */
function captureUploads(c: ParleyClient): Uint8Array[] {
  const out: Uint8Array[] = [];
  const anon = internals(c).anon;
  const real = anon.request.bind(anon);
  anon.request = async (verb, path, body, headers) => {
    if (path === '/v1/messages/multi_recipient' && body && 'binary' in body) out.push(new Uint8Array(body.binary));
    return real(verb, path, body, headers);
  };
  return out;
}

/** The sender-key message inside `recipient`'s part of an upload, opened with the recipient's own identity key. */
async function innerFor(upload: Uint8Array, recipient: ParleyClient): Promise<Uint8Array> {
  const m = new SealedSenderMultiRecipientMessage(new Uint8Array(upload));
  const r = m.recipientsByServiceIdString()[recipient.identity.accountId];
  if (!r) throw new Error('recipient not in upload');
  const usmc = await sealedSenderDecryptToUsmc(m.messageForRecipient(r), internals(recipient).stores.identity);
  return new Uint8Array(usmc.contents());
}
const uploadRecipients = (upload: Uint8Array) =>
  Object.keys(new SealedSenderMultiRecipientMessage(new Uint8Array(upload)).recipientsByServiceIdString()).sort();

/** groupDecrypt with `who`'s own sender-key store (nothing it does is kept); the libsignal error code, or 'decrypted'. */
async function tryGroupDecrypt(who: ParleyClient, sender: ParleyClient, inner: Uint8Array): Promise<ErrorCode | 'decrypted'> {
  const { stores, crypto } = internals(who);
  return crypto.run(async () => {
    try {
      await groupDecrypt(
        ProtocolAddress.new(sender.identity.accountId, sender.identity.deviceId),
        stores.senderKey,
        new Uint8Array(inner),
      );
      return 'decrypted';
    } catch (err) {
      if (err instanceof LibSignalErrorBase) return err.code;
      throw err;
    } finally {
      stores.rollback();
    }
  });
}

async function hasSenderKey(who: ParleyClient, sender: ParleyClient, distributionId: string): Promise<boolean> {
  const addr = ProtocolAddress.new(sender.identity.accountId, sender.identity.deviceId);
  return (await internals(who).stores.senderKey.getSenderKey(addr, distributionId)) !== null;
}

/** Sends `body` from `from` to the group and waits until every client in `to` has it. */
async function groupSend(from: ParleyClient, group: string, body: string, to: ParleyClient[]): Promise<void> {
  const got = to.map((c) => nextEvent(c, 'message', (m) => m.group?.id === group && m.body === body));
  await from.sendGroup(group, body);
  await Promise.all(got);
}

/** Waits until every client in `to` accepted a group update that satisfies `pred`. */
function updated(to: ParleyClient[], group: string, pred: (u: { added: string[]; removed: string[] }) => boolean = () => true) {
  return Promise.all(to.map((c) => nextEvent(c, 'groupUpdate', (u) => u.group.id === group && pred(u))));
}

const snapshot = (cs: ParleyClient[], id: string) => cs.map((c) => c.groupInfo(id));

describe('group security', () => {
  it('a relay-controlled account cannot add members: unsigned, non-admin, forged-signer and replayed updates are dropped with an alert on every member', async () => {
    // Mallory is an account the relay operator controls, running a modified client. She creates the
    // group (so she holds genuinely admin-signed updates), then leaves; alice becomes the admin.
    const mallory = await register('ga_mallory');
    const alice = await register('ga_alice');
    const bob = await register('ga_bob');
    const carol = await register('ga_carol');
    const eve = await register('ga_eve'); // another relay account, never a member
    const members = [alice, bob, carol];
    for (const c of [mallory, ...members, eve]) await c.connect();

    const created = Promise.all(members.map((c) => nextEvent(c, 'groupUpdate')));
    const info = await mallory.createGroup('Hike', ['ga_alice', 'ga_bob', 'ga_carol']);
    await created;
    // Her client keeps the signed state it published; she copies it before leaving.
    const row = internals(mallory).db.prepare('SELECT state, signer, signature FROM groups WHERE id = ?').get([info.id])!;
    const genuineRev1: GroupUpdate = {
      stateBytes: new Uint8Array(row.state as Uint8Array),
      state: decodeGroupState(row.state as Uint8Array),
      signer: row.signer as AccountId,
      signature: new Uint8Array(row.signature as Uint8Array),
    };
    expect(genuineRev1).toMatchObject({ signer: mallory.identity.accountId, state: { revision: 1 } });
    const left = updated(members, info.id, (u) => u.removed.includes(mallory.identity.accountId));
    await mallory.leaveGroup(info.id);
    await left;
    expect(alice.groupInfo(info.id)).toMatchObject({ revision: 2, admin: true, active: true });
    expect(bob.groupInfo(info.id)).toMatchObject({ revision: 2, admin: false });

    const before = snapshot(members, info.id);
    const accepted = members.map((c) => collect(c, 'groupUpdate'));

    // The forged state: the current members plus eve, next revision.
    const current = genuineRev1.state;
    const forged: GroupState = {
      id: groupIdFromHex(info.id),
      revision: 3,
      title: 'Hike',
      members: [
        ...current.members.filter((m) => m.account !== mallory.identity.accountId).map((m, i) => ({ ...m, admin: i === 0 })),
        { account: eve.identity.accountId as AccountId, admin: true, profileKey: null, username: 'ga_eve' },
      ],
    };
    const forgedBytes = encodeGroupState(forged);
    const sign = (c: ParleyClient) =>
      internals(c).identityKeyPair.privateKey.sign(new Uint8Array(groupSignatureInput(forgedBytes)));
    const malloryReAdd: GroupState = {
      ...forged,
      members: [...forged.members.slice(0, -1), { ...current.members[0]!, admin: true }],
    };
    const malloryBytes = encodeGroupState(malloryReAdd);

    const attacks: Array<{ name: string; from: ParleyClient; update: GroupUpdate; reason: GroupAlertReason }> = [
      {
        name: 'unsigned',
        from: eve,
        update: { stateBytes: forgedBytes, state: forged, signer: null, signature: new Uint8Array(0) },
        reason: 'unsigned',
      },
      {
        name: 'signed by a non-admin',
        from: eve,
        update: { stateBytes: forgedBytes, state: forged, signer: eve.identity.accountId as AccountId, signature: sign(eve) },
        reason: 'not-admin',
      },
      {
        name: 'signed by the former admin, now a non-member',
        from: mallory,
        update: {
          stateBytes: malloryBytes,
          state: malloryReAdd,
          signer: mallory.identity.accountId as AccountId,
          signature: internals(mallory).identityKeyPair.privateKey.sign(new Uint8Array(groupSignatureInput(malloryBytes))),
        },
        reason: 'not-admin',
      },
      {
        name: 'claims the admin as signer',
        from: eve,
        update: { stateBytes: forgedBytes, state: forged, signer: alice.identity.accountId as AccountId, signature: sign(eve) },
        reason: 'bad-signature',
      },
      {
        name: 'replayed older revision, genuinely admin-signed',
        from: mallory,
        update: genuineRev1,
        reason: 'stale-revision',
      },
    ];
    for (const a of attacks) {
      const alerts = Promise.all(
        members.map((c) => nextEvent(c, 'groupAlert', (x) => x.groupId === info.id && x.reason === a.reason)),
      );
      for (const c of members)
        await internals(a.from).sendContent(c.identity.accountId, { kind: 'groupUpdate', update: a.update }, Date.now(), {
          log: false,
          urgent: true,
        });
      const got = await alerts;
      for (const [x] of got) expect(x, a.name).toMatchObject({ fromAccount: a.from.identity.accountId });
    }
    expect(snapshot(members, info.id)).toEqual(before);
    expect(accepted.map((a) => a.length)).toEqual([0, 0, 0]);

    // The group still works for its real members, and eve's account gets none of it.
    const eveMessages = collect(eve, 'message');
    await groupSend(alice, info.id, 'still ours', [bob, carol]);
    await groupSend(bob, info.id, 'yes', [alice, carol]);
    expect(eveMessages).toEqual([]);
  });

  it('a removed member cannot decrypt messages sent after removal; a new member cannot decrypt messages sent before joining', async () => {
    const alice = await register('gr_alice');
    const bob = await register('gr_bob');
    const dave = await register('gr_dave');
    const erin = await register('gr_erin');
    for (const c of [alice, bob, dave, erin]) await c.connect();
    const created = Promise.all([bob, dave].map((c) => nextEvent(c, 'groupUpdate')));
    const info = await alice.createGroup('Secret', ['gr_bob', 'gr_dave']);
    await created;
    // One message from each member first: it carries the sender's profile key, so from then on
    // everyone sends to everyone in one multi-recipient upload (what the relay sees is captured).
    await groupSend(alice, info.id, 'hello (alice)', [bob, dave]);
    await groupSend(bob, info.id, 'hello (bob)', [alice, dave]);
    const daveUploads = captureUploads(dave);
    await groupSend(dave, info.id, 'hello (dave)', [alice, bob]);
    const daveDistribution = SenderKeyMessage.deserialize(
      new Uint8Array(await innerFor(daveUploads.at(-1)!, alice)),
    ).distributionId();
    const aliceUploads = captureUploads(alice);
    const bobUploads = captureUploads(bob);

    await groupSend(alice, info.id, 'before removal (alice)', [bob, dave]);
    await groupSend(bob, info.id, 'before removal (bob)', [alice, dave]);
    const oldAlice = SenderKeyMessage.deserialize(new Uint8Array(await innerFor(aliceUploads.at(-1)!, bob))).distributionId();
    const oldBob = SenderKeyMessage.deserialize(new Uint8Array(await innerFor(bobUploads.at(-1)!, alice))).distributionId();
    expect(await hasSenderKey(dave, alice, oldAlice)).toBe(true);
    expect(await hasSenderKey(dave, bob, oldBob)).toBe(true);

    const removed = updated([bob, dave], info.id, (u) => u.removed.includes(dave.identity.accountId));
    let after: GroupInfo | undefined;
    const sends = await watchSends(alice, async () => (after = await alice.removeGroupMember(info.id, 'gr_dave')));
    await removed;
    // The relay's view of the removal: one group upload (the signed state under alice's new sender
    // key, to bob), her new sender key to bob and the state to dave, each 1:1 — nothing else.
    expect(sends.map((x) => [x.path, x.status]).sort()).toEqual(
      [
        ['/v1/messages/multi_recipient', 200],
        [`/v1/messages/${bob.identity.accountId}`, 200],
        [`/v1/messages/${dave.identity.accountId}`, 200],
      ].sort(),
    );
    expect(uploadRecipients(aliceUploads.at(-1)!)).toEqual([bob.identity.accountId]);
    expect(after?.members.map((m) => m.username)).toEqual(['gr_alice', 'gr_bob']);
    expect(dave.groupInfo(info.id)).toMatchObject({ active: false, revision: 2 });
    await expect(dave.sendGroup(info.id, 'let me in')).rejects.toMatchObject({ code: 'NOT_GROUP_MEMBER' });

    const daveMessages = collect(dave, 'message');
    await groupSend(alice, info.id, 'after removal (alice)', [bob]);
    await groupSend(bob, info.id, 'after removal (bob)', [alice]);
    for (const [sender, uploads, old, reader] of [
      [alice, aliceUploads, oldAlice, bob],
      [bob, bobUploads, oldBob, alice],
    ] as const) {
      const upload = uploads.at(-1)!;
      // The relay's view: dave is not a recipient of the upload at all.
      expect(uploadRecipients(upload)).not.toContain(dave.identity.accountId);
      // Even handed the inner message, dave holds no key for it: the sender rotated to a new distribution id.
      const inner = await innerFor(upload, reader);
      const distribution = SenderKeyMessage.deserialize(new Uint8Array(inner)).distributionId();
      expect(distribution).not.toBe(old);
      expect(await hasSenderKey(dave, sender, distribution)).toBe(false);
      expect(await tryGroupDecrypt(dave, sender, inner)).not.toBe('decrypted');
    }

    // Dave runs a modified client and sends with the sender key alice and bob still hold from before:
    // it decrypts, but he is not in their current state, so it is dropped with an alert.
    const alerts = Promise.all(
      [alice, bob].map((c) =>
        nextEvent(
          c,
          'groupAlert',
          (a) => a.reason === 'not-member' && a.fromAccount === dave.identity.accountId && a.groupId === info.id,
        ),
      ),
    );
    const aliceMessages = collect(alice, 'message');
    const di = internals(dave);
    const cert = (await di.senderCertificate())!;
    const ts = Date.now();
    const plaintext = padPlaintext(
      encodeContent(
        { kind: 'data', message: { body: 'still here', timestamp: ts, group: { id: groupIdFromHex(info.id) } } },
        'gr_dave',
      ),
    );
    const upload = await di.crypto.run(async () => {
      const ct = await groupEncrypt(
        ProtocolAddress.new(dave.identity.accountId, 1),
        daveDistribution,
        di.stores.senderKey,
        new Uint8Array(plaintext),
      );
      const usmc = UnidentifiedSenderMessageContent.new(ct, cert, ContentHint.Implicit, new Uint8Array(groupIdFromHex(info.id)));
      const recipients = [alice, bob].map((c) => ProtocolAddress.new(c.identity.accountId, 1));
      const body = await sealedSenderMultiRecipientEncrypt({
        content: usmc,
        recipients,
        identityStore: di.stores.identity,
        sessionStore: di.stores.session,
      });
      di.stores.commit();
      return body;
    });
    const key = new Uint8Array(16);
    for (const c of [alice, bob])
      contactAccessKey(di.db, c.identity.accountId)!.forEach((b, i) => (key[i] = (key[i] as number) ^ b));
    const reply = await di.anon.request(
      'PUT',
      '/v1/messages/multi_recipient',
      { binary: upload },
      {
        'unidentified-access-key': Buffer.from(key).toString('base64'),
        'x-parley-timestamp': String(ts),
      },
    );
    expect(reply.status).toBe(200);
    await alerts;
    await groupSend(bob, info.id, 'barrier', [alice]);
    expect(aliceMessages.map(([m]) => m.body)).toEqual(['barrier']);

    // Erin joins. A message alice sent before that stays unreadable for her, even with the ciphertext in hand.
    await groupSend(alice, info.id, 'before erin', [bob]);
    const beforeErin = await innerFor(aliceUploads.at(-1)!, bob);
    const joined = updated([bob, erin], info.id, (u) => u.added.includes(erin.identity.accountId));
    await alice.addGroupMember(info.id, 'gr_erin');
    await joined;
    const erinMessages = collect(erin, 'message');
    await groupSend(alice, info.id, 'welcome erin', [bob, erin]);
    await groupSend(bob, info.id, 'hi erin', [alice, erin]);
    expect(erinMessages.map(([m]) => m.body)).toEqual(['welcome erin', 'hi erin']);
    expect(await tryGroupDecrypt(erin, alice, beforeErin)).not.toBe('decrypted');
    expect(await tryGroupDecrypt(bob, alice, beforeErin)).toBe(ErrorCode.DuplicatedMessage); // control: bob read it once
    expect(daveMessages).toEqual([]);
  });

  it('leaving works like removal: the others rotate, the leaver reads nothing new and cannot send', async () => {
    const alice = await register('gl_alice');
    const bob = await register('gl_bob');
    const carol = await register('gl_carol');
    for (const c of [alice, bob, carol]) await c.connect();
    const created = Promise.all([bob, carol].map((c) => nextEvent(c, 'groupUpdate')));
    const info = await alice.createGroup('Book club', ['gl_bob', 'gl_carol']);
    await created;
    await groupSend(carol, info.id, 'hi all', [alice, bob]);
    await groupSend(alice, info.id, 'hi carol', [bob, carol]);
    await groupSend(bob, info.id, 'hello', [alice, carol]);
    const aliceUploads = captureUploads(alice);
    const bobUploads = captureUploads(bob);
    await groupSend(alice, info.id, 'chapter 1', [bob, carol]);
    await groupSend(bob, info.id, 'loved it', [alice, carol]);
    const oldAlice = SenderKeyMessage.deserialize(new Uint8Array(await innerFor(aliceUploads.at(-1)!, bob))).distributionId();

    const left = updated([alice, bob], info.id, (u) => u.removed.includes(carol.identity.accountId));
    await carol.leaveGroup('Book club');
    for (const [u] of await left)
      expect(u).toMatchObject({ byAccount: carol.identity.accountId, added: [], removed: [carol.identity.accountId] });
    expect(carol.groupInfo(info.id)).toMatchObject({ active: false, admin: false });
    expect(alice.groupInfo(info.id).members.map((m) => m.username)).toEqual(['gl_alice', 'gl_bob']);
    await expect(carol.sendGroup(info.id, 'wait')).rejects.toMatchObject({ code: 'NOT_GROUP_MEMBER' });
    await expect(carol.leaveGroup(info.id)).rejects.toMatchObject({ code: 'NOT_GROUP_MEMBER' });

    const carolMessages = collect(carol, 'message');
    await groupSend(alice, info.id, 'chapter 2', [bob]);
    await groupSend(bob, info.id, 'spoilers', [alice]);
    for (const [sender, uploads, reader] of [
      [alice, aliceUploads, bob],
      [bob, bobUploads, alice],
    ] as const) {
      const upload = uploads.at(-1)!;
      expect(uploadRecipients(upload)).not.toContain(carol.identity.accountId);
      const inner = await innerFor(upload, reader);
      expect(await tryGroupDecrypt(carol, sender, inner)).not.toBe('decrypted');
    }
    const newAlice = SenderKeyMessage.deserialize(new Uint8Array(await innerFor(aliceUploads.at(-1)!, bob))).distributionId();
    expect(newAlice).not.toBe(oldAlice);
    expect(carolMessages).toEqual([]);
  });

  it('a member device that lost the sender key asks for the message again: it arrives over 1:1, later ones under the re-sent key', async () => {
    const alice = await register('gs_alice');
    const bob = await register('gs_bob');
    for (const c of [alice, bob]) await c.connect();
    const created = nextEvent(bob, 'groupUpdate');
    const info = await alice.createGroup('Resend', ['gs_bob']);
    await created;
    await groupSend(alice, info.id, 'one', [bob]);
    // Bob's device loses the sender keys it held (say, restored from an old backup).
    const bi = internals(bob);
    await bi.crypto.run(async () => void bi.db.prepare('DELETE FROM sender_keys').run([]));
    const bobMessages = collect(bob, 'message');
    const failed = nextEvent(bob, 'error', (e) => SdkError.is(e, 'GROUP_DECRYPT_FAILED'));
    await groupSend(alice, info.id, 'two', [bob]);
    await failed;
    await groupSend(alice, info.id, 'three', [bob]);
    expect(bobMessages.map(([m]) => [m.body, m.group?.id])).toEqual([
      ['two', info.id],
      ['three', info.id],
    ]);
  });

  it('bad input gets a stable code and changes nothing', async () => {
    const alice = await register('gb_alice');
    const bob = await register('gb_bob');
    for (const c of [alice, bob]) await c.connect();
    const created = nextEvent(bob, 'groupUpdate');
    const info = await alice.createGroup('Plans', ['gb_bob']);
    await created;
    // What a change would touch (usernames are filled in as the relay confirms them, so they are left out).
    const view = (gs: GroupInfo[]) => gs.map((g) => ({ ...g, members: g.members.map((m) => [m.accountId, m.admin]) }));
    const aliceBefore = view(alice.listGroups());
    const bobBefore = view(bob.listGroups());
    const bobUpdates = collect(bob, 'groupUpdate');
    const code = async (p: Promise<unknown> | (() => unknown)) => {
      try {
        await (typeof p === 'function' ? p() : p);
      } catch (err) {
        expect(err).toBeInstanceOf(SdkError);
        expect((err as Error).message).not.toMatch(/gb_|Plans|\n/);
        return (err as SdkError).code;
      }
      return 'ok';
    };
    expect(await code(() => alice.groupInfo('0123456789abcdef0123456789abcdef'))).toBe('UNKNOWN_GROUP');
    expect(await code(() => alice.groupInfo('nope'))).toBe('UNKNOWN_GROUP');
    expect(await code(alice.sendGroup('no such group', 'hi'))).toBe('UNKNOWN_GROUP');
    expect(await code(alice.addGroupMember(info.id.slice(0, 5) + 'z', 'gb_bob'))).toBe('UNKNOWN_GROUP');
    expect(await code(bob.removeGroupMember(info.id, 'gb_alice'))).toBe('NOT_GROUP_ADMIN');
    expect(await code(bob.addGroupMember(info.id, 'gb_alice'))).toBe('NOT_GROUP_ADMIN');
    expect(await code(alice.addGroupMember(info.id, 'gb_bob'))).toBe('ALREADY_MEMBER');
    expect(await code(alice.addGroupMember(info.id, 'gb_nobody'))).toBe('USER_NOT_FOUND');
    expect(await code(alice.removeGroupMember(info.id, 'gb_nobody'))).toBe('USER_NOT_FOUND');
    expect(await code(alice.createGroup('x'.repeat(65), ['gb_bob']))).toBe('INVALID_TITLE');
    expect(await code(alice.createGroup('   ', ['gb_bob']))).toBe('INVALID_TITLE');
    expect(await code(alice.createGroup('bell\u0007', ['gb_bob']))).toBe('INVALID_TITLE');
    expect(await code(alice.createGroup('Fine', ['gb_bob', 'not a username!']))).toBe('INVALID_INPUT');
    expect(await code(alice.createGroup('Fine', ['gb_bob', 'gb_nobody']))).toBe('USER_NOT_FOUND');
    const tooMany = Array.from({ length: 1000 }, (_, i) => `gb_member${i}`);
    expect(await code(alice.createGroup('Huge', tooMany))).toBe('GROUP_TOO_LARGE');
    expect(await code(alice.sendGroup(info.id, ''))).toBe('INVALID_INPUT');
    // A second group with the same title makes the title ambiguous; the id still works.
    const created2 = nextEvent(bob, 'groupUpdate');
    const other = await alice.createGroup('Plans', ['gb_bob']);
    await created2;
    expect(await code(() => alice.groupInfo('Plans'))).toBe('AMBIGUOUS_GROUP');
    expect(alice.groupInfo(other.id.slice(0, 6)).id === other.id || other.id.slice(0, 6) === info.id.slice(0, 6)).toBe(true);
    expect(alice.groupInfo(info.id).revision).toBe(1);
    expect(view(alice.listGroups().filter((g) => g.id !== other.id))).toEqual(aliceBefore);
    expect(view(bob.listGroups().filter((g) => g.id !== other.id))).toEqual(bobBefore);
    expect(bobUpdates.filter(([u]) => u.group.id === info.id)).toEqual([]);
  });
});
