/** `parley send`: encrypt and send one message, or one per line of stdin, or a file. */
import { createInterface } from 'node:readline';
import type { Progress } from '@parley/sdk';
import { parseUsernameArg, withClient, withTimeout } from '../context.js';
import { parseGroupRef } from './group.js';
import { type ErrorContext, ExitCode, usageError } from '../errors.js';
import { formatBytes, isoTime, progressBar, safeText, safeTitle } from '../format.js';
import { eprintln, println } from '../io.js';

export interface SendArgs {
  /** The recipient; absent with `group`. */
  username: string | undefined;
  text: string | undefined;
  /** `--group`: a group id, id prefix or title instead of a username. */
  group?: string;
  stdin: boolean;
  timeoutSeconds: number;
  /** Path of a file to attach. */
  file?: string;
}

/** Draws a progress bar on stderr when it is a terminal; otherwise stays quiet. */
function progressReporter(label: string): { update: (p: Progress) => void; done: () => void } {
  const tty = process.stderr.isTTY === true;
  let last = 0;
  let drawn = false;
  return {
    update: (p) => {
      if (!tty) return;
      const now = Date.now();
      if (now - last < 100 && p.done < p.total) return;
      last = now;
      drawn = true;
      process.stderr.write(`\r${progressBar(label, p.done, p.total, process.stderr.columns ?? 80)}`);
    },
    done: () => {
      if (drawn) process.stderr.write('\n');
    },
  };
}

/**
 * With `--group` the only positional argument is the text, which commander
 * has put where the username goes; this moves it back and checks the rest.
 */
export function resolveSendTarget(args: SendArgs): { kind: 'user'; username: string; text: string | undefined } | { kind: 'group'; group: string; text: string | undefined } {
  if (args.group === undefined) {
    if (args.username === undefined) throw usageError("missing required argument 'username' (or --group <group>)");
    return { kind: 'user', username: parseUsernameArg(args.username), text: args.text };
  }
  if (args.username !== undefined && args.text !== undefined)
    throw usageError('with --group, give only the message text (the group replaces the username)');
  if (args.file !== undefined) throw usageError('--file cannot be sent to a group yet; send it to each member');
  return { kind: 'group', group: parseGroupRef(args.group), text: args.username ?? args.text };
}

export async function runSend(profileDir: string, passphrase: string | null, rawArgs: SendArgs, ctx: ErrorContext): Promise<number> {
  const target = resolveSendTarget(rawArgs);
  const args = { ...rawArgs, text: target.text };
  if (args.stdin && args.text !== undefined) throw usageError('give the message text or --stdin, not both');
  if (args.file !== undefined && args.stdin) throw usageError('give --file or --stdin, not both');
  if (args.file !== undefined && args.file.trim() === '') throw usageError('--file needs a path');
  if (args.file === undefined && !args.stdin && args.text === undefined)
    throw usageError('missing message text (or use --stdin to send each line of input, or --file to send a file)');
  if (args.file === undefined && args.text !== undefined && args.text.trim() === '') throw usageError('the message is empty');
  if (target.kind === 'group') return sendToGroup(profileDir, passphrase, target.group, args, ctx);
  const peer = target.username;
  ctx.peer = peer;

  await withClient(profileDir, passphrase, async (client) => {
    ctx.serverUrl = client.identity.serverUrl;
    if (args.file !== undefined) {
      const bar = progressReporter('uploading');
      try {
        const { timestamp, attachment } = await client.sendFile(peer, {
          path: args.file,
          ...(args.text !== undefined ? { text: args.text } : {}),
          onProgress: bar.update,
          onResume: (offset, total) => eprintln(`resuming upload at byte ${offset} of ${total}`),
        });
        bar.done();
        println(`sent ${safeText(attachment.fileName)} (${formatBytes(attachment.size)}) to ${peer} at ${isoTime(timestamp)}`);
      } catch (err) {
        bar.done();
        throw err;
      }
      return;
    }
    const sendOne = async (text: string): Promise<void> => {
      const { timestamp } = await withTimeout(
        client.send(peer, text),
        args.timeoutSeconds * 1000,
        `timed out after ${args.timeoutSeconds} s sending to ${peer}; the message may not have been delivered`,
      );
      println(`sent to ${peer} at ${isoTime(timestamp)}`);
    };
    await eachMessage(args.text, sendOne);
  });
  return ExitCode.Ok;
}

/** `parley send --group <group> <text>` (or `--stdin`): one upload per message for every member device. */
async function sendToGroup(
  profileDir: string,
  passphrase: string | null,
  ref: string,
  args: { text: string | undefined; stdin: boolean; timeoutSeconds: number },
  ctx: ErrorContext,
): Promise<number> {
  ctx.group = safeTitle(ref);
  await withClient(profileDir, passphrase, async (client) => {
    ctx.serverUrl = client.identity.serverUrl;
    // Resolved once, locally: every line of --stdin goes to the same group,
    // and the reply names it.
    const g = client.groupInfo(ref);
    ctx.group = safeTitle(g.title);
    const label = `the group '${safeTitle(g.title)}'`;
    const sendOne = async (text: string): Promise<void> => {
      const { timestamp } = await withTimeout(
        client.sendGroup(g.id, text),
        args.timeoutSeconds * 1000,
        `timed out after ${args.timeoutSeconds} s sending to ${label}; the message may not have reached every member`,
      );
      println(`sent to ${label} at ${isoTime(timestamp)}`);
    };
    await eachMessage(args.text, sendOne);
  });
  return ExitCode.Ok;
}

/** `text` as one message, or without it one message per non-empty line of stdin, in order, each sent before the next is read. */
async function eachMessage(text: string | undefined, send: (text: string) => Promise<void>): Promise<void> {
  if (text !== undefined) return send(text);
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity, terminal: false });
  for await (const line of lines) {
    if (line.trim() === '') continue;
    await send(line);
  }
}
