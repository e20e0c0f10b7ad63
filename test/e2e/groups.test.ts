/**
 * Groups as a user sees them: a real relay process and the real `parley`
 * CLI, one process per command. alice creates a group with bob and carol,
 * adds dave, removes carol, dave leaves; each step is checked through what
 * the others' `receive --json` prints and what `group info|list` shows.
 *
 * The profiles use `register --no-passphrase` (a key file), so no command
 * pays for scrypt; the steps share one relay and the profiles, in order.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CliResult, cliEnv, errorLine, runCli, spawnCli } from '../helpers/cli.js';
import { cleanupAll, createWorld, describeResult, parseJsonLines, type World } from '../helpers/world.js';

type Json = Record<string, unknown>;
interface GroupJson {
  id: string;
  title: string;
  revision: number;
  admin: boolean;
  active: boolean;
  members: Array<{ username: string | null; accountId: string; admin: boolean }>;
}

const TITLE = 'Book club';

describe('parley group: create, send, add, remove, leave', () => {
  let w: World;
  let groupId = '';
  /** username -> account id, from `whoami --json`. */
  const account: Record<string, string> = {};

  /** `parley --profile <user> <args>` without a passphrase (key-file profiles). */
  const cli = (user: string, args: readonly string[], input?: string): Promise<CliResult> =>
    runCli(['--profile', w.profile(user), ...args], { env: cliEnv(), ...(input !== undefined ? { input } : {}) });
  const ok = async (user: string, args: readonly string[], input?: string): Promise<CliResult> => {
    const r = await cli(user, args, input);
    if (r.code !== 0) throw new Error(describeResult([`(${user})`, ...args], r));
    return r;
  };
  const receive = async (user: string): Promise<Json[]> => parseJsonLines((await ok(user, ['receive', '--json'])).stdout);
  const bodies = (lines: Json[]): unknown[] => lines.filter((o) => o.type === 'message').map((o) => o.body);
  const updates = (lines: Json[]): Json[] => lines.filter((o) => o.type === 'group-update');
  const info = async (user: string, ref: string): Promise<GroupJson> =>
    JSON.parse((await ok(user, ['group', 'info', ref, '--json'])).stdout) as GroupJson;
  const usernames = (g: GroupJson): Array<string | null> => g.members.map((m) => m.username).sort();

  /** One `parley: ...` line on stderr, nothing on stdout, the given exit status, no stack trace. */
  function expectOneLineError(r: CliResult, code: number, pattern: RegExp): void {
    expect(r.code, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`).toBe(code);
    const line = errorLine(r);
    expect(line).toMatch(/^parley: /);
    expect(line).toMatch(pattern);
    expect(r.stderr).not.toMatch(/^\s+at /m);
    expect(r.stdout).toBe('');
  }

  beforeAll(async () => {
    w = await createWorld('groups');
    for (const user of ['alice', 'bob', 'carol', 'dave']) {
      await ok(user, ['register', user, '--server', w.relay.url, '--no-passphrase']);
      account[user] = (JSON.parse((await ok(user, ['whoami', '--json'])).stdout) as { accountId: string }).accountId;
    }
  });

  // Not w.close(): it must also run when beforeAll failed half-way.
  afterAll(cleanupAll);

  it('alice creates a group with bob and carol and sends to it; both see it with the group field', async () => {
    const created = await ok('alice', ['group', 'create', TITLE, 'bob', 'carol']);
    const m = /^created group 'Book club' \(id ([0-9a-f]{32})\) with bob, carol$/m.exec(created.stdout);
    expect(m, created.stdout).not.toBeNull();
    groupId = m?.[1] ?? '';

    const mine = await info('alice', groupId);
    expect(mine).toMatchObject({ id: groupId, title: TITLE, admin: true, active: true });
    expect(usernames(mine)).toEqual(['alice', 'bob', 'carol']);
    expect(mine.members.find((x) => x.username === 'alice')?.admin).toBe(true);

    const sent = await ok('alice', ['send', '--group', TITLE, 'hello book club']);
    expect(sent.stdout).toMatch(/^sent to the group 'Book club' at \d{4}-\d\d-\d\dT/);

    for (const user of ['bob', 'carol']) {
      const got = await receive(user);
      const msgs = got.filter((o) => o.type === 'message');
      expect(msgs, user).toEqual([
        expect.objectContaining({ from: 'alice', body: 'hello book club', group: { id: groupId, title: TITLE } }),
      ]);
      // The group reached them as a signed update before the message.
      expect(updates(got)[0], user).toMatchObject({
        type: 'group-update',
        group: groupId,
        title: TITLE,
        by: 'alice',
        byAccount: account.alice,
      });
      // Names are confirmed with the relay before the first event, so it shows usernames, not account ids.
      expect(
        (updates(got)[0] as { members: Array<{ username: string | null }> }).members.map((m) => m.username).sort(),
        user,
      ).toEqual(['alice', 'bob', 'carol']);
      const theirs = await info(user, groupId.slice(0, 8));
      expect(theirs).toMatchObject({ id: groupId, title: TITLE, admin: false, active: true });
      expect(usernames(theirs)).toEqual(['alice', 'bob', 'carol']);
    }
  });

  it('shows the group in `group list` and `group info`, human and --json', async () => {
    const list = await ok('bob', ['group', 'list']);
    expect(list.stdout.trim()).toBe(`${groupId}  ${TITLE}  (3 members)`);
    const listJson = parseJsonLines((await ok('bob', ['group', 'list', '--json'])).stdout);
    expect(listJson).toEqual([expect.objectContaining({ id: groupId, title: TITLE, active: true, admin: false })]);

    const human = (await ok('bob', ['group', 'info', TITLE])).stdout;
    expect(human).toContain(`id:        ${groupId}`);
    expect(human).toMatch(/^title:\s+Book club$/m);
    expect(human).toMatch(/^you:\s+member$/m);
    expect(human).toMatch(/^ {2}alice\s+admin$/m);
    expect(human).toMatch(/^ {2}bob\s+\(you\)$/m);
  });

  it('bob replies to the group, also line by line from stdin; human `receive` shows the title', async () => {
    await ok('bob', ['send', '--group', groupId, 'hi all, bob here']);
    const piped = await ok('bob', ['send', '--group', TITLE, '--stdin'], 'line one\n\nline two\n');
    expect(piped.stdout.trim().split('\n')).toEqual([
      expect.stringMatching(/^sent to the group 'Book club' at /),
      expect.stringMatching(/^sent to the group 'Book club' at /),
    ]);
    const atAlice = (await ok('alice', ['receive'])).stdout;
    expect(atAlice).toMatch(/^\[[0-9:-\s]+\] \[Book club\] bob: hi all, bob here$/m);
    expect(atAlice).toMatch(/^\[[0-9:-\s]+\] \[Book club\] bob: line two$/m);
    expect(bodies(await receive('carol'))).toEqual(['hi all, bob here', 'line one', 'line two']);
  });

  it("a group message arriving during bob's `chat alice` is marked as not part of that chat", async () => {
    const chat = spawnCli(['--profile', w.profile('bob'), 'chat', 'alice'], cliEnv());
    await chat.waitForOutput(/Chatting with alice as bob\./, 30_000, "bob's chat to be ready");
    await ok('alice', ['send', '--group', TITLE, 'group text during a chat']);
    await chat.waitForOutput(
      /\] \[Book club\] alice \(not in this chat\): group text during a chat$/m,
      30_000,
      'the group message',
    );
    chat.write('/quit');
    expect((await chat.waitForExit(30_000)).code).toBe(0);
    expect(bodies(await receive('carol'))).toEqual(['group text during a chat']);
  });

  it('alice adds dave; dave gets later messages, not earlier ones', async () => {
    const added = await ok('alice', ['group', 'add', groupId.slice(0, 6), 'dave']);
    expect(added.stdout.trim()).toBe(`added dave to the group '${TITLE}' (4 members)`);
    await ok('alice', ['send', '--group', TITLE, 'welcome dave']);

    const atDave = await receive('dave');
    expect(bodies(atDave)).toEqual(['welcome dave']);
    expect(atDave.find((o) => o.type === 'message')).toMatchObject({ from: 'alice', group: { id: groupId, title: TITLE } });
    expect(usernames(await info('dave', TITLE))).toEqual(['alice', 'bob', 'carol', 'dave']);

    for (const user of ['bob', 'carol']) {
      const got = await receive(user);
      expect(bodies(got), user).toEqual(['welcome dave']);
      expect(updates(got)[0], user).toMatchObject({ by: 'alice', added: [expect.objectContaining({ accountId: account.dave })] });
    }
  });

  it('refuses mistakes with one line on stderr and a non-zero exit status', async () => {
    expectOneLineError(
      await cli('alice', ['group', 'info', 'no such group']),
      1,
      /no group in this profile matches 'no such group'/,
    );
    expectOneLineError(
      await cli('alice', ['send', '--group', 'feedfacecafe', 'hi']),
      1,
      /no group in this profile matches 'feedfacecafe'/,
    );
    expectOneLineError(await cli('bob', ['group', 'remove', TITLE, 'carol']), 1, /only an admin of the group 'Book club'/);
    expectOneLineError(await cli('alice', ['group', 'add', TITLE, 'nobody_here']), 1, /no user 'nobody_here'/);
    expectOneLineError(await cli('alice', ['group', 'add', TITLE]), 2, /missing required argument 'member'/);
    expectOneLineError(await cli('alice', ['group', 'create', 'Lonely']), 2, /missing required argument 'member'/);
    expectOneLineError(await cli('alice', ['group', 'leave']), 2, /missing required argument 'group'/);
    expectOneLineError(await cli('alice', ['send', '--group', TITLE]), 2, /missing message text/);
    expectOneLineError(await cli('alice', ['group', 'frobnicate']), 2, /unknown command 'frobnicate'/);
    // Nothing above changed the group.
    expect(usernames(await info('bob', TITLE))).toEqual(['alice', 'bob', 'carol', 'dave']);
  });

  it('alice removes carol; carol learns it and receives nothing sent afterwards', async () => {
    const removed = await ok('alice', ['group', 'remove', TITLE, 'carol', '--json']);
    const after = JSON.parse(removed.stdout) as GroupJson;
    expect(usernames(after)).toEqual(['alice', 'bob', 'dave']);

    const atCarol = await receive('carol');
    expect(updates(atCarol)).toEqual([
      expect.objectContaining({
        group: groupId,
        by: 'alice',
        removed: [{ accountId: account.carol, username: 'carol' }],
        active: false,
      }),
    ]);
    const hers = await info('carol', TITLE);
    expect(hers.active).toBe(false);
    expect(usernames(hers)).not.toContain('carol');
    expect((await ok('carol', ['group', 'info', TITLE])).stdout).toMatch(/^you:\s+not a member any more/m);

    await ok('alice', ['send', '--group', TITLE, 'after carol left']);
    expect(bodies(await receive('carol'))).toEqual([]);
    expectOneLineError(
      await cli('carol', ['send', '--group', TITLE, 'still here?']),
      1,
      /no longer a member of the group 'Book club'/,
    );

    for (const user of ['bob', 'dave']) {
      const got = await receive(user);
      expect(bodies(got), user).toEqual(['after carol left']);
      expect(updates(got)[0], user).toMatchObject({ removed: [{ accountId: account.carol, username: 'carol' }] });
    }
  });

  it('dave leaves; the others see it and dave receives nothing sent afterwards', async () => {
    const left = await ok('dave', ['group', 'leave', TITLE]);
    expect(left.stdout.trim()).toBe(`left the group '${TITLE}' (id ${groupId})`);
    expect((await info('dave', groupId)).active).toBe(false);

    const atAlice = await receive('alice');
    expect(updates(atAlice)).toEqual([
      expect.objectContaining({
        byAccount: account.dave,
        removed: [expect.objectContaining({ accountId: account.dave })],
        active: true,
      }),
    ]);
    expect(usernames(await info('alice', TITLE))).toEqual(['alice', 'bob']);

    await ok('alice', ['send', '--group', TITLE, 'just us two']);
    expect(bodies(await receive('dave'))).toEqual([]);
    expect(bodies(await receive('bob'))).toEqual(['just us two']);
    // `group list` still shows the group dave left, marked inactive.
    expect((await ok('dave', ['group', 'list'])).stdout.trim()).toBe(`${groupId}  ${TITLE}  (2 members, inactive)`);
  });

  it('a second group with the same title: the title becomes ambiguous, ids still work', async () => {
    const second = JSON.parse((await ok('alice', ['group', 'create', TITLE, 'bob', '--json'])).stdout) as GroupJson;
    expect(second.id).toMatch(/^[0-9a-f]{32}$/);
    expect(second.id).not.toBe(groupId);
    expect(second).toMatchObject({ title: TITLE, revision: 1, admin: true, active: true });
    expect(usernames(second)).toEqual(['alice', 'bob']);

    expectOneLineError(await cli('alice', ['group', 'info', TITLE]), 1, /'Book club' matches more than one group/);
    expectOneLineError(await cli('alice', ['send', '--group', TITLE, 'which one?']), 1, /matches more than one group/);
    await ok('alice', ['send', '--group', second.id.slice(0, 10), 'the second one']);
    const atBob = (await receive('bob')).filter((o) => o.type === 'message');
    expect(atBob).toEqual([expect.objectContaining({ body: 'the second one', group: { id: second.id, title: TITLE } })]);
    expect(parseJsonLines((await ok('alice', ['group', 'list', '--json'])).stdout).map((g) => g.id)).toEqual(
      expect.arrayContaining([groupId, second.id]),
    );
  });
});
