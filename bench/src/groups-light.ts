/**
 * Light group members: real Parley accounts with real libsignal keys whose
 * state lives in memory instead of an encrypted profile, so a thousand of them
 * fit in one process. Each one registers on the relay over HTTP (identity,
 * signed and Kyber last-resort keys), publishes its unidentified-access key,
 * tells one peer its profile key in an ordinary 1:1 message (so that peer can
 * reach it with multi-recipient sealed sender), and receives over its own
 * authenticated WebSocket:
 *
 * - sealed envelopes: `sealedSenderDecryptToUsmc`, the sender certificate is
 *   validated against the relay's trust root, then `groupDecrypt` (Sender Key
 *   messages) or the 1:1 session decrypt; the certificate's identity key must
 *   equal the identity the session holds for that sender;
 * - identified 1:1 envelopes: session decrypt;
 * - a SenderKeyDistributionMessage is processed; group updates are counted
 *   and otherwise ignored (a light member does not keep group state).
 *
 * Envelopes are handled one at a time per member and acknowledged after
 * handling. Used by the group benchmark and by
 * packages/sdk/test/groups-1000.test.ts.
 */
import { randomBytes } from 'node:crypto';
import * as S from '@signalapp/libsignal-client';
import { ProfileKey } from '@signalapp/libsignal-client/dist/zkgroup/index.js';
import {
  type AccountId,
  EnvelopeType,
  decodeFrame,
  encodeAccessKeyRequest,
  encodeContent,
  encodeRegisterRequest,
  encodeResponse,
  encodeSendRequestJson,
  padPlaintext,
  processContent,
  processEnvelope,
  processPreKeyBundleResponse,
  unpadPlaintext,
} from '@parley/wire';
import WebSocket from 'ws';
import { MemoryMember } from './groups-member.js';

export interface LightGroupMessage {
  from: string;
  groupId: string;
  timestamp: number;
  body: string;
}

const ab = (u: Uint8Array): Uint8Array<ArrayBuffer> => new Uint8Array(u);

export class LightMember {
  readonly groupMessages: LightGroupMessage[] = [];
  /** Failures while handling an envelope (libsignal or validation), by a short code; never content. */
  readonly errors: string[] = [];
  groupUpdates = 0;
  skdms = 0;
  /** Envelopes pushed by the relay, all kinds. */
  envelopes = 0;
  onGroupMessage: (m: LightGroupMessage) => void = () => undefined;
  #ws: WebSocket | null = null;
  #chain: Promise<void> = Promise.resolve();
  #drained: Promise<void> = Promise.resolve();

  private constructor(
    readonly baseUrl: string,
    readonly username: string,
    readonly accountId: AccountId,
    readonly auth: string,
    readonly member: MemoryMember,
    readonly profileKey: Uint8Array,
    readonly trustRoot: S.PublicKey,
  ) {}

  /** Register a new account on the relay at `baseUrl` (e.g. http://127.0.0.1:PORT) and publish its access key. */
  static async register(baseUrl: string, username: string, trustRoot: S.PublicKey): Promise<LightMember> {
    const member = new MemoryMember(S.ProtocolAddress.new('00000000-0000-4000-8000-000000000000', 1));
    const bundle = member.bundle();
    const password = randomBytes(32).toString('base64url');
    const res = await fetch(`${baseUrl}/v1/accounts`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(
        encodeRegisterRequest({
          username,
          password,
          registrationId: member.registrationId,
          identityKey: member.identity.publicKey.serialize(),
          signedPreKey: {
            keyId: 1,
            publicKey: bundle.signedPreKeyPublic().serialize(),
            signature: bundle.signedPreKeySignature(),
          },
          kyberLastResortKey: {
            keyId: 1,
            publicKey: bundle.kyberPreKeyPublic().serialize(),
            signature: bundle.kyberPreKeySignature(),
          },
          inviteCode: null,
        }),
      ),
    });
    if (res.status !== 200) throw new Error(`register: HTTP ${res.status}`);
    const { accountId } = (await res.json()) as { accountId: AccountId };
    member.address = S.ProtocolAddress.new(accountId, 1);
    const auth = `Basic ${Buffer.from(`${accountId}.1:${password}`).toString('base64')}`;
    const profileKey = new Uint8Array(randomBytes(32));
    const accessKey = new Uint8Array(new ProfileKey(ab(profileKey)).deriveAccessKey());
    const put = await fetch(`${baseUrl}/v1/accounts/access-key`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json', authorization: auth },
      body: JSON.stringify(encodeAccessKeyRequest({ accessKey })),
    });
    if (put.status !== 200 && put.status !== 204) throw new Error(`access key: HTTP ${put.status}`);
    return new LightMember(baseUrl, username, accountId, auth, member, profileKey, trustRoot);
  }

  /** The relay's sealed-sender trust root, fetched over HTTP (pinned by the caller for every member). */
  static async trustRoot(baseUrl: string): Promise<S.PublicKey> {
    const res = await fetch(`${baseUrl}/v1/certificate/trust-root`);
    const { trustRoot } = (await res.json()) as { trustRoot: string };
    return S.PublicKey.deserialize(ab(Buffer.from(trustRoot, 'base64')));
  }

  /**
   * Send `peer` one identified 1:1 data message carrying this member's profile
   * key, opening a session from the peer's bundle (device 1 only).
   */
  async introduce(peer: AccountId): Promise<void> {
    const res = await fetch(`${this.baseUrl}/v1/keys/${peer}/1`, { headers: { authorization: this.auth } });
    if (res.status !== 200) throw new Error(`bundle: HTTP ${res.status}`);
    const b = processPreKeyBundleResponse(await res.json());
    const d = b.devices[0];
    if (!d) throw new Error('bundle: no device');
    const bundle = S.PreKeyBundle.new(
      d.registrationId,
      d.deviceId,
      d.preKey?.keyId ?? null,
      d.preKey ? S.PublicKey.deserialize(ab(d.preKey.publicKey)) : null,
      d.signedPreKey.keyId,
      S.PublicKey.deserialize(ab(d.signedPreKey.publicKey)),
      ab(d.signedPreKey.signature),
      S.PublicKey.deserialize(ab(b.identityKey)),
      d.kyberPreKey.keyId,
      S.KEMPublicKey.deserialize(ab(d.kyberPreKey.publicKey)),
      ab(d.kyberPreKey.signature),
    );
    const to = S.ProtocolAddress.new(peer, d.deviceId);
    await S.processPreKeyBundle(bundle, to, this.member.address, this.member.session, this.member.identityStore);
    const timestamp = Date.now();
    const content = padPlaintext(
      encodeContent({ kind: 'data', message: { body: 'hello', timestamp, profileKey: this.profileKey } }, this.username),
    );
    const ct = await S.signalEncrypt(ab(content), to, this.member.address, this.member.session, this.member.identityStore);
    const send = await fetch(`${this.baseUrl}/v1/messages/${peer}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json', authorization: this.auth },
      body: JSON.stringify(
        encodeSendRequestJson({
          messages: [
            {
              type:
                ct.type() === (S.CiphertextMessageType.PreKey as number) ? EnvelopeType.PreKeyMessage : EnvelopeType.Ciphertext,
              destinationDevice: d.deviceId,
              destinationRegistrationId: d.registrationId,
              content: ct.serialize(),
            },
          ],
          timestamp,
          urgent: true,
          messageId: new Uint8Array(randomBytes(16)),
        }),
      ),
    });
    if (send.status !== 200) throw new Error(`introduce: HTTP ${send.status}`);
  }

  /** Open the device socket; resolves once it is open. Pushed envelopes are handled in order, then acknowledged. */
  connect(): Promise<void> {
    const ws = new WebSocket(`${this.baseUrl.replace(/^http/, 'ws')}/v1/websocket`, {
      headers: { authorization: this.auth },
      perMessageDeflate: false,
    });
    this.#ws = ws;
    let empty: () => void = () => undefined;
    this.#drained = new Promise((resolve) => (empty = resolve));
    ws.on('message', (data: Buffer) => {
      const f = decodeFrame(new Uint8Array(data));
      if (f.kind !== 'request') return;
      const ack = () => ws.send(encodeResponse({ id: f.id, status: 200, message: 'OK', headers: {}, body: new Uint8Array(0) }));
      if (f.path !== '/api/v1/message') {
        if (f.path === '/api/v1/queue/empty') empty();
        ack();
        return;
      }
      this.envelopes++;
      this.#chain = this.#chain.then(async () => {
        try {
          await this.#handle(f.body);
        } catch (err) {
          this.errors.push(err instanceof S.LibSignalErrorBase ? `libsignal:${err.code}` : ((err as Error).name ?? 'Error'));
        }
        if (ws.readyState === WebSocket.OPEN) ack();
      });
    });
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
  }

  /** Resolves when the relay reports that the backlog present at the last connect has been pushed. */
  drained(): Promise<void> {
    return this.#drained;
  }

  /** Wait until every envelope pushed so far is handled and acknowledged. */
  idle(): Promise<void> {
    return this.#chain;
  }

  async close(): Promise<void> {
    const ws = this.#ws;
    this.#ws = null;
    if (!ws || ws.readyState === WebSocket.CLOSED) return;
    await this.#chain;
    await new Promise<void>((resolve) => {
      ws.once('close', () => resolve());
      ws.close();
    });
  }

  async #handle(body: Uint8Array): Promise<void> {
    const env = processEnvelope(body);
    const m = this.member;
    if (env.type === EnvelopeType.UnidentifiedSender) {
      const usmc = await S.sealedSenderDecryptToUsmc(ab(env.content), m.identityStore);
      const cert = usmc.senderCertificate();
      if (!cert.validate(this.trustRoot, Date.now())) throw new Error('untrusted certificate');
      const from = S.ProtocolAddress.new(cert.senderUuid(), cert.senderDeviceId());
      const type = usmc.msgType();
      const padded =
        type === (S.CiphertextMessageType.SenderKey as number)
          ? await S.groupDecrypt(from, m.senderKeyStore, usmc.contents())
          : await m.decrypt1to1(from, type, usmc.contents());
      // The certificate must name the identity this member's session knows for the sender.
      const known = m.identities.get(from.toString());
      if (!known || !known.equals(cert.key())) throw new Error('certificate identity differs from the session');
      await this.#content(from, padded);
      return;
    }
    if (env.type === EnvelopeType.Ciphertext || env.type === EnvelopeType.PreKeyMessage) {
      if (!env.source) throw new Error('identified envelope without a source');
      const from = S.ProtocolAddress.new(env.source.account, env.source.device);
      const type = env.type === EnvelopeType.PreKeyMessage ? S.CiphertextMessageType.PreKey : S.CiphertextMessageType.Whisper;
      await this.#content(from, await m.decrypt1to1(from, type, ab(env.content)));
    }
    // Server delivery receipts and plaintext contents need nothing from a light member.
  }

  async #content(from: S.ProtocolAddress, padded: Uint8Array): Promise<void> {
    const { content } = processContent(unpadPlaintext(padded));
    if (content.kind === 'senderKeyDistribution') {
      const skdm = S.SenderKeyDistributionMessage.deserialize(ab(content.message));
      await S.processSenderKeyDistributionMessage(from, skdm, this.member.senderKeyStore);
      this.skdms++;
    } else if (content.kind === 'groupUpdate') this.groupUpdates++;
    else if (content.kind === 'data' && content.message.group) {
      const msg = {
        from: from.name(),
        groupId: Buffer.from(content.message.group.id).toString('hex'),
        timestamp: content.message.timestamp,
        body: content.message.body,
      };
      this.groupMessages.push(msg);
      this.onGroupMessage(msg);
    }
  }
}
