/** Attachment routes over inject(): slots, tus uploads, downloads, limits, expiry, logs. */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { openFsBlobStore } from '../src/adapters/blobs/fs.js';
import type { AttachmentConfig } from '../src/attachment-config.js';
import { type Harness, type TestAccount, makeHarness } from './helpers.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const DAY = 24 * 3600 * 1000;
const TUS = { 'tus-resumable': '1.0.0' };

async function setup(attachments: Partial<AttachmentConfig> = {}, logLines?: string[]) {
  const dir = mkdtempSync(join(tmpdir(), 'parley-att-relay-'));
  dirs.push(dir);
  const extra = logLines
    ? {
        logger: pino(
          { level: 'info' },
          new Writable({
            write(chunk: Buffer, _e, cb) {
              logLines.push(chunk.toString('utf8'));
              cb();
            },
          }),
        ),
      }
    : {};
  const h = await makeHarness({ attachments }, { blobs: openFsBlobStore(dir), ...extra });
  const alice = await h.register('alice');
  const bob = await h.register('bob');
  return { h, alice, bob };
}

async function slot(h: Harness, a: TestAccount, length: number, headers: Record<string, string> = {}) {
  return h.built.app.inject({ method: 'POST', url: '/v1/attachments/uploads', headers: { authorization: a.auth, ...TUS, 'upload-length': String(length), ...headers } });
}
async function patch(h: Harness, a: TestAccount, location: string, offset: number, body: Buffer, headers: Record<string, string> = {}) {
  return h.built.app.inject({
    method: 'PATCH',
    url: location,
    headers: { authorization: a.auth, ...TUS, 'upload-offset': String(offset), 'content-type': 'application/offset+octet-stream', ...headers },
    payload: body,
  });
}
async function head(h: Harness, a: TestAccount, location: string) {
  return h.built.app.inject({ method: 'HEAD', url: location, headers: { authorization: a.auth, ...TUS } });
}

describe('attachment upload and download', () => {
  it('grants a slot, appends in two PATCHes, serves the blob without auth', async () => {
    const { h, alice } = await setup();
    const data = randomBytes(100_000);
    const s = await slot(h, alice, data.length);
    expect(s.statusCode).toBe(201);
    const { id, location } = s.json<{ id: string; location: string; expiresAt: number }>();
    expect(id).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(s.headers.location).toBe(location);
    expect(s.headers['tus-resumable']).toBe('1.0.0');

    expect((await h.built.app.inject({ method: 'GET', url: `/v1/attachments/${id}` })).statusCode).toBe(404); // incomplete
    const p1 = await patch(h, alice, location, 0, data.subarray(0, 40_000));
    expect(p1.statusCode).toBe(204);
    expect(p1.headers['upload-offset']).toBe('40000');
    const hd = await head(h, alice, location);
    expect(hd.statusCode).toBe(200);
    expect(hd.headers['upload-offset']).toBe('40000');
    expect(hd.headers['upload-length']).toBe(String(data.length));
    expect(hd.headers['cache-control']).toBe('no-store');
    const p2 = await patch(h, alice, location, 40_000, data.subarray(40_000));
    expect(p2.statusCode).toBe(204);
    expect(p2.headers['upload-offset']).toBe(String(data.length));

    const g = await h.built.app.inject({ method: 'GET', url: `/v1/attachments/${id}` });
    expect(g.statusCode).toBe(200);
    expect(g.headers['content-type']).toBe('application/octet-stream');
    expect(g.rawPayload.equals(data)).toBe(true);
    await h.built.close();
  });

  it('needs auth for slots, HEAD and PATCH; other accounts see 404', async () => {
    const { h, alice, bob } = await setup();
    const noAuth = await h.built.app.inject({ method: 'POST', url: '/v1/attachments/uploads', headers: { ...TUS, 'upload-length': '10' } });
    expect(noAuth.statusCode).toBe(401);
    expect(noAuth.json()).toMatchObject({ code: 'UNAUTHORIZED' });
    const { location } = (await slot(h, alice, 10)).json<{ location: string }>();
    const anon = await h.built.app.inject({ method: 'PATCH', url: location, headers: { ...TUS, 'upload-offset': '0', 'content-type': 'application/offset+octet-stream' }, payload: Buffer.alloc(10) });
    expect(anon.statusCode).toBe(401);
    expect((await head(h, bob, location)).statusCode).toBe(404);
    const steal = await patch(h, bob, location, 0, Buffer.alloc(10));
    expect(steal.statusCode).toBe(404);
    expect((await head(h, alice, location)).headers['upload-offset']).toBe('0');
    await h.built.close();
  });

  it('answers bad input with 4xx and changes nothing', async () => {
    const { h, alice } = await setup({ maxBytes: 1000 });
    expect((await slot(h, alice, 10, { 'tus-resumable': '0.2.2' })).json()).toMatchObject({ code: 'UNSUPPORTED_VERSION' });
    expect((await slot(h, alice, 10, { 'tus-resumable': '0.2.2' })).statusCode).toBe(412);
    expect((await slot(h, alice, 1001)).json()).toMatchObject({ code: 'TOO_LARGE' });
    for (const bad of ['-1', 'abc', '1e3', '', '99999999999999999999'])
      expect((await slot(h, alice, 0, { 'upload-length': bad })).statusCode).toBe(400);

    const { location, id } = (await slot(h, alice, 100)).json<{ location: string; id: string }>();
    await patch(h, alice, location, 0, randomBytes(30));
    const wrong = await patch(h, alice, location, 0, randomBytes(30));
    expect(wrong.statusCode).toBe(409);
    expect(wrong.json()).toMatchObject({ code: 'OFFSET_MISMATCH' });
    const type = await patch(h, alice, location, 30, randomBytes(30), { 'content-type': 'application/json' });
    expect(type.statusCode).toBe(415);
    const long = await patch(h, alice, location, 30, randomBytes(71));
    expect(long.statusCode).toBe(413);
    expect((await head(h, alice, location)).headers['upload-offset']).toBe('30');
    expect((await h.built.app.inject({ method: 'GET', url: '/v1/attachments/not-an-id' })).statusCode).toBe(404);
    expect((await h.built.app.inject({ method: 'GET', url: `/v1/attachments/${id.slice(0, -1)}A` })).statusCode).toBe(404);
    await h.built.close();
  });

  it('enforces the per-account quota and the byte rate limit', async () => {
    const { h, alice } = await setup({ quotaBytes: 1000, rate: { burstBytes: 1500, bytesPerSecond: 100 } });
    expect((await slot(h, alice, 600)).statusCode).toBe(201);
    const over = await slot(h, alice, 500);
    expect(over.statusCode).toBe(413);
    expect(over.json()).toMatchObject({ code: 'QUOTA_EXCEEDED' });
    expect((await slot(h, alice, 400)).statusCode).toBe(201);
    // Quota frees up when blobs expire.
    h.clock.advance(31 * DAY);
    expect((await slot(h, alice, 1000)).statusCode).toBe(201);
    await h.built.close();

    const r = await setup({ quotaBytes: 10_000, rate: { burstBytes: 1500, bytesPerSecond: 100 } });
    expect((await slot(r.h, r.alice, 1000)).statusCode).toBe(201);
    const limited = await slot(r.h, r.alice, 900);
    expect(limited.statusCode).toBe(429);
    expect(limited.json()).toMatchObject({ code: 'RATE_LIMITED' });
    expect(Number(limited.headers['retry-after'])).toBe(4);
    r.h.clock.advance(4000);
    expect((await slot(r.h, r.alice, 900)).statusCode).toBe(201);
    expect((await slot(r.h, r.bob, 1500)).statusCode).toBe(201); // buckets are per account
    await r.h.built.close();
  });

  it('expires blobs after the TTL and purges them', async () => {
    const { h, alice } = await setup({ ttlMs: 2 * DAY });
    const data = randomBytes(50);
    const { id, location } = (await slot(h, alice, data.length)).json<{ id: string; location: string }>();
    await patch(h, alice, location, 0, data);
    expect((await h.built.app.inject({ method: 'GET', url: `/v1/attachments/${id}` })).statusCode).toBe(200);
    h.clock.advance(2 * DAY + 1);
    expect((await h.built.app.inject({ method: 'GET', url: `/v1/attachments/${id}` })).statusCode).toBe(404);
    expect(await h.built.attachments?.purge()).toBe(1);
    expect(await h.built.attachments?.purge()).toBe(0);
    await h.built.close();
  });

  it('logs route patterns only: no blob ids, account ids or usernames', async () => {
    const lines: string[] = [];
    const { h, alice } = await setup({}, lines);
    const { id, location } = (await slot(h, alice, 20)).json<{ id: string; location: string }>();
    await patch(h, alice, location, 0, randomBytes(20));
    await head(h, alice, location);
    await h.built.app.inject({ method: 'GET', url: `/v1/attachments/${id}` });
    await h.built.close();
    const log = lines.join('');
    expect(log).toContain('/v1/attachments/uploads/:id');
    expect(log).not.toContain(id);
    expect(log).not.toContain(alice.accountId);
    expect(log).not.toContain('alice');
  });
});
