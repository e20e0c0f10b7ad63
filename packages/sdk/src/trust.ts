/**
 * Safety numbers and verification. Safety numbers are computed as Signal
 * Desktop does: libsignal Fingerprint, 5200 iterations, version 2, with the
 * 16-byte account ids as identifiers.
 */
import { Fingerprint, PublicKey } from '@signalapp/libsignal-client';
import { accountIdToBytes, type AccountId } from '@parley/wire';
import { SdkError } from './errors.js';
import { ab } from './stores.js';

export const FINGERPRINT_ITERATIONS = 5200;
export const FINGERPRINT_VERSION = 2;

export function safetyNumber(local: { accountId: string; identityKey: Uint8Array }, remote: { accountId: string; identityKey: Uint8Array }): string {
  return Fingerprint.new(
    FINGERPRINT_ITERATIONS,
    FINGERPRINT_VERSION,
    ab(accountIdToBytes(local.accountId as AccountId)),
    PublicKey.deserialize(ab(local.identityKey)),
    ab(accountIdToBytes(remote.accountId as AccountId)),
    PublicKey.deserialize(ab(remote.identityKey)),
  )
    .displayableFingerprint()
    .toString();
}

/** Compares a safety number the user typed (spaces and dashes ignored) with the expected one. */
export function checkSafetyNumber(expected: string, given: string): void {
  const norm = (s: string) => s.replace(/[\s-]/g, '');
  if (!/^[0-9]{60}$/.test(norm(given)) || norm(given) !== norm(expected))
    throw new SdkError('SAFETY_NUMBER_MISMATCH', 'the safety number does not match');
}
