/**
 * The embedded store alone (no sockets, no relay): what one message costs in
 * SQLite when sends and acks arrive faster than the disk flushes, as they do
 * under load. Each round submits `group` sends (1 KiB, one envelope, with an
 * idempotency key) and the acks of the previous round's envelopes at once, so
 * they share group commits exactly as the relay's do.
 *
 * A relay that has run for a while keeps the idempotency keys of every send
 * for the retention period, so the store is first filled with `history`
 * sends (delivered and acked: their keys stay, their envelopes go) before
 * anything is measured.
 *
 * Reported per message (one send plus one ack, and the bench's own
 * bookkeeping, which is small): CPU of the main thread (what the relay's
 * event loop would spend) and of the whole process (every thread: the WAL
 * flushes on the threadpool and the checkpoint worker too). CPU time, not
 * wall time, so other load on the machine disturbs it less.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type EnqueueBatch, type QueuedEnvelope, openSqliteStore } from '@parley/relay';
import { type AccountId, type DeviceId, EnvelopeType } from '@parley/wire';
import { PAYLOAD } from './clients.js';
import { cpuMicros } from './cluster.js';

export interface StoreResult {
  history: number;
  group: number;
  messages: number;
  mainThreadMicrosPerMessage: number;
  cpuMicrosPerMessage: number;
}

const D1 = 1 as DeviceId;
const ACCOUNTS = 1000;

export async function measureStore(opts: { history: number; rounds: number; group: number }): Promise<StoreResult> {
  const dir = mkdtempSync(join(tmpdir(), 'parley-bench-store-'));
  const store = openSqliteStore(dir);
  const accounts = Array.from({ length: ACCOUNTS }, () => randomUUID() as AccountId);
  const content = new Uint8Array(PAYLOAD);
  let k = 0;
  const batch = (): EnqueueBatch => {
    const now = Date.now();
    const to = accounts[(k + ACCOUNTS / 2) % ACCOUNTS] as AccountId;
    const from = accounts[k++ % ACCOUNTS] as AccountId;
    return {
      now,
      idempotencyKey: { senderAccount: from, senderDevice: D1, destination: to, messageId: randomBytes(16), timestamp: now },
      envelopes: [
        {
          guid: randomBytes(16),
          type: EnvelopeType.UnidentifiedSender,
          source: null,
          destination: { account: to, device: D1 },
          clientTimestamp: now,
          serverTimestamp: now,
          content,
          urgent: true,
        },
      ],
    };
  };
  /** Every queued envelope of the round's destinations (read back to learn their cursors). */
  const queued = async (batches: EnqueueBatch[]): Promise<QueuedEnvelope[]> => {
    const out: QueuedEnvelope[] = [];
    for (const to of new Set(batches.map((b) => b.envelopes[0]?.destination.account as AccountId)))
      out.push(...(await store.fetchQueue(to, D1, 0, 1000)));
    return out;
  };
  const round = async (acks: QueuedEnvelope[]): Promise<QueuedEnvelope[]> => {
    const batches = Array.from({ length: opts.group }, batch);
    await Promise.all([
      ...batches.map((b) => store.enqueue(b)),
      ...acks.map((e) => store.deleteEnvelope({ account: e.destination.account, device: D1, cursor: e.cursor, guid: e.guid })),
    ]);
    return queued(batches);
  };
  try {
    let pending: QueuedEnvelope[] = [];
    for (let sent = 0; sent < opts.history; sent += opts.group) pending = await round(pending);
    const main0 = cpuMicros(process.pid, process.pid);
    const cpu0 = process.cpuUsage();
    for (let r = 0; r < opts.rounds; r++) pending = await round(pending);
    const main = cpuMicros(process.pid, process.pid) - main0;
    const cpu = process.cpuUsage(cpu0);
    const messages = opts.rounds * opts.group;
    return {
      history: opts.history,
      group: opts.group,
      messages,
      mainThreadMicrosPerMessage: main / messages,
      cpuMicrosPerMessage: (cpu.user + cpu.system) / messages,
    };
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
