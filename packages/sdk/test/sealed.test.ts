/**
 * Sealed sender end to end against a real relay: sealed 1:1 messages,
 * receipts and typing indicators, fallback to identified sends, certificate
 * rejection (expired, forged root, mismatched identity), trust-root pinning,
 * and what the relay's database and log hold afterwards.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from '@signalapp/sqlcipher';
import {
  IdentityKeyPair,
  KEMKeyPair,
  KEMPublicKey,
  PreKeyBundle,
  PrivateKey,
  ProtocolAddress,
  PublicKey,
  SenderCertificate,
  ServerCertificate,
  UnidentifiedSenderMessageContent,
  processPreKeyBundle,
  sealedSenderEncrypt,
  signalEncrypt,
} from '@signalapp/libsignal-client';
import {
  type RunningRelay,
  createServerCertificate,
  createTrustRoot,
  defaultRelayConfig,
  parseServerCertificate,
  startRelay,
} from '@parley/relay';
import {
  type DeviceId,
  EnvelopeType,
  encodeContent,
  encodeRegisterRequest,
  encodeSendRequestBinary,
  padPlaintext,
  processPreKeyBundleResponse,
} from '@parley/wire';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryMember } from '../../../bench/src/groups-member.js';
import { ParleyClient, SdkError } from '../src/index.js';
import { collect, nextEvent, tempDir } from './helpers.js';

const tmp = tempDir('parley-sealed-');
const relayDir = join(tmp.dir, 'relay');
const logFile = join(tmp.dir, 'relay.log');
let relay: RunningRelay;
let n = 0;

beforeAll(async () => {
  relay = await startRelay(defaultRelayConfig({ port: 0, dataDir: relayDir, logLevel: 'debug', logDestination: logFile }));
});
afterAll(async () => {
  await relay.close();
  tmp.cleanup();
});

function profileDir(): string {
  n++;
  return join(tmp.dir, `p${n}`);
}
async function newClient(name: string, dir = profileDir()): Promise<ParleyClient> {
  return ParleyClient.register({ profileDir: dir, serverUrl: relay.url, username: name, passphrase: null });
}

interface RelayRow {
  type: number;
  source_account: string | null;
  source_device: number | null;
  dest_account: string;
}
/** The envelopes the relay holds right now, read straight from its SQLite file. */
function relayEnvelopes(): RelayRow[] {
  const db = new Database(join(relayDir, 'relay.db'));
  try {
    return db
      .prepare('SELECT type, source_account, source_device, dest_account FROM envelopes ORDER BY seq')
      .all() as unknown as RelayRow[];
  } finally {
    db.close();
  }
}
function queuedFor(account: string): RelayRow[] {
  return relayEnvelopes().filter((r) => r.dest_account === account);
}

/** Both sides have messaged each other, so each knows the other's profile key. */
async function introduce(a: ParleyClient, b: ParleyClient): Promise<void> {
  const got = nextEvent(b, 'message', (m) => m.body === 'hi');
  await a.send(b.identity.username, 'hi');
  await got;
  const back = nextEvent(a, 'message', (m) => m.body === 'hello');
  await b.send(a.identity.username, 'hello');
  await back;
}

describe('sealed 1:1 messaging', () => {
  it('first message identified (no access key yet), then every message and receipt sealed with no source on the relay', async () => {
    const aliceDir = profileDir();
    let alice = await newClient('s_alice', aliceDir);
    const bob = await newClient('s_bob');
    await alice.connect();
    await bob.connect();
    const serverReceipts = collect(alice, 'serverReceipt');
    const first = nextEvent(alice, 'serverReceipt');
    const got = nextEvent(bob, 'message', (m) => m.body === 'hi');
    const { timestamp } = await alice.send('s_bob', 'hi');
    await got;
    // Identified: the relay knew the sender and sent a server delivery receipt.
    expect((await first)[0].timestamp).toBe(timestamp);

    const back = nextEvent(alice, 'message', (m) => m.body === 'hello');
    await bob.send('s_alice', 'hello');
    const [m] = await back;
    expect(m.fromAccount).toBe(bob.identity.accountId);
    expect(m.fromDevice).toBe(1);
    expect(m.from).toBe('s_bob');

    // Alice now knows Bob's profile key: her next message is sealed, so no server receipt.
    const before = serverReceipts.length;
    const delivered = nextEvent(alice, 'receipt', (r) => r.type === 'delivery');
    const got2 = nextEvent(bob, 'message', (x) => x.body === 'sealed now');
    const sent2 = await alice.send('s_bob', 'sealed now');
    const [m2] = await got2;
    expect(m2.fromAccount).toBe(alice.identity.accountId);
    expect(m2.from).toBe('s_alice');
    expect((await delivered)[0].timestamps).toEqual([sent2.timestamp]);
    await new Promise((r) => setTimeout(r, 200));
    expect(serverReceipts.length).toBe(before);

    // Alice offline: what Bob sends her waits on the relay without a source.
    await alice.close();
    await bob.send('s_alice', 'while you were away');
    await bob.sendReadReceipt('s_alice', [sent2.timestamp]);
    await bob.sendTyping('s_alice', true); // online only: never queued
    const rows = queuedFor(m2.fromAccount);
    expect(rows).toHaveLength(2);
    for (const r of rows) {
      expect(r.type).toBe(EnvelopeType.UnidentifiedSender);
      expect(r.source_account).toBeNull();
      expect(r.source_device).toBeNull();
    }

    alice = await ParleyClient.open({ profileDir: aliceDir, passphrase: null });
    const away = nextEvent(alice, 'message', (x) => x.body === 'while you were away');
    const read = nextEvent(alice, 'receipt', (r) => r.type === 'read');
    const typing = collect(alice, 'typing');
    await alice.connect();
    const [m3] = await away;
    expect(m3.fromAccount).toBe(bob.identity.accountId);
    const [r] = await read;
    expect(r.fromAccount).toBe(bob.identity.accountId);
    expect(r.timestamps).toEqual([sent2.timestamp]);
    expect(typing).toEqual([]);
    expect((await alice.history('s_bob')).find((h) => h.timestamp === sent2.timestamp)?.status).toBe('read');
    await alice.close();
    await bob.close();
  });

  it('typing indicators travel sealed to a connected device', async () => {
    const alice = await newClient('t_alice');
    const bob = await newClient('t_bob');
    await alice.connect();
    await bob.connect();
    await introduce(alice, bob);
    const typing = nextEvent(bob, 'typing');
    const serverReceipts = collect(alice, 'serverReceipt');
    await alice.sendTyping('t_bob', true);
    const [t] = await typing;
    expect(t).toEqual({ from: 't_alice', fromAccount: alice.identity.accountId, started: true });
    const stopped = nextEvent(bob, 'typing', (x) => !x.started);
    await alice.sendTyping('t_bob', false);
    await stopped;
    expect(serverReceipts).toEqual([]);
    expect(queuedFor(bob.identity.accountId)).toEqual([]);
    await alice.close();
    await bob.close();
  });

  it('falls back to an identified send when the relay rejects the access key, and stops using that key', async () => {
    const alice = await newClient('f_alice');
    const bob = await newClient('f_bob');
    await alice.connect();
    await bob.connect();
    await introduce(alice, bob);
    // Bob rotates his profile key and publishes the new access key; Alice still holds the old one.
    const inner = alice as unknown as { db: Database };
    inner.db.prepare('UPDATE profile_keys SET profile_key = ?').run([new Uint8Array(randomBytes(32))]);
    const got = nextEvent(bob, 'message', (m) => m.body === 'after a wrong key');
    // Collected from the start: Bob may be pushed the message, and Alice its receipt, before her send is answered.
    const serverReceipts = collect(alice, 'serverReceipt');
    const { timestamp } = await alice.send('f_bob', 'after a wrong key');
    const [m] = await got;
    expect(m.fromAccount).toBe(alice.identity.accountId);
    // It went identified: the relay knew the sender and sent a server receipt.
    await expect.poll(() => serverReceipts.some(([r]) => r.timestamp === timestamp), { timeout: 10_000 }).toBe(true);
    expect(inner.db.prepare('SELECT usable FROM profile_keys', { pluck: true }).all()).toEqual([0]);
    // Bob's next message carries his profile key again; sealing resumes.
    const back = nextEvent(alice, 'message', (x) => x.body === 'here is my key');
    await bob.send('f_alice', 'here is my key');
    await back;
    expect(inner.db.prepare('SELECT usable FROM profile_keys', { pluck: true }).all()).toEqual([1]);
    await alice.close();
    await bob.close();
  });
});

// ---------------------------------------------------------------- crafted certificates

/** A sender driven with libsignal directly, so the test controls every certificate it presents. */
async function rawSender(username: string) {
  const identity = IdentityKeyPair.generate();
  const password = randomBytes(32).toString('base64url');
  const spk = PrivateKey.generate().getPublicKey().serialize();
  const kyber = KEMKeyPair.generate().getPublicKey().serialize();
  const reg = await fetch(new URL('/v1/accounts', relay.url), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(
      encodeRegisterRequest({
        username,
        password,
        registrationId: 4321,
        identityKey: identity.publicKey.serialize(),
        signedPreKey: { keyId: 1, publicKey: spk, signature: identity.privateKey.sign(spk) },
        kyberLastResortKey: { keyId: 1, publicKey: kyber, signature: identity.privateKey.sign(kyber) },
        inviteCode: null,
      }),
    ),
  });
  const { accountId } = (await reg.json()) as { accountId: string };
  const auth = `Basic ${Buffer.from(`${accountId}.1:${password}`).toString('base64')}`;
  // The project's in-memory libsignal party (bench/src/groups-member.ts), registered with the same registration id.
  const member = new MemoryMember(ProtocolAddress.new(accountId, 1), identity, 4321);
  return { identity, accountId, auth, member };
}
type Raw = Awaited<ReturnType<typeof rawSender>>;

/** Encrypt `body` from the raw sender to device 1 of `to`, sealed with `cert`; the outer layer is made with `outerKey`. */
async function craftSealed(
  raw: Raw,
  to: ParleyClient,
  body: string,
  cert: SenderCertificate,
  outerKey: IdentityKeyPair = raw.identity,
  timestamp = Date.now(),
): Promise<void> {
  const toId = to.identity.accountId;
  const addr = ProtocolAddress.new(toId, 1);
  const local = ProtocolAddress.new(raw.accountId, 1);
  const { session: sessions, identityStore } = raw.member;
  if (!raw.member.sessions.has(addr.toString())) {
    const res = await fetch(new URL(`/v1/keys/${toId}/1`, relay.url), { headers: { authorization: raw.auth } });
    const b = processPreKeyBundleResponse(await res.json());
    const d = b.devices[0];
    if (!d) throw new Error('no bundle');
    await processPreKeyBundle(
      PreKeyBundle.new(
        d.registrationId,
        d.deviceId,
        d.preKey?.keyId ?? null,
        d.preKey ? PublicKey.deserialize(new Uint8Array(d.preKey.publicKey)) : null,
        d.signedPreKey.keyId,
        PublicKey.deserialize(new Uint8Array(d.signedPreKey.publicKey)),
        new Uint8Array(d.signedPreKey.signature),
        PublicKey.deserialize(new Uint8Array(b.identityKey)),
        d.kyberPreKey.keyId,
        KEMPublicKey.deserialize(new Uint8Array(d.kyberPreKey.publicKey)),
        new Uint8Array(d.kyberPreKey.signature),
      ),
      addr,
      local,
      sessions,
      identityStore,
    );
  }
  const plaintext = new Uint8Array(padPlaintext(encodeContent({ kind: 'data', message: { body, timestamp } })));
  const ct = await signalEncrypt(plaintext, addr, local, sessions, identityStore);
  const usmc = UnidentifiedSenderMessageContent.new(ct, cert, 0, null);
  // The outer layer with `outerKey` (possibly not the sender's): a party holding that key and the recipient's identity.
  const outerParty = new MemoryMember(local, outerKey);
  for (const [k, v] of raw.member.identities) outerParty.identities.set(k, v);
  const outer = await sealedSenderEncrypt(usmc, addr, outerParty.identityStore);
  const record = raw.member.sessions.get(addr.toString());
  const res = await fetch(new URL(`/v1/messages/${toId}`, relay.url), {
    method: 'PUT',
    headers: { authorization: raw.auth, 'content-type': 'application/x-protobuf' },
    body: Buffer.from(
      encodeSendRequestBinary({
        messages: [
          {
            type: EnvelopeType.UnidentifiedSender,
            destinationDevice: 1 as DeviceId,
            destinationRegistrationId: record?.remoteRegistrationId() ?? 0,
            content: outer,
          },
        ],
        timestamp,
        urgent: true,
        messageId: new Uint8Array(randomBytes(16)),
      }),
    ),
  });
  if (res.status !== 200) throw new Error(`send failed: ${res.status}`);
}

describe('the recipient checks sealed-sender certificates', () => {
  const realSigner = () => parseServerCertificate(readFileSync(join(relayDir, 'sealed-sender', 'server-cert.json'), 'utf8'));
  const certFor = (raw: Raw, opts: { key?: PublicKey; expires?: number; server?: ReturnType<typeof realSigner> } = {}) => {
    const s = opts.server ?? realSigner();
    return SenderCertificate.new(
      raw.accountId,
      null,
      1,
      opts.key ?? raw.identity.publicKey,
      opts.expires ?? Date.now() + 3600_000,
      s.certificate,
      s.key,
    );
  };

  it('accepts a valid certificate, and rejects expired, forged-root and mismatched-identity ones', async () => {
    const bob = await newClient('c_bob');
    await bob.connect();
    const raw = await rawSender('c_mallory');
    const errors = collect(bob, 'error');
    const messages = collect(bob, 'message');

    // Control: a good certificate is accepted, and names the sender.
    const ok = nextEvent(bob, 'message', (m) => m.body === 'valid');
    await craftSealed(raw, bob, 'valid', certFor(raw));
    expect((await ok)[0].fromAccount).toBe(raw.accountId);

    const rejected = async (body: string, cert: SenderCertificate, reason: string, outerKey?: IdentityKeyPair) => {
      const err = nextEvent(bob, 'error', (e) => SdkError.is(e, 'SEALED_SENDER_REJECTED'));
      await craftSealed(raw, bob, body, cert, outerKey);
      const [e] = await err;
      expect(e.message).toContain(reason);
    };
    await rejected('expired', certFor(raw, { expires: Date.now() - 1000 }), 'expired');
    const otherRoot = JSON.stringify(createTrustRoot());
    await rejected(
      'forged',
      certFor(raw, { server: parseServerCertificate(JSON.stringify(createServerCertificate(otherRoot, 1))) }),
      'untrusted',
    );
    // The relay's real signer, but binding the sender's account to a key that is not the session's identity.
    const other = IdentityKeyPair.generate();
    await rejected('mismatch', certFor(raw, { key: other.publicKey }), 'identity mismatch', other);

    // A server certificate forged directly with another root key is refused the same way.
    const rogueRoot = PrivateKey.generate();
    const rogueServer = PrivateKey.generate();
    const rogueCert = ServerCertificate.new(1, rogueServer.getPublicKey(), rogueRoot);
    await rejected(
      'rogue',
      SenderCertificate.new(raw.accountId, null, 1, raw.identity.publicKey, Date.now() + 3600_000, rogueCert, rogueServer),
      'untrusted',
    );

    expect(messages.map(([m]) => m.body)).toEqual(['valid']);
    expect(errors.every(([e]) => SdkError.is(e, 'SEALED_SENDER_REJECTED'))).toBe(true);
    await bob.close();
  });
});

describe('sealed envelopes already processed are dropped', () => {
  it('a redelivered envelope (processed and committed, never acked) is dropped without an event or an error', async () => {
    const aliceDir = profileDir();
    const bobDir = profileDir();
    const alice = await newClient('d_alice', aliceDir);
    let bob = await newClient('d_bob', bobDir);
    await alice.connect();
    await bob.connect();
    await introduce(alice, bob);

    // Bob processes and commits the next message but answers 500, as if the connection dropped before the ack.
    const receiver = (c: ParleyClient) => (c as unknown as { receiver: { push: (req: { path: string }) => Promise<{ status: number }> } }).receiver;
    const push = receiver(bob).push.bind(receiver(bob));
    receiver(bob).push = async (req) => ({ ...(await push(req)), status: 500 });
    const once = nextEvent(bob, 'message', (m) => m.body === 'once');
    await alice.send('d_bob', 'once');
    await once;
    await bob.close();
    // The relay still holds it, sealed, and pushes it again on the next connection.
    const held = queuedFor(bob.identity.accountId);
    expect(held.length).toBeGreaterThanOrEqual(1);
    expect(held.every((r) => r.type === EnvelopeType.UnidentifiedSender && r.source_account === null)).toBe(true);

    bob = await ParleyClient.open({ profileDir: bobDir, passphrase: null });
    const messages = collect(bob, 'message');
    const errors = collect(bob, 'error');
    let pushed = 0;
    const push2 = receiver(bob).push.bind(receiver(bob));
    receiver(bob).push = (req) => {
      if (req.path === '/api/v1/message') pushed++;
      return push2(req);
    };
    const drained = nextEvent(bob, 'queueEmpty');
    await bob.connect();
    await drained;
    expect(pushed).toBeGreaterThanOrEqual(1); // the redelivery came
    const after = nextEvent(bob, 'message', (m) => m.body === 'after');
    await alice.send('d_bob', 'after');
    await after;
    expect(messages.map(([m]) => m.body)).toEqual(['after']);
    expect(errors).toEqual([]);
    expect((await bob.history('d_alice')).map((h) => h.body)).toEqual(['hi', 'hello', 'once', 'after']);
    await bob.close();
    await alice.close();
  });

  it('a sealed copy resent with the same sender and timestamp is dropped after decrypting', async () => {
    const bob = await newClient('d_bob2');
    await bob.connect();
    const raw = await rawSender('d_raw');
    const signer = parseServerCertificate(readFileSync(join(relayDir, 'sealed-sender', 'server-cert.json'), 'utf8'));
    const cert = SenderCertificate.new(raw.accountId, null, 1, raw.identity.publicKey, Date.now() + 3600_000, signer.certificate, signer.key);
    const messages = collect(bob, 'message');
    const errors = collect(bob, 'error');
    const ts = Date.now();
    const first = nextEvent(bob, 'message', (m) => m.body === 'copy');
    await craftSealed(raw, bob, 'copy', cert, raw.identity, ts);
    await first;
    // Encrypted again (a new ratchet step, a new server guid), same timestamp: a resend of the same message.
    await craftSealed(raw, bob, 'copy', cert, raw.identity, ts);
    const next = nextEvent(bob, 'message', (m) => m.body === 'next');
    await craftSealed(raw, bob, 'next', cert);
    await next;
    expect(messages.map(([m]) => m.body)).toEqual(['copy', 'next']);
    expect(errors).toEqual([]);
    await bob.close();
  });
});

describe('relay hygiene after a conversation', () => {
  it('the database holds no sender for sealed envelopes and the log no (sender, recipient) pair', async () => {
    const alice = await newClient('h_alice');
    const bob = await newClient('h_bob');
    await alice.connect();
    await bob.connect();
    await introduce(alice, bob);
    await bob.close();
    for (let i = 0; i < 3; i++) await alice.send('h_bob', `queued ${i}`);
    await alice.sendTyping('h_bob', true);

    // Three messages, plus possibly Alice's delivery receipt for "hello": all sealed.
    const rows = queuedFor(bob.identity.accountId);
    expect(rows.length).toBeGreaterThanOrEqual(3);
    for (const r of rows) {
      expect(r.type).toBe(EnvelopeType.UnidentifiedSender);
      expect(r.source_account).toBeNull();
    }
    // Every sealed envelope anywhere in the relay lacks a source.
    for (const r of relayEnvelopes().filter((x) => x.type === EnvelopeType.UnidentifiedSender))
      expect(r.source_account).toBeNull();
    // Idempotency keys of sealed sends name no sender either.
    const db = new Database(join(relayDir, 'relay.db'));
    try {
      const pairs = db
        .prepare('SELECT COUNT(*) AS n FROM idempotency_keys WHERE sender_account = ? AND destination = ?', { pluck: true })
        .get([alice.identity.accountId, bob.identity.accountId]);
      // Only the first, identified, message of the introduction may pair them.
      expect(Number(pairs)).toBeLessThanOrEqual(1);
    } finally {
      db.close();
    }

    const b2 = await ParleyClient.open({ profileDir: join(tmp.dir, `p${n}`), passphrase: null });
    const all = collect(b2, 'message');
    const last = nextEvent(b2, 'message', (m) => m.body === 'queued 2');
    await b2.connect();
    await last;
    expect(all.map(([m]) => m.body)).toEqual(['queued 0', 'queued 1', 'queued 2']);
    expect(all.every(([m]) => m.fromAccount === alice.identity.accountId)).toBe(true);
    await b2.close();
    await alice.close();

    const log = readFileSync(logFile, 'utf8').split('\n');
    expect(log.length).toBeGreaterThan(10);
    for (const line of log) expect(line.includes(alice.identity.accountId) && line.includes(bob.identity.accountId)).toBe(false);
    expect(log.some((l) => l.includes(alice.identity.accountId) || l.includes(bob.identity.accountId))).toBe(false);
  });
});

describe('trust root pinning', () => {
  it('pins the trust root at registration and refuses a relay that presents another one', async () => {
    const dataDir = join(tmp.dir, 'relay-pin');
    let own = await startRelay(defaultRelayConfig({ port: 0, dataDir, logLevel: 'silent' }));
    const port = own.port;
    const aliceDir = profileDir();
    const alice = await ParleyClient.register({
      profileDir: aliceDir,
      serverUrl: own.url,
      username: 'p_alice',
      passphrase: null,
    });
    await alice.close();
    await own.close();

    // The same relay (data, port) restarted with a server certificate from another trust root.
    const certFile = join(tmp.dir, 'rogue-cert.json');
    writeFileSync(certFile, JSON.stringify(createServerCertificate(JSON.stringify(createTrustRoot()), 9)), { mode: 0o600 });
    own = await startRelay(defaultRelayConfig({ port, dataDir, logLevel: 'silent', serverCertificate: certFile }));
    try {
      const a2 = await ParleyClient.open({ profileDir: aliceDir, passphrase: null });
      const errors = collect(a2, 'error');
      const refused = nextEvent(a2, 'error', (e) => SdkError.is(e, 'UNTRUSTED_RELAY'));
      await a2.connect();
      await refused;
      expect(errors.every(([e]) => SdkError.is(e, 'UNTRUSTED_RELAY'))).toBe(true);
      await a2.close();
    } finally {
      await own.close();
    }
  });
});
