/**
 * Offline delivery through a real relay process: bob registers and stays
 * offline, alice sends 100 messages with the CLI, bob receives all of them,
 * in order, exactly once.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, createWorld, messagesOf, type World } from '../helpers/world.js';

const COUNT = 100;
/** This many go through one `parley send` process each; the rest through `parley send --stdin`. */
const ONE_PER_PROCESS = 25;

describe('offline delivery of 100 messages through a relay process', () => {
  let w: World;

  beforeAll(async () => {
    w = await createWorld('delivery');
    await w.register('alice');
    await w.register('bob');
  });

  // Not w.close(): it must also run when beforeAll failed half-way.
  afterAll(cleanupAll);

  it('shows the profile identity with whoami', async () => {
    const r = await w.ok('alice', ['whoami']);
    expect(r.stdout).toMatch(/^username\s+alice$/m);
    expect(r.stdout).toMatch(/^account\s+[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/m);
    expect(r.stdout).toMatch(/^device\s+1$/m);
    expect(r.stdout).toContain(w.relay.url);
    const json = JSON.parse((await w.ok('alice', ['whoami', '--json'])).stdout) as Record<string, unknown>;
    expect(json).toMatchObject({ username: 'alice', deviceId: 1, serverUrl: w.relay.url, profile: w.profile('alice') });
  });

  it('delivers every message sent while bob was offline, in order, exactly once', async () => {
    const bodies = Array.from(
      { length: COUNT },
      (_, i) => `message ${String(i).padStart(3, '0')} of ${COUNT}: ünïcødé ✓ "quotes"`,
    );

    for (const body of bodies.slice(0, ONE_PER_PROCESS)) {
      const r = await w.ok('alice', ['send', 'bob', body]);
      expect(r.stdout).toMatch(/^sent to bob at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\n$/);
    }
    const rest = bodies.slice(ONE_PER_PROCESS);
    const batch = await w.ok('alice', ['send', 'bob', '--stdin'], { input: `${rest.join('\n')}\n`, timeoutMs: 120_000 });
    expect(batch.stdout.trim().split('\n')).toHaveLength(rest.length);

    const first = await w.ok('bob', ['receive', '--json'], { timeoutMs: 120_000 });
    expect(first.stderr).toBe('');
    const received = messagesOf(first.stdout);
    expect(received.map((m) => m.body)).toEqual(bodies);
    for (const m of received) {
      expect(m.from).toBe('alice');
      expect(m.fromDevice).toBe(1);
      expect(typeof m.timestamp).toBe('number');
    }
    const timestamps = received.map((m) => m.timestamp as number);
    expect(new Set(timestamps).size).toBe(COUNT);

    const second = await w.ok('bob', ['receive', '--json']);
    expect(messagesOf(second.stdout)).toEqual([]);
  }, 300_000);

  it('prints messages for humans without --json', async () => {
    await w.ok('alice', ['send', 'bob', 'hello in plain text']);
    const r = await w.ok('bob', ['receive']);
    expect(r.stdout).toMatch(/^\[[0-9: -]+\] alice: hello in plain text$/m);
  });

  it('keeps printing new messages during --wait', async () => {
    const receiving = w.live('bob', ['receive', '--json', '--wait', '60']);
    // Whether the message reaches bob's socket live or as backlog depends on
    // who is faster; either way --wait must keep the receiver running for it.
    await w.ok('alice', ['send', 'bob', 'while you wait']);
    await receiving.waitForOutput('while you wait', 30_000, 'the message sent during --wait');
    receiving.child.kill('SIGTERM');
    const end = await receiving.waitForExit(15_000);
    expect(end.code).toBe(0);
    expect(messagesOf(end.stdout).map((m) => m.body)).toEqual(['while you wait']);
  });
});
