/**
 * A received text message has no seen_envelopes row of its own: its row in
 * `messages` (id = relay timestamp + guid, with sender, device and
 * timestamp) is what the duplicate checks find. So a redelivery of the same
 * envelope, also after the profile is reopened (the filter rebuilt from the
 * tables), is dropped before decryption, and a resent copy (new guid, same
 * sender, device and timestamp) is recognised by its triple.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultRelayConfig, startRelay, type RunningRelay } from '@parley/relay';
import { type Envelope, processEnvelope } from '@parley/wire';
import { ParleyClient } from '../src/index.js';
import { receivedMessageId } from '../src/stores.js';
import type { Db } from '../src/db.js';
import { collect, nextEvent, tempDir } from './helpers.js';

let relay: RunningRelay;
const tmp = tempDir('parley-seen-kept-');

beforeAll(async () => {
  relay = await startRelay(defaultRelayConfig({ port: 0, dataDir: join(tmp.dir, 'relay'), logLevel: 'silent' }));
});
afterAll(async () => {
  await relay.close();
  tmp.cleanup();
});

interface Inside {
  db: Db;
  handleEnvelope: (bytes: Uint8Array) => Promise<{ status: number }>;
  seenGuid: (env: Envelope) => boolean;
  seenTriple: (account: string, device: number, ts: number) => boolean;
}
const inside = (c: ParleyClient) => c as unknown as Inside;

describe('text messages kept without a seen row', () => {
  it('are still recognised as processed by guid and by (sender, device, timestamp), also after reopening', async () => {
    const alice = await ParleyClient.register({ profileDir: join(tmp.dir, 'a'), serverUrl: relay.url, username: 'alice_k', passphrase: null });
    const bobDir = join(tmp.dir, 'b');
    const bob = await ParleyClient.register({ profileDir: bobDir, serverUrl: relay.url, username: 'bob_k', passphrase: null });
    const delivered: Uint8Array[] = [];
    try {
      // Keep a copy of every envelope Bob is handed, to deliver it again later.
      const b = inside(bob);
      const handle = b.handleEnvelope.bind(bob);
      b.handleEnvelope = (bytes) => {
        delivered.push(new Uint8Array(bytes));
        return handle(bytes);
      };
      await alice.connect();
      await bob.connect();
      const got = nextEvent(bob, 'message');
      await alice.send('bob_k', 'only once');
      expect((await got)[0].body).toBe('only once');
    } finally {
      await alice.close();
      await bob.close();
    }

    const envs = delivered.map((d) => processEnvelope(d));
    const text = envs.find((e) => e.source?.account === alice.identity.accountId)!;
    expect(text).toBeDefined();

    const reopened = await ParleyClient.open({ profileDir: bobDir, passphrase: null });
    try {
      const r = inside(reopened);
      // The message row is there, the seen row is not.
      expect(r.db.prepare('SELECT count(*) AS n FROM messages WHERE id = ?').get([receivedMessageId(text)])).toEqual({ n: 1 });
      expect(r.db.prepare('SELECT count(*) AS n FROM seen_envelopes WHERE server_guid = ?').get([new Uint8Array(text.serverGuid)])).toEqual({ n: 0 });

      // The same envelope again: seen before any decryption, acked, no second event.
      expect(r.seenGuid(text)).toBe(true);
      const events = collect(reopened, 'message');
      const bytes = delivered[envs.indexOf(text)]!;
      expect(await r.handleEnvelope(bytes)).toEqual({ status: 200 });
      expect(events).toHaveLength(0);

      // A resent copy: another guid, the same sender, device and timestamp.
      const source = text.source!;
      const resent = { ...text, serverGuid: new Uint8Array(randomBytes(16)) };
      expect(r.seenGuid(resent)).toBe(false);
      expect(r.seenTriple(source.account, source.device, text.clientTimestamp)).toBe(true);

      // Something new from the same sender is not.
      const next = { ...text, serverGuid: new Uint8Array(randomBytes(16)), clientTimestamp: text.clientTimestamp + 1 };
      expect(r.seenGuid(next)).toBe(false);
      expect(r.seenTriple(source.account, source.device, text.clientTimestamp + 1)).toBe(false);
    } finally {
      await reopened.close();
    }
  });
});
