/** Multi-recipient sealed-sender uploads built with real libsignal sessions, for relay tests. */
import {
  KEMPublicKey,
  PreKeyBundle,
  ProtocolAddress,
  PublicKey,
  SenderCertificate,
  UnidentifiedSenderMessageContent,
  processPreKeyBundle,
  sealedSenderMultiRecipientEncrypt,
  signalEncrypt,
} from '@signalapp/libsignal-client';
import { processPreKeyBundleResponse } from '@parley/wire';
import { MemoryMember } from '../../../bench/src/groups-member.js';
import type { Harness, TestAccount } from './helpers.js';

/** A multi-recipient sealed upload from `sender` to device 1 of each recipient (fetching their bundles through `h`). */
export async function multiRecipientBody(
  h: Harness,
  sender: TestAccount,
  recipients: TestAccount[],
  regIdDelta: Record<string, number> = {},
) {
  const local = ProtocolAddress.new(sender.accountId, 1);
  // The project's in-memory libsignal party (also the bench's and the 1,000-member test's).
  const { session: sessions, identityStore: identity } = new MemoryMember(local, sender.identity);
  for (const r of recipients) {
    await h.uploadKeys(r, 1, 1, 100);
    const res = await h.built.app.inject({
      method: 'GET',
      url: `/v1/keys/${r.accountId}/*`,
      headers: { authorization: sender.auth },
    });
    const bundle = processPreKeyBundleResponse(res.json());
    for (const d of bundle.devices) {
      await processPreKeyBundle(
        PreKeyBundle.new(
          d.registrationId + (regIdDelta[r.accountId] ?? 0),
          d.deviceId,
          d.preKey?.keyId ?? null,
          d.preKey ? PublicKey.deserialize(new Uint8Array(d.preKey.publicKey)) : null,
          d.signedPreKey.keyId,
          PublicKey.deserialize(new Uint8Array(d.signedPreKey.publicKey)),
          new Uint8Array(d.signedPreKey.signature),
          PublicKey.deserialize(new Uint8Array(bundle.identityKey)),
          d.kyberPreKey.keyId,
          KEMPublicKey.deserialize(new Uint8Array(d.kyberPreKey.publicKey)),
          new Uint8Array(d.kyberPreKey.signature),
        ),
        ProtocolAddress.new(r.accountId, d.deviceId),
        local,
        sessions,
        identity,
      );
    }
  }
  const certRes = await h.built.app.inject({
    method: 'GET',
    url: '/v1/certificate/delivery',
    headers: { authorization: sender.auth },
  });
  const cert = SenderCertificate.deserialize(
    new Uint8Array(Buffer.from(certRes.json<{ certificate: string }>().certificate, 'base64')),
  );
  const first = recipients[0] as TestAccount;
  const inner = await signalEncrypt(
    new Uint8Array([1, 2, 3]),
    ProtocolAddress.new(first.accountId, 1),
    local,
    sessions,
    identity,
  );
  const usmc = UnidentifiedSenderMessageContent.new(inner, cert, 0, null);
  return sealedSenderMultiRecipientEncrypt({
    content: usmc,
    recipients: recipients.map((r) => ProtocolAddress.new(r.accountId, 1)),
    identityStore: identity,
    sessionStore: sessions,
  });
}

/** The combined access key of a multi-recipient send. */
export function xor(keys: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(16);
  for (const k of keys) for (let i = 0; i < 16; i++) out[i] = (out[i] as number) ^ (k[i] as number);
  return out;
}
