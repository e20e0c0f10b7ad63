/**
 * Every validation failure at the wire boundary is a WireError with a stable
 * code. Messages name the field and the limit, never the offending value.
 */
export const WireErrorCode = {
  Malformed: 'WIRE_MALFORMED',
  BadField: 'WIRE_BAD_FIELD',
  TooLarge: 'WIRE_TOO_LARGE',
} as const;
export type WireErrorCode = (typeof WireErrorCode)[keyof typeof WireErrorCode];

export class WireError extends Error {
  override readonly name = 'WireError';
  constructor(
    readonly code: WireErrorCode,
    message: string,
  ) {
    super(message);
  }
  static is(err: unknown, code?: WireErrorCode): err is WireError {
    return err instanceof WireError && (code === undefined || err.code === code);
  }
}

export function fail(field: string, why: string): never {
  throw new WireError(WireErrorCode.BadField, `${field}: ${why}`);
}
