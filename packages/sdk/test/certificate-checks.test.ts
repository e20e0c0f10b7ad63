/**
 * CertificateChecks (sealed.ts) remembers sender certificates whose
 * signatures libsignal accepted, so a burst of sealed messages verifies each
 * certificate once. It must give libsignal's answer every time: a remembered
 * certificate still expires, and nothing that differs from it in any byte,
 * or is checked against another root, rides on an earlier success.
 */
import { IdentityKeyPair, PrivateKey, SenderCertificate, ServerCertificate } from '@signalapp/libsignal-client';
import { describe, expect, it } from 'vitest';
import { CertificateChecks } from '../src/sealed.js';

const ACCOUNT = '5b1f2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d';

function issuer() {
  const root = PrivateKey.generate();
  const serverKey = PrivateKey.generate();
  const server = ServerCertificate.new(1, serverKey.getPublicKey(), root);
  const sender = IdentityKeyPair.generate();
  const issue = (expires: number, signer = serverKey, cert = server) =>
    SenderCertificate.new(ACCOUNT, null, 1, sender.publicKey, expires, cert, signer);
  return { root: root.getPublicKey(), serverKey, server, issue };
}

describe('CertificateChecks', () => {
  it('answers like validate for a remembered certificate, including after it expires', () => {
    const { root, issue } = issuer();
    const now = Date.now();
    const cert = issue(now + 60_000);
    const checks = new CertificateChecks();
    expect(checks.validate(cert, root, now)).toBe(true);
    // The same bytes again (a new object, as each envelope carries its own copy).
    const again = SenderCertificate.deserialize(cert.serialize());
    let verified = 0;
    const validate = again.validate.bind(again);
    again.validate = (r, t) => {
      verified++;
      return validate(r, t);
    };
    expect(checks.validate(again, root, now + 1000)).toBe(true);
    expect(verified).toBe(0); // remembered: no second signature check
    expect(checks.validate(again, root, now + 60_000)).toBe(cert.validate(root, now + 60_000));
    expect(checks.validate(again, root, now + 60_001)).toBe(false);
    expect(cert.validate(root, now + 60_001)).toBe(false);
  });

  it('never lets a forged or different certificate ride on an earlier success', () => {
    const { root, issue, server } = issuer();
    const now = Date.now();
    const checks = new CertificateChecks();
    expect(checks.validate(issue(now + 60_000), root, now)).toBe(true);

    // Signed by a key that is not the server certificate's key.
    expect(checks.validate(issue(now + 60_000, PrivateKey.generate()), root, now)).toBe(false);
    // A server certificate from another root.
    const rogueRoot = PrivateKey.generate();
    const rogueServerKey = PrivateKey.generate();
    const rogueServer = ServerCertificate.new(1, rogueServerKey.getPublicKey(), rogueRoot);
    expect(checks.validate(issue(now + 60_000, rogueServerKey, rogueServer), root, now)).toBe(false);
    // Any changed byte makes another certificate, which libsignal checks (and refuses: the signature no longer matches).
    const bytes = issue(now + 60_000).serialize();
    bytes[bytes.length - 1] = (bytes[bytes.length - 1] ?? 0) ^ 1;
    let tampered: SenderCertificate | null;
    try {
      tampered = SenderCertificate.deserialize(bytes);
    } catch {
      tampered = null; // unparseable is refused earlier, in openSealed
    }
    if (tampered) expect(checks.validate(tampered, root, now)).toBe(false);
    // The genuine certificate checked against another root is refused, though it passed against the first.
    const good = issue(now + 60_000, undefined, server);
    expect(checks.validate(good, root, now)).toBe(true);
    expect(checks.validate(good, rogueRoot.getPublicKey(), now)).toBe(false);
    expect(checks.validate(good, root, now)).toBe(true);
  });
});
