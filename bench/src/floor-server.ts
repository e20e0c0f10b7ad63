/**
 * The floor: a bare `ws` relay with no authentication and no storage. A client
 * connects to `/?id=N`. Prints `{"port":N}` once listening.
 *
 * Two frame patterns, chosen by the first argument:
 * - `2` (the floor of issue #8): every binary frame starts with the 4-byte
 *   big-endian id of the client it is for and is forwarded to that client
 *   unchanged (or dropped when it is not connected). Two frames a message.
 * - `4`: Parley's pattern without Parley's work. A send `[u32 to][u32 request
 *   id][payload]` is pushed to `to` as `[u32 push id][payload]` and answered
 *   with `[u32 request id]`; the receiver acknowledges with `[u32 push id]`,
 *   which removes the push from its socket's unacknowledged set. Four frames a
 *   message, as a sealed send to the relay (request, answer, push, ack), so
 *   this is the least any server could spend on that pattern here.
 */
import { WebSocketServer, type WebSocket } from 'ws';

const frames = process.argv[2] === '4' ? 4 : 2;
const clients = new Map<number, WebSocket>();
const unacked = new WeakMap<WebSocket, Set<number>>();
let nextPush = 0;
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false, maxPayload: 64 * 1024 });
wss.on('connection', (ws, req) => {
  const id = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('id'));
  clients.set(id, ws);
  const mine = new Set<number>();
  unacked.set(ws, mine);
  ws.on('message', (data: Buffer) => {
    if (frames === 2) {
      if (data.length >= 4) clients.get(data.readUInt32BE(0))?.send(data);
      return;
    }
    if (data.length === 4) {
      mine.delete(data.readUInt32BE(0));
      return;
    }
    if (data.length < 8) return;
    const to = clients.get(data.readUInt32BE(0));
    if (to) {
      const push = (nextPush = (nextPush + 1) >>> 0);
      unacked.get(to)?.add(push);
      // The push reuses the request's bytes, its request id overwritten by the push id.
      const out = data.subarray(4);
      const requestId = out.readUInt32BE(0);
      out.writeUInt32BE(push, 0);
      to.send(out);
      const answer = Buffer.allocUnsafe(4);
      answer.writeUInt32BE(requestId, 0);
      ws.send(answer);
    }
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
