/**
 * The profile-side bookkeeping of attachments: resumable uploads remembered
 * across processes (table `pending_uploads`), and received pointers with
 * their download status (table `attachments`). ParleyClient calls these.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { type Attachment, parseBlobId } from '@parley/wire';
import { encryptedSize, newAttachmentKey, newIv } from './attachment-crypto.js';
import { type Progress, createUpload, fetchAttachment, pushUpload } from './attachments.js';
import type { Db } from './db.js';
import { SdkError } from './errors.js';
import { ab } from './stores.js';

/** What callers see of a received attachment (the key stays in the profile). */
export interface AttachmentInfo {
  index: number;
  size: number;
  contentType: string;
  fileName: string;
}

export interface SendFileOptions {
  path: string;
  /** Defaults to the file's base name. */
  fileName?: string;
  /** Defaults to empty (unknown). */
  contentType?: string;
  onProgress?: (p: Progress) => void;
  /** Called when an earlier, interrupted upload of the same file is resumed. */
  onResume?: (offset: number, total: number) => void;
}

interface UploadCtx {
  db: Db;
  serverUrl: string;
  auth: string;
}

/** Regular file, its size, and a fingerprint that changes when the file does. */
async function inspect(path: string): Promise<{ size: number; fingerprint: string; name: string }> {
  let st;
  let real: string;
  try {
    real = await fsp.realpath(path);
    st = await fsp.stat(real);
  } catch (err) {
    throw new SdkError('INVALID_INPUT', 'cannot read the file', { cause: err });
  }
  if (!st.isFile()) throw new SdkError('INVALID_INPUT', 'not a regular file');
  try {
    await (await fsp.open(real, 'r')).close();
  } catch (err) {
    throw new SdkError('INVALID_INPUT', 'cannot read the file', { cause: err });
  }
  const fingerprint = createHash('sha256').update(`${real}\0${st.dev}\0${st.ino}\0${st.size}\0${st.mtimeMs}`).digest('hex');
  return { size: st.size, fingerprint, name: real.split('/').pop() ?? '' };
}

/**
 * Encrypts and uploads a file, resuming an earlier interrupted upload of the
 * same (unchanged) file. Resolves with the pointer to put in a DataMessage.
 */
export async function uploadFile(ctx: UploadCtx, o: SendFileOptions): Promise<Attachment> {
  const file = await inspect(o.path);
  const length = encryptedSize(file.size);
  const fileName = o.fileName ?? file.name;
  const contentType = o.contentType ?? '';
  if (Buffer.byteLength(fileName) > 255) throw new SdkError('INVALID_INPUT', 'the file name is too long');

  for (let round = 0; round < 2; round++) {
    const row = ctx.db.prepare('SELECT blob_id, location, key, iv FROM pending_uploads WHERE fingerprint = ?').get([file.fingerprint]);
    let pending: { blobId: string; location: string; key: Uint8Array; iv: Uint8Array };
    if (row && row.key instanceof Uint8Array && row.iv instanceof Uint8Array && new URL(String(row.location)).origin === new URL(ctx.serverUrl).origin) {
      pending = { blobId: String(row.blob_id), location: String(row.location), key: row.key, iv: row.iv };
    } else {
      const key = newAttachmentKey();
      const iv = newIv();
      const slot = await createUpload(ctx.serverUrl, ctx.auth, length);
      pending = { blobId: slot.blobId, location: slot.location, key, iv };
      ctx.db
        .prepare('INSERT OR REPLACE INTO pending_uploads (fingerprint, blob_id, location, key, iv, created_at) VALUES (?, ?, ?, ?, ?, ?)')
        .run([file.fingerprint, pending.blobId, pending.location, ab(key), ab(iv), Date.now()]);
    }
    const digest = await pushUpload({
      location: pending.location,
      auth: ctx.auth,
      file: { path: o.path, size: file.size },
      key: pending.key,
      iv: pending.iv,
      ...(o.onProgress ? { onProgress: o.onProgress } : {}),
      ...(o.onResume ? { onResume: o.onResume } : {}),
    });
    ctx.db.prepare('DELETE FROM pending_uploads WHERE fingerprint = ?').run([file.fingerprint]);
    if (digest === null) continue; // the slot expired or vanished: start a fresh one
    return { blobId: parseBlobId(pending.blobId), key: pending.key, digest, size: file.size, contentType, fileName };
  }
  throw new SdkError('RELAY_ERROR', 'the relay lost the upload twice; giving up');
}

/** Records the pointers of a received message (inside the receive transaction). */
export function storeReceived(db: Db, messageId: string, attachments: readonly Attachment[]): AttachmentInfo[] {
  if (attachments.length === 0) return []; // nearly every message: no statement to look up
  const insert = db.prepare(
    "INSERT OR IGNORE INTO attachments (message_id, idx, blob_id, key, digest, size, content_type, file_name, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending')",
  );
  return attachments.map((a, index) => {
    insert.run([messageId, index, a.blobId, ab(a.key), ab(a.digest), a.size, a.contentType, a.fileName]);
    return { index, size: a.size, contentType: a.contentType, fileName: a.fileName };
  });
}

/** Attachments received but not saved yet (for example after a failed or interrupted download). */
export function pendingDownloads(db: Db): Array<{ messageId: string } & AttachmentInfo> {
  return db
    .prepare("SELECT message_id, idx, size, content_type, file_name FROM attachments WHERE status = 'pending' ORDER BY rowid")
    .all()
    .map((r) => ({
      messageId: String(r.message_id),
      index: Number(r.idx),
      size: Number(r.size),
      contentType: String(r.content_type),
      fileName: String(r.file_name),
    }));
}

/**
 * Downloads, verifies and decrypts one received attachment into `dir`.
 * A blob that fails verification is marked invalid and never retried.
 */
export async function downloadReceived(
  db: Db,
  serverUrl: string,
  messageId: string,
  index: number,
  dir: string,
  onProgress?: (p: Progress) => void,
): Promise<{ path: string } & AttachmentInfo> {
  const r = db.prepare('SELECT * FROM attachments WHERE message_id = ? AND idx = ?').get([messageId, index]);
  if (!r || !(r.key instanceof Uint8Array) || !(r.digest instanceof Uint8Array)) throw new SdkError('INVALID_INPUT', 'no such attachment');
  const info: AttachmentInfo = { index, size: Number(r.size), contentType: String(r.content_type), fileName: String(r.file_name) };
  if (r.status === 'saved' && typeof r.path === 'string') return { path: r.path, ...info };
  const setStatus = (status: string, path: string | null = null) =>
    db.prepare('UPDATE attachments SET status = ?, path = ? WHERE message_id = ? AND idx = ?').run([status, path, messageId, index]);
  try {
    const path = await fetchAttachment({
      serverUrl,
      attachment: { blobId: parseBlobId(r.blob_id), key: r.key, digest: r.digest, size: info.size, contentType: info.contentType, fileName: info.fileName },
      dir,
      fallbackName: `attachment-${messageId.slice(0, 8)}-${index}`,
      ...(onProgress ? { onProgress } : {}),
    });
    setStatus('saved', path);
    return { path, ...info };
  } catch (err) {
    if (SdkError.is(err, 'ATTACHMENT_INVALID')) setStatus('invalid');
    if (SdkError.is(err, 'ATTACHMENT_UNAVAILABLE')) setStatus('unavailable');
    throw err;
  }
}
