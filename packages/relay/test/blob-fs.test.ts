import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openFsBlobStore } from '../src/adapters/blobs/fs.js';
import { describeBlobStoreConformance, newBlobId } from './blob-conformance.js';

const dirs: string[] = [];
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'parley-blobs-'));
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describeBlobStoreConformance('fs', async () => openFsBlobStore(tempDir()));

describe('fs blob store specifics', () => {
  it('keeps metadata and bytes across reopen, with private modes', async () => {
    const dir = tempDir();
    const s1 = openFsBlobStore(dir);
    const id = newBlobId();
    await s1.create({ id, owner: 'o', length: 3, createdAt: 1, expiresAt: 10 });
    await s1.append(id, 0, (async function* () {
      yield new Uint8Array([1, 2]);
    })());
    await s1.close();
    const s2 = openFsBlobStore(dir);
    expect((await s2.info(id, 2))?.offset).toBe(2);
    await s2.close();
    expect(statSync(join(dir, 'data')).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, 'data', id)).mode & 0o777).toBe(0o600);
    expect(readdirSync(dir)).toContain('blobs.db');
  });

  it('removes the file of a purged blob', async () => {
    const dir = tempDir();
    const s = openFsBlobStore(dir);
    const id = newBlobId();
    await s.create({ id, owner: 'o', length: 1, createdAt: 1, expiresAt: 5 });
    expect(existsSync(join(dir, 'data', id))).toBe(true);
    expect(await s.purge(5)).toBe(1);
    expect(existsSync(join(dir, 'data', id))).toBe(false);
    await s.close();
  });
});
