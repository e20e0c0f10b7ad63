/**
 * Sealed sends over the relay's anonymous WebSocket: a real relay counts
 * which way each request came (its metrics for socket frames, its request
 * log for HTTP), a proxy that refuses the upgrade forces the HTTP fallback,
 * and a fake relay that drops the socket mid-request checks the retry.
 */
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { join } from 'node:path';
import { type RunningRelay, defaultRelayConfig, startRelay } from '@parley/relay';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { WebSocketServer } from 'ws';
import { ParleyClient } from '../src/index.js';
import { AnonymousTransport } from '../src/transport.js';
import { nextEvent, tempDir } from './helpers.js';

const tmp = tempDir('parley-anon-');
const logFile = join(tmp.dir, 'relay.log');
let relay: RunningRelay;
let proxy: { url: string; close: () => Promise<void> };
let n = 0;

beforeAll(async () => {
  relay = await startRelay(
    defaultRelayConfig({ port: 0, dataDir: join(tmp.dir, 'relay'), logLevel: 'info', logDestination: logFile }),
  );
  proxy = await refusingProxy(relay.url);
});
afterAll(async () => {
  await proxy.close();
  await relay.close();
  tmp.cleanup();
});

async function newClient(name: string, serverUrl = relay.url): Promise<ParleyClient> {
  n++;
  const c = await ParleyClient.register({ profileDir: join(tmp.dir, `p${n}`), serverUrl, username: name, passphrase: null });
  await c.connect();
  return c;
}

/** A value of the relay's Prometheus metrics (0 when absent). */
async function metric(line: string): Promise<number> {
  const text = await (await fetch(`${relay.url}/metrics`)).text();
  const found = text.split('\n').find((l) => l.startsWith(`${line} `));
  return found ? Number(found.slice(line.length + 1)) : 0;
}
const anonymousFrames = () => metric('parley_relay_socket_requests_total{socket="anonymous"}');

/** HTTP requests the relay logged for `route` (socket frames are logged only at debug level). */
function httpRequests(route: string): number {
  return readFileSync(logFile, 'utf8')
    .split('\n')
    .filter((l) => l.includes('"msg":"request"') && l.includes(`"route":"${route}"`)).length;
}

/** Both sides have messaged each other, so each knows the other's access key. */
async function introduce(a: ParleyClient, b: ParleyClient): Promise<void> {
  const got = nextEvent(b, 'message', (m) => m.body === `hi ${b.identity.username}`);
  await a.send(b.identity.username, `hi ${b.identity.username}`);
  await got;
  const back = nextEvent(a, 'message', (m) => m.body === `hello ${a.identity.username}`);
  await b.send(a.identity.username, `hello ${a.identity.username}`);
  await back;
}

describe('sealed sends over the anonymous socket', () => {
  it('1:1 and group sealed sends go over the socket, not HTTP', async () => {
    const alice = await newClient('as_alice');
    const bob = await newClient('as_bob');
    const carol = await newClient('as_carol');
    await introduce(alice, bob);
    await introduce(alice, carol);
    await introduce(bob, carol);

    const single = httpRequests('/v1/messages/:accountId');
    const frames = await anonymousFrames();
    for (const text of ['one', 'two', 'three']) {
      const got = nextEvent(bob, 'message', (m) => m.body === text);
      await alice.send('as_bob', text);
      await got;
    }
    expect(await anonymousFrames()).toBeGreaterThanOrEqual(frames + 3);

    const joined = [bob, carol].map((c) => nextEvent(c, 'groupUpdate'));
    const group = await alice.createGroup('Anon', ['as_bob', 'as_carol']);
    await Promise.all(joined);
    const multi = httpRequests('/v1/messages/multi_recipient');
    const beforeGroup = await anonymousFrames();
    const got = [bob, carol].map((c) => nextEvent(c, 'message', (m) => m.group?.id === group.id && m.body === 'to all'));
    await alice.sendGroup(group.id, 'to all');
    await Promise.all(got);
    expect(await anonymousFrames()).toBeGreaterThan(beforeGroup);

    // No sealed send (message, receipt or group upload) went over HTTP.
    expect(httpRequests('/v1/messages/:accountId')).toBe(single);
    expect(httpRequests('/v1/messages/multi_recipient')).toBe(multi);
    expect(await metric('parley_relay_open_anonymous_sockets')).toBeGreaterThan(0);
    for (const c of [alice, bob, carol]) await c.close();
    await vi.waitFor(async () => expect(await metric('parley_relay_open_anonymous_sockets')).toBe(0));
  });

  it('falls back to HTTP when the anonymous socket is refused, and still delivers', async () => {
    const dave = await newClient('as_dave', proxy.url);
    const erin = await newClient('as_erin');
    await introduce(dave, erin);
    const single = httpRequests('/v1/messages/:accountId');
    const got = nextEvent(erin, 'message', (m) => m.body === 'through the proxy');
    await dave.send('as_erin', 'through the proxy');
    const [m] = await got;
    expect(m).toMatchObject({ from: 'as_dave', body: 'through the proxy' });
    expect(httpRequests('/v1/messages/:accountId')).toBeGreaterThan(single);
    await dave.close();
    await erin.close();
  });
});

describe('AnonymousTransport', () => {
  it('opens on first use and closes after the idle period', async () => {
    const t = new AnonymousTransport(relay.url, { idleMs: 100 });
    const open = await metric('parley_relay_open_anonymous_sockets');
    expect((await t.request('GET', '/v1/certificate/trust-root')).status).toBe(200);
    expect(await metric('parley_relay_open_anonymous_sockets')).toBe(open + 1);
    await vi.waitFor(async () => expect(await metric('parley_relay_open_anonymous_sockets')).toBe(open));
    expect(t.isOpen).toBe(false);
    // The next request opens a new one.
    expect((await t.request('GET', '/v1/certificate/trust-root')).status).toBe(200);
    expect(t.isOpen).toBe(true);
    await t.close();
    expect(t.isOpen).toBe(false);
  });

  it('answers over HTTP when the upgrade is refused, with the same status and body', async () => {
    const frames = await anonymousFrames();
    const t = new AnonymousTransport(proxy.url);
    const res = await t.request('GET', '/v1/accounts/whoami');
    expect(res.status).toBe(401);
    expect(JSON.parse(Buffer.from(res.body).toString())).toMatchObject({ code: 'UNAUTHORIZED' });
    expect(await anonymousFrames()).toBe(frames);
    await t.close();
  });

  it('repeats a request over HTTP when the socket closes before answering', async () => {
    const seen: Array<{ path: string; key: string | undefined }> = [];
    const server = http.createServer((req, res) => {
      seen.push({ path: req.url ?? '', key: req.headers['unidentified-access-key'] as string | undefined });
      req.resume();
      req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"via":"http"}'));
    });
    const wss = new WebSocketServer({ server, path: '/v1/websocket/anonymous' });
    wss.on('connection', (ws) => ws.on('message', () => ws.close(1001)));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as net.AddressInfo;
    const t = new AnonymousTransport(`http://127.0.0.1:${port}`);
    try {
      const res = await t.request(
        'PUT',
        '/v1/messages/someone',
        { binary: new Uint8Array([1, 2]) },
        { 'unidentified-access-key': 'a2V5' },
      );
      expect([res.status, JSON.parse(Buffer.from(res.body).toString())]).toEqual([200, { via: 'http' }]);
      expect(seen).toEqual([{ path: '/v1/messages/someone', key: 'a2V5' }]);
    } finally {
      await t.close();
      wss.close();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

/** An HTTP proxy to `target` that passes the device socket through but refuses the anonymous one with 404. */
async function refusingProxy(target: string): Promise<{ url: string; close: () => Promise<void> }> {
  const to = new URL(target);
  const sockets = new Set<net.Socket>();
  const server = http.createServer((req, res) => {
    const up = http.request(
      { host: to.hostname, port: to.port, method: req.method, path: req.url, headers: req.headers },
      (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    if ((req.url ?? '').startsWith('/v1/websocket/anonymous')) {
      socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
      return;
    }
    const up = net.connect(Number(to.port), to.hostname, () => {
      let lines = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      up.write(`${lines}\r\n`);
      up.write(head);
      socket.pipe(up).pipe(socket);
    });
    for (const s of [socket, up]) {
      sockets.add(s);
      s.on('error', () => s.destroy());
      s.on('close', () => sockets.delete(s));
    }
    up.on('close', () => socket.destroy());
    socket.on('close', () => up.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      for (const s of sockets) s.destroy();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
