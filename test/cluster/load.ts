/** Steady message load for the chaos tests: every client sends to the next one in a ring. */
import type { ClientRecord } from './harness.js';
import { sleep } from '../helpers/wait.js';

export interface Load {
  /** Sends answered 2xx, per sender. */
  acked: Map<string, { to: string; n: number }[]>;
  failed(): number;
  stop(): Promise<void>;
}

/** Starts one sending loop per client; each waits `gapMs` between sends. */
export function startLoad(clients: ClientRecord[], gapMs: number): Load {
  const acked = new Map<string, { to: string; n: number }[]>();
  let failed = 0;
  let running = true;
  const loops = clients.map(async (c, i) => {
    const to = (clients[(i + 1) % clients.length] as ClientRecord).username;
    const mine: { to: string; n: number }[] = [];
    acked.set(c.username, mine);
    for (let n = 1; running; n++) {
      try {
        await c.client.send(to, `${c.username}:${n}`);
        mine.push({ to, n });
      } catch {
        // Not acknowledged: it may or may not arrive, but never twice and never out of order.
        failed++;
      }
      await sleep(gapMs);
    }
  });
  return {
    acked,
    failed: () => failed,
    stop: async () => {
      running = false;
      await Promise.all(loops);
    },
  };
}
