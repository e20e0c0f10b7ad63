/** Presentation helpers: times, untrusted text, safety numbers. */

function pad2(n: number): string {
  return String(n).padStart(2, '0');
}

/**
 * A short local time for chat-style output: `14:03:07` for today,
 * `2024-05-01 14:03` for older messages.
 */
export function shortTime(ms: number, now: Date = new Date()): string {
  const d = new Date(ms);
  const sameDay = d.getFullYear() === now.getFullYear() && d.getMonth() === now.getMonth() && d.getDate() === now.getDate();
  const hm = `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  if (sameDay) return `${hm}:${pad2(d.getSeconds())}`;
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${hm}`;
}

export function isoTime(ms: number): string {
  return new Date(ms).toISOString();
}

/**
 * Message bodies come from other people: before they reach a terminal, every
 * control character (C0 except newline and tab, DEL, C1) is replaced so a
 * message cannot move the cursor, recolor or retitle the terminal. Newlines
 * are kept but indented so a message cannot fake a line from someone else.
 */
export function safeText(text: string): string {
  // eslint-disable-next-line no-control-regex
  const cleaned = text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, '\ufffd');
  return cleaned.replace(/\r?\n/g, '\n    ');
}

/** Who sent a message, for display: the verified username or an account marker. */
export function senderLabel(from: string | null, fromAccount: string): string {
  return from ?? `(unverified account ${fromAccount.slice(0, 8)})`;
}

/** Groups a 60-digit safety number as 12 blocks of 5 digits. */
export function formatSafetyNumber(raw: string): string {
  const digits = raw.replace(/\s+/g, '');
  if (!/^[0-9]+$/.test(digits) || digits.length % 5 !== 0) return raw;
  return (digits.match(/.{5}/g) ?? []).join(' ');
}

/** A short, single-line excerpt of a message body, for receipt lines. */
export function excerpt(body: string, max = 30): string {
  const flat = safeText(body).replace(/\n\s*/g, ' ');
  return flat.length <= max ? flat : `${flat.slice(0, max - 1)}…`;
}

/** `1.5 MiB`-style sizes (binary units). */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** One line: `label [#####.....]  45%  12.3 MiB/27.0 MiB`, fitted to `columns`. */
export function progressBar(label: string, done: number, total: number, columns: number): string {
  const frac = total > 0 ? Math.min(1, done / total) : 1;
  const tail = ` ${String(Math.floor(frac * 100)).padStart(3)}%  ${formatBytes(done)}/${formatBytes(total)}`;
  const width = Math.max(10, Math.min(40, columns - label.length - tail.length - 4));
  const filled = Math.round(frac * width);
  return `${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}]${tail}`;
}

/**
 * The fields of a group the CLI shows. The SDK's `GroupInfo` has this shape;
 * declaring only what is used keeps the formatting testable on its own.
 */
export interface GroupView {
  id: string;
  title: string;
  revision: number;
  members: ReadonlyArray<{ accountId: string; username: string | null; admin: boolean }>;
  admin: boolean;
  active: boolean;
}

/** A group title on one line: titles are chosen by other people. */
export function safeTitle(title: string): string {
  return safeText(title).replace(/\n\s*/g, ' ');
}

/** `alice`, or a short account marker when the username is not known. */
export function memberLabel(m: { accountId: string; username: string | null }): string {
  return m.username ?? `(account ${m.accountId.slice(0, 8)})`;
}

/** The stable `--json` object of a group (`group info`, `group list`, `group create|add|remove`). */
export function groupJson(g: GroupView): Record<string, unknown> {
  return {
    id: g.id,
    title: g.title,
    revision: g.revision,
    admin: g.admin,
    active: g.active,
    members: g.members.map((m) => ({ username: m.username, accountId: m.accountId, admin: m.admin })),
  };
}

/** `parley group info`: a small labelled block. */
export function groupInfoLines(g: GroupView, me: string): string[] {
  const you = !g.active ? 'not a member any more (you left or were removed)' : g.admin ? 'admin' : 'member';
  const width = Math.max(0, ...g.members.map((m) => memberLabel(m).length));
  return [
    `title:     ${safeTitle(g.title)}`,
    `id:        ${g.id}`,
    `revision:  ${g.revision}`,
    `you:       ${you}`,
    `members:   ${g.members.length}`,
    ...g.members.map((m) => {
      const tags = [m.admin ? 'admin' : '', m.accountId === me ? '(you)' : ''].filter((t) => t !== '').join(' ');
      return `  ${tags === '' ? memberLabel(m) : `${memberLabel(m).padEnd(width)}  ${tags}`}`;
    }),
  ];
}

/** `parley group list`: one line per group, the full id first so it can be cut out. */
export function groupListLine(g: GroupView): string {
  const n = g.members.length;
  const flags = [g.admin && g.active ? 'admin' : '', g.active ? '' : 'inactive'].filter((f) => f !== '');
  return `${g.id}  ${safeTitle(g.title)}  (${n} member${n === 1 ? '' : 's'}${flags.length > 0 ? `, ${flags.join(', ')}` : ''})`;
}

/**
 * What a group alert means, as the end of a sentence about `who`: the SDK
 * dropped a group change or group message and changed nothing.
 */
export function groupAlertText(reason: string, who: string): string {
  switch (reason) {
    case 'unsigned':
      return `rejected a group change from ${who}: it was not signed`;
    case 'bad-signature':
      return `rejected a group change from ${who}: its signature does not match the sender`;
    case 'not-admin':
      return `rejected a group change from ${who}: only an admin can change the group`;
    case 'stale-revision':
      return `rejected a group change from ${who}: it is older than the version already known (a replay?)`;
    case 'not-member':
      return `ignored a group message or change from ${who}: it does not come from, or is not meant for, a member`;
    case 'malformed':
      return `ignored a malformed group message or change from ${who}`;
    default:
      return `ignored a group message or change from ${who} (${reason})`;
  }
}
