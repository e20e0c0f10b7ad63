/**
 * `parley chat <username>`: a line-oriented conversation.
 *
 * Shows the tail of the history, then incoming messages as they arrive, the
 * delivery (✓) and read (✓✓) state of what you send, the peer's typing
 * indicator and a prominent warning if a safety number changes. Messages
 * shown here are read, so read receipts go back to their senders.
 *
 * Works on a terminal (prompt, typing indicator driven by key presses) and
 * with piped stdin (no prompt; each line is a message, EOF or /quit ends the
 * chat after pending sends have finished).
 */
import { clearLine, createInterface, cursorTo, moveCursor } from 'node:readline';
import type { IncomingMessage } from '@parley/sdk';
import { loadSdk, openClient, parseUsernameArg } from '../context.js';
import { describeSdkError, type ErrorContext, ExitCode, oneLine } from '../errors.js';
import { excerpt, formatSafetyNumber, safeText, safeTitle, senderLabel, shortTime } from '../format.js';
import { eprintln, println } from '../io.js';
import { identityWarning } from './receive.js';

const HISTORY_TAIL = 20;
/** Stop announcing our typing after this much silence from the keyboard. */
const TYPING_IDLE_MS = 5_000;
/** Forget the peer's typing indicator if no stop arrives. */
const TYPING_EXPIRY_MS = 15_000;
/** Read receipts are batched for this long. */
const READ_RECEIPT_DELAY_MS = 300;

type SentState = 'sent' | 'delivered' | 'read';
const stateRank: Record<SentState, number> = { sent: 0, delivered: 1, read: 2 };

const HELP = [
  'Commands:',
  '  /quit              leave the chat',
  '  /safety            show your safety number with this contact',
  '  /verify <number>   mark the contact verified after comparing safety numbers',
  '  /help              this list',
  'Start a message with // to send text that begins with /.',
];

/** Terminal output that does not garble the line being typed. */
class Screen {
  private prompt = '> ';
  constructor(
    private readonly rl: ReturnType<typeof createInterface>,
    readonly tty: boolean,
  ) {
    if (tty) rl.setPrompt(this.prompt);
  }

  show(line: string, toStderr = false): void {
    if (!this.tty) {
      if (toStderr) eprintln(line);
      else println(line);
      return;
    }
    clearLine(process.stdout, 0);
    cursorTo(process.stdout, 0);
    process.stdout.write(`${line}\n`);
    this.rl.prompt(true);
  }

  setStatus(status: string | null): void {
    if (!this.tty) return;
    this.prompt = status === null ? '> ' : `(${status}) > `;
    this.rl.setPrompt(this.prompt);
    clearLine(process.stdout, 0);
    cursorTo(process.stdout, 0);
    this.rl.prompt(true);
  }

  /** Removes the echo of the line the user just entered (it is reprinted formatted). */
  eraseEcho(): void {
    if (!this.tty) return;
    moveCursor(process.stdout, 0, -1);
    clearLine(process.stdout, 0);
    cursorTo(process.stdout, 0);
  }
}

function mark(state: SentState): string {
  return state === 'read' ? ' ✓✓' : state === 'delivered' ? ' ✓' : '';
}

function historyState(status: string): SentState {
  const s = status.toLowerCase();
  if (s.includes('read')) return 'read';
  if (s.includes('deliver')) return 'delivered';
  return 'sent';
}

export async function runChat(
  profileDir: string,
  passphrase: string | null,
  username: string,
  ctx: ErrorContext,
): Promise<number> {
  const peer = parseUsernameArg(username);
  ctx.peer = peer;
  const { SdkError } = await loadSdk();
  const client = await openClient(profileDir, passphrase);
  ctx.serverUrl = client.identity.serverUrl;
  const secrets = passphrase === null ? [] : [passphrase];
  const describe = (err: unknown): string => {
    if (SdkError.is(err)) return oneLine(describeSdkError(err, { ...ctx, peer }), secrets);
    return oneLine(err instanceof Error ? err.message : String(err), secrets);
  };

  // The history tail. Fetching it also looks the peer up, so a username that
  // does not exist ends the command here, with one line.
  let history: Awaited<ReturnType<typeof client.history>>;
  try {
    history = await client.history(peer, HISTORY_TAIL);
  } catch (err) {
    await client.close().catch(() => undefined);
    throw err;
  }

  const tty = Boolean(process.stdin.isTTY && process.stdout.isTTY);
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: tty, crlfDelay: Infinity });
  const screen = new Screen(rl, tty);
  const offs: Array<() => void> = [];

  // Input is buffered from the start (piped stdin may be fully read and
  // closed before we are connected) and handled strictly in order once
  // connected; `null` marks the end of input. A /quit waits for earlier sends.
  const input: Array<string | null> = [];
  let onInput: ((line: string | null) => void) | null = null;
  let chain: Promise<void> = Promise.resolve();
  rl.on('line', (line) => {
    screen.eraseEcho();
    if (onInput) onInput(line);
    else input.push(line);
  });
  rl.on('close', () => (onInput ? onInput(null) : input.push(null)));

  // What we sent to the peer, by timestamp, so receipts can be shown.
  const sent = new Map<number, { body: string; state: SentState }>();
  const upgrade = (timestamp: number, to: SentState): void => {
    const entry = sent.get(timestamp);
    if (entry === undefined || stateRank[to] <= stateRank[entry.state]) return;
    entry.state = to;
    screen.show(`${mark(to).trim()} ${to === 'read' ? 'read' : 'delivered'}: "${excerpt(entry.body)}"`);
  };

  // Batched read receipts, per sender.
  const pendingReads = new Map<string, number[]>();
  let readTimer: NodeJS.Timeout | undefined;
  const flushReads = async (): Promise<void> => {
    clearTimeout(readTimer);
    readTimer = undefined;
    const batches = [...pendingReads.entries()];
    pendingReads.clear();
    for (const [who, timestamps] of batches) {
      await client
        .sendReadReceipt(who, timestamps)
        .catch((err: unknown) => screen.show(`parley: could not send read receipts: ${describe(err)}`, true));
    }
  };
  const markRead = (who: string, timestamp: number): void => {
    const list = pendingReads.get(who) ?? [];
    list.push(timestamp);
    pendingReads.set(who, list);
    readTimer ??= setTimeout(() => void flushReads(), READ_RECEIPT_DELAY_MS);
  };

  let peerTypingTimer: NodeJS.Timeout | undefined;
  const peerTyping = (on: boolean): void => {
    clearTimeout(peerTypingTimer);
    peerTypingTimer = undefined;
    if (on) {
      if (!tty) screen.show(`… ${peer} is typing`);
      screen.setStatus(`${peer} is typing…`);
      peerTypingTimer = setTimeout(() => peerTyping(false), TYPING_EXPIRY_MS);
    } else {
      screen.setStatus(null);
    }
  };
  let peerIsTyping = false;

  // History first, oldest to newest.
  const ordered = [...history].sort((a, b) => a.timestamp - b.timestamp);
  if (ordered.length > 0) screen.show(`-- last ${ordered.length} message${ordered.length === 1 ? '' : 's'} with ${peer} --`);
  for (const item of ordered) {
    if (item.direction === 'out') {
      const state = historyState(item.status);
      sent.set(item.timestamp, { body: item.body, state });
      screen.show(`[${shortTime(item.timestamp)}] you: ${safeText(item.body)}${mark(state)}`);
    } else {
      screen.show(`[${shortTime(item.timestamp)}] ${peer}: ${safeText(item.body)}`);
    }
  }

  let finished = false;
  let connected = false;
  let lost = false;
  let resolveDone: (code: number) => void = () => undefined;
  const done = new Promise<number>((resolve) => (resolveDone = resolve));

  offs.push(
    client.on('message', (m: IncomingMessage) => {
      const who = senderLabel(m.from, m.fromAccount);
      // A group message from the peer is not part of this conversation either.
      const direct = m.group === undefined;
      const inChat = direct && m.from === peer;
      const where = m.group === undefined ? '' : `[${safeTitle(m.group.title)}] `;
      if (inChat && peerIsTyping) {
        peerIsTyping = false;
        peerTyping(false);
      }
      screen.show(`[${shortTime(m.timestamp)}] ${where}${who}${inChat ? '' : ' (not in this chat)'}: ${safeText(m.body)}`);
      if (direct && m.from !== null) markRead(m.from, m.timestamp);
    }),
    client.on('receipt', (r) => {
      if (r.from !== peer) return;
      for (const ts of r.timestamps) upgrade(ts, r.type === 'read' ? 'read' : 'delivered');
    }),
    client.on('serverReceipt', (r) => upgrade(r.timestamp, 'delivered')),
    client.on('typing', (t) => {
      if (t.from !== peer || t.started === peerIsTyping) return;
      peerIsTyping = t.started;
      peerTyping(t.started);
    }),
    client.on('identityChanged', (c) => {
      for (const line of identityWarning(c.username ?? `account ${c.accountId}`)) screen.show(line);
      if (c.username === peer)
        screen.show('!!! Use /safety to see the new number and /verify <number> once you have compared it.');
    }),
    client.on('connection', (state) => {
      if (state === 'closed' && connected && !lost && !finished) {
        lost = true;
        screen.show('-- connection to the relay lost; reconnecting… --', true);
      }
      if (state === 'open' && lost) {
        lost = false;
        screen.show('-- reconnected --', true);
      }
      if (state === 'replaced') {
        screen.show('parley: another parley process connected with this profile; leaving the chat', true);
        void finish(ExitCode.Failure);
      }
    }),
    client.on('error', (err) => screen.show(`parley: warning: ${describe(err)}`, true)),
  );

  // Our own typing indicator, from key presses on a terminal.
  let typing = false;
  let typingTimer: NodeJS.Timeout | undefined;
  const stopTyping = (notify: boolean): void => {
    clearTimeout(typingTimer);
    typingTimer = undefined;
    if (typing && notify) void client.sendTyping(peer, false).catch(() => undefined);
    typing = false;
  };
  if (tty) {
    const onKey = (_: unknown, key: { name?: string } | undefined): void => {
      if (finished || key?.name === 'return' || key?.name === 'enter') return;
      // Typing a /command is not typing a message.
      if (rl.line.trimStart().startsWith('/')) return;
      if (!typing) {
        typing = true;
        void client.sendTyping(peer, true).catch(() => undefined);
      }
      clearTimeout(typingTimer);
      typingTimer = setTimeout(() => stopTyping(true), TYPING_IDLE_MS);
    };
    process.stdin.on('keypress', onKey);
    offs.push(() => process.stdin.off('keypress', onKey));
  }

  const send = async (text: string): Promise<void> => {
    stopTyping(false);
    try {
      const { timestamp } = await client.send(peer, text);
      const entry = { body: text, state: 'sent' as SentState };
      sent.set(timestamp, entry);
      screen.show(`[${shortTime(timestamp)}] you: ${safeText(text)}`);
    } catch (err) {
      screen.show(`parley: not sent: ${describe(err)}`, true);
    }
  };

  const command = async (line: string): Promise<void> => {
    const [name, ...rest] = line.split(/\s+/);
    switch (name) {
      case '/quit':
      case '/exit':
        await finish(ExitCode.Ok);
        return;
      case '/help':
        for (const l of HELP) screen.show(l);
        return;
      case '/safety':
        try {
          screen.show(`safety number with ${peer}: ${formatSafetyNumber(await client.safetyNumber(peer))}`);
        } catch (err) {
          screen.show(`parley: ${describe(err)}`, true);
        }
        return;
      case '/verify': {
        const digits = rest.join('');
        if (!/^[0-9]+$/.test(digits)) {
          screen.show('usage: /verify <safety number>', true);
          return;
        }
        try {
          await client.verify(peer, digits);
          screen.show(`${peer} is now verified`);
        } catch (err) {
          screen.show(`parley: ${describe(err)}`, true);
        }
        return;
      }
      default:
        screen.show(`unknown command ${name ?? ''}; /help lists the commands`, true);
    }
  };

  const finish = async (code: number): Promise<void> => {
    if (finished) return;
    finished = true;
    stopTyping(true);
    await flushReads();
    resolveDone(code);
  };

  const handleLine = async (raw: string): Promise<void> => {
    if (finished) return;
    const line = raw.trim();
    if (line === '') return;
    if (line.startsWith('//')) return send(line.slice(1));
    if (line.startsWith('/')) return command(line);
    return send(raw);
  };

  // Ctrl-C on the terminal, SIGINT or SIGTERM: leave like /quit (sends
  // already under way still finish), even if input has already ended.
  const onSignal = (): void => {
    rl.close();
    void finish(ExitCode.Ok);
  };
  rl.on('SIGINT', onSignal);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    await client.connect();
    connected = true;
    const me = client.identity.username;
    screen.show(`Chatting with ${peer} as ${me}. Type a message and press Enter; /help for commands, /quit to leave.`);
    if (tty) rl.prompt();
    onInput = (line) => {
      chain = chain.then(() => (line === null ? finish(ExitCode.Ok) : handleLine(line)));
    };
    for (const line of input.splice(0)) onInput(line);
    const code = await done;
    await chain.catch(() => undefined);
    return code;
  } finally {
    finished = true;
    clearTimeout(readTimer);
    clearTimeout(peerTypingTimer);
    clearTimeout(typingTimer);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    for (const off of offs) off();
    rl.close();
    await client.close().catch(() => undefined);
  }
}
