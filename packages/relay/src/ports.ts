/**
 * Ports: the small interfaces the relay core depends on. Adapters (SQLite,
 * PostgreSQL, in-process bus, NATS, …) implement them; the core never imports
 * an adapter.
 */
import type { AccountId, DeviceId, EnvelopeType, KeyCounts, PreKey, SignedPreKey } from '@parley/wire';

/** The durable state of the relay: accounts, devices, keys and queues. */
export interface Store {
  /** Create an account with its primary device (id 1). Usernames are unique after normalization. */
  createAccount(account: NewAccount): Promise<{ kind: 'created' } | { kind: 'usernameTaken' }>;
  /** The password material of a device, or null when the account or device does not exist. */
  getDeviceCredentials(account: AccountId, device: DeviceId): Promise<DeviceCredentials | null>;
  getAccount(account: AccountId): Promise<AccountRecord | null>;
  /** Set (or with null, clear) an account's 16-byte unidentified-access key (sealed sender). */
  setAccessKey(account: AccountId, accessKey: Uint8Array | null): Promise<void>;
  /** Account id for a (normalized) username, or null. */
  lookupUsername(username: string): Promise<AccountId | null>;
  /** Devices of an account in id order; empty when the account does not exist. */
  listDevices(account: AccountId): Promise<DeviceSummary[]>;
  /** Replace the signed / last-resort keys given, append the one-time keys (same key id replaces). */
  storeKeys(account: AccountId, device: DeviceId, keys: KeyUpload): Promise<void>;
  /** How many one-time keys of each kind a device has left. */
  keyCounts(account: AccountId, device: DeviceId): Promise<KeyCounts>;
  /**
   * Atomically take one one-time EC and one one-time Kyber key of each selected
   * device. With no Kyber one-time key left the last-resort key is served; with
   * no EC key left `preKey` is null. Each one-time key is handed out at most once.
   */
  claimBundle(account: AccountId, device: DeviceId | 'all'): Promise<ClaimResult>;
  /**
   * Store envelopes for every listed device in one transaction. With an
   * idempotency key that was seen before, nothing is stored.
   */
  enqueue(batch: EnqueueBatch): Promise<EnqueueResult>;
  /**
   * Group commit: store several independent batches in ONE durable
   * transaction and answer one result per batch, in order. Each batch keeps
   * the meaning of `enqueue` (its own idempotency key, all of its envelopes
   * or none); a later batch repeating the key of an earlier one in the same
   * call is a `duplicate`. When the transaction fails the promise rejects and
   * nothing of any batch is stored.
   */
  enqueueMany(batches: readonly EnqueueBatch[]): Promise<EnqueueResult[]>;
  /** Up to `limit` queued envelopes of a device with a cursor greater than `after`, in queue order. */
  fetchQueue(account: AccountId, device: DeviceId, after: number, limit: number): Promise<QueuedEnvelope[]>;
  /**
   * Delete one acknowledged envelope by its position in the device's queue.
   * Only an envelope matching all of the request (device, cursor AND guid) is
   * deleted, so an ack can never remove a different envelope: `notFound`
   * when it is already gone, the device was removed, or the guid differs.
   * Resolves once the delete has committed; the commit need not be flushed to
   * disk yet (see the adapters): a delete lost in a crash only means the
   * envelope is pushed again, and clients drop repeats.
   */
  deleteEnvelope(request: DeleteRequest): Promise<DeleteResult>;
  /**
   * Delete several acknowledged envelopes in one transaction; one result per
   * request, in order, with the rules of `deleteEnvelope`. The same envelope
   * named twice is deleted once: the later request gets `notFound`.
   */
  deleteEnvelopes(requests: readonly DeleteRequest[]): Promise<DeleteResult[]>;
  /** Delete envelopes and idempotency keys created before `before` (ms since epoch). */
  purge(before: number): Promise<{ envelopes: number; idempotencyKeys: number }>;
  // ---- multi-device (devices.ts, provisioning.ts)
  /**
   * Add a linked device with the lowest free id in 2..127, unless the account
   * already has `maxDevices` devices (the primary counts). All or nothing.
   */
  addDevice(req: NewDevice): Promise<AddDeviceResult>;
  /** Delete a device with its keys and queued envelopes; false when there was no such device. */
  removeDevice(account: AccountId, device: DeviceId): Promise<boolean>;
  /** Devices of an account with when they were added and last connected, in id order. */
  deviceDetails(account: AccountId): Promise<DeviceDetails[]>;
  /** Record that a device connected at `now`. */
  touchDevice(account: AccountId, device: DeviceId, now: number): Promise<void>;
  /** Linked devices (never the primary) last seen before `before`, at most `limit`. */
  idleDevices(before: number, limit: number): Promise<Array<{ account: AccountId; device: DeviceId }>>;
  /** Remember a single-use provisioning code (only its hash is stored). */
  putProvisioningCode(code: ProvisioningCode): Promise<void>;
  /** Consume a provisioning code: its account when it exists and has not expired at `now`, else null. Deletes it and any expired codes. */
  takeProvisioningCode(codeHash: Uint8Array, now: number): Promise<AccountId | null>;
  /** Throws when the store cannot answer. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

export interface NewAccount {
  accountId: AccountId;
  username: string;
  identityKey: Uint8Array;
  createdAt: number;
  device: {
    registrationId: number;
    passwordSalt: Uint8Array;
    passwordHash: Uint8Array;
    signedPreKey: SignedPreKey;
    kyberLastResortKey: SignedPreKey;
  };
}

export interface NewDevice {
  account: AccountId;
  registrationId: number;
  passwordSalt: Uint8Array;
  passwordHash: Uint8Array;
  signedPreKey: SignedPreKey;
  kyberLastResortKey: SignedPreKey;
  createdAt: number;
  maxDevices: number;
}

export type AddDeviceResult = { kind: 'added'; deviceId: DeviceId } | { kind: 'tooMany' } | { kind: 'notFound' };

export interface DeviceDetails {
  deviceId: DeviceId;
  registrationId: number;
  createdAt: number;
  /** When the device last opened its socket (its creation time until then). */
  lastSeen: number;
}

export interface ProvisioningCode {
  codeHash: Uint8Array;
  account: AccountId;
  expiresAt: number;
}

export interface DeviceCredentials {
  passwordSalt: Uint8Array;
  passwordHash: Uint8Array;
}

export interface AccountRecord {
  accountId: AccountId;
  username: string;
  identityKey: Uint8Array;
  /** The unidentified-access key senders present instead of credentials; null until the account sets one. */
  accessKey: Uint8Array | null;
}

export interface DeviceSummary {
  deviceId: DeviceId;
  registrationId: number;
}

export interface KeyUpload {
  preKeys: PreKey[];
  kyberPreKeys: SignedPreKey[];
  signedPreKey: SignedPreKey | null;
  kyberLastResortKey: SignedPreKey | null;
}

export interface ClaimedDevice {
  deviceId: DeviceId;
  registrationId: number;
  preKey: PreKey | null;
  signedPreKey: SignedPreKey;
  kyberPreKey: SignedPreKey;
  /** One-time keys left after this claim. */
  remaining: KeyCounts;
}

export type ClaimResult =
  | { kind: 'bundle'; identityKey: Uint8Array; devices: ClaimedDevice[] }
  | { kind: 'notFound' };

/** An envelope as stored; `content` is opaque ciphertext. */
export interface StoredEnvelope {
  guid: Uint8Array;
  type: EnvelopeType;
  source: { account: AccountId; device: DeviceId } | null;
  destination: { account: AccountId; device: DeviceId };
  clientTimestamp: number;
  serverTimestamp: number;
  content: Uint8Array;
  urgent: boolean;
}

export interface QueuedEnvelope extends StoredEnvelope {
  /** Opaque, increasing position in the device's queue. */
  cursor: number;
}

export interface EnqueueBatch {
  envelopes: StoredEnvelope[];
  /** Null for relay-made envelopes (delivery receipts). */
  idempotencyKey: IdempotencyKey | null;
  now: number;
  /**
   * Called at most once, before `enqueue` resolves, when the batch's
   * envelopes can be read through `fetchQueue`: at the latest when they
   * commit, and with SQLite as soon as the batch is submitted (they are then
   * pushed to an online device while their group waits for the disk, and an
   * ack that arrives first means they are never written). Only the promise
   * of `enqueue` waits for the flush. A batch that turns out to be a repeat,
   * or whose group fails, is no longer readable once `enqueue` has settled.
   * The relay wakes the destination devices here (why that is safe:
   * docs/ARCHITECTURE.md).
   */
  onReadable?: () => void;
}

/**
 * A send is identified by who sent it, to which account, the client's message
 * id and the request's timestamp: a retry repeats the whole request. Stores
 * order their keys by the timestamp first, so honest clients' keys are
 * appended to the end of the index instead of landing on a random page.
 */
export interface IdempotencyKey {
  senderAccount: AccountId;
  senderDevice: DeviceId;
  destination: AccountId;
  messageId: Uint8Array;
  /** The send request's `timestamp` (client clock, ms). */
  timestamp: number;
}

export type EnqueueResult = { kind: 'stored' } | { kind: 'duplicate' };

/**
 * One acknowledged envelope to delete, named by what the pusher holds: the
 * device whose queue holds it, its `cursor` there (QueuedEnvelope.cursor) and
 * its server guid, which must match too.
 */
export interface DeleteRequest {
  account: AccountId;
  device: DeviceId;
  cursor: number;
  guid: Uint8Array;
}

export type DeleteResult =
  | {
      kind: 'deleted';
      type: EnvelopeType;
      source: { account: AccountId; device: DeviceId } | null;
      clientTimestamp: number;
    }
  | { kind: 'notFound' };

/**
 * What a wake-up is about. `replaced:<token>` announces a new socket for the
 * device (on any node); sessions with an older token close with 4409.
 * `online:<base64 envelope>` carries an envelope that is never stored (typing
 * indicators): only a socket open right now pushes it.
 */
export type BusSignal = 'messages' | 'keysLow' | `replaced:${string}` | `online:${string}`;

/** Wakes whichever node holds a device's socket. A lost signal only delays delivery. */
export interface Bus {
  publish(deviceKey: string, signal?: BusSignal): void;
  /** Returns a function that removes the subscription. */
  subscribe(deviceKey: string, fn: (signal: BusSignal) => void): () => void;
  close(): Promise<void>;
}

/** Injected time source (ms since epoch). */
export interface Clock {
  now(): number;
}

/** What a limiter answers for one token. */
export type RateDecision = { kind: 'allowed' } | { kind: 'limited'; retryAfterMs: number };

/**
 * A token-bucket limiter; an in-memory one ships, a shared one can replace it.
 * An in-process limiter answers synchronously (every send takes tokens, and a
 * promise per take is measurable garbage under load); a shared one answers
 * with a promise.
 */
export interface RateLimiter {
  take(bucket: RateBucket, key: string): RateDecision | Promise<RateDecision>;
}

export type RateBucket = 'register' | 'send' | 'bundle' | 'lookup' | 'sealedRecipient' | 'sealedAddress' | 'anonymousSocket';

/** The key used on the bus and in socket maps for one device. */
export function deviceKey(account: AccountId, device: DeviceId): string {
  return `${account}.${device}`;
}

/** The system clock. */
export const systemClock: Clock = { now: () => Date.now() };
