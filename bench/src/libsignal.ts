/**
 * Raw libsignal figures on this machine: PQXDH session setup, Double Ratchet
 * encrypt and decrypt of 1 KiB. These are the ceiling the SDK's pipelines are
 * compared against. In-memory stores, so only the cryptography is measured.
 * Decrypt is measured for each envelope kind a receiver gets: a ratchet
 * message, a pre-key message on an established session (what a device gets
 * while its peer has not yet heard back from it; the SDK receive bench
 * receives these), and a sealed-sender message (outer layer opened and the
 * sender certificate checked, then the ratchet message inside).
 */
import * as S from '@signalapp/libsignal-client';
import { MemoryMember, pairUp } from './groups-member.js';

export interface Rate {
  name: string;
  perSecond: number;
  microsEach: number;
}

async function rate(name: string, n: number, f: (i: number) => Promise<unknown>): Promise<Rate> {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await f(i);
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return { name, perSecond: n / s, microsEach: (s / n) * 1e6 };
}

export async function benchLibsignal(quick: boolean): Promise<Rate[]> {
  const n = quick ? 200 : 2000;
  const aliceAddr = S.ProtocolAddress.new('0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0', 1);
  const bobAddr = S.ProtocolAddress.new('aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee', 1);
  const results: Rate[] = [];

  const setups = Math.max(20, n / 20);
  results.push(
    await rate('PQXDH session setup (sender side)', setups, async () => {
      const a = new MemoryMember(aliceAddr, S.IdentityKeyPair.generate(), 1);
      const b = new MemoryMember(bobAddr, S.IdentityKeyPair.generate(), 2);
      await S.processPreKeyBundle(b.bundle(), bobAddr, aliceAddr, a.session, a.identityStore);
    }),
  );

  const a = new MemoryMember(aliceAddr, S.IdentityKeyPair.generate(), 1);
  const b = new MemoryMember(bobAddr, S.IdentityKeyPair.generate(), 2);
  // Both directions once, so the session is past pre-key messages: the steady state measured.
  await pairUp(a, b);
  const plaintext = new Uint8Array(1024).fill(1);
  const cts: Uint8Array<ArrayBuffer>[] = [];
  results.push(
    await rate('encrypt 1 KiB', n, async () => {
      cts.push((await S.signalEncrypt(plaintext, bobAddr, aliceAddr, a.session, a.identityStore)).serialize());
    }),
  );
  results.push(
    await rate('decrypt 1 KiB', n, async (i) => {
      await S.signalDecrypt(S.SignalMessage.deserialize(cts[i]!), aliceAddr, bobAddr, b.session, b.identityStore);
    }),
  );
  results.push(await preKeyDecrypt(n, aliceAddr, bobAddr, plaintext));
  results.push(await sealedDecrypt(n, aliceAddr, bobAddr, plaintext));
  return results;
}

/** Pre-key messages on an established session: the sender has not received anything back yet, so every message carries the PQXDH header. */
async function preKeyDecrypt(
  n: number,
  aliceAddr: S.ProtocolAddress,
  bobAddr: S.ProtocolAddress,
  plaintext: Uint8Array<ArrayBuffer>,
): Promise<Rate> {
  const a = new MemoryMember(aliceAddr, S.IdentityKeyPair.generate(), 1);
  const b = new MemoryMember(bobAddr, S.IdentityKeyPair.generate(), 2);
  await S.processPreKeyBundle(b.bundle(), bobAddr, aliceAddr, a.session, a.identityStore);
  const cts: Uint8Array<ArrayBuffer>[] = [];
  for (let i = 0; i <= n; i++) {
    const ct = await S.signalEncrypt(plaintext, bobAddr, aliceAddr, a.session, a.identityStore);
    if (ct.type() !== (S.CiphertextMessageType.PreKey as number)) throw new Error('expected a pre-key message');
    cts.push(ct.serialize());
  }
  const decrypt = (bytes: Uint8Array<ArrayBuffer>) =>
    S.signalDecryptPreKey(
      S.PreKeySignalMessage.deserialize(bytes),
      aliceAddr,
      bobAddr,
      b.session,
      b.identityStore,
      b.preKeyStore,
      b.signedStore,
      b.kyberStore,
    );
  await decrypt(cts[0]!); // establishes the session; not counted
  return rate('decrypt 1 KiB pre-key message, session established', n, (i) => decrypt(cts[i + 1]!));
}

/** Sealed sender v1 around a ratchet message: open the outer layer, validate the sender certificate, decrypt the inner message. */
async function sealedDecrypt(
  n: number,
  aliceAddr: S.ProtocolAddress,
  bobAddr: S.ProtocolAddress,
  plaintext: Uint8Array<ArrayBuffer>,
): Promise<Rate> {
  const aliceId = S.IdentityKeyPair.generate();
  const a = new MemoryMember(aliceAddr, aliceId, 1);
  const b = new MemoryMember(bobAddr, S.IdentityKeyPair.generate(), 2);
  const trustRoot = S.PrivateKey.generate();
  const serverKey = S.PrivateKey.generate();
  const serverCert = S.ServerCertificate.new(1, serverKey.getPublicKey(), trustRoot);
  const senderCert = S.SenderCertificate.new(
    aliceAddr.name(),
    null,
    1,
    aliceId.publicKey,
    Date.now() + 86_400_000,
    serverCert,
    serverKey,
  );
  // Both directions once, so the session is past pre-key messages: the steady state measured.
  await pairUp(a, b);
  const sealed: Uint8Array<ArrayBuffer>[] = [];
  for (let i = 0; i < n; i++)
    sealed.push(await S.sealedSenderEncryptMessage(plaintext, bobAddr, senderCert, a.session, a.identityStore));
  const root = trustRoot.getPublicKey();
  return rate('decrypt 1 KiB sealed sender (open + certificate check + ratchet decrypt)', n, async (i) => {
    const usmc = await S.sealedSenderDecryptToUsmc(sealed[i]!, b.identityStore);
    if (!usmc.senderCertificate().validate(root, Date.now())) throw new Error('certificate rejected');
    if (usmc.msgType() !== (S.CiphertextMessageType.Whisper as number)) throw new Error('expected a ratchet message');
    await S.signalDecrypt(S.SignalMessage.deserialize(usmc.contents()), aliceAddr, bobAddr, b.session, b.identityStore);
  });
}
