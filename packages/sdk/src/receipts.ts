/**
 * Delivery receipts, batched per sender: a ReceiptMessage carries many
 * timestamps, so a burst of received messages is answered with a few receipts
 * instead of one each. A receipt leaves as soon as it is full, or when the
 * receive pipeline has nothing more to do, or at the latest `maxDelayMs`
 * after its first timestamp; a lone message is answered at once. While a
 * receipt to an account is being sent, newer timestamps for it wait and leave
 * together in the next one. How a receipt travels (sealed, over
 * unauthenticated HTTP, so the relay does not learn who sent it) is the
 * sender function's business.
 */
import { Limits } from '@parley/wire';

export type SendReceipt = (account: string, timestamps: number[]) => Promise<unknown>;

export interface DeliveryReceiptsDeps {
  /** Sends one receipt. A failure is reported once through `run`; those timestamps are not retried. */
  send: SendReceipt;
  /** Starts a background task (the client tracks it and waits for it on close). */
  run: (task: () => Promise<void>) => void;
  /** True while received messages are still being processed (more timestamps are coming). */
  busy: () => boolean;
  maxPerReceipt?: number;
  maxDelayMs?: number;
}

export const RECEIPT_MAX_DELAY_MS = 250;

export class DeliveryReceipts {
  private readonly pending = new Map<string, number[]>();
  private readonly active = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private readonly max: number;
  private readonly maxDelayMs: number;

  constructor(private readonly deps: DeliveryReceiptsDeps) {
    this.max = deps.maxPerReceipt ?? Limits.maxReceiptTimestamps;
    this.maxDelayMs = deps.maxDelayMs ?? RECEIPT_MAX_DELAY_MS;
  }

  /** Queues a delivery receipt for the message `timestamp` from `account`. */
  add(account: string, timestamp: number): void {
    let list = this.pending.get(account);
    if (!list) this.pending.set(account, (list = []));
    list.push(timestamp);
    if (list.length >= this.max) this.start(account);
    else if (!this.deps.busy()) this.kickSoon();
    else this.timer ??= setTimeout(() => this.kick(), this.maxDelayMs);
  }

  /** Sends everything queued (the receive pipeline calls this when it runs out of work). */
  kick(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const account of [...this.pending.keys()]) this.start(account);
  }

  private kicking = false;
  /** Kick after the current turn, so the other messages reported in it join the receipt. */
  private kickSoon(): void {
    if (this.kicking) return;
    this.kicking = true;
    setImmediate(() => {
      this.kicking = false;
      if (this.deps.busy()) this.timer ??= setTimeout(() => this.kick(), this.maxDelayMs);
      else this.kick();
    });
  }

  private start(account: string): void {
    if (this.active.has(account)) return;
    this.active.add(account);
    this.deps.run(() => this.drain(account));
  }

  private async drain(account: string): Promise<void> {
    let failure: Error | null = null;
    try {
      for (let first = true; ; first = false) {
        const list = this.pending.get(account);
        if (!list || list.length === 0) break;
        // After the first receipt, only full ones while messages keep coming; the rest waits for kick().
        if (!first && list.length < this.max && this.deps.busy()) {
          this.timer ??= setTimeout(() => this.kick(), this.maxDelayMs);
          break;
        }
        const batch = list.splice(0, this.max);
        try {
          await this.deps.send(account, batch);
        } catch (err) {
          failure ??= err instanceof Error ? err : new Error('a delivery receipt failed'); // best effort: report once, go on
        }
      }
    } finally {
      this.active.delete(account);
      if (this.pending.get(account)?.length === 0) this.pending.delete(account);
    }
    if (failure !== null) throw failure;
  }
}
