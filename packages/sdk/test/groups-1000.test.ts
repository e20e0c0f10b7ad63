/**
 * Issue #5: a 1,000-member group receives one message and every device
 * decrypts it exactly once.
 *
 * Real relay (in this process, on a real port, SQLite on disk, rate limits
 * raised), real sockets. The sender and one receiving member are full
 * ParleyClients (encrypted profiles); the other 998 members are light
 * members (bench/src/groups-light.ts): real accounts registered on the relay
 * with real libsignal keys held in memory, a real WebSocket each, and the
 * real receive path for a group message — sealedSenderDecryptToUsmc, sender
 * certificate checked against the relay's trust root, certificate identity
 * checked against the session, groupDecrypt with the SKDM they received over
 * their 1:1 session. Full clients for all 1,000 would take minutes here
 * (an SQLCipher profile and key generation each).
 *
 * Each light member first sends the sender one 1:1 message with its profile
 * key (as any contact's first message does), so the sender can reach it with
 * the one multi-recipient sealed upload. The group is created by the sender
 * naming all 999 others; its sendGroup distributes its sender key and uploads
 * the message. Afterwards every socket is closed and reopened: the relay must
 * have nothing left to deliver (every copy was acknowledged once), and no
 * member may have decrypted a second copy.
 */
import { join } from 'node:path';
import type { PublicKey } from '@signalapp/libsignal-client';
import type { AccountId } from '@parley/wire';
import { type RunningRelay, defaultRelayConfig, startRelay } from '@parley/relay';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { LightMember } from '../../../bench/src/groups-light.js';
import { ParleyClient, type IncomingMessage } from '../src/index.js';
import { tempDir } from './helpers.js';

const LIGHT = 998;
const open = { burst: 1e9, perSecond: 1e9 };
const tmp = tempDir('parley-groups-1000-');
let relay: RunningRelay;
let baseUrl: string;
let sender: ParleyClient;
let bob: ParleyClient;
let members: LightMember[] = [];
const tag = Date.now().toString(36);

/** Run `fn` over `items`, at most `limit` at a time. */
async function pool<T, R>(items: T[], limit: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i] as T);
      }
    }),
  );
  return out;
}

function until(what: string, cond: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (cond()) resolve();
      else if (Date.now() > deadline) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(tick, 25);
    };
    tick();
  });
}

beforeAll(async () => {
  relay = await startRelay(
    defaultRelayConfig({
      port: 0,
      dataDir: join(tmp.dir, 'relay'),
      logLevel: 'warn',
      logDestination: join(tmp.dir, 'relay.log'),
      rateLimits: { register: open, send: open, bundle: open, lookup: open, sealedRecipient: open, sealedAddress: open },
    }),
  );
  baseUrl = `http://127.0.0.1:${relay.port}`;
  sender = await ParleyClient.register({
    profileDir: join(tmp.dir, 's'),
    serverUrl: baseUrl,
    username: `s_${tag}`,
    passphrase: null,
  });
  bob = await ParleyClient.register({
    profileDir: join(tmp.dir, 'b'),
    serverUrl: baseUrl,
    username: `b_${tag}`,
    passphrase: null,
  });
  let introduced = 0;
  sender.on('message', () => void introduced++);
  await sender.connect();
  await bob.connect();
  await bob.send(`s_${tag}`, 'hello');

  const root: PublicKey = await LightMember.trustRoot(baseUrl);
  members = await pool(
    Array.from({ length: LIGHT }, (_, i) => i),
    16,
    (i) => LightMember.register(baseUrl, `m${i}_${tag}`, root),
  );
  await pool(members, 64, (m) => m.connect());
  await pool(members, 16, (m) => m.introduce(sender.identity.accountId as AccountId));
  await until('the sender to hear from every member', () => introduced === LIGHT + 1, 60_000);
}, 180_000);

afterAll(async () => {
  await Promise.all(members.map((m) => m.close()));
  await sender?.close();
  await bob?.close();
  await relay?.close();
  tmp.cleanup();
});

it('one message to a 1,000-member group is decrypted exactly once by every member device', async () => {
  const bobGot: IncomingMessage[] = [];
  bob.on('message', (m) => {
    if (m.group) bobGot.push(m);
  });
  const group = await sender.createGroup('thousand', [`b_${tag}`, ...members.map((m) => m.username)]);
  expect(group.members).toHaveLength(1000);

  const text = `to all ${tag}`;
  const { timestamp } = await sender.sendGroup(group.id, text);
  // Wait until every member has the message or has failed on something (the assertions below say which).
  await until(
    'every member to decrypt the message',
    () => bobGot.length >= 1 && members.every((m) => m.groupMessages.length >= 1 || m.errors.length > 0),
    60_000,
  );
  await Promise.all(members.map((m) => m.idle()));

  // Every light member: one group message, the right one, from the sender, and nothing failed.
  for (const m of members) {
    expect(m.errors).toEqual([]);
    expect(m.groupMessages).toEqual([{ from: sender.identity.accountId, groupId: group.id, timestamp, body: text }]);
  }
  expect(bobGot).toHaveLength(1);
  expect(bobGot[0]).toMatchObject({
    fromAccount: sender.identity.accountId,
    body: text,
    timestamp,
    group: { id: group.id, title: 'thousand' },
  });

  // Reconnect everyone: every copy was acknowledged, so nothing is redelivered and nobody decrypts twice.
  const before = members.map((m) => m.envelopes);
  await Promise.all(members.map((m) => m.close()));
  await pool(members, 64, (m) => m.connect());
  await Promise.all(members.map((m) => m.drained()));
  await Promise.all(members.map((m) => m.idle()));
  expect(members.map((m) => m.envelopes)).toEqual(before);
  for (const m of members) expect(m.groupMessages).toHaveLength(1);
  expect(bobGot).toHaveLength(1);
}, 120_000);
