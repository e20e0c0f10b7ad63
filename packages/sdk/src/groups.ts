/**
 * Groups (docs/PROTOCOL.md, "Groups"): client-managed state signed by an
 * admin's account identity key, and messages under libsignal Sender Keys
 * sent as one multi-recipient sealed-sender upload.
 *
 * The relay keeps no group state. Every change is a GroupUpdate sent inside
 * the normal end-to-end encrypted 1:1 content to every member, to removed
 * members and to our own other devices; receivers accept it only under the
 * rules in `judgeUpdate`.
 *
 * Each device has its own sender key per group (its distribution id in the
 * `groups` row). `group_key_shared` records which member devices already
 * hold it, so a send distributes it (SKDM over 1:1) only to devices that
 * lack it: new members, new devices, and everyone after a rotation. Any
 * accepted removal marks the row for rotation: the next send starts a new
 * distribution id, so removed members cannot read later messages.
 *
 * Runs inside ParleyClient; `GroupHost` is the small part of the client it uses.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import {
  CiphertextMessageType,
  ContentHint,
  DecryptionErrorMessage,
  ErrorCode,
  type IdentityKeyPair,
  LibSignalErrorBase,
  ProtocolAddress,
  PublicKey,
  type SenderCertificate,
  SenderKeyDistributionMessage,
  UnidentifiedSenderMessageContent,
  groupDecrypt,
  groupEncrypt,
  processSenderKeyDistributionMessage,
  sealedSenderEncrypt,
  sealedSenderMultiRecipientEncrypt,
  signalEncrypt,
} from '@signalapp/libsignal-client';
import {
  ACCESS_KEY_HEADER,
  type AccountId,
  type Content,
  type DataMessage,
  type DeviceId,
  type Envelope,
  EnvelopeType,
  type GroupMember,
  type GroupState,
  type GroupUpdate,
  GroupLimits,
  Limits,
  type OutgoingDeviceMessage,
  MULTI_TIMESTAMP_HEADER,
  MULTI_URGENT_HEADER,
  WireError,
  decodeGroupState,
  encodeAccessKeyHeader,
  encodeContent,
  encodeGroupState,
  encodeSendRequestBinary,
  groupIdToHex,
  groupSignatureInput,
  normalizeGroupTitle,
  normalizeUsername,
  padPlaintext,
  processContent,
  processRecipientMismatches,
  unpadPlaintext,
} from '@parley/wire';
import type { IncomingMessage } from './client.js';
import type { Db } from './db.js';
import { SdkError } from './errors.js';
import { contactAccessKey, seal, storeContactProfileKey } from './sealed.js';
import { Serial } from './serial.js';
import { type Stores, ab, receivedMessageId } from './stores.js';
import { type Body, type Reply, type RequestResult, replyError, replyJson } from './transport.js';

// ---------------------------------------------------------------- public types

export interface GroupMemberInfo {
  accountId: string;
  /** Known (relay-confirmed) username, else null. */
  username: string | null;
  admin: boolean;
}
export interface GroupInfo {
  /** 32 lowercase hex characters. */
  id: string;
  title: string;
  revision: number;
  members: GroupMemberInfo[];
  /** This account is an admin. */
  admin: boolean;
  /** False once this account left or was removed. */
  active: boolean;
}
export type GroupAlertReason = 'unsigned' | 'bad-signature' | 'not-admin' | 'stale-revision' | 'not-member' | 'malformed';
export interface GroupAlert {
  groupId: string;
  reason: GroupAlertReason;
  fromAccount: string;
  from: string | null;
}
export interface GroupUpdateEvent {
  group: GroupInfo;
  by: string | null;
  byAccount: string;
  /** Account ids. */
  added: string[];
  removed: string[];
}
export interface GroupRef {
  id: string;
  title: string;
}

// ---------------------------------------------------------------- host

/** What groups.ts needs from ParleyClient. */
export interface GroupHost {
  db: Db;
  stores: Stores;
  me: { account: string; device: number; username: string };
  localAddress: ProtocolAddress;
  identityKeyPair: IdentityKeyPair;
  profileKey: Uint8Array;
  crypto: Serial;
  /** Runs on the crypto queue; store writes commit if `fn` succeeds. */
  atomically<T>(fn: () => Promise<T>): Promise<T>;
  /** 1:1 send of a Content to every device of `account` (sealed when possible); resolves with the devices it reached. */
  sendContent(account: string, content: Content, timestamp: number): Promise<number[]>;
  /** Sends prebuilt per-device envelopes with the 1:1 pipeline (device list fixes included). */
  deliverBuilt(account: string, timestamp: number, build: (device: number) => Promise<Uint8Array>): Promise<number[]>;
  ensureSessions(account: string): Promise<number[]>;
  /** Applies a 409/410 answer for one account: drops extra devices, fetches missing ones, archives stale ones. */
  fixDevices(account: string, p: { missing: number[]; extra: number[]; stale: number[] }): Promise<void>;
  senderCertificate(): Promise<SenderCertificate | null>;
  anonRequest(verb: string, path: string, body: Body, headers: Record<string, string>): Promise<Reply>;
  /** Ask a sender's device to resend what we could not decrypt (a DecryptionErrorMessage over 1:1, in the background). */
  requestResend(source: { account: string; device: number }, dem: DecryptionErrorMessage): void;
  /** An authenticated relay request (socket when open, else HTTP). */
  call(verb: string, path: string, body: Body): Promise<Reply>;
  resolve(username: string): Promise<string>;
  /** Relay lookup (caches the answer in contacts); null when unknown. */
  lookup(username: string): Promise<string | null>;
  usernameFor(account: string): string | null;
  /** Synchronous when no relay lookup is needed. */
  verifyClaim(claim: string | null, account: string): string | null | Promise<string | null>;
  hasOtherOwnDevices(): Promise<boolean>;
  nextTimestamp(): number;
  emitAlert(a: GroupAlert): void;
  emitUpdate(u: GroupUpdateEvent): void;
  emitMessage(m: GroupIncoming): void;
  emitSent(s: { to: string; timestamp: number; body: string; group: GroupRef }): void;
  emitError(err: Error): void;
  spawn(task: () => Promise<unknown>): void;
  markSeen(env: Envelope, triple: boolean): void;
  seenTriple(account: string, device: number, ts: number): boolean;
}

/** An incoming group message: the client's `message` event without attachments (groups carry none yet). */
export type GroupIncoming = Omit<IncomingMessage, 'attachments' | 'group'> & { group: GroupRef };

/** A write to run inside the receive commit; it returns what to do after the ack. */
type PreparedGroupWrite = () => (() => void) | undefined;

interface GroupRow {
  id: string;
  revision: number;
  title: string;
  state: GroupState;
  active: boolean;
  distributionId: string;
  rotate: boolean;
}

/** How many 1:1 sends (updates, session set-ups, lookups) run at once. */
const FANOUT = 8;
/** How many prebuilt SKDM uploads are in flight at once (they need no crypto work). */
const FANOUT_UPLOADS = 32;
const MAX_SEND_ATTEMPTS = 4;
/** Usernames from an accepted update checked with the relay, at most (a 1,000-member join must not cost 1,000 lookups per member). */
const MAX_USERNAME_LOOKUPS = 32;
/** How long our group messages are kept for resends (as send_log in client.ts). */
const GROUP_SEND_LOG_MS = 24 * 3600 * 1000;

function isSignalError(err: unknown, code: ErrorCode): boolean {
  return err instanceof LibSignalErrorBase && err.code === code;
}

/** Runs `fn` over `items` with at most `limit` in flight; resolves with every result or the first failure after all finished. */
async function eachLimited<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<PromiseSettledResult<R>[]> {
  const out = new Array<PromiseSettledResult<R>>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      try {
        out[i] = { status: 'fulfilled', value: await fn(items[i] as T) };
      } catch (reason) {
        out[i] = { status: 'rejected', reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

const removedFrom = (old: GroupState, next: GroupState) =>
  old.members.filter((m) => !next.members.some((n) => n.account === m.account)).map((m) => m.account);
const addedTo = (old: GroupState | null, next: GroupState) =>
  next.members.filter((m) => !(old?.members.some((o) => o.account === m.account) ?? false)).map((m) => m.account);

/**
 * The state a member leaving produces: `old` without `leaver`; if that
 * removes the last admin, the first remaining member becomes admin.
 */
export function stateAfterLeave(old: GroupState, leaver: string): GroupState {
  const members = old.members.filter((m) => m.account !== leaver).map((m) => ({ ...m }));
  const first = members[0];
  if (first && !members.some((m) => m.admin)) first.admin = true;
  return { ...old, revision: old.revision + 1, members };
}

function sameMember(a: GroupMember, b: GroupMember): boolean {
  const pk = (x: Uint8Array | null) => (x ? Buffer.from(x).toString('hex') : '');
  return a.account === b.account && a.admin === b.admin && pk(a.profileKey) === pk(b.profileKey) && a.username === b.username;
}

/** True when `next` is exactly `old` after `signer` left (docs/PROTOCOL.md, acceptance rule 4). */
export function isSelfLeave(old: GroupState, next: GroupState, signer: string): boolean {
  if (!old.members.some((m) => m.account === signer)) return false;
  const expected = stateAfterLeave(old, signer);
  return (
    next.revision === expected.revision &&
    next.title === expected.title &&
    next.members.length === expected.members.length &&
    next.members.every((m, i) => sameMember(m, expected.members[i] as GroupMember))
  );
}

/**
 * The acceptance rules for a received GroupUpdate, in order. `signerKey` is
 * the identity key this client knows for the authenticated sender.
 */
export function judgeUpdate(opts: {
  update: GroupUpdate;
  senderAccount: string;
  signerKey: PublicKey | null;
  local: GroupState | null;
  me: string;
}): { kind: 'accept' } | { kind: 'reject'; reason: GroupAlertReason } {
  const { update, senderAccount, signerKey, local, me } = opts;
  const reject = (reason: GroupAlertReason) => ({ kind: 'reject' as const, reason });
  if (update.signature.length === 0 || update.signer === null) return reject('unsigned');
  if (update.signer !== senderAccount || !signerKey) return reject('bad-signature');
  let ok: boolean;
  try {
    ok = signerKey.verify(ab(groupSignatureInput(update.stateBytes)), ab(update.signature));
  } catch {
    ok = false;
  }
  if (!ok) return reject('bad-signature');
  const next = update.state;
  const signer = update.signer;
  if (local) {
    if (next.revision <= local.revision) return reject('stale-revision');
    const admin = local.members.some((m) => m.account === signer && m.admin);
    if (!admin && !isSelfLeave(local, next, signer)) return reject('not-admin');
    return { kind: 'accept' };
  }
  if (!next.members.some((m) => m.account === signer && m.admin)) return reject('not-admin');
  if (!next.members.some((m) => m.account === me)) return reject('not-member');
  return { kind: 'accept' };
}

// ---------------------------------------------------------------- history archive

/** A group as the history archive carries it to a newly linked device (state as base64 GroupState bytes). */
export interface ArchivedGroup {
  state: string;
  active: boolean;
}

/** Every group this device knows, for the archive a linked device imports. */
export function exportGroups(db: Db): ArchivedGroup[] {
  return db
    .prepare('SELECT state, active FROM groups ORDER BY id')
    .all([])
    .map((r) => ({ state: Buffer.from(r.state as Uint8Array).toString('base64'), active: Number(r.active) === 1 }));
}

/** @throws SdkError LINK_FAILED when the entry is malformed. */
export function validArchivedGroup(v: unknown): ArchivedGroup {
  const g = v as Record<string, unknown> | null;
  try {
    if (typeof g !== 'object' || g === null || typeof g.state !== 'string' || typeof g.active !== 'boolean')
      throw new TypeError('bad entry');
    decodeGroupState(Buffer.from(g.state, 'base64'));
    return { state: g.state, active: g.active };
  } catch (err) {
    throw new SdkError('LINK_FAILED', 'the history archive is malformed', { cause: err });
  }
}

/**
 * Adds archived groups this device does not know yet. It trusts them as it
 * trusts the rest of the archive: they come from our own primary, end to end.
 * A fresh distribution id means this device's sender key is its own.
 */
export function importGroups(db: Db, groups: ArchivedGroup[]): void {
  const insert = db.prepare(
    'INSERT OR IGNORE INTO groups (id, revision, title, state, active, distribution_id, rotate, updated_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?)',
  );
  for (const g of groups) {
    const bytes = new Uint8Array(Buffer.from(g.state, 'base64'));
    const s = decodeGroupState(bytes);
    insert.run([groupIdToHex(s.id), s.revision, s.title, bytes, g.active ? 1 : 0, randomUUID(), Date.now()]);
  }
}

// ---------------------------------------------------------------- groups

export class Groups {
  constructor(private readonly h: GroupHost) {}

  // ------------------------------------------------------------ local state

  private row(id: string): GroupRow | null {
    const r = this.h.db
      .prepare('SELECT id, revision, title, state, active, distribution_id, rotate FROM groups WHERE id = ?')
      .get([id]);
    if (!r) return null;
    return {
      id: String(r.id),
      revision: Number(r.revision),
      title: String(r.title),
      state: decodeGroupState(r.state as Uint8Array),
      active: Number(r.active) === 1,
      distributionId: String(r.distribution_id),
      rotate: Number(r.rotate) === 1,
    };
  }

  /** Stores an accepted (signed) state. `rotate` marks our sender key for rotation. */
  private saveState(update: GroupUpdate, rotate: boolean): void {
    const { state, stateBytes } = update;
    const id = groupIdToHex(state.id);
    const active = state.members.some((m) => m.account === this.h.me.account) ? 1 : 0;
    this.h.db
      .prepare(
        `INSERT INTO groups (id, revision, title, state, active, distribution_id, rotate, updated_at, signer, signature)
         VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?)
         ON CONFLICT DO UPDATE SET revision = excluded.revision, title = excluded.title, state = excluded.state,
           active = excluded.active, rotate = CASE WHEN ? THEN 1 ELSE rotate END, updated_at = excluded.updated_at,
           signer = excluded.signer, signature = excluded.signature`,
      )
      .run([
        id,
        state.revision,
        state.title,
        ab(stateBytes),
        active,
        randomUUID(),
        Date.now(),
        update.signer,
        ab(update.signature),
        rotate ? 1 : 0,
      ]);
    // Profile keys the admin listed let us send sealed to members we never talked to; ours from 1:1 messages win.
    const pk = this.h.db.prepare(
      'INSERT OR IGNORE INTO profile_keys (account, profile_key, usable, updated_at) VALUES (?, ?, 1, ?)',
    );
    for (const m of state.members)
      if (m.profileKey && m.account !== this.h.me.account) pk.run([m.account, ab(m.profileKey), Date.now()]);
  }

  private info(r: GroupRow): GroupInfo {
    const me = this.h.me.account;
    return {
      id: r.id,
      title: r.title,
      revision: r.revision,
      members: r.state.members.map((m) => ({ accountId: m.account, username: this.h.usernameFor(m.account), admin: m.admin })),
      admin: r.active && r.state.members.some((m) => m.account === me && m.admin),
      active: r.active,
    };
  }

  /**
   * A group by full id, unique id prefix (>= 6 hex characters) or exact unique title.
   * @throws SdkError UNKNOWN_GROUP, AMBIGUOUS_GROUP, INVALID_INPUT
   */
  private find(ref: string): GroupRow {
    if (typeof ref !== 'string' || ref.length === 0 || ref.length > 256)
      throw new SdkError('INVALID_INPUT', 'a group is named by id or title');
    const lower = ref.toLowerCase();
    if (/^[0-9a-f]{32}$/.test(lower)) {
      const r = this.row(lower);
      if (r) return r;
    }
    const ids = new Set<string>();
    if (/^[0-9a-f]{6,32}$/.test(lower))
      for (const id of this.h.db
        .prepare('SELECT id FROM groups WHERE substr(id, 1, ?) = ?', { pluck: true })
        .all([lower.length, lower]))
        ids.add(String(id));
    const title = ref.normalize('NFC').trim();
    for (const id of this.h.db.prepare('SELECT id FROM groups WHERE title = ?', { pluck: true }).all([title]))
      ids.add(String(id));
    if (ids.size === 0) throw new SdkError('UNKNOWN_GROUP', 'no such group');
    if (ids.size > 1) throw new SdkError('AMBIGUOUS_GROUP', 'several groups match; use the group id');
    return this.row([...ids][0] as string) as GroupRow;
  }

  groupInfo(ref: string): GroupInfo {
    return this.info(this.find(ref));
  }

  listGroups(): GroupInfo[] {
    return this.h.db
      .prepare('SELECT id FROM groups ORDER BY title, id', { pluck: true })
      .all([])
      .map((id) => this.info(this.row(String(id)) as GroupRow));
  }

  // ------------------------------------------------------------ changes (admin side)

  /** One membership change at a time on this device, so revisions do not race locally. */
  private readonly ops = new Serial();

  private member(account: string, admin: boolean, username: string | null): GroupMember {
    const me = account === this.h.me.account;
    const row = me ? null : this.h.db.prepare('SELECT profile_key FROM profile_keys WHERE account = ?').get([account]);
    const profileKey = me
      ? this.h.profileKey
      : row && row.profile_key instanceof Uint8Array
        ? new Uint8Array(row.profile_key)
        : null;
    return { account: account as AccountId, admin, profileKey, username: me ? this.h.me.username : username };
  }

  async createGroup(title: string, usernames: string[]): Promise<GroupInfo> {
    const t = this.title(title);
    if (!Array.isArray(usernames) || usernames.length > GroupLimits.maxMembers * 4)
      throw new SdkError(
        Array.isArray(usernames) ? 'GROUP_TOO_LARGE' : 'INVALID_INPUT',
        `a group has at most ${GroupLimits.maxMembers} members`,
      );
    let names: string[];
    try {
      names = [...new Set(usernames.map((u) => normalizeUsername(u)))].filter((u) => u !== this.h.me.username);
    } catch (err) {
      if (err instanceof WireError) throw new SdkError('INVALID_INPUT', err.message, { cause: err });
      throw err;
    }
    if (names.length + 1 > GroupLimits.maxMembers)
      throw new SdkError('GROUP_TOO_LARGE', `a group has at most ${GroupLimits.maxMembers} members`);
    const accounts = await this.resolveAll(names);
    accounts.delete(this.h.me.account);
    const state: GroupState = {
      id: new Uint8Array(randomBytes(GroupLimits.idBytes)),
      revision: 1,
      title: t,
      members: [this.member(this.h.me.account, true, null), ...[...accounts].map(([a, u]) => this.member(a, false, u))],
    };
    return this.ops.run(() => this.publish(null, state));
  }

  async addGroupMember(ref: string, username: string): Promise<GroupInfo> {
    return this.ops.run(async () => {
      const g = this.adminRow(ref);
      const account = await this.h.resolve(username);
      if (g.state.members.some((m) => m.account === account))
        throw new SdkError('ALREADY_MEMBER', 'already a member of the group');
      if (g.state.members.length + 1 > GroupLimits.maxMembers)
        throw new SdkError('GROUP_TOO_LARGE', `a group has at most ${GroupLimits.maxMembers} members`);
      const next: GroupState = {
        ...g.state,
        revision: g.revision + 1,
        members: [...g.state.members, this.member(account, false, this.h.usernameFor(account))],
      };
      return this.publish(g.state, next);
    });
  }

  async removeGroupMember(ref: string, username: string): Promise<GroupInfo> {
    return this.ops.run(async () => {
      const g = this.adminRow(ref);
      const account = await this.h.resolve(username);
      if (account === this.h.me.account) throw new SdkError('INVALID_INPUT', 'to remove yourself, leave the group');
      if (!g.state.members.some((m) => m.account === account))
        throw new SdkError('NOT_GROUP_MEMBER', 'that user is not a member of the group');
      const next: GroupState = {
        ...g.state,
        revision: g.revision + 1,
        members: g.state.members.filter((m) => m.account !== account),
      };
      return this.publish(g.state, next);
    });
  }

  async leaveGroup(ref: string): Promise<void> {
    await this.ops.run(async () => {
      const g = this.find(ref);
      if (!g.active) throw new SdkError('NOT_GROUP_MEMBER', 'you are not a member of this group any more');
      if (g.state.members.every((m) => m.account === this.h.me.account)) {
        // The last member: there is nobody to tell, and a group state cannot be empty.
        await this.h.crypto.run(
          async () => void this.h.db.prepare('UPDATE groups SET active = 0, updated_at = ? WHERE id = ?').run([Date.now(), g.id]),
        );
        return;
      }
      await this.publish(g.state, stateAfterLeave(g.state, this.h.me.account));
    });
  }

  private title(title: string): string {
    try {
      return normalizeGroupTitle(title);
    } catch (err) {
      if (err instanceof WireError)
        throw new SdkError(
          'INVALID_TITLE',
          `the title must be 1..${GroupLimits.maxTitleChars} characters without control characters`,
        );
      throw err;
    }
  }

  private adminRow(ref: string): GroupRow {
    const g = this.find(ref);
    if (!g.active) throw new SdkError('NOT_GROUP_MEMBER', 'you are not a member of this group any more');
    if (!g.state.members.some((m) => m.account === this.h.me.account && m.admin))
      throw new SdkError('NOT_GROUP_ADMIN', 'only a group admin can do that');
    return g;
  }

  /** account -> username for normalized, distinct usernames (FANOUT lookups at a time). @throws the first lookup failure */
  private async resolveAll(names: string[]): Promise<Map<string, string>> {
    const results = await eachLimited(names, FANOUT, (u) => this.h.resolve(u));
    const out = new Map<string, string>();
    results.forEach((r, i) => {
      if (r.status === 'rejected') throw r.reason;
      if (!out.has(r.value)) out.set(r.value, names[i] as string);
    });
    return out;
  }

  /**
   * Signs `next`, stores it, and sends it to every member of `next`, every
   * member `old` had that `next` lacks, and our own other devices.
   * Recipients it could not reach are reported as `error` events.
   */
  private async publish(old: GroupState | null, next: GroupState): Promise<GroupInfo> {
    let stateBytes: Uint8Array;
    try {
      stateBytes = encodeGroupState(next);
    } catch (err) {
      throw new SdkError('INVALID_INPUT', 'the group state is not valid', { cause: err });
    }
    const signature = this.h.identityKeyPair.privateKey.sign(ab(groupSignatureInput(stateBytes)));
    const update: GroupUpdate = { stateBytes, state: next, signer: this.h.me.account as AccountId, signature };
    const removed = old ? removedFrom(old, next) : [];
    await this.h.crypto.run(async () =>
      this.h.db.transaction(() => {
        // An update from another admin may have been accepted since `old` was read.
        const now = this.row(groupIdToHex(next.id));
        if ((now?.revision ?? 0) !== (old?.revision ?? 0))
          throw new SdkError('GROUP_CHANGED', 'the group changed meanwhile; try again');
        this.saveState(update, removed.length > 0);
      })(),
    );

    const me = this.h.me.account;
    const id = groupIdToHex(next.id);
    const timestamp = this.h.nextTimestamp();
    const content: Content = { kind: 'groupUpdate', update };
    const leaving = !next.members.some((m) => m.account === me);
    // The members of the new state: one group message under our sender key (after a removal, this
    // send is the rekey); removed members: 1:1, so they learn they are out.
    const oneToOne = removed.filter((a) => a !== me);
    try {
      await this.sendToGroup(id, encodeContent(content, this.h.me.username), timestamp, { leaving });
    } catch {
      // No certificate, or the upload kept failing: every member gets it 1:1 instead (same
      // timestamp, so a member that did get the group copy drops the second one).
      oneToOne.push(...next.members.map((m) => m.account).filter((a) => a !== me));
    }
    const results = await eachLimited(oneToOne, FANOUT, (a) => this.h.sendContent(a, content, timestamp));
    const failed = results.filter((r) => r.status === 'rejected').length;
    if (failed > 0) this.h.emitError(new SdkError('RELAY_ERROR', `the group update did not reach ${failed} members`));
    if (await this.h.hasOtherOwnDevices()) this.h.spawn(() => this.h.sendContent(me, content, timestamp));
    const info = this.info(this.row(groupIdToHex(next.id)) as GroupRow);
    return info;
  }

  // ------------------------------------------------------------ receiving updates and keys

  /**
   * The group part of `decryptAndCommit` for content that arrived over a 1:1
   * session (already authenticated as `source`). Async work (libsignal) runs
   * in the returned promise, whose function runs inside the commit
   * transaction and returns what to do after the ack. Null, at once, when `c`
   * is not group content (nearly every envelope: a 1:1 message costs no turn
   * of the event loop here).
   */
  prepare(
    c: Content,
    source: { account: string; device: number },
    env: Envelope,
    claim: string | null,
  ): Promise<PreparedGroupWrite> | null {
    switch (c.kind) {
      case 'senderKeyDistribution':
        return this.prepareKeyDistribution(c.message, source);
      case 'groupUpdate':
        return this.prepareUpdate(c.update, source, claim);
      case 'syncSentGroup':
        return Promise.resolve(this.syncSentWrite(c, source));
      case 'data':
        // A group message over 1:1 is a resend (the sender key did not open it here); same membership rules.
        return c.message.group ? this.prepareResentMessage(env, source, c.message, c.message.group.id, claim) : null;
      default:
        return null;
    }
  }

  private async prepareKeyDistribution(message: Uint8Array, source: { account: string; device: number }): Promise<PreparedGroupWrite> {
    try {
      const skdm = SenderKeyDistributionMessage.deserialize(ab(message));
      await processSenderKeyDistributionMessage(ProtocolAddress.new(source.account, source.device), skdm, this.h.stores.senderKey);
    } catch {
      // A malformed key: nothing stored; the sender's group messages will fail to decrypt and be reported.
    }
    return () => undefined;
  }

  private syncSentWrite(c: Extract<Content, { kind: 'syncSentGroup' }>, source: { account: string; device: number }): PreparedGroupWrite {
    if (source.account !== this.h.me.account) return () => undefined;
    return () => {
      const g = this.row(groupIdToHex(c.message.group.id));
      if (!g) return undefined;
      this.h.db
        .prepare(
          "INSERT OR IGNORE INTO messages (id, account, device, direction, timestamp, server_timestamp, body, status, username, group_id) VALUES (?, ?, ?, 'out', ?, 0, ?, 'sent', NULL, ?)",
        )
        .run([`out:${source.device}:${c.timestamp}`, this.h.me.account, source.device, c.message.timestamp, c.message.body, g.id]);
      const s = { to: g.id, timestamp: c.message.timestamp, body: c.message.body, group: { id: g.id, title: g.title } };
      return () => this.h.emitSent(s);
    };
  }

  private async prepareResentMessage(
    env: Envelope,
    source: { account: string; device: number },
    message: DataMessage,
    groupId: Uint8Array,
    claim: string | null,
  ): Promise<PreparedGroupWrite> {
    const accepted = await this.acceptMessage(env, source, message, groupId, claim);
    return () => {
      if (accepted.kind === 'drop') return accepted.after;
      accepted.commit();
      return accepted.after;
    };
  }

  private async prepareUpdate(
    update: GroupUpdate,
    source: { account: string; device: number },
    claim: string | null,
  ): Promise<PreparedGroupWrite> {
    const me = this.h.me.account;
    const id = groupIdToHex(update.state.id);
    const local = this.row(id);
    let signerKey: PublicKey | null = null;
    if (update.signer === me) signerKey = this.h.identityKeyPair.publicKey;
    else if (update.signer !== null) {
      const r = this.h.stores.identity.row(update.signer);
      signerKey = r ? PublicKey.deserialize(ab(r.key)) : null;
    }
    const verdict = judgeUpdate({ update, senderAccount: source.account, signerKey, local: local?.state ?? null, me });
    const from = this.h.usernameFor(source.account);
    if (verdict.kind === 'reject') {
      const alert: GroupAlert = { groupId: id, reason: verdict.reason, fromAccount: source.account, from };
      return () => () => this.h.emitAlert(alert);
    }
    const removed = local ? removedFrom(local.state, update.state) : [];
    const added = addedTo(local?.state ?? null, update.state);
    // Names first, so the event (often the first this device hears of these people) shows them, not account ids.
    const by = await this.h.verifyClaim(claim, source.account);
    await this.learnUsernames(update.state).catch(() => undefined);
    return () => {
      this.saveState(update, removed.length > 0);
      const info = this.info(this.row(id) as GroupRow);
      return () => this.h.emitUpdate({ group: info, by, byAccount: source.account, added, removed });
    };
  }

  /** Believes the usernames the signer listed only when the relay maps them to the same accounts. */
  private async learnUsernames(state: GroupState): Promise<void> {
    const unknown = state.members
      .filter((m) => m.username !== null && this.h.usernameFor(m.account) === null)
      .slice(0, MAX_USERNAME_LOOKUPS);
    await eachLimited(unknown, FANOUT, async (m) => this.h.lookup(m.username as string));
  }

  /**
   * A sealed envelope whose inner message is a sender-key message. Runs on
   * the crypto queue: certificate identity check, groupDecrypt, membership
   * check, then commit (sender-key state + message) and ack.
   */
  async receiveMessage(
    env: Envelope,
    opened: {
      sender: { account: string; device: number };
      certificateKey: PublicKey;
      content: Uint8Array;
      groupId: Uint8Array | null;
    },
  ): Promise<RequestResult> {
    const { sender } = opened;
    const drop = (after?: () => void): RequestResult => {
      this.h.stores.rollback();
      this.h.stores.commit(() => this.h.markSeen(env, false));
      return { status: 200, ...(after ? { after } : {}) };
    };
    // The certificate's key must be the identity key we know for that account (from the 1:1 session the sender key came over).
    const known = this.h.stores.identity.row(sender.account);
    if (!known || !PublicKey.deserialize(ab(known.key)).equals(opened.certificateKey))
      return drop(() =>
        this.h.emitError(new SdkError('SEALED_SENDER_REJECTED', 'dropped a sealed group message: identity mismatch')),
      );
    let plaintext: Uint8Array;
    try {
      plaintext = await groupDecrypt(
        ProtocolAddress.new(sender.account, sender.device),
        this.h.stores.senderKey,
        ab(opened.content),
      );
    } catch (err) {
      if (isSignalError(err, ErrorCode.DuplicatedMessage)) return drop();
      // Ask the sender's device to resend it; it answers over 1:1 and sends us its sender key again.
      let dem: DecryptionErrorMessage | null;
      try {
        dem = DecryptionErrorMessage.forOriginal(
          ab(opened.content),
          CiphertextMessageType.SenderKey,
          env.clientTimestamp,
          sender.device,
        );
      } catch {
        dem = null;
      }
      return drop(() => {
        this.h.emitError(
          new SdkError('GROUP_DECRYPT_FAILED', 'could not decrypt a group message; asked the sender to resend it'),
        );
        if (dem) this.h.requestResend(sender, dem);
      });
    }
    let content: Content;
    let claim: string | null;
    try {
      ({ content, senderUsername: claim } = processContent(unpadPlaintext(plaintext)));
    } catch {
      return this.commitDrop(env);
    }
    if (content.kind === 'groupUpdate') return this.receiveUpdate(env, opened, content.update, claim);
    if (content.kind !== 'data' || !content.message.group) return this.commitDrop(env);
    const message = content.message;
    const gid = groupIdToHex(message.group!.id);
    if (opened.groupId && groupIdToHex(opened.groupId) !== gid) {
      const alert: GroupAlert = {
        groupId: gid,
        reason: 'malformed',
        fromAccount: sender.account,
        from: this.h.usernameFor(sender.account),
      };
      return this.commitDrop(env, () => this.h.emitAlert(alert));
    }
    if (this.h.seenTriple(sender.account, sender.device, env.clientTimestamp)) return this.commitDrop(env);
    const accepted = await this.acceptMessage(env, sender, message, message.group!.id, claim);
    if (accepted.kind === 'drop') return this.commitDrop(env, accepted.after);
    this.h.stores.commit(() => {
      this.h.markSeen(env, true);
      accepted.commit();
    });
    return { status: 200, after: accepted.after };
  }

  /**
   * The membership check and the rows of a group data message (from a sender
   * key, or resent over 1:1). `commit` runs inside the caller's transaction.
   */
  private async acceptMessage(
    env: Envelope,
    sender: { account: string; device: number },
    message: DataMessage,
    groupId: Uint8Array,
    claim: string | null,
  ): Promise<{ kind: 'drop'; after?: () => void } | { kind: 'accept'; commit: () => void; after: () => void }> {
    const gid = groupIdToHex(groupId);
    const g = this.row(gid);
    const alert: GroupAlert = {
      groupId: gid,
      reason: 'not-member',
      fromAccount: sender.account,
      from: this.h.usernameFor(sender.account),
    };
    // Unknown group (reported), or one we are no longer in (nothing to show).
    if (!g) return { kind: 'drop', after: () => this.h.emitAlert(alert) };
    if (!g.active) return { kind: 'drop' };
    if (!g.state.members.some((m) => m.account === sender.account)) return { kind: 'drop', after: () => this.h.emitAlert(alert) };
    const from = await this.h.verifyClaim(claim, sender.account);
    const id = receivedMessageId(env);
    const m: GroupIncoming = {
      id,
      from,
      fromAccount: sender.account,
      fromDevice: sender.device,
      timestamp: message.timestamp,
      serverTimestamp: env.serverTimestamp,
      body: message.body,
      group: { id: g.id, title: g.title },
    };
    return {
      kind: 'accept',
      commit: () => {
        this.h.db
          .prepare(
            "INSERT OR IGNORE INTO messages (id, account, device, direction, timestamp, server_timestamp, body, status, username, group_id) VALUES (?, ?, ?, 'in', ?, ?, ?, 'received', ?, ?)",
          )
          .run([id, sender.account, sender.device, message.timestamp, env.serverTimestamp, message.body, from, g.id]);
        // The sender's own profile key, authenticated like the message itself.
        if (message.profileKey) storeContactProfileKey(this.h.db, sender.account, message.profileKey);
      },
      after: () => this.h.emitMessage(m),
    };
  }

  /**
   * A group update that came as a group message: judged by the same rules as
   * over 1:1 (the certificate sender is the authenticated sender), committed
   * with the sender-key step.
   */
  private async receiveUpdate(
    env: Envelope,
    opened: { sender: { account: string; device: number }; groupId: Uint8Array | null },
    update: GroupUpdate,
    claim: string | null,
  ): Promise<RequestResult> {
    const { sender } = opened;
    if (opened.groupId && groupIdToHex(opened.groupId) !== groupIdToHex(update.state.id)) {
      const alert: GroupAlert = {
        groupId: groupIdToHex(update.state.id),
        reason: 'malformed',
        fromAccount: sender.account,
        from: this.h.usernameFor(sender.account),
      };
      return this.commitDrop(env, () => this.h.emitAlert(alert));
    }
    if (this.h.seenTriple(sender.account, sender.device, env.clientTimestamp)) return this.commitDrop(env);
    const apply = await this.prepareUpdate(update, sender, claim);
    const after = this.h.stores.commit(() => {
      this.h.markSeen(env, true);
      return apply();
    });
    return { status: 200, ...(after ? { after } : {}) };
  }

  /** Keeps the sender-key step (the message did decrypt), drops the content. */
  private commitDrop(env: Envelope, after?: () => void): RequestResult {
    this.h.stores.commit(() => this.h.markSeen(env, false));
    return { status: 200, ...(after ? { after } : {}) };
  }

  // ------------------------------------------------------------ sending

  async sendGroup(ref: string, text: string): Promise<{ timestamp: number }> {
    if (typeof text !== 'string' || text.length === 0) throw new SdkError('INVALID_INPUT', 'the message is empty');
    if (Buffer.byteLength(text) > Limits.maxBodyTextBytes) throw new SdkError('INVALID_INPUT', 'the message is too long');
    const g0 = this.find(ref);
    if (!g0.active) throw new SdkError('NOT_GROUP_MEMBER', 'you are not a member of this group any more');
    const timestamp = this.h.nextTimestamp();
    const rowId = `out:${this.h.me.device}:${timestamp}`;
    this.h.db
      .prepare(
        "INSERT INTO messages (id, account, device, direction, timestamp, server_timestamp, body, status, username, group_id) VALUES (?, ?, ?, 'out', ?, 0, ?, 'pending', NULL, ?)",
      )
      .run([rowId, this.h.me.account, this.h.me.device, timestamp, text, g0.id]);
    const message = { body: text, timestamp, profileKey: this.h.profileKey, group: { id: g0.state.id } };
    const plaintext = encodeContent({ kind: 'data', message }, this.h.me.username);
    // Kept a day, so a member device that cannot decrypt it can ask for it again (`resend`).
    this.h.db.transaction(() => {
      this.h.db.prepare('DELETE FROM group_sends WHERE created_at < ?').run([Date.now() - GROUP_SEND_LOG_MS]);
      this.h.db
        .prepare('INSERT OR REPLACE INTO group_sends (timestamp, group_id, content, created_at) VALUES (?, ?, ?, ?)')
        .run([timestamp, g0.id, ab(plaintext), Date.now()]);
    })();
    try {
      await this.ops.run(() => this.sendToGroup(g0.id, plaintext, timestamp));
    } catch (err) {
      this.h.db.prepare("UPDATE messages SET status = 'failed' WHERE id = ?").run([rowId]);
      throw err;
    }
    this.h.db.prepare("UPDATE messages SET status = 'sent' WHERE id = ? AND status = 'pending'").run([rowId]);
    this.h.emitSent({ to: g0.id, timestamp, body: text, group: { id: g0.id, title: g0.title } });
    if (await this.h.hasOtherOwnDevices()) {
      const sync: Content = { kind: 'syncSentGroup', timestamp, message: { body: text, timestamp, group: { id: g0.state.id } } };
      this.h.spawn(() => this.h.sendContent(this.h.me.account, sync, timestamp));
    }
    return { timestamp };
  }

  /**
   * A member device could not decrypt our group message sent at `timestamp`
   * (its decryption-error message said so): it evidently lacks our sender key.
   * Resend the message to it over 1:1 and make the next group send give it
   * the key again. False when `timestamp` is not one of our group sends.
   */
  async resend(source: { account: string; device: number }, timestamp: number): Promise<boolean> {
    const row = this.h.db.prepare('SELECT group_id, content FROM group_sends WHERE timestamp = ?').get([timestamp]);
    if (!row) return false;
    const g = this.row(String(row.group_id));
    // Only to a current member of a group we are still in.
    if (!g || !g.active || !g.state.members.some((m) => m.account === source.account)) return true;
    await this.h.crypto.run(async () => {
      this.h.db
        .prepare('DELETE FROM group_key_shared WHERE group_id = ? AND account = ? AND device = ?')
        .run([g.id, source.account, source.device]);
    });
    // Same timestamp: the account's other devices drop it as a duplicate.
    await this.h.sendContent(source.account, processContent(row.content as Uint8Array).content, timestamp);
    return true;
  }

  /** This device's distribution id for the group, starting a new one when a removal asked for rotation. */
  private async distributionId(id: string): Promise<string> {
    return this.h.crypto.run(async () =>
      this.h.db.transaction(() => {
        const g = this.row(id) as GroupRow;
        if (!g.rotate) return g.distributionId;
        const fresh = randomUUID();
        this.h.db.prepare('UPDATE groups SET distribution_id = ?, rotate = 0 WHERE id = ?').run([fresh, id]);
        this.h.db.prepare('DELETE FROM group_key_shared WHERE group_id = ?').run([id]);
        return fresh;
      })(),
    );
  }

  /**
   * Sends our sender key (SKDM, over 1:1) to every member account with a
   * device that lacks it. All of them are encrypted (and sealed where we
   * can) in one crypto step and one commit, with their send-log rows, then
   * uploaded FANOUT_UPLOADS at a time; an account whose upload is refused
   * (device list changed, stale access key, ...) gets the ordinary 1:1 send,
   * with the same timestamp, which fixes its device list.
   */
  private async distribute(id: string, distributionId: string, devices: Map<string, number[]>): Promise<void> {
    const has = new Set(
      this.h.db
        .prepare('SELECT account, device FROM group_key_shared WHERE group_id = ? AND distribution_id = ?')
        .all([id, distributionId])
        .map((r) => `${String(r.account)}.${Number(r.device)}`),
    );
    const need = [...devices].filter(([a, ds]) => ds.some((d) => !has.has(`${a}.${d}`)));
    if (need.length === 0) return;
    const cert = await this.h.senderCertificate();
    const timestamp = this.h.nextTimestamp();
    const { content, batch } = await this.h.atomically(async () => {
      const skdm = await SenderKeyDistributionMessage.create(this.h.localAddress, distributionId, this.h.stores.senderKey);
      const content: Content = { kind: 'senderKeyDistribution', message: skdm.serialize() };
      const plaintext = encodeContent(content, this.h.me.username);
      const padded = ab(padPlaintext(plaintext));
      const batch: Array<{
        account: string;
        devices: number[];
        accessKey: Uint8Array | null;
        messages: OutgoingDeviceMessage[];
      }> = [];
      try {
        for (const [account, ds] of need) {
          const accessKey = cert ? contactAccessKey(this.h.db, account) : null;
          const messages: OutgoingDeviceMessage[] = [];
          for (const device of ds) {
            const address = ProtocolAddress.new(account, device);
            const ct = await signalEncrypt(padded, address, this.h.localAddress, this.h.stores.session, this.h.stores.identity);
            const record = this.h.stores.session.getSync(account, device);
            if (!record) throw new Error('session vanished');
            const sealed = cert && accessKey ? await seal(ct, cert, address, this.h.stores.identity) : null;
            const type = sealed
              ? EnvelopeType.UnidentifiedSender
              : ct.type() === (CiphertextMessageType.PreKey as number)
                ? EnvelopeType.PreKeyMessage
                : EnvelopeType.Ciphertext;
            messages.push({
              type,
              destinationDevice: device as DeviceId,
              destinationRegistrationId: record.remoteRegistrationId(),
              content: sealed ?? ct.serialize(),
            });
          }
          batch.push({ account, devices: ds, accessKey, messages });
        }
      } catch (err) {
        if (isSignalError(err, ErrorCode.UntrustedIdentity))
          throw new SdkError('UNTRUSTED_IDENTITY', 'a member’s identity key changed since it was verified', { cause: err });
        throw err;
      }
      // Logged like any 1:1 content, so a member that cannot decrypt it gets it again (client.ts resendAfterError).
      this.h.stores.commit(() => {
        const log = this.h.db.prepare(
          'INSERT INTO send_log (account, device, timestamp, content, created_at) VALUES (?, ?, ?, ?, ?)',
        );
        for (const b of batch) for (const d of b.devices) log.run([b.account, d, timestamp, ab(plaintext), Date.now()]);
      });
      return { content, batch };
    });

    const results = await eachLimited(batch, FANOUT_UPLOADS, async (b) => {
      const body = {
        binary: encodeSendRequestBinary({
          messages: b.messages,
          timestamp,
          urgent: true,
          messageId: new Uint8Array(randomBytes(16)),
        }),
      };
      const reply = b.accessKey
        ? await this.h.anonRequest('PUT', `/v1/messages/${b.account}`, body, {
            [ACCESS_KEY_HEADER]: encodeAccessKeyHeader(b.accessKey),
          })
        : await this.h.call('PUT', `/v1/messages/${b.account}`, body);
      const reached =
        reply.status >= 200 && reply.status < 300 ? b.devices : await this.h.sendContent(b.account, content, timestamp);
      return { a: b.account, reached };
    });
    const insert = this.h.db.prepare(
      'INSERT OR IGNORE INTO group_key_shared (group_id, distribution_id, account, device) VALUES (?, ?, ?, ?)',
    );
    await this.h.crypto.run(async () =>
      this.h.db.transaction(() => {
        for (const r of results)
          if (r.status === 'fulfilled') for (const d of r.value.reached) insert.run([id, distributionId, r.value.a, d]);
      })(),
    );
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /**
   * One group message: sender key to devices that lack it, groupEncrypt, one
   * multi-recipient sealed upload for members whose access key we know, and
   * single sealed envelopes over the authenticated route for the rest.
   */
  private async sendToGroup(
    id: string,
    plaintext: Uint8Array,
    timestamp: number,
    opts: { leaving?: boolean } = {},
  ): Promise<void> {
    const cert = await this.h.senderCertificate();
    if (!cert) throw new SdkError('RELAY_ERROR', 'no sender certificate from the relay; try again');
    const padded = ab(padPlaintext(plaintext));
    for (let attempt = 0; attempt < MAX_SEND_ATTEMPTS; attempt++) {
      const g = this.row(id) as GroupRow;
      // Our own leave update is the one thing sent to a group we are no longer in (with the key the members hold).
      if (!g.active && !opts.leaving) throw new SdkError('NOT_GROUP_MEMBER', 'you are not a member of this group any more');
      const accounts = g.state.members.map((m) => m.account as string).filter((a) => a !== this.h.me.account);
      if (accounts.length === 0) return;
      const distributionId = opts.leaving ? g.distributionId : await this.distributionId(id);

      // Sessions with every member device (a deleted account is skipped).
      const devices = new Map<string, number[]>();
      const sessions = await eachLimited(accounts, FANOUT, async (a) => ({ a, ds: await this.h.ensureSessions(a) }));
      for (const r of sessions) {
        if (r.status === 'fulfilled') {
          if (r.value.ds.length > 0) devices.set(r.value.a, r.value.ds);
        } else if (!SdkError.is(r.reason, 'USER_NOT_FOUND')) throw r.reason;
      }
      if (devices.size === 0) return;
      await this.distribute(id, distributionId, devices);
      // Distributing may have found devices we had no session with (a 409 on the 1:1 send); list them too.
      for (const [a] of devices) devices.set(a, await this.h.ensureSessions(a));

      // Each member's access key, read once: members with one go in the multi-recipient upload, the rest identified.
      const accessKeys = new Map<string, Uint8Array>();
      const identifiedTo: string[] = [];
      for (const a of devices.keys()) {
        const k = contactAccessKey(this.h.db, a);
        if (k) accessKeys.set(a, k);
        else identifiedTo.push(a);
      }
      const sealedTo = [...accessKeys.keys()];
      const built = await this.h
        .atomically(async () => {
          const ct = await groupEncrypt(this.h.localAddress, distributionId, this.h.stores.senderKey, padded);
          const usmc = UnidentifiedSenderMessageContent.new(ct, cert, ContentHint.Implicit, ab(g.state.id));
          const recipients = sealedTo.flatMap((a) => (devices.get(a) ?? []).map((d) => ProtocolAddress.new(a, d)));
          const multi =
            recipients.length > 0
              ? await sealedSenderMultiRecipientEncrypt({
                  content: usmc,
                  recipients,
                  identityStore: this.h.stores.identity,
                  sessionStore: this.h.stores.session,
                })
              : null;
          return { usmc, multi };
        })
        .catch((err: unknown) => {
          if (isSignalError(err, ErrorCode.UntrustedIdentity))
            throw new SdkError('UNTRUSTED_IDENTITY', 'a member’s identity key changed since it was verified', { cause: err });
          throw err;
        });

      let fallback = identifiedTo;
      if (built.multi) {
        const key = new Uint8Array(16);
        for (const k of accessKeys.values()) {
          for (let i = 0; i < key.length; i++) key[i] = (key[i] as number) ^ (k[i] as number);
        }
        // The anonymous transport may repeat this upload over HTTP (its socket closed before answering). A second copy is
        // harmless: receivers drop it by (sender, device, timestamp), and its sender-key ciphertext is a duplicate anyway.
        const reply = await this.h.anonRequest(
          'PUT',
          '/v1/messages/multi_recipient',
          { binary: built.multi },
          {
            [ACCESS_KEY_HEADER]: encodeAccessKeyHeader(key),
            [MULTI_TIMESTAMP_HEADER]: String(timestamp),
            [MULTI_URGENT_HEADER]: 'true',
          },
        );
        if (reply.status === 409 || reply.status === 410) {
          await this.fixRecipients(id, reply);
          continue;
        }
        if (reply.status === 401) {
          // Some access key is stale: this message goes to everyone over the authenticated route.
          fallback = [...devices.keys()];
        } else if (reply.status < 200 || reply.status > 299) throw replyError(reply);
      }
      await this.sendIdentified(fallback, built.usmc, timestamp);
      return;
    }
    throw new SdkError('RELAY_ERROR', 'the device lists kept changing; giving up');
  }

  /** 409/410 on the multi-recipient upload: fix each listed account's sessions; stale devices need our sender key again. */
  private async fixRecipients(id: string, reply: Reply): Promise<void> {
    let recipients;
    try {
      const body = replyJson(reply) as { recipients?: unknown };
      recipients = processRecipientMismatches(body.recipients);
    } catch (err) {
      throw new SdkError('RELAY_ERROR', 'the relay sent a malformed answer', { cause: err, status: reply.status });
    }
    for (const r of recipients) {
      const stale = r.staleDevices ?? [];
      const extra = r.extraDevices ?? [];
      await this.h.fixDevices(r.accountId, { missing: r.missingDevices ?? [], extra, stale });
      if (stale.length + extra.length > 0)
        await this.h.crypto.run(async () => {
          const del = this.h.db.prepare('DELETE FROM group_key_shared WHERE group_id = ? AND account = ? AND device = ?');
          for (const d of [...stale, ...extra]) del.run([id, r.accountId, d]);
        });
    }
  }

  /**
   * Members whose access key we do not know: the same sealed message, one per
   * device, over the authenticated route (the relay then sees who sent it).
   */
  private async sendIdentified(accounts: string[], usmc: UnidentifiedSenderMessageContent, timestamp: number): Promise<void> {
    if (accounts.length === 0) return;
    const results = await eachLimited(accounts, FANOUT, (a) =>
      this.h.deliverBuilt(a, timestamp, (device) =>
        sealedSenderEncrypt(usmc, ProtocolAddress.new(a, device), this.h.stores.identity),
      ),
    );
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }
}
