/**
 * The relay's most frequent frame, encoded in one pass into one buffer: a
 * WebSocketMessage REQUEST `PUT /api/v1/message` (header
 * `content-type:application/x-protobuf`) whose body is an Envelope. The
 * generic `encodeRequest(…encodeEnvelope(…))` of @parley/wire builds two
 * message objects and two buffers per push; this writes the same bytes
 * (proto3: fields in number order, default values left out), which
 * packages/relay/test/push-frame.test.ts checks against the generic encoders.
 */
import { type Envelope, accountIdToBytes } from '@parley/wire';

const VERB = Buffer.from('PUT');
const PATH = Buffer.from('/api/v1/message');
const HEADER = Buffer.from('content-type:application/x-protobuf');

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 0x80);
    size++;
  }
  return size;
}

class Writer {
  readonly buf: Buffer;
  pos = 0;
  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }
  varint(n: number): void {
    while (n >= 0x80) {
      this.buf[this.pos++] = (n % 0x80) | 0x80;
      n = Math.floor(n / 0x80);
    }
    this.buf[this.pos++] = n;
  }
  bytes(field: number, b: Uint8Array): void {
    this.varint((field << 3) | 2);
    this.varint(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  uint(field: number, n: number): void {
    this.varint(field << 3);
    this.varint(n);
  }
}

const bytesField = (len: number) => 1 + varintSize(len) + len;
const uintField = (n: number) => 1 + varintSize(n);

/** Bytes of `encodeRequest({ id, verb: 'PUT', path: '/api/v1/message', headers: {content-type}, body: encodeEnvelope(e) })`. */
export function encodePushFrame(id: bigint, e: Envelope): Uint8Array {
  const source = e.source ? accountIdToBytes(e.source.account) : null;
  const dest = accountIdToBytes(e.destination.account);
  const sourceDevice = e.source?.device ?? 0;

  let env = uintField(e.type); // never 0 (TYPE_UNKNOWN is refused everywhere)
  if (source && source.length > 0) env += bytesField(source.length);
  if (sourceDevice !== 0) env += uintField(sourceDevice);
  if (dest.length > 0) env += bytesField(dest.length);
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
    if (source && source.length > 0) w.bytes(2, source);
    if (sourceDevice !== 0) w.uint(3, sourceDevice);
    if (dest.length > 0) w.bytes(4, dest);
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
