/**
 * A view typed over a plain ArrayBuffer (copied only when it is not already
 * one): what libsignal and the SQLite driver take, without copying socket or
 * database bytes that already are.
 */
export function plainBytes(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return bytes.buffer instanceof ArrayBuffer ? (bytes as Uint8Array<ArrayBuffer>) : new Uint8Array(bytes);
}
