/**
 * Running the built `parley` CLI as a real process: one-shot commands with a
 * time limit (`runCli`) and long-running interactive ones (`spawnCli`).
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { CLI_MAIN, REPO_ROOT } from './paths.js';
import { exited, isRunning, track } from './procs.js';
import { withTimeout } from './wait.js';

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  env?: NodeJS.ProcessEnv;
  /** Written to stdin, which is then closed. Without it stdin is closed at once. */
  input?: string;
  timeoutMs?: number;
}

/** The environment a CLI child gets: ours minus any PARLEY_* setting, plus `extra`. */
export function cliEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PARLEY_')) env[k] = v;
  return { ...env, ...extra };
}

function describe(args: readonly string[]): string {
  return `parley ${args.join(' ')}`;
}

/** Runs `parley <args>` to completion; kills it and fails if it takes longer than the limit. */
export async function runCli(args: readonly string[], opts: CliOptions = {}): Promise<CliResult> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const child = track(spawn(process.execPath, [CLI_MAIN, ...args], { cwd: REPO_ROOT, env: opts.env ?? cliEnv(), stdio: 'pipe' }));
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdin.on('error', () => undefined); // the CLI may exit before reading stdin
  child.stdin.end(opts.input ?? '');
  const done = new Promise<CliResult>((resolve, reject) => {
    child.once('error', reject);
    // 'close' (not 'exit') so all output has been read.
    child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  try {
    return await withTimeout(done, timeoutMs, describe(args));
  } catch (err) {
    if (isRunning(child)) child.kill('SIGKILL');
    throw new Error(`${(err as Error).message}\n--- stdout so far:\n${stdout}\n--- stderr so far:\n${stderr}`, { cause: err });
  }
}

/** A running interactive CLI process (e.g. `parley chat`). */
export interface LiveCli {
  child: ChildProcessWithoutNullStreams;
  stdout(): string;
  stderr(): string;
  write(line: string): void;
  endInput(): void;
  /** Resolves with stdout once `pattern` appears in it (searching from the start). */
  waitForOutput(pattern: string | RegExp, timeoutMs: number, what: string): Promise<string>;
  waitForExit(timeoutMs: number): Promise<CliResult>;
}

export function spawnCli(args: readonly string[], env: NodeJS.ProcessEnv): LiveCli {
  const child = track(spawn(process.execPath, [CLI_MAIN, ...args], { cwd: REPO_ROOT, env, stdio: 'pipe' }));
  let out = '';
  let err = '';
  const listeners = new Set<() => void>();
  const notify = (): void => {
    for (const l of listeners) l();
  };
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    notify();
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    err += d;
    notify();
  });
  child.stdin.on('error', () => undefined);
  const closed = new Promise<CliResult>((resolve) =>
    child.once('close', (code, signal) => resolve({ code, signal, stdout: out, stderr: err })),
  );

  const context = (): string => `\n--- stdout:\n${out}\n--- stderr:\n${err}`;
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    write: (line) => {
      child.stdin.write(line.endsWith('\n') ? line : `${line}\n`);
    },
    endInput: () => child.stdin.end(),
    waitForOutput: async (pattern, timeoutMs, what) => {
      const matches = (): boolean => (typeof pattern === 'string' ? out.includes(pattern) : pattern.test(out));
      if (matches()) return out;
      let listener: () => void = () => undefined;
      const seen = new Promise<string>((resolve, reject) => {
        listener = () => {
          if (matches()) resolve(out);
          else if (!isRunning(child)) reject(new Error(`${describe(args)} exited before printing ${what}${context()}`));
        };
        listeners.add(listener);
        void exited(child).then(listener);
      });
      try {
        return await withTimeout(seen, timeoutMs, `${what} from ${describe(args)}`);
      } catch (e) {
        throw new Error(`${(e as Error).message}${context()}`, { cause: e });
      } finally {
        listeners.delete(listener);
      }
    },
    waitForExit: async (timeoutMs) => {
      try {
        return await withTimeout(closed, timeoutMs, `${describe(args)} to exit`);
      } catch (e) {
        throw new Error(`${(e as Error).message}${context()}`, { cause: e });
      }
    },
  };
}

/** The single `parley: ...` line a failing command must print, or a descriptive failure. */
export function errorLine(result: CliResult): string {
  const lines = result.stderr.split('\n').filter((l) => l.trim() !== '');
  if (lines.length !== 1) throw new Error(`expected exactly one line on stderr, got ${lines.length}:\n${result.stderr}`);
  return lines[0] ?? '';
}
