/**
 * `npm run bench:attachments`: sends one large file (1 GiB by default,
 * BENCH_ATTACHMENT_MIB to change) between two CLI profiles through a relay
 * process, and reports throughput and how far each process's resident memory
 * (VmRSS from /proc, sampled every 20 ms) grew above what the same command
 * uses for a 1 KiB file. Prints figures; asserts nothing.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../../apps/cli/dist/main.js', import.meta.url));
const MiB = 1024 * 1024;

function rssKiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** Samples a process's RSS until it exits; resolves with the peak in MiB. */
function watch(child: ChildProcess): { peak: () => number } {
  let peak = 0;
  const timer = setInterval(() => {
    if (child.pid) peak = Math.max(peak, rssKiB(child.pid) / 1024);
  }, 20);
  child.once('exit', () => clearInterval(timer));
  return { peak: () => peak };
}

async function run(args: string[], env: NodeJS.ProcessEnv): Promise<{ out: string; peakMiB: number; seconds: number }> {
  const started = performance.now();
  const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const w = watch(child);
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((r) => child.once('close', r));
  if (code !== 0) throw new Error(`parley ${args.join(' ')} exited ${code}: ${err}`);
  return { out, peakMiB: w.peak(), seconds: (performance.now() - started) / 1000 };
}

async function makeFile(path: string, size: number): Promise<string> {
  const fh = await open(path, 'w');
  const h = createHash('sha256');
  const block = randomBytes(Math.min(size, 8 * MiB));
  for (let done = 0; done < size; ) {
    const n = Math.min(block.length, size - done);
    if (n >= 4) block.writeUInt32BE(done >>> 0, 0);
    await fh.write(block.subarray(0, n));
    h.update(block.subarray(0, n));
    done += n;
  }
  await fh.close();
  return h.digest('hex');
}

async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return h.digest('hex');
}

const size = Number(process.env.BENCH_ATTACHMENT_MIB ?? 1024) * MiB;
const dir = mkdtempSync(join(tmpdir(), 'parley-bench-att-'));
const env: NodeJS.ProcessEnv = { ...process.env, PARLEY_PASSPHRASE: `bench-${randomBytes(6).toString('hex')}` };
const relay = spawn(process.execPath, [CLI, 'relay', '--port', '0', '--data', join(dir, 'relay')], {
  env,
  stdio: ['ignore', 'pipe', 'pipe'],
});
try {
  const relayLog = new Promise<string>((resolve, reject) => {
    let buf: string | null = '';
    relay.stdout.on('data', (d: Buffer) => {
      if (buf === null) return; // keep draining the pipe, stop keeping the text
      buf += d.toString();
      const m = /"url":"(http:[^"]+)"/.exec(buf);
      if (m?.[1]) {
        buf = null;
        resolve(m[1]);
      }
    });
    relay.once('exit', (c) => reject(new Error(`relay exited ${c}`)));
  });
  const url = await Promise.race([relayLog, new Promise<string>((_, rej) => setTimeout(() => rej(new Error('relay did not start')), 20_000))]);
  const relayWatch = watch(relay);
  const profile = (u: string) => ['--profile', join(dir, u)];
  await run([...profile('alice'), 'register', 'alice', '--server', url], env);
  await run([...profile('bob'), 'register', 'bob', '--server', url], env);

  // Baselines: the same commands with a 1 KiB file.
  await makeFile(join(dir, 'small.bin'), 1024);
  const sendBase = await run([...profile('alice'), 'send', 'bob', '--file', join(dir, 'small.bin')], env);
  const recvBase = await run([...profile('bob'), 'receive'], env);
  const relayBase = rssKiB(relay.pid ?? 0) / 1024;

  const sum = await makeFile(join(dir, 'big.bin'), size);
  const send = await run([...profile('alice'), 'send', 'bob', '--file', join(dir, 'big.bin')], env);
  const recv = await run([...profile('bob'), 'receive', '--json'], env);
  const saved = recv.out
    .split('\n')
    .filter((l) => l.includes('"type":"attachment"'))
    .map((l) => (JSON.parse(l) as { path: string }).path)
    .find((p) => p.endsWith('big.bin'));
  const ok = saved !== undefined && (await sha256(saved)) === sum;
  const mib = size / MiB;
  console.log(`\nAttachment of ${mib} MiB through a relay process (filesystem blob store), file intact: ${ok}`);
  console.log(`  ${'command'.padEnd(26)} ${'seconds'.padStart(8)} ${'MiB/s'.padStart(7)} ${'peak RSS'.padStart(9)} ${'1 KiB file'.padStart(11)} ${'growth'.padStart(8)}`);
  const row = (name: string, r: { seconds: number; peakMiB: number }, base: number) =>
    console.log(
      `  ${name.padEnd(26)} ${r.seconds.toFixed(1).padStart(8)} ${(mib / r.seconds).toFixed(0).padStart(7)} ${r.peakMiB.toFixed(0).padStart(6)} MiB ${base.toFixed(0).padStart(7)} MiB ${(r.peakMiB - base).toFixed(0).padStart(4)} MiB`,
    );
  row('parley send --file', send, sendBase.peakMiB);
  row('parley receive (download)', recv, recvBase.peakMiB);
  console.log(`  relay process: RSS ${relayBase.toFixed(0)} MiB before, peak ${relayWatch.peak().toFixed(0)} MiB during the transfer`);
} finally {
  relay.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
}
