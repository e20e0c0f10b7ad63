/**
 * Offline drain: `count` 1 KiB envelopes queued for one device while it is
 * offline (sent over the relay's own WebSocket send path, 256 in flight), then
 * the device connects and acknowledges each push as it arrives; reports
 * queued and delivered messages per second.
 */
import type WebSocket from 'ws';
import { PAYLOAD, parleySendFrame, parleySocket, registerMany } from './clients.js';
import type { ServerHandle } from './servers.js';

export interface DrainResult {
  server: string;
  messages: number;
  enqueuePerSecond: number;
  drainPerSecond: number;
  drainSeconds: number;
}

export async function measureDrain(server: ServerHandle, count: number): Promise<DrainResult> {
  const [sender, receiver] = await registerMany(server.port, 2, `drain${Date.now().toString(36)}_`);
  if (!sender || !receiver) throw new Error('register failed');
  const content = new Uint8Array(PAYLOAD);
  let sent = 0;
  let answered = 0;
  let failed = 0;
  let ws: WebSocket | null = null;
  const t0 = performance.now();
  await new Promise<void>((resolve, reject) => {
    const pump = () => {
      while (ws && sent < count && sent - answered < 256) {
        sent++;
        ws.send(parleySendFrame(BigInt(sent), receiver, content));
      }
    };
    parleySocket(
      server.port,
      sender,
      () => undefined,
      (status) => {
        answered++;
        if (status !== 200) failed++;
        if (answered === count) resolve();
        else pump();
      },
    )
      .then((s) => {
        ws = s;
        pump();
      })
      .catch(reject);
  });
  const enqueueSeconds = (performance.now() - t0) / 1000;
  (ws as WebSocket | null)?.close();
  if (failed > 0) throw new Error(`${failed} sends failed`);
  let got = 0;
  const t1 = performance.now();
  let rx: WebSocket | null = null;
  await new Promise<void>((resolve, reject) => {
    parleySocket(
      server.port,
      receiver,
      () => {
        if (++got === count) resolve();
      },
      () => undefined,
    )
      .then((s) => (rx = s))
      .catch(reject);
  });
  const drainSeconds = (performance.now() - t1) / 1000;
  (rx as WebSocket | null)?.close();
  const r = {
    server: server.label,
    messages: count,
    enqueuePerSecond: count / enqueueSeconds,
    drainPerSecond: count / drainSeconds,
    drainSeconds,
  };
  console.log(
    `  ${server.label}: ${count} queued at ${r.enqueuePerSecond.toFixed(0)}/s, drained in ${drainSeconds.toFixed(1)} s = ${r.drainPerSecond.toFixed(0)}/s`,
  );
  return r;
}
