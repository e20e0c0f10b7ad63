/**
 * The relay is blind: after real traffic, neither its data directory (every
 * file, WAL and SHM included, read as bytes) nor its log contains any message
 * text. Its log also carries no usernames and no passphrase. And a profile
 * protected by a passphrase does not hold message text in the clear.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findInFiles, listFiles } from '../helpers/scan.js';
import { cleanupAll, createWorld, messagesOf, type World } from '../helpers/world.js';

const hex = (n: number): string => randomBytes(n).toString('hex');

describe('canaries: the relay never stores or logs plaintext', () => {
  let w: World;
  // Distinctive names, so finding one in a log cannot be a coincidence.
  const alice = `alice_${hex(4)}`;
  const bob = `bob_${hex(4)}`;
  const canaries = Array.from({ length: 4 }, () => `canary-${hex(12)}`);
  let bobOutput = '';
  /** Hits found while the three messages to bob were still queued on the relay. */
  let whileQueued: Array<{ file: string; needle: string }> = [];
  let filesWhileQueued = 0;

  beforeAll(async () => {
    // Debug logging is the strictest setting: nothing may leak even there.
    w = await createWorld('privacy', { env: { PARLEY_LOG_LEVEL: 'debug' } });
    await w.register(alice);
    await w.register(bob);
    const [c0, c1, c2, c3] = canaries as [string, string, string, string];
    await w.ok(alice, ['send', bob, `first secret ${c0}`]);
    await w.ok(alice, ['send', bob, '--stdin'], { input: `second secret ${c1}\n` });
    await w.ok(alice, ['chat', bob], { input: `third secret ${c2}\n/quit\n`, timeoutMs: 60_000 });
    // Bob has not connected yet: the envelopes are in the relay's database now.
    const queuedFiles = listFiles(w.dataDir);
    filesWhileQueued = queuedFiles.length;
    whileQueued = findInFiles(queuedFiles, canaries);
    // A reply, so the other direction (and the ratchet step) is covered too.
    const bobFirst = await w.ok(bob, ['receive', '--json']);
    await w.ok(bob, ['send', alice, `reply ${c3}`]);
    const aliceGot = await w.ok(alice, ['receive', '--json']);
    bobOutput = bobFirst.stdout;
    expect(messagesOf(aliceGot.stdout).map((m) => m.body)).toContain(`reply ${c3}`);
  }, 180_000);

  // Not w.close(): it must also run when beforeAll failed half-way.
  afterAll(cleanupAll);

  it('the canaries did reach the recipient (so the search below can fail)', () => {
    const bodies = messagesOf(bobOutput).map((m) => m.body);
    expect(bodies).toEqual(canaries.slice(0, 3).map((c, i) => `${['first', 'second', 'third'][i]} secret ${c}`));
  });

  it('the byte scan finds a canary where one is stored (so it can fail)', () => {
    const sample = join(w.dir, 'bob-received.jsonl');
    writeFileSync(sample, bobOutput);
    expect(findInFiles([sample], canaries.slice(0, 3)).map((h) => h.needle)).toEqual(canaries.slice(0, 3));
  });

  it('no canary appears in the relay data directory while the messages are queued', () => {
    expect(filesWhileQueued).toBeGreaterThan(0);
    expect(whileQueued).toEqual([]);
  });

  it('no canary appears in any file of the running relay data directory after delivery', () => {
    const files = listFiles(w.dataDir);
    expect(files.length).toBeGreaterThan(0);
    expect(findInFiles(files, canaries)).toEqual([]);
  });

  it('no canary, username or passphrase appears in the relay log', () => {
    expect(existsSync(w.logFile)).toBe(true);
    expect(findInFiles([w.logFile], [...canaries, alice, bob, w.passphrase])).toEqual([]);
  });

  it('no canary appears in the data directory after a kill -9 (WAL left behind) either', async () => {
    await w.relay.kill9();
    expect(findInFiles(listFiles(w.dataDir), canaries)).toEqual([]);
    expect(findInFiles([w.logFile], [...canaries, alice, bob, w.passphrase])).toEqual([]);
  });

  it('passphrase-protected profiles hold neither message text nor the passphrase in the clear', () => {
    const files = [...listFiles(w.profile(alice)), ...listFiles(w.profile(bob))];
    expect(files.length).toBeGreaterThan(0);
    expect(findInFiles(files, [...canaries, w.passphrase])).toEqual([]);
  });
});
