/** `parley register`: create an account on a relay and a local profile for it. */
import { loadSdk, parseUsernameArg } from '../context.js';
import { type ErrorContext, ExitCode, usageError } from '../errors.js';
import { println } from '../io.js';

export interface RegisterArgs {
  username: string;
  server: string;
  /** false when --no-passphrase was given. */
  passphraseFlag: boolean;
  inviteCode?: string;
  profileDir: string;
  envPassphrase: string | null;
}

/** Accepts http(s) URLs only and drops trailing slashes. */
export function parseServerUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw usageError(`invalid --server '${value}': expected a URL such as http://127.0.0.1:8080`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw usageError(`invalid --server '${value}': the URL must start with http:// or https://`);
  }
  if (url.username !== '' || url.password !== '') throw usageError('invalid --server: the URL must not contain credentials');
  return value.replace(/\/+$/, '');
}

/**
 * Decides how the new profile's database key is protected. The user has to
 * choose explicitly: a passphrase from PARLEY_PASSPHRASE, or --no-passphrase
 * for a key file readable only by them.
 */
export function choosePassphrase(passphraseFlag: boolean, envPassphrase: string | null): string | null {
  if (!passphraseFlag) {
    if (envPassphrase !== null) {
      throw usageError('PARLEY_PASSPHRASE is set but --no-passphrase was given; unset one of them');
    }
    return null;
  }
  if (envPassphrase === null) {
    throw usageError(
      'choose how to protect the new profile: set PARLEY_PASSPHRASE to a passphrase, or pass --no-passphrase to keep the key in a file only you can read',
    );
  }
  return envPassphrase;
}

export async function runRegister(args: RegisterArgs, ctx: ErrorContext): Promise<number> {
  const username = parseUsernameArg(args.username);
  const serverUrl = parseServerUrl(args.server);
  const passphrase = choosePassphrase(args.passphraseFlag, args.envPassphrase);
  if (args.inviteCode !== undefined && args.inviteCode.trim() === '') throw usageError('--invite-code must not be empty');
  ctx.username = username;
  ctx.serverUrl = serverUrl;

  const { ParleyClient } = await loadSdk();
  const client = await ParleyClient.register({
    profileDir: args.profileDir,
    serverUrl,
    username,
    passphrase,
    ...(args.inviteCode !== undefined ? { inviteCode: args.inviteCode } : {}),
  });
  try {
    const id = client.identity;
    println(`registered ${id.username} (account ${id.accountId}, device ${id.deviceId})`);
  } finally {
    await client.close().catch(() => undefined);
  }
  return ExitCode.Ok;
}
