/**
 * The floor: a bare `ws` relay with no authentication and no storage. A client
 * connects to `/?id=N`; every binary frame starts with the 4-byte big-endian
 * id of the client it is for and is forwarded to that client unchanged (or
 * dropped when it is not connected). Prints `{"port":N}` once listening.
 */
import { WebSocketServer, type WebSocket } from 'ws';

const clients = new Map<number, WebSocket>();
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false, maxPayload: 64 * 1024 });
wss.on('connection', (ws, req) => {
  const id = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('id'));
  clients.set(id, ws);
  ws.on('message', (data: Buffer) => {
    if (data.length < 4) return;
    clients.get(data.readUInt32BE(0))?.send(data);
  });
  ws.on('close', () => {
    if (clients.get(id) === ws) clients.delete(id);
  });
});
wss.on('listening', () => {
  const addr = wss.address();
  if (addr && typeof addr === 'object') process.stdout.write(`${JSON.stringify({ port: addr.port })}\n`);
});
process.once('SIGTERM', () => {
  for (const ws of clients.values()) ws.terminate();
  wss.close(() => process.exit(0));
});

// Exit when the benchmark that started this process has gone (no orphans after a kill).
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) process.exit(0);
}, 1000).unref();
