/**
 * The SDK's whole receive pipeline against a real embedded relay: Alice sends
 * `count` 1 KiB text messages to Bob while Bob is offline (one PQXDH session,
 * then Double Ratchet messages); Bob then connects and the clock runs until
 * his client has emitted `message` for all of them, which means each was
 * decrypted by libsignal, committed to his encrypted profile database and
 * acknowledged to the relay. Compared with raw libsignal decrypt. Alice is
 * closed before Bob connects, so only Bob runs in this process meanwhile; Bob
 * still sends a sealed delivery receipt per message, as the SDK always does.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ParleyClient } from '@parley/sdk';
import type { ServerHandle } from './servers.js';

export interface SdkReceiveResult {
  messages: number;
  sendPerSecond: number;
  receivePerSecond: number;
}

export async function measureSdkReceive(server: ServerHandle, count: number): Promise<SdkReceiveResult> {
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
    const text = 'm'.repeat(1024);
    const t0 = performance.now();
    for (let i = 0; i < count; i++) await alice.send(`bob_${tag}`, text);
    const sendPerSecond = count / ((performance.now() - t0) / 1000);
    // Alice goes offline so her handling of Bob's delivery receipts does not share this process's CPU with Bob.
    await alice.close();
    let got = 0;
    const done = new Promise<void>((resolve) => {
      bob.on('message', () => {
        if (++got === count) resolve();
      });
    });
    const t1 = performance.now();
    await bob.connect();
    await done;
    const receivePerSecond = count / ((performance.now() - t1) / 1000);
    console.log(
      `  SDK: ${count} messages sent at ${sendPerSecond.toFixed(0)}/s; received (decrypt + commit + ack) at ${receivePerSecond.toFixed(0)}/s`,
    );
    return { messages: count, sendPerSecond, receivePerSecond };
  } finally {
    await alice.close();
    await bob.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
