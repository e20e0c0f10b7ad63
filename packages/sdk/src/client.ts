/**
 * ParleyClient: one device's view of Parley. Holds every key in the profile
 * database, talks to the relay, and turns envelopes into events.
 *
 * Concurrency: every libsignal operation and every commit runs on `crypto`
 * (one at a time), so the stores' pending set belongs to one operation only.
 * Relay pushes are handled by `receiver` (receive-queue.ts), in arrival order,
 * with received messages committed in groups.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import {
  type CiphertextMessage,
  CiphertextMessageType,
  DecryptionErrorMessage,
  ErrorCode,
  IdentityKeyPair,
  KEMPublicKey,
  LibSignalErrorBase,
  PlaintextContent,
  PreKeyBundle,
  PreKeySignalMessage,
  ProtocolAddress,
  PublicKey,
  SenderCertificate,
  SignalMessage,
  processPreKeyBundle,
  signalDecrypt,
  signalDecryptPreKey,
  signalEncrypt,
} from '@signalapp/libsignal-client';
import {
  ACCESS_KEY_HEADER,
  type Attachment,
  type Content,
  type Envelope,
  EnvelopeType,
  type OutgoingDeviceMessage,
  type PreKeyBundleResponse,
  type RequestFrame,
  WireError,
  encodeAccessKeyHeader,
  encodeAccessKeyRequest,
  type DeviceInfo,
  encodeContent,
  encodeKeyUploadRequest,
  encodeProvisionEnvelope,
  encodeProvisionMessage,
  processArchiveDownloadResponse,
  processArchiveUploadResponse,
  processDeviceListResponse,
  processProvisioningCodeResponse,
  encodeRegisterRequest,
  encodeSendRequestBinary,
  normalizeUsername,
  padPlaintext,
  processContent,
  processEnvelope,
  processKeyCounts,
  processLookupResponse,
  processPreKeyBundleResponse,
  processRegisterResponse,
  processSenderCertificateResponse,
  processTrustRootResponse,
  unpadPlaintext,
  type DeviceId,
  type KeyUploadRequest,
  Limits,
  plainBytes,
} from '@parley/wire';
import { type AttachmentInfo, type SendFileOptions, downloadReceived, pendingDownloads, storeReceived, uploadFile } from './attachment-flow.js';
import { type PendingLink, parseLink, registerLinkedDevice, sealProvision, startLinking } from './linking.js';
import { ARCHIVE_KEY_BYTES, decryptArchive, encryptArchive, exportHistory, importHistory } from './history-archive.js';
import type { Progress } from './attachments.js';
import { type Profile, createProfile, openProfile, profileExists, removeProfileFiles } from './db.js';
import { SdkError } from './errors.js';
import { type GroupAlert, type GroupInfo, type GroupRef, type GroupUpdateEvent, Groups } from './groups.js';
import { KeyManager, getMeta, newAccountSecrets, setMeta } from './keys.js';
import {
  accessKeyPublished,
  cachedSenderCertificate,
  contactAccessKey,
  deriveAccessKey,
  ensureProfileKey,
  CertificateChecks,
  isOwnCertificate,
  markAccessKeyPublished,
  markAccessKeyRejected,
  openSealed,
  pinTrustRoot,
  pinnedTrustRoot,
  saveSenderCertificate,
  seal,
  storeContactProfileKey,
} from './sealed.js';
import { DeliveryReceipts } from './receipts.js';
import { SeenFilter } from './seen-filter.js';
import { ReceiveQueue } from './receive-queue.js';
import { Serial } from './serial.js';
import { IdentityStatus, Stores, ab, receivedMessageId } from './stores.js';
import { checkSafetyNumber, safetyNumber } from './trust.js';
import { AnonymousTransport, HttpTransport, RelaySocket, type Body, type Reply, type RequestResult, basicAuth, errorBody, expectOk, replyError, replyJson } from './transport.js';

// ---------------------------------------------------------------- public types

export interface IncomingMessage {
  id: string;
  /** The sender's username, only when the relay confirmed it belongs to `fromAccount`. */
  from: string | null;
  fromAccount: string;
  fromDevice: number;
  timestamp: number;
  serverTimestamp: number;
  body: string;
  /** Received attachments (not downloaded yet; see `downloadAttachment`). */
  attachments: AttachmentInfo[];
  /** Set for a group message. */
  group?: GroupRef;
}

export interface ParleyEvents {
  message: (m: IncomingMessage) => void;
  /** A message this account sent (from this device, or a sync transcript from another own device). */
  sent: (s: { to: string; timestamp: number; body: string; group?: GroupRef }) => void;
  /** A group update was rejected (docs/PROTOCOL.md, "Groups"), or a non-member sent to a group. */
  groupAlert: (a: GroupAlert) => void;
  /** A group update was accepted. `added`/`removed` are account ids. */
  groupUpdate: (u: GroupUpdateEvent) => void;
  receipt: (r: { from: string | null; fromAccount: string; type: 'delivery' | 'read'; timestamps: number[] }) => void;
  /** Messages from `account` that this account read on another of its devices (marked read here too). */
  syncRead: (r: { account: string; timestamps: number[] }) => void;
  serverReceipt: (r: { fromAccount: string; timestamp: number }) => void;
  typing: (t: { from: string | null; fromAccount: string; started: boolean }) => void;
  identityChanged: (c: { username: string | null; accountId: string }) => void;
  queueEmpty: () => void;
  connection: (state: 'connecting' | 'open' | 'closed' | 'replaced') => void;
  error: (err: Error) => void;
}

export interface HistoryEntry {
  direction: 'in' | 'out';
  timestamp: number;
  body: string;
  status: string;
}

interface AccountInfo {
  username: string;
  accountId: string;
  deviceId: number;
  serverUrl: string;
  password: string;
  registrationId: number;
}

const MAX_SEND_ATTEMPTS = 4;

/** One device's envelope as a send builds it; `ciphertext` lets the send seal it. */
interface Built {
  type: EnvelopeType;
  content: Uint8Array;
  ciphertext?: CiphertextMessage;
}
/** How a send travels: sealed (when the recipient's access key is known) and/or online only (never stored). */
interface SendMode {
  sealed?: boolean;
  online?: boolean;
}
interface SendOptions extends SendMode {
  log: boolean;
  urgent: boolean;
  /** See Delivery.withReceive. */
  withReceive?: boolean;
}
/** One send to every device of an account. */
interface Delivery {
  account: string;
  timestamp: number;
  urgent: boolean;
  /** Makes one device's envelope; runs on the crypto queue. */
  build: (device: number) => Promise<Built>;
  /** Rows to commit in the same transaction as the ratchet state of the encryption. */
  onCommit?: (devices: number[]) => void;
  mode?: SendMode;
  /**
   * While the receive pipeline is busy, stage the encryption's ratchet state
   * for its next group commit instead of committing it alone, and send only
   * once that commit has written it (delivery receipts sent mid-burst).
   */
  withReceive?: boolean;
}
const SEND_LOG_TTL_MS = 24 * 3600 * 1000;
const SEEN_TTL_MS = 45 * 24 * 3600 * 1000;

function invalidInput(err: unknown): never {
  if (err instanceof WireError) throw new SdkError('INVALID_INPUT', err.message, { cause: err });
  throw err;
}

function isSignalError(err: unknown, code: ErrorCode): boolean {
  return err instanceof LibSignalErrorBase && err.code === code;
}

function hex(b: Uint8Array): string {
  // A view, not a copy: this runs several times per received envelope.
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}

// ---------------------------------------------------------------- client

export class ParleyClient {
  readonly identity: { username: string; accountId: string; deviceId: number; serverUrl: string };

  private readonly db;
  private readonly stores: Stores;
  private readonly keys: KeyManager;
  private readonly http: HttpTransport;
  private socket: RelaySocket | null = null;
  private readonly crypto = new Serial();
  /** Relay pushes: decrypted one at a time, committed in groups (receive-queue.ts). */
  private readonly receiver = new ReceiveQueue({
    handle: (req) => this.onRelayRequest(req),
    staged: () => this.stores.stagedCount,
    // Between group commits of the backlog the queue often runs dry for a moment; receipts wait for queue/empty then.
    onIdle: () => !this.backlog && this.receipts.kick(),
    onError: (err) => this.emit('error', err instanceof Error ? err : new Error('envelope processing failed')),
    flush: () => this.crypto.run(async () => void (this.stores.stagedCount > 0 && this.stores.commit())),
  });
  /** Delivery receipts, many timestamps per sealed receipt (receipts.ts). */
  private readonly receipts = new DeliveryReceipts({
    send: (account, timestamps) =>
      this.sendContent(account, { kind: 'receipt', type: 'delivery', timestamps }, this.nextTimestamp(), {
        log: false,
        urgent: false,
        sealed: true,
        withReceive: true,
      }),
    run: (task) => this.spawn(task),
    busy: () => this.receiver.busy || this.backlog,
  });
  private readonly listeners = new Map<keyof ParleyEvents, Set<(...args: never[]) => void>>();
  private readonly background = new Set<Promise<unknown>>();
  private lastTimestamp = 0;
  private closed = false;
  /**
   * True from a connect until the relay's queue/empty: the relay is still pushing what it queued while we
   * were away, so delivery receipts wait to fill up (receipts.ts) instead of leaving each time the receive
   * queue runs dry between group commits. They still leave when full or at the latest RECEIPT_MAX_DELAY_MS.
   */
  private backlog = false;
  private readonly localAddress: ProtocolAddress;

  private constructor(
    private readonly profile: Profile,
    account: AccountInfo,
    identityKeyPair: IdentityKeyPair,
  ) {
    this.db = profile.db;
    this.seenFilter = new SeenFilter(this.db, SEEN_TTL_MS);
    this.identity = Object.freeze({
      username: account.username,
      accountId: account.accountId,
      deviceId: account.deviceId,
      serverUrl: account.serverUrl,
    });
    this.stores = new Stores(this.db, { identityKeyPair, registrationId: account.registrationId }, (accountId) =>
      this.emit('identityChanged', { username: this.usernameFor(accountId), accountId }),
    );
    this.stores.onFlush = (ok) => this.receiver.onFlush(ok);
    this.keys = new KeyManager(this.db, this.stores, identityKeyPair);
    this.http = new HttpTransport(account.serverUrl, { accountId: account.accountId, deviceId: account.deviceId, password: account.password });
    this.localAddress = ProtocolAddress.new(account.accountId, account.deviceId);
    this.identityKeyPair = identityKeyPair;
    // Sealed sender: unauthenticated requests (over the anonymous socket, HTTP behind it), and a profile key
    // (created for profiles made before it existed).
    this.anon = new AnonymousTransport(account.serverUrl);
    this.profileKey = ensureProfileKey(this.db);
    this.groups = this.groupHost();
  }
  private readonly groups: Groups;
  /** Sender certificates already verified (sealed.ts), so a burst checks each certificate's signatures once. */
  private readonly certificateChecks = new CertificateChecks();
  private readonly identityKeyPair: IdentityKeyPair;
  private readonly anon: AnonymousTransport;
  private readonly profileKey: Uint8Array;

  // ---------------------------------------------------------------- lifecycle

  static async register(opts: {
    profileDir: string;
    serverUrl: string;
    username: string;
    passphrase: string | null;
    inviteCode?: string;
  }): Promise<ParleyClient> {
    let username: string;
    try {
      username = normalizeUsername(opts.username);
      new URL(opts.serverUrl);
    } catch (err) {
      if (err instanceof TypeError) throw new SdkError('INVALID_INPUT', 'serverUrl is not a URL');
      invalidInput(err);
    }
    if (profileExists(opts.profileDir)) throw new SdkError('PROFILE_EXISTS', 'a profile already exists in this directory');
    const profile = await createProfile(opts.profileDir, opts.passphrase);
    try {
      const secrets = newAccountSecrets();
      const db = profile.db;
      const stores = new Stores(db, { identityKeyPair: secrets.identity, registrationId: secrets.registrationId }, () => {});
      const km = new KeyManager(db, stores, secrets.identity);
      const signed = await km.newSignedKeys();
      stores.commit(() => setMeta(db, 'identityKeyPair', secrets.identity.serialize()));

      const http = new HttpTransport(opts.serverUrl, null);
      const reply = await http.request('POST', '/v1/accounts', {
        json: encodeRegisterRequest({
          username,
          password: secrets.password,
          registrationId: secrets.registrationId,
          identityKey: secrets.identity.publicKey.serialize(),
          signedPreKey: signed.signedPreKey,
          kyberLastResortKey: signed.kyberLastResortKey,
          inviteCode: opts.inviteCode ?? null,
        }),
      }).finally(() => http.close());
      expectOk(reply);
      let res;
      try {
        res = processRegisterResponse(replyJson(reply));
      } catch (err) {
        throw new SdkError('RELAY_ERROR', 'the relay sent a malformed answer', { cause: err });
      }
      const account: AccountInfo = {
        username,
        accountId: res.accountId,
        deviceId: res.deviceId,
        serverUrl: opts.serverUrl,
        password: secrets.password,
        registrationId: secrets.registrationId,
      };
      setMeta(db, 'account', account);
      const client = new ParleyClient(profile, account, secrets.identity);
      // First batch of one-time keys. If this fails the account still works:
      // the count check on connect uploads them.
      await client.uploadOneTimeKeys({ ecCount: 0, kyberCount: 0 }).catch(() => undefined);
      // Pin the relay's sealed-sender trust root and publish our access key; retried on connect if this fails.
      await client.setupSealedSender().catch(() => undefined);
      return client;
    } catch (err) {
      profile.close();
      removeProfileFiles(opts.profileDir);
      throw err;
    }
  }

  static async open(opts: { profileDir: string; passphrase: string | null }): Promise<ParleyClient> {
    const profile = await openProfile(opts.profileDir, opts.passphrase);
    try {
      const account = getMeta(profile.db, 'account') as AccountInfo | undefined;
      const pair = getMeta(profile.db, 'identityKeyPair');
      if (!account || !(pair instanceof Uint8Array)) throw new SdkError('PROFILE_NOT_FOUND', 'the profile is incomplete');
      return new ParleyClient(profile, account, IdentityKeyPair.deserialize(ab(pair)));
    } catch (err) {
      profile.close();
      throw err;
    }
  }

  on<E extends keyof ParleyEvents>(event: E, fn: ParleyEvents[E]): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  private emit<E extends keyof ParleyEvents>(event: E, ...args: Parameters<ParleyEvents[E]>): void {
    for (const fn of this.listeners.get(event) ?? []) {
      try {
        (fn as (...a: Parameters<ParleyEvents[E]>) => void)(...args);
      } catch (err) {
        if (event !== 'error') this.emit('error', err instanceof Error ? err : new Error('listener failed'));
      }
    }
  }

  /** Runs a task in the background; failures become `error` events. */
  private spawn(task: () => Promise<unknown>): void {
    const p = task().catch((err: unknown) => {
      if (!this.closed) this.emit('error', err instanceof Error ? err : new Error('background task failed'));
    });
    this.background.add(p);
    void p.finally(() => this.background.delete(p));
  }

  async connect(): Promise<void> {
    this.assertOpen();
    if (this.socket?.isOpen) return;
    if (!this.socket) {
      this.socket = new RelaySocket({
        serverUrl: this.identity.serverUrl,
        creds: { accountId: this.identity.accountId, deviceId: this.identity.deviceId, password: this.password() },
        onRequest: (req) => this.receiver.push(req),
        onState: (state) => {
          // The relay pushes what it queued while we were away, then queue/empty (onRelayRequest).
          this.backlog = state === 'open';
          this.emit('connection', state);
          if (state === 'open') this.spawn(() => this.maintenance());
        },
      });
    }
    await this.socket.start();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.socket?.close();
    await this.receiver.idle();
    this.receipts.kick(); // delivery receipts still waiting for more timestamps leave now
    await Promise.allSettled([...this.background]);
    await this.crypto.idle();
    this.http.close();
    await this.anon.close();
    this.profile.close();
  }

  private assertOpen(): void {
    if (this.closed) throw new SdkError('INVALID_INPUT', 'the client is closed');
  }

  private password(): string {
    return (getMeta(this.db, 'account') as AccountInfo).password;
  }

  /** Client timestamps strictly increase, so (account, device, timestamp) identifies a message. */
  private nextTimestamp(): number {
    this.lastTimestamp = Math.max(Date.now(), this.lastTimestamp + 1);
    return this.lastTimestamp;
  }

  // ---------------------------------------------------------------- relay calls

  /** Over the socket when it is open (the hot path), else HTTP. */
  private async call(verb: string, path: string, body?: Body): Promise<Reply> {
    if (this.socket?.isOpen) {
      try {
        return await this.socket.request(verb, path, body);
      } catch (err) {
        if (!SdkError.is(err, 'RELAY_UNREACHABLE')) throw err;
        // The socket dropped mid-request; every call here is safe to repeat.
      }
    }
    return this.http.request(verb, path, body);
  }

  private async uploadKeys(req: KeyUploadRequest): Promise<void> {
    expectOk(await this.call('PUT', '/v1/keys', { json: encodeKeyUploadRequest(req) }));
  }

  private async uploadOneTimeKeys(counts: { ecCount: number; kyberCount: number }): Promise<void> {
    const req = await this.atomically(() => this.keys.refill(counts));
    if (req) await this.uploadKeys(req);
  }

  /** Runs `fn` on the crypto queue; its store writes commit together if it succeeds and are dropped if it throws. */
  private atomically<T>(fn: () => Promise<T>): Promise<T> {
    return this.crypto.run(async () => {
      try {
        const r = await fn();
        this.stores.commit();
        return r;
      } catch (err) {
        this.stores.rollback();
        throw err;
      }
    });
  }

  private refilling: Promise<void> | null = null;
  private refillAgain = false;

  /** Tops one-time keys up to a full batch. Concurrent calls coalesce, so repeated notices do not overfill. */
  private refillKeys(): Promise<void> {
    if (this.refilling) {
      this.refillAgain = true;
      return this.refilling;
    }
    const run = async () => {
      do {
        this.refillAgain = false;
        const counts = processKeyCounts(replyJson(expectOk(await this.call('GET', '/v1/keys/count'))));
        await this.uploadOneTimeKeys(counts);
      } while (this.refillAgain && !this.closed);
    };
    this.refilling = run().finally(() => (this.refilling = null));
    return this.refilling;
  }

  /** On every connect: rotate old signed keys, top up one-time keys, prune logs. */
  private async maintenance(): Promise<void> {
    const rotation = await this.atomically(() => this.keys.rotateIfDue());
    if (rotation) await this.uploadKeys(rotation);
    await this.refillKeys();
    await this.crypto.run(async () => {
      const now = Date.now();
      this.keys.pruneOldKeys();
      this.db.prepare('DELETE FROM send_log WHERE created_at < ?').run([now - SEND_LOG_TTL_MS]);
      this.db.prepare('DELETE FROM seen_envelopes WHERE seen_at < ?').run([now - SEEN_TTL_MS]);
    });
    await this.setupSealedSender();
  }

  // ---------------------------------------------------------------- sealed sender

  /**
   * Pin the relay's trust root (profiles from before sealed sender pin it on
   * their first connect) and publish our access key once per profile key.
   * @throws SdkError UNTRUSTED_RELAY when the relay's trust root differs from the pinned one.
   */
  private async setupSealedSender(): Promise<void> {
    const reply = expectOk(await this.anon.request('GET', '/v1/certificate/trust-root'));
    let trustRoot: Uint8Array;
    try {
      trustRoot = processTrustRootResponse(replyJson(reply)).trustRoot;
    } catch (err) {
      throw new SdkError('RELAY_ERROR', 'the relay sent a malformed answer', { cause: err });
    }
    await this.crypto.run(async () => pinTrustRoot(this.db, trustRoot));
    const accessKey = deriveAccessKey(this.profileKey);
    if (!accessKeyPublished(this.db, accessKey)) {
      expectOk(await this.call('PUT', '/v1/accounts/access-key', { json: encodeAccessKeyRequest({ accessKey }) }));
      markAccessKeyPublished(this.db, accessKey);
    }
  }

  /** A sender certificate that chains to the pinned trust root (cached until a day before expiry), or null. */
  private async senderCertificate(): Promise<SenderCertificate | null> {
    const root = pinnedTrustRoot(this.db);
    if (!root) return null;
    const me = { account: this.identity.accountId, device: this.identity.deviceId };
    const now = Date.now();
    const cached = cachedSenderCertificate(this.db, root, now, me, this.certificateChecks);
    if (cached) return cached;
    let cert: SenderCertificate;
    try {
      const reply = expectOk(await this.call('GET', '/v1/certificate/delivery'));
      cert = SenderCertificate.deserialize(ab(processSenderCertificateResponse(replyJson(reply)).certificate));
    } catch {
      return null; // send identified this time
    }
    if (!isOwnCertificate(cert, root, now, me, this.certificateChecks) || !cert.key().equals(this.identityKeyPair.publicKey)) {
      this.emit('error', new SdkError('UNTRUSTED_RELAY', 'the relay issued a sender certificate that does not match the pinned trust root'));
      return null;
    }
    saveSenderCertificate(this.db, cert);
    return cert;
  }

  // ---------------------------------------------------------------- usernames

  /** username -> account id, from the contacts cache or the relay. */
  private async resolve(username: string): Promise<string> {
    let name: string;
    try {
      name = normalizeUsername(username);
    } catch (err) {
      invalidInput(err);
    }
    const cached = this.contactAccount(name);
    if (cached !== null) return cached;
    const account = await this.lookup(name);
    if (account === null) throw new SdkError('USER_NOT_FOUND', 'no such user');
    return account;
  }

  private async lookup(name: string): Promise<string | null> {
    const reply = await this.call('GET', `/v1/accounts/username/${encodeURIComponent(name)}`);
    if (reply.status === 404) return null;
    expectOk(reply);
    let accountId: string;
    try {
      accountId = processLookupResponse(replyJson(reply)).accountId;
    } catch (err) {
      throw new SdkError('RELAY_ERROR', 'the relay sent a malformed answer', { cause: err });
    }
    this.db
      .prepare('INSERT INTO contacts (username, account, updated_at) VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET account = excluded.account, updated_at = excluded.updated_at')
      .run([name, accountId, Date.now()]);
    this.rememberContact(name, accountId);
    return accountId;
  }

  /**
   * Contacts rows already read, so the claim check of every received message
   * does not query the table again. `lookup` is the only writer that changes
   * an existing row (history imports only add missing ones) and it updates
   * this map too; the profile lock keeps other processes out.
   */
  private readonly contactCache = new Map<string, string>();
  private contactAccount(name: string): string | null {
    const known = this.contactCache.get(name);
    if (known !== undefined) return known;
    const account = this.db.prepare('SELECT account FROM contacts WHERE username = ?', { pluck: true }).get([name]);
    if (typeof account !== 'string') return null;
    this.rememberContact(name, account);
    return account;
  }
  private rememberContact(name: string, account: string): void {
    if (this.contactCache.size >= 4096) this.contactCache.clear();
    this.contactCache.set(name, account);
  }

  private usernameFor(accountId: string): string | null {
    if (accountId === this.identity.accountId) return this.identity.username;
    const u = this.db.prepare('SELECT username FROM contacts WHERE account = ? ORDER BY updated_at DESC', { pluck: true }).get([accountId]);
    return typeof u === 'string' ? u : null;
  }

  /**
   * Believes a claimed sender username only if the relay maps it to the envelope's source account.
   * Answers synchronously when no relay lookup is needed (the sender is a contact: nearly every
   * message), so the receive path does not wait a turn for it.
   */
  private verifyClaim(claim: string | null, accountId: string): string | null | Promise<string | null> {
    if (claim === null) return this.usernameFor(accountId);
    if (this.contactAccount(claim) === accountId) return claim;
    return this.lookupClaim(claim, accountId);
  }
  private async lookupClaim(claim: string, accountId: string): Promise<string | null> {
    try {
      return (await this.lookup(claim)) === accountId ? claim : this.usernameFor(accountId);
    } catch {
      return this.usernameFor(accountId); // relay unreachable: do not believe the claim yet
    }
  }

  // ---------------------------------------------------------------- sessions

  /** Addresses are immutable native objects; a burst from one device reuses one instead of making one per message. */
  private readonly addresses = new Map<string, ProtocolAddress>();
  private addr(account: string, device: number): ProtocolAddress {
    const key = `${account}.${device}`;
    let a = this.addresses.get(key);
    if (!a) {
      if (this.addresses.size >= 4096) this.addresses.clear();
      a = ProtocolAddress.new(account, device);
      this.addresses.set(key, a);
    }
    return a;
  }

  private async fetchBundles(account: string, device: number | '*'): Promise<PreKeyBundleResponse | null> {
    const reply = await this.call('GET', `/v1/keys/${account}/${device}`);
    if (reply.status === 404) return null;
    expectOk(reply);
    let res: PreKeyBundleResponse;
    try {
      res = processPreKeyBundleResponse(replyJson(reply));
    } catch (err) {
      throw new SdkError('BAD_BUNDLE', 'the relay sent a malformed pre-key bundle', { cause: err });
    }
    if (res.accountId !== account) throw new SdkError('BAD_BUNDLE', 'the bundle is for another account');
    return res;
  }

  /** Builds sessions from fetched bundles. libsignal checks both signatures and the identity trust. */
  private async processBundles(res: PreKeyBundleResponse): Promise<void> {
    await this.crypto.run(async () => {
      for (const d of res.devices) {
        if (res.accountId === this.identity.accountId && d.deviceId === this.identity.deviceId) continue;
        let bundle: PreKeyBundle;
        try {
          bundle = PreKeyBundle.new(
            d.registrationId,
            d.deviceId,
            d.preKey?.keyId ?? null,
            d.preKey ? PublicKey.deserialize(ab(d.preKey.publicKey)) : null,
            d.signedPreKey.keyId,
            PublicKey.deserialize(ab(d.signedPreKey.publicKey)),
            ab(d.signedPreKey.signature),
            PublicKey.deserialize(ab(res.identityKey)),
            d.kyberPreKey.keyId,
            KEMPublicKey.deserialize(ab(d.kyberPreKey.publicKey)),
            ab(d.kyberPreKey.signature),
          );
          await processPreKeyBundle(bundle, this.addr(res.accountId, d.deviceId), this.localAddress, this.stores.session, this.stores.identity);
        } catch (err) {
          this.stores.rollback();
          if (isSignalError(err, ErrorCode.UntrustedIdentity)) {
            // Keep the new key (marked unverified) so the user can compare the new safety number.
            this.stores.identity.recordKey(res.accountId, res.identityKey);
            this.stores.commit();
            throw new SdkError('UNTRUSTED_IDENTITY', 'the contact’s identity key changed since it was verified', { cause: err });
          }
          throw new SdkError('BAD_BUNDLE', 'a pre-key bundle failed verification', { cause: err });
        }
      }
      this.stores.commit();
    });
  }

  /** Devices we hold a session record for; `fresh` lists those whose session is usable. */
  private knownDevices(account: string): { all: number[]; fresh: number[] } {
    const all = this.db
      .prepare('SELECT device FROM sessions WHERE account = ? ORDER BY device', { pluck: true })
      .all([account])
      .map(Number)
      .filter((d) => !(account === this.identity.accountId && d === this.identity.deviceId));
    const fresh = this.stores.session.activeDevices(account).filter((d) => all.includes(d));
    return { all, fresh };
  }

  /** Makes sure every known device of `account` has a usable session; returns the device list. */
  private async ensureSessions(account: string): Promise<number[]> {
    // Sessions made by received messages still staged (receive-queue.ts) must be in the table read below.
    if (this.stores.session.stagedNew(account)) await this.crypto.run(async () => void (this.stores.stagedCount > 0 && this.stores.commit()));
    const known = this.knownDevices(account);
    const { all } = known;
    let { fresh } = known;
    if (all.length === 0) {
      const res = await this.fetchBundles(account, '*');
      if (!res) throw new SdkError('USER_NOT_FOUND', 'no such user');
      await this.processBundles(res);
    } else {
      for (const d of all.filter((x) => !fresh.includes(x))) {
        const res = await this.fetchBundles(account, d);
        if (res) await this.processBundles(res);
        else await this.crypto.run(async () => void this.stores.commit(() => this.stores.session.delete(account, d)));
      }
    }
    ({ fresh } = this.knownDevices(account));
    return fresh;
  }

  // ---------------------------------------------------------------- send pipeline

  /**
   * Sends one message to every device of `account`: resolves the device set,
   * encrypts per device, and retries on 409/410 with the same message id.
   * `build` makes each device's envelope (it runs on the crypto queue and its
   * store writes are committed with `onCommit`).
   */
  private deliver(d: Delivery): Promise<number[]> {
    // One send at a time per recipient: keeps their order and avoids two parallel session setups.
    let q = this.sendQueues.get(d.account);
    if (!q) this.sendQueues.set(d.account, (q = new Serial()));
    return q.run(() => this.deliverNow(d));
  }
  private readonly sendQueues = new Map<string, Serial>();

  /** Resolves with the devices the relay accepted the message for. */
  private async deliverNow({ account, timestamp, urgent, build, onCommit, mode = {}, withReceive = false }: Delivery): Promise<number[]> {
    const messageId = randomBytes(16);
    // Sealed when asked for, we hold a certificate and the recipient's access key; else identified.
    const cert = mode.sealed === true && account !== this.identity.accountId ? await this.senderCertificate() : null;
    for (let attempt = 0; attempt < MAX_SEND_ATTEMPTS; attempt++) {
      const accessKey = cert ? contactAccessKey(this.db, account) : null;
      const devices = await this.ensureSessions(account);
      if (devices.length === 0) {
        if (account === this.identity.accountId) return []; // no other own devices
        throw new SdkError('USER_NOT_FOUND', 'the user has no devices');
      }
      let sealed = false;
      const staged: { written?: Promise<void> } = {};
      const messages = await this.crypto.run(async () => {
        try {
          const out: OutgoingDeviceMessage[] = [];
          for (const device of devices) {
            const built = await build(device);
            let { type, content } = built;
            if (cert && accessKey && built.ciphertext) {
              content = await seal(built.ciphertext, cert, this.addr(account, device), this.stores.identity);
              type = EnvelopeType.UnidentifiedSender;
              sealed = true;
            }
            const record = this.stores.session.getSync(account, device);
            if (!record) throw new Error('session vanished');
            out.push({ type, destinationDevice: device as DeviceId, destinationRegistrationId: record.remoteRegistrationId(), content });
          }
          if (withReceive && this.receiver.busy) {
            // The receive pipeline commits again soon (more pushes wait, or staged work does): ride in that commit.
            this.stores.stage(() => onCommit?.(devices));
            staged.written = this.stores.whenFlushed();
          } else this.stores.commit(() => onCommit?.(devices));
          return out;
        } catch (err) {
          this.stores.rollback();
          if (isSignalError(err, ErrorCode.UntrustedIdentity))
            throw new SdkError('UNTRUSTED_IDENTITY', 'the contact’s identity key changed since it was verified', { cause: err });
          throw err;
        }
      });
      // Nothing leaves before the ratchet state that produced it is durable.
      if (staged.written) await staged.written;
      const body_ = { binary: encodeSendRequestBinary({ messages, timestamp, urgent, messageId, ...(mode.online ? { online: true } : {}) }) };
      // A prebuilt type-6 envelope (a group message to a member without a known access key) goes over the authenticated route.
      // The anonymous transport may repeat a sealed send over HTTP; the message id makes the relay store it once.
      const reply = sealed
        ? await this.anon.request('PUT', `/v1/messages/${account}`, body_, { [ACCESS_KEY_HEADER]: encodeAccessKeyHeader(accessKey ?? new Uint8Array(0)) })
        : await this.call('PUT', `/v1/messages/${account}`, body_);
      if (reply.status >= 200 && reply.status < 300) return devices;
      if (sealed && reply.status === 401) {
        // The access key is stale or wrong: send identified until the contact shares a new profile key.
        markAccessKeyRejected(this.db, account);
        continue;
      }
      const body = errorBody(reply);
      if (reply.status === 409 && body?.code === 'MISMATCHED_DEVICES') {
        await this.fixDevices(account, { missing: body.missingDevices ?? [], extra: body.extraDevices ?? [], stale: [] });
        continue;
      }
      if (reply.status === 410 && body?.code === 'STALE_DEVICES') {
        await this.fixDevices(account, { missing: [], extra: [], stale: body.staleDevices ?? [] });
        continue;
      }
      throw replyError(reply);
    }
    throw new SdkError('RELAY_ERROR', 'the device list kept changing; giving up');
  }

  /** A 409/410 answer: drop extra devices, fetch missing ones, archive stale ones (ensureSessions renews those on the next attempt). */
  private async fixDevices(account: string, p: { missing: number[]; extra: number[]; stale: number[] }): Promise<void> {
    await this.crypto.run(async () =>
      void this.stores.commit(() => {
        for (const d of p.extra) this.stores.session.delete(account, d);
        for (const d of p.stale) this.stores.session.archive(account, d);
      }),
    );
    for (const d of p.missing) {
      const res = await this.fetchBundles(account, d);
      if (res) await this.processBundles(res);
    }
  }

  /** Encrypts an encoded Content (padded) for each device; logs it for resends when asked. Resolves with the devices reached. */
  private async sendEncrypted(account: string, plaintext: Uint8Array, timestamp: number, opts: SendOptions): Promise<number[]> {
    const padded = ab(padPlaintext(plaintext));
    return this.deliver({
      account,
      timestamp,
      urgent: opts.urgent,
      build: async (device) => {
        const ct = await signalEncrypt(padded, this.addr(account, device), this.localAddress, this.stores.session, this.stores.identity);
        const type = ct.type() === (CiphertextMessageType.PreKey as number) ? EnvelopeType.PreKeyMessage : EnvelopeType.Ciphertext;
        return { type, content: ct.serialize(), ciphertext: ct };
      },
      ...(opts.log
        ? {
            onCommit: (devices: number[]) => {
              const insert = this.db.prepare('INSERT INTO send_log (account, device, timestamp, content, created_at) VALUES (?, ?, ?, ?, ?)');
              for (const d of devices) insert.run([account, d, timestamp, ab(plaintext), Date.now()]);
            },
          }
        : {}),
      mode: { sealed: opts.sealed ?? false, online: opts.online ?? false },
      withReceive: opts.withReceive ?? false,
    });
  }

  private async sendContent(account: string, content: Content, timestamp: number, opts: SendOptions): Promise<number[]> {
    return this.sendEncrypted(account, encodeContent(content, this.identity.username), timestamp, opts);
  }

  async send(username: string, text: string): Promise<{ timestamp: number }> {
    this.assertOpen();
    if (typeof text !== 'string' || text.length === 0) throw new SdkError('INVALID_INPUT', 'the message is empty');
    return this.sendData(username, text, []);
  }

  /**
   * Encrypts a file, uploads it (resuming an interrupted upload of the same
   * unchanged file), then sends a message carrying its pointer and `text`.
   */
  async sendFile(username: string, file: SendFileOptions & { text?: string }): Promise<{ timestamp: number; attachment: AttachmentInfo }> {
    this.assertOpen();
    const text = file.text ?? '';
    if (Buffer.byteLength(text) > Limits.maxBodyTextBytes) throw new SdkError('INVALID_INPUT', 'the message is too long');
    await this.resolve(username); // fail on an unknown user before uploading anything
    const pointer = await uploadFile({ db: this.db, serverUrl: this.identity.serverUrl, auth: this.tusAuth() }, file);
    const { timestamp } = await this.sendData(username, text, [pointer]);
    return { timestamp, attachment: { index: 0, size: pointer.size, contentType: pointer.contentType, fileName: pointer.fileName } };
  }

  /** Downloads, verifies and decrypts a received attachment into `dir` (default: `<profile>/downloads`). */
  async downloadAttachment(messageId: string, index: number, opts: { dir?: string; onProgress?: (p: Progress) => void } = {}): Promise<{ path: string } & AttachmentInfo> {
    this.assertOpen();
    const dir = opts.dir ?? join(this.profile.dir, 'downloads');
    return downloadReceived(this.db, this.identity.serverUrl, messageId, index, dir, opts.onProgress);
  }

  /** Received attachments that are not saved yet (e.g. an earlier download was interrupted). */
  pendingAttachments(): Array<{ messageId: string } & AttachmentInfo> {
    this.assertOpen();
    return pendingDownloads(this.db);
  }

  private tusAuth(): string {
    return basicAuth({ accountId: this.identity.accountId, deviceId: this.identity.deviceId, password: this.password() });
  }

  private async sendData(username: string, text: string, attachments: Attachment[]): Promise<{ timestamp: number }> {
    if (Buffer.byteLength(text) > Limits.maxBodyTextBytes) throw new SdkError('INVALID_INPUT', 'the message is too long');
    const account = await this.resolve(username);
    const name = normalizeUsername(username);
    const timestamp = this.nextTimestamp();
    const id = `out:${timestamp}`;
    this.db
      .prepare("INSERT INTO messages (id, account, device, direction, timestamp, server_timestamp, body, status, username) VALUES (?, ?, ?, 'out', ?, 0, ?, 'pending', ?)")
      .run([id, account, this.identity.deviceId, timestamp, text, name]);
    try {
      // Our profile key travels only inside E2EE messages, so the recipient can send to us sealed.
      const base = { body: text, timestamp, profileKey: this.profileKey };
      const message = attachments.length > 0 ? { ...base, attachments } : base;
      await this.sendContent(account, { kind: 'data', message }, timestamp, { log: true, urgent: true, sealed: true });
    } catch (err) {
      this.db.prepare("UPDATE messages SET status = 'failed' WHERE id = ?").run([id]);
      throw err;
    }
    this.db.prepare("UPDATE messages SET status = 'sent' WHERE id = ? AND status = 'pending'").run([id]);
    this.emit('sent', { to: name, timestamp, body: text });
    // Our other devices learn about it through a sync transcript (when we have any; a 409 fixes the set).
    if (account !== this.identity.accountId && (await this.hasOtherOwnDevices())) {
      this.spawn(() =>
        this.sendContent(this.identity.accountId, { kind: 'syncSent', destination: account as never, timestamp, message: { body: text, timestamp, ...(attachments.length > 0 ? { attachments } : {}) } }, timestamp, {
          log: false,
          urgent: false,
        }),
      );
    }
    return { timestamp };
  }

  async sendReadReceipt(username: string, timestamps: number[]): Promise<void> {
    this.assertOpen();
    if (timestamps.length === 0) return;
    if (timestamps.length > 100 || !timestamps.every((t) => Number.isSafeInteger(t) && t >= 0))
      throw new SdkError('INVALID_INPUT', 'timestamps must be 1..100 non-negative integers');
    const account = await this.resolve(username);
    await this.sendContent(account, { kind: 'receipt', type: 'read', timestamps }, this.nextTimestamp(), { log: false, urgent: false, sealed: true });
    const mark = this.db.prepare("UPDATE messages SET status = 'read' WHERE account = ? AND direction = 'in' AND timestamp = ?");
    this.db.transaction(() => timestamps.forEach((t) => mark.run([account, t])))();
    // Our other devices mark them read too.
    if (account !== this.identity.accountId && (await this.hasOtherOwnDevices())) {
      const reads = timestamps.map((timestamp) => ({ sender: account as never, timestamp }));
      this.spawn(() => this.sendContent(this.identity.accountId, { kind: 'syncRead', reads }, this.nextTimestamp(), { log: false, urgent: false }));
    }
  }

  async sendTyping(username: string, started: boolean): Promise<void> {
    this.assertOpen();
    const account = await this.resolve(username);
    const ts = this.nextTimestamp();
    // Online only: a typing indicator is never queued for a device that is offline.
    await this.sendContent(account, { kind: 'typing', action: started ? 'started' : 'stopped', timestamp: ts }, ts, {
      log: false,
      urgent: false,
      sealed: true,
      online: true,
    });
  }

  // ---------------------------------------------------------------- groups (groups.ts)

  /**
   * Create a group with this account as its admin and send the signed state to every member.
   * @throws SdkError INVALID_TITLE, GROUP_TOO_LARGE, USER_NOT_FOUND, INVALID_INPUT
   */
  async createGroup(title: string, usernames: string[]): Promise<GroupInfo> {
    this.assertOpen();
    return this.groups.createGroup(title, usernames);
  }

  /** Admin only. `group`: full id, unique id prefix (>= 6 hex), or exact unique title. @throws SdkError UNKNOWN_GROUP, AMBIGUOUS_GROUP, NOT_GROUP_ADMIN, NOT_GROUP_MEMBER, ALREADY_MEMBER, GROUP_TOO_LARGE, USER_NOT_FOUND */
  async addGroupMember(group: string, username: string): Promise<GroupInfo> {
    this.assertOpen();
    return this.groups.addGroupMember(group, username);
  }

  /** Admin only; every remaining member rotates its sender key before its next send. @throws SdkError UNKNOWN_GROUP, AMBIGUOUS_GROUP, NOT_GROUP_ADMIN, NOT_GROUP_MEMBER, USER_NOT_FOUND */
  async removeGroupMember(group: string, username: string): Promise<GroupInfo> {
    this.assertOpen();
    return this.groups.removeGroupMember(group, username);
  }

  /** Leave: like being removed (the group stays readable here, inactive). @throws SdkError UNKNOWN_GROUP, AMBIGUOUS_GROUP, NOT_GROUP_MEMBER */
  async leaveGroup(group: string): Promise<void> {
    this.assertOpen();
    return this.groups.leaveGroup(group);
  }

  /** Local, no network. @throws SdkError UNKNOWN_GROUP, AMBIGUOUS_GROUP */
  groupInfo(group: string): GroupInfo {
    this.assertOpen();
    return this.groups.groupInfo(group);
  }

  listGroups(): GroupInfo[] {
    this.assertOpen();
    return this.groups.listGroups();
  }

  /** One Sender Key message in one multi-recipient sealed upload. @throws SdkError UNKNOWN_GROUP, AMBIGUOUS_GROUP, NOT_GROUP_MEMBER, INVALID_INPUT */
  async sendGroup(group: string, text: string): Promise<{ timestamp: number }> {
    this.assertOpen();
    return this.groups.sendGroup(group, text);
  }

  private groupHost(): Groups {
    return new Groups({
      db: this.db,
      stores: this.stores,
      me: { account: this.identity.accountId, device: this.identity.deviceId, username: this.identity.username },
      localAddress: this.localAddress,
      identityKeyPair: this.identityKeyPair,
      profileKey: this.profileKey,
      crypto: this.crypto,
      atomically: (fn) => this.atomically(fn),
      sendContent: (account, content, timestamp) => this.sendContent(account, content, timestamp, { log: true, urgent: true, sealed: true }),
      deliverBuilt: (account, timestamp, build) =>
        this.deliver({ account, timestamp, urgent: true, build: async (device) => ({ type: EnvelopeType.UnidentifiedSender, content: await build(device) }) }),
      ensureSessions: (account) => this.ensureSessions(account),
      fixDevices: (account, p) => this.fixDevices(account, p),
      senderCertificate: () => this.senderCertificate(),
      anonRequest: (verb, path, body, headers) => this.anon.request(verb, path, body, headers),
      call: (verb, path, body) => this.call(verb, path, body),
      requestResend: (source, dem) => this.spawn(() => this.sendDecryptionError(source, dem)),
      resolve: (username) => this.resolve(username),
      lookup: async (username) => this.lookup(normalizeUsername(username)),
      usernameFor: (account) => this.usernameFor(account),
      verifyClaim: (claim, account) => this.verifyClaim(claim, account),
      hasOtherOwnDevices: () => this.hasOtherOwnDevices(),
      nextTimestamp: () => this.nextTimestamp(),
      emitAlert: (a) => this.emit('groupAlert', a),
      emitUpdate: (u) => this.emit('groupUpdate', u),
      emitMessage: (m) => this.emit('message', { ...m, attachments: [] }),
      emitSent: (s) => this.emit('sent', s),
      emitError: (err) => this.emit('error', err),
      spawn: (task) => this.spawn(task),
      markSeen: (env, triple) => this.markSeen(env, triple),
      seenTriple: (account, device, ts) => this.seenTriple(account, device, ts),
    });
  }

  // ---------------------------------------------------------------- trust

  async safetyNumber(username: string): Promise<string> {
    this.assertOpen();
    const account = await this.resolve(username);
    return safetyNumber(
      { accountId: this.identity.accountId, identityKey: this.identityKeyPair.publicKey.serialize() },
      { accountId: account, identityKey: await this.remoteIdentity(account) },
    );
  }

  private async remoteIdentity(account: string): Promise<Uint8Array> {
    let row = this.stores.identity.row(account);
    if (!row) {
      // Unknown contact: learn its key the usual way, by starting sessions.
      await this.ensureSessions(account);
      row = this.stores.identity.row(account);
    }
    if (!row) throw new SdkError('USER_NOT_FOUND', 'the user has no identity key');
    return row.key;
  }

  async verify(username: string, number: string): Promise<void> {
    this.assertOpen();
    if (typeof number !== 'string') throw new SdkError('INVALID_INPUT', 'the safety number must be a string');
    const account = await this.resolve(username);
    const key = await this.remoteIdentity(account);
    const expected = safetyNumber(
      { accountId: this.identity.accountId, identityKey: this.identityKeyPair.publicKey.serialize() },
      { accountId: account, identityKey: key },
    );
    checkSafetyNumber(expected, number);
    await this.crypto.run(async () => {
      this.stores.identity.setRow(account, { key, status: IdentityStatus.Verified });
      this.stores.commit();
    });
  }

  /** Trust state of a contact: 'default' (trusted on first use), 'verified', or 'unverified' (changed after verification). */
  async trustState(username: string): Promise<'unknown' | 'default' | 'verified' | 'unverified'> {
    const row = this.stores.identity.row(await this.resolve(username));
    if (!row) return 'unknown';
    return row.status === IdentityStatus.Verified ? 'verified' : row.status === IdentityStatus.Unverified ? 'unverified' : 'default';
  }

  // ---------------------------------------------------------------- devices

  /**
   * Wait for a primary device to link this one: opens a provisioning socket,
   * hands the link (to show as text and QR code) to `onLink`, and once the
   * primary has answered registers this device and creates its profile.
   * @throws SdkError PROFILE_EXISTS, LINK_FAILED, RELAY_UNREACHABLE
   */
  static async link(opts: {
    profileDir: string;
    serverUrl: string;
    passphrase: string | null;
    onLink: (link: string) => void;
    /** Called with how many messages of the primary's history were imported (0 when none was offered or it failed). */
    onHistory?: (imported: number) => void;
    timeoutMs?: number;
  }): Promise<ParleyClient> {
    try {
      new URL(opts.serverUrl);
    } catch {
      throw new SdkError('INVALID_INPUT', 'serverUrl is not a URL');
    }
    if (profileExists(opts.profileDir)) throw new SdkError('PROFILE_EXISTS', 'a profile already exists in this directory');
    const pending: PendingLink = await startLinking(opts.serverUrl, opts.timeoutMs);
    let archive: { id: string; key: Uint8Array } | null;
    try {
      opts.onLink(pending.link);
      const message = await pending.message;
      archive = (await registerLinkedDevice({ profileDir: opts.profileDir, passphrase: opts.passphrase, serverUrl: opts.serverUrl, message })).archive;
    } finally {
      pending.cancel();
    }
    const client = await ParleyClient.open({ profileDir: opts.profileDir, passphrase: opts.passphrase });
    // History is a convenience: a missing, expired or damaged archive leaves the device linked but empty.
    const imported = archive ? await client.importArchive(archive).catch(() => 0) : 0;
    opts.onHistory?.(imported);
    // As at registration: pin the trust root (sealed messages may arrive first thing) and upload one-time keys.
    // Both are retried on connect if they fail here.
    await client.setupSealedSender().catch(() => undefined);
    await client.uploadOneTimeKeys({ ecCount: 0, kyberCount: 0 }).catch(() => undefined);
    return client;
  }

  /**
   * Approve a new device (primary only): fetch a single-use provisioning code
   * and send the account identity key pair, profile key and code to the
   * device named by `link`, end-to-end encrypted to its ephemeral key.
   * @throws SdkError INVALID_INPUT (not a link), FORBIDDEN (not the primary)
   */
  async linkDevice(link: string, opts: { history?: boolean } = {}): Promise<void> {
    this.assertOpen();
    const info = parseLink(link);
    const archive = opts.history === false ? null : await this.uploadArchive();
    let code: string;
    try {
      code = processProvisioningCodeResponse(replyJson(expectOk(await this.call('GET', '/v1/devices/provisioning/code')))).code;
    } catch (err) {
      if (err instanceof WireError) throw new SdkError('RELAY_ERROR', 'the relay sent a malformed answer', { cause: err });
      throw err;
    }
    const message = encodeProvisionMessage({
      accountId: this.identity.accountId as never,
      username: this.identity.username,
      identityKeyPublic: this.identityKeyPair.publicKey.serialize(),
      identityKeyPrivate: this.identityKeyPair.privateKey.serialize(),
      profileKey: this.profileKey,
      provisioningCode: code,
      archive,
    });
    const envelope = encodeProvisionEnvelope(sealProvision(info.publicKey, message));
    expectOk(await this.call('PUT', `/v1/provisioning/${info.address}`, { binary: envelope }));
  }

  /** Encrypt recent history under a fresh key and leave it on the relay for the new device; null when that fails. */
  private async uploadArchive(): Promise<{ id: string; key: Uint8Array } | null> {
    try {
      const key = new Uint8Array(randomBytes(ARCHIVE_KEY_BYTES));
      const blob = encryptArchive(key, exportHistory(this.db));
      // HTTP, not the socket: an archive can be larger than a socket frame.
      const reply = await this.http.request('PUT', '/v1/devices/archive', { binary: blob });
      if (reply.status !== 200) return null;
      return { id: processArchiveUploadResponse(replyJson(reply)).id, key };
    } catch {
      return null;
    }
  }

  /** Download (the relay then deletes it), verify, decrypt and import a history archive. Returns how many messages were added. */
  private async importArchive(archive: { id: string; key: Uint8Array }): Promise<number> {
    const reply = expectOk(await this.http.request('GET', `/v1/devices/archive/${archive.id}`));
    let blob: Uint8Array;
    try {
      blob = processArchiveDownloadResponse(replyJson(reply));
    } catch (err) {
      throw new SdkError('RELAY_ERROR', 'the relay sent a malformed answer', { cause: err });
    }
    const plaintext = decryptArchive(archive.key, blob);
    return this.crypto.run(async () => importHistory(this.db, plaintext));
  }

  /** The account's devices as the relay lists them. */
  async listDevices(): Promise<DeviceInfo[]> {
    this.assertOpen();
    try {
      return processDeviceListResponse(replyJson(expectOk(await this.call('GET', '/v1/devices')))).devices;
    } catch (err) {
      if (err instanceof WireError) throw new SdkError('RELAY_ERROR', 'the relay sent a malformed answer', { cause: err });
      throw err;
    }
  }

  /**
   * Remove a device: the primary may remove any linked device, a linked
   * device only itself. Our sessions with it are dropped too.
   * @throws SdkError FORBIDDEN, USER_NOT_FOUND (no such device)
   */
  async removeDevice(deviceId: number): Promise<void> {
    this.assertOpen();
    if (!Number.isInteger(deviceId) || deviceId < 2 || deviceId > 127) throw new SdkError('INVALID_INPUT', 'device id must be 2..127');
    expectOk(await this.call('DELETE', `/v1/devices/${deviceId}`));
    await this.crypto.run(async () => void this.stores.commit(() => this.stores.session.delete(this.identity.accountId, deviceId)));
  }

  /**
   * True when this account has devices besides this one (from our sessions,
   * else from the relay). Not cached: another process on the primary (e.g.
   * `parley devices add` next to a running `parley chat`) may have just
   * linked one, and that device must get this transcript.
   */
  private async hasOtherOwnDevices(): Promise<boolean> {
    if (this.knownDevices(this.identity.accountId).all.length > 0) return true;
    try {
      return (await this.listDevices()).some((d) => d.deviceId !== this.identity.deviceId);
    } catch {
      return false; // the relay is unreachable: no transcript this time
    }
  }

  // ---------------------------------------------------------------- history

  async history(username: string, limit = 50): Promise<HistoryEntry[]> {
    this.assertOpen();
    if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new SdkError('INVALID_INPUT', 'limit must be 1..10000');
    const account = await this.resolve(username);
    const rows = this.db
      .prepare('SELECT direction, timestamp, body, status FROM messages WHERE account = ? AND group_id IS NULL ORDER BY timestamp DESC, rowid DESC LIMIT ?')
      .all([account, limit]);
    return rows
      .map((r) => ({ direction: r.direction === 'in' ? ('in' as const) : ('out' as const), timestamp: Number(r.timestamp), body: String(r.body), status: String(r.status) }))
      .reverse();
  }

  // ---------------------------------------------------------------- receive pipeline

  private async onRelayRequest(req: RequestFrame): Promise<RequestResult> {
    if (this.closed) return { status: 503 };
    if (req.verb === 'PUT' && req.path === '/api/v1/message') {
      try {
        return await this.handleEnvelope(req.body);
      } catch (err) {
        // Not processed (e.g. the database failed): no ack, so the relay redelivers.
        this.emit('error', err instanceof Error ? err : new Error('envelope processing failed'));
        return { status: 500 };
      }
    }
    if (req.verb === 'PUT' && req.path === '/api/v1/queue/empty') {
      this.backlog = false;
      return {
        status: 200,
        after: () => {
          this.receipts.kick(); // the backlog is handled: the receipts it left waiting go now
          this.emit('queueEmpty');
        },
      };
    }
    if (req.verb === 'PUT' && req.path === '/api/v1/keys/low') {
      // The notice's counts may be stale by the time we act; refillKeys asks again.
      return { status: 200, after: () => this.spawn(() => this.refillKeys()) };
    }
    return { status: 404 };
  }

  /** For identified envelopes, `seenGuid` also learns whether the sender triple was seen, for `seenTriple` after the decrypt. */
  private tripleHint: { key: string; seen: boolean } | null = null;

  /** Which seen_envelopes keys certainly do not exist, so most checks skip the table (seen-filter.ts). */
  private readonly seenFilter: SeenFilter;

  // Seen checks also see envelopes staged for the next group commit (stageSeen). An envelope counts as
  // processed when seen_envelopes has it or, for text messages kept without a seen row (stageSeen),
  // when messages has its id (relay timestamp + guid) or its (sender, device, timestamp).
  private seenGuid(env: Envelope): boolean {
    const guid = ab(env.serverGuid);
    this.tripleHint = null;
    return this.stores.read(`seen:g:${hex(guid)}`, () => {
      const s = env.source;
      const mayGuid = this.seenFilter.mayHaveGuid(guid);
      // Rows from before migration 7 have no server_ts; each OR term is one index probe.
      const ts = env.serverTimestamp;
      if (!s)
        return (
          mayGuid &&
          (this.db
            .prepare('SELECT 1 FROM seen_envelopes WHERE (server_ts = ? AND server_guid = ?) OR (server_ts IS NULL AND server_guid = ?)')
            .get([ts, guid, guid]) !== undefined ||
            this.keptMessage(env))
        );
      const tripleKey = `seen:t:${s.account}:${s.device}:${env.clientTimestamp}`;
      const mayTriple = this.seenFilter.mayHaveTriple(s.account, s.device, env.clientTimestamp);
      if (!mayGuid && !mayTriple) {
        this.tripleHint = { key: tripleKey, seen: false };
        return false;
      }
      // One statement for both checks: is this envelope, or another with the same (sender, device, timestamp), processed?
      const rows = this.db
        .prepare(
          'SELECT server_guid = ? AND (server_ts = ? OR server_ts IS NULL) AS same FROM seen_envelopes ' +
            'WHERE (server_ts = ? AND server_guid = ?) OR (server_ts IS NULL AND server_guid = ?) OR (account = ? AND device = ? AND client_ts = ?)',
        )
        .all([guid, ts, ts, guid, guid, s.account, s.device, env.clientTimestamp]);
      if (rows.some((r) => Number(r.same) === 1) || (mayGuid && this.keptMessage(env))) return true;
      this.tripleHint = { key: tripleKey, seen: rows.length > 0 || (mayTriple && this.keptTriple(s.account, s.device, env.clientTimestamp)) };
      return false;
    });
  }
  private seenTriple(account: string, device: number, ts: number): boolean {
    const key = `seen:t:${account}:${device}:${ts}`;
    const hint = this.tripleHint;
    this.tripleHint = null;
    return this.stores.read(key, () => {
      if (hint?.key === key) return hint.seen;
      if (!this.seenFilter.mayHaveTriple(account, device, ts)) return false;
      return (
        this.db.prepare('SELECT 1 FROM seen_envelopes WHERE account = ? AND device = ? AND client_ts = ?').get([account, device, ts]) !== undefined ||
        this.keptTriple(account, device, ts)
      );
    });
  }
  /**
   * True when this envelope's message is in `messages` (kept without a seen row). That row is then the
   * only record that the envelope was processed: anything that ever deletes a received message must
   * first write its seen row (markSeen), or a redelivered copy would show the message again.
   */
  private keptMessage(env: Envelope): boolean {
    return this.db.prepare('SELECT 1 FROM messages WHERE id = ?').get([receivedMessageId(env)]) !== undefined;
  }
  /** True when a received message from (account, device) with this timestamp is in `messages`. */
  private keptTriple(account: string, device: number, ts: number): boolean {
    return (
      this.db.prepare("SELECT 1 FROM messages WHERE account = ? AND timestamp = ? AND device = ? AND direction = 'in'").get([account, ts, device]) !==
      undefined
    );
  }
  /**
   * markSeen(env, true) as a store write, so it is staged with the rest of the envelope's work.
   * With `kept` (a text message whose `messages` row, written in the same commit, has this envelope's
   * id and its timestamp is the envelope's), no seen row is written: the seen checks find that row.
   */
  private stageSeen(env: Envelope, source: { account: string; device: number }, kept = false): void {
    this.stores.write(`seen:g:${hex(env.serverGuid)}`, true, () =>
      kept ? this.seenFilter.add(env.serverGuid, { account: source.account, device: source.device, ts: env.clientTimestamp }) : this.markSeen(env, true),
    );
    this.stores.write(`seen:t:${source.account}:${source.device}:${env.clientTimestamp}`, true, () => undefined);
  }
  /** Marks an envelope processed; with `triple`, also its (sender, device, timestamp) so a resent copy is dropped. */
  private markSeen(env: Envelope, triple: boolean): void {
    const source = triple && env.source ? { account: env.source.account, device: env.source.device, ts: env.clientTimestamp } : null;
    this.seenFilter.add(env.serverGuid, source);
    this.db
      .prepare('INSERT OR IGNORE INTO seen_envelopes (server_ts, server_guid, account, device, client_ts, seen_at) VALUES (?, ?, ?, ?, ?, ?)')
      .run([
        env.serverTimestamp,
        ab(env.serverGuid),
        triple ? (env.source?.account ?? null) : null,
        triple ? (env.source?.device ?? null) : null,
        triple ? env.clientTimestamp : null,
        Date.now(),
      ]);
  }

  /**
   * One pushed envelope: decrypt, commit ratchet state + result in one
   * transaction, then ack (status 200), then emit (`after`). Messages are
   * staged and committed in groups (receive-queue.ts): the ack and the event
   * wait for the commit that contains the message.
   */
  private async handleEnvelope(bytes: Uint8Array): Promise<RequestResult> {
    let env: Envelope;
    try {
      env = processEnvelope(bytes);
    } catch {
      return { status: 200 }; // can never be processed; ack so it does not block the queue
    }
    if (env.destination.account !== this.identity.accountId || env.destination.device !== this.identity.deviceId) return { status: 200 };
    const source = env.source;
    // A sealed envelope is checked once its sender is known (openSealedAndCommit): one query for both seen checks.
    if (!source && env.type === EnvelopeType.UnidentifiedSender) return this.crypto.run(async () => this.openSealedAndCommit(env));
    if (this.seenGuid(env)) return { status: 200 };
    if (!source) {
      await this.crypto.run(async () => this.markSeen(env, false));
      return { status: 200 };
    }

    if (env.type === EnvelopeType.ServerDeliveryReceipt) {
      await this.crypto.run(async () =>
        this.db.transaction(() => {
          this.markSeen(env, false);
          this.db
            .prepare("UPDATE messages SET status = 'delivered' WHERE account = ? AND direction = 'out' AND timestamp = ? AND status IN ('pending', 'sent')")
            .run([source.account, env.clientTimestamp]);
        })(),
      );
      return { status: 200, after: () => this.emit('serverReceipt', { fromAccount: source.account, timestamp: env.clientTimestamp }) };
    }

    if (env.type === EnvelopeType.PlaintextContent) {
      let dem: DecryptionErrorMessage | null;
      try {
        dem = DecryptionErrorMessage.extractFromSerializedBody(PlaintextContent.deserialize(ab(env.content)).body());
      } catch {
        dem = null;
      }
      return this.onDecryptionError(env, dem);
    }

    if (env.type !== EnvelopeType.Ciphertext && env.type !== EnvelopeType.PreKeyMessage) {
      await this.crypto.run(async () => this.markSeen(env, false));
      return { status: 200 };
    }

    return this.crypto.run(async () => this.decryptAndCommit(env, source));
  }

  /**
   * A sealed envelope: open it and check its certificate (sealed.ts), then run
   * the inner message through the normal pipeline with the certificate's
   * sender and the requirement that the session's identity key is the
   * certificate's. Rejected envelopes are acked and dropped. An envelope
   * already processed (same server guid) is acked and dropped as before the
   * open; opening the outer layer writes nothing. Runs on the crypto queue.
   */
  private async openSealedAndCommit(env: Envelope): Promise<RequestResult> {
    const root = pinnedTrustRoot(this.db);
    const opened = root
      ? await openSealed(
          env.content,
          this.stores.identity,
          root,
          Date.now(),
          { account: this.identity.accountId, device: this.identity.deviceId },
          this.certificateChecks,
        )
      : ({ kind: 'rejected', reason: 'untrusted' } as const);
    if (opened.kind !== 'opened') {
      if (this.seenGuid(env)) return { status: 200 };
      if (opened.kind === 'rejected') return this.rejectSealed(env, opened.reason);
      return this.groups.receiveMessage(env, opened);
    }
    const inner: Envelope = { ...env, type: opened.type, content: opened.content, source: opened.sender as Envelope['source'] };
    // With the sender known, one query answers both "this guid?" and (for seenTriple) "this sender's timestamp?".
    if (this.seenGuid(inner)) return { status: 200 };
    return this.decryptAndCommit(inner, opened.sender, opened.certificateKey);
  }

  private rejectSealed(env: Envelope, reason: string): RequestResult {
    this.stores.rollback();
    this.markSeen(env, false);
    const err = new SdkError('SEALED_SENDER_REJECTED', `dropped a sealed message: ${reason}`);
    return { status: 200, after: () => this.emit('error', err) };
  }

  /** Runs on the crypto queue. With `certificateKey` (sealed), the session's identity key must equal it. */
  private async decryptAndCommit(env: Envelope, source: { account: string; device: number }, certificateKey?: PublicKey): Promise<RequestResult> {
    const address = this.addr(source.account, source.device);
    let plaintext: Uint8Array;
    try {
      plaintext =
        env.type === EnvelopeType.PreKeyMessage
          ? await signalDecryptPreKey(
              PreKeySignalMessage.deserialize(plainBytes(env.content)),
              address,
              this.localAddress,
              this.stores.session,
              this.stores.identity,
              this.stores.preKey,
              this.stores.signedPreKey,
              this.stores.kyberPreKey,
            )
          : await signalDecrypt(SignalMessage.deserialize(plainBytes(env.content)), address, this.localAddress, this.stores.session, this.stores.identity);
    } catch (err) {
      this.stores.rollback();
      this.markSeen(env, false);
      if (isSignalError(err, ErrorCode.DuplicatedMessage)) return { status: 200 };
      // Ask the sender to resend on a fresh session.
      const type = env.type === EnvelopeType.PreKeyMessage ? CiphertextMessageType.PreKey : CiphertextMessageType.Whisper;
      let dem: DecryptionErrorMessage | null;
      try {
        dem = DecryptionErrorMessage.forOriginal(ab(env.content), type, env.clientTimestamp, source.device);
      } catch {
        dem = null;
      }
      const demToSend = dem;
      return { status: 200, after: () => demToSend && this.spawn(() => this.sendDecryptionError(source, demToSend)) };
    }

    if (certificateKey) {
      // libsignal binds the certificate to the outer layer only; make sure it names the identity of the session that decrypted.
      if (!this.stores.identity.isKey(source.account, certificateKey)) return this.rejectSealed(env, 'identity mismatch');
    }

    let decoded;
    try {
      decoded = processContent(unpadPlaintext(plaintext));
    } catch {
      // Decrypted but meaningless: keep the ratchet step, drop the content.
      this.stores.commit(() => this.markSeen(env, false));
      return { status: 200 };
    }

    if (this.seenTriple(source.account, source.device, env.clientTimestamp)) {
      // A resent copy of something already processed.
      this.stores.commit(() => this.markSeen(env, false));
      return { status: 200 };
    }

    const c = decoded.content;
    const preparing = this.groups.prepare(c, source, env, decoded.senderUsername);
    const group = preparing ? await preparing : null;
    if (group) {
      const after = this.stores.commit(() => {
        this.markSeen(env, true);
        return group();
      });
      return { status: 200, ...(after ? { after } : {}) };
    }
    let from: string | null = null;
    if (c.kind === 'data' || c.kind === 'receipt' || c.kind === 'typing') {
      const claimed = this.verifyClaim(decoded.senderUsername, source.account);
      from = claimed instanceof Promise ? await claimed : claimed;
    }
    const id = receivedMessageId(env);
    // Set by `write` when it runs, which for staged kinds is the group commit (receive-queue.ts).
    let after: (() => void) | undefined;

    const write = () => {
      switch (c.kind) {
        case 'data': {
          this.db
            .prepare("INSERT OR IGNORE INTO messages (id, account, device, direction, timestamp, server_timestamp, body, status, username) VALUES (?, ?, ?, 'in', ?, ?, ?, 'received', ?)")
            .run([id, source.account, source.device, c.message.timestamp, env.serverTimestamp, c.message.body, from]);
          const attachments = storeReceived(this.db, id, c.message.attachments ?? []);
          // Every message carries the sender's profile key; a group commit writes each sender's once.
          const profileKey = c.message.profileKey && source.account !== this.identity.accountId ? c.message.profileKey : null;
          if (profileKey && this.stores.oncePerCommit(`pk:${source.account}:${hex(profileKey)}`))
            storeContactProfileKey(this.db, source.account, profileKey);
          const m: IncomingMessage = {
            id,
            from,
            fromAccount: source.account,
            fromDevice: source.device,
            timestamp: c.message.timestamp,
            serverTimestamp: env.serverTimestamp,
            body: c.message.body,
            attachments,
          };
          after = () => {
            this.emit('message', m);
            this.receipts.add(source.account, m.timestamp);
          };
          break;
        }
        case 'receipt': {
          const status = c.type === 'read' ? 'read' : 'delivered';
          const from_ = c.type === 'read' ? "('pending', 'sent', 'delivered')" : "('pending', 'sent')";
          const upd = this.db.prepare(`UPDATE messages SET status = ? WHERE account = ? AND direction = 'out' AND timestamp = ? AND status IN ${from_}`);
          for (const t of c.timestamps) upd.run([status, source.account, t]);
          const r = { from, fromAccount: source.account, type: c.type, timestamps: c.timestamps };
          after = () => this.emit('receipt', r);
          break;
        }
        case 'typing': {
          const t = { from, fromAccount: source.account, started: c.action === 'started' };
          after = () => this.emit('typing', t);
          break;
        }
        case 'syncSent': {
          if (source.account !== this.identity.accountId) break; // only our own devices send transcripts
          const to = this.usernameFor(c.destination) ?? c.destination;
          this.db
            .prepare("INSERT OR IGNORE INTO messages (id, account, device, direction, timestamp, server_timestamp, body, status, username) VALUES (?, ?, ?, 'out', ?, ?, ?, 'sent', ?)")
            .run([id, c.destination, source.device, c.message.timestamp, env.serverTimestamp, c.message.body, this.usernameFor(c.destination)]);
          // Files we sent from another device can be downloaded here too (downloadAttachment / pendingAttachments).
          storeReceived(this.db, id, c.message.attachments ?? []);
          const s = { to, timestamp: c.message.timestamp, body: c.message.body };
          after = () => this.emit('sent', s);
          break;
        }
        case 'syncRead': {
          if (source.account !== this.identity.accountId) break; // only our own devices sync reads
          const mark = this.db.prepare("UPDATE messages SET status = 'read' WHERE account = ? AND direction = 'in' AND timestamp = ?");
          const byAccount = new Map<string, number[]>();
          for (const r of c.reads) {
            mark.run([r.sender, r.timestamp]);
            byAccount.set(r.sender, [...(byAccount.get(r.sender) ?? []), r.timestamp]);
          }
          after = () => {
            for (const [account, timestamps] of byAccount) this.emit('syncRead', { account, timestamps });
          };
          break;
        }
        case 'decryptionError': {
          let dem: DecryptionErrorMessage | null;
          try {
            dem = DecryptionErrorMessage.deserialize(ab(c.message));
          } catch {
            dem = null;
          }
          if (dem && dem.deviceId() === this.identity.deviceId) {
            this.stores.session.archive(source.account, source.device);
            const ts = dem.timestamp();
            after = () => this.spawn(() => this.resendAfterError(source, ts));
          }
          break;
        }
        case 'null':
          break;
      }
    };
    if (c.kind === 'data' || c.kind === 'receipt' || c.kind === 'typing' || c.kind === 'null') {
      // Written by the next group commit, with the envelopes decrypted after it; acked after that commit.
      this.stageSeen(env, source, c.kind === 'data' && c.message.timestamp === env.clientTimestamp);
      this.stores.stage(write);
    } else {
      this.stores.commit(() => {
        this.markSeen(env, true);
        write();
      });
    }
    return { status: 200, after: () => after?.() };
  }

  // ---------------------------------------------------------------- decryption errors

  /** A peer could not decrypt something we sent: archive that session, then resend from the send log. */
  private async onDecryptionError(env: Envelope, dem: DecryptionErrorMessage | null): Promise<RequestResult> {
    const source = env.source;
    if (!source) return { status: 200 };
    // Every device of our account receives the request; only the original sender acts on it.
    const mine = dem !== null && dem.deviceId() === this.identity.deviceId;
    await this.crypto.run(async () => {
      if (mine) this.stores.session.archive(source.account, source.device);
      this.stores.commit(() => this.markSeen(env, false));
    });
    if (!mine || !dem) return { status: 200 };
    const ts = dem.timestamp();
    return { status: 200, after: () => this.spawn(() => this.resendAfterError(source, ts)) };
  }

  private async resendAfterError(source: { account: string; device: number }, timestamp: number): Promise<void> {
    if (await this.groups.resend(source, timestamp)) return;
    const row = this.db
      .prepare('SELECT content FROM send_log WHERE account = ? AND device = ? AND timestamp = ? ORDER BY id DESC LIMIT 1')
      .get([source.account, source.device, timestamp]);
    if (row && row.content instanceof Uint8Array) {
      // Same timestamp: devices that already have it drop the copy as a duplicate.
      await this.sendEncrypted(source.account, row.content, timestamp, { log: false, urgent: true, sealed: true });
    } else {
      // Nothing to resend: a null message still gets a fresh session going.
      await this.sendContent(source.account, { kind: 'null' }, this.nextTimestamp(), { log: false, urgent: false });
    }
  }

  /** Sends a DecryptionErrorMessage (envelope type 8) back to the device whose message failed. */
  private async sendDecryptionError(source: { account: string; device: number }, dem: DecryptionErrorMessage): Promise<void> {
    const content = PlaintextContent.from(dem).serialize();
    await this.deliver({
      account: source.account,
      timestamp: this.nextTimestamp(),
      urgent: false,
      build: async () => ({ type: EnvelopeType.PlaintextContent, content }),
    });
  }
}
