/**
 * Attachments between two CLI profiles through a relay process: round trips
 * of 0 B, 1 B, 5 MiB and 200 MiB, tampered blobs rejected on the real CLI
 * path with nothing left in downloads, and an upload killed midway that
 * resumes and completes.
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, createReadStream, existsSync, openSync, readdirSync, readSync, statSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exited } from '../helpers/procs.js';
import { sleep, withTimeout } from '../helpers/wait.js';
import { cleanupAll, createWorld, parseJsonLines, type World } from '../helpers/world.js';

const MiB = 1024 * 1024;

async function makeFile(path: string, size: number): Promise<string> {
  const fh = await open(path, 'w');
  const h = createHash('sha256');
  const block = randomBytes(Math.min(size, 4 * MiB));
  for (let done = 0; done < size; ) {
    const n = Math.min(block.length, size - done);
    // Vary each block so the file is not periodic.
    if (block.length >= 4) block.writeUInt32BE(done >>> 0, 0);
    const part = block.subarray(0, n);
    await fh.write(part);
    h.update(part);
    done += n;
  }
  await fh.close();
  return h.digest('hex');
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return h.digest('hex');
}

function blobFiles(w: World): string[] {
  const dir = join(w.dataDir, 'blobs', 'data');
  return existsSync(dir) ? readdirSync(dir).map((f) => join(dir, f)) : [];
}

const visible = (dir: string) => (existsSync(dir) ? readdirSync(dir) : []);

describe('attachments between CLI profiles', () => {
  let w: World;

  beforeAll(async () => {
    w = await createWorld('attachments');
    await w.register('alice');
    await w.register('bob');
  });
  afterAll(cleanupAll);

  it('round-trips 0 B, 1 B, 5 MiB and 200 MiB files exactly, with metadata in --json', async () => {
    const sizes = [0, 1, 5 * MiB, 200 * MiB];
    const files: Array<{ name: string; size: number; sha: string }> = [];
    for (const size of sizes) {
      const name = `file-${size}.bin`;
      files.push({ name, size, sha: await makeFile(join(w.dir, name), size) });
    }
    for (const [i, f] of files.entries()) {
      const args = ['send', 'bob', '--file', join(w.dir, f.name)];
      if (i === 1) args.push('a caption');
      const r = await w.ok('alice', args, { timeoutMs: 180_000 });
      expect(r.stdout).toMatch(new RegExp(`^sent ${f.name} \\(.+\\) to bob at \\d{4}-`));
    }
    const got = await w.ok('bob', ['receive', '--json'], { timeoutMs: 180_000 });
    expect(got.stderr).toBe('');
    const lines = parseJsonLines(got.stdout);
    const messages = lines.filter((l) => l.type === 'message');
    expect(messages).toHaveLength(files.length);
    expect(messages[1]?.body).toBe('a caption');
    for (const [i, f] of files.entries())
      expect(messages[i]?.attachments).toEqual([{ index: 0, fileName: f.name, contentType: '', size: f.size }]);
    const saved = lines.filter((l) => l.type === 'attachment');
    expect(saved).toHaveLength(files.length);
    for (const [i, f] of files.entries()) {
      const s = saved[i]!;
      expect(s).toMatchObject({ messageId: messages[i]?.id, index: 0, fileName: f.name, size: f.size });
      expect(s.path).toBe(join(w.profile('bob'), 'downloads', f.name));
      expect(statSync(s.path as string).mode & 0o777).toBe(0o600);
      expect(await sha256File(s.path as string)).toBe(f.sha);
    }
    // Only final files in downloads: no temporary leftovers.
    expect(visible(join(w.profile('bob'), 'downloads')).sort()).toEqual(files.map((f) => f.name).sort());
    // The relay holds padded ciphertext only: sizes are buckets, never the plaintext sizes.
    for (const b of blobFiles(w)) expect(files.map((f) => f.size)).not.toContain(statSync(b).size);
  }, 600_000);

  // Extension cannot be staged through the relay (it serves exactly the recorded length);
  // packages/sdk/test covers it with a lying server and 1,000 random bit flips in-process.
  it('rejects blobs altered on the relay (bit flips, truncation) and leaves no plaintext', async () => {
    const downloads = join(w.profile('bob'), 'downloads');
    const before = visible(downloads);
    const src = join(w.dir, 'tamper.bin');
    await makeFile(src, 70_000);
    const kinds = ['flip-start', 'flip-middle', 'flip-mac', 'truncate'] as const;
    for (const kind of kinds) {
      const known = new Set(blobFiles(w));
      await w.ok('alice', ['send', 'bob', '--file', src]);
      const blob = blobFiles(w).find((f) => !known.has(f));
      expect(blob).toBeDefined();
      const size = statSync(blob!).size;
      const fd = openSync(blob!, 'r+');
      const flip = (pos: number) => {
        const b = Buffer.alloc(1);
        readSync(fd, b, 0, 1, pos);
        b[0]! ^= 1 << Math.floor(Math.random() * 8);
        writeSync(fd, b, 0, 1, pos);
      };
      if (kind === 'flip-start') flip(3);
      if (kind === 'flip-middle') flip(Math.floor(size / 2));
      if (kind === 'flip-mac') flip(size - 5);
      closeSync(fd);
      if (kind === 'truncate') {
        const t = await open(blob!, 'r+');
        await t.truncate(size - 16);
        await t.close();
      }
      const r = await w.cli('bob', ['receive', '--json'], { timeoutMs: 60_000 });
      expect(r.code).toBe(0);
      const lines = parseJsonLines(r.stdout);
      expect(lines.filter((l) => l.type === 'message')).toHaveLength(1);
      expect(lines.filter((l) => l.type === 'attachment')).toHaveLength(0);
      const errs = lines.filter((l) => l.type === 'attachmentError');
      expect(errs).toHaveLength(1);
      // A truncated blob no longer matches the length the relay recorded, so the relay cuts the
      // connection (the client never sees a complete-looking short body); nothing is saved.
      expect(['ATTACHMENT_INVALID', 'RELAY_UNREACHABLE']).toContain(errs[0]?.code);
      if (kind.startsWith('flip')) expect(errs[0]?.code).toBe('ATTACHMENT_INVALID');
      expect(r.stderr).toMatch(/could not save attachment/);
      expect(visible(downloads)).toEqual(before);
    }
  }, 180_000);

  it('resumes an upload that was killed midway and delivers the exact file', async () => {
    const size = 300 * MiB;
    const src = join(w.dir, 'big-resume.bin');
    const sha = await makeFile(src, size);
    const known = new Set(blobFiles(w));
    const live = w.live('alice', ['send', 'bob', '--file', src]);
    // Wait until the relay has accepted a good part of the upload, then kill the sender.
    let blob: string | undefined;
    let accepted = 0;
    await withTimeout(
      (async () => {
        for (;;) {
          blob ??= blobFiles(w).find((f) => !known.has(f));
          accepted = blob ? statSync(blob).size : 0;
          if (accepted >= 20 * MiB) return;
          if (live.child.exitCode !== null) throw new Error(`send exited early: ${live.stdout()} ${live.stderr()}`);
          await sleep(5);
        }
      })(),
      120_000,
      'the relay to receive 20 MiB of the upload',
    );
    live.child.kill('SIGKILL');
    await exited(live.child);
    expect(accepted).toBeLessThan(size);
    await sleep(200); // let the relay notice the dropped connection and record the offset

    const again = await w.ok('alice', ['send', 'bob', '--file', src], { timeoutMs: 300_000 });
    const m = /resuming upload at byte (\d+) of (\d+)/.exec(again.stderr);
    expect(m, again.stderr).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThan(0);
    expect(Number(m![1])).toBeLessThan(Number(m![2]));
    expect(again.stdout).toMatch(/^sent big-resume\.bin /);
    // Still one blob for this file: the second run appended to the first one's upload.
    expect(blobFiles(w).filter((f) => !known.has(f))).toEqual([blob]);

    const got = await w.ok('bob', ['receive', '--json'], { timeoutMs: 300_000 });
    const saved = parseJsonLines(got.stdout).filter((l) => l.type === 'attachment');
    expect(saved).toHaveLength(1);
    expect(await sha256File(saved[0]!.path as string)).toBe(sha);
  }, 600_000);

  it('refuses --file with --stdin, a missing file and a directory', async () => {
    const both = await w.cli('alice', ['send', 'bob', '--file', 'x', '--stdin']);
    expect(both.code).toBe(2);
    const missing = await w.cli('alice', ['send', 'bob', '--file', join(w.dir, 'does-not-exist')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^parley: cannot read the file\n$/);
    const dir = await w.cli('alice', ['send', 'bob', '--file', w.dir]);
    expect(dir.code).toBe(1);
    expect(dir.stderr).toMatch(/not a regular file/);
  });
});
