/**
 * The relay's most frequent frame, encoded in one pass into one buffer: a
 * WebSocketMessage REQUEST `PUT /api/v1/message` (header
 * `content-type:application/x-protobuf`) whose body is an Envelope. The
 * generic `encodeRequest(…encodeEnvelope(…))` of @parley/wire builds two
 * message objects and two buffers per push; this writes the same bytes
 * (proto3: fields in number order, default values left out), which
 * packages/relay/test/push-frame.test.ts checks against the generic encoders.
 */
import { type AccountId, type Envelope, encodeResponse, putAccountId, putVarint, varintLength } from '@parley/wire';

const VERB = Buffer.from('PUT');
const PATH = Buffer.from('/api/v1/message');
const HEADER = Buffer.from('content-type:application/x-protobuf');

class Writer {
  readonly buf: Buffer;
  pos = 0;
  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }
  varint(n: number): void {
    this.pos = putVarint(this.buf, this.pos, n);
  }
  bytes(field: number, b: Uint8Array): void {
    this.varint((field << 3) | 2);
    this.varint(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  /** An account id as its 16 bytes, without a Buffer per call. */
  accountId(field: number, id: AccountId): void {
    this.varint((field << 3) | 2);
    this.varint(16);
    this.pos = putAccountId(this.buf, this.pos, id);
  }
  uint(field: number, n: number): void {
    this.varint(field << 3);
    this.varint(n);
  }
}

const bytesField = (len: number) => 1 + varintLength(len) + len;
const uintField = (n: number) => 1 + varintLength(n);

/** Bytes of `encodeRequest({ id, verb: 'PUT', path: '/api/v1/message', headers: {content-type}, body: encodeEnvelope(e) })`. */
export function encodePushFrame(id: bigint, e: Envelope): Uint8Array {
  const sourceDevice = e.source?.device ?? 0;

  let env = uintField(e.type); // never 0 (TYPE_UNKNOWN is refused everywhere)
  if (e.source) env += bytesField(16);
  if (sourceDevice !== 0) env += uintField(sourceDevice);
  env += bytesField(16);
  if (e.destination.device !== 0) env += uintField(e.destination.device);
  if (e.clientTimestamp !== 0) env += uintField(e.clientTimestamp);
  if (e.serverTimestamp !== 0) env += uintField(e.serverTimestamp);
  if (e.serverGuid.length > 0) env += bytesField(e.serverGuid.length);
  if (e.content.length > 0) env += bytesField(e.content.length);
  if (e.urgent) env += 2;
  const idNum = Number(id);
  const req =
    bytesField(VERB.length) +
    bytesField(PATH.length) +
    (env > 0 ? bytesField(env) : 0) +
    bytesField(HEADER.length) +
    (idNum !== 0 ? uintField(idNum) : 0);
  const w = new Writer(uintField(1) + bytesField(req));
  w.uint(1, 1);
  w.varint((2 << 3) | 2);
  w.varint(req);
  w.bytes(1, VERB);
  w.bytes(2, PATH);
  if (env > 0) {
    w.varint((3 << 3) | 2);
    w.varint(env);
    w.uint(1, e.type);
    if (e.source) w.accountId(2, e.source.account);
    if (sourceDevice !== 0) w.uint(3, sourceDevice);
    w.accountId(4, e.destination.account);
    if (e.destination.device !== 0) w.uint(5, e.destination.device);
    if (e.clientTimestamp !== 0) w.uint(6, e.clientTimestamp);
    if (e.serverTimestamp !== 0) w.uint(7, e.serverTimestamp);
    if (e.serverGuid.length > 0) w.bytes(8, e.serverGuid);
    if (e.content.length > 0) w.bytes(9, e.content);
    if (e.urgent) w.uint(10, 1);
  }
  w.bytes(4, HEADER);
  if (idNum !== 0) w.uint(5, idNum);
  return new Uint8Array(w.buf.buffer, w.buf.byteOffset, w.pos);
}

/**
 * The answer to nearly every send: `encodeResponse({ id, status: 200, message: 'OK', headers:
 * {content-type: application/json}, body: '{}' })`. Only the id changes, so the rest is encoded
 * once (by the generic encoder, here with id 0, which proto3 leaves out) and copied behind it.
 */
const OK_EMPTY = encodeResponse({
  id: 0n,
  status: 200,
  message: 'OK',
  headers: { 'content-type': 'application/json' },
  body: new TextEncoder().encode('{}'),
});
/** The WebSocketResponse fields after the id (the frame is `08 02 1a <len> <response>`, len < 128). */
const OK_EMPTY_FIELDS = Buffer.from(OK_EMPTY.subarray(4));

/** Bytes of the generic `200 {}` response to request `id` (see OK_EMPTY). */
export function encodeOkEmptyResponse(id: bigint): Uint8Array {
  const idNum = Number(id);
  if (idNum === 0) return OK_EMPTY;
  const inner = uintField(idNum) + OK_EMPTY_FIELDS.length;
  const w = new Writer(uintField(1) + 1 + varintLength(inner) + inner);
  w.uint(1, 2);
  w.varint((3 << 3) | 2);
  w.varint(inner);
  w.uint(1, idNum);
  w.buf.set(OK_EMPTY_FIELDS, w.pos);
  w.pos += OK_EMPTY_FIELDS.length;
  return new Uint8Array(w.buf.buffer, w.buf.byteOffset, w.pos);
}

/** Longest frame `decodeAck` looks at; an ack as clients send it is about 15 bytes. */
const ACK_MAX_BYTES = 96;

/**
 * The id and status of a frame that is a plain ack, read without the generic
 * decoder: a WebSocketMessage of type RESPONSE whose response holds only an
 * id (< 2^49), a status in 100..599 and optionally a short printable-ASCII
 * message, each field at most once. Anything else (headers, a body, other
 * fields, odd encodings) gives null and goes through `decodeFrame`, so for
 * every frame this answers, `decodeFrame` gives the same id and status
 * (packages/relay/test/push-frame.test.ts checks it).
 */
export function decodeAck(b: Uint8Array): { id: bigint; status: number } | null {
  const n = b.length;
  if (n > ACK_MAX_BYTES) return null;
  // Outer: 08 02 (type RESPONSE) and 1a <len> <response>, in either order, once each.
  let type = false;
  let start = -1;
  let end = -1;
  let p = 0;
  while (p < n) {
    const tag = b[p++];
    if (tag === 0x08) {
      if (type || b[p++] !== 2) return null;
      type = true;
    } else if (tag === 0x1a) {
      const len = b[p++];
      if (start >= 0 || len === undefined || len >= 0x80) return null;
      start = p;
      end = p += len;
    } else return null;
  }
  if (!type || start < 0 || end > n) return null;
  let id = -1;
  let status = -1;
  let message = false;
  p = start;
  while (p < end) {
    const tag = b[p++];
    if (tag === 0x08) {
      if (id >= 0) return null;
      // Up to 7 bytes of varint: exact in a double.
      id = 0;
      let scale = 1;
      for (let i = 0; ; i++) {
        const x = b[p++];
        if (x === undefined || i === 7 || p > end) return null;
        id += (x & 0x7f) * scale;
        scale *= 0x80;
        if (x < 0x80) break;
      }
    } else if (tag === 0x10) {
      if (status >= 0) return null;
      const x = b[p++];
      const y = x !== undefined && x >= 0x80 ? b[p++] : 0;
      if (x === undefined || y === undefined || y >= 0x80 || p > end) return null;
      status = (x & 0x7f) + y * 0x80;
    } else if (tag === 0x1a) {
      const len = b[p++];
      if (message || len === undefined || len >= 0x80 || p + len > end) return null;
      for (let i = p; i < p + len; i++) {
        const c = b[i] as number;
        if (c < 0x20 || c > 0x7e) return null;
      }
      message = true;
      p += len;
    } else return null;
  }
  if (p !== end || status < 100 || status > 599) return null;
  return { id: BigInt(id < 0 ? 0 : id), status };
}
