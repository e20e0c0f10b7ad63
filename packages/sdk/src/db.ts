/**
 * The profile directory and its encrypted database.
 *
 *   <profileDir>/            mode 0700
 *     profile.json           { version, kdf: 'scrypt', salt, N, r, p } or { version, kdf: 'keyfile' }
 *     db.key                 mode 0600, 32 random bytes (only for profiles without a passphrase)
 *     profile.db             SQLCipher database, keyed with the 32-byte key
 *     lock                   pid of the process holding the profile (created with O_EXCL)
 */
import { randomBytes, scrypt as scryptCb, type ScryptOptions } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Database, type StatementOptions, setLogger } from '@signalapp/sqlcipher';
import { SdkError } from './errors.js';
import { MIGRATIONS } from './migrations.js';

export type Db = Database;

type PlainStatement = ReturnType<Database['prepare']>;

/**
 * Makes `db.prepare(sql)` without options (nearly every call) find its
 * compiled statement by the SQL text alone. The library's own cache key joins
 * the options and the SQL into a new string on every call, which the receive
 * pipeline paid several times per message (a string to build, flatten and
 * hash each time; SQL literals are hashed once). Statements are never closed
 * before the database, so entries cannot go stale.
 */
function cachePlainStatements(db: Database): void {
  const plain = new Map<string, PlainStatement>();
  const prepare: (query: string, options?: StatementOptions) => PlainStatement = db.prepare.bind(db);
  db.prepare = (query: string, options?: StatementOptions): PlainStatement => {
    if (options !== undefined) return prepare(query, options);
    let st = plain.get(query);
    if (st === undefined) {
      st = prepare(query);
      plain.set(query, st);
    }
    return st;
  };
}

const SCRYPT = { N: 2 ** 15, r: 8, p: 1 } as const;
const KEY_BYTES = 32;

interface ProfileMeta {
  version: 1;
  kdf: 'scrypt' | 'keyfile';
  salt?: string;
  N?: number;
  r?: number;
  p?: number;
}

export const ProfileFiles = {
  meta: 'profile.json',
  db: 'profile.db',
  keyFile: 'db.key',
  lock: 'lock',
} as const;

// SQLCipher reports failed page decryptions on stderr by default; the SDK does not log.
setLogger(() => {});

function scrypt(passphrase: string, salt: Buffer, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scryptCb(passphrase.normalize('NFKC'), salt, KEY_BYTES, opts, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

function scryptOptions(m: { N: number; r: number; p: number }): ScryptOptions {
  return { N: m.N, r: m.r, p: m.p, maxmem: 256 * m.N * m.r + 1024 * 1024 };
}

/** An open, locked profile. `close` closes the database and releases the lock. */
export interface Profile {
  readonly dir: string;
  readonly db: Db;
  close(): void;
}

export function profileExists(dir: string): boolean {
  return fs.existsSync(path.join(dir, ProfileFiles.meta)) || fs.existsSync(path.join(dir, ProfileFiles.db));
}

// ---------------------------------------------------------------- lock

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Takes the profile lock; a lock left by a dead process is taken over. */
export function acquireLock(dir: string): () => void {
  const file = path.join(dir, ProfileFiles.lock);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
      fs.writeSync(fd, String(process.pid));
      fs.closeSync(fd);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        try {
          if (fs.readFileSync(file, 'utf8').trim() === String(process.pid)) fs.unlinkSync(file);
        } catch {
          // already gone
        }
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      let pid: number;
      try {
        pid = Number.parseInt(fs.readFileSync(file, 'utf8').trim(), 10);
      } catch {
        continue; // removed between open and read: try again
      }
      if (Number.isInteger(pid) && pid > 0 && pidAlive(pid)) {
        throw new SdkError('PROFILE_LOCKED', 'the profile is open in another process');
      }
      // Stale lock: the holder died. Remove it and race for it again.
      try {
        fs.unlinkSync(file);
      } catch {
        // someone else removed it first
      }
    }
  }
  throw new SdkError('PROFILE_LOCKED', 'the profile is open in another process');
}

// ---------------------------------------------------------------- database

function openDatabase(file: string, key: Buffer): Db {
  // Create the file owner-only first; SQLite gives its WAL and SHM files the same mode.
  fs.closeSync(fs.openSync(file, 'a', 0o600));
  const db = new Database(file, { cacheStatements: true });
  try {
    // SQLCipher would report a wrong key on stderr; the SDK reports it as BAD_PASSPHRASE instead.
    db.pragma('cipher_log_level = NONE');
    db.pragma(`key = "x'${key.toString('hex')}'"`);
    // The key is checked lazily: the first read fails with SQLITE_NOTADB if it is wrong.
    db.prepare('SELECT count(*) FROM sqlite_master').get();
  } catch (err) {
    db.close();
    if ((err as { code?: string }).code === 'SQLITE_NOTADB') throw new SdkError('BAD_PASSPHRASE', 'cannot decrypt the profile database');
    throw err;
  }
  cachePlainStatements(db);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('foreign_keys = ON');
  migrate(db);
  return db;
}

/** Applies numbered migrations; `user_version` holds the last one applied. */
export function migrate(db: Db): void {
  const current = Number(db.pragma('user_version', { simple: true }) ?? 0);
  for (let v = current; v < MIGRATIONS.length; v++) {
    const sql = MIGRATIONS[v];
    if (sql === undefined) break;
    db.transaction(() => {
      db.exec(sql);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}

/** Creates a new profile directory and database. */
export async function createProfile(dir: string, passphrase: string | null): Promise<Profile> {
  if (profileExists(dir)) throw new SdkError('PROFILE_EXISTS', 'a profile already exists in this directory');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.chmodSync(dir, 0o700);
  const release = acquireLock(dir);
  try {
    let key: Buffer;
    let meta: ProfileMeta;
    if (passphrase === null) {
      key = randomBytes(KEY_BYTES);
      fs.writeFileSync(path.join(dir, ProfileFiles.keyFile), key, { mode: 0o600, flag: 'wx' });
      meta = { version: 1, kdf: 'keyfile' };
    } else {
      if (passphrase.length === 0) throw new SdkError('PASSPHRASE_REQUIRED', 'the passphrase must not be empty');
      const salt = randomBytes(16);
      key = await scrypt(passphrase, salt, scryptOptions(SCRYPT));
      meta = { version: 1, kdf: 'scrypt', salt: salt.toString('base64'), ...SCRYPT };
    }
    const db = openDatabase(path.join(dir, ProfileFiles.db), key);
    // profile.json last: its presence marks a complete profile.
    fs.writeFileSync(path.join(dir, ProfileFiles.meta), JSON.stringify(meta, null, 2) + '\n', { mode: 0o600 });
    return { dir, db, close: () => closeOnce(db, release) };
  } catch (err) {
    release();
    throw err;
  }
}

/** Opens an existing profile. A key-file profile ignores the passphrase. */
export async function openProfile(dir: string, passphrase: string | null): Promise<Profile> {
  let meta: ProfileMeta;
  try {
    meta = parseMeta(fs.readFileSync(path.join(dir, ProfileFiles.meta), 'utf8'));
  } catch (err) {
    if (SdkError.is(err)) throw err;
    throw new SdkError('PROFILE_NOT_FOUND', 'no profile in this directory');
  }
  const release = acquireLock(dir);
  try {
    let key: Buffer;
    if (meta.kdf === 'keyfile') {
      key = fs.readFileSync(path.join(dir, ProfileFiles.keyFile));
      if (key.length !== KEY_BYTES) throw new SdkError('BAD_PASSPHRASE', 'the key file is damaged');
    } else {
      if (passphrase === null || passphrase.length === 0) throw new SdkError('PASSPHRASE_REQUIRED', 'this profile needs its passphrase');
      key = await scrypt(passphrase, Buffer.from(meta.salt ?? '', 'base64'), scryptOptions({ N: meta.N ?? SCRYPT.N, r: meta.r ?? SCRYPT.r, p: meta.p ?? SCRYPT.p }));
    }
    const db = openDatabase(path.join(dir, ProfileFiles.db), key);
    return { dir, db, close: () => closeOnce(db, release) };
  } catch (err) {
    release();
    throw err;
  }
}

function parseMeta(text: string): ProfileMeta {
  const m = JSON.parse(text) as Partial<ProfileMeta>;
  if (m.version !== 1 || (m.kdf !== 'scrypt' && m.kdf !== 'keyfile')) throw new SdkError('PROFILE_NOT_FOUND', 'unknown profile format');
  if (m.kdf === 'scrypt') {
    const ok = (x: unknown, max: number) => typeof x === 'number' && Number.isInteger(x) && x > 0 && x <= max;
    if (typeof m.salt !== 'string' || !ok(m.N, 2 ** 20) || !ok(m.r, 32) || !ok(m.p, 16))
      throw new SdkError('PROFILE_NOT_FOUND', 'unknown profile format');
  }
  return m as ProfileMeta;
}

const closed = new WeakSet<Db>();
function closeOnce(db: Db, release: () => void): void {
  if (!closed.has(db)) {
    closed.add(db);
    db.close();
  }
  release();
}

/** Removes the files a failed registration created, leaving the directory. */
export function removeProfileFiles(dir: string): void {
  for (const f of [ProfileFiles.db, `${ProfileFiles.db}-wal`, `${ProfileFiles.db}-shm`, ProfileFiles.meta, ProfileFiles.keyFile, ProfileFiles.lock]) {
    try {
      fs.unlinkSync(path.join(dir, f));
    } catch {
      // not there
    }
  }
}
