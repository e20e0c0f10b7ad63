import { type MessageInitShape, create, fromBinary, toBinary } from '@bufbuild/protobuf';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeDataContentFast,
  decodeEnvelopeFast,
  decodeFrameFast,
  decodeSendRequestFast,
  type RawEnvelope,
  type RawFrame,
  type RawSendRequest,
} from '../src/fast-decode.js';
import { type Content as PbContent, ContentSchema } from '../src/gen/parley/v1/content_pb.js';
import {
  type Envelope as PbEnvelope,
  EnvelopeSchema,
  type SendMessageRequest,
  SendMessageRequestSchema,
} from '../src/gen/parley/v1/envelope_pb.js';
import { type WebSocketMessage, WebSocketMessageSchema } from '../src/gen/parley/v1/websocket_pb.js';
import {
  type AccountId,
  type DeviceId,
  type Envelope,
  EnvelopeType,
  decodeFrame,
  encodeContent,
  encodeEnvelope,
  encodeRequest,
  encodeResponse,
  encodeSendRequestBinary,
  processContent,
  processEnvelope,
  processSendRequestBinary,
  type SendRequest,
} from '../src/index.js';

// The hand-written decoders must give exactly what fromBinary gives, or decline (null) so the caller uses fromBinary.

const u32 = fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 200 }), fc.integer({ min: 0, max: 0xffffffff }));
const u64 = fc.oneof(fc.constant(0n), fc.bigInt({ min: 0n, max: 2n ** 53n }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }));
const enumNo = fc.oneof(fc.constantFrom(0, 1, 3, 5, 6, 8), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }));
const bytes = (max: number) => fc.oneof(fc.constant(new Uint8Array(0)), fc.uint8Array({ maxLength: max }));
// Mostly ASCII, sometimes any text (the fast path declines non-ASCII strings).
const text = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 12 }));

const pbEnvelope = fc.record({
  type: enumNo,
  sourceAccount: bytes(20),
  sourceDevice: u32,
  destinationAccount: bytes(20),
  destinationDevice: u32,
  clientTimestamp: u64,
  serverTimestamp: u64,
  serverGuid: bytes(20),
  content: bytes(300),
  urgent: fc.boolean(),
  story: fc.boolean(),
});

const pbFrame = fc.record({
  type: enumNo,
  request: fc.option(
    fc.record({ verb: text, path: text, body: bytes(200), headers: fc.array(text, { maxLength: 4 }), id: u64 }),
    { nil: undefined },
  ),
  response: fc.option(
    fc.record({ id: u64, status: u32, message: text, body: bytes(200), headers: fc.array(text, { maxLength: 4 }) }),
    { nil: undefined },
  ),
});

/** The encoding, sometimes damaged: a byte changed, cut short, random bytes appended, or two encodings joined (protobuf merges them). */
function mutated(encoded: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array> {
  return fc.oneof(
    encoded,
    fc.tuple(encoded, fc.nat(), fc.integer({ min: 0, max: 255 })).map(([b, i, v]) => {
      const c = new Uint8Array(b);
      if (c.length > 0) c[i % c.length] = v;
      return c;
    }),
    fc.tuple(encoded, fc.nat()).map(([b, n]) => b.subarray(0, b.length === 0 ? 0 : n % b.length)),
    fc.tuple(encoded, fc.uint8Array({ minLength: 1, maxLength: 12 })).map(([b, tail]) => Uint8Array.from([...b, ...tail])),
    fc.tuple(encoded, encoded).map(([a, b]) => Uint8Array.from([...a, ...b])),
    // A varint field of any number with a value of up to 64 bits (wider than most fields hold).
    fc.tuple(encoded, fc.integer({ min: 1, max: 12 }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })).map(([b, field, v]) => {
      const out = [...b, field << 3];
      for (; v >= 0x80n; v >>= 7n) out.push(Number(v & 0x7fn) | 0x80);
      out.push(Number(v));
      return Uint8Array.from(out);
    }),
    fc.uint8Array({ maxLength: 64 }),
  );
}

const pbSend = fc.record({
  messages: fc.array(
    fc.record({ type: enumNo, destinationDevice: u32, destinationRegistrationId: u32, content: bytes(300) }),
    { maxLength: 4 },
  ),
  timestamp: u64,
  urgent: fc.boolean(),
  messageId: bytes(20),
  online: fc.boolean(),
});

const encodedSend = pbSend.map((r) => toBinary(SendMessageRequestSchema, create(SendMessageRequestSchema, r as MessageInitShape<typeof SendMessageRequestSchema>)));
const encodedEnvelope = pbEnvelope.map((e) => toBinary(EnvelopeSchema, create(EnvelopeSchema, e as MessageInitShape<typeof EnvelopeSchema>)));
const encodedFrame = pbFrame.map((f) => toBinary(WebSocketMessageSchema, create(WebSocketMessageSchema, f as MessageInitShape<typeof WebSocketMessageSchema>)));

function generic<T>(f: () => T): T | 'error' {
  try {
    return f();
  } catch {
    return 'error';
  }
}

function sameEnvelope(fast: RawEnvelope, g: PbEnvelope): void {
  expect(fast).toEqual({
    type: g.type,
    sourceAccount: g.sourceAccount,
    sourceDevice: g.sourceDevice,
    destinationAccount: g.destinationAccount,
    destinationDevice: g.destinationDevice,
    clientTimestamp: Number(g.clientTimestamp),
    serverTimestamp: Number(g.serverTimestamp),
    serverGuid: g.serverGuid,
    content: g.content,
    urgent: g.urgent,
    story: g.story,
  });
  // Timestamps are numbers only when exact.
  expect(BigInt(fast.clientTimestamp)).toBe(g.clientTimestamp);
  expect(BigInt(fast.serverTimestamp)).toBe(g.serverTimestamp);
}

function sameFrame(fast: RawFrame, g: WebSocketMessage): void {
  expect(fast.type).toBe(g.type);
  expect(fast.request === undefined).toBe(g.request === undefined);
  expect(fast.response === undefined).toBe(g.response === undefined);
  if (fast.request && g.request) {
    const { verb, path, body, headers, id } = g.request;
    expect(fast.request).toEqual({ verb, path, body, headers, id });
  }
  if (fast.response && g.response) {
    const { id, status, message, body, headers } = g.response;
    expect(fast.response).toEqual({ id, status, message, body, headers });
  }
}

describe('hand-written Envelope decoder', () => {
  it('gives what fromBinary gives, or declines', () => {
    fc.assert(
      fc.property(mutated(encodedEnvelope), (b) => {
        const fast = decodeEnvelopeFast(b);
        if (fast === null) return;
        const g = generic(() => fromBinary(EnvelopeSchema, b));
        expect(g).not.toBe('error');
        sameEnvelope(fast, g as PbEnvelope);
      }),
      { numRuns: 3000 },
    );
  });

  it('takes every envelope the relay and the SDK write', () => {
    const guid = Uint8Array.from({ length: 16 }, (_, i) => i + 1);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 53 - 1 }), fc.integer({ min: 1, max: 127 }), fc.boolean(), (ts, device, sealed) => {
        const env: Envelope = {
          type: sealed ? EnvelopeType.UnidentifiedSender : EnvelopeType.PreKeyMessage,
          source: sealed ? null : { account: '0d1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5' as AccountId, device: device as DeviceId },
          destination: { account: 'a0b1c2d3-e4f5-4607-8819-2a3b4c5d6e7f' as AccountId, device: 1 as DeviceId },
          clientTimestamp: ts,
          serverTimestamp: ts,
          serverGuid: guid,
          content: new Uint8Array(1100).fill(7),
          urgent: true,
        };
        const b = encodeEnvelope(env);
        const fast = decodeEnvelopeFast(b);
        expect(fast).not.toBeNull();
        sameEnvelope(fast!, fromBinary(EnvelopeSchema, b));
        expect(processEnvelope(b)).toEqual(env);
      }),
    );
  });
});

function sameSend(fast: RawSendRequest, g: SendMessageRequest): void {
  expect(fast).toEqual({
    messages: g.messages.map(({ type, destinationDevice, destinationRegistrationId, content }) => ({
      type,
      destinationDevice,
      destinationRegistrationId,
      content,
    })),
    timestamp: Number(g.timestamp),
    urgent: g.urgent,
    messageId: g.messageId,
    online: g.online,
  });
  expect(BigInt(fast.timestamp)).toBe(g.timestamp);
}

describe('hand-written SendMessageRequest decoder', () => {
  it('gives what fromBinary gives, or declines', () => {
    fc.assert(
      fc.property(mutated(encodedSend), (b) => {
        const fast = decodeSendRequestFast(b);
        if (fast === null) return;
        const g = generic(() => fromBinary(SendMessageRequestSchema, b));
        expect(g).not.toBe('error');
        sameSend(fast, g as SendMessageRequest);
      }),
      { numRuns: 3000 },
    );
  });

  it('takes every send the SDK writes', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2 ** 53 - 1 }),
        fc.uniqueArray(fc.integer({ min: 1, max: 127 }), { minLength: 1, maxLength: 5 }),
        fc.boolean(),
        fc.boolean(),
        (ts, devices, urgent, online) => {
          const req: SendRequest = {
            messages: devices.map((d, i) => ({
              type: i % 2 ? EnvelopeType.UnidentifiedSender : EnvelopeType.Ciphertext,
              destinationDevice: d as DeviceId,
              destinationRegistrationId: 1 + i,
              content: new Uint8Array(1100).fill(i + 1),
            })),
            timestamp: ts,
            urgent,
            messageId: Uint8Array.from({ length: 16 }, (_, i) => i * 3),
            ...(online ? { online: true } : {}),
          };
          const b = encodeSendRequestBinary(req);
          const fast = decodeSendRequestFast(b);
          expect(fast).not.toBeNull();
          sameSend(fast!, fromBinary(SendMessageRequestSchema, b));
          expect(processSendRequestBinary(b)).toEqual(req);
        },
      ),
    );
  });
});

describe('hand-written WebSocketMessage decoder', () => {
  it('gives what fromBinary gives, or declines', () => {
    fc.assert(
      fc.property(mutated(encodedFrame), (b) => {
        const fast = decodeFrameFast(b);
        if (fast === null) return;
        const g = generic(() => fromBinary(WebSocketMessageSchema, b));
        expect(g).not.toBe('error');
        sameFrame(fast, g as WebSocketMessage);
      }),
      { numRuns: 3000 },
    );
  });

  it('takes the requests and responses the relay and the SDK write', () => {
    const body = new Uint8Array(300).fill(9);
    const req = encodeRequest({ id: 77n, verb: 'PUT', path: '/api/v1/message', headers: { 'content-type': 'application/x-protobuf' }, body });
    const res = encodeResponse({ id: 2n ** 40n, status: 200, message: 'OK', headers: {}, body: new Uint8Array(0) });
    for (const b of [req, res]) {
      const fast = decodeFrameFast(b);
      expect(fast).not.toBeNull();
      sameFrame(fast!, fromBinary(WebSocketMessageSchema, b));
    }
    expect(decodeFrame(req)).toEqual({
      kind: 'request',
      id: 77n,
      verb: 'PUT',
      path: '/api/v1/message',
      headers: { 'content-type': 'application/x-protobuf' },
      body,
    });
  });
});

// Data messages, sometimes with what the fast path leaves to fromBinary (attachments, a group, another kind beside it).
const pbData = fc.record({
  body: fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'grapheme', maxLength: 1200 }), fc.string({ unit: 'binary', maxLength: 20 })),
  timestamp: u64,
  expireTimer: u32,
  profileKey: bytes(40),
  attachments: fc.oneof(
    fc.constant([]),
    fc.array(fc.record({ blobId: text, key: bytes(64), digest: bytes(32), size: u64, contentType: text, fileName: text }), { maxLength: 2 }),
  ),
  group: fc.option(fc.record({ id: bytes(16) }), { nil: undefined }),
});
const pbContent = fc.record({
  dataMessage: fc.option(pbData, { freq: 8, nil: undefined }),
  nullMessage: fc.option(fc.constant({}), { freq: 8, nil: undefined }),
  decryptionErrorMessage: fc.oneof(fc.constant(new Uint8Array(0)), bytes(10)),
  senderUsername: fc.oneof(fc.constant(''), fc.constantFrom('alice', 'bob_1'), text),
});
const encodedContent = pbContent.map((c) => toBinary(ContentSchema, create(ContentSchema, c as MessageInitShape<typeof ContentSchema>)));

describe('hand-written data-message Content decoder', () => {
  it('gives what fromBinary gives, or declines', () => {
    fc.assert(
      fc.property(mutated(encodedContent), (b) => {
        const fast = decodeDataContentFast(b);
        if (fast === null) return;
        const g = generic(() => fromBinary(ContentSchema, b));
        expect(g).not.toBe('error');
        const c = g as PbContent;
        // Only a data message: nothing else the fast path would have dropped.
        expect(c.syncMessage ?? c.receiptMessage ?? c.typingMessage ?? c.nullMessage ?? c.groupUpdate).toBeUndefined();
        expect(c.decryptionErrorMessage.length + c.senderKeyDistributionMessage.length).toBe(0);
        expect(c.$unknown).toBeUndefined();
        const d = c.dataMessage!;
        expect(d.attachments).toEqual([]);
        expect(d.group).toBeUndefined();
        expect(d.$unknown).toBeUndefined();
        expect(fast).toEqual({
          body: d.body,
          timestamp: d.timestamp,
          expireTimer: d.expireTimer,
          profileKey: d.profileKey,
          senderUsername: c.senderUsername,
        });
      }),
      { numRuns: 3000 },
    );
  });

  it('takes the data messages the SDK writes, with any text', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 2000 }), fc.integer({ min: 0, max: 2 ** 53 - 1 }), fc.boolean(), (body, timestamp, withKey) => {
        const message = withKey ? { body, timestamp, profileKey: new Uint8Array(32).fill(3) } : { body, timestamp };
        const b = encodeContent({ kind: 'data', message }, 'alice');
        expect(decodeDataContentFast(b)).not.toBeNull();
        expect(processContent(b)).toEqual({ content: { kind: 'data', message }, senderUsername: 'alice' });
      }),
    );
  });
});
