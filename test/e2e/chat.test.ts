/**
 * `parley chat` driven through pipes: a one-shot piped conversation read back
 * with `receive`, and two live chats talking to each other with receipts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, createWorld, messagesOf, type World } from '../helpers/world.js';

const READY = /Chatting with \S+ as \S+\./;

describe('parley chat over pipes', () => {
  let w: World;

  beforeAll(async () => {
    w = await createWorld('chat');
    await w.register('alice');
    await w.register('bob');
  });

  // Not w.close(): it must also run when beforeAll failed half-way.
  afterAll(cleanupAll);

  it('sends each piped line and exits 0 on /quit; the peer receives them', async () => {
    const r = await w.ok('alice', ['chat', 'bob'], {
      input: 'hello from a pipe\n\n//slash at the start\n/quit\nnot sent after quit\n',
      timeoutMs: 60_000,
    });
    expect(r.stdout).toMatch(READY);
    expect(r.stdout).toMatch(/\] you: hello from a pipe$/m);
    const got = await w.ok('bob', ['receive', '--json']);
    expect(messagesOf(got.stdout).map((m) => m.body)).toEqual(['hello from a pipe', '/slash at the start']);
  });

  it('ends the chat at end of input after sending what was typed', async () => {
    await w.ok('alice', ['chat', 'bob'], { input: 'no quit command\n', timeoutMs: 60_000 });
    const got = await w.ok('bob', ['receive', '--json']);
    expect(messagesOf(got.stdout).map((m) => m.body)).toEqual(['no quit command']);
  });

  it('two live chats exchange messages, read receipts and history', async () => {
    const bob = w.live('bob', ['chat', 'alice']);
    await bob.waitForOutput(READY, 30_000, "bob's chat to be ready");
    const alice = w.live('alice', ['chat', 'bob']);
    await alice.waitForOutput(READY, 30_000, "alice's chat to be ready");

    alice.write('live hello');
    await bob.waitForOutput(/\] alice: live hello$/m, 30_000, "alice's message in bob's chat");
    // Bob's chat showed it, so it sends a read receipt; alice's chat shows ✓✓.
    await alice.waitForOutput(/✓✓ read: "live hello"/, 30_000, "the read receipt in alice's chat");

    bob.write('live reply');
    await alice.waitForOutput(/\] bob: live reply$/m, 30_000, "bob's reply in alice's chat");

    alice.write('/quit');
    bob.write('/quit');
    expect((await alice.waitForExit(30_000)).code).toBe(0);
    expect((await bob.waitForExit(30_000)).code).toBe(0);

    // The history tail is shown when a chat opens again.
    const again = await w.ok('alice', ['chat', 'bob'], { input: '/quit\n', timeoutMs: 60_000 });
    expect(again.stdout).toMatch(/\] you: live hello/);
    expect(again.stdout).toMatch(/\] bob: live reply/);
  }, 120_000);

  it('leaves cleanly on SIGTERM', async () => {
    const chat = w.live('alice', ['chat', 'bob']);
    await chat.waitForOutput(READY, 30_000, 'the chat to be ready');
    chat.child.kill('SIGTERM');
    const end = await chat.waitForExit(30_000);
    expect(end.code).toBe(0);
    expect(end.stderr).toBe('');
  });
});
