/**
 * Envelopes (what the relay stores and delivers) and send requests (one
 * ciphertext per destination device), in protobuf and, for scripts using
 * plain HTTP, JSON.
 */
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { decodeEnvelopeFast, decodeSendRequestFast } from './fast-decode.js';
import { fail, WireError, WireErrorCode } from './errors.js';
import {
  EnvelopeSchema,
  Envelope_Type,
  SendMessageRequestSchema,
} from './gen/parley/v1/envelope_pb.js';
import { type AccountId, type DeviceId, accountIdFromBytes, accountIdToBytes, parseDeviceId, parseRegistrationId } from './ids.js';
import { arr, b64, bool, int, obj, toB64 } from './json.js';
import { Limits } from './limits.js';

export const EnvelopeType = {
  Ciphertext: 1,
  PreKeyMessage: 3,
  ServerDeliveryReceipt: 5,
  UnidentifiedSender: 6,
  PlaintextContent: 8,
} as const;
export type EnvelopeType = (typeof EnvelopeType)[keyof typeof EnvelopeType];

const ENVELOPE_TYPES = new Set<number>(Object.values(EnvelopeType));
/** Types a client may send; delivery receipts are made only by the relay. */
const SENDABLE_TYPES = new Set<number>([
  EnvelopeType.Ciphertext,
  EnvelopeType.PreKeyMessage,
  EnvelopeType.UnidentifiedSender,
  EnvelopeType.PlaintextContent,
]);

function parseEnvelopeType(v: unknown, field: string, sendable: boolean): EnvelopeType {
  if (typeof v !== 'number' || !(sendable ? SENDABLE_TYPES : ENVELOPE_TYPES).has(v)) fail(field, 'unknown envelope type');
  return v as EnvelopeType;
}

const MAX_TIMESTAMP = 2 ** 53 - 1;
function timestamp(v: unknown, field: string): number {
  const n = typeof v === 'bigint' ? (v > BigInt(MAX_TIMESTAMP) ? -1 : Number(v)) : v;
  return int(n, field, 0, MAX_TIMESTAMP);
}

function decode<T>(what: string, f: () => T): T {
  try {
    return f();
  } catch (err) {
    if (err instanceof WireError) throw err;
    throw new WireError(WireErrorCode.Malformed, `${what}: not a valid protobuf message`);
  }
}

// ---------------------------------------------------------------- Envelope

export interface Envelope {
  type: EnvelopeType;
  /** Null for sealed-sender envelopes. */
  source: { account: AccountId; device: DeviceId } | null;
  destination: { account: AccountId; device: DeviceId };
  clientTimestamp: number;
  serverTimestamp: number;
  /** 16 bytes, unique per stored envelope; the client acks by it. */
  serverGuid: Uint8Array;
  content: Uint8Array;
  urgent: boolean;
}

export function encodeEnvelope(e: Envelope): Uint8Array {
  return toBinary(
    EnvelopeSchema,
    create(EnvelopeSchema, {
      type: e.type as number as Envelope_Type,
      sourceAccount: e.source ? accountIdToBytes(e.source.account) : new Uint8Array(0),
      sourceDevice: e.source?.device ?? 0,
      destinationAccount: accountIdToBytes(e.destination.account),
      destinationDevice: e.destination.device,
      clientTimestamp: BigInt(e.clientTimestamp),
      serverTimestamp: BigInt(e.serverTimestamp),
      serverGuid: e.serverGuid,
      content: e.content,
      urgent: e.urgent,
    }),
  );
}

export function processEnvelope(bytes: Uint8Array): Envelope {
  if (bytes.length > Limits.maxFrameBytes) throw new WireError(WireErrorCode.TooLarge, 'envelope too large');
  // The relay's plain encoding is read by hand; anything else by the generic decoder (fast-decode.ts).
  const raw = decodeEnvelopeFast(bytes) ?? decode('envelope', () => fromBinary(EnvelopeSchema, bytes));
  const type = parseEnvelopeType(raw.type, 'envelope.type', false);
  const sealed = raw.sourceAccount.length === 0;
  if (sealed !== (type === EnvelopeType.UnidentifiedSender)) fail('envelope.sourceAccount', 'must be empty exactly when sealed');
  if (raw.content.length > Limits.maxContentBytes) throw new WireError(WireErrorCode.TooLarge, 'envelope.content too large');
  if (raw.serverGuid.length !== 16) fail('envelope.serverGuid', 'must be 16 bytes');
  return {
    type,
    source: sealed
      ? null
      : {
          account: accountIdFromBytes(raw.sourceAccount, 'envelope.sourceAccount'),
          device: parseDeviceId(raw.sourceDevice, 'envelope.sourceDevice'),
        },
    destination: {
      account: accountIdFromBytes(raw.destinationAccount, 'envelope.destinationAccount'),
      device: parseDeviceId(raw.destinationDevice, 'envelope.destinationDevice'),
    },
    clientTimestamp: timestamp(raw.clientTimestamp, 'envelope.clientTimestamp'),
    serverTimestamp: timestamp(raw.serverTimestamp, 'envelope.serverTimestamp'),
    serverGuid: raw.serverGuid,
    content: raw.content,
    urgent: raw.urgent,
  };
}

// ---------------------------------------------------------------- send

export interface OutgoingDeviceMessage {
  type: EnvelopeType;
  destinationDevice: DeviceId;
  destinationRegistrationId: number;
  content: Uint8Array;
}

export interface SendRequest {
  messages: OutgoingDeviceMessage[];
  timestamp: number;
  urgent: boolean;
  /** 16 client-chosen random bytes; a retry with the same id is not stored twice. */
  messageId: Uint8Array;
  /** Deliver only to devices connected now, never store (typing indicators). Absent means false. */
  online?: boolean;
}

function checkSend(req: SendRequest): SendRequest {
  if (req.messages.length === 0) fail('messages', 'must not be empty');
  const seen = new Set<number>();
  for (const m of req.messages) {
    if (seen.has(m.destinationDevice)) fail('messages', 'duplicate destination device');
    seen.add(m.destinationDevice);
  }
  return req;
}

export function processSendRequestBinary(bytes: Uint8Array): SendRequest {
  if (bytes.length > Limits.maxFrameBytes * 8) throw new WireError(WireErrorCode.TooLarge, 'send request too large');
  const raw = decodeSendRequestFast(bytes) ?? decode('send request', () => fromBinary(SendMessageRequestSchema, bytes));
  if (raw.messages.length > Limits.maxDevicesPerSend) fail('messages', `at most ${Limits.maxDevicesPerSend}`);
  if (raw.messageId.length !== 16) fail('messageId', 'must be 16 bytes');
  return checkSend({
    messages: raw.messages.map((m, i) => {
      if (m.content.length === 0) fail(`messages[${i}].content`, 'must not be empty');
      if (m.content.length > Limits.maxContentBytes)
        throw new WireError(WireErrorCode.TooLarge, `messages[${i}].content: at most ${Limits.maxContentBytes} bytes`);
      return {
        type: parseEnvelopeType(m.type, `messages[${i}].type`, true),
        destinationDevice: parseDeviceId(m.destinationDevice, `messages[${i}].destinationDevice`),
        destinationRegistrationId: parseRegistrationId(m.destinationRegistrationId, `messages[${i}].destinationRegistrationId`),
        content: m.content,
      };
    }),
    timestamp: timestamp(raw.timestamp, 'timestamp'),
    urgent: raw.urgent,
    messageId: raw.messageId,
    ...(raw.online ? { online: true } : {}),
  });
}

export function encodeSendRequestBinary(req: SendRequest): Uint8Array {
  return toBinary(
    SendMessageRequestSchema,
    create(SendMessageRequestSchema, {
      messages: req.messages.map((m) => ({
        type: m.type,
        destinationDevice: m.destinationDevice,
        destinationRegistrationId: m.destinationRegistrationId,
        content: m.content,
      })),
      timestamp: BigInt(req.timestamp),
      urgent: req.urgent,
      messageId: req.messageId,
      online: req.online ?? false,
    }),
  );
}

/** The JSON form accepted over HTTP, for scripts. */
export function processSendRequestJson(v: unknown): SendRequest {
  const o = obj(v, 'body');
  return checkSend({
    messages: arr(o.messages, 'messages', Limits.maxDevicesPerSend).map((x, i) => {
      const m = obj(x, `messages[${i}]`);
      const content = b64(m.content, `messages[${i}].content`, { max: Limits.maxContentBytes });
      if (content.length === 0) fail(`messages[${i}].content`, 'must not be empty');
      return {
        type: parseEnvelopeType(m.type, `messages[${i}].type`, true),
        destinationDevice: parseDeviceId(m.destinationDevice, `messages[${i}].destinationDevice`),
        destinationRegistrationId: parseRegistrationId(m.destinationRegistrationId, `messages[${i}].destinationRegistrationId`),
        content,
      };
    }),
    timestamp: timestamp(o.timestamp, 'timestamp'),
    urgent: bool(o.urgent, 'urgent', true),
    messageId: b64(o.messageId, 'messageId', { exact: 16 }),
    ...(bool(o.online, 'online', false) ? { online: true } : {}),
  });
}

export function encodeSendRequestJson(req: SendRequest) {
  return {
    messages: req.messages.map((m) => ({
      type: m.type,
      destinationDevice: m.destinationDevice,
      destinationRegistrationId: m.destinationRegistrationId,
      content: toB64(m.content),
    })),
    timestamp: req.timestamp,
    urgent: req.urgent,
    messageId: toB64(req.messageId),
    ...(req.online ? { online: true } : {}),
  };
}
