import { spawnSync } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createProfile, openProfile, ProfileFiles } from '../src/db.js';
import { SdkError } from '../src/index.js';
import { tempDir } from './helpers.js';

const cleanups: Array<() => void> = [];
afterEach(() => cleanups.splice(0).forEach((f) => f()));
function dir(): string {
  const t = tempDir();
  cleanups.push(t.cleanup);
  return join(t.dir, 'profile');
}

describe('profile database', () => {
  it('opens with the right passphrase and refuses a wrong or missing one', async () => {
    const d = dir();
    const p = await createProfile(d, 'correct horse');
    p.db.prepare("INSERT INTO meta (key, value) VALUES ('canary', 'CANARY-7f3e')").run();
    p.close();
    await expect(openProfile(d, 'wrong horse')).rejects.toSatisfy((e) => SdkError.is(e, 'BAD_PASSPHRASE'));
    await expect(openProfile(d, null)).rejects.toSatisfy((e) => SdkError.is(e, 'PASSPHRASE_REQUIRED'));
    const again = await openProfile(d, 'correct horse');
    expect(again.db.prepare("SELECT value FROM meta WHERE key = 'canary'", { pluck: true }).get()).toBe('CANARY-7f3e');
    again.close();
    // Encrypted at rest: the plaintext is nowhere in the file.
    expect(readFileSync(join(d, ProfileFiles.db)).includes(Buffer.from('CANARY-7f3e'))).toBe(false);
  });

  it('a profile without passphrase keeps its key in a 0600 file inside a 0700 directory and ignores passphrases', async () => {
    const d = dir();
    (await createProfile(d, null)).close();
    expect(statSync(join(d, ProfileFiles.keyFile)).mode & 0o777).toBe(0o600);
    expect(statSync(d).mode & 0o777).toBe(0o700);
    expect(statSync(join(d, ProfileFiles.db)).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(d, ProfileFiles.keyFile)).length).toBe(32);
    (await openProfile(d, 'anything')).close();
    (await openProfile(d, null)).close();
  });

  it('refuses to create over an existing profile and to open a missing one', async () => {
    const d = dir();
    (await createProfile(d, null)).close();
    await expect(createProfile(d, null)).rejects.toSatisfy((e) => SdkError.is(e, 'PROFILE_EXISTS'));
    await expect(openProfile(dir(), null)).rejects.toSatisfy((e) => SdkError.is(e, 'PROFILE_NOT_FOUND'));
  });

  it('is locked against a second opener and takes over a dead process’s lock', async () => {
    const d = dir();
    const p = await createProfile(d, null);
    await expect(openProfile(d, null)).rejects.toSatisfy((e) => SdkError.is(e, 'PROFILE_LOCKED'));
    p.close();
    // A lock left by a process that no longer exists.
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString();
    writeFileSync(join(d, ProfileFiles.lock), dead);
    const q = await openProfile(d, null);
    expect(readFileSync(join(d, ProfileFiles.lock), 'utf8')).toBe(String(process.pid));
    q.close();
  });

  it('reuses one compiled statement per SQL text, and keeps statements with options apart', async () => {
    const p = await createProfile(dir(), null);
    try {
      const sql = 'SELECT value FROM meta WHERE key = ?';
      const plain = p.db.prepare(sql);
      expect(p.db.prepare(sql)).toBe(plain);
      p.db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run(['k', 'v1']);
      p.db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run(['k2', 'v2']);
      expect(plain.get(['k'])).toEqual({ value: 'v1' });
      expect(p.db.prepare(sql).get(['k2'])).toEqual({ value: 'v2' });
      // The same SQL with options is its own statement: pluck returns the column, not a row.
      const plucked = p.db.prepare(sql, { pluck: true });
      expect(plucked).not.toBe(plain);
      expect(plucked.get(['k'])).toBe('v1');
      expect(p.db.prepare(sql).get(['k'])).toEqual({ value: 'v1' });
    } finally {
      p.close();
    }
  });
});
