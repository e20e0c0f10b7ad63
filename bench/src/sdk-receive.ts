/**
 * The SDK's whole receive pipeline against a real embedded relay: Alice sends
 * `count` 1 KiB text messages to Bob while Bob is offline; Bob then connects
 * and the clock runs until his client has emitted `message` for all of them,
 * which means each was decrypted by libsignal, committed to his encrypted
 * profile database (in group commits) and acknowledged to the relay. Alice
 * is closed before Bob connects, so only Bob runs in this process meanwhile;
 * Bob still answers with sealed delivery receipts (many timestamps each), as
 * the SDK always does.
 *
 * Which envelopes Bob receives decides which raw libsignal figure is the fair
 * ceiling (bench/src/libsignal.ts measures each):
 * - `prekey` (the default, and what earlier runs measured): Bob has never
 *   written to Alice, so she does not have his profile key (no sealed sender)
 *   and her session is unacknowledged: every envelope is an identified
 *   PreKeySignalMessage on an established session.
 * - `sealed`: Bob writes to Alice first, so she seals every message with his
 *   access key and sends ratchet messages: every envelope is sealed sender v1
 *   around a SignalMessage (open + certificate check + ratchet decrypt).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ParleyClient } from '@parley/sdk';
import type { ServerHandle } from './servers.js';

export type SdkReceiveKind = 'prekey' | 'sealed';

export const SDK_RECEIVE_ENVELOPES: Record<SdkReceiveKind, string> = {
  prekey: 'identified pre-key messages, session established',
  sealed: 'sealed sender around ratchet messages',
};

export interface SdkReceiveResult {
  messages: number;
  kind: SdkReceiveKind;
  envelopes: string;
  sendPerSecond: number;
  receivePerSecond: number;
  /** CPU time of this process (user + system) per received message while receiving. */
  receiveCpuMicrosPerMessage: number;
}

export async function measureSdkReceive(
  server: ServerHandle,
  count: number,
  kind: SdkReceiveKind = 'prekey',
): Promise<SdkReceiveResult> {
  const dir = mkdtempSync(join(tmpdir(), 'parley-bench-sdk-'));
  const serverUrl = `http://127.0.0.1:${server.port}`;
  const tag = Date.now().toString(36);
  const alice = await ParleyClient.register({
    profileDir: join(dir, 'a'),
    serverUrl,
    username: `alice_${tag}`,
    passphrase: null,
  });
  const bob = await ParleyClient.register({ profileDir: join(dir, 'b'), serverUrl, username: `bob_${tag}`, passphrase: null });
  try {
    await alice.connect();
    if (kind === 'sealed') {
      // Bob's message gives Alice his profile key (so she can seal) and acknowledges her session (ratchet messages).
      await bob.connect();
      const hi = new Promise<void>((resolve) => alice.on('message', () => resolve()));
      await bob.send(`alice_${tag}`, 'hi');
      await hi;
      await bob.close();
    }
    const text = 'm'.repeat(1024);
    const t0 = performance.now();
    for (let i = 0; i < count; i++) await alice.send(`bob_${tag}`, text);
    const sendPerSecond = count / ((performance.now() - t0) / 1000);
    // Alice goes offline so her handling of Bob's delivery receipts does not share this process's CPU with Bob.
    await alice.close();
    const receiver = kind === 'sealed' ? await ParleyClient.open({ profileDir: join(dir, 'b'), passphrase: null }) : bob;
    try {
      let got = 0;
      const done = new Promise<void>((resolve) => {
        receiver.on('message', () => {
          if (++got === count) resolve();
        });
      });
      const t1 = performance.now();
      const c1 = process.cpuUsage();
      await receiver.connect();
      await done;
      const cpu = process.cpuUsage(c1);
      const receivePerSecond = count / ((performance.now() - t1) / 1000);
      const receiveCpuMicrosPerMessage = (cpu.user + cpu.system) / count;
      console.log(
        `  SDK (${SDK_RECEIVE_ENVELOPES[kind]}): ${count} messages sent at ${sendPerSecond.toFixed(0)}/s; received (decrypt + commit + ack) at ${receivePerSecond.toFixed(0)}/s, ${receiveCpuMicrosPerMessage.toFixed(0)} µs CPU each`,
      );
      return {
        messages: count,
        kind,
        envelopes: SDK_RECEIVE_ENVELOPES[kind],
        sendPerSecond,
        receivePerSecond,
        receiveCpuMicrosPerMessage,
      };
    } finally {
      if (receiver !== bob) await receiver.close();
    }
  } finally {
    await alice.close();
    await bob.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
