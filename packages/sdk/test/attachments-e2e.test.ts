/** Attachments between two SDK clients through a real relay (filesystem blob store). */
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { parseBlobId } from '@parley/wire';
import { encryptFile, newAttachmentKey, newIv } from '../src/attachment-crypto.js';
import { fetchAttachment } from '../src/attachments.js';
import { existsSync, openSync, readFileSync, readdirSync, writeFileSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultRelayConfig, startRelay, type RunningRelay } from '@parley/relay';
import { ParleyClient, SdkError, encryptedSize } from '../src/index.js';
import { nextEvent, tempDir } from './helpers.js';

let relay: RunningRelay;
const tmp = tempDir('parley-att-e2e-');
const relayDir = join(tmp.dir, 'relay');
let alice: ParleyClient;
let bob: ParleyClient;

beforeAll(async () => {
  relay = await startRelay(defaultRelayConfig({ port: 0, dataDir: relayDir, logLevel: 'silent' }));
  alice = await ParleyClient.register({ profileDir: join(tmp.dir, 'alice'), serverUrl: relay.url, username: 'alice_a', passphrase: null });
  bob = await ParleyClient.register({ profileDir: join(tmp.dir, 'bob'), serverUrl: relay.url, username: 'bob_a', passphrase: null });
  await alice.connect();
  await bob.connect();
});
afterAll(async () => {
  await alice?.close();
  await bob?.close();
  await relay?.close();
  tmp.cleanup();
});

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('attachments through a relay', () => {
  it('sends a file with a caption; the recipient downloads exactly that file', async () => {
    const data = randomBytes(300_000);
    const src = join(tmp.dir, 'photo.jpg');
    writeFileSync(src, data);
    const got = nextEvent(bob, 'message');
    const progress: number[] = [];
    const sent = await alice.sendFile('bob_a', { path: src, text: 'look', contentType: 'image/jpeg', onProgress: (p) => progress.push(p.done) });
    expect(sent.attachment).toEqual({ index: 0, size: data.length, contentType: 'image/jpeg', fileName: 'photo.jpg' });
    expect(progress.at(-1)).toBe(encryptedSize(data.length));
    const [m] = await got;
    expect(m.body).toBe('look');
    expect(m.attachments).toEqual([{ index: 0, size: data.length, contentType: 'image/jpeg', fileName: 'photo.jpg' }]);
    expect(bob.pendingAttachments()).toHaveLength(1);
    const saved = await bob.downloadAttachment(m.id, 0);
    expect(saved.path).toBe(join(tmp.dir, 'bob', 'downloads', 'photo.jpg'));
    expect(sha(readFileSync(saved.path))).toBe(sha(data));
    expect(bob.pendingAttachments()).toHaveLength(0);
    // The relay's copy is ciphertext of the padded size, not the file.
    const blobFiles = readdirSync(join(relayDir, 'blobs', 'data'));
    const blobs = blobFiles.map((f) => readFileSync(join(relayDir, 'blobs', 'data', f)));
    expect(blobs.some((b) => b.length === encryptedSize(data.length))).toBe(true);
    for (const b of blobs) expect(b.includes(data.subarray(1000, 1064))).toBe(false);
  });

  it('refuses a blob the relay tampered with and leaves nothing in downloads', async () => {
    const data = randomBytes(5000);
    const src = join(tmp.dir, 'secret.txt');
    writeFileSync(src, data);
    const got = nextEvent(bob, 'message');
    await alice.sendFile('bob_a', { path: src });
    const [m] = await got;
    const dataDir = join(relayDir, 'blobs', 'data');
    const newest = readdirSync(dataDir)
      .map((f) => join(dataDir, f))
      .find((f) => readFileSync(f).length === encryptedSize(data.length));
    expect(newest).toBeDefined();
    const fd = openSync(newest!, 'r+');
    writeSync(fd, Buffer.from([0x42]), 0, 1, 100);
    closeSync(fd);
    const dl = join(tmp.dir, 'dl-tamper');
    await expect(bob.downloadAttachment(m.id, 0, { dir: dl })).rejects.toSatisfy((e) => SdkError.is(e, 'ATTACHMENT_INVALID'));
    expect(existsSync(dl) ? readdirSync(dl) : []).toEqual([]);
    expect(bob.pendingAttachments().some((p) => p.messageId === m.id)).toBe(false); // marked invalid, not retried
  });

  it('sends an empty file', async () => {
    const src = join(tmp.dir, 'empty.bin');
    writeFileSync(src, Buffer.alloc(0));
    const got = nextEvent(bob, 'message');
    await alice.sendFile('bob_a', { path: src });
    const [m] = await got;
    const saved = await bob.downloadAttachment(m.id, 0, { dir: join(tmp.dir, 'dl-empty') });
    expect(readFileSync(saved.path).length).toBe(0);
  });

  it('refuses a missing file or a directory before uploading', async () => {
    await expect(alice.sendFile('bob_a', { path: join(tmp.dir, 'nope') })).rejects.toSatisfy((e) => SdkError.is(e, 'INVALID_INPUT'));
    await expect(alice.sendFile('bob_a', { path: tmp.dir })).rejects.toSatisfy((e) => SdkError.is(e, 'INVALID_INPUT'));
    await expect(alice.sendFile('nobody_here', { path: join(tmp.dir, 'empty.bin') })).rejects.toSatisfy((e) => SdkError.is(e, 'USER_NOT_FOUND'));
  });
});

describe('downloads from a relay that lies', () => {
  it('rejects extended, truncated and cut-off blobs and leaves nothing behind', async () => {
    const plain = randomBytes(40_000);
    const src = join(tmp.dir, 'lie-src');
    writeFileSync(src, plain);
    const key = newAttachmentKey();
    const enc = encryptFile(src, plain.length, key, newIv());
    const parts: Buffer[] = [];
    for await (const c of enc.stream) parts.push(c as Buffer);
    const blob = Buffer.concat(parts);
    const digest = await enc.digest;
    let serve: { body: Buffer; length: number } = { body: blob, length: blob.length };
    const server = createServer((_req, res) => {
      res.writeHead(200, { 'content-length': String(serve.length), 'content-type': 'application/octet-stream' });
      if (serve.body.length >= serve.length) res.end(serve.body);
      else {
        res.write(serve.body);
        setTimeout(() => res.destroy(), 20); // cut the connection short of content-length
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const dir = join(tmp.dir, 'dl-lies');
    const attachment = { blobId: parseBlobId(randomBytes(24).toString('base64url')), key, digest, size: plain.length, contentType: '', fileName: 'x.bin' };
    const get = () => fetchAttachment({ serverUrl: `http://127.0.0.1:${port}`, attachment, dir, fallbackName: 'f' });
    try {
      serve = { body: Buffer.concat([blob, Buffer.from([0])]), length: blob.length + 1 };
      await expect(get()).rejects.toSatisfy((e) => SdkError.is(e, 'ATTACHMENT_INVALID'));
      serve = { body: Buffer.concat([blob, randomBytes(5 * 1024 * 1024)]), length: blob.length + 5 * 1024 * 1024 };
      await expect(get()).rejects.toSatisfy((e) => SdkError.is(e, 'ATTACHMENT_INVALID'));
      serve = { body: blob.subarray(0, blob.length - 32), length: blob.length - 32 };
      await expect(get()).rejects.toSatisfy((e) => SdkError.is(e, 'ATTACHMENT_INVALID'));
      serve = { body: blob.subarray(0, 1000), length: blob.length };
      await expect(get()).rejects.toSatisfy((e) => SdkError.is(e, 'RELAY_UNREACHABLE'));
      expect(existsSync(dir) ? readdirSync(dir) : []).toEqual([]);
      serve = { body: blob, length: blob.length };
      const ok = await get();
      expect(readFileSync(ok).equals(plain)).toBe(true);
    } finally {
      server.close();
    }
  });
});
