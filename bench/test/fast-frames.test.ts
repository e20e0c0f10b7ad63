/**
 * The load generator's patched send frames (bench/src/fast-frames.ts) against
 * the generic @parley/wire encoders they stand in for.
 */
import { randomBytes } from 'node:crypto';
import { decodeFrame, processSendRequestBinary } from '@parley/wire';
import { describe, expect, it } from 'vitest';
import { type Creds, parleySendFrame } from '../src/clients.js';
import { FIRST_FAST_ID, MessageIds, SendTemplate } from '../src/fast-frames.js';

const to = { accountId: '0b7cbd6c-5d8b-4ad1-9c1e-8d0c2a4e9f11', registrationId: 4242 } as unknown as Creds;

describe('SendTemplate', () => {
  for (const sealed of [false, true]) {
    it(`patches each send to the generic encoding of its values (${sealed ? 'sealed' : 'identified'})`, () => {
      const key = sealed ? randomBytes(16).toString('base64') : undefined;
      const t = new SendTemplate(
        (id, timestamp, messageId, content) => parleySendFrame(id, to, content, key, { timestamp, messageId }),
        1024,
      );
      const ids = new MessageIds();
      const messageIds = new Set<string>();
      for (let i = 0; i < 300; i++) {
        const id = FIRST_FAST_ID + Math.floor(Math.random() * (2 ** 35 - FIRST_FAST_ID));
        const sentAt = Math.random() * 1e7;
        const frame = Buffer.from(t.frame(id, sentAt, ids));
        // Read back with the generic decoders, then encode those values generically: the same bytes.
        const f = decodeFrame(new Uint8Array(frame));
        if (f.kind !== 'request') throw new Error('not a request');
        expect(f.id).toBe(BigInt(id));
        const send = processSendRequestBinary(f.body);
        const content = send.messages[0]?.content ?? new Uint8Array(0);
        expect(content.length).toBe(1024);
        expect(Buffer.from(content.buffer, content.byteOffset, 8).readDoubleLE(0)).toBe(sentAt);
        expect(Math.abs(send.timestamp - Date.now())).toBeLessThan(60_000);
        const want = parleySendFrame(BigInt(id), to, content, key, { timestamp: send.timestamp, messageId: send.messageId });
        expect(frame.equals(Buffer.from(want))).toBe(true);
        messageIds.add(Buffer.from(send.messageId).toString('hex'));
      }
      expect(messageIds.size).toBe(300);
    });
  }

  it('refuses frame ids outside the fixed-width range', () => {
    const t = new SendTemplate((id, ts, mid, c) => parleySendFrame(id, to, c, undefined, { timestamp: ts, messageId: mid }), 64);
    expect(() => t.frame(FIRST_FAST_ID - 1, 1, new MessageIds())).toThrow(RangeError);
    expect(() => t.frame(2 ** 35, 1, new MessageIds())).toThrow(RangeError);
  });

  it('throws when the encoder is not what the template assumes', () => {
    // A frame whose content is not sent as given cannot be patched.
    expect(
      () =>
        new SendTemplate(
          (id, ts, mid) => parleySendFrame(id, to, new Uint8Array(8), undefined, { timestamp: ts, messageId: mid }),
          64,
        ),
    ).toThrow(/send template/);
  });
});
