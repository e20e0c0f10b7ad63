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
 * (groups-light.ts): real accounts and keys, real sockets, and a real
 * unseal + certificate check + groupDecrypt of every group message; "all
 * delivered" is when the last of them has decrypted it.
 *
 * Steps: create the group (a signed GroupUpdate to every member over 1:1),
 * the first message (the sender's SKDM to every member over 1:1, then one
 * multi-recipient upload), a second message (the steady state: one upload),
 * removal of one member (a GroupUpdate to everyone, the removed one
 * included), and the first message after it (rekey: new distribution id,
 * SKDM to every remaining member, then the upload).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { type Socket, connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AccountId } from '@parley/wire';
import { ParleyClient } from '@parley/sdk';
import { pool } from './clients.js';
import { LightMember } from './groups-light.js';

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

async function startRelay(): Promise<{ port: number; stop: () => Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'parley-bench-groups-'));
  const child: ChildProcess = spawn(process.execPath, [fileURLToPath(new URL('./groups-relay.js', import.meta.url))], {
    env: { ...process.env, PARLEY_DATA_DIR: dir, PARLEY_STORE: 'sqlite', PARLEY_BUS: 'local' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    let buf = '';
    child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      const line = buf.split('\n').find((l) => l.startsWith('{"port"'));
      if (line) resolve((JSON.parse(line) as { port: number }).port);
    });
    child.once('exit', (code) => reject(new Error(`group bench relay exited with ${code}`)));
  });
  return {
    port,
    async stop() {
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
      rmSync(dir, { recursive: true, force: true });
    },
  };
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

export async function measureGroupSend(members: number, log = console.log): Promise<GroupSendResult> {
  const relay = await startRelay();
  const proxy = await countingProxy(relay.port);
  const dir = mkdtempSync(join(tmpdir(), 'parley-bench-groups-sdk-'));
  const tag = Date.now().toString(36);
  const direct = `http://127.0.0.1:${relay.port}`;
  let sender: ParleyClient | null = null;
  let light: LightMember[] = [];
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
    const root = await LightMember.trustRoot(direct);
    light = await pool(
      Array.from({ length: members - 1 }, (_, i) => i),
      16,
      (i) => LightMember.register(direct, `gm${i}_${tag}`, root),
    );
    await pool(light, 64, (m) => m.connect());
    await pool(light, 16, (m) => m.introduce(s.identity.accountId as AccountId));
    await until(() => introduced === light.length, 120_000, 'introductions');
    const setupSeconds = (performance.now() - t0) / 1000;

    const steps: GroupStep[] = [];
    const measure = async (step: string, recipients: LightMember[], done: (m: LightMember) => boolean, fn: () => Promise<unknown>) => {
      const up = proxy.counts.up;
      const down = proxy.counts.down;
      const start = performance.now();
      await fn();
      const senderMs = performance.now() - start;
      const bytesUp = proxy.counts.up - up;
      const bytesDown = proxy.counts.down - down;
      await until(() => recipients.every(done), 120_000, step);
      const row = { step, recipients: recipients.length, senderMs, bytesUp, bytesDown, allDeliveredMs: performance.now() - start };
      steps.push(row);
      log(
        `  ${step.padEnd(50)} ${String(row.recipients).padStart(5)} recipients  sender ${row.senderMs.toFixed(0).padStart(6)} ms  ` +
          `${(row.bytesUp / 1024).toFixed(0).padStart(7)} KiB up  all handled in ${row.allDeliveredMs.toFixed(0)} ms`,
      );
    };

    let group = '';
    await measure('create group (signed update to every member)', light, (m) => m.groupUpdates >= 1, async () => {
      group = (await s.createGroup('bench', light.map((m) => m.username))).id;
    });
    await measure('first message (SKDM to every member + upload)', light, (m) => m.groupMessages.length >= 1, () =>
      s.sendGroup(group, 'x'.repeat(1024)),
    );
    await measure('one message (steady state: one upload)', light, (m) => m.groupMessages.length >= 2, () =>
      s.sendGroup(group, 'y'.repeat(1024)),
    );
    const removed = light[light.length - 1] as LightMember;
    const remaining = light.slice(0, -1);
    await measure('remove one member (update to everyone)', light, (m) => m.groupUpdates >= 2, () =>
      s.removeGroupMember(group, removed.username),
    );
    const removedBefore = removed.groupMessages.length;
    await measure('message after removal (rekey: new SKDM + upload)', remaining, (m) => m.groupMessages.length >= 3, () =>
      s.sendGroup(group, 'z'.repeat(1024)),
    );
    await measure('next message (steady state again)', remaining, (m) => m.groupMessages.length >= 4, () =>
      s.sendGroup(group, 'w'.repeat(1024)),
    );
    const errors = light.reduce((a, m) => a + m.errors.length, 0);
    if (errors > 0) throw new Error(`light members failed to handle ${errors} envelopes`);
    return { members, setupSeconds, steps, removedMemberGotAfter: removed.groupMessages.length - removedBefore };
  } finally {
    await Promise.all(light.map((m) => m.close()));
    await sender?.close();
    await proxy.close();
    await relay.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

export function groupSendMarkdown(r: GroupSendResult, machine: string): string {
  const kib = (b: number) => (b / 1024).toFixed(1);
  let md = `Group of ${r.members} members on Parley (embedded relay in its own process, sender = ParleyClient, ${r.members - 1} light members decrypting for real); 1 KiB messages; machine: ${machine}. Setup (registration, sockets, first 1:1 messages): ${r.setupSeconds.toFixed(1)} s.\n\n`;
  md += '| step | recipients | sender time ms | sender bytes up KiB | sender bytes down KiB | all recipients handled ms |\n|---|---:|---:|---:|---:|---:|\n';
  for (const s of r.steps)
    md += `| ${s.step} | ${s.recipients} | ${s.senderMs.toFixed(0)} | ${kib(s.bytesUp)} | ${kib(s.bytesDown)} | ${s.allDeliveredMs.toFixed(0)} |\n`;
  md += `\nThe removed member decrypted ${r.removedMemberGotAfter} messages sent after its removal.\n`;
  return md;
}
