/** `parley send`: encrypt and send one message, or one per line of stdin, or a file. */
import { createInterface } from 'node:readline';
import type { Progress } from '@parley/sdk';
import { parseUsernameArg, withClient, withTimeout } from '../context.js';
import { type ErrorContext, ExitCode, usageError } from '../errors.js';
import { formatBytes, isoTime, progressBar, safeText } from '../format.js';
import { eprintln, println } from '../io.js';

export interface SendArgs {
  username: string;
  text: string | undefined;
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

export async function runSend(profileDir: string, passphrase: string | null, args: SendArgs, ctx: ErrorContext): Promise<number> {
  const peer = parseUsernameArg(args.username);
  if (args.stdin && args.text !== undefined) throw usageError('give the message text or --stdin, not both');
  if (args.file !== undefined && args.stdin) throw usageError('give --file or --stdin, not both');
  if (args.file !== undefined && args.file.trim() === '') throw usageError('--file needs a path');
  if (args.file === undefined && !args.stdin && args.text === undefined)
    throw usageError('missing message text (or use --stdin to send each line of input, or --file to send a file)');
  if (args.file === undefined && args.text !== undefined && args.text.trim() === '') throw usageError('the message is empty');
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
    if (args.text !== undefined) {
      await sendOne(args.text);
      return;
    }
    // One message per non-empty line, in order, each sent before the next is read.
    const lines = createInterface({ input: process.stdin, crlfDelay: Infinity, terminal: false });
    for await (const line of lines) {
      if (line.trim() === '') continue;
      await sendOne(line);
    }
  });
  return ExitCode.Ok;
}
