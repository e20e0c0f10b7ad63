/**
 * Load-generator clients for each server, behind one interface: connect N
 * clients, send a 1 KiB payload from client i to client j, and get a callback
 * with the send timestamp when it is delivered.
 *
 * - Parley: the wire protocol directly (accounts registered over HTTP with
 *   one real key bundle generated once and reused, authenticated WebSockets,
 *   `PUT /v1/messages/:id` protobuf frames with an opaque 1 KiB envelope,
 *   every pushed envelope acknowledged). The relay never decrypts, so this
 *   measures the relay rather than libsignal. Two mixes: `identified` sends
 *   type-1 envelopes over the sender's authenticated socket (the relay
 *   answers each delivery with a receipt back to the sender); `sealed` is
 *   what the SDK sends between contacts: type-6 envelopes over a second,
 *   anonymous socket per client with the recipient's access key (a random
 *   16-byte key each account published) and no receipt.
 * - floor: `[u32 destination][1 KiB]` binary frames.
 * - XMPP: TCP, stream header, SASL ANONYMOUS, resource bind, then
 *   `<message type='chat'>` stanzas with a 1 KiB body to the peer's full JID.
 */
import { randomBytes } from 'node:crypto';
import { type Socket, connect } from 'node:net';
import { IdentityKeyPair, KEMKeyPair, PrivateKey } from '@signalapp/libsignal-client';
import {
  ACCESS_KEY_HEADER,
  type AccountId,
  type DeviceId,
  EnvelopeType,
  decodeFrame,
  encodeAccessKeyHeader,
  encodeAccessKeyRequest,
  encodeRegisterRequest,
  encodeRequest,
  encodeResponse,
  encodeSendRequestBinary,
  processEnvelope,
} from '@parley/wire';
import WebSocket from 'ws';
import { FIRST_FAST_ID, MessageIds, SendTemplate } from './fast-frames.js';
import type { ServerHandle } from './servers.js';

export const PAYLOAD = 1024;

/** How Parley clients send in the load bench (see the top of this file). */
export type ParleyMix = 'identified' | 'sealed';

export interface Fleet {
  size: number;
  /** Send one 1 KiB message stamped with `performance.now()` from client `from` to client `to`. */
  send(from: number, to: number): void;
  /** Called with the sender's stamp for every delivered message. */
  onDeliver: (sentAt: number) => void;
  /** Server answers that were not success (Parley send responses). */
  errors: number;
  close(): Promise<void>;
}

/** Run `fn` over `items` with at most `limit` in flight. */
export async function pool<T, R>(items: T[], limit: number, fn: (t: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i] as T, i);
      }
    }),
  );
  return out;
}

export interface Creds {
  accountId: AccountId;
  registrationId: number;
  auth: string;
}

let bundle: {
  identityKey: Uint8Array<ArrayBuffer>;
  spk: Uint8Array<ArrayBuffer>;
  spkSig: Uint8Array<ArrayBuffer>;
  kyber: Uint8Array<ArrayBuffer>;
  kyberSig: Uint8Array<ArrayBuffer>;
} | null = null;

/** Register `n` accounts over HTTP; one real key bundle is generated once and reused (the relay only checks signatures). */
export async function registerMany(port: number, n: number, prefix: string): Promise<Creds[]> {
  if (!bundle) {
    const identity = IdentityKeyPair.generate();
    const spk = PrivateKey.generate().getPublicKey().serialize();
    const kyber = KEMKeyPair.generate().getPublicKey().serialize();
    bundle = {
      identityKey: identity.publicKey.serialize(),
      spk,
      spkSig: identity.privateKey.sign(spk),
      kyber,
      kyberSig: identity.privateKey.sign(kyber),
    };
  }
  const b = bundle;
  return pool(
    Array.from({ length: n }, (_, i) => i),
    32,
    async (i) => {
      const password = randomBytes(32).toString('base64url');
      const registrationId = 1 + (i % 16000);
      const res = await fetch(`http://127.0.0.1:${port}/v1/accounts`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(
          encodeRegisterRequest({
            username: `${prefix}${i}`,
            password,
            registrationId,
            identityKey: b.identityKey,
            signedPreKey: { keyId: 1, publicKey: b.spk, signature: b.spkSig },
            kyberLastResortKey: { keyId: 1, publicKey: b.kyber, signature: b.kyberSig },
            inviteCode: null,
          }),
        ),
      });
      if (res.status !== 200) throw new Error(`register: ${res.status} ${await res.text()}`);
      const { accountId } = (await res.json()) as { accountId: AccountId };
      return { accountId, registrationId, auth: `Basic ${Buffer.from(`${accountId}.1:${password}`).toString('base64')}` };
    },
  );
}

/**
 * Publish a random access key for each account (`PUT /v1/accounts/access-key`;
 * the relay only compares keys, so they need not come from a profile key).
 * Resolves with each key as the `unidentified-access-key` header value.
 */
export function publishAccessKeys(port: number, creds: Creds[]): Promise<string[]> {
  return pool(creds, 32, async (c) => {
    const accessKey = new Uint8Array(randomBytes(16));
    const res = await fetch(`http://127.0.0.1:${port}/v1/accounts/access-key`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json', authorization: c.auth },
      body: JSON.stringify(encodeAccessKeyRequest({ accessKey })),
    });
    if (res.status !== 204) throw new Error(`access key: ${res.status} ${await res.text()}`);
    return encodeAccessKeyHeader(accessKey);
  });
}

const NO_BODY = new Uint8Array(0);
/** Answer a pushed request with 200 (the ack; wire writes it without the generic encoder). */
export const okAck = (ws: WebSocket, id: bigint) => ws.send(encodeResponse({ id, status: 200, message: 'OK', headers: {}, body: NO_BODY }));

/**
 * One Parley socket that acknowledges every push: a device's authenticated
 * socket, or with `c` null the anonymous one (no credentials, for sealed sends).
 */
export function parleySocket(
  port: number,
  c: Creds | null,
  onEnvelope: (content: Uint8Array) => void,
  onStatus: (status: number) => void,
  localAddress?: string,
): Promise<WebSocket> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/websocket${c ? '' : '/anonymous'}`, {
    headers: c ? { authorization: c.auth } : {},
    perMessageDeflate: false,
    ...(localAddress ? { localAddress } : {}),
  });
  ws.on('message', (data: Buffer) => {
    const f = decodeFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    if (f.kind === 'request') {
      if (f.path === '/api/v1/message') onEnvelope(processEnvelope(f.body).content);
      okAck(ws, f.id);
    } else onStatus(f.status);
  });
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

/**
 * The frame for one Parley send of `content` to `to`, device 1: an envelope of
 * type 1, or with `accessKey` (the recipient's, as its header value) a sealed
 * send of a type-6 envelope, which goes over the anonymous socket.
 */
export function parleySendFrame(
  id: bigint,
  to: Creds,
  content: Uint8Array,
  accessKey?: string,
  fixed?: { timestamp: number; messageId: Uint8Array },
): Uint8Array {
  const body = encodeSendRequestBinary({
    messages: [
      {
        type: accessKey ? EnvelopeType.UnidentifiedSender : EnvelopeType.Ciphertext,
        destinationDevice: 1 as DeviceId,
        destinationRegistrationId: to.registrationId,
        content,
      },
    ],
    timestamp: fixed?.timestamp ?? Date.now(),
    urgent: true,
    messageId: fixed?.messageId ?? new Uint8Array(randomBytes(16)),
  });
  return encodeRequest({
    id,
    verb: 'PUT',
    path: `/v1/messages/${to.accountId}`,
    headers: {
      'content-type': 'application/x-protobuf',
      ...(accessKey ? { [ACCESS_KEY_HEADER]: accessKey } : {}),
    },
    body,
  });
}

async function parleyFleet(server: ServerHandle, n: number, mix: ParleyMix): Promise<Fleet> {
  const creds = await registerMany(server.port, n, `load${Date.now().toString(36)}_`);
  const accessKeys = mix === 'sealed' ? await publishAccessKeys(server.port, creds) : null;
  const fleet: Fleet = { size: n, send: () => undefined, onDeliver: () => undefined, errors: 0, close: async () => undefined };
  const onStatus = (status: number) => {
    if (status !== 200) fleet.errors++;
  };
  const open = (c: Creds | null) =>
    parleySocket(
      server.port,
      c,
      (content) => {
        if (content.byteLength >= 8) fleet.onDeliver(Buffer.from(content.buffer, content.byteOffset, 8).readDoubleLE(0));
      },
      onStatus,
    );
  const sockets = await pool(creds, 64, open);
  // Sealed: each client sends over its own anonymous socket and receives on its device socket.
  // Sends are patched from templates instead of encoded each time (fast-frames.ts checks they are the same bytes).
  const senders = accessKeys ? await pool(creds, 64, () => open(null)) : sockets;
  const templates = creds.map(
    (to, i) =>
      new SendTemplate(
        (id, timestamp, messageId, content) => parleySendFrame(id, to, content, accessKeys?.[i], { timestamp, messageId }),
        PAYLOAD,
      ),
  );
  const ids = new MessageIds();
  let nextId = FIRST_FAST_ID;
  fleet.send = (from, to) => {
    (senders[from] as WebSocket).send((templates[to] as SendTemplate).frame(nextId++, performance.now(), ids));
  };
  fleet.close = async () => {
    for (const ws of senders === sockets ? sockets : [...sockets, ...senders]) ws.terminate();
  };
  return fleet;
}

async function floorFleet(server: ServerHandle, n: number): Promise<Fleet> {
  const fleet: Fleet = { size: n, send: () => undefined, onDeliver: () => undefined, errors: 0, close: async () => undefined };
  const four = server.floorFrames === 4;
  const sockets = await pool(
    Array.from({ length: n }, (_, i) => i),
    64,
    (i) =>
      new Promise<WebSocket>((resolve, reject) => {
        const ws = new WebSocket(`ws://127.0.0.1:${server.port}/?id=${i}`, { perMessageDeflate: false });
        ws.on('message', (d: Buffer) => {
          if (!four) {
            if (d.length >= 12) fleet.onDeliver(d.readDoubleLE(4));
          } else if (d.length >= 12) {
            // A push [u32 push id][payload]: deliver, then acknowledge it.
            fleet.onDeliver(d.readDoubleLE(4));
            ws.send(d.subarray(0, 4));
          }
          // Four frames: a 4-byte frame answers one of our sends.
        });
        ws.once('open', () => resolve(ws));
        ws.once('error', reject);
      }),
  );
  let nextId = 0;
  fleet.send = (from, to) => {
    const head = four ? 8 : 4;
    const frame = Buffer.alloc(head + PAYLOAD);
    frame.writeUInt32BE(to, 0);
    if (four) frame.writeUInt32BE((nextId = (nextId + 1) >>> 0), 4);
    frame.writeDoubleLE(performance.now(), head);
    (sockets[from] as WebSocket).send(frame);
  };
  fleet.close = async () => {
    for (const ws of sockets) ws.terminate();
  };
  return fleet;
}

const STREAM_OPEN =
  "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

/** A minimal XMPP client session: anonymous login and bind; resolves with the socket and the bound full JID. */
export function xmppSession(
  port: number,
  onMessage: (body: string) => void,
  localAddress?: string,
): Promise<{ sock: Socket; jid: string }> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: '127.0.0.1', port, ...(localAddress ? { localAddress } : {}) });
    sock.setNoDelay(true);
    sock.setEncoding('utf8');
    let buf = '';
    let phase: 'auth' | 'bind' | 'ready' = 'auth';
    sock.once('error', reject);
    sock.on('connect', () => sock.write(STREAM_OPEN));
    sock.on('data', (chunk: string) => {
      buf += chunk;
      if (phase === 'auth') {
        if (buf.includes('<success')) {
          phase = 'bind';
          buf = '';
          sock.write(STREAM_OPEN);
        } else if (buf.includes('<failure')) reject(new Error(`xmpp auth failed: ${buf}`));
        else if (buf.includes('</stream:features>')) {
          buf = '';
          sock.write("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='ANONYMOUS'/>");
        }
        return;
      }
      if (phase === 'bind') {
        if (buf.includes('</stream:features>') && !buf.includes("id='b1'")) {
          buf = '';
          sock.write("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>");
          return;
        }
        const m = /<jid>([^<]+)<\/jid>/.exec(buf);
        if (m?.[1]) {
          phase = 'ready';
          buf = '';
          sock.removeListener('error', reject);
          resolve({ sock, jid: m[1] });
        }
        return;
      }
      // Ready: pull out complete <message> stanzas, drop anything else.
      let end: number;
      while ((end = buf.indexOf('</message>')) >= 0) {
        const start = buf.indexOf('<body>');
        if (start >= 0 && start < end) onMessage(buf.slice(start + 6, buf.indexOf('</body>', start)));
        buf = buf.slice(end + 10);
      }
      if (!buf.includes('<message')) buf = buf.slice(-16);
    });
  });
}

async function xmppFleet(server: ServerHandle, n: number): Promise<Fleet> {
  const fleet: Fleet = { size: n, send: () => undefined, onDeliver: () => undefined, errors: 0, close: async () => undefined };
  const sessions = await pool(
    Array.from({ length: n }, (_, i) => i),
    64,
    () => xmppSession(server.port, (body) => fleet.onDeliver(Number(body.slice(0, body.indexOf('|'))))),
  );
  const pad = 'x'.repeat(PAYLOAD);
  fleet.send = (from, to) => {
    const stamp = `${performance.now().toFixed(3)}|`;
    const s = sessions[from] as { sock: Socket };
    s.sock.write(
      `<message to='${(sessions[to] as { jid: string }).jid}' type='chat'><body>${stamp}${pad.slice(stamp.length)}</body></message>`,
    );
  };
  fleet.close = async () => {
    for (const s of sessions) s.sock.destroy();
  };
  return fleet;
}

/** Connect `n` clients; `mix` picks how Parley clients send (ignored for the other servers). */
export function openFleet(server: ServerHandle, n: number, mix: ParleyMix = 'identified'): Promise<Fleet> {
  if (server.kind === 'parley') return parleyFleet(server, n, mix);
  if (server.kind === 'floor') return floorFleet(server, n);
  return xmppFleet(server, n);
}
