/**
 * The numbers behind docs/GROUPS.md: key management for groups of 10, 100
 * and 1,000 members with
 *
 * - Sender Keys (libsignal, what Parley uses): every member has a 1:1 session
 *   with every other; a sender distributes a SenderKeyDistributionMessage
 *   (SKDM) over those sessions, then each group message is one `groupEncrypt`
 *   wrapped in one multi-recipient sealed-sender upload that the relay splits.
 *   Measured with real libsignal sessions held in memory (one device each).
 * - MLS (RFC 9420) with ts-mls, cipher suite 1 (X25519, AES-128-GCM,
 *   SHA-256, Ed25519): create, add, remove, application messages.
 * - Server re-encryption: estimated from measured AES-256-GCM costs (Node
 *   crypto) and the arithmetic printed in the table.
 *
 * Every member's client work is measured on one core of this machine; "total"
 * columns are the sum over members (they would run in parallel on their own
 * devices). Prints a table and writes groups-design.{json,md,svg} to
 * bench/results/ (or BENCH_OUT). GROUPS_SIZES=10,100 picks the sizes.
 *
 *   npm run build && node bench/dist/groups-design.js
 */
import { createCipheriv, randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import * as S from '@signalapp/libsignal-client';
import SealedSenderMultiRecipientMessage from '@signalapp/libsignal-client/dist/SealedSenderMultiRecipientMessage.js';
import { padPlaintext } from '@parley/wire';
// ts-mls by subpath: its index also loads the noble crypto provider, which needs @noble/hashes (not a
// dependency of ts-mls 1.6.4); the default provider used here does not.
import { type ClientState, createGroup, joinGroup } from 'ts-mls/clientState.js';
import { createCommit } from 'ts-mls/createCommit.js';
import { createApplicationMessage } from 'ts-mls/createMessage.js';
import { type CiphersuiteImpl, getCiphersuiteFromName } from 'ts-mls/crypto/ciphersuite.js';
import { getCiphersuiteImpl } from 'ts-mls/crypto/getCiphersuiteImpl.js';
import { defaultCapabilities } from 'ts-mls/defaultCapabilities.js';
import { acceptAll } from 'ts-mls/incomingMessageAction.js';
import { generateKeyPackage, type KeyPackage, type PrivateKeyPackage } from 'ts-mls/keyPackage.js';
import { defaultLifetime } from 'ts-mls/lifetime.js';
import { encodeMlsMessage, type MLSMessage } from 'ts-mls/message.js';
import { processMessage, processPrivateMessage } from 'ts-mls/processMessages.js';
import { emptyPskIndex } from 'ts-mls/pskIndex.js';
import { MemoryMember, pairUp, senderCertificate } from './groups-member.js';
import { lineChart } from './svg.js';

/** Plaintext of every group message: 1 KiB of text in a Content, padded like Parley pads (1,120 bytes). */
const PLAINTEXT = new Uint8Array(padPlaintext(new Uint8Array(1024 + 8).fill(0x61)));

const ms = (t0: number) => performance.now() - t0;

export interface SenderKeysRow {
  members: number;
  skdmBytes: number;
  message: {
    groupEncryptMs: number;
    senderKeyCiphertextBytes: number;
    multiRecipientEncryptMs: number;
    uploadBytes: number;
    uploadBytesPerRecipient: number;
    relaySplitMs: number;
    deliveredBytesPerRecipient: number;
    receiveMsEach: number;
    receiveTotalMs: number;
  };
  rekey: { recipients: number; senderMs: number; bytes: number; receiveMsEach: number; receiveTotalMs: number };
  join: {
    sessionSetupsMsEachMember: number;
    skdmToNewMemberBytes: number;
    newMemberMs: number;
    existingMembersTotalMs: number;
  };
}

const newAddress = () => S.ProtocolAddress.new(randomUUID(), 1);

/** Open the sealed 1:1 message `sealed` at `m` (certificate checked) and process the SKDM inside it. */
async function receiveSkdm(m: MemoryMember, from: S.ProtocolAddress, sealed: Uint8Array<ArrayBuffer>, root: S.PublicKey) {
  const usmc = await S.sealedSenderDecryptToUsmc(sealed, m.identityStore);
  if (!usmc.senderCertificate().validate(root, Date.now())) throw new Error('certificate rejected');
  const padded = await m.decrypt1to1(from, usmc.msgType(), usmc.contents());
  const len = padded[0] ?? 0;
  const skdm = S.SenderKeyDistributionMessage.deserialize(padded.slice(1, 1 + len));
  await S.processSenderKeyDistributionMessage(from, skdm, m.senderKeyStore);
}

/** SKDM bytes as a padded payload: one length byte then the SKDM (stands in for Content.sender_key_distribution_message). */
function skdmPlaintext(skdm: S.SenderKeyDistributionMessage): Uint8Array<ArrayBuffer> {
  const b = skdm.serialize();
  const out = new Uint8Array(b.length + 1);
  out[0] = b.length;
  out.set(b, 1);
  return new Uint8Array(padPlaintext(out));
}

async function sealTo(from: MemoryMember, to: S.ProtocolAddress, cert: S.SenderCertificate, plaintext: Uint8Array<ArrayBuffer>) {
  const ct = await S.signalEncrypt(plaintext, to, from.address, from.session, from.identityStore);
  const usmc = S.UnidentifiedSenderMessageContent.new(ct, cert, S.ContentHint.Default, null);
  return S.sealedSenderEncrypt(usmc, to, from.identityStore);
}

export async function senderKeys(n: number): Promise<SenderKeysRow> {
  const trustRoot = S.PrivateKey.generate();
  const sender = new MemoryMember(newAddress());
  const { cert, trustRoot: root } = senderCertificate(sender, trustRoot);
  const others = Array.from({ length: n - 1 }, () => new MemoryMember(newAddress()));
  for (const m of others) await pairUp(sender, m);
  const groupId = new Uint8Array(randomBytes(16));

  // First distribution (not in the table: the rekey below is the same work for one member fewer).
  let dist = randomUUID();
  let skdm = await S.SenderKeyDistributionMessage.create(sender.address, dist, sender.senderKeyStore);
  const skdmBytes = skdm.serialize().length;
  for (const m of others) await receiveSkdm(m, sender.address, await sealTo(sender, m.address, cert, skdmPlaintext(skdm)), root);

  // One group message.
  let t0 = performance.now();
  const ct = await S.groupEncrypt(sender.address, dist, sender.senderKeyStore, PLAINTEXT);
  const groupEncryptMs = ms(t0);
  const usmc = S.UnidentifiedSenderMessageContent.new(ct, cert, S.ContentHint.Implicit, groupId);
  t0 = performance.now();
  const upload = await S.sealedSenderMultiRecipientEncrypt({
    content: usmc,
    recipients: others.map((m) => m.address),
    identityStore: sender.identityStore,
    sessionStore: sender.session,
  });
  const multiRecipientEncryptMs = ms(t0);
  // The relay's part: parse the upload and cut out each recipient's message.
  t0 = performance.now();
  const parsed = new SealedSenderMultiRecipientMessage(upload);
  const byName = parsed.recipientsByServiceIdString();
  const parts = others.map((m) => {
    const r = byName[m.address.name()];
    if (!r) throw new Error('recipient missing from the upload');
    return parsed.messageForRecipient(r);
  });
  const relaySplitMs = ms(t0);
  t0 = performance.now();
  for (const [i, m] of others.entries()) {
    const got = await S.sealedSenderDecryptToUsmc(parts[i] as Uint8Array<ArrayBuffer>, m.identityStore);
    if (!got.senderCertificate().validate(root, Date.now())) throw new Error('certificate rejected');
    const pt = await S.groupDecrypt(sender.address, m.senderKeyStore, got.contents());
    if (pt.length !== PLAINTEXT.length) throw new Error('wrong plaintext');
  }
  const receiveTotalMs = ms(t0);

  // Remove the last member: new distribution id, one SKDM to each remaining member over its 1:1 session.
  const remaining = others.slice(0, -1);
  t0 = performance.now();
  dist = randomUUID();
  skdm = await S.SenderKeyDistributionMessage.create(sender.address, dist, sender.senderKeyStore);
  const sealed: Uint8Array<ArrayBuffer>[] = [];
  for (const m of remaining) sealed.push(await sealTo(sender, m.address, cert, skdmPlaintext(skdm)));
  const rekeySenderMs = ms(t0);
  t0 = performance.now();
  for (const [i, m] of remaining.entries()) await receiveSkdm(m, sender.address, sealed[i] as Uint8Array<ArrayBuffer>, root);
  const rekeyReceiveMs = ms(t0);

  // A new member joins a group of n: every existing member sets up a session with it (PQXDH) and sends
  // its current SKDM in a pre-key message; the new member opens n of them. Measured with the n-1 others
  // plus the sender as the existing members.
  const joiner = new MemoryMember(newAddress());
  let existingMs = 0;
  let joinerMs = 0;
  let joinBytes = 0;
  for (const m of [sender, ...others]) {
    const bundle = joiner.bundle();
    const { cert: mCert } = senderCertificate(m, trustRoot);
    const mDist = randomUUID();
    t0 = performance.now();
    await S.processPreKeyBundle(bundle, joiner.address, m.address, m.session, m.identityStore);
    const mSkdm = await S.SenderKeyDistributionMessage.create(m.address, mDist, m.senderKeyStore);
    const s = await sealTo(m, joiner.address, mCert, skdmPlaintext(mSkdm));
    existingMs += ms(t0);
    joinBytes += s.length;
    t0 = performance.now();
    await receiveSkdm(joiner, m.address, s, root);
    joinerMs += ms(t0);
  }

  return {
    members: n,
    skdmBytes,
    message: {
      groupEncryptMs,
      senderKeyCiphertextBytes: ct.serialize().length,
      multiRecipientEncryptMs,
      uploadBytes: upload.length,
      uploadBytesPerRecipient: upload.length / others.length,
      relaySplitMs,
      deliveredBytesPerRecipient: (parts[0] as Uint8Array).length,
      receiveMsEach: receiveTotalMs / others.length,
      receiveTotalMs,
    },
    rekey: {
      recipients: remaining.length,
      senderMs: rekeySenderMs,
      bytes: sealed.reduce((a, b) => a + b.length, 0),
      receiveMsEach: rekeyReceiveMs / Math.max(1, remaining.length),
      receiveTotalMs: rekeyReceiveMs,
    },
    join: {
      sessionSetupsMsEachMember: existingMs / n,
      skdmToNewMemberBytes: joinBytes,
      newMemberMs: joinerMs,
      existingMembersTotalMs: existingMs,
    },
  };
}

export interface MlsRow {
  members: number;
  keyPackageBytes: number;
  keyPackageMs: number;
  create: { commitMs: number; commitBytes: number; welcomeBytes: number; joinMsEach: number };
  add: { commitMs: number; commitBytes: number; welcomeBytes: number; memberProcessMsEach: number; newMemberJoinMs: number };
  remove: { commitMs: number; commitBytes: number; memberProcessMsEach: number; membersTotalMs: number };
  message: { bytes: number; encryptMs: number; decryptMs: number };
}

const te = new TextEncoder();
const mlsBytes = (m: MLSMessage) => encodeMlsMessage(m).length;

async function keyPackage(name: string, impl: CiphersuiteImpl) {
  return generateKeyPackage(
    { credentialType: 'basic', identity: te.encode(name) },
    defaultCapabilities(),
    defaultLifetime,
    [],
    impl,
  );
}

async function processCommit(state: ClientState, commit: MLSMessage, impl: CiphersuiteImpl): Promise<ClientState> {
  if (commit.wireformat !== 'mls_private_message' && commit.wireformat !== 'mls_public_message')
    throw new Error('commit is not a handshake message');
  const r = await processMessage(commit, state, emptyPskIndex, acceptAll, impl);
  if (r.kind !== 'newState') throw new Error('commit did not produce a new epoch');
  return r.newState;
}

/**
 * MLS at n members: the creator adds n-1 key packages in one commit (the
 * Welcome carries the ratchet tree), three sampled members join; then one
 * member is added and removed again. The tree is as a bulk add leaves it:
 * parent nodes blank, the worst case for the next commit's path (RFC 9420
 * §7); docs/GROUPS.md gives the filled-tree figure by arithmetic.
 */
export async function mls(n: number): Promise<MlsRow> {
  const impl = await getCiphersuiteImpl(getCiphersuiteFromName('MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519'));
  let t0 = performance.now();
  const kps: { publicPackage: KeyPackage; privatePackage: PrivateKeyPackage }[] = [];
  for (let i = 0; i < n; i++) kps.push(await keyPackage(`m${i}`, impl));
  const keyPackageMs = ms(t0) / n;
  const kp0 = kps[0]!;
  const keyPackageBytes = mlsBytes({ keyPackage: kp0.publicPackage, wireformat: 'mls_key_package', version: 'mls10' });

  t0 = performance.now();
  let creator = await createGroup(te.encode('parley-bench'), kp0.publicPackage, kp0.privatePackage, [], impl);
  const created = await createCommit(
    { state: creator, cipherSuite: impl },
    {
      extraProposals: kps.slice(1).map((k) => ({ proposalType: 'add', add: { keyPackage: k.publicPackage } })),
      ratchetTreeExtension: true,
    },
  );
  const createMs = ms(t0);
  creator = created.newState;
  if (!created.welcome) throw new Error('no welcome');
  const createWelcomeBytes = mlsBytes({ welcome: created.welcome, wireformat: 'mls_welcome', version: 'mls10' });

  const sampleIdx = [...new Set([1, Math.floor(n / 2), n - 1])].filter((i) => i > 0 && i < n);
  t0 = performance.now();
  let samples: ClientState[] = [];
  for (const i of sampleIdx)
    samples.push(await joinGroup(created.welcome, kps[i]!.publicPackage, kps[i]!.privatePackage, emptyPskIndex, impl));
  const joinMsEach = ms(t0) / sampleIdx.length;

  // Add one member to the n-member group.
  const newKp = await keyPackage('new', impl);
  t0 = performance.now();
  const added = await createCommit(
    { state: creator, cipherSuite: impl },
    { extraProposals: [{ proposalType: 'add', add: { keyPackage: newKp.publicPackage } }], ratchetTreeExtension: true },
  );
  const addMs = ms(t0);
  creator = added.newState;
  if (!added.welcome) throw new Error('no welcome');
  t0 = performance.now();
  const next: ClientState[] = [];
  for (const s of samples) next.push(await processCommit(s, added.commit, impl));
  const addProcessMs = ms(t0) / samples.length;
  samples = next;
  t0 = performance.now();
  await joinGroup(added.welcome, newKp.publicPackage, newKp.privatePackage, emptyPskIndex, impl);
  const newMemberJoinMs = ms(t0);

  // Remove it again (leaf index n: the first free leaf after the bulk add).
  t0 = performance.now();
  const removed = await createCommit(
    { state: creator, cipherSuite: impl },
    { extraProposals: [{ proposalType: 'remove', remove: { removed: n } }] },
  );
  const removeMs = ms(t0);
  creator = removed.newState;
  t0 = performance.now();
  const after: ClientState[] = [];
  for (const s of samples) after.push(await processCommit(s, removed.commit, impl));
  const removeProcessMs = ms(t0) / samples.length;
  samples = after;

  // One application message.
  t0 = performance.now();
  const app = await createApplicationMessage(creator, PLAINTEXT, impl);
  const encryptMs = ms(t0);
  const appBytes = mlsBytes({ privateMessage: app.privateMessage, wireformat: 'mls_private_message', version: 'mls10' });
  t0 = performance.now();
  const got = await processPrivateMessage(samples[0]!, app.privateMessage, emptyPskIndex, impl);
  const decryptMs = ms(t0);
  if (got.kind !== 'applicationMessage' || got.message.length !== PLAINTEXT.length)
    throw new Error('MLS message did not decrypt');

  return {
    members: n,
    keyPackageBytes,
    keyPackageMs,
    create: { commitMs: createMs, commitBytes: mlsBytes(created.commit), welcomeBytes: createWelcomeBytes, joinMsEach },
    add: {
      commitMs: addMs,
      commitBytes: mlsBytes(added.commit),
      welcomeBytes: mlsBytes({ welcome: added.welcome, wireformat: 'mls_welcome', version: 'mls10' }),
      memberProcessMsEach: addProcessMs,
      newMemberJoinMs,
    },
    remove: {
      commitMs: removeMs,
      commitBytes: mlsBytes(removed.commit),
      memberProcessMsEach: removeProcessMs,
      membersTotalMs: removeProcessMs * (n - 1),
    },
    message: { bytes: appBytes, encryptMs, decryptMs },
  };
}

export interface ServerRow {
  members: number;
  /** One AES-256-GCM encryption of the padded message, µs (Node crypto). */
  wrapMicros: number;
  serverMsPerMessage: number;
  serverEgressBytesPerMessage: number;
  uploadBytes: number;
}

/** Server re-encryption: the server decrypts the upload once and encrypts it again for each member. */
export function serverReencryption(n: number): ServerRow {
  const key = randomBytes(32);
  const reps = 2000;
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) {
    const c = createCipheriv('aes-256-gcm', key, randomBytes(12));
    c.update(PLAINTEXT);
    c.final();
    c.getAuthTag();
  }
  const wrapMicros = (ms(t0) / reps) * 1000;
  const perMember = PLAINTEXT.length + 12 + 16;
  return {
    members: n,
    wrapMicros,
    serverMsPerMessage: (wrapMicros * n) / 1000,
    serverEgressBytesPerMessage: perMember * (n - 1),
    uploadBytes: perMember,
  };
}

export interface GroupsDesign {
  machine: string;
  plaintextBytes: number;
  senderKeys: SenderKeysRow[];
  mls: MlsRow[];
  server: ServerRow[];
}

export async function runGroupsDesign(sizes: number[], log = console.log): Promise<GroupsDesign> {
  const machine = `${cpus()[0]?.model ?? 'unknown CPU'} x${cpus().length}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}`;
  const out: GroupsDesign = { machine, plaintextBytes: PLAINTEXT.length, senderKeys: [], mls: [], server: [] };
  for (const n of sizes) {
    log(`  ${n} members: Sender Keys…`);
    out.senderKeys.push(await senderKeys(n));
    log(`  ${n} members: MLS…`);
    out.mls.push(await mls(n));
    out.server.push(serverReencryption(n));
  }
  return out;
}

const f = (x: number, d = 0) => x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });
const kb = (b: number) => (b >= 10_000 ? `${f(b / 1024, 0)} KiB` : b >= 1024 ? `${f(b / 1024, 1)} KiB` : `${f(b)} B`);
const t = (msv: number) => (msv >= 1000 ? `${f(msv / 1000, 2)} s` : msv >= 10 ? `${f(msv)} ms` : `${f(msv, 2)} ms`);

export function designMarkdown(d: GroupsDesign): string {
  const sizes = d.senderKeys.map((r) => r.members);
  const head = `| | ${sizes.map((n) => `${f(n)} members`).join(' | ')} |\n|---|${sizes.map(() => '---:').join('|')}|\n`;
  const row = (label: string, vals: string[]) => `| ${label} | ${vals.join(' | ')} |\n`;
  const sk = d.senderKeys;
  const ml = d.mls;
  const sv = d.server;
  let md = `Machine: ${d.machine}. One ${f(d.plaintextBytes)}-byte padded plaintext per message (1 KiB of text). Client times are one member's work on one core; "all members" is the sum.\n\n`;
  md += '### Sender Keys (libsignal 0.103.0, sealed sender, one device per member)\n\n' + head;
  md += row(
    'SKDM size',
    sk.map((r) => kb(r.skdmBytes)),
  );
  md += row(
    'message: groupEncrypt',
    sk.map((r) => t(r.message.groupEncryptMs)),
  );
  md += row(
    'message: multi-recipient seal (sender)',
    sk.map((r) => t(r.message.multiRecipientEncryptMs)),
  );
  md += row(
    'message: upload bytes',
    sk.map((r) => kb(r.message.uploadBytes)),
  );
  md += row(
    'message: upload bytes per recipient',
    sk.map((r) => kb(r.message.uploadBytesPerRecipient)),
  );
  md += row(
    'message: bytes delivered to each device',
    sk.map((r) => kb(r.message.deliveredBytesPerRecipient)),
  );
  md += row(
    'message: relay split (parse + cut all)',
    sk.map((r) => t(r.message.relaySplitMs)),
  );
  md += row(
    'message: receive each (unseal, check cert, groupDecrypt)',
    sk.map((r) => t(r.message.receiveMsEach)),
  );
  md += row(
    'remove: rekey by one sender (new SKDM to N-2)',
    sk.map((r) => t(r.rekey.senderMs)),
  );
  md += row(
    'remove: rekey bytes by one sender',
    sk.map((r) => kb(r.rekey.bytes)),
  );
  md += row(
    'remove: rekey bytes if all N-1 remaining members send',
    sk.map((r) => kb(r.rekey.bytes * (r.members - 1))),
  );
  md += row(
    'remove: receive one SKDM (each member, per sender)',
    sk.map((r) => t(r.rekey.receiveMsEach)),
  );
  md += row(
    'join: each existing member (PQXDH + SKDM)',
    sk.map((r) => t(r.join.sessionSetupsMsEachMember)),
  );
  md += row(
    'join: new member opens N SKDMs',
    sk.map((r) => t(r.join.newMemberMs)),
  );
  md += row(
    'join: bytes to the new member',
    sk.map((r) => kb(r.join.skdmToNewMemberBytes)),
  );
  md += '\n### MLS (ts-mls 1.6.4, RFC 9420, MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519)\n\n' + head;
  md += row(
    'key package',
    ml.map((r) => `${kb(r.keyPackageBytes)}, ${t(r.keyPackageMs)}`),
  );
  md += row(
    'create with N-1 adds: commit',
    ml.map((r) => `${kb(r.create.commitBytes)}, ${t(r.create.commitMs)}`),
  );
  md += row(
    'create: Welcome (with ratchet tree)',
    ml.map((r) => kb(r.create.welcomeBytes)),
  );
  md += row(
    'create: each member joins',
    ml.map((r) => t(r.create.joinMsEach)),
  );
  md += row(
    'add one: commit',
    ml.map((r) => `${kb(r.add.commitBytes)}, ${t(r.add.commitMs)}`),
  );
  md += row(
    'add one: Welcome (with ratchet tree)',
    ml.map((r) => kb(r.add.welcomeBytes)),
  );
  md += row(
    'add one: each member processes commit',
    ml.map((r) => t(r.add.memberProcessMsEach)),
  );
  md += row(
    'add one: new member joins',
    ml.map((r) => t(r.add.newMemberJoinMs)),
  );
  md += row(
    'remove one: commit (blank tree)',
    ml.map((r) => `${kb(r.remove.commitBytes)}, ${t(r.remove.commitMs)}`),
  );
  md += row(
    'remove one: each member processes',
    ml.map((r) => t(r.remove.memberProcessMsEach)),
  );
  md += row(
    'remove one: all members',
    ml.map((r) => t(r.remove.membersTotalMs)),
  );
  md += row(
    'message: bytes (one copy for everyone)',
    ml.map((r) => kb(r.message.bytes)),
  );
  md += row(
    'message: encrypt / decrypt',
    ml.map((r) => `${t(r.message.encryptMs)} / ${t(r.message.decryptMs)}`),
  );
  md += '\n### Server re-encryption (estimate: server decrypts once, AES-256-GCM per member)\n\n' + head;
  md += row(
    'server CPU per message (N × one encryption)',
    sv.map((r) => `${t(r.serverMsPerMessage)} (${f(r.wrapMicros, 1)} µs × ${f(r.members)})`),
  );
  md += row(
    'upload bytes',
    sv.map((r) => kb(r.uploadBytes)),
  );
  md += row(
    'server egress per message',
    sv.map((r) => `${kb(r.serverEgressBytesPerMessage)} (${f(r.uploadBytes)} B × ${f(r.members - 1)})`),
  );
  return md;
}

/**
 * Bytes moved by one removal against group size (x = log10 of members): the
 * Sender Keys rekey by one sender and by every remaining member, the MLS
 * remove Commit delivered to N-1 members as measured (blank tree) and as
 * estimated for a full tree (docs/GROUPS.md: ceil(log2 N) x 115 B + 400 B).
 */
export function designChart(d: GroupsDesign): string {
  const x = (n: number) => Math.log10(n);
  const kib = (b: number) => b / 1024;
  return lineChart({
    title: 'Bytes moved by one removal (KiB, log scale)',
    xLabel: 'members: 1 = 10, 2 = 100, 3 = 1,000 (log10)',
    yLabel: 'KiB',
    logY: true,
    series: [
      { name: 'Sender Keys, one sender rekeys', points: d.senderKeys.map((r) => [x(r.members), kib(r.rekey.bytes)]) },
      {
        name: 'Sender Keys, every member rekeys',
        points: d.senderKeys.map((r) => [x(r.members), kib(r.rekey.bytes * (r.members - 1))]),
      },
      {
        name: 'MLS Commit to N-1, blank tree',
        points: d.mls.map((r) => [x(r.members), kib(r.remove.commitBytes * (r.members - 1))]),
      },
      {
        name: 'MLS Commit to N-1, full tree (est.)',
        points: d.mls.map((r) => [x(r.members), kib((Math.ceil(Math.log2(r.members)) * 115 + 400) * (r.members - 1))]),
      },
    ],
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const sizes = (process.env.GROUPS_SIZES ?? '10,100,1000').split(',').map(Number);
  const outDir = process.env.BENCH_OUT ?? fileURLToPath(new URL('../results/', import.meta.url));
  mkdirSync(outDir, { recursive: true });
  console.log(`Group key management: Sender Keys, MLS, server re-encryption at ${sizes.join(', ')} members`);
  const d = await runGroupsDesign(sizes);
  const md = designMarkdown(d);
  console.log(`\n${md}`);
  writeFileSync(`${outDir}/groups-design.json`, `${JSON.stringify({ at: new Date().toISOString(), ...d }, null, 2)}\n`);
  writeFileSync(`${outDir}/groups-design.md`, md);
  writeFileSync(`${outDir}/groups-design.svg`, designChart(d));
}
