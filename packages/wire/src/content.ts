/**
 * The end-to-end encrypted payload. A Content carries exactly one kind of
 * message; `processContent` turns decrypted bytes into a tagged union, and
 * `encodeContent` builds the bytes to pad and encrypt.
 */
import { create, fromBinary, type MessageInitShape, toBinary } from '@bufbuild/protobuf';
import { type Attachment, AttachmentLimits, parseBlobId } from './attachments.js';
import { fail, WireError, WireErrorCode } from './errors.js';
import { decodeDataContentFast } from './fast-decode.js';
import { type GroupUpdate, GroupLimits, processGroupUpdate } from './groups.js';
import {
  type AttachmentPointer as PbAttachmentPointer,
  type Content as PbContent,
  ContentSchema,
  type DataMessage as PbDataMessage,
  DataMessageSchema,
  ReceiptMessage_Type,
  TypingMessage_Action,
} from './gen/parley/v1/content_pb.js';
import { type AccountId, accountIdFromBytes, accountIdToBytes, normalizeUsername } from './ids.js';
import { Limits } from './limits.js';

export interface DataMessage {
  body: string;
  timestamp: number;
  /** Absent means none. */
  attachments?: Attachment[];
  /** The sender's 32-byte profile key (sealed sender: recipients derive its access key). Absent means not shared. */
  profileKey?: Uint8Array;
  /** Set when the message was sent to a group (16-byte group id). */
  group?: { id: Uint8Array };
}

/** Upper bound for a serialized libsignal SenderKeyDistributionMessage. */
export const MAX_SKDM_BYTES = 1024;

/** Length of a profile key. */
export const PROFILE_KEY_BYTES = 32;

export type Content =
  | { kind: 'data'; message: DataMessage }
  | { kind: 'receipt'; type: 'delivery' | 'read'; timestamps: number[] }
  | { kind: 'typing'; action: 'started' | 'stopped'; timestamp: number }
  | { kind: 'null' }
  | { kind: 'decryptionError'; message: Uint8Array }
  | { kind: 'syncSent'; destination: AccountId; timestamp: number; message: DataMessage }
  /** A transcript of a group message this account sent from another device (`message.group` is set). */
  | { kind: 'syncSentGroup'; timestamp: number; message: DataMessage & { group: { id: Uint8Array } } }
  /** A serialized libsignal SenderKeyDistributionMessage. */
  | { kind: 'senderKeyDistribution'; message: Uint8Array }
  | { kind: 'groupUpdate'; update: GroupUpdate }
  /** Messages this account read on another of its devices. */
  | { kind: 'syncRead'; reads: Array<{ sender: AccountId; timestamp: number }> };

const ts = (v: bigint, field: string): number => {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(field, 'out of range');
  return Number(v);
};

function processAttachment(a: PbAttachmentPointer, field: string): Attachment {
  if (a.key.length !== AttachmentLimits.keyBytes) fail(`${field}.key`, `must be ${AttachmentLimits.keyBytes} bytes`);
  if (a.digest.length !== AttachmentLimits.digestBytes) fail(`${field}.digest`, `must be ${AttachmentLimits.digestBytes} bytes`);
  if (a.size > BigInt(AttachmentLimits.maxSize)) fail(`${field}.size`, 'out of range');
  if (a.contentType.length > AttachmentLimits.maxContentTypeChars)
    fail(`${field}.contentType`, `at most ${AttachmentLimits.maxContentTypeChars} characters`);
  if (Buffer.byteLength(a.fileName) > AttachmentLimits.maxFileNameBytes)
    fail(`${field}.fileName`, `at most ${AttachmentLimits.maxFileNameBytes} bytes`);
  return {
    blobId: parseBlobId(a.blobId, `${field}.blobId`),
    key: a.key,
    digest: a.digest,
    size: Number(a.size),
    contentType: a.contentType,
    fileName: a.fileName,
  };
}

function processData(m: Pick<PbDataMessage, 'body' | 'timestamp' | 'attachments' | 'profileKey' | 'group'>, field: string): DataMessage {
  if (Buffer.byteLength(m.body) > Limits.maxBodyTextBytes) fail(`${field}.body`, `at most ${Limits.maxBodyTextBytes} bytes`);
  const out: DataMessage = { body: m.body, timestamp: ts(m.timestamp, `${field}.timestamp`) };
  if (m.attachments.length > AttachmentLimits.maxPerMessage) fail(`${field}.attachments`, `at most ${AttachmentLimits.maxPerMessage}`);
  if (m.attachments.length > 0) out.attachments = m.attachments.map((a, i) => processAttachment(a, `${field}.attachments[${i}]`));
  if (m.profileKey.length > 0) {
    if (m.profileKey.length !== PROFILE_KEY_BYTES) fail(`${field}.profileKey`, `must be ${PROFILE_KEY_BYTES} bytes`);
    out.profileKey = m.profileKey;
  }
  if (m.group) {
    if (m.group.id.length !== GroupLimits.idBytes) fail(`${field}.group.id`, `must be ${GroupLimits.idBytes} bytes`);
    out.group = { id: m.group.id };
  }
  return out;
}

/** A decrypted Content with the sender's claimed username (unverified). */
export interface DecodedContent {
  content: Content;
  senderUsername: string | null;
}

export function processContent(bytes: Uint8Array): DecodedContent {
  if (bytes.length > Limits.maxContentBytes) throw new WireError(WireErrorCode.TooLarge, 'content too large');
  // A plain data message (nearly every received Content) is read by hand; anything else by fromBinary (fast-decode.ts).
  const fast = decodeDataContentFast(bytes);
  if (fast !== null) {
    const senderUsername = fast.senderUsername !== '' ? normalizeUsername(fast.senderUsername, 'content.senderUsername') : null;
    const message = processData({ body: fast.body, timestamp: fast.timestamp, attachments: [], profileKey: fast.profileKey, group: undefined }, 'dataMessage');
    return { content: { kind: 'data', message }, senderUsername };
  }
  const raw = decodeContent(bytes);
  let senderUsername: string | null = null;
  if (raw.senderUsername !== '') senderUsername = normalizeUsername(raw.senderUsername, 'content.senderUsername');
  return { content: processOne(raw), senderUsername };
}

function decodeContent(bytes: Uint8Array): PbContent {
  if (bytes.length > Limits.maxContentBytes) throw new WireError(WireErrorCode.TooLarge, 'content too large');
  let raw;
  try {
    raw = fromBinary(ContentSchema, bytes);
  } catch {
    throw new WireError(WireErrorCode.Malformed, 'content: not a valid protobuf message');
  }
  return raw;
}

function processOne(raw: PbContent): Content {
  const present = [
    raw.dataMessage,
    raw.syncMessage,
    raw.receiptMessage,
    raw.typingMessage,
    raw.nullMessage,
    raw.decryptionErrorMessage.length > 0 ? raw.decryptionErrorMessage : undefined,
    raw.senderKeyDistributionMessage.length > 0 ? raw.senderKeyDistributionMessage : undefined,
    raw.groupUpdate,
  ].filter((x) => x !== undefined).length;
  if (present !== 1) fail('content', 'must carry exactly one message');

  if (raw.dataMessage) return { kind: 'data', message: processData(raw.dataMessage, 'dataMessage') };
  if (raw.receiptMessage) {
    const r = raw.receiptMessage;
    if (r.type !== ReceiptMessage_Type.DELIVERY && r.type !== ReceiptMessage_Type.READ) fail('receipt.type', 'unknown');
    if (r.timestamps.length === 0 || r.timestamps.length > Limits.maxReceiptTimestamps)
      fail('receipt.timestamps', `1..${Limits.maxReceiptTimestamps} entries`);
    return {
      kind: 'receipt',
      type: r.type === ReceiptMessage_Type.DELIVERY ? 'delivery' : 'read',
      timestamps: r.timestamps.map((t, i) => ts(t, `receipt.timestamps[${i}]`)),
    };
  }
  if (raw.typingMessage) {
    const t = raw.typingMessage;
    if (t.action !== TypingMessage_Action.STARTED && t.action !== TypingMessage_Action.STOPPED) fail('typing.action', 'unknown');
    return { kind: 'typing', action: t.action === TypingMessage_Action.STARTED ? 'started' : 'stopped', timestamp: ts(t.timestamp, 'typing.timestamp') };
  }
  if (raw.nullMessage) return { kind: 'null' };
  if (raw.groupUpdate) return { kind: 'groupUpdate', update: processGroupUpdate(raw.groupUpdate) };
  if (raw.senderKeyDistributionMessage.length > 0) {
    if (raw.senderKeyDistributionMessage.length > MAX_SKDM_BYTES) fail('senderKeyDistributionMessage', `at most ${MAX_SKDM_BYTES} bytes`);
    return { kind: 'senderKeyDistribution', message: raw.senderKeyDistributionMessage };
  }
  if (raw.syncMessage) {
    const reads = raw.syncMessage.readMessages;
    if (reads.length > 0) {
      if (raw.syncMessage.sent) fail('syncMessage', 'must carry one kind of sync');
      if (reads.length > Limits.maxReceiptTimestamps) fail('syncMessage.readMessages', `at most ${Limits.maxReceiptTimestamps} entries`);
      return {
        kind: 'syncRead',
        reads: reads.map((r, i) => ({
          sender: accountIdFromBytes(r.senderAccount, `syncMessage.readMessages[${i}].senderAccount`),
          timestamp: ts(r.timestamp, `syncMessage.readMessages[${i}].timestamp`),
        })),
      };
    }
    const s = raw.syncMessage.sent;
    if (!s?.message) fail('syncMessage', 'must carry a sent transcript');
    if (s.message.group) {
      if (s.destinationAccount.length !== 0) fail('syncMessage.sent.destinationAccount', 'must be empty for a group message');
      const message = processData(s.message, 'syncMessage.sent.message');
      return { kind: 'syncSentGroup', timestamp: ts(s.timestamp, 'syncMessage.sent.timestamp'), message: { ...message, group: { id: s.message.group.id } } };
    }
    return {
      kind: 'syncSent',
      destination: accountIdFromBytes(s.destinationAccount, 'syncMessage.sent.destinationAccount'),
      timestamp: ts(s.timestamp, 'syncMessage.sent.timestamp'),
      message: processData(s.message, 'syncMessage.sent.message'),
    };
  }
  return { kind: 'decryptionError', message: raw.decryptionErrorMessage };
}

export function encodeContent(c: Content, senderUsername: string | null = null): Uint8Array {
  const data = (m: DataMessage) => ({
    body: m.body,
    timestamp: BigInt(m.timestamp),
    attachments: (m.attachments ?? []).map((a) => ({
      blobId: a.blobId,
      key: a.key,
      digest: a.digest,
      size: BigInt(a.size),
      contentType: a.contentType,
      fileName: a.fileName,
    })),
    profileKey: m.profileKey ?? new Uint8Array(0),
    ...(m.group ? { group: { id: m.group.id } } : {}),
  });
  return toBinary(ContentSchema, create(ContentSchema, { ...contentInit(c, data), senderUsername: senderUsername ?? '' }));
}

function contentInit(c: Content, data: (m: DataMessage) => MessageInitShape<typeof DataMessageSchema>): MessageInitShape<typeof ContentSchema> {
  switch (c.kind) {
    case 'data':
      return { dataMessage: data(c.message) };
    case 'receipt':
      return { receiptMessage: {
        type: c.type === 'delivery' ? ReceiptMessage_Type.DELIVERY : ReceiptMessage_Type.READ,
        timestamps: c.timestamps.map(BigInt),
      } };
    case 'typing':
      return { typingMessage: {
        action: c.action === 'started' ? TypingMessage_Action.STARTED : TypingMessage_Action.STOPPED,
        timestamp: BigInt(c.timestamp),
      } };
    case 'null':
      return { nullMessage: {} };
    case 'decryptionError':
      return { decryptionErrorMessage: c.message };
    case 'syncRead':
      return { syncMessage: { readMessages: c.reads.map((r) => ({ senderAccount: accountIdToBytes(r.sender), timestamp: BigInt(r.timestamp) })) } };
    case 'syncSentGroup':
      return { syncMessage: { sent: { timestamp: BigInt(c.timestamp), message: data(c.message) } } };
    case 'senderKeyDistribution':
      return { senderKeyDistributionMessage: c.message };
    case 'groupUpdate':
      return { groupUpdate: { state: c.update.stateBytes, signer: c.update.signer ? accountIdToBytes(c.update.signer) : new Uint8Array(0), signature: c.update.signature } };
    case 'syncSent':
      return { syncMessage: {
        sent: {
          destinationAccount: accountIdToBytes(c.destination),
          timestamp: BigInt(c.timestamp),
          message: data(c.message),
        },
      } };
  }
}

/**
 * Pads plaintext before encryption so ciphertext lengths reveal only a size
 * bucket: the content, one 0x80 byte, then zeros up to a multiple of
 * Limits.paddingBlock.
 */
export function padPlaintext(content: Uint8Array): Uint8Array {
  const size = Math.ceil((content.length + 1) / Limits.paddingBlock) * Limits.paddingBlock;
  const out = new Uint8Array(size);
  out.set(content);
  out[content.length] = 0x80;
  return out;
}

/** Reverses padPlaintext; malformed padding is a WireError. */
export function unpadPlaintext(padded: Uint8Array): Uint8Array {
  let i = padded.length - 1;
  while (i >= 0 && padded[i] === 0) i--;
  if (i < 0 || padded[i] !== 0x80) throw new WireError(WireErrorCode.Malformed, 'content: bad padding');
  return padded.subarray(0, i);
}
