/**
 * The load generator's Parley frames without the generic protobuf code, so
 * the generator spends its CPU on sockets rather than on encoding and the
 * server gets more of the machine they share. Every frame is byte for byte
 * what the generic @parley/wire encoders give for the same values, and every
 * read agrees with the generic decoders: each is checked against them when it
 * is created (`SendTemplate`) or for the first frames of a run (`FrameReader`),
 * and a mismatch throws, so the bench fails rather than measure something else.
 *
 * Sends: one template per recipient, encoded once by the generic encoder with
 * placeholder values whose encodings have a fixed length, then patched in
 * place for each send: the frame id (kept in 2^28..2^35, a 5-byte varint),
 * the timestamp (milliseconds, a 6-byte varint until 2109), the 16-byte
 * message id and the first 8 bytes of the content (the send time). `ws` masks
 * a client frame into a buffer of its own during `send`, so one template per
 * recipient can be reused at once.
 */
import { randomBytes } from 'node:crypto';
import { decodeFrame, encodeResponse, processEnvelope } from '@parley/wire';

/** First frame id of a fleet: every id from here to 2^35 is a 5-byte varint. */
export const FIRST_FAST_ID = 2 ** 28;
const LAST_FAST_ID = 2 ** 35 - 1;

function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return out;
}

function putVarint(buf: Buffer, at: number, n: number, size: number): void {
  for (let i = 0; i < size - 1; i++) {
    buf[at + i] = (n % 0x80) | 0x80;
    n = Math.floor(n / 0x80);
  }
  buf[at + size - 1] = n;
}

/** The only offset of `needle` in `hay`; throws when it is missing or not unique. */
function onlyOffset(hay: Buffer, needle: Uint8Array, what: string): number {
  const at = hay.indexOf(needle);
  if (at < 0 || hay.indexOf(needle, at + 1) >= 0) throw new Error(`send template: ${what} not found exactly once`);
  return at;
}

export type EncodeSend = (id: bigint, timestamp: number, messageId: Uint8Array, content: Uint8Array) => Uint8Array;

/** Message ids unique within the run: 8 random bytes, then a counter. */
export class MessageIds {
  readonly #buf = Buffer.alloc(16);
  #next = 0;
  constructor() {
    randomBytes(8).copy(this.#buf, 0);
  }
  /** The next id, written into `out` at `at`. */
  writeNext(out: Buffer, at: number): void {
    this.#buf.writeDoubleBE(++this.#next, 8);
    this.#buf.copy(out, at);
  }
}

/** One recipient's send frame, patched in place per send (see the top of this file). */
export class SendTemplate {
  readonly #frame: Buffer;
  readonly #idAt: number;
  readonly #tsAt: number;
  readonly #midAt: number;
  readonly #sentAtAt: number;

  /** `encode` is the generic encoder for this recipient; `payload` the content length. */
  constructor(encode: EncodeSend, payload: number) {
    const id = FIRST_FAST_ID + 0x1234567;
    const ts = Date.now();
    const mid = randomBytes(16);
    const content = Buffer.alloc(payload);
    randomBytes(8).copy(content, 0);
    this.#frame = Buffer.from(encode(BigInt(id), ts, mid, content));
    this.#idAt = onlyOffset(this.#frame, Uint8Array.from([0x28, ...varint(id)]), 'frame id') + 1;
    // The timestamp field of the body (field 2, varint).
    this.#tsAt = onlyOffset(this.#frame, Uint8Array.from([0x10, ...varint(ts)]), 'timestamp') + 1;
    this.#midAt = onlyOffset(this.#frame, mid, 'message id');
    this.#sentAtAt = onlyOffset(this.#frame, content.subarray(0, 8), 'content');
    // The patched template must equal the generic encoding of other values.
    const check = { id: LAST_FAST_ID - 7, ts: ts + 12_345, mid: randomBytes(16), sentAt: 1234.5678 };
    content.writeDoubleLE(check.sentAt, 0);
    const want = Buffer.from(encode(BigInt(check.id), check.ts, check.mid, content));
    const got = this.#patch(check.id, check.ts, check.sentAt);
    check.mid.copy(got, this.#midAt);
    if (!got.equals(want)) throw new Error('send template: patched frame differs from the generic encoding');
  }

  #patch(id: number, ts: number, sentAt: number): Buffer {
    if (id < FIRST_FAST_ID || id > LAST_FAST_ID) throw new RangeError('send template: frame id out of range');
    putVarint(this.#frame, this.#idAt, id, 5);
    putVarint(this.#frame, this.#tsAt, ts, 6);
    this.#frame.writeDoubleLE(sentAt, this.#sentAtAt);
    return this.#frame;
  }

  /** The frame for one send; valid until the next call (send it at once). */
  frame(id: number, sentAt: number, ids: MessageIds): Buffer {
    const f = this.#patch(id, Date.now(), sentAt);
    ids.writeNext(f, this.#midAt);
    return f;
  }
}

/** `encodeResponse({ id, status: 200, message: 'OK', headers: {}, body: empty })`: the ack of a push. */
export function ackFrame(id: number): Buffer {
  // proto3 leaves out a zero id.
  const inner = [...(id === 0 ? [] : [0x08, ...varint(id)]), 0x10, 0xc8, 0x01, 0x1a, 0x02, 0x4f, 0x4b];
  return Buffer.from([0x08, 0x02, 0x1a, inner.length, ...inner]);
}

/** What the generator needs of a frame from the relay. */
export type Incoming =
  { kind: 'push'; id: number; sentAt: number | null } | { kind: 'response'; status: number } | { kind: 'other'; id: number };

const PUSH_PATH = Buffer.from('/api/v1/message');

/**
 * Reads relay frames with a small protobuf walk; the first `checks` frames and
 * acks are compared with the generic decoders and encoders.
 */
export class FrameReader {
  #checks: number;
  constructor(checks = 200) {
    this.#checks = checks;
  }

  read(b: Buffer): Incoming {
    const r = walk(b);
    if (this.#checks > 0) {
      this.#checks--;
      verify(b, r);
    }
    return r;
  }
}

function verify(b: Buffer, r: Incoming): void {
  const f = decodeFrame(new Uint8Array(b));
  let ok: boolean;
  if (f.kind === 'response') ok = r.kind === 'response' && r.status === f.status;
  else if (f.path === '/api/v1/message') {
    const content = processEnvelope(f.body).content;
    const sentAt = content.byteLength >= 8 ? Buffer.from(content.buffer, content.byteOffset, 8).readDoubleLE(0) : null;
    const ack = encodeResponse({ id: f.id, status: 200, message: 'OK', headers: {}, body: new Uint8Array(0) });
    ok =
      r.kind === 'push' &&
      BigInt(r.id) === f.id &&
      (r.sentAt === sentAt || (Number.isNaN(r.sentAt) && Number.isNaN(sentAt))) &&
      Buffer.from(ack).equals(ackFrame(r.id));
  } else ok = r.kind === 'other' && BigInt(r.id) === f.id;
  if (!ok) throw new Error('frame reader: disagrees with the generic decoder');
}

class Cursor {
  p: number;
  constructor(
    readonly b: Buffer,
    start: number,
    readonly end: number,
  ) {
    this.p = start;
  }
  varint(): number {
    let n = 0;
    let scale = 1;
    for (;;) {
      if (this.p >= this.end) throw new Error('frame reader: truncated');
      const x = this.b[this.p++] as number;
      n += (x & 0x7f) * scale;
      if (x < 0x80) return n;
      scale *= 0x80;
    }
  }
  /** [start, end) of a length-delimited field's value. */
  span(): [number, number] {
    const len = this.varint();
    const s = this.p;
    this.p += len;
    if (this.p > this.end) throw new Error('frame reader: truncated');
    return [s, this.p];
  }
  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 2) this.span();
    else if (wire === 1) this.p += 8;
    else if (wire === 5) this.p += 4;
    else throw new Error('frame reader: unknown wire type');
  }
}

function walk(b: Buffer): Incoming {
  const c = new Cursor(b, 0, b.length);
  let req: [number, number] | null = null;
  let res: [number, number] | null = null;
  while (c.p < c.end) {
    const tag = c.varint();
    if (tag === 0x12) req = c.span();
    else if (tag === 0x1a) res = c.span();
    else c.skip(tag & 7);
  }
  if (res && !req) {
    const r = new Cursor(b, res[0], res[1]);
    let status = 0;
    while (r.p < r.end) {
      const tag = r.varint();
      if (tag === 0x10) status = r.varint();
      else r.skip(tag & 7);
    }
    return { kind: 'response', status };
  }
  if (!req) throw new Error('frame reader: neither request nor response');
  const q = new Cursor(b, req[0], req[1]);
  let id = 0;
  let path: [number, number] | null = null;
  let body: [number, number] | null = null;
  while (q.p < q.end) {
    const tag = q.varint();
    if (tag === 0x28) id = q.varint();
    else if (tag === 0x12) path = q.span();
    else if (tag === 0x1a) body = q.span();
    else q.skip(tag & 7);
  }
  if (!path || !PUSH_PATH.equals(b.subarray(path[0], path[1]))) return { kind: 'other', id };
  let sentAt: number | null = null;
  if (body) {
    const e = new Cursor(b, body[0], body[1]);
    while (e.p < e.end) {
      const tag = e.varint();
      if (tag === 0x4a) {
        const [s, t] = e.span();
        sentAt = t - s >= 8 ? b.readDoubleLE(s) : null;
      } else e.skip(tag & 7);
    }
  }
  return { kind: 'push', id, sentAt };
}
