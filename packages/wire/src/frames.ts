/**
 * WebSocket frames: request/response pairs with ids, in both directions.
 * Headers are "name:value" strings; names are lowercased on decode.
 */
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { fail, WireError, WireErrorCode } from './errors.js';
import { type RawFrame, decodeFrameFast } from './fast-decode.js';
import { type WebSocketMessage, WebSocketMessageSchema, WebSocketMessage_Type } from './gen/parley/v1/websocket_pb.js';
import { Limits } from './limits.js';

export interface RequestFrame {
  kind: 'request';
  id: bigint;
  verb: string;
  path: string;
  headers: Record<string, string>;
  body: Uint8Array;
}
export interface ResponseFrame {
  kind: 'response';
  id: bigint;
  status: number;
  message: string;
  headers: Record<string, string>;
  body: Uint8Array;
}
export type Frame = RequestFrame | ResponseFrame;

const VERBS = new Set(['GET', 'PUT', 'POST', 'DELETE']);

function parseHeaders(list: string[]): Record<string, string> {
  if (list.length > Limits.maxHeaders) fail('headers', `at most ${Limits.maxHeaders}`);
  const out: Record<string, string> = {};
  for (const h of list) {
    const i = h.indexOf(':');
    if (i <= 0 || h.length > Limits.maxHeaderBytes) fail('headers', 'each must be "name:value"');
    out[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
  }
  return out;
}
const formatHeaders = (h: Record<string, string>) => Object.entries(h).map(([k, v]) => `${k}:${v}`);

export function decodeFrame(bytes: Uint8Array): Frame {
  if (bytes.length > Limits.maxFrameBytes) throw new WireError(WireErrorCode.TooLarge, `frame: at most ${Limits.maxFrameBytes} bytes`);
  // The plain encoding both sides write is read by hand; anything else by the generic decoder (fast-decode.ts).
  let raw: RawFrame | WebSocketMessage | null = decodeFrameFast(bytes);
  if (raw === null) {
    try {
      raw = fromBinary(WebSocketMessageSchema, bytes);
    } catch {
      throw new WireError(WireErrorCode.Malformed, 'frame: not a valid protobuf message');
    }
  }
  const type: number = raw.type;
  if (type === (WebSocketMessage_Type.REQUEST as number) && raw.request) {
    const r = raw.request;
    if (!VERBS.has(r.verb)) fail('frame.verb', 'unknown verb');
    if (!r.path.startsWith('/') || r.path.length > Limits.maxPathBytes) fail('frame.path', 'must be an absolute path');
    return { kind: 'request', id: r.id, verb: r.verb, path: r.path, headers: parseHeaders(r.headers), body: r.body };
  }
  if (type === (WebSocketMessage_Type.RESPONSE as number) && raw.response) {
    const r = raw.response;
    if (r.status < 100 || r.status > 599) fail('frame.status', 'must be an HTTP status');
    return {
      kind: 'response',
      id: r.id,
      status: r.status,
      message: r.message.slice(0, 256),
      headers: parseHeaders(r.headers),
      body: r.body,
    };
  }
  fail('frame.type', 'must be a request or a response');
}

export function encodeRequest(f: Omit<RequestFrame, 'kind'>): Uint8Array {
  return toBinary(
    WebSocketMessageSchema,
    create(WebSocketMessageSchema, {
      type: WebSocketMessage_Type.REQUEST,
      request: { id: f.id, verb: f.verb, path: f.path, headers: formatHeaders(f.headers), body: f.body },
    }),
  );
}

export function encodeResponse(f: Omit<ResponseFrame, 'kind'>): Uint8Array {
  // An ack (no headers, no body, a short ASCII message) is written by hand: a client sends one per received message.
  const ack = encodeAckFast(f);
  if (ack !== null) return ack;
  return toBinary(
    WebSocketMessageSchema,
    create(WebSocketMessageSchema, {
      type: WebSocketMessage_Type.RESPONSE,
      response: { id: f.id, status: f.status, message: f.message, headers: formatHeaders(f.headers), body: f.body },
    }),
  );
}

/** Bytes a protobuf varint of `v` (an integer, 0 <= v <= 2^53) takes; for frames written by hand. */
export function varintLength(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 0x80);
    n++;
  }
  return n;
}

/** Write `v` as a protobuf varint at `out[pos]`; returns the position after it. */
export function putVarint(out: Uint8Array, pos: number, v: number): number {
  while (v >= 0x80) {
    out[pos++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  out[pos++] = v;
  return pos;
}

/**
 * The bytes `toBinary` gives for a response without headers and body whose
 * message is at most 100 ASCII characters and whose id fits a safe integer;
 * null for anything else (the generic encoder writes it). Fields in the
 * generic encoder's order, defaults (id 0, status 0, empty message) left out
 * as proto3 does. test/wire.test.ts compares both on many inputs.
 */
function encodeAckFast(f: Omit<ResponseFrame, 'kind'>): Uint8Array | null {
  if (f.body.length !== 0 || f.message.length > 100 || f.id < 0n || f.id > BigInt(Number.MAX_SAFE_INTEGER)) return null;
  for (const _ in f.headers) return null;
  const msg = f.message;
  for (let i = 0; i < msg.length; i++) if (msg.charCodeAt(i) > 0x7f) return null;
  const id = Number(f.id);
  const status = f.status >>> 0;
  if (status !== f.status) return null;
  const inner =
    (id !== 0 ? 1 + varintLength(id) : 0) + (status !== 0 ? 1 + varintLength(status) : 0) + (msg.length !== 0 ? 2 + msg.length : 0);
  // type = RESPONSE (field 1), then the response (field 3); inner < 128, so its length is one byte.
  const out = new Uint8Array(4 + inner);
  out[0] = 0x08;
  out[1] = WebSocketMessage_Type.RESPONSE;
  out[2] = 0x1a;
  out[3] = inner;
  let pos = 4;
  if (id !== 0) {
    out[pos++] = 0x08;
    pos = putVarint(out, pos, id);
  }
  if (status !== 0) {
    out[pos++] = 0x10;
    pos = putVarint(out, pos, status);
  }
  if (msg.length !== 0) {
    out[pos++] = 0x1a;
    out[pos++] = msg.length;
    for (let i = 0; i < msg.length; i++) out[pos++] = msg.charCodeAt(i);
  }
  return out;
}
