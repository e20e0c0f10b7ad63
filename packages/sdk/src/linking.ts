/**
 * Linking a new device to an existing account.
 *
 * 1. The new device opens the relay's provisioning socket, gets a random
 *    address, makes an ephemeral EC key pair and shows both as a link
 *    (`parley://link?address=…&key=…`, also as a QR code).
 * 2. The primary fetches a single-use provisioning code and encrypts a
 *    ProvisionMessage (account id, account identity key pair, profile key,
 *    code, history-archive key) to the ephemeral public key: ECDH with a fresh
 *    key pair of its own (libsignal), HKDF-SHA256, AES-256-GCM (Node). The
 *    relay forwards the envelope without being able to read it.
 * 3. The new device decrypts it, makes its own password, registration id,
 *    signed pre-key and Kyber last-resort key (signed with the account
 *    identity key) and registers with `POST /v1/devices/link`.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { IdentityKeyPair, PrivateKey, PublicKey } from '@signalapp/libsignal-client';
import {
  type ProvisionEnvelope,
  type ProvisionMessage,
  WireError,
  decodeFrame,
  encodeLinkDeviceRequest,
  processLinkDeviceResponse,
  processProvisionEnvelope,
  processProvisionMessage,
  processProvisioningAddress,
} from '@parley/wire';
import { WebSocket } from 'ws';
import { createProfile, removeProfileFiles } from './db.js';
import { SdkError } from './errors.js';
import { KeyManager, newAccountSecrets, setMeta } from './keys.js';
import { adoptProfileKey } from './sealed.js';
import { Stores, ab } from './stores.js';
import { HttpTransport, expectOk, replyJson } from './transport.js';

const LINK_PREFIX = 'parley://link?';
const HKDF_INFO = 'Parley provisioning v1';
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

/** What a link carries: where the new device waits and the key to encrypt to. */
export interface LinkInfo {
  address: string;
  publicKey: Uint8Array;
}

export function formatLink(info: LinkInfo): string {
  const params = new URLSearchParams({ address: info.address, key: Buffer.from(info.publicKey).toString('base64url') });
  return LINK_PREFIX + params.toString();
}

/** @throws SdkError INVALID_INPUT when the text is not a Parley device link. */
export function parseLink(text: string): LinkInfo {
  const t = text.trim();
  if (!t.startsWith(LINK_PREFIX) || t.length > 256) throw new SdkError('INVALID_INPUT', 'not a Parley device link');
  const params = new URLSearchParams(t.slice(LINK_PREFIX.length));
  const address = params.get('address') ?? '';
  const key = params.get('key') ?? '';
  if (!/^[A-Za-z0-9_-]{22}$/.test(address) || !/^[A-Za-z0-9_-]{44}$/.test(key)) throw new SdkError('INVALID_INPUT', 'not a Parley device link');
  const publicKey = new Uint8Array(Buffer.from(key, 'base64url'));
  try {
    PublicKey.deserialize(ab(publicKey));
  } catch (err) {
    throw new SdkError('INVALID_INPUT', 'the device link has an invalid key', { cause: err });
  }
  return { address, publicKey };
}

function envelopeKey(shared: Uint8Array, ephemeral: Uint8Array, recipient: Uint8Array): Buffer {
  // Both public keys go into the salt, so the key is bound to this exchange.
  const salt = Buffer.concat([ephemeral, recipient]);
  return Buffer.from(hkdfSync('sha256', shared, salt, HKDF_INFO, 32));
}

/** Encrypt a serialized ProvisionMessage to the new device's ephemeral public key. */
export function sealProvision(recipient: Uint8Array, plaintext: Uint8Array): ProvisionEnvelope {
  const theirs = PublicKey.deserialize(ab(recipient));
  const ours = PrivateKey.generate();
  const ephemeral = ours.getPublicKey().serialize();
  const key = envelopeKey(ours.agree(theirs), ephemeral, recipient);
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(ephemeral);
  const body = Buffer.concat([nonce, cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  return { publicKey: ephemeral, body: new Uint8Array(body) };
}

/** @throws SdkError LINK_FAILED when the envelope does not decrypt with our key. */
export function openProvision(ours: PrivateKey, env: ProvisionEnvelope): Uint8Array {
  try {
    const recipient = ours.getPublicKey().serialize();
    const key = envelopeKey(ours.agree(PublicKey.deserialize(ab(env.publicKey))), env.publicKey, recipient);
    const nonce = env.body.subarray(0, NONCE_BYTES);
    const tag = env.body.subarray(env.body.length - TAG_BYTES);
    const decipher = createDecipheriv('aes-256-gcm', key, nonce);
    decipher.setAAD(env.publicKey);
    decipher.setAuthTag(tag);
    return new Uint8Array(Buffer.concat([decipher.update(env.body.subarray(NONCE_BYTES, env.body.length - TAG_BYTES)), decipher.final()]));
  } catch (err) {
    throw new SdkError('LINK_FAILED', 'the provisioning message did not decrypt', { cause: err });
  }
}

/** A new device waiting to be linked. */
export interface PendingLink {
  /** Show this (text and QR code) to the primary device. */
  link: string;
  /** Resolves with the decrypted provisioning message; rejects on timeout or a closed socket. */
  message: Promise<ProvisionMessage>;
  cancel(): void;
}

/**
 * Open a provisioning socket on the relay and wait for the primary's message.
 * @throws SdkError RELAY_UNREACHABLE when the socket cannot be opened.
 */
export async function startLinking(serverUrl: string, timeoutMs = 10 * 60 * 1000): Promise<PendingLink> {
  const u = new URL('/v1/provisioning', serverUrl);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  const secret = PrivateKey.generate();
  const ws = new WebSocket(u.toString(), { maxPayload: 8192, handshakeTimeout: 10_000 });
  ws.binaryType = 'nodebuffer';
  let onAddress: (a: string) => void = () => undefined;
  let onMessage: (m: ProvisionMessage) => void = () => undefined;
  let fail: (e: Error) => void = () => undefined;
  const address = new Promise<string>((resolve, reject) => {
    onAddress = resolve;
    fail = reject;
  });
  let failMessage: (e: Error) => void = () => undefined;
  const message = new Promise<ProvisionMessage>((resolve, reject) => {
    onMessage = resolve;
    failMessage = reject;
  });
  // Without a listener an early failure would be an unhandled rejection.
  message.catch(() => undefined);
  let done = false;
  const timer = setTimeout(() => {
    failMessage(new SdkError('LINK_FAILED', 'no provisioning message arrived in time'));
    ws.terminate();
  }, timeoutMs);
  timer.unref();
  ws.on('message', (data: Buffer) => {
    try {
      const f = decodeFrame(new Uint8Array(data));
      if (f.kind !== 'request') return;
      if (f.path === '/v1/address') onAddress(processProvisioningAddress(JSON.parse(Buffer.from(f.body).toString('utf8'))).address);
      else if (f.path === '/v1/message') {
        const m = processProvisionMessage(openProvision(secret, processProvisionEnvelope(f.body)));
        done = true;
        clearTimeout(timer);
        onMessage(m);
      }
    } catch (err) {
      const e = err instanceof SdkError ? err : new SdkError('LINK_FAILED', 'the relay sent a malformed provisioning frame', { cause: err });
      fail(e);
      failMessage(e);
      ws.terminate();
    }
  });
  ws.on('error', (err) => {
    const e = new SdkError('RELAY_UNREACHABLE', 'cannot open the provisioning socket', { cause: err });
    fail(e);
    failMessage(e);
  });
  ws.on('close', () => {
    clearTimeout(timer);
    const e = new SdkError('LINK_FAILED', 'the provisioning socket closed before a message arrived');
    fail(e);
    if (!done) failMessage(e);
  });
  const addr = await address;
  return {
    link: formatLink({ address: addr, publicKey: secret.getPublicKey().serialize() }),
    message,
    cancel: () => {
      clearTimeout(timer);
      ws.close();
    },
  };
}

/**
 * Register this device with the account named in `message` and create its
 * profile in `profileDir`. Returns the device id. The caller opens the profile
 * with `ParleyClient.open` (connecting uploads the one-time keys).
 * @throws SdkError PROFILE_EXISTS, LINK_FAILED (code refused, keys refused, too many devices)
 */
export async function registerLinkedDevice(opts: {
  profileDir: string;
  passphrase: string | null;
  serverUrl: string;
  message: ProvisionMessage;
}): Promise<{ deviceId: number; archive: ProvisionMessage['archive'] }> {
  const m = opts.message;
  let identity: IdentityKeyPair;
  try {
    identity = new IdentityKeyPair(PublicKey.deserialize(ab(m.identityKeyPublic)), PrivateKey.deserialize(ab(m.identityKeyPrivate)));
    if (!identity.privateKey.getPublicKey().equals(identity.publicKey)) throw new Error('key pair mismatch');
  } catch (err) {
    throw new SdkError('LINK_FAILED', 'the provisioning message has an invalid identity key pair', { cause: err });
  }
  const profile = await createProfile(opts.profileDir, opts.passphrase);
  try {
    const db = profile.db;
    const secrets = newAccountSecrets();
    const stores = new Stores(db, { identityKeyPair: identity, registrationId: secrets.registrationId }, () => {});
    const km = new KeyManager(db, stores, identity);
    const signed = await km.newSignedKeys();
    stores.commit(() => {
      setMeta(db, 'identityKeyPair', identity.serialize());
      adoptProfileKey(db, m.profileKey);
    });
    const http = new HttpTransport(opts.serverUrl, null);
    const reply = await http.request('POST', '/v1/devices/link', {
      json: encodeLinkDeviceRequest({
        provisioningCode: m.provisioningCode,
        password: secrets.password,
        registrationId: secrets.registrationId,
        signedPreKey: signed.signedPreKey,
        kyberLastResortKey: signed.kyberLastResortKey,
      }),
    }).finally(() => http.close());
    if (reply.status === 403 || reply.status === 409 || reply.status === 422) {
      const code = (replyJson(reply) as { code?: unknown }).code;
      throw new SdkError('LINK_FAILED', `the relay refused the link (${typeof code === 'string' ? code : reply.status})`, { status: reply.status });
    }
    expectOk(reply);
    let res;
    try {
      res = processLinkDeviceResponse(replyJson(reply));
    } catch (err) {
      throw new SdkError('RELAY_ERROR', 'the relay sent a malformed answer', { cause: err });
    }
    if (res.accountId !== m.accountId) throw new SdkError('LINK_FAILED', 'the relay linked the device to another account');
    setMeta(db, 'account', {
      username: m.username,
      accountId: res.accountId,
      deviceId: res.deviceId,
      serverUrl: opts.serverUrl,
      password: secrets.password,
      registrationId: secrets.registrationId,
    });
    profile.close();
    return { deviceId: res.deviceId, archive: m.archive };
  } catch (err) {
    profile.close();
    removeProfileFiles(opts.profileDir);
    if (err instanceof WireError) throw new SdkError('LINK_FAILED', 'invalid provisioning data', { cause: err });
    throw err;
  }
}
