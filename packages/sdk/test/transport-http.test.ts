import { spawn } from 'node:child_process';
import { once } from 'node:events';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { defaultRelayConfig, startRelay, type RunningRelay } from '@parley/relay';
import { SdkError } from '../src/index.js';
import { HttpTransport, expectOk, replyJson } from '../src/transport.js';
import { tempDir } from './helpers.js';

/** A small HTTP server over a real socket whose handler a test sets; counts TCP connections. */
let server: http.Server;
let base = '';
let connections = 0;
let closedConnections = 0;
let handler: http.RequestListener = (_req, res) => res.end();
const tmp = tempDir('parley-transport-http-');
let relay: RunningRelay;

beforeAll(async () => {
  server = http.createServer((req, res) => handler(req, res));
  server.keepAliveTimeout = 0; // the server never drops an idle connection by itself
  server.on('connection', (s) => {
    connections++;
    s.on('close', () => closedConnections++);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  relay = await startRelay(defaultRelayConfig({ port: 0, dataDir: join(tmp.dir, 'relay'), logLevel: 'silent' }));
});
afterEach(() => {
  server.closeAllConnections();
});
afterAll(async () => {
  server.close();
  await relay.close();
  tmp.cleanup();
});

function readBody(req: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

const unreachable = (why: RegExp) => (e: unknown) => SdkError.is(e, 'RELAY_UNREACHABLE') && why.test((e as Error).message);

describe('HTTP transport (node:http, keep-alive)', () => {
  it('sends binary bodies and headers and returns status, lower-cased headers and the exact bytes', async () => {
    handler = (req, res) => {
      void readBody(req).then((body) => {
        res.setHeader('X-Echo-Method', req.method ?? '');
        res.setHeader('X-Echo-Type', req.headers['content-type'] ?? '');
        res.setHeader('X-Echo-Length', req.headers['content-length'] ?? 'none');
        res.setHeader('X-Echo-Key', String(req.headers['unidentified-access-key']));
        res.setHeader('X-Echo-Auth', req.headers.authorization ?? 'none');
        res.writeHead(202, { 'content-type': 'application/octet-stream' });
        res.end(Buffer.concat([body, Buffer.from([0, 255])]));
      });
    };
    const t = new HttpTransport(base, { accountId: 'acc', deviceId: 2, password: 'pw' });
    try {
      const payload = new Uint8Array([0, 1, 2, 250, 255, 0]);
      const r = await t.request('PUT', '/v1/x', { binary: payload }, { 'unidentified-access-key': 'a2V5' });
      expect(r.status).toBe(202);
      expect(Array.from(r.body)).toEqual([0, 1, 2, 250, 255, 0, 0, 255]);
      expect(r.headers['x-echo-method']).toBe('PUT');
      expect(r.headers['x-echo-type']).toBe('application/x-protobuf');
      expect(r.headers['x-echo-length']).toBe('6');
      expect(r.headers['x-echo-key']).toBe('a2V5');
      expect(r.headers['x-echo-auth']).toBe('Basic ' + Buffer.from('acc.2:pw').toString('base64'));
      // JSON bodies and an empty POST
      const j = await t.request('POST', '/v1/y', { json: { a: 1 } });
      expect(j.headers['x-echo-type']).toBe('application/json');
      expect(Buffer.from(j.body.subarray(0, j.body.length - 2)).toString()).toBe('{"a":1}');
      const empty = await t.request('POST', '/v1/z');
      expect(empty.headers['x-echo-length']).toBe('0');
      expect(empty.body.length).toBe(2);
    } finally {
      t.close();
    }
  });

  it('reuses one connection for sequential requests and close() drops it', async () => {
    handler = (_req, res) => res.end('ok');
    const before = connections;
    const closedBefore = closedConnections;
    const t = new HttpTransport(base, null);
    for (let i = 0; i < 5; i++) expect(Buffer.from((await t.request('GET', '/k')).body).toString()).toBe('ok');
    expect(connections - before).toBe(1);
    t.close();
    while (closedConnections === closedBefore) await new Promise((r) => setTimeout(r, 10));
    expect(closedConnections - closedBefore).toBe(1);
    // A closed transport still answers (without a pool).
    expect((await t.request('GET', '/k')).status).toBe(200);
  });

  it('maps 429 with Retry-After to RATE_LIMITED and other failures to RELAY_ERROR', async () => {
    handler = (req, res) => {
      if (req.url === '/slow') {
        res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '7' });
        res.end(JSON.stringify({ code: 'RATE_LIMITED', message: 'too many requests' }));
      } else {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end('not json');
      }
    };
    const t = new HttpTransport(base, null);
    try {
      const limited = await t.request('GET', '/slow');
      expect(() => expectOk(limited)).toThrow(expect.objectContaining({ code: 'RATE_LIMITED', retryAfter: 7, status: 429 }));
      const broken = await t.request('GET', '/broken');
      expect(() => expectOk(broken)).toThrow(expect.objectContaining({ code: 'RELAY_ERROR', status: 500 }));
    } finally {
      t.close();
    }
  });

  it('times out with RELAY_UNREACHABLE before the answer and during its body', async () => {
    handler = (req, res) => {
      if (req.url === '/half') {
        res.writeHead(200, { 'content-length': '100' });
        res.write('only part');
      } // '/never': no answer at all
    };
    const t = new HttpTransport(base, null, 300);
    try {
      await expect(t.request('GET', '/never')).rejects.toSatisfy(unreachable(/cannot reach/));
      await expect(t.request('GET', '/half')).rejects.toSatisfy(unreachable(/mid-answer/));
    } finally {
      t.close();
    }
  });

  it('reports a connection cut mid-answer, a refused connection and a bad header value as RELAY_UNREACHABLE', async () => {
    handler = (_req, res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('part', () => res.destroy());
    };
    const t = new HttpTransport(base, null);
    try {
      await expect(t.request('GET', '/cut')).rejects.toSatisfy(unreachable(/mid-answer/));
      await expect(t.request('GET', '/h', undefined, { 'x-bad': 'a\nb' })).rejects.toSatisfy(unreachable(/cannot reach/));
    } finally {
      t.close();
    }
    const gone = new HttpTransport('http://127.0.0.1:1', null);
    await expect(gone.request('GET', '/v1/keepalive')).rejects.toSatisfy(unreachable(/cannot reach/));
    gone.close();
  });

  it('talks to the real relay', async () => {
    const t = new HttpTransport(relay.url, null);
    try {
      const root = replyJson(expectOk(await t.request('GET', '/v1/certificate/trust-root')));
      expect(typeof root).toBe('object');
      const missing = await t.request('GET', '/v1/no-such-route');
      expect(() => expectOk(missing)).toThrow(SdkError);
    } finally {
      t.close();
    }
  });

  it('an idle pooled connection does not keep a process alive', async () => {
    handler = (_req, res) => res.end('ok');
    const mod = new URL('../dist/transport.js', import.meta.url).href;
    const script = `const { HttpTransport } = await import(${JSON.stringify(mod)});
const t = new HttpTransport(${JSON.stringify(base)}, null);
const r = await t.request('GET', '/k');
console.log(r.status);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(code).toBe(0);
    expect(out.trim()).toBe('200');
  });
});
