/**
 * Error reporting for the `parley` command.
 *
 * Every failure the user can cause ends the process with exactly one line on
 * stderr, `parley: <message>`, and a non-zero exit status. SDK errors are
 * narrowed by their `code` (never by message text) and turned into advice.
 * Anything else is a bug: one line too, with the stack only when
 * PARLEY_DEBUG=1.
 */
import type { SdkError } from '@parley/sdk';

/** Exit statuses used by the CLI (documented in docs/CLI.md). */
export const ExitCode = {
  Ok: 0,
  /** The operation failed (relay refused, unknown user, wrong passphrase...). */
  Failure: 1,
  /** The command line itself was wrong: bad or missing arguments or options. */
  Usage: 2,
  /** Interrupted by SIGINT. */
  Interrupted: 130,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** An expected failure with a message meant for the user. */
export class CliError extends Error {
  override readonly name = 'CliError';
  constructor(
    message: string,
    readonly exitCode: number = ExitCode.Failure,
  ) {
    super(message);
  }
  static is(err: unknown): err is CliError {
    return err instanceof CliError;
  }
}

/** Shorthand for a command-line mistake (exit status 2). */
export function usageError(message: string): CliError {
  return new CliError(message, ExitCode.Usage);
}

/** What the failing command was doing, so messages can name things. */
export interface ErrorContext {
  profileDir?: string;
  serverUrl?: string;
  /** The other user the command was about, if any. */
  peer?: string;
  /** The username being registered, if any. */
  username?: string;
  /** Several users the command was about (group members), if any. */
  peers?: string[];
  /** The group reference as the user typed it (id, id prefix or title), if any. */
  group?: string;
}

type SdkErrorCode = SdkError['code'];

/** Friendly text for each SDK error code. */
export function describeSdkError(
  err: Pick<SdkError, 'code' | 'message'> & { retryAfter?: number | undefined },
  ctx: ErrorContext,
): string {
  const code: SdkErrorCode = err.code;
  const detail = err.message;
  const profile = ctx.profileDir ?? 'the profile directory';
  const peer = ctx.peer !== undefined ? `'${ctx.peer}'` : 'that user';
  const group = ctx.group !== undefined ? `'${ctx.group}'` : 'that group';
  const relay = ctx.serverUrl !== undefined ? `the relay at ${ctx.serverUrl}` : 'the relay';
  switch (code) {
    case 'PROFILE_EXISTS':
      return `a profile already exists in ${profile}; choose another directory with --profile`;
    case 'PROFILE_NOT_FOUND':
      return `no profile in ${profile}; create one with 'parley register <username> --server <url>' or pick one with --profile`;
    case 'PROFILE_LOCKED':
      return `the profile in ${profile} is in use by another parley process; stop it first`;
    case 'PASSPHRASE_REQUIRED':
      return `the profile in ${profile} is protected by a passphrase; set PARLEY_PASSPHRASE`;
    case 'BAD_PASSPHRASE':
      return `wrong passphrase for the profile in ${profile} (check PARLEY_PASSPHRASE)`;
    case 'USERNAME_TAKEN':
      return ctx.username !== undefined
        ? `the username '${ctx.username}' is already taken on ${relay}`
        : `that username is already taken on ${relay}`;
    case 'INVITE_REQUIRED':
      return `${relay} only accepts registrations with a valid invite code; pass --invite-code <code>`;
    case 'USER_NOT_FOUND':
      if (ctx.peer === undefined && ctx.peers !== undefined && ctx.peers.length > 0)
        return `at least one of ${ctx.peers.map((p) => `'${p}'`).join(', ')} is not a user on ${relay}; check the spelling`;
      return `there is no user ${peer} on ${relay}`;
    case 'UNTRUSTED_IDENTITY':
      return `the safety number with ${peer} changed since you verified it; compare 'parley safety-number ${ctx.peer ?? '<username>'}' with them, then run 'parley verify'`;
    case 'SAFETY_NUMBER_MISMATCH':
      return `that is not your safety number with ${peer}; nothing was marked verified (compare again, the numbers must be identical)`;
    case 'BAD_BUNDLE':
      return `the relay sent invalid keys for ${peer}; nothing was sent`;
    case 'RELAY_UNREACHABLE':
      return `cannot reach ${relay}; is it running?`;
    case 'RELAY_ERROR':
      return `${relay} reported an error${detail ? `: ${detail}` : ''}`;
    case 'RATE_LIMITED':
      return `${relay} is rate limiting this device; try again ${err.retryAfter !== undefined ? `in ${Math.ceil(err.retryAfter)} s` : 'later'}`;
    case 'INVALID_INPUT':
      return detail || 'invalid input';
    case 'UNAUTHORIZED':
      return `${relay} rejected this device's credentials; the account may have been removed or the relay's data reset`;
    case 'ATTACHMENT_TOO_LARGE':
      return `${relay} refused the file: it is larger than the relay accepts, or this account's attachment quota is used up`;
    case 'ATTACHMENT_UNAVAILABLE':
      return `the attachment is no longer on ${relay} (attachments expire, 30 days by default)`;
    case 'ATTACHMENT_INVALID':
      return 'the attachment failed its integrity check and was discarded; the relay or the network altered it';
    case 'LINK_FAILED':
      return `linking failed: ${detail}; start again with 'parley link'`;
    case 'UNKNOWN_GROUP':
      return `no group in this profile matches ${group}; give its id, an id prefix of 6 or more hex digits, or its exact title (see 'parley group list'; groups you were added to arrive with 'parley receive')`;
    case 'AMBIGUOUS_GROUP':
      return `${group} matches more than one group; give its id or a longer id prefix (see 'parley group list')`;
    case 'NOT_GROUP_ADMIN':
      return `only an admin of the group ${group} can add or remove members`;
    case 'NOT_GROUP_MEMBER':
      return `you are no longer a member of the group ${group} (you left or were removed); its history stays readable, but you cannot send to it or change it`;
    case 'ALREADY_MEMBER':
      return `${peer} is already a member of the group ${group}`;
    case 'GROUP_TOO_LARGE':
      return 'a group can have at most 1000 members';
    case 'INVALID_TITLE':
      return 'invalid group title: use 1 to 64 characters, without control characters';
    case 'FORBIDDEN':
      return `${relay} refused: only the primary device can link or remove other devices`;
    default:
      return detail || String(code);
  }
}

/** Replaces every occurrence of a secret (the passphrase) with `***`. */
export function redact(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) if (secret.length > 0) out = out.split(secret).join('***');
  return out;
}

/** Collapses a message to one line and removes the passphrase if it leaked in. */
export function oneLine(message: string, secrets: readonly string[] = []): string {
  return redact(message, secrets)
    .replace(/\s*[\r\n]+\s*/g, ' ')
    .trim();
}

/** Node's system error codes that deserve a plain explanation. */
function describeSystemError(err: NodeJS.ErrnoException): string | null {
  switch (err.code) {
    case 'EADDRINUSE':
      return `the address is already in use (${err.message.replace(/^listen EADDRINUSE: address already in use /, '')}); pick another --port`;
    case 'EADDRNOTAVAIL':
      return 'cannot listen on that address (check --host)';
    case 'EACCES':
    case 'EPERM':
      return `permission denied${err.path !== undefined ? `: ${err.path}` : ''}`;
    case 'ENOENT':
      return err.path !== undefined ? `no such file or directory: ${err.path}` : null;
    case 'ENOTDIR':
      return err.path !== undefined ? `not a directory: ${err.path}` : null;
    case 'ENOSPC':
      return 'no space left on the device';
    default:
      return null;
  }
}

export interface Reported {
  line: string;
  exitCode: number;
  /** Extra diagnostic text for PARLEY_DEBUG=1. */
  debug: string | null;
}

/**
 * Turns any thrown value into the line to print and the exit status.
 * `isSdkError` is passed in so this module never has to load the SDK.
 */
export function reportError(
  err: unknown,
  ctx: ErrorContext,
  isSdkError: (e: unknown) => e is SdkError,
  secrets: readonly string[],
): Reported {
  const debug = err instanceof Error ? (err.stack ?? err.message) : String(err);
  if (CliError.is(err)) return { line: oneLine(err.message, secrets), exitCode: err.exitCode, debug };
  if (isSdkError(err)) {
    return { line: oneLine(describeSdkError(err, ctx), secrets), exitCode: ExitCode.Failure, debug };
  }
  if (err instanceof Error && typeof (err as NodeJS.ErrnoException).code === 'string') {
    const text = describeSystemError(err);
    if (text !== null) return { line: oneLine(text, secrets), exitCode: ExitCode.Failure, debug };
  }
  const message = err instanceof Error ? err.message : String(err);
  return {
    line: oneLine(`unexpected error: ${message || 'unknown'} (set PARLEY_DEBUG=1 for details)`, secrets),
    exitCode: ExitCode.Failure,
    debug,
  };
}
