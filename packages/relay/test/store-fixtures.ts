/** Small fixtures for store tests beyond the conformance suite. */
import { randomBytes, randomUUID } from 'node:crypto';
import { IdentityKeyPair } from '@signalapp/libsignal-client';
import { type AccountId, type DeviceId, EnvelopeType } from '@parley/wire';
import type { NewAccount, StoredEnvelope } from '../src/ports.js';
import { signedEc, signedKyber } from './helpers.js';

export function newAccountFor(username: string): NewAccount {
  const identity = IdentityKeyPair.generate();
  return {
    accountId: randomUUID() as AccountId,
    username,
    identityKey: identity.publicKey.serialize(),
    createdAt: 1,
    device: {
      registrationId: 7,
      passwordSalt: new Uint8Array(randomBytes(16)),
      passwordHash: new Uint8Array(randomBytes(32)),
      signedPreKey: signedEc(identity, 1),
      kyberLastResortKey: signedKyber(identity, 1),
    },
  };
}

/** A sealed envelope for device 1 whose content is the given text (so tests can read it back). */
export function envelopeFor(to: AccountId, text: string): StoredEnvelope {
  return {
    guid: new Uint8Array(randomBytes(16)),
    type: EnvelopeType.UnidentifiedSender,
    source: null,
    destination: { account: to, device: 1 as DeviceId },
    clientTimestamp: 1,
    serverTimestamp: 1,
    content: new TextEncoder().encode(text),
    urgent: true,
  };
}
