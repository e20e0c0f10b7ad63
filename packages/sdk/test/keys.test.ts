import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createProfile } from '../src/db.js';
import { KEEP_OLD_KEYS_MS, KeyManager, ROTATE_AFTER_MS, getMeta, newAccountSecrets } from '../src/keys.js';
import { Stores } from '../src/stores.js';
import { tempDir } from './helpers.js';

const cleanups: Array<() => void> = [];
afterEach(() => cleanups.splice(0).forEach((f) => f()));

async function setup() {
  const t = tempDir();
  const profile = await createProfile(join(t.dir, 'p'), null);
  cleanups.push(() => {
    profile.close();
    t.cleanup();
  });
  const secrets = newAccountSecrets();
  let now = 1_700_000_000_000;
  const clock = () => now;
  const stores = new Stores(profile.db, { identityKeyPair: secrets.identity, registrationId: secrets.registrationId }, () => {}, clock);
  const keys = new KeyManager(profile.db, stores, secrets.identity, clock);
  return { db: profile.db, stores, keys, secrets, advance: (ms: number) => (now += ms) };
}

describe('account keys', () => {
  it('makes valid account secrets', () => {
    const s = newAccountSecrets();
    expect(s.registrationId).toBeGreaterThanOrEqual(1);
    expect(s.registrationId).toBeLessThanOrEqual(16380);
    expect(s.password).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it('signs the signed pre-key and last-resort key with the identity key', async () => {
    const { keys, stores, secrets } = await setup();
    const k = await keys.newSignedKeys();
    stores.commit();
    const pub = secrets.identity.publicKey;
    expect(pub.verify(new Uint8Array(k.signedPreKey.publicKey), new Uint8Array(k.signedPreKey.signature))).toBe(true);
    expect(pub.verify(new Uint8Array(k.kyberLastResortKey.publicKey), new Uint8Array(k.kyberLastResortKey.signature))).toBe(true);
  });

  it('refills one-time keys to a full batch only when a count is low', async () => {
    const { keys, stores, db } = await setup();
    expect(await keys.refill({ ecCount: 50, kyberCount: 10 })).toBeNull();
    const up = await keys.refill({ ecCount: 3, kyberCount: 40 });
    stores.commit();
    expect(up?.preKeys).toHaveLength(97);
    expect(up?.kyberPreKeys).toHaveLength(0);
    expect(db.prepare('SELECT count(*) FROM prekeys', { pluck: true }).get()).toBe(97);
    const ids = new Set(up?.preKeys.map((p) => p.keyId));
    expect(ids.size).toBe(97);
  });

  it('rotates signed keys after two days and keeps the old ones for a while', async () => {
    const { keys, stores, db, advance } = await setup();
    const first = await keys.newSignedKeys();
    stores.commit();
    expect(await keys.rotateIfDue()).toBeNull();
    advance(ROTATE_AFTER_MS + 1);
    const rotated = await keys.rotateIfDue();
    stores.commit();
    expect(rotated?.signedPreKey?.keyId).not.toBe(first.signedPreKey.keyId);
    expect(getMeta(db, 'activeSignedId')).toBe(rotated?.signedPreKey?.keyId);
    keys.pruneOldKeys();
    // The replaced key still decrypts in-flight pre-key messages...
    await expect(stores.signedPreKey.getSignedPreKey(first.signedPreKey.keyId)).resolves.toBeDefined();
    await expect(stores.kyberPreKey.getKyberPreKey(first.kyberLastResortKey.keyId)).resolves.toBeDefined();
    // ...until it is old enough to go.
    advance(KEEP_OLD_KEYS_MS);
    keys.pruneOldKeys();
    await expect(stores.signedPreKey.getSignedPreKey(first.signedPreKey.keyId)).rejects.toThrow();
    await expect(stores.kyberPreKey.getKyberPreKey(first.kyberLastResortKey.keyId)).rejects.toThrow();
    await expect(stores.signedPreKey.getSignedPreKey(rotated?.signedPreKey?.keyId ?? -1)).resolves.toBeDefined();
  });
});
