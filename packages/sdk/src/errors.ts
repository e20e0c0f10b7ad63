/**
 * Every failure the SDK reports is an SdkError with a stable `code`. Messages
 * never contain user data (no usernames, bodies, keys or passwords); callers
 * branch on `code`, never on the message text.
 */
export const SdkErrorCodes = [
  'PROFILE_EXISTS',
  'PROFILE_NOT_FOUND',
  'PROFILE_LOCKED',
  'PASSPHRASE_REQUIRED',
  'BAD_PASSPHRASE',
  'USERNAME_TAKEN',
  'INVITE_REQUIRED',
  'USER_NOT_FOUND',
  'UNTRUSTED_IDENTITY',
  'SAFETY_NUMBER_MISMATCH',
  'BAD_BUNDLE',
  'RELAY_UNREACHABLE',
  'RELAY_ERROR',
  'RATE_LIMITED',
  'INVALID_INPUT',
  'UNAUTHORIZED',
  'ATTACHMENT_TOO_LARGE',
  'ATTACHMENT_UNAVAILABLE',
  'ATTACHMENT_INVALID',
  'UNTRUSTED_RELAY',
  'SEALED_SENDER_REJECTED',
  'LINK_FAILED',
  'FORBIDDEN',
  // groups
  'UNKNOWN_GROUP',
  'AMBIGUOUS_GROUP',
  'NOT_GROUP_ADMIN',
  /** The group is inactive here (left or removed), or the named user is not in it. */
  'NOT_GROUP_MEMBER',
  'ALREADY_MEMBER',
  'GROUP_TOO_LARGE',
  'INVALID_TITLE',
  /** A group message arrived that no sender key we hold opens (reported as an `error` event). */
  'GROUP_DECRYPT_FAILED',
  /** Another admin's change was accepted while this one was being made; nothing was changed or sent. */
  'GROUP_CHANGED',
] as const;
export type SdkErrorCode = (typeof SdkErrorCodes)[number];

export class SdkError extends Error {
  override readonly name = 'SdkError';
  readonly code: SdkErrorCode;
  /** HTTP status of the relay answer that caused this error, when there was one. */
  readonly status: number | undefined;
  /** Seconds to wait before retrying, for RATE_LIMITED. */
  readonly retryAfter: number | undefined;

  constructor(code: SdkErrorCode, message: string, opts: { cause?: unknown; status?: number; retryAfter?: number } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = code;
    this.status = opts.status;
    this.retryAfter = opts.retryAfter;
  }

  static is(err: unknown, code?: SdkErrorCode): err is SdkError {
    return err instanceof SdkError && (code === undefined || err.code === code);
  }
}
