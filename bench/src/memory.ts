/**
 * Memory per idle connection: RSS of the server process before and after
 * opening N idle, authenticated connections from separate worker processes
 * (each on its own source address 127.0.0.x so loopback ephemeral ports do
 * not run out). Parley accounts are registered over HTTP first, then the
 * baseline is taken, so the figure is the cost of the sockets and sessions.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { registerMany } from './clients.js';
import { type ServerHandle, rssKiB } from './servers.js';

const WORKER = fileURLToPath(new URL('./idle-worker.js', import.meta.url));
const PER_WORKER = 5_000;

export interface MemoryRow {
  server: string;
  connections: number;
  rssBeforeKiB: number;
  rssAfterKiB: number;
  perConnectionKiB: number;
  note: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function measureIdle(server: ServerHandle, n: number): Promise<MemoryRow> {
  const tmp = mkdtempSync(join(tmpdir(), 'parley-bench-mem-'));
  const workers: ChildProcess[] = [];
  try {
    let credsFile: string | undefined;
    if (server.kind === 'parley') {
      credsFile = join(tmp, 'creds.json');
      writeFileSync(credsFile, JSON.stringify(await registerMany(server.port, n, `idle${Date.now().toString(36)}_`)));
    }
    await sleep(2_000);
    const before = rssKiB(server.pid);
    const ready: Array<Promise<void>> = [];
    for (let w = 0, first = 0; first < n; w++, first += PER_WORKER) {
      const child = spawn(process.execPath, [WORKER], {
        env: {
          ...process.env,
          IDLE_WORKER: JSON.stringify({
            kind: server.kind,
            port: server.port,
            count: Math.min(PER_WORKER, n - first),
            first,
            localAddress: `127.0.0.${10 + w}`,
            credsFile,
          }),
        },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      workers.push(child);
      ready.push(
        new Promise((resolve, reject) => {
          child.stdout?.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
          child.once('exit', (code) => reject(new Error(`idle worker exited with ${code}`)));
        }),
      );
    }
    await Promise.all(ready);
    await sleep(3_000);
    const after = rssKiB(server.pid);
    const row = {
      server: server.label,
      connections: n,
      rssBeforeKiB: before,
      rssAfterKiB: after,
      perConnectionKiB: (after - before) / n,
      note: '',
    };
    console.log(
      `  ${server.label}: ${n} idle connections, RSS ${(before / 1024).toFixed(0)} → ${(after / 1024).toFixed(0)} MiB, ${row.perConnectionKiB.toFixed(1)} KiB each`,
    );
    return row;
  } finally {
    for (const w of workers) w.kill('SIGTERM');
    await Promise.all(workers.map((w) => new Promise((r) => (w.exitCode !== null ? r(null) : w.once('exit', r)))));
    rmSync(tmp, { recursive: true, force: true });
  }
}
