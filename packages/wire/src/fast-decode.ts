/**
 * Hand-written decoders for the messages read once per message: the
 * WebSocketMessage frame around everything, the SendMessageRequest the relay
 * reads per send, the Envelope a client reads per received message, and
 * (after decryption) a Content that is a plain data message.
 * The reflection-based `fromBinary` builds a message object per nesting
 * level, a tag tuple per field and a reader per call; these read the fields
 * straight into the plain objects the `process*` functions check.
 *
 * They only take the shape the relay and the SDK write: known field numbers
 * with their declared wire types, varints that fit the field, ASCII strings
 * in frames and valid UTF-8 in Content, and each nested message at most
 * once. Anything else (unknown or repeated sub-messages, wrong wire types,
 * truncation, non-ASCII frame text, huge varints)
 * makes them return `null`, and the caller decodes with `fromBinary`, so the
 * result is always the generic decoder's. test/fast-decode.test.ts checks
 * that, field by field, on random and mutated inputs.
 */
import { getTextEncoding } from '@bufbuild/protobuf/wire';

/** Envelope fields as `fromBinary(EnvelopeSchema)` gives them, timestamps as numbers. */
export interface RawEnvelope {
  type: number;
  sourceAccount: Uint8Array;
  sourceDevice: number;
  destinationAccount: Uint8Array;
  destinationDevice: number;
  clientTimestamp: number;
  serverTimestamp: number;
  serverGuid: Uint8Array;
  content: Uint8Array;
  urgent: boolean;
  story: boolean;
}

export interface RawRequest {
  verb: string;
  path: string;
  body: Uint8Array;
  headers: string[];
  id: bigint;
}

export interface RawResponse {
  id: bigint;
  status: number;
  message: string;
  body: Uint8Array;
  headers: string[];
}

export interface RawFrame {
  type: number;
  request: RawRequest | undefined;
  response: RawResponse | undefined;
}

const EMPTY = new Uint8Array(0);
/** Varints above this are left to the generic decoder (no precision to lose in a number). */
const MAX_SAFE = Number.MAX_SAFE_INTEGER;
const TWO_32 = 2 ** 32;

/** A cursor over `buf[pos..end)`; every read returns -1 (or null) instead of throwing. */
class Cursor {
  pos: number;
  constructor(
    readonly buf: Uint8Array,
    start: number,
    readonly end: number,
  ) {
    this.pos = start;
  }

  /** An unsigned varint of at most 53 bits, or -1 if truncated or larger. */
  varint(): number {
    const buf = this.buf;
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      if (this.pos >= this.end) return -1;
      const b = buf[this.pos++]!;
      value += (b & 0x7f) * scale;
      if (b < 0x80) return value <= MAX_SAFE ? value : -1;
      scale *= 0x80;
    }
    return -1;
  }

  /** A field tag (number << 3 | wire type) that fits in 32 bits with a field number above 0, or -1. */
  tag(): number {
    const t = this.varint();
    return t >= 8 && t < TWO_32 ? t : -1;
  }

  /** A length-delimited field's bytes as a view, or null if truncated. */
  bytes(): Uint8Array | null {
    const len = this.varint();
    if (len < 0 || len >= TWO_32 || this.end - this.pos < len) return null;
    const start = this.pos;
    this.pos += len;
    return this.buf.subarray(start, this.pos);
  }

  /** A length-delimited ASCII string, or null (truncated, or not ASCII: the generic decoder handles UTF-8). */
  ascii(): string | null {
    const b = this.bytes();
    return b === null || !isAscii(b) ? null : asciiString(b);
  }
}

function isAscii(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (b[i]! > 0x7f) return false;
  return true;
}

/** One string from ASCII bytes (no intermediate string per character). */
function asciiString(b: Uint8Array): string {
  return String.fromCharCode.apply(null, b as unknown as number[]);
}

/** `int32` as the generic decoder reads an enum: kept only when it is a non-negative 32-bit value. */
function enumValue(v: number): number {
  return v >= 0 && v <= 0x7fffffff ? v : -1;
}

/** The Envelope in `bytes`, or null when it is not in the plain shape (decode it with `fromBinary` then). */
export function decodeEnvelopeFast(bytes: Uint8Array): RawEnvelope | null {
  const c = new Cursor(bytes, 0, bytes.length);
  const e: RawEnvelope = {
    type: 0,
    sourceAccount: EMPTY,
    sourceDevice: 0,
    destinationAccount: EMPTY,
    destinationDevice: 0,
    clientTimestamp: 0,
    serverTimestamp: 0,
    serverGuid: EMPTY,
    content: EMPTY,
    urgent: false,
    story: false,
  };
  while (c.pos < c.end) {
    const tag = c.tag();
    if (tag < 0) return null;
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (wire === 0) {
      const v = c.varint();
      if (v < 0) return null;
      switch (field) {
        case 1:
          if ((e.type = enumValue(v)) < 0) return null;
          break;
        case 3:
          if (v >= TWO_32) return null;
          e.sourceDevice = v;
          break;
        case 5:
          if (v >= TWO_32) return null;
          e.destinationDevice = v;
          break;
        case 6:
          e.clientTimestamp = v;
          break;
        case 7:
          e.serverTimestamp = v;
          break;
        case 10:
          e.urgent = v !== 0;
          break;
        case 11:
          e.story = v !== 0;
          break;
        default:
          return null;
      }
    } else if (wire === 2) {
      const b = c.bytes();
      if (b === null) return null;
      switch (field) {
        case 2:
          e.sourceAccount = b;
          break;
        case 4:
          e.destinationAccount = b;
          break;
        case 8:
          e.serverGuid = b;
          break;
        case 9:
          e.content = b;
          break;
        default:
          return null;
      }
    } else {
      return null;
    }
  }
  return e;
}

function decodeRequest(c: Cursor): RawRequest | null {
  const r: RawRequest = { verb: '', path: '', body: EMPTY, headers: [], id: 0n };
  while (c.pos < c.end) {
    const tag = c.tag();
    if (tag < 0) return null;
    if (tag === 0x28) {
      // 5: id (uint64)
      const v = c.varint();
      if (v < 0) return null;
      r.id = BigInt(v);
      continue;
    }
    if ((tag & 7) !== 2) return null;
    switch (Math.floor(tag / 8)) {
      case 1: {
        const s = c.ascii();
        if (s === null) return null;
        r.verb = s;
        break;
      }
      case 2: {
        const s = c.ascii();
        if (s === null) return null;
        r.path = s;
        break;
      }
      case 3: {
        const b = c.bytes();
        if (b === null) return null;
        r.body = b;
        break;
      }
      case 4: {
        const s = c.ascii();
        if (s === null) return null;
        r.headers.push(s);
        break;
      }
      default:
        return null;
    }
  }
  return r;
}

function decodeResponse(c: Cursor): RawResponse | null {
  const r: RawResponse = { id: 0n, status: 0, message: '', body: EMPTY, headers: [] };
  while (c.pos < c.end) {
    const tag = c.tag();
    if (tag < 0) return null;
    if (tag === 0x08 || tag === 0x10) {
      const v = c.varint();
      if (v < 0) return null;
      if (tag === 0x08) r.id = BigInt(v);
      else if (v >= TWO_32) return null;
      else r.status = v;
      continue;
    }
    if ((tag & 7) !== 2) return null;
    switch (Math.floor(tag / 8)) {
      case 3: {
        const s = c.ascii();
        if (s === null) return null;
        r.message = s;
        break;
      }
      case 4: {
        const b = c.bytes();
        if (b === null) return null;
        r.body = b;
        break;
      }
      case 5: {
        const s = c.ascii();
        if (s === null) return null;
        r.headers.push(s);
        break;
      }
      default:
        return null;
    }
  }
  return r;
}

/** The WebSocketMessage in `bytes`, or null when it is not in the plain shape (decode it with `fromBinary` then). */
export function decodeFrameFast(bytes: Uint8Array): RawFrame | null {
  const c = new Cursor(bytes, 0, bytes.length);
  const f: RawFrame = { type: 0, request: undefined, response: undefined };
  while (c.pos < c.end) {
    const tag = c.tag();
    if (tag < 0) return null;
    if (tag === 0x08) {
      const v = c.varint();
      if (v < 0 || (f.type = enumValue(v)) < 0) return null;
      continue;
    }
    // A sub-message seen twice is merged by protobuf: leave that to the generic decoder.
    if (tag === 0x12 && f.request === undefined) {
      const b = c.bytes();
      if (b === null) return null;
      const r = decodeRequest(new Cursor(b, 0, b.length));
      if (r === null) return null;
      f.request = r;
      continue;
    }
    if (tag === 0x1a && f.response === undefined) {
      const b = c.bytes();
      if (b === null) return null;
      const r = decodeResponse(new Cursor(b, 0, b.length));
      if (r === null) return null;
      f.response = r;
      continue;
    }
    return null;
  }
  return f;
}

/** One OutgoingMessage as `fromBinary(SendMessageRequestSchema)` gives it. */
export interface RawOutgoing {
  type: number;
  destinationDevice: number;
  destinationRegistrationId: number;
  content: Uint8Array;
}

/** A SendMessageRequest's fields, the timestamp as a number. */
export interface RawSendRequest {
  messages: RawOutgoing[];
  timestamp: number;
  urgent: boolean;
  messageId: Uint8Array;
  online: boolean;
}

function decodeOutgoing(c: Cursor): RawOutgoing | null {
  const m: RawOutgoing = { type: 0, destinationDevice: 0, destinationRegistrationId: 0, content: EMPTY };
  while (c.pos < c.end) {
    const tag = c.tag();
    if (tag < 0) return null;
    if (tag === 0x22) {
      // 4: content
      const b = c.bytes();
      if (b === null) return null;
      m.content = b;
      continue;
    }
    if ((tag & 7) !== 0) return null;
    const v = c.varint();
    if (v < 0) return null;
    switch (tag >>> 3) {
      case 1:
        if ((m.type = enumValue(v)) < 0) return null;
        break;
      case 2:
        if (v >= TWO_32) return null;
        m.destinationDevice = v;
        break;
      case 3:
        if (v >= TWO_32) return null;
        m.destinationRegistrationId = v;
        break;
      default:
        return null;
    }
  }
  return m;
}

/** The SendMessageRequest in `bytes` (the body of every send), or null when it is not in the plain shape. */
export function decodeSendRequestFast(bytes: Uint8Array): RawSendRequest | null {
  const c = new Cursor(bytes, 0, bytes.length);
  const r: RawSendRequest = { messages: [], timestamp: 0, urgent: false, messageId: EMPTY, online: false };
  while (c.pos < c.end) {
    const tag = c.tag();
    if (tag < 0) return null;
    if (tag === 0x0a || tag === 0x22) {
      const b = c.bytes();
      if (b === null) return null;
      if (tag === 0x22) {
        r.messageId = b;
        continue;
      }
      // Each element of the repeated field is its own sub-message (nothing to merge).
      const m = decodeOutgoing(new Cursor(b, 0, b.length));
      if (m === null) return null;
      r.messages.push(m);
      continue;
    }
    if ((tag & 7) !== 0) return null;
    const v = c.varint();
    if (v < 0) return null;
    switch (tag >>> 3) {
      case 2:
        r.timestamp = v;
        break;
      case 3:
        r.urgent = v !== 0;
        break;
      case 5:
        r.online = v !== 0;
        break;
      default:
        return null;
    }
  }
  return r;
}

/** A Content carrying only a DataMessage without attachments or group (the common 1:1 text message). */
export interface RawDataContent {
  body: string;
  timestamp: bigint;
  expireTimer: number;
  profileKey: Uint8Array;
  senderUsername: string;
}

/** A proto3 string as the generic decoder reads it (valid UTF-8 only), or null. */
function utf8(c: Cursor): string | null {
  const b = c.bytes();
  if (b === null) return null;
  return b.length <= 32 && isAscii(b) ? asciiString(b) : strictUtf8(b);
}

function strictUtf8(b: Uint8Array): string | null {
  try {
    return getTextEncoding().decodeUtf8(b, true);
  } catch {
    return null;
  }
}

function decodeData(c: Cursor, out: RawDataContent): boolean {
  while (c.pos < c.end) {
    const tag = c.tag();
    if (tag < 0) return false;
    switch (tag) {
      case 0x0a: {
        const s = utf8(c);
        if (s === null) return false;
        out.body = s;
        break;
      }
      case 0x10: {
        const v = c.varint();
        if (v < 0) return false;
        out.timestamp = BigInt(v);
        break;
      }
      case 0x28: {
        const v = c.varint();
        if (v < 0 || v >= TWO_32) return false;
        out.expireTimer = v;
        break;
      }
      case 0x32: {
        const b = c.bytes();
        if (b === null) return false;
        out.profileKey = b;
        break;
      }
      default:
        return false; // attachments, group, anything else: the generic decoder
    }
  }
  return true;
}

/** The Content in `bytes` if it is a plain data message (see RawDataContent), else null (decode it with `fromBinary` then). */
export function decodeDataContentFast(bytes: Uint8Array): RawDataContent | null {
  const c = new Cursor(bytes, 0, bytes.length);
  const out: RawDataContent = { body: '', timestamp: 0n, expireTimer: 0, profileKey: EMPTY, senderUsername: '' };
  let data = false;
  while (c.pos < c.end) {
    const tag = c.tag();
    if (tag === 0x0a && !data) {
      const b = c.bytes();
      if (b === null || !decodeData(new Cursor(b, 0, b.length), out)) return null;
      data = true;
      continue;
    }
    if (tag === 0x42) {
      const s = utf8(c);
      if (s === null) return null;
      out.senderUsername = s;
      continue;
    }
    return null;
  }
  return data ? out : null;
}
