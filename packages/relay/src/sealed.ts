/**
 * Sealed sender on the relay: the trust root and server certificate, sender
 * certificates for authenticated devices, unidentified-access keys, and the
 * two unauthenticated send paths (one recipient, and many recipients in one
 * libsignal SealedSenderMultiRecipientMessage). Envelopes stored by these
 * paths have no source: the sender exists only inside the ciphertext.
 *
 * The relay never decrypts anything here; libsignal is used only to sign
 * certificates and to split a multi-recipient upload per recipient.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PrivateKey, PublicKey, SenderCertificate, ServerCertificate } from '@signalapp/libsignal-client';
import SealedSenderMultiRecipientMessage, {
  type Recipient,
} from '@signalapp/libsignal-client/dist/SealedSenderMultiRecipientMessage.js';
import {
  type AccountId,
  type DeviceId,
  type RecipientDeviceMismatch,
  type SendRequest,
  type SenderCertificateResponse,
  type TrustRootResponse,
  EnvelopeType,
  Limits,
  SealedSizes,
  parseAccountId,
  plainBytes,
} from '@parley/wire';
import type { Logger } from 'pino';
import type { RelayConfig } from './config.js';
import { RelayError } from './errors.js';
import { publishOnline, wakeOnReadable } from './online.js';
import type { RelayMetrics } from './metrics.js';
import type { Bus, Clock, StoredEnvelope, Store } from './ports.js';
import { type DeviceRef, type Relay, assertDeviceList, deviceProblems, newGuid } from './relay.js';

/** Sender certificates live this long unless configured otherwise. */
export const DEFAULT_SENDER_CERTIFICATE_TTL_MS = 7 * 24 * 60 * 60 * 1000;
/** Most recipients one multi-recipient send may name. */
export const MAX_MULTI_RECIPIENTS = 1000;

// ---------------------------------------------------------------- key files

const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64');
const unb64 = (s: unknown, field: string): Uint8Array<ArrayBuffer> => {
  if (typeof s !== 'string') throw new RangeError(`${field}: missing`);
  return new Uint8Array(Buffer.from(s, 'base64'));
};

/** The trust-root file: the key pair every server certificate is signed with. Keep it offline. */
export interface TrustRootFile {
  kind: 'parley-trust-root';
  version: 1;
  publicKey: string;
  privateKey: string;
}

/** The server-certificate file a relay runs with: certificate, its private key, and the trust root's public key. */
export interface ServerCertificateFile {
  kind: 'parley-server-certificate';
  version: 1;
  keyId: number;
  certificate: string;
  privateKey: string;
  trustRoot: string;
}

/** What the relay signs sender certificates with. */
export interface ServerSigner {
  trustRoot: PublicKey;
  certificate: ServerCertificate;
  key: PrivateKey;
  keyId: number;
}

/** A fresh trust-root key pair. */
export function createTrustRoot(): TrustRootFile {
  const key = PrivateKey.generate();
  return {
    kind: 'parley-trust-root',
    version: 1,
    publicKey: b64(key.getPublicKey().serialize()),
    privateKey: b64(key.serialize()),
  };
}

/** Parse a trust-root file. @throws RangeError when it is not one. */
export function parseTrustRoot(text: string): { publicKey: PublicKey; privateKey: PrivateKey } {
  let o: Partial<TrustRootFile>;
  try {
    o = JSON.parse(text) as Partial<TrustRootFile>;
  } catch {
    throw new RangeError('not a trust-root file (invalid JSON)');
  }
  if (o.kind !== 'parley-trust-root' || o.version !== 1) throw new RangeError('not a trust-root file');
  try {
    const privateKey = PrivateKey.deserialize(unb64(o.privateKey, 'privateKey'));
    const publicKey = privateKey.getPublicKey();
    if (!publicKey.equals(PublicKey.deserialize(unb64(o.publicKey, 'publicKey')))) throw new RangeError('keys do not match');
    return { publicKey, privateKey };
  } catch {
    throw new RangeError('trust-root file holds invalid keys');
  }
}

/**
 * A new server key pair and its certificate with id `keyId`, signed by the trust root.
 * @throws RangeError for a bad id or trust-root file.
 */
export function createServerCertificate(trustRootText: string, keyId: number): ServerCertificateFile {
  if (!Number.isInteger(keyId) || keyId < 1 || keyId > 0xffffffff)
    throw new RangeError('certificate id must be an integer in 1..4294967295');
  const root = parseTrustRoot(trustRootText);
  const serverKey = PrivateKey.generate();
  const cert = ServerCertificate.new(keyId, serverKey.getPublicKey(), root.privateKey);
  return {
    kind: 'parley-server-certificate',
    version: 1,
    keyId,
    certificate: b64(cert.serialize()),
    privateKey: b64(serverKey.serialize()),
    trustRoot: b64(root.publicKey.serialize()),
  };
}

/** Parse and check a server-certificate file (signature by its trust root, matching key). @throws RangeError */
export function parseServerCertificate(text: string): ServerSigner {
  let o: Partial<ServerCertificateFile>;
  try {
    o = JSON.parse(text) as Partial<ServerCertificateFile>;
  } catch {
    throw new RangeError('not a server-certificate file (invalid JSON)');
  }
  if (o.kind !== 'parley-server-certificate' || o.version !== 1) throw new RangeError('not a server-certificate file');
  let signer: ServerSigner;
  try {
    const certificate = ServerCertificate.deserialize(unb64(o.certificate, 'certificate'));
    const key = PrivateKey.deserialize(unb64(o.privateKey, 'privateKey'));
    const trustRoot = PublicKey.deserialize(unb64(o.trustRoot, 'trustRoot'));
    signer = { trustRoot, certificate, key, keyId: certificate.keyId() };
  } catch {
    throw new RangeError('server-certificate file holds invalid data');
  }
  if (!signer.trustRoot.verify(signer.certificate.certificateData(), signer.certificate.signature()))
    throw new RangeError('the server certificate is not signed by the trust root named in the file');
  if (!signer.certificate.key().equals(signer.key.getPublicKey()))
    throw new RangeError('the private key does not belong to the server certificate');
  return signer;
}

/** Write a secret file readable by its owner only; refuses to overwrite. */
export function writeSecretFile(path: string, content: string): void {
  writeFileSync(path, content, { mode: 0o600, flag: 'wx' });
}

/**
 * The signer a relay runs with: the configured server-certificate file or,
 * without one, a trust root and certificate generated once into
 * `<dataDir>/sealed-sender/` (in memory for a `:memory:` data dir).
 */
export function loadServerSigner(config: RelayConfig, log: Logger): ServerSigner {
  if (config.serverCertificate) return parseServerCertificate(readFileSync(config.serverCertificate, 'utf8'));
  if (config.dataDir === ':memory:')
    return parseServerCertificate(JSON.stringify(createServerCertificate(JSON.stringify(createTrustRoot()), 1)));
  const dir = join(config.dataDir, 'sealed-sender');
  const certPath = join(dir, 'server-cert.json');
  if (!existsSync(certPath) && generateSignerDir(config.dataDir, dir)) {
    log.warn(
      { dir },
      'generated a sealed-sender trust root and server certificate; production relays should keep the trust root offline ' +
        '(parley relay trust-root create, parley relay server-cert, then parley relay --server-cert FILE)',
    );
  }
  return parseServerCertificate(readFileSync(certPath, 'utf8'));
}

/**
 * Writes a new trust root and server certificate into a private temporary
 * folder, then renames it to `dir` in one step, so a process that starts at
 * the same time (two relays on one data dir) never sees half a pair. Returns
 * false when another process got there first; its pair is then the one used.
 */
function generateSignerDir(dataDir: string, dir: string): boolean {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const tmp = mkdtempSync(join(dataDir, '.sealed-sender-'));
  try {
    const root = JSON.stringify(createTrustRoot());
    writeSecretFile(join(tmp, 'trust-root.json'), root);
    writeSecretFile(join(tmp, 'server-cert.json'), JSON.stringify(createServerCertificate(root, 1)));
    // rename(2) replaces an empty directory but fails on a non-empty one.
    renameSync(tmp, dir);
    return true;
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ENOTEMPTY' || code === 'EEXIST') return false;
    throw err;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- helpers

/** Compare two 16-byte keys in constant time. */
function keyEquals(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Compared against when the account is unknown or has no key, so every failure costs the same. */
const DECOY_ACCESS_KEY = new Uint8Array(randomBytes(SealedSizes.accessKey));

function unauthorized(): RelayError {
  // One answer for a wrong key, a missing key and an unknown account.
  return new RelayError('UNAUTHORIZED', 'missing or wrong credentials');
}

/** Metadata of a multi-recipient send (carried in headers, the body being libsignal's bytes). */
export interface MultiRecipientMeta {
  timestamp: number;
  online: boolean;
  urgent: boolean;
}

export function parseMultiRecipientMeta(headers: Readonly<Record<string, string | undefined>>): MultiRecipientMeta {
  const ts = headers['x-parley-timestamp'];
  if (ts === undefined || !/^[0-9]{1,16}$/.test(ts) || !Number.isSafeInteger(Number(ts)))
    throw new RelayError('BAD_REQUEST', 'x-parley-timestamp: must be ms since epoch');
  const flag = (name: string): boolean => {
    const v = headers[name];
    if (v === undefined || v === 'false') return false;
    if (v === 'true') return true;
    throw new RelayError('BAD_REQUEST', `${name}: must be true or false`);
  };
  return { timestamp: Number(ts), online: flag('x-parley-online'), urgent: flag('x-parley-urgent') };
}

// ---------------------------------------------------------------- service

export interface SealedSenderDeps {
  relay: Relay;
  store: Store;
  bus: Bus;
  clock: Clock;
  metrics: RelayMetrics;
  signer: ServerSigner;
  /** Sender certificate lifetime (ms). */
  certificateTtlMs: number;
}

/** An all-zero account id: the "sender" of idempotency keys for unauthenticated sends (no real sender is recorded). */
const NO_SENDER = '00000000-0000-0000-0000-000000000000' as AccountId;

export class SealedSender {
  constructor(private readonly deps: SealedSenderDeps) {}

  trustRoot(): TrustRootResponse {
    return { trustRoot: this.deps.signer.trustRoot.serialize(), serverCertificateId: this.deps.signer.keyId };
  }

  /** A sender certificate binding the calling device's account, device id and the account identity key. */
  async issueCertificate(me: DeviceRef): Promise<SenderCertificateResponse> {
    const acct = await this.deps.store.getAccount(me.account);
    if (!acct) throw new RelayError('NOT_FOUND', 'account not found');
    const expires = this.deps.clock.now() + this.deps.certificateTtlMs;
    const { signer } = this.deps;
    const cert = SenderCertificate.new(
      me.account,
      null,
      me.device,
      PublicKey.deserialize(plainBytes(acct.identityKey)),
      expires,
      signer.certificate,
      signer.key,
    );
    return { certificate: cert.serialize(), expires };
  }

  async setAccessKey(me: DeviceRef, accessKey: Uint8Array | null): Promise<void> {
    await this.deps.store.setAccessKey(me.account, accessKey);
  }

  /**
   * XOR the access keys of `accounts` (a decoy for any unknown account or one
   * without a key) and compare with `given` in constant time. The work is the
   * same whether or not the accounts exist. @throws RelayError UNAUTHORIZED
   */
  async #checkAccess(accounts: readonly AccountId[], given: Uint8Array | null): Promise<void> {
    const combined = new Uint8Array(SealedSizes.accessKey);
    let allKnown = true;
    for (const account of accounts) {
      const key = (await this.deps.store.getAccount(account))?.accessKey ?? null;
      if (key === null || key.length !== SealedSizes.accessKey) allKnown = false;
      const k = key !== null && key.length === SealedSizes.accessKey ? key : DECOY_ACCESS_KEY;
      for (let i = 0; i < combined.length; i++) combined[i] = (combined[i] as number) ^ (k[i] as number);
    }
    const matches = keyEquals(given ?? DECOY_ACCESS_KEY, combined);
    if (!matches || !allKnown || given === null) {
      this.deps.metrics.authFailures.inc();
      throw unauthorized();
    }
  }

  #envelope(
    destination: AccountId,
    device: DeviceId,
    timestamp: number,
    now: number,
    content: Uint8Array,
    urgent: boolean,
  ): StoredEnvelope {
    return {
      guid: newGuid(),
      type: EnvelopeType.UnidentifiedSender,
      source: null,
      destination: { account: destination, device },
      clientTimestamp: timestamp,
      serverTimestamp: now,
      content,
      urgent,
    };
  }

  async #commit(envelopes: StoredEnvelope[], idempotencyKey: Parameters<Store['enqueue']>[0]['idempotencyKey']): Promise<void> {
    const onReadable = wakeOnReadable(this.deps.bus, envelopes);
    const res = await this.deps.store.enqueue({ envelopes, idempotencyKey, now: this.deps.clock.now(), onReadable });
    this.deps.metrics.sends.inc({ result: res.kind });
  }

  /**
   * `PUT /v1/messages/:accountId` without credentials: the access key of the
   * destination stands in for them. Only sealed envelopes (type 6) are accepted.
   * @throws RelayError BAD_REQUEST, UNAUTHORIZED, MISMATCHED_DEVICES, STALE_DEVICES, RATE_LIMITED
   */
  async sendUnidentified(destination: AccountId, accessKey: Uint8Array | null, req: SendRequest, ip: string): Promise<void> {
    // The in-memory limiter answers synchronously: no await (and no promise) per token then.
    const byAddress = this.deps.relay.limit('sealedAddress', ip);
    if (byAddress) await byAddress;
    for (const m of req.messages)
      if (m.type !== EnvelopeType.UnidentifiedSender)
        throw new RelayError('BAD_REQUEST', 'messages[].type: an unauthenticated send carries sealed-sender envelopes only');
    await this.#checkAccess([destination], accessKey);
    const byRecipient = this.deps.relay.limit('sealedRecipient', destination);
    if (byRecipient) await byRecipient;
    assertDeviceList(await this.deps.store.listDevices(destination), req, this.deps.metrics);
    const now = this.deps.clock.now();
    const envelopes = req.messages.map((m) =>
      this.#envelope(destination, m.destinationDevice, req.timestamp, now, m.content, req.urgent),
    );
    if (req.online) return publishOnline(this.deps.bus, envelopes);
    // The idempotency key names the destination and message id only: no sender is recorded.
    await this.#commit(envelopes, {
      senderAccount: NO_SENDER,
      senderDevice: 0 as DeviceId,
      destination,
      messageId: req.messageId,
      timestamp: req.timestamp,
    });
  }

  /**
   * `PUT /v1/messages/multi_recipient`: one libsignal SealedSenderMultiRecipientMessage,
   * split per recipient device. The access key is the XOR of every recipient's key.
   * Every envelope is committed in one transaction, or none.
   * @throws RelayError BAD_REQUEST, TOO_LARGE, UNAUTHORIZED, MISMATCHED_DEVICES, STALE_DEVICES, RATE_LIMITED
   */
  async sendMultiRecipient(accessKey: Uint8Array | null, body: Uint8Array, meta: MultiRecipientMeta, ip: string): Promise<void> {
    await this.deps.relay.limit('sealedAddress', ip);
    let parsed: SealedSenderMultiRecipientMessage;
    let recipients: Array<{ account: AccountId; deviceIds: number[]; registrationIds: number[]; parsed: Recipient }>;
    try {
      parsed = new SealedSenderMultiRecipientMessage(plainBytes(body));
      recipients = Object.entries(parsed.recipientsByServiceIdString()).map(([serviceId, r]) => ({
        account: parseAccountId(serviceId),
        deviceIds: r.deviceIds,
        registrationIds: r.registrationIds,
        parsed: r,
      }));
    } catch {
      throw new RelayError('BAD_REQUEST', 'body: not a valid multi-recipient sealed-sender message');
    }
    if (recipients.length === 0) throw new RelayError('BAD_REQUEST', 'body: names no recipients');
    if (recipients.length > MAX_MULTI_RECIPIENTS)
      throw new RelayError('BAD_REQUEST', `body: at most ${MAX_MULTI_RECIPIENTS} recipients`);
    await this.#checkAccess(
      recipients.map((r) => r.account),
      accessKey,
    );
    for (const r of recipients) await this.deps.relay.limit('sealedRecipient', r.account);

    const mismatched: RecipientDeviceMismatch[] = [];
    const stale: RecipientDeviceMismatch[] = [];
    for (const r of recipients) {
      const devices = await this.deps.store.listDevices(r.account);
      const p = deviceProblems(
        devices,
        r.deviceIds.map((device, i) => ({ device, registrationId: r.registrationIds[i] ?? -1 })),
      );
      if (p.missingDevices.length > 0 || p.extraDevices.length > 0)
        mismatched.push({ accountId: r.account, missingDevices: p.missingDevices, extraDevices: p.extraDevices });
      else if (p.staleDevices.length > 0) stale.push({ accountId: r.account, staleDevices: p.staleDevices });
    }
    if (mismatched.length > 0) {
      this.deps.metrics.sends.inc({ result: 'mismatched' });
      throw new RelayError('MISMATCHED_DEVICES', 'device lists do not match for some recipients', { recipients: mismatched });
    }
    if (stale.length > 0) {
      this.deps.metrics.sends.inc({ result: 'stale' });
      throw new RelayError('STALE_DEVICES', 'registration ids are outdated for some recipients', { recipients: stale });
    }

    const now = this.deps.clock.now();
    const envelopes: StoredEnvelope[] = [];
    for (const r of recipients) {
      // libsignal needs the very object it parsed (it holds the recipient's byte range).
      const content = parsed.messageForRecipient(r.parsed);
      if (content.length > Limits.maxContentBytes)
        throw new RelayError('TOO_LARGE', `content: at most ${Limits.maxContentBytes} bytes`);
      for (const device of r.deviceIds)
        envelopes.push(this.#envelope(r.account, device as DeviceId, meta.timestamp, now, content, meta.urgent));
    }
    if (meta.online) return publishOnline(this.deps.bus, envelopes);
    await this.#commit(envelopes, null);
  }
}
