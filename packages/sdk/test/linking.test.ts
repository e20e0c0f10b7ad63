/** Linking crypto and formats without a relay: provisioning envelope, link text, history archive. */
import { randomBytes } from 'node:crypto';
import { PrivateKey } from '@signalapp/libsignal-client';
import { describe, expect, it } from 'vitest';
import { SdkError } from '../src/errors.js';
import { decryptArchive, encryptArchive } from '../src/history-archive.js';
import { formatLink, openProvision, parseLink, sealProvision } from '../src/linking.js';

/** The SdkError code `fn` throws, or null. */
function codeOf(fn: () => unknown): string | null {
  try {
    fn();
  } catch (e) {
    return SdkError.is(e) ? e.code : null;
  }
  return null;
}

describe('provisioning envelope', () => {
  it('opens only with the ephemeral private key it was sealed to, and not after any change', () => {
    const device = PrivateKey.generate();
    const plaintext = new Uint8Array(randomBytes(300));
    const env = sealProvision(device.getPublicKey().serialize(), plaintext);
    expect(openProvision(device, env)).toEqual(plaintext);
    expect(codeOf(() => openProvision(PrivateKey.generate(), env))).toBe('LINK_FAILED');
    for (const i of [0, 12, env.body.length - 1]) {
      const body = new Uint8Array(env.body);
      body[i] = (body[i] ?? 0) ^ 1;
      expect(codeOf(() => openProvision(device, { ...env, body }))).toBe('LINK_FAILED');
    }
    // Another sender key (the relay swapping in its own) changes the derived key and the AAD.
    const other = sealProvision(device.getPublicKey().serialize(), plaintext);
    expect(() => openProvision(device, { publicKey: other.publicKey, body: env.body })).toThrow(SdkError);
  });

  it('each seal uses a fresh sender key', () => {
    const device = PrivateKey.generate().getPublicKey().serialize();
    const a = sealProvision(device, new Uint8Array(10));
    const b = sealProvision(device, new Uint8Array(10));
    expect(Buffer.from(a.publicKey).equals(Buffer.from(b.publicKey))).toBe(false);
  });
});

describe('link text', () => {
  it('round-trips and rejects anything else', () => {
    const info = { address: randomBytes(16).toString('base64url'), publicKey: PrivateKey.generate().getPublicKey().serialize() };
    const link = formatLink(info);
    expect(link.startsWith('parley://link?')).toBe(true);
    expect(parseLink(`  ${link}\n`)).toEqual(info);
    for (const bad of ['', 'https://example.com', 'parley://link?address=x&key=y', link.replace('address=', 'addr='), `${link}${'A'.repeat(300)}`])
      expect(() => parseLink(bad)).toThrow(SdkError);
    // A key of the right length that is not a valid public key.
    const badKey = formatLink({ ...info, publicKey: new Uint8Array(33) });
    expect(() => parseLink(badKey)).toThrow(SdkError);
  });
});

describe('history archive', () => {
  it('decrypts only under its key and unchanged', () => {
    const key = new Uint8Array(randomBytes(32));
    const plain = new Uint8Array(Buffer.from('{"version":1}'));
    const blob = encryptArchive(key, plain);
    expect(decryptArchive(key, blob)).toEqual(plain);
    expect(() => decryptArchive(new Uint8Array(randomBytes(32)), blob)).toThrow(SdkError);
    const flipped = new Uint8Array(blob);
    flipped[20] = (flipped[20] ?? 0) ^ 1;
    expect(() => decryptArchive(key, flipped)).toThrow(SdkError);
    expect(() => decryptArchive(key, blob.subarray(0, 10))).toThrow(SdkError);
  });
});
