/** Group commands' pure parts: argument checks, output lines and JSON objects, error wording. */
import { describe, expect, it } from 'vitest';
import { otherMembers, parseGroupRef, parseMemberArgs, parseTitleArg } from '../src/commands/group.js';
import type { GroupUpdateEvent } from '@parley/sdk';
import {
  KnownNames,
  groupAlertJson,
  groupAlertLine,
  groupUpdateJson,
  groupUpdateLine,
  messageJson,
  messageLine,
} from '../src/commands/receive.js';
import { resolveSendTarget } from '../src/commands/send.js';
import { CliError, describeSdkError } from '../src/errors.js';
import { type GroupView, groupInfoLines, groupJson, groupListLine } from '../src/format.js';

const ALICE = 'a'.repeat(8) + '-0000-4000-8000-000000000001';
const BOB = 'b'.repeat(8) + '-0000-4000-8000-000000000002';
const CAROL = 'c'.repeat(8) + '-0000-4000-8000-000000000003';
const DAVE = 'd'.repeat(8) + '-0000-4000-8000-000000000004';
const GID = '0123456789abcdef0123456789abcdef';

function group(over: Partial<GroupView> = {}): GroupView {
  return {
    id: GID,
    title: 'Book club',
    revision: 2,
    admin: true,
    active: true,
    members: [
      { accountId: ALICE, username: 'alice', admin: true },
      { accountId: BOB, username: 'bob', admin: false },
      { accountId: CAROL, username: null, admin: false },
    ],
    ...over,
  };
}

function usage(fn: () => unknown): CliError {
  try {
    fn();
  } catch (err) {
    if (err instanceof CliError) return err;
    throw err;
  }
  throw new Error('expected a usage error');
}

describe('group arguments', () => {
  it('accepts titles of 1 to 64 characters, trimmed and NFC-normalized', () => {
    expect(parseTitleArg('  Book club ')).toBe('Book club');
    expect(parseTitleArg('Cafe\u0301')).toBe('Café');
    expect(parseTitleArg('🎉'.repeat(64))).toBe('🎉'.repeat(64));
  });
  it('refuses empty, too long and control-character titles with exit status 2', () => {
    expect(usage(() => parseTitleArg('   ')).exitCode).toBe(2);
    expect(usage(() => parseTitleArg('x'.repeat(65))).message).toMatch(/65 characters.*at most 64/);
    expect(usage(() => parseTitleArg('two\nlines')).message).toMatch(/control characters/);
  });
  it('normalizes member usernames, drops duplicates and requires at least one', () => {
    expect(parseMemberArgs(['Bob', 'carol', 'bob'])).toEqual(['bob', 'carol']);
    expect(usage(() => parseMemberArgs([])).message).toMatch(/at least one member/);
    expect(usage(() => parseMemberArgs(['bob', 'no!'])).message).toMatch(/invalid username 'no!'/);
  });
  it('passes group references through and refuses an empty one', () => {
    expect(parseGroupRef('Book club')).toBe('Book club');
    expect(parseGroupRef('012345')).toBe('012345');
    expect(usage(() => parseGroupRef(' ')).message).toMatch(/missing group/);
  });
});

describe('send --group', () => {
  const base = { stdin: false, timeoutSeconds: 30 };
  it('takes the only positional argument as the text', () => {
    expect(resolveSendTarget({ ...base, username: 'hello all', text: undefined, group: 'Book club' })).toEqual({
      kind: 'group',
      group: 'Book club',
      text: 'hello all',
    });
    expect(resolveSendTarget({ ...base, stdin: true, username: undefined, text: undefined, group: 'Book club' })).toMatchObject({
      kind: 'group',
      text: undefined,
    });
  });
  it('refuses a username and text together with --group, and --file to a group', () => {
    expect(usage(() => resolveSendTarget({ ...base, username: 'bob', text: 'hi', group: 'g12345' })).message).toMatch(
      /only the message text/,
    );
    expect(
      usage(() => resolveSendTarget({ ...base, username: 'hi', text: undefined, group: 'g12345', file: 'x' })).message,
    ).toMatch(/--file/);
  });
  it('still needs a username without --group', () => {
    expect(usage(() => resolveSendTarget({ ...base, username: undefined, text: undefined })).message).toMatch(
      /missing required argument 'username'/,
    );
    expect(resolveSendTarget({ ...base, username: 'Bob', text: 'hi' })).toEqual({ kind: 'user', username: 'bob', text: 'hi' });
  });
});

describe('group output', () => {
  it('prints a stable JSON object', () => {
    expect(groupJson(group())).toEqual({
      id: GID,
      title: 'Book club',
      revision: 2,
      admin: true,
      active: true,
      members: [
        { username: 'alice', accountId: ALICE, admin: true },
        { username: 'bob', accountId: BOB, admin: false },
        { username: null, accountId: CAROL, admin: false },
      ],
    });
  });
  it('shows info as a labelled block, marking admins and you', () => {
    const lines = groupInfoLines(group(), BOB);
    expect(lines.slice(0, 5)).toEqual([
      'title:     Book club',
      `id:        ${GID}`,
      'revision:  2',
      'you:       admin',
      'members:   3',
    ]);
    expect(lines.slice(5)).toEqual(['  alice               admin', '  bob                 (you)', '  (account cccccccc)']);
    expect(groupInfoLines(group({ active: false, admin: false }), BOB)[3]).toMatch(/not a member any more/);
  });
  it('lists one line per group with the full id first', () => {
    expect(groupListLine(group())).toBe(`${GID}  Book club  (3 members, admin)`);
    expect(groupListLine(group({ admin: false, active: false, members: [] }))).toBe(`${GID}  Book club  (0 members, inactive)`);
  });
  it('keeps titles from other people on one line without control characters', () => {
    expect(groupListLine(group({ title: 'evil\n\u001b[2Jtitle' }))).toBe(`${GID}  evil \ufffd[2Jtitle  (3 members, admin)`);
  });
  it('names the other members after create', () => {
    expect(otherMembers(group(), ALICE)).toBe('bob, (account cccccccc)');
    expect(otherMembers(group({ members: [{ accountId: ALICE, username: 'alice', admin: true }] }), ALICE)).toBe(
      'nobody else yet',
    );
  });
});

describe('receive: group messages, updates and alerts', () => {
  const now = new Date(2024, 4, 1, 15, 0, 0);
  const msg = {
    id: 'm1',
    from: 'alice',
    fromAccount: ALICE,
    fromDevice: 1,
    timestamp: new Date(2024, 4, 1, 14, 3, 7).getTime(),
    serverTimestamp: 1,
    body: 'hello all',
    attachments: [],
    group: { id: GID, title: 'Book club' },
  };
  it('adds the group to message JSON and to the human line', () => {
    expect(JSON.parse(messageJson(msg))).toMatchObject({
      type: 'message',
      from: 'alice',
      body: 'hello all',
      group: { id: GID, title: 'Book club' },
    });
    expect(messageLine(msg, now)).toBe('[14:03:07] [Book club] alice: hello all');
    const { group: _g, ...direct } = msg;
    expect(JSON.parse(messageJson(direct))).not.toHaveProperty('group');
    expect(messageLine(direct, now)).toBe('[14:03:07] alice: hello all');
  });

  it('prints alerts as one JSON object or one line', () => {
    const alert = { groupId: GID, reason: 'not-admin' as const, fromAccount: BOB, from: 'bob' };
    expect(JSON.parse(groupAlertJson(alert))).toEqual({
      type: 'group-alert',
      group: GID,
      reason: 'not-admin',
      from: 'bob',
      fromAccount: BOB,
    });
    const line = groupAlertLine(alert, 'Book club', now);
    expect(line).toMatch(/^\[15:00:00\] !!! \[Book club\] rejected a group change from bob: only an admin can change the group$/);
    expect(line.split('\n')).toHaveLength(1);
    expect(groupAlertLine({ ...alert, from: null, reason: 'unsigned' }, null, now)).toMatch(
      /\[group 01234567\] rejected a group change from \(unverified account bbbbbbbb\): it was not signed$/,
    );
  });

  function update(over: Partial<GroupUpdateEvent>): GroupUpdateEvent {
    return { group: group() as GroupUpdateEvent['group'], by: 'alice', byAccount: ALICE, added: [], removed: [], ...over };
  }

  it('describes an update by who changed what, naming removed members from earlier states', () => {
    const names = new KnownNames(BOB);
    names.learn(DAVE, 'dave');
    expect(groupUpdateLine(update({ removed: [DAVE] }), names, now)).toMatch(/\[Book club\] alice removed dave \(3 members\)$/);
    expect(groupUpdateLine(update({ added: [CAROL] }), names, now)).toMatch(/alice added \(account cccccccc\) \(3 members\)$/);
    expect(groupUpdateLine(update({ added: [ALICE, BOB, CAROL] }), names, now)).toMatch(
      /alice added you to the group \(members: alice, \(account cccccccc\)\)$/,
    );
    expect(groupUpdateLine(update({ by: 'bob', byAccount: BOB, added: [ALICE, BOB, CAROL] }), names, now)).toMatch(
      /you created the group on another device \(members: alice, \(account cccccccc\)\)$/,
    );
    expect(groupUpdateLine(update({ by: 'bob', byAccount: BOB, removed: [BOB] }), names, now)).toMatch(/\] you left the group$/);
    expect(groupUpdateLine(update({ by: 'bob', byAccount: BOB, added: [DAVE] }), names, now)).toMatch(
      /\] you added dave \(3 members\)$/,
    );
    expect(groupUpdateLine(update({ removed: [BOB] }), names, now)).toMatch(
      /alice removed you from the group; you can read its history/,
    );
    expect(groupUpdateLine(update({ by: 'dave', byAccount: DAVE, removed: [DAVE] }), names, now)).toMatch(
      /dave left the group \(3 members\)$/,
    );
  });

  it('prints an update as one JSON object with usernames where known', () => {
    const names = new KnownNames(BOB);
    names.learn(DAVE, 'dave');
    const o = JSON.parse(groupUpdateJson(update({ removed: [DAVE], added: [CAROL] }), names)) as Record<string, unknown>;
    expect(o).toMatchObject({
      type: 'group-update',
      group: GID,
      title: 'Book club',
      revision: 2,
      by: 'alice',
      byAccount: ALICE,
      added: [{ accountId: CAROL, username: null }],
      removed: [{ accountId: DAVE, username: 'dave' }],
      active: true,
    });
    expect(o.members).toHaveLength(3);
  });
});

describe('group error wording', () => {
  const ctx = { group: 'Book club', peer: 'dave', serverUrl: 'http://r' };
  const cases: Array<[string, RegExp]> = [
    ['UNKNOWN_GROUP', /^no group in this profile matches 'Book club'; .*parley group list.*parley receive/],
    ['AMBIGUOUS_GROUP', /^'Book club' matches more than one group; give its id or a longer id prefix/],
    ['NOT_GROUP_ADMIN', /^only an admin of the group 'Book club' can add or remove members$/],
    ['NOT_GROUP_MEMBER', /^you are no longer a member of the group 'Book club'/],
    ['ALREADY_MEMBER', /^'dave' is already a member of the group 'Book club'$/],
    ['GROUP_TOO_LARGE', /at most 1000 members/],
    ['INVALID_TITLE', /1 to 64 characters/],
  ];
  for (const [code, pattern] of cases) {
    it(code, () => {
      const line = describeSdkError({ code, message: 'x' } as Parameters<typeof describeSdkError>[0], ctx);
      expect(line).toMatch(pattern);
      expect(line).not.toContain('\n');
    });
  }
  it('names every candidate when one of several members does not exist', () => {
    expect(describeSdkError({ code: 'USER_NOT_FOUND', message: 'x' }, { peers: ['bob', 'carol'], serverUrl: 'http://r' })).toBe(
      "at least one of 'bob', 'carol' is not a user on the relay at http://r; check the spelling",
    );
  });
});
