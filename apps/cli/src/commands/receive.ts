/**
 * `parley receive`: connect, print every queued message as it is decrypted,
 * and exit once the relay has delivered the backlog and --wait seconds have
 * passed since.
 */
import type { IncomingMessage, ParleyClient, SdkError } from '@parley/sdk';
import { openClient } from '../context.js';
import { CliError, type ErrorContext, ExitCode, describeSdkError } from '../errors.js';
import { formatBytes, safeText, senderLabel, shortTime } from '../format.js';
import { eprintln, println } from '../io.js';

export interface ReceiveArgs {
  waitSeconds: number;
  json: boolean;
  timeoutSeconds: number;
}

/** The JSON line for one message; `from/fromDevice/timestamp/body` are stable fields. */
export function messageJson(m: IncomingMessage): string {
  return JSON.stringify({
    type: 'message',
    id: m.id,
    from: m.from,
    fromAccount: m.fromAccount,
    fromDevice: m.fromDevice,
    timestamp: m.timestamp,
    serverTimestamp: m.serverTimestamp,
    body: m.body,
    ...(m.attachments.length > 0 ? { attachments: m.attachments } : {}),
  });
}

export function messageLine(m: IncomingMessage, now?: Date): string {
  const files = m.attachments.map((a) => `[file: ${safeText(a.fileName) || 'unnamed'}, ${formatBytes(a.size)}]`);
  const text = [safeText(m.body), ...files].filter((x) => x !== '').join(' ');
  return `[${shortTime(m.timestamp, now)}] ${senderLabel(m.from, m.fromAccount)}: ${text}`;
}

/**
 * Saves attachments one at a time into the profile's downloads folder and
 * prints where each went; `idle()` resolves once every queued one is done.
 */
class Downloads {
  #chain: Promise<void> = Promise.resolve();
  constructor(
    private readonly client: ParleyClient,
    private readonly json: boolean,
    private readonly ctx: ErrorContext,
  ) {}

  add(messageId: string, index: number, fileName: string): void {
    this.#chain = this.#chain.then(async () => {
      try {
        const a = await this.client.downloadAttachment(messageId, index);
        if (this.json)
          println(
            JSON.stringify({ type: 'attachment', messageId, index, fileName: a.fileName, contentType: a.contentType, size: a.size, path: a.path }),
          );
        else println(`    saved ${safeText(a.fileName) || 'attachment'} (${formatBytes(a.size)}) to ${safeText(a.path)}`);
      } catch (err) {
        const e = err as Partial<SdkError>;
        const why = typeof e.code === 'string' ? describeSdkError(e as SdkError, this.ctx) : 'unexpected error';
        if (this.json) println(JSON.stringify({ type: 'attachmentError', messageId, index, code: e.code ?? 'INTERNAL', error: why }));
        eprintln(`parley: warning: could not save attachment ${safeText(fileName) || index}: ${why}`);
      }
    });
  }

  async idle(): Promise<void> {
    let seen: Promise<void> | null = null;
    while (seen !== this.#chain) {
      seen = this.#chain;
      await seen;
    }
  }
}

export function identityWarning(who: string): string[] {
  return [
    `!!! WARNING: the safety number with ${who} has changed.`,
    `!!! ${who} may have reinstalled Parley, or someone may be intercepting your messages.`,
    `!!! Compare 'parley safety-number ${who}' with them before trusting new messages.`,
  ];
}

function subscribe(client: ParleyClient, json: boolean, downloads: Downloads): Array<() => void> {
  const out = json ? (o: object) => println(JSON.stringify(o)) : null;
  return [
    client.on('message', (m) => {
      println(json ? messageJson(m) : messageLine(m));
      for (const a of m.attachments) downloads.add(m.id, a.index, a.fileName);
    }),
    client.on('receipt', (r) => {
      if (out) out({ type: 'receipt', kind: r.type, from: r.from, fromAccount: r.fromAccount, timestamps: r.timestamps });
      else {
        const n = r.timestamps.length;
        const verb = r.type === 'read' ? 'read' : 'received';
        println(
          `[${shortTime(Date.now())}] ${senderLabel(r.from, r.fromAccount)} ${verb} ${n} of your message${n === 1 ? '' : 's'}`,
        );
      }
    }),
    // Sync transcripts: what this account sent from its other devices.
    client.on('sent', (m) => {
      if (out) out({ type: 'sent', to: m.to, timestamp: m.timestamp, body: m.body });
      else println(`[${shortTime(m.timestamp)}] you → ${safeText(m.to)}: ${safeText(m.body)}`);
    }),
    client.on('serverReceipt', (r) => out?.({ type: 'serverReceipt', fromAccount: r.fromAccount, timestamp: r.timestamp })),
    client.on('typing', (t) => out?.({ type: 'typing', from: t.from, fromAccount: t.fromAccount, started: t.started })),
    client.on('identityChanged', (c) => {
      if (out) out({ type: 'identityChanged', username: c.username, accountId: c.accountId });
      else for (const line of identityWarning(c.username ?? `account ${c.accountId}`)) println(line);
    }),
    client.on('error', (err) => eprintln(`parley: warning: ${err.message}`)),
  ];
}

export async function runReceive(
  profileDir: string,
  passphrase: string | null,
  args: ReceiveArgs,
  ctx: ErrorContext,
): Promise<number> {
  const client = await openClient(profileDir, passphrase);
  ctx.serverUrl = client.identity.serverUrl;
  const downloads = new Downloads(client, args.json, ctx);
  const unsubscribe = subscribe(client, args.json, downloads);
  // Attachments an earlier run could not save (interrupted, relay unreachable) are tried again.
  for (const p of client.pendingAttachments()) downloads.add(p.messageId, p.index, p.fileName);
  const timers: NodeJS.Timeout[] = [];
  const signals: Array<[NodeJS.Signals, () => void]> = [];
  try {
    return await new Promise<number>((resolve, reject) => {
      let drained = false;
      const finish = (code: number): void => resolve(code);
      const finishAfterDownloads = (code: number): void => void downloads.idle().then(() => resolve(code));

      timers.push(
        setTimeout(
          () =>
            reject(
              new CliError(
                `timed out after ${args.timeoutSeconds} s waiting for the relay at ${client.identity.serverUrl} to deliver queued messages`,
              ),
            ),
          args.timeoutSeconds * 1000,
        ),
      );
      unsubscribe.push(
        client.on('queueEmpty', () => {
          if (drained) return;
          drained = true;
          for (const t of timers.splice(0)) clearTimeout(t);
          timers.push(setTimeout(() => finishAfterDownloads(ExitCode.Ok), args.waitSeconds * 1000));
        }),
        client.on('connection', (state) => {
          if (state === 'replaced') {
            reject(new CliError('another parley process connected with this profile, so this one stopped receiving'));
          }
        }),
      );
      for (const sig of ['SIGINT', 'SIGTERM'] as const) {
        const handler = (): void => finish(sig === 'SIGINT' ? ExitCode.Interrupted : ExitCode.Ok);
        process.once(sig, handler);
        signals.push([sig, handler]);
      }
      client.connect().catch(reject);
    });
  } finally {
    for (const t of timers) clearTimeout(t);
    for (const [sig, handler] of signals) process.off(sig, handler);
    for (const off of unsubscribe) off();
    await client.close().catch(() => undefined);
  }
}
