/**
 * The servers the load, memory and drain benchmarks compare, each started as a
 * child process on loopback: Parley (embedded SQLite, or PostgreSQL + NATS),
 * the bare `ws` floor, and ejabberd from Debian. Each handle gives the pid to
 * read CPU and RSS from, the port, and a stop() that waits for the exit.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuOfCommand, relayEnv, startNode } from './cluster.js';
export { clusterServicesUp } from './cluster.js';

export interface ServerHandle {
  kind: 'parley' | 'floor' | 'xmpp';
  label: string;
  pid: number;
  port: number;
  /**
   * CPU of the services the server needs that run as processes of their own
   * (a cluster node's PostgreSQL and NATS), in µs; counted as server CPU.
   */
  servicesCpuMicros?: () => number;
  /** The floor's frame pattern (floor-server.ts): 2 frames a message, or Parley's 4. */
  floorFrames?: 2 | 4;
  stop(): Promise<void>;
}

/** Resident set size of a process in KiB (VmRSS), NaN when it has gone. */
export function rssKiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

function waitExit(c: ChildProcess): Promise<void> {
  return new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r() : c.once('exit', () => r())));
}

async function stopChild(c: ChildProcess, ms = 10_000): Promise<void> {
  c.kill('SIGTERM');
  const t = setTimeout(() => c.kill('SIGKILL'), ms);
  await waitExit(c);
  clearTimeout(t);
}

export async function startParley(mode: 'sqlite' | 'postgres'): Promise<ServerHandle> {
  const { env, dispose } = await relayEnv(mode);
  const { child, port } = await startNode(env);
  return {
    kind: 'parley',
    label: mode === 'sqlite' ? 'Parley embedded (SQLite)' : 'Parley cluster, 1 node (PostgreSQL + NATS)',
    pid: child.pid ?? 0,
    port,
    ...(mode === 'postgres' ? { servicesCpuMicros: () => cpuOfCommand('postgres') + cpuOfCommand('nats-server') } : {}),
    async stop() {
      await stopChild(child);
      await dispose();
    },
  };
}

export async function startFloor(frames: 2 | 4 = 2): Promise<ServerHandle> {
  const main = fileURLToPath(new URL('./floor-server.js', import.meta.url));
  const child = spawn(process.execPath, [main, String(frames)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    let buf = '';
    child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      const line = buf.split('\n').find((l) => l.startsWith('{"port"'));
      if (line) resolve((JSON.parse(line) as { port: number }).port);
    });
    child.once('exit', (code) => reject(new Error(`floor exited with ${code}`)));
  });
  const label = frames === 2 ? 'bare ws relay (floor)' : 'bare ws relay, four frames (request, answer, push, ack)';
  return { kind: 'floor', floorFrames: frames, label, pid: child.pid ?? 0, port, stop: () => stopChild(child) };
}

/** Why ejabberd cannot run here, or null when `erl` and the ejabberd libraries are installed. */
export function ejabberdMissing(): string | null {
  if (!existsSync('/usr/bin/erl')) return 'erl not found (apt-get install -y ejabberd)';
  if (!readdirSync('/usr/lib/x86_64-linux-gnu').some((d) => d.startsWith('ejabberd-')))
    return 'ejabberd libraries not found in /usr/lib/x86_64-linux-gnu (apt-get install -y ejabberd)';
  return null;
}

const EJABBERD_PORT = Number(process.env.PARLEY_BENCH_XMPP_PORT ?? 5299);

/**
 * ejabberd from the Debian package, run directly with `erl` (ejabberdctl
 * would read /etc/default/ejabberd and the system config) under its own
 * config, spool and log in a temp dir. Anonymous SASL, no shaper, no offline
 * storage, TLS off: the cheapest configuration for it, listening on loopback.
 */
export async function startEjabberd(): Promise<ServerHandle> {
  const tmp = mkdtempSync(join(tmpdir(), 'parley-bench-ejabberd-'));
  const node = `ejbench${process.pid}@localhost`;
  writeFileSync(
    join(tmp, 'ejabberd.yml'),
    `hosts:
  - localhost
loglevel: warning
listen:
  - port: ${EJABBERD_PORT}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    backlog: 4096
    max_stanza_size: 262144
    shaper: none
    access: all
    starttls_required: false
auth_method: [anonymous]
anonymous_protocol: sasl_anon
allow_multiple_connections: true
shaper_rules:
  c2s_shaper: none
  max_user_sessions: 10
modules:
  mod_disco: {}
`,
  );
  const child = spawn(
    '/usr/bin/erl',
    ['-sname', node, '+K', 'true', '+P', '1000000', '-noinput', '-mnesia', 'dir', `"${join(tmp, 'spool')}"`, '-s', 'ejabberd'],
    {
      cwd: tmp,
      env: {
        ...process.env,
        HOME: tmp,
        EJABBERD_CONFIG_PATH: join(tmp, 'ejabberd.yml'),
        EJABBERD_LOG_PATH: join(tmp, 'ejabberd.log'),
        ERL_LIBS: '/usr/lib/x86_64-linux-gnu',
        ERL_MAX_PORTS: '1000000',
      },
      stdio: ['ignore', 'ignore', 'ignore'],
    },
  );
  const deadline = Date.now() + 30_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host: '127.0.0.1', port: EJABBERD_PORT });
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => (s.destroy(), resolve(false)));
    });
    if (ok) break;
    if (child.exitCode !== null || Date.now() > deadline) {
      await stopChild(child, 1000);
      const log = existsSync(join(tmp, 'ejabberd.log')) ? readFileSync(join(tmp, 'ejabberd.log'), 'utf8').slice(-500) : '';
      rmSync(tmp, { recursive: true, force: true });
      throw new Error(`ejabberd did not start: ${log}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  // `erl` execs erlexec, which execs beam.smp: the pid stays the same.
  return {
    kind: 'xmpp',
    label: 'ejabberd 23.01 (Debian, XMPP)',
    pid: child.pid ?? 0,
    port: EJABBERD_PORT,
    async stop() {
      await stopChild(child, 15_000);
      // epmd was started by erl for -sname and outlives it; it is harmless and shared.
      rmSync(tmp, { recursive: true, force: true });
    },
  };
}
