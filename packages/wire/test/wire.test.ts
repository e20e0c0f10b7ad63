import { create, toBinary } from '@bufbuild/protobuf';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { WebSocketMessageSchema, WebSocketMessage_Type } from '../src/gen/parley/v1/websocket_pb.js';
import {
  type AccountId,
  accountIdFromBytes,
  accountIdToBytes,
  type Content,
  decodeFrame,
  encodeContent,
  encodeEnvelope,
  encodeRequest,
  encodeResponse,
  encodeSendRequestBinary,
  encodeSendRequestJson,
  type Envelope,
  EnvelopeType,
  Limits,
  normalizeUsername,
  padPlaintext,
  processContent,
  processEnvelope,
  processKeyUploadRequest,
  processRegisterRequest,
  processSendRequestBinary,
  processSendRequestJson,
  type SendRequest,
  unpadPlaintext,
  WireError,
} from '../src/index.js';

const alice = '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0' as AccountId;
const bob = 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee' as AccountId;
const bytes = (n: number, fill = 7) => new Uint8Array(n).fill(fill);

function envelope(over: Partial<Envelope> = {}): Envelope {
  return {
    type: EnvelopeType.Ciphertext,
    source: { account: alice, device: 1 as never },
    destination: { account: bob, device: 2 as never },
    clientTimestamp: 1_700_000_000_000,
    serverTimestamp: 1_700_000_000_123,
    serverGuid: bytes(16, 9),
    content: bytes(300),
    urgent: true,
    ...over,
  };
}

function sendRequest(over: Partial<SendRequest> = {}): SendRequest {
  return {
    messages: [
      { type: EnvelopeType.PreKeyMessage, destinationDevice: 1 as never, destinationRegistrationId: 4242, content: bytes(10) },
      { type: EnvelopeType.Ciphertext, destinationDevice: 3 as never, destinationRegistrationId: 17, content: bytes(20) },
    ],
    timestamp: 1_700_000_000_000,
    urgent: true,
    messageId: bytes(16, 1),
    ...over,
  };
}

const wireCode = (f: () => unknown) => {
  try {
    f();
  } catch (err) {
    if (err instanceof WireError) return err.code;
    throw err;
  }
  throw new Error('expected a WireError');
};

describe('ids', () => {
  it('round-trips account ids through bytes', () => {
    expect(accountIdFromBytes(accountIdToBytes(alice))).toBe(alice);
  });
  it('normalizes usernames with NFKC and lowercase, and rejects the rest', () => {
    expect(normalizeUsername('Alice_01')).toBe('alice_01');
    expect(normalizeUsername('ＡＬＩＣＥ')).toBe('alice'); // full-width letters fold under NFKC
    for (const bad of ['al', 'a'.repeat(33), 'al ice', 'alice!', 'élodie', 42, null]) {
      expect(wireCode(() => normalizeUsername(bad))).toBe('WIRE_BAD_FIELD');
    }
  });
  it('gives the same answers when a username repeats (the last one is remembered)', () => {
    expect(wireCode(() => normalizeUsername(''))).toBe('WIRE_BAD_FIELD');
    for (let i = 0; i < 3; i++) {
      expect(normalizeUsername('ＡＬＩＣＥ')).toBe('alice');
      expect(normalizeUsername('ＡＬＩＣＥ')).toBe('alice');
      expect(wireCode(() => normalizeUsername('al'))).toBe('WIRE_BAD_FIELD');
      expect(wireCode(() => normalizeUsername('al'))).toBe('WIRE_BAD_FIELD');
      expect(normalizeUsername('Bob_2')).toBe('bob_2');
    }
  });
  it('converts account id bytes right when the same and other ids repeat, and after the caller reuses its buffer', () => {
    const hexId = (b: Uint8Array) => {
      const h = Buffer.from(b).toString('hex');
      return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
    };
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 7 }), { minLength: 1, maxLength: 40 }), (picks) => {
        const pool = Array.from({ length: 8 }, (_, i) => new Uint8Array(16).fill(i * 31).map((v, j) => (v + j * (i + 1)) & 0xff));
        for (const k of picks) expect(accountIdFromBytes(pool[k]!)).toBe(hexId(pool[k]!));
      }),
    );
    const buf = new Uint8Array(40);
    buf.fill(0xab, 4, 20);
    const view = buf.subarray(4, 20);
    expect(accountIdFromBytes(view)).toBe('abababab-abab-abab-abab-abababababab');
    view[15] = 0x01; // same buffer, new contents
    expect(accountIdFromBytes(view)).toBe('abababab-abab-abab-abab-ababababab01');
    expect(wireCode(() => accountIdFromBytes(new Uint8Array(15)))).toBe('WIRE_BAD_FIELD');
  });
});

describe('envelope', () => {
  it('round-trips identified and sealed envelopes', () => {
    const e = envelope();
    expect(processEnvelope(encodeEnvelope(e))).toEqual(e);
    const sealed = envelope({ type: EnvelopeType.UnidentifiedSender, source: null });
    expect(processEnvelope(encodeEnvelope(sealed))).toEqual(sealed);
  });
  it('rejects a source on a sealed envelope and a missing source on an identified one', () => {
    const bad = encodeEnvelope(envelope({ type: EnvelopeType.UnidentifiedSender }));
    expect(wireCode(() => processEnvelope(bad))).toBe('WIRE_BAD_FIELD');
    const bad2 = encodeEnvelope(envelope({ source: null }));
    expect(wireCode(() => processEnvelope(bad2))).toBe('WIRE_BAD_FIELD');
  });
  it('rejects oversized content', () => {
    const big = encodeEnvelope(envelope({ content: bytes(Limits.maxContentBytes + 1) }));
    expect(wireCode(() => processEnvelope(big))).toBe('WIRE_TOO_LARGE');
  });
});

describe('send request', () => {
  it('round-trips through protobuf and JSON to the same domain value', () => {
    const r = sendRequest();
    expect(processSendRequestBinary(encodeSendRequestBinary(r))).toEqual(r);
    expect(processSendRequestJson(JSON.parse(JSON.stringify(encodeSendRequestJson(r))))).toEqual(r);
  });
  it('rejects empty, duplicate-device, bad-type, oversized and id-less requests', () => {
    const cases: SendRequest[] = [
      sendRequest({ messages: [] }),
      sendRequest({ messages: [sendRequest().messages[0]!, sendRequest().messages[0]!] }),
      sendRequest({ messages: [{ ...sendRequest().messages[0]!, type: EnvelopeType.ServerDeliveryReceipt }] }),
      sendRequest({ messageId: bytes(15) }),
    ];
    for (const c of cases) expect(() => processSendRequestBinary(encodeSendRequestBinary(c))).toThrow(WireError);
    const big = sendRequest({ messages: [{ ...sendRequest().messages[0]!, content: bytes(Limits.maxContentBytes + 1) }] });
    expect(wireCode(() => processSendRequestBinary(encodeSendRequestBinary(big)))).toBe('WIRE_TOO_LARGE');
  });
  it('rejects JSON with wrong field types', () => {
    const json = encodeSendRequestJson(sendRequest());
    for (const bad of [
      { ...json, timestamp: -1 },
      { ...json, messageId: 'not base64!' },
      { ...json, messages: [{ ...json.messages[0], destinationDevice: 128 }] },
      { ...json, messages: [{ ...json.messages[0], destinationRegistrationId: 0 }] },
      { ...json, messages: 'x' },
      null,
    ]) {
      expect(wireCode(() => processSendRequestJson(bad))).toBe('WIRE_BAD_FIELD');
    }
  });
});

describe('frames', () => {
  it('round-trips requests and responses with lowercased header names', () => {
    const req = { id: 7n, verb: 'PUT', path: '/v1/messages/x', headers: { 'content-type': 'application/x-protobuf' }, body: bytes(3) };
    expect(decodeFrame(encodeRequest(req))).toEqual({ kind: 'request', ...req });
    const res = { id: 7n, status: 409, message: 'Conflict', headers: {}, body: bytes(2) };
    expect(decodeFrame(encodeResponse(res))).toEqual({ kind: 'response', ...res });
  });
  it('writes acks by hand with the same bytes as the generic encoder', () => {
    const generic = (r: { id: bigint; status: number; message: string; headers: Record<string, string>; body: Uint8Array }) =>
      toBinary(
        WebSocketMessageSchema,
        create(WebSocketMessageSchema, {
          type: WebSocketMessage_Type.RESPONSE,
          response: { id: r.id, status: r.status, message: r.message, headers: Object.entries(r.headers).map(([k, v]) => `${k}:${v}`), body: r.body },
        }),
      );
    const ids = fc.oneof(fc.constantFrom(0n, 1n, 127n, 128n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 64n - 1n), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }));
    const statuses = fc.oneof(fc.constantFrom(0, 200, 500, 127, 128, 2 ** 32 - 1), fc.integer({ min: 0, max: 2 ** 32 - 1 }));
    const messages = fc.oneof(fc.constantFrom('', 'OK', 'Error', 'é', 'x'.repeat(100), 'x'.repeat(101)), fc.string({ maxLength: 120 }));
    const headers = fc.oneof(fc.constant({}), fc.constant({ 'content-type': 'application/json' }));
    const bodies = fc.oneof(fc.constant(new Uint8Array(0)), fc.uint8Array({ minLength: 1, maxLength: 4 }));
    fc.assert(
      fc.property(ids, statuses, messages, headers, bodies, (id, status, message, h, body) => {
        const r = { id, status, message, headers: h, body };
        expect(encodeResponse(r)).toEqual(generic(r));
      }),
      { numRuns: 2000 },
    );
    const ack = { id: 300n, status: 200, message: 'OK', headers: {}, body: new Uint8Array(0) };
    expect(decodeFrame(encodeResponse(ack))).toEqual({ kind: 'response', ...ack });
  });
  it('rejects unknown verbs and relative paths', () => {
    expect(() => decodeFrame(encodeRequest({ id: 1n, verb: 'PATCH', path: '/x', headers: {}, body: bytes(0) }))).toThrow(WireError);
    expect(() => decodeFrame(encodeRequest({ id: 1n, verb: 'GET', path: 'x', headers: {}, body: bytes(0) }))).toThrow(WireError);
  });
});

describe('content', () => {
  it('round-trips every kind with the sender username claim', () => {
    const kinds: Content[] = [
      { kind: 'data', message: { body: 'hello ✓', timestamp: 5 } },
      { kind: 'receipt', type: 'read', timestamps: [1, 2, 3] },
      { kind: 'typing', action: 'started', timestamp: 9 },
      { kind: 'null' },
      { kind: 'decryptionError', message: bytes(5) },
      { kind: 'syncSent', destination: bob, timestamp: 4, message: { body: 'x', timestamp: 4 } },
    ];
    for (const c of kinds) expect(processContent(encodeContent(c, 'alice'))).toEqual({ content: c, senderUsername: 'alice' });
    expect(processContent(encodeContent({ kind: 'null' })).senderUsername).toBeNull();
  });
  it('rejects an empty content', () => {
    expect(wireCode(() => processContent(new Uint8Array(0)))).toBe('WIRE_BAD_FIELD');
  });
  it('pads to a multiple of the block and unpads exactly (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2000 }), (data) => {
        const padded = padPlaintext(data);
        expect(padded.length % Limits.paddingBlock).toBe(0);
        expect(padded.length).toBeGreaterThan(data.length);
        expect(unpadPlaintext(padded)).toEqual(data);
      }),
    );
    expect(() => unpadPlaintext(new Uint8Array(160))).toThrow(WireError);
  });
});

describe('fuzz: arbitrary bytes never escape as anything but WireError', () => {
  const decoders: Array<[string, (b: Uint8Array) => unknown]> = [
    ['frame', decodeFrame],
    ['envelope', processEnvelope],
    ['send', processSendRequestBinary],
    ['content', processContent],
  ];
  for (const [name, decode] of decoders) {
    it(name, () => {
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 512 }), (data) => {
          try {
            decode(data);
          } catch (err) {
            expect(err).toBeInstanceOf(WireError);
          }
        }),
        { numRuns: 2000 },
      );
    });
  }
  it('JSON bodies of any shape', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        for (const f of [processRegisterRequest, processKeyUploadRequest, processSendRequestJson]) {
          try {
            f(v);
          } catch (err) {
            expect(err).toBeInstanceOf(WireError);
          }
        }
      }),
      { numRuns: 1000 },
    );
  });
});
