/** Byte-level search of files, for the canary tests. */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** Every regular file under `dir`, recursively. */
export function listFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...listFiles(path));
    else if (entry.isFile() || statSync(path).isFile()) out.push(path);
  }
  return out;
}

/**
 * The files (read as raw bytes) that contain any of `needles`, in UTF-8 or
 * UTF-16LE, with which needle was found.
 */
export function findInFiles(files: readonly string[], needles: readonly string[]): Array<{ file: string; needle: string }> {
  const hits: Array<{ file: string; needle: string }> = [];
  for (const file of files) {
    const bytes = readFileSync(file);
    for (const needle of needles) {
      if (bytes.includes(Buffer.from(needle, 'utf8')) || bytes.includes(Buffer.from(needle, 'utf16le')))
        hits.push({ file, needle });
    }
  }
  return hits;
}
