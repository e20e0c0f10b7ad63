/**
 * Group state as it travels inside end-to-end encrypted content: the signed
 * GroupUpdate, the GroupState it carries and the GroupContext of a group
 * message. The relay never sees any of it. See docs/PROTOCOL.md, "Groups".
 */
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { fail, WireError, WireErrorCode } from './errors.js';
import {
  GroupStateSchema,
  type GroupState as PbGroupState,
  type GroupUpdate as PbGroupUpdate,
} from './gen/parley/v1/content_pb.js';
import { type AccountId, accountIdFromBytes, accountIdToBytes, normalizeUsername } from './ids.js';

export const GroupLimits = {
  /** Group ids are random 16-byte strings. */
  idBytes: 16,
  maxMembers: 1000,
  /** Title length in Unicode code points, after NFC normalization. */
  maxTitleChars: 64,
  /** A libsignal XEdDSA signature. */
  signatureBytes: 64,
  profileKeyBytes: 32,
} as const;

/** Domain separation for group-state signatures: the signed bytes are this prefix || serialized GroupState. */
export const GROUP_SIGNATURE_CONTEXT = new TextEncoder().encode('parley-group-v1\0');

export interface GroupMember {
  account: AccountId;
  admin: boolean;
  /** Null when the signer does not know it. */
  profileKey: Uint8Array | null;
  /** The signer's belief, unverified; null when absent. */
  username: string | null;
}

export interface GroupState {
  /** 16 bytes. */
  id: Uint8Array;
  revision: number;
  title: string;
  members: GroupMember[];
}

export interface GroupUpdate {
  /** The exact bytes that were signed (a serialized GroupState). */
  stateBytes: Uint8Array;
  state: GroupState;
  /** Null when the update names no signer (rejected as unsigned by clients). */
  signer: AccountId | null;
  /** Empty when unsigned. */
  signature: Uint8Array;
}

/**
 * A group title as users type it: NFC-normalized, surrounding whitespace
 * removed, 1..64 code points, no control characters.
 * @throws WireError BAD_FIELD
 */
export function normalizeGroupTitle(value: unknown, field = 'title'): string {
  if (typeof value !== 'string' || value.length > GroupLimits.maxTitleChars * 4)
    fail(field, `must be 1..${GroupLimits.maxTitleChars} characters`);
  const t = value.normalize('NFC').trim();
  checkTitle(t, field);
  return t;
}

function checkTitle(t: string, field: string): void {
  const chars = [...t].length;
  if (chars === 0 || chars > GroupLimits.maxTitleChars) fail(field, `must be 1..${GroupLimits.maxTitleChars} characters`);
  if (/[\p{Cc}\u2028\u2029]/u.test(t)) fail(field, 'must not contain control characters');
  if (t.normalize('NFC') !== t || t.trim() !== t) fail(field, 'must be NFC-normalized and trimmed');
}

/** Validates a decoded GroupState; generated types never travel past this. */
export function processGroupState(raw: PbGroupState, field = 'groupState'): GroupState {
  if (raw.id.length !== GroupLimits.idBytes) fail(`${field}.id`, `must be ${GroupLimits.idBytes} bytes`);
  if (raw.revision < 1n || raw.revision > BigInt(Number.MAX_SAFE_INTEGER)) fail(`${field}.revision`, 'out of range');
  checkTitle(raw.title, `${field}.title`);
  if (raw.members.length === 0 || raw.members.length > GroupLimits.maxMembers)
    fail(`${field}.members`, `1..${GroupLimits.maxMembers} entries`);
  const seen = new Set<string>();
  const members = raw.members.map((m, i): GroupMember => {
    const f = `${field}.members[${i}]`;
    const account = accountIdFromBytes(m.account, `${f}.account`);
    if (seen.has(account)) fail(`${f}.account`, 'listed twice');
    seen.add(account);
    if (m.profileKey.length !== 0 && m.profileKey.length !== GroupLimits.profileKeyBytes)
      fail(`${f}.profileKey`, `must be empty or ${GroupLimits.profileKeyBytes} bytes`);
    const username = m.username === '' ? null : normalizeUsername(m.username, `${f}.username`);
    if (username !== null && username !== m.username) fail(`${f}.username`, 'must be normalized');
    return { account, admin: m.admin, profileKey: m.profileKey.length > 0 ? m.profileKey : null, username };
  });
  if (!members.some((m) => m.admin)) fail(`${field}.members`, 'must include an admin');
  return { id: raw.id, revision: Number(raw.revision), title: raw.title, members };
}

/** Decodes and validates serialized GroupState bytes. @throws WireError */
export function decodeGroupState(bytes: Uint8Array, field = 'groupState'): GroupState {
  let raw: PbGroupState;
  try {
    raw = fromBinary(GroupStateSchema, bytes);
  } catch {
    throw new WireError(WireErrorCode.Malformed, `${field}: not a valid protobuf message`);
  }
  return processGroupState(raw, field);
}

/** Serializes a GroupState (validating it first, so a client never signs what others would reject). @throws WireError */
export function encodeGroupState(s: GroupState): Uint8Array {
  const bytes = toBinary(
    GroupStateSchema,
    create(GroupStateSchema, {
      id: s.id,
      revision: BigInt(s.revision),
      title: s.title,
      members: s.members.map((m) => ({
        account: accountIdToBytes(m.account),
        admin: m.admin,
        profileKey: m.profileKey ?? new Uint8Array(0),
        username: m.username ?? '',
      })),
    }),
  );
  decodeGroupState(bytes);
  return bytes;
}

/** The bytes a group-state signature covers. */
export function groupSignatureInput(stateBytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(GROUP_SIGNATURE_CONTEXT.length + stateBytes.length);
  out.set(GROUP_SIGNATURE_CONTEXT);
  out.set(stateBytes, GROUP_SIGNATURE_CONTEXT.length);
  return out;
}

/**
 * Validates the shape of a GroupUpdate. An empty signer and signature are
 * accepted here (clients report such an update as unsigned); anything else
 * malformed is a WireError.
 */
export function processGroupUpdate(raw: PbGroupUpdate, field = 'groupUpdate'): GroupUpdate {
  const state = decodeGroupState(raw.state, `${field}.state`);
  const signer = raw.signer.length === 0 ? null : accountIdFromBytes(raw.signer, `${field}.signer`);
  if (raw.signature.length !== 0 && raw.signature.length !== GroupLimits.signatureBytes)
    fail(`${field}.signature`, `must be empty or ${GroupLimits.signatureBytes} bytes`);
  return { stateBytes: raw.state, state, signer, signature: raw.signature };
}

/** A 16-byte group id as 32 lowercase hex characters. */
export function groupIdToHex(id: Uint8Array): string {
  return Buffer.from(id).toString('hex');
}
export function groupIdFromHex(hex: string, field = 'groupId'): Uint8Array {
  if (!/^[0-9a-f]{32}$/.test(hex)) fail(field, 'must be 32 lowercase hex characters');
  return new Uint8Array(Buffer.from(hex, 'hex'));
}
