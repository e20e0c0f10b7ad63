/**
 * `parley receive`: connect, print every queued message as it is decrypted,
 * and exit once the relay has delivered the backlog and --wait seconds have
 * passed since.
 */
import type { GroupAlert, GroupInfo, GroupUpdateEvent, IncomingMessage, ParleyClient, SdkError } from '@parley/sdk';
import { openClient } from '../context.js';
import { CliError, type ErrorContext, ExitCode, describeSdkError } from '../errors.js';
import { formatBytes, groupAlertText, memberLabel, safeText, safeTitle, senderLabel, shortTime } from '../format.js';
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
    ...(m.group !== undefined ? { group: { id: m.group.id, title: m.group.title } } : {}),
  });
}

export function messageLine(m: IncomingMessage, now?: Date): string {
  const files = m.attachments.map((a) => `[file: ${safeText(a.fileName) || 'unnamed'}, ${formatBytes(a.size)}]`);
  const text = [safeText(m.body), ...files].filter((x) => x !== '').join(' ');
  const where = m.group !== undefined ? `[${safeTitle(m.group.title)}] ` : '';
  return `[${shortTime(m.timestamp, now)}] ${where}${senderLabel(m.from, m.fromAccount)}: ${text}`;
}

/**
 * Usernames of accounts seen in groups and messages, so an update can name
 * a removed member (who is no longer in the new member list).
 */
export class KnownNames {
  readonly #names = new Map<string, string>();
  constructor(readonly me: string) {}
  learn(accountId: string, username: string | null): void {
    if (username !== null) this.#names.set(accountId, username);
  }
  learnGroup(g: Pick<GroupInfo, 'members'>): void {
    for (const m of g.members) this.learn(m.accountId, m.username);
  }
  get(accountId: string): string | null {
    return this.#names.get(accountId) ?? null;
  }
  /** `alice`, `you`, or `(account 1234abcd)`. */
  label(accountId: string, username: string | null = null): string {
    if (accountId === this.me) return 'you';
    return memberLabel({ accountId, username: username ?? this.get(accountId) });
  }
}

/** `{"type":"group-alert",...}`: a group change or message the SDK refused. */
export function groupAlertJson(a: GroupAlert): string {
  return JSON.stringify({ type: 'group-alert', group: a.groupId, reason: a.reason, from: a.from, fromAccount: a.fromAccount });
}

/** One line for an alert; `now` is when it arrived (alerts carry no time of their own). */
export function groupAlertLine(a: GroupAlert, title: string | null, now: Date = new Date()): string {
  const where = title !== null ? `[${safeTitle(title)}]` : `[group ${a.groupId.slice(0, 8)}]`;
  return `[${shortTime(now.getTime(), now)}] !!! ${where} ${groupAlertText(a.reason, senderLabel(a.from, a.fromAccount))}`;
}

/**
 * `{"type":"group-update",...}`: an accepted change. `members` is the new
 * list; `added` and `removed` name the accounts that changed (username
 * `null` when not known).
 */
export function groupUpdateJson(u: GroupUpdateEvent, names: KnownNames): string {
  const person = (accountId: string): { accountId: string; username: string | null } => ({
    accountId,
    username: u.group.members.find((m) => m.accountId === accountId)?.username ?? names.get(accountId),
  });
  return JSON.stringify({
    type: 'group-update',
    group: u.group.id,
    title: u.group.title,
    revision: u.group.revision,
    by: u.by,
    byAccount: u.byAccount,
    added: u.added.map(person),
    removed: u.removed.map(person),
    active: u.group.active,
    admin: u.group.admin,
    members: u.group.members.map((m) => ({ username: m.username, accountId: m.accountId, admin: m.admin })),
  });
}

export function groupUpdateLine(u: GroupUpdateEvent, names: KnownNames, now: Date = new Date()): string {
  const head = `[${shortTime(now.getTime(), now)}] [${safeTitle(u.group.title)}]`;
  const by = names.label(u.byAccount, u.by);
  const list = (ids: string[]): string =>
    ids.map((id) => names.label(id, u.group.members.find((m) => m.accountId === id)?.username ?? null)).join(', ');
  const me = names.me;
  if (u.removed.length === 1 && u.removed[0] === u.byAccount && u.added.length === 0)
    return `${head} ${by} left the group${u.byAccount === me ? '' : ` (${u.group.members.length} members)`}`;
  if (u.added.includes(me)) {
    const others = list(u.group.members.map((m) => m.accountId).filter((id) => id !== me)) || 'only you';
    // Our own change arriving from another of our devices (a sync copy).
    if (u.byAccount === me) return `${head} you created the group on another device (members: ${others})`;
    return `${head} ${by} added you to the group (members: ${others})`;
  }
  if (u.removed.includes(me)) return `${head} ${by} removed you from the group; you can read its history but no longer send to it`;
  const parts = [u.added.length > 0 ? `added ${list(u.added)}` : '', u.removed.length > 0 ? `removed ${list(u.removed)}` : ''].filter(
    (p) => p !== '',
  );
  return `${head} ${by} ${parts.length > 0 ? parts.join(' and ') : 'updated the group'} (${u.group.members.length} members)`;
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
  const names = new KnownNames(client.identity.accountId);
  names.learn(client.identity.accountId, client.identity.username);
  const titles = new Map<string, string>();
  for (const g of client.listGroups()) {
    names.learnGroup(g);
    titles.set(g.id, g.title);
  }
  return [
    client.on('message', (m) => {
      names.learn(m.fromAccount, m.from);
      println(json ? messageJson(m) : messageLine(m));
      for (const a of m.attachments) downloads.add(m.id, a.index, a.fileName);
    }),
    client.on('receipt', (r) => {
      if (out) out({ type: 'receipt', kind: r.type, from: r.from, fromAccount: r.fromAccount, timestamps: r.timestamps });
      else {
        const n = r.timestamps.length;
        const verb = r.type === 'read' ? 'read' : 'received';
        println(
          `[${shortTime(Date.now())}] ${senderLabel(r.from, r.fromAccount)} ${verb} ${n === 1 ? 'your message' : `${n} of your messages`}`,
        );
      }
    }),
    // Sync transcripts: what this account sent from its other devices.
    client.on('sent', (m) => {
      const group = m.group !== undefined ? { id: m.group.id, title: m.group.title } : undefined;
      if (out) out({ type: 'sent', to: m.to, timestamp: m.timestamp, body: m.body, ...(group !== undefined ? { group } : {}) });
      else {
        const to = group !== undefined ? `[${safeTitle(group.title)}]` : safeText(m.to);
        println(`[${shortTime(m.timestamp)}] you → ${to}: ${safeText(m.body)}`);
      }
    }),
    client.on('groupUpdate', (u) => {
      // Names are only ever added, so a removed member (absent from the new
      // list) is still named from an earlier state or message.
      names.learnGroup(u.group);
      println(json ? groupUpdateJson(u, names) : groupUpdateLine(u, names));
      titles.set(u.group.id, u.group.title);
    }),
    client.on('groupAlert', (a) => {
      println(json ? groupAlertJson(a) : groupAlertLine(a, titles.get(a.groupId) ?? null));
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
