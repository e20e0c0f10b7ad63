/**
 * The order in which relay pushes are processed, acknowledged and reported,
 * with group commit.
 *
 * Every push is handled one at a time, in arrival order. A handler may leave
 * its work staged (decrypted, its ratchet state and rows waiting in the
 * stores; see `Stores.stage`) instead of committing it. Then its answer to the
 * relay is held back: while more pushes are waiting, they are handled too and
 * their staged work accumulates, and one `flush` (one SQLite transaction)
 * writes them all. Only then are their answers (the acks) released, and only
 * after the acks have been handed to the socket do their events run, in
 * arrival order. If the flush fails, the held answers become 500: nothing is
 * acked, and the relay pushes the envelopes again on the next connection.
 *
 * A batch ends when `maxBatch` operations are staged, or when no push is
 * waiting (after one turn of the event loop, so frames the socket has already
 * read join the batch); a lone message is written at once.
 */
import type { RequestFrame } from '@parley/wire';
import { Serial } from './serial.js';
import type { RequestResult } from './transport.js';

export const DEFAULT_MAX_BATCH = 32;

export interface ReceiveQueueDeps {
  /** Handles one push; may stage its store writes instead of committing them. */
  handle: (req: RequestFrame) => Promise<RequestResult>;
  /** How many operations are staged and not yet written. */
  staged: () => number;
  /** Writes every staged operation in one transaction (runs on the crypto queue); throws if it failed. */
  flush: () => Promise<void>;
  /** Called when the queue has run out of work (everything handled and written). */
  onIdle?: () => void;
  /** A flush failed: its messages were not acked and come back on the next connection. */
  onError?: (err: unknown) => void;
  maxBatch?: number;
}

interface Held {
  result: RequestResult;
  resolve: (r: RequestResult) => void;
}

export class ReceiveQueue {
  private readonly serial = new Serial();
  private readonly maxBatch: number;
  /** Pushes received and not yet started. */
  private waiting = 0;
  /** Answers whose work is staged, in arrival order. */
  private held: Held[] = [];
  /** Events of released answers, run in order once their acks are on the socket. */
  private afters: Array<() => void> = [];
  private aftersScheduled = false;

  constructor(private readonly deps: ReceiveQueueDeps) {
    this.maxBatch = Math.max(1, deps.maxBatch ?? DEFAULT_MAX_BATCH);
  }

  /** Queues one push; resolves with the answer for the relay once its work is durable. */
  push(req: RequestFrame): Promise<RequestResult> {
    this.waiting++;
    return new Promise<RequestResult>((resolve) => {
      void this.serial.run(async () => {
        this.waiting--;
        let result: RequestResult;
        try {
          result = await this.deps.handle(req);
        } catch {
          result = { status: 500 };
        }
        if (this.deps.staged() > 0) {
          this.held.push({ result, resolve });
          await this.maybeFlush();
        } else {
          // Anything still held here lost its staged work without a report; never ack it.
          this.release(false);
          this.answer(result, resolve);
        }
      });
    });
  }

  /** The stores report every commit that wrote (ok) or lost staged work. */
  onFlush(ok: boolean): void {
    this.release(ok);
  }

  /** True while pushes wait or staged work is not written yet. */
  get busy(): boolean {
    return this.waiting > 0 || this.deps.staged() > 0;
  }

  /** Resolves when every queued push has been handled and its batch written. */
  async idle(): Promise<void> {
    await this.serial.idle();
    if (this.deps.staged() > 0) await this.flushNow();
  }

  private async maybeFlush(): Promise<void> {
    if (this.deps.staged() >= this.maxBatch) return this.flushNow();
    if (this.waiting > 0) return;
    // Frames already read from the socket are handed over in this turn; let them queue first.
    await new Promise<void>((r) => setImmediate(r));
    if (this.waiting > 0) return;
    await this.flushNow();
  }

  private async flushNow(): Promise<void> {
    try {
      await this.deps.flush();
    } catch (err) {
      // The stores reported the loss (held answers became 500); the relay redelivers.
      this.deps.onError?.(err);
    }
    // A flush that found nothing staged (someone else's commit wrote it) leaves nothing held either.
    if (this.deps.staged() === 0) this.release(false);
    if (!this.busy) this.deps.onIdle?.();
  }

  private release(ok: boolean): void {
    const held = this.held;
    this.held = [];
    for (const h of held) this.answer(ok ? h.result : { status: 500 }, h.resolve);
  }

  private answer(result: RequestResult, resolve: (r: RequestResult) => void): void {
    const { after, ...rest } = result;
    if (after) this.afters.push(after);
    resolve(rest);
    if (this.afters.length > 0 && !this.aftersScheduled) {
      this.aftersScheduled = true;
      // Acks go out in the microtasks that follow; events run after all of them.
      setImmediate(() => {
        this.aftersScheduled = false;
        const run = this.afters;
        this.afters = [];
        for (const fn of run) fn();
      });
    }
  }
}
