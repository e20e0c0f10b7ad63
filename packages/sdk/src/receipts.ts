/**
 * Delivery receipts, batched per sender: a ReceiptMessage carries many
 * timestamps, so a burst of received messages is answered with a few receipts
 * instead of one each. Timestamps gather until the turn of the event loop in
 * which a batch of messages was committed and reported has ended; while a
 * receipt to an account is being sent, newer timestamps for it wait and leave
 * together in the next one. How a receipt travels (sealed, over
 * unauthenticated HTTP, so the relay does not learn who sent it) is the
 * sender function's business.
 */
import { Limits } from '@parley/wire';

export type SendReceipt = (account: string, timestamps: number[]) => Promise<void>;

export class DeliveryReceipts {
  private readonly pending = new Map<string, number[]>();
  private readonly active = new Set<string>();

  /**
   * @param send sends one receipt; a failure is reported through `run` once and those timestamps are not retried
   * @param run starts a background task (the client tracks it and waits for it on close)
   */
  constructor(
    private readonly send: SendReceipt,
    private readonly run: (task: () => Promise<void>) => void,
    private readonly maxPerReceipt: number = Limits.maxReceiptTimestamps,
  ) {}

  /** Queues a delivery receipt for the message `timestamp` from `account`. */
  add(account: string, timestamp: number): void {
    let list = this.pending.get(account);
    if (!list) this.pending.set(account, (list = []));
    list.push(timestamp);
    if (this.active.has(account)) return;
    this.active.add(account);
    this.run(() => this.drain(account));
  }

  private async drain(account: string): Promise<void> {
    let failure: Error | null = null;
    try {
      // Let the rest of the batch being reported right now add its timestamps first.
      await new Promise<void>((r) => setImmediate(r));
      for (;;) {
        const list = this.pending.get(account);
        if (!list || list.length === 0) break;
        const batch = list.splice(0, this.maxPerReceipt);
        try {
          await this.send(account, batch);
        } catch (err) {
          failure ??= err instanceof Error ? err : new Error('a delivery receipt failed'); // best effort: report once, go on
        }
      }
    } finally {
      this.active.delete(account);
      this.pending.delete(account);
    }
    if (failure !== null) throw failure;
  }
}
