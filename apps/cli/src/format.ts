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
