/**
 * What every client command needs: where the profile lives, how it is
 * unlocked, and how to open it.
 */
import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import type { ParleyClient } from '@parley/sdk';
import { normalizeUsername, WireError } from '@parley/wire';
import { CliError, usageError } from './errors.js';

export interface ProfileOptions {
  profile?: string;
}

/** `--profile`, else PARLEY_PROFILE, else ~/.parley; `~/` is expanded. */
export function resolveProfileDir(opts: ProfileOptions, env: NodeJS.ProcessEnv): string {
  const raw =
    opts.profile ??
    (env.PARLEY_PROFILE !== undefined && env.PARLEY_PROFILE !== '' ? env.PARLEY_PROFILE : join(homedir(), '.parley'));
  const expanded = raw === '~' ? homedir() : raw.startsWith('~/') ? join(homedir(), raw.slice(2)) : raw;
  return isAbsolute(expanded) ? expanded : resolve(expanded);
}

/** PARLEY_PASSPHRASE, or null when unset or empty. */
export function passphraseFromEnv(env: NodeJS.ProcessEnv): string | null {
  const p = env.PARLEY_PASSPHRASE;
  return p === undefined || p === '' ? null : p;
}

/** Validates a username argument the same way the relay and SDK will. */
export function parseUsernameArg(value: string): string {
  try {
    return normalizeUsername(value);
  } catch (err) {
    if (WireError.is(err)) throw usageError(`invalid username '${value}': ${err.message.replace(/^username: /, '')}`);
    throw err;
  }
}

/** Loads the SDK lazily so `parley relay` and `--help` never pay for it. */
export async function loadSdk(): Promise<typeof import('@parley/sdk')> {
  return import('@parley/sdk');
}

export async function openClient(profileDir: string, passphrase: string | null): Promise<ParleyClient> {
  const { ParleyClient } = await loadSdk();
  return ParleyClient.open({ profileDir, passphrase });
}

/** Runs `fn` with an open client and always closes it. */
export async function withClient<T>(
  profileDir: string,
  passphrase: string | null,
  fn: (client: ParleyClient) => Promise<T>,
): Promise<T> {
  const client = await openClient(profileDir, passphrase);
  try {
    return await fn(client);
  } finally {
    await client.close().catch(() => undefined);
  }
}

/** Rejects with `message` if `promise` has not settled within `ms`. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, message: string, exitCode?: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new CliError(message, exitCode)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
