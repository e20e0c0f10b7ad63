import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { type Attachment, encodeContent, parseBlobId, processContent, WireError } from '../src/index.js';

const pointer = (over: Partial<Attachment> = {}): Attachment => ({
  blobId: parseBlobId(randomBytes(24).toString('base64url')),
  key: new Uint8Array(randomBytes(64)),
  digest: new Uint8Array(randomBytes(32)),
  size: 12345,
  contentType: 'image/png',
  fileName: 'photo.png',
  ...over,
});

describe('AttachmentPointer in a DataMessage', () => {
  it('round-trips every field', () => {
    const a = pointer();
    const bytes = encodeContent({ kind: 'data', message: { body: '', timestamp: 5, attachments: [a] } });
    const back = processContent(bytes).content;
    expect(back).toEqual({ kind: 'data', message: { body: '', timestamp: 5, attachments: [a] } });
  });

  it('leaves attachments out when there are none', () => {
    const back = processContent(encodeContent({ kind: 'data', message: { body: 'x', timestamp: 1 } })).content;
    expect(back).toEqual({ kind: 'data', message: { body: 'x', timestamp: 1 } });
  });

  it('rejects bad keys, digests, ids, names and too many attachments', () => {
    const bad: Array<Partial<Attachment>> = [
      { key: new Uint8Array(63) },
      { digest: new Uint8Array(31) },
      { blobId: 'short' as never },
      { fileName: 'x'.repeat(256) },
      { contentType: 'x'.repeat(129) },
    ];
    for (const over of bad) {
      const bytes = encodeContent({ kind: 'data', message: { body: '', timestamp: 1, attachments: [pointer(over)] } });
      expect(() => processContent(bytes)).toThrow(WireError);
    }
    const many = encodeContent({ kind: 'data', message: { body: '', timestamp: 1, attachments: Array.from({ length: 11 }, () => pointer()) } });
    expect(() => processContent(many)).toThrow(WireError);
  });
});
