/**
 * Child process for the memory benchmark: opens `count` idle connections of
 * one kind from one source address, prints `ready` once all are open, and
 * holds them until SIGTERM. Parley credentials come from a JSON file.
 */
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import WebSocket from 'ws';
import { type Creds, parleySocket, pool, xmppSession } from './clients.js';

const { kind, port, count, first, localAddress, credsFile } = JSON.parse(process.env.IDLE_WORKER ?? '{}') as {
  kind: 'parley' | 'floor' | 'xmpp';
  port: number;
  count: number;
  first: number;
  localAddress: string;
  credsFile?: string;
};
const creds: Creds[] = credsFile ? (JSON.parse(readFileSync(credsFile, 'utf8')) as Creds[]) : [];
const held: Array<WebSocket | Socket> = [];
await pool(
  Array.from({ length: count }, (_, i) => first + i),
  64,
  async (i) => {
    if (kind === 'parley')
      held.push(
        await parleySocket(
          port,
          creds[i] as Creds,
          () => undefined,
          () => undefined,
          localAddress,
        ),
      );
    else if (kind === 'xmpp') held.push((await xmppSession(port, () => undefined, localAddress)).sock);
    else
      held.push(
        await new Promise<WebSocket>((resolve, reject) => {
          const ws = new WebSocket(`ws://127.0.0.1:${port}/?id=${i}`, { perMessageDeflate: false, localAddress });
          ws.once('open', () => resolve(ws));
          ws.once('error', reject);
        }),
      );
  },
);
process.stdout.write('ready\n');
process.once('SIGTERM', () => {
  for (const s of held) {
    if (s instanceof WebSocket) s.terminate();
    else s.destroy();
  }
  process.exit(0);
});
