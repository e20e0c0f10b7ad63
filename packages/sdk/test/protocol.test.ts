/**
 * libsignal through the SDK's stores, in-process: two store sets doing PQXDH
 * and the Double Ratchet, commit atomicity, Kyber replay, trust rules.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  CiphertextMessageType,
  Direction,
  ErrorCode,
  IdentityChange,
  IdentityKeyPair,
  LibSignalErrorBase,
  PreKeyBundle,
  PreKeySignalMessage,
  ProtocolAddress,
  SignalMessage,
  processPreKeyBundle,
  signalDecrypt,
  signalDecryptPreKey,
  signalEncrypt,
} from '@signalapp/libsignal-client';
import { createProfile, type Profile } from '../src/db.js';
import { KeyManager, newAccountSecrets } from '../src/keys.js';
import { IdentityStatus, Stores, ab } from '../src/stores.js';
import { checkSafetyNumber, safetyNumber } from '../src/trust.js';
import { SdkError } from '../src/index.js';
import { tempDir } from './helpers.js';

const cleanups: Array<() => void> = [];
afterEach(() => cleanups.splice(0).forEach((f) => f()));

interface Party {
  profile: Profile;
  stores: Stores;
  keys: KeyManager;
  identity: IdentityKeyPair;
  registrationId: number;
  address: ProtocolAddress;
  accountId: string;
  changes: string[];
}

let counter = 0;
async function party(): Promise<Party> {
  const t = tempDir();
  const profile = await createProfile(join(t.dir, 'p'), null);
  cleanups.push(() => {
    profile.close();
    t.cleanup();
  });
  const secrets = newAccountSecrets();
  const changes: string[] = [];
  const stores = new Stores(profile.db, { identityKeyPair: secrets.identity, registrationId: secrets.registrationId }, (a) => changes.push(a));
  const keys = new KeyManager(profile.db, stores, secrets.identity);
  counter++;
  const accountId = `00000000-0000-4000-8000-${counter.toString(16).padStart(12, '0')}`;
  return { profile, stores, keys, identity: secrets.identity, registrationId: secrets.registrationId, address: ProtocolAddress.new(accountId, 1), accountId, changes };
}

/** Bob's bundle as the relay would serve it; `oneTime` false serves the last-resort Kyber key and no EC one-time key. */
async function bundleOf(bob: Party, oneTime: boolean): Promise<{ bundle: PreKeyBundle; kyberId: number; signedId: number }> {
  const signed = await bob.keys.newSignedKeys();
  const ot = await bob.keys.oneTimeKeys(1, 1);
  bob.stores.commit();
  const pk = ot.preKeys[0];
  const ky = oneTime ? ot.kyberPreKeys[0] : signed.kyberLastResortKey;
  if (!pk || !ky) throw new Error('no keys');
  const { PublicKey, KEMPublicKey } = await import('@signalapp/libsignal-client');
  const bundle = PreKeyBundle.new(
    bob.registrationId,
    1,
    oneTime ? pk.keyId : null,
    oneTime ? PublicKey.deserialize(ab(pk.publicKey)) : null,
    signed.signedPreKey.keyId,
    PublicKey.deserialize(ab(signed.signedPreKey.publicKey)),
    ab(signed.signedPreKey.signature),
    bob.identity.publicKey,
    ky.keyId,
    KEMPublicKey.deserialize(ab(ky.publicKey)),
    ab(ky.signature),
  );
  return { bundle, kyberId: ky.keyId, signedId: signed.signedPreKey.keyId };
}

async function encrypt(from: Party, to: Party, text: string) {
  const ct = await signalEncrypt(ab(Buffer.from(text)), to.address, from.address, from.stores.session, from.stores.identity);
  from.stores.commit();
  return ct;
}

async function decrypt(me: Party, from: Party, type: number, bytes: Uint8Array): Promise<string> {
  const s = me.stores;
  const out =
    type === (CiphertextMessageType.PreKey as number)
      ? await signalDecryptPreKey(PreKeySignalMessage.deserialize(ab(bytes)), from.address, me.address, s.session, s.identity, s.preKey, s.signedPreKey, s.kyberPreKey)
      : await signalDecrypt(SignalMessage.deserialize(ab(bytes)), from.address, me.address, s.session, s.identity);
  return Buffer.from(out).toString();
}

function signalCode(err: unknown): number | undefined {
  return err instanceof LibSignalErrorBase ? err.code : undefined;
}

describe('PQXDH and Double Ratchet through the SQL stores', () => {
  it('sets up a session from a bundle and ratchets both ways', async () => {
    const alice = await party();
    const bob = await party();
    const { bundle } = await bundleOf(bob, true);
    await processPreKeyBundle(bundle, bob.address, alice.address, alice.stores.session, alice.stores.identity);
    alice.stores.commit();

    const m1 = await encrypt(alice, bob, 'first');
    expect(m1.type()).toBe(CiphertextMessageType.PreKey);
    expect(await decrypt(bob, alice, m1.type(), m1.serialize())).toBe('first');
    bob.stores.commit();
    // The one-time keys are gone after use.
    expect(bob.profile.db.prepare('SELECT count(*) FROM prekeys', { pluck: true }).get()).toBe(0);
    expect(bob.profile.db.prepare('SELECT count(*) FROM kyber_prekeys WHERE last_resort = 0', { pluck: true }).get()).toBe(0);

    const r1 = await encrypt(bob, alice, 'reply');
    expect(r1.type()).toBe(CiphertextMessageType.Whisper);
    expect(await decrypt(alice, bob, r1.type(), r1.serialize())).toBe('reply');
    alice.stores.commit();
    for (let i = 0; i < 3; i++) {
      const m = await encrypt(alice, bob, `n${i}`);
      expect(await decrypt(bob, alice, m.type(), m.serialize())).toBe(`n${i}`);
      bob.stores.commit();
    }
  });

  it('commits ratchet state and message together: a crash before commit leaves the message decryptable, a commit makes it a duplicate', async () => {
    const alice = await party();
    const bob = await party();
    const { bundle } = await bundleOf(bob, true);
    await processPreKeyBundle(bundle, bob.address, alice.address, alice.stores.session, alice.stores.identity);
    alice.stores.commit();
    const m = await encrypt(alice, bob, 'exactly once');
    const db = bob.profile.db;
    db.exec('CREATE TABLE inbox (body TEXT) STRICT');

    // Decrypt, then "crash" inside the commit, before it finishes.
    const plain = await decrypt(bob, alice, m.type(), m.serialize());
    expect(() =>
      bob.stores.commit(() => {
        db.prepare('INSERT INTO inbox (body) VALUES (?)').run([plain]);
        throw new Error('simulated crash');
      }),
    ).toThrow('simulated crash');
    expect(db.prepare('SELECT count(*) FROM inbox', { pluck: true }).get()).toBe(0);
    expect(db.prepare('SELECT count(*) FROM sessions', { pluck: true }).get()).toBe(0);
    expect(bob.stores.dirty).toBe(false);

    // Redelivery decrypts fine (the one-time keys are still there) and commits once.
    const again = await decrypt(bob, alice, m.type(), m.serialize());
    expect(again).toBe('exactly once');
    bob.stores.commit(() => db.prepare('INSERT INTO inbox (body) VALUES (?)').run([again]));
    expect(db.prepare('SELECT count(*) FROM inbox', { pluck: true }).get()).toBe(1);

    // A third delivery is refused by the ratchet: no duplicate.
    const err = await decrypt(bob, alice, m.type(), m.serialize()).catch((e: unknown) => e);
    bob.stores.rollback();
    expect(err).toBeInstanceOf(Error);
    expect(db.prepare('SELECT count(*) FROM inbox', { pluck: true }).get()).toBe(1);
  });

  it('refuses a replayed pre-key message that used the last-resort Kyber key', async () => {
    const alice = await party();
    const bob = await party();
    const { bundle } = await bundleOf(bob, false);
    await processPreKeyBundle(bundle, bob.address, alice.address, alice.stores.session, alice.stores.identity);
    alice.stores.commit();
    const m = await encrypt(alice, bob, 'once');
    expect(await decrypt(bob, alice, m.type(), m.serialize())).toBe('once');
    bob.stores.commit();
    // The last-resort key survives its use.
    expect(bob.profile.db.prepare('SELECT count(*) FROM kyber_prekeys WHERE last_resort = 1', { pluck: true }).get()).toBe(1);
    // An attacker replays it after Bob's session is gone: the Kyber triple was already used.
    bob.stores.session.delete(alice.accountId, 1);
    bob.stores.commit();
    await expect(decrypt(bob, alice, m.type(), m.serialize())).rejects.toThrow();
    bob.stores.rollback();
    expect(bob.profile.db.prepare('SELECT count(*) FROM sessions', { pluck: true }).get()).toBe(0);
  });

  it('deletes one-time Kyber keys when used and refuses reusing a last-resort triple', async () => {
    const bob = await party();
    const signed = await bob.keys.newSignedKeys();
    const ot = await bob.keys.oneTimeKeys(0, 1);
    bob.stores.commit();
    const base = IdentityKeyPair.generate().publicKey;
    const oneTime = ot.kyberPreKeys[0];
    if (!oneTime) throw new Error('no key');
    await bob.stores.kyberPreKey.markKyberPreKeyUsed(oneTime.keyId, signed.signedPreKey.keyId, base);
    bob.stores.commit();
    await expect(bob.stores.kyberPreKey.getKyberPreKey(oneTime.keyId)).rejects.toThrow();

    const lr = signed.kyberLastResortKey.keyId;
    await bob.stores.kyberPreKey.markKyberPreKeyUsed(lr, signed.signedPreKey.keyId, base);
    bob.stores.commit();
    await expect(bob.stores.kyberPreKey.markKyberPreKeyUsed(lr, signed.signedPreKey.keyId, base)).rejects.toThrow();
    // Another base key is fine.
    await bob.stores.kyberPreKey.markKyberPreKeyUsed(lr, signed.signedPreKey.keyId, IdentityKeyPair.generate().publicKey);
    bob.stores.commit();
  });

  it('pre-key getters throw when the key is missing', async () => {
    const p = await party();
    await expect(p.stores.preKey.getPreKey(12345)).rejects.toThrow();
    await expect(p.stores.signedPreKey.getSignedPreKey(12345)).rejects.toThrow();
    await expect(p.stores.kyberPreKey.getKyberPreKey(12345)).rejects.toThrow();
  });
});

describe('trust', () => {
  it('trusts on first use, reports changes, and blocks sending to a verified contact whose key changed', async () => {
    const me = await party();
    const them = ProtocolAddress.new('00000000-0000-4000-8000-0000000000ff', 1);
    const k1 = IdentityKeyPair.generate().publicKey;
    const k2 = IdentityKeyPair.generate().publicKey;
    const k3 = IdentityKeyPair.generate().publicKey;
    const id = me.stores.identity;

    expect(await id.isTrustedIdentity(them, k1, Direction.Sending)).toBe(true);
    expect(await id.saveIdentity(them, k1)).toBe(IdentityChange.NewOrUnchanged);
    me.stores.commit();
    expect(await id.saveIdentity(them, k1)).toBe(IdentityChange.NewOrUnchanged);
    // Unverified contact: a new key is accepted but reported.
    expect(await id.isTrustedIdentity(them, k2, Direction.Sending)).toBe(true);
    expect(await id.saveIdentity(them, k2)).toBe(IdentityChange.ReplacedExisting);
    expect(me.changes).toEqual([]); // events wait for the commit
    me.stores.commit();
    expect(me.changes).toEqual([them.name()]);

    // Verified contact: a different key is not trusted for sending, before or after it is saved.
    id.setRow(them.name(), { key: k2.serialize(), status: IdentityStatus.Verified });
    me.stores.commit();
    expect(await id.isTrustedIdentity(them, k2, Direction.Sending)).toBe(true);
    expect(await id.isTrustedIdentity(them, k3, Direction.Sending)).toBe(false);
    expect(await id.isTrustedIdentity(them, k3, Direction.Receiving)).toBe(true);
    expect(await id.saveIdentity(them, k3)).toBe(IdentityChange.ReplacedExisting);
    me.stores.commit();
    expect(id.row(them.name())?.status).toBe(IdentityStatus.Unverified);
    expect(await id.isTrustedIdentity(them, k3, Direction.Sending)).toBe(false);
    expect(me.changes).toHaveLength(2);

    // Re-verifying unblocks.
    id.setRow(them.name(), { key: k3.serialize(), status: IdentityStatus.Verified });
    me.stores.commit();
    expect(await id.isTrustedIdentity(them, k3, Direction.Sending)).toBe(true);
  });

  it('libsignal refuses to encrypt to a verified contact whose key changed', async () => {
    const alice = await party();
    const bob = await party();
    const { bundle } = await bundleOf(bob, true);
    await processPreKeyBundle(bundle, bob.address, alice.address, alice.stores.session, alice.stores.identity);
    alice.stores.commit();
    alice.stores.identity.setRow(bob.accountId, { key: bob.identity.publicKey.serialize(), status: IdentityStatus.Verified });
    alice.stores.commit();
    await encrypt(alice, bob, 'fine');
    // The key changes (as if learned from a new pre-key message).
    await alice.stores.identity.saveIdentity(bob.address, IdentityKeyPair.generate().publicKey);
    alice.stores.commit();
    const err = await encrypt(alice, bob, 'blocked').catch((e: unknown) => e);
    alice.stores.rollback();
    expect(signalCode(err)).toBe(ErrorCode.UntrustedIdentity);
  });

  it('safety numbers are 60 digits and equal on both sides', () => {
    const a = { accountId: '00000000-0000-4000-8000-00000000000a', identityKey: IdentityKeyPair.generate().publicKey.serialize() };
    const b = { accountId: '00000000-0000-4000-8000-00000000000b', identityKey: IdentityKeyPair.generate().publicKey.serialize() };
    const ab_ = safetyNumber(a, b);
    expect(ab_).toMatch(/^[0-9]{60}$/);
    expect(safetyNumber(b, a)).toBe(ab_);
    const spaced = ab_.replace(/(.{5})/g, '$1 ');
    expect(() => checkSafetyNumber(ab_, spaced)).not.toThrow();
    const wrong = (ab_[0] === '0' ? '1' : '0') + ab_.slice(1);
    expect(() => checkSafetyNumber(ab_, wrong)).toThrow(SdkError);
    const c = { ...b, identityKey: IdentityKeyPair.generate().publicKey.serialize() };
    expect(safetyNumber(a, c)).not.toBe(ab_);
  });
});
