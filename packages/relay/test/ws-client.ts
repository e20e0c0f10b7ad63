/** A minimal WebSocket client for tests: frames in a queue, request/response helpers. */
import { type Frame, type RequestFrame, type ResponseFrame, decodeFrame, encodeRequest, encodeResponse } from '@parley/wire';
import WebSocket from 'ws';

export class TestSocket {
  readonly #frames: Frame[] = [];
  readonly #waiters: { pred: (f: Frame) => boolean; resolve: (f: Frame) => void }[] = [];
  #nextId = 1000n;
  readonly closed: Promise<{ code: number; reason: string }>;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => {
      const frame = decodeFrame(new Uint8Array(data));
      const i = this.#waiters.findIndex((w) => w.pred(frame));
      if (i >= 0) this.#waiters.splice(i, 1)[0]?.resolve(frame);
      else this.#frames.push(frame);
    });
    this.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  }

  /** Connect; rejects with the HTTP status when the upgrade is refused. */
  static connect(baseUrl: string, authorization: string): Promise<TestSocket> {
    return TestSocket.#open(baseUrl, '/v1/websocket', { authorization });
  }

  /** Open the anonymous (sealed-sender) socket, without credentials unless `headers` adds some. */
  static connectAnonymous(baseUrl: string, headers: Record<string, string> = {}): Promise<TestSocket> {
    return TestSocket.#open(baseUrl, '/v1/websocket/anonymous', headers);
  }

  /** Try an upgrade that should be refused; its status, headers and JSON body. */
  static refusal(baseUrl: string, path: string, headers: Record<string, string> = {}) {
    const ws = new WebSocket(`${baseUrl.replace(/^http/, 'ws')}${path}`, { headers });
    return new Promise<{ status: number; headers: Record<string, unknown>; json: unknown }>((resolve, reject) => {
      ws.once('open', () => reject(new Error('upgrade accepted')));
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, json: JSON.parse(Buffer.concat(chunks).toString()) }),
        );
      });
    });
  }

  static #open(baseUrl: string, path: string, headers: Record<string, string>): Promise<TestSocket> {
    const ws = new WebSocket(`${baseUrl.replace(/^http/, 'ws')}${path}`, { headers });
    const sock = new TestSocket(ws);
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(sock));
      ws.once('unexpected-response', (_req, res) => reject(new Error(`status ${res.statusCode}`)));
      ws.once('error', reject);
    });
  }

  /** The next frame (in arrival order) that matches `pred`. */
  next(pred: (f: Frame) => boolean = () => true): Promise<Frame> {
    const i = this.#frames.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.#frames.splice(i, 1)[0] as Frame);
    return new Promise((resolve) => this.#waiters.push({ pred, resolve }));
  }

  /** The next relay request to `path`. */
  async nextRequest(path: string): Promise<RequestFrame> {
    return (await this.next((f) => f.kind === 'request' && f.path === path)) as RequestFrame;
  }

  /** Frames received and not yet taken. */
  pending(): Frame[] {
    return [...this.#frames];
  }

  async request(verb: string, path: string, body: Uint8Array = new Uint8Array(0), headers: Record<string, string> = {}): Promise<ResponseFrame> {
    const id = this.#nextId++;
    this.ws.send(encodeRequest({ id, verb, path, headers, body }));
    return (await this.next((f) => f.kind === 'response' && f.id === id)) as ResponseFrame;
  }

  respond(id: bigint, status = 200): void {
    this.ws.send(encodeResponse({ id, status, message: 'OK', headers: {}, body: new Uint8Array(0) }));
  }

  sendRaw(data: Uint8Array | string, binary = true): void {
    this.ws.send(data, { binary });
  }

  close(): Promise<{ code: number; reason: string }> {
    this.ws.close();
    return this.closed;
  }
}

export const jsonOf = (body: Uint8Array): unknown => JSON.parse(new TextDecoder().decode(body));
