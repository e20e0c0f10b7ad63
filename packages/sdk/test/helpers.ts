import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ParleyClient, type ParleyEvents } from '../src/index.js';

export function tempDir(prefix = 'parley-sdk-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Resolves with the first event of `name` that satisfies `pred`. */
export function nextEvent<E extends keyof ParleyEvents>(
  client: ParleyClient,
  name: E,
  pred: (...args: Parameters<ParleyEvents[E]>) => boolean = () => true,
  timeoutMs = 20_000,
): Promise<Parameters<ParleyEvents[E]>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for ${name}`));
    }, timeoutMs);
    const off = client.on(name, ((...args: Parameters<ParleyEvents[E]>) => {
      if (!pred(...args)) return;
      clearTimeout(timer);
      off();
      resolve(args);
    }) as ParleyEvents[E]);
  });
}

/** Collects every event of `name` into an array. */
export function collect<E extends keyof ParleyEvents>(client: ParleyClient, name: E): Array<Parameters<ParleyEvents[E]>> {
  const out: Array<Parameters<ParleyEvents[E]>> = [];
  client.on(name, ((...args: Parameters<ParleyEvents[E]>) => void out.push(args)) as ParleyEvents[E]);
  return out;
}
