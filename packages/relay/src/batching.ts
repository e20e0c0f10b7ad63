/**
 * Coalescing of concurrent store writes (group commit). Callers submit one
 * item each and wait for their own result; the batcher hands whole groups to
 * a `run` function that does one transaction for all of them.
 *
 * When a group runs:
 * - nothing is running: at the end of the current turn of the event loop
 *   (`setImmediate`), so every request decoded from the same burst of socket
 *   reads joins the same group. This adds no timer delay.
 * - a group is already running (an asynchronous driver such as PostgreSQL):
 *   everything submitted meanwhile waits and goes out together as soon as it
 *   finishes. This is classic group commit: the slower a commit, the bigger
 *   the next group.
 *
 * A caller's promise settles only after `run` has settled for its group, so
 * "resolved" still means "committed" exactly as strongly as `run` promises.
 * If `run` rejects, every caller of that group gets the same error. The one
 * exception is an item that `run` settles early through its `settle`
 * argument (say, at commit, while the group still waits for its flush): that
 * caller is answered then and keeps that answer whatever `run` does after.
 */

export interface BatcherOptions<I, O> {
  /**
   * Does all items in one transaction; returns one result per item, in order.
   * `settle(i, result)` answers item i before `run` ends (its entry in the
   * returned array is then ignored).
   */
  run(items: I[], settle: (index: number, result: O) => void): Promise<O[]>;
  /** Most items in one group. */
  maxItems: number;
  /** Most total weight in one group (an item heavier than this runs alone). */
  maxWeight?: number;
  weight?(item: I): number;
  /** Most groups running at once (1 for a single connection). */
  concurrency?: number;
}

interface Waiter<I, O> {
  item: I;
  resolve(value: O): void;
  reject(err: unknown): void;
}

export class Batcher<I, O> {
  readonly #opts: BatcherOptions<I, O>;
  readonly #concurrency: number;
  #queue: Array<Waiter<I, O>> = [];
  #running = 0;
  #scheduled = false;
  #idleWaiters: Array<() => void> = [];

  constructor(opts: BatcherOptions<I, O>) {
    if (opts.maxItems < 1) throw new RangeError('maxItems must be at least 1');
    this.#opts = opts;
    this.#concurrency = Math.max(1, opts.concurrency ?? 1);
  }

  /** Queue one item; resolves with its own result once its group has committed. */
  submit(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.#queue.push({ item, resolve, reject });
      this.#schedule();
    });
  }

  /** Resolves once nothing is queued or running (used before closing a store). */
  async drain(): Promise<void> {
    while (this.#queue.length > 0 || this.#running > 0 || this.#scheduled) {
      await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
    }
  }

  #schedule(): void {
    if (this.#scheduled || this.#running >= this.#concurrency || this.#queue.length === 0) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.#start();
    });
  }

  #start(): void {
    while (this.#running < this.#concurrency && this.#queue.length > 0) {
      const group = this.#take();
      this.#running++;
      void this.#runGroup(group);
    }
    this.#notifyIdle();
  }

  /** The next group from the head of the queue, within the caps. */
  #take(): Array<Waiter<I, O>> {
    const { maxItems, maxWeight } = this.#opts;
    let n = 0;
    let total = 0;
    while (n < this.#queue.length && n < maxItems) {
      const item = (this.#queue[n] as Waiter<I, O>).item;
      const w = maxWeight !== undefined ? (this.#opts.weight?.(item) ?? 0) : 0;
      if (n > 0 && maxWeight !== undefined && total + w > maxWeight) break;
      total += w;
      n++;
    }
    return this.#queue.splice(0, n);
  }

  async #runGroup(group: Array<Waiter<I, O>>): Promise<void> {
    const settle = (i: number, result: O) => group[i]?.resolve(result);
    try {
      const out = await this.#opts.run(
        group.map((w) => w.item),
        settle,
      );
      if (out.length !== group.length) throw new Error(`batch returned ${out.length} results for ${group.length} items`);
      group.forEach((w, i) => w.resolve(out[i] as O));
    } catch (err) {
      for (const w of group) w.reject(err);
    } finally {
      this.#running--;
      this.#schedule();
      this.#notifyIdle();
    }
  }

  #notifyIdle(): void {
    if (this.#queue.length > 0 || this.#running > 0 || this.#scheduled) return;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const w of waiters) w();
  }
}

/**
 * Group caps for sends on PostgreSQL: 256 sends or 1,024 envelopes per
 * statement, whichever comes first. One group is in flight at a time, so the
 * cap divided by a group's round trip bounds a node's sends per second; with
 * 64 sends and ~12 ms round trips under load that bound was ~5,300/s.
 */
export const ENQUEUE_GROUP = { maxItems: 256, maxWeight: 1024 } as const;
/** Group cap for acknowledgement deletes (where they are not folded into the send groups). */
export const DELETE_GROUP = { maxItems: 256 } as const;
