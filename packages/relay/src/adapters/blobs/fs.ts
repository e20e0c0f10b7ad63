/**
 * The embedded BlobStore: blob bytes as files under `<dir>/data/`, metadata
 * in a small SQLite file `<dir>/blobs.db` (WAL, synchronous=FULL). The bytes
 * of an append are fsync'd before the new offset is committed, so after a
 * crash the recorded offset never points past what is on disk; bytes past
 * the offset are cut off by the next append.
 */
import { mkdirSync } from 'node:fs';
import { promises as fsp, createReadStream } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import Database from '@signalapp/sqlcipher';
import { type AppendResult, type BlobInfo, type BlobStore, BlobTooLargeError, type NewBlob, limitBytes } from '../../blobstore.js';

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS blobs (
    id         TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    length     INTEGER NOT NULL,
    "offset"   INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
  );
  CREATE INDEX IF NOT EXISTS blobs_owner ON blobs (owner, expires_at);
  CREATE INDEX IF NOT EXISTS blobs_expiry ON blobs (expires_at);
`;

const ID = /^[A-Za-z0-9_-]{1,64}$/;

interface Row {
  id: string;
  owner: string;
  length: number;
  offset: number;
  created_at: number;
  expires_at: number;
}

function toInfo(r: Row): BlobInfo {
  return {
    id: r.id,
    owner: r.owner,
    length: Number(r.length),
    offset: Number(r.offset),
    createdAt: Number(r.created_at),
    expiresAt: Number(r.expires_at),
  };
}

export class FsBlobStore implements BlobStore {
  readonly #db: Database;
  readonly #dataDir: string;

  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.#dataDir = join(dir, 'data');
    mkdirSync(this.#dataDir, { recursive: true, mode: 0o700 });
    this.#db = new Database(join(dir, 'blobs.db'));
    this.#db.pragma('journal_mode = WAL');
    this.#db.pragma('synchronous = FULL');
    this.#db.exec(SCHEMA);
  }

  #path(id: string): string {
    if (!ID.test(id)) throw new RangeError('bad blob id');
    return join(this.#dataDir, id);
  }

  #row(id: string): Row | undefined {
    return this.#db.prepare('SELECT * FROM blobs WHERE id = ?').get([id]) as Row | undefined;
  }

  async create(b: NewBlob): Promise<void> {
    const fh = await fsp.open(this.#path(b.id), 'wx', 0o600);
    await fh.close();
    this.#db
      .prepare('INSERT INTO blobs (id, owner, length, "offset", created_at, expires_at) VALUES (?, ?, ?, 0, ?, ?)')
      .run([b.id, b.owner, b.length, b.createdAt, b.expiresAt]);
  }

  async info(id: string, now: number): Promise<BlobInfo | null> {
    const r = this.#row(id);
    return r && Number(r.expires_at) > now ? toInfo(r) : null;
  }

  async append(id: string, expectedOffset: number, source: AsyncIterable<Uint8Array>): Promise<AppendResult> {
    const r = this.#row(id);
    if (!r) return { kind: 'notFound' };
    const start = Number(r.offset);
    if (start !== expectedOffset) return { kind: 'offsetMismatch', offset: start };
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(this.#path(id), 'r+');
    } catch {
      return { kind: 'notFound' };
    }
    let pos = start;
    let result: AppendResult;
    try {
      await fh.truncate(start);
      try {
        for await (const chunk of limitBytes(source, Number(r.length) - start)) {
          let done = 0;
          while (done < chunk.length) {
            const { bytesWritten } = await fh.write(chunk, done, chunk.length - done, pos);
            done += bytesWritten;
            pos += bytesWritten;
          }
        }
        result = { kind: 'appended', offset: pos };
      } catch (err) {
        if (err instanceof BlobTooLargeError) {
          await fh.truncate(start);
          pos = start;
          result = { kind: 'tooLarge', offset: start };
        } else result = { kind: 'interrupted', offset: pos };
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (pos !== start) this.#db.prepare('UPDATE blobs SET "offset" = ? WHERE id = ?').run([pos, id]);
    return result;
  }

  async read(id: string, now: number): Promise<{ length: number; stream: Readable } | null> {
    const r = this.#row(id);
    if (!r || Number(r.expires_at) <= now || Number(r.offset) !== Number(r.length)) return null;
    const length = Number(r.length);
    if (length === 0) return { length, stream: Readable.from([]) };
    try {
      const fh = await fsp.open(this.#path(id), 'r');
      return { length, stream: createReadStream('', { fd: fh, start: 0, end: length - 1, highWaterMark: 256 * 1024 }) };
    } catch {
      return null;
    }
  }

  async usage(owner: string, now: number): Promise<number> {
    const v = this.#db.prepare('SELECT COALESCE(SUM(length), 0) FROM blobs WHERE owner = ? AND expires_at > ?', { pluck: true }).get([owner, now]);
    return Number(v);
  }

  async purge(now: number): Promise<number> {
    const ids = this.#db.prepare('SELECT id FROM blobs WHERE expires_at <= ?', { pluck: true }).all([now]).map(String);
    for (const id of ids) await this.delete(id);
    return ids.length;
  }

  async delete(id: string): Promise<void> {
    this.#db.prepare('DELETE FROM blobs WHERE id = ?').run([id]);
    await fsp.rm(this.#path(id), { force: true });
  }

  async ping(): Promise<void> {
    this.#db.prepare('SELECT 1').get();
  }

  async close(): Promise<void> {
    this.#db.close();
  }
}

/** Open (creating if needed) a filesystem blob store in `dir`. */
export function openFsBlobStore(dir: string): FsBlobStore {
  return new FsBlobStore(dir);
}
