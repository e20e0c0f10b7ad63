/**
 * `parley group create|add|remove|leave|info|list`: groups managed by their
 * members. The relay keeps no group state; every change is a signed update
 * the SDK sends end to end to each member, so these commands need only the
 * profile and the relay's message queues.
 */
import type { GroupInfo, ParleyClient } from '@parley/sdk';
import { parseUsernameArg, withClient, withTimeout } from '../context.js';
import { CliError, type ErrorContext, ExitCode, usageError } from '../errors.js';
import { type GroupView, groupInfoLines, groupJson, groupListLine, memberLabel, safeTitle } from '../format.js';
import { println } from '../io.js';

/** Longest title the SDK accepts, in characters (code points after NFC). */
export const MAX_TITLE_CHARS = 64;

/**
 * A group name for `group create`: NFC, surrounding spaces dropped, 1 to 64
 * characters, no control characters. The SDK checks again (INVALID_TITLE);
 * checking here turns the common mistakes into usage errors (exit 2).
 */
export function parseTitleArg(value: string): string {
  const title = value.normalize('NFC').trim();
  if (title === '') throw usageError('the group name is empty');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/.test(title))
    throw usageError('the group name must not contain control characters (such as newlines)');
  const chars = [...title].length;
  if (chars > MAX_TITLE_CHARS)
    throw usageError(`the group name is ${chars} characters long; at most ${MAX_TITLE_CHARS} are allowed`);
  return title;
}

/**
 * A group reference as typed: a full id, an id prefix of 6 or more hex
 * digits, or an exact title. The SDK resolves it; here only an empty one is
 * refused.
 */
export function parseGroupRef(value: string): string {
  if (value.trim() === '')
    throw usageError('missing group: give its id, an id prefix of 6 or more hex digits, or its exact title');
  return value;
}

/** Member usernames, validated and normalized, duplicates dropped (first kept). */
export function parseMemberArgs(values: readonly string[]): string[] {
  if (values.length === 0) throw usageError('name at least one member besides yourself');
  const out: string[] = [];
  for (const v of values) {
    const name = parseUsernameArg(v);
    if (!out.includes(name)) out.push(name);
  }
  return out;
}

/** A one-line, quoted form of what the user typed, for error messages. */
function quoted(ref: string): string {
  return safeTitle(ref);
}

/** The names of the other members, for `created ... with bob, carol`. */
export function otherMembers(g: GroupView, me: string): string {
  const others = g.members.filter((m) => m.accountId !== me).map(memberLabel);
  return others.length > 0 ? others.join(', ') : 'nobody else yet';
}

/**
 * Resolves a reference to a full id with the local state (no network), and
 * makes later error messages name the group by its title rather than by
 * the prefix that was typed. @throws SdkError UNKNOWN_GROUP, AMBIGUOUS_GROUP
 */
function resolveLocally(client: ParleyClient, ref: string, ctx: ErrorContext): string {
  const g = client.groupInfo(ref);
  ctx.group = safeTitle(g.title);
  return g.id;
}

export interface GroupChangeArgs {
  json: boolean;
  timeoutSeconds: number;
}

function printGroup(g: GroupInfo, json: boolean, line: string): void {
  println(json ? JSON.stringify(groupJson(g)) : line);
}

/** Group changes go to every member over the network: bounded like `send`. */
function bounded<T>(promise: Promise<T>, seconds: number, what: string): Promise<T> {
  return withTimeout(
    promise,
    seconds * 1000,
    `timed out after ${seconds} s ${what}; some members may not have received the change yet (it is resent with the next change)`,
  );
}

async function withGroupClient(
  profileDir: string,
  passphrase: string | null,
  ctx: ErrorContext,
  fn: (client: ParleyClient, me: string) => Promise<void>,
): Promise<void> {
  await withClient(profileDir, passphrase, async (client) => {
    ctx.serverUrl = client.identity.serverUrl;
    await fn(client, client.identity.accountId);
  });
}

export async function runGroupCreate(
  profileDir: string,
  passphrase: string | null,
  args: GroupChangeArgs & { title: string; members: readonly string[] },
  ctx: ErrorContext,
): Promise<number> {
  const title = parseTitleArg(args.title);
  const members = parseMemberArgs(args.members);
  ctx.peers = members;
  if (members.length === 1) ctx.peer = members[0];
  await withGroupClient(profileDir, passphrase, ctx, async (client, me) => {
    const g = await bounded(client.createGroup(title, members), args.timeoutSeconds, 'creating the group');
    printGroup(g, args.json, `created group '${safeTitle(g.title)}' (id ${g.id}) with ${otherMembers(g, me)}`);
  });
  return ExitCode.Ok;
}

export async function runGroupAdd(
  profileDir: string,
  passphrase: string | null,
  args: GroupChangeArgs & { group: string; member: string },
  ctx: ErrorContext,
): Promise<number> {
  const group = parseGroupRef(args.group);
  const member = parseUsernameArg(args.member);
  ctx.group = quoted(group);
  ctx.peer = member;
  await withGroupClient(profileDir, passphrase, ctx, async (client) => {
    const id = resolveLocally(client, group, ctx);
    const g = await bounded(client.addGroupMember(id, member), args.timeoutSeconds, 'adding the member');
    printGroup(g, args.json, `added ${member} to the group '${safeTitle(g.title)}' (${g.members.length} members)`);
  });
  return ExitCode.Ok;
}

export async function runGroupRemove(
  profileDir: string,
  passphrase: string | null,
  args: GroupChangeArgs & { group: string; member: string },
  ctx: ErrorContext,
): Promise<number> {
  const group = parseGroupRef(args.group);
  const member = parseUsernameArg(args.member);
  ctx.group = quoted(group);
  ctx.peer = member;
  await withGroupClient(profileDir, passphrase, ctx, async (client) => {
    const id = resolveLocally(client, group, ctx);
    const g = await bounded(client.removeGroupMember(id, member), args.timeoutSeconds, 'removing the member').catch(
      (err: unknown) => {
        // NOT_GROUP_MEMBER means either "you are out of this group" or "they
        // are not in it"; the local state tells which.
        if ((err as { code?: unknown }).code === 'NOT_GROUP_MEMBER' && client.groupInfo(id).active)
          throw new CliError(`'${member}' is not a member of the group '${safeTitle(client.groupInfo(id).title)}'`);
        throw err;
      },
    );
    printGroup(g, args.json, `removed ${member} from the group '${safeTitle(g.title)}' (${g.members.length} members)`);
  });
  return ExitCode.Ok;
}

export async function runGroupLeave(
  profileDir: string,
  passphrase: string | null,
  args: { group: string; timeoutSeconds: number },
  ctx: ErrorContext,
): Promise<number> {
  const group = parseGroupRef(args.group);
  ctx.group = quoted(group);
  await withGroupClient(profileDir, passphrase, ctx, async (client) => {
    // Resolve first (locally), so the reply can name the group it left.
    const g = client.groupInfo(group);
    ctx.group = safeTitle(g.title);
    await bounded(client.leaveGroup(g.id), args.timeoutSeconds, 'leaving the group');
    println(`left the group '${safeTitle(g.title)}' (id ${g.id})`);
  });
  return ExitCode.Ok;
}

export async function runGroupInfo(
  profileDir: string,
  passphrase: string | null,
  args: { group: string; json: boolean },
  ctx: ErrorContext,
): Promise<number> {
  const group = parseGroupRef(args.group);
  ctx.group = quoted(group);
  await withGroupClient(profileDir, passphrase, ctx, (client, me) => {
    const g = client.groupInfo(group);
    if (args.json) println(JSON.stringify(groupJson(g)));
    else for (const line of groupInfoLines(g, me)) println(line);
    return Promise.resolve();
  });
  return ExitCode.Ok;
}

export async function runGroupList(
  profileDir: string,
  passphrase: string | null,
  args: { json: boolean },
  ctx: ErrorContext,
): Promise<number> {
  await withGroupClient(profileDir, passphrase, ctx, (client) => {
    const groups = client.listGroups();
    if (args.json) for (const g of groups) println(JSON.stringify(groupJson(g)));
    else if (groups.length === 0) println("no groups yet; create one with 'parley group create <name> <member...>'");
    else for (const g of groups) println(groupListLine(g));
    return Promise.resolve();
  });
  return ExitCode.Ok;
}
