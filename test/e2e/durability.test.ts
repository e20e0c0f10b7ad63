/**
 * "No acknowledged message is lost": once `parley send` has exited 0, the
 * message survives a kill -9 of the relay process.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRunning } from '../helpers/procs.js';
import { cleanupAll, createWorld, messagesOf, type World } from '../helpers/world.js';

describe('relay kill -9 durability', () => {
  let w: World;

  beforeAll(async () => {
    w = await createWorld('durability');
    await w.register('alice');
    await w.register('bob');
  });

  // Not w.close(): it must also run when beforeAll failed half-way.
  afterAll(cleanupAll);

  it('delivers every acknowledged message after the relay is killed and restarted', async () => {
    const bodies = Array.from({ length: 30 }, (_, i) => `durable ${i}`);
    for (const body of bodies.slice(0, 10)) await w.ok('alice', ['send', 'bob', body]);
    await w.ok('alice', ['send', 'bob', '--stdin'], { input: `${bodies.slice(10).join('\n')}\n`, timeoutMs: 60_000 });

    const oldPid = w.relay.child.pid;
    const oldChild = w.relay.child;
    await w.crashAndRestartRelay();
    expect(isRunning(oldChild)).toBe(false);
    expect(oldChild.signalCode).toBe('SIGKILL');
    expect(w.relay.child.pid).not.toBe(oldPid);

    const r = await w.ok('bob', ['receive', '--json'], { timeoutMs: 60_000 });
    expect(messagesOf(r.stdout).map((m) => m.body)).toEqual(bodies);
    const again = await w.ok('bob', ['receive', '--json']);
    expect(messagesOf(again.stdout)).toEqual([]);
  }, 180_000);

  it('sending keeps working after the restart, in both directions', async () => {
    await w.ok('bob', ['send', 'alice', 'reply after the crash']);
    const r = await w.ok('alice', ['receive', '--json']);
    expect(messagesOf(r.stdout).map((m) => m.body)).toContain('reply after the crash');
  });

  it('stops cleanly with exit status 0 on SIGTERM', async () => {
    expect(await w.relay.stop()).toBe(0);
  });
});
