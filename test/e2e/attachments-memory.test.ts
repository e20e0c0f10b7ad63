/**
 * Bounded memory: a 1 GiB file goes up with `parley send --file` and comes
 * down with `parley receive`, and neither process's resident memory (VmRSS,
 * sampled every 20 ms) grows more than 100 MiB above what the same command
 * needs for a 1 KiB file. Measures memory, not time.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, createWorld, parseJsonLines, type World } from '../helpers/world.js';

const MiB = 1024 * 1024;
const SIZE = 1024 * MiB;

function rssMiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

async function peakRss(w: World, user: string, args: string[]): Promise<{ peak: number; stdout: string }> {
  const live = w.live(user, args);
  let peak = 0;
  const timer = setInterval(() => {
    if (live.child.pid) peak = Math.max(peak, rssMiB(live.child.pid));
  }, 20);
  const r = await live.waitForExit(300_000);
  clearInterval(timer);
  if (r.code !== 0) throw new Error(`parley ${args.join(' ')} failed: ${r.stderr}`);
  return { peak, stdout: r.stdout };
}

async function makeFile(path: string, size: number): Promise<void> {
  const fh = await open(path, 'w');
  const block = randomBytes(Math.min(size, 8 * MiB));
  for (let done = 0; done < size; done += block.length) await fh.write(block.subarray(0, Math.min(block.length, size - done)));
  await fh.close();
}

describe.skipIf(process.platform !== 'linux')('attachment memory', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld('attachments-memory');
    await w.register('alice');
    await w.register('bob');
  });
  afterAll(cleanupAll);

  it('sends and receives 1 GiB with resident memory growing by less than 100 MiB', async () => {
    await makeFile(join(w.dir, 'small.bin'), 1024);
    const sendBase = await peakRss(w, 'alice', ['send', 'bob', '--file', join(w.dir, 'small.bin')]);
    const recvBase = await peakRss(w, 'bob', ['receive']);
    await makeFile(join(w.dir, 'big.bin'), SIZE);
    const send = await peakRss(w, 'alice', ['send', 'bob', '--file', join(w.dir, 'big.bin')]);
    const recv = await peakRss(w, 'bob', ['receive', '--json']);
    const saved = parseJsonLines(recv.stdout).find((l) => l.type === 'attachment');
    expect(statSync(saved?.path as string).size).toBe(SIZE);
    console.log(
      `1 GiB attachment: send peak RSS ${send.peak.toFixed(0)} MiB (1 KiB file: ${sendBase.peak.toFixed(0)}), receive ${recv.peak.toFixed(0)} MiB (${recvBase.peak.toFixed(0)})`,
    );
    expect(send.peak - sendBase.peak).toBeLessThan(100);
    expect(recv.peak - recvBase.peak).toBeLessThan(100);
  }, 300_000);
});
