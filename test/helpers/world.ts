/**
 * One end-to-end "world": a temporary directory holding a relay data
 * directory, the relay's log file and one CLI profile per user, plus a relay
 * process. Everything is torn down by `close()` (call it from afterAll).
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { type CliOptions, type CliResult, cliEnv, type LiveCli, runCli, spawnCli } from './cli.js';
import { freePort } from './net.js';
import { assertCliBuilt } from './paths.js';
import { killAll } from './procs.js';
import { type RelayProcess, startRelayProcess } from './relay.js';
import { makeTempDir, removeTempDirs } from './tmp.js';

export interface World {
  dir: string;
  dataDir: string;
  logFile: string;
  passphrase: string;
  relay: RelayProcess;
  profile(user: string): string;
  env(extra?: NodeJS.ProcessEnv): NodeJS.ProcessEnv;
  /** `parley --profile <dir of user> <args>` with the world's passphrase. */
  cli(user: string, args: readonly string[], opts?: CliOptions): Promise<CliResult>;
  /** Like `cli`, but fails the test unless the command exits 0. */
  ok(user: string, args: readonly string[], opts?: CliOptions): Promise<CliResult>;
  live(user: string, args: readonly string[]): LiveCli;
  register(user: string): Promise<void>;
  /** kill -9 the relay and start a new process on the same port and data. */
  crashAndRestartRelay(): Promise<void>;
  close(): Promise<void>;
}

/** Kills every process the test file started and removes its temporary directories. */
export async function cleanupAll(): Promise<void> {
  await killAll();
  removeTempDirs();
}

export function describeResult(args: readonly string[], r: CliResult): string {
  return `parley ${args.join(' ')} exited with ${r.code ?? r.signal}\n--- stdout:\n${r.stdout}\n--- stderr:\n${r.stderr}`;
}

export async function createWorld(label: string, opts: { env?: NodeJS.ProcessEnv } = {}): Promise<World> {
  assertCliBuilt();
  const dir = makeTempDir(label);
  const dataDir = join(dir, 'relay-data');
  const logFile = join(dir, 'relay.log');
  const passphrase = `pass-${randomBytes(12).toString('hex')}`;
  // A fixed port, so the relay can come back at the URL the profiles stored.
  const port = await freePort();
  const relayOpts = { dataDir, logFile, port, ...(opts.env !== undefined ? { env: opts.env } : {}) };

  const world: World = {
    dir,
    dataDir,
    logFile,
    passphrase,
    relay: await startRelayProcess(relayOpts),
    profile: (user) => join(dir, 'profiles', user),
    env: (extra = {}) => cliEnv({ PARLEY_PASSPHRASE: passphrase, ...extra }),
    cli: (user, args, o = {}) => runCli(['--profile', world.profile(user), ...args], { env: world.env(), ...o }),
    ok: async (user, args, o = {}) => {
      const r = await world.cli(user, args, o);
      if (r.code !== 0) throw new Error(describeResult(['--profile', world.profile(user), ...args], r));
      return r;
    },
    live: (user, args) => spawnCli(['--profile', world.profile(user), ...args], world.env()),
    register: async (user) => {
      await world.ok(user, ['register', user, '--server', world.relay.url]);
    },
    crashAndRestartRelay: async () => {
      await world.relay.kill9();
      world.relay = await startRelayProcess(relayOpts);
    },
    close: cleanupAll,
  };
  return world;
}

/** Parses `parley receive --json` output into objects, failing on any non-JSON line. */
export function parseJsonLines(stdout: string): Array<Record<string, unknown>> {
  return stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        throw new Error(`receive --json printed a line that is not JSON: ${l}`);
      }
    });
}

/** Only the message objects of `receive --json` output. */
export function messagesOf(stdout: string): Array<{ from: unknown; fromDevice: unknown; timestamp: unknown; body: string }> {
  return parseJsonLines(stdout)
    .filter((o) => o.type === undefined || o.type === 'message')
    .map((o) => {
      if (typeof o.body !== 'string') throw new Error(`message without a string body: ${JSON.stringify(o)}`);
      return { from: o.from, fromDevice: o.fromDevice, timestamp: o.timestamp, body: o.body };
    });
}
