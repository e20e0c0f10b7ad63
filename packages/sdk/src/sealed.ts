/**
 * Sealed sender on the client: the profile key and the access keys derived
 * from it, the trust root pinned at registration, the cached sender
 * certificate, and the two libsignal steps around the normal session
 * encryption (seal an outgoing ciphertext, open an incoming sealed envelope).
 *
 * What is checked on receipt (docs/PROTOCOL.md, "Sealed sender"):
 * libsignal opens the outer layer (which binds the certificate's key to the
 * sender's static key), the certificate must chain to the pinned trust root
 * and be unexpired, and after the inner message decrypts under the session
 * the certificate's identity key must equal the identity key of that session
 * (client.ts checks the last one; libsignal's sealed decrypt does not).
 */
import { randomBytes } from 'node:crypto';
import {
  type CiphertextMessage,
  CiphertextMessageType,
  type IdentityKeyStore,
  type ProtocolAddress,
  PublicKey,
  SenderCertificate,
  UnidentifiedSenderMessageContent,
  sealedSenderDecryptToUsmc,
  sealedSenderEncrypt,
} from '@signalapp/libsignal-client';
import { ProfileKey } from '@signalapp/libsignal-client/dist/zkgroup/index.js';
import { type EnvelopeType, EnvelopeType as ET, PROFILE_KEY_BYTES, parseAccountId, parseDeviceId } from '@parley/wire';
import type { Db } from './db.js';
import { SdkError } from './errors.js';
import { getMeta, setMeta } from './keys.js';
import { ab } from './stores.js';

const META_PROFILE_KEY = 'profileKey';
const META_TRUST_ROOT = 'sealedTrustRoot';
const META_SENDER_CERT = 'senderCertificate';
const META_PUBLISHED_ACCESS_KEY = 'publishedAccessKey';

/** A cached sender certificate is replaced when it has less than this left. */
export const CERT_REFRESH_MARGIN_MS = 24 * 3600 * 1000;

/** Access key of a profile key: libsignal's derivation (AES-256-GCM of zeros under the profile key, first 16 bytes). */
export function deriveAccessKey(profileKey: Uint8Array): Uint8Array {
  return new Uint8Array(new ProfileKey(ab(profileKey)).deriveAccessKey());
}

/** This account's profile key, created (32 random bytes) when the profile has none yet. */
export function ensureProfileKey(db: Db): Uint8Array {
  const v = getMeta(db, META_PROFILE_KEY);
  if (v instanceof Uint8Array && v.length === PROFILE_KEY_BYTES) return v;
  const key = new Uint8Array(randomBytes(PROFILE_KEY_BYTES));
  setMeta(db, META_PROFILE_KEY, key);
  return key;
}

/** Use the account's existing profile key (a linked device gets it from the primary). */
export function adoptProfileKey(db: Db, key: Uint8Array): void {
  if (key.length !== PROFILE_KEY_BYTES) throw new RangeError('profile key: wrong length');
  setMeta(db, META_PROFILE_KEY, new Uint8Array(key));
}

/** True when the relay has been sent the access key of the current profile key. */
export function accessKeyPublished(db: Db, accessKey: Uint8Array): boolean {
  const v = getMeta(db, META_PUBLISHED_ACCESS_KEY);
  return v instanceof Uint8Array && Buffer.from(v).equals(Buffer.from(accessKey));
}
export function markAccessKeyPublished(db: Db, accessKey: Uint8Array): void {
  setMeta(db, META_PUBLISHED_ACCESS_KEY, accessKey);
}

/**
 * Pinned trust roots of open databases, so the receive path does not read and
 * parse the row for every sealed envelope. Only `pinTrustRoot` writes that
 * row, and the profile lock keeps other processes out, so this cannot go stale.
 */
const pinnedRoots = new WeakMap<Db, PublicKey>();

/** The pinned trust root, or null when none is pinned yet. */
export function pinnedTrustRoot(db: Db): PublicKey | null {
  const known = pinnedRoots.get(db);
  if (known) return known;
  const v = getMeta(db, META_TRUST_ROOT);
  if (!(v instanceof Uint8Array)) return null;
  const root = PublicKey.deserialize(ab(v));
  pinnedRoots.set(db, root);
  return root;
}

/**
 * Pin the relay's trust root (first time), or check it against the pinned one.
 * @throws SdkError UNTRUSTED_RELAY when a different root is already pinned.
 */
export function pinTrustRoot(db: Db, key: Uint8Array): void {
  let parsed: PublicKey;
  try {
    parsed = PublicKey.deserialize(ab(key));
  } catch (err) {
    throw new SdkError('RELAY_ERROR', 'the relay sent an invalid trust root', { cause: err });
  }
  const pinned = pinnedTrustRoot(db);
  if (pinned === null) {
    setMeta(db, META_TRUST_ROOT, parsed.serialize());
    pinnedRoots.set(db, parsed);
  } else if (!pinned.equals(parsed))
    throw new SdkError('UNTRUSTED_RELAY', 'the relay presents a different sealed-sender trust root than the pinned one');
}

/** A contact's access key, when their profile key is known and the relay has not rejected it. */
export function contactAccessKey(db: Db, account: string): Uint8Array | null {
  const row = db.prepare('SELECT profile_key FROM profile_keys WHERE account = ? AND usable = 1').get([account]);
  return row && row.profile_key instanceof Uint8Array ? deriveAccessKey(row.profile_key) : null;
}

/** Remember a contact's profile key (from one of their E2EE messages). */
export function storeContactProfileKey(db: Db, account: string, profileKey: Uint8Array): void {
  db.prepare(
    `INSERT INTO profile_keys (account, profile_key, usable, updated_at) VALUES (?, ?, 1, ?)
     ON CONFLICT DO UPDATE SET usable = CASE WHEN profile_key = excluded.profile_key THEN usable ELSE 1 END,
       profile_key = excluded.profile_key, updated_at = excluded.updated_at`,
  ).run([account, ab(profileKey), Date.now()]);
}

/** The relay refused the access key: send identified until the contact shares a new profile key. */
export function markAccessKeyRejected(db: Db, account: string): void {
  db.prepare('UPDATE profile_keys SET usable = 0, updated_at = ? WHERE account = ?').run([Date.now(), account]);
}

/**
 * Sender certificates whose signatures were already verified against a trust
 * root. Every sealed message from a device carries the same certificate until
 * it is renewed (about daily), so a burst would otherwise verify the same two
 * signatures (server certificate by the root, sender certificate by the server
 * key) once per message. A certificate is remembered by its exact serialized
 * bytes, signatures included, and only after libsignal accepted it; a
 * remembered one is still checked for expiry each time, as `validate` does.
 * Anything not remembered, or checked against another root, goes to libsignal.
 */
export class CertificateChecks {
  private root: PublicKey | null = null;
  /** Serialized certificate -> its expiration (ms). */
  private readonly passed = new Map<string, number>();

  constructor(private readonly limit = 256) {}

  /** Same answer as `cert.validate(root, time)`. */
  validate(cert: SenderCertificate, root: PublicKey, time: number): boolean {
    if (this.root === null || !this.root.equals(root)) {
      this.passed.clear();
      this.root = root;
    }
    const key = Buffer.from(cert.serialize()).toString('latin1');
    const expires = this.passed.get(key);
    if (expires !== undefined) return time <= expires;
    if (!cert.validate(root, time)) return false;
    if (this.passed.size >= this.limit) this.passed.clear();
    this.passed.set(key, cert.expiration());
    return true;
  }
}

/** The cached sender certificate, if it chains to `root`, is ours and has more than the refresh margin left. */
export function cachedSenderCertificate(
  db: Db,
  root: PublicKey,
  now: number,
  me: { account: string; device: number },
  checks?: CertificateChecks,
): SenderCertificate | null {
  const v = getMeta(db, META_SENDER_CERT);
  if (!(v instanceof Uint8Array)) return null;
  try {
    const cert = SenderCertificate.deserialize(ab(v));
    return isOwnCertificate(cert, root, now + CERT_REFRESH_MARGIN_MS, me, checks) ? cert : null;
  } catch {
    return null;
  }
}
export function saveSenderCertificate(db: Db, cert: SenderCertificate): void {
  setMeta(db, META_SENDER_CERT, cert.serialize());
}

/** A certificate issued to this device that chains to the pinned root and is valid at `time`. */
export function isOwnCertificate(
  cert: SenderCertificate,
  root: PublicKey,
  time: number,
  me: { account: string; device: number },
  checks?: CertificateChecks,
): boolean {
  const valid = checks ? checks.validate(cert, root, time) : cert.validate(root, time);
  return valid && cert.senderUuid() === me.account && cert.senderDeviceId() === me.device;
}

/** Wrap one session ciphertext for `address` in a sealed-sender envelope (v1). */
export async function seal(
  ct: CiphertextMessage,
  cert: SenderCertificate,
  address: ProtocolAddress,
  identityStore: IdentityKeyStore,
): Promise<Uint8Array> {
  const usmc = UnidentifiedSenderMessageContent.new(ct, cert, 0, null);
  return sealedSenderEncrypt(usmc, address, identityStore);
}

export type OpenedSealed =
  | {
      kind: 'opened';
      sender: { account: string; device: number };
      /** The identity key the certificate binds to the sender; must equal the session's. */
      certificateKey: PublicKey;
      /** Envelope type of the inner message. */
      type: EnvelopeType;
      content: Uint8Array;
    }
  | {
      /** The inner message is a sender-key (group) message; groups.ts decrypts it. */
      kind: 'group';
      sender: { account: string; device: number };
      certificateKey: PublicKey;
      content: Uint8Array;
      /** The group id the sender put in the sealed layer, if any. */
      groupId: Uint8Array | null;
    }
  | { kind: 'rejected'; reason: 'malformed' | 'untrusted' | 'expired' | 'self' | 'unsupported' };

/**
 * Open the outer layer of a sealed envelope and check its certificate
 * against the pinned trust root at `now`. The inner message is not decrypted.
 */
export async function openSealed(
  content: Uint8Array,
  identityStore: IdentityKeyStore,
  root: PublicKey,
  now: number,
  me: { account: string; device: number },
  checks?: CertificateChecks,
): Promise<OpenedSealed> {
  let usmc: UnidentifiedSenderMessageContent;
  try {
    usmc = await sealedSenderDecryptToUsmc(ab(content), identityStore);
  } catch {
    return { kind: 'rejected', reason: 'malformed' };
  }
  const cert = usmc.senderCertificate();
  if (cert.expiration() <= now) return { kind: 'rejected', reason: 'expired' };
  if (!(checks ? checks.validate(cert, root, now) : cert.validate(root, now))) return { kind: 'rejected', reason: 'untrusted' };
  let sender: { account: string; device: number };
  try {
    sender = { account: parseAccountId(cert.senderUuid()), device: parseDeviceId(cert.senderDeviceId()) };
  } catch {
    return { kind: 'rejected', reason: 'malformed' };
  }
  if (sender.account === me.account && sender.device === me.device) return { kind: 'rejected', reason: 'self' };
  const t = usmc.msgType();
  if (t === (CiphertextMessageType.SenderKey as number))
    return { kind: 'group', sender, certificateKey: cert.key(), content: usmc.contents(), groupId: usmc.groupId() };
  const type: EnvelopeType | null =
    t === (CiphertextMessageType.Whisper as number)
      ? ET.Ciphertext
      : t === (CiphertextMessageType.PreKey as number)
        ? ET.PreKeyMessage
        : null;
  if (type === null) return { kind: 'rejected', reason: 'unsupported' };
  return { kind: 'opened', sender, certificateKey: cert.key(), type, content: usmc.contents() };
}
