/**
 * The stores' two layers on a real SQLCipher profile: staged operations
 * (decrypted messages waiting for the group commit) survive a later
 * operation's rollback, are visible to reads, and are written (or lost)
 * together by the next commit, which reports the outcome.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { IdentityKeyPair } from '@signalapp/libsignal-client';
import { createProfile, type Profile } from '../src/db.js';
import { Stores } from '../src/stores.js';
import { tempDir } from './helpers.js';

const tmp = tempDir('parley-staging-');
const profiles: Profile[] = [];
afterEach(() => {
  for (const p of profiles.splice(0)) p.close();
});

async function setup(): Promise<{ stores: Stores; flushes: boolean[]; count: () => number }> {
  const profile = await createProfile(join(tmp.dir, `p${profiles.length}-${Date.now()}`), null);
  profiles.push(profile);
  const stores = new Stores(profile.db, { identityKeyPair: IdentityKeyPair.generate(), registrationId: 7 }, () => {});
  const flushes: boolean[] = [];
  stores.onFlush = (ok) => flushes.push(ok);
  profile.db.exec('CREATE TABLE t (k TEXT PRIMARY KEY)');
  const count = () => Number(profile.db.prepare('SELECT count(*) FROM t', { pluck: true }).get());
  return { stores, flushes, count };
}

/** One operation: a store write (visible to reads) plus a row written with it. */
function op(stores: Stores, key: string): () => void {
  stores.write(`x:${key}`, key, () => undefined);
  return () => stores.db.prepare('INSERT INTO t (k) VALUES (?)').run([key]);
}

describe('staged store writes', () => {
  it('a rolled-back operation leaves earlier staged ones intact, and one commit writes them all', async () => {
    const { stores, flushes, count } = await setup();
    stores.stage(op(stores, 'a'));
    stores.stage(op(stores, 'b'));
    op(stores, 'c');
    expect(stores.read('x:c', () => null)).toBe('c');
    stores.rollback(); // a failed decrypt
    expect(stores.stagedCount).toBe(2);
    expect(stores.read('x:a', () => null)).toBe('a');
    expect(stores.read('x:c', () => null)).toBeNull();
    expect(count()).toBe(0); // nothing is durable before the commit
    stores.commit();
    expect(count()).toBe(2);
    expect(stores.stagedCount).toBe(0);
    expect(flushes).toEqual([true]);
    expect(stores.read('x:a', () => null)).toBeNull(); // only in the database now (which this key never was)
  });

  it('a failed commit writes nothing, drops the staged operations and reports the loss', async () => {
    const { stores, flushes, count } = await setup();
    stores.stage(op(stores, 'a'));
    stores.stage(() => {
      throw new Error('disk full');
    });
    expect(() => stores.commit()).toThrow('disk full');
    expect(count()).toBe(0);
    expect(stores.stagedCount).toBe(0);
    expect(stores.read('x:a', () => null)).toBeNull();
    expect(flushes).toEqual([false]);
    // The stores work on afterwards.
    stores.stage(op(stores, 'b'));
    stores.commit();
    expect(count()).toBe(1);
    expect(flushes).toEqual([false, true]);
  });

  it('a commit of an unrelated operation also writes what was staged, in one transaction', async () => {
    const { stores, flushes, count } = await setup();
    stores.stage(op(stores, 'a'));
    const other = op(stores, 'send');
    stores.commit(other);
    expect(count()).toBe(2);
    expect(flushes).toEqual([true]);
    stores.commit(); // nothing staged: no report
    expect(flushes).toEqual([true]);
  });
});


describe('identity key check', () => {
  it('isKey matches the stored key (committed or pending) and nothing else', async () => {
    const { stores } = await setup();
    const alice = IdentityKeyPair.generate().publicKey;
    const other = IdentityKeyPair.generate().publicKey;
    expect(stores.identity.isKey('alice', alice)).toBe(false);
    stores.identity.recordKey('alice', alice.serialize());
    expect(stores.identity.isKey('alice', alice)).toBe(true); // pending write, not committed yet
    stores.commit();
    expect(stores.identity.isKey('alice', alice)).toBe(true);
    expect(stores.identity.isKey('alice', other)).toBe(false);
    expect(stores.identity.isKey('bob', alice)).toBe(false);
  });
});
