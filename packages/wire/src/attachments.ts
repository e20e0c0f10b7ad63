/**
 * Attachment identifiers and the pointer that carries an attachment's key
 * inside an end-to-end encrypted DataMessage. The relay only ever learns
 * blob ids; everything else in a pointer is visible to devices alone.
 */
import { fail } from './errors.js';

/** 24 random bytes as unpadded base64url: 32 characters. */
export type BlobId = string & { readonly __brand: 'BlobId' };

const BLOB_ID = /^[A-Za-z0-9_-]{32}$/;

export function parseBlobId(value: unknown, field = 'blobId'): BlobId {
  if (typeof value !== 'string' || !BLOB_ID.test(value)) fail(field, 'must be 32 characters of base64url');
  return value as BlobId;
}

export const AttachmentLimits = {
  /** AES-256 key || HMAC-SHA256 key. */
  keyBytes: 64,
  /** SHA-256 of the encrypted blob. */
  digestBytes: 32,
  maxPerMessage: 10,
  maxContentTypeChars: 128,
  maxFileNameBytes: 255,
  /** Largest plaintext size a pointer may announce (the relay's own limit is usually lower). */
  maxSize: 64 * 1024 ** 3,
} as const;

/** A validated AttachmentPointer. */
export interface Attachment {
  blobId: BlobId;
  key: Uint8Array;
  digest: Uint8Array;
  /** Plaintext bytes, before padding. */
  size: number;
  /** May be empty. Untrusted: chosen by the sender. */
  contentType: string;
  /** May be empty. Untrusted: chosen by the sender. */
  fileName: string;
}
