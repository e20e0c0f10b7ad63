/**
 * `parley link` on a new profile and `parley devices add` on the primary,
 * as real processes; then the linked device sends and receives, and
 * `parley devices list|remove` manage it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, createWorld, messagesOf, parseJsonLines, type World } from '../helpers/world.js';

describe('parley link / devices', () => {
  let w: World;

  beforeAll(async () => {
    w = await createWorld('devices');
    await w.register('alice');
    await w.register('bob');
  });

  afterAll(cleanupAll);

  it('links a second device of alice that then sends and receives', async () => {
    const linking = w.live('alice_laptop', ['link', '--server', w.relay.url]);
    const out = await linking.waitForOutput(/^link: (parley:\/\/link\?\S+)$/m, 30_000, 'the link text');
    const link = /^link: (parley:\/\/link\?\S+)$/m.exec(out)?.[1] ?? '';
    expect(link).not.toBe('');

    const add = await w.ok('alice', ['devices', 'add', link]);
    expect(add.stdout).toMatch(/^linked device 2$/m);
    const done = await linking.waitForExit(30_000);
    expect(done.code).toBe(0);
    expect(done.stdout).toMatch(/^linked as alice \(account [0-9a-f-]{36}, device 2\)$/m);

    const who = await w.ok('alice_laptop', ['whoami', '--json']);
    expect(JSON.parse(who.stdout)).toMatchObject({ username: 'alice', deviceId: 2 });

    await w.ok('bob', ['send', 'alice', 'hello both devices']);
    const onLaptop = await w.ok('alice_laptop', ['receive', '--json']);
    expect(messagesOf(onLaptop.stdout).map((m) => m.body)).toEqual(['hello both devices']);
    const onPhone = await w.ok('alice', ['receive', '--json']);
    expect(messagesOf(onPhone.stdout).map((m) => m.body)).toEqual(['hello both devices']);

    await w.ok('alice_laptop', ['send', 'bob', 'from the laptop']);
    const atBob = await w.ok('bob', ['receive', '--json']);
    expect(messagesOf(atBob.stdout).map((m) => m.body)).toEqual(['from the laptop']);
    // The primary shows what the laptop sent (sync transcript).
    const synced = await w.ok('alice', ['receive', '--json']);
    expect(parseJsonLines(synced.stdout).filter((o) => o.type === 'sent')).toEqual([
      expect.objectContaining({ type: 'sent', to: 'bob', body: 'from the laptop' }),
    ]);

    const list = await w.ok('alice', ['devices', 'list', '--json']);
    expect(list.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { deviceId: number }).deviceId)).toEqual([1, 2]);

    const removed = await w.ok('alice', ['devices', 'remove', '2']);
    expect(removed.stdout).toMatch(/^removed device 2$/m);
    const after = await w.ok('alice', ['devices', 'list', '--json']);
    expect(after.stdout.trim().split('\n')).toHaveLength(1);
    const refused = await w.cli('alice_laptop', ['whoami']);
    expect(refused.code).toBe(0); // local identity still readable
    const cut = await w.cli('alice_laptop', ['receive']);
    expect(cut.code).not.toBe(0);
  });
});
