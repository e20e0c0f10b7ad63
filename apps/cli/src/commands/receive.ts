/**
 * `parley receive`: connect, print every queued message as it is decrypted,
 * and exit once the relay has delivered the backlog and --wait seconds have
 * passed since.
 */
import type { IncomingMessage, ParleyClient } from '@parley/sdk';
import { openClient } from '../context.js';
import { CliError, type ErrorContext, ExitCode } from '../errors.js';
import { safeText, senderLabel, shortTime } from '../format.js';
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
  });
}

export function messageLine(m: IncomingMessage, now?: Date): string {
  return `[${shortTime(m.timestamp, now)}] ${senderLabel(m.from, m.fromAccount)}: ${safeText(m.body)}`;
}

export function identityWarning(who: string): string[] {
  return [
    `!!! WARNING: the safety number with ${who} has changed.`,
    `!!! ${who} may have reinstalled Parley, or someone may be intercepting your messages.`,
    `!!! Compare 'parley safety-number ${who}' with them before trusting new messages.`,
  ];
}

function subscribe(client: ParleyClient, json: boolean): Array<() => void> {
  const out = json ? (o: object) => println(JSON.stringify(o)) : null;
  return [
    client.on('message', (m) => println(json ? messageJson(m) : messageLine(m))),
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
  const unsubscribe = subscribe(client, args.json);
  const timers: NodeJS.Timeout[] = [];
  const signals: Array<[NodeJS.Signals, () => void]> = [];
  try {
    return await new Promise<number>((resolve, reject) => {
      let drained = false;
      const finish = (code: number): void => resolve(code);

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
          timers.push(setTimeout(() => finish(ExitCode.Ok), args.waitSeconds * 1000));
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
