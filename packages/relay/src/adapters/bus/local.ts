/** The in-process Bus: wake-ups go to subscribers in this process only. */
import type { Bus, BusSignal } from '../../ports.js';

export class LocalBus implements Bus {
  readonly #subs = new Map<string, Set<(signal: BusSignal) => void>>();

  publish(deviceKey: string, signal: BusSignal = 'messages'): void {
    const set = this.#subs.get(deviceKey);
    if (!set) return;
    // Deliver on a later tick so publishers never run subscriber code inline.
    for (const fn of [...set]) queueMicrotask(() => fn(signal));
  }

  subscribe(deviceKey: string, fn: (signal: BusSignal) => void): () => void {
    let set = this.#subs.get(deviceKey);
    if (!set) {
      set = new Set();
      this.#subs.set(deviceKey, set);
    }
    set.add(fn);
    return () => {
      const s = this.#subs.get(deviceKey);
      if (!s) return;
      s.delete(fn);
      if (s.size === 0) this.#subs.delete(deviceKey);
    };
  }

  async close(): Promise<void> {
    this.#subs.clear();
  }
}
