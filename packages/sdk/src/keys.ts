/**
 * Account secrets and pre-keys: generation, refill and rotation.
 * Records are saved through the stores (pending until the caller commits) and
 * returned in the wire shape the relay expects.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { IdentityKeyPair, KEMKeyPair, KyberPreKeyRecord, PreKeyRecord, PrivateKey, SignedPreKeyRecord } from '@signalapp/libsignal-client';
import type { KeyUploadRequest, PreKey, SignedPreKey } from '@parley/wire';
import type { Db } from './db.js';
import type { Stores } from './stores.js';

export const PREKEY_BATCH = 100;
export const PREKEY_LOW_WATER = 10;
export const ROTATE_AFTER_MS = 2 * 24 * 3600 * 1000;
/** Replaced signed and last-resort keys stay this long, for pre-key messages still in flight. */
export const KEEP_OLD_KEYS_MS = 14 * 24 * 3600 * 1000;
const MAX_KEY_ID = 0xffffff;

export interface AccountSecrets {
  identity: IdentityKeyPair;
  registrationId: number;
  password: string;
}

export function newAccountSecrets(): AccountSecrets {
  return {
    identity: IdentityKeyPair.generate(),
    registrationId: randomInt(1, 16381),
    password: randomBytes(32).toString('base64url'),
  };
}

// ---------------------------------------------------------------- meta table

export function getMeta(db: Db, key: string): unknown {
  const row = db.prepare('SELECT value FROM meta WHERE key = ?').get([key]);
  if (!row) return undefined;
  const v = row.value;
  return v instanceof Uint8Array ? v : JSON.parse(String(v));
}
export function setMeta(db: Db, key: string, value: unknown): void {
  const stored = value instanceof Uint8Array ? new Uint8Array(value) : JSON.stringify(value);
  db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT DO UPDATE SET value = excluded.value').run([key, stored]);
}

/** Takes the next id of a counter kept in the meta table (1..0xffffff, wrapping). */
function nextIds(db: Db, counter: string, n: number): number[] {
  const start = Number(getMeta(db, counter) ?? 1);
  const ids: number[] = [];
  for (let i = 0; i < n; i++) ids.push(((start - 1 + i) % MAX_KEY_ID) + 1);
  setMeta(db, counter, ((start - 1 + n) % MAX_KEY_ID) + 1);
  return ids;
}

// ---------------------------------------------------------------- generation

export class KeyManager {
  constructor(
    private readonly db: Db,
    private readonly stores: Stores,
    private readonly identity: IdentityKeyPair,
    private readonly now: () => number = Date.now,
  ) {}

  private get priv(): PrivateKey {
    return this.identity.privateKey;
  }

  /** A new signed pre-key and Kyber last-resort key, made active. Caller commits. */
  async newSignedKeys(): Promise<{ signedPreKey: SignedPreKey; kyberLastResortKey: SignedPreKey }> {
    const now = this.now();
    const [spkId] = nextIds(this.db, 'nextSignedId', 1);
    const [lrId] = nextIds(this.db, 'nextKyberId', 1);
    if (spkId === undefined || lrId === undefined) throw new Error('unreachable');
    const ec = PrivateKey.generate();
    const spk = SignedPreKeyRecord.new(spkId, now, ec.getPublicKey(), ec, this.priv.sign(ec.getPublicKey().serialize()));
    await this.stores.signedPreKey.saveSignedPreKey(spkId, spk);
    const kem = KEMKeyPair.generate();
    const lr = KyberPreKeyRecord.new(lrId, now, kem, this.priv.sign(kem.getPublicKey().serialize()));
    this.stores.kyberPreKey.save(lrId, lr, true);
    setMeta(this.db, 'activeSignedId', spkId);
    setMeta(this.db, 'activeLastResortId', lrId);
    return {
      signedPreKey: { keyId: spkId, publicKey: spk.publicKey().serialize(), signature: spk.signature() },
      kyberLastResortKey: { keyId: lrId, publicKey: lr.publicKey().serialize(), signature: lr.signature() },
    };
  }

  /** One-time EC and Kyber keys. Caller commits. */
  async oneTimeKeys(ecCount: number, kyberCount: number): Promise<{ preKeys: PreKey[]; kyberPreKeys: SignedPreKey[] }> {
    const now = this.now();
    const preKeys: PreKey[] = [];
    for (const id of nextIds(this.db, 'nextPreKeyId', ecCount)) {
      const k = PrivateKey.generate();
      await this.stores.preKey.savePreKey(id, PreKeyRecord.new(id, k.getPublicKey(), k));
      preKeys.push({ keyId: id, publicKey: k.getPublicKey().serialize() });
    }
    const kyberPreKeys: SignedPreKey[] = [];
    for (const id of nextIds(this.db, 'nextKyberId', kyberCount)) {
      const kem = KEMKeyPair.generate();
      const rec = KyberPreKeyRecord.new(id, now, kem, this.priv.sign(kem.getPublicKey().serialize()));
      this.stores.kyberPreKey.save(id, rec, false);
      kyberPreKeys.push({ keyId: id, publicKey: rec.publicKey().serialize(), signature: rec.signature() });
    }
    return { preKeys, kyberPreKeys };
  }

  /** The upload that brings one-time keys back to a full batch, or null when both counts are fine. */
  async refill(counts: { ecCount: number; kyberCount: number }): Promise<KeyUploadRequest | null> {
    const ec = counts.ecCount < PREKEY_LOW_WATER ? PREKEY_BATCH - counts.ecCount : 0;
    const ky = counts.kyberCount < PREKEY_LOW_WATER ? PREKEY_BATCH - counts.kyberCount : 0;
    if (ec === 0 && ky === 0) return null;
    const { preKeys, kyberPreKeys } = await this.oneTimeKeys(ec, ky);
    return { preKeys, kyberPreKeys, signedPreKey: null, kyberLastResortKey: null };
  }

  /** Age of the active signed pre-key in ms, or Infinity when there is none. */
  signedKeyAge(): number {
    const id = getMeta(this.db, 'activeSignedId');
    if (typeof id !== 'number') return Infinity;
    const row = this.db.prepare('SELECT created_at FROM signed_prekeys WHERE id = ?').get([id]);
    return row ? this.now() - Number(row.created_at) : Infinity;
  }

  /** New signed and last-resort keys when the active ones are too old; null otherwise. */
  async rotateIfDue(): Promise<KeyUploadRequest | null> {
    if (this.signedKeyAge() < ROTATE_AFTER_MS) return null;
    const keys = await this.newSignedKeys();
    return { preKeys: [], kyberPreKeys: [], ...keys };
  }

  /** Deletes replaced signed and last-resort keys once they are old enough. Runs directly (no libsignal state involved). */
  pruneOldKeys(): void {
    const cutoff = this.now() - KEEP_OLD_KEYS_MS;
    const spk = getMeta(this.db, 'activeSignedId');
    const lr = getMeta(this.db, 'activeLastResortId');
    this.db.prepare('DELETE FROM signed_prekeys WHERE id != ? AND created_at < ?').run([Number(spk ?? -1), cutoff]);
    this.db.prepare('DELETE FROM kyber_prekeys WHERE last_resort = 1 AND id != ? AND created_at < ?').run([Number(lr ?? -1), cutoff]);
  }
}
