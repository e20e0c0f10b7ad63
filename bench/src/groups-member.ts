/**
 * One libsignal party held in memory for the group benchmarks: identity,
 * registration id, and every store libsignal needs (sessions, identities,
 * pre-keys, signed, Kyber and sender keys). Only the cryptography is real;
 * nothing is persisted. Used for the Sender Keys rows of the design
 * comparison, the light members of the Parley group benchmark and the raw
 * libsignal figures (libsignal.ts).
 */
import * as S from '@signalapp/libsignal-client';

export class MemoryMember {
  readonly sessions = new Map<string, S.SessionRecord>();
  readonly identities = new Map<string, S.PublicKey>();
  readonly preKeys = new Map<number, S.PreKeyRecord>();
  readonly signed = new Map<number, S.SignedPreKeyRecord>();
  readonly kyber = new Map<number, S.KyberPreKeyRecord>();
  readonly senderKeys = new Map<string, S.SenderKeyRecord>();
  readonly session: S.SessionStore;
  readonly identityStore: S.IdentityKeyStore;
  readonly preKeyStore: S.PreKeyStore;
  readonly signedStore: S.SignedPreKeyStore;
  readonly kyberStore: S.KyberPreKeyStore;
  readonly senderKeyStore: S.SenderKeyStore;

  constructor(
    public address: S.ProtocolAddress,
    readonly identity: S.IdentityKeyPair = S.IdentityKeyPair.generate(),
    readonly registrationId: number = 1 + Math.floor(Math.random() * 16000),
  ) {
    const { sessions, identities, preKeys, signed, kyber, senderKeys } = this;
    const me = { identity, registrationId };
    this.session = new (class extends S.SessionStore {
      async saveSession(a: S.ProtocolAddress, r: S.SessionRecord) {
        sessions.set(a.toString(), r);
      }
      async getSession(a: S.ProtocolAddress) {
        return sessions.get(a.toString()) ?? null;
      }
      async getExistingSessions(as: S.ProtocolAddress[]) {
        return as.map((a) => {
          const r = sessions.get(a.toString());
          if (!r) throw new Error('no session');
          return r;
        });
      }
    })();
    this.identityStore = new (class extends S.IdentityKeyStore {
      async getIdentityKey() {
        return me.identity.privateKey;
      }
      async getLocalRegistrationId() {
        return me.registrationId;
      }
      async saveIdentity(a: S.ProtocolAddress, k: S.PublicKey) {
        const old = identities.get(a.toString());
        identities.set(a.toString(), k);
        return old && !old.equals(k) ? S.IdentityChange.ReplacedExisting : S.IdentityChange.NewOrUnchanged;
      }
      async isTrustedIdentity() {
        return true;
      }
      async getIdentity(a: S.ProtocolAddress) {
        return identities.get(a.toString()) ?? null;
      }
    })();
    this.preKeyStore = new (class extends S.PreKeyStore {
      async savePreKey(id: number, r: S.PreKeyRecord) {
        preKeys.set(id, r);
      }
      async getPreKey(id: number) {
        const r = preKeys.get(id);
        if (!r) throw new Error('no pre-key');
        return r;
      }
      async removePreKey(id: number) {
        preKeys.delete(id);
      }
    })();
    this.signedStore = new (class extends S.SignedPreKeyStore {
      async saveSignedPreKey(id: number, r: S.SignedPreKeyRecord) {
        signed.set(id, r);
      }
      async getSignedPreKey(id: number) {
        const r = signed.get(id);
        if (!r) throw new Error('no signed pre-key');
        return r;
      }
    })();
    this.kyberStore = new (class extends S.KyberPreKeyStore {
      async saveKyberPreKey(id: number, r: S.KyberPreKeyRecord) {
        kyber.set(id, r);
      }
      async getKyberPreKey(id: number) {
        const r = kyber.get(id);
        if (!r) throw new Error('no kyber pre-key');
        return r;
      }
      async markKyberPreKeyUsed() {}
    })();
    this.senderKeyStore = new (class extends S.SenderKeyStore {
      async saveSenderKey(sender: S.ProtocolAddress, distributionId: string, record: S.SenderKeyRecord) {
        senderKeys.set(`${sender.toString()}/${distributionId}`, record);
      }
      async getSenderKey(sender: S.ProtocolAddress, distributionId: string) {
        return senderKeys.get(`${sender.toString()}/${distributionId}`) ?? null;
      }
    })();
  }

  /** Fresh signed, Kyber and one-time keys (id 1 each), stored, and the bundle that offers them. */
  bundle(): S.PreKeyBundle {
    const id = this.identity.privateKey;
    const ec = S.PrivateKey.generate();
    const spk = S.PrivateKey.generate();
    const kem = S.KEMKeyPair.generate();
    const spkSig = id.sign(spk.getPublicKey().serialize());
    const kemSig = id.sign(kem.getPublicKey().serialize());
    this.preKeys.set(1, S.PreKeyRecord.new(1, ec.getPublicKey(), ec));
    this.signed.set(1, S.SignedPreKeyRecord.new(1, Date.now(), spk.getPublicKey(), spk, spkSig));
    this.kyber.set(1, S.KyberPreKeyRecord.new(1, Date.now(), kem, kemSig));
    return S.PreKeyBundle.new(
      this.registrationId,
      this.address.deviceId(),
      1,
      ec.getPublicKey(),
      1,
      spk.getPublicKey(),
      spkSig,
      this.identity.publicKey,
      1,
      kem.getPublicKey(),
      kemSig,
    );
  }

  /** Decrypt one 1:1 ciphertext of libsignal type `type` (2 Whisper, 3 PreKey) from `from`. */
  async decrypt1to1(from: S.ProtocolAddress, type: number, bytes: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
    if (type === (S.CiphertextMessageType.PreKey as number))
      return S.signalDecryptPreKey(
        S.PreKeySignalMessage.deserialize(bytes),
        from,
        this.address,
        this.session,
        this.identityStore,
        this.preKeyStore,
        this.signedStore,
        this.kyberStore,
      );
    return S.signalDecrypt(S.SignalMessage.deserialize(bytes), from, this.address, this.session, this.identityStore);
  }
}

/**
 * A session between `a` and `b` in its steady state: `a` processes `b`'s
 * bundle and sends one message, `b` answers, so later messages both ways are
 * plain ratchet messages rather than ~1.8 KB pre-key messages.
 */
export async function pairUp(a: MemoryMember, b: MemoryMember): Promise<void> {
  await S.processPreKeyBundle(b.bundle(), b.address, a.address, a.session, a.identityStore);
  const first = await S.signalEncrypt(new Uint8Array(16), b.address, a.address, a.session, a.identityStore);
  await b.decrypt1to1(a.address, first.type(), first.serialize());
  const reply = await S.signalEncrypt(new Uint8Array(16), a.address, b.address, b.session, b.identityStore);
  await a.decrypt1to1(b.address, reply.type(), reply.serialize());
}

/** A trust root, server certificate and a one-day sender certificate for `member`, as a relay would issue. */
export function senderCertificate(member: MemoryMember, trustRoot: S.PrivateKey = S.PrivateKey.generate()) {
  const serverKey = S.PrivateKey.generate();
  const server = S.ServerCertificate.new(1, serverKey.getPublicKey(), trustRoot);
  const cert = S.SenderCertificate.new(
    member.address.name(),
    null,
    member.address.deviceId(),
    member.identity.publicKey,
    Date.now() + 24 * 3600 * 1000,
    server,
    serverKey,
  );
  return { trustRoot: trustRoot.getPublicKey(), cert };
}
