/**
 * The BlobStore port: where the relay keeps encrypted attachment blobs and
 * their small amount of metadata (owner, declared length, bytes received,
 * expiry). Blobs are opaque ciphertext; the relay never sees keys, names or
 * types. Adapters: `adapters/blobs/fs` (embedded default) and
 * `adapters/blobs/s3` (any S3-compatible service). One conformance suite
 * (packages/relay/test/blob-conformance.ts) runs against both.
 *
 * Uploads are append-only and resumable: `append` writes at the current
 * offset; if the source stream fails midway, what arrived is kept and the
 * offset moves forward by that much (the tus model).
 */
import type { Readable } from 'node:stream';

export interface NewBlob {
  /** Random, unguessable, 32 characters of base64url. */
  id: string;
  /** Opaque owner key (the relay passes a hash of the account id, never the id itself). */
  owner: string;
  /** Declared total length in bytes. */
  length: number;
  createdAt: number;
  expiresAt: number;
}

export interface BlobInfo extends NewBlob {
  /** Bytes stored so far; equals `length` once complete. */
  offset: number;
}

export type AppendResult =
  /** The whole source was stored; `offset` is the new offset. */
  | { kind: 'appended'; offset: number }
  /** The source failed midway; the bytes before the failure were stored. */
  | { kind: 'interrupted'; offset: number }
  /** `expectedOffset` was not the stored offset; nothing was written. */
  | { kind: 'offsetMismatch'; offset: number }
  /** The source carried more than `length - offset` bytes; nothing was kept. */
  | { kind: 'tooLarge'; offset: number }
  | { kind: 'notFound' };

export interface BlobStore {
  /** Register a new, empty blob. */
  create(blob: NewBlob): Promise<void>;
  /** Metadata of a blob that exists and has not expired at `now`, or null. */
  info(id: string, now: number): Promise<BlobInfo | null>;
  /**
   * Append `source` at `expectedOffset`. Callers serialize appends to one
   * blob; adapters need not handle two at once.
   */
  append(id: string, expectedOffset: number, source: AsyncIterable<Uint8Array>): Promise<AppendResult>;
  /** A stream of a complete, unexpired blob's bytes, or null. */
  read(id: string, now: number): Promise<{ length: number; stream: Readable } | null>;
  /** Bytes declared by the owner's blobs that have not expired at `now` (complete or not). */
  usage(owner: string, now: number): Promise<number>;
  /** Delete blobs whose `expiresAt` is at or before `now`; returns how many. */
  purge(now: number): Promise<number>;
  delete(id: string): Promise<void>;
  /** Throws when the store cannot answer. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** Thrown by a source wrapper to say "more bytes than allowed". */
export class BlobTooLargeError extends Error {
  override readonly name = 'BlobTooLargeError';
}

/** Yields `source` unchanged, throwing BlobTooLargeError past `max` bytes in total. */
export async function* limitBytes(source: AsyncIterable<Uint8Array>, max: number): AsyncGenerator<Uint8Array> {
  let seen = 0;
  for await (const chunk of source) {
    seen += chunk.length;
    if (seen > max) throw new BlobTooLargeError(`more than ${max} bytes`);
    yield chunk;
  }
}
