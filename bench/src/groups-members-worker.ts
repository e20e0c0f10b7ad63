/**
 * Worker thread holding the light members of the group benchmark, so their
 * decryption does not share the sender's event loop (the sender's times then
 * measure the sender). Commands from the parent:
 *
 * - `{ cmd: 'setup', url, count, prefix, sender }`: register `count` light
 *   members, open their sockets, introduce each to `sender`; answers
 *   `{ kind: 'ready', usernames }`.
 * - `{ cmd: 'exclude', index }`: count member `index`'s group messages apart
 *   from now on (it was removed from the group).
 * - `{ cmd: 'close' }`: close every socket; answers `{ kind: 'closed' }`.
 *
 * Every 5 ms it posts `{ kind: 'progress', messages, updates,
 * excludedMessages, errors }` when something changed: group messages
 * decrypted and group updates received, summed over the members (the
 * excluded one's messages apart).
 */
import { parentPort } from 'node:worker_threads';
import type { AccountId } from '@parley/wire';
import { pool } from './clients.js';
import { LightMember } from './groups-light.js';

type Command =
  | { cmd: 'setup'; url: string; count: number; prefix: string; sender: AccountId }
  | { cmd: 'exclude'; index: number }
  | { cmd: 'close' };

const port = parentPort;
if (!port) throw new Error('groups-members-worker runs as a worker thread');
let members: LightMember[] = [];
const excluded = new Set<number>();
let last = '';

setInterval(() => {
  if (members.length === 0) return;
  let messages = 0;
  let updates = 0;
  let errors = 0;
  let excludedMessages = 0;
  members.forEach((m, i) => {
    errors += m.errors.length;
    updates += m.groupUpdates;
    if (excluded.has(i)) excludedMessages += m.groupMessages.length;
    else messages += m.groupMessages.length;
  });
  const msg = { kind: 'progress', messages, updates, excludedMessages, errors };
  const key = JSON.stringify(msg);
  if (key !== last) {
    last = key;
    port.postMessage(msg);
  }
}, 5).unref();

port.on('message', (c: Command) => {
  void (async () => {
    if (c.cmd === 'setup') {
      const root = await LightMember.trustRoot(c.url);
      members = await pool(
        Array.from({ length: c.count }, (_, i) => i),
        16,
        (i) => LightMember.register(c.url, `${c.prefix}${i}`, root),
      );
      await pool(members, 64, (m) => m.connect());
      await pool(members, 16, (m) => m.introduce(c.sender));
      port.postMessage({ kind: 'ready', usernames: members.map((m) => m.username) });
    } else if (c.cmd === 'exclude') excluded.add(c.index);
    else {
      await Promise.all(members.map((m) => m.close()));
      port.postMessage({ kind: 'closed' });
    }
  })().catch((err: unknown) => port.postMessage({ kind: 'error', message: (err as Error).message }));
});
