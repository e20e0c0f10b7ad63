/** The hand-written push frame must be byte-for-byte the generic encoders' output, and decode to the same envelope. */
import { randomBytes, randomUUID } from 'node:crypto';
import {
  type AccountId,
  type DeviceId,
  type Envelope,
  EnvelopeType,
  decodeFrame,
  encodeEnvelope,
  encodeRequest,
  encodeResponse,
  processEnvelope,
} from '@parley/wire';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeAck, encodeOkEmptyResponse, encodePushFrame } from '../src/push-frame.js';

const generic = (id: bigint, e: Envelope) =>
  encodeRequest({
    id,
    verb: 'PUT',
    path: '/api/v1/message',
    headers: { 'content-type': 'application/x-protobuf' },
    body: encodeEnvelope(e),
  });

const envelope = (over: Partial<Envelope> = {}): Envelope => ({
  type: EnvelopeType.Ciphertext,
  source: { account: randomUUID() as AccountId, device: 3 as DeviceId },
  destination: { account: randomUUID() as AccountId, device: 1 as DeviceId },
  clientTimestamp: Date.now(),
  serverTimestamp: Date.now(),
  serverGuid: new Uint8Array(randomBytes(16)),
  content: new Uint8Array(randomBytes(1024)),
  urgent: true,
  ...over,
});

describe('encodePushFrame', () => {
  it('writes the same bytes as encodeRequest(encodeEnvelope(…)) for typical, sealed, receipt and edge envelopes', () => {
    const cases: Array<[bigint, Envelope]> = [
      [1n, envelope()],
      [200n, envelope({ type: EnvelopeType.UnidentifiedSender, source: null })],
      [2n ** 40n, envelope({ type: EnvelopeType.ServerDeliveryReceipt, content: new Uint8Array(0), urgent: false })],
      [127n, envelope({ clientTimestamp: 0, serverTimestamp: 2 ** 53 - 1, content: new Uint8Array(96 * 1024) })],
      [128n, envelope({ destination: { account: randomUUID() as AccountId, device: 127 as DeviceId } })],
    ];
    for (const [id, e] of cases) {
      const mine = encodePushFrame(id, e);
      expect(Buffer.from(mine).equals(Buffer.from(generic(id, e)))).toBe(true);
      const frame = decodeFrame(mine);
      expect(frame.kind).toBe('request');
      if (frame.kind !== 'request') continue;
      expect(frame.id).toBe(id);
      expect(processEnvelope(frame.body)).toEqual(e);
    }
  });

  it('matches the generic encoders for arbitrary field values', () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 1n, max: 2n ** 53n - 1n }),
        fc.constantFrom(EnvelopeType.Ciphertext, ...Object.values(EnvelopeType)),
        fc.integer({ min: 1, max: 127 }),
        fc.integer({ min: 0, max: 127 }),
        fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
        fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
        fc.uint8Array({ maxLength: 3000 }),
        fc.boolean(),
        (id, type, destDevice, srcDevice, cts, sts, content, urgent) => {
          const e = envelope({
            type,
            source: srcDevice === 0 ? null : { account: randomUUID() as AccountId, device: srcDevice as DeviceId },
            destination: { account: randomUUID() as AccountId, device: destDevice as DeviceId },
            clientTimestamp: cts,
            serverTimestamp: sts,
            content,
            urgent,
          });
          expect(Buffer.from(encodePushFrame(id, e)).equals(Buffer.from(generic(id, e)))).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('encodeOkEmptyResponse', () => {
  it('writes the same bytes as encodeResponse for the 200 {} answer, for any id', () => {
    const generic200 = (id: bigint) =>
      encodeResponse({
        id,
        status: 200,
        message: 'OK',
        headers: { 'content-type': 'application/json' },
        body: new TextEncoder().encode('{}'),
      });
    for (const id of [0n, 1n, 127n, 128n, 2n ** 40n])
      expect(Buffer.from(encodeOkEmptyResponse(id)).equals(Buffer.from(generic200(id)))).toBe(true);
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 2n ** 53n - 1n }), (id) => {
        expect(Buffer.from(encodeOkEmptyResponse(id)).equals(Buffer.from(generic200(id)))).toBe(true);
      }),
      { numRuns: 500 },
    );
  });
});

describe('decodeAck', () => {
  /** What decodeFrame says about the same bytes: the id and status of a response, else null. */
  const viaGeneric = (bytes: Uint8Array) => {
    try {
      const f = decodeFrame(bytes);
      return f.kind === 'response' ? { id: f.id, status: f.status } : null;
    } catch {
      return null;
    }
  };
  const check = (bytes: Uint8Array) => {
    const fast = decodeAck(bytes);
    // It may decline any frame, but what it answers is exactly what the generic decoder answers.
    if (fast !== null) expect(fast).toEqual(viaGeneric(bytes));
    return fast;
  };

  it('reads the acks clients send (id, status, "OK"/"Error", nothing else)', () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 0n, max: 2n ** 48n }),
        fc.integer({ min: 100, max: 599 }),
        fc.constantFrom('OK', 'Error', ''),
        (id, status, message) => {
          const bytes = encodeResponse({ id, status, message, headers: {}, body: new Uint8Array(0) });
          expect(check(bytes)).toEqual({ id, status });
        },
      ),
      { numRuns: 500 },
    );
  });

  it('never answers differently from decodeFrame: arbitrary responses, requests, edits and noise', () => {
    const response = fc
      .record({
        id: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
        status: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
        message: fc.string({ maxLength: 40 }),
        headers: fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }), fc.string({ maxLength: 8 }), { maxKeys: 2 }),
        body: fc.uint8Array({ maxLength: 8 }),
      })
      .map((r) => encodeResponse(r));
    const request = fc
      .record({ id: fc.bigInt({ min: 0n, max: 2n ** 20n }), body: fc.uint8Array({ maxLength: 8 }) })
      .map((r) => encodeRequest({ ...r, verb: 'PUT', path: '/v1/x', headers: {} }));
    // Valid frames with one byte changed, cut short or extended.
    const edited = fc
      .tuple(fc.oneof(response, request), fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom('set', 'cut', 'append'))
      .map(([b, at, v, how]) => {
        const c = new Uint8Array(b);
        const i = b.length === 0 ? 0 : at % b.length;
        if (how === 'set' && b.length > 0) c[i] = v;
        if (how === 'cut') return c.subarray(0, i);
        if (how === 'append') return new Uint8Array([...c, v]);
        return c;
      });
    const noise = fc.uint8Array({ maxLength: 40 });
    fc.assert(
      fc.property(fc.oneof(response, request, edited, noise), (bytes) => {
        check(bytes);
      }),
      { numRuns: 5000 },
    );
  });
});
