/** `parley send`: encrypt and send one message, or one per line of stdin. */
import { createInterface } from 'node:readline';
import { parseUsernameArg, withClient, withTimeout } from '../context.js';
import { type ErrorContext, ExitCode, usageError } from '../errors.js';
import { isoTime } from '../format.js';
import { println } from '../io.js';

export interface SendArgs {
  username: string;
  text: string | undefined;
  stdin: boolean;
  timeoutSeconds: number;
}

export async function runSend(profileDir: string, passphrase: string | null, args: SendArgs, ctx: ErrorContext): Promise<number> {
  const peer = parseUsernameArg(args.username);
  if (args.stdin && args.text !== undefined) throw usageError('give the message text or --stdin, not both');
  if (!args.stdin && args.text === undefined)
    throw usageError('missing message text (or use --stdin to send each line of input)');
  if (args.text !== undefined && args.text.trim() === '') throw usageError('the message is empty');
  ctx.peer = peer;

  await withClient(profileDir, passphrase, async (client) => {
    ctx.serverUrl = client.identity.serverUrl;
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
