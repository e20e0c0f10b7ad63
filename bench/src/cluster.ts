/**
 * Cluster benchmark: 1, 2 and 3 relay processes on PostgreSQL + NATS (and one
 * embedded SQLite relay for reference), driven over real WebSockets. Senders
 * and receivers sit on different nodes whenever there is more than one, so
 * every message crosses the bus. Reports delivered messages per second, the
 * send→push latency (p50/p99) and CPU time per message of the relay
 * processes, PostgreSQL and NATS, read from /proc.
 *
 * The load generator shares the machine's cores with everything it measures;
 * the figures are for comparing rows of one run, not absolute capacity.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync, readdirSync, mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeFrame, processEnvelope } from '@parley/wire';
import pg from 'pg';
import WebSocket from 'ws';
import { type Creds, okAck, parleySendFrame, registerMany } from './clients.js';

const NODE_MAIN = fileURLToPath(new URL('./cluster-node.js', import.meta.url));
const HEAP_SAMPLER = fileURLToPath(new URL('./heap-sample.js', import.meta.url));
export const PG_URL = process.env.PARLEY_BENCH_PG ?? 'postgres://postgres@127.0.0.1:5432/test';
export const NATS_URL = process.env.PARLEY_BENCH_NATS ?? 'nats://127.0.0.1:4222';
const TICKS_PER_SECOND = 100; // Linux USER_HZ

export interface ClusterRow {
  label: string;
  nodes: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  relayMicros: number;
  dbMicros: number;
  natsMicros: number;
}

/** utime + stime of a process (or with `tid`, of one of its threads), in microseconds; 0 when it has gone. */
export function cpuMicros(pid: number, tid?: number): number {
  try {
    const stat = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1e6) / TICKS_PER_SECOND;
  } catch {
    return 0;
  }
}

/** Summed CPU of every process whose command name is `comm` (PostgreSQL backends, nats-server). */
export function cpuOfCommand(comm: string): number {
  let total = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() === comm) total += cpuMicros(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return total;
}

export async function startNode(env: NodeJS.ProcessEnv): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(
    process.execPath,
    [
      ...(process.env.PARLEY_BENCH_PROF ? ['--cpu-prof', '--cpu-prof-dir', process.env.PARLEY_BENCH_PROF] : []),
      ...(process.env.PARLEY_BENCH_HEAP ? ['--import', HEAP_SAMPLER] : []),
      NODE_MAIN,
    ],
    { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const port = await new Promise<number>((resolve, reject) => {
    let buf = '';
    child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      const line = buf.split('\n').find((l) => l.startsWith('{"port"'));
      if (line) resolve((JSON.parse(line) as { port: number }).port);
    });
    child.once('exit', (code) => reject(new Error(`bench relay exited with ${code}`)));
  });
  return { child, port };
}

export function openSocket(
  baseUrl: string,
  a: Creds,
  onRequest: (ws: WebSocket, id: bigint, path: string, body: Uint8Array) => void,
  onResponse?: (status: number) => void,
): Promise<WebSocket> {
  const ws = new WebSocket(`${baseUrl.replace(/^http/, 'ws')}/v1/websocket`, { headers: { authorization: a.auth } });
  ws.on('message', (data: Buffer) => {
    const f = decodeFrame(new Uint8Array(data));
    if (f.kind === 'request') onRequest(ws, f.id, f.path, f.body);
    else onResponse?.(f.status);
  });
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] as number;
}

/**
 * The environment for bench relay processes on the embedded default, or on a
 * fresh PostgreSQL database + NATS; `dispose` drops the database and the data dir.
 */
export async function relayEnv(mode: 'sqlite' | 'postgres'): Promise<{ env: NodeJS.ProcessEnv; dispose: () => Promise<void> }> {
  const tmp = mkdtempSync(join(tmpdir(), 'parley-bench-'));
  const dbName = `parley_bench_${process.pid}_${Date.now().toString(36)}`;
  let admin: pg.Client | null = null;
  let env: NodeJS.ProcessEnv = { PARLEY_DATA_DIR: tmp, PARLEY_STORE: 'sqlite', PARLEY_BUS: 'local' };
  if (mode === 'postgres') {
    admin = new pg.Client({ connectionString: PG_URL });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${dbName}`);
    const url = new URL(PG_URL);
    url.pathname = `/${dbName}`;
    env = { PARLEY_STORE: url.toString(), PARLEY_BUS: NATS_URL, PARLEY_DATA_DIR: tmp };
  }
  return {
    env,
    async dispose() {
      if (admin) {
        await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch(() => undefined);
        await admin.end();
      }
      rmSync(tmp, { recursive: true, force: true });
    },
  };
}

/** Null when PostgreSQL and NATS both answer, else why not (cluster rows are skipped then). */
export async function clusterServicesUp(): Promise<string | null> {
  try {
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    await c.end();
  } catch {
    return 'PostgreSQL unreachable';
  }
  const nats = new URL(NATS_URL);
  const up = await new Promise<boolean>((resolve) => {
    const s = connect({ host: nats.hostname, port: Number(nats.port || 4222) });
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => (s.destroy(), resolve(false)));
  });
  return up ? null : 'NATS unreachable';
}

/** One measured run against `n` freshly started nodes. */
async function run(
  label: string,
  n: number,
  mode: 'postgres' | 'sqlite',
  opts: { pairs: number; window: number; seconds: number },
): Promise<ClusterRow> {
  const children: ChildProcess[] = [];
  const sockets: WebSocket[] = [];
  const { env, dispose } = await relayEnv(mode);
  try {
    const nodes: number[] = [];
    for (let i = 0; i < n; i++) {
      const { child, port } = await startNode(env);
      children.push(child);
      nodes.push(port);
    }
    const urlOf = (i: number) => `http://127.0.0.1:${nodes[i % n] as number}`;
    const senders: Creds[] = [];
    const receivers: Creds[] = [];
    for (let i = 0; i < opts.pairs; i++) {
      senders.push(...(await registerMany(nodes[i % n] as number, 1, `bs_${i}_`)));
      receivers.push(...(await registerMany(nodes[(i + 1) % n] as number, 1, `br_${i}_`)));
    }

    let measuring = false;
    let stopped = false;
    let delivered = 0;
    const latencies: number[] = [];
    const content = new Uint8Array(1024);
    for (const [i, r] of receivers.entries()) {
      sockets.push(
        await openSocket(urlOf(i + 1), r, (ws, id, path, body) => {
          if (path === '/api/v1/message') {
            const env = processEnvelope(body);
            const sentAt = Buffer.from(env.content).readDoubleLE(0);
            if (measuring && sentAt > 0) {
              delivered++;
              latencies.push(performance.now() - sentAt);
            }
          }
          okAck(ws, id);
        }),
      );
    }
    const starters: Array<() => void> = [];
    for (const [i, s] of senders.entries()) {
      const to = receivers[i] as Creds;
      let nextId = 1n;
      const sendOne = (ws: WebSocket) => {
        if (stopped) return;
        Buffer.from(content.buffer).writeDoubleLE(performance.now(), 0);
        ws.send(parleySendFrame(nextId++, to, content));
      };
      let ws: WebSocket | null = null;
      ws = await openSocket(
        urlOf(i),
        s,
        (sock, id) => okAck(sock, id),
        (status) => {
          if (status !== 200) throw new Error(`send answered ${status}`);
          if (ws) sendOne(ws);
        },
      );
      sockets.push(ws);
      const opened = ws;
      starters.push(() => sendOne(opened));
    }
    // Open every sender's window; each answer sends the next one (closed loop).
    for (const start of starters) for (let k = 0; k < opts.window; k++) start();
    await new Promise((r) => setTimeout(r, 1_000));
    const relayPids = children.map((c) => c.pid ?? 0);
    const cpu0 = {
      relay: relayPids.reduce((t, p) => t + cpuMicros(p), 0),
      db: cpuOfCommand('postgres'),
      nats: cpuOfCommand('nats-server'),
    };
    const t0 = performance.now();
    measuring = true;
    await new Promise((r) => setTimeout(r, opts.seconds * 1000));
    measuring = false;
    const elapsed = (performance.now() - t0) / 1000;
    const cpu1 = {
      relay: relayPids.reduce((t, p) => t + cpuMicros(p), 0),
      db: cpuOfCommand('postgres'),
      nats: cpuOfCommand('nats-server'),
    };
    stopped = true;
    latencies.sort((a, b) => a - b);
    const per = (d: number) => (delivered > 0 ? d / delivered : NaN);
    return {
      label,
      nodes: n,
      perSecond: delivered / elapsed,
      p50Ms: percentile(latencies, 0.5),
      p99Ms: percentile(latencies, 0.99),
      relayMicros: per(cpu1.relay - cpu0.relay),
      dbMicros: mode === 'postgres' ? per(cpu1.db - cpu0.db) : NaN,
      natsMicros: mode === 'postgres' ? per(cpu1.nats - cpu0.nats) : NaN,
    };
  } finally {
    for (const ws of sockets) ws.terminate();
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('exit', r)))));
    await dispose();
  }
}

/** Runs every configuration; skips the cluster rows when PostgreSQL or NATS is not there. */
export async function benchCluster(quick: boolean): Promise<{ rows: ClusterRow[]; skipped: string | null }> {
  const opts = quick ? { pairs: 16, window: 4, seconds: 4 } : { pairs: 32, window: 4, seconds: 12 };
  const rows: ClusterRow[] = [await run('embedded (SQLite, local bus)', 1, 'sqlite', opts)];
  const skipped = await clusterServicesUp();
  if (skipped) return { rows, skipped };
  for (const n of [1, 2, 3])
    rows.push(await run(`cluster, ${n} node${n > 1 ? 's' : ''} (PostgreSQL + NATS)`, n, 'postgres', opts));
  return { rows, skipped: null };
}
