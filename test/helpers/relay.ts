/**
 * A relay as a real process: `parley relay --port <p> --data <dir>`, with all
 * of its stdout and stderr appended to a log file for later inspection (the
 * canary test greps it).
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { CLI_MAIN, REPO_ROOT } from './paths.js';
import { exited, isRunning, track } from './procs.js';
import { cliEnv } from './cli.js';
import { withTimeout } from './wait.js';

export interface RelayProcess {
  url: string;
  port: number;
  child: ChildProcessWithoutNullStreams;
  /** SIGKILL: no shutdown code runs. */
  kill9(): Promise<void>;
  /** SIGTERM, then wait for a clean exit; resolves with the exit status. */
  stop(timeoutMs?: number): Promise<number | null>;
}

export interface RelayOptions {
  dataDir: string;
  logFile: string;
  /** 0 (the default) lets the OS choose. */
  port?: number;
  inviteCodes?: string[];
  env?: NodeJS.ProcessEnv;
  startTimeoutMs?: number;
}

function tail(file: string, lines = 40): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

export async function startRelayProcess(opts: RelayOptions): Promise<RelayProcess> {
  const args = ['relay', '--host', '127.0.0.1', '--port', String(opts.port ?? 0), '--data', opts.dataDir];
  for (const code of opts.inviteCodes ?? []) args.push('--invite-code', code);
  const child = track(spawn(process.execPath, [CLI_MAIN, ...args], { cwd: REPO_ROOT, env: cliEnv(opts.env), stdio: 'pipe' }));
  const log = createWriteStream(opts.logFile, { flags: 'a' });
  child.stderr.pipe(log, { end: false });

  let buffered = '';
  const listening = new Promise<{ url: string }>((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => {
      log.write(chunk);
      buffered += chunk.toString('utf8');
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        try {
          const entry = JSON.parse(line) as { msg?: unknown; url?: unknown };
          if (entry.msg === 'relay listening' && typeof entry.url === 'string') resolve({ url: entry.url });
        } catch {
          // not a JSON log line
        }
      }
    });
    child.once('error', reject);
    child.once('exit', (code, signal) =>
      reject(new Error(`relay exited (code ${code}, signal ${signal}) before listening; log tail:\n${tail(opts.logFile)}`)),
    );
  });
  // The stream is ended once the process has gone and its pipes are drained.
  child.once('close', () => log.end());

  let url: string;
  try {
    ({ url } = await withTimeout(listening, opts.startTimeoutMs ?? 20_000, `the relay's "relay listening" log line`));
  } catch (err) {
    if (isRunning(child)) child.kill('SIGKILL');
    throw new Error(`${(err as Error).message}\nrelay log tail:\n${tail(opts.logFile)}`, { cause: err });
  }
  const port = Number(new URL(url).port);

  const flushLog = (): Promise<void> =>
    new Promise((resolve) => {
      if (log.closed || log.writableFinished) resolve();
      else log.once('close', () => resolve());
    });

  return {
    url,
    port,
    child,
    kill9: async () => {
      if (isRunning(child)) child.kill('SIGKILL');
      await withTimeout(exited(child), 10_000, 'the killed relay to exit');
      await withTimeout(flushLog(), 10_000, 'the relay log to be flushed');
    },
    stop: async (timeoutMs = 15_000) => {
      if (isRunning(child)) child.kill('SIGTERM');
      const { code } = await withTimeout(exited(child), timeoutMs, 'the relay to exit after SIGTERM');
      await withTimeout(flushLog(), 10_000, 'the relay log to be flushed');
      return code;
    },
  };
}
