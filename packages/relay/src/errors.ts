import type { RecipientDeviceMismatch } from '@parley/wire';

/**
 * The relay's error vocabulary: one class, one table of stable codes with
 * their HTTP status (docs/PROTOCOL.md, "Error codes"). Messages name fields
 * and limits, never user data.
 */

/** Every error code the relay answers with, and its HTTP status. */
export const ErrorCodes = {
  BAD_REQUEST: 400,
  UNAUTHORIZED: 401,
  INVITE_REQUIRED: 403,
  FORBIDDEN: 403,
  INVALID_CODE: 403,
  NOT_FOUND: 404,
  USERNAME_TAKEN: 409,
  MISMATCHED_DEVICES: 409,
  STALE_DEVICES: 410,
  OFFSET_MISMATCH: 409,
  UPLOAD_BUSY: 409,
  TOO_MANY_DEVICES: 409,
  TOO_LARGE: 413,
  QUOTA_EXCEEDED: 413,
  UNSUPPORTED_VERSION: 412,
  UNSUPPORTED_MEDIA_TYPE: 415,
  BAD_SIGNATURE: 422,
  RATE_LIMITED: 429,
  INTERNAL: 500,
  SHUTTING_DOWN: 503,
} as const;
export type ErrorCode = keyof typeof ErrorCodes;

/** Extra fields some errors carry in their JSON body. */
export interface ErrorDetails {
  missingDevices?: number[];
  extraDevices?: number[];
  staleDevices?: number[];
  /** For a multi-recipient send: the device lists per recipient account (409/410). */
  recipients?: RecipientDeviceMismatch[];
  /** For RATE_LIMITED: seconds until a retry may succeed (sent as `Retry-After`). */
  retryAfterSeconds?: number;
}

/** An expected failure with a stable `code`; the edge turns it into `{code, message}`. */
export class RelayError extends Error {
  override readonly name = 'RelayError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details: ErrorDetails = {},
  ) {
    super(message);
  }

  /** The HTTP status that belongs to this error's code. */
  get status(): number {
    return ErrorCodes[this.code];
  }

  /** Narrow an unknown error to a RelayError, optionally with a given code. */
  static is<C extends ErrorCode>(err: unknown, code?: C): err is RelayError & { code: C } {
    return err instanceof RelayError && (code === undefined || err.code === code);
  }
}
