import { describe, expect, it } from 'vitest';
import { plainBytes } from '../src/bytes.js';

// Socket frames and database blobs are handed to libsignal through it: no copy unless the type needs one.
describe('plainBytes', () => {
  it('passes bytes over a plain ArrayBuffer through and copies bytes over a shared one', () => {
    const frame = Buffer.from('0123456789abcdef', 'hex');
    const part = frame.subarray(2, 6);
    expect(plainBytes(part)).toBe(part);
    const shared = new Uint8Array(new SharedArrayBuffer(4));
    shared.set([1, 2, 3, 4]);
    const copy = plainBytes(shared);
    expect(copy).not.toBe(shared);
    expect(copy.buffer).toBeInstanceOf(ArrayBuffer);
    expect([...copy]).toEqual([1, 2, 3, 4]);
  });
});
