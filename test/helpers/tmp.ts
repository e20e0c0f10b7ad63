/** Temporary directories, removed in afterAll unless PARLEY_KEEP_TMP=1. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const created: string[] = [];

export function makeTempDir(label: string): string {
  const dir = mkdtempSync(join(tmpdir(), `parley-${label}-`));
  created.push(dir);
  return dir;
}

export function removeTempDirs(): void {
  if (process.env.PARLEY_KEEP_TMP === '1') {
    for (const dir of created) console.error(`kept ${dir}`);
    return;
  }
  for (const dir of created.splice(0)) rmSync(dir, { recursive: true, force: true });
}
