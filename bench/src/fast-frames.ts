/**
 * The load generator's Parley frames without the generic protobuf encoder, so
 * the generator spends its CPU on sockets rather than on encoding and the
 * server gets more of the machine they share. Every frame it writes is byte
 * for byte what the generic @parley/wire encoders give for the same values:
 * each send template is checked against them when it is created, and a
 * mismatch throws, so the bench fails rather than measure something else
 * (bench/test/fast-frames.test.ts checks the templates too). Acks are wire's
 * own `encodeResponse`, which writes them by hand, and frames from the relay
 * are read with wire's decoders (clients.ts).
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
import { putVarint, varintLength } from '@parley/wire';

/** First frame id of a fleet: every id from here to 2^35 is a 5-byte varint. */
export const FIRST_FAST_ID = 2 ** 28;
const LAST_FAST_ID = 2 ** 35 - 1;

/** The varint encoding of `n` (wire's encoder), to find a field in a template. */
function varint(n: number): Uint8Array {
  const out = new Uint8Array(varintLength(n));
  putVarint(out, 0, n);
  return out;
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
    // In range, the id takes 5 bytes and a millisecond timestamp 6 (until 2109), as in the template.
    putVarint(this.#frame, this.#idAt, id);
    putVarint(this.#frame, this.#tsAt, ts);
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
