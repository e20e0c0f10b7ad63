/**
 * Group messaging on Parley itself: time and bytes for one message to a
 * group of `members` (1,000 in the full run), and for the rekey after a
 * removal, through a real relay process (embedded SQLite, rate limits lifted)
 * over real sockets.
 *
 * The sender is a full ParleyClient using the SDK's createGroup, sendGroup and
 * removeGroupMember; its connection to the relay goes through a counting TCP
 * proxy, so "bytes up" is everything it put on the wire (HTTP, WebSocket
 * frames, TLS-free loopback). The other members are light members
 * (groups-light.ts) in a worker thread, so their work does not share the
 * sender's event loop: real accounts and keys, real sockets, and a real
 * unseal + certificate check + groupDecrypt of every group message; "all
 * delivered" is when the last of them has decrypted it.
 *
 * Steps, as the SDK does them (docs/PROTOCOL.md, "Groups"): create the
 * group with all members but one (the sender's SKDM to every member over
 * 1:1, then the signed state as one Sender Key message in one multi-recipient
 * upload); one message; add the last member (its SKDM over 1:1, the state as
 * one group message); two messages to the full group (one upload each);
 * removal of one member, which is the rekey (new distribution id, a fresh
 * SKDM to every remaining member over 1:1, the signed state as one group
 * message, and a 1:1 copy to the removed member); one message after it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { type Socket, connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { AccountId } from '@parley/wire';
import { ParleyClient } from '@parley/sdk';
import { startParley } from './servers.js';

export interface GroupStep {
  step: string;
  recipients: number;
  senderMs: number;
  bytesUp: number;
  bytesDown: number;
  /** From the call until every recipient handled it (decrypted the message, or got the update). */
  allDeliveredMs: number;
}

export interface GroupSendResult {
  members: number;
  setupSeconds: number;
  steps: GroupStep[];
  /** Group messages the removed member decrypted after its removal (must be 0). */
  removedMemberGotAfter: number;
}

/** A TCP proxy to 127.0.0.1:`target` that counts the bytes in each direction. */
async function countingProxy(target: number) {
  const counts = { up: 0, down: 0 };
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect({ host: '127.0.0.1', port: target });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('data', (d: Buffer) => void (counts.up += d.length));
    upstream.on('data', (d: Buffer) => void (counts.down += d.length));
    client.pipe(upstream);
    upstream.pipe(client);
  });
  const port = await new Promise<number>((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)),
  );
  return {
    port,
    counts,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

function until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (cond()) resolve();
      else if (Date.now() > deadline) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(tick, 5);
    };
    tick();
  });
}

interface Progress {
  kind: 'progress';
  messages: number;
  updates: number;
  excludedMessages: number;
  errors: number;
}
type FromWorker = Progress | { kind: 'ready'; usernames: string[] } | { kind: 'closed' } | { kind: 'error'; message: string };

/** The light members, in a worker thread; `progress` is their latest counts. */
function membersWorker() {
  const worker = new Worker(fileURLToPath(new URL('./groups-members-worker.js', import.meta.url)));
  let progress: Progress = { kind: 'progress', messages: 0, updates: 0, excludedMessages: 0, errors: 0 };
  const waiters: Array<(m: FromWorker) => void> = [];
  let failure: Error | null = null;
  worker.on('message', (m: FromWorker) => {
    if (m.kind === 'progress') progress = m;
    else if (m.kind === 'error') failure = new Error(`light members: ${m.message}`);
    for (const w of waiters.splice(0)) w(m);
  });
  worker.on('error', (err) => (failure = err));
  const reply = <K extends FromWorker['kind']>(kind: K) =>
    new Promise<Extract<FromWorker, { kind: K }>>((resolve, reject) => {
      const wait = (m: FromWorker) => {
        if (m.kind === kind) resolve(m as Extract<FromWorker, { kind: K }>);
        else if (m.kind === 'error') reject(new Error(`light members: ${m.message}`));
        else waiters.push(wait);
      };
      waiters.push(wait);
    });
  return {
    get progress() {
      if (failure) throw failure;
      return progress;
    },
    async setup(url: string, count: number, prefix: string, sender: AccountId): Promise<string[]> {
      const r = reply('ready');
      worker.postMessage({ cmd: 'setup', url, count, prefix, sender });
      return (await r).usernames;
    },
    exclude(index: number) {
      worker.postMessage({ cmd: 'exclude', index });
    },
    async close() {
      const r = reply('closed');
      worker.postMessage({ cmd: 'close' });
      await r;
      await worker.terminate();
    },
  };
}

export async function measureGroupSend(members: number, log = console.log): Promise<GroupSendResult> {
  // The embedded relay in its own process, every rate limit lifted (bench/src/cluster-node.ts).
  const relay = await startParley('sqlite');
  const proxy = await countingProxy(relay.port);
  const dir = mkdtempSync(join(tmpdir(), 'parley-bench-groups-sdk-'));
  const tag = Date.now().toString(36);
  const direct = `http://127.0.0.1:${relay.port}`;
  const light = membersWorker();
  let sender: ParleyClient | null = null;
  // Keeps the event loop referenced while only the worker and sockets are awaited.
  const alive = setInterval(() => undefined, 1000);
  try {
    const t0 = performance.now();
    sender = await ParleyClient.register({
      profileDir: join(dir, 'sender'),
      serverUrl: `http://127.0.0.1:${proxy.port}`,
      username: `gs_${tag}`,
      passphrase: null,
    });
    const s = sender;
    let introduced = 0;
    s.on('message', () => void introduced++);
    await s.connect();
    const usernames = await light.setup(direct, members - 1, `gm${tag}_`, s.identity.accountId as AccountId);
    await until(() => introduced === usernames.length, 120_000, 'introductions');
    const setupSeconds = (performance.now() - t0) / 1000;

    const steps: GroupStep[] = [];
    /** Runs `fn`; done when the members' summed count of `what` has grown by `recipients`. */
    const measure = async (step: string, recipients: number, what: 'messages' | 'updates', fn: () => Promise<unknown>) => {
      const target = light.progress[what] + recipients;
      const up = proxy.counts.up;
      const down = proxy.counts.down;
      const start = performance.now();
      await fn();
      const senderMs = performance.now() - start;
      const bytesUp = proxy.counts.up - up;
      const bytesDown = proxy.counts.down - down;
      await until(() => light.progress[what] >= target, 120_000, step);
      const row = { step, recipients, senderMs, bytesUp, bytesDown, allDeliveredMs: performance.now() - start };
      steps.push(row);
      log(
        `  ${step.padEnd(78)} ${String(row.recipients).padStart(5)} recipients  sender ${row.senderMs.toFixed(0).padStart(6)} ms  ` +
          `${(row.bytesUp / 1024).toFixed(0).padStart(7)} KiB up  all handled in ${row.allDeliveredMs.toFixed(0)} ms`,
      );
    };

    // The group starts with all light members but the last, who joins later; then the one before it is removed.
    const n = usernames.length;
    const joiner = usernames[n - 1] as string;
    const leaver = usernames[n - 2] as string;
    let group = '';
    await measure(`create group of ${members - 1} (SKDMs 1:1, signed state as one group message)`, n - 1, 'updates', async () => {
      group = (await s.createGroup('bench', usernames.slice(0, -1))).id;
    });
    await measure('one message', n - 1, 'messages', () => s.sendGroup(group, 'v'.repeat(1024)));
    await measure(`add one member (SKDM to it 1:1, signed state as one group message)`, n, 'updates', () =>
      s.addGroupMember(group, joiner),
    );
    await measure(`one message to ${members} members (one multi-recipient upload)`, n, 'messages', () =>
      s.sendGroup(group, 'x'.repeat(1024)),
    );
    await measure('another message', n, 'messages', () => s.sendGroup(group, 'y'.repeat(1024)));
    await measure('remove one member (rekey: new SKDMs 1:1, signed state as one group message)', n, 'updates', () =>
      s.removeGroupMember(group, leaver),
    );
    light.exclude(n - 2);
    // The removed member decrypted three messages before its removal; wait until the worker counts it apart.
    await until(() => light.progress.excludedMessages >= 3, 5_000, 'exclusion');
    const removedBefore = light.progress.excludedMessages;
    await measure('one message after the removal', n - 1, 'messages', () => s.sendGroup(group, 'z'.repeat(1024)));
    await new Promise((r) => setTimeout(r, 50));
    const p = light.progress;
    if (p.errors > 0) throw new Error(`light members failed to handle ${p.errors} envelopes`);
    return { members, setupSeconds, steps, removedMemberGotAfter: p.excludedMessages - removedBefore };
  } finally {
    clearInterval(alive);
    await light.close().catch(() => undefined);
    await sender?.close();
    await proxy.close();
    await relay.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

export function groupSendMarkdown(r: GroupSendResult, machine: string): string {
  const kib = (b: number) => (b / 1024).toFixed(1);
  let md = `Group of ${r.members} members on Parley (embedded relay in its own process, sender = ParleyClient, ${r.members - 1} light members decrypting for real); 1 KiB messages; machine: ${machine}. Setup (registration, sockets, first 1:1 messages): ${r.setupSeconds.toFixed(1)} s.\n\n`;
  md +=
    '| step | recipients | sender time ms | sender bytes up KiB | sender bytes down KiB | all recipients handled ms |\n|---|---:|---:|---:|---:|---:|\n';
  for (const s of r.steps)
    md += `| ${s.step} | ${s.recipients} | ${s.senderMs.toFixed(0)} | ${kib(s.bytesUp)} | ${kib(s.bytesDown)} | ${s.allDeliveredMs.toFixed(0)} |\n`;
  md += `\nThe removed member decrypted ${r.removedMemberGotAfter} messages sent after its removal.\n`;
  return md;
}
