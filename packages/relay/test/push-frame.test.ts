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
  processEnvelope,
} from '@parley/wire';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodePushFrame } from '../src/push-frame.js';

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
