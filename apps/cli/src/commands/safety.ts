/** `parley safety-number` and `parley verify`. */
import { parseUsernameArg, withClient } from '../context.js';
import { type ErrorContext, ExitCode, usageError } from '../errors.js';
import { formatSafetyNumber } from '../format.js';
import { println } from '../io.js';

export async function runSafetyNumber(
  profileDir: string,
  passphrase: string | null,
  username: string,
  ctx: ErrorContext,
): Promise<number> {
  const peer = parseUsernameArg(username);
  ctx.peer = peer;
  await withClient(profileDir, passphrase, async (client) => {
    ctx.serverUrl = client.identity.serverUrl;
    const number = await client.safetyNumber(peer);
    println(formatSafetyNumber(number));
    if (process.stdout.isTTY) {
      println(`Compare it with ${peer}'s screen (in person or on a call), then run: parley verify ${peer} <number>`);
    }
  });
  return ExitCode.Ok;
}

/** Accepts the number with or without the spaces between groups. */
export function parseSafetyNumberArg(parts: readonly string[]): string {
  const digits = parts.join('').replace(/\s+/g, '');
  if (digits === '') throw usageError('missing safety number');
  if (!/^[0-9]+$/.test(digits)) throw usageError('a safety number contains only digits (spaces between groups are fine)');
  return digits;
}

export async function runVerify(
  profileDir: string,
  passphrase: string | null,
  username: string,
  numberParts: readonly string[],
  ctx: ErrorContext,
): Promise<number> {
  const peer = parseUsernameArg(username);
  const number = parseSafetyNumberArg(numberParts);
  ctx.peer = peer;
  await withClient(profileDir, passphrase, async (client) => {
    ctx.serverUrl = client.identity.serverUrl;
    await client.verify(peer, number);
    println(`${peer} is now verified; you will be warned and sending will stop if their safety number changes`);
  });
  return ExitCode.Ok;
}
